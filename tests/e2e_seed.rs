//! Real-host end-to-end checks of virtform's cloud-init NoCloud seeds
//! (`virtform::seed`) and of the tiny guest's volume markers.
//!
//! - The seed image is read back by independent readers: genisoimage's
//!   `isoinfo` (Rock Ridge, Joliet, volume label) and util-linux's `blkid`
//!   (what cloud-init uses to find `cidata`); our reader reads an image made
//!   by genisoimage.
//! - The guest kernel (Linux isofs) mounts the seed as a read-only virtio
//!   disk and shows every file line by line, under Rock Ridge, Joliet and
//!   plain ISO 9660 names; as an IDE cdrom it needs `vf.cdrom=1`.
//! - A blank volume hot-plugged with a serial gets a marker written by the
//!   guest (`vf.volwrite`), is resized live (the guest sees the new size),
//!   and a second domain on the same file reads the marker back.
//!
//! Needs root, running libvirtd (`qemu:///system`), the guest assets and
//! genisoimage: `scripts/test` provides all of them (it runs
//! `scripts/host-setup` and `scripts/build-guest` first). When they are
//! missing these tests FAIL with a message saying so; they never skip.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use virtform::seed::{IsoReader, SeedInput, SeedNic, seed_files, seed_hash, write_seed};

const URI: &str = "qemu:///system";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const DEVICE_TIMEOUT: Duration = Duration::from_secs(60);
const HINT: &str = "run scripts/test (it runs scripts/host-setup and scripts/build-guest first)";

// ---------------------------------------------------------------------------
// helpers (std only; every command is an argument vector, no shell)
// ---------------------------------------------------------------------------

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

fn must_virsh(args: &[&str]) {
    let out = virsh(args);
    assert!(
        out.status.success(),
        "virsh {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
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

fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Values after `prefix` on every console line starting with it.
fn markers<'a>(log: &'a str, prefix: &str) -> Vec<&'a str> {
    log.lines().filter_map(|l| l.strip_prefix(prefix)).collect()
}

