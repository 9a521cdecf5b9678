//! The QEMU guest agent on the real host.
//!
//! - `agent_channel_lands_live_or_with_a_restart` (the tiny guest, which has
//!   no agent): a domain defined with `guest_agent = false` still has a
//!   virtio-serial controller, so turning the agent on hot-plugs the channel
//!   (same QEMU process, no restart); a domain as the previous version
//!   defined it (no controller, no channel) gets it with a restart; libvirt's
//!   socket path, alias and controller never show as changes; an agent that
//!   is not there makes `wait_for { agent = true }` fail naming the instance
//!   and the last error, `show` and `output` answer at once (addresses
//!   empty), and shutdown falls back to the ACPI button.
//! - `debian_agent_wait_addresses_and_shutdown` (the real Debian cloud image
//!   from scripts/build-cloud-image, with qemu-guest-agent): apply waits for
//!   the agent, the output `addresses` holds the port's fixed address,
//!   `show` lists it, a memory change restarts the guest through the agent
//!   well inside the shutdown timeout, destroy too, nothing leaks.
//!
//! Needs root, libvirtd, the tiny guest assets and the Debian image: they
//! FAIL when something is missing, never skip.

mod support;
use std::time::{Duration, Instant};
use support::*;

fn domid(name: &str) -> String {
    virsh(&["domid", name]).must().stdout.trim().to_string()
}

