//! Real-host end-to-end tests of issue 14: guests attached to networks
//! virtform does not own (a Linux bridge made with `ip link`, libvirt's
//! `default` network, an OVS bridge made with `ovs-vsctl`) through data
//! sources, and a tenant OVS network with a `subnet` and no host address.
//!
//! The untouched-objects rule: after every apply and destroy the existing
//! objects are what they were: `ip -d -j addr show` of their devices
//! (minus the bridge's running `*_timer` counters and the TSO/GSO limits
//! the kernel recomputes from a bridge's ports), `virsh net-dumpxml`
//! (after an apply minus `connections='N'`, libvirt's count of attached
//! guests) and `net-dumpxml --inactive`,
//! and `ovs-vsctl list bridge/port/interface` of the bridge (minus
//! `statistics` and the bridge's `ports`, the set attaching a guest adds
//! to). After an apply a bridge also differs in what a guest's tap brings
//! by being there (carrier, STP topology change); after the destroy it is
//! compared whole again. Objects
//! the tests make themselves pin their MAC addresses, so a new port with a
//! lower MAC cannot change them.
//!
//! Each test has its own stack, device names and /24 (from the PID); it
//! removes what it made (the libvirt `default` network is returned to the
//! state it was found in) and `VfStack`'s drop checks the stack left
//! nothing. Needs root, libvirtd, Open vSwitch and the guest assets
//! (scripts/test provides them); without them the tests FAIL, never skip.

mod support;
use support::*;
use std::time::Duration;

fn pid() -> u32 {
    std::process::id()
}


/// Drops the keys that tick on their own (`hello_timer`, `gc_timer`, …).
fn without_timers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| !k.ends_with("_timer"));
            for x in m.values_mut() {
                without_timers(x);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(without_timers),
        _ => {}
    }
}

