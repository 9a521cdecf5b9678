//! `host`: a hypervisor virtform reaches over SSH (or the local one), and on
//! which the resources that name it (or are inferred to belong to it) live.
//!
//! Invariants: a remote host (`qemu+ssh://`) always has a private key and a
//! known_hosts file: nothing is trusted on first use; its `tunnel_ip` is
//! known (given, or the URI's host when that is an address); its state dir
//! is absolute. The private key is a [`Secret`] (never printed, never in a
//! plan file). Without `host` blocks nothing here is used: everything lives
//! on the local host, as before.

use super::common::{Ip, Secret};
use super::{resolve_path, to_value, Address, Ctx, FieldError};
use crate::config::value::Value;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The state dir on a host when its block names none.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/virtform";

/// A hypervisor.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// libvirt URI of the host: `qemu+ssh://[user@]address[:port]/system` (every host command and the libvirt connection go over one SSH connection), or `qemu:///system` for this machine.
    pub uri: String,
    /// The SSH private key (OpenSSH format, e.g. `file("${path.module}/lab/id_ed25519")`). Sensitive: never printed. Required for qemu+ssh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<Secret>,
    /// A known_hosts file holding the host's key (relative to the configuration directory). Required for qemu+ssh: host keys are verified, never trusted on first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
    /// The host's underlay address for overlay networks. Default: the URI's host, when it is an IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_ip: Option<Ip>,
    /// virtform's state dir on that host (disks, seeds, console logs, the image cache, the stack lock). Default: /var/lib/virtform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
}

/// Where a host is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    Local,
    /// `qemu+ssh://`: user, address, port.
    Ssh { user: String, address: String, port: u16 },
}

impl Host {
    pub fn resolve(&mut self, _addr: &Address, ctx: &Ctx<'_>) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        match self.reach() {
            Err(e) => errs.push(FieldError::new("uri", e).label("expected qemu+ssh://[user@]address[:port]/system or qemu:///system")),
            Ok(Reach::Local) => {
                for (set, what) in [(self.private_key.is_some(), "private_key"), (self.known_hosts.is_some(), "known_hosts")] {
                    if set {
                        errs.push(FieldError::new(what, format!("`{what}` is for qemu+ssh hosts; {} is this machine", self.uri)));
                    }
                }
            }
            Ok(Reach::Ssh { address, .. }) => {
                if self.private_key.is_none() {
                    errs.push(
                        FieldError::new("", format!("a qemu+ssh host needs `private_key` (the key virtform logs in with to {address})"))
                            .label("add private_key = file(\"…/id_ed25519\")"),
                    );
                }
                match &self.known_hosts {
                    None => errs.push(
                        FieldError::new("", format!("a qemu+ssh host needs `known_hosts` (a file holding {address}'s host key): virtform never trusts a host key on first use"))
                            .label("add known_hosts = \"…/known_hosts\""),
                    ),
                    Some(k) => self.known_hosts = Some(resolve_path(ctx, k)),
                }
                if self.tunnel_ip.is_none() {
                    self.tunnel_ip = address.parse().ok().map(Ip);
                }
            }
        }
        if let Some(k) = &self.private_key {
            match super::ssh_key::parse_private_key(k.expose()) {
                Ok(info) if info.encrypted => errs.push(FieldError::new("private_key", "the private key is encrypted (has a passphrase): virtform logs in to hosts unattended; use a key without one")),
                Ok(_) => {}
                Err(e) => errs.push(FieldError::new("private_key", e).label("expected an OpenSSH private key, e.g. file(\"${path.module}/lab/id_ed25519\")")),
            }
        }
        match &self.state_dir {
            Some(d) if !d.starts_with('/') || d.split('/').any(|c| c == "..") => {
                errs.push(FieldError::new("state_dir", format!("{d:?} must be an absolute path without `..`")));
            }
            _ => {}
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// How the URI reaches the host.
    pub fn reach(&self) -> Result<Reach, String> {
        if self.uri == "qemu:///system" {
            return Ok(Reach::Local);
        }
        let t = crate::host::exec::SshTarget::from_libvirt_uri("host", &self.uri, "", "")?;
        Ok(Reach::Ssh { user: t.user, address: t.address, port: t.port })
    }

    pub fn is_local(&self) -> bool {
        matches!(self.reach(), Ok(Reach::Local))
    }

    pub fn state_dir(&self) -> &str {
        self.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR)
    }

    pub fn exports(&self, addr: &Address, _ctx: &Ctx<'_>) -> Value {
        to_value(
            self,
            [
                ("name", Value::String(addr.name.clone())),
                ("tunnel_ip", self.tunnel_ip.map(|i| Value::String(i.to_string())).unwrap_or(Value::Null)),
                ("state_dir", Value::String(self.state_dir().to_string())),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(uri: &str) -> Host {
        Host { uri: uri.into(), private_key: None, known_hosts: None, tunnel_ip: None, state_dir: None }
    }

    #[test]
    fn the_uri_says_how_the_host_is_reached() {
        assert_eq!(host("qemu:///system").reach(), Ok(Reach::Local));
        assert_eq!(
            host("qemu+ssh://root@10.99.0.11/system").reach(),
            Ok(Reach::Ssh { user: "root".into(), address: "10.99.0.11".into(), port: 22 })
        );
        assert_eq!(host("qemu+ssh://ops@[fd00::1]:2222/system").reach(), Ok(Reach::Ssh { user: "ops".into(), address: "fd00::1".into(), port: 2222 }));
        for bad in ["qemu+tcp://10.0.0.1/system", "qemu+ssh://10.0.0.1/session", "qemu+ssh:///system", "qemu:///session", "xen:///"] {
            assert!(host(bad).reach().is_err(), "{bad}");
        }
    }
}
