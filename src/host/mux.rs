//! A client of OpenSSH's ControlMaster multiplexing protocol
//! (`PROTOCOL.mux` in OpenSSH, version 4): a command runs on the master's
//! connection with no `ssh` process of its own. Each remote command used
//! to start one (dynamic linking, OpenSSL's initialisation, option
//! parsing), and in a fleet apply those starts were most of the machine's
//! CPU; here a command is a Unix socket, three pipes and two packets.
//!
//! A session ("passenger mode"): both sides say hello; the client sends
//! `MUX_C_NEW_SESSION` with the command line (no tty, no X11, no agent, no
//! escape character), then its stdin, stdout and stderr descriptors, one
//! per `SCM_RIGHTS` message; the master answers `MUX_S_SESSION_OPENED` (or
//! a failure with its reason), forwards the descriptors' data itself, and
//! ends with `MUX_S_EXIT_MESSAGE` and the command's exit status. A master
//! that closes the socket first has lost its connection.
//!
//! A forward (`MUX_C_NEW_STDIO_FWD`, what `ssh -W` asks for): the master
//! has the host's sshd open a TCP connection to an address the host
//! reaches (a guest on its networks) and joins it to two descriptors the
//! client passes. The master answers only once the host's side has
//! connected or failed, so the answer itself says whether the port is
//! open; the forward lasts while the client's control socket is open.
//!
//! The command line is the caller's (already quoted for the remote shell,
//! as the `ssh` client would send it); nothing here builds one.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

const MUX_MSG_HELLO: u32 = 0x0000_0001;
const MUX_C_NEW_SESSION: u32 = 0x1000_0002;
const MUX_C_ALIVE_CHECK: u32 = 0x1000_0004;
const MUX_C_NEW_STDIO_FWD: u32 = 0x1000_0008;
const MUX_S_PERMISSION_DENIED: u32 = 0x8000_0002;
const MUX_S_FAILURE: u32 = 0x8000_0003;
const MUX_S_EXIT_MESSAGE: u32 = 0x8000_0004;
const MUX_S_ALIVE: u32 = 0x8000_0005;
const MUX_S_SESSION_OPENED: u32 = 0x8000_0006;
const MUX_S_TTY_ALLOC_FAIL: u32 = 0x8000_0008;
const VERSION: u32 = 4;
/// Larger packets from a master are refused (its are a few dozen bytes).
const MAX_PACKET: usize = 256 * 1024;

/// Why a session did not give an exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxError {
    /// The control socket could not be reached or spoke something else
    /// (no master there, or a protocol mismatch).
    Connect(String),
    /// The master refused the session; its reason ("open refused" when the
    /// server's MaxSessions is reached).
    Refused(String),
    /// The master went away before the command's exit status (its
    /// connection to the host is lost).
    Lost(String),
}

impl std::fmt::Display for MuxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MuxError::Connect(m) => write!(f, "cannot use the SSH control socket: {m}"),
            MuxError::Refused(m) => write!(f, "the SSH master refused the session: {m}"),
            MuxError::Lost(m) => write!(f, "the SSH master went away: {m}"),
        }
    }
}

/// What a command run through the master ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuxOutput {
    pub code: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The standard input of a session.
pub enum MuxInput<'a> {
    None,
    Bytes(&'a [u8]),
    /// Read by the master itself from this descriptor (a file).
    Fd(OwnedFd),
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn put_string(b: &mut Vec<u8>, s: &[u8]) {
    put_u32(b, s.len() as u32);
    b.extend_from_slice(s);
}

fn write_packet(s: &mut UnixStream, body: &[u8]) -> std::io::Result<()> {
    let mut p = Vec::with_capacity(body.len() + 4);
    put_u32(&mut p, body.len() as u32);
    p.extend_from_slice(body);
    s.write_all(&p)
}

fn read_packet(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_PACKET {
        return Err(std::io::Error::other(format!("a packet of {n} bytes")));
    }
    let mut body = vec![0u8; n];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// A packet's fields, read in order.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u32(&mut self) -> Option<u32> {
        let (h, t) = self.0.split_at_checked(4)?;
        self.0 = t;
        Some(u32::from_be_bytes(h.try_into().ok()?))
    }

    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        let (h, t) = self.0.split_at_checked(n)?;
        self.0 = t;
        Some(String::from_utf8_lossy(h).into_owned())
    }
}

/// Connects and exchanges hellos.
fn open(control: &Path) -> Result<UnixStream, MuxError> {
    let mut s = UnixStream::connect(control).map_err(|e| MuxError::Connect(format!("{}: {e}", control.display())))?;
    let hello = read_packet(&mut s).map_err(|e| MuxError::Connect(format!("no hello from the master: {e}")))?;
    let mut f = Fields(&hello);
    match (f.u32(), f.u32()) {
        (Some(MUX_MSG_HELLO), Some(VERSION)) => {}
        (Some(MUX_MSG_HELLO), Some(v)) => return Err(MuxError::Connect(format!("the master speaks version {v} of the protocol, not {VERSION}"))),
        _ => return Err(MuxError::Connect("the master's first packet is not a hello".into())),
    }
    let mut b = Vec::new();
    put_u32(&mut b, MUX_MSG_HELLO);
    put_u32(&mut b, VERSION);
    write_packet(&mut s, &b).map_err(|e| MuxError::Connect(format!("cannot say hello: {e}")))?;
    Ok(s)
}

