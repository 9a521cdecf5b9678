//! Real-host end-to-end check of the tiny test guest (scripts/build-guest).
//!
//! Boots the guest under libvirt (TCG, `qemu:///system`) on a fresh Linux
//! bridge, waits for its `VF-READY` console marker, checks the markers, pings
//! it from the host, then tears everything down and checks nothing leaked.
//!
//! Needs root, running libvirtd and the guest assets: `scripts/test` provides
//! all three (it runs `scripts/host-setup` and `scripts/build-guest` first).
//! When they are missing this test FAILS with a message saying so; it never
//! skips silently.
//!
//! Only std is used; every command is run with an argument vector (no shell).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const URI: &str = "qemu:///system";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const HINT: &str = "run scripts/test (it runs scripts/host-setup and scripts/build-guest first)";

/// Runs a command; never panics (a missing binary shows up as a failed Output).
fn run(program: &str, args: &[&str]) -> Output {
    match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) => Output {
            status: failed_status(),
            stdout: Vec::new(),
            stderr: format!("cannot run {program}: {e}").into_bytes(),
        },
    }
}

fn failed_status() -> std::process::ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    std::process::ExitStatus::from_raw(1 << 8)
}

/// Runs a command and panics with its output when it fails.
fn must(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    if !out.status.success() {
        panic!(
            "`{} {}` failed ({}):\n{}{}",
            program,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn virsh(args: &[&str]) -> Output {
    let mut full = vec!["-c", URI];
    full.extend_from_slice(args);
    run("virsh", &full)
}

fn assets_dir() -> PathBuf {
    std::env::var_os("VIRTFORM_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/virtform/assets"))
}

fn domain_names() -> Vec<String> {
    let out = virsh(&["list", "--all", "--name"]);
    assert!(
        out.status.success(),
        "virsh list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn link_exists(name: &str) -> bool {
    let out = must("ip", &["-o", "link", "show"]);
    out.lines().any(|l| {
        // "12: vfg1234: <BROADCAST,..." (or "vfg1234@if3:" for paired links)
        l.split(':')
            .nth(1)
            .map(|n| n.trim().split('@').next() == Some(name))
            .unwrap_or(false)
    })
}

/// Everything the test creates on the host. `cleanup` is idempotent and also
/// runs from `Drop`, so a failed assertion still tears everything down.
struct Fixture {
    domain: String,
    bridge: String,
    dir: PathBuf,
    domain_defined: bool,
    bridge_created: bool,
}

impl Fixture {
    fn cleanup(&mut self) {
        if self.domain_defined {
            // destroy fails harmlessly when the domain is not running
            let _ = virsh(&["destroy", &self.domain]);
            let out = virsh(&["undefine", &self.domain]);
            if out.status.success() || !domain_names().contains(&self.domain) {
                self.domain_defined = false;
            } else {
                eprintln!(
                    "cleanup: virsh undefine {} failed: {}",
                    self.domain,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        if self.bridge_created {
            let out = run("ip", &["link", "del", "dev", &self.bridge]);
            if out.status.success() || !link_exists(&self.bridge) {
                self.bridge_created = false;
            } else {
                eprintln!(
                    "cleanup: ip link del {} failed: {}",
                    self.bridge,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        if self.dir.exists()
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            eprintln!("cleanup: cannot remove {}: {e}", self.dir.display());
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A 10.199.X.0/24 subnet no host interface uses yet, X derived from the pid.
fn pick_subnet(pid: u32) -> u32 {
    let addrs = must("ip", &["-o", "-4", "addr", "show"]);
    let start = pid % 200 + 20;
    (0..200)
        .map(|i| (start - 20 + i) % 200 + 20)
        .find(|x| !addrs.contains(&format!(" 10.199.{x}.")))
        .expect("no free 10.199.X.0/24 subnet on this host")
}

fn domain_xml(
    name: &str,
    assets: &Path,
    disk: &Path,
    log: &Path,
    bridge: &str,
    mac: &str,
    cmdline: &str,
) -> String {
    format!(
        r#"<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='{mac}'/>
      <source bridge='{bridge}'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='{log}'/>
      <target port='0'/>
    </serial>
  </devices>
</domain>
"#,
        kernel = assets.join("vmlinuz").display(),
        initrd = assets.join("initrd.gz").display(),
        disk = disk.display(),
        log = log.display(),
    )
}

fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Value after `prefix` on the first console line starting with it.
fn marker<'a>(log: &'a str, prefix: &str) -> Option<&'a str> {
    log.lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix).map(str::trim))
}

#[test]
fn tiny_guest_boots_on_a_linux_bridge_and_answers_ping() {
    // --- preconditions: fail loudly, never skip ---
    let assets = assets_dir();
    for f in ["vmlinuz", "initrd.gz", "tiny.qcow2"] {
        assert!(
            assets.join(f).is_file(),
            "guest asset {} is missing: {HINT}",
            assets.join(f).display()
        );
    }
    let version = virsh(&["version"]);
    assert!(
        version.status.success(),
        "libvirt ({URI}) does not answer: {}\n{HINT}",
        String::from_utf8_lossy(&version.stderr).trim()
    );
    for tool in ["qemu-img", "ip", "ping"] {
        assert!(
            run(tool, &["-V"]).status.success() || run(tool, &["--version"]).status.success(),
            "{tool} is not installed: {HINT}"
        );
    }

    // --- names unique to this process ---
    let pid = std::process::id();
    let x = pick_subnet(pid);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut fx = Fixture {
        domain: format!("vf-e2e-boot-{pid}"),
        bridge: format!("vfg{pid}"), // <= 10 chars: under IFNAMSIZ
        dir: std::env::temp_dir().join(format!("vf-e2e-boot-{pid}-{nanos}")),
        domain_defined: false,
        bridge_created: false,
    };
    assert!(fx.bridge.len() <= 15);
    assert!(
        !domain_names().contains(&fx.domain),
        "domain {} already exists (left over from a killed run?)",
        fx.domain
    );
    assert!(
        !link_exists(&fx.bridge),
        "link {} already exists (left over from a killed run?)",
        fx.bridge
    );
    let host_ip = format!("10.199.{x}.1");
    let guest_ip = format!("10.199.{x}.10");
    let mac = format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        (pid >> 16) & 0xff,
        (pid >> 8) & 0xff,
        pid & 0xff
    );

    // --- bridge with a host address ---
    fx.bridge_created = true;
    must(
        "ip",
        &[
            "link",
            "add",
            "name",
            &fx.bridge,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ],
    );
    must(
        "ip",
        &["addr", "add", &format!("{host_ip}/24"), "dev", &fx.bridge],
    );
    must("ip", &["link", "set", "dev", &fx.bridge, "up"]);

    // --- overlay disk, domain ---
    fs::create_dir_all(&fx.dir).expect("create temp dir");
    let disk = fx.dir.join("root.qcow2");
    let log = fx.dir.join("console.log");
    let xml_path = fx.dir.join("domain.xml");
    let base = assets.join("tiny.qcow2");
    must(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "qcow2",
            disk.to_str().unwrap(),
        ],
    );
    let cmdline = format!(
        "console=ttyS0 vf.hostname=vfe2e vf.ip={guest_ip}/24 vf.gw={host_ip} vf.ping={host_ip}"
    );
    let xml = domain_xml(&fx.domain, &assets, &disk, &log, &fx.bridge, &mac, &cmdline);
    fs::write(&xml_path, &xml).expect("write domain xml");

    fx.domain_defined = true;
    let out = virsh(&["define", xml_path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "virsh define failed: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    let out = virsh(&["start", &fx.domain]);
    assert!(
        out.status.success(),
        "virsh start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // --- wait for the guest ---
    let console = loop {
        let text = read_log(&log);
        if text.contains("VF-READY") {
            break text;
        }
        if text.contains("Kernel panic") {
            panic!("guest kernel panicked:\n{}", tail(&text, 40));
        }
        if started.elapsed() > BOOT_TIMEOUT {
            panic!(
                "no VF-READY within {BOOT_TIMEOUT:?}; console log {}:\n{}",
                log.display(),
                tail(&text, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "guest {} ready after {:.1}s",
        fx.domain,
        started.elapsed().as_secs_f64()
    );
    let show = || tail(&console, 40);

    assert_eq!(
        marker(&console, "VF-IMAGE "),
        Some("tiny-v1"),
        "boot disk content marker:\n{}",
        show()
    );
    assert_eq!(marker(&console, "VF-NCPU "), Some("1"), "{}", show());
    let mem: u64 = marker(&console, "VF-MEMTOTAL ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VF-MEMTOTAL:\n{}", show()));
    assert!(
        (150_000..=262_144).contains(&mem),
        "VF-MEMTOTAL {mem} kB does not fit 256 MiB"
    );
    assert_eq!(
        marker(&console, "VF-NET eth0 "),
        Some(format!("{mac} {guest_ip}/24").as_str()),
        "{}",
        show()
    );
    assert!(
        console.contains(&format!("VF-PING {host_ip} ok")),
        "guest could not ping the host:\n{}",
        show()
    );
    assert!(console.contains("vfe2e login:"), "{}", show());

    // --- host -> guest ---
    let ping = run("ping", &["-c", "3", "-W", "2", &guest_ip]);
    assert!(
        ping.status.success(),
        "host cannot ping the guest at {guest_ip}:\n{}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );

    // --- teardown leaves nothing behind ---
    fx.cleanup();
    assert!(
        !domain_names().contains(&fx.domain),
        "domain {} leaked",
        fx.domain
    );
    assert!(!link_exists(&fx.bridge), "bridge {} leaked", fx.bridge);
    assert!(!fx.dir.exists(), "temp dir {} leaked", fx.dir.display());
}
