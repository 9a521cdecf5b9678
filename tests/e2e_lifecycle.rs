//! `lifecycle { ignore_changes }` on the real host: a change made by hand to
//! an ignored attribute is not a plan change, and a restart for another
//! reason keeps the host's value (the redefine takes it from the domain).

mod support;
use support::*;

#[test]
fn ignored_memory_survives_a_restart_for_another_change() {
    let s = VfStack::new("ignored_memory_survives_a_restart_for_another_change", "ign");
    let pid = std::process::id();
    let net = format!("10.240.{}", pid % 250);
    let conf = |cmdline_extra: &str| {
        format!(
            r#"
variable "assets" {{ type = string }}
network "lan" {{
  bridge  = "vfi{pid}"
  address = "{net}.1/24"
}}
image "tiny" {{ source = "${{var.assets}}/tiny.qcow2" }}
disk "root" {{ image = image.tiny }}
instance "vm" {{
  memory  = "256M"
  kernel  = "${{var.assets}}/vmlinuz"
  initrd  = "${{var.assets}}/initrd.gz"
  cmdline = "console=ttyS0{cmdline_extra}"
  disks   = [disk.root]
  lifecycle {{
    ignore_changes = [memory]
  }}
  wait_for {{
    console = "VF-READY"
    timeout = "240s"
  }}
}}
"#
        )
    };
    s.write(&conf(""));
    s.apply();
    let name = format!("{}-vm", s.stack);
    virsh(&["setmaxmem", &name, "393216", "--config"]).must();
    s.assert_plan_empty("after an ignored change by hand");
    s.write(&conf(" vf.hostname=ign"));
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains("cmdline") && !plan.stdout.contains("memory ="), "{}", plan.stdout);
    s.apply();
    let xml = virsh(&["dumpxml", "--inactive", &name]).must().stdout;
    assert!(xml.contains("<memory unit='KiB'>393216</memory>"), "the ignored memory was overwritten:\n{xml}");
    assert!(xml.contains("vf.hostname=ign"), "the cmdline change was not applied:\n{xml}");
    s.assert_plan_empty("after the restart");
}
