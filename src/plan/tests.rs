//! Planner tests against hand-built observed states (no host).

use crate::plan::desired::DesiredBridge;
use super::*;
use crate::config::{self, LoadOptions};
use crate::host::links::{BridgeInfo, Link, LinkKind};
use crate::observe::{ActualDomain, ActualFile};
use crate::xml::domain::ObservedDomain;

const QUICKSTART: &str = r#"
virtform { stack = "qs" }
network "lan" {
  bridge  = "vfq-lan0"
  address = "10.77.0.1/24"
}
image "tiny" {
  source = "/assets/tiny.qcow2"
  sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
}
disk "root" {
  image = image.tiny
  size  = "256M"
}
port "eth0" {
  network = network.lan
  ip      = "10.77.0.10"
}
instance "vm" {
  memory  = "256M"
  kernel  = "/assets/vmlinuz"
  cmdline = "console=ttyS0"
  disks   = [disk.root]
  ports   = [port.eth0]
}
"#;

pub(super) fn load(src: &str) -> (tempfile::TempDir, Configuration) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.vf.hcl"), src).unwrap();
    let c = config::load(&LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/state".into(), ..Default::default() }).unwrap_or_else(|e| panic!("{}", e.render(false)));
    (dir, c)
}

pub(super) fn opts() -> PlanOptions {
    PlanOptions { state_dir: "/state".into(), ..Default::default() }
}

/// The lowering the planner tests use: state dir /state, no KVM, no source hashes.
pub(super) fn lowering(cfg: &Configuration) -> Lowering<'_> {
    Lowering { cfg, state_dir: std::path::Path::new("/state"), kvm_usable: false, source_hashes: &EMPTY_HASHES, imported: &EMPTY_IMPORTS }
}

static EMPTY_HASHES: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
pub(super) static EMPTY_IMPORTS: std::collections::BTreeMap<String, crate::observe::imports::Imported> = std::collections::BTreeMap::new();

/// An unmarked, up Linux bridge of MTU 1500 without STP, as `ip link add` makes one.
pub(super) fn unmarked_bridge(name: &str, addrs: &[&str], forward_delay_cs: u32) -> Link {
    Link {
        name: name.into(),
        ifindex: 9,
        kind: LinkKind::Bridge,
        alias: None,
        mtu: 1500,
        up: true,
        promisc: false,
        master: None,
        mac: None,
        addrs: addrs.iter().map(|a| crate::model::common::IpCidr::parse(a).unwrap()).collect(),
        bridge: Some(BridgeInfo { stp: false, forward_delay_cs, mcast_snooping: true }),
        veth_peer: None,
        vxlan: None,
        ipv6_disabled: Some(false),
    }
}

/// The host exactly as an apply of `cfg` would leave it.
pub(super) fn converged(cfg: &Configuration) -> Observed {
    let mut o = Observed::default();
    let lowering = lowering(cfg);
    for r in &cfg.resources {
        match &r.spec {
            Spec::Network(n) => {
                let b = DesiredBridge::from_network(n);
                o.links.insert(
                    b.name.clone(),
                    Link {
                        name: b.name.clone(),
                        ifindex: 7,
                        kind: LinkKind::Bridge,
                        alias: Some(crate::host::marker_with_hash(&cfg.stack, &r.address.to_string(), &b.hash())),
                        mtu: b.mtu.unwrap_or(1500),
                        up: true,
                        promisc: false,
                        master: None,
                        mac: None,
                        addrs: b.address.into_iter().collect(),
                        bridge: Some(BridgeInfo { stp: b.stp, forward_delay_cs: b.forward_delay_s * 100, mcast_snooping: true }),
                        veth_peer: None,
                        vxlan: None,
                        ipv6_disabled: Some(false),
                    },
                );
            }
            Spec::Image(_) => {
                let p = desired::image_cache_path(std::path::Path::new("/state"), r, &Default::default()).unwrap();
                o.files.insert(p, ActualFile { format: crate::model::image::ImageFormat::Qcow2, virtual_size: 64 << 20, backing_file: None });
            }
            Spec::Disk(_) => {
                let d = lowering.disk(r).unwrap();
                o.files.insert(d.path, ActualFile { format: crate::model::image::ImageFormat::Qcow2, virtual_size: d.size.unwrap_or(0), backing_file: d.base });
            }
            Spec::Instance(_) => {
                let def = lowering.domain(r).unwrap();
                o.domains.insert(
                    def.name.clone(),
                    ActualDomain {
                        name: def.name.clone(),
                        running: true,
                        autostart: false,
                        def: Some(ObservedDomain::from_def(&def)),
                        marker: Some((cfg.stack.clone(), r.address.to_string(), def.marker.spec_hash.clone())),
                    },
                );
            }
            _ => {}
        }
    }
    o
}

