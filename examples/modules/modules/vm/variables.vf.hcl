variable "network" {
  description = "The network resource to plug into (pass network.NAME or a module's network output)"
}

variable "cidr" {
  type = string
}

variable "host" {
  description = "Host number of the VM's fixed address inside cidr"
  type        = number
  validation {
    condition     = var.host >= 2 && var.host < 250
    error_message = "host must be from 2 to 249"
  }
}

variable "memory" {
  type    = string
  default = "256M"
}

variable "assets" {
  type    = string
  default = "/var/lib/virtform/assets"
}
