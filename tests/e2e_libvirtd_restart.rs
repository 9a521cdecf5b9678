//! Issue 6, fault 2: libvirtd restarted in the middle of an apply. The apply
//! either reconnects and finishes, or fails with a message naming the step;
//! either way the next apply converges and the plan after it is empty.
//!
//! Alone in its own test binary: restarting libvirtd disturbs every other
//! libvirt client on the host, and cargo runs test binaries one at a time.
//! The daemon is stopped by the PID in its pidfile (never by name) and
//! started again the way scripts/host-setup starts it (`libvirtd -d`).

mod support;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

fn restart_libvirtd() {
    let pid: i32 = std::fs::read_to_string("/run/libvirtd.pid").expect("libvirtd pidfile").trim().parse().expect("pid");
    let alive = |p: i32| Path::new(&format!("/proc/{p}")).exists();
    use std::path::Path;
    assert!(run("kill", &["-TERM", &pid.to_string()]).ok(), "cannot signal libvirtd {pid}");
    assert!(wait_until(Duration::from_secs(30), || !alive(pid)), "libvirtd {pid} did not exit");
    assert!(run("libvirtd", &["-d"]).ok(), "libvirtd did not start again");
    assert!(wait_until(Duration::from_secs(30), || virsh(&["version"]).ok()), "libvirtd does not answer after the restart");
}

#[test]
fn libvirtd_restart_during_apply() {
    let s = VfStack::new("libvirtd_restart_during_apply", "lvr");
    let pid = std::process::id();
    let net = format!("10.239.{}", pid % 250);
    s.write(&format!(
        r#"
variable "assets" {{ type = string }}
network "lan" {{
  bridge  = "vfr{pid}"
  address = "{net}.1/24"
}}
image "tiny" {{ source = "${{var.assets}}/tiny.qcow2" }}
disk "root" {{
  count = 4
  image = image.tiny
}}
port "eth0" {{
  count   = 4
  network = network.lan
  ip      = "{net}.${{10 + count.index}}"
}}
instance "vm" {{
  count   = 4
  memory  = "128M"
  kernel  = "${{var.assets}}/vmlinuz"
  initrd  = "${{var.assets}}/initrd.gz"
  cmdline = "console=ttyS0 vf.ip=${{port.eth0[count.index].ip}}/24"
  disks   = [disk.root[count.index]]
  ports   = [port.eth0[count.index]]
  wait_for {{
    console = "VF-READY"
    timeout = "180s"
  }}
}}
"#
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_virtform"))
        .args(["--no-color", "--state-dir"])
        .arg(s.state.path())
        .args(["--stack", &s.stack, "--var"])
        .arg(format!("assets={}", assets_dir().display()))
        .args(["apply", "--auto-approve", "--json"])
        .arg(s.cfg.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = Vec::new();
    let mut restarted = false;
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let Ok(line) = line else { break };
        // After the first domain started (others still defining, starting or booting).
        if !restarted && line.contains("\"event\":\"finished\"") && line.contains("start domain") {
            restart_libvirtd();
            restarted = true;
        }
        lines.push(line);
    }
    let status = child.wait().expect("wait");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(restarted, "the apply never started a domain:\n{}\n{err}", lines.join("\n"));
    let all = format!("{}\n{err}", lines.join("\n"));
    if status.success() {
        eprintln!("[lvr] RESULT: the apply reconnected and finished");
    } else {
        // A failure names the step that met the restart.
        let failed = lines.iter().find(|l| l.contains("\"event\":\"failed\"")).cloned().unwrap_or_default();
        assert!(failed.contains("\"step\":") && failed.contains("\"error\":"), "no failed step reported (exit {status:?}):\n{all}");
        eprintln!("[lvr] RESULT: the apply failed naming the step: {failed}");
    }
    s.apply();
    s.assert_plan_empty("after libvirtd's restart and a second apply");
    for i in 0..4 {
        assert_eq!(domain_state(&format!("{}-vm-{i}", s.stack)), "running");
    }
}
