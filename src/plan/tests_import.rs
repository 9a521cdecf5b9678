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

// ---- Libvirt networks, disks and volumes: the import registry ----

use crate::observe::imports::{Imported, PathFact};
use crate::observe::{ActualFile, ActualNetwork};

const FILES: &str = r#"
virtform { stack = "imp" }
network "lan" {
  type    = "nat"
  bridge  = "virbr-legacy"
  address = "192.168.150.1/24"
}
disk "data" {
  size = "1G"
}
volume "keep" {
  size   = "2G"
  format = "raw"
}
port "eth0" {
  network = network.lan
}
instance "vm" {
  memory  = "256M"
  kernel  = "/assets/vmlinuz"
  cmdline = "console=ttyS0"
  disks   = [disk.data]
  volumes = [volume.keep]
  ports   = [port.eth0]
}
import {
  to = network.lan
  id = "legacy-net"
}
import {
  to = disk.data
  id = "/srv/vm/data.qcow2"
}
import {
  to = volume.keep
  id = "/srv/vm/keep.raw"
}
"#;

const NET_UUID: &str = "5c0ffee0-aaaa-4bbb-8ccc-000000000150";

/// The objects to import as `net-define`, `qemu-img create` and `truncate`
/// left them: a libvirt network named `legacy-net` with its own UUID and
/// the bridge and address the configuration names, a 1 GiB qcow2 and a
/// 2 GiB raw file outside the state dir.
fn files_host(cfg: &Configuration) -> Observed {
    let mut o = Observed::default();
    let imported: std::collections::BTreeMap<String, Imported> = [("network.lan".to_string(), Imported::LibvirtNetwork { name: "legacy-net".into(), uuid: NET_UUID.into() })].into();
    let lowering = Lowering { imported: &imported, ..super::tests::lowering(cfg) };
    let def = lowering.libvirt_network(cfg.resource("network.lan").unwrap()).unwrap();
    o.networks.insert("legacy-net".into(), ActualNetwork { name: "legacy-net".into(), uuid: NET_UUID.into(), active: true, autostart: true, def: Some(crate::xml::network::ObservedNetwork::from_def(&def)) });
    for (p, fmt, size, ino) in [("/srv/vm/data.qcow2", crate::model::image::ImageFormat::Qcow2, 1u64 << 30, 11), ("/srv/vm/keep.raw", crate::model::image::ImageFormat::Raw, 2 << 30, 12)] {
        o.paths.insert(p.into(), PathFact::File { dev: 2049, ino, refusal: None, marker: None });
        o.files.insert(p.into(), ActualFile { format: fmt, virtual_size: size, backing_file: None });
    }
    o
}

/// The same host after the apply: the registry names the three objects.
fn registered(mut o: Observed) -> Observed {
    o.imports.insert("network.lan".into(), Imported::LibvirtNetwork { name: "legacy-net".into(), uuid: NET_UUID.into() });
    o.imports.insert("disk.data".into(), Imported::File { path: "/srv/vm/data.qcow2".into(), dev: 2049, ino: 11 });
    o.imports.insert("volume.keep".into(), Imported::File { path: "/srv/vm/keep.raw".into(), dev: 2049, ino: 12 });
    o
}

