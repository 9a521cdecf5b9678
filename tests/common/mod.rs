//! Helpers shared by tests/bad_input.rs, tests/fuzz_config.rs and
//! tests/security.rs: running the binary with a timeout, recognising a
//! panic, looking at the host (an inventory of every object virtform could
//! touch), unique names, and a cleanup guard that removes what a test made
//! by exact name.
//!
//! Real-host tests FAIL (never skip) when root, libvirtd or the guest assets
//! are missing: run scripts/test.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const URI: &str = "qemu:///system";
pub const HINT: &str = "run scripts/test (it runs scripts/host-setup and scripts/build-guest first)";
/// Longest any single virtform invocation may take in these tests.
pub const VF_TIMEOUT: Duration = Duration::from_secs(120);

/// The result of one program run.
#[derive(Debug, Clone)]
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

    /// A panic, an abort (stack overflow), a signal or a timeout: anything
    /// that is not an orderly exit with a message.
    pub fn crashed(&self) -> Option<String> {
        let all = self.all();
        for w in ["panicked", "RUST_BACKTRACE", "stack backtrace", "has overflowed its stack", "[killed after"] {
            if all.contains(w) {
                return Some(format!("output contains {w:?}"));
            }
        }
        match self.code {
            None => Some("killed by a signal".into()),
            Some(101) => Some("exit code 101 (a Rust panic)".into()),
            Some(c) if c > 2 => Some(format!("exit code {c}")),
            _ => None,
        }
    }
}

