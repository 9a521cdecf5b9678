//! The language through `config::load`: count/for_each, splats, outputs,
//! derived values, unknowns, and robustness against arbitrary input.

use virtform::config::{self, value::Value, LoadOptions};
use virtform::model::Spec;

fn load(src: &str) -> Result<config::Configuration, config::LoadError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.vf.hcl"), src).unwrap();
    config::load(&LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/var/lib/virtform".into(), stack: Some("t".into()), ..Default::default() })
}

fn ok(src: &str) -> config::Configuration {
    load(src).unwrap_or_else(|e| panic!("{}", e.render(false)))
}

#[test]
fn count_for_each_and_splat() {
    let c = ok(r#"
variable "workers" { default = 2 }
network "lan" { address = "10.77.0.1/24" }
image "base" { source = "/img/base.qcow2" }
disk "root" {
  count = var.workers
  image = image.base
  size  = "1G"
}
port "eth0" {
  count   = var.workers
  network = network.lan
  ip      = cidrhost("10.77.0.0/24", 10 + count.index)
}
instance "worker" {
  count = var.workers
  disks = [disk.root[count.index]]
  ports = [port.eth0[count.index]]
}
port "extra" {
  for_each = toset(["a", "b"])
  network  = network.lan
}
output "ips" { value = port.eth0[*].ip }
output "paths" { value = disk.root[*].path }
output "extra_macs" { value = { for k, p in port.extra : k => p.mac } }
"#);
    let addrs: Vec<String> = c.resources.iter().map(|r| r.address.to_string()).collect();
    for a in ["disk.root[0]", "disk.root[1]", "instance.worker[1]", "port.extra[\"a\"]", "port.extra[\"b\"]"] {
        assert!(addrs.contains(&a.to_string()), "{a} missing from {addrs:?}");
    }
    let ips = &c.outputs.iter().find(|o| o.name == "ips").unwrap().value;
    assert_eq!(ips, &Value::List(vec![Value::string("10.77.0.10"), Value::string("10.77.0.11")]));
    let paths = &c.outputs.iter().find(|o| o.name == "paths").unwrap().value;
    assert_eq!(paths.as_seq().unwrap()[1], Value::string("/var/lib/virtform/t/disks/root@1.qcow2"));
    let Spec::Instance(w) = &c.resource("instance.worker[1]").unwrap().spec else { panic!() };
    assert_eq!(w.domain_name(), "t-worker-1");
    // Dependencies come before dependents.
    let pos = |a: &str| addrs.iter().position(|x| x == a).unwrap();
    assert!(pos("image.base") < pos("disk.root[0]"));
    assert!(pos("disk.root[1]") < pos("instance.worker[1]"));
}

#[test]
fn derived_values_are_stable_and_distinct() {
    let src = "network \"n\" {}\nport \"a\" { network = network.n }\nport \"b\" { network = network.n }\n";
    let c1 = ok(src);
    let c2 = ok(src);
    let mac = |c: &config::Configuration, a: &str| match &c.resource(a).unwrap().spec {
        Spec::Port(p) => p.mac.unwrap().to_string(),
        _ => unreachable!(),
    };
    assert_eq!(mac(&c1, "port.a"), mac(&c2, "port.a"));
    assert_ne!(mac(&c1, "port.a"), mac(&c1, "port.b"));
    assert!(mac(&c1, "port.a").starts_with("52:54:00:"));
    let Spec::Network(n) = &c1.resource("network.n").unwrap().spec else { panic!() };
    assert!(n.bridge_name().len() <= 15 && n.bridge_name().starts_with("vf"), "{}", n.bridge_name());
}

#[test]
fn dhcp_ip_is_unknown_until_apply() {
    let c = ok(r#"
network "nat" {
  type    = "nat"
  address = "10.80.0.1/24"
}
port "p" { network = network.nat }
instance "vm" {
  kernel  = "/k"
  ports   = [port.p]
  cmdline = "ip=${port.p.ip}"
}
output "ip" { value = port.p.ip }
"#);
    assert_eq!(c.outputs[0].value, Value::Unknown);
    let vm = c.resource("instance.vm").unwrap();
    assert!(vm.unknown.contains("cmdline"), "{:?}", vm.unknown);
    assert!(!vm.unknown.contains("ports"), "a reference itself is known");
}

#[test]
fn sensitive_attributes_are_tracked_through_locals() {
    let c = ok(r#"
variable "key" {
  default   = "ssh-ed25519 AAAA"
  sensitive = true
}
locals { keys = [var.key] }
instance "vm" {
  kernel = "/k"
  cloud_init { ssh_authorized_keys = local.keys }
}
output "k" {
  value     = local.keys
  sensitive = true
}
"#);
    let vm = c.resource("instance.vm").unwrap();
    assert!(vm.sensitive.contains("cloud_init.ssh_authorized_keys"), "{:?}", vm.sensitive);
    assert!(c.outputs[0].sensitive);
}

#[test]
fn stack_precedence() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.vf.hcl"), "virtform { stack = \"fromfile\" }\n").unwrap();
    let base = LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/s".into(), ..Default::default() };
    assert_eq!(config::load(&base).unwrap().stack, "fromfile");
    let o = LoadOptions { stack: Some("ci-42".into()), ..base.clone() };
    assert_eq!(config::load(&o).unwrap().stack, "ci-42");
    std::fs::write(dir.path().join("main.vf.hcl"), "network \"n\" {}\n").unwrap();
    let name = config::load(&base).unwrap().stack;
    assert!(!name.is_empty() && name.len() <= 32, "{name}");
}

#[test]
fn multiple_files_form_one_configuration() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("net.vf.hcl"), "network \"lan\" {}\n").unwrap();
    std::fs::write(dir.path().join("ports.vf.hcl"), "port \"p\" { network = network.lan }\n").unwrap();
    std::fs::write(dir.path().join("ignored.hcl"), "this is not loaded {{{\n").unwrap();
    let c = config::load(&LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/s".into(), ..Default::default() }).unwrap();
    assert_eq!(c.resources.len(), 2);
}

/// Mutations of the examples must never panic: each either loads or fails with diagnostics.
#[test]
fn no_panics_on_mutated_input() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    // Every configuration file of the examples, also those of modules and environments.
    let mut sources = Vec::new();
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().ends_with(".vf.hcl") {
                sources.push(std::fs::read_to_string(p).unwrap());
            }
        }
    }
    sources.sort();
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"{}[]()\"=.,:?!<>*/%-+#\n $~abc019_\\";
    let dir = tempfile::tempdir().unwrap();
    let mut runs = 0;
    for src in &sources {
        let bytes = src.as_bytes();
        for i in 0..150 {
            let mut m = bytes.to_vec();
            match i % 3 {
                0 => m.truncate((next() as usize) % bytes.len()),
                1 => {
                    let at = (next() as usize) % m.len();
                    m[at] = alphabet[(next() as usize) % alphabet.len()];
                }
                _ => {
                    let at = (next() as usize) % m.len();
                    let len = ((next() as usize) % 40).min(m.len() - at);
                    m.drain(at..at + len);
                }
            }
            let text = String::from_utf8_lossy(&m).into_owned();
            std::fs::write(dir.path().join("main.vf.hcl"), &text).unwrap();
            let opts = LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/s".into(), ..Default::default() };
            let r = std::panic::catch_unwind(|| {
                if let Err(e) = config::load(&opts) {
                    assert!(!e.diags.is_empty());
                    let _ = e.render(false);
                }
                let _ = virtform::config::fmt::format_source(&text);
            });
            assert!(r.is_ok(), "panic on input:\n{text}");
            runs += 1;
        }
    }
    assert!(runs >= 450);
}