/// Waits until the console log (from byte `from`) has a line equal to `line`;
/// returns the whole log.
fn wait_line(log: &Path, from: usize, line: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = read_log(log);
        if text.get(from..).unwrap_or("").lines().any(|l| l == line) {
            return text;
        }
        assert!(
            !text.contains("Kernel panic"),
            "guest kernel panicked:\n{}",
            tail(&text, 40)
        );
        assert!(
            start.elapsed() < timeout,
            "no console line {line:?} within {timeout:?}; console log {}:\n{}",
            log.display(),
            tail(&text, 40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn preconditions() -> PathBuf {
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
    let info = fs::read_to_string(assets.join("build-info.txt")).unwrap_or_default();
    let initrd = run("gzip", &["-dc", assets.join("initrd.gz").to_str().unwrap()]).stdout;
    let has = |needle: &[u8]| initrd.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(b"vf.volwrite") && has(b"VF-ISONAMES"),
        "the guest assets predate vf.volwrite/VF-VOL ({}): {HINT}",
        info.lines().next().unwrap_or("no build-info.txt")
    );
    assets
}

/// Everything a test creates. `cleanup` is idempotent and runs from `Drop`,
/// so a failed assertion still tears everything down.
struct Fixture {
    name: String,
    dir: PathBuf,
    domains: Vec<String>,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let pid = std::process::id();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("vf-e2e-seed-{tag}-{pid}");
        let dir = std::env::temp_dir().join(format!("{name}-{nanos}"));
        fs::create_dir_all(&dir).expect("create temp dir");
        Fixture {
            name,
            dir,
            domains: Vec::new(),
        }
    }

    /// Defines and starts a domain; returns its console log path.
    fn boot(&mut self, suffix: &str, cmdline: &str, extra_disks: &str) -> PathBuf {
        let assets = assets_dir();
        let domain = format!("{}{suffix}", self.name);
        assert!(
            !domain_names().contains(&domain),
            "domain {domain} already exists (left over from a killed run?)"
        );
        let disk = self.dir.join(format!("root{suffix}.qcow2"));
        must(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                assets.join("tiny.qcow2").to_str().unwrap(),
                "-F",
                "qcow2",
                disk.to_str().unwrap(),
            ],
        );
        let log = self.dir.join(format!("console{suffix}.log"));
        let xml = format!(
            r#"<domain type='qemu'>
  <name>{domain}</name>
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
{extra_disks}
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
        );
        let xml_path = self.dir.join(format!("domain{suffix}.xml"));
        fs::write(&xml_path, &xml).expect("write domain xml");
        self.domains.push(domain.clone());
        let out = virsh(&["define", xml_path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "virsh define failed: {}\n{xml}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = virsh(&["start", &domain]);
        assert!(
            out.status.success(),
            "virsh start {domain} failed: {}\n{xml}",
            String::from_utf8_lossy(&out.stderr)
        );
        log
    }

    fn cleanup(&mut self) {
        let mut left = Vec::new();
        for d in self.domains.drain(..) {
            let _ = virsh(&["destroy", &d]);
            let out = virsh(&["undefine", &d]);
            if !out.status.success() && domain_names().contains(&d) {
                eprintln!(
                    "cleanup: virsh undefine {d} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                left.push(d);
            }
        }
        self.domains = left;
        if self.dir.exists()
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            eprintln!("cleanup: cannot remove {}: {e}", self.dir.display());
        }
    }

    fn cleanup_and_check(&mut self) {
        let domains = self.domains.clone();
        self.cleanup();
        let now = domain_names();
        for d in domains {
            assert!(!now.contains(&d), "domain {d} leaked");
        }
        assert!(!self.dir.exists(), "{} leaked", self.dir.display());
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn seed_input(pid: u32) -> SeedInput {
    SeedInput {
        instance_id: format!("iid-e2e-{pid}"),
        hostname: "vfseed".into(),
        user_data: Some(
            "#cloud-config\n# set by the e2e test\nhostname: vfseed\nruncmd:\n  - [echo, 'on']\n"
                .into(),
        ),
        meta_data: None,
        network_config: None,
        ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2e e2e@virtform".into()],
        nics: vec![
            SeedNic {
                mac: "52:54:00:5e:ed:01".into(),
                ip: Some(("10.199.9.10".parse::<IpAddr>().unwrap(), 24)),
                gateway: Some("10.199.9.1".parse().unwrap()),
                dns: vec!["10.199.9.1".parse().unwrap()],
                mtu: Some(1400),
            },
            SeedNic {
                mac: "52:54:00:5e:ed:02".into(),
                ip: None,
                gateway: None,
                dns: Vec::new(),
                mtu: None,
            },
        ],
        ssh_host_key: None,
    }
}

fn text_of(files: &[(String, Vec<u8>)], name: &str) -> String {
    let (_, data) = files
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in the seed"));
    String::from_utf8(data.clone()).unwrap()
}

fn seed_disk_xml(path: &Path, device: &str, bus: &str, dev: &str) -> String {
    format!(
        "    <disk type='file' device='{device}'>\n      <driver name='qemu' type='raw'/>\n      \
         <source file='{}'/>\n      <target dev='{dev}' bus='{bus}'/>\n      <readonly/>\n    </disk>",
        path.display()
    )
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

/// No VM: the image as genisoimage's isoinfo and util-linux's blkid see it,
/// and our reader on an image genisoimage made.
#[test]
fn seed_image_reads_back_with_isoinfo_and_blkid() {
    for tool in ["isoinfo", "genisoimage"] {
        assert!(
            run(tool, &["--version"]).status.success() || run(tool, &["-version"]).status.success(),
            "{tool} is not installed (package genisoimage): {HINT}"
        );
    }
    let pid = std::process::id();
    let mut fx = Fixture::new("iso");
    let input = seed_input(pid);
    let path = fx.dir.join("seed/cidata.iso");
    let hash = write_seed(&path, &input).expect("write_seed");
    assert_eq!(hash, seed_hash(&input).unwrap());
    let p = path.to_str().unwrap();
    let files = seed_files(&input).unwrap();

    let d = must("isoinfo", &["-d", "-i", p]);
    assert!(d.contains("Volume id: cidata\n"), "{d}");
    assert!(d.contains("Joliet with UCS level 3 found"), "{d}");
    assert!(d.contains("Rock Ridge signatures version 1 found"), "{d}");
    let list = |flag: &str| -> Vec<String> {
        let mut v: Vec<String> = must("isoinfo", &[flag, "-f", "-i", p])
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let want = ["/meta-data", "/network-config", "/user-data"];
    assert_eq!(list("-R"), want, "Rock Ridge names");
    assert_eq!(list("-J"), want, "Joliet names");
    for (name, data) in &files {
        for flag in ["-R", "-J"] {
            let out = run("isoinfo", &[flag, "-x", &format!("/{name}"), "-i", p]);
            assert!(out.status.success());
            assert_eq!(&out.stdout, data, "isoinfo {flag} -x /{name}");
        }
    }
    let r = must("isoinfo", &["-R", "-l", "-i", p]);
    assert!(
        r.lines().filter(|l| l.starts_with("-r--r--r--")).count() == 3,
        "Rock Ridge modes:\n{r}"
    );

    let blkid = must("blkid", &["-p", "-o", "export", p]);
    assert!(blkid.lines().any(|l| l == "LABEL=cidata"), "{blkid}");
    assert!(blkid.lines().any(|l| l == "TYPE=iso9660"), "{blkid}");

    // our reader on genisoimage's image of the same files
    let src = fx.dir.join("src");
    fs::create_dir(&src).unwrap();
    for (name, data) in &files {
        fs::write(src.join(name), data).unwrap();
    }
    let gen_iso = fx.dir.join("genisoimage.iso");
    must(
        "genisoimage",
        &[
            "-quiet",
            "-V",
            "cidata",
            "-J",
            "-r",
            "-o",
            gen_iso.to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    let bytes = fs::read(&gen_iso).unwrap();
    let reader = IsoReader::new(&bytes).expect("read genisoimage's image");
    assert_eq!(reader.volume_id(), "cidata");
    assert_eq!(reader.joliet_volume_id(), Some("cidata"));
    let mut rr: Vec<String> = reader
        .rock_ridge_entries()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    rr.sort();
    let mut jo: Vec<String> = reader
        .joliet_entries()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    jo.sort();
    assert_eq!(rr, ["meta-data", "network-config", "user-data"]);
    assert_eq!(jo, rr);
    for (name, data) in &files {
        assert_eq!(reader.read_file(name).unwrap(), &data[..], "{name}");
    }

    fx.cleanup_and_check();
}

/// The guest kernel mounts the seed (a read-only virtio disk) and shows each
/// file line by line; Rock Ridge, Joliet and plain names as Linux lists them.
#[test]
fn guest_reads_the_seed_from_a_virtio_disk() {
    preconditions();
    let pid = std::process::id();
    let mut fx = Fixture::new("vd");
    let input = seed_input(pid);
    // the seed dir is created by write_seed (0700): the lead's layout
    let path = fx.dir.join("seeds/cidata.iso");
    write_seed(&path, &input).expect("write_seed");
    let files = seed_files(&input).unwrap();

    let started = Instant::now();
    let log = fx.boot(
        "",
        "console=ttyS0 vf.hostname=vfseed vf.isonames=1",
        &seed_disk_xml(&path, "disk", "virtio", "vdb"),
    );
    let console = wait_line(&log, 0, "VF-READY", BOOT_TIMEOUT);
    eprintln!(
        "{} ready after {:.1}s",
        fx.name,
        started.elapsed().as_secs_f64()
    );
    let show = || tail(&console, 60);

    assert_eq!(
        markers(&console, "VF-SEED "),
        ["vdb meta-data network-config user-data"],
        "{}",
        show()
    );
    let meta = markers(&console, "VF-SEED-META ");
    assert_eq!(
        meta.first().copied(),
        Some(format!("instance-id: \"iid-e2e-{pid}\"").as_str()),
        "{}",
        show()
    );
    assert_eq!(
        markers(&console, "VF-SEED-USER ").first().copied(),
        Some("#cloud-config"),
        "{}",
        show()
    );
    // every line of every file, as the guest read it
    for (file, prefix) in [
        ("meta-data", "VF-SEED-META "),
        ("user-data", "VF-SEED-USER "),
        ("network-config", "VF-SEED-NET "),
    ] {
        let want: Vec<String> = text_of(&files, file).lines().map(str::to_string).collect();
        let got: Vec<String> = markers(&console, prefix)
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(got, want, "{file} as the guest read it:\n{}", show());
    }
    assert!(
        markers(&console, "VF-SEED-USER ")
            .contains(&"- ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2e e2e@virtform"),
        "merged key:\n{}",
        show()
    );
    // the kernel's three name systems
    assert_eq!(
        markers(&console, "VF-ISONAMES vdb "),
        [
            "rock meta-data network-config user-data",
            "joliet meta-data network-config user-data",
            "plain meta_dat network_ user_dat",
        ],
        "{}",
        show()
    );
    assert!(!console.contains("VF-MODULE-FAIL"), "{}", show());

    fx.cleanup_and_check();
}

/// As an IDE cdrom the seed is sr0, readable only with `vf.cdrom=1` (the
/// guest loads ata_piix and sr_mod only then).
#[test]
fn guest_reads_the_seed_from_an_ide_cdrom_only_with_vf_cdrom() {
    preconditions();
    let pid = std::process::id();
    let mut fx = Fixture::new("cd");
    let input = seed_input(pid);
    let path = fx.dir.join("seeds/cidata.iso");
    write_seed(&path, &input).expect("write_seed");
    let cdrom = seed_disk_xml(&path, "cdrom", "ide", "hdc");

    let log = fx.boot("-a", "console=ttyS0 vf.cdrom=1", &cdrom);
    let console = wait_line(&log, 0, "VF-READY", BOOT_TIMEOUT);
    assert_eq!(
        markers(&console, "VF-SEED "),
        ["sr0 meta-data network-config user-data"],
        "{}",
        tail(&console, 40)
    );
    assert_eq!(
        markers(&console, "VF-SEED-META ").first().copied(),
        Some(format!("instance-id: \"iid-e2e-{pid}\"").as_str())
    );

    let log = fx.boot("-b", "console=ttyS0", &cdrom);
    let console = wait_line(&log, 0, "VF-READY", BOOT_TIMEOUT);
    assert!(
        markers(&console, "VF-SEED ").is_empty() && !console.contains("VF-DISK sr0"),
        "without vf.cdrom=1 the IDE cdrom should be invisible:\n{}",
        tail(&console, 40)
    );

    fx.cleanup_and_check();
}

/// vf.volwrite on a hot-plugged blank volume, a live resize seen by the
/// guest, and a second domain reading the marker back.
#[test]
fn volume_marker_survives_into_a_second_domain() {
    preconditions();
    let pid = std::process::id();
    let mut fx = Fixture::new("vol");
    let serial = format!("vfvol{pid}");
    let text = format!("marker-{pid}.v1");
    let vol = fx.dir.join("vol.raw");
    fs::File::create(&vol).unwrap().set_len(16 << 20).unwrap();
    let vol_xml = format!(
        "<disk type='file' device='disk'>\n  <driver name='qemu' type='raw'/>\n  <source file='{}'/>\n  \
         <target dev='vdb' bus='virtio'/>\n  <serial>{serial}</serial>\n</disk>\n",
        vol.display()
    );
    let cmdline = format!("console=ttyS0 vf.volwrite={serial}:{text}");

    // guest 1: boots without the volume; it is hot-plugged after VF-READY
    let log = fx.boot("-a", &cmdline, "");
    let console = wait_line(&log, 0, "VF-READY", BOOT_TIMEOUT);
    assert!(
        markers(&console, "VF-VOL ").is_empty(),
        "{}",
        tail(&console, 30)
    );
    let from = console.len();
    let xml_path = fx.dir.join("vol.xml");
    fs::write(&xml_path, &vol_xml).unwrap();
    let dom = format!("{}-a", fx.name);
    must_virsh(&["attach-device", &dom, xml_path.to_str().unwrap(), "--live"]);
    wait_line(
        &log,
        from,
        &format!("VF-VOL {serial} vdb 16777216 -"),
        DEVICE_TIMEOUT,
    );
    let console = wait_line(
        &log,
        from,
        &format!("VF-VOLWRITE {serial} {text} ok"),
        DEVICE_TIMEOUT,
    );
    assert!(
        console[from..].contains("VF-DISK vdb 16777216"),
        "{}",
        tail(&console, 20)
    );
    let head = fs::read(&vol).unwrap();
    assert_eq!(
        &head[..text.len() + 1],
        format!("{text}\n").as_bytes(),
        "marker on the host file"
    );
    assert!(
        head[text.len() + 1..512].iter().all(|&b| b == 0),
        "padded with zeros"
    );

    // live resize: the watch loop reports the new size
    let from = console.len();
    must_virsh(&["blockresize", &dom, "vdb", "32M"]);
    wait_line(&log, from, "VF-DISK vdb 33554432", DEVICE_TIMEOUT);
    wait_line(
        &log,
        from,
        &format!("VF-VOL {serial} vdb 33554432 {text}"),
        DEVICE_TIMEOUT,
    );
    must_virsh(&["destroy", &dom]);

    // guest 2: a new domain on the same file, volume attached at boot
    let log = fx.boot("-b", &cmdline, &vol_xml);
    let console = wait_line(&log, 0, "VF-READY", BOOT_TIMEOUT);
    assert_eq!(
        markers(&console, "VF-VOL "),
        [format!("{serial} vdb 33554432 {text}")],
        "{}",
        tail(&console, 30)
    );
    assert_eq!(
        markers(&console, "VF-VOLWRITE "),
        [format!("{serial} {text} skip")],
        "not blank: not written again"
    );

    fx.cleanup_and_check();
}
