//! Real-host end-to-end tests of issue 4: Open vSwitch networks with Nova's
//! hybrid plug, libvirt NAT networks with static DHCP entries, live port
//! hot-plug, drift repair, and destroy leaving nothing behind.
//!
//! Each test has its own stack (`e2e-<short>-<pid>`), OVS bridge or libvirt
//! bridge name and /24, so tests run in parallel with each other and with the
//! other e2e files. `VfStack`'s drop destroys the stack and fails on any
//! domain, link, OVS object or libvirt network of the stack left behind.
//!
//! Needs root, libvirtd, Open vSwitch and the guest assets (scripts/test
//! provides them); without them the tests FAIL, they never skip.

mod support;
use support::*;
use std::time::Duration;

fn pid() -> u32 {
    std::process::id()
}

const BOOT: Duration = Duration::from_secs(120);

fn hybrid_conf(bridge: &str, net: &str, extra_port: bool) -> String {
    let ports_a = if extra_port { "[port.vif[\"a\"], port.extra]" } else { "[port.vif[\"a\"]]" };
    let extra = if extra_port { "port \"extra\" {\n  network = network.int\n  plug    = \"ovs_hybrid\"\n}\n" } else { "" };
    format!(
        r#"
variable "assets" {{ type = string }}

network "int" {{
  type          = "ovs"
  bridge        = "{bridge}"
  datapath_type = "netdev"
  address       = "{net}.1/24"
  mtu           = 1450
}}

image "tiny" {{ source = "${{var.assets}}/tiny.qcow2" }}

disk "root" {{
  for_each = toset(["a", "b"])
  image    = image.tiny
}}

port "vif" {{
  for_each = {{ a = "{net}.11", b = "{net}.12" }}
  network  = network.int
  plug     = "ovs_hybrid"
  ip       = each.value
  mtu      = 1450
}}

{extra}
instance "vm" {{
  for_each = {{ a = "{net}.12", b = "{net}.11" }}
  memory   = "256M"
  kernel   = "${{var.assets}}/vmlinuz"
  initrd   = "${{var.assets}}/initrd.gz"
  cmdline  = "console=ttyS0 vf.ip=${{port.vif[each.key].ip}}/24 vf.ping=${{each.value}} vf.pingwait=60"
  disks    = [disk.root[each.key]]
  ports    = each.key == "a" ? {ports_a} : [port.vif[each.key]]
  wait_for {{
    console = "VF-READY"
    timeout = "180s"
  }}
}}

output "devices" {{
  value = {{ for k, p in port.vif : k => [p.qbr, p.qvb, p.qvo, p.tap] }}
}}
"#
    )
}

