//! Local modules through `config::load` (no host): inputs and outputs,
//! count/for_each on module blocks, nesting, resources and data sources
//! passed in, `depends_on`, and the catalogue of located module errors
//! (each names the module's file:line:column with its source line and the
//! module block that instantiated it).

use virtform::config::{self, value::Value, LoadOptions};
use virtform::model::Spec;

fn write_tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

fn load(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<config::Configuration, config::LoadError>) {
    let dir = write_tree(files);
    let root = dir.path().join("env");
    let r = config::load(&LoadOptions { dir: root, state_dir: "/var/lib/virtform".into(), stack: Some("t".into()), ..Default::default() });
    (dir, r)
}

fn ok(files: &[(&str, &str)]) -> (tempfile::TempDir, config::Configuration) {
    let (d, r) = load(files);
    (d, r.unwrap_or_else(|e| panic!("{}", e.render(false))))
}

fn out<'c>(c: &'c config::Configuration, name: &str) -> &'c Value {
    &c.outputs.iter().find(|o| o.name == name).unwrap_or_else(|| panic!("no output {name}")).value
}

const NET: &str = r#"
variable "cidr" { type = string }
network "this" { address = cidrhost(var.cidr, 1) == "" ? "" : "${cidrhost(var.cidr, 1)}/24" }
output "network" { value = network.this }
output "bridge" { value = network.this.bridge }
"#;

const VM: &str = r#"
variable "network" {}
variable "index" { type = number }
variable "tags" {
  type    = list(string)
  default = []
}
locals {
  name = "vm${var.index}"
}
port "p" { network = var.network }
instance "vm" {
  kernel = "/k"
  ports  = [port.p]
}
module "disk" {
  source = "../disk"
  count  = 2
  size   = "${var.index + count.index + 1}M"
}
output "name" { value = local.name }
output "domain" { value = instance.vm.name }
output "disk_paths" { value = module.disk[*].path }
output "tags" { value = var.tags }
"#;

const DISK: &str = r#"
variable "size" { type = string }
disk "d" { size = var.size }
output "path" { value = disk.d.path }
"#;

