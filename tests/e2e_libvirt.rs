//! Real-host tests of the libvirt adapter (`virtform::host::libvirt`) against
//! `qemu:///system`: the tiny test guest (scripts/build-guest) booted under
//! TCG with a qcow2 overlay, live attach and detach of a virtio disk and a
//! NIC seen from inside the guest, a graceful ACPI shutdown, a NAT network
//! with a static DHCP host entry, the KVM check against reality, and the
//! permission hint.
//!
//! Needs root, a running libvirtd and the guest assets: `scripts/test`
//! provides all three. When they are missing these tests FAIL saying so;
//! they never skip. Every object gets a unique name; a guard destroys and
//! undefines everything even when an assertion fails, and each test ends by
//! checking that nothing with its prefix is left.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use virtform::host::libvirt::{is_not_found, DomainState, Libvirt, ShutdownOutcome, VirtLibvirt, Via, DOMAIN_TYPE_ENV};
use virtform::model::common::Mac;
use virtform::model::disk::Bus;
use virtform::model::instance::{Firmware, Graphics};
use virtform::model::port::NicModel;
use virtform::xml::domain::{disk_device_xml, domain_xml, nic_device_xml, DiskDef, DiskDevice, DomainDef, DomainKind, Marker, NicDef, NicSource, ObservedDomain};
use virtform::xml::network::{dhcp_host_xml, network_xml, parse_network, Forward, NetworkDef, ObservedNetwork};

const URI: &str = "qemu:///system";
const HINT: &str = "run scripts/test (it runs scripts/host-setup and scripts/build-guest first)";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const DEVICE_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- helpers

fn assets_dir() -> PathBuf {
    std::env::var_os("VIRTFORM_ASSETS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/lib/virtform/assets"))
}

fn check_assets() -> PathBuf {
    let assets = assets_dir();
    for f in ["vmlinuz", "initrd.gz", "tiny.qcow2"] {
        assert!(assets.join(f).is_file(), "guest asset {} is missing: {HINT}", assets.join(f).display());
    }
    assets
}

fn open_host() -> Arc<VirtLibvirt> {
    match VirtLibvirt::open(URI) {
        Ok(lv) => Arc::new(lv),
        Err(e) => panic!("libvirt at {URI} is not reachable: {e}\n{HINT}"),
    }
}

/// Runs a command; panics with its output when it fails.
fn must(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}\n{HINT}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn virsh(args: &[&str]) -> String {
    let mut full = vec!["-c", URI];
    full.extend_from_slice(args);
    must("virsh", &full)
}

/// A unique prefix for one test's objects.
fn prefix(test: &str) -> String {
    format!("vf-e2e-lv-{}-{test}", std::process::id())
}

fn stamp() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
}

fn uuid(seed: u32) -> String {
    let (pid, t) = (std::process::id(), stamp());
    format!("{pid:08x}-{:04x}-4{:03x}-8{:03x}-{t:08x}{seed:04x}", seed & 0xffff, (t >> 12) & 0xfff, t & 0xfff)
}

/// A directory QEMU (running as libvirt-qemu) can reach: 0755 under the temp dir.
fn reachable_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", stamp()));
    fs::create_dir_all(&dir).expect("create temp dir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    dir
}

/// A 10.197.X.0/24 subnet no host interface uses (X from the pid and `salt`).
fn pick_subnet(salt: u32) -> u8 {
    let addrs = must("ip", &["-o", "-4", "addr", "show"]);
    let start = (std::process::id() + salt * 37) % 200;
    (0..200).map(|i| ((start + i) % 200 + 20) as u8).find(|x| !addrs.contains(&format!(" 10.197.{x}."))).expect("no free 10.197.X.0/24 subnet on this host")
}

fn mac_for(salt: u8) -> Mac {
    let pid = std::process::id();
    Mac([0x52, 0x54, 0x00, (pid >> 8) as u8, pid as u8, salt])
}

