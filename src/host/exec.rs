//! The executor: where a host's commands run and its files are read and
//! written. [`Executor::Local`] is this machine; [`Executor::Ssh`] is another
//! host reached over ONE multiplexed OpenSSH connection (a ControlMaster
//! this process starts and ends), shared by every command, file operation
//! and libvirt connection to that host.
//!
//! Invariants:
//! - Programs are argument vectors. Over SSH each element is POSIX
//!   single-quoted ([`quote`]) and the command line is one argument after
//!   `--` and the destination, so no element is ever interpreted by the
//!   remote shell or by `ssh` itself (bytes, not just UTF-8: non-UTF-8
//!   names survive). No shell is ever started by virtform; the remote login
//!   shell sshd runs sees only quoted words, and `&&` between the quoted
//!   argument vectors of a chain (several programs in one round trip).
//! - Host keys are checked against the given known_hosts file alone:
//!   `ssh -F /dev/null` (no user or system configuration), `BatchMode=yes`,
//!   `StrictHostKeyChecking=yes`, `GlobalKnownHostsFile=/dev/null`,
//!   `IdentitiesOnly=yes`, no agent. An unknown or changed key is an error
//!   naming the host, before any command runs; nothing is ever trusted on
//!   first use.
//! - The control socket and the libvirt wrapper live in a private (0700)
//!   directory of this process, removed with the session; the master is a
//!   child of this process, ended by its PID (`-O exit`, then kill) when the
//!   last clone of the executor is dropped, and on its own when this process
//!   dies (its session reads a pipe only this process holds). A libvirt connection made from
//!   [`Executor::libvirt_uri`] needs the executor alive: `VirtLibvirt::open_on`
//!   keeps a clone.
//! - Files are written atomically (temporary file in the same directory,
//!   fsync, rename) and images are copied to a `.part` file whose sha256 is
//!   checked *on the target host* before the rename, so no partial file ever
//!   has the final name.
//! - Errors are [`HostError`]s whose `op` names the host when it is remote
//!   (`"list links on vflab-a"`).

use super::HostError;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a host's commands run.
#[derive(Debug, Clone, Default)]
pub enum Executor {
    /// This machine.
    #[default]
    Local,
    /// A remote host over one multiplexed SSH connection.
    Ssh(Arc<SshSession>),
}

/// How to reach a remote host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The host's name in messages (`vflab-a`, `host.a`).
    pub name: String,
    pub user: String,
    /// A host name or an IP address.
    pub address: String,
    pub port: u16,
    /// The private key file (never read by virtform; handed to ssh).
    pub identity: PathBuf,
    /// The only known_hosts file the host's key is checked against.
    pub known_hosts: PathBuf,
    /// Seconds to wait for the TCP connection and the SSH handshake.
    pub connect_timeout_s: u32,
}

impl SshTarget {
    pub fn new(name: &str, user: &str, address: &str, identity: impl Into<PathBuf>, known_hosts: impl Into<PathBuf>) -> SshTarget {
        SshTarget {
            name: name.to_string(),
            user: user.to_string(),
            address: address.to_string(),
            port: 22,
            identity: identity.into(),
            known_hosts: known_hosts.into(),
            connect_timeout_s: 10,
        }
    }

    /// The target of a `qemu+ssh://[user@]host[:port]/system` URI (a host
    /// block's `uri`); any other scheme, path or query is an error saying
    /// what is supported. The user defaults to root, the port to 22.
    pub fn from_libvirt_uri(name: &str, uri: &str, identity: impl Into<PathBuf>, known_hosts: impl Into<PathBuf>) -> Result<SshTarget, String> {
        let rest = uri.strip_prefix("qemu+ssh://").ok_or_else(|| {
            let scheme = uri.split("://").next().unwrap_or(uri);
            format!("unsupported URI scheme {scheme:?}: a remote host is qemu+ssh://[user@]host[:port]/system")
        })?;
        let (authority, path) = rest.split_once('/').ok_or("the URI has no path: expected /system")?;
        if path != "system" {
            return Err(format!("unsupported path /{path}: expected /system (no query: virtform sets keyfile, known_hosts and the ssh command itself)"));
        }
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (u, h),
            None => ("root", authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("an IPv6 address must be closed by ']'")?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("port {p:?} is not a port number"))?,
            None => 22,
        };
        if host.is_empty() {
            return Err("the URI names no host".into());
        }
        let mut t = SshTarget::new(name, user, host, identity, known_hosts);
        t.port = port;
        Ok(t)
    }

    /// `user@address` (`user@[v6]` for IPv6).
    pub fn destination(&self) -> String {
        if self.address.contains(':') { format!("{}@[{}]", self.user, self.address) } else { format!("{}@{}", self.user, self.address) }
    }

    fn check(&self) -> Result<(), HostError> {
        let bad = |what: &str, msg: String| Err(HostError::new("connect over SSH", &self.name, format!("{what}: {msg}")));
        let word_ok = |s: &str| !s.is_empty() && !s.starts_with('-') && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !word_ok(&self.user) {
            return bad("user", format!("{:?} is not a user name (letters, digits, '.', '-', '_'; not starting with '-')", self.user));
        }
        if !word_ok(&self.address) {
            return bad("address", format!("{:?} is not a host name or IP address", self.address));
        }
        for (what, p) in [("private key", &self.identity), ("known_hosts", &self.known_hosts)] {
            let s = p.as_os_str().as_bytes();
            if s.iter().any(|b| *b < 0x20 || *b == b'"' || *b == 0x7f) {
                return bad(what, format!("{} contains a quote or a control character, which ssh's option syntax cannot carry", p.display()));
            }
            match std::fs::metadata(p) {
                Ok(m) if m.is_file() => {}
                Ok(_) => return bad(what, format!("{} is not a regular file", p.display())),
                Err(e) => return bad(what, format!("cannot read {}: {e}", p.display())),
            }
        }
        Ok(())
    }
}

/// What a command ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The exit code; `None` when it was killed by a signal.
    pub code: Option<i32>,
    /// The signal that killed it (local commands only).
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    fn status_text(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit status: {c}"),
            (None, Some(s)) => format!("signal: {s}"),
            (None, None) => "an unknown status".into(),
        }
    }
}

/// What a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// [`Executor::stat`]: what the path itself is (symlinks not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub kind: FileKind,
    pub len: u64,
    /// Permission bits (`0o644`).
    pub mode: u32,
}

/// Standard input of a command.
pub enum Input<'a> {
    None,
    Bytes(&'a [u8]),
    /// Streamed from a local file (an image), never read into memory.
    File(File),
}

