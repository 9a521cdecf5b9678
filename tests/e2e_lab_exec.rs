//! The executor against the three-host lab (`scripts/lab up`; scripts/test
//! brings it up): commands with hostile argument vectors over SSH with
//! their exact bytes back, host keys checked against a known_hosts (a wrong
//! one refused, naming the host), remote file operations, and the libvirt,
//! OVS and links adapters acting inside one lab host and not in the root
//! namespace.
//!
//! These tests FAIL (never skip) when the lab is down.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use virtform::host::exec::{Executor, FileKind, FileStat, Input, SshTarget};
use virtform::host::libvirt::{Libvirt, VirtLibvirt};
use virtform::host::links::{IpLinks, LinkHost, LinkOp};
use virtform::host::ovs::{Ovs, OvsOp, Vsctl, bridge_ops};

const LAB_HINT: &str = "run scripts/lab up (scripts/test does)";

fn lab_dir() -> PathBuf {
    std::env::var_os("VIRTFORM_LAB_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/lib/virtform-lab"))
}

fn address(host: &str) -> &'static str {
    match host {
        "vflab-a" => "10.99.0.11",
        "vflab-b" => "10.99.0.12",
        "vflab-c" => "10.99.0.13",
        _ => panic!("no lab host {host}"),
    }
}

fn target(host: &str) -> SshTarget {
    assert!(common::is_root(), "the lab tests need root: {LAB_HINT}");
    let dir = lab_dir();
    for f in ["id_ed25519", "known_hosts"] {
        assert!(dir.join(f).is_file(), "{} is missing: the lab is down; {LAB_HINT}", dir.join(f).display());
    }
    // as a host block's uri will name it
    SshTarget::from_libvirt_uri(host, &format!("qemu+ssh://root@{}/system", address(host)), dir.join("id_ed25519"), dir.join("known_hosts")).unwrap()
}

/// Held while a session connects (which removes the directories of dead
/// processes' sessions): `lab_a_killed_process_leaves_no_master` holds it
/// to see a dead process's directory before the next session removes it.
static CONNECTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// An executor on a lab host; panics (the test fails) when the lab is down.
fn connect(host: &str) -> Executor {
    let _one = CONNECTING.lock().unwrap_or_else(|p| p.into_inner());
    Executor::ssh(target(host)).unwrap_or_else(|e| panic!("cannot reach lab host {host}: {e}\n{LAB_HINT}"))
}

fn unique(tag: &str) -> String {
    format!("vflab-{tag}-{}", std::process::id())
}

fn hostile() -> Vec<Vec<u8>> {
    vec![
        b"plain".to_vec(),
        b"".to_vec(),
        b"with space".to_vec(),
        b"it's".to_vec(),
        b"\"double\" 'single'".to_vec(),
        b"$(touch /tmp/vflab-pwned)".to_vec(),
        b"`touch /tmp/vflab-pwned2`".to_vec(),
        b"a; touch /tmp/vflab-pwned3".to_vec(),
        b"line1\nline2\n".to_vec(),
        b"--leading-dashes".to_vec(),
        b"-oProxyCommand=touch /tmp/vflab-pwned4".to_vec(),
        b"back\\slash \\' \\\"".to_vec(),
        b"$HOME ${PATH} * ?".to_vec(),
        b"tab\there|pipe&amp>redir<in #hash ~tilde".to_vec(),
        vec![0xff, 0xfe, b'x', 0x80, b'\''],
        "ünïcødé".as_bytes().to_vec(),
    ]
}

