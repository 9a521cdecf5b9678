//! Shared helpers of the real-host end-to-end tests: running programs with
//! argument vectors (never a shell), reading the host (domains, links, OVS,
//! libvirt networks), console logs and plan text.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const URI: &str = "qemu:///system";
pub const HINT: &str = "run scripts/test (it runs scripts/host-setup and scripts/build-guest first)";

// ---------------------------------------------------------------------------
// Running programs
// ---------------------------------------------------------------------------

/// The result of one program run.
pub struct Out {
    pub what: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard output and error together.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Everything, for assertion messages.
    pub fn show(&self) -> String {
        format!(
            "`{}` exited with {:?} after {:.1}s\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.what,
            self.code,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }

    pub fn must(self) -> Out {
        assert!(self.ok(), "command failed:\n{}", self.show());
        self
    }
}

pub fn reader<R: Read + Send + 'static>(r: Option<R>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = r {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        s
    })
}

/// A started program whose output is collected in the background.
pub struct Running {
    what: String,
    child: Child,
    started: Instant,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
}

impl Running {
    pub fn spawn(mut cmd: Command, what: String) -> Running {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
        let out = Some(reader(child.stdout.take()));
        let err = Some(reader(child.stderr.take()));
        Running {
            what,
            child,
            started,
            out,
            err,
        }
    }

    /// Waits for the program; kills it (by its own PID) after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Out {
        let mut timed_out = false;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if self.started.elapsed() > timeout => {
                    let _ = self.child.kill();
                    timed_out = true;
                    break self.child.wait().ok();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break None,
            }
        };
        let stdout = self
            .out
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let mut stderr = self
            .err
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        if timed_out {
            stderr.push_str(&format!("\n[e2e: killed after {}s]\n", timeout.as_secs()));
        }
        let out = Out {
            what: self.what.clone(),
            code: status.and_then(|s| s.code()),
            stdout,
            stderr,
            elapsed: self.started.elapsed(),
        };
        eprintln!(
            "[e2e] {:>6.1}s exit {:?}: {}",
            out.elapsed.as_secs_f64(),
            out.code,
            out.what
        );
        out
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Only reached when `wait` was not called (a panic in between): do not leak the process.
        if self.out.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a host tool with an argument vector; never panics.
pub fn run(program: &str, args: &[&str]) -> Out {
    let what = format!("{program} {}", args.join(" "));
    let started = Instant::now();
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => Out {
            what,
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            elapsed: started.elapsed(),
        },
        Err(e) => Out {
            what,
            code: None,
            stdout: String::new(),
            stderr: format!("cannot run {program}: {e}"),
            elapsed: started.elapsed(),
        },
    }
}

pub fn virsh(args: &[&str]) -> Out {
    let mut full = vec!["-c", URI];
    full.extend_from_slice(args);
    run("virsh", &full)
}

// ---------------------------------------------------------------------------
// Looking at the host
// ---------------------------------------------------------------------------

pub fn assets_dir() -> PathBuf {
    std::env::var_os("VIRTFORM_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/virtform/assets"))
}

/// Fails (never skips) when the host cannot run these tests.
pub fn preflight() {
    let assets = assets_dir();
    for f in ["vmlinuz", "initrd.gz", "tiny.qcow2", "tiny2.qcow2"] {
        assert!(
            assets.join(f).is_file(),
            "guest asset {} is missing: {HINT}",
            assets.join(f).display()
        );
    }
    let v = virsh(&["version"]);
    assert!(
        v.ok(),
        "libvirt ({URI}) does not answer: {}\n{HINT}",
        v.stderr.trim()
    );
    for (tool, arg) in [("ip", "-V"), ("ping", "-V")] {
        assert!(run(tool, &[arg]).ok(), "{tool} is not installed: {HINT}");
    }
}