#[test]
fn a_libvirt_network_a_disk_and_a_volume_are_imported_into_the_registry() {
    let (_d, cfg) = load(FILES);
    let p = plan(&cfg, &files_host(&cfg), &opts());
    assert!(p.errors.is_empty() && p.conflicts.is_empty(), "{:?} {:?}", p.errors, p.conflicts);
    for (a, id) in [("network.lan", "legacy-net"), ("disk.data", "/srv/vm/data.qcow2"), ("volume.keep", "/srv/vm/keep.raw")] {
        let c = find(&p, a);
        assert_eq!((c.action, c.reason.as_deref(), c.importing.as_deref()), (Action::Update, Some("import"), Some(id)), "{c:?}");
        assert_eq!(c.changes.iter().map(|x| x.attr.as_str()).collect::<Vec<_>>(), vec!["marker"], "{c:?}");
        assert_eq!(c.changes[0].after.as_deref(), Some(format!("virtform:imp:{a} (in /state/imp/imports.json)").as_str()));
    }
    assert_eq!(p.imported.get("network.lan"), Some(&Imported::LibvirtNetwork { name: "legacy-net".into(), uuid: NET_UUID.into() }));
    assert_eq!(p.imported.get("disk.data"), Some(&Imported::File { path: "/srv/vm/data.qcow2".into(), dev: 2049, ino: 11 }));
    // The instance is created on the imported objects, by their own names.
    let lowering = Lowering { imported: &p.imported, ..super::tests::lowering(&cfg) };
    let def = lowering.domain(cfg.resource("instance.vm").unwrap()).unwrap();
    let paths: Vec<&str> = def.disks.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, vec!["/srv/vm/data.qcow2", "/srv/vm/keep.raw"]);
    assert!(matches!(&def.nics[0].source, crate::xml::domain::NicSource::Network { network } if network == "legacy-net"), "{:?}", def.nics);
    assert!(p.summary().starts_with("Plan: 3 to import, 1 to add, 3 to change"), "{}", p.summary());
    insta::assert_snapshot!("plan_text_import_registry", render::text(&p, false));
}

#[test]
fn a_libvirt_network_is_found_by_uuid_too() {
    let (_d, cfg) = load(&FILES.replace("id = \"legacy-net\"", &format!("id = \"{}\"", NET_UUID.to_uppercase())));
    let p = plan(&cfg, &files_host(&cfg), &opts());
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(find(&p, "network.lan").reason.as_deref(), Some("import"));
}

#[test]
fn once_registered_the_imports_are_no_ops_with_or_without_their_blocks() {
    let (_d, cfg) = load(FILES);
    let mut o = registered(files_host(&cfg));
    // The instance exists now too, as the apply made it.
    let lowering = Lowering { imported: &o.imports, ..super::tests::lowering(&cfg) };
    let def = lowering.domain(cfg.resource("instance.vm").unwrap()).unwrap();
    let od = ObservedDomain::from_def(&def);
    o.domains.insert(def.name.clone(), ActualDomain { name: def.name.clone(), running: true, autostart: false, def: Some(od), marker: Some(("imp".into(), "instance.vm".into(), def.marker.spec_hash.clone())) });
    let p = plan(&cfg, &o, &opts());
    assert!(p.errors.is_empty() && p.conflicts.is_empty(), "{:?} {:?}", p.errors, p.conflicts);
    assert!(!p.has_changes(), "{:#?}", p.changes);
    assert_eq!(p.imports(), 0);
    let (_d2, cfg2) = load(FILES.split("import {").next().unwrap());
    let p = plan(&cfg2, &o, &opts());
    assert!(p.errors.is_empty() && p.conflicts.is_empty() && !p.has_changes(), "{:?} {:?} {:#?}", p.errors, p.conflicts, p.changes);
    // A grown size on the imported volume lands live, on its file.
    let (_d3, cfg3) = load(&FILES.replace("size   = \"2G\"", "size   = \"3G\""));
    let p = plan(&cfg3, &o, &opts());
    let v = find(&p, "volume.keep");
    assert_eq!((v.action, v.landing()), (Action::Update, Some(Landing::Live)), "{v:?}");
    // Destroy removes them (they are the stack's now), by their own names.
    let p = plan(&cfg, &o, &PlanOptions { destroy: true, ..opts() });
    let objects: Vec<(&str, Option<&str>)> = p.changes.iter().filter(|c| c.action == Action::Delete).map(|c| (c.address.as_str(), c.object.as_deref())).collect();
    assert!(objects.contains(&("network.lan", Some("libvirt network legacy-net"))), "{objects:?}");
    assert!(objects.contains(&("disk.data", Some("/srv/vm/data.qcow2"))), "{objects:?}");
    assert!(objects.contains(&("volume.keep", Some("/srv/vm/keep.raw"))), "{objects:?}");
}

