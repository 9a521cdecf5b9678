//! UEFI firmware in the planner: converged EFI and Secure Boot instances
//! plan nothing, a change of firmware is a replace, and missing OVMF files
//! are a located plan error (the files present are a host fact in
//! `Observed::firmware`, built by hand here).

use super::tests::{converged, find, load, opts};
use super::*;
use crate::xml::domain::{OVMF_CODE, OVMF_CODE_SECURE, OVMF_FILES, OVMF_VARS, OVMF_VARS_SECURE};

const EFI: &str = r#"
virtform { stack = "fw" }
instance "vm" {
  memory   = "256M"
  kernel   = "/assets/vmlinuz"
  cmdline  = "console=ttyS0"
  firmware = "efi"
}
"#;

/// 1-based line and column of a byte offset, as diagnostics count them.
fn line_col(src: &str, at: usize) -> (usize, usize) {
    crate::config::source::SourceFile::new("main.vf.hcl".into(), "main.vf.hcl".into(), src.to_string()).line_col(at)
}

fn with_ovmf(mut o: Observed) -> Observed {
    o.firmware = OVMF_FILES.iter().map(|f| f.to_string()).collect();
    o
}

fn secure(src: &str) -> String {
    src.replace("  firmware = \"efi\"\n", "  firmware = \"efi\"\n  machine  = \"q35\"\n  secure_boot = true\n")
}

#[test]
fn converged_efi_and_secure_boot_instances_plan_nothing() {
    for src in [EFI.to_string(), secure(EFI)] {
        let (_d, cfg) = load(&src);
        let o = with_ovmf(converged(&cfg));
        let p = plan(&cfg, &o, &opts());
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert!(!p.has_changes(), "{}", render::text(&p, false));
        // The definition names OVMF and the instance's own variable store.
        let def = o.domains["fw-vm"].def.as_ref().unwrap();
        let (code, vars) = if src.contains("secure_boot") { (OVMF_CODE_SECURE, OVMF_VARS_SECURE) } else { (OVMF_CODE, OVMF_VARS) };
        assert_eq!(def.loader.as_ref().map(|l| l.path.as_str()), Some(code));
        let nv = def.nvram.as_ref().unwrap();
        assert_eq!((nv.path.as_deref(), nv.template.as_deref()), (Some("/state/fw/nvram/vm_VARS.fd"), Some(vars)));
    }
}

#[test]
fn nvram_files_are_per_instance_under_the_state_dir() {
    let (_d, cfg) = load(&EFI.replace("instance \"vm\" {\n", "instance \"vm\" {\n  for_each = toset([\"a\", \"b\"])\n  name     = \"fw-${each.key}\"\n"));
    let l = super::tests::lowering(&cfg);
    let mut paths: Vec<String> = cfg.resources.iter().filter_map(|r| l.domain(r)).map(|d| d.loader.unwrap().nvram).collect();
    paths.sort();
    assert_eq!(paths, ["/state/fw/nvram/vm@a_VARS.fd", "/state/fw/nvram/vm@b_VARS.fd"]);
}

/// bios → efi, efi → secure boot, efi → bios: each a replace (the old
/// domain and its variable store go, a new one is defined).
#[test]
fn a_change_of_firmware_is_a_replace() {
    let bios = EFI.replace("  firmware = \"efi\"\n", "");
    let cases = [(bios.clone(), EFI.to_string(), "firmware"), (EFI.to_string(), secure(EFI), "loader"), (EFI.to_string(), bios.clone(), "firmware")];
    for (from, to, attr) in cases {
        let (_d, old) = load(&from);
        let o = with_ovmf(converged(&old));
        let (_d2, new) = load(&to);
        let p = plan(&new, &o, &opts());
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let c = find(&p, "instance.vm");
        assert_eq!(c.action, Action::Replace, "{}", render::text(&p, false));
        assert_eq!(c.reason.as_deref(), Some("replace_because_cannot_update"));
        let ch = c.changes.iter().find(|x| x.attr == attr).unwrap_or_else(|| panic!("no {attr} change: {:?}", c.changes));
        assert_eq!(ch.landing, Landing::Replace);
    }
    let (_d, old) = load(&bios);
    let (_d2, new) = load(EFI);
    let p = plan(&new, &with_ovmf(converged(&old)), &opts());
    insta::assert_snapshot!("plan_text_bios_to_efi", render::text(&p, false));
    let (_d, old) = load(EFI);
    let (_d2, new) = load(&secure(EFI));
    let p = plan(&new, &with_ovmf(converged(&old)), &opts());
    insta::assert_snapshot!("plan_text_efi_to_secure_boot", render::text(&p, false));
}

#[test]
fn missing_ovmf_is_a_located_plan_error_naming_the_file_and_the_package() {
    let (d, cfg) = load(EFI);
    let file = d.path().join("main.vf.hcl").display().to_string();
    // A fresh host (nothing installed) and one that already runs the domain.
    for o in [Observed::default(), converged(&cfg)] {
        let p = plan(&cfg, &o, &opts());
        assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
        let e = &p.errors[0];
        eprintln!("{e}");
        assert!(e.starts_with("instance.vm: firmware = \"efi\" needs the UEFI firmware /usr/share/OVMF/OVMF_CODE_4M.fd and /usr/share/OVMF/OVMF_VARS_4M.fd, which this host does not have"), "{e}");
        let (line, col) = line_col(EFI, EFI.find("\"efi\"").unwrap());
        assert!(e.contains(&format!("{file}:{line}:{col}")), "{e}");
        assert!(e.contains("  firmware = \"efi\""), "the source line: {e}");
        assert!(e.contains("help: install OVMF: apt-get install ovmf"), "{e}");
        // Nothing is planned for the instance: apply refuses the plan.
        assert_eq!(find(&p, "instance.vm").action, Action::NoOp);
    }
    // A bios instance needs no OVMF.
    let (_d, bios) = load(&EFI.replace("  firmware = \"efi\"\n", ""));
    assert!(plan(&bios, &Observed::default(), &opts()).errors.is_empty());
    // A destroy never needs it.
    let p = plan(&cfg, &converged(&cfg), &PlanOptions { destroy: true, ..opts() });
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(find(&p, "instance.vm").action, Action::Delete);
}

#[test]
fn missing_secure_boot_files_are_located_at_secure_boot() {
    let src = secure(EFI);
    let (d, cfg) = load(&src);
    let file = d.path().join("main.vf.hcl").display().to_string();
    // OVMF without the enrolled-keys template (an older or trimmed package).
    let o = Observed { firmware: [OVMF_CODE, OVMF_VARS, OVMF_CODE_SECURE].iter().map(|f| f.to_string()).collect(), ..Default::default() };
    let p = plan(&cfg, &o, &opts());
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    let e = &p.errors[0];
    eprintln!("{e}");
    assert!(e.starts_with("instance.vm: secure_boot = true needs the Secure Boot UEFI firmware /usr/share/OVMF/OVMF_VARS_4M.ms.fd, which this host does not have"), "{e}");
    let (line, col) = line_col(&src, src.find("secure_boot = true").unwrap() + "secure_boot = ".len());
    assert!(e.contains(&format!("{file}:{line}:{col}")), "{e}");
    assert!(e.contains("apt-get install ovmf"), "{e}");
    assert_eq!(find(&p, "instance.vm").action, Action::NoOp);
}
