//! `moved` and `removed` blocks in the planner (no host: observations built by hand).

use super::tests::{find, load};
use super::*;

/// Before the refactoring: one of each kind, every host name derived.
const BEFORE: &str = r#"
virtform { stack = "mv" }
network "lan" {
  address = "10.78.0.1/24"
}
image "tiny" {
  source = "/assets/tiny.qcow2"
  sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
}
disk "root" {
  image = image.tiny
  size  = "256M"
}
volume "data" {
  size = "64M"
}
port "eth0" {
  network = network.lan
  ip      = "10.78.0.10"
}
instance "vm" {
  memory  = "256M"
  kernel  = "/assets/vmlinuz"
  cmdline = "console=ttyS0"
  disks   = [disk.root]
  volumes = [volume.data]
  ports   = [port.eth0]
}
"#;

/// Every resource renamed, with a moved block each.
fn after(with_blocks: bool) -> String {
    let mut s = BEFORE
        .replace("network \"lan\"", "network \"lan2\"")
        .replace("network.lan", "network.lan2")
        .replace("disk \"root\"", "disk \"boot\"")
        .replace("disk.root", "disk.boot")
        .replace("volume \"data\"", "volume \"store\"")
        .replace("volume.data", "volume.store")
        .replace("port \"eth0\"", "port \"nic\"")
        .replace("port.eth0", "port.nic")
        .replace("instance \"vm\"", "instance \"vm2\"");
    if with_blocks {
        s.push_str(
            r#"
moved {
  from = instance.vm
  to   = instance.vm2
}
moved {
  from = network.lan
  to   = network.lan2
}
moved {
  from = disk.root
  to   = disk.boot
}
moved {
  from = volume.data
  to   = volume.store
}
moved {
  from = port.eth0
  to   = port.nic
}
"#,
        );
    }
    s
}

/// The host as an apply of `cfg` leaves it (volumes included).
fn converged(cfg: &Configuration) -> Observed {
    let mut o = super::tests::converged(cfg);
    let l = super::tests::lowering(cfg);
    for r in &cfg.resources {
        if let Some(v) = l.volume(r) {
            o.files.insert(v.path, crate::observe::ActualFile { format: crate::model::image::ImageFormat::Qcow2, virtual_size: v.size.unwrap_or(0), backing_file: None });
        }
    }
    o
}

fn opts() -> PlanOptions {
    super::tests::opts()
}

/// Loads and keeps the names the host's objects have (as the CLI does).
fn prepared(src: &str, obs: &Observed) -> (tempfile::TempDir, Configuration) {
    let (d, mut cfg) = load(src);
    moved::keep_names(&mut cfg, obs, std::path::Path::new("/state"));
    (d, cfg)
}

/// The host after applying a plan: the objects as `cfg` (names kept) wants
/// them, markers rewritten, and the plan's record.
fn applied(cfg: &Configuration, p: &Plan, before: &Observed) -> Observed {
    let mut o = converged(cfg);
    o.names = p.names.clone().unwrap_or_else(|| before.names.clone());
    o
}

