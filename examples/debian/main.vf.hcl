# A real Debian 12 cloud image (scripts/build-cloud-image: GPT, GRUB for
# BIOS and UEFI, cloud-init, OpenSSH) booted from its disk alone on a
# libvirt NAT network, configured by cloud-init from virtform's seed, and
# reached over SSH with a host key virtform generated and pinned:
#
#   ssh-keygen -t ed25519 -N '' -f examples/debian/id_ed25519
#   virtform apply examples/debian
#   virtform ssh instance.vm -C examples/debian -- cloud-init status

virtform {
  stack = "debian"
}

variable "assets" {
  type    = string
  default = "/var/lib/virtform/assets"
}

variable "firmware" {
  description = "bios or efi: the image boots under both"
  type        = string
  default     = "bios"
}

image "debian" {
  source = "${var.assets}/debian-12-cloud.qcow2"
}

network "nat" {
  type    = "nat"
  bridge  = "vfdeb-br0"
  address = "10.97.0.1/24"
}

# A 4G overlay on the 2G image: cloud-init grows the root file system.
disk "root" {
  image = image.debian
  size  = "4G"
}

# A fixed address: a static DHCP entry on the network, and the same address,
# gateway and DNS (libvirt's dnsmasq) in the generated network-config.
port "eth0" {
  network = network.nat
  ip      = "10.97.0.10"
}

instance "vm" {
  memory   = "1G"
  firmware = var.firmware
  disks    = [disk.root]
  ports    = [port.eth0]

  cloud_init {
    user_data = <<-EOT
      #cloud-config
      write_files:
        - path: /etc/motd
          content: "Provisioned by virtform.\n"
      runcmd:
        - [sh, -c, "echo ok > /var/tmp/provisioned"]
    EOT
  }

  # Whom virtform logs in as (`wait_for`, `virtform ssh`). The public half
  # of the key is authorized for the image's default user through the seed.
  connection {
    user        = "debian"
    private_key = file("${path.module}/id_ed25519")
  }

  # apply returns when a login works and cloud-init has finished.
  wait_for {
    ssh        = true
    cloud_init = true
    timeout    = "600s"
  }
}

output "ip" {
  value = port.eth0.ip
}