/// Issue 4, tests 1, 3, 4 and 5 on one pair of guests.
#[test]
fn ovs_hybrid_pair_hotplug_drift_and_destroy() {
    let s = VfStack::new("ovs_hybrid_pair_hotplug_drift_and_destroy", "hyb");
    let bridge = format!("vfh{}", pid());
    let net = format!("10.231.{}", pid() % 250);
    s.write(&hybrid_conf(&bridge, &net, false));
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains("plug    = \"ovs_hybrid\""), "{}", plan.show());
    eprintln!("{}", plan.stdout);
    s.apply();

    // 1. The guests ping each other (read from their consoles).
    for (vm, peer) in [("a", format!("{net}.12")), ("b", format!("{net}.11"))] {
        let log = s.console(&format!("vm@{vm}.log"));
        assert!(has_line(&log, &format!("VF-PING {peer} ok")), "vm {vm} did not reach {peer}:\n{log}");
    }
    // Nova's devices and external-ids.
    let out = s.output(&["output", "--json", "devices"]).must();
    let devs: serde_json::Value = serde_json::from_str(&out.stdout).expect("output json");
    let a: Vec<String> = devs["a"].as_array().expect("devices of a").iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect();
    let (qbr, qvb, qvo, tap) = (&a[0], &a[1], &a[2], &a[3]);
    for (name, prefix) in [(qbr, "qbr"), (qvb, "qvb"), (qvo, "qvo"), (tap, "tap")] {
        assert!(name.starts_with(prefix) && name.len() == 14, "{name} is not a Nova device name");
        assert!(link_exists(name), "{name} does not exist");
    }
    assert_eq!(link_json(qvb)["master"].as_str(), Some(qbr.as_str()), "qvb is not in qbr");
    assert_eq!(link_json(tap)["master"].as_str(), Some(qbr.as_str()), "the tap is not in qbr");
    assert_eq!(link_mtu(qvo), 1450);
    assert!(ovs_ports(&bridge).contains(qvo), "qvo is not on {bridge}: {:?}", ovs_ports(&bridge));
    let ids = ovs_iface_external_ids(qvo);
    for key in ["attached-mac=", "iface-id=", "iface-status=active", "vm-uuid="] {
        assert!(ids.contains(key), "external_ids of {qvo} lack {key}: {ids}");
    }
    assert!(run("ping", &["-c", "2", "-W", "3", &format!("{net}.11")]).ok(), "the host cannot reach vm a through OVS");
    s.assert_plan_empty("after apply");

    // 4. Drift: qvo deleted from OVS, qvb released from its qbr.
    run("ovs-vsctl", &["del-port", qvo]).must();
    run("ip", &["link", "set", qvb, "nomaster"]).must();
    assert!(!run("ping", &["-c", "1", "-W", "2", &format!("{net}.11")]).ok(), "traffic still flows after the drift");
    let plan = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, Some(2), "{}", plan.show());
    assert!(plan.stdout.contains(&format!("ovs {qvo}")) && plan.stdout.contains(&format!("enslave to {qbr}")), "plan does not show both repairs:\n{}", plan.stdout);
    assert!(plan.stdout.contains("changed outside virtform"), "{}", plan.stdout);
    s.apply();
    assert!(ovs_ports(&bridge).contains(qvo) && link_json(qvb)["master"].as_str() == Some(qbr.as_str()));
    assert!(wait_until(Duration::from_secs(20), || run("ping", &["-c", "1", "-W", "2", &format!("{net}.11")]).ok()), "traffic does not flow again after the repair");
    s.assert_plan_empty("after the repair");

    // 3. Hot-plug a second port into the running vm a, then remove it.
    let id_before = virsh(&["domid", &format!("{}-vm-a", s.stack)]).stdout.trim().to_string();
    s.write(&hybrid_conf(&bridge, &net, true));
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains("will be updated in-place (live)"), "{}", plan.stdout);
    s.apply();
    assert!(s.wait_console("vm@a.log", "VF-NETDEVS eth0 eth1 lo", BOOT), "the guest did not see the new NIC:\n{}", s.console("vm@a.log"));
    assert_eq!(virsh(&["domid", &format!("{}-vm-a", s.stack)]).stdout.trim(), id_before, "the guest was restarted");
    s.assert_plan_empty("after hot-plug");
    let b_qvo = devs["b"][2].as_str().unwrap_or_default().to_string();
    let extra_qvo = ovs_ports(&bridge).into_iter().find(|p| p != qvo && *p != b_qvo).expect("a third qvo on the bridge after hot-plug");
    let id = extra_qvo[3..].to_string();
    for prefix in ["qbr", "qvb", "tap"] {
        assert!(link_exists(&format!("{prefix}{id}")), "{prefix}{id} missing after hot-plug");
    }
    s.write(&hybrid_conf(&bridge, &net, false));
    s.apply();
    // The guest's watch loop reports device changes about once a second.
    let last = || console_lines(&s.console("vm@a.log")).into_iter().rev().find(|l| l.starts_with("VF-NETDEVS")).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(30), || last() == "VF-NETDEVS eth0 lo"), "the guest still sees the removed NIC:\n{}", s.console("vm@a.log"));
    for prefix in ["qbr", "qvb", "qvo", "tap"] {
        assert!(!link_exists(&format!("{prefix}{id}")), "{prefix}{id} is left over after unplug");
    }
    assert!(!ovs_ports(&bridge).iter().any(|p| p.ends_with(&id)), "the OVS port is left over: {:?}", ovs_ports(&bridge));
    s.assert_plan_empty("after unplug");

    // 5. Destroy leaves nothing.
    s.vf(&["destroy", "--auto-approve"]).must();
    assert!(leaks_of_stack(&s.stack).is_empty(), "{:?}", leaks_of_stack(&s.stack));
    assert!(!ovs_bridges().contains(&bridge), "the OVS bridge is left");
    for d in [qbr, qvb, qvo, tap] {
        assert!(!link_exists(d), "{d} is left");
    }
}

