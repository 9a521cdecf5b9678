//! Real-host end-to-end test of issue 14 item 3 for the objects whose
//! marker is the stack's import registry (`<state>/<stack>/imports.json`):
//! a libvirt network defined with plain `virsh net-define` / `net-start`,
//! a qcow2 made with `qemu-img create` (a marker written into it with
//! `qemu-io`) and a raw file, all outside the state dir, are imported
//! (`virtform import` for the volume, `import` blocks for the network and
//! the disk), used by a tiny guest that boots, gets a DHCP lease on the
//! imported network and reads the marker from the imported volume; the
//! network keeps its UUID and the files their inodes; the blocks are no-ops
//! after the apply (and may go); virtform destroys them; nothing leaks.
//!
//! Bad inputs first, each a located error with nothing changed: a file that
//! does not exist, a directory, a symlink, a qcow2 with a backing file, a
//! path under the state dir, a domain's name for a network.
//!
//! Names carry the PID (`vfimp…`); a guard removes the hand-made objects by
//! exact name if the test fails before virtform owns them, and `VfStack`'s
//! drop checks the stack left nothing. Needs root, libvirtd, qemu-img,
//! qemu-io and the guest assets: without them the test FAILS, never skips.

mod support;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use support::*;

fn pid() -> u32 {
    std::process::id()
}

/// The hand-made objects: removed by exact name on drop if still there.
struct HandMade {
    net: String,
    dir: tempfile::TempDir,
}

impl Drop for HandMade {
    fn drop(&mut self) {
        if libvirt_networks().contains(&self.net) {
            let _ = virsh(&["net-destroy", &self.net]);
            let _ = virsh(&["net-undefine", &self.net]);
            if !std::thread::panicking() {
                panic!("libvirt network {} was left behind", self.net);
            }
        }
    }
}

/// The first 16 bytes the guest sees in a qcow2 file, as qemu-io reads them
/// (`-U`: also while a running guest holds it).
fn head16(p: &std::path::Path) -> String {
    run("qemu-io", &["-U", "-r", "-f", "qcow2", "-c", "read -v 0 16", &p.display().to_string()]).must().stdout.lines().next().unwrap_or_default().to_string()
}

fn inode(p: &std::path::Path) -> Option<u64> {
    std::fs::symlink_metadata(p).ok().map(|m| m.ino())
}