/// POSIX single-quoting of one argument: `'` … `'`, each `'` as `'\''`.
/// The result is one word for any POSIX shell, whatever the bytes.
pub fn quote(arg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(arg.len() + 2);
    out.push(b'\'');
    for &b in arg {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// The remote command line of an argument vector: each element quoted,
/// joined by spaces.
pub fn command_line<S: AsRef<OsStr>>(argv: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend(quote(a.as_ref().as_bytes()));
    }
    out
}

/// Percent-encodes a URI query value (RFC 3986 unreserved and '/' kept).
fn uri_escape(s: &[u8]) -> String {
    let mut out = String::new();
    for &b in s {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A value for `ssh -o Key="value"`: ssh expands `%` tokens in paths, so
/// `%` is doubled; the value was checked to hold no `"`.
fn ssh_path_value(p: &Path) -> OsString {
    let mut v = b"\"".to_vec();
    for &b in p.as_os_str().as_bytes() {
        if b == b'%' {
            v.extend_from_slice(b"%%");
        } else {
            v.push(b);
        }
    }
    v.push(b'"');
    OsString::from_vec(v)
}

fn opt(key: &str, value: &OsStr) -> OsString {
    let mut o = OsString::from(format!("{key}="));
    o.push(value);
    o
}

/// One SSH connection to a host: the ControlMaster child and its private
/// directory (control socket, master log, libvirt wrapper).
#[derive(Debug)]
pub struct SshSession {
    target: SshTarget,
    dir: PathBuf,
    control: PathBuf,
    wrapper: PathBuf,
    master: Mutex<Option<Child>>,
    /// Commands running now (at most [`MAX_COMMANDS`]) and its condition.
    running: (Mutex<usize>, std::sync::Condvar),
}

/// Commands one session runs at the same time. sshd's `MaxSessions`
/// (default 10) bounds the channels of one connection; the rest is left to
/// libvirt's connections through the wrapper (which fall back to the shared
/// one when an extra cannot be opened).
pub const MAX_COMMANDS: usize = 6;

static SESSION_SEQ: AtomicU64 = AtomicU64::new(0);
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl SshSession {
    /// The options every ssh invocation of this session passes (strict host
    /// keys, this key only, no configuration files).
    fn base_args(&self) -> Vec<OsString> {
        let t = &self.target;
        let mut a: Vec<OsString> = vec!["-F".into(), "/dev/null".into()];
        for o in [
            opt("-oBatchMode", OsStr::new("yes")),
            opt("-oStrictHostKeyChecking", OsStr::new("yes")),
            opt("-oUserKnownHostsFile", &ssh_path_value(&t.known_hosts)),
            opt("-oGlobalKnownHostsFile", OsStr::new("/dev/null")),
            opt("-oIdentityFile", &ssh_path_value(&t.identity)),
            opt("-oIdentitiesOnly", OsStr::new("yes")),
            opt("-oIdentityAgent", OsStr::new("none")),
            opt("-oPasswordAuthentication", OsStr::new("no")),
            opt("-oKbdInteractiveAuthentication", OsStr::new("no")),
            opt("-oConnectTimeout", OsStr::new(&t.connect_timeout_s.max(1).to_string())),
            opt("-oControlPath", self.control.as_os_str()),
        ] {
            a.push(o);
        }
        a.push("-p".into());
        a.push(t.port.to_string().into());
        a
    }

    fn connect(target: SshTarget) -> Result<SshSession, HostError> {
        use std::os::unix::fs::DirBuilderExt;
        target.check()?;
        let mut target = target;
        for p in [&mut target.identity, &mut target.known_hosts] {
            if let Ok(abs) = std::path::absolute(&*p) {
                *p = abs;
            }
        }
        let op = "connect over SSH";
        remove_stale_session_dirs();
        let seq = SESSION_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("virtform-ssh-{}-{seq}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|e| HostError::new(op, &target.name, format!("cannot create {}: {e}", dir.display())))?;
        let control = dir.join("cm");
        let wrapper = dir.join("ssh");
        let session = SshSession { target, dir, control, wrapper, master: Mutex::new(None), running: (Mutex::new(0), std::sync::Condvar::new()) };
        session.start_master()?;
        session.write_wrapper()?;
        Ok(session)
    }

    fn start_master(&self) -> Result<(), HostError> {
        let t = &self.target;
        let op = "connect over SSH";
        let log_path = self.dir.join("master.log");
        let log = File::create(&log_path).map_err(|e| HostError::new(op, &t.name, format!("cannot create {}: {e}", log_path.display())))?;
        let mut args = self.base_args();
        for a in ["-M", "-T", "-oControlPersist=no", "-oServerAliveInterval=15", "-oServerAliveCountMax=3", "--"] {
            args.push(a.into());
        }
        args.push(t.destination().into());
        // The master's own session is `cat` reading the master's stdin, a
        // pipe only this process holds: when this process ends, however it
        // ends, the pipe closes, the remote cat ends, and so does the master
        // (after the commands still running on it). Never an orphan.
        args.push("cat".into());
        tracing::debug!(host = %t.name, "ssh ControlMaster");
        let mut child = Command::new("ssh").args(&args).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::from(log)).spawn().map_err(|e| {
            let h = HostError::new(op, &t.name, format!("cannot run ssh: {e}"));
            if e.kind() == std::io::ErrorKind::NotFound { h.hint("run scripts/host-setup to install openssh-client") } else { h }
        })?;
        let deadline = Instant::now() + Duration::from_secs(u64::from(t.connect_timeout_s.max(1)) + 10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(self.connect_error(&log, &status.to_string()));
            }
            // The socket appears once the master is connected and
            // authenticated: until then, nothing is spawned to ask.
            if self.control.exists() && self.master_alive() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(HostError::new(op, &t.name, format!("ssh to {} did not connect within {} s{}", t.destination(), t.connect_timeout_s, tail(&log)))
                    .hint("check that the host is up and its sshd listens on that address"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        *self.master.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        Ok(())
    }

    /// Runs one command line through the master: natively over its control
    /// socket (`host/mux.rs`: no process here), or, when the socket does
    /// not speak the protocol version we know, with an `ssh` client given
    /// `args` (whose last element is `line`). A session the master refuses
    /// reads as ssh's own "open refused" (status 255), so the caller's
    /// retry sees it alike.
    fn run_line(&self, args: &[OsString], line: Vec<u8>, input: Input, op: &str) -> Result<Output, HostError> {
        use super::mux::{MuxError, MuxInput};
        let t = &self.target;
        let (mux_input, fallback) = match input {
            Input::None => (MuxInput::None, None),
            Input::Bytes(b) => (MuxInput::Bytes(b), Some(Input::Bytes(b))),
            // The master reads the file itself; a fallback gets a fresh handle.
            Input::File(f) => {
                let again = f.try_clone().map_err(|e| HostError::new(op, &t.name, format!("cannot read the input file: {e}")))?;
                (MuxInput::Fd(std::os::fd::OwnedFd::from(f)), Some(Input::File(again)))
            }
        };
        match super::mux::run(&self.control, &line, mux_input) {
            Ok(o) => Ok(Output { code: Some(o.code as i32), signal: None, stdout: o.stdout, stderr: o.stderr }),
            Err(MuxError::Refused(reason)) => Ok(Output { code: Some(255), signal: None, stdout: Vec::new(), stderr: format!("open refused: {reason}").into_bytes() }),
            Err(MuxError::Lost(m)) => Err(HostError::new(op, &t.name, format!("the SSH connection to {} is lost: {m}", t.destination())).hint("check that the host is up; the next run reconnects")),
            Err(MuxError::Connect(m)) => {
                tracing::debug!(host = %t.name, "the control socket did not take a native session ({m}); running ssh");
                spawn("ssh", args, fallback.unwrap_or(Input::None), op, &t.name)
            }
        }
    }

    /// A forward to `ip:port` that did not open, in words naming the host.
    fn forward_error(&self, ip: std::net::IpAddr, port: u16, e: super::mux::MuxError) -> String {
        use super::mux::MuxError;
        let name = &self.target.name;
        match e {
            MuxError::Refused(m) => format!("{name} could not connect to {ip}:{port} ({m})"),
            MuxError::Lost(m) => format!("the SSH connection to {name} is lost: {m}"),
            MuxError::Connect(m) => format!("cannot forward through the SSH connection to {name}: {m}"),
        }
    }

    /// The master answers on the control socket (natively, else `ssh -O check`).
    fn master_alive(&self) -> bool {
        if super::mux::alive(&self.control).is_some() {
            return true;
        }
        let mut args = self.base_args();
        for a in ["-Ocheck", "--"] {
            args.push(a.into());
        }
        args.push(self.target.destination().into());
        Command::new("ssh").args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    /// Why the master ended before it connected.
    fn connect_error(&self, log: &str, status: &str) -> HostError {
        let t = &self.target;
        let op = "connect over SSH";
        let said = log.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("@@@")).collect::<Vec<_>>().join("; ");
        let key_failure = ["Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED", "host key is known", "Host key for", "No matching host key"].iter().any(|m| log.contains(m));
        if key_failure {
            return HostError::new(
                op,
                &t.name,
                format!("the host key of {} ({}) is not the one in {}: refused ({said})", t.name, t.destination(), t.known_hosts.display()),
            )
            .hint("virtform never trusts a host key on first use: put the host's real key (checked out of band) into that known_hosts file");
        }
        if log.contains("Permission denied") {
            return HostError::new(op, &t.name, format!("{} refused the key {} ({said})", t.destination(), t.identity.display()))
                .hint("authorize that key's public half for the user on the host");
        }
        let msg = if said.is_empty() { format!("ssh exited with {status}") } else { said };
        HostError::new(op, &t.name, format!("cannot connect to {}: {msg}", t.destination())).hint("check that the host is up and its sshd listens on that address")
    }

    /// The `command=` of libvirt's ssh transport: ssh through this
    /// session's control socket with the same strict options.
    fn write_wrapper(&self) -> Result<(), HostError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut script = b"#!/bin/sh\n# virtform: libvirt's ssh transport through one ControlMaster\nexec ssh".to_vec();
        for a in self.base_args() {
            script.push(b' ');
            script.extend(quote(a.as_bytes()));
        }
        script.extend_from_slice(b" -oControlMaster=no \"$@\"\n");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&self.wrapper)
            .map_err(|e| HostError::new("connect over SSH", &self.target.name, format!("cannot write {}: {e}", self.wrapper.display())))?;
        f.write_all(&script).map_err(|e| HostError::new("connect over SSH", &self.target.name, format!("cannot write {}: {e}", self.wrapper.display())))
    }

    /// Waits for one of the [`MAX_COMMANDS`] slots; the guard frees it.
    fn slot(&self) -> SlotGuard<'_> {
        let (m, cv) = &self.running;
        let mut n = m.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= MAX_COMMANDS {
            n = cv.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
        SlotGuard(self)
    }

    fn output(&self, op: &str, argv: &[&OsStr], input: Input) -> Result<Output, HostError> {
        self.output_chain(op, &[argv], input)
    }

    /// Runs argument vectors one after the other in ONE round trip, each
    /// only when the one before it succeeded (their quoted command lines
    /// joined by `&&` for the remote shell); the input goes to whichever
    /// reads it. The status is the first failure's, or 0.
    fn output_chain(&self, op: &str, chain: &[&[&OsStr]], input: Input) -> Result<Output, HostError> {
        let t = &self.target;
        let mut args = self.base_args();
        for a in ["-oControlMaster=no", "-T", "--"] {
            args.push(a.into());
        }
        args.push(t.destination().into());
        let mut line = Vec::new();
        for (i, argv) in chain.iter().enumerate() {
            if i > 0 {
                line.extend_from_slice(b" && ");
            }
            line.extend(command_line(argv));
        }
        args.push(OsString::from_vec(line.clone()));
        let _slot = self.slot();
        // A channel the server refuses (its MaxSessions reached by other
        // clients of the connection, e.g. libvirt's) is asked for again; the
        // command has not started then, so nothing of the input was read.
        // A streamed file is opened again for each attempt (its own
        // offset, from where the caller's handle stood), while the caller's
        // handle stays open here.
        let file = match &input {
            Input::File(f) => {
                use std::io::Seek;
                let at = (&*f).stream_position().map_err(|e| HostError::new(format!("{op} on {}", t.name), &t.name, format!("cannot read the input file: {e}")))?;
                Some((std::os::fd::AsRawFd::as_raw_fd(f), at))
            }
            _ => None,
        };
        let mut attempt = 0;
        let out = loop {
            let this = match (&input, file) {
                (_, Some((fd, at))) => {
                    use std::io::{Seek, SeekFrom};
                    let again = File::open(format!("/proc/self/fd/{fd}")).and_then(|mut f| f.seek(SeekFrom::Start(at)).map(|_| f));
                    Input::File(again.map_err(|e| HostError::new(format!("{op} on {}", t.name), &t.name, format!("cannot read the input file again: {e}")))?)
                }
                (Input::Bytes(b), _) => Input::Bytes(b),
                _ => Input::None,
            };
            let out = self.run_line(&args, line.clone(), this, &format!("{op} on {}", t.name))?;
            let refused = out.code == Some(255) && String::from_utf8_lossy(&out.stderr).contains("open refused");
            if refused && attempt < 20 {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(50 * attempt));
                continue;
            }
            break out;
        };
        if out.code == Some(255) && !self.master_alive() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(HostError::new(format!("{op} on {}", t.name), &t.name, format!("the SSH connection to {} is lost{}", t.destination(), if err.is_empty() { String::new() } else { format!(": {err}") }))
                .hint("check that the host is up; the next run reconnects"));
        }
        Ok(out)
    }
}

/// An exclusive lock held on a remote host ([`Executor::try_lock`]): a
/// `flock` there whose command waits on this process's pipe. Dropping it
/// (or this process ending, however it ends) closes the pipe, the command
/// exits and the host releases the lock: a killed run never leaves a stack
/// locked.
#[derive(Debug)]
pub struct RemoteLock {
    child: Option<Child>,
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            end_child(&mut child, Duration::from_secs(5));
        }
    }
}