/// Whether a master answers on `control` (`MUX_C_ALIVE_CHECK`): its PID.
pub fn alive(control: &Path) -> Option<u32> {
    let mut s = open(control).ok()?;
    let mut b = Vec::new();
    put_u32(&mut b, MUX_C_ALIVE_CHECK);
    put_u32(&mut b, 1);
    write_packet(&mut s, &b).ok()?;
    let reply = read_packet(&mut s).ok()?;
    let mut f = Fields(&reply);
    match (f.u32(), f.u32(), f.u32()) {
        (Some(MUX_S_ALIVE), Some(1), Some(pid)) => Some(pid),
        _ => None,
    }
}

/// Sends one descriptor with one byte of data, as OpenSSH's `mm_send_fd`.
fn send_fd(s: &UnixStream, fd: i32) -> std::io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: msghdr is plain data; every pointer in it points into the
    // live locals above for the duration of the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer holds one header with room for one int
    // (CMSG_SPACE above), so CMSG_FIRSTHDR is non-null and CMSG_DATA is
    // within it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
    }
    loop {
        // SAFETY: msg is fully initialised above; the socket is open.
        let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n == 1 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if n < 0 && e.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return Err(if n < 0 { e } else { std::io::Error::other("sendmsg sent nothing") });
    }
}

fn pipe() -> std::io::Result<(std::fs::File, std::fs::File)> {
    let (r, w) = std::io::pipe()?;
    Ok((std::fs::File::from(OwnedFd::from(r)), std::fs::File::from(OwnedFd::from(w))))
}

/// Runs `command` (a command line for the remote login shell) through the
/// master listening on `control`, with `input` as its standard input.
pub fn run(control: &Path, command: &[u8], input: MuxInput) -> Result<MuxOutput, MuxError> {
    let mut s = open(control)?;
    let lost = |e: std::io::Error| MuxError::Lost(e.to_string());
    let mut b = Vec::new();
    put_u32(&mut b, MUX_C_NEW_SESSION);
    put_u32(&mut b, 2);
    put_string(&mut b, b"");
    for flag in [false, false, false, false] {
        // want tty, X11 forwarding, agent, subsystem
        put_u32(&mut b, u32::from(flag));
    }
    put_u32(&mut b, 0xffff_ffff);
    put_string(&mut b, b"");
    put_string(&mut b, command);
    let bytes: Option<&[u8]> = match &input {
        MuxInput::Bytes(d) => Some(d),
        _ => None,
    };
    // The descriptors the master gets: stdin, stdout, stderr.
    let (stdin_there, stdin_here): (OwnedFd, Option<std::fs::File>) = match input {
        MuxInput::None => (OwnedFd::from(std::fs::File::open("/dev/null").map_err(|e| MuxError::Connect(format!("/dev/null: {e}")))?), None),
        MuxInput::Bytes(_) => {
            let (r, w) = pipe().map_err(|e| MuxError::Connect(format!("pipe: {e}")))?;
            (OwnedFd::from(r), Some(w))
        }
        MuxInput::Fd(fd) => (fd, None),
    };
    let (out_here, out_there) = pipe().map_err(|e| MuxError::Connect(format!("pipe: {e}")))?;
    let (err_here, err_there) = pipe().map_err(|e| MuxError::Connect(format!("pipe: {e}")))?;
    write_packet(&mut s, &b).map_err(lost)?;
    for fd in [stdin_there.as_raw_fd(), out_there.as_raw_fd(), err_there.as_raw_fd()] {
        send_fd(&s, fd).map_err(lost)?;
    }
    // The master holds its own copies now: ours go, so that the pipes end
    // when the master closes them.
    drop((stdin_there, out_there, err_there));
    std::thread::scope(|t| {
        let writer = stdin_here.map(|mut w| t.spawn(move || w.write_all(bytes.unwrap_or_default())));
        let out = t.spawn(move || {
            let mut v = Vec::new();
            let mut r = out_here;
            r.read_to_end(&mut v).map(|_| v)
        });
        let err = t.spawn(move || {
            let mut v = Vec::new();
            let mut r = err_here;
            r.read_to_end(&mut v).map(|_| v)
        });
        let status = session_status(&mut s);
        // A refused session never reads its descriptors: end the readers.
        if status.is_err() {
            drop(s);
        }
        let stdout = out.join().unwrap_or_else(|_| Ok(Vec::new())).unwrap_or_default();
        let stderr = err.join().unwrap_or_else(|_| Ok(Vec::new())).unwrap_or_default();
        if let Some(w) = writer {
            // A command that exits without reading all its input is judged by its status.
            let _ = w.join();
        }
        status.map(|code| MuxOutput { code, stdout, stderr })
    })
}

