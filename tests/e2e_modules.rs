//! Local modules on the real host: a configuration laid out like
//! `examples/modules` (a `net` module, a `vm` module called twice under
//! `for_each`) applied with the tiny guest; the host objects carry names and
//! markers derived from the module path (domain names and metadata, disk and
//! console files, the derived bridge name and its alias); a converged plan is
//! empty; dropping one module instance removes exactly its objects; destroy
//! leaves nothing.
//!
//! Names: stack `vfmod-<pid>`, subnet 10.246.<pid % 250>.0/24, so nothing
//! collides with other tests or sessions on this host. Needs root, libvirtd
//! and the guest assets (scripts/test); FAILS, never skips, without them.
//!
//! Run: `cargo test --test e2e_modules`

mod support;
use std::fs;
use std::time::Instant;
use support::*;

const NET: &str = r#"
variable "cidr" { type = string }

# No bridge name: virtform derives one from the stack and the module path.
network "this" {
  type    = "bridge"
  address = "${cidrhost(var.cidr, 1)}/24"
}

output "network" { value = network.this }
output "bridge" { value = network.this.bridge }
"#;

const VM: &str = r#"
variable "assets" { type = string }
variable "network" {}
variable "cidr" { type = string }
variable "host" { type = number }
variable "memory" {
  type    = string
  default = "256M"
}

locals {
  ip = cidrhost(var.cidr, var.host)
}

image "tiny" { source = "${var.assets}/tiny.qcow2" }

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
  cmdline = "console=ttyS0 vf.ip=${local.ip}/24"
  disks   = [disk.root]
  ports   = [port.eth0]
  wait_for {
    console = "VF-READY"
    timeout = "240s"
  }
}

output "ip" { value = port.eth0.ip }
output "domain" { value = instance.vm.name }
output "uuid" { value = instance.vm.uuid }
"#;

fn root(net: &str, keys: &str) -> String {
    format!(
        r#"
variable "assets" {{ type = string }}

module "net" {{
  source = "./modules/net"
  cidr   = "{net}.0/24"
}}

module "web" {{
  source   = "./modules/vm"
  for_each = {{ {keys} }}
  assets   = var.assets
  network  = module.net.network
  cidr     = module.net.cidr_in
  host     = each.value
}}

output "ips" {{ value = {{ for k, m in module.web : k => m.ip }} }}
output "domains" {{ value = {{ for k, m in module.web : k => m.domain }} }}
output "bridge" {{ value = module.net.bridge }}
"#
    )
}

#[test]
fn a_module_called_twice_names_and_marks_its_host_objects_and_leaves_nothing() {
    preflight();
    let pid = std::process::id();
    let s = VfStack { test: "e2e_modules", stack: format!("vfmod-{pid}"), cfg: tempdir("vfmod-cfg-"), state: tempdir("vfmod-state-"), started: Instant::now() };
    assert!(leaks_of_stack(&s.stack).is_empty(), "objects of stack {} exist already", s.stack);
    let net = format!("10.246.{}", pid % 250);
    fs::create_dir_all(s.cfg.path().join("modules/net")).unwrap();
    fs::create_dir_all(s.cfg.path().join("modules/vm")).unwrap();
    fs::write(s.cfg.path().join("modules/net/main.vf.hcl"), format!("{NET}\noutput \"cidr_in\" {{ value = var.cidr }}\n")).unwrap();
    fs::write(s.cfg.path().join("modules/vm/main.vf.hcl"), VM).unwrap();
    s.write(&root(&net, "a = 10, b = 11"));

    let plan = s.vf(&["plan"]).must();
    for a in ["# module.net.network.this will be created", "# module.web[\"a\"].instance.vm will be created", "# module.web[\"b\"].disk.root will be created"] {
        assert!(plan.stdout.contains(a), "{a} not in the plan:\n{}", plan.stdout);
    }
    s.apply();

    // Domains: named after stack and module path, marked with the full address.
    let mut uuids = Vec::new();
    for k in ["a", "b"] {
        let name = format!("{}-web@{k}+vm", s.stack);
        assert_eq!(domain_state(&name), "running", "{name}");
        let xml = virsh(&["dumpxml", "--inactive", &name]).must().stdout;
        assert!(xml.contains(&format!("module.web[&quot;{k}&quot;].instance.vm")) || xml.contains(&format!("module.web[\"{k}\"].instance.vm")), "{name}'s marker lacks its address:\n{xml}");
        uuids.push(virsh(&["domuuid", &name]).must().stdout.trim().to_string());
        // Files under the stack's directory carry the module path in their stem.
        let disk = s.state.path().join(&s.stack).join("disks").join(format!("web@{k}+root.qcow2"));
        assert!(disk.is_file(), "{} missing", disk.display());
        assert!(s.wait_console(&format!("web@{k}+vm.log"), "VF-READY", std::time::Duration::from_secs(5)), "no boot in web@{k}+vm.log");
    }
    assert_ne!(uuids[0], uuids[1]);
    // The bridge: derived, valid (≤ 15 characters), marked with the module address.
    let out = s.output(&["output", "--json"]).must();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    let bridge = v["bridge"]["value"].as_str().unwrap_or_else(|| panic!("{v}")).to_string();
    assert!(bridge.starts_with("vf") && bridge.len() <= 15, "{bridge}");
    let alias = link_json(&bridge)["ifalias"].as_str().unwrap_or_default().to_string();
    assert!(alias.starts_with(&format!("virtform:{}:module.net.network.this;", s.stack)), "{bridge}'s alias: {alias}");
    assert_eq!(v["ips"]["value"]["a"], format!("{net}.10"));
    assert_eq!(v["domains"]["value"]["b"], format!("{}-web@b+vm", s.stack));
    // show lists the objects by their module addresses.
    let show = s.vf(&["show"]).must();
    assert!(show.stdout.contains("module.web[\"b\"].instance.vm"), "{}", show.stdout);
    s.assert_plan_empty("after the apply");

    // One instance leaves: exactly its objects go, the other keeps running untouched.
    s.write(&root(&net, "a = 10"));
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains("# module.web[\"b\"].instance.vm will be destroyed") && plan.stdout.contains("0 to add, 0 to change, 2 to destroy"), "{}", plan.stdout);
    s.apply();
    assert!(!domain_exists(&format!("{}-web@b+vm", s.stack)));
    assert_eq!(virsh(&["domuuid", &format!("{}-web@a+vm", s.stack)]).must().stdout.trim(), uuids[0]);
    assert!(!s.state.path().join(&s.stack).join("disks").join("web@b+root.qcow2").exists());
    s.assert_plan_empty("after dropping an instance");

    // Destroy (also what the guard does on drop) leaves nothing of the stack.
    let out = s.vf(&["destroy", "--auto-approve"]);
    assert!(out.ok(), "{}", out.show());
    assert!(leaks_of_stack(&s.stack).is_empty(), "{:?}", leaks_of_stack(&s.stack));
    assert!(!link_exists(&bridge), "{bridge} is left");
    let left: Vec<_> = files_under(&s.state.path().join(&s.stack)).into_iter().filter(|p| !p.starts_with(s.state.path().join("images"))).collect();
    assert!(left.is_empty(), "files left: {left:?}");
}