#[test]
fn lab_ssh_runs_hostile_argv_with_exact_bytes() {
    let a = connect("vflab-a");
    let args = hostile();
    let mut argv: Vec<&OsStr> = vec![OsStr::new("printf"), OsStr::new("%s\\0")];
    argv.extend(args.iter().map(|x| OsStr::from_bytes(x)));
    let out = a.run_bytes("echo", "hostile argv", &argv, Input::None).expect("printf over ssh");
    let mut expected = Vec::new();
    for x in &args {
        expected.extend_from_slice(x);
        expected.push(0);
    }
    assert_eq!(out, expected, "every argument arrives as one word with its exact bytes");

    // A program name with a leading dash or a space is a name, not an option or two words.
    let e = a.run("run", "x", "-oProxyCommand=x y", &[], None).unwrap_err();
    assert!(e.message.contains("not found") && e.op.contains("vflab-a"), "{e}");

    // Standard input, binary, both ways; the hostname proves where it ran.
    let data: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    assert_eq!(a.run_bytes("cat", "stdin", &[OsStr::new("cat")], Input::Bytes(&data)).unwrap(), data);
    assert_eq!(a.run("hostname", "x", "hostname", &[], None).unwrap().trim(), "vflab-a");

    // Exit codes come through; a failure names the host.
    let o = a.output("exit", "x", &[OsStr::new("sh"), OsStr::new("-c"), OsStr::new("echo oops >&2; exit 7")], Input::None).unwrap();
    assert_eq!(o.code, Some(7));
    let e = a.run("read", "/nonexistent", "cat", &["/nonexistent"], None).unwrap_err();
    assert_eq!(e.op, "read on vflab-a");
    assert!(e.message.contains("No such file"), "{e}");

    for f in ["/tmp/vflab-pwned", "/tmp/vflab-pwned2", "/tmp/vflab-pwned3", "/tmp/vflab-pwned4"] {
        assert_eq!(a.stat(Path::new(f)).unwrap(), None, "{f} was created on the remote host");
        assert!(!Path::new(f).exists(), "{f} was created locally");
    }
}

#[test]
fn lab_wrong_known_hosts_is_refused_naming_the_host() {
    let dir = common::tempdir("vflab-kh-");
    // vflab-b's key under vflab-a's address: a changed host key.
    let real = std::fs::read_to_string(lab_dir().join("known_hosts")).unwrap_or_else(|e| panic!("lab known_hosts: {e}; {LAB_HINT}"));
    let b_key = real.lines().find(|l| l.starts_with("10.99.0.12")).expect("vflab-b in the lab's known_hosts");
    let (_, key) = b_key.split_once(' ').unwrap();
    let wrong = dir.path().join("known_hosts");
    std::fs::write(&wrong, format!("10.99.0.11,vflab-a {key}\n")).unwrap();
    let mut t = target("vflab-a");
    t.known_hosts = wrong.clone();
    let e = { let _one = CONNECTING.lock().unwrap_or_else(|p| p.into_inner()); Executor::ssh(t) }.expect_err("a wrong host key must be refused");
    assert_eq!(e.object, "vflab-a");
    assert!(e.message.contains("host key of vflab-a") && e.message.contains("refused") && e.message.contains(&wrong.display().to_string()), "{e}");
    assert!(e.hint.as_deref().unwrap_or("").contains("never trusts a host key on first use"), "{e:?}");

    // An empty known_hosts: unknown is refused too (no trust on first use), and nothing is added to it.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let mut t = target("vflab-a");
    t.known_hosts = empty.clone();
    let e = { let _one = CONNECTING.lock().unwrap_or_else(|p| p.into_inner()); Executor::ssh(t) }.expect_err("an unknown host key must be refused");
    assert!(e.message.contains("host key of vflab-a") && e.message.contains("refused"), "{e}");
    assert_eq!(std::fs::read(&empty).unwrap(), b"", "known_hosts must stay untouched");

    // The same known_hosts with the right key connects.
    assert_eq!(connect("vflab-a").run("hostname", "x", "hostname", &[], None).unwrap().trim(), "vflab-a");
}

