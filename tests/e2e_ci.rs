//! Real-host end-to-end tests of issue 5: volumes (attached at create time,
//! hot-attached, kept across an instance replacement, grown live,
//! prevent_destroy), the cloud-init NoCloud seed read by the guest and
//! rewritten when user-data changes, and TCP readiness.
//!
//! The guest prints `VF-VOL <serial> <dev> <bytes> <first line>` for every
//! disk with a serial, writes a marker into a blank volume on
//! `vf.volwrite=SERIAL:TEXT`, and prints the seed's files as `VF-SEED*` lines
//! (scripts/README-guest.md).
//!
//! Needs root, libvirtd and the guest assets (scripts/test provides them);
//! without them the tests FAIL, they never skip.

mod support;
use std::time::Duration;
use support::*;

fn pid() -> u32 {
    std::process::id()
}

const WAIT: Duration = Duration::from_secs(120);

struct Ci<'a> {
    bridge: &'a str,
    net: &'a str,
    image: &'a str,
    /// Volumes attached to the instance (`volume.x` references).
    attached: &'a [&'a str],
    logs_size: &'a str,
    user_data: &'a str,
    prevent_destroy: bool,
}

impl Ci<'_> {
    fn render(&self) -> String {
        let lifecycle = if self.prevent_destroy { "  lifecycle { prevent_destroy = true }\n" } else { "" };
        format!(
            r##"
variable "assets" {{ type = string }}

network "lan" {{
  bridge  = "{bridge}"
  address = "{net}.1/24"
}}

image "tiny" {{ source = "${{var.assets}}/{image}" }}
disk "root" {{ image = image.tiny }}

port "eth0" {{
  network = network.lan
  ip      = "{net}.10"
}}

volume "data" {{
  size   = "64M"
  serial = "vfdata"
{lifecycle}}}

volume "logs" {{
  size   = "{logs_size}"
  format = "raw"
  serial = "vflogs"
}}

instance "vm" {{
  memory  = "256M"
  kernel  = "${{var.assets}}/vmlinuz"
  initrd  = "${{var.assets}}/initrd.gz"
  cmdline = "console=ttyS0 vf.ip={net}.10/24 vf.listen=8080 vf.volwrite=vfdata:mark-{pid}"
  disks   = [disk.root]
  ports   = [port.eth0]
  volumes = [{attached}]
  cloud_init {{
    user_data = "#cloud-config\nruncmd:\n  - echo {user_data}\n"
  }}
  wait_for {{
    console = "VF-READY"
    tcp     = 8080
    timeout = "240s"
  }}
}}
"##,
            bridge = self.bridge,
            net = self.net,
            image = self.image,
            logs_size = self.logs_size,
            user_data = self.user_data,
            attached = self.attached.join(", "),
            pid = pid(),
        )
    }
}

/// The last `VF-VOL <serial> …` line of a console log, split in fields.
fn vf_vol(log: &str, serial: &str) -> Option<Vec<String>> {
    let prefix = format!("VF-VOL {serial} ");
    console_lines(log).into_iter().rev().find(|l| l.starts_with(&prefix)).map(|l| l.split_whitespace().map(str::to_string).collect())
}

