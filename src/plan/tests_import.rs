//! Import blocks in the planner (no host: observations built by hand).

use super::tests::{find, load, opts};
use super::*;
use crate::observe::ActualDomain;
use crate::xml::domain::ObservedDomain;

const LEGACY: &str = r#"
virtform { stack = "imp" }
network "lan" {
  bridge = "br-legacy"
  mtu    = 1500
}
instance "legacy" {
  name    = "legacy-vm"
  memory  = "512M"
  kernel  = "/assets/vmlinuz"
  cmdline = "console=ttyS0"
}
import {
  to = instance.legacy
  id = "legacy-vm"
}
import {
  to = network.lan
  id = "br-legacy"
}
"#;

/// The UUID `virsh define` gave the domain (not the one virtform derives).
const FOREIGN_UUID: &str = "0b9a3e55-1111-4222-8333-944455556666";


/// A host where `legacy-vm` was defined by hand (no marker, its own UUID,
/// `memory` MiB of memory, running) next to an unmarked bridge.
fn legacy_host(cfg: &Configuration, memory_mib: u64) -> Observed {
    let mut o = Observed::default();
    let lowering = super::tests::lowering(cfg);
    let r = cfg.resource("instance.legacy").unwrap();
    let def = lowering.domain(r).unwrap();
    let mut od = ObservedDomain::from_def(&def);
    od.uuid = Some(FOREIGN_UUID.into());
    od.marker = None;
    od.memory_kib = memory_mib * 1024;
    od.current_memory_kib = memory_mib * 1024;
    o.domains.insert("legacy-vm".into(), ActualDomain { name: "legacy-vm".into(), running: true, autostart: false, def: Some(od), marker: None });
    o.links.insert("br-legacy".into(), super::tests::unmarked_bridge("br-legacy", &[], 0));
    o
}

/// The host after the apply of an import: markers written, UUID kept.
fn marked(cfg: &Configuration, mut o: Observed) -> Observed {
    let lowering = super::tests::lowering(cfg);
    let def = lowering.domain(cfg.resource("instance.legacy").unwrap()).unwrap();
    let d = o.domains.get_mut("legacy-vm").unwrap();
    let mut od = ObservedDomain::from_def(&def);
    od.uuid = Some(FOREIGN_UUID.into());
    d.def = Some(od);
    d.marker = Some((cfg.stack.clone(), "instance.legacy".into(), def.marker.spec_hash.clone()));
    let n = cfg.resource("network.lan").unwrap();
    let Spec::Network(net) = &n.spec else { unreachable!() };
    let b = desired::DesiredBridge::from_network(net);
    o.links.get_mut("br-legacy").unwrap().alias = Some(crate::host::marker_with_hash(&cfg.stack, "network.lan", &b.hash()));
    o
}

