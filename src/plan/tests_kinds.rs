//! Planner tests for libvirt networks, hybrid-plugged ports, volumes and
//! hot-plug (hand-built observed states, no host).

use super::tests::{find, load, opts};
use super::*;
use crate::host::links::{BridgeInfo, Link, LinkKind};
use crate::host::ovs::OvsState;
use crate::observe::{ActualDomain, ActualFile, ActualNetwork};
use crate::xml::domain::ObservedDomain;

const NET: &str = r#"
virtform { stack = "kinds" }
network "nat" {
  type    = "nat"
  bridge  = "vfk-nat0"
  address = "10.90.0.1/24"
  dhcp {
    start = "10.90.0.100"
    end   = "10.90.0.200"
  }
}
network "int" {
  type          = "ovs"
  bridge        = "vfk-int"
  datapath_type = "netdev"
}
port "a" {
  network = network.nat
  ip      = "10.90.0.10"
}
port "h" {
  network = network.int
  plug    = "ovs_hybrid"
}
volume "data" {
  size = "64M"
}
"#;

fn lowering<'a>(cfg: &'a Configuration, hashes: &'a BTreeMap<String, String>) -> Lowering<'a> {
    Lowering { cfg, state_dir: std::path::Path::new("/state"), kvm_usable: false, source_hashes: hashes, imported: &super::tests::EMPTY_IMPORTS }
}

fn link(name: &str, kind: LinkKind, alias: Option<String>) -> Link {
    let is_bridge = kind == LinkKind::Bridge;
    Link {
        name: name.into(),
        ifindex: 9,
        kind,
        alias,
        mtu: 1500,
        up: true,
        promisc: true,
        master: None,
        mac: None,
        addrs: Vec::new(),
        bridge: is_bridge.then_some(BridgeInfo { stp: false, forward_delay_cs: 0, mcast_snooping: false }),
        veth_peer: None,
        vxlan: None,
        ipv6_disabled: Some(true),
    }
}

fn with_ovs() -> Observed {
    Observed { ovs: Some(OvsState::default()), ..Default::default() }
}

#[test]
fn nat_network_is_created_then_compared_field_by_field() {
    let (_d, cfg) = load(NET);
    let p = plan(&cfg, &with_ovs(), &opts());
    assert_eq!(find(&p, "network.nat").action, Action::Create);
    assert_eq!(find(&p, "network.int").action, Action::Create);
    assert_eq!(find(&p, "port.h").action, Action::Create);
    assert_eq!(find(&p, "volume.data").action, Action::Create);
    assert!(p.errors.is_empty(), "{:?}", p.errors);

    // The network as libvirt holds it after creation, with another DHCP range and no host entry.
    let hashes = BTreeMap::new();
    let want = lowering(&cfg, &hashes).libvirt_network(cfg.resource("network.nat").unwrap()).unwrap();
    assert_eq!(want.name, "vf-kinds-nat");
    assert_eq!(want.hosts.len(), 1, "a DHCP host entry per fixed-IP port");
    let mut def = crate::xml::network::parse_network(&crate::xml::network::network_xml(&want)).unwrap();
    def.dhcp_range = Some(("10.90.0.100".parse().unwrap(), "10.90.0.150".parse().unwrap()));
    def.hosts.clear();
    let mut o = with_ovs();
    o.networks.insert(want.name.clone(), ActualNetwork { name: want.name.clone(), uuid: want.uuid.clone(), active: true, autostart: true, def: Some(def) });
    let p = plan(&cfg, &o, &opts());
    let c = find(&p, "network.nat");
    assert_eq!(c.action, Action::Update);
    assert_eq!(c.landing(), Some(Landing::Restart));
    let dhcp = c.changes.iter().find(|x| x.attr == "dhcp").expect("dhcp change");
    assert_eq!(dhcp.after.as_deref(), Some("10.90.0.100-10.90.0.200"));
    let host = c.changes.iter().find(|x| x.attr.starts_with("dhcp_host ")).expect("dhcp host change");
    assert_eq!((host.before.as_deref(), host.after.as_deref(), host.landing), (None, Some("10.90.0.10"), Landing::Live));
}