/// Everything a test creates; destroyed and undefined on drop, even after a
/// failed assertion.
struct Cleanup {
    lv: Arc<VirtLibvirt>,
    domains: Vec<String>,
    networks: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Cleanup {
    fn new(lv: &Arc<VirtLibvirt>) -> Cleanup {
        Cleanup { lv: lv.clone(), domains: Vec::new(), networks: Vec::new(), dirs: Vec::new() }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for d in &self.domains {
            if let Err(e) = self.lv.destroy(d) {
                eprintln!("cleanup: {e}");
            }
            if let Err(e) = self.lv.undefine(d) {
                eprintln!("cleanup: {e}");
            }
        }
        for n in &self.networks {
            if let Err(e) = self.lv.destroy_network(n) {
                eprintln!("cleanup: {e}");
            }
            if let Err(e) = self.lv.undefine_network(n) {
                eprintln!("cleanup: {e}");
            }
        }
        for dir in &self.dirs {
            if dir.exists()
                && let Err(e) = fs::remove_dir_all(dir)
            {
                eprintln!("cleanup: cannot remove {}: {e}", dir.display());
            }
        }
    }
}

/// Domains and networks whose name starts with `prefix`, seen by virsh and by the adapter.
fn leftovers(lv: &VirtLibvirt, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = virsh(&["list", "--all", "--name"])
        .lines()
        .chain(virsh(&["net-list", "--all", "--name"]).lines())
        .map(str::trim)
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect();
    out.extend(lv.domains().expect("list domains").into_iter().map(|d| d.name).filter(|n| n.starts_with(prefix)));
    out.extend(lv.networks().expect("list networks").into_iter().map(|n| n.name).filter(|n| n.starts_with(prefix)));
    out
}

fn read_log(path: &Path) -> String {
    fs::read(path).map(|b| String::from_utf8_lossy(&b).replace('\r', "")).unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until a console line after byte `from` equals `line`; returns how long it took.
fn wait_line(log: &Path, from: usize, line: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let text = read_log(log);
        if text.get(from..).unwrap_or("").lines().any(|l| l.trim_end() == line) {
            return start.elapsed();
        }
        assert!(!text.contains("Kernel panic"), "guest kernel panicked:\n{}", tail(&text, 40));
        if start.elapsed() > timeout {
            panic!("no console line {line:?} within {timeout:?}; console log {}:\n{}", log.display(), tail(&text, 40));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_len(log: &Path) -> usize {
    read_log(log).len()
}

fn guest_def(name: &str, assets: &Path, root: &Path, log: &Path, kind: DomainKind) -> DomainDef {
    DomainDef {
        name: name.into(),
        uuid: uuid(1),
        domain_type: kind,
        memory_kib: 256 * 1024,
        vcpus: 1,
        cpu: None,
        machine: "pc".into(),
        firmware: Firmware::Bios,
        loader: None,
        kernel: Some(assets.join("vmlinuz").to_string_lossy().into_owned()),
        initrd: Some(assets.join("initrd.gz").to_string_lossy().into_owned()),
        cmdline: Some("console=ttyS0 vf.hostname=vflv".into()),
        disks: vec![DiskDef {
            path: root.to_string_lossy().into_owned(),
            format: "qcow2".into(),
            device: DiskDevice::Disk,
            bus: Bus::Virtio,
            target: "vda".into(),
            readonly: false,
            serial: None,
            boot_order: None,
        }],
        nics: Vec::new(),
        console_log: log.to_string_lossy().into_owned(),
        graphics: Graphics::None,
        guest_agent: false,
        marker: Marker { stack: "e2e-lv".into(), address: "instance.guest".into(), spec_hash: "sha256:e2e".into() },
    }
}

fn overlay(assets: &Path, path: &Path) {
    let base = assets.join("tiny.qcow2");
    must("qemu-img", &["create", "-q", "-f", "qcow2", "-b", &base.to_string_lossy(), "-F", "qcow2", &path.to_string_lossy()]);
}

fn nat_network(name: &str, bridge: &str, x: u8) -> NetworkDef {
    NetworkDef {
        name: name.into(),
        uuid: uuid(2),
        bridge: bridge.into(),
        mtu: None,
        address: Some((std::net::Ipv4Addr::new(10, 197, x, 1), 24)),
        forward: Forward::Nat,
        dhcp_range: Some((std::net::Ipv4Addr::new(10, 197, x, 100), std::net::Ipv4Addr::new(10, 197, x, 200))),
        hosts: Vec::new(),
        stp: false,
        delay: 0,
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn guest_boots_hotplugs_a_disk_and_a_nic_and_shuts_down_gracefully() {
    let assets = check_assets();
    let lv = open_host();
    let pre = prefix("guest");
    let mut fx = Cleanup::new(&lv);
    assert!(leftovers(&lv, &pre).is_empty(), "objects named {pre}* already exist (left over from a killed run?)");

    let dir = reachable_dir(&pre);
    fx.dirs.push(dir.clone());
    let (root, data, log) = (dir.join("root.qcow2"), dir.join("data.qcow2"), dir.join("console.log"));
    overlay(&assets, &root);
    must("qemu-img", &["create", "-q", "-f", "qcow2", &data.to_string_lossy(), "32M"]);

    // A NAT network; the guest's eth0 gets a fixed address from a static DHCP host entry.
    let x = pick_subnet(1);
    let net_name = format!("{pre}-net");
    let bridge = format!("vflv{}g", std::process::id() % 100_000);
    fx.networks.push(net_name.clone());
    lv.define_network(&network_xml(&nat_network(&net_name, &bridge, x))).expect("define network");
    lv.start_network(&net_name).expect("start network");
    let guest_ip = std::net::Ipv4Addr::new(10, 197, x, 10);
    lv.update_network_dhcp_host(&net_name, &dhcp_host_xml(&mac_for(1), guest_ip, Some("vflv")), true).expect("add DHCP host");

    // --- define: the marker and the managed fields read back ---
    let name = format!("{pre}-vm");
    let mut def = guest_def(&name, &assets, &root, &log, DomainKind::Qemu);
    def.nics.push(NicDef { mac: mac_for(1), model: NicModel::Virtio, source: NicSource::Network { network: net_name.clone() }, target_dev: None, mtu: None });
    def.cmdline = Some("console=ttyS0 vf.hostname=vflv vf.dhcp=1".into());
    fx.domains.push(name.clone());
    let uuid = lv.define(&domain_xml(&def)).expect("define domain");
    assert_eq!(uuid, def.uuid);
    let info = lv.domain(&name).unwrap().expect("defined domain is listed");
    assert_eq!(info.state, DomainState::Shutoff);
    assert!(info.persistent && !info.autostart);
    assert_eq!(info.owner(), Some(("e2e-lv", "instance.guest")));
    let observed = info.observed.as_ref().unwrap_or_else(|| panic!("{:?}\n{}", info.parse_error, info.inactive_xml));
    assert_eq!(ObservedDomain::from_def(&def).changed_fields(observed), Vec::<String>::new(), "{}", info.inactive_xml);
    let listed = lv.domains().expect("domains()");
    assert_eq!(listed.iter().find(|d| d.name == name), Some(&info));

    // --- boot ---
    let t = Instant::now();
    lv.start(&name).expect("start");
    lv.start(&name).expect("start is idempotent");
    let boot = wait_line(&log, 0, "VF-READY", BOOT_TIMEOUT);
    let boot_total = t.elapsed();
    let console = read_log(&log);
    assert!(console.lines().any(|l| l.trim_end() == "VF-IMAGE tiny-v1"), "{}", tail(&console, 40));
    assert!(console.lines().any(|l| l.trim_end() == "VF-BLOCK vda"), "{}", tail(&console, 40));
    assert_eq!(lv.domain(&name).unwrap().unwrap().state, DomainState::Running);
    assert!(console.lines().any(|l| l.trim_end() == format!("VF-DHCP eth0 ok {guest_ip}")), "static DHCP entry not honoured:\n{}", tail(&console, 40));
    // The lease, read through virNetworkGetDHCPLeases.
    let t_lease = Instant::now();
    let lease = loop {
        let leases = lv.leases(&net_name).expect("leases");
        if let Some(l) = leases.into_iter().find(|l| l.mac == mac_for(1).to_string()) {
            break l;
        }
        assert!(t_lease.elapsed() < Duration::from_secs(20), "no lease for {} on {net_name}", mac_for(1));
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(lease.ip, guest_ip.to_string());
    assert_eq!(lease.hostname.as_deref(), Some("vflv"));
    assert!(lease.expiry > SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64, "{lease:?}");
    wait_line(&log, 0, "vflv login:", Duration::from_secs(30));
    eprintln!("timing: VF-READY {:.1}s after start() returned ({:.1}s including the start call)", boot.as_secs_f64(), boot_total.as_secs_f64());

    // --- hot-attach a virtio disk, live + config ---
    let vdb = DiskDef {
        path: data.to_string_lossy().into_owned(),
        format: "qcow2".into(),
        device: DiskDevice::Disk,
        bus: Bus::Virtio,
        target: "vdb".into(),
        readonly: false,
        serial: Some("vf-data".into()),
        boot_order: None,
    };
    let vdb_xml = disk_device_xml(&vdb);
    let from = log_len(&log);
    let t = Instant::now();
    lv.attach_device(&name, &vdb_xml, true).expect("attach disk");
    let call = t.elapsed();
    wait_line(&log, from, "VF-BLOCK vda vdb", DEVICE_TIMEOUT);
    let seen = t.elapsed();
    eprintln!("timing: disk attach call {:.2}s, vdb visible in the guest after {:.1}s", call.as_secs_f64(), seen.as_secs_f64());
    assert!(read_log(&log)[from..].contains("VF-DISK vdb 33554432"), "{}", tail(&read_log(&log), 20));
    let persistent = lv.domain(&name).unwrap().unwrap();
    assert!(persistent.observed.as_ref().unwrap().disks.iter().any(|d| d.target == "vdb" && d.path.as_deref() == Some(vdb.path.as_str())), "{}", persistent.inactive_xml);
    assert!(lv.domain_xml(&name, false).unwrap().contains("dev='vdb'"));
    // Again: already there, nothing happens (no second vdb, no error).
    lv.attach_device(&name, &vdb_xml, true).expect("attach is idempotent");
    assert_eq!(lv.domain_xml(&name, false).unwrap().matches("dev='vdb'").count(), 1);

    // --- hot-attach a second NIC on the NAT network ---
    let nic = NicDef { mac: mac_for(2), model: NicModel::Virtio, source: NicSource::Network { network: net_name.clone() }, target_dev: None, mtu: None };
    let nic_xml = nic_device_xml(&nic);
    let from = log_len(&log);
    let t = Instant::now();
    lv.attach_device(&name, &nic_xml, true).expect("attach nic");
    wait_line(&log, from, "VF-NETDEVS eth0 eth1 lo", DEVICE_TIMEOUT);
    eprintln!("timing: nic visible in the guest after {:.1}s", t.elapsed().as_secs_f64());
    assert!(lv.domain(&name).unwrap().unwrap().observed.unwrap().nics.iter().any(|n| n.mac == nic.mac));

    // --- detach the disk: gone from the live XML when the call returns, and from the guest ---
    let from = log_len(&log);
    let t = Instant::now();
    lv.detach_device(&name, &vdb_xml, true, DEVICE_TIMEOUT).expect("detach disk");
    let detach = t.elapsed();
    assert!(!lv.domain_xml(&name, false).unwrap().contains("dev='vdb'"), "vdb still in the live XML");
    assert!(!lv.domain_xml(&name, true).unwrap().contains("dev='vdb'"), "vdb still in the persistent XML");
    let gone = wait_line(&log, from, "VF-BLOCK vda", DEVICE_TIMEOUT);
    eprintln!("timing: disk detach call {:.1}s (returns once gone from the live XML), guest saw it go after {:.1}s", detach.as_secs_f64(), gone.as_secs_f64());
    lv.detach_device(&name, &vdb_xml, true, DEVICE_TIMEOUT).expect("detach is idempotent");

    // --- detach the NIC (matched by MAC) ---
    let from = log_len(&log);
    let t = Instant::now();
    lv.detach_device(&name, &nic_xml, true, DEVICE_TIMEOUT).expect("detach nic");
    let nic_detach = t.elapsed();
    let live = lv.domain_xml(&name, false).unwrap().to_ascii_lowercase();
    assert!(!live.contains(&nic.mac.to_string()), "nic still in the live XML");
    assert!(live.contains(&mac_for(1).to_string()), "the boot NIC went too");
    wait_line(&log, from, "VF-NETDEVS eth0 lo", DEVICE_TIMEOUT);
    eprintln!("timing: nic detach call {:.1}s", nic_detach.as_secs_f64());

    // --- graceful shutdown: the guest handles the ACPI power button ---
    let t = Instant::now();
    let outcome = lv.shutdown(&name, Duration::from_secs(60)).expect("shutdown");
    let down = t.elapsed();
    assert_eq!(outcome, ShutdownOutcome::Graceful(Via::Acpi), "{}", tail(&read_log(&log), 20));
    assert!(read_log(&log).lines().any(|l| l.trim_end() == "VF-SHUTDOWN"), "{}", tail(&read_log(&log), 20));
    eprintln!("timing: graceful shutdown {:.1}s", down.as_secs_f64());
    assert_eq!(lv.domain(&name).unwrap().unwrap().state, DomainState::Shutoff);
    assert_eq!(lv.shutdown(&name, Duration::from_secs(5)).unwrap(), ShutdownOutcome::AlreadyOff);
    lv.destroy(&name).expect("destroy of a stopped domain is done");

    // --- undefine, twice ---
    lv.undefine(&name).expect("undefine");
    assert_eq!(lv.domain(&name).unwrap(), None);
    lv.undefine(&name).expect("undefine is idempotent");
    lv.destroy(&name).expect("destroy of a missing domain is done");
    assert!(is_not_found(&lv.start(&name).unwrap_err()));
    lv.destroy_network(&net_name).unwrap();
    lv.undefine_network(&net_name).unwrap();

    drop(fx);
    assert_eq!(leftovers(&lv, &pre), Vec::<String>::new(), "left behind");
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
}

#[test]
fn nat_network_with_a_static_dhcp_host_entry() {
    let lv = open_host();
    let pre = prefix("net");
    let mut fx = Cleanup::new(&lv);
    assert!(leftovers(&lv, &pre).is_empty(), "objects named {pre}* already exist (left over from a killed run?)");
    let x = pick_subnet(2);
    let name = format!("{pre}-nat");
    let bridge = format!("vflv{}n", std::process::id() % 100_000);
    let def = nat_network(&name, &bridge, x);
    fx.networks.push(name.clone());

    let t = Instant::now();
    lv.define_network(&network_xml(&def)).expect("define network");
    lv.start_network(&name).expect("start network");
    lv.start_network(&name).expect("start is idempotent");
    eprintln!("timing: network define + start {:.2}s", t.elapsed().as_secs_f64());
    let info = lv.networks().unwrap().into_iter().find(|n| n.name == name).expect("listed");
    assert!(info.active && info.persistent && !info.autostart);
    assert_eq!(ObservedNetwork::from_def(&def).changed_fields(info.observed.as_ref().unwrap()), Vec::<String>::new(), "{}", info.xml);
    assert!(must("ip", &["-o", "link", "show", "dev", &bridge]).contains(&bridge));

    // A static entry, live and in the config.
    let (mac, ip) = (mac_for(9), std::net::Ipv4Addr::new(10, 197, x, 10));
    let host = dhcp_host_xml(&mac, ip, Some("web"));
    lv.update_network_dhcp_host(&name, &host, true).expect("add DHCP host");
    lv.update_network_dhcp_host(&name, &host, true).expect("adding again is done");
    let entry = |xml: &str| parse_network(xml).unwrap().hosts.into_iter().filter(|h| h.mac == mac).collect::<Vec<_>>();
    let live = virsh(&["net-dumpxml", &name]);
    let config = virsh(&["net-dumpxml", "--inactive", &name]);
    for xml in [&live, &config] {
        let e = entry(xml);
        assert_eq!(e.len(), 1, "{xml}");
        assert_eq!((e[0].ip, e[0].name.as_deref()), (ip, Some("web")));
    }
    assert_eq!(lv.leases(&name).expect("leases of a fresh network"), Vec::new());

    lv.update_network_dhcp_host(&name, &host, false).expect("remove DHCP host");
    lv.update_network_dhcp_host(&name, &host, false).expect("removing again is done");
    assert!(entry(&virsh(&["net-dumpxml", &name])).is_empty());
    assert!(entry(&virsh(&["net-dumpxml", "--inactive", &name])).is_empty());

    lv.destroy_network(&name).expect("destroy network");
    lv.destroy_network(&name).expect("destroy is idempotent");
    lv.undefine_network(&name).expect("undefine network");
    lv.undefine_network(&name).expect("undefine is idempotent");
    assert!(is_not_found(&lv.start_network(&name).unwrap_err()));

    drop(fx);
    assert_eq!(leftovers(&lv, &pre), Vec::<String>::new(), "left behind");
}

/// `kvm_usable` must match reality: when it says no, a `type='kvm'` guest
/// does not reach VF-READY (this host: nested KVM hangs it); when it says
/// yes, it does.
#[test]
fn kvm_usable_matches_whether_a_kvm_guest_boots() {
    let assets = check_assets();
    let lv = open_host();
    let check = lv.kvm_check();
    eprintln!("kvm_check: usable={} ({})", check.usable, check.reason);
    if std::env::var(DOMAIN_TYPE_ENV).is_ok() {
        eprintln!("{DOMAIN_TYPE_ENV} is set: the answer is the override; not compared with reality");
        return;
    }
    let pre = prefix("kvm");
    let mut fx = Cleanup::new(&lv);
    let dir = reachable_dir(&pre);
    fx.dirs.push(dir.clone());
    let (root, log) = (dir.join("root.qcow2"), dir.join("console.log"));
    overlay(&assets, &root);
    let name = format!("{pre}-vm");
    fx.domains.push(name.clone());
    lv.define(&domain_xml(&guest_def(&name, &assets, &root, &log, DomainKind::Kvm))).expect("define kvm domain");
    let started = lv.start(&name);
    // The TCG guest is ready in about 4 s; under working KVM it is faster.
    let limit = Duration::from_secs(20);
    let t = Instant::now();
    let ready = started.is_ok()
        && loop {
            if read_log(&log).contains("VF-READY") {
                break true;
            }
            if t.elapsed() > limit {
                break false;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
    eprintln!("kvm guest: start {:?}, VF-READY {ready} after {:.1}s", started.as_ref().err().map(|e| e.to_string()), t.elapsed().as_secs_f64());
    assert_eq!(
        check.usable,
        ready,
        "kvm_usable() = {} ({}) but a kvm guest {} VF-READY within {limit:?}; console:\n{}",
        check.usable,
        check.reason,
        if ready { "reached" } else { "did not reach" },
        tail(&read_log(&log), 20)
    );
    lv.destroy(&name).unwrap();
    lv.undefine(&name).unwrap();
    drop(fx);
    assert_eq!(leftovers(&lv, &pre), Vec::<String>::new(), "left behind");
}

/// A disk QEMU cannot reach fails `start` with libvirt's message and a hint
/// about libvirt-qemu's access.
#[test]
fn unreachable_disk_fails_start_with_a_permission_hint() {
    let assets = check_assets();
    let lv = open_host();
    let pre = prefix("perm");
    let mut fx = Cleanup::new(&lv);
    let dir = reachable_dir(&pre);
    fx.dirs.push(dir.clone());
    let private = dir.join("private");
    fs::create_dir(&private).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let root = private.join("root.qcow2");
    overlay(&assets, &root);
    let name = format!("{pre}-vm");
    fx.domains.push(name.clone());
    lv.define(&domain_xml(&guest_def(&name, &assets, &root, &dir.join("console.log"), DomainKind::Qemu))).unwrap();
    let e = lv.start(&name).expect_err("QEMU cannot open a disk in a 0700 root directory");
    eprintln!("start error: {e}");
    assert_eq!((e.op.as_str(), e.object.as_str()), ("start domain", name.as_str()));
    assert!(e.message.contains("Permission denied"), "{e}");
    assert!(e.hint.as_deref().is_some_and(|h| h.contains("libvirt-qemu")), "{e}");
    lv.undefine(&name).unwrap();
    drop(fx);
    assert_eq!(leftovers(&lv, &pre), Vec::<String>::new(), "left behind");
}
