//! Data sources and conflicts in the planner (no host: observations built
//! by hand, data read through `ObservedData`).

use super::tests::{find, opts};
use super::*;
use crate::config::{self, DataHandle, LoadOptions};
use crate::host::links::{Link, LinkKind};
use crate::observe::data::ObservedData;
use crate::observe::ActualNetwork;
use crate::xml::network::ObservedNetwork;
use std::net::Ipv4Addr;

fn bridge(name: &str, addr: &str) -> Link {
    super::tests::unmarked_bridge(name, &[addr], 1500)
}

/// A host with br0 (192.168.1.2/24 on it), libvirt's default network and
/// nothing of virtform's.
fn host() -> Observed {
    let mut o = Observed::default();
    o.links.insert("br0".into(), bridge("br0", "192.168.1.2/24"));
    o.links.insert("virbr0".into(), bridge("virbr0", "192.168.122.1/24"));
    o.networks.insert(
        "default".into(),
        ActualNetwork {
            name: "default".into(),
            uuid: "9d4e0e2a-0000-4000-8000-000000000001".into(),
            active: true,
            autostart: true,
            def: Some(ObservedNetwork {
                name: "default".into(),
                uuid: Some("9d4e0e2a-0000-4000-8000-000000000001".into()),
                forward: Some("nat".into()),
                bridge: Some("virbr0".into()),
                stp: true,
                delay: 0,
                mtu: None,
                address: Some((Ipv4Addr::new(192, 168, 122, 1), 24)),
                dhcp_range: Some((Ipv4Addr::new(192, 168, 122, 2), Ipv4Addr::new(192, 168, 122, 254))),
                hosts: Vec::new(),
            }),
        },
    );
    o
}

const EXISTING: &str = r#"
virtform { stack = "ex" }
data "network" "lan" {
  bridge  = "br0"
  subnet  = "192.168.1.0/24"
  gateway = "192.168.1.1"
}
data "network" "default" {
  libvirt_network = "default"
}
port "eth0" {
  network = data.network.lan
  ip      = "192.168.1.50"
}
port "eth1" {
  network = data.network.default
}
instance "vm" {
  memory  = "256M"
  kernel  = "/assets/vmlinuz"
  ports   = [port.eth0, port.eth1]
}
output "default_subnet" { value = data.network.default.subnet }
output "dhcp_start" { value = data.network.default.dhcp_range.start }
"#;

fn load_with(src: &str, host: &Observed) -> Result<(tempfile::TempDir, Configuration), String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.vf.hcl"), src).unwrap();
    let data = DataHandle(std::sync::Arc::new(ObservedData(host.clone())));
    config::load(&LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/state".into(), data: Some(data), ..Default::default() }).map(|c| (dir, c)).map_err(|e| e.render(false))
}

#[test]
fn data_networks_are_read_planned_against_and_never_changed() {
    let o = host();
    let (_d, cfg) = load_with(EXISTING, &o).unwrap();
    let p = plan(&cfg, &o, &opts());
    assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.data.iter().map(|d| d.address.as_str()).collect::<Vec<_>>(), vec!["data.network.default", "data.network.lan"]);
    // No change is about a data source or its objects.
    assert!(p.changes.iter().all(|c| !c.address.starts_with("data.")), "{:?}", p.changes);
    let addrs: Vec<&str> = p.changes.iter().map(|c| c.address.as_str()).collect();
    assert_eq!(addrs, vec!["port.eth0", "port.eth1", "instance.vm"]);
    // Facts are readable attributes.
    let out = |n: &str| cfg.outputs.iter().find(|o| o.name == n).map(|o| o.value.clone()).unwrap();
    assert_eq!(out("default_subnet"), crate::config::value::Value::String("192.168.122.0/24".into()));
    assert_eq!(out("dhcp_start"), crate::config::value::Value::String("192.168.122.2".into()));
    let text = render::text(&p, false);
    insta::assert_snapshot!("plan_text_data_sources", text);
    let j = render::to_json(&p);
    assert_eq!(j["data_sources"][1]["facts"]["address"], "192.168.1.2/24");
    assert_eq!(j["data_sources"][0]["facts"]["dhcp_range"]["end"], "192.168.122.254");
    // The domain: a tap on br0, and <interface type='network'> on default.
    let dom = super::tests::lowering(&cfg)
        .domain(cfg.resource("instance.vm").unwrap())
        .unwrap();
    let xml = crate::xml::domain::domain_xml(&dom);
    assert!(xml.contains("<source bridge=\"br0\"/>"), "{xml}");
    assert!(xml.contains("<source network=\"default\"/>"), "{xml}");
}

