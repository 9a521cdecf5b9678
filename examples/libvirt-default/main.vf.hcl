# A guest on libvirt's own `default` network, which virtform reads and never
# changes: no bridge, no dnsmasq and no NAT rules of virtform's. The network
# must exist and be active (`virsh net-start default`); if it does not,
# plan says so at the data block's line.
#
# The guest asks for its address by DHCP; apply returns once libvirt's
# dnsmasq has leased one, and `virtform output ip` prints it.

virtform {
  stack = "defaultnet"
}

variable "assets" {
  type    = string
  default = "/var/lib/virtform/assets"
}

data "network" "default" {
  libvirt_network = "default"
}

image "tiny" {
  source = "${var.assets}/tiny.qcow2"
}

disk "root" {
  image = image.tiny
}

port "eth0" {
  network = data.network.default
}

instance "vm" {
  memory  = "256M"
  kernel  = "${var.assets}/vmlinuz"
  initrd  = "${var.assets}/initrd.gz"
  cmdline = "console=ttyS0 vf.dhcp=1"
  disks   = [disk.root]
  ports   = [port.eth0]

  wait_for {
    lease   = true
    timeout = "180s"
  }
}

output "ip" {
  value = port.eth0.ip
}

# Facts of the existing network, read from the host.
output "network" {
  value = {
    bridge     = data.network.default.device
    subnet     = data.network.default.subnet
    gateway    = data.network.default.gateway
    dhcp_range = data.network.default.dhcp_range
  }
}