#[test]
fn libvirt_network_disk_and_volume_made_by_hand_are_imported_used_and_destroyed() {
    for tool in ["qemu-img", "qemu-io"] {
        assert!(run("which", &[tool]).ok(), "{tool} is missing (scripts/host-setup installs qemu-utils)");
    }
    let s = VfStack::new("libvirt_network_disk_and_volume_made_by_hand_are_imported_used_and_destroyed", "imf");
    let h = HandMade { net: format!("vfimp-n{}", pid()), dir: tempdir("vfimp-files-") };
    let bridge = format!("vfimpb{}", pid());
    let subnet = format!("10.213.{}", pid() % 250);
    let xml = format!(
        "<network>\n  <name>{n}</name>\n  <bridge name='{bridge}' stp='on' delay='0'/>\n  <ip address='{subnet}.1' prefix='24'>\n    <dhcp>\n      <range start='{subnet}.128' end='{subnet}.254'/>\n    </dhcp>\n  </ip>\n</network>\n",
        n = h.net
    );
    let xml_file = h.dir.path().join("net.xml");
    std::fs::write(&xml_file, xml).unwrap();
    virsh(&["net-define", &xml_file.display().to_string()]).must();
    virsh(&["net-start", &h.net]).must();
    let uuid = virsh(&["net-uuid", &h.net]).must().stdout.trim().to_string();

    let data = h.dir.path().join("data.qcow2");
    let keep = h.dir.path().join("keep.qcow2");
    run("qemu-img", &["create", "-q", "-f", "qcow2", &data.display().to_string(), "32M"]).must();
    run("qemu-img", &["create", "-q", "-f", "qcow2", &keep.display().to_string(), "48M"]).must();
    // The volume's data: 16 bytes "V", which the guest prints as its head.
    run("qemu-io", &["-f", "qcow2", "-c", "write -P 0x56 0 16", &keep.display().to_string()]).must();
    for f in [&data, &keep] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (data_ino, keep_ino) = (inode(&data), inode(&keep));
    let marked = head16(&keep);
    assert!(marked.contains("VVVVVVVVVVVVVVVV"), "{marked}");

    let conf = |net_id: &str, disk_id: &str, imports: bool| {
        let mut c = format!(
            r#"variable "assets" {{ type = string }}
network "lan" {{
  type    = "isolated"
  bridge  = "{bridge}"
  address = "{subnet}.1/24"
}}
disk "data" {{
  size = "32M"
}}
volume "keep" {{
  size   = "48M"
  serial = "vfimpkeep"
}}
port "eth0" {{
  network = network.lan
}}
instance "vm" {{
  memory  = "256M"
  kernel  = "${{var.assets}}/vmlinuz"
  initrd  = "${{var.assets}}/initrd.gz"
  cmdline = "console=ttyS0 vf.dhcp=1"
  disks   = [disk.data]
  volumes = [volume.keep]
  ports   = [port.eth0]
  wait_for {{
    console = "VF-READY"
    lease   = true
    timeout = "240s"
  }}
}}
"#
        );
        if imports {
            c.push_str(&format!("import {{\n  to = network.lan\n  id = \"{net_id}\"\n}}\nimport {{\n  to = disk.data\n  id = \"{disk_id}\"\n}}\n"));
        }
        c
    };
    let registry = s.state.path().join(&s.stack).join("imports.json");
    let data_s = data.display().to_string();

    // Bad inputs: located errors, nothing changes.
    let missing = h.dir.path().join("none.qcow2").display().to_string();
    let link = h.dir.path().join("link.qcow2");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    let backed = h.dir.path().join("backed.qcow2");
    run("qemu-img", &["create", "-q", "-f", "qcow2", "-b", &data_s, "-F", "qcow2", &backed.display().to_string()]).must();
    let under_state = s.state.path().join("images").join("x.qcow2").display().to_string();
    let dir_s = h.dir.path().display().to_string();
    let cases: Vec<(String, String, String)> = vec![
        (h.net.clone(), missing.clone(), format!("there is no file \"{missing}\" on this host")),
        (h.net.clone(), dir_s.clone(), format!("\"{dir_s}\" is a directory")),
        (h.net.clone(), link.display().to_string(), "is a symbolic link".into()),
        (h.net.clone(), backed.display().to_string(), "is refused as a disk: it has a backing file".into()),
        (h.net.clone(), under_state.clone(), "under virtform's state directory".into()),
        (format!("{}-nope", h.net), data_s.clone(), format!("there is no libvirt network named \"{}-nope\"", h.net)),
    ];
    for (net_id, disk_id, want) in &cases {
        s.write(&conf(net_id, disk_id, true));
        let plan = s.vf(&["plan", "--detailed-exitcode"]);
        assert_eq!(plan.code, Some(1), "{}", plan.show());
        assert!(plan.stdout.contains(want.as_str()), "expected {want:?}:\n{}", plan.show());
        assert!(plan.stdout.contains("main.vf.hcl:3"), "not located: {}", plan.stdout);
        let apply = s.vf(&["apply", "--auto-approve"]);
        assert_eq!(apply.code, Some(1), "{}", apply.show());
        assert!(!registry.exists(), "a refused import wrote the registry");
        assert!(domain_names().iter().all(|d| !d.starts_with(&format!("{}-", s.stack))), "a refused import created the instance");
    }

    // `virtform import` for the volume: only its registry entry.
    s.write(&conf(&h.net, &data_s, true));
    let keep_s = keep.display().to_string();
    let out = s.vf(&["import", "volume.keep", &keep_s, "--auto-approve"]);
    assert!(out.ok(), "{}", out.show());
    assert!(out.stdout.contains(&format!("# volume.keep will be imported (id \"{keep_s}\")")), "{}", out.stdout);
    assert_eq!(head16(&keep), marked, "virtform import changed the file");
    let reg = std::fs::read_to_string(&registry).expect("the registry");
    assert!(reg.contains("volume.keep") && reg.contains(&keep_s) && !reg.contains("network.lan"), "{reg}");
    assert_eq!(std::fs::metadata(&registry).unwrap().permissions().mode() & 0o777, 0o600);

    // The blocks: the plan says what it imports and what else changes.
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains(&format!("# network.lan will be imported (id \"{}\")", h.net)), "{}", plan.stdout);
    assert!(plan.stdout.contains(&format!("# disk.data will be imported (id \"{data_s}\")")), "{}", plan.stdout);
    assert!(!plan.stdout.contains("# volume.keep will be imported"), "{}", plan.stdout);
    assert!(plan.stdout.contains("autostart") && plan.stdout.contains("false -> true"), "net-start without net-autostart: {}", plan.stdout);
    assert!(plan.stdout.contains("Plan: 2 to import, 1 to add, 2 to change, 0 to destroy."), "{}", plan.stdout);
    let out = s.apply();
    assert!(out.stdout.contains("wait for a DHCP lease"), "{}", out.stdout);

    assert_eq!(head16(&keep), marked, "the apply changed the volume's bytes");
    // Used as they are: the guest booted on them, by their own names and paths.
    let log = s.console("vm.log");
    assert!(has_line(&log, "VF-DISK vda 33554432"), "the imported disk is not vda:\n{log}");
    assert!(console_lines(&log).iter().any(|l| l.starts_with("VF-VOL vfimpkeep vdb 50331648 VVVVVVVVVVVVVVVV")), "the imported volume's bytes did not reach the guest:\n{log}");
    assert!(console_lines(&log).iter().any(|l| l.starts_with(&format!("VF-DHCP eth0 ok {subnet}."))), "no lease on the imported network:\n{log}");
    let vm = format!("{}-vm", s.stack);
    let dx = virsh(&["dumpxml", &vm]).must().stdout;
    assert!(dx.contains(&format!("<source file='{data_s}'")) && dx.contains(&format!("<source file='{keep_s}'")), "{dx}");
    assert!(dx.contains(&format!("<source network='{}'", h.net)), "{dx}");
    assert_eq!(virsh(&["net-uuid", &h.net]).must().stdout.trim(), uuid, "the import changed the network's UUID");
    assert_eq!((inode(&data), inode(&keep)), (data_ino, keep_ino), "an imported file was replaced");
    assert!(virsh(&["net-info", &h.net]).must().stdout.lines().any(|l| l.starts_with("Autostart:") && l.contains("yes")));
    let reg = std::fs::read_to_string(&registry).unwrap();
    assert!(reg.contains("network.lan") && reg.contains(&uuid) && reg.contains("disk.data"), "{reg}");
    s.assert_plan_empty("after the import");
    let show = s.vf(&["show"]).must();
    assert!(show.stdout.contains("network.lan") && show.stdout.contains(&format!("libvirt network, imported, UUID {uuid}")), "{}", show.stdout);
    assert!(show.stdout.contains(&keep_s) && show.stdout.contains("imported"), "{}", show.stdout);
    // Another stack, even under another state directory, cannot take them:
    // the file carries the marker, the network is refused as unmarked only
    // within one state directory (see ARCHITECTURE.md).
    {
        let s2 = VfStack::new("libvirt_network_disk_and_volume_made_by_hand_are_imported_used_and_destroyed", "imf2");
        s2.write(&format!("variable \"assets\" {{ type = string }}\ndisk \"data\" {{\n  size = \"32M\"\n}}\nimport {{\n  to = disk.data\n  id = \"{data_s}\"\n}}\n"));
        let plan = s2.vf(&["plan"]);
        assert_eq!(plan.code, Some(1), "{}", plan.show());
        assert!(plan.stdout.contains(&format!("belongs to disk.data of stack \"{}\" (its user.virtform attribute says so)", s.stack)), "{}", plan.show());
    }
    // The blocks can go: the registry keeps the objects the stack's.
    s.write(&conf("", "", false));
    s.assert_plan_empty("without the import blocks");

    // Destroy removes them: they are the stack's now.
    s.vf(&["destroy", "--auto-approve"]).must();
    assert!(!libvirt_networks().contains(&h.net), "destroy left the imported network");
    assert!(!data.exists() && !keep.exists(), "destroy left the imported files");
    assert!(!registry.exists(), "destroy left the registry");
    assert!(!domain_exists(&vm));
    assert!(!link_exists(&bridge), "the network's bridge is left");
    // The refused ones were never touched.
    assert!(std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) && backed.exists());
}