#[test]
fn libvirt_network_with_a_foreign_uuid_is_a_conflict_and_orphans_are_found_by_uuid() {
    let (_d, cfg) = load(NET);
    let mut o = with_ovs();
    o.networks.insert("vf-kinds-nat".into(), ActualNetwork { name: "vf-kinds-nat".into(), uuid: "00000000-0000-4000-8000-000000000000".into(), active: true, autostart: true, def: None });
    // Ours, no longer configured: found by its derived UUID.
    let uuid = desired::libvirt_network_uuid("kinds", "network.old");
    o.networks.insert("vf-kinds-old".into(), ActualNetwork { name: "vf-kinds-old".into(), uuid, active: true, autostart: true, def: None });
    // Another stack's (`kinds-x` + `old`) with a colliding-looking name: not ours.
    o.networks.insert("vf-kinds-x-old".into(), ActualNetwork { name: "vf-kinds-x-old".into(), uuid: desired::libvirt_network_uuid("kinds-x", "network.old"), active: true, autostart: true, def: None });
    let p = plan(&cfg, &o, &opts());
    assert_eq!(p.conflicts.len(), 1, "{:?}", p.conflicts);
    assert!(p.conflicts[0].message.contains("was not created by virtform"), "{}", p.conflicts[0].message);
    let old = find(&p, "network.old");
    assert_eq!((old.action, old.object.as_deref()), (Action::Delete, Some("libvirt network vf-kinds-old")));
    assert!(!p.changes.iter().any(|c| c.object.as_deref() == Some("libvirt network vf-kinds-x-old")));
}

#[test]
fn hybrid_port_repairs_partial_state_and_refuses_foreign_devices() {
    let (_d, cfg) = load(NET);
    let hashes = BTreeMap::new();
    let h = lowering(&cfg, &hashes).hybrid(cfg.resource("port.h").unwrap()).unwrap();
    let marker = crate::host::marker_with_hash("kinds", "port.h", &h.hash());
    // qbr and the veth exist with our marker, qvb is out of qbr; no OVS port.
    let mut o = with_ovs();
    o.links.insert(h.qbr.clone(), link(&h.qbr, LinkKind::Bridge, Some(marker.clone())));
    let mut qvb = link(&h.qvb, LinkKind::Veth, Some(marker.clone()));
    qvb.veth_peer = Some(h.qvo.clone());
    let mut qvo = link(&h.qvo, LinkKind::Veth, Some(marker.clone()));
    qvo.veth_peer = Some(h.qvb.clone());
    o.links.insert(h.qvb.clone(), qvb);
    o.links.insert(h.qvo.clone(), qvo);
    let p = plan(&cfg, &o, &opts());
    let c = find(&p, "port.h");
    assert_eq!((c.action, c.reason.as_deref()), (Action::Update, Some("drift")));
    assert!(c.changes.iter().any(|x| x.attr == h.qvb && x.after.as_deref() == Some(&format!("enslave to {}", h.qbr)[..])), "{:?}", c.changes);
    assert!(c.changes.iter().any(|x| x.attr == format!("ovs {}", h.qvo)), "{:?}", c.changes);

    // A qbr with the port's name but no marker: a conflict, nothing planned for the port.
    let mut o = with_ovs();
    o.links.insert(h.qbr.clone(), link(&h.qbr, LinkKind::Bridge, None));
    let p = plan(&cfg, &o, &opts());
    assert_eq!(find(&p, "port.h").action, Action::NoOp);
    assert!(p.conflicts.iter().any(|x| x.object == format!("link \"{}\"", h.qbr)), "{:?}", p.conflicts);

    // OVS down: an error, not a guess.
    let p = plan(&cfg, &Observed::default(), &opts());
    assert!(p.errors.iter().any(|e| e.contains("Open vSwitch is not running")), "{:?}", p.errors);
}

