//! Real-host end-to-end checks of the links adapter (`host::links`): bridges,
//! veth pairs, addresses, aliases and Nova's hybrid plug, done by `IpLinks`
//! and verified independently with `ip -json -details link show` and `/proc`.
//!
//! Needs root and iproute2: `scripts/test` runs it as root on the real host.
//! Without root these tests FAIL with a message saying so; they never skip
//! silently.
//!
//! Every test uses its own names, a 4-character prefix plus this process's
//! id in hex (≤ 15 characters), registers each name in a [`Cleanup`] guard
//! before creating it, and the guard deletes exactly those names on drop,
//! also when the test panics. Nothing else on the host is touched.

use std::process::Command;
use std::time::{Duration, Instant};

use virtform::host::links::{hybrid_plug_ops, hybrid_unplug_ops, BridgeInfo, IpLinks, Link, LinkHost, LinkKind, LinkOp};
use virtform::host::marker;
use virtform::model::common::IpCidr;

const HINT: &str = "run as root on the host, e.g. via scripts/test";

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next()).unwrap_or("?").to_string();
    assert_eq!(uid, "0", "the links end-to-end tests change the host's network links and need root (uid is {uid}); {HINT}");
}

/// A unique interface name: 4-char prefix + pid in hex + suffix.
fn uname(prefix: &str, suffix: &str) -> String {
    assert_eq!(prefix.len(), 4);
    let n = format!("{prefix}{:x}{suffix}", std::process::id());
    assert!(n.len() <= 15, "{n} is too long for an interface name");
    n
}

/// Deletes the links it was given, newest first, when dropped.
struct Cleanup {
    names: Vec<String>,
}

impl Cleanup {
    fn new() -> Cleanup {
        Cleanup { names: Vec::new() }
    }
    fn add(&mut self, name: &str) -> String {
        self.names.push(name.to_string());
        name.to_string()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.names.is_empty() {
            return;
        }
        // One batch with -force (keep going past names already gone, e.g. a veth's peer).
        let text: String = self.names.iter().rev().map(|n| format!("link del dev {n}\n")).collect();
        let mut child = match Command::new("ip").args(["-force", "-batch", "-"]).stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cleanup: cannot run ip: {e}");
                return;
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            let _ = stdin.write_all(text.as_bytes());
        }
        let _ = child.wait();
        let left: Vec<&String> = self.names.iter().filter(|n| exists(n)).collect();
        if !left.is_empty() {
            eprintln!("cleanup: links left behind: {left:?}");
        }
    }
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