/// Runs a program with an argument vector, stdin closed, killed (by its own
/// PID) after `timeout`; never panics.
pub fn run_with(mut cmd: Command, what: String, timeout: Duration) -> Out {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Out { what, code: None, stdout: String::new(), stderr: format!("cannot run: {e}"), elapsed: started.elapsed() };
        }
    };
    let rd = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = rd(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = rd(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                timed_out = true;
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    let stdout = out.join().unwrap_or_default();
    let mut stderr = err.join().unwrap_or_default();
    if timed_out {
        let _ = write!(stderr, "\n[killed after {}s]\n", timeout.as_secs());
    }
    Out { what, code: status.and_then(|s| s.code()), stdout, stderr, elapsed: started.elapsed() }
}

pub fn run(program: &str, args: &[&str]) -> Out {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_with(cmd, format!("{program} {}", args.join(" ")), Duration::from_secs(60))
}

pub fn virsh(args: &[&str]) -> Out {
    let mut full = vec!["-c", URI];
    full.extend_from_slice(args);
    run("virsh", &full)
}

/// The virtform binary with a clean environment (no VIRTFORM_* from the
/// caller, no colour, backtraces on so a panic cannot hide).
pub fn vf_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_virtform"));
    cmd.env("NO_COLOR", "1").env("RUST_BACKTRACE", "1");
    for (k, _) in std::env::vars() {
        if k.starts_with("VIRTFORM_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `virtform ARGS...`.
pub fn vf(args: &[&str]) -> Out {
    vf_env(args, &[])
}

/// `virtform ARGS...` with extra environment variables.
pub fn vf_env(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = vf_command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with(cmd, format!("virtform {}", args.join(" ")), VF_TIMEOUT)
}

pub fn pid() -> u32 {
    std::process::id()
}

pub fn assets_dir() -> PathBuf {
    std::env::var_os("VIRTFORM_ASSETS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/lib/virtform/assets"))
}

/// Fails (never skips) when the host cannot run real-host tests.
pub fn preflight(need_assets: bool) {
    assert!(is_root(), "these tests need root: {HINT}");
    if need_assets {
        let assets = assets_dir();
        for f in ["vmlinuz", "initrd.gz", "tiny.qcow2"] {
            assert!(assets.join(f).is_file(), "guest asset {} is missing: {HINT}", assets.join(f).display());
        }
    }
    let v = virsh(&["version"]);
    assert!(v.ok(), "libvirt ({URI}) does not answer: {}\n{HINT}", v.stderr.trim());
    assert!(run("ip", &["-V"]).ok(), "ip is not installed: {HINT}");
    assert!(run("ovs-vsctl", &["--version"]).ok(), "ovs-vsctl is not installed: {HINT}");
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A temporary directory readable by QEMU (libvirt-qemu) when it holds disks.
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new().prefix(prefix).tempdir().expect("temp dir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    d
}

// ---------------------------------------------------------------------------
// The host inventory
// ---------------------------------------------------------------------------

/// Everything virtform could create or change on this host, by name, plus
/// a recursive listing (with modes and sizes) of one state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub domains: BTreeSet<String>,
    pub networks: BTreeSet<String>,
    pub links: BTreeSet<String>,
    pub ovs: BTreeSet<String>,
    pub state: BTreeSet<String>,
}

fn lines(out: &Out) -> BTreeSet<String> {
    out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// "12: vfa1-123: <BROADCAST..." (or "name@if3:") → the name.
pub fn link_name(line: &str) -> Option<&str> {
    line.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or(""))
}

pub fn link_names() -> BTreeSet<String> {
    run("ip", &["-o", "link", "show"]).must().stdout.lines().filter_map(link_name).map(str::to_string).collect()
}

pub fn domain_names() -> BTreeSet<String> {
    lines(&virsh(&["list", "--all", "--name"]).must())
}

/// Files and directories under `dir`, recursively, as "path mode size"
/// (directories as "path/ mode"); empty when `dir` does not exist.
pub fn listing(dir: &Path) -> BTreeSet<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeSet::new();
    fn walk(base: &Path, d: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap_or(&p).display().to_string();
            let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
            if m.is_dir() {
                out.insert(format!("{rel}/ {:o}", m.mode() & 0o7777));
                walk(base, &p, out);
            } else {
                out.insert(format!("{rel} {:o} {}", m.mode() & 0o7777, m.len()));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

impl Inventory {
    pub fn take(state_dir: &Path) -> Inventory {
        let mut ovs = BTreeSet::new();
        for br in lines(&run("ovs-vsctl", &["list-br"]).must()) {
            ovs.insert(format!("bridge {br}"));
            for p in lines(&run("ovs-vsctl", &["list-ports", &br])) {
                ovs.insert(format!("port {br}/{p}"));
            }
        }
        Inventory {
            domains: domain_names(),
            networks: lines(&virsh(&["net-list", "--all", "--name"]).must()),
            links: link_names(),
            ovs,
            state: listing(state_dir),
        }
    }

    /// What differs from `before`, as "+ kind name" / "- kind name" lines.
    pub fn diff(&self, before: &Inventory) -> Vec<String> {
        let mut out = Vec::new();
        for (kind, a, b) in [
            ("domain", &before.domains, &self.domains),
            ("libvirt network", &before.networks, &self.networks),
            ("link", &before.links, &self.links),
            ("ovs", &before.ovs, &self.ovs),
            ("state dir entry", &before.state, &self.state),
        ] {
            for x in b.difference(a) {
                out.push(format!("+ {kind} {x}"));
            }
            for x in a.difference(b) {
                out.push(format!("- {kind} {x}"));
            }
        }
        out
    }
}

/// Whether a changed host object can have been made by this test: its name
/// carries one of the test's tokens (the pid is in every name a test uses:
/// stacks, bridges, domains, and so libvirt networks named after the stack),
/// or it is in the state directory the test passed. A tap or hybrid-plug
/// device virtform would derive can only appear together with a domain of
/// the test's stack, which carries the token. Other changes come from other
/// processes on a shared host and are only reported.
pub fn is_ours(line: &str, tokens: &[&str]) -> bool {
    line.contains("state dir entry") || tokens.iter().any(|t| line.contains(t))
}

/// Asserts that nothing the test could have made changed between two
/// inventories; unrelated changes (other processes) are printed.
pub fn assert_unchanged(case: &str, before: &Inventory, after: &Inventory, tokens: &[&str]) -> Result<(), String> {
    let diff = after.diff(before);
    let (ours, foreign): (Vec<String>, Vec<String>) = diff.into_iter().partition(|l| is_ours(l, tokens));
    if !foreign.is_empty() {
        eprintln!("[{case}] note: host changes by other processes (ignored): {foreign:?}");
    }
    if ours.is_empty() { Ok(()) } else { Err(format!("{case}: the host changed:\n  {}", ours.join("\n  "))) }
}

// ---------------------------------------------------------------------------
// Cleanup by exact name
// ---------------------------------------------------------------------------

/// Removes, on drop, the domains and links a test created by hand (and
/// anything virtform made for its stacks), by exact name.
#[derive(Default)]
pub struct HostGuard {
    pub domains: Vec<String>,
    pub links: Vec<String>,
    /// (stack, state dir, config dir) to `virtform destroy`.
    pub stacks: Vec<(String, PathBuf, PathBuf)>,
}

impl HostGuard {
    pub fn cleanup(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for (stack, state, dir) in std::mem::take(&mut self.stacks) {
            let out = vf(&["--state-dir", &state.display().to_string(), "--stack", &stack, "destroy", "--auto-approve", &dir.display().to_string()]);
            if !out.ok() {
                problems.push(format!("cleanup: destroy of stack {stack} failed:\n{}", out.show()));
            }
        }
        let domains = domain_names();
        for d in std::mem::take(&mut self.domains) {
            if domains.contains(&d) {
                let _ = virsh(&["destroy", &d]);
                let u = virsh(&["undefine", "--nvram", &d]);
                if !u.ok() && !virsh(&["undefine", &d]).ok() {
                    problems.push(format!("LEAK: cannot undefine domain {d}: {}", u.stderr.trim()));
                }
            }
        }
        for l in std::mem::take(&mut self.links) {
            // Checked one by one: deleting a veth removes its peer too.
            if link_names().contains(&l) {
                let o = run("ip", &["link", "del", "dev", &l]);
                if !o.ok() {
                    problems.push(format!("LEAK: cannot delete link {l}: {}", o.stderr.trim()));
                }
            }
        }
        problems
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        let problems = self.cleanup();
        if !problems.is_empty() {
            if std::thread::panicking() {
                for p in &problems {
                    eprintln!("{p}");
                }
            } else {
                panic!("cleanup problems:\n{}", problems.join("\n"));
            }
        }
    }
}

/// A minimal domain defined by hand (no virtform marker, or the given
/// metadata element), shut off.
pub fn define_domain(name: &str, metadata: Option<&str>, dir: &Path) -> Out {
    let meta = metadata.map(|m| format!("  <metadata>\n    {m}\n  </metadata>\n")).unwrap_or_default();
    let xml = format!(
        "<domain type='qemu'>\n  <name>{name}</name>\n{meta}  <memory unit='MiB'>64</memory>\n  <vcpu>1</vcpu>\n  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n  </os>\n</domain>\n"
    );
    let p = dir.join(format!("{name}.xml"));
    std::fs::write(&p, xml).expect("write domain XML");
    virsh(&["define", &p.display().to_string()])
}

/// The `file:line:column` of the first occurrence (after `skip`) of `needle`.
pub fn locate(src: &str, needle: &str, skip: usize) -> Option<(usize, usize)> {
    let mut from = 0;
    let mut pos = None;
    for _ in 0..=skip {
        let i = src.get(from..)?.find(needle)? + from;
        pos = Some(i);
        from = i + 1;
    }
    let pos = pos?;
    let line = src[..pos].matches('\n').count() + 1;
    let col = src[..pos].rsplit('\n').next().unwrap_or("").chars().count() + 1;
    Some((line, col))
}
