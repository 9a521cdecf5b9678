# The dev environment: one network module, the vm module called twice with
# different inputs (a for_each pair of web servers and a single database).

virtform {
  stack = "modex"
}

module "net" {
  source = "../../modules/net"
  bridge = "vfmodex-lan0"
  cidr   = "10.81.0.0/24"
}

module "web" {
  source   = "../../modules/vm"
  for_each = { a = 10, b = 11 }
  network  = module.net.network
  cidr     = module.net.cidr
  host     = each.value
}

module "db" {
  source     = "../../modules/vm"
  network    = module.net.network
  cidr       = module.net.cidr
  host       = 20
  memory     = "384M"
  depends_on = [module.web]
}

output "web_ips" {
  value = { for k, m in module.web : k => m.ip }
}

output "db_ip" {
  value = module.db.ip
}

output "domains" {
  value = concat([for m in module.web : m.domain], [module.db.domain])
}
