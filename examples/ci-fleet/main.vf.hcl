# A CI fleet: one test VM per entry of `runners`, each with its own disk,
# port, persistent data volume and user-data. Parallel CI jobs on one host
# use `--stack ci-$JOB_ID` and their own `--var subnet=...` so their objects
# and addresses never collide. `apply` returns once every runner has its DHCP
# lease and answers on TCP port 8080.

variable "assets" {
  type    = string
  default = "/var/lib/virtform/assets"
}

variable "runners" {
  description = "Runner name => memory"
  type        = map(string)
  default = {
    alpha = "256M"
    beta  = "256M"
    gamma = "384M"
  }
}

variable "subnet" {
  description = "The fleet's /24 (one per concurrent job on a host)"
  type        = string
  default     = "10.88.0.0/24"
}

locals {
  subnet = var.subnet
  # Stable host numbers: position of each runner in the sorted key list.
  hostnum = { for i, name in keys(var.runners) : name => 10 + i }
}

network "ci" {
  type    = "nat"
  bridge  = "vf-${virtform.stack}"
  address = "${cidrhost(local.subnet, 1)}/24"
  dhcp {
    start = cidrhost(local.subnet, 100)
    end   = cidrhost(local.subnet, 200)
  }
}

image "tiny" {
  source = "${var.assets}/tiny.qcow2"
}

disk "root" {
  for_each = var.runners
  image    = image.tiny
  size     = "512M"
}

# Survives a rebuild of its runner (a new image, `--replace`); only removed
# with the runner's entry or by `destroy`. Add
# `lifecycle { prevent_destroy = true }` to make destroying it an error.
volume "data" {
  for_each = var.runners
  size     = "64M"
}

port "eth0" {
  for_each = var.runners
  network  = network.ci
  ip       = cidrhost(local.subnet, local.hostnum[each.key])
}

instance "runner" {
  for_each = var.runners
  memory   = each.value
  kernel   = "${var.assets}/vmlinuz"
  initrd   = "${var.assets}/initrd.gz"
  # The test guest: DHCP on eth0, a web server on 8080.
  cmdline = "console=ttyS0 vf.dhcp=1 vf.listen=8080"
  disks   = [disk.root[each.key]]
  ports   = [port.eth0[each.key]]
  volumes = [volume.data[each.key]]

  cloud_init {
    user_data = "#cloud-config\n${yamlencode({
      hostname = each.key
      runcmd   = ["echo runner ${each.key} ready"]
    })}"
  }

  wait_for {
    lease   = true
    tcp     = 8080
    timeout = "180s"
  }
}

output "ips" {
  value = { for name, p in port.eth0 : name => p.ip }
}
