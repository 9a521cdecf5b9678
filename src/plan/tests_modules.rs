//! Modules through the planner: module-path addresses on every host
//! object, converged plans, orphans of a removed module instance, targets.

use super::tests::{converged, find, opts};
use super::*;
use crate::config::{self, LoadOptions};

const VM_MODULE: &str = r#"
variable "network" {}
variable "host" { type = number }
variable "memory" {
  type    = string
  default = "256M"
}
disk "root" { size = "64M" }
port "eth0" {
  network = var.network
  ip      = cidrhost("10.79.0.0/24", var.host)
}
instance "vm" {
  memory = var.memory
  kernel = "/assets/vmlinuz"
  disks  = [disk.root]
  ports  = [port.eth0]
}
output "ip" { value = port.eth0.ip }
output "name" { value = instance.vm.name }
"#;

const ROOT: &str = r#"
virtform { stack = "ms" }
network "lan" {
  bridge  = "vfms-lan0"
  address = "10.79.0.1/24"
}
module "web" {
  source   = "./modules/vm"
  for_each = { a = 10, "x-y" = 11 }
  network  = network.lan
  host     = each.value
}
module "db" {
  source  = "./modules/vm"
  count   = 1
  network = network.lan
  host    = 20
  memory  = "512M"
}
instance "solo" {
  kernel = "/assets/vmlinuz"
}
output "ips" { value = { for k, m in module.web : k => m.ip } }
"#;

fn load_tree(files: &[(&str, &str)]) -> (tempfile::TempDir, Configuration) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let c = config::load(&LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/state".into(), ..Default::default() }).unwrap_or_else(|e| panic!("{}", e.render(false)));
    (dir, c)
}

fn repo() -> (tempfile::TempDir, Configuration) {
    load_tree(&[("main.vf.hcl", ROOT), ("modules/vm/main.vf.hcl", VM_MODULE)])
}