#[test]
fn a_data_network_that_vanished_after_loading_is_a_plan_error() {
    let o = host();
    let (_d, cfg) = load_with(EXISTING, &o).unwrap();
    let mut gone = o.clone();
    gone.links.remove("br0");
    let p = plan(&cfg, &gone, &opts());
    assert!(p.errors.iter().any(|e| e == "data.network.lan: bridge br0 not found on this host"), "{:?}", p.errors);
    assert!(!render::text(&p, false).contains("No changes"));
    // Changed under the plan (another address): refused too.
    let mut changed = o.clone();
    changed.links.get_mut("br0").unwrap().addrs = vec![crate::model::common::IpCidr::parse("192.168.1.3/24").unwrap()];
    let p = plan(&cfg, &changed, &opts());
    assert!(p.errors.iter().any(|e| e.contains("data.network.lan: bridge br0 changed")), "{:?}", p.errors);
    // A destroy never reads data sources.
    let p = plan(&cfg, &gone, &PlanOptions { destroy: true, ..opts() });
    assert!(p.errors.is_empty() && p.data.is_empty(), "{p:?}");
}

#[test]
fn missing_or_unusable_data_networks_are_located_errors_at_load() {
    let mut o = host();
    let err = load_with(&EXISTING.replace("\"br0\"", "\"br9\""), &o).unwrap_err();
    assert!(err.contains("bridge br9 not found on this host"), "{err}");
    assert!(err.contains("main.vf.hcl:4:13"), "{err}");
    o.networks.get_mut("default").unwrap().active = false;
    let err = load_with(EXISTING, &o).unwrap_err();
    assert!(err.contains("libvirt network default is defined but not active"), "{err}");
    let mut o = host();
    o.links.get_mut("br0").unwrap().kind = LinkKind::Veth;
    let err = load_with(EXISTING, &o).unwrap_err();
    assert!(err.contains("br0 is a veth, not a Linux bridge"), "{err}");
    let err = load_with(&EXISTING.replace("bridge  = \"br0\"", "ovs_bridge = \"br0\""), &host()).unwrap_err();
    assert!(err.contains("Open vSwitch is not running"), "{err}");
    // A fixed ip outside the given subnet, and one on a network whose subnet is only known from the host.
    let err = load_with(&EXISTING.replace("192.168.1.50", "192.168.2.50"), &host()).unwrap_err();
    assert!(err.contains("192.168.2.50 is outside data.network.lan's subnet 192.168.1.0/24"), "{err}");
    let (_d, cfg) = load_with(&EXISTING.replace("port \"eth1\" {\n  network = data.network.default\n}", "port \"eth1\" {\n  network = data.network.default\n  ip = \"192.168.122.9\"\n}"), &host()).unwrap();
    assert!(cfg.resource("port.eth1").is_some());
}