/// `ip -d -j addr show dev DEV`, without the timers and the TSO/GSO
/// limits (the kernel recomputes them from the ports a bridge has had:
/// an empty bridge reports 65536 or 524280 depending on its history).
/// `whole` false: also without the rest the kernel derives from the ports
/// attached right now (a guest's tap joining is the point of attaching
/// it): the carrier (`operstate`, `LOWER_UP`/`NO-CARRIER`) and the STP
/// topology-change state with the shortened ageing time it brings.
fn link_state(dev: &str, whole: bool) -> String {
    let out = run("ip", &["-d", "-j", "addr", "show", "dev", dev]).must();
    let mut v: serde_json::Value = serde_json::from_str(&out.stdout).expect("ip -j output");
    without_timers(&mut v);
    if let Some(l) = v.get_mut(0).and_then(|l| l.as_object_mut()) {
        for k in ["tso_max_size", "tso_max_segs", "gso_max_size", "gso_max_segs", "gro_max_size"] {
            l.remove(k);
        }
    }
    if !whole && let Some(l) = v.get_mut(0).and_then(|l| l.as_object_mut()) {
        l.remove("operstate");
        if let Some(serde_json::Value::Array(f)) = l.get_mut("flags") {
            f.retain(|x| x != "LOWER_UP" && x != "NO-CARRIER");
        }
        if let Some(d) = l.get_mut("linkinfo").and_then(|i| i.get_mut("info_data")).and_then(|d| d.as_object_mut()) {
            for k in ["topology_change", "topology_change_detected", "ageing_time"] {
                d.remove(k);
            }
        }
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// Waits (up to 60 s: STP's topology change and the kernel's limits
/// settle after the last tap leaves) for `dev` to be whole what it was.
fn assert_back(what: &str, dev: &str, before: &str) {
    if !wait_until(Duration::from_secs(60), || link_state(dev, true) == before) {
        assert_same(what, before, &link_state(dev, true));
    }
}

/// `ovs-vsctl list` of a bridge's records, minus statistics and the
/// bridge's port set.
fn ovs_state(bridge: &str) -> String {
    let mut s = String::new();
    for (table, cols) in [
        ("bridge", "name,datapath_type,datapath_id,external_ids,other_config,fail_mode,protocols,stp_enable,rstp_enable,mcast_snooping_enable,controller,mirrors,netflow,sflow,ipfix,flood_vlans"),
        ("port", "name,interfaces,external_ids,other_config,tag,trunks,vlan_mode,bond_mode,lacp,qos,mac"),
        ("interface", "name,type,options,external_ids,other_config,mtu_request,mac,ofport_request,admin_state,ingress_policing_rate"),
    ] {
        let out = run("ovs-vsctl", &["--columns", cols, "list", table, bridge]).must();
        s.push_str(&format!("== {table}\n{}", out.stdout));
    }
    s
}

/// `virsh net-dumpxml NAME`; `live`: without the `connections='N'`
/// count of attached guests (libvirt's running counter, like the timers).
fn net_xml(name: &str, live: bool) -> String {
    let x = virsh(&["net-dumpxml", name]).must().stdout;
    if !live {
        return x;
    }
    match x.find(" connections='") {
        Some(i) => {
            let end = x[i + 14..].find('\'').map_or(x.len(), |j| i + 15 + j);
            format!("{}{}", &x[..i], &x[end..])
        }
        None => x,
    }
}

fn inactive_xml(name: &str) -> String {
    virsh(&["net-dumpxml", "--inactive", name]).must().stdout
}

/// Waits for IPv6 duplicate address detection on `dev` to finish (a
/// `tentative` address would read as a change made by the test).
fn settled(dev: &str) {
    assert!(wait_until(Duration::from_secs(15), || !run("ip", &["-j", "addr", "show", "dev", dev]).stdout.contains("tentative")), "addresses of {dev} stay tentative");
}

fn assert_same(what: &str, before: &str, after: &str) {
    assert!(before == after, "{what} changed:\n--- before\n{before}\n--- after\n{after}");
}

/// A Linux bridge with one end of a veth pair in it (so it has carrier;
/// these machines have no `dummy` driver), made and removed by the test.
struct ForeignBridge {
    name: String,
    veth: String,
}

impl ForeignBridge {
    fn new(name: String, addr: &str, mac: &str) -> ForeignBridge {
        ForeignBridge::with(name, Some(addr), mac)
    }

    /// `addr`: the bridge's own address, if any. The veth's outer end
    /// (`<name>w`) stays in the host's namespace, up: a station on the LAN.
    fn with(name: String, addr: Option<&str>, mac: &str) -> ForeignBridge {
        let veth = format!("{name}v");
        run("ip", &["link", "add", "name", &name, "address", mac, "type", "bridge"]).must();
        let b = ForeignBridge { name, veth };
        run("ip", &["link", "add", "name", &b.veth, "type", "veth", "peer", "name", &format!("{}w", b.name)]).must();
        run("ip", &["link", "set", &b.veth, "master", &b.name, "up"]).must();
        run("ip", &["link", "set", &format!("{}w", b.name), "up"]).must();
        if let Some(addr) = addr {
            run("ip", &["addr", "add", addr, "dev", &b.name]).must();
        }
        run("ip", &["link", "set", &b.name, "up"]).must();
        assert!(wait_until(Duration::from_secs(10), || link_json(&b.name)["operstate"].as_str() == Some("UP")), "{} does not come up", b.name);
        settled(&b.name);
        b
    }
}

impl Drop for ForeignBridge {
    fn drop(&mut self) {
        run("ip", &["link", "del", &self.veth]);
        run("ip", &["link", "del", &self.name]);
    }
}

/// An OVS bridge (netdev datapath, pinned MAC), made and removed by the test.
struct ForeignOvs(String);

impl ForeignOvs {
    fn new(name: String, mac: &str) -> ForeignOvs {
        let hw = format!("other_config:hwaddr=\"{mac}\"");
        run("ovs-vsctl", &["add-br", &name, "--", "set", "bridge", &name, "datapath_type=netdev", &hw]).must();
        run("ip", &["link", "set", &name, "up"]).must();
        settled(&name);
        ForeignOvs(name)
    }
}

impl Drop for ForeignOvs {
    fn drop(&mut self) {
        run("ovs-vsctl", &["--if-exists", "del-br", &self.0]);
    }
}

fn guest(name: &str, ports: &str, cmdline: &str, wait: &str) -> String {
    format!(
        r#"
disk "{name}" {{ image = image.tiny }}
instance "{name}" {{
  memory  = "256M"
  kernel  = "${{var.assets}}/vmlinuz"
  initrd  = "${{var.assets}}/initrd.gz"
  cmdline = "console=ttyS0 {cmdline}"
  disks   = [disk.{name}]
  ports   = {ports}
  wait_for {{
    {wait}
    timeout = "240s"
  }}
}}
"#
    )
}

const HEAD: &str = "variable \"assets\" { type = string }\nimage \"tiny\" { source = \"${var.assets}/tiny.qcow2\" }\n";

/// A bridge made with `ip link`: a managed network of its name is a
/// conflict with the ways out; a data source attaches a guest that pings
/// the host; the bridge is untouched after apply and destroy.
#[test]
fn guest_on_a_linux_bridge_made_with_ip_link() {
    let s = VfStack::new("guest_on_a_linux_bridge_made_with_ip_link", "exb");
    let net = format!("10.233.{}", pid() % 250);
    let br = ForeignBridge::new(format!("vfxb{}", pid()), &format!("{net}.1/24"), "02:00:0a:e9:00:01");
    let before = link_state(&br.name, true);
    let attached_before = link_state(&br.name, false);

    // Declared as a managed network: a conflict, an error, the ways out.
    s.write(&format!("{HEAD}network \"lan\" {{\n  bridge = \"{}\"\n}}\n", br.name));
    let plan = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, Some(1), "{}", plan.show());
    assert!(!plan.stdout.contains("No changes"), "{}", plan.stdout);
    assert!(plan.stdout.contains(&format!("error: conflict: network.lan: link \"{}\" exists on the host but was not created by virtform", br.name)), "{}", plan.stdout);
    assert!(plan.stdout.contains(&format!("import {{\n        to = network.lan\n        id = \"{}\"", br.name)), "{}", plan.stdout);
    assert!(plan.stdout.contains(&format!("data \"network\" \"lan\" {{\n        bridge = \"{}\"", br.name)), "{}", plan.stdout);
    let apply = s.vf(&["apply", "--auto-approve"]);
    assert_eq!(apply.code, Some(1), "{}", apply.show());
    assert_same("the bridge after a refused apply", &before, &link_state(&br.name, true));

    // A data source that names a bridge that is not there: located error.
    s.write(&format!("{HEAD}data \"network\" \"lan\" {{\n  bridge = \"{}x\"\n}}\n", br.name));
    let plan = s.vf(&["plan"]);
    assert_eq!(plan.code, Some(1), "{}", plan.show());
    assert!(plan.stderr.contains(&format!("bridge {}x not found on this host", br.name)) && plan.stderr.contains("main.vf.hcl:4:"), "{}", plan.show());

    let conf = format!(
        "{HEAD}data \"network\" \"lan\" {{\n  bridge = \"{b}\"\n}}\nport \"eth0\" {{\n  network = data.network.lan\n  ip      = \"{net}.10\"\n}}\n{g}\noutput \"lan\" {{ value = [data.network.lan.subnet, data.network.lan.address, data.network.lan.mtu] }}\n",
        b = br.name,
        g = guest("vm", "[port.eth0]", &format!("vf.ip={net}.10/24 vf.ping={net}.1 vf.pingwait=60"), "console = \"VF-READY\"")
    );
    s.write(&conf);
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains(&format!("data.network.lan: bridge {} (type bridge, device {}, mtu 1500, address {net}.1/24)", br.name, br.name)), "{}", plan.stdout);
    let json = s.vf(&["plan", "--json"]).must();
    let j: serde_json::Value = serde_json::from_str(&json.stdout).expect("plan json");
    assert_eq!(j["data_sources"][0]["address"], "data.network.lan");
    s.apply();
    assert!(has_line(&s.console("vm.log"), &format!("VF-PING {net}.1 ok")), "the guest did not reach the host:\n{}", s.console("vm.log"));
    assert!(run("ping", &["-c", "2", "-W", "3", &format!("{net}.10")]).ok(), "the host cannot reach the guest");
    let out = s.output(&["output", "--json", "lan"]).must();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap_or_default(), serde_json::json!([format!("{net}.0/24"), format!("{net}.1/24"), 1500]));
    assert_same("the bridge after apply", &attached_before, &link_state(&br.name, false));
    s.assert_plan_empty("after apply");
    let graph = s.vf(&["graph"]).must();
    assert!(graph.stdout.contains("data.network.lan"), "{}", graph.stdout);

    s.vf(&["destroy", "--auto-approve"]).must();
    assert!(link_exists(&br.name), "destroy removed the bridge");
    assert_back("the bridge after destroy", &br.name, &before);
}