/// `virsh define` of a domain's inactive XML without the agent channel and
/// the virtio-serial controller: how the previous version defined it. The
/// running guest keeps its devices (a redefine changes the persistent config).
fn define_as_previous_version(name: &str, dir: &std::path::Path) {
    let xml = virsh(&["dumpxml", "--inactive", name]).must().stdout;
    let mut out = String::new();
    let mut skipping: Option<&str> = None;
    for line in xml.lines() {
        let t = line.trim_start();
        if let Some(end) = skipping {
            if t.starts_with(end) {
                skipping = None;
            }
            continue;
        }
        if t.starts_with("<channel ") || t.starts_with("<controller type='virtio-serial'") {
            if !t.ends_with("/>") {
                skipping = Some(if t.starts_with("<channel") { "</channel>" } else { "</controller>" });
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(!out.contains("virtio-serial") && !out.contains("guest_agent"), "stripping failed:\n{out}");
    let p = dir.join("previous.xml");
    std::fs::write(&p, out).unwrap();
    virsh(&["define", &p.display().to_string()]).must();
}

#[test]
fn agent_channel_lands_live_or_with_a_restart() {
    let s = VfStack::new("agent_channel_lands_live_or_with_a_restart", "vfagent-ch");
    let pid = std::process::id();
    let net = format!("10.243.{}", pid % 250);
    let conf = |extra: &str| {
        format!(
            r#"
variable "assets" {{ type = string }}
network "lan" {{
  bridge  = "vfag{pid}"
  address = "{net}.1/24"
}}
port "eth0" {{
  network = network.lan
  ip      = "{net}.10"
}}
instance "vm" {{
  memory  = "128M"
  kernel  = "${{var.assets}}/vmlinuz"
  initrd  = "${{var.assets}}/initrd.gz"
  cmdline = "console=ttyS0 vf.ip={net}.10/24"
  ports   = [port.eth0]
  {extra}
}}
output "addresses" {{ value = instance.vm.addresses }}
"#
        )
    };
    let name = format!("{}-vm", s.stack);
    s.write(&conf("guest_agent = false\n  wait_for {\n    console = \"VF-READY\"\n    timeout = \"120s\"\n  }"));
    s.apply();
    let xml = virsh(&["dumpxml", "--inactive", &name]).must().stdout;
    assert!(xml.contains("type='virtio-serial'"), "every domain gets a virtio-serial controller:\n{xml}");
    assert!(!xml.contains("org.qemu.guest_agent.0"), "guest_agent = false writes no channel:\n{xml}");
    s.assert_plan_empty("after the apply without the agent");

    // On: hot-plugged into the running guest.
    s.write(&conf("wait_for {\n    console = \"VF-READY\"\n    timeout = \"120s\"\n  }"));
    let plan = s.vf(&["plan"]).must().stdout;
    let block = plan_block(&plan, "instance.vm").unwrap_or_else(|| panic!("no block for instance.vm:\n{plan}"));
    assert!(block.contains("will be updated in-place (live)") && block.contains("guest_agent = false -> true"), "{plan}");
    assert!(!block.contains("(restart)"), "{plan}");
    let before = domid(&name);
    s.apply();
    assert_eq!(domid(&name), before, "the channel was hot-plugged, the guest not restarted");
    let live = virsh(&["dumpxml", &name]).must().stdout;
    assert!(live.contains("name='org.qemu.guest_agent.0'") && live.contains("/var/lib/libvirt/qemu/channel/"), "the running guest has the channel:\n{live}");
    s.assert_plan_empty("after the hot-plug (libvirt's socket path and port are no changes)");

    // A domain of the previous version: no controller, so a restart.
    define_as_previous_version(&name, s.cfg.path());
    let plan = s.vf(&["plan"]).must().stdout;
    let block = plan_block(&plan, "instance.vm").unwrap_or_else(|| panic!("no block for instance.vm:\n{plan}"));
    assert!(block.contains("guest_agent = false -> true (restart)"), "{plan}");
    let before = domid(&name);
    s.apply();
    assert_ne!(domid(&name), before, "a restart: a new QEMU process");
    let xml = virsh(&["dumpxml", "--inactive", &name]).must().stdout;
    assert!(xml.contains("type='virtio-serial'") && xml.contains("name='org.qemu.guest_agent.0'"), "{xml}");
    s.assert_plan_empty("after the restart");

    // The tiny guest has no agent: show and output answer at once.
    let t = Instant::now();
    let show = s.vf(&["show"]).must();
    assert!(show.stdout.contains("(guest agent: "), "show says the agent did not answer:\n{}", show.show());
    let out = s.output(&["output", "--json"]).must();
    assert!(t.elapsed() < Duration::from_secs(30), "show + output took {:?}", t.elapsed());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}:\n{}", out.show()));
    assert_eq!(v["addresses"]["value"], serde_json::json!([]), "{}", out.show());
    assert!(out.stderr.contains("did not answer"), "a warning says why: {}", out.show());

    // A wait for an agent that never answers fails naming the instance and
    // the last error; the guest is left in place.
    s.write(&conf("memory = \"160M\"\n  wait_for {\n    agent   = true\n    timeout = \"15s\"\n  }").replace("memory  = \"128M\"\n", ""));
    let out = s.vf(&["apply", "--auto-approve", "-v"]);
    assert!(!out.ok(), "{}", out.show());
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains(&format!("{name} is not ready: its guest agent did not answer within 15s (last: ")), "{}", out.show());
    assert!(all.contains("agent is not connected") || all.contains("not responding"), "the last error is libvirt's: {}", out.show());
    // The restart for the memory change went through the ACPI button (no agent).
    assert!(all.contains("shut down gracefully through the ACPI power button"), "{}", out.show());
    assert_eq!(domain_state(&name), "running", "the instance stays");
}

/// The Debian cloud image with qemu-guest-agent (scripts/build-cloud-image).
const DEBIAN: &str = "debian-12-cloud.qcow2";

#[test]
fn debian_agent_wait_addresses_and_shutdown() {
    let image = assets_dir().join(DEBIAN);
    assert!(image.is_file(), "the Debian cloud image {} is missing: run scripts/build-cloud-image ({HINT})", image.display());
    let s = VfStack::new("debian_agent_wait_addresses_and_shutdown", "vfagent-deb");
    let pid = std::process::id();
    let net = format!("10.244.{}", pid % 250);
    let ip = format!("{net}.10");
    let conf = |memory: &str| {
        format!(
            r##"
variable "assets" {{ type = string }}
network "lan" {{
  bridge  = "vfad{pid}"
  address = "{net}.1/24"
}}
image "debian" {{ source = "${{var.assets}}/{DEBIAN}" }}
disk "root" {{
  image = image.debian
  size  = "4G"
}}
port "eth0" {{
  network = network.lan
  ip      = "{ip}"
}}
instance "vm" {{
  memory = "{memory}"
  disks  = [disk.root]
  ports  = [port.eth0]
  cloud_init {{
    user_data = "#cloud-config\nhostname: vfagent\n"
  }}
  wait_for {{
    agent   = true
    timeout = "600s"
  }}
}}
output "addresses" {{ value = instance.vm.addresses }}
"##
        )
    };
    let name = format!("{}-vm", s.stack);
    s.write(&conf("1G"));
    let t = Instant::now();
    // Within the wait's own 600 s and more: a real image booting under TCG
    // on a loaded host takes minutes (the harness's default is 300 s).
    let out = s.vf_within(&["apply", "--auto-approve"], Duration::from_secs(900));
    assert!(out.ok() && out.stdout.contains("Apply complete"), "apply failed:\n{}", out.show());
    eprintln!("[e2e] apply to agent-ready: {:.1}s", t.elapsed().as_secs_f64());
    assert!(out.stdout.contains("wait for the guest agent of"), "{}", out.show());
    assert!(out.stdout.contains(&format!("addresses = [\"{ip}\"")), "the output holds the port's address:\n{}", out.show());
    let o = s.output(&["output", "--json", "addresses"]).must();
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.show()));
    assert_eq!(v.as_array().and_then(|a| a.first()), Some(&serde_json::json!(ip)), "{}", o.show());
    let show = s.vf(&["show"]).must().stdout;
    assert!(show.contains(&format!("{ip}/24")), "show lists the agent's address:\n{show}");
    assert!(!show.contains("127.0.0.1"), "no loopback:\n{show}");
    s.assert_plan_empty("after the apply (no perpetual diff from the channel)");

    // A memory change is a restart: the shutdown goes through the agent.
    s.write(&conf("1280M"));
    let out = s.vf_within(&["apply", "--auto-approve", "-v"], Duration::from_secs(900));
    assert!(out.ok(), "{}", out.show());
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains(&format!("{name} shut down gracefully through the guest agent")), "{}", out.show());
    let secs = step_seconds(&out.stdout, &format!("shut down domain {name}")).unwrap_or_else(|| panic!("no shutdown step:\n{}", out.show()));
    eprintln!("[e2e] shutdown through the agent: {secs:.1}s (timeout 60s)");
    assert!(secs < 30.0, "the shutdown took {secs}s, not well inside the 60 s timeout");
    let o = s.output(&["output", "--json", "addresses"]).must();
    assert!(o.stdout.contains(&ip), "after the restart: {}", o.show());
    s.assert_plan_empty("after the restart");

    let out = s.vf(&["destroy", "--auto-approve", "-v"]);
    assert!(out.ok(), "{}", out.show());
    let secs = step_seconds(&out.stdout, &format!("remove domain {name}")).unwrap_or_else(|| panic!("no removal step:\n{}", out.show()));
    eprintln!("[e2e] destroy's shutdown through the agent: {secs:.1}s");
    assert!(format!("{}{}", out.stdout, out.stderr).contains("shut down gracefully through the guest agent"), "{}", out.show());
    assert!(secs < 30.0, "the removal took {secs}s");
    assert!(!domain_exists(&name));
}

/// The seconds of a finished step line `+ ADDR: DESCRIPTION (12.3s)`.
fn step_seconds(stdout: &str, description: &str) -> Option<f64> {
    stdout.lines().find(|l| l.contains(description) && l.starts_with('+')).and_then(|l| l.rsplit_once('(')).and_then(|(_, t)| t.trim_end_matches(')').trim_end_matches('s').parse().ok())
}
