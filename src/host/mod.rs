//! Host adapters: everything that touches the machine sits behind these
//! modules, so the planner and engine can be tested with a fake host.
//!
//! Invariants:
//! - Programs are spawned with argument vectors ([`run`]); never a shell string.
//! - Every error names the operation, the object, what the host said, and
//!   (when known) what to do about it.
//! - Ownership markers have one format, built and parsed here.

pub mod cache;
pub mod disks;
pub mod exec;
pub mod libvirt;
pub mod links;
pub mod mux;
pub mod ovs;
pub mod ssh;

/// A host operation that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{op} {object}: {message}{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct HostError {
    /// What was attempted ("create bridge", "inspect image").
    pub op: String,
    /// The object it was attempted on (a link name, a path).
    pub object: String,
    /// What the host said.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl HostError {
    pub fn new(op: impl Into<String>, object: impl Into<String>, message: impl Into<String>) -> HostError {
        HostError { op: op.into(), object: object.into(), message: message.into(), hint: None }
    }

    pub fn hint(mut self, h: impl Into<String>) -> HostError {
        self.hint = Some(h.into());
        self
    }
}

/// Runs `program args…` on the local host and returns its standard output.
/// `stdin` is written to the program's standard input when given. The same
/// as [`exec::Executor::run`] on [`exec::Executor::Local`].
pub fn run(op: &str, object: &str, program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<String, HostError> {
    exec::Executor::Local.run(op, object, program, args, stdin)
}

/// The ownership marker of an object: `virtform:<stack>:<address>`.
pub fn marker(stack: &str, address: &str) -> String {
    format!("virtform:{stack}:{address}")
}

/// A marker that also records the hash of the spec virtform last applied
/// (`virtform:<stack>:<address>;h=<hash>`), so a later plan can tell a change
/// made outside virtform from a change of the configuration.
pub fn marker_with_hash(stack: &str, address: &str, hash: &str) -> String {
    format!("virtform:{stack}:{address};h={hash}")
}

/// Parses a marker into (stack, address), with or without a hash.
pub fn parse_marker(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix("virtform:")?;
    let rest = rest.split_once(";h=").map(|(a, _)| a).unwrap_or(rest);
    let (stack, addr) = rest.split_once(':')?;
    (!stack.is_empty() && !addr.is_empty()).then_some((stack, addr))
}

/// The spec hash recorded in a marker, if any.
pub fn marker_hash(s: &str) -> Option<&str> {
    s.strip_prefix("virtform:")?.split_once(";h=").map(|(_, h)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        let m = marker("demo", "network.lan");
        assert_eq!(parse_marker(&m), Some(("demo", "network.lan")));
        assert_eq!(parse_marker("virtform:demo:port.p[\"a:b\"]"), Some(("demo", "port.p[\"a:b\"]")));
        assert_eq!(parse_marker("something else"), None);
        assert_eq!(parse_marker("virtform::x"), None);
        let h = marker_with_hash("demo", "network.lan", "abc123");
        assert_eq!(parse_marker(&h), Some(("demo", "network.lan")));
        assert_eq!(marker_hash(&h), Some("abc123"));
        assert_eq!(marker_hash(&m), None);
    }

    #[test]
    fn run_reports_the_program_and_its_error() {
        let e = run("list", "nothing", "/nonexistent/prog", &[], None).unwrap_err();
        assert!(e.message.contains("cannot run /nonexistent/prog"));
        assert_eq!(e.hint.as_deref(), Some("run scripts/host-setup to install it"));
        let e = run("read", "x", "cat", &["/nonexistent/file"], None).unwrap_err();
        assert!(e.message.contains("No such file"), "{}", e.message);
        assert_eq!(run("echo", "x", "cat", &[], Some(b"hi")).unwrap(), "hi");
    }
}
