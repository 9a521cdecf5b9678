//! Many hosts, one plan (issue 17, items 1-3 and 7 in part), on the
//! three-host lab (`scripts/lab up`; scripts/test brings it up): `host`
//! blocks, instances placed on two lab hosts with their disks, ports and
//! networks, the image and the kernel delivered to each, one apply over
//! SSH, a converged plan, destroy leaving nothing on any host; a host key
//! mismatch and an unreachable host refused before anything runs; an
//! overlay network (item 4) joining guests on two hosts, grown to a third
//! host and shrunk again without touching the guests; a guest whose host
//! changes migrating live (item 5), after a failed attempt that leaves it
//! running where it was; waits that reach guests through their host (the
//! tiny guests' TCP port, a real Debian guest's SSH login and cloud-init,
//! `virtform ssh`); a saved fleet plan applied, and refused once a host
//! changed; `moved` blocks on a remote guest; imports of a bridge and a
//! libvirt network made by hand on a remote host; a lock left on a host
//! by a run that died with its connection hanging, broken by the next run.
//!
//! These tests FAIL (never skip) when the lab is down.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;
use virtform::host::exec::{Executor, Input, SshTarget};

const LAB_HINT: &str = "run scripts/lab up (scripts/test does)";

/// The tests that change the lab's hosts run one at a time: each counts
/// the image copies its plan makes, removes its cache copies, or compares
/// a host's links before and after.
static LAB_GUESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The lock of the tests that put guests on the lab, with the test image
/// taken out of every lab host's cache first (a test counts the copies
/// its plan makes, and a failed test leaves its copies behind).
fn lab_guests() -> std::sync::MutexGuard<'static, ()> {
    let g = LAB_GUESTS.lock().unwrap_or_else(|p| p.into_inner());
    uncache_tiny();
    g
}

/// Removes the test image's copy from each lab host's image cache (which
/// outlives destroy by design).
fn uncache_tiny() {
    let tiny = run("sha256sum", &[assets_dir().join("tiny.qcow2").to_str().unwrap()]);
    let sha = tiny.stdout.split_whitespace().next().unwrap_or_default().to_string();
    assert_eq!(sha.len(), 64, "no sha256 of the test image: {}", tiny.show());
    for h in ["vflab-a", "vflab-b", "vflab-c"] {
        let _ = sh(&lab(h), &["rm", "-f", "--", &format!("/var/lib/virtform/images/{sha}")]);
    }
}

fn lab_dir() -> PathBuf {
    std::env::var_os("VIRTFORM_LAB_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/lib/virtform-lab"))
}

fn lab(host: &str) -> Executor {
    let dir = lab_dir();
    for f in ["id_ed25519", "known_hosts"] {
        assert!(dir.join(f).is_file(), "{} is missing: the lab is down; {LAB_HINT}", dir.join(f).display());
    }
    let addr = match host {
        "vflab-a" => "10.99.0.11",
        "vflab-b" => "10.99.0.12",
        _ => "10.99.0.13",
    };
    let t = SshTarget::from_libvirt_uri(host, &format!("qemu+ssh://root@{addr}/system"), dir.join("id_ed25519"), dir.join("known_hosts")).unwrap();
    Executor::ssh(t).unwrap_or_else(|e| panic!("cannot reach lab host {host}: {e}\n{LAB_HINT}"))
}

fn sh(x: &Executor, argv: &[&str]) -> String {
    let a: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
    let o = x.output("test", argv[0], &a, Input::None).unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn hosts_hcl(known_hosts: &Path) -> String {
    let dir = lab_dir();
    let key = dir.join("id_ed25519");
    let mut s = String::new();
    for (h, ip) in [("a", "10.99.0.11"), ("b", "10.99.0.12"), ("c", "10.99.0.13")] {
        s.push_str(&format!(
            "host \"{h}\" {{\n  uri         = \"qemu+ssh://root@{ip}/system\"\n  private_key = file(\"{}\")\n  known_hosts = \"{}\"\n}}\n",
            key.display(),
            known_hosts.display()
        ));
    }
    s
}

fn fleet_hcl(pid: u32) -> String {
    format!(
        r#"{hosts}
variable "assets" {{ type = string }}
locals {{
  placed = {{ a = host.a, b = host.b }}
}}
network "lan" {{
  for_each = local.placed
  host     = each.value
  bridge   = "vffl{pid}${{each.key}}"
  address  = "10.61.0.1/24"
}}
image "tiny" {{ source = "${{var.assets}}/tiny.qcow2" }}
disk "root" {{
  for_each = local.placed
  image    = image.tiny
}}
port "eth0" {{
  for_each = local.placed
  network  = network.lan[each.key]
  ip       = "10.61.0.10"
}}
instance "web" {{
  for_each = local.placed
  host     = each.value
  memory   = "128M"
  kernel   = "${{var.assets}}/vmlinuz"
  initrd   = "${{var.assets}}/initrd.gz"
  cmdline  = "console=ttyS0 vf.ip=10.61.0.10/24 vf.listen=8080"
  disks    = [disk.root[each.key]]
  ports    = [port.eth0[each.key]]
  wait_for {{
    console = "VF-READY"
    # reached from the guest's host (its SSH master), not from here
    tcp     = 8080
    timeout = "300s"
  }}
}}
output "hosts" {{ value = {{ for k, h in local.placed : k => h.tunnel_ip }} }}
"#,
        hosts = hosts_hcl(&lab_dir().join("known_hosts"))
    )
}

#[test]
fn a_fleet_over_the_lab_applies_converges_and_is_destroyed_leaving_nothing() {
    let _one = lab_guests();
    let s = VfStack::new("a_fleet_over_the_lab_applies_converges_and_is_destroyed_leaving_nothing", "fl");
    let pid = std::process::id();
    let (a, b, c) = (lab("vflab-a"), lab("vflab-b"), lab("vflab-c"));
    s.write(&fleet_hcl(pid));
    let tiny = run("sha256sum", &[assets_dir().join("tiny.qcow2").to_str().unwrap()]);
    let tiny_sha = tiny.stdout.split_whitespace().next().unwrap_or_default().to_string();
    let tiny_sha = tiny_sha.as_str();

    // The plan names each host and what goes there; this machine gets nothing.
    let plan = s.vf(&["plan"]);
    assert!(plan.ok(), "{}", plan.show());
    for want in ["On host.a (root@10.99.0.11):", "On host.b (root@10.99.0.12):", "On host.c (root@10.99.0.13): nothing of this stack", "On this machine: nothing of this stack", "Fleet of 4 hosts: Plan: 8 to add"] {
        assert!(plan.stdout.contains(want), "missing {want:?} in:\n{}", plan.show());
    }

    let out = s.vf_within(&["apply", "--auto-approve"], Duration::from_secs(600));
    assert!(out.ok() && out.stdout.contains("Apply complete"), "{}", out.show());
    assert!(out.stdout.contains(&format!("define domain {}-web-a on host.a", s.stack)), "{}", out.show());
    for key in ["a", "b"] {
        assert!(out.stdout.contains(&format!("wait for TCP port 8080 of {}-web-{key} on host.{key}", s.stack)), "{}", out.show());
    }
    // Each guest runs on its host, booted from the delivered kernel.
    for (x, key, other) in [(&a, "a", &b), (&b, "b", &a)] {
        let dom = format!("{}-web-{key}", s.stack);
        assert!(sh(x, &["virsh", "-c", "qemu:///system", "domstate", &dom]).contains("running"), "{dom} is not running on vflab-{key}");
        assert!(!sh(other, &["virsh", "-c", "qemu:///system", "list", "--all", "--name"]).contains(&dom), "{dom} is on the other host too");
        let log = format!("/var/lib/virtform/{}/console/web@{key}.log", s.stack);
        assert!(sh(x, &["cat", &log]).contains("VF-READY"), "no VF-READY in {log} on vflab-{key}");
        let boot = sh(x, &["ls", &format!("/var/lib/virtform/{}/boot", s.stack)]);
        assert!(boot.contains("-vmlinuz") && boot.contains("-initrd.gz"), "boot files on vflab-{key}: {boot}");
        let images = sh(x, &["ls", "-a", "/var/lib/virtform/images"]);
        assert!(images.lines().any(|l| l == tiny_sha), "the image's copy on vflab-{key}: {images}");
        assert!(!images.contains(".part"), "a partial copy on vflab-{key}: {images}");
        assert!(sh(x, &["ip", "-br", "link", "show", &format!("vffl{pid}{key}")]).contains("UP"), "bridge on vflab-{key}");
    }
    // Nothing on host c or on this machine.
    assert!(!sh(&c, &["virsh", "-c", "qemu:///system", "list", "--all", "--name"]).contains(&s.stack));
    assert!(!domain_exists(&format!("{}-web-a", s.stack)) && !link_exists(&format!("vffl{pid}a")), "objects on this machine");
    assert!(out.stdout.contains("10.99.0.11"), "outputs: {}", out.show());

    // Converged: nothing to do anywhere.
    let again = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, Some(0), "not converged:\n{}", again.show());

    // Destroy: nothing left on any host but the image cache.
    let d = s.vf(&["destroy", "--auto-approve"]);
    assert!(d.ok() && d.stdout.contains("Destroy complete"), "{}", d.show());
    for (x, key) in [(&a, "a"), (&b, "b")] {
        assert!(!sh(x, &["virsh", "-c", "qemu:///system", "list", "--all", "--name"]).contains(&s.stack), "domain left on vflab-{key}");
        assert!(!sh(x, &["ip", "-br", "link"]).contains(&format!("vffl{pid}")), "bridge left on vflab-{key}");
        assert!(sh(x, &["ls", "-a", "/var/lib/virtform"]).lines().all(|l| l != s.stack), "stack dir left on vflab-{key}");
        // The image cache outlives destroy by design; this test's copy goes.
        assert!(sh(x, &["ls", "/var/lib/virtform/images"]).lines().any(|l| l == tiny_sha), "the cache copy on vflab-{key} went with destroy");
        let _ = sh(x, &["rm", "-f", "--", &format!("/var/lib/virtform/images/{tiny_sha}")]);
    }
}

