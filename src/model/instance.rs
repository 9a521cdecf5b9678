//! `instance`: a libvirt domain.
//!
//! Invariants: the domain name is always resolved (given, or `<stack>-<name>[-key]`);
//! every reference in `disks`, `ports` and `volumes` points at a declared
//! resource of the right kind; something bootable is declared (a disk or a kernel).

use super::common::{derived_uuid, Duration, ResourceRef, Size};
use super::network::NetType;
use super::port::Plug;
use super::{check_ref, resolve_path, to_value, Address, Ctx, FieldError, Kind, Spec};
use crate::config::value::Value;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CpuMode {
    HostModel,
    HostPassthrough,
    Maximum,
    Custom,
}

/// `cpu { mode, model }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    /// `host-model`, `host-passthrough`, `maximum` or `custom`.
    pub mode: CpuMode,
    /// CPU model name for mode `custom`, e.g. "qemu64" or "Skylake-Client".
    pub model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Firmware {
    #[default]
    Bios,
    Efi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DomainType {
    /// kvm when /dev/kvm is usable, else qemu (TCG).
    #[default]
    Auto,
    Kvm,
    Qemu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Graphics {
    #[default]
    None,
    Vnc,
    Spice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    #[default]
    Running,
    Shutoff,
}

/// `cloud_init { ... }`: a NoCloud seed (label `cidata`) attached read-only.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudInit {
    /// user-data (e.g. a `#cloud-config` document).
    pub user_data: Option<String>,
    /// meta-data. Default: instance-id and local-hostname.
    pub meta_data: Option<String>,
    /// network-config (version 2). Default: generated from the ports' fixed IPs.
    pub network_config: Option<String>,
    /// SSH public keys for the default user.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
}

/// `wait_for { ... }`: readiness conditions apply waits for.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitFor {
    /// A text that appears on the serial console when the guest is ready, e.g. "login:".
    pub console: Option<String>,
    /// Wait until every port on a nat/isolated network has a DHCP lease.
    #[serde(default)]
    pub lease: bool,
    /// Wait until this TCP port answers on the instance's first fixed IP.
    pub tcp: Option<u16>,
    /// Wait until the QEMU guest agent in the guest answers (needs `guest_agent`, the default).
    #[serde(default)]
    pub agent: bool,
    /// How long to wait (default "300s").
    pub timeout: Option<Duration>,
}

/// A libvirt domain.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// libvirt domain name. Default: `<stack>-<name>` (`-<index>` or `-<key>` under count/for_each).
    pub name: Option<String>,
    /// Virtual CPUs (default 1).
    #[serde(default = "one")]
    pub vcpus: u32,
    /// Memory (default "512M").
    #[serde(default = "default_memory")]
    pub memory: Size,
    /// CPU mode and model.
    pub cpu: Option<Cpu>,
    /// Machine type (default "pc").
    pub machine: Option<String>,
    /// `bios` (default) or `efi`.
    #[serde(default)]
    pub firmware: Firmware,
    /// `auto` (default: kvm when usable, else qemu), `kvm` or `qemu`.
    #[serde(default)]
    pub domain_type: DomainType,
    /// Disks in boot order (`disk.NAME`): the first one boots; virtio disks become vda, vdb, …
    #[serde(default)]
    pub disks: Vec<ResourceRef>,
    /// NICs (`port.NAME`) in order.
    #[serde(default)]
    pub ports: Vec<ResourceRef>,
    /// Persistent volumes (`volume.NAME`), attached live.
    #[serde(default)]
    pub volumes: Vec<ResourceRef>,
    /// Kernel for direct kernel boot (path).
    pub kernel: Option<String>,
    /// Initrd for direct kernel boot (path).
    pub initrd: Option<String>,
    /// Kernel command line for direct kernel boot.
    pub cmdline: Option<String>,
    /// cloud-init NoCloud seed.
    pub cloud_init: Option<CloudInit>,
    /// `none` (default), `vnc` or `spice`.
    #[serde(default)]
    pub graphics: Graphics,
    /// Start the domain with libvirtd (default false).
    #[serde(default)]
    pub autostart: bool,
    /// `running` (default) or `shutoff`.
    #[serde(default)]
    pub state: State,
    /// Readiness conditions apply waits for.
    pub wait_for: Option<WaitFor>,
    /// Give the guest the QEMU guest agent's channel (`org.qemu.guest_agent.0`; default true):
    /// graceful shutdown through the agent, `wait_for { agent = true }` and the `addresses`
    /// attribute. The guest needs qemu-guest-agent installed for any of them.
    #[serde(default = "yes")]
    pub guest_agent: bool,
}