#[test]
fn lab_files_round_trip_remotely() {
    let a = connect("vflab-a");
    // /var/lib/virtform is private to each lab host: the root namespace must not see the files.
    let root = PathBuf::from("/var/lib/virtform").join(unique("files"));
    let sub = root.join("a b").join("it's $(x)");
    a.mkdir_all(&sub, 0o711).expect("mkdir remotely");
    assert_eq!(a.stat(&sub).unwrap().map(|s| (s.kind, s.mode)), Some((FileKind::Dir, 0o711)));
    assert!(!root.exists(), "{} exists in the root namespace", root.display());

    let f = sub.join("state;\nfile");
    assert_eq!(a.read_opt(&f).unwrap(), None);
    let data = b"first\n\x00\xff'\"".to_vec();
    a.write_atomic(&f, &data, 0o600).unwrap();
    assert_eq!(a.read(&f).unwrap(), data);
    assert_eq!(a.stat(&f).unwrap(), Some(FileStat { kind: FileKind::File, len: data.len() as u64, mode: 0o600 }));
    a.write_atomic(&f, b"second", 0o640).unwrap();
    assert_eq!(a.read(&f).unwrap(), b"second");
    assert_eq!(a.stat(&f).unwrap().unwrap().mode, 0o640);
    // Many paths stated in one command read what one each reads: hostile
    // names (a newline, quotes, a leading dash), a directory, missing ones.
    let mut paths: Vec<PathBuf> = vec![f.clone(), sub.clone(), sub.join("missing"), root.join("no").join("such")];
    for (i, h) in hostile().into_iter().enumerate().filter(|(_, h)| !h.is_empty() && !h.contains(&b'/')) {
        let p = sub.join(OsStr::from_bytes(&h));
        if i % 2 == 0 {
            a.write_atomic(&p, b"x", 0o644).unwrap();
        }
        paths.push(p);
    }
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let many = a.stat_many(&refs).expect("stat_many");
    let one: Vec<Option<FileStat>> = refs.iter().map(|p| a.stat(p).unwrap()).collect();
    assert_eq!(many, one);
    assert!(many.iter().filter(|s| s.is_some()).count() >= 4 && many.iter().filter(|s| s.is_none()).count() >= 4, "{many:?}");
    for p in &paths[4..] {
        a.remove_file(p).unwrap();
    }
    let g = sub.join("renamed");
    a.rename(&f, &g).unwrap();
    assert_eq!(a.stat(&f).unwrap(), None);
    assert_eq!(a.read(&g).unwrap(), b"second");

    // An image copied with its sha256 checked there; once only.
    let local = common::tempdir("vflab-img-");
    let src = local.path().join("img.qcow2");
    let img: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &img).unwrap();
    let dst = sub.join("img.qcow2");
    assert!(a.copy_image(&src, &dst, None, 0o644).unwrap(), "copied");
    assert_eq!(a.sha256(&dst).unwrap(), Executor::Local.sha256(&src).unwrap());
    assert_eq!(a.stat(&dst).unwrap().unwrap().mode, 0o644);
    assert!(!a.copy_image(&src, &dst, None, 0o644).unwrap(), "already there: not copied again");
    let bad = sub.join("bad.qcow2");
    let e = a.copy_image(&src, &bad, Some(&"ab".repeat(32)), 0o644).unwrap_err();
    assert!(e.message.contains("expected abab") && e.op.contains("vflab-a"), "{e}");
    assert_eq!(a.stat(&bad).unwrap(), None, "no file under the final name");

    a.remove_file(&g).unwrap();
    a.remove_file(&g).unwrap();
    a.remove_file(&dst).unwrap();
    let left = a.run("list", "x", "ls", &["-A", &sub.to_string_lossy()], None).unwrap();
    assert_eq!(left, "", "no temporary or part file left");
    a.run("clean up", "x", "rm", &["-r", "--", &root.to_string_lossy()], None).unwrap();
    assert_eq!(a.stat(&root).unwrap(), None);
}

#[test]
fn lab_libvirt_defines_lists_undefines_on_vflab_b() {
    let b = connect("vflab-b");
    let lv = VirtLibvirt::open_on(&b, common::URI).unwrap_or_else(|e| panic!("libvirt on vflab-b: {e}\n{LAB_HINT}"));
    assert!(lv.uri().starts_with("qemu+ssh://root@10.99.0.12:22/system?keyfile="), "{}", lv.uri());
    let name = unique("dom");
    let xml = format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>"
    );
    struct Undefine<'a>(&'a VirtLibvirt, &'a str);
    impl Drop for Undefine<'_> {
        fn drop(&mut self) {
            let _ = self.0.undefine(self.1);
        }
    }
    let uuid = lv.define(&xml).expect("define on vflab-b");
    let _guard = Undefine(&lv, &name);
    assert!(!uuid.is_empty());
    let names: Vec<String> = lv.domains().unwrap().into_iter().map(|d| d.name).collect();
    assert!(names.contains(&name), "{names:?}");
    assert!(!common::domain_names().contains(&name), "the root namespace's libvirtd must not have {name}");
    let over_ssh = b.run("virsh", &name, "virsh", &["-c", "qemu:///system", "list", "--all", "--name"], None).unwrap();
    assert!(over_ssh.lines().any(|l| l.trim() == name), "{over_ssh}");
    let c = connect("vflab-c");
    let other = c.run("virsh", &name, "virsh", &["-c", "qemu:///system", "list", "--all", "--name"], None).unwrap();
    assert!(!other.lines().any(|l| l.trim() == name), "vflab-c has vflab-b's domain: {other}");
    lv.undefine(&name).expect("undefine");
    assert!(lv.domain(&name).unwrap().is_none());
}

