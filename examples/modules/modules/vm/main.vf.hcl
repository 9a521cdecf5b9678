# One VM of the tiny test guest: its root disk, its port, the domain.

locals {
  ip = cidrhost(var.cidr, var.host)
}

image "tiny" {
  source = "${var.assets}/tiny.qcow2"
}

disk "root" {
  image = image.tiny
  size  = "256M"
}

port "eth0" {
  network = var.network
  ip      = local.ip
}

instance "vm" {
  vcpus   = 1
  memory  = var.memory
  kernel  = "${var.assets}/vmlinuz"
  initrd  = "${var.assets}/initrd.gz"
  cmdline = "console=ttyS0 vf.ip=${local.ip}/${split("/", var.cidr)[1]}"
  disks   = [disk.root]
  ports   = [port.eth0]

  wait_for {
    console = "VF-READY"
    timeout = "180s"
  }
}

output "ip" {
  value = port.eth0.ip
}

output "domain" {
  value = instance.vm.name
}

output "mac" {
  value = port.eth0.mac
}