#[test]
fn a_registered_object_replaced_by_someone_else_is_never_touched() {
    let (_d, cfg) = load(FILES.split("import {").next().unwrap());
    let mut o = registered(files_host(&cfg));
    // The network was redefined under its name, the disk file replaced.
    o.networks.get_mut("legacy-net").unwrap().uuid = "5c0ffee0-aaaa-4bbb-8ccc-999999999999".into();
    o.paths.insert("/srv/vm/data.qcow2".into(), PathFact::File { dev: 2049, ino: 99, refusal: None, marker: None });
    let p = plan(&cfg, &o, &opts());
    assert!(p.errors.iter().any(|e| e.contains("network.lan: the imported libvirt network \"legacy-net\"") && e.contains("virtform import network.lan legacy-net")), "{:?}", p.errors);
    assert!(p.errors.iter().any(|e| e.contains("disk.data: the imported file \"/srv/vm/data.qcow2\" is gone, or is another file now") && e.contains("main.vf.hcl:")), "{:?}", p.errors);
    assert_eq!(find(&p, "network.lan").action, Action::NoOp);
    assert_eq!(find(&p, "disk.data").action, Action::NoOp);
    assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
    // Without their resources, the stale entries are forgotten, nothing deleted.
    let (_d2, empty) = load("virtform { stack = \"imp\" }\n");
    let p = plan(&empty, &o, &opts());
    assert_eq!(p.forget, vec!["disk.data".to_string(), "network.lan".to_string()]);
    assert_eq!(p.changes.iter().filter(|c| c.action == Action::Delete).map(|c| c.address.as_str()).collect::<Vec<_>>(), vec!["volume.keep"]);
}

fn refused(src: &str, o: impl FnOnce(&Configuration, &mut Observed)) -> Vec<String> {
    let (_d, cfg) = load(src);
    let mut obs = files_host(&cfg);
    o(&cfg, &mut obs);
    let p = plan(&cfg, &obs, &opts());
    // A refused import leaves its resource a no-op (and the plan unappliable).
    assert!(!p.errors.is_empty());
    for c in p.changes.iter().filter(|c| p.errors.iter().any(|e| e.starts_with(&format!("import {}:", c.address)))) {
        assert_eq!(c.action, Action::NoOp, "{c:?}");
    }
    p.errors
}

fn has(errors: &[String], what: &[&str]) {
    assert!(errors.iter().any(|e| what.iter().all(|w| e.contains(w))), "expected {what:?} in {errors:#?}");
}

#[test]
fn bad_libvirt_network_imports_are_located_errors() {
    let e = refused(&FILES.replace("id = \"legacy-net\"", "id = \"nope-net\""), |_, _| {});
    has(&e, &["import network.lan: there is no libvirt network named \"nope-net\"", "main.vf.hcl:28:8", "id = \"nope-net\"", "net-list"]);
    // A domain's name for a network.
    let e = refused(&FILES.replace("id = \"legacy-net\"", "id = \"legacy-vm\""), |_, o| {
        o.domains.insert("legacy-vm".into(), ActualDomain { name: "legacy-vm".into(), running: false, autostart: false, def: None, marker: None });
    });
    has(&e, &["\"legacy-vm\" is a libvirt domain (import it into an instance), not a libvirt network"]);
    // In another stack's registry.
    let e = refused(FILES, |_, o| {
        o.other_imports.insert("other".into(), [("network.x".to_string(), Imported::LibvirtNetwork { name: "legacy-net".into(), uuid: NET_UUID.into() })].into());
    });
    has(&e, &["libvirt network \"legacy-net\" belongs to network.x of stack \"other\" (its import registry says so)"]);
    // Made by virtform for another stack (its UUID is the derived one).
    let e = refused(&FILES.replace("id = \"legacy-net\"", "id = \"vf-oth-er-lan\""), |_, o| {
        let mut n = o.networks["legacy-net"].clone();
        n.name = "vf-oth-er-lan".into();
        n.uuid = desired::libvirt_network_uuid("oth-er", "network.lan");
        o.networks.insert(n.name.clone(), n);
    });
    has(&e, &["libvirt network \"vf-oth-er-lan\": it belongs to network.lan of stack \"oth-er\""]);
    // A bridge the network would not name.
    let e = refused(&FILES.replace("  bridge  = \"virbr-legacy\"\n", ""), |_, o| {
        o.networks.get_mut("legacy-net").unwrap().def.as_mut().unwrap().bridge = Some("virbr-legacy".into());
    });
    has(&e, &["has the bridge \"virbr-legacy\"", "set bridge = \"virbr-legacy\" in network.lan"]);
}