/// host.a (its key checked against `known_hosts`), host.gone (nothing
/// listens there) and a bridge on host.a; then `extra`.
fn gone_hcl(known_hosts: &Path, extra: &str) -> String {
    format!(
        r#"
variable "assets" {{ type = string }}
host "a" {{
  uri         = "qemu+ssh://root@10.99.0.11/system"
  private_key = file("{key}")
  known_hosts = "{known}"
}}
host "gone" {{
  uri         = "qemu+ssh://root@10.99.0.13:2/system"
  private_key = file("{key}")
  known_hosts = "{kh}"
}}
network "lan" {{
  host   = host.a
  bridge = "vfflk{pid}"
}}
{extra}"#,
        key = lab_dir().join("id_ed25519").display(),
        known = known_hosts.display(),
        kh = lab_dir().join("known_hosts").display(),
        pid = std::process::id()
    )
}

#[test]
fn a_host_key_mismatch_and_an_unreachable_host_are_refused_before_anything_runs() {
    // It compares vflab-a's links before and after: no other lab test may change them meanwhile.
    let _one = lab_guests();
    let s = VfStack::new("a_host_key_mismatch_and_an_unreachable_host_are_refused_before_anything_runs", "flk");
    let a = lab("vflab-a");
    let before = sh(&a, &["ip", "-br", "link"]);
    // A known_hosts with another key for 10.99.0.11.
    let kdir = tempdir("vf-flk-keys-");
    let k = kdir.path().join("k");
    let keygen = run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", k.to_str().unwrap()]);
    assert!(keygen.ok(), "{}", keygen.show());
    let public = std::fs::read_to_string(k.with_extension("pub")).unwrap();
    let wrong = kdir.path().join("known_hosts");
    let mut line = public.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    line.insert_str(0, "10.99.0.11 ");
    std::fs::write(&wrong, line + "\n").unwrap();
    s.write(&gone_hcl(&wrong, ""));
    for cmd in [&["plan"][..], &["apply", "--auto-approve"][..]] {
        let out = s.vf(cmd);
        assert_eq!(out.code, Some(1), "{cmd:?}: {}", out.show());
        let e = &out.stderr;
        assert!(e.contains("host.a (qemu+ssh://root@10.99.0.11/system): cannot connect over SSH"), "{cmd:?}: {}", out.show());
        assert!(e.contains(&wrong.display().to_string()) || e.to_lowercase().contains("host key"), "{cmd:?}: names the key problem: {}", out.show());
        assert!(e.contains("host.gone (qemu+ssh://root@10.99.0.13:2/system): cannot connect over SSH"), "{cmd:?}: {}", out.show());
        assert!(e.contains("nothing was planned or changed on any host"), "{cmd:?}: {}", out.show());
        assert!(!e.contains("BEGIN OPENSSH"), "{e}");
    }
    assert_eq!(sh(&a, &["ip", "-br", "link"]), before, "something changed on vflab-a");

    // With --target on host.a's resources, the run goes on without the
    // unreachable host (and says so); a target there is still refused.
    let pid = std::process::id();
    s.write(&gone_hcl(&lab_dir().join("known_hosts"), &format!("network \"far\" {{\n  host   = host.gone\n  bridge = \"vfflf{pid}\"\n}}\n")));
    let out = s.vf(&["plan", "--target", "network.lan"]);
    assert_eq!(out.code, Some(0), "{}", out.show());
    assert!(out.stdout.contains("# network.lan will be created") && !out.stdout.contains("network.far"), "{}", out.show());
    assert!(out.stderr.contains("warning: host.gone (qemu+ssh://root@10.99.0.13:2/system): cannot connect over SSH") && out.stderr.contains("host.gone is left out of this run: --target reaches nothing on it"), "{}", out.show());
    for cmd in [&["plan", "--target", "network.far"][..], &["plan"][..]] {
        let out = s.vf(cmd);
        assert_eq!(out.code, Some(1), "{cmd:?}: {}", out.show());
        assert!(out.stderr.contains("host.gone (qemu+ssh://root@10.99.0.13:2/system): cannot connect over SSH") && out.stderr.contains("nothing was planned or changed on any host"), "{cmd:?}: {}", out.show());
    }
    let out = s.vf(&["apply", "--auto-approve", "--target", "network.lan"]);
    assert!(out.ok() && out.stdout.contains(&format!("create bridge vfflk{pid} on host.a")), "{}", out.show());
    assert!(sh(&a, &["ip", "-br", "link"]).contains(&format!("vfflk{pid}")), "the targeted bridge is not on vflab-a");
    let out = s.vf(&["destroy", "--auto-approve", "--target", "network.lan"]);
    assert!(out.ok(), "{}", out.show());
    assert_eq!(sh(&a, &["ip", "-br", "link"]), before, "the targeted bridge is left on vflab-a");
    // A run without the configuration cannot reach host.a, which the stack
    // used (its record says so): refused. The teardown (VfStack's drop)
    // destroys with host.a declared.
    std::fs::remove_file(s.cfg.path().join("main.vf.hcl")).unwrap();
    let out = s.vf(&["destroy", "--auto-approve"]);
    assert_eq!(out.code, Some(1), "{}", out.show());
    assert!(out.stderr.contains("host.a (qemu+ssh://root@10.99.0.11/system) has objects of stack") && out.stderr.contains("run it with the configuration that declares host.a"), "{}", out.show());
    s.write(&some_hosts_hcl(&["a"], ""));
}

/// An overlay over `hosts` with a tiny guest on host.a and host.b, each
/// pinging the other's overlay address.
fn overlay_hcl(vni: u32, hosts: &str) -> String {
    format!(
        r#"{all}
variable "assets" {{ type = string }}
network "tenant" {{
  type   = "overlay"
  hosts  = [{hosts}]
  vni    = {vni}
  subnet = "10.60.0.0/24"
}}
locals {{
  placed = {{
    a = {{ host = host.a, ip = "10.60.0.11", peer = "10.60.0.12" }}
    b = {{ host = host.b, ip = "10.60.0.12", peer = "10.60.0.11" }}
  }}
}}
image "tiny" {{ source = "${{var.assets}}/tiny.qcow2" }}
disk "root" {{
  for_each = local.placed
  image    = image.tiny
}}
port "eth0" {{
  for_each = local.placed
  network  = network.tenant
  ip       = each.value.ip
}}
instance "web" {{
  for_each = local.placed
  host     = each.value.host
  memory   = "128M"
  kernel   = "${{var.assets}}/vmlinuz"
  initrd   = "${{var.assets}}/initrd.gz"
  cmdline  = "console=ttyS0 vf.ip=${{each.value.ip}}/24 vf.ping=${{each.value.peer}} vf.pingwait=120"
  disks    = [disk.root[each.key]]
  ports    = [port.eth0[each.key]]
  wait_for {{
    console = "VF-READY"
    timeout = "300s"
  }}
}}
"#,
        all = hosts_hcl(&lab_dir().join("known_hosts"))
    )
}