/// A moved libvirt network keeps its name and UUID (its marker): only the
/// record changes; forgotten, it is listed in the record and never deleted.
#[test]
fn moved_libvirt_network_keeps_name_and_uuid_and_can_be_forgotten() {
    let (_d, old) = load(NET);
    let hashes = BTreeMap::new();
    let def = lowering(&old, &hashes).libvirt_network(old.resource("network.nat").unwrap()).unwrap();
    let mut o = with_ovs();
    o.networks.insert(def.name.clone(), ActualNetwork { name: def.name.clone(), uuid: def.uuid.clone(), active: true, autostart: true, def: Some(crate::xml::network::ObservedNetwork::from_def(&def)) });
    let src = NET.replace("network \"nat\"", "network \"outside\"").replace("network.nat", "network.outside") + "moved {\n  from = network.nat\n  to   = network.outside\n}\n";
    let (_d2, mut cfg) = load(&src);
    moved::keep_names(&mut cfg, &o, std::path::Path::new("/state"));
    let def2 = lowering(&cfg, &hashes).libvirt_network(cfg.resource("network.outside").unwrap()).unwrap();
    assert_eq!((def2.name.as_str(), def2.uuid.as_str()), (def.name.as_str(), def.uuid.as_str()));
    let p = plan(&cfg, &o, &opts());
    assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
    let c = find(&p, "network.outside");
    assert_eq!(c.previous_address.as_deref(), Some("network.nat"));
    assert_eq!((c.action, c.reason.as_deref()), (Action::Update, Some("moved")), "{}", render::text(&p, false));
    assert!(!p.changes.iter().any(|x| x.action == Action::Delete), "{}", render::text(&p, false));
    assert_eq!(p.names.as_ref().and_then(|n| n.names.get("network.outside")).map(String::as_str), Some("network.nat"));

    // Forgotten: a record entry, no step on the network, and no later delete.
    let forget = "virtform { stack = \"kinds\" }\nremoved {\n  from = network.nat\n  lifecycle {\n    destroy = false\n  }\n}\n";
    let (_d3, cfg3) = load(forget);
    let p = plan(&cfg3, &o, &opts());
    let c = find(&p, "network.nat");
    assert_eq!((c.action, c.object.as_deref()), (Action::Forget, Some("libvirt network vf-kinds-nat")));
    let names = p.names.clone().unwrap();
    assert!(names.forgotten.contains("libvirt network vf-kinds-nat"), "{names:?}");
    o.names = names;
    let (_d4, cfg4) = load("virtform { stack = \"kinds\" }\nvolume \"v\" {\n  size = \"1M\"\n}\n");
    let p = plan(&cfg4, &o, &PlanOptions { destroy: true, ..opts() });
    assert!(!p.changes.iter().any(|x| x.address == "network.nat"), "a forgotten network is never deleted: {}", render::text(&p, false));
}

/// In a fleet a move starts from whichever host holds the object: the
/// network is on the second host only, and keeps its name and UUID; with
/// the first host's observation alone it would not.
#[test]
fn a_move_keeps_the_names_of_an_object_on_any_host_of_a_fleet() {
    let (_d, old) = load(NET);
    let hashes = BTreeMap::new();
    let def = lowering(&old, &hashes).libvirt_network(old.resource("network.nat").unwrap()).unwrap();
    let (here, mut there) = (with_ovs(), with_ovs());
    there.networks.insert(def.name.clone(), ActualNetwork { name: def.name.clone(), uuid: def.uuid.clone(), active: true, autostart: true, def: Some(crate::xml::network::ObservedNetwork::from_def(&def)) });
    let src = NET.replace("network \"nat\"", "network \"outside\"").replace("network.nat", "network.outside") + "moved {\n  from = network.nat\n  to   = network.outside\n}\n";
    let name_of = |cfg: &crate::config::Configuration| lowering(cfg, &hashes).libvirt_network(cfg.resource("network.outside").unwrap()).unwrap().name;
    let (_d2, mut alone) = load(&src);
    moved::keep_names_on(&mut alone, &[(&here, std::path::Path::new("/state"))]);
    assert_ne!(name_of(&alone), def.name, "nothing to move on this machine");
    let (_d3, mut fleet) = load(&src);
    moved::keep_names_on(&mut fleet, &[(&here, std::path::Path::new("/state")), (&there, std::path::Path::new("/var/lib/virtform"))]);
    assert_eq!(name_of(&fleet), def.name);
    assert_eq!(fleet.names.get("network.outside").map(ToString::to_string).as_deref(), Some("network.nat"));
}

