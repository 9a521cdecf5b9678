//! Real-host end-to-end tests of issue 15 item 6: UEFI through virtform.
//!
//! - The tiny test guest (direct kernel boot works under OVMF too: OVMF
//!   loads the kernel through its EFI stub) boots with `firmware = "efi"`:
//!   the kernel says so on the console, the instance's own UEFI variable
//!   store is under the state dir and private, the domain runs, a second
//!   plan shows no changes. Switching to BIOS replaces the instance and
//!   its variable store goes; switching to `secure_boot` (q35) replaces it
//!   again, boots with Secure Boot enabled (the kernel says so) from the
//!   enrolled-keys template; destroy removes the domain and the variable
//!   store, and nothing of the stack is left.
//! - The real Debian cloud image under UEFI (GRUB from the ESP, booting
//!   from its disk alone, up to cloud-init and SSH) is tests/e2e_cloud.rs.
//!
//! Stacks are `e2e-vfuefi-…-<pid>`, so domain names carry `vfuefi` and the
//! PID. Needs root, libvirtd, OVMF (scripts/host-setup) and the guest
//! assets (scripts/build-guest); without them the tests FAIL, never skip.

mod support;
use support::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const OVMF: [&str; 4] = ["/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"];

fn preflight_ovmf() {
    for f in OVMF {
        assert!(Path::new(f).is_file(), "{f} is missing: apt-get install ovmf ({HINT})");
    }
}

/// The tiny guest with the given firmware lines in its instance block.
fn tiny(firmware: &str) -> String {
    format!(
        r#"variable "assets" {{ type = string }}

image "tiny" {{
  source = "${{var.assets}}/tiny.qcow2"
}}

disk "root" {{
  image = image.tiny
  size  = "256M"
}}

instance "vm" {{
  memory  = "256M"
{firmware}  kernel  = "${{var.assets}}/vmlinuz"
  initrd  = "${{var.assets}}/initrd.gz"
  cmdline = "console=ttyS0"
  disks   = [disk.root]

  wait_for {{
    console = "VF-READY"
    timeout = "120s"
  }}
}}
"#
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
}

fn inactive_xml(domain: &str) -> String {
    virsh(&["dumpxml", "--inactive", domain]).must().stdout
}

/// The console of the current boot (the log is rotated at every fresh boot).
fn boot_console(s: &VfStack) -> String {
    s.console("vm.log")
}

#[test]
fn efi_instance_boots_under_ovmf_with_a_private_nvram_then_bios_then_secure_boot() {
    preflight_ovmf();
    let s = VfStack::new("efi_instance_boots_under_ovmf_with_a_private_nvram_then_bios_then_secure_boot", "vfuefi-efi");
    let domain = format!("{}-vm", s.stack);
    let stack_dir = s.state.path().join(&s.stack);
    let nvram: PathBuf = stack_dir.join("nvram").join("vm_VARS.fd");

    // 1. firmware = "efi".
    s.write(&tiny("  firmware = \"efi\"\n"));
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains("+ firmware    = \"efi\""), "{}", plan.stdout);
    let t = std::time::Instant::now();
    s.apply();
    eprintln!("[e2e] efi apply (boot to VF-READY) took {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(domain_state(&domain), "running");
    let console = boot_console(&s);
    assert!(console.contains("efi: EFI v2.70 by EDK II") && console.contains("EFI stub:"), "the kernel did not boot under OVMF:\n{console}");
    assert!(!console.contains("Secure Boot is enabled"), "{console}");
    let xml = inactive_xml(&domain);
    assert!(xml.contains("<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>"), "{xml}");
    assert!(xml.contains(&format!("<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>{}</nvram>", nvram.display())), "{xml}");
    // The instance's own variable store, copied from the template by libvirt at the first start: private.
    assert!(nvram.is_file(), "no variable store at {}", nvram.display());
    assert_eq!(std::fs::metadata(&nvram).unwrap().len(), std::fs::metadata(OVMF[1]).unwrap().len());
    assert_eq!(mode(&nvram), 0o600, "{}", nvram.display());
    assert_eq!(mode(nvram.parent().unwrap()), 0o711);
    s.assert_plan_empty("after the efi apply");

    // 2. Back to BIOS: a replace; the variable store goes with the old domain.
    s.write(&tiny(""));
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains("# instance.vm must be replaced"), "{}", plan.stdout);
    assert!(plan.stdout.contains("~ firmware = \"efi\" -> \"bios\" # forces replacement"), "{}", plan.stdout);
    s.apply();
    assert_eq!(domain_state(&domain), "running");
    assert!(!nvram.exists(), "the replace left the old variable store {}", nvram.display());
    assert!(!inactive_xml(&domain).contains("<loader"));
    assert!(!boot_console(&s).contains("efi: EFI v2"), "a BIOS boot went through UEFI:\n{}", boot_console(&s));
    s.assert_plan_empty("after the bios apply");

    // 3. Secure Boot (q35, SMM, enrolled keys): a replace again.
    s.write(&tiny("  firmware    = \"efi\"\n  machine     = \"q35\"\n  secure_boot = true\n"));
    let plan = s.vf(&["plan"]).must();
    assert!(plan.stdout.contains("# instance.vm must be replaced"), "{}", plan.stdout);
    assert!(plan.stdout.contains("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd (secure boot)\" # forces replacement"), "{}", plan.stdout);
    let t = std::time::Instant::now();
    s.apply();
    eprintln!("[e2e] secure boot apply (replace, boot to VF-READY) took {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(domain_state(&domain), "running");
    let console = boot_console(&s);
    assert!(console.contains("EFI stub: UEFI Secure Boot is enabled."), "not booted with Secure Boot:\n{console}");
    let xml = inactive_xml(&domain);
    assert!(xml.contains("<loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.secboot.fd</loader>"), "{xml}");
    assert!(xml.contains(&format!("<nvram template='/usr/share/OVMF/OVMF_VARS_4M.ms.fd'>{}</nvram>", nvram.display())), "{xml}");
    assert!(xml.contains("<smm state='on'/>"), "{xml}");
    assert!(nvram.is_file());
    assert_eq!(mode(&nvram), 0o600);
    s.assert_plan_empty("after the secure boot apply");

    // 4. Destroy: the domain and its variable store go; nothing of the stack is left.
    let ino = std::fs::metadata(&nvram).unwrap().ino();
    let out = s.vf(&["destroy", "--auto-approve"]).must();
    assert!(out.stdout.contains("Destroy complete"), "{}", out.show());
    assert!(!domain_exists(&domain), "destroy left the domain");
    assert!(!nvram.exists(), "destroy left the variable store (inode {ino})");
    assert!(!stack_dir.exists(), "destroy left {}: {:?}", stack_dir.display(), files_under(&stack_dir));
    assert!(leaks_of_stack(&s.stack).is_empty(), "{:?}", leaks_of_stack(&s.stack));
}