#[test]
fn inputs_outputs_nesting_and_passed_in_resources() {
    let root = r#"
module "net" {
  source = "../modules/net"
  cidr   = "10.91.0.0/24"
}
module "web" {
  source   = "../modules/vm"
  for_each = toset(["a", "b"])
  network  = module.net.network
  index    = each.key == "a" ? 1 : 2
  tags     = [each.key]
}
module "batch" {
  source  = "../modules/vm"
  count   = 2
  network = module.net.network
  index   = 10 + count.index
}
output "web" { value = { for k, m in module.web : k => m.domain } }
output "batch_names" { value = module.batch[*].name }
output "nested" { value = module.web["b"].disk_paths }
output "tags" { value = module.web["a"].tags }
output "bridge" { value = module.net.bridge }
"#;
    let (_d, c) = ok(&[("env/main.vf.hcl", root), ("modules/net/main.vf.hcl", NET), ("modules/vm/main.vf.hcl", VM), ("modules/disk/main.vf.hcl", DISK)]);
    let addrs: Vec<String> = c.resources.iter().map(|r| r.address.to_string()).collect();
    for a in ["module.net.network.this", "module.web[\"a\"].instance.vm", "module.web[\"b\"].module.disk[1].disk.d", "module.batch[1].port.p"] {
        assert!(addrs.contains(&a.to_string()), "{a} not in {addrs:?}");
    }
    assert_eq!(out(&c, "web").to_string(), r#"{"a" = "t-web@a+vm", "b" = "t-web@b+vm"}"#);
    assert_eq!(out(&c, "batch_names").to_string(), r#"["vm10", "vm11"]"#);
    assert_eq!(out(&c, "nested").to_string(), r#"["/var/lib/virtform/t/disks/web@b+disk@0+d.qcow2", "/var/lib/virtform/t/disks/web@b+disk@1+d.qcow2"]"#);
    assert_eq!(out(&c, "tags").to_string(), r#"["a"]"#);
    // A resource passed in through a module output keeps its own address.
    let Spec::Port(p) = &c.resource("module.batch[0].port.p").unwrap().spec else { panic!() };
    assert_eq!(p.network.0, "module.net.network.this");
    let Spec::Disk(d) = &c.resource("module.web[\"b\"].module.disk[1].disk.d").unwrap().spec else { panic!() };
    assert_eq!(d.size.map(|s| s.0), Some(4 << 20));
    // Dependencies first: the network before every port plugged into it.
    let pos = |a: &str| addrs.iter().position(|x| x == a).unwrap();
    assert!(pos("module.net.network.this") < pos("module.web[\"a\"].port.p"));
}

#[test]
fn data_sources_and_root_resources_pass_into_modules_and_depends_on_spans_them() {
    let root = r#"
data "network" "existing" { bridge = "br-outside" }
network "lan" { address = "10.92.0.1/24" }
module "a" {
  source  = "../modules/vm"
  network = data.network.existing
  index   = 1
}
module "b" {
  source     = "../modules/vm"
  network    = network.lan
  index      = 2
  depends_on = [module.a, network.lan]
}
"#;
    let (_d, c) = ok(&[("env/main.vf.hcl", root), ("modules/vm/main.vf.hcl", VM), ("modules/disk/main.vf.hcl", DISK)]);
    let Spec::Port(p) = &c.resource("module.a.port.p").unwrap().spec else { panic!() };
    assert_eq!(p.network.0, "data.network.existing");
    // The module block's depends_on reaches every resource inside it, nested ones too.
    let r = c.resource("module.b.module.disk[0].disk.d").unwrap();
    assert!(r.depends_on.contains(&"module.a".to_string()) && r.depends_on.contains(&"network.lan".to_string()), "{:?}", r.depends_on);
    assert!(c.resource("module.a.instance.vm").unwrap().depends_on.is_empty());
}

#[test]
fn module_paths_in_every_form_parse_back() {
    use virtform::model::{Address, ModulePath};
    for a in ["module.web[\"a\"].module.db.instance.vm[0]", "module.x[3].data.network.lan", "module.m.port.p[\"k.1\"]", "disk.root"] {
        assert_eq!(Address::parse(a).unwrap().to_string(), a);
    }
    assert_eq!(ModulePath::parse("module.web[\"a\"].module.db").unwrap().to_string(), "module.web[\"a\"].module.db");
}

struct Bad {
    name: &'static str,
    root: &'static str,
    module: &'static str,
    /// Where the error points: `env` or `module`, and the text there.
    file: &'static str,
    at: &'static str,
    msg: &'static str,
    /// The note naming the module block that instantiated it.
    call_site: bool,
}

#[test]
fn catalogue_of_module_errors() {
    let m_ok = "variable \"size\" {\n  type = number\n  validation {\n    condition     = var.size < 10\n    error_message = \"size must be below 10\"\n  }\n}\nvariable \"name\" {\n  type = string\n}\nnetwork \"n\" {}\noutput \"o\" { value = network.n.bridge }\n";
    let cases = [
        Bad { name: "missing source directory", root: "module \"a\" {\n  source = \"../nowhere\"\n}\n", module: m_ok, file: "env", at: "\"../nowhere\"", msg: "module source directory", call_site: false },
        Bad { name: "source not local", root: "module \"a\" {\n  source = \"git::https://x\"\n}\n", module: m_ok, file: "env", at: "\"git::", msg: "is not a local directory", call_site: false },
        Bad { name: "no source", root: "module \"a\" {\n  size = 1\n}\n", module: m_ok, file: "env", at: "module \"a\"", msg: "has no `source`", call_site: false },
        Bad { name: "unknown input", root: "module \"a\" {\n  source = \"../m\"\n  size = 1\n  name = \"x\"\n  colour = 2\n}\n", module: m_ok, file: "env", at: "colour", msg: "module \"a\" has no variable `colour`", call_site: false },
        Bad { name: "missing required input", root: "module \"a\" {\n  source = \"../m\"\n  size = 1\n}\n", module: m_ok, file: "env", at: "module \"a\"", msg: "missing the required input `name`", call_site: false },
        Bad { name: "input of the wrong type", root: "module \"a\" {\n  source = \"../m\"\n  size = \"big\"\n  name = \"x\"\n}\n", module: m_ok, file: "env", at: "\"big\"", msg: "invalid value for variable `size` (set by the module block's input)", call_site: true },
        Bad { name: "validation failure inside a module", root: "module \"a\" {\n  source = \"../m\"\n  size = 12\n  name = \"x\"\n}\n", module: m_ok, file: "env", at: "12", msg: "size must be below 10", call_site: true },
        Bad { name: "resource error inside a module", root: "module \"a\" {\n  source = \"../m\"\n  size = 1\n  name = \"x\"\n}\n", module: "variable \"size\" {}\nvariable \"name\" {}\nnetwork \"n\" {\n  mtu = \"x\"\n}\n", file: "module", at: "\"x\"", msg: "invalid `mtu` in module.a.network.n", call_site: true },
        Bad { name: "undeclared reference inside a module", root: "module \"a\" {\n  source = \"../m\"\n}\n", module: "port \"p\" {\n  network = network.lan\n}\n", file: "module", at: "network.lan", msg: "reference to undeclared resource `network.lan`", call_site: true },
        Bad { name: "unknown output", root: "module \"a\" {\n  source = \"../m\"\n  size = 1\n  name = \"x\"\n}\noutput \"x\" { value = module.a.p }\n", module: m_ok, file: "env", at: "module.a.p", msg: "module \"a\" has no output `p`", call_site: false },
        Bad { name: "undeclared module", root: "output \"x\" { value = module.b.o }\n", module: m_ok, file: "env", at: "module.b.o", msg: "reference to undeclared module `module.b`", call_site: false },
        Bad { name: "import inside a module", root: "module \"a\" {\n  source = \"../m\"\n}\n", module: "import {\n  to = network.n\n  id = \"br0\"\n}\nnetwork \"n\" {}\n", file: "module", at: "import", msg: "belongs in the root configuration", call_site: true },
        Bad { name: "lifecycle on a module block", root: "module \"a\" {\n  source = \"../m\"\n  size = 1\n  name = \"x\"\n  lifecycle {\n    prevent_destroy = true\n  }\n}\n", module: m_ok, file: "env", at: "lifecycle", msg: "a module block has no `lifecycle`", call_site: false },
        Bad { name: "source not a literal", root: "module \"a\" {\n  source = \"../${\"m\"}\"\n}\n", module: m_ok, file: "env", at: "\"../${", msg: "must be a literal string", call_site: false },
        Bad { name: "count and for_each", root: "module \"a\" {\n  source = \"../m\"\n  size = 1\n  name = \"x\"\n  count = 1\n  for_each = toset([])\n}\n", module: m_ok, file: "env", at: "for_each", msg: "sets both `count` and `for_each`", call_site: false },
        Bad { name: "each outside for_each", root: "module \"a\" {\n  source = \"../m\"\n  size = 1\n  name = each.key\n}\n", module: m_ok, file: "env", at: "each.key", msg: "`each` is only available", call_site: false },
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let (dir, r) = load(&[("env/main.vf.hcl", c.root), ("m/main.vf.hcl", c.module)]);
        let err = match r {
            Ok(_) => {
                failures.push(format!("{}: was accepted", c.name));
                continue;
            }
            Err(e) => e,
        };
        let rendered = err.render(false);
        let Some(d) = err.diags.0.iter().find(|d| d.message.contains(c.msg)) else {
            failures.push(format!("{}: no diagnostic contains {:?}; got:\n{rendered}", c.name, c.msg));
            continue;
        };
        let (file, text) = if c.file == "env" { ("env/main.vf.hcl", c.root) } else { ("m/main.vf.hcl", c.module) };
        let pos = text.find(c.at).unwrap_or_else(|| panic!("{}: {:?} not in the source", c.name, c.at));
        let line = text[..pos].matches('\n').count() + 1;
        let col = text[..pos].rsplit('\n').next().unwrap().chars().count() + 1;
        let got = d.location(&err.sources).unwrap_or_default();
        if !got.ends_with(&format!("{file}:{line}:{col}")) {
            failures.push(format!("{}: expected {file}:{line}:{col}, got {got}:\n{rendered}", c.name));
            continue;
        }
        if !rendered.contains(&format!("{line} | {}", text.lines().nth(line - 1).unwrap())) {
            failures.push(format!("{}: the source line is not shown:\n{rendered}", c.name));
        }
        let call_note = d.notes.iter().find(|(s, n)| s.is_some() && n.contains("called here"));
        if c.call_site != call_note.is_some() {
            failures.push(format!("{}: call-site note {}expected:\n{rendered}", c.name, if c.call_site { "" } else { "not " }));
        } else if let Some((Some(s), _)) = call_note {
            let f = err.sources.get(s.file);
            assert!(f.path.ends_with("env/main.vf.hcl") && f.text[s.start..].starts_with("module \"a\""), "{}: {rendered}", c.name);
        }
        drop(dir);
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

#[test]
fn a_cycle_of_modules_is_located() {
    let (_d, r) = load(&[("env/main.vf.hcl", "module \"a\" {\n  source = \"../a\"\n}\n"), ("a/main.vf.hcl", "module \"b\" {\n  source = \"../b\"\n}\n"), ("b/main.vf.hcl", "module \"a\" {\n  source = \"../a\"\n}\n")]);
    let e = r.expect_err("a cycle is an error");
    let d = e.diags.0.iter().find(|d| d.message.starts_with("module cycle: ")).unwrap_or_else(|| panic!("{}", e.render(false)));
    assert!(d.message.ends_with("/a -> ") || d.message.matches("/a").count() == 2, "{}", d.message);
    assert!(d.location(&e.sources).unwrap().ends_with("b/main.vf.hcl:2:12"), "{}", e.render(false));
    // Both calls on the way are named.
    assert_eq!(d.notes.iter().filter(|(_, n)| n.contains("called here")).count(), 2, "{}", e.render(false));
}

#[test]
fn an_error_inside_a_module_renders_both_places() {
    let (_d, r) = load(&[
        ("env/main.vf.hcl", "module \"web\" {\n  source   = \"../m\"\n  for_each = toset([\"a\"])\n}\n"),
        ("m/main.vf.hcl", "network \"n\" {\n  mtu = \"x\"\n}\n"),
    ]);
    let text = r.err().unwrap().render(false).replace(&format!("{}/", _d.path().display()), "");
    insta::assert_snapshot!("module_error_rendering", text);
}

#[test]
fn sensitive_values_stay_sensitive_through_a_module() {
    let m = "variable \"token\" {\n  sensitive = true\n}\noutput \"t\" {\n  value     = var.token\n  sensitive = true\n}\n";
    let root = "variable \"secret\" {\n  default   = \"hunter22\"\n  sensitive = true\n}\nmodule \"a\" {\n  source = \"../m\"\n  token  = var.secret\n}\noutput \"leak\" { value = module.a.t }\n";
    let (_d, r) = load(&[("env/main.vf.hcl", root), ("m/main.vf.hcl", m)]);
    let e = r.expect_err("an output showing a module's sensitive output must be sensitive");
    assert!(e.diags.0.iter().any(|d| d.message == "output \"leak\" refers to sensitive values"), "{}", e.render(false));
    // Inside the module, an output of a sensitive input must be marked too.
    let m2 = "variable \"token\" {}\noutput \"t\" { value = var.token }\n";
    let (_d, r) = load(&[("env/main.vf.hcl", root), ("m/main.vf.hcl", m2)]);
    let e = r.expect_err("the module's output reads a sensitive input");
    assert!(e.diags.0.iter().any(|d| d.message == "output \"t\" refers to sensitive values"), "{}", e.render(false));
    assert!(!e.render(false).contains("hunter22"));
}
