//! Real-host end-to-end tests of issue 14 item 3: a domain defined with
//! plain `virsh define` (and started with `virsh start`) is taken over by
//! virtform, by `virtform import` (marker only: the guest keeps running,
//! same domain id, same UUID) and by an `import` block (after which the
//! block is a no-op); its memory is then changed through virtform (a
//! restart, as the update class says; the UUID stays) and virtform
//! destroys it.
//!
//! Each test has its own stack and domain name (from the PID); a guard
//! removes the hand-made domain by its exact name if the test fails before
//! virtform owns it, and `VfStack`'s drop checks the stack left nothing.
//! Needs root, libvirtd and the guest assets (scripts/test provides them);
//! without them the tests FAIL, never skip.

mod support;
use support::*;

/// A domain defined by hand; undefined on drop if it is still there.
struct HandMade {
    name: String,
}

impl HandMade {
    /// Defines (with `virsh define`) and starts a direct-kernel-boot guest
    /// of 128 MiB, the way an admin would have before virtform.
    fn new(name: String, dir: &std::path::Path) -> HandMade {
        let a = assets_dir();
        let xml = format!(
            "<domain type='qemu'>\n  <name>{name}</name>\n  <memory unit='MiB'>128</memory>\n  <vcpu>1</vcpu>\n  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n    <kernel>{k}</kernel>\n    <initrd>{i}</initrd>\n    <cmdline>console=ttyS0</cmdline>\n  </os>\n  <devices>\n    <serial type='pty'/>\n    <console type='pty'/>\n  </devices>\n</domain>\n",
            k = a.join("vmlinuz").display(),
            i = a.join("initrd.gz").display(),
        );
        let file = dir.join(format!("{name}.xml"));
        std::fs::write(&file, xml).expect("write the domain XML");
        let h = HandMade { name };
        virsh(&["define", &file.display().to_string()]).must();
        virsh(&["start", &h.name]).must();
        h
    }

    fn uuid(&self) -> String {
        virsh(&["domuuid", &self.name]).must().stdout.trim().to_string()
    }

    /// The running domain's id: a new one after every start.
    fn id(&self) -> String {
        virsh(&["domid", &self.name]).must().stdout.trim().to_string()
    }

    fn marker(&self) -> String {
        virsh(&["metadata", &self.name, "https://virtform.dev/xmlns/virtform/1", "--config"]).stdout
    }