pub fn domain_names() -> Vec<String> {
    let out = virsh(&["list", "--all", "--name"]).must();
    out.stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn domain_exists(name: &str) -> bool {
    domain_names().iter().any(|d| d == name)
}

pub fn domain_state(name: &str) -> String {
    virsh(&["domstate", name]).stdout.trim().to_string()
}

/// `ip -o link` lines, one per link.
pub fn link_lines() -> Vec<String> {
    run("ip", &["-o", "link", "show"])
        .must()
        .stdout
        .lines()
        .map(str::to_string)
        .collect()
}

/// "12: vfa1-123: <BROADCAST..." (or "name@if3:" for paired links) → the name.
pub fn link_name(line: &str) -> Option<&str> {
    line.split(':')
        .nth(1)
        .map(|n| n.trim().split('@').next().unwrap_or(""))
}

pub fn link_exists(name: &str) -> bool {
    link_lines().iter().any(|l| link_name(l) == Some(name))
}

/// `ip -json link show dev NAME`, parsed (the one object).
pub fn link_json(name: &str) -> serde_json::Value {
    let out = run("ip", &["-json", "link", "show", "dev", name]).must();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("ip -json output");
    v[0].clone()
}

pub fn link_mtu(name: &str) -> u64 {
    link_json(name)["mtu"]
        .as_u64()
        .expect("mtu in ip -json link")
}

pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Files (not directories) under a directory, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The lines of a console log, `\r` stripped.
pub fn console_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect()
}

pub fn has_line(text: &str, want: &str) -> bool {
    console_lines(text).iter().any(|l| l == want)
}