/// Closes a child's standard input (it ends on EOF), gives it `grace` to
/// exit, kills it otherwise, and reaps it.
fn end_child(child: &mut Child, grace: Duration) {
    drop(child.stdin.take());
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

impl SshSession {
    /// See [`Executor::try_lock`].
    fn try_lock(&self, path: &Path, holder: &str) -> Result<Option<RemoteLock>, HostError> {
        use std::io::BufRead;
        let t = &self.target;
        let mut args = self.base_args();
        for a in ["-oControlMaster=no", "-T", "--"] {
            args.push(a.into());
        }
        args.push(t.destination().into());
        // No shell: `tee` runs under the lock, writes the holder line
        // into the lock file and echoes it, which says the lock is held;
        // it then waits on our pipe.
        let s = OsStr::new;
        let argv: [&OsStr; 8] = [s("flock"), s("-n"), s("-E"), s("75"), path.as_os_str(), s("tee"), s("--"), path.as_os_str()];
        args.push(OsString::from_vec(command_line(&argv)));
        let op = format!("lock on {}", t.name);
        let mut child = Command::new("ssh")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| HostError::new(op.clone(), path.display().to_string(), format!("cannot run ssh: {e}")))?;
        let mut line = String::new();
        if let Some(input) = child.stdin.as_mut() {
            // A write to a flock that exited (busy) fails: read its status below.
            let _ = input.write_all(holder.as_bytes()).and_then(|()| input.write_all(b"\n")).and_then(|()| input.flush());
        }
        if let Some(out) = child.stdout.as_mut() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        if line.trim_end_matches('\n') == holder {
            return Ok(Some(RemoteLock { child: Some(child) }));
        }
        drop(child.stdin.take());
        let status = child.wait().map_err(|e| HostError::new(op.clone(), path.display().to_string(), e.to_string()))?;
        if status.code() == Some(75) {
            return Ok(None);
        }
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        Err(HostError::new(op, path.display().to_string(), format!("flock failed ({status}): {}", err.trim())))
    }
}

