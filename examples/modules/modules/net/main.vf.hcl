# A Linux bridge with a host address: one L2 segment of an environment.

variable "bridge" {
  description = "Host bridge name (at most 15 characters)"
  type        = string
}

variable "cidr" {
  description = "The segment's subnet; the host takes its first address"
  type        = string
  validation {
    condition     = can(cidrhost(var.cidr, 1))
    error_message = "cidr must be an IPv4 subnet like 10.80.0.0/24"
  }
}

network "this" {
  type    = "bridge"
  bridge  = var.bridge
  address = "${cidrhost(var.cidr, 1)}/${split("/", var.cidr)[1]}"
}

# The whole network object: callers pass it on to other modules.
output "network" {
  value = network.this
}

output "cidr" {
  value = var.cidr
}