pub fn last_memtotal(text: &str) -> Option<u64> {
    console_lines(text).iter().rev().find_map(|l| {
        l.strip_prefix("VF-MEMTOTAL ")
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The block of plan text about one resource: from its `# ADDR ...` header to
/// the next blank line (the XML diff of an instance is inside the block).
pub fn plan_block<'a>(plan: &'a str, addr: &str) -> Option<&'a str> {
    let header = format!("# {addr} ");
    plan.split("\n\n").find(|b| {
        b.lines()
            .next()
            .is_some_and(|l| l.trim_start().starts_with(&header))
    })
}


// ---------------------------------------------------------------------------
// Open vSwitch and libvirt networks
// ---------------------------------------------------------------------------

/// Names of all OVS bridges (empty when OVS does not answer).
pub fn ovs_bridges() -> Vec<String> {
    run("ovs-vsctl", &["--timeout=10", "list-br"]).stdout.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// Names of the ports of an OVS bridge.
pub fn ovs_ports(bridge: &str) -> Vec<String> {
    run("ovs-vsctl", &["--timeout=10", "list-ports", bridge]).stdout.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// `external_ids` of an OVS interface, as `ovs-vsctl get` prints them.
pub fn ovs_iface_external_ids(iface: &str) -> String {
    run("ovs-vsctl", &["--timeout=10", "get", "Interface", iface, "external_ids"]).stdout.trim().to_string()
}

/// Every OVS port and interface carrying a marker of `stack`
/// (`external_ids:virtform="virtform:<stack>:…"`), as "table name" lines.
pub fn ovs_marked(stack: &str) -> Vec<String> {
    let needle = format!("virtform:{stack}:");
    let mut out = Vec::new();
    for table in ["Bridge", "Port", "Interface"] {
        let o = run("ovs-vsctl", &["--timeout=10", "--format=csv", "--data=bare", "--no-headings", "--columns=name,external_ids", "list", table]);
        for l in o.stdout.lines().filter(|l| l.contains(&needle)) {
            out.push(format!("{table} {l}"));
        }
    }
    out
}

/// Names of all libvirt networks.
pub fn libvirt_networks() -> Vec<String> {
    virsh(&["net-list", "--all", "--name"]).stdout.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// Everything of a stack still on the host (domains named after it, links,
/// OVS objects with its marker, libvirt networks `vf-<stack>-…`): empty when
/// nothing leaked.
pub fn leaks_of_stack(stack: &str) -> Vec<String> {
    let mut out = Vec::new();
    let prefix = format!("{stack}-");
    for d in domain_names().iter().filter(|d| d.starts_with(&prefix)) {
        out.push(format!("domain {d}"));
    }
    let marker = format!("virtform:{stack}:");
    for l in link_lines().iter().filter(|l| l.contains(&marker)) {
        out.push(format!("link {l}"));
    }
    out.extend(ovs_marked(stack).into_iter().map(|l| format!("ovs {l}")));
    let net_prefix = format!("vf-{stack}-");
    for n in libvirt_networks().iter().filter(|n| n.starts_with(&net_prefix)) {
        out.push(format!("libvirt network {n}"));
    }
    out
}

/// Waits until `f` returns true, polling every 250 ms; false after `timeout`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A temporary directory QEMU can reach (0755).
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new().prefix(prefix).tempdir().expect("temp dir");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    d
}

/// One configuration directory, state directory and stack: run virtform on
/// it; on drop, destroy the stack and fail when anything of it is left.
pub struct VfStack {
    pub test: &'static str,
    pub stack: String,
    pub cfg: tempfile::TempDir,
    pub state: tempfile::TempDir,
    pub started: Instant,
}

impl VfStack {
    pub fn new(test: &'static str, short: &str) -> VfStack {
        preflight();
        let stack = format!("e2e-{short}-{}", std::process::id());
        assert!(leaks_of_stack(&stack).is_empty(), "objects of stack {stack} exist already: {:?}", leaks_of_stack(&stack));
        VfStack { test, cfg: tempdir(&format!("vf-{short}-cfg-")), state: tempdir(&format!("vf-{short}-state-")), stack, started: Instant::now() }
    }

    pub fn write(&self, text: &str) {
        fs::write(self.cfg.path().join("main.vf.hcl"), text).expect("write configuration");
    }

    pub fn console(&self, file: &str) -> String {
        fs::read_to_string(self.state.path().join(&self.stack).join("console").join(file)).unwrap_or_default()
    }

    /// Waits up to `timeout` for a console line starting with `prefix`.
    pub fn wait_console(&self, file: &str, prefix: &str, timeout: Duration) -> bool {
        wait_until(timeout, || console_lines(&self.console(file)).iter().any(|l| l.starts_with(prefix)))
    }

    pub fn vf(&self, args: &[&str]) -> Out {
        self.vf_dir(args, false, Duration::from_secs(300))
    }

    /// [`vf`](Self::vf) with another limit than 300 s (real images under TCG on a busy host).
    pub fn vf_within(&self, args: &[&str], limit: Duration) -> Out {
        self.vf_dir(args, false, limit)
    }

    /// `virtform output` takes the configuration directory as `-C DIR`.
    pub fn output(&self, args: &[&str]) -> Out {
        self.vf_dir(args, true, Duration::from_secs(300))
    }

    /// `virtform ssh ADDRESS -C DIR -- COMMAND…`.
    pub fn ssh(&self, address: &str, command: &[&str]) -> Out {
        let mut args = vec!["ssh", address];
        let mut tail = vec!["--"];
        tail.extend_from_slice(command);
        args.push("-C");
        self.vf_in(&args, false, &tail, Duration::from_secs(120))
    }

    fn vf_dir(&self, args: &[&str], dash_c: bool, limit: Duration) -> Out {
        self.vf_in(args, dash_c, &[], limit)
    }

    fn vf_in(&self, args: &[&str], dash_c: bool, tail: &[&str], timeout: Duration) -> Out {
        let mut argv: Vec<String> = vec![
            "--no-color".into(),
            "--state-dir".into(),
            self.state.path().display().to_string(),
            "--stack".into(),
            self.stack.clone(),
            "--var".into(),
            format!("assets={}", assets_dir().display()),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        if dash_c {
            argv.push("-C".into());
        }
        argv.push(self.cfg.path().display().to_string());
        argv.extend(tail.iter().map(|a| a.to_string()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_virtform"));
        cmd.args(&argv).env("NO_COLOR", "1");
        for (k, _) in std::env::vars() {
            if k.starts_with("VIRTFORM_") && k != "VIRTFORM_ASSETS" {
                cmd.env_remove(k);
            }
        }
        Running::spawn(cmd, format!("virtform {}", argv.join(" "))).wait(timeout)
    }

    pub fn apply(&self) -> Out {
        let out = self.vf(&["apply", "--auto-approve"]);
        assert!(out.ok() && out.stdout.contains("Apply complete"), "apply failed:\n{}", out.show());
        out
    }

    pub fn assert_plan_empty(&self, when: &str) {
        let out = self.vf(&["plan", "--detailed-exitcode"]);
        assert!(out.code == Some(0) && out.stdout.contains("No changes"), "{when}: plan is not empty:\n{}", out.show());
    }
}

impl Drop for VfStack {
    fn drop(&mut self) {
        let out = self.vf(&["destroy", "--auto-approve"]);
        let mut problems = Vec::new();
        if !out.ok() {
            problems.push(format!("cleanup: virtform destroy failed:\n{}", out.show()));
        }
        let leaks = leaks_of_stack(&self.stack);
        problems.extend(leaks.iter().map(|l| format!("LEAK: {l}")));
        // Remove leftovers by exact name so the next run starts clean.
        for l in &leaks {
            if let Some(d) = l.strip_prefix("domain ") {
                let _ = virsh(&["destroy", d]);
                // An EFI domain's variable store must go with it (libvirt refuses otherwise).
                if !virsh(&["undefine", "--nvram", d]).ok() {
                    let _ = virsh(&["undefine", d]);
                }
            } else if let Some(n) = l.strip_prefix("libvirt network ") {
                let _ = virsh(&["net-destroy", n]);
                let _ = virsh(&["net-undefine", n]);
            }
        }
        eprintln!("[e2e] {}: done (with cleanup) in {:.1}s", self.test, self.started.elapsed().as_secs_f64());
        if std::thread::panicking() {
            for p in &problems {
                eprintln!("{p}");
            }
        } else if !problems.is_empty() {
            panic!("{}: cleanup problems:\n{}", self.test, problems.join("\n"));
        }
    }
}

/// libvirt's `default` network, active for the guard's life: defined and
/// started if missing, started if inactive; on drop returned to the state
/// it was found in. Only one test at a time may hold it (the tests using
/// it live in different test binaries, which cargo runs one after another).
pub struct DefaultNetwork {
    defined_here: bool,
    started_here: bool,
}

impl DefaultNetwork {
    pub fn ensure() -> DefaultNetwork {
        let defined_here = !virsh(&["net-info", "default"]).ok();
        if defined_here {
            let dir = tempdir("vf-default-net-");
            let xml = dir.path().join("default.xml");
            fs::write(&xml, "<network>\n  <name>default</name>\n  <forward mode='nat'/>\n  <bridge name='virbr0' stp='on' delay='0'/>\n  <ip address='192.168.122.1' netmask='255.255.255.0'>\n    <dhcp>\n      <range start='192.168.122.2' end='192.168.122.254'/>\n    </dhcp>\n  </ip>\n</network>\n").expect("write network xml");
            virsh(&["net-define", &xml.display().to_string()]).must();
        }
        let started_here = !virsh(&["net-info", "default"]).stdout.lines().any(|l| l.starts_with("Active:") && l.contains("yes"));
        let g = DefaultNetwork { defined_here, started_here };
        if started_here {
            virsh(&["net-start", "default"]).must();
        }
        g
    }

    /// The network's bridge device.
    pub fn bridge(&self) -> String {
        virsh(&["net-info", "default"]).stdout.lines().find_map(|l| l.strip_prefix("Bridge:")).unwrap_or("virbr0").trim().to_string()
    }
}

impl Drop for DefaultNetwork {
    fn drop(&mut self) {
        if self.started_here {
            virsh(&["net-destroy", "default"]);
        }
        if self.defined_here {
            virsh(&["net-undefine", "default"]);
        }
    }
}