struct SlotGuard<'a>(&'a SshSession);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let (m, cv) = &self.0.running;
        *m.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        cv.notify_one();
    }
}

impl Drop for SshSession {
    fn drop(&mut self) {
        let mut args = self.base_args();
        for a in ["-Oexit", "--"] {
            args.push(a.into());
        }
        args.push(self.target.destination().into());
        let _ = Command::new("ssh").args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
        if let Some(mut child) = self.master.lock().unwrap_or_else(|p| p.into_inner()).take() {
            end_child(&mut child, Duration::from_secs(2));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The private directories of sessions whose process is gone (killed
/// before its destructor ran; its master ended with it).
fn remove_stale_session_dirs() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("virtform-ssh-")) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn tail(log: &str) -> String {
    let t = log.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    if t.is_empty() { String::new() } else { format!(" ({t})") }
}

/// Runs a program locally with `input`; the input is written from a thread
/// (a large input cannot deadlock against a full stdout pipe).
fn spawn<S: AsRef<OsStr>>(program: &str, args: &[S], input: Input, op: &str, object: &str) -> Result<Output, HostError> {
    let stdin = match &input {
        Input::None => Stdio::null(),
        Input::Bytes(_) => Stdio::piped(),
        Input::File(f) => Stdio::from(f.try_clone().map_err(|e| HostError::new(op, object, format!("cannot read the input file: {e}")))?),
    };
    let mut child = Command::new(program).args(args).stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| {
        let hint = (e.kind() == std::io::ErrorKind::NotFound).then(|| "run scripts/host-setup to install it".to_string());
        HostError { op: op.into(), object: object.into(), message: format!("cannot run {program}: {e}"), hint }
    })?;
    let writer = match input {
        Input::Bytes(b) => child.stdin.take().map(|mut s| {
            let data = b.to_vec();
            std::thread::spawn(move || s.write_all(&data))
        }),
        _ => None,
    };
    let out = child.wait_with_output().map_err(|e| HostError::new(op, object, format!("{program} failed: {e}")))?;
    if let Some(w) = writer {
        // A program that exits without reading all its input is judged by its status.
        let _ = w.join();
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(Output { code: out.status.code(), signal: out.status.signal(), stdout: out.stdout, stderr: out.stderr })
}

/// `stat -c '%f %s'`'s line: the raw mode in hex and the size.
fn parse_stat(text: &str) -> Option<FileStat> {
    let mut it = text.split_whitespace();
    let raw = u32::from_str_radix(it.next()?, 16).ok()?;
    let len = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    let kind = match raw & 0o170000 {
        0o100000 => FileKind::File,
        0o040000 => FileKind::Dir,
        0o120000 => FileKind::Symlink,
        _ => FileKind::Other,
    };
    Some(FileStat { kind, len, mode: raw & 0o7777 })
}

/// The message of a failed command: its standard error, else its status.
fn failure(program: &str, o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    if err.is_empty() { format!("{program} exited with {}", o.status_text()) } else { err }
}

fn is_not_found(o: &Output) -> bool {
    String::from_utf8_lossy(&o.stderr).contains("No such file or directory")
}

fn os(p: &Path) -> &OsStr {
    p.as_os_str()
}

/// dd's `of=PATH` operand (everything after the first `=` is the name).
fn dd_of(p: &Path) -> OsString {
    let mut o = OsString::from("of=");
    o.push(p.as_os_str());
    o
}

fn parent_or_dot(p: &Path) -> &Path {
    p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// A temporary name beside `path` (same directory: the rename is atomic).
fn temp_beside(path: &Path, what: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}-{n}.{what}", std::process::id()))
}

/// `Executor::Ssh`'s session (the callers matched on it).
fn session(x: &Executor) -> &SshSession {
    match x {
        Executor::Ssh(s) => s,
        Executor::Local => unreachable!("a remote-only helper called for the local host"),
    }
}

/// Where a TCP client on this machine connects to reach a guest's port
/// (see [`Executor::reach_tcp`]).
#[derive(Debug)]
pub struct GuestPort {
    pub addr: std::net::SocketAddr,
    relay: Option<(Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl GuestPort {
    /// A loopback listener whose first connection is handed, as both of a
    /// forward's descriptors, to `session`'s master; a second connection is
    /// refused (the listener is closed by then). Another local process that
    /// connects first gets what the guest's port offers this host anyway
    /// (an SSH login still needs the guest's host key and the user's key),
    /// and the caller's client sees a closed connection and tries again.
    fn relay(session: &Arc<SshSession>, ip: std::net::IpAddr, port: u16) -> Result<GuestPort, HostError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let op = "forward a guest port";
        let object = format!("{ip}:{port} on {}", session.target.name);
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).map_err(|e| HostError::new(op, &object, format!("cannot listen on a loopback port: {e}")))?;
        let addr = listener.local_addr().map_err(|e| HostError::new(op, &object, e.to_string()))?;
        listener.set_nonblocking(true).map_err(|e| HostError::new(op, &object, e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (session, flag) = (Arc::clone(session), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let sock = loop {
                if flag.load(Ordering::Relaxed) || Instant::now() > deadline {
                    return;
                }
                match listener.accept() {
                    Ok((sock, _)) => break sock,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            };
            drop(listener);
            let _ = sock.set_nonblocking(false);
            use std::os::fd::AsFd;
            match super::mux::forward(&session.control, &ip.to_string(), port, sock.as_fd(), sock.as_fd(), Duration::from_secs(30)) {
                Ok(fwd) => {
                    // The master holds its own copies now.
                    drop(sock);
                    fwd.wait(&flag);
                }
                // Dropping the connection is the client's answer.
                Err(e) => tracing::debug!(host = %session.target.name, "{}", session.forward_error(ip, port, e)),
            }
        });
        Ok(GuestPort { addr, relay: Some((stop, thread)) })
    }
}

impl Drop for GuestPort {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.relay.take() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = thread.join();
        }
    }
}

impl Executor {
    /// Connects to a remote host (one ControlMaster for the executor and all
    /// its clones). A host key not in `known_hosts` is an error naming the host.
    pub fn ssh(target: SshTarget) -> Result<Executor, HostError> {
        Ok(Executor::Ssh(Arc::new(SshSession::connect(target)?)))
    }

    /// Takes the exclusive lock `path` on a remote host (created if
    /// missing; its directory must exist) and writes `holder` (one line,
    /// who holds it) into it, in one round trip: `None` when someone else
    /// holds it. Held until the [`RemoteLock`] drops. Local locks are the
    /// CLI's own (`lock_stack`); this is for remote hosts only.
    pub fn try_lock(&self, path: &Path, holder: &str) -> Result<Option<RemoteLock>, HostError> {
        match self {
            Executor::Local => Err(HostError::new("lock", path.display().to_string(), "a remote lock asked of the local host")),
            Executor::Ssh(_) if holder.contains('\n') => Err(HostError::new("lock", path.display().to_string(), "the holder line has a newline")),
            Executor::Ssh(s) => s.try_lock(path, holder),
        }
    }

    /// The host's name in messages: `local`, or the target's name.
    pub fn host_name(&self) -> &str {
        match self {
            Executor::Local => "local",
            Executor::Ssh(s) => &s.target.name,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Executor::Local)
    }

    /// Whether `ip:port` (a guest on this host's networks) accepts a TCP
    /// connection from this host, within `timeout`; the error in the OS's or
    /// the SSH master's words. Locally a connection from here; on a remote
    /// host one its sshd makes for the master (`mux::forward`), so no
    /// program runs there and the guest need not be reachable from here.
    pub fn probe_tcp(&self, ip: std::net::IpAddr, port: u16, timeout: Duration) -> Result<(), String> {
        match self {
            Executor::Local => std::net::TcpStream::connect_timeout(&std::net::SocketAddr::new(ip, port), timeout).map(|_| ()).map_err(|e| e.to_string()),
            Executor::Ssh(s) => {
                let null = File::options().read(true).write(true).open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
                use std::os::fd::AsFd;
                super::mux::forward(&s.control, &ip.to_string(), port, null.as_fd(), null.as_fd(), timeout).map(drop).map_err(|e| s.forward_error(ip, port, e))
            }
        }
    }

    /// An address on this machine from which a TCP client (an `ssh` to a
    /// guest) reaches `ip:port` as this host does: the address itself
    /// locally; for a remote host a loopback port, good for one connection,
    /// that the host's SSH master joins to a connection its sshd makes.
    /// The port closes when the [`GuestPort`] drops.
    pub fn reach_tcp(&self, ip: std::net::IpAddr, port: u16) -> Result<GuestPort, HostError> {
        match self {
            Executor::Local => Ok(GuestPort { addr: std::net::SocketAddr::new(ip, port), relay: None }),
            Executor::Ssh(s) => GuestPort::relay(s, ip, port),
        }
    }

    /// `op`, naming the host when it is remote (`"create overlay on vflab-a"`).
    pub fn named(&self, op: &str) -> String {
        match self {
            Executor::Local => op.to_string(),
            Executor::Ssh(s) => format!("{op} on {}", s.target.name),
        }
    }

    /// The libvirt URI of this host: `local` for the local host (the
    /// `--connect` URI), `qemu+ssh://user@addr:port/system?keyfile=…&no_tty=1&command=<wrapper>`
    /// for a remote one, where the wrapper runs ssh through this session's
    /// control socket with its strict host key options.
    pub fn libvirt_uri(&self, local: &str) -> String {
        match self {
            Executor::Local => local.to_string(),
            Executor::Ssh(s) => {
                let t = &s.target;
                let host = if t.address.contains(':') { format!("[{}]", t.address) } else { t.address.clone() };
                format!(
                    "qemu+ssh://{}@{host}:{}/system?keyfile={}&no_tty=1&command={}",
                    t.user,
                    t.port,
                    uri_escape(t.identity.as_os_str().as_bytes()),
                    uri_escape(s.wrapper.as_os_str().as_bytes())
                )
            }
        }
    }

    /// Runs `argv` (program first) and returns what it ended with; an error
    /// only when it could not run at all (or the SSH connection is lost).
    pub fn output(&self, op: &str, object: &str, argv: &[&OsStr], input: Input) -> Result<Output, HostError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(HostError::new(self.named(op), object, "empty argument vector"));
        };
        tracing::debug!(host = self.host_name(), ?argv, "run");
        match self {
            Executor::Local => spawn(&program.to_string_lossy(), args, input, op, object),
            Executor::Ssh(s) => s.output(op, argv, input).map_err(|mut e| {
                e.object = object.to_string();
                e
            }),
        }
    }

    /// A chain of argument vectors in one round trip on a remote host
    /// (see `SshSession::output_chain`); the standard output, or an error
    /// with the standard error. On failure `cleanup` runs (a temporary file's
    /// removal).
    pub(super) fn run_chain_remote(&self, op: &str, object: &str, chain: &[&[&OsStr]], input: Input, cleanup: Option<&Path>) -> Result<Vec<u8>, HostError> {
        let s = session(self);
        let o = s.output_chain(op, chain, input).map_err(|mut e| {
            e.object = object.to_string();
            e
        })?;
        if o.success() {
            return Ok(o.stdout);
        }
        if let Some(p) = cleanup {
            let _ = self.remove_file(p);
        }
        Err(HostError::new(self.named(op), object, failure("the remote command", &o)))
    }

    /// Runs `argv`; its standard output, or an error with its standard error.
    pub fn run_bytes(&self, op: &str, object: &str, argv: &[&OsStr], input: Input) -> Result<Vec<u8>, HostError> {
        let o = self.output(op, object, argv, input)?;
        if !o.success() {
            return Err(HostError::new(self.named(op), object, failure(&argv[0].to_string_lossy(), &o)));
        }
        Ok(o.stdout)
    }

    /// [`super::run`] on this host: `program args…`, standard output as text.
    pub fn run(&self, op: &str, object: &str, program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<String, HostError> {
        let mut argv: Vec<&OsStr> = vec![OsStr::new(program)];
        argv.extend(args.iter().map(OsStr::new));
        let input = stdin.map(Input::Bytes).unwrap_or(Input::None);
        self.run_bytes(op, object, &argv, input).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The whole file.
    pub fn read(&self, path: &Path) -> Result<Vec<u8>, HostError> {
        self.read_opt(path)?.ok_or_else(|| HostError::new(self.named("read"), path.display().to_string(), "no such file"))
    }

    /// The whole file, `None` when it does not exist.
    pub fn read_opt(&self, path: &Path) -> Result<Option<Vec<u8>>, HostError> {
        let object = path.display().to_string();
        match self {
            Executor::Local => match std::fs::read(path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(HostError::new("read", object, e.to_string())),
            },
            Executor::Ssh(_) => {
                let o = self.output("read", &object, &[OsStr::new("cat"), OsStr::new("--"), os(path)], Input::None)?;
                if o.success() {
                    Ok(Some(o.stdout))
                } else if is_not_found(&o) {
                    Ok(None)
                } else {
                    Err(HostError::new(self.named("read"), object, failure("cat", &o)))
                }
            }
        }
    }

    /// Writes `data` to `path` with permission bits `mode` atomically: a
    /// temporary file beside it, fsync, rename. Readers see the old content
    /// or the new, never a part.
    pub fn write_atomic(&self, path: &Path, data: &[u8], mode: u32) -> Result<(), HostError> {
        let object = path.display().to_string();
        let tmp = temp_beside(path, "tmp");
        match self {
            Executor::Local => {
                use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
                let r = (|| -> std::io::Result<()> {
                    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
                    f.write_all(data)?;
                    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
                    f.sync_all()?;
                    std::fs::rename(&tmp, path)?;
                    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        File::open(dir)?.sync_all()?;
                    }
                    Ok(())
                })();
                r.map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    HostError::new("write", object, e.to_string())
                })
            }
            Executor::Ssh(_) => {
                // An empty 0600 file first (install), then the data into it
                // (dd: no shell redirection), fsynced; the mode; the rename.
                let m = format!("{mode:o}");
                let of = dd_of(&tmp);
                let dir = parent_or_dot(path);
                let chain: [&[&OsStr]; 5] = [
                    &[OsStr::new("install"), OsStr::new("-m"), OsStr::new("600"), OsStr::new("--"), OsStr::new("/dev/null"), os(&tmp)],
                    &[OsStr::new("dd"), &of, OsStr::new("conv=notrunc,fsync"), OsStr::new("bs=1M"), OsStr::new("status=none")],
                    &[OsStr::new("chmod"), OsStr::new(&m), OsStr::new("--"), os(&tmp)],
                    &[OsStr::new("mv"), OsStr::new("-f"), OsStr::new("-T"), OsStr::new("--"), os(&tmp), os(path)],
                    &[OsStr::new("sync"), OsStr::new("--"), os(dir)],
                ];
                self.run_chain_remote("write", &object, &chain, Input::Bytes(data), Some(&tmp)).map(drop)
            }
        }
    }

