//! SSH to guests: OpenSSH's `ssh` client, run with argument vectors, and the
//! host keys virtform generates for its guests and pins.
//!
//! Layout, per stack, under `<state_dir>/<stack>/ssh/` (0700):
//! - `<stem>.host_ed25519` (0600) and `.pub`: the guest's host key, made by
//!   `ssh-keygen` the first time the instance's seed is written, handed to
//!   the guest in the seed, removed with the instance;
//! - `known_hosts`: one line per instance, `ALIAS[,IP] ssh-ed25519 AAAA… virtform:<stem>`,
//!   the only file any connection virtform makes trusts
//!   (`StrictHostKeyChecking=yes`, no global or user known_hosts, no user
//!   ssh config). Connections name the guest by its alias
//!   (`HostKeyAlias`), so a new DHCP address never looks like a new host;
//!   the fixed ip is listed too, for users' own `ssh -o UserKnownHostsFile=…`.
//! - `.id-<stem>-<pid>-<n>` (0600): the connection's private key for the
//!   length of one `ssh` run, removed when it ends.
//!
//! Invariants: a host key that does not match is an error naming the
//! instance, never accepted or replaced; no key material reaches a log or
//! an error; remote commands are quoted for the remote shell one argument
//! at a time, so `virtform ssh vm -- echo 'a b'` passes its argv unchanged.

