//! Real-host end-to-end tests of issue 16 items 2 and 3: `moved` and
//! `removed` blocks on a running tiny guest.
//!
//! A running instance (with its disk, a volume, a port and a bridge) is
//! renamed by `moved` blocks, then taken from `count` to `for_each`: the
//! domain keeps its name and UUID and is never restarted (same domain id,
//! one `VF-BOOT` line in its console log), the volume the guest wrote
//! before the moves keeps its inode and its first sector, the bridge its
//! name, the port its MAC; after each apply the plan is empty, with and
//! without the moved blocks. Then `removed { lifecycle { destroy = false } }`
//! forgets the guest: it keeps running without virtform's marker and the
//! plan no longer mentions it; the test undefines it itself. A second test
//! moves a running guest into a module called with `count`, then the
//! module from `count` to `for_each` with one module-instance move: same
//! UUID and domain id, one boot, the overlay kept.
//!
//! Each test has its own stack (from the PID); `VfStack`'s drop destroys
//! the stack and fails on anything left. Needs root, libvirtd and the guest
//! assets; without them the test FAILS, never skips.

mod support;
use std::time::Duration;
use support::*;

const NS: &str = "https://virtform.dev/xmlns/virtform/1";

/// A domain virtform was told to forget: undefined by its exact name on
/// drop (the stack's destroy no longer knows it).
struct Forgotten(String);

impl Drop for Forgotten {
    fn drop(&mut self) {
        if domain_exists(&self.0) {
            let _ = virsh(&["destroy", &self.0]);
            let _ = virsh(&["undefine", &self.0]);
        }
    }
}

fn inode(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).ino()
}

/// The first line of a raw volume's first sector (the guest writes a raw
/// volume straight through to the file; a qcow2 image's metadata would
/// stay in QEMU's cache until the guest flushes).
fn first_sector(p: &std::path::Path) -> String {
    let head = std::fs::read(p).unwrap_or_default();
    String::from_utf8_lossy(&head[..head.len().min(512)]).trim_end_matches('\0').trim().to_string()
}

/// The configuration in its three shapes: `vm` alone, `web` under `count`,
/// `web` under `for_each`; `moved` blocks appended by the caller.
fn config(pid: u32, instance: &str, meta: &str, net: &str, disk: &str, volume: &str, port: &str) -> String {
    format!(
        r#"
variable "assets" {{ type = string }}
network "{net}" {{
  type   = "bridge"
  bridge = "vfmv{pid}"
}}
port "{port}" {{
  network = network.{net}
}}
image "tiny" {{ source = "${{var.assets}}/tiny.qcow2" }}
disk "{disk}" {{ image = image.tiny }}
volume "{volume}" {{
  size   = "16M"
  format = "raw"
}}
instance "{instance}" {{
{meta}  memory  = "128M"
  kernel  = "${{var.assets}}/vmlinuz"
  initrd  = "${{var.assets}}/initrd.gz"
  cmdline = "console=ttyS0 vf.volwrite=data:MOVECHECK"
  disks   = [disk.{disk}]
  volumes = [volume.{volume}]
  ports   = [port.{port}]
  wait_for {{
    console = "VF-READY"
    timeout = "240s"
  }}
}}
"#
    )
}

fn moved(from: &str, to: &str) -> String {
    format!("moved {{\n  from = {from}\n  to   = {to}\n}}\n")
}

