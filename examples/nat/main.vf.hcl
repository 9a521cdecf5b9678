# A libvirt NAT network: libvirt runs the bridge, dnsmasq and the NAT rules.
# Each port with a fixed `ip` gets a static DHCP host entry (MAC -> IP), so
# the guest obtains a known address by DHCP, and apply returns once the
# lease is handed out and the guest's web server answers.

virtform {
  stack = "natdemo"
}

variable "assets" {
  type    = string
  default = "/var/lib/virtform/assets"
}

network "nat" {
  type    = "nat"
  bridge  = "vfnat-br0"
  address = "10.98.0.1/24"
  dhcp {
    start = "10.98.0.100"
    end   = "10.98.0.200"
  }
}

image "tiny" {
  source = "${var.assets}/tiny.qcow2"
}

disk "root" {
  image = image.tiny
}

port "eth0" {
  network = network.nat
  ip      = "10.98.0.10"
}

instance "web" {
  memory = "256M"
  kernel = "${var.assets}/vmlinuz"
  initrd = "${var.assets}/initrd.gz"
  # The test guest asks for its address by DHCP and serves HTTP on 8080.
  cmdline = "console=ttyS0 vf.dhcp=1 vf.listen=8080"
  disks   = [disk.root]
  ports   = [port.eth0]

  wait_for {
    lease   = true
    tcp     = 8080
    timeout = "180s"
  }
}

output "ip" {
  value = port.eth0.ip
}

output "mac" {
  value = port.eth0.mac
}