#[test]
fn lab_ovs_and_links_act_inside_vflab_c_only() {
    let c = connect("vflab-c");
    let ovs = Vsctl::on(&c);
    ovs.check().unwrap_or_else(|e| panic!("OVS on vflab-c: {e}\n{LAB_HINT}"));
    let n = std::process::id() % 100_000;
    let obr = format!("vflo{n}");
    let lbr = format!("vfll{n}");
    struct Cleanup {
        exec: Executor,
        obr: String,
        lbr: String,
    }
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = self.exec.run("clean up", &self.obr, "ovs-vsctl", &["--if-exists", "del-br", &self.obr], None);
            let _ = self.exec.run("clean up", &self.lbr, "ip", &["link", "del", &self.lbr], None);
        }
    }
    let _cleanup = Cleanup { exec: c.clone(), obr: obr.clone(), lbr: lbr.clone() };
    let marker = format!("virtform:vflab:network.{n}");

    // OVS bridge (userspace datapath) inside vflab-c
    let state = ovs.state().unwrap();
    ovs.apply(&bridge_ops(&state, &obr, Some("netdev"), &marker)).expect("create OVS bridge on vflab-c");
    let state = ovs.state().unwrap();
    assert_eq!(state.bridge_owner(&obr), Some(("vflab".to_string(), format!("network.{n}"))));
    let local = Vsctl::default().state().unwrap_or_default();
    assert!(!local.bridges.contains_key(&obr), "the root namespace's OVS has {obr}");

    // Linux bridge inside vflab-c through the links adapter (ip -batch over SSH)
    let links = IpLinks::on(&c);
    links
        .apply(&[
            LinkOp::CreateBridge { name: lbr.clone(), alias: marker.clone(), mtu: Some(1400), stp: false, forward_delay_cs: 0, mcast_snooping: false },
            LinkOp::SetUp { name: lbr.clone() },
            LinkOp::DisableIpv6 { name: lbr.clone() },
        ])
        .expect("create Linux bridge on vflab-c");
    let seen = links.list().unwrap();
    let l = seen.iter().find(|l| l.name == lbr).expect("the bridge on vflab-c");
    assert_eq!(l.mtu, 1400);
    assert_eq!(l.owner(), Some(("vflab", format!("network.{n}").as_str())));
    assert_eq!(l.ipv6_disabled, Some(true), "disable_ipv6 read back over SSH");
    assert!(!common::link_names().contains(&lbr), "the root namespace has {lbr}");
    assert!(!common::link_names().contains(&obr), "the root namespace has {obr}");
    let b = connect("vflab-b");
    assert!(IpLinks::on(&b).list().unwrap().iter().all(|l| l.name != lbr), "vflab-b has vflab-c's bridge");

    // and deleted again
    ovs.apply(&[OvsOp::DelBridge { name: obr.clone() }]).expect("delete OVS bridge");
    links.apply(&[LinkOp::Delete { name: lbr.clone() }]).expect("delete Linux bridge");
    assert!(!ovs.state().unwrap().bridges.contains_key(&obr));
    assert!(links.list().unwrap().iter().all(|l| l.name != lbr));
}

#[test]
fn lab_sessions_end_their_master() {
    // Dropping the last clone ends the ControlMaster and removes its private directory.
    let a = connect("vflab-a");
    let uri = a.libvirt_uri(common::URI);
    let wrapper = uri.split("command=").nth(1).expect("command= in the URI").to_string();
    assert!(Path::new(&wrapper).is_file(), "{wrapper}");
    let a2 = a.clone();
    drop(a);
    assert_eq!(a2.run("hostname", "x", "hostname", &[], None).unwrap().trim(), "vflab-a", "a clone keeps the session");
    drop(a2);
    assert!(!Path::new(&wrapper).exists(), "the session's directory is removed with it");
}