/// A bridged LAN where the host has no address on the bridge and the
/// router is another station (here the veth's outer end): the data source
/// gives the guests' `subnet` and `gateway`; a port's fixed ip in that
/// subnet reaches the seed's network-config with the gateway, the guest
/// reaches the router and the router the guest; the bridge is untouched.
#[test]
fn fixed_ip_in_a_data_networks_subnet_on_a_bridge_without_a_host_address() {
    let s = VfStack::new("fixed_ip_in_a_data_networks_subnet_on_a_bridge_without_a_host_address", "exs");
    let net = format!("10.234.{}", pid() % 250);
    let br = ForeignBridge::with(format!("vfxs{}", pid()), None, "02:00:0a:ea:00:01");
    let router = format!("{}w", br.name);
    run("ip", &["addr", "add", &format!("{net}.254/24"), "dev", &router]).must();
    let before = link_state(&br.name, true);
    let attached_before = link_state(&br.name, false);

    // A fixed ip outside the data source's subnet: located, nothing changes.
    let data = format!("data \"network\" \"lan\" {{\n  bridge  = \"{}\"\n  subnet  = \"{net}.0/24\"\n  gateway = \"{net}.254\"\n  dns     = [\"{net}.53\"]\n}}\n", br.name);
    s.write(&format!("{HEAD}{data}port \"eth0\" {{\n  network = data.network.lan\n  ip      = \"10.235.0.10\"\n}}\n"));
    let plan = s.vf(&["plan"]);
    assert_eq!(plan.code, Some(1), "{}", plan.show());
    assert!(plan.all().contains("10.235.0.10") && plan.all().contains(&format!("{net}.0/24")) && plan.all().contains("main.vf.hcl:"), "{}", plan.show());

    let conf = format!(
        r#"{HEAD}{data}port "eth0" {{
  network = data.network.lan
  ip      = "{net}.10"
}}
disk "vm" {{ image = image.tiny }}
instance "vm" {{
  memory  = "256M"
  kernel  = "${{var.assets}}/vmlinuz"
  initrd  = "${{var.assets}}/initrd.gz"
  cmdline = "console=ttyS0 vf.ip={net}.10/24 vf.ping={net}.254 vf.pingwait=60"
  disks   = [disk.vm]
  ports   = [port.eth0]
  cloud_init {{}}
  wait_for {{
    console = "VF-READY"
    timeout = "240s"
  }}
}}
output "lan" {{ value = [data.network.lan.subnet, data.network.lan.address, data.network.lan.gateway] }}
"#
    );
    s.write(&conf);
    s.apply();
    assert!(has_line(&s.console("vm.log"), &format!("VF-PING {net}.254 ok")), "the guest did not reach the router:\n{}", s.console("vm.log"));
    assert!(run("ping", &["-c", "2", "-W", "3", &format!("{net}.10")]).ok(), "the router cannot reach the guest");
    // The generated network-config: the fixed address, the data source's gateway and DNS.
    let seeds = s.state.path().join(&s.stack).join("seeds");
    let seed = std::fs::read_dir(&seeds).expect("seeds dir").filter_map(|e| e.ok()).map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "iso")).expect("a seed");
    let nc = run("isoinfo", &["-R", "-i", &seed.display().to_string(), "-x", "/network-config"]).must().stdout;
    for want in [format!("{net}.10/24"), format!("gateway4: \"{net}.254\""), format!("{net}.53")] {
        assert!(nc.contains(&want), "network-config lacks {want:?}:\n{nc}");
    }
    let out = s.output(&["output", "--json", "lan"]).must();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap_or_default(), serde_json::json!([format!("{net}.0/24"), null, format!("{net}.254")]));
    assert_same("the bridge after apply", &attached_before, &link_state(&br.name, false));
    s.assert_plan_empty("after apply");

    s.vf(&["destroy", "--auto-approve"]).must();
    assert_back("the bridge after destroy", &br.name, &before);
}