#[test]
fn module_resources_carry_the_path_everywhere() {
    let (_d, cfg) = repo();
    let addrs: Vec<String> = cfg.resources.iter().map(|r| r.address.to_string()).collect();
    for a in ["network.lan", "instance.solo", "module.web[\"a\"].instance.vm", "module.web[\"x-y\"].disk.root", "module.db[0].port.eth0"] {
        assert!(addrs.contains(&a.to_string()), "{a} not in {addrs:?}");
    }
    let p = plan(&cfg, &Observed::default(), &opts());
    let low = super::tests::lowering(&cfg);
    let vm = cfg.resource("module.web[\"x-y\"].instance.vm").unwrap();
    let def = low.domain(vm).unwrap();
    // Domain name, marker, console log, disk path: all from the module path.
    assert_eq!(def.name, "ms-web@x-y+vm");
    assert_eq!(def.marker.address, "module.web[\"x-y\"].instance.vm");
    let disk = low.disk(cfg.resource("module.web[\"x-y\"].disk.root").unwrap()).unwrap();
    assert_eq!(disk.path, "/state/ms/disks/web@x-y+root.qcow2");
    // The root resources keep the names they always had.
    let solo = low.domain(cfg.resource("instance.solo").unwrap()).unwrap();
    assert_eq!(solo.name, "ms-solo");
    // Module inputs reach the resources; a module's output reads back.
    let Spec::Instance(db) = &cfg.resource("module.db[0].instance.vm").unwrap().spec else { panic!() };
    assert_eq!(db.memory.0, 512 << 20);
    let ips = &cfg.outputs.iter().find(|o| o.name == "ips").unwrap().value;
    assert_eq!(ips.to_string(), r#"{"a" = "10.79.0.10", "x-y" = "10.79.0.11"}"#);
    assert_eq!(find(&p, "module.web[\"a\"].instance.vm").action, Action::Create);
    insta::assert_snapshot!("plan_text_modules", render::text(&p, false));
    let json = render::to_json(&p);
    let rc: Vec<&str> = json["resource_changes"].as_array().unwrap().iter().map(|c| c["address"].as_str().unwrap()).collect();
    assert!(rc.contains(&"module.db[0].instance.vm"), "{rc:?}");
}

#[test]
fn derived_names_never_collide_between_module_instances() {
    // module.a["x-y"].… and module.a["x"].…"y"…: names, MACs, ids, files differ.
    let m = r#"
variable "n" {}
network "lan" {}
port "p" { network = network.lan }
disk "y-d" { size = "1M" }
disk "d" { size = "1M" }
instance "y-vm" { kernel = "/k" }
instance "vm" {
  kernel = "/k"
  ports  = [port.p]
}
module "y" {
  source = "./inner"
  count  = var.n
}
"#;
    let inner = r#"
disk "d" { size = "1M" }
instance "vm" { kernel = "/k" }
"#;
    let root = r#"
virtform { stack = "c" }
module "a" {
  source   = "./m"
  for_each = { "x-y" = 0, x = 1 }
  n        = each.value
}
instance "a-x-y-vm" { kernel = "/k" }
"#;
    let (_d, cfg) = load_tree(&[("main.vf.hcl", root), ("m/main.vf.hcl", m), ("m/inner/main.vf.hcl", inner)]);
    let low = super::tests::lowering(&cfg);
    let mut names = BTreeSet::new();
    let mut files = BTreeSet::new();
    let mut macs = BTreeSet::new();
    let mut bridges = BTreeSet::new();
    for r in &cfg.resources {
        match &r.spec {
            Spec::Instance(_) => assert!(names.insert(low.domain(r).unwrap().name), "{}", r.address),
            Spec::Disk(_) => assert!(files.insert(low.disk(r).unwrap().path), "{}", r.address),
            Spec::Port(p) => assert!(macs.insert(p.mac), "{}", r.address),
            Spec::Network(n) => {
                let b = n.bridge.as_ref().unwrap().0.clone();
                assert!(b.len() <= 15, "{b}");
                assert!(bridges.insert(b), "{}", r.address);
            }
            _ => {}
        }
    }
    let want: BTreeSet<String> = ["c-a@x-y+vm", "c-a@x-y+y-vm", "c-a@x+vm", "c-a@x+y-vm", "c-a@x+y@0+vm", "c-a-x-y-vm"].iter().map(|s| s.to_string()).collect();
    assert_eq!(names, want);
    assert!(files.contains("/state/c/disks/a@x+y@0+d.qcow2") && files.contains("/state/c/disks/a@x-y+y-d.qcow2"), "{files:?}");
    assert_eq!(macs.len(), 2);
    assert_eq!(bridges.len(), 2);
}

#[test]
fn converged_modules_plan_nothing_and_a_dropped_instance_is_deleted() {
    let (_d, cfg) = repo();
    let host = converged(&cfg);
    let p = plan(&cfg, &host, &opts());
    assert!(p.changes.iter().all(|c| c.action == Action::NoOp), "{}", render::text(&p, false));
    // One instance of module.web leaves the configuration: exactly its objects go.
    let fewer = ROOT.replace(", \"x-y\" = 11", "");
    let (_d2, cfg2) = load_tree(&[("main.vf.hcl", &fewer), ("modules/vm/main.vf.hcl", VM_MODULE)]);
    let p = plan(&cfg2, &host, &opts());
    let deleted: Vec<&str> = p.changes.iter().filter(|c| c.action == Action::Delete).map(|c| c.address.as_str()).collect();
    assert_eq!(deleted, ["module.web[\"x-y\"].disk.root", "module.web[\"x-y\"].instance.vm"], "{}", render::text(&p, false));
    assert_eq!(find(&p, "module.web[\"x-y\"].instance.vm").object.as_deref(), Some("ms-web@x-y+vm"));
}

#[test]
fn targets_name_modules_and_resources_inside_them() {
    let (_d, cfg) = repo();
    let t = |targets: &[&str]| {
        let p = plan(&cfg, &Observed::default(), &PlanOptions { targets: targets.iter().map(|s| s.to_string()).collect(), ..opts() });
        (p.changes.iter().filter(|c| c.action != Action::NoOp).map(|c| c.address.clone()).collect::<Vec<_>>(), p.errors)
    };
    let (all_web, _) = t(&["module.web"]);
    assert!(all_web.iter().any(|a| a.starts_with("module.web[\"a\"]")) && all_web.iter().any(|a| a.starts_with("module.web[\"x-y\"]")), "{all_web:?}");
    assert!(all_web.contains(&"network.lan".to_string()), "dependencies stay: {all_web:?}");
    assert!(!all_web.iter().any(|a| a.starts_with("module.db")), "{all_web:?}");
    let (one, _) = t(&["module.web[\"a\"]"]);
    assert!(!one.iter().any(|a| a.starts_with("module.web[\"x-y\"]")), "{one:?}");
    let (vm, _) = t(&["module.db[0].instance.vm"]);
    assert!(vm.contains(&"module.db[0].disk.root".to_string()) && !vm.iter().any(|a| a.starts_with("module.web")), "{vm:?}");
    // A module block's depends_on is followed: module.db after all of module.web.
    let dep = ROOT.replace("  memory  = \"512M\"\n", "  memory  = \"512M\"\n  depends_on = [module.web]\n");
    assert_ne!(dep, ROOT);
    let (_d2, cfg2) = load_tree(&[("main.vf.hcl", &dep), ("modules/vm/main.vf.hcl", VM_MODULE)]);
    let p = plan(&cfg2, &Observed::default(), &PlanOptions { targets: vec!["module.db".into()], ..opts() });
    assert!(p.changes.iter().any(|c| c.address == "module.web[\"x-y\"].instance.vm"), "{}", render::text(&p, false));
    assert!(cfg2.resource("module.db[0].instance.vm").unwrap().depends_on.contains(&"module.web".to_string()));
    let (_, errs) = t(&["module.nope"]);
    assert_eq!(errs, ["--target module.nope: no such module"]);
    // --replace takes a module address.
    let host = converged(&cfg);
    let p = plan(&cfg, &host, &PlanOptions { replace: vec!["module.web[\"a\"].instance.vm".into()], ..opts() });
    assert_eq!(find(&p, "module.web[\"a\"].instance.vm").action, Action::Replace);
}

#[test]
fn the_dot_graph_names_module_resources() {
    let (_d, cfg) = repo();
    let dot = cfg.graph.to_dot();
    assert!(dot.contains(r#""module.web[\"a\"].instance.vm" -> "module.web[\"a\"].disk.root";"#), "{dot}");
    assert!(dot.contains(r#""module.db[0].port.eth0" -> "network.lan";"#), "{dot}");
}

#[test]
fn hybrid_ports_in_module_instances_get_distinct_valid_device_names() {
    let m = r#"
variable "net" {}
port "p" {
  network = var.net
  plug    = "ovs_hybrid"
}
instance "vm" {
  kernel = "/k"
  ports  = [port.p]
}
"#;
    let root = r#"
virtform { stack = "hy" }
network "int" {
  type   = "ovs"
  bridge = "vfhy-int"
}
module "a" {
  source   = "./m"
  for_each = toset(["x-y", "x"])
  net      = network.int
}
"#;
    let (_d, cfg) = load_tree(&[("main.vf.hcl", root), ("m/main.vf.hcl", m)]);
    let low = super::tests::lowering(&cfg);
    let mut devs = BTreeSet::new();
    let mut uuids = BTreeSet::new();
    for k in ["x-y", "x"] {
        let h = low.hybrid(cfg.resource(&format!("module.a[\"{k}\"].port.p")).unwrap()).unwrap();
        for d in [&h.qbr, &h.qvb, &h.qvo, &h.tap] {
            assert!(d.len() <= 15, "{d}");
            assert!(devs.insert(d.clone()), "{d} twice");
        }
        assert!(uuids.insert(h.vm_uuid.clone()) && !h.vm_uuid.is_empty());
        let def = low.domain(cfg.resource(&format!("module.a[\"{k}\"].instance.vm")).unwrap()).unwrap();
        assert_eq!(def.uuid, h.vm_uuid, "Nova's vm-uuid is the domain's");
    }
}

/// `moved` into a module: a root instance (with its disk and port) becomes
/// `module.web["a"]`'s; the plan moves all three and changes nothing else,
/// the domain keeps its name, the disk its path.
#[test]
fn a_move_into_a_module_only_moves() {
    let before = r#"
virtform { stack = "mm" }
network "lan" { address = "10.79.0.1/24" }
disk "root" { size = "64M" }
port "eth0" {
  network = network.lan
  ip      = "10.79.0.10"
}
instance "vm" {
  memory = "256M"
  kernel = "/assets/vmlinuz"
  disks  = [disk.root]
  ports  = [port.eth0]
}
"#;
    let module = r#"
variable "network" {}
variable "host" { type = number }
disk "root" { size = "64M" }
port "eth0" {
  network = var.network
  ip      = cidrhost("10.79.0.0/24", var.host)
}
instance "vm" {
  memory = "256M"
  kernel = "/assets/vmlinuz"
  disks  = [disk.root]
  ports  = [port.eth0]
}
"#;
    let after = r#"
virtform { stack = "mm" }
network "lan" { address = "10.79.0.1/24" }
module "web" {
  source   = "./m"
  for_each = { a = 10 }
  network  = network.lan
  host     = each.value
}
moved {
  from = instance.vm
  to   = module.web["a"].instance.vm
}
moved {
  from = disk.root
  to   = module.web["a"].disk.root
}
moved {
  from = port.eth0
  to   = module.web["a"].port.eth0
}
"#;
    let (_d, old) = load_tree(&[("main.vf.hcl", before)]);
    let host = converged(&old);
    let (_d2, mut cfg) = load_tree(&[("main.vf.hcl", after), ("m/main.vf.hcl", module)]);
    super::moved::keep_names(&mut cfg, &host, std::path::Path::new("/state"));
    let p = plan(&cfg, &host, &opts());
    assert!(p.errors.is_empty() && p.conflicts.is_empty(), "{:?} {:?}", p.errors, p.conflicts);
    for (from, to) in [("instance.vm", "module.web[\"a\"].instance.vm"), ("disk.root", "module.web[\"a\"].disk.root")] {
        let c = find(&p, to);
        assert_eq!((c.action, c.reason.as_deref(), c.previous_address.as_deref()), (Action::Update, Some("moved"), Some(from)), "{}", render::text(&p, false));
    }
    assert!(!p.changes.iter().any(|c| matches!(c.action, Action::Delete | Action::Create | Action::Replace)), "{}", render::text(&p, false));
    let low = super::tests::lowering(&cfg);
    assert_eq!(low.domain(cfg.resource("module.web[\"a\"].instance.vm").unwrap()).unwrap().name, "mm-vm");
    assert_eq!(low.disk(cfg.resource("module.web[\"a\"].disk.root").unwrap()).unwrap().path, "/state/mm/disks/root.qcow2");
}

/// A module instance's guest gets a valid hostname in its seed (the `@` and
/// `+` of its derived domain name become `-`); a root instance keeps its
/// domain name as its hostname.
#[test]
fn module_instances_get_valid_hostnames_in_their_seeds() {
    let module = "instance \"vm\" {\n  kernel = \"/assets/vmlinuz\"\n  cloud_init {}\n}\n";
    let root = "virtform { stack = \"mh\" }\nmodule \"web\" {\n  source   = \"./modules/vm\"\n  for_each = toset([\"a\"])\n}\ninstance \"solo\" {\n  kernel = \"/assets/vmlinuz\"\n  cloud_init {}\n}\n";
    let (_d, cfg) = load_tree(&[("main.vf.hcl", root), ("modules/vm/main.vf.hcl", module)]);
    let lowering = super::tests::lowering(&cfg);
    let seed = |a: &str| lowering.seed(cfg.resource(a).unwrap_or_else(|| panic!("{a}"))).unwrap().1;
    let web = seed("module.web[\"a\"].instance.vm");
    assert_eq!(web.hostname, "mh-web-a-vm");
    assert!(web.instance_id.starts_with("mh-web@a+vm-"), "{}", web.instance_id);
    assert_eq!(seed("instance.solo").hostname, "mh-solo");
}

/// `moved { from = module.web, to = module.site }` and an instance move
/// `module.app[0]` → `module.app["alpha"]`: every resource of the call moves
/// (one change each, markers only), every host name is kept.
#[test]
fn whole_module_and_module_instance_moves_only_move() {
    let files = |root: &str| [("main.vf.hcl", root.to_string()), ("modules/vm/main.vf.hcl", VM_MODULE.to_string())];
    let before = ROOT.to_string();
    let (_d, old) = load_tree(&files(&before).iter().map(|(a, b)| (*a, b.as_str())).collect::<Vec<_>>());
    let host = converged(&old);
    let after = ROOT.replace("module \"web\" {", "module \"site\" {").replace("module.web :", "module.site :").replace("module \"db\" {\n  source  = \"./modules/vm\"\n  count   = 1", "module \"db\" {\n  source  = \"./modules/vm\"\n  for_each = toset([\"alpha\"])")
        + "moved {\n  from = module.web\n  to   = module.site\n}\nmoved {\n  from = module.db[0]\n  to   = module.db[\"alpha\"]\n}\n";
    let (_d2, mut cfg) = load_tree(&files(&after).iter().map(|(a, b)| (*a, b.as_str())).collect::<Vec<_>>());
    assert_eq!(cfg.moves.len(), 9, "{:#?}", cfg.moves.iter().map(|m| format!("{} -> {}", m.from, m.to)).collect::<Vec<_>>());
    super::moved::keep_names(&mut cfg, &host, std::path::Path::new("/state"));
    let p = plan(&cfg, &host, &opts());
    assert!(p.errors.is_empty() && p.conflicts.is_empty(), "{:?} {:?}", p.errors, p.conflicts);
    for (from, to) in [
        ("module.web[\"a\"].instance.vm", "module.site[\"a\"].instance.vm"),
        ("module.web[\"x-y\"].disk.root", "module.site[\"x-y\"].disk.root"),
        ("module.db[0].instance.vm", "module.db[\"alpha\"].instance.vm"),
        ("module.db[0].port.eth0", "module.db[\"alpha\"].port.eth0"),
    ] {
        let c = find(&p, to);
        assert_eq!((c.action, c.reason.as_deref(), c.previous_address.as_deref()), (Action::Update, Some("moved"), Some(from)), "{}", render::text(&p, false));
    }
    assert!(!p.changes.iter().any(|c| matches!(c.action, Action::Delete | Action::Create | Action::Replace)), "{}", render::text(&p, false));
    let low = super::tests::lowering(&cfg);
    let old_low = super::tests::lowering(&old);
    for (now, was) in [("module.site[\"a\"].instance.vm", "module.web[\"a\"].instance.vm"), ("module.db[\"alpha\"].instance.vm", "module.db[0].instance.vm")] {
        assert_eq!(low.domain(cfg.resource(now).unwrap()).unwrap().name, old_low.domain(old.resource(was).unwrap()).unwrap().name, "{now}");
    }
}

/// Bad module moves are located errors: still declared, to nothing, to a
/// resource, one instance to a call of several.
#[test]
fn bad_module_moves_are_located_errors() {
    let load_err = |extra: &str| {
        let root = format!("{ROOT}{extra}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.vf.hcl"), &root).unwrap();
        std::fs::create_dir_all(dir.path().join("modules/vm")).unwrap();
        std::fs::write(dir.path().join("modules/vm/main.vf.hcl"), VM_MODULE).unwrap();
        match config::load(&LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/state".into(), ..Default::default() }) {
            Ok(_) => panic!("loaded:\n{root}"),
            Err(e) => e.render(false),
        }
    };
    for (extra, want) in [
        ("moved {\n  from = module.web\n  to   = module.db\n}\n", "module.web is moved to module.db, but the configuration still declares module.web"),
        ("moved {\n  from = module.old\n  to   = module.nothing\n}\n", "module.old is moved to module.nothing, which declares no resources"),
        ("moved {\n  from = module.old\n  to   = instance.solo\n}\n", "module.old is a module call: it moves to another module call"),
        ("moved {\n  from = module.old[0]\n  to   = module.web\n}\n", "module.old[0] is one module instance, module.web has several"),
    ] {
        let e = load_err(extra);
        assert!(e.contains(want) && e.contains("main.vf.hcl:"), "{want}:\n{e}");
    }
}