#[test]
fn lab_disks_adapter_makes_overlays_on_vflab_a() {
    use virtform::host::disks;
    use virtform::model::disk::DiskFormat;
    use virtform::model::image::ImageFormat;
    let base_local = common::assets_dir().join("tiny.qcow2");
    assert!(base_local.is_file(), "{} is missing: {}", base_local.display(), common::HINT);
    let a = connect("vflab-a");
    let root = PathBuf::from("/var/lib/virtform").join(unique("disks"));
    struct Rm(Executor, PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = self.0.run("clean up", "x", "rm", &["-rf", "--", &self.1.to_string_lossy()], None);
        }
    }
    let _rm = Rm(a.clone(), root.clone());
    let base = root.join("images").join("tiny.qcow2");
    disks::ensure_dir_on(&a, base.parent().unwrap()).unwrap();
    assert_eq!(a.stat(&root).unwrap().map(|s| s.mode), Some(0o711));
    assert_eq!(a.stat(base.parent().unwrap()).unwrap().map(|s| (s.kind, s.mode)), Some((FileKind::Dir, 0o711)));
    // An existing level keeps its mode; a file in the way is named.
    a.run("chmod", "x", "chmod", &["750", "--", &root.to_string_lossy()], None).unwrap();
    disks::ensure_dir_on(&a, &root.join("deeper").join("still")).unwrap();
    assert_eq!(a.stat(&root).unwrap().map(|s| s.mode), Some(0o750), "an existing directory's mode is left alone");
    assert_eq!(a.stat(&root.join("deeper").join("still")).unwrap().map(|s| s.mode), Some(0o711));
    a.run("chmod", "x", "chmod", &["711", "--", &root.to_string_lossy()], None).unwrap();
    a.write_atomic(&root.join("file"), b"x", 0o644).unwrap();
    let e = disks::ensure_dir_on(&a, &root.join("file").join("sub")).unwrap_err();
    assert!(e.message.contains("exists and is not a directory") && e.object.ends_with("/file"), "{e}");
    assert!(a.copy_image(&base_local, &base, None, 0o644).unwrap());
    let local_info = disks::inspect(&base_local).unwrap();
    let remote_info = disks::inspect_on(&a, &base).unwrap();
    assert_eq!((remote_info.format, remote_info.virtual_size), (local_info.format, local_info.virtual_size));

    // overlay, grown, idempotent; read back by the remote qemu-img too
    let disk = root.join("stack").join("disks").join("root@a b.qcow2");
    let size = local_info.virtual_size + (64 << 20);
    disks::create_overlay_on(&a, &disk, &base, ImageFormat::Qcow2, Some(size)).expect("overlay on vflab-a");
    disks::create_overlay_on(&a, &disk, &base, ImageFormat::Qcow2, Some(size)).expect("again: already done");
    let info = disks::inspect_on(&a, &disk).unwrap();
    assert_eq!(info.backing_file.as_deref(), Some(&*base.to_string_lossy()));
    assert_eq!(info.virtual_size, size);
    assert_eq!(a.stat(&disk).unwrap().map(|s| s.mode), Some(0o600));
    let qi = a.run("qemu-img info", "x", "qemu-img", &["info", "--output=json", &disk.to_string_lossy()], None).unwrap();
    assert!(qi.contains(&format!("\"virtual-size\": {size}")), "{qi}");
    assert!(!disk.exists() && !root.exists(), "nothing in the root namespace");
    let e = disks::create_overlay_on(&a, &disk, &base, ImageFormat::Qcow2, Some(size + 1)).unwrap_err();
    assert!(e.op.contains("vflab-a") && e.message.contains("already exists"), "{e}");

    // blank raw and qcow2 disks, grown
    let raw = root.join("stack").join("disks").join("data.raw");
    disks::create_blank_on(&a, &raw, DiskFormat::Raw, 8 << 20).unwrap();
    assert_eq!(disks::inspect_on(&a, &raw).unwrap().virtual_size, 8 << 20);
    let q = root.join("stack").join("disks").join("data.qcow2");
    disks::create_blank_on(&a, &q, DiskFormat::Qcow2, 8 << 20).unwrap();

    // The fast path a run's disk steps take: one command, the same overlay.
    let fresh = root.join("stack").join("disks").join("fresh@x.qcow2");
    disks::create_overlay_fresh_on(&a, &fresh, &base, &remote_info, Some(size)).expect("fresh overlay on vflab-a");
    let f = disks::inspect_on(&a, &fresh).unwrap();
    assert_eq!((f.backing_file.as_deref(), f.virtual_size), (Some(&*base.to_string_lossy()), size));
    assert_eq!(a.stat(&fresh).unwrap().map(|s| s.mode), Some(0o600));
    // It never replaces a file: one at the path is left as it was.
    let taken = root.join("stack").join("disks").join("taken.qcow2");
    a.write_atomic(&taken, b"someone else's", 0o644).unwrap();
    let e = disks::create_overlay_fresh_on(&a, &taken, &base, &remote_info, None).unwrap_err();
    assert!(e.message.contains("File exists"), "{e}");
    assert_eq!(a.read(&taken).unwrap(), b"someone else's");
    disks::remove_on(&a, &taken).unwrap();
    // Many files inspected in two commands read what one each reads: qcow2
    // overlays, a blank raw file, a file shorter than the 4 KiB batch read.
    let short = root.join("stack").join("disks").join("short");
    a.run("write", "x", "tee", &["--", &short.to_string_lossy()], Some(b"not an image")).unwrap();
    let all = [disk.as_path(), raw.as_path(), q.as_path(), fresh.as_path(), short.as_path(), base.as_path()];
    let many = disks::inspect_many_on(&a, &all);
    for (p, m) in all.iter().zip(&many) {
        assert_eq!(m.as_ref().ok(), disks::inspect_on(&a, p).as_ref().ok(), "{}", p.display());
        assert!(m.is_ok(), "{}: {m:?}", p.display());
    }
    // One file gone: the batch falls back to one inspection each, and says which.
    let gone = root.join("stack").join("disks").join("gone");
    let with_gone = [disk.as_path(), gone.as_path()];
    let r = disks::inspect_many_on(&a, &with_gone);
    assert!(r[0].is_ok() && r[1].as_ref().unwrap_err().message == "does not exist", "{r:?}");
    for p in [&fresh, &short] {
        disks::remove_on(&a, p).unwrap();
    }
    disks::resize_on(&a, &q, 16 << 20).unwrap();
    assert_eq!(disks::inspect_on(&a, &q).unwrap().virtual_size, 16 << 20);
    assert!(disks::resize_on(&a, &q, 1 << 20).unwrap_err().message.contains("cannot shrink"));
    for p in [&disk, &raw, &q] {
        disks::remove_on(&a, p).unwrap();
        assert_eq!(a.stat(p).unwrap(), None);
    }
    let left = a.run("list", "x", "ls", &["-A", &root.join("stack").join("disks").to_string_lossy()], None).unwrap();
    assert_eq!(left, "", "no .part file left");
}