#[test]
fn running_instance_moved_then_to_for_each_keeps_its_uuid_and_boots_once_then_is_forgotten() {
    let s = VfStack::new("running_instance_moved_then_to_for_each_keeps_its_uuid_and_boots_once_then_is_forgotten", "mv");
    let pid = std::process::id();
    let domain = format!("{}-vm", s.stack);
    let bridge = format!("vfmv{pid}");
    let stack_dir = s.state.path().join(&s.stack);
    let volume = stack_dir.join("volumes").join("data.raw");
    let root = stack_dir.join("disks").join("root.qcow2");

    // 1. The guest runs; it writes MOVECHECK into its volume's first sector.
    s.write(&config(pid, "vm", "", "lan", "root", "data", "eth0"));
    s.apply();
    assert!(s.wait_console("vm.log", "VF-VOLWRITE data MOVECHECK ok", Duration::from_secs(60)), "the guest did not write its volume:\n{}", s.console("vm.log"));
    let uuid = virsh(&["domuuid", &domain]).must().stdout.trim().to_string();
    let id = virsh(&["domid", &domain]).must().stdout.trim().to_string();
    let mac = virsh(&["domiflist", &domain]).must().stdout;
    let (vol_inode, root_inode) = (inode(&volume), inode(&root));
    assert!(wait_until(Duration::from_secs(60), || first_sector(&volume) == "MOVECHECK"), "the volume file does not hold the guest's write: {:?}", first_sector(&volume));
    let boots = |s: &VfStack| console_lines(&s.console("vm.log")).iter().filter(|l| l.starts_with("VF-BOOT")).count();
    assert_eq!(boots(&s), 1);
    let unchanged = |s: &VfStack, when: &str| {
        assert_eq!(virsh(&["domid", &domain]).must().stdout.trim(), id, "{when}: the guest was restarted");
        assert_eq!(virsh(&["domuuid", &domain]).must().stdout.trim(), uuid, "{when}: the UUID changed");
        assert_eq!(domain_state(&domain), "running", "{when}");
        assert_eq!(virsh(&["domiflist", &domain]).must().stdout, mac, "{when}: the NIC changed");
        assert_eq!(inode(&volume), vol_inode, "{when}: the volume file is not the same file");
        assert_eq!(inode(&root), root_inode, "{when}: the root overlay is not the same file");
        assert_eq!(boots(s), 1, "{when}: the console shows another boot:\n{}", s.console("vm.log"));
        assert!(link_exists(&bridge), "{when}: the bridge is gone");
    };

    // 2. Every resource renamed; the instance goes under count.
    let blocks = moved("instance.vm", "instance.web[0]") + &moved("network.lan", "network.net") + &moved("disk.root", "disk.boot") + &moved("volume.data", "volume.store") + &moved("port.eth0", "port.nic");
    let v2 = config(pid, "web", "  count   = 1\n", "net", "boot", "store", "nic");
    s.write(&(v2.clone() + &blocks));
    let plan = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, Some(2), "{}", plan.show());
    for (from, to) in [("instance.vm", "instance.web[0]"), ("network.lan", "network.net"), ("disk.root", "disk.boot"), ("volume.data", "volume.store"), ("port.eth0", "port.nic")] {
        assert!(plan.stdout.contains(&format!("# {from} has moved to {to}")), "{from}: {}", plan.stdout);
    }
    assert!(plan.stdout.contains("Plan: 5 to move, 0 to add, 0 to change, 0 to destroy."), "{}", plan.stdout);
    let json = s.vf(&["plan", "--json"]).must();
    let j: serde_json::Value = serde_json::from_str(&json.stdout).expect("plan JSON");
    let web = j["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "instance.web[0]").expect("instance.web[0] in the JSON plan");
    assert_eq!(web["previous_address"], "instance.vm");
    s.apply();
    unchanged(&s, "after the move");
    let meta = virsh(&["metadata", &domain, NS, "--config"]).stdout;
    assert!(meta.contains("address=\"instance.web[0]\""), "{meta}");
    let live = virsh(&["metadata", &domain, NS, "--live"]).stdout;
    assert!(live.contains("address=\"instance.web[0]\""), "the live marker: {live}");
    assert!(link_json(&bridge)["ifalias"].as_str().unwrap_or("").contains(":network.net;"), "{}", link_json(&bridge));
    assert!(std::fs::read_to_string(stack_dir.join("names.json")).unwrap_or_default().contains("\"instance.web[0]\": \"instance.vm\""));
    s.assert_plan_empty("after the move, with the moved blocks");
    s.write(&v2);
    s.assert_plan_empty("after the move, without the moved blocks");

    // 3. count → for_each.
    let v3 = v2.replace("count   = 1", "for_each = toset([\"alpha\"])");
    s.write(&(v3.clone() + &moved("instance.web[0]", "instance.web[\"alpha\"]")));
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains("# instance.web[0] has moved to instance.web[\"alpha\"]"), "{}", plan.stdout);
    assert!(plan.stdout.contains("Plan: 1 to move, 0 to add, 0 to change, 0 to destroy."), "{}", plan.stdout);
    s.apply();
    unchanged(&s, "after count to for_each");
    s.assert_plan_empty("after count to for_each, with the moved block");
    s.write(&v3);
    s.assert_plan_empty("after count to for_each, without the moved block");
    assert_eq!(first_sector(&volume), "MOVECHECK", "the volume lost what the guest wrote before the moves");

    // 4. removed { destroy = false }: the guest stays, unmanaged.
    let _guard = Forgotten(domain.clone());
    let forget = |a: &str| format!("removed {{\n  from = {a}\n  lifecycle {{\n    destroy = false\n  }}\n}}\n");
    let rest = "variable \"assets\" { type = string }\nimage \"tiny\" { source = \"${var.assets}/tiny.qcow2\" }\n".to_string();
    s.write(&(rest.clone() + &forget("instance.web[\"alpha\"]") + &forget("disk.boot") + &forget("volume.store") + &forget("port.nic") + &forget("network.net")));
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains("# instance.web[\"alpha\"] will no longer be managed"), "{}", plan.stdout);
    assert!(plan.stdout.contains("0 to destroy, 4 to forget."), "{}", plan.stdout);
    s.apply();
    assert_eq!(virsh(&["domid", &domain]).must().stdout.trim(), id, "forgetting restarted the guest");
    assert_eq!(domain_state(&domain), "running");
    assert!(!virsh(&["metadata", &domain, NS, "--config"]).stdout.contains("stack="), "the marker is still there");
    assert!(!virsh(&["metadata", &domain, NS, "--live"]).stdout.contains("stack="), "the live marker is still there");
    assert!(link_exists(&bridge), "the forgotten bridge was deleted");
    assert!(!link_json(&bridge)["ifalias"].as_str().unwrap_or("").contains("virtform:"), "{}", link_json(&bridge));
    s.write(&rest);
    let plan = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, Some(0), "{}", plan.show());
    assert!(!plan.stdout.contains("web") && !plan.stdout.contains(&domain), "{}", plan.stdout);
    // The stack's destroy (VfStack's drop) must not touch the guest: undefine it ourselves.
    let d = s.vf(&["plan", "--destroy"]).must();
    assert!(!d.stdout.contains(&domain) && !d.stdout.contains("data.raw"), "destroy would touch a forgotten object:\n{}", d.stdout);
    s.vf(&["destroy", "--auto-approve"]).must();
    assert_eq!(virsh(&["domid", &domain]).must().stdout.trim(), id, "the stack's destroy touched the forgotten guest");
    assert!(volume.exists() && root.exists(), "the stack's destroy removed a forgotten file");
    assert!(stack_dir.join("console").join("vm.log").exists(), "the stack's destroy removed the forgotten guest's console log");
    virsh(&["destroy", &domain]).must();
    virsh(&["undefine", &domain]).must();
    run("ip", &["link", "del", &bridge]).must();
    assert!(leaks_of_stack(&s.stack).is_empty(), "{:?}", leaks_of_stack(&s.stack));
}

