# virtform quickstart: one bridge, one image, one disk, one port, one VM.
#
# The test guest (kernel, initrd and a tiny ext4 image) is built from Debian
# packages by scripts/build-guest into /var/lib/virtform/assets.

virtform {
  stack = "quickstart"
}

variable "assets" {
  description = "Directory holding vmlinuz, initrd.gz and tiny.qcow2"
  type        = string
  default     = "/var/lib/virtform/assets"
}

network "lan" {
  type    = "bridge"
  bridge  = "vfq-lan0"
  address = "10.77.0.1/24"
}

image "tiny" {
  source = "${var.assets}/tiny.qcow2"
}

disk "root" {
  image = image.tiny
  size  = "256M"
}

port "eth0" {
  network = network.lan
  ip      = cidrhost("10.77.0.0/24", 10)
}

instance "vm" {
  vcpus   = 1
  memory  = "256M"
  kernel  = "${var.assets}/vmlinuz"
  initrd  = "${var.assets}/initrd.gz"
  cmdline = "console=ttyS0 vf.ip=${port.eth0.ip}/24"
  disks   = [disk.root]
  ports   = [port.eth0]

  wait_for {
    console = "VF-READY"
    timeout = "120s"
  }
}

output "ip" {
  value = port.eth0.ip
}

output "console_log" {
  value = instance.vm.console_log
}