#[test]
fn conflicts_are_errors_that_say_the_ways_out() {
    let src = r#"
virtform { stack = "ex" }
network "lan" {
  bridge  = "br0"
  address = "192.168.1.2/24"
}
"#;
    let (_d, cfg) = super::tests::load(src);
    let o = host();
    let p = plan(&cfg, &o, &opts());
    assert_eq!(p.conflicts.len(), 1, "{:?}", p.conflicts);
    let c = &p.conflicts[0];
    assert!(c.ways_out.iter().any(|w| w.contains("import {\n      to = network.lan\n      id = \"br0\"\n    }")), "{:?}", c.ways_out);
    assert!(c.ways_out.iter().any(|w| w.contains("data \"network\" \"lan\" {\n      bridge = \"br0\"\n    }")), "{:?}", c.ways_out);
    let text = render::text(&p, false);
    assert!(!text.contains("No changes"), "{text}");
    insta::assert_snapshot!("plan_text_conflict", text);
    assert_eq!(find(&p, "network.lan").action, Action::NoOp);
    // Another stack's bridge: no import offered.
    let mut o2 = o.clone();
    o2.links.get_mut("br0").unwrap().alias = Some(crate::host::marker("other", "network.lan"));
    let p = plan(&cfg, &o2, &opts());
    assert!(p.conflicts[0].message.contains("belongs to network.lan of stack \"other\""), "{:?}", p.conflicts);
    assert!(p.conflicts[0].ways_out.iter().all(|w| !w.contains("import {")), "{:?}", p.conflicts);
    // A libvirt network of the same name that is not virtform's.
    let (_d, cfg) = super::tests::load("virtform { stack = \"ex\" }\nnetwork \"default\" {\n  type = \"nat\"\n  address = \"10.9.0.1/24\"\n}\n");
    let name = desired::libvirt_network_name("ex", "network.default");
    let mut o3 = Observed::default();
    let mut n = o.networks["default"].clone();
    n.name = name.clone();
    o3.networks.insert(name.clone(), n);
    let p = plan(&cfg, &o3, &opts());
    assert_eq!(p.conflicts.len(), 1, "{:?}", p.conflicts);
    assert!(p.conflicts[0].ways_out.iter().any(|w| w.contains(&format!("libvirt_network = \"{name}\""))), "{:?}", p.conflicts);
    assert!(p.conflicts[0].ways_out.iter().any(|w| w.contains(&format!("import {{\n      to = network.default\n      id = \"{name}\""))), "{:?}", p.conflicts);
}

#[test]
fn a_tenant_subnet_without_a_host_address_gives_guests_their_gateway_and_dns() {
    let src = r#"
virtform { stack = "ex" }
network "t" {
  type    = "ovs"
  bridge  = "vf-t"
  subnet  = "10.50.0.0/24"
  gateway = "10.50.0.254"
  dns     = ["10.50.0.53"]
}
port "a" {
  network = network.t
  ip      = "10.50.0.5"
}
instance "vm" {
  kernel = "/assets/vmlinuz"
  ports  = [port.a]
  cloud_init {}
}
output "cidr" { value = network.t.cidr }
output "gw" { value = network.t.gateway }
"#;
    let (_d, cfg) = super::tests::load(src);
    let Spec::Network(n) = &cfg.resource("network.t").unwrap().spec else { panic!() };
    assert_eq!(n.address, None);
    let lowering = super::tests::lowering(&cfg);
    let (_, input) = lowering.seed(cfg.resource("instance.vm").unwrap()).unwrap();
    let nic = &input.nics[0];
    assert_eq!(nic.ip, Some(("10.50.0.5".parse().unwrap(), 24)));
    assert_eq!(nic.gateway, Some("10.50.0.254".parse().unwrap()));
    assert_eq!(nic.dns, vec!["10.50.0.53".parse::<std::net::IpAddr>().unwrap()]);
    let out = |k: &str| cfg.outputs.iter().find(|o| o.name == k).map(|o| o.value.clone()).unwrap();
    assert_eq!(out("cidr"), crate::config::value::Value::String("10.50.0.0/24".into()));
    assert_eq!(out("gw"), crate::config::value::Value::String("10.50.0.254".into()));
    // An address alone still implies its subnet and is the gateway on nat.
    let (_d, cfg) = super::tests::load("network \"n\" {\n  type = \"nat\"\n  address = \"10.9.0.1/24\"\n}\nport \"p\" {\n  network = network.n\n  ip = \"10.9.0.7\"\n}\ninstance \"vm\" {\n  kernel = \"/k\"\n  ports = [port.p]\n  cloud_init {}\n}\n");
    let lowering = super::tests::lowering(&cfg);
    let (_, input) = lowering.seed(cfg.resource("instance.vm").unwrap()).unwrap();
    assert_eq!(input.nics[0].ip, Some(("10.9.0.7".parse().unwrap(), 24)));
    assert_eq!(input.nics[0].gateway, Some("10.9.0.1".parse().unwrap()));
    assert_eq!(input.nics[0].dns, vec!["10.9.0.1".parse::<std::net::IpAddr>().unwrap()]);
}