pub(super) fn find<'p>(p: &'p Plan, a: &str) -> &'p ResourceChange {
    p.changes.iter().find(|c| c.address == a).unwrap_or_else(|| panic!("{a} not in plan: {p:#?}"))
}

#[test]
fn empty_host_creates_everything() {
    let (_d, cfg) = load(QUICKSTART);
    let p = plan(&cfg, &Observed::default(), &opts());
    for a in ["network.lan", "image.tiny", "disk.root", "instance.vm"] {
        assert_eq!(find(&p, a).action, Action::Create, "{a}");
    }
    assert_eq!(find(&p, "port.eth0").action, Action::NoOp);
    assert_eq!(p.summary(), "Plan: 4 to add, 0 to change, 0 to destroy.");
    assert!(p.errors.is_empty(), "{:?}", p.errors);
}

#[test]
fn converged_host_plans_nothing() {
    let (_d, cfg) = load(QUICKSTART);
    let o = converged(&cfg);
    let p = plan(&cfg, &o, &opts());
    assert!(!p.has_changes(), "{}", render::text(&p, false));
    assert_eq!(render::text(&p, false), "No changes. The host matches the configuration.\n");
}

#[test]
fn memory_change_is_a_restart_not_a_replace() {
    let (_d, old) = load(QUICKSTART);
    let o = converged(&old);
    let (_d2, new) = load(&QUICKSTART.replace("memory  = \"256M\"", "memory  = \"512M\""));
    let p = plan(&new, &o, &opts());
    let c = find(&p, "instance.vm");
    assert_eq!(c.action, Action::Update);
    assert_eq!(c.landing(), Some(Landing::Restart));
    let m = c.changes.iter().find(|x| x.attr == "memory").unwrap();
    assert_eq!((m.before.as_deref(), m.after.as_deref()), (Some("256M"), Some("512M")));
    assert!(!m.outside);
    assert!(c.xml_diff.as_deref().unwrap_or("").contains("+"), "a diff is shown");
    let text = render::text(&p, false);
    assert!(text.contains("# instance.vm will be updated in-place (restart)"), "{text}");
    assert!(text.contains("Plan: 0 to add, 1 to change, 0 to destroy."), "{text}");
}

#[test]
fn changes_made_outside_are_drift() {
    let (_d, cfg) = load(QUICKSTART);
    let mut o = converged(&cfg);
    o.domains.get_mut("qs-vm").unwrap().def.as_mut().unwrap().memory_kib = 1024 * 1024;
    o.links.get_mut("vfq-lan0").unwrap().mtu = 1400;
    let p = plan(&cfg, &o, &opts());
    let vm = find(&p, "instance.vm");
    assert_eq!(vm.reason.as_deref(), Some("drift"));
    assert!(vm.changes.iter().all(|c| c.outside));
    let net = find(&p, "network.lan");
    // No mtu configured: the bridge's MTU is not managed, so no change.
    assert_eq!(net.action, Action::NoOp);
    let (_d2, cfg2) = load(&QUICKSTART.replace("bridge  = \"vfq-lan0\"", "bridge  = \"vfq-lan0\"\n  mtu = 1500"));
    let mut o2 = converged(&cfg2);
    o2.links.get_mut("vfq-lan0").unwrap().mtu = 1400;
    let p2 = plan(&cfg2, &o2, &opts());
    let net = find(&p2, "network.lan");
    assert_eq!(net.action, Action::Update);
    assert_eq!(net.reason.as_deref(), Some("drift"));
    assert!(render::text(&p2, false).contains("changed outside virtform"));
}