#[test]
fn import_adopts_the_domain_and_the_bridge_with_their_markers_only() {
    let (_d, cfg) = load(LEGACY);
    assert_eq!(cfg.imports.len(), 2);
    let o = legacy_host(&cfg, 512);
    let p = plan(&cfg, &o, &opts());
    assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let vm = find(&p, "instance.legacy");
    assert_eq!(vm.action, Action::Update);
    assert_eq!(vm.reason.as_deref(), Some("import"));
    assert_eq!(vm.importing.as_deref(), Some("legacy-vm"));
    // The UUID is adopted, not a replace; only the marker changes, live.
    assert_eq!(vm.changes.len(), 1, "{:?}", vm.changes);
    assert_eq!(vm.changes[0].attr, "marker");
    assert_eq!(vm.changes[0].before.as_deref(), Some("(none)"));
    assert_eq!(vm.changes[0].after.as_deref(), Some("virtform:imp:instance.legacy"));
    assert_eq!(vm.landing(), Some(Landing::Live));
    let lan = find(&p, "network.lan");
    assert_eq!(lan.action, Action::Update);
    assert_eq!(lan.reason.as_deref(), Some("import"));
    assert_eq!(lan.changes.iter().map(|c| c.attr.as_str()).collect::<Vec<_>>(), vec!["marker"]);
    assert!(p.summary().starts_with("Plan: 2 to import, 0 to add, 2 to change"), "{}", p.summary());
    let j = render::to_json(&p);
    let vmj = j["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "instance.legacy").unwrap();
    assert_eq!(vmj["importing"]["id"], "legacy-vm");
}

#[test]
fn import_with_a_memory_change_is_a_restart_and_keeps_the_uuid() {
    let (_d, cfg) = load(LEGACY);
    let o = legacy_host(&cfg, 256);
    let p = plan(&cfg, &o, &opts());
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let vm = find(&p, "instance.legacy");
    assert_eq!(vm.action, Action::Update, "{vm:?}");
    assert_eq!(vm.landing(), Some(Landing::Restart));
    assert!(vm.changes.iter().any(|c| c.attr == "memory" && c.before.as_deref() == Some("256M") && c.after.as_deref() == Some("512M")), "{:?}", vm.changes);
    assert!(!vm.changes.iter().any(|c| c.attr == "uuid"), "{:?}", vm.changes);
    insta::assert_snapshot!("plan_text_import", render::text(&p, false));
}

#[test]
fn after_the_apply_the_import_block_is_a_no_op() {
    let (_d, cfg) = load(LEGACY);
    let o = marked(&cfg, legacy_host(&cfg, 512));
    let p = plan(&cfg, &o, &opts());
    assert!(p.errors.is_empty() && p.conflicts.is_empty(), "{:?} {:?}", p.errors, p.conflicts);
    assert!(!p.has_changes(), "{:#?}", p.changes);
    assert_eq!(p.imports(), 0);
    assert!(render::text(&p, false).contains("No changes."));
}

#[test]
fn without_the_import_block_the_domain_stays_a_conflict() {
    let src = LEGACY.split("import {").next().unwrap();
    let (_d, cfg) = load(src);
    let p = plan(&cfg, &legacy_host(&cfg, 512), &opts());
    assert_eq!(p.conflicts.len(), 2, "{:?}", p.conflicts);
    assert_eq!(find(&p, "instance.legacy").action, Action::NoOp);
}

fn errors_of(src: &str, o: impl FnOnce(&Configuration) -> Observed) -> (Plan, Configuration, tempfile::TempDir) {
    let (d, cfg) = load(src);
    let obs = o(&cfg);
    (plan(&cfg, &obs, &opts()), cfg, d)
}

#[test]
fn a_missing_id_is_a_located_error_and_nothing_changes() {
    let (p, _c, _d) = errors_of(&LEGACY.replace("id = \"legacy-vm\"", "id = \"nope-vm\""), |c| legacy_host(c, 512));
    let e = p.errors.iter().find(|e| e.contains("import instance.legacy")).unwrap_or_else(|| panic!("{:?}", p.errors));
    assert!(e.contains("no libvirt domain named \"nope-vm\""), "{e}");
    assert!(e.contains("main.vf.hcl:15:8"), "{e}");
    assert!(e.contains("id = \"nope-vm\""), "the source line: {e}");
    assert!(e.contains('^'), "{e}");
    assert_eq!(find(&p, "instance.legacy").action, Action::NoOp);
    // No conflict beside it: the error says it all.
    assert!(!p.conflicts.iter().any(|c| c.address == "instance.legacy"), "{:?}", p.conflicts);
}

#[test]
fn an_id_of_another_kind_is_a_located_error() {
    // A bridge name for an instance, a domain name for a network.
    let src = LEGACY.replace("id = \"legacy-vm\"", "id = \"@vm@\"").replace("id = \"br-legacy\"", "id = \"legacy-vm\"").replace("@vm@", "br-legacy");
    let (p, _c, _d) = errors_of(&src, |c| legacy_host(c, 512));
    assert!(p.errors.iter().any(|e| e.contains("import instance.legacy") && e.contains("\"br-legacy\" is a Linux link")), "{:?}", p.errors);
    assert!(p.errors.iter().any(|e| e.contains("import network.lan") && e.contains("would be the bridge \"br-legacy\", not \"legacy-vm\"")), "{:?}", p.errors);
    assert!(!p.has_changes());
}

#[test]
fn another_stacks_object_is_never_imported() {
    let (p, _c, _d) = errors_of(LEGACY, |c| {
        let mut o = legacy_host(c, 512);
        o.domains.get_mut("legacy-vm").unwrap().marker = Some(("other".into(), "instance.x".into(), "h".into()));
        o
    });
    assert!(p.errors.iter().any(|e| e.contains("belongs to instance.x of stack \"other\"")), "{:?}", p.errors);
    assert_eq!(find(&p, "instance.legacy").action, Action::NoOp);
}

#[test]
fn a_domain_name_other_than_the_instances_asks_for_name() {
    // The domain is legacy-vm; without `name` the instance would be imp-legacy.
    let (p, _c, _d) = errors_of(&LEGACY.replace("name    = \"legacy-vm\"\n", ""), |c| legacy_host(c, 512));
    assert!(p.errors.iter().any(|e| e.contains("would be the domain \"imp-legacy\"") && e.contains("set name = \"legacy-vm\"")), "{:?}", p.errors);
}

#[test]
fn a_domain_is_found_by_uuid_too() {
    let (p, _c, _d) = errors_of(&LEGACY.replace("id = \"legacy-vm\"", &format!("id = \"{}\"", FOREIGN_UUID.to_uppercase())), |c| legacy_host(c, 512));
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(find(&p, "instance.legacy").reason.as_deref(), Some("import"));
}

#[test]
fn an_import_that_needs_a_replace_says_so_and_needs_replace() {
    let (_d, cfg) = load(&LEGACY.replace("kernel  = \"/assets/vmlinuz\"", "kernel  = \"/assets/vmlinuz\"\n  machine = \"q35\""));
    let o = legacy_host(&cfg, 512);
    let mut o2 = o.clone();
    o2.domains.get_mut("legacy-vm").unwrap().def.as_mut().unwrap().machine = "pc-i440fx-7.2".into();
    let p = plan(&cfg, &o2, &opts());
    assert_eq!(find(&p, "instance.legacy").action, Action::Replace);
    assert!(p.errors.iter().any(|e| e.contains("needs it replaced") && e.contains("--replace instance.legacy")), "{:?}", p.errors);
    let p = plan(&cfg, &o2, &PlanOptions { replace: vec!["instance.legacy".into()], ..opts() });
    assert!(p.errors.is_empty(), "{:?}", p.errors);
}

#[test]
fn a_refused_import_is_not_even_a_create() {
    // Neither the domain nor the bridge exists: errors, and no creates.
    let (p, _c, _d) = errors_of(LEGACY, |_| Observed::default());
    assert_eq!(p.errors.len(), 2, "{:?}", p.errors);
    assert!(p.errors.iter().any(|e| e.contains("there is no link named \"br-legacy\"")), "{:?}", p.errors);
    assert!(!p.has_changes(), "{:#?}", p.changes);
    let text = render::text(&p, false);
    assert!(!text.contains("No changes") && !text.contains("will be created"), "{text}");
}

#[test]
fn the_command_lines_import_has_no_location_and_says_so() {
    let src = LEGACY.split("import {").next().unwrap();
    let (_d, mut cfg) = load(src);
    cfg.imports.push(crate::config::import::Import { to: crate::model::Address::parse("instance.legacy").unwrap(), id: "nope".into(), span: None, to_span: None, id_span: None });
    let p = plan(&cfg, &legacy_host(&cfg, 512), &opts());
    assert!(p.errors.iter().any(|e| e.starts_with("import instance.legacy (virtform import): there is no libvirt domain named \"nope\"")), "{:?}", p.errors);
    cfg.imports[0].id = "legacy-vm".into();
    let p = plan(&cfg, &legacy_host(&cfg, 512), &opts());
    assert_eq!(find(&p, "instance.legacy").reason.as_deref(), Some("import"), "{:?}", p.errors);
}

#[test]
fn a_bridge_alias_set_by_someone_else_shows_as_replaced_by_the_marker() {
    let (_d, cfg) = load(LEGACY);
    let mut o = legacy_host(&cfg, 512);
    o.links.get_mut("br-legacy").unwrap().alias = Some("uplink to rack 3".into());
    let p = plan(&cfg, &o, &opts());
    let lan = find(&p, "network.lan");
    assert_eq!(lan.reason.as_deref(), Some("import"), "{:?} {:?}", p.errors, p.conflicts);
    assert_eq!(lan.changes[0].before.as_deref(), Some("(alias \"uplink to rack 3\")"));
}