/// A moved hybrid port keeps its devices (their names come from the port
/// id, which the move keeps); their markers are rewritten live.
#[test]
fn moved_hybrid_port_keeps_its_devices_and_rewrites_their_markers_live() {
    let (_d, old) = load(NET);
    let hashes = BTreeMap::new();
    let h = lowering(&old, &hashes).hybrid(old.resource("port.h").unwrap()).unwrap();
    let marker = crate::host::marker_with_hash("kinds", "port.h", &h.hash());
    let mut o = with_ovs();
    let mut qbr = link(&h.qbr, LinkKind::Bridge, Some(marker.clone()));
    qbr.promisc = false;
    o.links.insert(h.qbr.clone(), qbr);
    for (a, b) in [(&h.qvb, &h.qvo), (&h.qvo, &h.qvb)] {
        let mut l = link(a, LinkKind::Veth, Some(marker.clone()));
        l.veth_peer = Some(b.clone());
        o.links.insert(a.clone(), l);
    }
    let (_d2, mut cfg) = load(&(NET.replace("port \"h\"", "port \"h2\"") + "moved {\n  from = port.h\n  to   = port.h2\n}\n"));
    moved::keep_names(&mut cfg, &o, std::path::Path::new("/state"));
    let h2 = lowering(&cfg, &hashes).hybrid(cfg.resource("port.h2").unwrap()).unwrap();
    assert_eq!((&h2.qbr, &h2.qvb, &h2.qvo, &h2.tap), (&h.qbr, &h.qvb, &h.qvo, &h.tap), "the devices keep their names");
    assert_eq!(h2.mac, h.mac);
    let p = plan(&cfg, &o, &opts());
    assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
    let c = find(&p, "port.h2");
    assert_eq!(c.previous_address.as_deref(), Some("port.h"));
    assert_eq!(c.action, Action::Update);
    assert_eq!(c.landing(), Some(Landing::Live));
    for dev in [&h.qbr, &h.qvb, &h.qvo] {
        assert!(c.changes.iter().any(|x| x.attr == *dev && x.after.as_deref() == Some("set alias")), "{dev}: {:?}", c.changes);
    }
    assert!(!p.changes.iter().any(|x| x.action == Action::Delete), "{}", render::text(&p, false));
}

#[test]
fn volumes_grow_live_and_never_shrink_or_change_format() {
    let (_d, cfg) = load(NET);
    let path = "/state/kinds/volumes/data.qcow2".to_string();
    let file = |size: u64, format| ActualFile { format, virtual_size: size, backing_file: None };
    let mut o = with_ovs();
    o.files.insert(path.clone(), file(32 << 20, crate::model::image::ImageFormat::Qcow2));
    let p = plan(&cfg, &o, &opts());
    let c = find(&p, "volume.data");
    assert_eq!((c.action, c.landing()), (Action::Update, Some(Landing::Live)));
    o.files.insert(path.clone(), file(128 << 20, crate::model::image::ImageFormat::Qcow2));
    let p = plan(&cfg, &o, &opts());
    assert!(p.errors.iter().any(|e| e.contains("shrinking a volume is refused")), "{:?}", p.errors);
    o.files.insert(path.clone(), file(64 << 20, crate::model::image::ImageFormat::Raw));
    let p = plan(&cfg, &o, &opts());
    assert!(p.errors.iter().any(|e| e.contains("never replaces a volume implicitly")), "{:?}", p.errors);
    // An orphan volume file of the stack is deleted with its address.
    o.files.insert(path, file(64 << 20, crate::model::image::ImageFormat::Qcow2));
    o.files.insert("/state/kinds/volumes/old@2.qcow2".into(), file(1 << 20, crate::model::image::ImageFormat::Qcow2));
    let p = plan(&cfg, &o, &opts());
    assert_eq!(find(&p, "volume.old[2]").action, Action::Delete);
    assert_eq!(find(&p, "volume.data").action, Action::NoOp);
}