    /// What `path` is (not following a symlink), `None` when it does not exist.
    pub fn stat(&self, path: &Path) -> Result<Option<FileStat>, HostError> {
        let object = path.display().to_string();
        match self {
            Executor::Local => {
                use std::os::unix::fs::PermissionsExt;
                match std::fs::symlink_metadata(path) {
                    Ok(m) => {
                        let ft = m.file_type();
                        let kind = if ft.is_file() {
                            FileKind::File
                        } else if ft.is_dir() {
                            FileKind::Dir
                        } else if ft.is_symlink() {
                            FileKind::Symlink
                        } else {
                            FileKind::Other
                        };
                        Ok(Some(FileStat { kind, len: m.len(), mode: m.permissions().mode() & 0o7777 }))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(HostError::new("stat", object, e.to_string())),
                }
            }
            Executor::Ssh(_) => {
                let o = self.output("stat", &object, &[OsStr::new("stat"), OsStr::new("-c"), OsStr::new("%f %s"), OsStr::new("--"), os(path)], Input::None)?;
                if !o.success() {
                    return if is_not_found(&o) { Ok(None) } else { Err(HostError::new(self.named("stat"), object, failure("stat", &o))) };
                }
                let text = String::from_utf8_lossy(&o.stdout);
                parse_stat(text.trim_end()).map(Some).ok_or_else(|| HostError::new(self.named("stat"), object, format!("cannot parse stat's output {text:?}")))
            }
        }
    }

    /// [`Executor::stat`] of every path, in order; on a remote host in ONE
    /// round trip (`stat --printf` with each record NUL-terminated and
    /// naming its path, so a missing path is told by its absence). Any
    /// failure other than a missing path is an error.
    pub fn stat_many(&self, paths: &[&Path]) -> Result<Vec<Option<FileStat>>, HostError> {
        if self.is_local() || paths.len() < 2 {
            return paths.iter().map(|p| self.stat(p)).collect();
        }
        let object = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        let mut argv: Vec<&OsStr> = vec![OsStr::new("stat"), OsStr::new("--printf"), OsStr::new("%f %s %n\\0"), OsStr::new("--")];
        argv.extend(paths.iter().map(|p| p.as_os_str()));
        let o = self.output("stat", &object, &argv, Input::None)?;
        let err = String::from_utf8_lossy(&o.stderr);
        if !o.success() && (o.code != Some(1) || err.lines().any(|l| !l.trim().is_empty() && !l.contains("No such file or directory"))) {
            return Err(HostError::new(self.named("stat"), object, failure("stat", &o)));
        }
        let mut found: std::collections::HashMap<&[u8], FileStat> = std::collections::HashMap::new();
        for rec in o.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            // "<hex mode> <size> <path>": the path is everything after the second space.
            let mut parts = rec.splitn(3, |b| *b == b' ');
            let (Some(mode), Some(size), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(HostError::new(self.named("stat"), object, format!("cannot parse stat's output {:?}", String::from_utf8_lossy(rec))));
            };
            let head = format!("{} {}", String::from_utf8_lossy(mode), String::from_utf8_lossy(size));
            let st = parse_stat(&head).ok_or_else(|| HostError::new(self.named("stat"), object.clone(), format!("cannot parse stat's output {head:?}")))?;
            found.insert(name, st);
        }
        Ok(paths.iter().map(|p| found.get(p.as_os_str().as_bytes()).copied()).collect())
    }