/// libvirt's `default` network (started, or defined and started, if it
/// is not): a guest gets a DHCP lease on it; the network is untouched.
#[test]
fn guest_on_libvirt_default_network_gets_a_lease() {
    let s = VfStack::new("guest_on_libvirt_default_network_gets_a_lease", "exl");
    let default = DefaultNetwork::ensure();
    let bridge = default.bridge();
    settled(&bridge);
    let xml_before = net_xml("default", false);
    let live_before = net_xml("default", true);
    let inactive_before = inactive_xml("default");
    let link_before = link_state(&bridge, false);
    let whole_before = link_state(&bridge, true);

    let conf = format!(
        "{HEAD}data \"network\" \"default\" {{\n  libvirt_network = \"default\"\n}}\nport \"eth0\" {{\n  network = data.network.default\n}}\n{g}\noutput \"ip\" {{ value = port.eth0.ip }}\noutput \"facts\" {{ value = [data.network.default.subnet, data.network.default.dhcp_range] }}\n",
        g = guest("vm", "[port.eth0]", "vf.dhcp=1", "lease = true")
    );
    s.write(&conf);
    let out = s.apply();
    assert!(out.stdout.contains("wait for a DHCP lease"), "{}", out.stdout);
    let ip = s.output(&["output", "ip"]).must().stdout.trim().trim_matches('"').to_string();
    assert!(ip.starts_with("192.168.122."), "the port's ip is not a lease of the default network: {ip:?}");
    assert!(has_line(&s.console("vm.log"), &format!("VF-DHCP eth0 ok {ip}")), "{}", s.console("vm.log"));
    let leases = virsh(&["net-dhcp-leases", "default"]).must();
    assert!(leases.stdout.contains(&format!("{ip}/24")), "no lease:\n{}", leases.stdout);
    let facts = s.output(&["output", "--json", "facts"]).must();
    let f: serde_json::Value = serde_json::from_str(&facts.stdout).unwrap_or_default();
    assert_eq!(f[0], "192.168.122.0/24", "{f}");
    assert_eq!(f[1]["start"], "192.168.122.2", "{f}");
    let dom = virsh(&["dumpxml", &format!("{}-vm", s.stack)]).must().stdout;
    assert!(dom.contains("<source network='default'"), "the NIC is not on the default network:\n{dom}");
    assert_same("net-dumpxml default after apply (minus connections)", &live_before, &net_xml("default", true));
    assert_same("net-dumpxml --inactive default after apply", &inactive_before, &inactive_xml("default"));
    assert_same("the default network's bridge after apply", &link_before, &link_state(&bridge, false));
    s.assert_plan_empty("after apply");

    s.vf(&["destroy", "--auto-approve"]).must();
    assert_same("net-dumpxml default after destroy", &xml_before, &net_xml("default", false));
    assert_same("net-dumpxml --inactive default after destroy", &inactive_before, &inactive_xml("default"));
    assert_back("the default network's bridge after destroy", &bridge, &whole_before);
}