/// Where an instance's serial console is logged: `<state_dir>/<stack>/console/<name>[@key].log`.
pub fn console_log_path(state_dir: &std::path::Path, stack: &str, addr: &Address) -> std::path::PathBuf {
    state_dir.join(stack).join("console").join(format!("{}.log", addr.file_stem()))
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

fn default_memory() -> Size {
    Size(512 << 20)
}

impl Instance {
    pub fn domain_name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    pub fn resolve(&mut self, addr: &Address, ctx: &Ctx<'_>) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        match &self.name {
            None => self.name = Some(format!("{}-{}", ctx.stack, addr.dashed())),
            Some(n) => {
                if n.is_empty() || n.len() > 64 || n.starts_with('.') || n.chars().any(|c| c == '/' || c.is_control() || c.is_whitespace()) {
                    errs.push(FieldError::new("name", format!("\"{n}\" is not a valid domain name")).label("expected 1 to 64 characters without '/', spaces, and not starting with '.'"));
                }
            }
        }
        if !(1..=256).contains(&self.vcpus) {
            errs.push(FieldError::new("vcpus", format!("{} vCPUs is out of range", self.vcpus)).label("expected 1 to 256"));
        }
        if self.memory.0 < 16 << 20 {
            errs.push(FieldError::new("memory", format!("memory {} is too small", self.memory)).label("expected at least 16M"));
        } else if !self.memory.0.is_multiple_of(1024) {
            errs.push(FieldError::new("memory", format!("memory {} bytes is not a whole number of KiB", self.memory.0)));
        }
        if let Some(cpu) = &self.cpu {
            match (cpu.mode, &cpu.model) {
                (CpuMode::Custom, None) => errs.push(FieldError::new("cpu.mode", "cpu mode \"custom\" needs `model`").label("e.g. model = \"qemu64\"")),
                (m, Some(_)) if m != CpuMode::Custom => errs.push(FieldError::new("cpu.model", "`model` applies only to cpu mode \"custom\"")),
                (_, Some(model)) if model.is_empty() || !model.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) => {
                    errs.push(FieldError::new("cpu.model", format!("{model:?} is not a CPU model name")).label("e.g. \"qemu64\" or \"Skylake-Client\""))
                }
                _ => {}
            }
        }
        if let Some(m) = &self.machine
            && (m.is_empty() || !m.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))) {
                errs.push(FieldError::new("machine", format!("\"{m}\" is not a machine type")).label("e.g. \"pc\" or \"q35\""));
            }
        for (field, refs, kind) in [("disks", &self.disks, Kind::Disk), ("ports", &self.ports, Kind::Port), ("volumes", &self.volumes, Kind::Volume)] {
            for (i, r) in refs.iter().enumerate() {
                let path = format!("{field}[{i}]");
                if let Err(e) = check_ref(&path, r, kind, ctx) {
                    errs.push(e);
                } else if refs[..i].contains(r) {
                    errs.push(FieldError::new(path, format!("{r} is listed twice in `{field}`")));
                }
            }
        }
        if self.disks.is_empty() && self.kernel.is_none() {
            errs.push(FieldError::new("", "nothing to boot: add a disk to `disks` or a `kernel`"));
        }
        if self.kernel.is_none() {
            for f in ["initrd", "cmdline"] {
                let set = if f == "initrd" { self.initrd.is_some() } else { self.cmdline.is_some() };
                if set {
                    errs.push(FieldError::new(f, format!("`{f}` needs `kernel` (direct kernel boot)")));
                }
            }
        }
        // Control characters (XML cannot carry most of them) are refused here
        // rather than rewritten on the way to libvirt; a command line may hold
        // the whitespace ones (a heredoc's newline), which the kernel reads as
        // spaces.
        for (f, v) in [("kernel", &self.kernel), ("initrd", &self.initrd), ("cmdline", &self.cmdline)] {
            let bad = |c: &char| c.is_control() && !(f == "cmdline" && matches!(c, '\t' | '\n' | '\r'));
            if let Some(c) = v.as_deref().and_then(|v| v.chars().find(bad)) {
                errs.push(FieldError::new(f, format!("`{f}` contains the control character {c:?}; remove it")));
            }
        }
        for p in [&mut self.kernel, &mut self.initrd].into_iter().flatten() {
            *p = resolve_path(ctx, p);
        }
        if let Some(w) = &self.wait_for {
            if w.console.is_none() && !w.lease && w.tcp.is_none() && !w.agent {
                errs.push(FieldError::new("wait_for", "`wait_for` needs at least one of `console`, `lease`, `tcp` or `agent`"));
            }
            if w.agent && !self.guest_agent {
                errs.push(FieldError::new("wait_for.agent", "`agent = true` waits for the guest agent, but this instance has `guest_agent = false` (no agent channel)").label("set `guest_agent = true` (the default) or remove `agent`"));
            }
            if w.console.as_deref() == Some("") {
                errs.push(FieldError::new("wait_for.console", "the console pattern must not be empty"));
            }
            if w.tcp == Some(0) {
                errs.push(FieldError::new("wait_for.tcp", "TCP port 0 cannot be waited for").label("expected 1 to 65535"));
            }
            let ports: Vec<_> = self.ports.iter().filter_map(|r| match ctx.get(r).map(|x| &x.spec) {
                Some(Spec::Port(p)) => Some(p),
                _ => None,
            }).collect();
            if w.lease {
                let on_libvirt = ports.iter().any(|p| p.plug == Some(Plug::Network));
                if !on_libvirt {
                    errs.push(FieldError::new("wait_for.lease", "`lease` needs a port on a nat or isolated network (virtform reads leases from libvirt's DHCP)"));
                }
            }
            if w.tcp.is_some() && !ports.iter().any(|p| p.ip.is_some() || p.plug == Some(Plug::Network)) {
                errs.push(FieldError::new("wait_for.tcp", "`tcp` needs a port with a fixed `ip`, or one on a nat or isolated network (its DHCP lease), to connect to"));
            }
        }
        let _ = NetType::Bridge;
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    pub fn console_log(&self, addr: &Address, ctx: &Ctx<'_>) -> String {
        console_log_path(ctx.state_dir, ctx.stack, addr).to_string_lossy().into_owned()
    }

    pub fn exports(&self, addr: &Address, ctx: &Ctx<'_>) -> Value {
        to_value(
            self,
            [
                ("uuid", Value::String(derived_uuid(&ctx.seed(addr)))),
                ("console_log", Value::String(self.console_log(addr, ctx))),
                ("memory", Value::Number(self.memory.0 as f64)),
                // A host fact: what the guest agent reports, filled in only
                // where outputs read it (`LoadOptions::agent_addresses`).
                ("addresses", if self.guest_agent { Value::Unknown } else { Value::List(Vec::new()) }),
            ],
        )
    }
}