    fn max_memory_kib(&self) -> u64 {
        let out = virsh(&["dominfo", &self.name]).must().stdout;
        out.lines().find_map(|l| l.strip_prefix("Max memory:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

impl Drop for HandMade {
    fn drop(&mut self) {
        if domain_exists(&self.name) {
            let _ = virsh(&["destroy", &self.name]);
            let _ = virsh(&["undefine", &self.name]);
            if !std::thread::panicking() {
                panic!("domain {} was left behind", self.name);
            }
        }
    }
}

fn config(name: &str, memory: &str, import: Option<&str>) -> String {
    let mut c = format!(
        "variable \"assets\" {{ type = string }}\ninstance \"legacy\" {{\n  name    = \"{name}\"\n  memory  = \"{memory}\"\n  kernel  = \"${{var.assets}}/vmlinuz\"\n  initrd  = \"${{var.assets}}/initrd.gz\"\n  cmdline = \"console=ttyS0\"\n}}\n"
    );
    if let Some(id) = import {
        c.push_str(&format!("import {{\n  to = instance.legacy\n  id = \"{id}\"\n}}\n"));
    }
    c
}

/// `virtform import` writes only the marker (no restart); the rest of the
/// diff is the next apply's, a restart; then a memory change restarts
/// again; the UUID never changes; destroy removes the domain.
#[test]
fn virsh_defined_domain_imported_by_the_command_then_resized_and_destroyed() {
    let s = VfStack::new("virsh_defined_domain_imported_by_the_command_then_resized_and_destroyed", "imc");
    let h = HandMade::new(format!("vf-legacy-c{}", std::process::id()), s.cfg.path());
    let (uuid, id) = (h.uuid(), h.id());

    s.write(&config(&h.name, "128M", None));
    // Not imported: a conflict naming the import block to write.
    let plan = s.vf(&["plan"]);
    assert_eq!(plan.code, Some(1), "{}", plan.show());
    assert!(plan.stdout.contains(&format!("import {{\n        to = instance.legacy\n        id = \"{}\"", h.name)), "{}", plan.stdout);

    // A missing id and a wrong kind: errors, nothing changes.
    let bad = s.vf(&["import", "instance.legacy", "no-such-vm", "--auto-approve"]);
    assert_eq!(bad.code, Some(1), "{}", bad.show());
    assert!(bad.stdout.contains("there is no libvirt domain named \"no-such-vm\""), "{}", bad.show());
    let bad = s.vf(&["import", "instance.nope", &h.name, "--auto-approve"]);
    assert_eq!(bad.code, Some(1), "{}", bad.show());
    assert!(h.marker().trim().is_empty() || !h.marker().contains("stack="), "marked by a refused import: {}", h.marker());

    let out = s.vf(&["import", "instance.legacy", &h.name, "--auto-approve"]);
    assert!(out.ok(), "{}", out.show());
    assert!(out.stdout.contains(&format!("# instance.legacy will be imported (id \"{}\")", h.name)), "{}", out.stdout);
    assert!(out.stdout.contains("writes only the marker now"), "{}", out.stdout);
    assert_eq!(h.id(), id, "the import restarted the guest");
    assert_eq!(h.uuid(), uuid);
    assert!(h.marker().contains(&format!("stack=\"{}\"", s.stack)) && h.marker().contains("address=\"instance.legacy\""), "{}", h.marker());

    // Now owned: the rest of the configuration is an update with its class.
    let plan = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, Some(2), "{}", plan.show());
    assert!(plan.stdout.contains("# instance.legacy will be updated in-place (restart)"), "{}", plan.stdout);
    assert!(!plan.stdout.contains("will be imported"), "{}", plan.stdout);
    s.apply();
    assert_eq!(h.uuid(), uuid, "the apply changed the UUID");
    s.assert_plan_empty("after the first apply");

    // Memory through virtform: a restart, same UUID.
    s.write(&config(&h.name, "192M", None));
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains("memory") && plan.stdout.contains("\"128M\" -> \"192M\" (restart)"), "{}", plan.stdout);
    let before = h.id();
    s.apply();
    assert_eq!(h.max_memory_kib(), 192 * 1024);
    assert_ne!(h.id(), before, "a memory change lands by a restart");
    assert_eq!(domain_state(&h.name), "running");
    assert_eq!(h.uuid(), uuid);
    s.assert_plan_empty("after the memory change");

    s.vf(&["destroy", "--auto-approve"]).must();
    assert!(!domain_exists(&h.name), "destroy left the domain");
}

/// An `import` block: a located error for an id that does not exist (and
/// nothing changes), then the import with the diff and its class, after
/// which the block is a no-op.
#[test]
fn import_block_takes_over_a_virsh_defined_domain() {
    let s = VfStack::new("import_block_takes_over_a_virsh_defined_domain", "imb");
    let h = HandMade::new(format!("vf-legacy-b{}", std::process::id()), s.cfg.path());
    let uuid = h.uuid();

    s.write(&config(&h.name, "128M", Some("not-there")));
    let plan = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, Some(1), "{}", plan.show());
    assert!(plan.stdout.contains("import instance.legacy: there is no libvirt domain named \"not-there\""), "{}", plan.stdout);
    assert!(plan.stdout.contains("main.vf.hcl:11:8") && plan.stdout.contains("id = \"not-there\""), "{}", plan.stdout);
    let apply = s.vf(&["apply", "--auto-approve"]);
    assert_eq!(apply.code, Some(1), "{}", apply.show());
    assert!(!h.marker().contains("stack="), "{}", h.marker());

    s.write(&config(&h.name, "160M", Some(&h.name)));
    let plan = s.vf(&["plan", "--json"]).must();
    let j: serde_json::Value = serde_json::from_str(&plan.stdout).expect("plan json");
    let c = j["resource_changes"].as_array().and_then(|a| a.iter().find(|c| c["address"] == "instance.legacy")).cloned().unwrap_or_default();
    assert_eq!(c["importing"]["id"], h.name.as_str(), "{c}");
    assert_eq!(c["action_reason"], "import", "{c}");
    let text = s.vf(&["plan"]).must();
    assert!(text.stdout.contains("will be imported") && text.stdout.contains("\"128M\" -> \"160M\" (restart)"), "{}", text.stdout);
    s.apply();
    assert_eq!(h.uuid(), uuid);
    assert_eq!(h.max_memory_kib(), 160 * 1024);
    assert!(h.marker().contains("address=\"instance.legacy\""), "{}", h.marker());
    // The block stays in the configuration and says nothing now.
    s.assert_plan_empty("after the import");

    s.vf(&["destroy", "--auto-approve"]).must();
    assert!(!domain_exists(&h.name), "destroy left the domain");
}

/// Bridges made by hand (a Linux bridge with `ip link`, an OVS bridge with
/// `ovs-vsctl`); removed by exact name on drop if virtform did not.
struct HandBridges {
    linux: String,
    ovs: String,
}

impl Drop for HandBridges {
    fn drop(&mut self) {
        let mut left = Vec::new();
        if link_exists(&self.linux) {
            run("ip", &["link", "del", &self.linux]);
            left.push(self.linux.clone());
        }
        if ovs_bridges().contains(&self.ovs) {
            run("ovs-vsctl", &["--if-exists", "del-br", &self.ovs]);
            left.push(self.ovs.clone());
        }
        if !left.is_empty() && !std::thread::panicking() {
            panic!("bridges left behind: {left:?}");
        }
    }
}

/// A Linux bridge and an OVS bridge made by hand are imported by blocks
/// (a name the network would not use is a located error first), marked in
/// their alias and external-ids, then destroyed by virtform.
#[test]
fn bridges_made_by_hand_are_imported_and_destroyed() {
    let s = VfStack::new("bridges_made_by_hand_are_imported_and_destroyed", "imn");
    let b = HandBridges { linux: format!("vfib{}", std::process::id()), ovs: format!("vfio{}", std::process::id()) };
    run("ip", &["link", "add", "name", &b.linux, "type", "bridge"]).must();
    run("ip", &["link", "set", &b.linux, "up"]).must();
    run("ovs-vsctl", &["add-br", &b.ovs, "--", "set", "bridge", &b.ovs, "datapath_type=netdev"]).must();
    let conf = |lan_id: &str| {
        format!(
            "variable \"assets\" {{ type = string }}\nnetwork \"lan\" {{\n  bridge = \"{l}\"\n}}\nnetwork \"sw\" {{\n  type          = \"ovs\"\n  bridge        = \"{o}\"\n  datapath_type = \"netdev\"\n}}\nimport {{\n  to = network.lan\n  id = \"{lan_id}\"\n}}\nimport {{\n  to = network.sw\n  id = \"{o}\"\n}}\n",
            l = b.linux,
            o = b.ovs
        )
    };
    // A name the network would not use: refused, located.
    let other = format!("{}x", b.linux);
    s.write(&conf(&other));
    let plan = s.vf(&["plan"]);
    assert_eq!(plan.code, Some(1), "{}", plan.show());
    assert!(plan.stdout.contains(&format!("import network.lan: network.lan would be the bridge \"{}\", not \"{other}\"", b.linux)) && plan.stdout.contains("main.vf.hcl:12:8"), "{}", plan.stdout);
    // The same object imported twice: refused at load.
    s.write(&conf(&b.ovs));
    let plan = s.vf(&["plan"]);
    assert!(plan.code == Some(1) && plan.stderr.contains("is imported twice, into network.lan and network.sw"), "{}", plan.show());
    assert!(s.vf(&["apply", "--auto-approve"]).code == Some(1));
    assert!(link_json(&b.linux)["ifalias"].as_str().is_none_or(|a| !a.starts_with("virtform:")), "{}", link_json(&b.linux));

    s.write(&conf(&b.linux));
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains(&format!("# network.lan will be imported (id \"{}\")", b.linux)), "{}", plan.stdout);
    assert!(plan.stdout.contains(&format!("# network.sw will be imported (id \"{}\")", b.ovs)), "{}", plan.stdout);
    assert!(plan.stdout.contains("Plan: 2 to import"), "{}", plan.stdout);
    s.apply();
    let alias = link_json(&b.linux)["ifalias"].as_str().unwrap_or_default().to_string();
    assert!(alias.starts_with(&format!("virtform:{}:network.lan", s.stack)), "alias {alias:?}");
    let ids = run("ovs-vsctl", &["br-get-external-id", &b.ovs, "virtform"]).must().stdout;
    assert!(ids.contains(&format!("virtform:{}:network.sw", s.stack)), "{ids}");
    s.assert_plan_empty("after the import");

    s.vf(&["destroy", "--auto-approve"]).must();
    assert!(!link_exists(&b.linux), "destroy left the Linux bridge");
    assert!(!ovs_bridges().contains(&b.ovs), "destroy left the OVS bridge");
}