    /// Creates `dir` and its missing parents; `dir` itself gets `mode`
    /// (also when it existed), whatever the umask.
    pub fn mkdir_all(&self, dir: &Path, mode: u32) -> Result<(), HostError> {
        let object = dir.display().to_string();
        match self {
            Executor::Local => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::create_dir_all(dir)
                    .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)))
                    .map_err(|e| HostError::new("create directory", object, e.to_string()))
            }
            Executor::Ssh(_) => {
                let m = format!("{mode:o}");
                self.run_bytes("create directory", &object, &[OsStr::new("install"), OsStr::new("-d"), OsStr::new("-m"), OsStr::new(&m), OsStr::new("--"), os(dir)], Input::None).map(drop)
            }
        }
    }

    /// Removes a file; a missing one is not an error.
    pub fn remove_file(&self, path: &Path) -> Result<(), HostError> {
        let object = path.display().to_string();
        match self {
            Executor::Local => match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(HostError::new("remove", object, e.to_string())),
            },
            Executor::Ssh(_) => self.run_bytes("remove", &object, &[OsStr::new("rm"), OsStr::new("-f"), OsStr::new("--"), os(path)], Input::None).map(drop),
        }
    }

    /// Renames `from` to `to` (replacing `to`), atomically.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<(), HostError> {
        let object = to.display().to_string();
        match self {
            Executor::Local => std::fs::rename(from, to).map_err(|e| HostError::new("rename", object, format!("{} -> {}: {e}", from.display(), to.display()))),
            Executor::Ssh(_) => self.run_bytes("rename", &object, &[OsStr::new("mv"), OsStr::new("-f"), OsStr::new("-T"), OsStr::new("--"), os(from), os(to)], Input::None).map(drop),
        }
    }

    /// Gives the finished temporary file `part` its `mode`, fsyncs it,
    /// renames it to `dst` and fsyncs the directory: the last step of an
    /// atomic write made by a program (`qemu-img create` into a `.part`).
    pub fn install_file(&self, part: &Path, dst: &Path, mode: u32) -> Result<(), HostError> {
        let object = dst.display().to_string();
        match self {
            Executor::Local => {
                use std::os::unix::fs::PermissionsExt;
                let r = (|| -> std::io::Result<()> {
                    let f = std::fs::OpenOptions::new().write(true).open(part)?;
                    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
                    f.sync_all()?;
                    drop(f);
                    std::fs::rename(part, dst)?;
                    if let Some(dir) = dst.parent().filter(|d| !d.as_os_str().is_empty()) {
                        File::open(dir)?.sync_all()?;
                    }
                    Ok(())
                })();
                r.map_err(|e| HostError::new("finish file", object, e.to_string()))
            }
            Executor::Ssh(_) => {
                let m = format!("{mode:o}");
                let dir = parent_or_dot(dst);
                let chain: [&[&OsStr]; 4] = [
                    &[OsStr::new("chmod"), OsStr::new(&m), OsStr::new("--"), os(part)],
                    &[OsStr::new("sync"), OsStr::new("--"), os(part)],
                    &[OsStr::new("mv"), OsStr::new("-f"), OsStr::new("-T"), OsStr::new("--"), os(part), os(dst)],
                    &[OsStr::new("sync"), OsStr::new("--"), os(dir)],
                ];
                self.run_chain_remote("finish file", &object, &chain, Input::None, None).map(drop)
            }
        }
    }

    /// Creates a sparse file of `size` bytes with mode 0600 (replacing a
    /// file of that name).
    pub fn create_sparse(&self, path: &Path, size: u64) -> Result<(), HostError> {
        let object = path.display().to_string();
        match self {
            Executor::Local => {
                use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
                let r = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).and_then(|f| {
                    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                    f.set_len(size)
                });
                r.map_err(|e| HostError::new("create file", object, e.to_string()))
            }
            Executor::Ssh(_) => {
                let n = size.to_string();
                let chain: [&[&OsStr]; 2] = [
                    &[OsStr::new("install"), OsStr::new("-m"), OsStr::new("600"), OsStr::new("--"), OsStr::new("/dev/null"), os(path)],
                    &[OsStr::new("truncate"), OsStr::new("-s"), OsStr::new(&n), OsStr::new("--"), os(path)],
                ];
                self.run_chain_remote("create file", &object, &chain, Input::None, Some(path)).map(drop)
            }
        }
    }

    /// The sha256 of a file on this host (lower-case hex).
    pub fn sha256(&self, path: &Path) -> Result<String, HostError> {
        let object = path.display().to_string();
        match self {
            Executor::Local => super::disks::hash_file(path).map_err(|e| HostError::new("hash", object, e.to_string())),
            Executor::Ssh(_) => {
                let out = self.run_bytes("hash", &object, &[OsStr::new("sha256sum"), OsStr::new("-b"), OsStr::new("--"), os(path)], Input::None)?;
                parse_sha256sum(&out).ok_or_else(|| HostError::new(self.named("hash"), object, format!("cannot parse sha256sum's output {:?}", String::from_utf8_lossy(&out))))
            }
        }
    }

    /// Copies the local file `src` to `dst` on this host with `mode`, unless
    /// `dst` already has the content. The copy goes to a `.part` beside
    /// `dst`, its sha256 is computed on this host and compared with
    /// `sha256` (or, when none is given, with `src`'s), and only then renamed
    /// to `dst`; a mismatch removes the part and is an error. Returns whether
    /// it copied.
    pub fn copy_image(&self, src: &Path, dst: &Path, sha256: Option<&str>, mode: u32) -> Result<bool, HostError> {
        let object = dst.display().to_string();
        let want = match sha256 {
            Some(h) => h.to_ascii_lowercase(),
            None => super::disks::hash_file(src).map_err(|e| HostError::new("hash", src.display().to_string(), e.to_string()))?,
        };
        let there = match self {
            Executor::Local => if self.stat(dst)?.is_some_and(|s| s.kind == FileKind::File) { Some(self.sha256(dst)?) } else { None },
            // One round trip: the hash of what is there, if anything is (a
            // directory or the like in the way fails the rename below).
            Executor::Ssh(_) => {
                let o = self.output("hash", &object, &[OsStr::new("sha256sum"), OsStr::new("-b"), OsStr::new("--"), os(dst)], Input::None)?;
                if o.success() { parse_sha256sum(&o.stdout) } else { None }
            }
        };
        if there.as_deref() == Some(want.as_str()) {
            return Ok(false);
        }
        let mismatch = |got: &str| {
            HostError::new(self.named("copy image"), &object, format!("the copy's sha256 is {got}, expected {want}")).hint("the source changed or the transfer was damaged; nothing was installed")
        };
        let part = temp_beside(dst, "part");
        let copied = match self {
            Executor::Local => (|| -> Result<(), HostError> {
                use std::os::unix::fs::PermissionsExt;
                std::fs::copy(src, &part).map_err(|e| HostError::new("copy image", &object, format!("{} -> {}: {e}", src.display(), part.display())))?;
                let got = self.sha256(&part)?;
                if got != want {
                    return Err(mismatch(&got));
                }
                std::fs::set_permissions(&part, std::fs::Permissions::from_mode(mode)).map_err(|e| HostError::new("copy image", &object, e.to_string()))?;
                self.rename(&part, dst)
            })(),
            // Two round trips: the copy with its hash, then its mode and name.
            Executor::Ssh(_) => (|| -> Result<(), HostError> {
                let f = File::open(src).map_err(|e| HostError::new("copy image", &object, format!("cannot read {}: {e}", src.display())))?;
                let of = dd_of(&part);
                let s = OsStr::new;
                let copy: [&[&OsStr]; 3] = [
                    &[s("install"), s("-m"), s("600"), s("--"), s("/dev/null"), os(&part)],
                    &[s("dd"), &of, s("conv=notrunc"), s("bs=1M"), s("status=none")],
                    &[s("sha256sum"), s("-b"), s("--"), os(&part)],
                ];
                let out = self.run_chain_remote("copy image", &object, &copy, Input::File(f), None)?;
                let got = parse_sha256sum(&out).ok_or_else(|| HostError::new(self.named("copy image"), &object, format!("cannot parse sha256sum's output {:?}", String::from_utf8_lossy(&out))))?;
                if got != want {
                    return Err(mismatch(&got));
                }
                let m = format!("{mode:o}");
                let install: [&[&OsStr]; 2] = [&[s("chmod"), s(&m), s("--"), os(&part)], &[s("mv"), s("-f"), s("-T"), s("--"), os(&part), os(dst)]];
                self.run_chain_remote("copy image", &object, &install, Input::None, None).map(drop)
            })(),
        };
        if let Err(e) = copied {
            let _ = self.remove_file(&part);
            return Err(e);
        }
        Ok(true)
    }
}