#[test]
fn an_added_port_or_volume_is_hot_plugged_not_a_restart() {
    let src = r#"
virtform { stack = "hp" }
network "lan" {
  bridge  = "vfh-lan0"
}
port "a" { network = network.lan }
port "b" { network = network.lan }
volume "v" { size = "16M" }
instance "vm" {
  memory  = "256M"
  kernel  = "/k"
  ports   = [port.a, port.b]
  volumes = [volume.v]
}
"#;
    let (_d, cfg) = load(src);
    let hashes = BTreeMap::new();
    let mut def = lowering(&cfg, &hashes).domain(cfg.resource("instance.vm").unwrap()).unwrap();
    // The host has the domain without port.b and without the volume.
    def.nics.truncate(1);
    def.disks.clear();
    let mut o = Observed::default();
    o.domains.insert(def.name.clone(), ActualDomain { name: def.name.clone(), running: true, autostart: false, def: Some(ObservedDomain::from_def(&def)), marker: Some(("hp".into(), "instance.vm".into(), "old".into())) });
    let p = plan(&cfg, &o, &opts());
    let c = find(&p, "instance.vm");
    assert_eq!((c.action, c.landing()), (Action::Update, Some(Landing::Live)), "{c:#?}");
    assert!(c.changes.iter().any(|x| x.attr.starts_with("nic:") && x.before.is_none()), "{:?}", c.changes);
    assert!(c.changes.iter().any(|x| x.attr == "disk:vda" && x.before.is_none()), "{:?}", c.changes);
}

#[test]
fn ignore_changes_and_replace_triggered_by() {
    let src = r#"
virtform { stack = "lc" }
network "lan" { bridge = "vfl-lan0" }
volume "v" { size = "16M" }
instance "vm" {
  memory  = "256M"
  kernel  = "/k"
  cmdline = "console=ttyS0"
  lifecycle {
    ignore_changes       = [memory]
    replace_triggered_by = [volume.v]
  }
}
instance "bad" {
  memory = "256M"
  kernel = "/k"
  lifecycle { ignore_changes = [ports] }
}
"#;
    let (_d, cfg) = load(src);
    let hashes = BTreeMap::new();
    let mut o = Observed::default();
    for a in ["instance.vm", "instance.bad"] {
        let r = cfg.resource(a).unwrap();
        let def = lowering(&cfg, &hashes).domain(r).unwrap();
        let mut od = ObservedDomain::from_def(&def);
        if a == "instance.vm" {
            od.memory_kib = 512 * 1024; // changed by hand
        }
        o.domains.insert(def.name.clone(), ActualDomain { name: def.name.clone(), running: true, autostart: false, def: Some(od), marker: Some(("lc".into(), a.into(), def.marker.spec_hash.clone())) });
    }
    o.files.insert("/state/lc/volumes/v.qcow2".into(), ActualFile { format: crate::model::image::ImageFormat::Qcow2, virtual_size: 16 << 20, backing_file: None });
    let p = plan(&cfg, &o, &opts());
    assert_eq!(find(&p, "instance.vm").action, Action::NoOp, "ignored memory drift is not a change");
    assert!(p.errors.iter().any(|e| e.contains("instance.bad") && e.contains("ignore_changes = [ports] is not supported")), "{:?}", p.errors);
    // The volume grows: the instance is replaced because of the trigger.
    o.files.insert("/state/lc/volumes/v.qcow2".into(), ActualFile { format: crate::model::image::ImageFormat::Qcow2, virtual_size: 8 << 20, backing_file: None });
    let p = plan(&cfg, &o, &opts());
    let c = find(&p, "instance.vm");
    assert_eq!((c.action, c.reason.as_deref()), (Action::Replace, Some("replace_by_triggers")));
    assert!(c.because.iter().any(|b| b.contains("volume.v")), "{:?}", c.because);
}