/// A guest's console log on a lab host, read until it holds `needle` (or
/// `secs` passed): what it last held.
fn console_until(x: &Executor, log: &str, needle: &str, secs: u64) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let console = sh(x, &["cat", log]);
        if console.contains(needle) || std::time::Instant::now() >= deadline {
            return console;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Each guest of an overlay test pinging the other's overlay address.
fn assert_pings(stack: &str, guests: &[(&Executor, &str, &str)]) {
    for (x, key, peer) in guests {
        let console = console_until(x, &format!("/var/lib/virtform/{stack}/console/web@{key}.log"), &format!("VF-PING {peer} "), 150);
        assert!(console.contains(&format!("VF-PING {peer} ok")), "the guest on vflab-{key} could not ping {peer} over the overlay:\n{console}");
    }
}

/// The destinations of a VXLAN device's flood entries on a lab host, sorted.
fn peers(x: &Executor, dev: &str) -> Vec<String> {
    let mut p: Vec<String> = sh(x, &["bridge", "fdb", "show", "dev", dev])
        .lines()
        .filter(|l| l.starts_with("00:00:00:00:00:00 dst "))
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    p.sort();
    p
}

#[test]
fn an_overlay_joins_guests_on_two_hosts_and_a_third_host_changes_only_its_tunnels() {
    let _one = lab_guests();
    let s = VfStack::new("an_overlay_joins_guests_on_two_hosts_and_a_third_host_changes_only_its_tunnels", "fov");
    let (a, b, c) = (lab("vflab-a"), lab("vflab-b"), lab("vflab-c"));
    let vni = 6000 + std::process::id() % 1000;
    let vx = format!("vx{vni}");
    s.write(&overlay_hcl(vni, "host.a, host.b"));
    let plan = s.vf(&["plan"]);
    assert!(plan.ok(), "{}", plan.show());
    assert!(plan.stdout.contains("+ tunnel = {\"local\":\"10.99.0.11\",\"peers\":[\"10.99.0.12\"]}"), "host.a's tunnel in the plan:\n{}", plan.show());
    let out = s.vf_within(&["apply", "--auto-approve"], Duration::from_secs(600));
    assert!(out.ok() && out.stdout.contains("Apply complete"), "{}", out.show());
    assert!(out.stdout.contains(&format!("create overlay bridge {}", "vf")) && out.stdout.contains(&format!("with tunnel {vx} (VNI {vni}) on host.a")), "{}", out.show());

    // One L2 segment: each guest pings the other across the underlay.
    assert_pings(&s.stack, &[(&a, "a", "10.60.0.12"), (&b, "b", "10.60.0.11")]);
    for (x, key) in [(&a, "a"), (&b, "b")] {
        // The tunnel: VNI, local address, the other host as its one flood entry, MTU lowered.
        let link = sh(x, &["ip", "-d", "link", "show", &vx]);
        let local = if key == "a" { "10.99.0.11" } else { "10.99.0.12" };
        assert!(link.contains(&format!("vxlan id {vni} local {local}")) && link.contains("mtu 1450") && link.contains("master vf"), "{vx} on vflab-{key}: {link}");
        let other = if key == "a" { "10.99.0.12" } else { "10.99.0.11" };
        assert_eq!(peers(x, &vx), [other], "flood entries on vflab-{key}");
        // The guest's NIC gets the overlay's MTU.
        let xml = sh(x, &["virsh", "-c", "qemu:///system", "dumpxml", &format!("{}-web-{key}", s.stack)]);
        assert!(xml.contains("<mtu size='1450'/>"), "no MTU on the NIC of the guest on vflab-{key}:\n{xml}");
    }
    assert!(!sh(&c, &["ip", "-br", "link"]).contains(&vx), "a tunnel on vflab-c, which the overlay does not span");
    let again = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, Some(0), "not converged:\n{}", again.show());

    // A third host: it gets the overlay; the other two get one flood entry each; no guest is touched.
    let ids = |x: &Executor, key: &str| sh(x, &["virsh", "-c", "qemu:///system", "domid", &format!("{}-web-{key}", s.stack)]);
    let (id_a, id_b) = (ids(&a, "a"), ids(&b, "b"));
    s.write(&overlay_hcl(vni, "host.a, host.b, host.c"));
    let plan = s.vf(&["plan"]);
    assert!(plan.ok(), "{}", plan.show());
    for want in ["~ peers = \"10.99.0.12\" -> \"10.99.0.12, 10.99.0.13\"", "~ peers = \"10.99.0.11\" -> \"10.99.0.11, 10.99.0.13\"", "Fleet of 4 hosts: Plan: 1 to add, 2 to change, 0 to destroy"] {
        assert!(plan.stdout.contains(want), "missing {want:?} in:\n{}", plan.show());
    }
    let out = s.vf(&["apply", "--auto-approve"]);
    assert!(out.ok(), "{}", out.show());
    assert_eq!(peers(&a, &vx), ["10.99.0.12", "10.99.0.13"]);
    assert_eq!(peers(&b, &vx), ["10.99.0.11", "10.99.0.13"]);
    assert_eq!(peers(&c, &vx), ["10.99.0.11", "10.99.0.12"]);
    assert_eq!((ids(&a, "a"), ids(&b, "b")), (id_a.clone(), id_b.clone()), "a guest was restarted");

    // And out again: host.c's tunnel goes, the others lose one entry.
    s.write(&overlay_hcl(vni, "host.a, host.b"));
    let out = s.vf(&["apply", "--auto-approve"]);
    assert!(out.ok() && out.stdout.contains(&format!("delete overlay {vx} and vf")) && out.stdout.contains("on host.c"), "{}", out.show());
    assert!(!sh(&c, &["ip", "-br", "link"]).contains(&vx), "the tunnel is left on vflab-c");
    assert_eq!(peers(&a, &vx), ["10.99.0.12"]);
    assert_eq!((ids(&a, "a"), ids(&b, "b")), (id_a, id_b), "a guest was restarted");

    let d = s.vf(&["destroy", "--auto-approve"]);
    assert!(d.ok() && d.stdout.contains("Destroy complete"), "{}", d.show());
    for (x, key) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let links = sh(x, &["ip", "-br", "link"]);
        assert!(!links.contains(&vx) && !links.contains("-tenant"), "links left on vflab-{key}: {links}");
        assert!(!sh(x, &["virsh", "-c", "qemu:///system", "list", "--all", "--name"]).contains(&s.stack), "domain left on vflab-{key}");
    }
    uncache_tiny();
}

/// The overlay of [`overlay_hcl`] built of Open vSwitch VXLAN ports on the
/// userspace datapath, tunnelled over the lab's second underlay (each
/// host's br-phy address, 10.98.0.11-13, as its `tunnel_ip`).
fn ovs_overlay_hcl(vni: u32, hosts: &str) -> String {
    let mut s = overlay_hcl(vni, hosts).replace("  subnet = \"10.60.0.0/24\"\n", "  subnet = \"10.60.0.0/24\"\n  backend = \"ovs\"\n  datapath_type = \"netdev\"\n");
    for (h, ip) in [("a", "10.98.0.11"), ("b", "10.98.0.12"), ("c", "10.98.0.13")] {
        let uri = format!("  uri         = \"qemu+ssh://root@10.99.0.{}/system\"\n", 10 + (h.as_bytes()[0] - b'a' + 1));
        s = s.replace(&uri, &format!("{uri}  tunnel_ip   = \"{ip}\"\n"));
    }
    s
}

/// `ovs-vsctl` on a lab host, its output.
fn vsctl(x: &Executor, args: &[&str]) -> String {
    let mut argv = vec!["ovs-vsctl", "--timeout=10"];
    argv.extend_from_slice(args);
    sh(x, &argv)
}

/// The VXLAN ports of an OVS bridge on a lab host: (name, remote_ip), sorted.
fn ovs_tunnels(x: &Executor, br: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vsctl(x, &["list-ports", br])
        .lines()
        .filter(|p| vsctl(x, &["get", "Interface", p, "type"]).trim() == "vxlan")
        .map(|p| (p.to_string(), vsctl(x, &["get", "Interface", p, "options:remote_ip"]).trim().trim_matches('"').to_string()))
        .collect();
    out.sort();
    out
}

#[test]
fn an_ovs_overlay_joins_guests_on_two_hosts_by_vxlan_ports_and_a_third_host_changes_only_its_tunnels() {
    let _one = lab_guests();
    let s = VfStack::new("an_ovs_overlay_joins_guests_on_two_hosts_by_vxlan_ports_and_a_third_host_changes_only_its_tunnels", "fox");
    let (a, b, c) = (lab("vflab-a"), lab("vflab-b"), lab("vflab-c"));
    let vni = 9000 + std::process::id() % 1000;
    let port = |peer: &str| virtform::model::network::ovs_tunnel_port(vni, peer.parse().unwrap());
    s.write(&ovs_overlay_hcl(vni, "host.a, host.b"));
    let out = s.vf_within(&["apply", "--auto-approve"], Duration::from_secs(600));
    assert!(out.ok() && out.stdout.contains("Apply complete"), "{}", out.show());
    assert!(out.stdout.contains(&format!("with VXLAN ports to 10.98.0.12 (VNI {vni}) on host.a")), "{}", out.show());
    let br = vsctl(&a, &["list-br"]).lines().find(|l| l.ends_with("-tenant")).unwrap_or_else(|| panic!("no OVS bridge of the overlay on vflab-a: {}", out.show())).to_string();

    // One L2 segment through OVS: each guest pings the other.
    assert_pings(&s.stack, &[(&a, "a", "10.60.0.12"), (&b, "b", "10.60.0.11")]);
    for (x, key, me, other) in [(&a, "a", "10.98.0.11", "10.98.0.12"), (&b, "b", "10.98.0.12", "10.98.0.11")] {
        assert_eq!(ovs_tunnels(x, &br), [(port(other), other.to_string())], "tunnel ports on vflab-{key}");
        let opts = vsctl(x, &["get", "Interface", &port(other), "options"]);
        assert!(opts.contains(&format!("key=\"{vni}\"")) && opts.contains(&format!("local_ip=\"{me}\"")), "options on vflab-{key}: {opts}");
        assert_eq!(vsctl(x, &["get", "Bridge", &br, "datapath_type"]).trim(), "netdev");
        // The guest's tap is on the overlay's bridge, with its MTU.
        let xml = virsh(x, &["dumpxml", &format!("{}-web-{key}", s.stack)]);
        assert!(xml.contains("<virtualport type='openvswitch'>") && xml.contains(&format!("<source bridge='{br}'/>")) && xml.contains("<mtu size='1450'/>"), "the NIC of the guest on vflab-{key}:\n{xml}");
    }
    assert!(!vsctl(&c, &["list-br"]).contains(&br), "the overlay's bridge on vflab-c, which it does not span");
    let again = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, Some(0), "not converged:\n{}", again.show());

    // A third host: it gets the overlay; the others get one port each; no guest is touched.
    let ids = |x: &Executor, key: &str| virsh(x, &["domid", &format!("{}-web-{key}", s.stack)]);
    let (id_a, id_b) = (ids(&a, "a"), ids(&b, "b"));
    s.write(&ovs_overlay_hcl(vni, "host.a, host.b, host.c"));
    let plan = s.vf(&["plan"]);
    for want in ["~ peers = \"10.98.0.12\" -> \"10.98.0.12, 10.98.0.13\"", "Fleet of 4 hosts: Plan: 1 to add, 2 to change, 0 to destroy"] {
        assert!(plan.stdout.contains(want), "missing {want:?} in:\n{}", plan.show());
    }
    let out = s.vf(&["apply", "--auto-approve"]);
    assert!(out.ok(), "{}", out.show());
    assert_eq!(ovs_tunnels(&a, &br), [(port("10.98.0.12"), "10.98.0.12".into()), (port("10.98.0.13"), "10.98.0.13".into())]);
    assert_eq!(ovs_tunnels(&c, &br), [(port("10.98.0.11"), "10.98.0.11".into()), (port("10.98.0.12"), "10.98.0.12".into())]);
    assert_eq!((ids(&a, "a"), ids(&b, "b")), (id_a.clone(), id_b.clone()), "a guest was restarted");
    // A tunnel port deleted by hand is drift; the next apply puts it back.
    vsctl(&b, &["del-port", &br, &port("10.98.0.11")]);
    let plan = s.vf(&["plan"]);
    assert!(plan.stdout.contains("~ peers = \"10.98.0.13\" -> \"10.98.0.11, 10.98.0.13\""), "{}", plan.show());
    assert!(s.vf(&["apply", "--auto-approve"]).ok());
    assert_eq!(ovs_tunnels(&b, &br).len(), 2);

    // And out again: host.c's bridge goes with its ports, the others lose one port.
    s.write(&ovs_overlay_hcl(vni, "host.a, host.b"));
    let out = s.vf(&["apply", "--auto-approve"]);
    assert!(out.ok() && out.stdout.contains(&format!("delete Open vSwitch bridge {br} on host.c")), "{}", out.show());
    assert!(!vsctl(&c, &["list-br"]).contains(&br) && !vsctl(&c, &["show"]).contains(&port("10.98.0.11")), "left on vflab-c: {}", vsctl(&c, &["show"]));
    assert_eq!(ovs_tunnels(&a, &br), [(port("10.98.0.12"), "10.98.0.12".into())]);
    assert_eq!((ids(&a, "a"), ids(&b, "b")), (id_a, id_b), "a guest was restarted");

    let d = s.vf(&["destroy", "--auto-approve"]);
    assert!(d.ok() && d.stdout.contains("Destroy complete"), "{}", d.show());
    for (x, key) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let show = vsctl(x, &["show"]);
        assert!(!show.contains(&br) && !show.contains(&format!("v{vni:06x}")), "OVS objects left on vflab-{key}: {show}");
        assert!(!virsh(x, &["list", "--all", "--name"]).contains(&s.stack), "domain left on vflab-{key}");
    }
    uncache_tiny();
}