/// sha256sum's hash (lowercase hex) from its output line.
fn parse_sha256sum(out: &[u8]) -> Option<String> {
    // A name with a backslash or newline makes sha256sum prefix the line with '\'.
    let text = String::from_utf8_lossy(out);
    let hex: String = text.trim_start_matches('\\').chars().take(64).collect();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hostile() -> Vec<Vec<u8>> {
        vec![
            b"plain".to_vec(),
            b"".to_vec(),
            b"with space".to_vec(),
            b"it's".to_vec(),
            b"''".to_vec(),
            b"\"double\"".to_vec(),
            b"$(touch /tmp/vflab-pwned)".to_vec(),
            b"`id`".to_vec(),
            b"a;rm -rf /tmp/vflab-x".to_vec(),
            b"line1\nline2".to_vec(),
            b"--leading-dashes".to_vec(),
            b"-n".to_vec(),
            b"back\\slash".to_vec(),
            b"$HOME ${PATH} *".to_vec(),
            b"tab\there|pipe&amp>redir<in".to_vec(),
            vec![0xff, 0xfe, b'x', 0x80],
            "ünïcødé".as_bytes().to_vec(),
        ]
    }

    #[test]
    fn quote_wraps_and_escapes_single_quotes() {
        assert_eq!(quote(b"abc"), b"'abc'");
        assert_eq!(quote(b""), b"''");
        assert_eq!(quote(b"it's"), b"'it'\\''s'");
        assert_eq!(quote(b"$(x)"), b"'$(x)'");
        assert_eq!(command_line(&["ls", "-l", "a b"]), b"'ls' '-l' 'a b'");
    }

    #[test]
    fn targets_from_libvirt_uris() {
        let t = SshTarget::from_libvirt_uri("a", "qemu+ssh://root@10.99.0.11/system", "/k", "/kh").unwrap();
        assert_eq!((t.user.as_str(), t.address.as_str(), t.port), ("root", "10.99.0.11", 22));
        let t = SshTarget::from_libvirt_uri("a", "qemu+ssh://ops@hv1.example:2222/system", "/k", "/kh").unwrap();
        assert_eq!((t.user.as_str(), t.address.as_str(), t.port), ("ops", "hv1.example", 2222));
        let t = SshTarget::from_libvirt_uri("a", "qemu+ssh://[fd00::1]:22/system", "/k", "/kh").unwrap();
        assert_eq!((t.address.as_str(), t.destination()), ("fd00::1", "root@[fd00::1]".to_string()));
        for (bad, says) in [
            ("qemu+tcp://h/system", "unsupported URI scheme \"qemu+tcp\""),
            ("qemu:///system", "unsupported URI scheme"),
            ("qemu+ssh://h/session", "unsupported path /session"),
            ("qemu+ssh://h/system?keyfile=x", "unsupported path"),
            ("qemu+ssh://h:0/system", "not a port"),
            ("qemu+ssh://h:x/system", "not a port"),
            ("qemu+ssh:///system", "no host"),
        ] {
            let e = SshTarget::from_libvirt_uri("a", bad, "/k", "/kh").unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn uri_values_are_escaped() {
        assert_eq!(uri_escape(b"/var/lib/x_y-z.key"), "/var/lib/x_y-z.key");
        assert_eq!(uri_escape(b"/a b&c=d?%"), "/a%20b%26c%3Dd%3F%25");
    }

    #[test]
    fn ssh_option_paths_are_quoted_and_percent_doubled() {
        assert_eq!(ssh_path_value(Path::new("/x/known hosts%h")), OsString::from("\"/x/known hosts%%h\""));
    }

    #[test]
    fn local_runs_argv_exactly() {
        let args = hostile();
        let mut argv: Vec<&OsStr> = vec![OsStr::new("printf"), OsStr::new("%s\\0")];
        argv.extend(args.iter().map(|a| OsStr::from_bytes(a)));
        let out = Executor::Local.run_bytes("echo", "x", &argv, Input::None).unwrap();
        let mut expected = Vec::new();
        for a in &args {
            expected.extend_from_slice(a);
            expected.push(0);
        }
        assert_eq!(out, expected);
        assert_eq!(Executor::Local.run("cat", "x", "cat", &[], Some(b"hi")).unwrap(), "hi");
        let e = Executor::Local.run("read", "x", "cat", &["/nonexistent/file"], None).unwrap_err();
        assert!(e.message.contains("No such file"), "{}", e.message);
    }

    #[test]
    fn local_file_operations_round_trip() {
        let dir = std::env::temp_dir().join(format!("vf-exec-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let x = Executor::Local;
        let sub = dir.join("a b").join("c'd");
        x.mkdir_all(&sub, 0o711).unwrap();
        assert_eq!(x.stat(&sub).unwrap().map(|s| (s.kind, s.mode)), Some((FileKind::Dir, 0o711)));
        let f = sub.join("f$(x)");
        assert_eq!(x.read_opt(&f).unwrap(), None);
        x.write_atomic(&f, b"one\n\xff", 0o600).unwrap();
        assert_eq!(x.read(&f).unwrap(), b"one\n\xff");
        assert_eq!(x.stat(&f).unwrap(), Some(FileStat { kind: FileKind::File, len: 5, mode: 0o600 }));
        x.write_atomic(&f, b"two", 0o644).unwrap();
        assert_eq!(x.read(&f).unwrap(), b"two");
        let g = sub.join("g");
        x.rename(&f, &g).unwrap();
        assert_eq!(x.stat(&f).unwrap(), None);
        let img = sub.join("img");
        assert!(x.copy_image(&g, &img, None, 0o644).unwrap());
        assert!(!x.copy_image(&g, &img, None, 0o644).unwrap(), "already there");
        let e = x.copy_image(&g, &sub.join("bad"), Some(&"0".repeat(64)), 0o644).unwrap_err();
        assert!(e.message.contains("expected 0000"), "{e}");
        assert_eq!(x.stat(&sub.join("bad")).unwrap(), None);
        x.remove_file(&g).unwrap();
        x.remove_file(&g).unwrap();
        let left: Vec<_> = std::fs::read_dir(&sub).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![OsString::from("img")], "no temporary or part file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ssh_targets_are_checked_before_anything_runs() {
        let t = SshTarget::new("h", "-oProxyCommand=x", "10.0.0.1", "/nonexistent", "/nonexistent");
        let e = Executor::ssh(t).unwrap_err();
        assert!(e.message.contains("user"), "{e}");
        let t = SshTarget::new("h", "root", "-x", "/nonexistent", "/nonexistent");
        assert!(Executor::ssh(t).unwrap_err().message.contains("address"));
        let t = SshTarget::new("h", "root", "10.0.0.1", "/nonexistent/key", "/nonexistent");
        let e = Executor::ssh(t).unwrap_err();
        assert!(e.message.contains("private key") && e.message.contains("/nonexistent/key"), "{e}");
        assert_eq!(e.object, "h");
    }
}