#[test]
fn bad_file_imports_are_located_errors() {
    let id = |p: &str| FILES.replace("id = \"/srv/vm/data.qcow2\"", &format!("id = \"{p}\""));
    let e = refused(&id("data.qcow2"), |_, _| {});
    has(&e, &["import disk.data: \"data.qcow2\" is not an absolute path", "main.vf.hcl:32:8"]);
    let e = refused(&id("/srv/vm/../vm/data.qcow2"), |_, _| {});
    has(&e, &["is not a normalized path"]);
    let e = refused(&id("/state/images/0123"), |_, _| {});
    has(&e, &["under virtform's state directory /state"]);
    let e = refused(&id("/state/other/disks/root.qcow2"), |_, _| {});
    has(&e, &["under virtform's state directory"]);
    let e = refused(&id("/srv/vm/none.qcow2"), |_, _| {});
    has(&e, &["there is no file \"/srv/vm/none.qcow2\" on this host"]);
    let e = refused(&id("/srv/vm"), |_, o| {
        o.paths.insert("/srv/vm".into(), PathFact::NotAFile("a directory".into()));
    });
    has(&e, &["\"/srv/vm\" is a directory; a disk imports a regular file"]);
    let e = refused(&id("/srv/vm/link.qcow2"), |_, o| {
        o.paths.insert("/srv/vm/link.qcow2".into(), PathFact::NotAFile("a symbolic link (import the file it names, by its own path)".into()));
    });
    has(&e, &["is a symbolic link"]);
    // Images with backing files are refused by policy.
    let e = refused(FILES, |_, o| {
        o.paths.insert("/srv/vm/data.qcow2".into(), PathFact::File { dev: 2049, ino: 11, refusal: Some("it has a backing file (/srv/base.qcow2); a base image must be self-contained".into()), marker: None });
    });
    has(&e, &["import disk.data: \"/srv/vm/data.qcow2\" is refused as a disk: it has a backing file"]);
    // The wrong format, a disk virtform would build, another stack's file.
    let e = refused(&FILES.replace("size   = \"2G\"\n  format = \"raw\"", "size   = \"2G\""), |_, _| {});
    has(&e, &["\"/srv/vm/keep.raw\" is a raw file, but volume.keep has format = \"qcow2\"", "set format = \"raw\" in volume.keep"]);
    let e = refused(&FILES.replace("disk \"data\" {\n  size = \"1G\"", "disk \"data\" {\n  size = \"1G\"\n  filesystem = \"ext4\""), |_, _| {});
    has(&e, &["disk.data has `filesystem`", "an imported disk is used as it is"]);
    let e = refused(FILES, |_, o| {
        o.other_imports.insert("other".into(), [("volume.v".to_string(), Imported::File { path: "/srv/vm/keep.raw".into(), dev: 2049, ino: 12 })].into());
    });
    has(&e, &["file \"/srv/vm/keep.raw\" belongs to volume.v of stack \"other\""]);
    // Marked on the file by a stack of another state directory (or by another resource of this one).
    for (marker, want) in [("virtform:far:disk.x", "file \"/srv/vm/data.qcow2\" belongs to disk.x of stack \"far\" (its user.virtform attribute says so)"), ("virtform:imp:disk.other", "it already belongs to disk.other of this stack")] {
        let e = refused(FILES, |_, o| {
            o.paths.insert("/srv/vm/data.qcow2".into(), PathFact::File { dev: 2049, ino: 11, refusal: None, marker: Some(marker.into()) });
        });
        has(&e, &[want]);
    }
    // Its own marker (the registry lost): imported again.
    let (_d, cfg) = load(FILES);
    let mut o = files_host(&cfg);
    o.paths.insert("/srv/vm/data.qcow2".into(), PathFact::File { dev: 2049, ino: 11, refusal: None, marker: Some("virtform:imp:disk.data".into()) });
    let p = plan(&cfg, &o, &opts());
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(find(&p, "disk.data").reason.as_deref(), Some("import"));
}