/// One guest on `at` (its volume written at boot) on an overlay over the
/// three hosts; with `probe`, a second guest on host.c pings it.
fn migrate_hcl(vni: u32, at: &str, probe: bool) -> String {
    let probe = if probe {
        r#"
disk "probe" { image = image.tiny }
port "probe" {
  network = network.tenant
  ip      = "10.60.0.29"
}
instance "probe" {
  host    = host.c
  memory  = "128M"
  kernel  = "${var.assets}/vmlinuz"
  initrd  = "${var.assets}/initrd.gz"
  cmdline = "console=ttyS0 vf.ip=10.60.0.29/24 vf.ping=10.60.0.21 vf.pingwait=120"
  disks   = [disk.probe]
  ports   = [port.probe]
  wait_for {
    console = "VF-READY"
    timeout = "300s"
  }
}
"#
    } else {
        ""
    };
    format!(
        r#"{all}
variable "assets" {{ type = string }}
network "tenant" {{
  type   = "overlay"
  hosts  = [host.a, host.b, host.c]
  vni    = {vni}
  subnet = "10.60.0.0/24"
}}
image "tiny" {{ source = "${{var.assets}}/tiny.qcow2" }}
disk "root" {{ image = image.tiny }}
volume "data" {{
  size   = "16M"
  format = "raw"
}}
port "eth0" {{
  network = network.tenant
  ip      = "10.60.0.21"
}}
instance "web" {{
  host    = host.{at}
  memory  = "128M"
  kernel  = "${{var.assets}}/vmlinuz"
  initrd  = "${{var.assets}}/initrd.gz"
  cmdline = "console=ttyS0 vf.ip=10.60.0.21/24 vf.volwrite=data:kept-across-hosts"
  disks   = [disk.root]
  volumes = [volume.data]
  ports   = [port.eth0]
  wait_for {{
    console = "VF-READY"
    timeout = "300s"
  }}
}}
{probe}"#,
        all = hosts_hcl(&lab_dir().join("known_hosts"))
    )
}

/// The lines of `virsh` on a lab host.
fn virsh(x: &Executor, args: &[&str]) -> String {
    let mut argv = vec!["virsh", "-c", "qemu:///system"];
    argv.extend_from_slice(args);
    sh(x, &argv)
}

#[test]
fn a_guest_whose_host_changes_migrates_live_keeping_its_uuid_mac_ip_and_data_leaving_nothing_behind() {
    let _one = lab_guests();
    let s = VfStack::new("a_guest_whose_host_changes_migrates_live_keeping_its_uuid_mac_ip_and_data_leaving_nothing_behind", "fmg");
    let (a, b, c) = (lab("vflab-a"), lab("vflab-b"), lab("vflab-c"));
    let vni = 7000 + std::process::id() % 1000;
    let dom = format!("{}-web", s.stack);
    s.write(&migrate_hcl(vni, "a", false));
    let out = s.vf_within(&["apply", "--auto-approve"], Duration::from_secs(600));
    assert!(out.ok(), "{}", out.show());
    let log = format!("/var/lib/virtform/{}/console/web.log", s.stack);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !sh(&a, &["cat", &log]).contains("VF-VOLWRITE data kept-across-hosts") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(sh(&a, &["cat", &log]).contains("VF-VOLWRITE data kept-across-hosts ok"), "the guest did not write its volume:\n{}", sh(&a, &["cat", &log]));
    let uuid = virsh(&a, &["domuuid", &dom]).trim().to_string();
    let mac = virsh(&a, &["domiflist", &dom]).lines().find_map(|l| l.split_whitespace().find(|w| w.starts_with("52:54:")).map(str::to_string)).expect("a MAC");

    // The host changes: the plan says migrate, on both hosts.
    s.write(&migrate_hcl(vni, "b", false));
    let plan = s.vf(&["plan"]);
    assert!(plan.ok(), "{}", plan.show());
    for want in ["# instance.web will migrate live from host.a to host.b", "~ host = \"host.a\" -> \"host.b\"", "# instance.web will migrate live from here to host.b", "Fleet of 4 hosts: Plan: 1 to migrate, 3 to add, 0 to change, 2 to destroy"] {
        assert!(plan.stdout.contains(want), "missing {want:?} in:\n{}", plan.show());
    }
    // A migration that fails (host.b's virtlogd cannot open the guest's
    // console log there: a directory holds its path) leaves the guest
    // running on host.a with its files, and the next plan says so.
    let blocker = format!("/var/lib/virtform/{}/console/web.log", s.stack);
    let _ = sh(&b, &["mkdir", "-p", &blocker]);
    let out = s.vf_within(&["apply", "--auto-approve"], Duration::from_secs(600));
    assert_eq!(out.code, Some(1), "the migration should have failed:\n{}", out.show());
    assert!(out.stdout.contains(&format!("migrate domain {dom} live from host.a on host.b")) && out.stdout.contains("failed"), "{}", out.show());
    assert!(virsh(&a, &["domstate", &dom]).contains("running"), "{dom} is not running on vflab-a after a failed migration");
    assert!(!virsh(&b, &["list", "--all", "--name"]).contains(&dom), "{dom} is on vflab-b after a failed migration");
    assert!(sh(&a, &["ls", &format!("/var/lib/virtform/{}/disks", s.stack)]).contains("root.qcow2"), "the disk went from vflab-a before the guest left");
    let plan = s.vf(&["plan"]);
    assert!(plan.stdout.contains("# instance.web will migrate live from host.a to host.b"), "{}", plan.show());
    let _ = sh(&b, &["rmdir", "--", &blocker]);
    let out = s.vf_within(&["apply", "--auto-approve"], Duration::from_secs(600));
    assert!(out.ok() && out.stdout.contains(&format!("migrate domain {dom} live from host.a on host.b")), "{}", out.show());
    // On host.b, the same guest: running, same UUID and MAC, its volume's data with it.
    assert!(virsh(&b, &["domstate", &dom]).contains("running"), "{dom} is not running on vflab-b");
    assert_eq!(virsh(&b, &["domuuid", &dom]).trim(), uuid, "the UUID changed");
    assert!(virsh(&b, &["domiflist", &dom]).contains(&mac), "the MAC changed");
    let vol = sh(&b, &["find", &format!("/var/lib/virtform/{}/volumes", s.stack), "-type", "f"]);
    let vol = vol.lines().next().unwrap_or_else(|| panic!("no volume file on vflab-b"));
    assert!(sh(&b, &["head", "-c", "64", vol]).starts_with("kept-across-hosts"), "the volume's data did not move with the guest");
    // Nothing of it on host.a: no domain, no files.
    assert!(!virsh(&a, &["list", "--all", "--name"]).contains(&dom), "{dom} is left on vflab-a");
    // Not even its empty directories: the stack's directory is gone there.
    let left = sh(&a, &["find", &format!("/var/lib/virtform/{}", s.stack)]);
    assert!(left.contains("No such file or directory") && left.lines().count() == 1, "left on vflab-a: {left}");
    let again = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, Some(0), "not converged after the migration:\n{}", again.show());

    // It answers on its IP at its new host: a guest on host.c pings it over the overlay.
    s.write(&migrate_hcl(vni, "b", true));
    let out = s.vf_within(&["apply", "--auto-approve"], Duration::from_secs(600));
    assert!(out.ok(), "{}", out.show());
    let console = console_until(&c, &format!("/var/lib/virtform/{}/console/probe.log", s.stack), "VF-PING 10.60.0.21 ", 150);
    assert!(console.contains("VF-PING 10.60.0.21 ok"), "the migrated guest does not answer on 10.60.0.21:\n{console}");

    let d = s.vf(&["destroy", "--auto-approve"]);
    assert!(d.ok() && d.stdout.contains("Destroy complete"), "{}", d.show());
    for (x, key) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        assert!(!virsh(x, &["list", "--all", "--name"]).contains(&s.stack), "domain left on vflab-{key}");
        assert!(sh(x, &["ls", "-a", "/var/lib/virtform"]).lines().all(|l| l != s.stack), "stack dir left on vflab-{key}");
        assert!(!sh(x, &["ip", "-br", "link"]).contains(&format!("vx{vni}")), "tunnel left on vflab-{key}");
    }
    uncache_tiny();
}