/// Issue 5, tests 1–5 on one guest.
#[test]
fn volumes_and_cloud_init() {
    let s = VfStack::new("volumes_and_cloud_init", "vol");
    let bridge = format!("vfv{}", pid());
    let net = format!("10.233.{}", pid() % 250);
    let mark = format!("mark-{}", pid());
    let mut c = Ci { bridge: &bridge, net: &net, image: "tiny.qcow2", attached: &["volume.logs"], logs_size: "32M", user_data: "hello-v1", prevent_destroy: false };
    s.write(&c.render());
    let out = s.apply();
    assert!(out.stdout.contains("wait for TCP port 8080"), "{}", out.stdout);

    // 1. A volume attached at create time is visible by its serial.
    let log = s.console("vm.log");
    let logs = vf_vol(&log, "vflogs").unwrap_or_else(|| panic!("the guest does not see volume vflogs:\n{log}"));
    assert_eq!(logs[3], (32u64 << 20).to_string(), "{logs:?}");
    // 5. The seed is readable in the guest.
    assert!(console_lines(&log).iter().any(|l| l.starts_with(&format!("VF-SEED-META instance-id: \"{}-vm-", s.stack))), "no instance-id from the seed:\n{log}");
    assert!(has_line(&log, "VF-SEED-USER   - echo hello-v1"), "no user-data from the seed:\n{log}");
    s.assert_plan_empty("after create");

    // 2. Hot-attach a blank volume; the guest writes a marker into it.
    let id = virsh(&["domid", &format!("{}-vm", s.stack)]).stdout.trim().to_string();
    c.attached = &["volume.logs", "volume.data"];
    s.write(&c.render());
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains("will be updated in-place (live)"), "{}", plan.stdout);
    s.apply();
    assert!(s.wait_console("vm.log", &format!("VF-VOLWRITE vfdata {mark} ok"), WAIT), "the guest did not write into the hot-attached volume:\n{}", s.console("vm.log"));
    assert_eq!(virsh(&["domid", &format!("{}-vm", s.stack)]).stdout.trim(), id, "hot-attach restarted the guest");
    s.assert_plan_empty("after hot-attach");

    // 3. Grow a volume on the running guest; the guest sees the new size.
    c.logs_size = "48M";
    s.write(&c.render());
    s.apply();
    let grown = (48u64 << 20).to_string();
    assert!(
        wait_until(WAIT, || vf_vol(&s.console("vm.log"), "vflogs").is_some_and(|v| v.get(3) == Some(&grown))),
        "the guest did not see volume vflogs grow to 48M:\n{}",
        s.console("vm.log")
    );
    s.assert_plan_empty("after growing");

    // Replace the instance (new boot image): the new guest reads the same marker.
    c.image = "tiny2.qcow2";
    s.write(&c.render());
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains("# instance.vm must be replaced"), "{}", plan.stdout);
    assert!(!plan.stdout.contains("# volume.data must be replaced") && !plan.stdout.contains("# volume.data will be destroyed"), "{}", plan.stdout);
    s.apply();
    let log = s.console("vm.log");
    assert!(has_line(&log, "VF-IMAGE tiny-v2"), "not the new image:\n{log}");
    let data = vf_vol(&log, "vfdata").unwrap_or_else(|| panic!("the new guest does not see vfdata:\n{log}"));
    assert_eq!(data.get(4).map(String::as_str), Some(mark.as_str()), "the marker did not survive the replacement: {data:?}");

    // 5. Changing user_data shows in the plan and reaches the guest.
    c.user_data = "hello-v2";
    s.write(&c.render());
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains("cloud_init") && plan.stdout.contains("(restart)"), "{}", plan.stdout);
    s.apply();
    assert!(has_line(&s.console("vm.log"), "VF-SEED-USER   - echo hello-v2"), "{}", s.console("vm.log"));
    s.assert_plan_empty("after the user-data change");

    // 4. A plan that would delete a prevent_destroy volume fails before touching anything.
    c.prevent_destroy = true;
    s.write(&c.render());
    s.assert_plan_empty("after protecting volume.data");
    let before = fs_listing(&s);
    for args in [&["destroy", "--auto-approve"][..], &["apply", "--auto-approve", "--replace", "volume.data"][..]] {
        let out = s.vf(args);
        assert_eq!(out.code, Some(1), "{}", out.show());
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(all.contains("volume.data has lifecycle.prevent_destroy set"), "the error does not name the volume:\n{}", out.show());
        assert!(all.contains("nothing was changed"), "{}", out.show());
        assert_eq!(fs_listing(&s), before, "the refused {args:?} changed the state dir");
        assert!(domain_exists(&format!("{}-vm", s.stack)), "the refused {args:?} removed the domain");
    }

    // Let the fixture destroy everything: lift the protection first.
    c.prevent_destroy = false;
    s.write(&c.render());
}

fn fs_listing(s: &VfStack) -> Vec<String> {
    let mut v: Vec<String> = files_under(s.state.path()).iter().map(|p| p.display().to_string()).collect();
    v.sort();
    v
}