/// The module the second test moves its guest into.
const VM_MODULE: &str = r#"
variable "assets" { type = string }
variable "network" {}
image "tiny" { source = "${var.assets}/tiny.qcow2" }
disk "root" { image = image.tiny }
port "eth0" {
  network = var.network
}
instance "vm" {
  memory  = "128M"
  kernel  = "${var.assets}/vmlinuz"
  initrd  = "${var.assets}/initrd.gz"
  cmdline = "console=ttyS0"
  disks   = [disk.root]
  ports   = [port.eth0]
  wait_for {
    console = "VF-READY"
    timeout = "240s"
  }
}
"#;

/// Issue 16's own sequence with modules: a running instance moved into a
/// module called with `count`, then the module taken from `count` to
/// `for_each` by one module-instance move (`module.app[0]` →
/// `module.app["alpha"]`). The domain keeps its name, UUID and domain id,
/// the console shows one boot, the overlay keeps its inode; the plans are
/// moves only and empty afterwards, with and without the blocks.
#[test]
fn running_instance_moved_into_a_module_then_count_to_for_each_boots_once() {
    let s = VfStack::new("running_instance_moved_into_a_module_then_count_to_for_each_boots_once", "mvm");
    let pid = std::process::id();
    let domain = format!("{}-vm", s.stack);
    let bridge = format!("vfmm{pid}");
    let root = s.state.path().join(&s.stack).join("disks").join("root.qcow2");
    let head = format!("variable \"assets\" {{ type = string }}\nnetwork \"lan\" {{\n  type   = \"bridge\"\n  bridge = \"{bridge}\"\n}}\n");
    std::fs::create_dir_all(s.cfg.path().join("modules/vm")).unwrap();
    std::fs::write(s.cfg.path().join("modules/vm/main.vf.hcl"), VM_MODULE).unwrap();

    // 1. In the root module.
    s.write(&(head.clone() + VM_MODULE.replace("variable \"assets\" { type = string }\nvariable \"network\" {}\n", "").replace("var.network", "network.lan").as_str()));
    s.apply();
    let uuid = virsh(&["domuuid", &domain]).must().stdout.trim().to_string();
    let id = virsh(&["domid", &domain]).must().stdout.trim().to_string();
    let root_inode = inode(&root);
    let boots = |s: &VfStack| console_lines(&s.console("vm.log")).iter().filter(|l| l.starts_with("VF-BOOT")).count();
    assert_eq!(boots(&s), 1);
    let unchanged = |s: &VfStack, when: &str, address: &str| {
        assert_eq!(virsh(&["domid", &domain]).must().stdout.trim(), id, "{when}: the guest was restarted");
        assert_eq!(virsh(&["domuuid", &domain]).must().stdout.trim(), uuid, "{when}: the UUID changed");
        assert_eq!(domain_state(&domain), "running", "{when}");
        assert_eq!(inode(&root), root_inode, "{when}: the root overlay is not the same file");
        assert_eq!(boots(s), 1, "{when}: the console shows another boot:\n{}", s.console("vm.log"));
        let meta = virsh(&["metadata", &domain, NS, "--live"]).stdout;
        assert!(meta.contains(&format!("address=\"{}\"", address.replace('"', "&quot;"))), "{when}: the live marker: {meta}");
    };

    // 2. Into a module called with count.
    let call = |each: &str| format!("module \"app\" {{\n  source  = \"./modules/vm\"\n  {each}\n  assets  = var.assets\n  network = network.lan\n}}\n");
    let v2 = head.clone() + &call("count   = 1");
    let into = ["instance.vm", "disk.root", "port.eth0"].iter().map(|a| moved(a, &format!("module.app[0].{a}"))).collect::<String>() + &moved("image.tiny", "module.app[0].image.tiny");
    s.write(&(v2.clone() + &into));
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains("# instance.vm has moved to module.app[0].instance.vm"), "{}", plan.stdout);
    assert!(plan.stdout.contains("0 to add, 0 to change, 0 to destroy."), "{}", plan.stdout);
    s.apply();
    unchanged(&s, "after the move into the module", "module.app[0].instance.vm");
    s.assert_plan_empty("after the move into the module, with the moved blocks");
    s.write(&v2);
    s.assert_plan_empty("after the move into the module, without the moved blocks");

    // 3. The module from count to for_each: one module-instance move.
    let v3 = head.clone() + &call("for_each = toset([\"alpha\"])");
    s.write(&(v3.clone() + &moved("module.app[0]", "module.app[\"alpha\"]")));
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains("# module.app[0].instance.vm has moved to module.app[\"alpha\"].instance.vm"), "{}", plan.stdout);
    assert!(plan.stdout.contains("0 to add, 0 to change, 0 to destroy."), "{}", plan.stdout);
    s.apply();
    unchanged(&s, "after count to for_each", "module.app[\"alpha\"].instance.vm");
    s.assert_plan_empty("after count to for_each, with the moved block");
    s.write(&v3);
    s.assert_plan_empty("after count to for_each, without the moved block");

    s.vf(&["destroy", "--auto-approve"]).must();
    assert!(!domain_exists(&domain), "destroy left the domain");
    assert!(!link_exists(&bridge), "destroy left the bridge");
}