#[test]
fn a_host_lost_in_the_middle_of_an_apply_fails_its_steps_only_and_the_next_apply_converges() {
    let _one = lab_guests();
    let s = VfStack::new("a_host_lost_in_the_middle_of_an_apply_fails_its_steps_only_and_the_next_apply_converges", "flo");
    let (a, c) = (lab("vflab-a"), lab("vflab-c"));
    let pid = std::process::id();
    // host.a's guest is ready in seconds; host.c's prints VF-READY only
    // after pinging an address nobody has for 40 s: the apply is still
    // waiting on host.c when host.c goes.
    s.write(&format!(
        r#"{hosts}
variable "assets" {{ type = string }}
locals {{
  placed = {{
    a = {{ host = host.a, extra = "" }}
    c = {{ host = host.c, extra = " vf.ping=10.61.0.99 vf.pingwait=40" }}
  }}
}}
network "lan" {{
  for_each = local.placed
  host     = each.value.host
  bridge   = "vflo{pid}${{each.key}}"
  address  = "10.61.0.1/24"
}}
image "tiny" {{ source = "${{var.assets}}/tiny.qcow2" }}
disk "root" {{
  for_each = local.placed
  image    = image.tiny
}}
port "eth0" {{
  for_each = local.placed
  network  = network.lan[each.key]
  ip       = "10.61.0.10"
}}
instance "web" {{
  for_each = local.placed
  host     = each.value.host
  memory   = "128M"
  kernel   = "${{var.assets}}/vmlinuz"
  initrd   = "${{var.assets}}/initrd.gz"
  cmdline  = "console=ttyS0 vf.ip=10.61.0.10/24${{each.value.extra}}"
  disks    = [disk.root[each.key]]
  ports    = [port.eth0[each.key]]
  wait_for {{
    console = "VF-READY"
    timeout = "300s"
  }}
}}
"#,
        hosts = hosts_hcl(&lab_dir().join("known_hosts"))
    ));
    let dom_c = format!("{}-web-c", s.stack);
    let link = "vflab-c0"; // host.c's end of the underlay, in this namespace
    let out = std::thread::scope(|t| {
        let apply = t.spawn(|| s.vf_within(&["apply", "--auto-approve"], Duration::from_secs(600)));
        // host.c's guest runs: the apply is in its wait. Then host.c goes.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !sh(&c, &["virsh", "-c", "qemu:///system", "domstate", &dom_c]).contains("running") && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
        let down = run("ip", &["link", "set", link, "down"]);
        let out = apply.join().unwrap();
        let up = run("ip", &["link", "set", link, "up"]);
        assert!(down.ok() && up.ok(), "{}{}", down.show(), up.show());
        out
    });
    assert_eq!(out.code, Some(1), "the apply should fail on host.c:\n{}", out.show());
    assert!(out.stdout.contains("Failed") && out.stdout.contains("on host.c"), "the report names host.c's failed step:\n{}", out.show());
    // host.a's steps finished: its guest booted.
    assert!(out.stdout.contains(&format!("wait for \"VF-READY\" on the console of {}-web-a on host.a", s.stack)), "{}", out.show());
    assert!(sh(&a, &["cat", &format!("/var/lib/virtform/{}/console/web@a.log", s.stack)]).contains("VF-READY"));
    assert!(out.stderr.contains("run `virtform plan` to see what remains"), "{}", out.show());

    // host.c is back: the next apply converges, nothing duplicated.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while run("ping", &["-c", "1", "-W", "1", "10.99.0.13"]).code != Some(0) && std::time::Instant::now() < deadline {}
    let c = lab("vflab-c");
    let out = s.vf_within(&["apply", "--auto-approve"], Duration::from_secs(600));
    assert!(out.ok() && out.stdout.contains("Apply complete"), "{}", out.show());
    assert!(!out.stdout.contains("define domain"), "a domain was defined again:\n{}", out.show());
    // The lost run's lock on host.c may have outlived it there (when
    // host.c's sshd never saw its connection close; when the connection's
    // close reached it after the link came back, the lock went with it):
    // either this run ended that holder, saying so, or it found the lock
    // free. No holder is left either way.
    let noted = out.stderr.contains("was held by a virtform run on this machine that is gone");
    eprintln!("[e2e] the lost run's lock {} on host.c", if noted { "outlived it and was ended" } else { "was gone" });
    assert!(!out.stderr.contains("waiting for the lock") || noted, "{}", out.show());
    let lock = format!("/var/lib/virtform/{}/.lock", s.stack);
    assert!(!sh(&c, &["pgrep", "-a", "-f", "--", &format!("^flock -n -E 75 {lock} ")]).contains("flock"), "a lock holder is left on host.c");
    let again = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, Some(0), "not converged:\n{}", again.show());
    assert_eq!(sh(&c, &["virsh", "-c", "qemu:///system", "list", "--all", "--name"]).lines().filter(|l| l.contains(&s.stack)).count(), 1, "host.c holds one domain of the stack");

    let d = s.vf(&["destroy", "--auto-approve"]);
    assert!(d.ok() && d.stdout.contains("Destroy complete"), "{}", d.show());
    for (x, key) in [(&a, "a"), (&c, "c")] {
        assert!(!sh(x, &["virsh", "-c", "qemu:///system", "list", "--all", "--name"]).contains(&s.stack), "domain left on vflab-{key}");
        assert!(!sh(x, &["ip", "-br", "link"]).contains(&format!("vflo{pid}")), "bridge left on vflab-{key}");
        assert!(sh(x, &["ls", "-a", "/var/lib/virtform"]).lines().all(|l| l != s.stack), "stack dir left on vflab-{key}");
    }
    uncache_tiny();
}

/// host.a and host.b (keys checked against the lab's known_hosts) as
/// `blocks` names them, then `extra`.
fn some_hosts_hcl(blocks: &[&str], extra: &str) -> String {
    let key = lab_dir().join("id_ed25519");
    let kh = lab_dir().join("known_hosts");
    let mut s = String::from("variable \"assets\" { type = string }\n");
    for h in blocks {
        let ip = if *h == "a" { "10.99.0.11" } else { "10.99.0.12" };
        s.push_str(&format!("host \"{h}\" {{\n  uri         = \"qemu+ssh://root@{ip}/system\"\n  private_key = file(\"{}\")\n  known_hosts = \"{}\"\n}}\n", key.display(), kh.display()));
    }
    s + extra
}

/// A host block removed while the stack has objects there: the plan is
/// refused (it cannot reach the host to delete them, and "no changes"
/// would be a lie) until the block is back, with nothing on it (the plan
/// deletes them), or the host is forgotten with `removed`.
#[test]
fn a_host_block_removed_with_objects_on_its_host_refuses_the_plan_until_it_is_back_or_forgotten() {
    let _one = lab_guests();
    let s = VfStack::new("a_host_block_removed_with_objects_on_its_host_refuses_the_plan_until_it_is_back_or_forgotten", "flr");
    let pid = std::process::id();
    let b = lab("vflab-b");
    let far_br = format!("vfflr{pid}b");
    let keep = format!("network \"keep\" {{\n  host   = host.a\n  bridge = \"vfflr{pid}a\"\n}}\n");
    // depends_on across hosts orders the two hosts' steps.
    let far = format!("network \"far\" {{\n  host       = host.b\n  bridge     = \"{far_br}\"\n  depends_on = [network.keep]\n}}\n");
    let on_b = || sh(&b, &["ip", "-br", "link", "show", "dev", &far_br]).starts_with(&far_br);
    s.write(&some_hosts_hcl(&["a", "b"], &(keep.clone() + &far)));
    let out = s.vf(&["apply", "--auto-approve"]);
    assert!(out.ok() && on_b(), "{}", out.show());
    let (made_a, made_b) = (out.stdout.find(&format!("create bridge vfflr{pid}a on host.a")), out.stdout.find(&format!("create bridge {far_br} on host.b")));
    assert!(made_a.is_some() && made_a < made_b, "network.far (host.b) depends on network.keep (host.a): {}", out.show());
    let record = s.state.path().join(&s.stack).join("hosts.json");
    let text = std::fs::read_to_string(&record).unwrap_or_default();
    assert!(text.contains("\"host.a\"") && text.contains("\"host.b\": \"qemu+ssh://root@10.99.0.12/system\""), "{text}");

    // host.b's block and its network gone: refused, nothing changed.
    s.write(&some_hosts_hcl(&["a"], &keep));
    for cmd in [&["plan"][..], &["apply", "--auto-approve"][..], &["destroy", "--auto-approve"][..]] {
        let out = s.vf(cmd);
        assert_eq!(out.code, Some(1), "{cmd:?}: {}", out.show());
        assert!(out.stderr.contains("host.b (qemu+ssh://root@10.99.0.12/system) has objects of stack") && out.stderr.contains("Put its host block back"), "{cmd:?}: {}", out.show());
        assert!(out.stderr.contains("nothing was planned or changed on any host"), "{cmd:?}: {}", out.show());
    }
    assert!(on_b(), "the bridge on vflab-b was touched");

    // The block back, with nothing on it: the plan deletes what is there.
    s.write(&some_hosts_hcl(&["a", "b"], &keep));
    let out = s.vf(&["apply", "--auto-approve"]);
    assert!(out.ok() && out.stdout.contains(&format!("delete bridge {far_br} on host.b")), "{}", out.show());
    assert!(!on_b(), "the bridge is left on vflab-b: {}", out.show());
    assert!(!std::fs::read_to_string(&record).unwrap_or_default().contains("host.b"), "host.b holds nothing now");
    // Then the block can go.
    s.write(&some_hosts_hcl(&["a"], &keep));
    let out = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.code, Some(0), "{}", out.show());

    // A host gone for good is forgotten with a removed block: its objects stay.
    s.write(&some_hosts_hcl(&["a", "b"], &(keep.clone() + &far)));
    assert!(s.vf(&["apply", "--auto-approve"]).ok() && on_b());
    s.write(&some_hosts_hcl(&["a"], &(keep.clone() + "removed {\n  from = host.b\n  lifecycle {\n    destroy = false\n  }\n}\n")));
    let out = s.vf(&["apply", "--auto-approve"]);
    assert!(out.ok() && out.stderr.contains("host.b (qemu+ssh://root@10.99.0.12/system) is forgotten"), "{}", out.show());
    assert!(on_b(), "a forgotten host's objects are left as they are");
    s.write(&some_hosts_hcl(&["a"], &keep));
    let out = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.code, Some(0), "forgotten for good: {}", out.show());
    // The test's own leftover, by its exact name.
    sh(&b, &["ip", "link", "del", "dev", &far_br]);
    assert!(!on_b());
}