#[test]
fn unmanaged_objects_are_conflicts() {
    let (_d, cfg) = load(QUICKSTART);
    let mut o = converged(&cfg);
    o.domains.get_mut("qs-vm").unwrap().marker = None;
    o.links.get_mut("vfq-lan0").unwrap().alias = None;
    let p = plan(&cfg, &o, &opts());
    assert_eq!(p.conflicts.len(), 2, "{:?}", p.conflicts);
    assert!(p.conflicts.iter().any(|c| c.object == "domain \"qs-vm\""));
    assert_eq!(find(&p, "instance.vm").action, Action::NoOp);
    // Another stack's bridge.
    o.links.get_mut("vfq-lan0").unwrap().alias = Some(crate::host::marker("other", "network.lan"));
    let p = plan(&cfg, &o, &opts());
    assert!(p.conflicts.iter().any(|c| c.message.contains("of stack \"other\"")), "{:?}", p.conflicts);
}

#[test]
fn new_boot_image_replaces_disk_and_instance() {
    let (_d, old) = load(QUICKSTART);
    let o = converged(&old);
    let (_d2, new) = load(&QUICKSTART.replace(&"a".repeat(64), &"b".repeat(64)));
    let p = plan(&new, &o, &opts());
    assert_eq!(find(&p, "image.tiny").action, Action::Create);
    let d = find(&p, "disk.root");
    assert_eq!(d.action, Action::Replace);
    assert!(d.changes.iter().any(|c| c.attr == "image" && c.landing == Landing::Replace));
    let vm = find(&p, "instance.vm");
    assert_eq!(vm.action, Action::Replace);
    assert_eq!(vm.because, vec!["disk.root is replaced".to_string()]);
    assert_eq!(vm.action.actions(), vec!["delete", "create"]);
}

#[test]
fn orphans_of_this_stack_are_deleted_others_ignored() {
    let (_d, cfg) = load(QUICKSTART);
    let mut o = converged(&cfg);
    let mut orphan = o.domains["qs-vm"].clone();
    orphan.name = "qs-old".into();
    orphan.marker = Some(("qs".into(), "instance.old".into(), "x".into()));
    o.domains.insert("qs-old".into(), orphan.clone());
    let mut foreign = orphan;
    foreign.name = "other-vm".into();
    foreign.marker = Some(("other".into(), "instance.vm".into(), "x".into()));
    o.domains.insert("other-vm".into(), foreign);
    o.files.insert("/state/qs/disks/old@1.qcow2".into(), ActualFile { format: crate::model::image::ImageFormat::Qcow2, virtual_size: 1, backing_file: None });
    let p = plan(&cfg, &o, &opts());
    assert_eq!(find(&p, "instance.old").action, Action::Delete);
    assert_eq!(find(&p, "disk.old[1]").action, Action::Delete);
    assert!(!p.changes.iter().any(|c| c.address.contains("other")));
}

#[test]
fn destroy_plans_every_object_of_the_stack() {
    let (_d, cfg) = load(QUICKSTART);
    let o = converged(&cfg);
    let p = plan(&cfg, &o, &PlanOptions { destroy: true, ..opts() });
    for a in ["network.lan", "disk.root", "instance.vm"] {
        assert_eq!(find(&p, a).action, Action::Delete, "{a}");
    }
}

#[test]
fn prevent_destroy_fails_the_plan() {
    let src = QUICKSTART.replace("  size  = \"256M\"\n}", "  size  = \"256M\"\n  lifecycle {\n    prevent_destroy = true\n  }\n}");
    let (_d, cfg) = load(&src);
    let o = converged(&cfg);
    let p = plan(&cfg, &o, &PlanOptions { replace: vec!["disk.root".into()], ..opts() });
    assert!(p.errors.iter().any(|e| e.contains("disk.root has lifecycle.prevent_destroy")), "{:?}", p.errors);
}

#[test]
fn stopped_instance_is_started_live() {
    let (_d, cfg) = load(QUICKSTART);
    let mut o = converged(&cfg);
    o.domains.get_mut("qs-vm").unwrap().running = false;
    let p = plan(&cfg, &o, &opts());
    let vm = find(&p, "instance.vm");
    assert_eq!(vm.action, Action::Update);
    assert_eq!(vm.landing(), Some(Landing::Live));
}