use super::HostError;
use crate::model::common::Secret;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Serializes rewrites of known_hosts files within the process (apply
/// steps pin in parallel; applies of one stack are serialized by its lock).
static KNOWN_HOSTS: Mutex<()> = Mutex::new(());

/// The stack's SSH directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshDir(pub PathBuf);

/// A guest's host key pair, as the seed needs it.
pub use crate::seed::HostKey;

impl SshDir {
    pub fn of(state_dir: &Path, stack: &str) -> SshDir {
        SshDir(state_dir.join(stack).join("ssh"))
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.0.join("known_hosts")
    }

    pub fn host_key(&self, stem: &str) -> PathBuf {
        self.0.join(format!("{stem}.host_ed25519"))
    }

    fn ensure(&self) -> Result<(), HostError> {
        if !self.0.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.0)
                .map_err(|e| HostError::new("create directory", self.0.display().to_string(), e.to_string()))?;
        }
        Ok(())
    }

    /// The instance's host key, generated (ed25519, by `ssh-keygen`) when it
    /// has none. Idempotent: an existing pair is read, never replaced.
    pub fn ensure_host_key(&self, stem: &str, comment: &str) -> Result<HostKey, HostError> {
        if let Some(k) = self.read_host_key(stem)? {
            return Ok(k);
        }
        self.ensure()?;
        let path = self.host_key(stem);
        let tmp = self.0.join(format!(".new-{stem}-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_file(tmp.with_extension("pub"));
        let tmp_s = tmp.to_string_lossy().into_owned();
        super::run("generate SSH host key", &path.display().to_string(), "ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", &tmp_s], None)?;
        let pub_tmp = PathBuf::from(format!("{tmp_s}.pub"));
        let io = |e: std::io::Error| HostError::new("store SSH host key", path.display().to_string(), e.to_string());
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        // The public half first: a private key without one is regenerated.
        std::fs::rename(&pub_tmp, pub_path(&path)).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        self.read_host_key(stem)?.ok_or_else(|| HostError::new("store SSH host key", path.display().to_string(), "the key vanished after it was written"))
    }

    /// The instance's host key, if it has a complete one.
    pub fn read_host_key(&self, stem: &str) -> Result<Option<HostKey>, HostError> {
        let path = self.host_key(stem);
        let read = |p: &Path| match std::fs::read_to_string(p) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(HostError::new("read SSH host key", p.display().to_string(), e.to_string())),
        };
        match (read(&path)?, read(&pub_path(&path))?) {
            (Some(private), Some(public)) if !public.trim().is_empty() => Ok(Some(HostKey { private, public: public.trim().to_string() })),
            _ => Ok(None),
        }
    }

    /// Records `public` as the host key of `stem` under `patterns` (the
    /// alias first), replacing the instance's previous line.
    pub fn pin(&self, stem: &str, patterns: &[String], public: &str) -> Result<(), HostError> {
        let mut fields = public.split_whitespace();
        let (Some(kt), Some(blob)) = (fields.next(), fields.next()) else {
            return Err(HostError::new("pin SSH host key", stem, "the public key file is malformed"));
        };
        let line = format!("{} {kt} {blob} virtform:{stem}", patterns.join(","));
        self.rewrite(stem, Some(line))
    }

    /// Removes the instance's host key and its known_hosts line.
    pub fn forget(&self, stem: &str) -> Result<(), HostError> {
        if self.known_hosts().exists() {
            self.rewrite(stem, None)?;
        }
        for p in [self.host_key(stem), pub_path(&self.host_key(stem))] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(HostError::new("remove SSH host key", p.display().to_string(), e.to_string())),
                _ => {}
            }
        }
        Ok(())
    }

    fn rewrite(&self, stem: &str, line: Option<String>) -> Result<(), HostError> {
        let _guard = KNOWN_HOSTS.lock().unwrap_or_else(|e| e.into_inner());
        self.ensure()?;
        let path = self.known_hosts();
        let io = |e: std::io::Error| HostError::new("write known_hosts", path.display().to_string(), e.to_string());
        let old = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let tag = format!("virtform:{stem}");
        let mut lines: Vec<&str> = old.lines().filter(|l| l.split_whitespace().nth(3) != Some(tag.as_str())).collect();
        if let Some(l) = &line {
            lines.push(l);
        }
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        if text == old {
            return Ok(());
        }
        let tmp = path.with_extension(format!("part-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Removes everything under the directory, and the directory (a
    /// complete destroy: every instance of the stack is gone).
    pub fn remove_all(&self) {
        if let Ok(rd) = std::fs::read_dir(&self.0) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn pub_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(".pub");
    PathBuf::from(s)
}

/// The name a guest's host key is pinned under: its domain name when that
/// is safe in a known_hosts pattern list, else `<stack>.<stem>`.
pub fn host_alias(domain: &str, stack: &str, stem: &str) -> String {
    let safe = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if safe(domain) { domain.to_string() } else { format!("{stack}.{stem}") }
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub user: String,
    pub host: String,
    pub port: u16,
    /// The name the host key is pinned under.
    pub alias: String,
    pub dir: SshDir,
    /// The instance's file stem (for the temporary identity file).
    pub stem: String,
}

impl Target {
    /// Points the target at where this machine reaches the guest from its
    /// host `exec` (`Executor::reach_tcp`: the guest itself locally, a
    /// loopback port joined through a remote host's SSH master); the host
    /// key is still checked by its alias. The port lasts while the
    /// returned guard does. The guest's address must be an IP address.
    pub fn through(&mut self, exec: &super::exec::Executor) -> Result<super::exec::GuestPort, HostError> {
        let ip = self.host.parse::<std::net::IpAddr>().map_err(|_| HostError::new("ssh", format!("{}@{}", self.user, self.host), format!("the guest's address {:?} is not an IP address", self.host)))?;
        let reach = exec.reach_tcp(ip, self.port)?;
        (self.host, self.port) = (reach.addr.ip().to_string(), reach.addr.port());
        Ok(reach)
    }
}

/// The connection's private key in a private file for one `ssh` run.
pub struct Identity {
    path: PathBuf,
}

impl Identity {
    pub fn write(dir: &SshDir, stem: &str, key: &Secret) -> Result<Identity, HostError> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        dir.ensure()?;
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.0.join(format!(".id-{stem}-{}-{n}", std::process::id()));
        let io = |e: std::io::Error| HostError::new("write the connection's key", path.display().to_string(), e.to_string());
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io)?;
        let mut text = key.expose().trim_end().to_string();
        text.push('\n');
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io)?;
        Ok(Identity { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Quotes one argument for a POSIX shell (the remote login shell).
pub fn quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', "'\\''"))
}

/// The remote command line for an argument vector.
pub fn remote_command(argv: &[String]) -> String {
    argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

/// `ssh`'s arguments up to and including the destination. `batch`: no
/// prompts, short connect timeout (waits and one-shot commands).
pub fn ssh_args(t: &Target, identity: &Path, batch: bool) -> Vec<String> {
    let o = |s: String| ["-o".to_string(), s];
    let mut a = vec!["-F".to_string(), "/dev/null".to_string()];
    for opt in [
        format!("UserKnownHostsFile={}", t.dir.known_hosts().display()),
        "GlobalKnownHostsFile=/dev/null".into(),
        "StrictHostKeyChecking=yes".into(),
        format!("HostKeyAlias={}", t.alias),
        "CheckHostIP=no".into(),
        "UpdateHostKeys=no".into(),
        "IdentitiesOnly=yes".into(),
        "PasswordAuthentication=no".into(),
        "KbdInteractiveAuthentication=no".into(),
        "LogLevel=ERROR".into(),
        "ServerAliveInterval=5".into(),
        "ServerAliveCountMax=3".into(),
    ] {
        a.extend(o(opt));
    }
    if batch {
        a.extend(o("BatchMode=yes".into()));
        a.extend(o("ConnectTimeout=5".into()));
    }
    a.extend(["-i".into(), identity.display().to_string(), "-p".into(), t.port.to_string(), "-l".into(), t.user.clone(), t.host.clone()]);
    a
}

/// What one `ssh` run ended with.
#[derive(Debug, Clone)]
pub struct Output {
    /// The remote command's exit status; `None` when ssh itself failed (255) or was killed.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Why a connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The guest presented a host key other than the pinned one (or none is pinned).
    HostKey(String),
    /// Anything else (refused, timed out, authentication not ready yet).
    Other(String),
}

/// Reads ssh's own error (exit status 255) from its standard error.
pub fn classify(stderr: &str) -> Failure {
    let s = stderr.trim();
    let msg = s.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("@@@")).take(4).collect::<Vec<_>>().join(" / ");
    let msg = if msg.is_empty() { "ssh failed without a message".to_string() } else { msg };
    if s.contains("Host key verification failed") || s.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") || s.contains("host key is known for") {
        Failure::HostKey(msg)
    } else {
        Failure::Other(msg)
    }
}

/// Runs `argv` on the guest (no stdin), killed after `timeout`.
pub fn exec(t: &Target, key: &Secret, argv: &[String], timeout: Duration) -> Result<Output, HostError> {
    let id = Identity::write(&t.dir, &t.stem, key)?;
    let mut args = ssh_args(t, id.path(), true);
    args.push("--".into());
    args.push(remote_command(argv));
    tracing::debug!(host = %t.host, alias = %t.alias, "ssh");
    let obj = format!("{}@{}", t.user, t.host);
    let mut child = Command::new("ssh")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            let mut err = HostError::new("ssh", obj.clone(), format!("cannot run ssh: {e}"));
            if e.kind() == std::io::ErrorKind::NotFound {
                err.hint = Some("install openssh-client (scripts/host-setup does)".into());
            }
            err
        })?;
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(r) = r {
                let _ = r.take(1 << 20).read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = pipe(child.stdout.take().map(|x| Box::new(x) as Box<dyn Read + Send>));
    let err = pipe(child.stderr.take().map(|x| Box::new(x) as Box<dyn Read + Send>));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(HostError::new("ssh", obj, format!("cannot wait for ssh: {e}"))),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let mut stderr = err.join().unwrap_or_default();
    let status = match status {
        None => {
            stderr = format!("no answer within {}s", timeout.as_secs());
            None
        }
        Some(st) => st.code().filter(|c| *c != 255),
    };
    Ok(Output { status, stdout, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_every_argument_whole() {
        assert_eq!(quote("cloud-init"), "cloud-init");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$(reboot)"), "'$(reboot)'");
        assert_eq!(remote_command(&["echo".into(), "a b".into(), ";".into(), "x\ny".into()]), "echo 'a b' ';' 'x\ny'");
        // What a real shell makes of hostile arguments: tests/security.rs.
    }

    #[test]
    fn aliases_are_known_hosts_safe() {
        assert_eq!(host_alias("demo-vm", "demo", "vm"), "demo-vm");
        assert_eq!(host_alias("a,b*", "demo", "vm@0"), "demo.vm@0");
        assert_eq!(host_alias("", "demo", "vm"), "demo.vm");
    }

    #[test]
    fn classifies_host_key_failures() {
        let changed = "@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@@@@@\nHost key verification failed.\n";
        assert!(matches!(classify(changed), Failure::HostKey(_)));
        assert!(matches!(classify("No ED25519 host key is known for demo-vm and you have requested strict checking.\nHost key verification failed."), Failure::HostKey(_)));
        assert_eq!(classify("ssh: connect to host 10.0.0.5 port 22: Connection refused\n"), Failure::Other("ssh: connect to host 10.0.0.5 port 22: Connection refused".into()));
        assert_eq!(classify(""), Failure::Other("ssh failed without a message".into()));
    }

    #[test]
    fn ssh_args_trust_only_the_stack_known_hosts() {
        let t = Target { user: "debian".into(), host: "10.0.0.5".into(), port: 2222, alias: "demo-vm".into(), dir: SshDir("/s/demo/ssh".into()), stem: "vm".into() };
        let a = ssh_args(&t, Path::new("/s/demo/ssh/.id"), true).join(" ");
        for want in ["-F /dev/null", "UserKnownHostsFile=/s/demo/ssh/known_hosts", "GlobalKnownHostsFile=/dev/null", "StrictHostKeyChecking=yes", "HostKeyAlias=demo-vm", "BatchMode=yes", "-i /s/demo/ssh/.id -p 2222 -l debian 10.0.0.5"] {
            assert!(a.contains(want), "{want} in {a}");
        }
        assert!(a.ends_with("10.0.0.5"));
    }

    #[test]
    fn host_keys_are_generated_once_pinned_and_forgotten() {
        if std::process::Command::new("ssh-keygen").arg("-?").output().is_err() {
            assert!(std::env::var_os("VIRTFORM_REAL_HOST").is_none(), "ssh-keygen is missing: run scripts/host-setup");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let d = SshDir::of(tmp.path(), "st");
        let k = d.ensure_host_key("vm@0", "virtform:st:instance.vm[0]").unwrap();
        assert!(k.private.contains("OPENSSH PRIVATE KEY") && k.public.starts_with("ssh-ed25519 "));
        assert_eq!(std::fs::metadata(d.host_key("vm@0")).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&d.0).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(d.ensure_host_key("vm@0", "x").unwrap(), k, "an existing key is kept");
        d.pin("vm@0", &["st-vm-0".into(), "10.0.0.5".into()], &k.public).unwrap();
        let k2 = d.ensure_host_key("web", "virtform:st:instance.web").unwrap();
        d.pin("web", &["st-web".into()], &k2.public).unwrap();
        d.pin("vm@0", &["st-vm-0".into()], &k.public).unwrap();
        let kh = std::fs::read_to_string(d.known_hosts()).unwrap();
        let lines: Vec<&str> = kh.lines().collect();
        assert_eq!(lines.len(), 2, "{kh}");
        assert!(lines[0].starts_with("st-web ssh-ed25519 ") && lines[0].ends_with(" virtform:web"));
        assert!(lines[1].starts_with("st-vm-0 ssh-ed25519 ") && lines[1].ends_with(" virtform:vm@0"));
        // ssh-keygen reads the file as a known_hosts file and finds the alias.
        let found = std::process::Command::new("ssh-keygen").args(["-F", "st-web", "-f"]).arg(d.known_hosts()).output().unwrap();
        assert!(found.status.success() && String::from_utf8_lossy(&found.stdout).contains("st-web ssh-ed25519"));
        d.forget("vm@0").unwrap();
        assert!(!d.host_key("vm@0").exists());
        assert_eq!(std::fs::read_to_string(d.known_hosts()).unwrap().lines().count(), 1);
        d.remove_all();
        assert!(!d.0.exists());
    }

    #[test]
    fn identity_files_are_private_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let d = SshDir::of(tmp.path(), "st");
        let p = {
            let id = Identity::write(&d, "vm", &Secret::new("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----")).unwrap();
            assert_eq!(std::fs::metadata(id.path()).unwrap().permissions().mode() & 0o777, 0o600);
            assert!(std::fs::read_to_string(id.path()).unwrap().ends_with("-----\n"));
            id.path().to_path_buf()
        };
        assert!(!p.exists());
    }
}