#[test]
fn schema_is_up_to_date() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/language.schema.json");
    let want = virtform::schema::language_schema_text();
    if std::env::var_os("VIRTFORM_UPDATE_SCHEMA").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(have == want, "schema/language.schema.json is stale: run `VIRTFORM_UPDATE_SCHEMA=1 cargo test --test language schema_is_up_to_date`");
    let v: serde_json::Value = serde_json::from_str(&have).unwrap();
    for kind in ["network", "port", "image", "disk", "volume", "instance"] {
        assert!(v["properties"][kind].is_object(), "{kind} missing");
    }
    assert!(v["$defs"]["Instance"]["properties"]["memory"]["description"].is_string());
    assert_eq!(v["properties"]["module"]["additionalProperties"]["required"][0], "source");
}

/// Exports are built only for resources something refers to (a loading
/// shortcut): a referenced instance's derived attributes still reach
/// outputs and other resources, whichever block comes first.
#[test]
fn referenced_resources_export_their_derived_attributes() {
    let c = ok(r#"
output "vm" { value = { uuid = instance.vm.uuid, mem = instance.vm.memory, log = instance.vm.console_log } }
network "lan" { address = "10.78.0.1/24" }
port "p" { network = network.lan }
instance "vm" {
  memory = "256M"
  kernel = "/boot/vmlinuz"
  ports  = [port.p]
}
instance "plain" {
  kernel = "/boot/vmlinuz"
}
"#);
    let v = &c.outputs.iter().find(|o| o.name == "vm").unwrap().value;
    let Value::Map(m) = v else { panic!("{v:?}") };
    let uuid = m["uuid"].as_str().unwrap();
    assert_eq!(uuid.len(), 36, "{uuid}");
    assert_eq!(m["mem"], Value::Number(256.0 * 1024.0 * 1024.0));
    assert!(m["log"].as_str().unwrap().ends_with(".log"), "{:?}", m["log"]);
    // The unreferenced instance is built all the same.
    let Spec::Instance(p) = &c.resource("instance.plain").unwrap().spec else { panic!() };
    assert_eq!(p.domain_name(), "t-plain");
}