/// A real Debian cloud guest on vflab-b, on a network only vflab-b has:
/// `wait_for { ssh, cloud_init }` log in through host.b's SSH master (the
/// guest's host key checked as on this machine), `virtform ssh` reaches it
/// the same way, and destroy leaves nothing on vflab-b.
#[test]
fn a_real_guest_on_a_remote_host_is_waited_for_over_ssh_and_reached_by_virtform_ssh() {
    let _one = lab_guests();
    let image = assets_dir().join("debian-12-cloud.qcow2");
    assert!(image.is_file(), "the cloud image {} is missing: run scripts/build-cloud-image (scripts/test does)", image.display());
    // Declared before the stack: dropped after its destroy, which reads the key.
    let keys = tempdir("vf-flcloud-keys-");
    let s = VfStack::new("a_real_guest_on_a_remote_host_is_waited_for_over_ssh_and_reached_by_virtform_ssh", "fc");
    let key = keys.path().join("id_ed25519");
    run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-C", "e2e", "-f", key.to_str().unwrap()]).must();
    let pid = std::process::id();
    let b = lab("vflab-b");
    s.write(&format!(
        r#"{hosts}
variable "assets" {{ type = string }}
image "debian" {{ source = "{image}" }}
network "lan" {{
  host    = host.b
  bridge  = "vffc{pid}"
  address = "10.62.0.1/24"
}}
disk "root" {{
  image = image.debian
  size  = "4G"
}}
port "eth0" {{
  network = network.lan
  ip      = "10.62.0.10"
}}
instance "vm" {{
  host   = host.b
  memory = "1G"
  disks  = [disk.root]
  ports  = [port.eth0]
  cloud_init {{
    user_data = <<-EOT
    #cloud-config
    write_files:
      - path: /etc/vf-e2e
        content: "hello from vflab-b\n"
    EOT
  }}
  connection {{
    user        = "debian"
    private_key = file("{key}")
  }}
  wait_for {{
    ssh        = true
    cloud_init = true
    timeout    = "900s"
  }}
}}
"#,
        hosts = hosts_hcl(&lab_dir().join("known_hosts")),
        image = image.display(),
        key = key.display(),
    ));
    let dom = format!("{}-vm", s.stack);
    let t0 = std::time::Instant::now();
    let out = s.vf_within(&["apply", "--auto-approve"], Duration::from_secs(1200));
    let console = || sh(&b, &["tail", "-n", "40", &format!("/var/lib/virtform/{}/console/vm.log", s.stack)]);
    assert!(out.ok() && out.stdout.contains("Apply complete"), "{}\n--- console on vflab-b ---\n{}", out.show(), console());
    eprintln!("[e2e] fleet: a Debian guest on vflab-b up to SSH and cloud-init: {:.1}s", t0.elapsed().as_secs_f64());
    for step in [format!("wait for an SSH login as debian to {dom} on host.b"), format!("wait for cloud-init to finish in {dom} on host.b")] {
        assert!(out.stdout.contains(&step), "missing {step:?}:\n{}", out.show());
    }
    assert!(sh(&b, &["virsh", "-c", "qemu:///system", "domstate", &dom]).contains("running"), "{dom} is not running on vflab-b");

    // virtform ssh goes the same way, with the pinned host key.
    let o = s.ssh("instance.vm", &["cat", "/etc/vf-e2e"]);
    assert!(o.ok() && o.stdout.contains("hello from vflab-b"), "{}", o.show());
    let o = s.ssh("instance.vm", &["sh", "-c", "exit 7"]);
    assert_eq!(o.code, Some(7), "the remote status passes through: {}", o.show());
    let again = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, Some(0), "not converged:\n{}", again.show());

    let d = s.vf(&["destroy", "--auto-approve"]);
    assert!(d.ok() && d.stdout.contains("Destroy complete"), "{}", d.show());
    assert!(!sh(&b, &["virsh", "-c", "qemu:///system", "list", "--all", "--name"]).contains(&s.stack), "domain left on vflab-b");
    assert!(!sh(&b, &["ip", "-br", "link"]).contains(&format!("vffc{pid}")), "bridge left on vflab-b");
    assert!(sh(&b, &["ls", "-a", "/var/lib/virtform"]).lines().all(|l| l != s.stack), "stack dir left on vflab-b");
    // The cache copy of the image (kept by design) goes: the lab stays small.
    let sha = run("sha256sum", &[image.to_str().unwrap()]).stdout.split_whitespace().next().unwrap_or_default().to_string();
    assert_eq!(sha.len(), 64);
    let _ = sh(&b, &["rm", "-f", "--", &format!("/var/lib/virtform/images/{sha}")]);
}

/// A fleet's saved plan: `plan --out` holds every host's fingerprint;
/// `apply FILE` runs it as planned, and refuses (changing nothing on any
/// host) once a host has changed since, or when the file was edited.
#[test]
fn a_saved_fleet_plan_applies_as_planned_and_is_refused_once_a_host_changed() {
    let _one = lab_guests();
    let s = VfStack::new("a_saved_fleet_plan_applies_as_planned_and_is_refused_once_a_host_changed", "fls");
    let pid = std::process::id();
    let (a, b) = (lab("vflab-a"), lab("vflab-b"));
    let (br_a, br_b) = (format!("vffls{pid}a"), format!("vffls{pid}b"));
    let nets = format!("network \"x\" {{\n  host   = host.a\n  bridge = \"{br_a}\"\n}}\nnetwork \"y\" {{\n  host   = host.b\n  bridge = \"{br_b}\"\n}}\n");
    s.write(&some_hosts_hcl(&["a", "b"], &nets));
    let has = |x: &Executor, br: &str| sh(x, &["ip", "-br", "link", "show", "dev", br]).starts_with(br);
    let plans = tempdir("vf-fls-plans");
    let bin = env!("CARGO_BIN_EXE_virtform");
    let file = |n: &str| plans.path().join(n).display().to_string();

    let out = s.vf(&["plan", "--out", &file("create.plan")]);
    assert!(out.ok() && out.stdout.contains("Fleet of 3 hosts: Plan: 2 to add"), "{}", out.show());
    let text = std::fs::read_to_string(file("create.plan")).unwrap();
    for want in ["\"host.a\"", "\"host.b\"", "\"fingerprint\""] {
        assert!(text.contains(want), "{want} in the plan file:\n{text}");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(file("create.plan")).unwrap().permissions().mode() & 0o777, 0o600, "the plan file holds the variables: owner only");
    assert!(!has(&a, &br_a) && !has(&b, &br_b), "plan --out changed a host");

    let out = run(bin, &["--no-color", "apply", &file("create.plan")]);
    assert!(out.ok() && out.stdout.contains("Apply complete"), "{}", out.show());
    assert!(out.stdout.contains(&format!("create bridge {br_a} on host.a")) && out.stdout.contains(&format!("create bridge {br_b} on host.b")), "{}", out.show());
    assert!(has(&a, &br_a) && has(&b, &br_b));
    s.assert_plan_empty("after the saved fleet plan");

    // The same file again: both hosts changed since (their bridges exist).
    let out = run(bin, &["--no-color", "apply", &file("create.plan")]);
    assert_eq!(out.code, Some(1), "{}", out.show());
    assert!(out.stderr.contains("host.a (root@10.99.0.11) changed since this plan was made") && out.stderr.contains("nothing was changed on any host"), "{}", out.show());

    // A destroy plan, then host.b changed behind its back: refused, nothing goes.
    let out = s.vf(&["plan", "--destroy", "--out", &file("destroy.plan")]);
    assert!(out.ok() && out.stdout.contains("2 to destroy"), "{}", out.show());
    sh(&b, &["ip", "link", "set", "dev", &br_b, "down"]);
    sh(&b, &["ip", "link", "set", "dev", &br_b, "mtu", "1400"]);
    let out = run(bin, &["--no-color", "apply", &file("destroy.plan")]);
    assert_eq!(out.code, Some(1), "{}", out.show());
    assert!(out.stderr.contains("host.b (root@10.99.0.12) changed since this plan was made"), "{}", out.show());
    assert!(has(&a, &br_a) && has(&b, &br_b), "a refused plan removed a bridge");

    // An edited file is refused too; the fresh one destroys everything.
    s.vf(&["plan", "--destroy", "--out", &file("destroy.plan")]).must();
    let edited = std::fs::read_to_string(file("destroy.plan")).unwrap().replacen("\"delete\"", "\"create\"", 1);
    std::fs::write(file("edited.plan"), edited).unwrap();
    let out = run(bin, &["--no-color", "apply", &file("edited.plan")]);
    assert_eq!(out.code, Some(1), "{}", out.show());
    assert!(out.stderr.contains("is not what virtform plans now"), "{}", out.show());
    let out = run(bin, &["--no-color", "apply", &file("destroy.plan")]);
    assert!(out.ok() && out.stdout.contains("Destroy complete"), "{}", out.show());
    assert!(!has(&a, &br_a) && !has(&b, &br_b), "bridges left after the saved destroy plan");
}