/// An OVS bridge made with `ovs-vsctl` (no host address on it, `subnet`
/// given): one guest by virtualport, one by Nova's hybrid plug, pinging
/// each other; the bridge's records are untouched.
#[test]
fn virtualport_and_hybrid_guests_on_an_ovs_bridge_made_by_hand() {
    let s = VfStack::new("virtualport_and_hybrid_guests_on_an_ovs_bridge_made_by_hand", "exo");
    let net = format!("10.234.{}", pid() % 250);
    let ovs = ForeignOvs::new(format!("vfxo{}", pid()), "02:00:0a:ea:00:01");
    let before = ovs_state(&ovs.0);
    let link_before = link_state(&ovs.0, true);
    let attached_before = link_state(&ovs.0, false);
    let conf = format!(
        "{HEAD}data \"network\" \"int\" {{\n  ovs_bridge = \"{b}\"\n  subnet     = \"{net}.0/24\"\n}}\nport \"vp\" {{\n  network = data.network.int\n  plug    = \"ovs\"\n  ip      = \"{net}.11\"\n}}\nport \"hy\" {{\n  network = data.network.int\n  plug    = \"ovs_hybrid\"\n  ip      = \"{net}.12\"\n}}\n{a}{c}output \"hy\" {{ value = [port.hy.qbr, port.hy.qvo] }}\n",
        b = ovs.0,
        a = guest("a", "[port.vp]", &format!("vf.ip={net}.11/24 vf.ping={net}.12 vf.pingwait=90"), "console = \"VF-READY\""),
        c = guest("b", "[port.hy]", &format!("vf.ip={net}.12/24 vf.ping={net}.11 vf.pingwait=90"), "console = \"VF-READY\""),
    );
    s.write(&conf);
    s.apply();
    for (vm, peer) in [("a", format!("{net}.12")), ("b", format!("{net}.11"))] {
        assert!(has_line(&s.console(&format!("{vm}.log")), &format!("VF-PING {peer} ok")), "vm {vm} did not reach {peer}:\n{}", s.console(&format!("{vm}.log")));
    }
    let dom = virsh(&["dumpxml", &format!("{}-a", s.stack)]).must().stdout;
    assert!(dom.contains("<virtualport type='openvswitch'>"), "vm a has no virtualport:\n{dom}");
    let hy: serde_json::Value = serde_json::from_str(&s.output(&["output", "--json", "hy"]).must().stdout).unwrap_or_default();
    let qvo = hy[1].as_str().unwrap_or_default().to_string();
    assert!(ovs_ports(&ovs.0).contains(&qvo), "the hybrid port's qvo is not on {}: {:?}", ovs.0, ovs_ports(&ovs.0));
    assert_same("the OVS bridge's records after apply", &before, &ovs_state(&ovs.0));
    assert_same("the OVS bridge's device after apply", &attached_before, &link_state(&ovs.0, false));
    s.assert_plan_empty("after apply");

    s.vf(&["destroy", "--auto-approve"]).must();
    assert!(ovs_bridges().contains(&ovs.0), "destroy removed the bridge");
    assert!(ovs_ports(&ovs.0).is_empty(), "ports left on {}: {:?}", ovs.0, ovs_ports(&ovs.0));
    assert_same("the OVS bridge's records after destroy", &before, &ovs_state(&ovs.0));
    assert_back("the OVS bridge's device after destroy", &ovs.0, &link_before);
}

