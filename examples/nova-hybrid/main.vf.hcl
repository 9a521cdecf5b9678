# Two VMs plugged the way OpenStack Nova's libvirt driver plugs them with
# os-vif's hybrid strategy: per port a qbr Linux bridge, a qvb/qvo veth pair,
# and the qvo end on an Open vSwitch integration bridge with Neutron's
# external-ids. The guests ping each other across OVS.

virtform {
  stack = "nova"
}

variable "assets" {
  type    = string
  default = "/var/lib/virtform/assets"
}

variable "vms" {
  type    = set(string)
  default = ["a", "b"]
}

locals {
  subnet = "10.99.0.0/24"
  ips    = { a = cidrhost(local.subnet, 11), b = cidrhost(local.subnet, 12) }
}

network "int" {
  type          = "ovs"
  bridge        = "vf-br-int"
  datapath_type = "netdev" # userspace datapath: no kernel module needed
  address       = "${cidrhost(local.subnet, 1)}/24"
  mtu           = 1450
}

image "tiny" {
  source = "${var.assets}/tiny.qcow2"
}

disk "root" {
  for_each = var.vms
  image    = image.tiny
}

port "vif" {
  for_each = var.vms
  network  = network.int
  plug     = "ovs_hybrid"
  ip       = local.ips[each.key]
  mtu      = 1450
}

instance "vm" {
  for_each = var.vms
  memory   = "256M"
  kernel   = "${var.assets}/vmlinuz"
  initrd   = "${var.assets}/initrd.gz"
  # Each guest pings the other one.
  cmdline = join(" ", [
    "console=ttyS0",
    "vf.ip=${local.ips[each.key]}/24",
    "vf.ping=${join(",", [for k, ip in local.ips : ip if k != each.key])}",
  ])
  disks = [disk.root[each.key]]
  ports = [port.vif[each.key]]

  wait_for {
    console = "VF-PING"
    timeout = "180s"
  }
}

output "devices" {
  value = { for k, p in port.vif : k => { qbr = p.qbr, qvb = p.qvb, qvo = p.qvo, tap = p.tap } }
}