/// One guest on host.a, its resources under `name`.
fn moved_hcl(name: &str, pid: u32, moves: bool) -> String {
    let moves = if moves {
        ["instance", "disk", "port", "network"].iter().map(|k| format!("moved {{\n  from = {k}.web\n  to   = {k}.{name}\n}}\n")).collect::<String>()
    } else {
        String::new()
    };
    some_hosts_hcl(
        &["a"],
        &format!(
            r#"network "{name}" {{
  host    = host.a
  address = "10.63.{octet}.1/24"
}}
image "tiny" {{ source = "${{var.assets}}/tiny.qcow2" }}
disk "{name}" {{ image = image.tiny }}
port "{name}" {{
  network = network.{name}
  ip      = "10.63.{octet}.10"
}}
instance "{name}" {{
  host    = host.a
  memory  = "128M"
  kernel  = "${{var.assets}}/vmlinuz"
  initrd  = "${{var.assets}}/initrd.gz"
  cmdline = "console=ttyS0"
  disks   = [disk.{name}]
  ports   = [port.{name}]
  wait_for {{
    console = "VF-READY"
    timeout = "300s"
  }}
}}
{moves}"#,
            octet = pid % 200 + 20
        ),
    )
}

/// A refactor of objects on a remote host: `moved` blocks rename a running
/// guest's resources, and the plan moves them on host.a (nothing created
/// or destroyed, the domain keeps running under its name and UUID); with
/// the blocks gone the plan stays empty.
#[test]
fn moved_blocks_move_a_running_guests_resources_on_a_remote_host_without_touching_it() {
    let _one = lab_guests();
    let s = VfStack::new("moved_blocks_move_a_running_guests_resources_on_a_remote_host_without_touching_it", "flm");
    let pid = std::process::id();
    let a = lab("vflab-a");
    s.write(&moved_hcl("web", pid, false));
    let out = s.vf(&["apply", "--auto-approve"]);
    assert!(out.ok(), "{}", out.show());
    let dom = format!("{}-web", s.stack);
    let uuid = sh(&a, &["virsh", "-c", "qemu:///system", "domuuid", &dom]).trim().to_string();
    let bridges = sh(&a, &["ip", "-br", "link", "show", "type", "bridge"]);

    s.write(&moved_hcl("app", pid, true));
    let plan = s.vf(&["plan"]);
    assert!(plan.ok(), "{}", plan.show());
    for k in ["instance", "disk", "port", "network"] {
        assert!(plan.stdout.contains(&format!("# {k}.web has moved to {k}.app")), "{k}: {}", plan.show());
    }
    assert!(plan.stdout.contains("Fleet of 2 hosts: Plan: 4 to move, 0 to add, 0 to change, 0 to destroy."), "{}", plan.show());
    let out = s.vf(&["apply", "--auto-approve"]);
    assert!(out.ok() && out.stdout.contains("Apply complete"), "{}", out.show());
    assert!(!out.stdout.contains("create") && !out.stdout.contains("delete"), "a move created or deleted something: {}", out.show());
    assert_eq!(sh(&a, &["virsh", "-c", "qemu:///system", "domuuid", &dom]).trim(), uuid, "the domain was replaced");
    assert!(sh(&a, &["virsh", "-c", "qemu:///system", "domstate", &dom]).contains("running"), "{dom} is not running");
    assert!(sh(&a, &["virsh", "-c", "qemu:///system", "dumpxml", &dom]).contains("instance.app"), "the domain's marker names its new address");
    assert_eq!(sh(&a, &["ip", "-br", "link", "show", "type", "bridge"]), bridges, "a bridge changed");
    s.assert_plan_empty("after the moves");
    // The moved blocks can go: the stack's record keeps the names.
    s.write(&moved_hcl("app", pid, false));
    let again = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, Some(0), "{}", again.show());
    let d = s.vf(&["destroy", "--auto-approve"]);
    assert!(d.ok() && d.stdout.contains("Destroy complete"), "{}", d.show());
    assert!(!sh(&a, &["virsh", "-c", "qemu:///system", "list", "--all", "--name"]).contains(&s.stack), "domain left on vflab-a");
    assert!(sh(&a, &["ls", "-a", "/var/lib/virtform"]).lines().all(|l| l != s.stack), "stack dir left on vflab-a");
}

/// What the import test made by hand on vflab-b, removed by exact name
/// however the test ends.
struct HandMadeOnB {
    bridge: String,
    net: String,
}

impl Drop for HandMadeOnB {
    fn drop(&mut self) {
        let b = lab("vflab-b");
        let _ = sh(&b, &["ip", "link", "del", "dev", &self.bridge]);
        let _ = sh(&b, &["virsh", "-c", "qemu:///system", "net-destroy", &self.net]);
        let _ = sh(&b, &["virsh", "-c", "qemu:///system", "net-undefine", &self.net]);
    }
}