fn must(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}; {HINT}"));
    assert!(out.status.success(), "`{program} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -json -details link show dev NAME`, independent of the adapter's parser.
fn ip_link(name: &str) -> serde_json::Value {
    let out = must("ip", &["-json", "-details", "link", "show", "dev", name]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

fn flags(v: &serde_json::Value) -> Vec<String> {
    v["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect()
}

fn ipv6_disabled(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6")).unwrap().trim().to_string()
}

fn find<'a>(links: &'a [Link], name: &str) -> Option<&'a Link> {
    links.iter().find(|l| l.name == name)
}

fn listed(name: &str) -> Link {
    let links = IpLinks::local().list().expect("list links");
    find(&links, name).unwrap_or_else(|| panic!("{name} not listed")).clone()
}

fn cidr(s: &str) -> IpCidr {
    IpCidr::parse(s).unwrap()
}

#[test]
fn bridge_with_address_mtu_and_alias_round_trips() {
    require_root();
    let mut guard = Cleanup::new();
    let br = guard.add(&uname("vlbr", ""));
    let pid = std::process::id();
    // Benchmarking range (RFC 2544) and a ULA, derived from the pid: no clash with other tests.
    let v4 = cidr(&format!("198.18.{}.1/24", pid % 250));
    let v6 = cidr(&format!("fd5f:7666:{:x}::1/64", pid & 0xffff));
    let alias = "virtform:demo:port.p[\"a b\"]";

    IpLinks::local()
        .apply(&[
            LinkOp::CreateBridge { name: br.clone(), alias: alias.into(), mtu: Some(1400), stp: false, forward_delay_cs: 0, mcast_snooping: false },
            LinkOp::AddAddr { name: br.clone(), addr: v4 },
            LinkOp::AddAddr { name: br.clone(), addr: v6 },
            LinkOp::SetUp { name: br.clone() },
        ])
        .expect("create bridge");

    let l = listed(&br);
    let raw = ip_link(&br);
    assert_eq!(l.name, br);
    assert_eq!(l.ifindex as u64, raw["ifindex"].as_u64().unwrap());
    assert_eq!(l.kind, LinkKind::Bridge);
    assert_eq!(l.alias.as_deref(), Some(alias));
    assert_eq!(l.owner(), Some(("demo", "port.p[\"a b\"]")));
    assert_eq!(raw["ifalias"].as_str(), Some(alias), "the alias reached the kernel intact");
    assert_eq!(l.mtu, 1400);
    assert!(l.up);
    assert!(!l.promisc);
    assert_eq!(l.master, None);
    assert_eq!(l.mac.map(|m| m.to_string()).as_deref(), raw["address"].as_str());
    assert_eq!(l.addrs.len(), 2, "global addresses only, no link-local: {:?}", l.addrs);
    assert!(l.addrs.contains(&v4) && l.addrs.contains(&v6), "{:?}", l.addrs);
    assert_eq!(l.bridge, Some(BridgeInfo { stp: false, forward_delay_cs: 0, mcast_snooping: false }));
    assert_eq!(l.veth_peer, None);
    assert_eq!(l.ipv6_disabled, Some(false));

    // MTU change.
    IpLinks::local().apply(&[LinkOp::SetMtu { name: br.clone(), mtu: 1300 }]).unwrap();
    assert_eq!(listed(&br).mtu, 1300);

    // STP on with a 15 s delay, then back off with 0 (needs STP off first: the adapter orders it).
    IpLinks::local().apply(&[LinkOp::SetBridgeOpts { name: br.clone(), stp: true, forward_delay_cs: 1500, mcast_snooping: true }]).unwrap();
    assert_eq!(listed(&br).bridge, Some(BridgeInfo { stp: true, forward_delay_cs: 1500, mcast_snooping: true }));
    assert_eq!(ip_link(&br)["linkinfo"]["info_data"]["forward_delay"].as_u64(), Some(1500), "ip reports centiseconds");
    IpLinks::local().apply(&[LinkOp::SetBridgeOpts { name: br.clone(), stp: false, forward_delay_cs: 0, mcast_snooping: false }]).unwrap();
    assert_eq!(listed(&br).bridge, Some(BridgeInfo { stp: false, forward_delay_cs: 0, mcast_snooping: false }));

    // Aliases the batch tokenizer cannot carry go by argument vector; both arrive intact.
    for a in ["both ' and \" # hash", "it's \"quoted\"", "plain'single", "virtform:demo:instance.w[\"k 1\"]"] {
        IpLinks::local().apply(&[LinkOp::SetAlias { name: br.clone(), alias: a.into() }, LinkOp::SetPromisc { name: br.clone(), on: true }]).unwrap();
        let l = listed(&br);
        assert_eq!(l.alias.as_deref(), Some(a));
        assert!(l.promisc);
    }

    // Address removal, down.
    IpLinks::local().apply(&[LinkOp::DelAddr { name: br.clone(), addr: v4 }, LinkOp::SetDown { name: br.clone() }, LinkOp::DisableIpv6 { name: br.clone() }]).unwrap();
    let l = listed(&br);
    assert!(!l.addrs.contains(&v4));
    assert!(!l.up);
    assert_eq!(l.ipv6_disabled, Some(true));

    IpLinks::local().apply(&[LinkOp::Delete { name: br.clone() }]).unwrap();
    assert!(!exists(&br));
}

#[test]
fn failures_name_the_op_and_link_and_stop_there() {
    require_root();
    let mut guard = Cleanup::new();
    let br = guard.add(&uname("vlfe", ""));
    let missing = uname("vlfe", "x"); // never created

    // A bad name anywhere: nothing runs.
    let e = IpLinks::local()
        .apply(&[
            LinkOp::CreateBridge { name: br.clone(), alias: String::new(), mtu: None, stp: false, forward_delay_cs: 0, mcast_snooping: false },
            LinkOp::DisableIpv6 { name: "../../../../tmp/x".into() },
        ])
        .unwrap_err();
    assert_eq!(e.object, "../../../../tmp/x");
    assert!(!exists(&br), "nothing may run when an op is invalid");

    // A failing op in the middle: earlier ops applied, later ones not, the error names op, line and link.
    let e = IpLinks::local()
        .apply(&[
            LinkOp::CreateBridge { name: br.clone(), alias: "virtform:t:x".into(), mtu: None, stp: false, forward_delay_cs: 0, mcast_snooping: false },
            LinkOp::SetMtu { name: missing.clone(), mtu: 1400 },
            LinkOp::SetUp { name: br.clone() },
        ])
        .unwrap_err();
    println!("error as shown: {e}");
    assert_eq!(e.op, "set mtu 1400 (op 2 of 3)");
    assert_eq!(e.object, missing);
    assert!(e.message.contains("Cannot find device") && e.message.contains("line 3"), "{}", e.message);
    assert!(e.hint.as_deref().unwrap_or("").contains("ops 1-1 were applied"), "{e:?}");
    let l = listed(&br);
    assert_eq!(l.alias.as_deref(), Some("virtform:t:x"));
    assert!(!l.up, "op 3 must not have run");

    // A failing sysctl write names its op too.
    let e = IpLinks::local().apply(&[LinkOp::DisableIpv6 { name: missing.clone() }]).unwrap_err();
    assert_eq!((e.op.as_str(), e.object.as_str()), ("disable IPv6 (op 1 of 1)", missing.as_str()));
}

#[test]
fn hybrid_plug_repair_and_unplug() {
    require_root();
    let mut guard = Cleanup::new();
    // A fake port id: 11 characters after the 3-character prefix, as Nova names them.
    let id = format!("e2e{:08x}", std::process::id());
    let qbr = guard.add(&format!("qbr{id}"));
    let qvb = guard.add(&format!("qvb{id}"));
    let qvo = guard.add(&format!("qvo{id}"));
    let m = marker("e2e", "port.hybrid");
    let mtu = 1450;

    let before = IpLinks::local().list().unwrap();
    for n in [&qbr, &qvb, &qvo] {
        assert!(find(&before, n).is_none(), "{n} exists before the test");
    }

    let ops = hybrid_plug_ops(&before, &qbr, &qvb, &qvo, Some(mtu), &m);
    assert_eq!(ops.len(), 9, "{ops:#?}");
    IpLinks::local().apply(&ops).expect("hybrid plug");

    let check_plugged = || {
        let br = ip_link(&qbr);
        let d = &br["linkinfo"]["info_data"];
        assert_eq!(br["linkinfo"]["info_kind"], "bridge");
        assert_eq!(d["forward_delay"].as_u64(), Some(0));
        assert_eq!(d["stp_state"].as_u64(), Some(0));
        assert_eq!(d["mcast_snooping"].as_u64(), Some(0));
        assert_eq!(ipv6_disabled(&qbr), "1", "IPv6 disabled on qbr");
        assert!(flags(&br).contains(&"UP".to_string()));
        assert_eq!(br["mtu"].as_u64(), Some(mtu as u64), "qbr follows its port's MTU");
        let vb = ip_link(&qvb);
        assert_eq!(vb["master"].as_str(), Some(qbr.as_str()), "qvb enslaved to qbr");
        assert_eq!(vb["link"].as_str(), Some(qvo.as_str()));
        for (n, v) in [(&qvb, &vb), (&qvo, &ip_link(&qvo))] {
            let f = flags(v);
            assert!(f.contains(&"UP".to_string()) && f.contains(&"PROMISC".to_string()), "{n}: {f:?}");
            assert_eq!(v["mtu"].as_u64(), Some(mtu as u64), "{n}");
            assert_eq!(v["linkinfo"]["info_kind"], "veth");
        }
        for n in [&qbr, &qvb, &qvo] {
            assert_eq!(ip_link(n)["ifalias"].as_str(), Some(m.as_str()), "marker on {n}");
        }
        // Converged: nothing more to do.
        let now = IpLinks::local().list().unwrap();
        assert_eq!(hybrid_plug_ops(&now, &qbr, &qvb, &qvo, Some(mtu), &m), vec![]);
        now
    };
    let now = check_plugged();
    let qvb_index = find(&now, &qvb).unwrap().ifindex;
    let qvo_index = find(&now, &qvo).unwrap().ifindex;

    // Delete qbr only; the plug repairs it without touching the veth.
    IpLinks::local().apply(&[LinkOp::Delete { name: qbr.clone() }]).unwrap();
    let partial = IpLinks::local().list().unwrap();
    assert!(find(&partial, &qbr).is_none());
    assert_eq!(find(&partial, &qvb).unwrap().master, None);
    let ops = hybrid_plug_ops(&partial, &qbr, &qvb, &qvo, Some(mtu), &m);
    assert!(!ops.iter().any(|o| matches!(o, LinkOp::CreateVeth { .. } | LinkOp::Delete { .. })), "{ops:#?}");
    assert!(ops.contains(&LinkOp::SetMaster { name: qvb.clone(), master: qbr.clone() }), "{ops:#?}");
    IpLinks::local().apply(&ops).expect("repair");
    let now = check_plugged();
    assert_eq!(find(&now, &qvb).unwrap().ifindex, qvb_index, "veth not recreated");
    assert_eq!(find(&now, &qvo).unwrap().ifindex, qvo_index, "veth not recreated");
    assert_eq!(now.iter().filter(|l| l.name == qvb || l.name == qvo).count(), 2, "veth not duplicated");

    // Unplug: nothing remains, and a second unplug has nothing to do.
    let ops = hybrid_unplug_ops(&now, &qbr, &qvb);
    assert_eq!(ops, vec![LinkOp::Delete { name: qbr.clone() }, LinkOp::Delete { name: qvb.clone() }]);
    IpLinks::local().apply(&ops).unwrap();
    let after = IpLinks::local().list().unwrap();
    for n in [&qbr, &qvb, &qvo] {
        assert!(find(&after, n).is_none() && !exists(n), "{n} left behind");
    }
    assert_eq!(hybrid_unplug_ops(&after, &qbr, &qvb), vec![]);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[test]
fn list_with_200_extra_links_vs_one_process_per_link() {
    require_root();
    const N: usize = 200;
    let mut guard = Cleanup::new();
    let names: Vec<String> = (0..N).map(|i| guard.add(&uname("vlpf", &format!("{i:02x}")))).collect();

    let baseline = median((0..5).map(|_| timed(|| IpLinks::local().list().unwrap())).collect());

    // The kernel here has no dummy driver: bridges stand in (their -details output is the largest).
    let create: Vec<LinkOp> = names
        .iter()
        .map(|n| LinkOp::CreateBridge { name: n.clone(), alias: marker("e2e", &format!("network.perf[\"{n}\"]")), mtu: None, stp: false, forward_delay_cs: 0, mcast_snooping: false })
        .collect();
    let t = Instant::now();
    IpLinks::local().apply(&create).expect("create 200 bridges in one batch");
    let t_create = t.elapsed();

    let links = IpLinks::local().list().unwrap();
    assert_eq!(names.iter().filter(|n| find(&links, n).is_some_and(|l| l.owner() == Some(("e2e", &format!("network.perf[\"{n}\"]"))))).count(), N);
    let total = links.len();
    let t_list = median((0..5).map(|_| timed(|| IpLinks::local().list().unwrap())).collect());

    let t = Instant::now();
    for n in &names {
        let out = Command::new("ip").args(["-json", "-details", "link", "show", "dev", n]).output().unwrap();
        assert!(out.status.success());
    }
    let t_each = t.elapsed();

    // Alias changes: one batch vs one `ip link set … alias` process each.
    let t = Instant::now();
    IpLinks::local().apply(&names.iter().map(|n| LinkOp::SetAlias { name: n.clone(), alias: "virtform:e2e:x[\"a b\"]".into() }).collect::<Vec<_>>()).unwrap();
    let t_alias_batch = t.elapsed();
    let t = Instant::now();
    for n in &names {
        must("ip", &["link", "set", "dev", n, "alias", "virtform:e2e:y[\"a b\"]"]);
    }
    let t_alias_each = t.elapsed();

    let t = Instant::now();
    IpLinks::local().apply(&names.iter().map(|n| LinkOp::Delete { name: n.clone() }).collect::<Vec<_>>()).expect("delete 200 bridges in one batch");
    let t_delete = t.elapsed();
    assert!(names.iter().all(|n| !exists(n)));

    println!("links e2e measurements ({total} links listed with the extra {N}):");
    println!("  list() before the extra links (median of 5): {}", ms(baseline));
    println!("  list() with {N} extra bridges (median of 5):   {}  (1 process)", ms(t_list));
    println!("  {N} x `ip -json -details link show dev X`:     {}  ({N} processes)", ms(t_each));
    println!("  create {N} bridges + aliases, one ip -batch:  {}", ms(t_create));
    println!("  {N} alias changes, one ip -batch:             {}", ms(t_alias_batch));
    println!("  {N} alias changes, one process each:          {}", ms(t_alias_each));
    println!("  delete {N} bridges, one ip -batch:            {}", ms(t_delete));
}

fn timed<T>(f: impl FnOnce() -> T) -> Duration {
    let t = Instant::now();
    let _ = f();
    t.elapsed()
}