#[test]
fn plan_text_snapshot() {
    let (_d, old) = load(QUICKSTART);
    let o = converged(&old);
    let (_d2, new) = load(&QUICKSTART.replace("memory  = \"256M\"", "memory  = \"512M\"").replace(&"a".repeat(64), &"b".repeat(64)));
    let p = plan(&new, &o, &opts());
    insta::assert_snapshot!("plan_text_update_and_replace", render::text(&p, false));
    let j = render::to_json(&p);
    let vm = j["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "instance.vm").unwrap();
    assert_eq!(vm["change"]["actions"], serde_json::json!(["delete", "create"]));
    assert_eq!(vm["action_reason"], "replace_because_dependency_replaced");
}

/// The JSON plan has every field `schema/plan.schema.json` requires.
#[test]
fn json_plan_follows_the_checked_in_schema() {
    let schema: serde_json::Value = serde_json::from_str(include_str!("../../schema/plan.schema.json")).unwrap();
    let (_d, old) = load(QUICKSTART);
    let o = converged(&old);
    let (_d2, new) = load(&QUICKSTART.replace("memory  = \"256M\"", "memory  = \"512M\""));
    let j = render::to_json(&plan(&new, &o, &opts()));
    let required = |s: &serde_json::Value| -> Vec<String> { s["required"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect() };
    for k in required(&schema) {
        assert!(j.get(&k).is_some(), "plan JSON lacks {k}");
    }
    let rc_schema = &schema["properties"]["resource_changes"]["items"];
    let attr_schema = &rc_schema["properties"]["change"]["properties"]["attributes"]["items"];
    let actions: Vec<&str> = rc_schema["properties"]["change"]["properties"]["actions"]["items"]["enum"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    for rc in j["resource_changes"].as_array().unwrap() {
        for k in required(rc_schema) {
            assert!(rc.get(&k).is_some(), "resource change lacks {k}: {rc}");
        }
        for a in rc["change"]["actions"].as_array().unwrap() {
            assert!(actions.contains(&a.as_str().unwrap()), "{a}");
        }
        for attr in rc["change"]["attributes"].as_array().unwrap() {
            for k in required(attr_schema) {
                assert!(attr.get(&k).is_some(), "attribute lacks {k}: {attr}");
            }
        }
    }
}

#[test]
fn target_keeps_the_resource_and_its_dependencies() {
    let (_d, cfg) = load(QUICKSTART);
    let p = plan(&cfg, &Observed::default(), &PlanOptions { targets: vec!["disk.root".into()], ..opts() });
    let addrs: Vec<&str> = p.changes.iter().map(|c| c.address.as_str()).collect();
    assert_eq!(addrs, vec!["image.tiny", "disk.root"], "{addrs:?}");
    let p = plan(&cfg, &Observed::default(), &PlanOptions { targets: vec!["instance.nope".into()], ..opts() });
    assert!(p.errors.iter().any(|e| e.contains("--target instance.nope")), "{:?}", p.errors);
}

/// The quickstart with `n` instances (`vm-0` …), each with its own disk
/// and port (no fixed IP).
fn quickstart_times(n: usize) -> String {
    QUICKSTART
        .replace("disk \"root\" {\n", &format!("disk \"root\" {{\n  count = {n}\n"))
        .replace("port \"eth0\" {\n  network = network.lan\n  ip      = \"10.77.0.10\"\n", &format!("port \"eth0\" {{\n  count   = {n}\n  network = network.lan\n"))
        .replace("instance \"vm\" {\n", &format!("instance \"vm\" {{\n  count   = {n}\n  name    = \"vm-${{count.index}}\"\n"))
        .replace("disks   = [disk.root]", "disks   = [disk.root[count.index]]")
        .replace("ports   = [port.eth0]", "ports   = [port.eth0[count.index]]")
}

/// Past 128 instances the domains are lowered on several threads: the plan
/// is the same as for one instance at a time (converged: all no-ops; one
/// drifted domain among 300 found; every address planned once).
#[test]
fn many_instances_plan_the_same_when_lowered_in_parallel() {
    let (_d, cfg) = load(&quickstart_times(300));
    assert_eq!(cfg.resources.iter().filter(|r| matches!(r.spec, Spec::Instance(_))).count(), 300);
    let mut obs = converged(&cfg);
    let p = plan(&cfg, &obs, &opts());
    assert!(!p.has_changes(), "{:#?}", p.changes.iter().filter(|c| c.action != Action::NoOp).collect::<Vec<_>>());
    assert_eq!(p.changes.iter().filter(|c| c.address.starts_with("instance.vm[")).count(), 300);
    let name = "vm-217";
    let some: Vec<String> = obs.domains.keys().take(3).cloned().collect();
    let d = obs.domains.get_mut(name).unwrap_or_else(|| panic!("{name} not observed: {some:?}"));
    d.def.as_mut().unwrap().vcpus = 7;
    let p = plan(&cfg, &obs, &opts());
    let changed: Vec<&str> = p.changes.iter().filter(|c| c.action != Action::NoOp).map(|c| c.address.as_str()).collect();
    assert_eq!(changed, ["instance.vm[217]"]);
}

/// A disk file removed by hand while its instance's domain exists is drift
/// (recreated, shown as such); without the domain it is a plain create.
/// Many at once stay linear (one pass over the instances, not one per disk).
#[test]
fn missing_disk_files_are_drift_only_while_their_domain_exists() {
    let (_d, cfg) = load(&quickstart_times(300));
    let mut obs = converged(&cfg);
    let disks: Vec<String> = obs.files.keys().filter(|p| p.contains("/disks/root@")).cloned().collect();
    assert_eq!(disks.len(), 300);
    for d in &disks {
        obs.files.remove(d);
    }
    obs.domains.remove("vm-7");
    let p = plan(&cfg, &obs, &opts());
    let disk_changes: Vec<&ResourceChange> = p.changes.iter().filter(|c| c.address.starts_with("disk.root[")).collect();
    assert_eq!(disk_changes.len(), 300);
    assert!(disk_changes.iter().all(|c| c.action == Action::Create));
    let drift: Vec<&str> = disk_changes.iter().filter(|c| c.reason.as_deref() == Some("drift")).map(|c| c.address.as_str()).collect();
    assert_eq!(drift.len(), 299, "every disk whose domain exists");
    assert!(!drift.contains(&"disk.root[7]"), "vm-7's domain is gone: a plain create");
}

/// A wait that an earlier apply began and never finished (a timeout, a
/// kill) is waited for again, without touching the running guest; a
/// stopped guest's start waits anyway, and an instance without `wait_for`
/// has nothing to wait for.
#[test]
fn unfinished_waits_are_waited_for_again() {
    let src = QUICKSTART.replace("  ports   = [port.eth0]\n", "  ports   = [port.eth0]\n  wait_for {\n    tcp = 22\n  }\n");
    let (_d, cfg) = load(&src);
    let mut o = converged(&cfg);
    assert!(plan(&cfg, &o, &opts()).changes.iter().all(|c| c.action == Action::NoOp));
    o.pending_waits.insert("instance.vm".into());
    let p = plan(&cfg, &o, &opts());
    let vm = find(&p, "instance.vm");
    assert_eq!(vm.action, Action::Update);
    assert_eq!(vm.landing(), Some(Landing::Live));
    assert_eq!(vm.changes.iter().map(|c| c.attr.as_str()).collect::<Vec<_>>(), ["readiness"]);
    insta::assert_snapshot!("plan_text_readiness", render::text(&p, false));
    o.domains.get_mut("qs-vm").unwrap().running = false;
    let p = plan(&cfg, &o, &opts());
    assert_eq!(find(&p, "instance.vm").changes.iter().map(|c| c.attr.as_str()).collect::<Vec<_>>(), ["state"]);
    let (_d, plain) = load(QUICKSTART);
    let mut o = converged(&plain);
    o.pending_waits.insert("instance.vm".into());
    assert!(plan(&plain, &o, &opts()).changes.iter().all(|c| c.action == Action::NoOp));
}