/// Imports on a remote host: a bridge and a libvirt network made by hand
/// on vflab-b are imported by `import` blocks (the bridge marked, the
/// network recorded in this machine's registry with its UUID), converge,
/// and go with destroy; a file import there and `virtform import` of a
/// remote address are refused, saying what to do.
#[test]
fn a_bridge_and_a_libvirt_network_made_by_hand_on_a_remote_host_are_imported_and_destroyed() {
    let _one = lab_guests();
    let s = VfStack::new("a_bridge_and_a_libvirt_network_made_by_hand_on_a_remote_host_are_imported_and_destroyed", "fli");
    let pid = std::process::id();
    let b = lab("vflab-b");
    let hand = HandMadeOnB { bridge: format!("vffi{pid}"), net: format!("vffi-n{pid}") };
    let (nbr, subnet) = (format!("vffin{pid}"), format!("10.64.{}", pid % 200 + 20));
    sh(&b, &["ip", "link", "add", "name", &hand.bridge, "type", "bridge"]);
    let xml = format!("<network>\n  <name>{}</name>\n  <bridge name='{nbr}' stp='on' delay='0'/>\n  <ip address='{subnet}.1' prefix='24'/>\n</network>\n", hand.net);
    let xml_at = format!("/var/lib/virtform/{}.xml", hand.net);
    b.write_atomic(Path::new(&xml_at), xml.as_bytes(), 0o600).unwrap();
    sh(&b, &["virsh", "-c", "qemu:///system", "net-define", &xml_at]);
    sh(&b, &["virsh", "-c", "qemu:///system", "net-start", &hand.net]);
    sh(&b, &["rm", "-f", "--", &xml_at]);
    let uuid = sh(&b, &["virsh", "-c", "qemu:///system", "net-uuid", &hand.net]).trim().to_string();
    assert_eq!(uuid.len(), 36, "the hand-made network on vflab-b: {uuid}");
    let nets = format!(
        "network \"lan\" {{\n  host   = host.b\n  bridge = \"{}\"\n}}\nnetwork \"iso\" {{\n  host    = host.b\n  type    = \"isolated\"\n  bridge  = \"{nbr}\"\n  address = \"{subnet}.1/24\"\n}}\nimport {{\n  to = network.lan\n  id = \"{}\"\n}}\nimport {{\n  to = network.iso\n  id = \"{}\"\n}}\n",
        hand.bridge, hand.bridge, hand.net
    );

    s.write(&some_hosts_hcl(&["a", "b"], &nets));
    let out = run(env!("CARGO_BIN_EXE_virtform"), &["--no-color", "--state-dir", s.state.path().to_str().unwrap(), "--stack", &s.stack, "--var", "assets=/x", "import", "network.lan", &hand.bridge, s.cfg.path().to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{}", out.show());
    assert!(out.stderr.contains("it is placed on host.b") && out.stderr.contains("import {"), "{}", out.show());

    let plan = s.vf(&["plan"]);
    assert!(plan.ok() && plan.stdout.contains("Fleet of 3 hosts: Plan: 2 to import"), "{}", plan.show());
    let out = s.vf(&["apply", "--auto-approve"]);
    assert!(out.ok() && out.stdout.contains("Apply complete"), "{}", out.show());
    assert!(sh(&b, &["ip", "-d", "link", "show", "dev", &hand.bridge]).contains(&format!("virtform:{}:network.lan", s.stack)), "the bridge's marker on vflab-b");
    let registry = std::fs::read_to_string(s.state.path().join(&s.stack).join("imports.json")).unwrap_or_default();
    assert!(registry.contains(&hand.net) && registry.contains(&uuid), "the registry: {registry}");
    let again = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, Some(0), "not converged:\n{}", again.show());

    // Imported objects are the stack's: destroy deletes them on vflab-b.
    let d = s.vf(&["destroy", "--auto-approve"]);
    assert!(d.ok() && d.stdout.contains("Destroy complete"), "{}", d.show());
    assert!(!sh(&b, &["ip", "-br", "link"]).contains(&hand.bridge), "the imported bridge is left on vflab-b");
    assert!(!sh(&b, &["virsh", "-c", "qemu:///system", "net-list", "--all", "--name"]).contains(&hand.net), "the imported network is left on vflab-b");
}

/// A directory of files made by hand on vflab-b (under its private
/// /var/lib/libvirt: no other lab host and not this machine sees it),
/// removed however the test ends.
struct FilesOnB(String);

impl Drop for FilesOnB {
    fn drop(&mut self) {
        let _ = sh(&lab("vflab-b"), &["rm", "-rf", "--", &self.0]);
    }
}

/// Imports of files on a remote host: a disk and a volume file made by
/// hand on vflab-b (the volume holding 16 bytes "V") are imported by
/// `import` blocks, pinned by vflab-b's `stat` and marked there with the
/// `user.virtform` attribute, recorded in this machine's registry, and a
/// guest on vflab-b boots on them as they are; bad files there are located
/// errors; another stack is refused by the attribute; destroy deletes them
/// on vflab-b.
#[test]
fn a_disk_and_a_volume_file_made_by_hand_on_a_remote_host_are_imported_used_and_destroyed() {
    let _one = lab_guests();
    let s = VfStack::new("a_disk_and_a_volume_file_made_by_hand_on_a_remote_host_are_imported_used_and_destroyed", "flf");
    let pid = std::process::id();
    let b = lab("vflab-b");
    let dir = FilesOnB(format!("/var/lib/libvirt/images/vffimp{pid}"));
    let (data, keep) = (format!("{}/data.qcow2", dir.0), format!("{}/keep.qcow2", dir.0));
    sh(&b, &["mkdir", "-p", &dir.0]);
    sh(&b, &["qemu-img", "create", "-q", "-f", "qcow2", &data, "32M"]);
    sh(&b, &["qemu-img", "create", "-q", "-f", "qcow2", &keep, "48M"]);
    sh(&b, &["qemu-io", "-f", "qcow2", "-c", "write -P 0x56 0 16", &keep]);
    sh(&b, &["chmod", "0644", &data, &keep]);
    let ino = |p: &str| sh(&b, &["stat", "-c", "%i", p]).trim().to_string();
    let (data_ino, keep_ino) = (ino(&data), ino(&keep));
    assert!(!data_ino.is_empty() && !std::path::Path::new(&data).exists(), "the files are vflab-b's alone: {data_ino}");
    let conf = |disk_id: &str| {
        some_hosts_hcl(
            &["a", "b"],
            &format!(
                r#"disk "data" {{ size = "32M" }}
volume "keep" {{
  size   = "48M"
  serial = "vfimpkeep"
}}
instance "vm" {{
  host    = host.b
  memory  = "128M"
  kernel  = "${{var.assets}}/vmlinuz"
  initrd  = "${{var.assets}}/initrd.gz"
  cmdline = "console=ttyS0"
  disks   = [disk.data]
  volumes = [volume.keep]
  wait_for {{
    console = "VF-READY"
    timeout = "300s"
  }}
}}
import {{
  to = disk.data
  id = "{disk_id}"
}}
import {{
  to = volume.keep
  id = "{keep}"
}}
"#
            ),
        )
    };
    let registry = s.state.path().join(&s.stack).join("imports.json");

    // Bad files on vflab-b: located errors naming them, nothing changes there.
    let link = format!("{}/link.qcow2", dir.0);
    let backed = format!("{}/backed.qcow2", dir.0);
    let into_state = format!("{}/state", dir.0);
    sh(&b, &["ln", "-s", &data, &link]);
    sh(&b, &["qemu-img", "create", "-q", "-f", "qcow2", "-b", &data, "-F", "qcow2", &backed]);
    sh(&b, &["ln", "-s", "/var/lib/virtform", &into_state]);
    let missing = format!("{}/none.qcow2", dir.0);
    let sneaky = format!("{into_state}/x.qcow2");
    for (id, want) in [
        (missing.clone(), format!("there is no file \"{missing}\" on this host")),
        (link.clone(), "is a symbolic link".to_string()),
        (backed.clone(), "is refused as a disk: it has a backing file".to_string()),
        (sneaky.clone(), "inside virtform's state directory /var/lib/virtform through a symbolic link".to_string()),
    ] {
        s.write(&conf(&id));
        let plan = s.vf(&["plan"]);
        assert_eq!(plan.code, Some(1), "{}", plan.show());
        assert!(plan.stdout.contains(&want) && plan.stdout.contains("main.vf.hcl:"), "expected {want:?}:\n{}", plan.show());
        assert!(!registry.exists(), "a refused import wrote the registry");
    }

    s.write(&conf(&data));
    let plan = s.vf(&["plan"]);
    assert!(plan.ok(), "{}", plan.show());
    for want in [format!("# disk.data will be imported (id \"{data}\")"), format!("# volume.keep will be imported (id \"{keep}\")"), "On host.b".to_string()] {
        assert!(plan.stdout.contains(&want), "missing {want:?} in:\n{}", plan.show());
    }
    let out = s.vf_within(&["apply", "--auto-approve"], Duration::from_secs(600));
    assert!(out.ok() && out.stdout.contains("Apply complete"), "{}", out.show());
    // Used as they are, on vflab-b: the guest booted on them; the files are the same ones, marked there.
    let log = console_until(&b, &format!("/var/lib/virtform/{}/console/vm.log", s.stack), "VF-READY", 60);
    assert!(log.contains("VF-DISK vda 33554432"), "the imported disk is not vda:\n{log}");
    assert!(log.lines().any(|l| l.contains("VF-VOL vfimpkeep vdb 50331648 VVVVVVVVVVVVVVVV")), "the imported volume's bytes did not reach the guest:\n{log}");
    assert_eq!((ino(&data), ino(&keep)), (data_ino.clone(), keep_ino.clone()), "an imported file was replaced");
    for (f, a) in [(&data, "disk.data"), (&keep, "volume.keep")] {
        let mark = sh(&b, &["getfattr", "--absolute-names", "--only-values", "-n", "user.virtform", "--", f]);
        assert_eq!(mark, format!("virtform:{}:{a}", s.stack), "the marker on {f} on vflab-b");
    }
    let reg = std::fs::read_to_string(&registry).expect("this machine's registry");
    assert!(reg.contains(&data) && reg.contains(&keep) && reg.contains(&data_ino), "{reg}");
    let again = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, Some(0), "not converged:\n{}", again.show());

    // Another stack (its own state dir, its own registry) is refused by the attribute on vflab-b.
    {
        let s2 = VfStack::new("a_disk_and_a_volume_file_made_by_hand_on_a_remote_host_are_imported_used_and_destroyed", "flf2");
        s2.write(&some_hosts_hcl(&["b"], &format!("disk \"data\" {{\n  host = host.b\n  size = \"32M\"\n}}\nimport {{\n  to = disk.data\n  id = \"{data}\"\n}}\n")));
        let plan = s2.vf(&["plan"]);
        assert_eq!(plan.code, Some(1), "{}", plan.show());
        assert!(plan.stdout.contains(&format!("belongs to disk.data of stack \"{}\" (its user.virtform attribute says so)", s.stack)), "{}", plan.show());
    }
    // Imported objects are the stack's: destroy deletes them on vflab-b.
    let d = s.vf(&["destroy", "--auto-approve"]);
    assert!(d.ok() && d.stdout.contains("Destroy complete"), "{}", d.show());
    let left = sh(&b, &["ls", "--", &dir.0]);
    assert!(!left.contains("data.qcow2") && !left.contains("keep.qcow2"), "destroy left the imported files on vflab-b: {left}");
    assert!(!registry.exists(), "the registry outlived its last entry");
    assert!(!virsh(&b, &["list", "--all", "--name"]).contains(&s.stack), "domain left on vflab-b");
}

/// A pseudo-terminal's two ends (the child's stdin is the second, so
/// `apply` asks for its confirmation and waits).
fn pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into the locals; the name,
    // termios and winsize arguments may be null.
    let r = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here only.
    unsafe { (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) }
}

/// The SSH masters `pid` started (its `ssh -M` children).
fn masters_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let ppid = stat.rsplit_once(") ").and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
            cmd.starts_with(b"ssh\0") && cmd.windows(4).any(|w| w == b"\0-M\0") && ppid == Some(pid)
        })
        .collect()
}

/// A run that dies while its host's connection hangs (its SSH master
/// stopped, so vflab-a never sees the connection close) leaves the stack's
/// lock held there. The next run on this machine finds the holder gone,
/// waits to see the lock file name it still, ends the stale holder on
/// vflab-a by PID, and goes on.
#[test]
fn a_lock_left_on_a_host_by_a_run_that_died_is_broken_by_the_next_run() {
    use std::io::Read;
    let _one = lab_guests();
    let s = VfStack::new("a_lock_left_on_a_host_by_a_run_that_died_is_broken_by_the_next_run", "flk");
    let pid = std::process::id();
    let a = lab("vflab-a");
    let br = format!("vfflk{pid}");
    s.write(&some_hosts_hcl(&["a"], &format!("network \"lan\" {{\n  host   = host.a\n  bridge = \"{br}\"\n}}\n")));
    let (_term, tty) = pty();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_virtform"))
        .args(["--no-color", "--state-dir", s.state.path().to_str().unwrap(), "--stack", &s.stack, "--var", "assets=/x", "apply", s.cfg.path().to_str().unwrap()])
        .stdin(tty)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // It asks only once it holds every lock.
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&seen).contains("Only 'yes' is accepted") {
        assert!(std::time::Instant::now() < deadline, "no prompt: {}", String::from_utf8_lossy(&seen));
        let mut buf = [0u8; 4096];
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "the run ended before asking: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let masters = masters_of(child.id());
    assert_eq!(masters.len(), 1, "one master, to vflab-a: {masters:?}");
    for m in &masters {
        run("kill", &["-STOP", "--", &m.to_string()]).must();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let lock = format!("/var/lib/virtform/{}/.lock", s.stack);
    let holder = sh(&a, &["cat", &lock]);
    assert!(holder.starts_with("virtform ") && holder.trim_end().ends_with(&format!(" {}", child.id())), "the dead run's holder line on vflab-a: {holder:?}");

    let next = s.vf(&["apply", "--auto-approve"]);
    for m in &masters {
        run("kill", &["-KILL", "--", &m.to_string()]).must();
    }
    assert!(next.ok() && next.stdout.contains("Apply complete"), "{}", next.show());
    assert!(next.stderr.contains("was held by a virtform run on this machine that is gone") && next.stderr.contains("its holder there was ended"), "{}", next.show());
    assert!(sh(&a, &["ip", "-br", "link", "show", "dev", &br]).starts_with(&br), "the bridge on vflab-a");
    let d = s.vf(&["destroy", "--auto-approve"]);
    assert!(d.ok(), "{}", d.show());
    assert!(sh(&a, &["pgrep", "-f", "-a", "flock"]).lines().all(|l| !l.contains(&s.stack)), "a lock holder is left on vflab-a");
}