/// A tenant OVS network virtform manages, with a `subnet` and no host
/// address (Neutron's usual case): two guests with fixed ips ping each other.
#[test]
fn tenant_subnet_without_a_host_address() {
    let s = VfStack::new("tenant_subnet_without_a_host_address", "ext");
    let net = format!("10.235.{}", pid() % 250);
    let bridge = format!("vfxt{}", pid());
    let conf = format!(
        "{HEAD}network \"t\" {{\n  type          = \"ovs\"\n  bridge        = \"{bridge}\"\n  datapath_type = \"netdev\"\n  subnet        = \"{net}.0/24\"\n}}\nport \"p\" {{\n  for_each = {{ a = \"{net}.5\", b = \"{net}.6\" }}\n  network  = network.t\n  ip       = each.value\n}}\n{a}{b}",
        a = guest("a", "[port.p[\"a\"]]", &format!("vf.ip={net}.5/24 vf.ping={net}.6 vf.pingwait=90"), "console = \"VF-READY\""),
        b = guest("b", "[port.p[\"b\"]]", &format!("vf.ip={net}.6/24 vf.ping={net}.5 vf.pingwait=90"), "console = \"VF-READY\""),
    );
    s.write(&conf);
    s.apply();
    for (vm, peer) in [("a", format!("{net}.6")), ("b", format!("{net}.5"))] {
        assert!(has_line(&s.console(&format!("{vm}.log")), &format!("VF-PING {peer} ok")), "vm {vm} did not reach {peer}:\n{}", s.console(&format!("{vm}.log")));
    }
    let addrs = run("ip", &["-j", "addr", "show", "dev", &bridge]).must().stdout;
    assert!(!addrs.contains(&format!("\"{net}.")), "the host got an address on the tenant network: {addrs}");
    s.assert_plan_empty("after apply");
    s.vf(&["destroy", "--auto-approve"]).must();
    assert!(!ovs_bridges().contains(&bridge), "the tenant bridge is left");
}