fn nat_conf(bridge: &str, net: &str, tcp: u16, timeout: &str) -> String {
    format!(
        r#"
variable "assets" {{ type = string }}

network "nat" {{
  type    = "nat"
  bridge  = "{bridge}"
  address = "{net}.1/24"
  dhcp {{
    start = "{net}.100"
    end   = "{net}.200"
  }}
}}

image "tiny" {{ source = "${{var.assets}}/tiny.qcow2" }}
disk "root" {{ image = image.tiny }}

port "eth0" {{
  network = network.nat
  ip      = "{net}.10"
}}

port "dyn" {{
  network = network.nat
}}

instance "dyn" {{
  memory  = "256M"
  kernel  = "${{var.assets}}/vmlinuz"
  initrd  = "${{var.assets}}/initrd.gz"
  cmdline = "console=ttyS0 vf.dhcp=1 vf.listen=8080"
  disks   = [disk.dyn]
  ports   = [port.dyn]
  wait_for {{
    lease   = true
    tcp     = 8080
    timeout = "240s"
  }}
}}

disk "dyn" {{ image = image.tiny }}

output "dyn_ip" {{
  value = port.dyn.ip
}}

instance "web" {{
  memory  = "256M"
  kernel  = "${{var.assets}}/vmlinuz"
  initrd  = "${{var.assets}}/initrd.gz"
  cmdline = "console=ttyS0 vf.dhcp=1 vf.listen=8080"
  disks   = [disk.root]
  ports   = [port.eth0]
  wait_for {{
    lease   = true
    tcp     = {tcp}
    timeout = "{timeout}"
  }}
}}
"#
    )
}

/// Issue 4, test 2 (and 5 for NAT networks); issue 5, test 6 (TCP readiness and its timeout).
#[test]
fn nat_network_fixed_ip_by_dhcp_and_tcp_readiness() {
    let s = VfStack::new("nat_network_fixed_ip_by_dhcp_and_tcp_readiness", "nat");
    let bridge = format!("vfn{}", pid());
    let net = format!("10.232.{}", pid() % 250);
    let name = format!("vf-{}-nat", s.stack);
    s.write(&nat_conf(&bridge, &net, 8080, "180s"));
    let out = s.apply();
    assert!(out.stdout.contains("wait for a DHCP lease") && out.stdout.contains("wait for TCP port 8080"), "{}", out.stdout);
    let leases = virsh(&["net-dhcp-leases", &name]).must();
    assert!(leases.stdout.contains(&format!("{net}.10/24")), "no lease of the fixed IP:\n{}", leases.stdout);
    assert!(has_line(&s.console("web.log"), &format!("VF-DHCP eth0 ok {net}.10")), "{}", s.console("web.log"));
    assert!(run("ping", &["-c", "2", "-W", "3", &format!("{net}.10")]).ok(), "the host cannot reach the guest");
    s.assert_plan_empty("after apply");
    // A port without a fixed IP: the address its lease gave it is an output,
    // and the TCP wait connected to it.
    let dyn_ip = s.output(&["output", "dyn_ip"]).must().stdout.trim().to_string();
    assert!(dyn_ip.starts_with(&format!("{net}.")), "dyn_ip is not a leased address: {dyn_ip:?}");
    let last: u32 = dyn_ip.rsplit('.').next().and_then(|x| x.parse().ok()).unwrap_or(0);
    assert!((100..=200).contains(&last), "{dyn_ip} is outside the DHCP range");
    assert!(out.stdout.contains(&format!("dyn_ip = \"{dyn_ip}\"")), "apply did not print the leased address:\n{}", out.stdout);

    // A port that never listens: the wait times out naming the instance and the port.
    s.write(&nat_conf(&bridge, &net, 9, "8s"));
    let plan = s.vf(&["plan"]).must();
    eprintln!("{}", plan.stdout);
    let out = s.vf(&["apply", "--auto-approve", "--replace", "instance.web"]);
    assert_eq!(out.code, Some(1), "{}", out.show());
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains(&format!("{}-web is not ready: TCP port 9", s.stack)), "no clear timeout message:\n{all}");

    s.vf(&["destroy", "--auto-approve"]).must();
    assert!(!libvirt_networks().contains(&name), "the libvirt network is left");
    assert!(!link_exists(&bridge), "the network's bridge is left");
}