#[test]
fn lab_many_threads_share_one_connection() {
    // More parallel commands than sshd's MaxSessions (10 in the lab, the
    // default), with libvirt connections on the same SSH connection.
    let a = connect("vflab-a");
    let lv = VirtLibvirt::open_on(&a, common::URI).expect("libvirt on vflab-a");
    let results: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..24)
            .map(|i| {
                let a = a.clone();
                let lv = &lv;
                s.spawn(move || {
                    if i % 6 == 0 {
                        lv.domains().map(|d| format!("domains {}", d.len())).unwrap_or_else(|e| format!("libvirt: {e}"))
                    } else {
                        a.run("echo", "x", "sh", &["-c", "sleep 0.2; echo \"$1\"", "sh", &format!("n{i}")], None).unwrap_or_else(|e| format!("error {e}"))
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in results.iter().enumerate() {
        if i % 6 == 0 {
            assert!(r.starts_with("domains "), "{r}");
        } else {
            assert_eq!(r.trim(), format!("n{i}"));
        }
    }
    let uri = a.libvirt_uri(common::URI);
    let dir = Path::new(uri.split("command=").nth(1).unwrap()).parent().unwrap().to_string_lossy().into_owned();
    let masters = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| {
            let c = String::from_utf8_lossy(c);
            c.starts_with("ssh\0") && c.contains("\0-M\0") && c.contains(&dir)
        })
        .count();
    assert_eq!(masters, 1, "one ControlMaster for the session");
}

#[test]
fn lab_seed_written_on_vflab_b() {
    use virtform::seed::{IsoReader, SeedInput, write_seed, write_seed_on};
    let b = connect("vflab-b");
    let input = SeedInput {
        instance_id: "iid-vflab".into(),
        hostname: "vflab-guest".into(),
        user_data: Some("#cloud-config\nhostname: vflab-guest\n".into()),
        meta_data: None,
        network_config: None,
        ssh_authorized_keys: vec![],
        nics: vec![],
        ssh_host_key: None,
    };
    let root = PathBuf::from("/var/lib/virtform").join(unique("seed"));
    let path = root.join("stack").join("seeds").join("web-abc.iso");
    let hash = write_seed_on(&b, &path, &input).expect("seed on vflab-b");
    assert_eq!(write_seed_on(&b, &path, &input).unwrap(), hash, "unchanged: same hash");
    let iso = b.read(&path).unwrap();
    assert_eq!(IsoReader::new(&iso).unwrap().read_file("user-data").unwrap(), b"#cloud-config\nhostname: vflab-guest\n");
    assert_eq!(b.stat(&path).unwrap().map(|s| s.mode), Some(0o600));
    assert_eq!(b.stat(&root.join("stack")).unwrap().map(|s| s.mode), Some(0o711));
    // the same bytes as the local writer's
    let local = common::tempdir("vflab-seed-");
    let lp = local.path().join("web.iso");
    assert_eq!(write_seed(&lp, &input).unwrap(), hash);
    assert_eq!(std::fs::read(&lp).unwrap(), iso);
    b.run("clean up", "x", "rm", &["-r", "--", &root.to_string_lossy()], None).unwrap();
    assert!(!root.exists());
}

/// The child's side of `lab_a_killed_process_leaves_no_master`: connects,
/// prints the session's directory, and waits to be killed.
fn connect_and_wait_to_be_killed() {
    let a = connect("vflab-a");
    let uri = a.libvirt_uri(common::URI);
    let dir = Path::new(uri.split("command=").nth(1).unwrap()).parent().unwrap().to_path_buf();
    println!("SESSION-DIR {}", dir.display());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(120));
}

/// Env var that turns this test, re-run in a child process, into the child.
const KILLED_CHILD: &str = "VFLAB_KILLED_CHILD";

#[test]
fn lab_a_killed_process_leaves_no_master() {
    use std::io::BufRead;
    if std::env::var_os(KILLED_CHILD).is_some() {
        return connect_and_wait_to_be_killed();
    }
    target("vflab-a");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "lab_a_killed_process_leaves_no_master", "--nocapture", "--test-threads=1"])
        .env(KILLED_CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut dir = None;
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // libtest prints "test NAME ... " before the child's own output
        if let Some((_, d)) = line.split_once("SESSION-DIR ") {
            dir = Some(d.trim().to_string());
            break;
        }
    }
    let dir = dir.expect("the child connected to vflab-a");
    let masters = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|c| {
                let c = String::from_utf8_lossy(c);
                c.starts_with("ssh\0") && c.contains("\0-M\0") && c.contains(&dir)
            })
            .count()
    };
    assert_eq!(masters(), 1, "the child's master runs");
    let connecting = CONNECTING.lock().unwrap_or_else(|p| p.into_inner());
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while masters() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(masters(), 0, "the master of a killed process ended on its own");
    // Its private directory stayed (nothing ran to remove it); the next session removes it.
    assert!(Path::new(&dir).exists());
    drop(connecting);
    drop(connect("vflab-a"));
    assert!(!Path::new(&dir).exists(), "the next session removes a dead process's directory");
}