#[test]
fn an_imported_disk_that_needs_a_replace_says_so_and_needs_replace() {
    let (_d, cfg) = load(&FILES.replace("size = \"1G\"", "size = \"512M\""));
    let o = files_host(&cfg);
    let p = plan(&cfg, &o, &opts());
    assert_eq!(find(&p, "disk.data").action, Action::Replace);
    has(&p.errors, &["disk.data: importing disk file /srv/vm/data.qcow2 needs it replaced (size cannot change in place)", "--replace disk.data"]);
    let p = plan(&cfg, &o, &PlanOptions { replace: vec!["disk.data".into()], ..opts() });
    assert!(p.errors.is_empty(), "{:?}", p.errors);
}

#[test]
fn a_disk_and_a_volume_cannot_import_one_file() {
    let src = FILES.replace("id = \"/srv/vm/keep.raw\"", "id = \"/srv/vm/data.qcow2\"");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.vf.hcl"), src).unwrap();
    let e = crate::config::load(&crate::config::LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/state".into(), ..Default::default() }).unwrap_err().render(false);
    assert!(e.contains("\"/srv/vm/data.qcow2\" is imported twice, into disk.data and volume.keep"), "{e}");
}

#[test]
fn the_registry_is_in_the_fingerprint() {
    let (_d, cfg) = load(FILES);
    let o = files_host(&cfg);
    let fp = |o: &Observed| plan(&cfg, o, &PlanOptions { fingerprint: true, ..opts() }).fingerprint;
    let a = fp(&o);
    let b = fp(&registered(o.clone()));
    let mut o3 = o.clone();
    o3.paths.insert("/srv/vm/data.qcow2".into(), PathFact::File { dev: 2049, ino: 77, refusal: None, marker: None });
    assert_ne!(a, b);
    assert_ne!(a, fp(&o3));
    assert_eq!(a, fp(&o.clone()));
}

#[test]
fn an_imported_volume_with_prevent_destroy_is_not_destroyed() {
    let (_d, cfg) = load(&FILES.replace("volume \"keep\" {\n", "volume \"keep\" {\n  lifecycle {\n    prevent_destroy = true\n  }\n"));
    let o = registered(files_host(&cfg));
    let p = plan(&cfg, &o, &PlanOptions { destroy: true, ..opts() });
    has(&p.errors, &["volume.keep has lifecycle.prevent_destroy set, but the plan would destroy it"]);
}

/// Imported libvirt networks and files are owned through the registry,
/// keyed by address: moving one, or forgetting one, is refused (located),
/// so the old address's entry never reads as an orphan to delete.
#[test]
fn imported_registry_objects_are_neither_moved_nor_forgotten() {
    let base = FILES.split("import {").next().unwrap();
    let moved = base.replace("volume \"keep\"", "volume \"kept\"").replace("volume.keep]", "volume.kept]") + "moved {\n  from = volume.keep\n  to   = volume.kept\n}\n";
    let (_d, cfg) = load(&moved);
    let o = registered(files_host(&cfg));
    let p = plan(&cfg, &o, &opts());
    assert!(p.errors.iter().any(|e| e.contains("moved: volume.keep was imported (recorded in imports.json)")), "{:?}", p.errors);
    let forgotten = base.replace("  volumes = [volume.keep]\n", "").replace("volume \"keep\" {\n  size   = \"2G\"\n  format = \"raw\"\n}\n", "") + "removed {\n  from = volume.keep\n  lifecycle {\n    destroy = false\n  }\n}\n";
    let (_d2, cfg2) = load(&forgotten);
    let p = plan(&cfg2, &o, &opts());
    assert!(p.errors.iter().any(|e| e.contains("removed: volume.keep cannot be forgotten") && e.contains("not supported yet")), "{:?}", p.errors);
    assert!(!p.changes.iter().any(|c| c.address == "volume.keep" && matches!(c.action, Action::Delete | Action::Forget)), "{:#?}", p.changes);
}