/// A TCP connection the master's host made, joined to the descriptors
/// [`forward`] was given; it lasts while this socket is open.
#[derive(Debug)]
pub struct Forward(UnixStream);

impl Forward {
    /// Blocks until the master ends the forward (one side closed the
    /// connection) or `stop` is set (checked every 200 ms); then closes it.
    pub fn wait(mut self, stop: &std::sync::atomic::AtomicBool) {
        let _ = self.0.set_read_timeout(Some(std::time::Duration::from_millis(200)));
        let mut buf = [0u8; 256];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match self.0.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => {}
                Err(_) => return,
            }
        }
    }
}

/// Has the master's host connect to `host:port` and join that connection
/// to `input` (read by the master, sent to the port) and `output`
/// (written with what the port sends). `Refused` when the host could not
/// connect (the port is closed, nothing answers there, or the host's sshd
/// does not allow forwarding), or gave no answer within `timeout`.
pub fn forward(control: &Path, host: &str, port: u16, input: std::os::fd::BorrowedFd, output: std::os::fd::BorrowedFd, timeout: std::time::Duration) -> Result<Forward, MuxError> {
    let mut s = open(control)?;
    let lost = |e: std::io::Error| MuxError::Lost(e.to_string());
    let mut b = Vec::new();
    put_u32(&mut b, MUX_C_NEW_STDIO_FWD);
    put_u32(&mut b, 3);
    put_string(&mut b, b"");
    put_string(&mut b, host.as_bytes());
    put_u32(&mut b, u32::from(port));
    write_packet(&mut s, &b).map_err(lost)?;
    for fd in [input.as_raw_fd(), output.as_raw_fd()] {
        send_fd(&s, fd).map_err(lost)?;
    }
    s.set_read_timeout(Some(timeout.max(std::time::Duration::from_millis(1)))).map_err(lost)?;
    let p = match read_packet(&mut s) {
        Ok(p) => p,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            return Err(MuxError::Refused(format!("no answer from {host}:{port} within {} s", timeout.as_secs().max(1))));
        }
        Err(e) => return Err(MuxError::Lost(format!("the master closed the socket before answering ({e})"))),
    };
    let mut f = Fields(&p);
    match f.u32() {
        Some(MUX_S_SESSION_OPENED) => {
            let _ = s.set_read_timeout(None);
            Ok(Forward(s))
        }
        Some(MUX_S_PERMISSION_DENIED | MUX_S_FAILURE) => {
            let _request = f.u32();
            Err(MuxError::Refused(f.string().unwrap_or_default()))
        }
        other => Err(MuxError::Lost(format!("an unexpected packet {other:x?} from the master"))),
    }
}

/// Reads the master's answers to a new session until its exit status.
fn session_status(s: &mut UnixStream) -> Result<u32, MuxError> {
    let mut session = None;
    loop {
        let p = match read_packet(s) {
            Ok(p) => p,
            Err(e) => {
                return Err(if session.is_none() {
                    MuxError::Refused(format!("the master closed the session before opening it ({e})"))
                } else {
                    MuxError::Lost(format!("the master closed the socket before the command's exit status ({e})"))
                });
            }
        };
        let mut f = Fields(&p);
        match f.u32() {
            Some(MUX_S_SESSION_OPENED) => {
                let _request = f.u32();
                session = f.u32();
            }
            Some(MUX_S_PERMISSION_DENIED | MUX_S_FAILURE) => {
                let _request = f.u32();
                return Err(MuxError::Refused(f.string().unwrap_or_default()));
            }
            Some(MUX_S_TTY_ALLOC_FAIL) => {}
            Some(MUX_S_EXIT_MESSAGE) => {
                let sid = f.u32();
                let code = f.u32().ok_or_else(|| MuxError::Lost("a short exit message".into()))?;
                if session.is_some() && sid != session {
                    return Err(MuxError::Lost(format!("an exit message for session {sid:?}, not {session:?}")));
                }
                return Ok(code);
            }
            other => return Err(MuxError::Lost(format!("an unexpected packet {other:x?} from the master"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_in_order_and_stop_at_the_end() {
        let mut b = Vec::new();
        put_u32(&mut b, 7);
        put_string(&mut b, b"open refused");
        let mut f = Fields(&b);
        assert_eq!(f.u32(), Some(7));
        assert_eq!(f.string().as_deref(), Some("open refused"));
        assert_eq!(f.u32(), None);
        let mut short = Fields(&[0, 0, 0, 9, b'x']);
        assert_eq!(short.string(), None, "a string longer than the packet");
    }

    #[test]
    fn no_master_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = run(&dir.path().join("cm"), b"true", MuxInput::None).unwrap_err();
        assert!(matches!(e, MuxError::Connect(_)), "{e}");
        assert_eq!(alive(&dir.path().join("cm")), None);
    }
}