#[test]
fn lab_a_remote_lock_records_its_holder_and_excludes_a_second_taker() {
    let a = connect("vflab-a");
    let dir = PathBuf::from("/var/lib/virtform").join(unique("lock"));
    a.mkdir_all(&dir, 0o755).unwrap();
    let path = dir.join(".lock");
    let held = a.try_lock(&path, "virtform test-machine 4242").unwrap().expect("a free lock is taken");
    assert_eq!(a.read(&path).unwrap(), b"virtform test-machine 4242\n", "the lock file names its holder");
    // A second session (another run) finds it held, and does not change it.
    let b = connect("vflab-a");
    assert!(b.try_lock(&path, "virtform other 1").unwrap().is_none(), "held");
    assert_eq!(a.read(&path).unwrap(), b"virtform test-machine 4242\n");
    assert!(a.try_lock(&path, "two\nlines").is_err(), "a holder line with a newline is refused");
    drop(held);
    let again = b.try_lock(&path, "virtform other 1").unwrap().expect("released when dropped");
    assert_eq!(b.read(&path).unwrap(), b"virtform other 1\n");
    drop(again);
    a.run("clean up", "x", "rm", &["-r", "--", &dir.to_string_lossy()], None).unwrap();
}

/// A guest port is probed and reached from the host, through its SSH
/// master: vflab-a connects to vflab-c's sshd; a port open on this
/// machine's loopback is closed on vflab-a's; the loopback port here joins
/// one connection to vflab-c's sshd (its banner comes back) and refuses a
/// second; a closed port there is a closed connection here.
#[test]
fn lab_guest_ports_are_probed_and_reached_through_the_hosts_master() {
    use std::io::Read;
    use std::time::Duration;
    let a = connect("vflab-a");
    let c: std::net::IpAddr = address("vflab-c").parse().unwrap();
    let t = Duration::from_secs(10);
    assert_eq!(a.probe_tcp(c, 22, t), Ok(()), "vflab-a reaches vflab-c's sshd");
    let here = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = here.local_addr().unwrap().port();
    assert_eq!(virtform::host::exec::Executor::Local.probe_tcp("127.0.0.1".parse().unwrap(), port, t), Ok(()));
    let e = a.probe_tcp("127.0.0.1".parse().unwrap(), port, t).expect_err("vflab-a's loopback is not this machine's");
    assert!(e.contains(&format!("vflab-a could not connect to 127.0.0.1:{port}")), "{e}");

    let reach = a.reach_tcp(c, 22).unwrap();
    assert!(reach.addr.ip().is_loopback(), "{:?}", reach.addr);
    let mut s = std::net::TcpStream::connect(reach.addr).unwrap();
    s.set_read_timeout(Some(t)).unwrap();
    let mut banner = [0u8; 8];
    s.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-", "vflab-c's sshd answers through the forward");
    // One connection per port: the listener is gone.
    std::thread::sleep(Duration::from_millis(100));
    assert!(std::net::TcpStream::connect(reach.addr).is_err(), "a second connection was accepted");
    drop(s);
    drop(reach);

    let closed = a.reach_tcp(c, 1).unwrap();
    let mut s = std::net::TcpStream::connect(closed.addr).unwrap();
    s.set_read_timeout(Some(t)).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).map_err(|e| e.kind()), Ok(0), "a closed port there is a closed connection here");
}