#[test]
fn a_move_keeps_every_host_name_and_rewrites_only_markers() {
    let (_d, old) = load(BEFORE);
    let host = converged(&old);
    let (_d2, cfg) = prepared(&after(true), &host);
    let p = plan(&cfg, &host, &opts());
    assert!(p.errors.is_empty() && p.conflicts.is_empty(), "{:?} {:?}", p.errors, p.conflicts);
    for (from, to) in [("instance.vm", "instance.vm2"), ("network.lan", "network.lan2"), ("disk.root", "disk.boot"), ("volume.data", "volume.store"), ("port.eth0", "port.nic")] {
        let c = find(&p, to);
        assert_eq!(c.action, Action::Update, "{to}: {c:?}");
        assert_eq!(c.reason.as_deref(), Some("moved"), "{to}: {c:?}");
        assert_eq!(c.previous_address.as_deref(), Some(from));
        assert_eq!(c.changes.len(), 1, "{to}: only the address changes: {:?}", c.changes);
        assert_eq!(c.changes[0].attr, "address");
    }
    assert!(!p.changes.iter().any(|c| matches!(c.action, Action::Delete | Action::Create | Action::Replace)), "{}", render::text(&p, false));
    assert_eq!(p.summary(), "Plan: 5 to move, 0 to add, 0 to change, 0 to destroy.");
    // The domain keeps its name (it cannot be renamed while it runs), the
    // files their paths, the port its MAC, the bridge its derived name.
    let vm = cfg.resource("instance.vm2").unwrap();
    let Spec::Instance(i) = &vm.spec else { unreachable!() };
    assert_eq!(i.domain_name(), "mv-vm");
    let l = super::tests::lowering(&cfg);
    assert_eq!(l.disk(cfg.resource("disk.boot").unwrap()).unwrap().path, "/state/mv/disks/root.qcow2");
    assert_eq!(l.volume(cfg.resource("volume.store").unwrap()).unwrap().path, "/state/mv/volumes/data.qcow2");
    let names = p.names.as_ref().expect("the plan records the moves");
    assert_eq!(names.names.get("instance.vm2").map(String::as_str), Some("instance.vm"));
    assert_eq!(names.names.get("network.lan2").map(String::as_str), Some("network.lan"));
    insta::assert_snapshot!("plan_text_moved", render::text(&p, false));
    let j = render::to_json(&p);
    let vmj = j["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "instance.vm2").unwrap();
    assert_eq!(vmj["previous_address"], "instance.vm");
    assert_eq!(vmj["change"]["actions"], serde_json::json!(["update"]));
    assert_eq!(vmj["action_reason"], "moved");
    let schema: serde_json::Value = serde_json::from_str(include_str!("../../schema/plan.schema.json")).unwrap();
    let rc = &schema["properties"]["resource_changes"]["items"];
    assert!(rc["properties"]["previous_address"].is_object(), "the plan schema documents previous_address");
    assert!(rc["properties"]["change"]["properties"]["actions"]["items"]["enum"].as_array().unwrap().contains(&serde_json::json!("forget")));
}

#[test]
fn after_the_apply_a_move_is_a_no_op_with_and_without_its_block() {
    let (_d, old) = load(BEFORE);
    let host = converged(&old);
    let (_d2, cfg) = prepared(&after(true), &host);
    let p = plan(&cfg, &host, &opts());
    let host2 = applied(&cfg, &p, &host);
    for with_blocks in [true, false] {
        let (_d3, cfg2) = prepared(&after(with_blocks), &host2);
        let p2 = plan(&cfg2, &host2, &opts());
        assert!(p2.errors.is_empty() && p2.conflicts.is_empty(), "{:?} {:?}", p2.errors, p2.conflicts);
        assert!(!p2.has_changes(), "blocks {with_blocks}: {}", render::text(&p2, false));
        assert_eq!(p2.names, None, "the record is unchanged");
    }
    // The names stay the old ones for good.
    let (_d4, cfg3) = prepared(&after(false), &host2);
    let Spec::Instance(i) = &cfg3.resource("instance.vm2").unwrap().spec else { unreachable!() };
    assert_eq!(i.domain_name(), "mv-vm");
}

#[test]
fn a_move_with_a_change_shows_only_that_change_beside_the_move() {
    let (_d, old) = load(BEFORE);
    let host = converged(&old);
    let (_d2, cfg) = prepared(&after(true).replace("memory  = \"256M\"", "memory  = \"512M\""), &host);
    let p = plan(&cfg, &host, &opts());
    let c = find(&p, "instance.vm2");
    assert_eq!(c.action, Action::Update);
    assert_eq!(c.previous_address.as_deref(), Some("instance.vm"));
    let attrs: Vec<&str> = c.changes.iter().map(|c| c.attr.as_str()).collect();
    assert_eq!(attrs, vec!["address", "memory", "current_memory"], "{:?}", c.changes);
    assert!(render::text(&p, false).contains("# instance.vm has moved to instance.vm2\n  # instance.vm2 will be updated in-place (restart)"), "{}", render::text(&p, false));
    assert_eq!(p.summary(), "Plan: 5 to move, 0 to add, 1 to change, 0 to destroy.");
}

const RUNNERS: &str = r#"
virtform { stack = "mv" }
instance "runner" {
  count   = 2
  memory  = "256M"
  kernel  = "/assets/vmlinuz"
}
"#;

#[test]
fn count_to_for_each_moves_each_index_and_chains_resolve() {
    let (_d, old) = load(RUNNERS);
    let host = converged(&old);
    let new = r#"
virtform { stack = "mv" }
instance "runner" {
  for_each = toset(["alpha", "beta"])
  memory   = "256M"
  kernel   = "/assets/vmlinuz"
}
moved {
  from = instance.runner[0]
  to   = instance.runner["alpha"]
}
moved {
  from = instance.runner[1]
  to   = instance.tmp
}
moved {
  from = instance.tmp
  to   = instance.runner["beta"]
}
"#;
    let (_d2, cfg) = prepared(new, &host);
    let p = plan(&cfg, &host, &opts());
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let a = find(&p, "instance.runner[\"alpha\"]");
    assert_eq!((a.action, a.previous_address.as_deref()), (Action::Update, Some("instance.runner[0]")));
    let b = find(&p, "instance.runner[\"beta\"]");
    assert_eq!(b.previous_address.as_deref(), Some("instance.runner[1]"), "the chain runner[1] → tmp → runner[\"beta\"]");
    assert_eq!(p.summary(), "Plan: 2 to move, 0 to add, 0 to change, 0 to destroy.");
    let Spec::Instance(i) = &cfg.resource("instance.runner[\"beta\"]").unwrap().spec else { unreachable!() };
    assert_eq!(i.domain_name(), "mv-runner-1");
    insta::assert_snapshot!("plan_text_moved_count_to_for_each", render::text(&p, false));
}

#[test]
fn a_whole_block_move_takes_every_instance() {
    let (_d, old) = load(RUNNERS);
    let host = converged(&old);
    let new = RUNNERS.replace("instance \"runner\"", "instance \"worker\"") + "moved {\n  from = instance.runner\n  to   = instance.worker\n}\n";
    let (_d2, cfg) = prepared(&new, &host);
    let p = plan(&cfg, &host, &opts());
    assert_eq!(find(&p, "instance.worker[0]").previous_address.as_deref(), Some("instance.runner[0]"));
    assert_eq!(find(&p, "instance.worker[1]").previous_address.as_deref(), Some("instance.runner[1]"));
    assert_eq!(p.summary(), "Plan: 2 to move, 0 to add, 0 to change, 0 to destroy.");
}

#[test]
fn a_move_to_an_address_the_host_already_has_is_a_located_error() {
    let (_d, old) = load(&(RUNNERS.replace("count   = 2", "count   = 1") + "instance \"b\" {\n  memory = \"256M\"\n  kernel = \"/assets/vmlinuz\"\n}\n"));
    let host = converged(&old);
    let new = "virtform { stack = \"mv\" }\ninstance \"b\" {\n  memory = \"256M\"\n  kernel = \"/assets/vmlinuz\"\n}\nmoved {\n  from = instance.runner[0]\n  to   = instance.b\n}\n";
    let (_d2, cfg) = prepared(new, &host);
    let p = plan(&cfg, &host, &opts());
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    let e = &p.errors[0];
    assert!(e.contains("moved: instance.runner[0] cannot move to instance.b: the host already has domain \"mv-b\""), "{e}");
    assert!(e.contains("main.vf.hcl:8:10"), "{e}");
    assert!(e.contains("to   = instance.b"), "{e}");
    // Nothing moves, and the names are not taken over.
    assert!(find(&p, "instance.b").previous_address.is_none());
    let Spec::Instance(i) = &cfg.resource("instance.b").unwrap().spec else { unreachable!() };
    assert_eq!(i.domain_name(), "mv-b");
}

#[test]
fn a_move_from_nothing_on_the_host_is_a_no_op() {
    let (_d, cfg) = load(&after(true));
    let p = plan(&cfg, &Observed::default(), &opts());
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    // Only the port, which has no host object of its own, keeps its names (MAC, id).
    assert_eq!(p.moves(), 1);
    assert_eq!(find(&p, "port.nic").previous_address.as_deref(), Some("port.eth0"));
    assert_eq!(find(&p, "instance.vm2").action, Action::Create);
}

#[test]
fn removed_without_destroy_forgets_and_with_destroy_deletes() {
    let (_d, old) = load(BEFORE);
    let host = converged(&old);
    let kept = r#"
virtform { stack = "mv" }
network "lan" {
  address = "10.78.0.1/24"
}
removed {
  from = instance.vm
  lifecycle {
    destroy = false
  }
}
removed {
  from = disk.root
  lifecycle { destroy = false }
}
removed {
  from = volume.data
}
"#;
    let (_d2, cfg) = prepared(kept, &host);
    let p = plan(&cfg, &host, &opts());
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let vm = find(&p, "instance.vm");
    assert_eq!(vm.action, Action::Forget);
    assert_eq!(vm.object.as_deref(), Some("mv-vm"));
    assert_eq!(find(&p, "disk.root").action, Action::Forget);
    assert_eq!(find(&p, "volume.data").action, Action::Delete, "destroy defaults to true");
    assert_eq!(p.summary(), "Plan: 0 to add, 0 to change, 1 to destroy, 2 to forget.");
    let names = p.names.clone().expect("the forgotten disk is recorded");
    assert!(names.forgotten.contains("/state/mv/disks/root.qcow2"), "{names:?}");
    assert!(names.forgotten.contains("/state/mv/console/vm.log"), "the forgotten guest's console log is kept: {names:?}");
    let text = render::text(&p, false);
    assert!(text.contains("# instance.vm will no longer be managed"), "{text}");
    insta::assert_snapshot!("plan_text_removed", text);
    let j = render::to_json(&p);
    let vmj = j["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "instance.vm").unwrap();
    assert_eq!(vmj["change"]["actions"], serde_json::json!(["forget"]));
    // After the apply: the domain has no marker, the disk is forgotten.
    let mut host2 = host.clone();
    host2.domains.get_mut("mv-vm").unwrap().marker = None;
    host2.files.remove("/state/mv/volumes/data.qcow2");
    host2.names = names;
    let (_d3, cfg2) = prepared(kept.split("removed").next().unwrap(), &host2);
    let p2 = plan(&cfg2, &host2, &opts());
    assert!(!p2.has_changes(), "{}", render::text(&p2, false));
    assert!(!render::text(&p2, false).contains("instance.vm"));
    // A resource that wants the forgotten file back is a conflict.
    let (_d4, cfg3) = prepared(BEFORE, &host2);
    let p3 = plan(&cfg3, &host2, &opts());
    assert!(p3.conflicts.iter().any(|c| c.address == "disk.root" && c.object.contains("forgotten")), "{:?}", p3.conflicts);
}

/// The apply of a move alone writes the record first, then only the
/// markers (in place): no define, no stop, no start, no file step. A
/// forget removes the domain's metadata and touches nothing else.
#[test]
fn the_apply_of_a_move_or_a_forget_rewrites_markers_only() {
    use crate::apply::engine::{lower, Env, Op};
    let (_d, old) = load(BEFORE);
    let host = converged(&old);
    let (_d2, cfg) = prepared(&after(true), &host);
    let p = plan(&cfg, &host, &opts());
    let env = || {
        std::sync::Arc::new(Env {
            links: Box::new(crate::host::links::IpLinks::local()),
            libvirt: Box::new(crate::host::libvirt::VirtLibvirt::open("test:///default").unwrap()),
            ovs: Box::new(crate::host::ovs::FakeOvs::new(Default::default())),
            state_dir: "/state".into(),
            exec: crate::host::exec::Executor::Local,
            records: "/state".into(),
            deliveries: Default::default(),
            shutdown_timeout: std::time::Duration::from_secs(1),
            detach_timeout: std::time::Duration::from_secs(1),
            peers: Default::default(),
            memo: Default::default(),
        })
    };
    let dag = lower(&p, &cfg, env(), false, &Default::default());
    let ops: Vec<&Op> = (0..dag.len()).map(|i| &dag.step(i).op).collect();
    assert!(matches!(ops[0], Op::WriteNames { .. }), "{:?}", ops.iter().map(|o| format!("{o:?}").chars().take(40).collect::<String>()).collect::<Vec<_>>());
    for i in 1..dag.len() {
        assert_eq!(dag.deps(i), &[0], "step {i} runs after the record");
    }
    let shown: Vec<String> = (0..dag.len()).map(|i| crate::apply::dag::Step::describe(dag.step(i))).collect();
    assert_eq!(shown.len(), 3, "{shown:?}");
    assert!(shown[1..].iter().any(|s| s.starts_with("write virtform's marker into domain mv-vm in place")), "{shown:?}");
    assert!(shown[1..].iter().any(|s| s.starts_with("rewrite the marker of bridge vf")), "{shown:?}");
    match ops.iter().find(|o| matches!(o, Op::MarkDomain { .. })) {
        Some(Op::MarkDomain { name, element }) => {
            assert_eq!(name, "mv-vm");
            assert!(element.contains("address=\"instance.vm2\""), "{element}");
        }
        _ => unreachable!(),
    }
    // Forget: the metadata goes, nothing else.
    let kept = "virtform { stack = \"mv\" }\nnetwork \"lan\" {\n  address = \"10.78.0.1/24\"\n}\nremoved {\n  from = instance.vm\n  lifecycle {\n    destroy = false\n  }\n}\nremoved {\n  from = disk.root\n  lifecycle {\n    destroy = false\n  }\n}\nremoved {\n  from = volume.data\n  lifecycle {\n    destroy = false\n  }\n}\nremoved {\n  from = port.eth0\n}\n";
    let (_d3, cfg2) = prepared(kept, &host);
    let p2 = plan(&cfg2, &host, &opts());
    let dag2 = lower(&p2, &cfg2, env(), false, &Default::default());
    let shown2: Vec<String> = (0..dag2.len()).map(|i| crate::apply::dag::Step::describe(dag2.step(i))).collect();
    assert_eq!(shown2, vec!["record moved and forgotten objects of stack mv".to_string(), "remove virtform's metadata from domain mv-vm".to_string()]);
}

/// `--target` leaves a move out: its record entry is not written either
/// (the next plan must still see the move, not an orphan).
#[test]
fn a_move_outside_the_targets_is_not_recorded() {
    let (_d, old) = load(BEFORE);
    let host = converged(&old);
    let (_d2, cfg) = prepared(&after(true), &host);
    let p = plan(&cfg, &host, &PlanOptions { targets: vec!["network.lan2".into()], ..opts() });
    let names = p.names.expect("the network's move is recorded");
    assert_eq!(names.names.keys().collect::<Vec<_>>(), vec!["network.lan2"]);
    let mut host2 = host.clone();
    host2.names = names;
    let (_d3, cfg2) = prepared(&after(true), &host2);
    let p2 = plan(&cfg2, &host2, &opts());
    assert_eq!(find(&p2, "instance.vm2").previous_address.as_deref(), Some("instance.vm"));
    assert!(!p2.changes.iter().any(|c| c.action == Action::Delete), "{}", render::text(&p2, false));
}

/// An apply killed after the record was written and before the markers
/// were: the next plan (moved blocks still there) moves again, keeping the
/// same names; nothing is deleted or created.
#[test]
fn a_move_interrupted_after_the_record_is_planned_again() {
    let (_d, old) = load(BEFORE);
    let host = converged(&old);
    let (_d2, cfg) = prepared(&after(true), &host);
    let p = plan(&cfg, &host, &opts());
    let mut killed = host.clone();
    killed.names = p.names.clone().unwrap();
    let (_d3, cfg2) = prepared(&after(true), &killed);
    let p2 = plan(&cfg2, &killed, &opts());
    assert!(p2.errors.is_empty() && p2.conflicts.is_empty(), "{:?} {:?}", p2.errors, p2.conflicts);
    assert_eq!(find(&p2, "instance.vm2").reason.as_deref(), Some("moved"));
    assert!(!p2.changes.iter().any(|c| matches!(c.action, Action::Delete | Action::Create | Action::Replace)), "{}", render::text(&p2, false));
    let Spec::Instance(i) = &cfg2.resource("instance.vm2").unwrap().spec else { unreachable!() };
    assert_eq!(i.domain_name(), "mv-vm");
}

/// A second move of a port (`port.nic` → `port.nic2` after `port.eth0` →
/// `port.nic` was applied) is a no-op once applied too, with its block
/// still there: the record names the chain's origin at its end and nothing
/// at its middle (found on the real host, inside a module move).
#[test]
fn a_second_port_move_once_applied_is_a_no_op_with_its_block() {
    let (_d, old) = load(BEFORE);
    let host = converged(&old);
    let (_d2, cfg) = prepared(&after(true), &host);
    let host2 = applied(&cfg, &plan(&cfg, &host, &opts()), &host);
    let second = after(false).replace("port \"nic\"", "port \"nic2\"").replace("port.nic", "port.nic2") + "moved {\n  from = port.nic\n  to   = port.nic2\n}\n";
    let (_d3, cfg2) = prepared(&second, &host2);
    let p = plan(&cfg2, &host2, &opts());
    assert_eq!(find(&p, "port.nic2").previous_address.as_deref(), Some("port.nic"), "{}", render::text(&p, false));
    let host3 = applied(&cfg2, &p, &host2);
    let (_d4, cfg3) = prepared(&second, &host3);
    let p3 = plan(&cfg3, &host3, &opts());
    assert!(p3.errors.is_empty() && !p3.has_changes(), "{}", render::text(&p3, false));
}