/// Two lab hosts' OVS bridges of this test, deleted however it ends.
struct VxlanBridges(Vec<(Executor, String)>);

impl Drop for VxlanBridges {
    fn drop(&mut self) {
        for (x, br) in &self.0 {
            let _ = x.run("test cleanup", br, "ovs-vsctl", &["--timeout=10", "--if-exists", "del-br", br], None);
        }
    }
}

/// The proof `backend = "ovs"` overlays need (issue 17, item 4): the
/// userspace datapath carries VXLAN between lab hosts when the tunnel's
/// source address is on an OVS bridge (the lab's br-phy, on the tunnel
/// underlay). An OVS bridge on vflab-a and one on vflab-b, each with a
/// VXLAN port to the other's br-phy address and an internal port with an
/// address on one segment: they ping each other across the tunnel.
#[test]
fn lab_ovs_userspace_vxlan_joins_two_hosts_over_the_tunnel_underlay() {
    let pid = std::process::id();
    let br = format!("vfvx{}", pid % 100_000);
    let net = format!("10.97.{}", pid % 200 + 20);
    let mut made = VxlanBridges(Vec::new());
    for (h, me, peer, n) in [("vflab-a", "10.98.0.11", "10.98.0.12", 1), ("vflab-b", "10.98.0.12", "10.98.0.11", 2)] {
        let x = connect(h);
        let phy = x.run("test", "br-phy", "ip", &["-br", "addr", "show", "dev", "br-phy"], None).unwrap_or_else(|e| panic!("{h} has no br-phy (the tunnel underlay): {e}\n{LAB_HINT}"));
        assert!(phy.contains(me), "{h}'s tunnel address on br-phy: {phy}");
        made.0.push((x.clone(), br.clone()));
        let (vx, t) = (format!("{br}x"), format!("{br}t"));
        let remote = format!("options:remote_ip={peer}");
        x.run("test", &br, "ovs-vsctl", &["--timeout=10", "add-br", &br, "--", "set", "bridge", &br, "datapath_type=netdev",
            "--", "add-port", &br, &vx, "--", "set", "interface", &vx, "type=vxlan", &remote, "options:key=5999",
            "--", "add-port", &br, &t, "--", "set", "interface", &t, "type=internal"], None).unwrap();
        for _ in 0..50 {
            if x.run("test", &t, "ip", &["link", "show", "dev", &t], None).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        x.run("test", &t, "ip", &["addr", "add", &format!("{net}.{n}/24"), "dev", &t], None).unwrap();
        x.run("test", &t, "ip", &["link", "set", "dev", &t, "up"], None).unwrap();
    }
    let a = &made.0[0].0;
    let ping = a.run("test", "ping", "ping", &["-c", "3", "-W", "2", &format!("{net}.2")], None);
    assert!(ping.as_ref().is_ok_and(|o| o.contains("3 received")), "vflab-a does not reach vflab-b over OVS VXLAN: {ping:?}");
}
