//! Lowering a plan into host steps joined in a DAG, and running them.
//!
//! Invariants:
//! - Every step is idempotent and re-checks the host before acting, so a
//!   re-run after a failure or a kill converges.
//! - Creates follow the configuration's dependencies (image → disk →
//!   instance, network → instance); removals run in reverse (an instance is
//!   gone before its disk file or its bridge is removed).
//! - Only objects the plan names are touched; conflicts never reach here
//!   (`apply` refuses a plan with conflicts or errors).

use super::dag::{Dag, Step, StepContext, StepError, StepOutcome};
use crate::config::Configuration;
use crate::host::links::{LinkHost, LinkOp};
use crate::host::libvirt::{DomainState, Libvirt};
use crate::host::{disks, marker_with_hash, HostError};
use crate::model::image::ImageFormat;
use crate::model::{Kind, Spec};
use crate::model::network::NetType;
use crate::plan::desired::{libvirt_network_name, DesiredBridge, DesiredHybrid, DesiredOverlay, DesiredOvsBridge, DesiredOvsOverlay, Lowering};
use crate::plan::{Action, Landing, Plan};
use std::collections::BTreeMap;

/// Imported objects by address (`Plan::imported`).
type Imports = BTreeMap<String, crate::observe::imports::Imported>;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shuts a domain down gracefully; says so when it had to be forced off.
/// (`-v` says how it went; a forced stop is a warning, since the guest
/// lost whatever it had not written.)
fn shut_down(env: &Env, name: &str) -> Result<(), StepError> {
    use crate::host::libvirt::ShutdownOutcome as O;
    match env.libvirt.shutdown(name, env.shutdown_timeout).map_err(herr)? {
        O::Graceful(via) => tracing::info!(domain = name, "{name} shut down gracefully through {}", via.as_str()),
        O::Forced => tracing::warn!(
            "domain {name} did not power off within {}s of its shutdown request (guest agent, ACPI power button) and was forced off",
            env.shutdown_timeout.as_secs()
        ),
        O::AlreadyOff => {}
    }
    Ok(())
}

/// Where an instance's SSH host key lives and what it is pinned as.
#[derive(Debug, Clone)]
pub struct SeedHostKey {
    pub dir: crate::host::ssh::SshDir,
    pub stem: String,
    /// The key's comment: `virtform:<stack>:<address>`.
    pub comment: String,
    /// known_hosts patterns: the alias, then the fixed ip if any.
    pub patterns: Vec<String>,
}

/// How a wait logs in to an instance.
#[derive(Debug, Clone)]
pub struct SshConn {
    pub user: String,
    /// The address: fixed, or read from a libvirt network's leases (network, MAC).
    pub ip: Option<String>,
    pub lease_from: Option<(String, String)>,
    pub port: u16,
    pub key: crate::model::common::Secret,
    pub pin: SeedHostKey,
}

/// The guest address a wait connects to: fixed, or the lease of the MAC.
fn guest_ip(libvirt: &dyn Libvirt, ip: &Option<String>, lease_from: &Option<(String, String)>) -> Result<Option<String>, HostError> {
    Ok(match (ip, lease_from) {
        (Some(ip), _) => Some(ip.clone()),
        (None, Some((net, mac))) => libvirt.leases(net)?.into_iter().find(|l| l.mac.eq_ignore_ascii_case(mac)).map(|l| l.ip),
        _ => None,
    })
}

/// How long a remote host gets to answer a probe at least: its sshd's
/// connection to the guest, and the answer's round trip.
const REMOTE_PROBE: Duration = Duration::from_secs(5);

/// One TCP connection attempt from the guest's host (`timeout` at most
/// here, [`REMOTE_PROBE`] at least on a remote host); the error in the
/// OS's or the SSH master's words.
fn probe_tcp(exec: &crate::host::exec::Executor, host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    let ip = host.parse::<std::net::IpAddr>().map_err(|_| format!("address {host:?} is not an IP address"))?;
    exec.probe_tcp(ip, port, if exec.is_local() { timeout } else { timeout.max(REMOTE_PROBE) })
}

impl SshConn {
    /// Runs `argv` in the guest once the address is known: `Ok(None)` while
    /// it is not, or ssh could not log in (`last` says why); a host key other
    /// than the pinned one is an error.
    /// Where to connect, once the guest's address is known (`None` before
    /// its DHCP lease), with its host key pinned in known_hosts (the line
    /// is derived from the key file, and put back if it went).
    pub fn target(&self, libvirt: &dyn Libvirt, name: &str) -> Result<Option<crate::host::ssh::Target>, HostError> {
        let Some(host) = guest_ip(libvirt, &self.ip, &self.lease_from)? else { return Ok(None) };
        match self.pin.dir.read_host_key(&self.pin.stem)? {
            Some(k) => self.pin.dir.pin(&self.pin.stem, &self.pin.patterns, &k.public)?,
            None => {
                let mut e = HostError::new("verify SSH host key", name, format!("virtform has no SSH host key for it ({} is missing), so it cannot verify the guest", self.pin.dir.host_key(&self.pin.stem).display()));
                e.hint = Some("the guest got its host key from a seed virtform wrote; replace the instance to give it a new one: virtform apply --replace ADDRESS".into());
                return Err(e);
            }
        }
        Ok(Some(crate::host::ssh::Target { user: self.user.clone(), host, port: self.port, alias: self.pin.patterns[0].clone(), dir: self.pin.dir.clone(), stem: self.pin.stem.clone() }))
    }

    /// Whether the guest's SSH port accepts a TCP connection (1 s at most):
    /// the cheap probe that gates an `ssh` run, so a booting guest is
    /// polled every half second without spawning a process each time.
    fn port_open(&self, env: &Env, last: &mut String) -> Result<bool, StepError> {
        let Some(host) = guest_ip(env.libvirt.as_ref(), &self.ip, &self.lease_from).map_err(herr)? else {
            *last = "no address yet (no DHCP lease)".into();
            return Ok(false);
        };
        match probe_tcp(&env.exec, &host, self.port, Duration::from_secs(1)) {
            Ok(()) => Ok(true),
            Err(e) => {
                *last = format!("{}@{host}:{}: {e}", self.user, self.port);
                Ok(false)
            }
        }
    }

    fn run(&self, env: &Env, name: &str, argv: &[&str], last: &mut String) -> Result<Option<crate::host::ssh::Output>, StepError> {
        use crate::host::ssh;
        let Some(mut t) = self.target(env.libvirt.as_ref(), name).map_err(herr)? else {
            *last = "no address yet (no DHCP lease)".into();
            return Ok(None);
        };
        let host = t.host.clone();
        // A remote host's guest is reached through its SSH master. (Its
        // address is an IP address: a lease's, or a port's checked `ip`.)
        let _reach = t.through(&env.exec).map_err(herr)?;
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        let out = ssh::exec(&t, &self.key, &argv, Duration::from_secs(30)).map_err(herr)?;
        if out.status.is_some() {
            return Ok(Some(out));
        }
        match ssh::classify(&out.stderr) {
            ssh::Failure::HostKey(m) => Err(StepError::new(format!(
                "{name}: the SSH host key of {host}:{} is not the one virtform gave this instance (pinned as {} in {}): refusing to connect ({m})",
                self.port, t.alias, self.pin.dir.known_hosts().display()
            ))
            .with_hint("another machine answers on that address, or the guest's host keys were changed inside it; if the guest was rebuilt outside virtform, replace it: virtform apply --replace ADDRESS")),
            ssh::Failure::Other(m) => {
                *last = format!("{}@{host}:{}: {m}", self.user, self.port);
                Ok(None)
            }
        }
    }
}

/// What `cloud-init status --long` says: Ok(true) done, Ok(false) still
/// running, Err(lines) failed, with cloud-init's own words.
pub fn cloud_init_status(stdout: &str) -> Result<bool, String> {
    let status = stdout.lines().find_map(|l| l.trim().strip_prefix("status:")).map(str::trim).unwrap_or("");
    match status {
        // "degraded": finished with recoverable errors (warnings, deprecated
        // keys; cloud-init 23.4 and later): done, not failed.
        "done" | "degraded done" => Ok(true),
        "running" | "degraded running" | "not run" | "not started" | "" => Ok(false),
        other => {
            let detail: Vec<&str> = stdout.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).take(25).collect();
            Err(format!("cloud-init reports status {other:?}:\n    {}", detail.join("\n    ")))
        }
    }
}

/// A readiness wait's watch on its domain: a guest that stopped (shut off,
/// crashed, or gone: killed, destroyed by someone else, a failed boot)
/// fails the wait at once, instead of after its whole timeout.
struct StillRunning<'a> {
    env: &'a Env,
    name: &'a str,
    last: Option<Instant>,
}

impl<'a> StillRunning<'a> {
    fn new(env: &'a Env, name: &'a str) -> Self {
        StillRunning { env, name, last: None }
    }

    /// Asks libvirt at most every 2 s; an error reading the state is not a
    /// verdict (the wait's own probe and timeout decide).
    fn check(&mut self, waiting_for: &str) -> Result<(), StepError> {
        if self.last.is_some_and(|t| t.elapsed() < Duration::from_secs(2)) {
            return Ok(());
        }
        self.last = Some(Instant::now());
        let stopped = match self.env.libvirt.domain_state(self.name) {
            Ok(None) => "no longer exists".to_string(),
            Ok(Some(DomainState::Shutoff)) => "is shut off".to_string(),
            Ok(Some(DomainState::Other(s))) if s == "crashed" => "crashed".to_string(),
            _ => return Ok(()),
        };
        Err(StepError::new(format!("{} {stopped} while waiting for {waiting_for}", self.name)).with_hint(format!(
            "something stopped the guest: see its console log (virtform console ADDRESS) and /var/log/libvirt/qemu/{}.log; the next apply starts it again and waits",
            self.name
        )))
    }
}

/// The host adapters steps use.
pub struct Env {
    pub links: Box<dyn LinkHost>,
    pub libvirt: Box<dyn Libvirt>,
    pub ovs: Box<dyn crate::host::ovs::Ovs>,
    /// The host's state dir: disks, volumes, seeds, console logs, UEFI
    /// variable stores and the image cache are there.
    pub state_dir: PathBuf,
    /// Where the host commands and file operations of the steps run (the
    /// local machine, or one host over SSH).
    pub exec: crate::host::exec::Executor,
    /// The stack's records (names, the import registry, pending waits, the
    /// guests' SSH host keys) and the client's image cache: always on this
    /// machine; the same as `state_dir` for the local host.
    pub records: PathBuf,
    /// Files this host needs from this machine (kernels, initrds): the path
    /// on the host → (the local file, its sha256). Copied before the domain
    /// that boots them is defined.
    pub deliveries: BTreeMap<PathBuf, (PathBuf, String)>,
    /// Every host of the run by its address (`None`: this machine): a
    /// migration reaches the host its guest comes from.
    pub peers: BTreeMap<Option<String>, crate::host::exec::Executor>,
    /// What this run's steps on the host already made sure of.
    pub memo: Memo,
    /// Graceful shutdown timeout before a forced stop.
    pub shutdown_timeout: Duration,
    /// How long a live detach waits for the guest to release the device.
    pub detach_timeout: Duration,
}

/// What the steps of one run on one host already made sure of, so later
/// steps do not ask the host again (each question is an SSH round trip on
/// a remote host): directories that exist, boot files delivered, the
/// facts of base images. Only what the run made or read itself, and only
/// what no step of a run removes (steps remove files, never these
/// directories, cached images or boot files another step boots from).
#[derive(Debug, Default)]
pub struct Memo {
    dirs: OnceMap<()>,
    delivered: OnceMap<bool>,
    bases: OnceMap<disks::ImageInfo>,
}

/// Values made once per key: a step that asks while another step makes
/// the value waits for it (ten overlays starting at once inspect their base
/// image once, not ten times). A failure is not kept: the next asker tries
/// again, and says why if it fails too.
#[derive(Debug)]
struct OnceMap<T>(std::sync::Mutex<BTreeMap<PathBuf, Arc<std::sync::Mutex<Option<T>>>>>);

impl<T> Default for OnceMap<T> {
    fn default() -> Self {
        OnceMap(Default::default())
    }
}

impl<T: Clone> OnceMap<T> {
    fn get_or_try(&self, key: &Path, make: impl FnOnce() -> Result<T, HostError>) -> Result<T, HostError> {
        let cell = self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(key.to_path_buf()).or_default().clone();
        let mut value = cell.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = &*value {
            return Ok(v.clone());
        }
        let v = make()?;
        *value = Some(v.clone());
        Ok(v)
    }
}

impl Env {
    /// [`disks::ensure_dir_on`], once per directory and run.
    fn ensure_dir(&self, dir: &Path) -> Result<(), HostError> {
        self.memo.dirs.get_or_try(dir, || disks::ensure_dir_on(&self.exec, dir))
    }

    /// The facts of a base image (a cached image: content-addressed, never changed), read once per run.
    fn base_info(&self, path: &Path) -> Result<disks::ImageInfo, HostError> {
        self.memo.bases.get_or_try(path, || disks::inspect_on(&self.exec, path))
    }

    /// A boot file delivered from this machine (its sha256 checked there),
    /// once per run: two steps booting one kernel copy it once. Whether
    /// this run copied it (false: it was there).
    fn deliver(&self, local: &Path, there: &Path, sha: &str) -> Result<bool, HostError> {
        self.memo.delivered.get_or_try(there, || {
            if let Some(dir) = there.parent() {
                self.ensure_dir(dir)?;
            }
            self.exec.copy_image(local, there, Some(sha), 0o644)
        })
    }
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Op {
    FetchImage { source: String, sha256: Option<String>, format: ImageFormat },
    Links { ops: Vec<LinkOp>, what: String },
    CreateDisk { path: PathBuf, base: Option<PathBuf>, size: Option<u64>, format: crate::model::disk::DiskFormat },
    /// Grow a disk file; through libvirt's block resize when its domain runs
    /// (`domain` = (domain name, target device)), else offline.
    ResizeDisk { path: PathBuf, size: u64, domain: Option<(String, String)> },
    RemoveFile { path: PathBuf },
    /// Define (or redefine). `keep`: attributes under `lifecycle.ignore_changes`,
    /// whose values are taken from the existing definition.
    Define { name: String, def: Box<crate::xml::domain::DomainDef>, console_dir: PathBuf, keep: Vec<String> },
    /// Copy a boot file (kernel, initrd) from this machine to a remote host,
    /// its sha256 checked there; the domains booting it are defined after.
    Deliver { local: PathBuf, there: PathBuf, sha256: String },
    /// Start; `log` is the console log, rotated to `<log>.1` before a fresh boot
    /// so a readiness wait never matches the previous boot's output.
    Start { name: String, log: Option<PathBuf> },
    Stop { name: String },
    /// Shut down (gracefully, forced after the timeout), undefine, and delete the console logs.
    /// `records`: this machine's files of the instance when the host is remote (its pending-wait record).
    Remove { name: String, logs: Vec<PathBuf>, records: Vec<PathBuf>, ssh: crate::host::ssh::SshDir, stem: String },
    Autostart { name: String, on: bool },
    WaitConsole { name: String, log: PathBuf, pattern: String, timeout: Duration },
    /// Mark (before the first wait) or clear (after the last) an instance's
    /// pending waits, so that waits a run did not finish are waited for by
    /// the next one.
    Readiness { path: PathBuf, pending: bool },
    /// Write an instance's cloud-init seed (atomically, 0600) and remove its
    /// stale seeds (other content hashes).
    /// `host_key`: the instance has a `connection`: its SSH host key is
    /// generated (once) into the stack's SSH directory, put in the seed, and
    /// pinned in the stack's known_hosts.
    WriteSeed { path: PathBuf, input: Box<crate::seed::SeedInput>, host_key: Option<SeedHostKey> },
    /// Wait until an SSH login runs `true` (the host key verified).
    WaitSsh { name: String, conn: Box<SshConn>, timeout: Duration },
    /// Wait until cloud-init has finished in the guest; its errors fail the step.
    WaitCloudInit { name: String, conn: Box<SshConn>, timeout: Duration },
    /// Define (or redefine) a libvirt network, restart it when `restart`
    /// (re-enslaving the running guests' taps to its new bridge), start it,
    /// set autostart, and bring the live DHCP host entries in line.
    /// `keep_definition`: an imported network whose changes are all live
    /// (autostart, state, DHCP hosts) is not redefined: its definition may
    /// hold what virtform does not manage (a MAC, DNS, NAT ports…).
    LibvirtNetwork { name: String, xml: String, restart: bool, bridge: String, taps: Vec<String>, hosts_add: Vec<String>, hosts_remove: Vec<String>, create: bool, keep_definition: bool },
    RemoveLibvirtNetwork { name: String },
    /// Create or repair an OVS bridge, then its internal port's MTU, address and state.
    /// `adopt`: the plan imports the bridge, which carries no marker yet.
    OvsNetwork { want: crate::plan::desired::DesiredOvsBridge, marker: String, address: Option<crate::model::common::IpCidr>, create: bool, adopt: bool },
    RemoveOvsBridge { name: String },
    /// Create or repair an overlay network on this host (its bridge, VXLAN
    /// device and peers), from the links as they are when the step runs.
    /// `from`: the address a moved overlay's links are marked for now.
    Overlay { want: crate::plan::desired::DesiredOverlay, marker: String, create: bool, from: Option<String> },
    /// Create or repair an overlay with the `ovs` backend on this host (its
    /// Open vSwitch bridge and VXLAN ports), from OVS as it is when the
    /// step runs, in one transaction. `from`: as for `Overlay`.
    OvsOverlay { want: crate::plan::desired::DesiredOvsOverlay, marker: String, create: bool, from: Option<String> },
    /// Migrate a running domain live from the host `from` (`None`: this
    /// machine) to this one: the kernel and initrd delivered and the console
    /// directory made first (as for a define), then libvirt's migration
    /// with the disks' top layers copied into the files prepared here.
    /// Done already when the domain runs here and is gone there.
    Migrate { name: String, def: Box<crate::xml::domain::DomainDef>, console_dir: PathBuf, from: Option<String> },
    /// Remove an overlay's VXLAN device and bridge from this host (those
    /// that are there and carry its marker).
    RemoveOverlay { stack: String, bridge: Option<String>, vxlan: Option<String> },
    /// An import's or a move's marker alone: the domain's `<metadata>`
    /// element set in place (no redefine, no restart).
    MarkDomain { name: String, element: String },
    /// An import's marker alone on an Open vSwitch bridge (`external_ids:virtform`).
    MarkOvsBridge { name: String, marker: String },
    /// Records an imported libvirt network or file in the stack's registry
    /// (`<state>/<stack>/imports.json`), before anything uses it. The object
    /// is checked again first: the network still has the UUID, the file is
    /// still a regular file (the inode the plan saw, when `expect`); a file's
    /// device and inode are recorded as they are now.
    Register { stack: String, entry: crate::observe::imports::Imported, expect: Option<(u64, u64)> },
    /// Removes an address from the registry, after its object was removed.
    Unregister { stack: String },
    /// A moved (or, with an empty marker, forgotten) Open vSwitch bridge's
    /// marker, rewritten in place; `from`: the address it must carry now.
    RemarkOvsBridge { name: String, marker: String, from: String },
    /// A forgotten domain: virtform's `<metadata>` element removed in place
    /// (persistent config and live guest); the guest keeps running.
    UnmarkDomain { name: String },
    /// The stack's record of moved and forgotten objects
    /// (`<state>/<stack>/names.json`), written before any marker changes.
    WriteNames { stack: String, names: crate::observe::Names },
    /// Nova's hybrid plug of one port (Linux side, then OVS side), repairing partial state.
    HybridPlug { want: crate::plan::desired::DesiredHybrid, marker: String },
    /// Reverse of the hybrid plug: delete qbr, del-port qvo, delete the veth.
    HybridUnplug { qbr: String, qvb: String, qvo: String },
    /// Attach a device to the running guest and its persistent config.
    Attach { name: String, xml: String, what: String },
    /// Detach a NIC (by MAC) or disk (by target) from the config and the
    /// running guest, waiting until it is gone from the live XML.
    Detach { name: String, nic_mac: Option<String>, disk_target: Option<String>, what: String },
    /// Wait until the network's DHCP server leased an address to this MAC.
    WaitLease { name: String, network: String, mac: String, timeout: Duration },
    /// Wait until the guest's QEMU guest agent answers (its interface list).
    WaitAgent { name: String, timeout: Duration },
    /// Wait until the guest accepts TCP connections on `ip:port` (the IP is
    /// taken from the lease of `lease_from` = (network, MAC) when None).
    WaitTcp { name: String, ip: Option<String>, lease_from: Option<(String, String)>, port: u16, timeout: Duration },
}

/// The step that converges an overlay on this host, by its backend; `None`
/// where it has no tunnel here.
fn overlay_op(n: &crate::model::network::Network, stack: &str, addr: &str, create: bool, from: Option<String>) -> Option<Op> {
    if let Some(want) = DesiredOvsOverlay::from_network(n) {
        let marker = marker_with_hash(stack, addr, &want.hash());
        return Some(Op::OvsOverlay { want, marker, create, from });
    }
    let want = DesiredOverlay::from_network(n)?;
    let marker = marker_with_hash(stack, addr, &want.hash());
    Some(Op::Overlay { want, marker, create, from })
}

/// One step of an apply.
pub struct HostStep {
    pub address: String,
    pub op: Op,
    pub env: Arc<Env>,
}

fn herr(e: HostError) -> StepError {
    let hint = e.hint.clone();
    let s = StepError::new(format!("{} {}: {}", e.op, e.object, e.message));
    match hint {
        Some(h) => s.with_hint(h),
        None => s,
    }
}

impl Op {
    /// Whether the op removes a host object (a file, a link, a bridge, a
    /// network, a domain).
    pub fn is_removal(&self) -> bool {
        match self {
            Op::RemoveFile { .. } | Op::Remove { .. } | Op::RemoveOverlay { .. } | Op::RemoveOvsBridge { .. } | Op::RemoveLibvirtNetwork { .. } | Op::HybridUnplug { .. } => true,
            Op::Links { ops, .. } => ops.iter().any(|o| matches!(o, LinkOp::Delete { .. })),
            _ => false,
        }
    }
}

impl HostStep {
    /// What the step does, without its host.
    fn describe_op(&self) -> String {
        match &self.op {
            Op::FetchImage { source, .. } => format!("fetch image {source}"),
            Op::Links { what, .. } => what.clone(),
            Op::Overlay { want, create: true, .. } => format!("create overlay bridge {} with tunnel {} (VNI {})", want.bridge.name, want.vxlan, want.vni),
            Op::Overlay { want, .. } => format!("configure overlay bridge {} and tunnel {}", want.bridge.name, want.vxlan),
            Op::OvsOverlay { want, create, .. } => {
                let peers: Vec<String> = want.tunnels.iter().map(|(_, p)| p.to_string()).collect();
                let to = if peers.is_empty() { "no other host".to_string() } else { peers.join(", ") };
                format!("{} overlay Open vSwitch bridge {} with VXLAN ports to {to} (VNI {})", if *create { "create" } else { "configure" }, want.bridge, want.vni)
            }
            Op::RemoveOverlay { bridge, vxlan, .. } => format!("delete overlay {}", [vxlan, bridge].into_iter().flatten().cloned().collect::<Vec<_>>().join(" and ")),
            Op::CreateDisk { path, base: Some(_), .. } => format!("create overlay {}", path.display()),
            Op::CreateDisk { path, .. } => format!("create disk {}", path.display()),
            Op::ResizeDisk { path, size, .. } => format!("grow {} to {}", path.display(), crate::model::common::Size(*size)),
            Op::RemoveFile { path } => format!("remove {}", path.display()),
            Op::Define { name, .. } => format!("define domain {name}"),
            Op::Deliver { there, .. } => format!("deliver boot file {}", there.display()),
            Op::Migrate { name, from, .. } => format!("migrate domain {name} live from {}", from.as_deref().unwrap_or("this machine")),
            Op::Start { name, .. } => format!("start domain {name}"),
            Op::Stop { name } => format!("shut down domain {name}"),
            Op::Remove { name, .. } => format!("remove domain {name}"),
            Op::Autostart { name, on } => format!("set autostart of {name} to {on}"),
            Op::WaitConsole { name, pattern, .. } => format!("wait for {pattern:?} on the console of {name}"),
            Op::WriteSeed { path, .. } => format!("write cloud-init seed {}", path.display()),
            Op::Readiness { path, pending: true } => format!("record pending waits ({})", path.display()),
            Op::Readiness { path, pending: false } => format!("record readiness ({})", path.display()),
            Op::WaitSsh { name, conn, .. } => format!("wait for an SSH login as {} to {name}", conn.user),
            Op::WaitCloudInit { name, .. } => format!("wait for cloud-init to finish in {name}"),
            Op::LibvirtNetwork { name, create: true, .. } => format!("create libvirt network {name}"),
            Op::LibvirtNetwork { name, restart: true, .. } => format!("redefine and restart libvirt network {name}"),
            Op::LibvirtNetwork { name, .. } => format!("update libvirt network {name}"),
            Op::RemoveLibvirtNetwork { name } => format!("remove libvirt network {name}"),
            Op::OvsNetwork { want, create: true, .. } => format!("create Open vSwitch bridge {}", want.name),
            Op::OvsNetwork { want, .. } => format!("configure Open vSwitch bridge {}", want.name),
            Op::RemoveOvsBridge { name } => format!("delete Open vSwitch bridge {name}"),
            Op::MarkDomain { name, .. } => format!("write virtform's marker into domain {name} in place (import or move)"),
            Op::MarkOvsBridge { name, .. } => format!("mark Open vSwitch bridge {name} as imported"),
            Op::Register { entry, .. } => format!("record {} as imported ({})", entry.describe(), crate::observe::imports::FILE),
            Op::Unregister { .. } => format!("forget {} in {}", self.address, crate::observe::imports::FILE),
            Op::RemarkOvsBridge { name, marker, .. } if marker.is_empty() => format!("remove the marker of Open vSwitch bridge {name}"),
            Op::RemarkOvsBridge { name, .. } => format!("rewrite the marker of Open vSwitch bridge {name}"),
            Op::UnmarkDomain { name } => format!("remove virtform's metadata from domain {name}"),
            Op::WriteNames { stack, .. } => format!("record moved and forgotten objects of stack {stack}"),
            Op::HybridPlug { want, .. } => format!("plug {} ({} / {} / {} on {})", want.tap, want.qbr, want.qvb, want.qvo, want.bridge),
            Op::HybridUnplug { qbr, qvo, .. } => format!("unplug {qbr} / {qvo}"),
            Op::Attach { name, what, .. } => format!("attach {what} to {name}"),
            Op::Detach { name, what, .. } => format!("detach {what} from {name}"),
            Op::WaitLease { name, mac, network, .. } => format!("wait for a DHCP lease of {name} ({mac}) on {network}"),
            Op::WaitTcp { name, port, .. } => format!("wait for TCP port {port} of {name}"),
            Op::WaitAgent { name, .. } => format!("wait for the guest agent of {name}"),
        }
    }
}

impl Step for HostStep {
    /// On a remote host the step names it: "define domain t-web on host.a"
    /// (not a step that writes this machine's records: the readiness
    /// marks, the record of moves).
    fn describe(&self) -> String {
        let d = self.describe_op();
        let here = self.env.exec.is_local() || matches!(self.op, Op::Readiness { .. } | Op::WriteNames { .. });
        if here { d } else { format!("{d} on {}", self.env.exec.host_name()) }
    }

    fn address(&self) -> &str {
        &self.address
    }

    fn is_wait(&self) -> bool {
        matches!(self.op, Op::WaitConsole { .. } | Op::WaitLease { .. } | Op::WaitTcp { .. } | Op::WaitAgent { .. } | Op::WaitSsh { .. } | Op::WaitCloudInit { .. })
    }

    /// One pool per host: the steps sharing an `Env` are one host's.
    fn pool(&self) -> usize {
        Arc::as_ptr(&self.env) as usize
    }

    fn run(&self, cx: &StepContext) -> Result<StepOutcome, StepError> {
        let env = &self.env;
        match &self.op {
            Op::FetchImage { source, sha256, format } => {
                // Into this machine's cache; a remote host gets a copy from
                // there, its sha256 checked on the host before the rename.
                let c = disks::fetch_image(&env.records.join("images"), source, sha256.as_deref(), *format).map_err(herr)?;
                if env.exec.is_local() {
                    return Ok(if c.fetched { StepOutcome::Done } else { StepOutcome::AlreadyDone });
                }
                let name = c.path.file_name().unwrap_or_default();
                let dst = env.state_dir.join("images").join(name);
                env.ensure_dir(&env.state_dir.join("images")).map_err(herr)?;
                let copied = env.exec.copy_image(&c.path, &dst, Some(&c.sha256), 0o644).map_err(herr)?;
                Ok(if copied || c.fetched { StepOutcome::Done } else { StepOutcome::AlreadyDone })
            }
            Op::Links { ops, .. } => {
                env.links.apply(ops).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::Overlay { want, marker, from, .. } => {
                let links = env.links.list().map_err(herr)?;
                let stack = crate::host::parse_marker(marker).map(|(s, _)| s).unwrap_or_default();
                let ops = super::overlay::ops(&links, want, marker, stack, &self.address, from.as_deref()).map_err(|m| StepError::new(m).with_hint("plan again"))?;
                env.links.apply(&ops).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::OvsOverlay { want, marker, from, .. } => {
                let state = env.ovs.state().map_err(herr)?;
                let stack = crate::host::parse_marker(marker).map(|(s, _)| s).unwrap_or_default();
                let ops = super::overlay::ovs_ops(&state, want, marker, stack, &self.address, from.as_deref()).map_err(|m| StepError::new(m).with_hint("plan again"))?;
                if ops.is_empty() {
                    return Ok(StepOutcome::AlreadyDone);
                }
                env.ovs.apply(&ops).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::RemoveOverlay { stack, bridge, vxlan } => {
                let links = env.links.list().map_err(herr)?;
                let ops = super::overlay::remove_ops(&links, bridge.as_deref(), vxlan.as_deref(), stack, &self.address).map_err(|m| StepError::new(m).with_hint("plan again"))?;
                if ops.is_empty() {
                    return Ok(StepOutcome::AlreadyDone);
                }
                env.links.apply(&ops).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::CreateDisk { path, base, size, format } => {
                let x = &env.exec;
                // On a remote host an overlay is first made in one round
                // trip that never replaces a file (the common case: a disk
                // the plan found missing). Only when that fails is the path
                // inspected: done already, a stale file, or an error to say.
                if let (Some(b), false) = (base, x.is_local()) {
                    if let Some(parent) = path.parent() {
                        env.ensure_dir(parent).map_err(herr)?;
                    }
                    let base_info = env.base_info(b).map_err(herr)?;
                    let size = size.filter(|s| *s > base_info.virtual_size);
                    match disks::create_overlay_fresh_on(x, path, b, &base_info, size) {
                        Ok(()) => return Ok(StepOutcome::Done),
                        Err(e) => tracing::debug!(path = %path.display(), "the overlay's one-trip creation failed ({e}); inspecting"),
                    }
                }
                let absent = match disks::inspect_on(x, path) {
                    Ok(info) => {
                        if info.backing_file.as_deref() == base.as_ref().and_then(|b| b.to_str()) && size.is_none_or(|s| info.virtual_size >= s) {
                            return Ok(StepOutcome::AlreadyDone);
                        }
                        // A stale file from an interrupted or replaced disk.
                        disks::remove_on(x, path).map_err(herr)?;
                        true
                    }
                    Err(e) => e.message == "does not exist",
                };
                if let Some(parent) = path.parent() {
                    env.ensure_dir(parent).map_err(herr)?;
                }
                match base {
                    Some(b) => {
                        let base_info = env.base_info(b).map_err(herr)?;
                        let size = size.filter(|s| *s > base_info.virtual_size);
                        if absent {
                            // Not there (inspected above), and its directory is.
                            disks::create_overlay_fresh_on(x, path, b, &base_info, size).map_err(herr)?
                        } else {
                            // Something unreadable holds the path: the careful way says what.
                            disks::create_overlay_on(x, path, b, base_info.format, size).map_err(herr)?
                        }
                    }
                    None => disks::create_blank_on(x, path, *format, size.unwrap_or(1 << 30)).map_err(herr)?,
                }
                Ok(StepOutcome::Done)
            }
            Op::ResizeDisk { path, size, domain } => {
                let info = disks::inspect_on(&env.exec, path).map_err(herr)?;
                if info.virtual_size >= *size {
                    return Ok(StepOutcome::AlreadyDone);
                }
                if let Some((name, target)) = domain
                    && env.libvirt.domain(name).map_err(herr)?.is_some_and(|d| d.is_active())
                {
                    // qemu holds the image locked: grow it through the running guest.
                    env.libvirt.block_resize(name, target, *size).map_err(herr)?;
                } else {
                    disks::resize_on(&env.exec, path, *size).map_err(herr)?;
                }
                Ok(StepOutcome::Done)
            }
            Op::Deliver { local, there, sha256 } => Ok(if env.deliver(local, there, sha256).map_err(herr)? { StepOutcome::Done } else { StepOutcome::AlreadyDone }),
            Op::RemoveFile { path } => {
                if env.exec.stat(path).map_err(herr)?.is_none() {
                    return Ok(StepOutcome::AlreadyDone);
                }
                disks::remove_on(&env.exec, path).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::Migrate { name, def, console_dir, from } => {
                let here = env.libvirt.domain(name).map_err(herr)?;
                let Some(source) = env.peers.get(from) else {
                    return Err(StepError::new(format!("no connection to {}, where {name} runs", from.as_deref().unwrap_or("this machine"))).with_hint("plan again"));
                };
                let src = crate::host::libvirt::VirtLibvirt::open_on(source, "qemu:///system").map_err(herr)?;
                let there = src.domain(name).map_err(herr)?;
                match (&here, &there) {
                    (Some(h), None) if h.is_active() => return Ok(StepOutcome::AlreadyDone),
                    (_, None) => return Err(StepError::new(format!("domain {name} is no longer on {}", from.as_deref().unwrap_or("this machine"))).with_hint("plan again")),
                    (Some(_), Some(_)) => {
                        return Err(StepError::new(format!("domain {name} is on both hosts; not migrating over the one here")).with_hint("plan again: the plan says which one is this stack's"))
                    }
                    (None, Some(_)) => {}
                }
                prepare_domain_files(env, def, console_dir)?;
                let dst = crate::host::libvirt::VirtLibvirt::open_on(&env.exec, "qemu:///system").map_err(herr)?;
                src.migrate_live(name, &dst).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::Define { name, def, console_dir, keep } => {
                prepare_domain_files(env, def, console_dir)?;
                let mut def = (**def).clone();
                if let Some(current) = env.libvirt.domain(name).map_err(herr)?.and_then(|d| d.observed) {
                    // An existing domain keeps its UUID: libvirt refuses to
                    // redefine a name with another one, and an imported
                    // domain's was not derived by virtform.
                    if let Some(u) = &current.uuid {
                        def.uuid = u.clone();
                    }
                    if !keep.is_empty() {
                        keep_ignored(&mut def, &current, keep);
                    }
                }
                env.libvirt.define(&crate::xml::domain::domain_xml(&def)).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::Start { name, log } => {
                let running = env.libvirt.domain(name).map_err(herr)?.is_some_and(|d| d.is_active());
                if running {
                    return Ok(StepOutcome::AlreadyDone);
                }
                if let Some(log) = log {
                    if env.exec.is_local() {
                        if log.exists() {
                            let old = log.with_extension("log.1");
                            std::fs::rename(log, &old).map_err(|e| StepError::new(format!("cannot rotate the console log {}: {e}", log.display())))?;
                        }
                    } else if env.exec.stat(log).map_err(herr)?.is_some() {
                        env.exec.rename(log, &log.with_extension("log.1")).map_err(herr)?;
                    }
                }
                env.libvirt.start(name).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::Stop { name } => {
                shut_down(env, name)?;
                Ok(StepOutcome::Done)
            }
            Op::Remove { name, logs, records, ssh, stem } => {
                shut_down(env, name)?;
                ssh.forget(stem).map_err(herr)?;
                // Files first, the domain last: a kill in between leaves the
                // domain, which the next plan still removes (with its files).
                for l in logs {
                    disks::remove_on(&env.exec, l).map_err(herr)?;
                }
                for l in records {
                    disks::remove(l).map_err(herr)?;
                }
                env.libvirt.undefine(name).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::Autostart { name, on } => {
                env.libvirt.set_autostart(name, *on).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::Readiness { path, pending } => {
                if *pending {
                    if let Some(dir) = path.parent() {
                        disks::ensure_dir(dir).map_err(herr)?;
                    }
                    use std::os::unix::fs::OpenOptionsExt;
                    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(|e| StepError::new(format!("cannot write {}: {e}", path.display())))?;
                } else {
                    match std::fs::remove_file(path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(StepError::new(format!("cannot remove {}: {e}", path.display()))),
                        _ => {}
                    }
                }
                Ok(StepOutcome::Done)
            }
            Op::WaitConsole { name, log, pattern, timeout } => {
                let start = Instant::now();
                let mut running = StillRunning::new(env, name);
                loop {
                    // A remote host that no longer answers fails the wait at
                    // once (its connection is gone): it is not "not ready yet".
                    let text = if env.exec.is_local() {
                        std::fs::read(log).ok()
                    } else {
                        env.exec.read_opt(log).map_err(|e| herr(e).with_hint(format!("{} stopped answering while {name} was waited for; when it is back, `virtform apply` waits again", env.exec.host_name())))?
                    };
                    if let Some(text) = text
                        && String::from_utf8_lossy(&text).contains(pattern.as_str()) {
                            return Ok(StepOutcome::Done);
                        }
                    running.check(&format!("{pattern:?} on its console"))?;
                    if start.elapsed() > *timeout {
                        return Err(StepError::new(format!(
                            "{name} is not ready: {pattern:?} did not appear on its console within {}s",
                            timeout.as_secs()
                        ))
                        .with_hint(format!("see the console log {}", log.display())));
                    }
                    cx.sleep(Duration::from_millis(250))?;
                }
            }

            Op::WriteSeed { path, input, host_key } => {
                let dir = path.parent().unwrap_or(Path::new("/"));
                let x = &env.exec;
                // qemu (libvirt-qemu) must traverse the directory, not list it.
                if x.is_local() {
                    disks::ensure_dir(dir).map_err(herr)?;
                    let _ = std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711));
                } else {
                    x.mkdir_all(dir, 0o711).map_err(herr)?;
                }
                let existed = x.stat(path).map_err(herr)?.is_some();
                let mut input = input.clone();
                if let Some(h) = host_key {
                    let key = h.dir.ensure_host_key(&h.stem, &h.comment).map_err(herr)?;
                    h.dir.pin(&h.stem, &h.patterns, &key.public).map_err(herr)?;
                    input.ssh_host_key = Some(key);
                }
                crate::seed::write_seed_on(x, path, &input).map_err(|e| StepError::new(e.to_string()))?;
                if x.is_local() {
                    remove_stale_seeds(path);
                }
                Ok(if existed { StepOutcome::AlreadyDone } else { StepOutcome::Done })
            }
            Op::LibvirtNetwork { name, xml, restart, bridge, taps, hosts_add, hosts_remove, create, keep_definition } => {
                if !*keep_definition {
                    env.libvirt.define_network(xml).map_err(herr)?;
                }
                if *restart {
                    env.libvirt.destroy_network(name).map_err(herr)?;
                }
                env.libvirt.start_network(name).map_err(herr)?;
                env.libvirt.set_network_autostart(name, true).map_err(herr)?;
                if !*create && !*restart {
                    for h in hosts_remove {
                        env.libvirt.update_network_dhcp_host(name, h, false).map_err(herr)?;
                    }
                    for h in hosts_add {
                        env.libvirt.update_network_dhcp_host(name, h, true).map_err(herr)?;
                    }
                }
                if *restart && !taps.is_empty() {
                    // Running guests' taps lost their bridge with the restart: put them back.
                    let links = env.links.list().map_err(herr)?;
                    let ops: Vec<LinkOp> = taps
                        .iter()
                        .filter(|t| links.iter().any(|l| &l.name == *t && l.master.as_deref() != Some(bridge.as_str())))
                        .map(|t| LinkOp::SetMaster { name: t.clone(), master: bridge.clone() })
                        .collect();
                    if !ops.is_empty() {
                        env.links.apply(&ops).map_err(herr)?;
                    }
                }
                Ok(StepOutcome::Done)
            }
            Op::RemoveLibvirtNetwork { name } => {
                env.libvirt.destroy_network(name).map_err(herr)?;
                env.libvirt.undefine_network(name).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::MarkDomain { name, element } => {
                env.libvirt.set_marker(name, element).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::Register { stack, entry, expect } => {
                use crate::observe::imports::{Imported, PathFact};
                let entry = match entry {
                    Imported::LibvirtNetwork { name, uuid } => {
                        let nets = env.libvirt.networks().map_err(herr)?;
                        if !nets.iter().any(|n| n.name == *name && n.uuid == *uuid) {
                            return Err(StepError::new(format!("libvirt network {name} is no longer the one planned (UUID {uuid}); not recording it")).with_hint("plan again"));
                        }
                        entry.clone()
                    }
                    Imported::File { path, .. } => match crate::observe::imports::path_fact_on(&env.exec, Path::new(path)).0 {
                        PathFact::File { dev, ino, refusal: None, .. } if expect.is_none_or(|e| e == (dev, ino)) => {
                            // The marker on the file itself too (on its host): other state directories see it.
                            crate::observe::imports::write_marker_on(&env.exec, Path::new(path), &crate::host::marker(stack, &self.address)).map_err(herr)?;
                            Imported::File { path: path.clone(), dev, ino }
                        }
                        PathFact::File { refusal: Some(m), .. } => return Err(StepError::new(format!("{path} is refused: {m}"))),
                        other => return Err(StepError::new(format!("{path} changed since the plan ({other:?}); not recording it")).with_hint("plan again")),
                    },
                };
                crate::observe::imports::update(&env.records, stack, |r| {
                    r.objects.insert(self.address.clone(), entry);
                })
                .map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::Unregister { stack } => {
                crate::observe::imports::update(&env.records, stack, |r| {
                    r.objects.remove(&self.address);
                })
                .map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::RemarkOvsBridge { name, marker, from } => {
                let state = env.ovs.state().map_err(herr)?;
                match state.bridge_owner(name) {
                    Some((_, a)) if a == *from => {}
                    None if marker.is_empty() => return Ok(StepOutcome::AlreadyDone),
                    Some((_, a)) if !marker.is_empty() && crate::host::parse_marker(marker).is_some_and(|(_, m)| m == a) => return Ok(StepOutcome::AlreadyDone),
                    _ => return Err(StepError::new(format!("Open vSwitch bridge {name} no longer carries the marker of {from}; not touching it")).with_hint("plan again")),
                }
                env.ovs.apply(&[crate::host::ovs::OvsOp::SetBridge { name: name.clone(), datapath_type: None, marker: marker.clone() }]).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::UnmarkDomain { name } => {
                env.libvirt.remove_marker(name).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::WriteNames { stack, names } => {
                names.write(&env.records, stack).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::MarkOvsBridge { name, marker } => {
                let state = env.ovs.state().map_err(herr)?;
                if state.bridge_owner(name).is_some() {
                    return Err(StepError::new(format!("Open vSwitch bridge {name} got a marker since the plan; not touching it")).with_hint("plan again"));
                }
                env.ovs.apply(&[crate::host::ovs::OvsOp::SetBridge { name: name.clone(), datapath_type: None, marker: marker.clone() }]).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::OvsNetwork { want, marker, address, adopt, .. } => {
                let state = env.ovs.state().map_err(herr)?;
                if let Some((st, a)) = state.bridge_owner(&want.name).filter(|(st, a)| format!("virtform:{st}:{a}") != marker.split(";h=").next().unwrap_or(marker))
                {
                    return Err(StepError::new(format!("Open vSwitch bridge {} belongs to {a} of stack {st}; not touching it", want.name)));
                }
                if state.bridges.contains_key(&want.name) && state.bridge_owner(&want.name).is_none() && !*adopt {
                    return Err(StepError::new(format!("Open vSwitch bridge {} exists without a virtform marker; not touching it", want.name)).with_hint("remove or rename it, then apply again"));
                }
                // The MTU goes through OVS (mtu_request): ovs-vswitchd resets a
                // netdev bridge's link MTU set by `ip`.
                let ops = crate::host::ovs::bridge_ops_with_mtu(&state, &want.name, want.datapath_type.as_deref(), want.mtu, marker);
                let mut did = false;
                if !ops.is_empty() {
                    env.ovs.apply(&ops).map_err(herr)?;
                    did = true;
                }
                let links = env.links.list().map_err(herr)?;
                let Some(link) = links.iter().find(|l| l.name == want.name) else {
                    return Err(StepError::new(format!("Open vSwitch bridge {} has no internal port link after creation", want.name))
                        .with_hint("check `ovs-vsctl show` and ovs-vswitchd's log (/var/log/openvswitch/ovs-vswitchd.log)"));
                };
                let mut lops = Vec::new();
                for a in &link.addrs {
                    if Some(*a) != *address {
                        lops.push(LinkOp::DelAddr { name: want.name.clone(), addr: *a });
                    }
                }
                if let Some(a) = address
                    && !link.addrs.contains(a)
                {
                    lops.push(LinkOp::AddAddr { name: want.name.clone(), addr: *a });
                }
                if !link.up {
                    lops.push(LinkOp::SetUp { name: want.name.clone() });
                }
                if !lops.is_empty() {
                    env.links.apply(&lops).map_err(herr)?;
                    did = true;
                }
                Ok(if did { StepOutcome::Done } else { StepOutcome::AlreadyDone })
            }
            Op::RemoveOvsBridge { name } => {
                env.ovs.apply(&[crate::host::ovs::OvsOp::DelBridge { name: name.clone() }]).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::HybridPlug { want, marker } => {
                let links = env.links.list().map_err(herr)?;
                let foreign = crate::host::links::foreign_links(&links, &[&want.qbr, &want.qvb, &want.qvo], marker);
                // Links of this port with an older marker are ours; others are refused.
                let addr_marker = marker.split(";h=").next().unwrap_or(marker);
                if let Some(l) = foreign.iter().find(|l| l.alias.as_deref().is_none_or(|a| a.split(";h=").next() != Some(addr_marker))) {
                    return Err(StepError::new(format!("link {} exists and is not this port's (alias {:?}); not touching it", l.name, l.alias))
                        .with_hint("remove or rename it, then apply again"));
                }
                let lops = crate::host::links::hybrid_plug_ops(&links, &want.qbr, &want.qvb, &want.qvo, want.mtu, marker);
                let mut did = false;
                if !lops.is_empty() {
                    env.links.apply(&lops).map_err(herr)?;
                    did = true;
                }
                let state = env.ovs.state().map_err(herr)?;
                // A qvo recreated under a surviving OVS port passes no traffic
                // on the netdev datapath until the port is deleted and re-added.
                let recreated = lops.iter().any(|o| matches!(o, LinkOp::CreateVeth { .. }));
                let oops = if recreated {
                    crate::host::ovs::hybrid_ovs_replug_ops(&state, &want.bridge, &want.qvo, &want.iface_id, &want.mac, &want.vm_uuid, marker)
                } else {
                    crate::host::ovs::hybrid_ovs_ops(&state, &want.bridge, &want.qvo, &want.iface_id, &want.mac, &want.vm_uuid, marker)
                };
                if !oops.is_empty() {
                    env.ovs.apply(&oops).map_err(herr)?;
                    did = true;
                }
                Ok(if did { StepOutcome::Done } else { StepOutcome::AlreadyDone })
            }
            Op::HybridUnplug { qbr, qvb, qvo } => {
                let links = env.links.list().map_err(herr)?;
                let mut did = false;
                if links.iter().any(|l| &l.name == qbr) {
                    env.links.apply(&[LinkOp::Delete { name: qbr.clone() }]).map_err(herr)?;
                    did = true;
                }
                let state = env.ovs.state().map_err(herr)?;
                let oops = crate::host::ovs::hybrid_ovs_unplug_ops(&state, qvo);
                if !oops.is_empty() {
                    env.ovs.apply(&oops).map_err(herr)?;
                    did = true;
                }
                if let Some(l) = links.iter().find(|l| &l.name == qvb || &l.name == qvo) {
                    env.links.apply(&[LinkOp::Delete { name: l.name.clone() }]).map_err(herr)?;
                    did = true;
                }
                Ok(if did { StepOutcome::Done } else { StepOutcome::AlreadyDone })
            }
            Op::Attach { name, xml, .. } => {
                env.libvirt.attach_device(name, xml, true).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::Detach { name, nic_mac, disk_target, .. } => {
                let Some(live) = env.libvirt.live_xml(name).map_err(herr)? else { return Ok(StepOutcome::AlreadyDone) };
                let inactive = env.libvirt.domain(name).map_err(herr)?.map(|d| d.inactive_xml).unwrap_or_default();
                // The device as the host has it (live first, else the persistent config).
                let find = |xml: &str| -> Option<String> {
                    let d = crate::xml::domain::parse_domain(xml).ok()?;
                    if let Some(m) = nic_mac {
                        d.nics.iter().find(|n| n.mac.to_string() == *m).and_then(crate::xml::domain::detach_nic_xml)
                    } else {
                        let t = disk_target.as_deref()?;
                        d.disks.iter().find(|x| x.target == t).and_then(crate::xml::domain::detach_disk_xml)
                    }
                };
                let Some(dev) = find(&live).or_else(|| find(&inactive)) else { return Ok(StepOutcome::AlreadyDone) };
                if let Err(e) = env.libvirt.detach_device(name, &dev, true, env.detach_timeout) {
                    // The guest kept the device: put it back into the persistent
                    // config too, so the host is as before and the next plan
                    // shows the detach again (never a silently half-done one).
                    if let Err(back) = env.libvirt.attach_device(name, &dev, false) {
                        tracing::warn!("cannot restore {dev} in the config of {name}: {back}");
                    }
                    return Err(herr(e));
                }
                Ok(StepOutcome::Done)
            }
            Op::WaitLease { name, network, mac, timeout } => {
                let start = Instant::now();
                let mut running = StillRunning::new(env, name);
                loop {
                    let leases = env.libvirt.leases(network).map_err(herr)?;
                    if leases.iter().any(|l| l.mac.eq_ignore_ascii_case(mac)) {
                        return Ok(StepOutcome::Done);
                    }
                    running.check("a DHCP lease")?;
                    if start.elapsed() > *timeout {
                        return Err(StepError::new(format!("{name} is not ready: no DHCP lease for {mac} on {network} within {}s", timeout.as_secs()))
                            .with_hint(format!("check the guest runs a DHCP client on that NIC (console log), and `virsh net-dhcp-leases {network}`")));
                    }
                    cx.sleep(Duration::from_millis(500))?;
                }
            }
            Op::WaitSsh { name, conn, timeout } => {
                let start = Instant::now();
                let mut running = StillRunning::new(env, name);
                let mut last = String::from("no attempt yet");
                loop {
                    // Port closed: probe again in half a second; open, but
                    // the login failed (sshd starting, keys not yet there):
                    // a second.
                    let mut pause = Duration::from_millis(500);
                    if conn.port_open(env, &mut last)? {
                        pause = Duration::from_secs(1);
                        if let Some(out) = conn.run(env, name, &["true"], &mut last)? {
                            if out.status == Some(0) {
                                return Ok(StepOutcome::Done);
                            }
                            last = format!("`true` exited with status {}", out.status.unwrap_or(-1));
                        }
                    }
                    running.check("an SSH login")?;
                    if start.elapsed() > *timeout {
                        return Err(StepError::new(format!("{name} is not ready: no SSH login within {}s (last: {last})", timeout.as_secs()))
                            .with_hint("the instance is left as it is; see its console log (virtform console ADDRESS), check the image runs cloud-init and sshd, and that `connection.user` is the image's default user"));
                    }
                    cx.sleep(pause)?;
                }
            }
            Op::WaitCloudInit { name, conn, timeout } => {
                let start = Instant::now();
                let mut running = StillRunning::new(env, name);
                let mut last = String::from("no attempt yet");
                loop {
                    if let Some(out) = conn.run(env, name, &["cloud-init", "status", "--long"], &mut last)? {
                        match cloud_init_status(&out.stdout) {
                            Ok(true) => return Ok(StepOutcome::Done),
                            Ok(false) => last = "cloud-init is still running".into(),
                            Err(e) => {
                                return Err(StepError::new(format!("{name}: {e}")).with_hint("see /var/log/cloud-init.log in the guest (virtform ssh ADDRESS -- sudo cat /var/log/cloud-init.log)"));
                            }
                        }
                    }
                    running.check("cloud-init")?;
                    if start.elapsed() > *timeout {
                        return Err(StepError::new(format!("{name} is not ready: cloud-init did not finish within {}s (last: {last})", timeout.as_secs()))
                            .with_hint("the instance is left as it is; see its console log (virtform console ADDRESS)"));
                    }
                    cx.sleep(Duration::from_secs(2))?;
                }
            }
            Op::WaitAgent { name, timeout } => {
                let start = Instant::now();
                let mut running = StillRunning::new(env, name);
                loop {
                    let last = match env.libvirt.agent_interfaces(name) {
                        Ok(_) => return Ok(StepOutcome::Done),
                        Err(e) => e.message,
                    };
                    running.check("its guest agent")?;
                    if start.elapsed() > *timeout {
                        return Err(StepError::new(format!("{name} is not ready: its guest agent did not answer within {}s (last: {last})", timeout.as_secs()))
                            .with_hint("check that the guest runs qemu-guest-agent (`systemctl status qemu-guest-agent` inside it) and see its console log"));
                    }
                    cx.sleep(Duration::from_secs(1))?;
                }
            }
            Op::WaitTcp { name, ip, lease_from, port, timeout } => {
                let start = Instant::now();
                let mut running = StillRunning::new(env, name);
                let mut last = String::from("no address yet");
                loop {
                    let addr = guest_ip(env.libvirt.as_ref(), ip, lease_from).map_err(herr)?;
                    if let Some(a) = &addr {
                        match probe_tcp(&env.exec, a, *port, Duration::from_secs(2)) {
                            Ok(()) => return Ok(StepOutcome::Done),
                            Err(e) => last = format!("{a}:{port}: {e}"),
                        }
                    }
                    running.check(&format!("TCP port {port}"))?;
                    if start.elapsed() > *timeout {
                        return Err(StepError::new(format!("{name} is not ready: TCP port {port} did not accept a connection within {}s (last: {last})", timeout.as_secs()))
                            .with_hint("check that the guest's service listens on that port and that no firewall blocks it"));
                    }
                    cx.sleep(Duration::from_millis(500))?;
                }
            }
        }
    }
}


/// The reason of an import whose other changes were left for later
/// (`virtform import`): the marker is written without a spec hash.
pub const IMPORT_MARKER_ONLY: &str = "import_marker_only";

/// Whether a change is a move and nothing else (the markers are rewritten in place).
fn moved_only(c: &crate::plan::ResourceChange) -> bool {
    c.previous_address.is_some() && c.action == Action::Update && c.changes.iter().all(|ch| ch.attr == "address")
}

/// Whether a change writes nothing but a marker.
fn marker_only(c: &crate::plan::ResourceChange) -> bool {
    c.action == Action::Update && !c.changes.is_empty() && c.changes.iter().all(|ch| ch.attr == "marker")
}

/// Builds the step DAG for a plan.
pub fn lower(plan: &Plan, cfg: &Configuration, env: Arc<Env>, kvm_usable: bool, source_hashes: &BTreeMap<String, String>) -> Dag<HostStep> {
    let mut b = Builder { dag: Dag::new(), env: env.clone(), created: BTreeMap::new(), removed: BTreeMap::new(), detaches: BTreeMap::new(), first: None, deliveries: BTreeMap::new() };
    // The record of moves and forgets goes first: a kill after it leaves
    // markers the next plan rewrites again, never objects whose names are lost.
    if let Some(names) = &plan.names {
        let id = b.step(&format!("stack {}", plan.stack), Op::WriteNames { stack: plan.stack.clone(), names: names.clone() });
        b.first = Some(id);
    }
    // Forgotten objects: only their markers go.
    for c in plan.changes.iter().filter(|c| c.action == Action::Forget) {
        let Some(o) = &c.object else { continue };
        let op = match c.kind {
            Kind::Instance => Op::UnmarkDomain { name: o.clone() },
            Kind::Network => {
                if let Some(n) = o.strip_prefix("ovs bridge ") {
                    Op::RemarkOvsBridge { name: n.to_string(), marker: String::new(), from: c.address.clone() }
                } else if o.starts_with("libvirt network ") {
                    continue;
                } else if let Some((br, vx)) = super::overlay::parse_object(o) {
                    let ops = [vx, br].into_iter().flatten().map(|name| LinkOp::SetAlias { name, alias: String::new() }).collect();
                    Op::Links { what: format!("remove the markers of overlay {o}"), ops }
                } else {
                    Op::Links { what: format!("remove the marker of bridge {o}"), ops: vec![LinkOp::SetAlias { name: o.clone(), alias: String::new() }] }
                }
            }
            _ => continue,
        };
        b.step(&c.address, op);
    }
    let lowering = Lowering { cfg, state_dir: &env.state_dir, kvm_usable, source_hashes, imported: &plan.imported };
    let mut instance_removals = Vec::new();
    // Pass 1: removals (instances first).
    for c in plan.changes.iter().filter(|c| c.kind == Kind::Instance && matches!(c.action, Action::Delete | Action::Replace)) {
        if c.migrate.is_some() {
            // Migrated away: the migration undefines the domain here; its
            // files here go after it (the fleet orders every removal on
            // this host after the migration). Its records stay: the
            // instance lives on.
            let names = cfg.names_of_str(&c.address);
            let (files, _records) = instance_files(&env.state_dir, &env.records, &env.exec, &cfg.stack, &names);
            let wait = crate::model::Address::parse(&names).map(|a| crate::observe::pending_wait_path(&env.records, &cfg.stack, &a));
            for path in files.into_iter().filter(|p| Some(p) != wait.as_ref()) {
                b.step(&c.address, Op::RemoveFile { path });
            }
            // Its delivered kernel and initrd, unless a guest staying here boots them.
            let booted_here = |f: &str| cfg.resources.iter().any(|r| matches!(&r.spec, Spec::Instance(i) if i.kernel.as_deref() == Some(f) || i.initrd.as_deref() == Some(f)));
            let boot_dir = env.state_dir.join(&cfg.stack).join("boot");
            for f in c.migrate.iter().flat_map(|m| &m.boot_files) {
                if !env.exec.is_local() && Path::new(f).starts_with(&boot_dir) && !booted_here(f) {
                    b.step(&c.address, Op::RemoveFile { path: PathBuf::from(f) });
                }
            }
            continue;
        }
        let name = match (&c.object, cfg.resource(&c.address).map(|r| &r.spec)) {
            (Some(o), _) => o.clone(),
            (None, Some(Spec::Instance(i))) => i.domain_name().to_string(),
            _ => continue,
        };
        // A moved instance's files keep the stems of the address it was moved from.
        let names = cfg.names_of_str(&c.address);
        let (logs, records) = instance_files(&env.state_dir, &env.records, &env.exec, &cfg.stack, &names);
        let stem = crate::model::Address::parse(&names).map(|a| a.file_stem()).unwrap_or_default();
        let id = b.step(&c.address, Op::Remove { name, logs, records, ssh: crate::host::ssh::SshDir::of(&env.records, &cfg.stack), stem });
        b.removed.insert(c.address.clone(), id);
        instance_removals.push(id);
    }
    // Live detaches of instances that stay (their ports are unplugged after).
    for c in plan.changes.iter().filter(|c| c.kind == Kind::Instance && c.action == Action::Update && c.landing() == Some(Landing::Live)) {
        let Some(Spec::Instance(i)) = cfg.resource(&c.address).map(|r| &r.spec) else { continue };
        let name = i.domain_name().to_string();
        for ch in &c.changes {
            let Some(before) = &ch.before else { continue };
            let _ = before;
            let (nic_mac, disk_target, what) = if let Some(m) = ch.attr.strip_prefix("nic:") {
                (Some(m.to_string()), None, format!("interface {m}"))
            } else if let Some(t) = ch.attr.strip_prefix("disk:") {
                (None, Some(t.to_string()), format!("disk {t}"))
            } else {
                continue;
            };
            let id = b.step(&c.address, Op::Detach { name: name.clone(), nic_mac, disk_target, what });
            b.detaches.entry(c.address.clone()).or_default().push(id);
            instance_removals.push(id);
        }
    }
    let (mut port_removals, mut network_removals) = (Vec::new(), Vec::new());
    for c in plan.changes.iter().filter(|c| c.kind != Kind::Instance && matches!(c.action, Action::Delete | Action::Replace)) {
        let op = match c.kind {
            Kind::Disk | Kind::Volume => {
                let path = match (&c.object, cfg.resource(&c.address)) {
                    (Some(o), _) => Some(PathBuf::from(o)),
                    (None, Some(r)) => lowering.disk(r).or_else(|| lowering.volume(r)).map(|d| PathBuf::from(d.path)),
                    _ => None,
                };
                path.map(|p| Op::RemoveFile { path: p })
            }
            Kind::Network => match (&c.object, cfg.resource(&c.address).map(|r| &r.spec)) {
                (Some(o), _) => Some(if let Some(n) = o.strip_prefix("ovs bridge ") {
                    Op::RemoveOvsBridge { name: n.to_string() }
                } else if let Some(n) = o.strip_prefix("libvirt network ") {
                    Op::RemoveLibvirtNetwork { name: n.to_string() }
                } else if let Some((bridge, vxlan)) = super::overlay::parse_object(o) {
                    Op::RemoveOverlay { stack: cfg.stack.clone(), bridge, vxlan }
                } else {
                    Op::Links { what: format!("delete bridge {o}"), ops: vec![LinkOp::Delete { name: o.clone() }] }
                }),
                (None, Some(Spec::Network(n))) => Some(match n.net_type {
                    NetType::Bridge => Op::Links { what: format!("delete bridge {}", n.bridge_name()), ops: vec![LinkOp::Delete { name: n.bridge_name().to_string() }] },
                    NetType::Ovs => Op::RemoveOvsBridge { name: n.bridge_name().to_string() },
                    NetType::Overlay if n.ovs_overlay() => Op::RemoveOvsBridge { name: n.bridge_name().to_string() },
                    NetType::Overlay => Op::RemoveOverlay { stack: cfg.stack.clone(), bridge: Some(n.bridge_name().to_string()), vxlan: n.vxlan_device() },
                    NetType::Nat | NetType::Isolated => Op::RemoveLibvirtNetwork {
                        name: cfg.resource(&c.address).and_then(|r| lowering.libvirt_network(r)).map(|d| d.name).unwrap_or_else(|| libvirt_network_name(&cfg.stack, &cfg.names_of_str(&c.address))),
                    },
                }),
                _ => None,
            },
            Kind::Port => {
                let qbr = match (&c.object, cfg.resource(&c.address).map(|r| &r.spec)) {
                    (Some(o), _) => o.strip_prefix("ovs_hybrid ").map(str::to_string),
                    (None, Some(Spec::Port(p))) if p.plug == Some(crate::model::port::Plug::OvsHybrid) => Some(p.dev("qbr")),
                    _ => None,
                };
                qbr.and_then(|q| DesiredHybrid::names_from_qbr(&q).map(|(qvb, qvo, _)| Op::HybridUnplug { qbr: q, qvb, qvo }))
            }
            _ => None,
        };
        if let Some(op) = op {
            let id = b.step(&c.address, op);
            for r in &instance_removals {
                b.dag.depend(id, *r);
            }
            // An imported object leaves the registry once it is gone (a
            // replaced file is recorded again when it is made anew).
            if c.action == Action::Delete && plan.imported.contains_key(&c.address) {
                let u = b.step(&c.address, Op::Unregister { stack: cfg.stack.clone() });
                b.dag.depend(u, id);
            }
            if c.kind == Kind::Port {
                port_removals.push(id);
            }
            if c.kind == Kind::Network {
                network_removals.push(id);
            }
            b.removed.insert(c.address.clone(), id);
        }
    }
    // A network goes after the ports plugged into it.
    for n in &network_removals {
        for p in &port_removals {
            b.dag.depend(*n, *p);
        }
    }
    let by_address: BTreeMap<&str, &crate::plan::ResourceChange> = plan.changes.iter().map(|c| (c.address.as_str(), c)).collect();
    // Pass 2: creates and updates, in the configuration's order (dependencies first).
    for r in &cfg.resources {
        let addr = r.address.to_string();
        let Some(c) = by_address.get(addr.as_str()) else { continue };
        let creating = matches!(c.action, Action::Create | Action::Replace);
        // An import recorded in the registry: before anything uses the object.
        let registered = match plan.imported.get(&addr) {
            Some(entry) if c.importing.is_some() && !creating => {
                let expect = match entry {
                    crate::observe::imports::Imported::File { dev, ino, .. } => Some((*dev, *ino)),
                    _ => None,
                };
                let id = b.step(&addr, Op::Register { stack: cfg.stack.clone(), entry: entry.clone(), expect });
                b.created.insert(addr.clone(), id);
                Some(id)
            }
            _ => None,
        };
        if registered.is_some() && marker_only(c) {
            continue;
        }
        match &r.spec {
            Spec::Image(img) if creating => {
                let id = b.step(&addr, Op::FetchImage { source: img.source.clone(), sha256: img.sha256.clone(), format: img.format });
                b.created.insert(addr, id);
            }
            Spec::Network(n) if c.importing.is_some() && marker_only(c) => {
                let pending = c.reason.as_deref() == Some(IMPORT_MARKER_ONLY);
                let op = match n.net_type {
                    NetType::Bridge => {
                        let want = DesiredBridge::from_network(n);
                        let alias = if pending { crate::host::marker(&cfg.stack, &addr) } else { marker_with_hash(&cfg.stack, &addr, &want.hash()) };
                        Op::Links { what: format!("mark bridge {} as imported", want.name), ops: vec![LinkOp::SetAlias { name: want.name.clone(), alias }] }
                    }
                    NetType::Ovs => {
                        let want = DesiredOvsBridge::from_network(n);
                        let marker = if pending { crate::host::marker(&cfg.stack, &addr) } else { marker_with_hash(&cfg.stack, &addr, &want.hash()) };
                        Op::MarkOvsBridge { name: want.name.clone(), marker }
                    }
                    NetType::Nat | NetType::Isolated | NetType::Overlay => continue,
                };
                let id = b.step(&addr, op);
                b.created.insert(addr, id);
            }
            Spec::Network(n) if moved_only(c) => {
                let op = match n.net_type {
                    NetType::Bridge => {
                        let want = DesiredBridge::from_network(n);
                        let alias = marker_with_hash(&cfg.stack, &addr, &want.hash());
                        Op::Links { what: format!("rewrite the marker of bridge {} (moved)", want.name), ops: vec![LinkOp::SetAlias { name: want.name.clone(), alias }] }
                    }
                    NetType::Ovs => {
                        let want = DesiredOvsBridge::from_network(n);
                        let marker = marker_with_hash(&cfg.stack, &addr, &want.hash());
                        Op::RemarkOvsBridge { name: want.name.clone(), marker, from: c.previous_address.clone().unwrap_or_default() }
                    }
                    NetType::Overlay => {
                        let Some(op) = overlay_op(n, &cfg.stack, &addr, false, c.previous_address.clone()) else { continue };
                        op
                    }
                    // The record alone: its name and UUID are the moved-from address's.
                    NetType::Nat | NetType::Isolated => continue,
                };
                let id = b.step(&addr, op);
                b.created.insert(addr, id);
            }
            // Files and bridge/ovs/network ports: the record alone.
            Spec::Disk(_) | Spec::Volume(_) | Spec::Port(_) if moved_only(c) => {}
            Spec::Instance(_) if moved_only(c) => {
                let Some(def) = lowering.domain(r) else { continue };
                let id = b.step(&addr, Op::MarkDomain { name: def.name.clone(), element: crate::xml::domain::marker_element(&def.marker) });
                b.created.insert(addr, id);
            }
            Spec::Network(n) if creating || c.action == Action::Update => {
                // A moved OVS bridge gets its new marker before the repair
                // (which refuses a bridge marked for another address).
                let remark = match (n.net_type, &c.previous_address) {
                    (NetType::Ovs, Some(from)) => Some(b.step(
                        &addr,
                        Op::RemarkOvsBridge { name: n.bridge_name().to_string(), marker: marker_with_hash(&cfg.stack, &addr, &DesiredOvsBridge::from_network(n).hash()), from: from.clone() },
                    )),
                    _ => None,
                };
                let op = match n.net_type {
                    NetType::Bridge => {
                        let want = DesiredBridge::from_network(n);
                        let alias = marker_with_hash(&cfg.stack, &addr, &want.hash());
                        let ops = if creating { bridge_create_ops(&want, &alias) } else { bridge_update_ops(&want, &alias, plan_links_addrs(c)) };
                        let what = if creating { format!("create bridge {}", want.name) } else { format!("configure bridge {}", want.name) };
                        Op::Links { ops, what }
                    }
                    NetType::Ovs => {
                        let want = DesiredOvsBridge::from_network(n);
                        let marker = marker_with_hash(&cfg.stack, &addr, &want.hash());
                        Op::OvsNetwork { want, marker, address: n.address, create: creating, adopt: c.importing.is_some() }
                    }
                    NetType::Overlay => {
                        let Some(op) = overlay_op(n, &cfg.stack, &addr, creating, c.previous_address.clone()) else { continue };
                        op
                    }
                    NetType::Nat | NetType::Isolated => {
                        let Some(def) = lowering.libvirt_network(r) else { continue };
                        let restart = !creating && c.changes.iter().any(|x| x.landing == Landing::Restart);
                        let mut hosts_add = Vec::new();
                        let mut hosts_remove = Vec::new();
                        for x in c.changes.iter().filter(|x| x.attr.starts_with("dhcp_host ")) {
                            let Ok(mac) = crate::model::common::Mac::parse(&x.attr["dhcp_host ".len()..]) else { continue };
                            if let Some(ip) = x.before.as_deref().and_then(|v| v.parse().ok()) {
                                hosts_remove.push(crate::xml::network::dhcp_host_xml(&mac, ip, None));
                            }
                            if let Some(ip) = x.after.as_deref().and_then(|v| v.parse().ok()) {
                                hosts_add.push(crate::xml::network::dhcp_host_xml(&mac, ip, None));
                            }
                        }
                        let taps = ports_on(cfg, &addr);
                        let keep_definition = !creating && !restart && plan.imported.contains_key(&addr);
                        Op::LibvirtNetwork { name: def.name.clone(), xml: crate::xml::network::network_xml(&def), restart, bridge: def.bridge.clone(), taps, hosts_add, hosts_remove, create: creating, keep_definition }
                    }
                };
                let id = b.step(&addr, op);
                b.chain(id, remark);
                b.after_removal(id, &addr);
                b.chain(id, registered);
                b.created.insert(addr, id);
            }
            Spec::Port(_) if creating || c.action == Action::Update => {
                let Some(want) = lowering.hybrid(r) else { continue };
                let marker = marker_with_hash(&cfg.stack, &addr, &want.hash());
                let id = b.step(&addr, Op::HybridPlug { want, marker });
                b.after_removal(id, &addr);
                b.after_created_deps(id, r, cfg);
                b.created.insert(addr, id);
            }
            Spec::Disk(_) | Spec::Volume(_) if creating || c.action == Action::Update => {
                let Some(d) = lowering.disk(r).or_else(|| lowering.volume(r)) else { continue };
                let op = if creating {
                    let format = match &r.spec {
                        Spec::Disk(x) => x.format,
                        Spec::Volume(v) => v.format,
                        _ => crate::model::disk::DiskFormat::Qcow2,
                    };
                    Op::CreateDisk { path: d.path.clone().into(), base: d.base.map(PathBuf::from), size: d.size, format }
                } else {
                    let domain = cfg.resources.iter().find_map(|ir| match &ir.spec {
                        Spec::Instance(i) if i.disks.iter().chain(&i.volumes).any(|x| x.0 == addr) => lowering
                            .domain(ir)
                            .and_then(|def| def.disks.iter().find(|dd| dd.path == d.path).map(|dd| (def.name.clone(), dd.target.clone()))),
                        _ => None,
                    });
                    Op::ResizeDisk { path: d.path.clone().into(), size: d.size.unwrap_or(0), domain }
                };
                let mut id = b.step(&addr, op);
                b.after_removal(id, &addr);
                b.after_created_deps(id, r, cfg);
                b.chain(id, registered);
                // An imported file replaced (`--replace`): recorded anew, with its new inode.
                if creating && let Some(entry @ crate::observe::imports::Imported::File { .. }) = plan.imported.get(&addr) {
                    let reg = b.step(&addr, Op::Register { stack: cfg.stack.clone(), entry: entry.clone(), expect: None });
                    b.dag.depend(reg, id);
                    id = reg;
                }
                b.created.insert(addr, id);
            }
            Spec::Instance(_) if c.importing.is_some() && marker_only(c) => {
                let Some(def) = lowering.domain(r) else { continue };
                // The host matches the configuration: the marker records its
                // spec hash. Marker only with differences left (`virtform
                // import`): no hash, so the next plan shows them as updates.
                let mut m = def.marker.clone();
                if c.reason.as_deref() == Some(IMPORT_MARKER_ONLY) {
                    m.spec_hash = String::new();
                }
                let id = b.step(&addr, Op::MarkDomain { name: def.name.clone(), element: crate::xml::domain::marker_element(&m) });
                b.created.insert(addr, id);
            }
            Spec::Instance(inst) if c.migrate.is_some() => {
                // Its seed first (the same content, so the same path, as on
                // the old host), then the migration, after its disks and
                // networks here.
                let (Some(def), Some(m)) = (lowering.domain(r), &c.migrate) else { continue };
                let console_dir = Path::new(&def.console_log).parent().map(Path::to_path_buf).unwrap_or_default();
                let mut last = None;
                if let Some((path, input)) = lowering.seed(r) {
                    let host_key = inst.connection.as_ref().map(|_| seed_host_key(&env.records, cfg, &addr, inst));
                    let id = b.step(&addr, Op::WriteSeed { path: path.into(), input: Box::new(input), host_key });
                    b.after_removal(id, &addr);
                    last = Some(id);
                }
                let id = b.step(&addr, Op::Migrate { name: def.name.clone(), def: Box::new(def.clone()), console_dir, from: m.from_host.clone() });
                b.after_deliveries(id, &addr, &def);
                b.after_created_deps(id, r, cfg);
                b.chain(id, last);
                b.created.insert(addr, id);
            }
            Spec::Instance(inst) => {
                let Some(def) = lowering.domain(r) else { continue };
                let name = def.name.clone();
                let console_dir = Path::new(&def.console_log).parent().map(Path::to_path_buf).unwrap_or_default();
                let running = inst.state == crate::model::instance::State::Running;
                let restart = c.landing() == Some(Landing::Restart);
                let updating = c.action == Action::Update;
                // Hot-plug: only when nothing else needs a restart (a restart
                // boots with the new definition anyway).
                let live_devices: Vec<&crate::plan::AttrChange> = if updating && !restart {
                    c.changes.iter().filter(|ch| ch.attr.starts_with("nic:") || ch.attr.starts_with("disk:") || (ch.attr == "guest_agent" && def.guest_agent)).collect()
                } else {
                    Vec::new()
                };
                // A move rewrites the marker with the redefine (no restart).
                let redefine = creating || c.previous_address.is_some() || c.changes.iter().any(|ch| ch.landing != Landing::Live || ch.attr == "marker") || !live_devices.is_empty();
                let mut last = None;
                // Attach first (live and persistent), then redefine: a kill in
                // between leaves only a stale marker, which the next plan refreshes.
                for ch in live_devices.iter().filter(|ch| ch.after.is_some()) {
                    let (xml, what) = if ch.attr == "guest_agent" {
                        (crate::xml::domain::agent_channel_xml(), "the guest agent channel".to_string())
                    } else if let Some(m) = ch.attr.strip_prefix("nic:") {
                        match def.nics.iter().find(|n| n.mac.to_string() == m) {
                            Some(n) => (crate::xml::domain::nic_device_xml(n), format!("interface {m}")),
                            None => continue,
                        }
                    } else {
                        let t = &ch.attr["disk:".len()..];
                        match def.disks.iter().find(|d| d.target == t) {
                            Some(d) => (crate::xml::domain::disk_device_xml(d), format!("disk {t}")),
                            None => continue,
                        }
                    };
                    let id = b.step(&addr, Op::Attach { name: name.clone(), xml, what });
                    b.after_created_deps(id, r, cfg);
                    if let Some(ds) = b.detaches.get(&addr).cloned() {
                        for d in ds {
                            b.dag.depend(id, d);
                        }
                    }
                    b.chain(id, last);
                    last = Some(id);
                }
                // An ignored cloud_init keeps the existing domain's seed.
                let keep_seed = !creating && r.lifecycle.ignore_changes.iter().any(|a| a == "cloud_init");
                let seed = if redefine && !keep_seed { lowering.seed(r) } else { None };
                if let Some((path, input)) = seed {
                    let host_key = inst.connection.as_ref().map(|_| seed_host_key(&env.records, cfg, &addr, inst));
                    let id = b.step(&addr, Op::WriteSeed { path: path.into(), input: Box::new(input), host_key });
                    b.after_removal(id, &addr);
                    b.chain(id, last);
                    last = Some(id);
                }
                if redefine {
                    let keep = if creating { Vec::new() } else { r.lifecycle.ignore_changes.clone() };
                    let id = b.step(&addr, Op::Define { name: name.clone(), def: Box::new(def.clone()), console_dir, keep });
                    b.after_deliveries(id, &addr, &def);
                    b.after_removal(id, &addr);
                    b.after_created_deps(id, r, cfg);
                    if let Some(ds) = b.detaches.get(&addr).cloned() {
                        for d in ds {
                            b.dag.depend(id, d);
                        }
                    }
                    b.chain(id, last);
                    last = Some(id);
                }
                // A hot-plugged agent channel is waited for like a fresh boot's
                // agent (the guest starts its agent when the port appears).
                if let Some(w) = inst.wait_for.as_ref().filter(|w| w.agent && running && live_devices.iter().any(|ch| ch.attr == "guest_agent")) {
                    let timeout = w.timeout.map(|t| t.as_std()).unwrap_or(Duration::from_secs(300));
                    let id = b.step(&addr, Op::WaitAgent { name: name.clone(), timeout });
                    b.chain(id, last);
                    last = Some(id);
                }
                if updating && restart {
                    let id = b.step(&addr, Op::Stop { name: name.clone() });
                    b.chain(id, last);
                    last = Some(id);
                }
                let state_change = updating && c.changes.iter().any(|ch| ch.attr == "state");
                if updating && state_change && !running {
                    let id = b.step(&addr, Op::Stop { name: name.clone() });
                    b.chain(id, last);
                    last = Some(id);
                }
                if (updating && c.changes.iter().any(|ch| ch.attr == "autostart")) || (creating && inst.autostart) {
                    let id = b.step(&addr, Op::Autostart { name: name.clone(), on: inst.autostart });
                    b.chain(id, last);
                    last = Some(id);
                }
                let start = running && (creating || restart || state_change);
                if start {
                    let id = b.step(&addr, Op::Start { name: name.clone(), log: Some(def.console_log.clone().into()) });
                    b.chain(id, last);
                    last = Some(id);
                }
                let rewait = updating && c.changes.iter().any(|ch| ch.attr == "readiness");
                if (start || rewait)
                    && let Some(w) = &inst.wait_for
                {
                    for op in readiness_waits(&env.records, cfg, &addr, inst, &def, w, &plan.imported) {
                        let wid = b.step(&addr, op);
                        b.chain(wid, last);
                        last = Some(wid);
                    }
                }
                if let Some(l) = last {
                    b.created.insert(addr, l);
                }
            }
            _ => {}
        }
    }
    b.dag
}

struct Builder {
    dag: Dag<HostStep>,
    env: Arc<Env>,
    created: BTreeMap<String, usize>,
    removed: BTreeMap<String, usize>,
    /// Live detach steps per instance address.
    detaches: BTreeMap<String, Vec<usize>>,
    /// The step every other one follows (the record of moves), if any.
    first: Option<usize>,
    /// The delivery step of each boot file by its path on the host.
    deliveries: BTreeMap<PathBuf, usize>,
}

impl Builder {
    fn step(&mut self, address: &str, op: Op) -> usize {
        let id = self.dag.add(HostStep { address: address.to_string(), op, env: self.env.clone() });
        if let Some(f) = self.first {
            self.dag.depend(id, f);
        }
        id
    }

    /// `id` (a definition or a migration of `def`) after the delivery of
    /// the boot files it names that come from this machine: one step per
    /// file, made by the first domain that needs it. They start with the
    /// apply, while the disks are made.
    fn after_deliveries(&mut self, id: usize, addr: &str, def: &crate::xml::domain::DomainDef) {
        for f in [def.kernel.as_deref(), def.initrd.as_deref()].into_iter().flatten() {
            let there = Path::new(f);
            let Some((local, sha256)) = self.env.deliveries.get(there).cloned() else { continue };
            let d = match self.deliveries.get(there) {
                Some(d) => *d,
                None => {
                    let d = self.step(addr, Op::Deliver { local, there: there.to_path_buf(), sha256 });
                    self.deliveries.insert(there.to_path_buf(), d);
                    d
                }
            };
            self.dag.depend(id, d);
        }
    }

    fn chain(&mut self, id: usize, after: Option<usize>) {
        if let Some(a) = after {
            self.dag.depend(id, a);
        }
    }

    /// A replaced object is created after its old self is removed.
    fn after_removal(&mut self, id: usize, addr: &str) {
        if let Some(r) = self.removed.get(addr) {
            self.dag.depend(id, *r);
        }
    }

    /// After the creation steps of everything this resource refers to.
    fn after_created_deps(&mut self, id: usize, r: &crate::model::Resource, cfg: &Configuration) {
        let deps: Vec<String> = match &r.spec {
            Spec::Disk(d) => d.image.iter().map(|x| x.0.clone()).collect(),
            Spec::Volume(v) => v.image.iter().map(|x| x.0.clone()).collect(),
            Spec::Port(p) => vec![p.network.0.clone()],
            Spec::Instance(i) => {
                let mut v: Vec<String> = i.disks.iter().chain(&i.volumes).map(|x| x.0.clone()).collect();
                v.extend(i.ports.iter().map(|x| x.0.clone()));
                v
            }
            _ => Vec::new(),
        };
        for d in deps {
            if let Some(s) = self.created.get(&d) {
                self.dag.depend(id, *s);
            }
        }
        // depends_on names blocks (`network.lan`), instances (`disk.root[0]`)
        // or modules (`module.web`, `module.web["a"]`: everything in them).
        for d in &r.depends_on {
            let hits: Vec<usize> = self.created.iter().filter(|(a, _)| depends_on_names(d, a)).map(|(_, s)| *s).collect();
            for s in hits {
                self.dag.depend(id, s);
            }
        }
        // Bridge-plugged ports add no steps of their own: depend on their networks.
        if let Spec::Instance(i) = &r.spec {
            for p in &i.ports {
                if let Some(Spec::Port(port)) = cfg.resource(&p.0).map(|x| &x.spec)
                    && let Some(s) = self.created.get(&port.network.0)
                {
                    self.dag.depend(id, *s);
                }
            }
        }
    }
}

/// Takes the values of ignored attributes (`lifecycle.ignore_changes`) from
/// the domain's current definition, so a redefine for another reason does not
/// apply them behind the plan's back.
pub fn keep_ignored(def: &mut crate::xml::domain::DomainDef, current: &crate::xml::domain::ObservedDomain, keep: &[String]) {
    for k in keep {
        match k.as_str() {
            "memory" => def.memory_kib = current.memory_kib,
            "vcpus" => def.vcpus = current.vcpus,
            "cmdline" => def.cmdline = current.cmdline.clone(),
            "kernel" => def.kernel = current.kernel.clone(),
            "initrd" => def.initrd = current.initrd.clone(),
            "cpu" => def.cpu = current.cpu.clone(),
            "guest_agent" => def.guest_agent = current.guest_agent,
            "cloud_init" => {
                // The seed disk keeps its current file.
                for d in def.disks.iter_mut().filter(|d| d.serial.as_deref() == Some("cidata")) {
                    if let Some(p) = current.disks.iter().find(|c| c.target == d.target).and_then(|c| c.path.clone()) {
                        d.path = p;
                    }
                }
            }
            _ => {}
        }
    }
}

/// The taps of the ports on a network (`tapXXXXXXXXXXX`).
fn ports_on(cfg: &Configuration, network_addr: &str) -> Vec<String> {
    cfg.resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Port(p) if p.network.0 == network_addr => Some(p.dev("tap")),
            _ => None,
        })
        .collect()
}

/// The first of an instance's ports on a libvirt network: (network name, MAC).
fn lease_nic(cfg: &Configuration, inst: &crate::model::instance::Instance, imported: &Imports) -> Option<(String, String)> {
    inst.ports.iter().find_map(|p| {
        let Some(Spec::Port(port)) = cfg.resource(&p.0).map(|r| &r.spec) else { return None };
        let Some(Spec::Network(n)) = cfg.resource(&port.network.0).map(|r| &r.spec) else { return None };
        n.net_type.is_libvirt().then(|| (crate::plan::desired::libvirt_name_of(&cfg.stack, &cfg.names_of_str(&port.network.0), n, imported), port.mac.map(|m| m.to_string()).unwrap_or_default()))
    })
}

/// The waits of an instance after its start, in order (console, lease,
/// agent, TCP, SSH, cloud-init: each says precisely what is not ready yet), between two
/// readiness marks: a wait that fails or is killed leaves the mark, and the
/// next plan waits again.
fn readiness_waits(state_dir: &Path, cfg: &Configuration, addr: &str, inst: &crate::model::instance::Instance, def: &crate::xml::domain::DomainDef, w: &crate::model::instance::WaitFor, imported: &Imports) -> Vec<Op> {
    let name = def.name.clone();
    let timeout = w.timeout.map(|t| t.as_std()).unwrap_or(Duration::from_secs(300));
    let mut waits = Vec::new();
    if let Some(p) = &w.console {
        waits.push(Op::WaitConsole { name: name.clone(), log: def.console_log.clone().into(), pattern: p.clone(), timeout });
    }
    let lease_nic = lease_nic(cfg, inst, imported);
    if w.lease
        && let Some((network, mac)) = &lease_nic
    {
        waits.push(Op::WaitLease { name: name.clone(), network: network.clone(), mac: mac.clone(), timeout });
    }
    if w.agent && def.guest_agent {
        waits.push(Op::WaitAgent { name: name.clone(), timeout });
    }
    if let Some(port) = w.tcp {
        let ip = fixed_ip(cfg, inst);
        waits.push(Op::WaitTcp { name: name.clone(), lease_from: if ip.is_none() { lease_nic.clone() } else { None }, ip, port, timeout });
    }
    if let Some(conn) = ssh_conn(state_dir, cfg, addr, inst, imported).filter(|_| w.ssh || w.cloud_init) {
        if w.ssh {
            waits.push(Op::WaitSsh { name: name.clone(), conn: Box::new(conn.clone()), timeout });
        }
        if w.cloud_init {
            waits.push(Op::WaitCloudInit { name: name.clone(), conn: Box::new(conn), timeout });
        }
    }
    let mark = crate::model::Address::parse(&cfg.names_of_str(addr)).map(|a| crate::observe::pending_wait_path(state_dir, &cfg.stack, &a));
    if let (Some(path), false) = (&mark, waits.is_empty()) {
        waits.insert(0, Op::Readiness { path: path.clone(), pending: true });
        waits.push(Op::Readiness { path: path.clone(), pending: false });
    }
    waits
}

/// How virtform logs in to an instance: `None` without a `connection`.
/// `imported`: the stack's imported objects (a port's libvirt network may be one).
pub fn ssh_conn(state_dir: &Path, cfg: &Configuration, addr: &str, inst: &crate::model::instance::Instance, imported: &Imports) -> Option<SshConn> {
    let c = inst.connection.as_ref()?;
    let ip = c.host.map(|h| h.0.to_string()).or_else(|| fixed_ip(cfg, inst));
    Some(SshConn {
        user: c.user.clone(),
        lease_from: if ip.is_none() { lease_nic(cfg, inst, imported) } else { None },
        ip,
        port: c.port,
        key: c.private_key.clone(),
        pin: seed_host_key(state_dir, cfg, addr, inst),
    })
}

/// Where an instance's host key lives and the names it is pinned under.
fn seed_host_key(state_dir: &Path, cfg: &Configuration, addr: &str, inst: &crate::model::instance::Instance) -> SeedHostKey {
    let stem = crate::model::Address::parse(&cfg.names_of_str(addr)).map(|a| a.file_stem()).unwrap_or_default();
    let mut patterns = vec![crate::host::ssh::host_alias(inst.domain_name(), &cfg.stack, &stem)];
    patterns.extend(inst.connection.as_ref().and_then(|c| c.host.map(|h| h.0.to_string())).or_else(|| fixed_ip(cfg, inst)));
    SeedHostKey { dir: crate::host::ssh::SshDir::of(state_dir, &cfg.stack), stem, comment: format!("virtform:{}:{addr}", cfg.stack), patterns }
}

/// The first fixed IP among an instance's ports.
fn fixed_ip(cfg: &Configuration, inst: &crate::model::instance::Instance) -> Option<String> {
    inst.ports.iter().find_map(|p| match cfg.resource(&p.0).map(|r| &r.spec) {
        Some(Spec::Port(port)) => port.ip.map(|ip| ip.0.to_string()),
        _ => None,
    })
}

/// What a domain needs on its host before libvirt defines or receives it:
/// its console directory, the directory of its UEFI variable store, and
/// the kernel and initrd it boots, delivered from this machine.
/// Whether a `depends_on` entry `d` names the resource at `addr`: the
/// block (`network.lan`), an instance of it (`disk.root[0]`), or a module
/// (`module.web`, `module.web["a"]`: everything in it).
pub(crate) fn depends_on_names(d: &str, addr: &str) -> bool {
    addr.strip_prefix(d).is_some_and(|rest| rest.is_empty() || rest.starts_with('[') || rest.starts_with('.'))
}

fn prepare_domain_files(env: &Env, def: &crate::xml::domain::DomainDef, console_dir: &Path) -> Result<(), StepError> {
    env.ensure_dir(console_dir).map_err(herr)?;
    // libvirt copies the UEFI variable store from its template
    // into this directory at the first start (0600, as qemu's user).
    if let Some(dir) = def.loader.as_ref().and_then(|l| Path::new(&l.nvram).parent()) {
        env.ensure_dir(dir).map_err(herr)?;
    }
    for f in [def.kernel.as_deref(), def.initrd.as_deref()].into_iter().flatten() {
        if let Some((local, sha)) = env.deliveries.get(Path::new(f)) {
            env.deliver(local, Path::new(f), sha).map_err(herr)?;
        }
    }
    Ok(())
}

/// The addresses the bridge had, when the plan changes them.
fn plan_links_addrs(c: &crate::plan::ResourceChange) -> Option<Vec<String>> {
    c.changes
        .iter()
        .find(|x| x.attr == "address")
        .map(|x| x.before.clone().unwrap_or_default().split(", ").filter(|s| *s != "(none)").map(str::to_string).collect())
}

pub(super) fn bridge_create_ops(want: &DesiredBridge, alias: &str) -> Vec<LinkOp> {
    let mut ops = vec![LinkOp::CreateBridge {
        name: want.name.clone(),
        alias: alias.to_string(),
        mtu: want.mtu,
        stp: want.stp,
        forward_delay_cs: want.forward_delay_s * 100,
        mcast_snooping: true,
    }];
    if let Some(a) = want.address {
        ops.push(LinkOp::AddAddr { name: want.name.clone(), addr: a });
    }
    ops.push(LinkOp::SetUp { name: want.name.clone() });
    ops
}

pub(super) fn bridge_update_ops(want: &DesiredBridge, alias: &str, old_addrs: Option<Vec<String>>) -> Vec<LinkOp> {
    let n = want.name.clone();
    let addresses_changed = old_addrs.is_some();
    let old: Vec<crate::model::common::IpCidr> = old_addrs.unwrap_or_default().iter().filter_map(|a| crate::model::common::IpCidr::parse(a).ok()).collect();
    let mut ops = Vec::new();
    if let Some(m) = want.mtu {
        ops.push(LinkOp::SetMtu { name: n.clone(), mtu: m });
    }
    ops.push(LinkOp::SetBridgeOpts { name: n.clone(), stp: want.stp, forward_delay_cs: want.forward_delay_s * 100, mcast_snooping: true });
    for c in &old {
        if Some(*c) != want.address {
            ops.push(LinkOp::DelAddr { name: n.clone(), addr: *c });
        }
    }
    if let Some(a) = want.address
        && addresses_changed
        && !old.contains(&a)
    {
        ops.push(LinkOp::AddAddr { name: n.clone(), addr: a });
    }
    ops.push(LinkOp::SetUp { name: n.clone() });
    ops.push(LinkOp::SetAlias { name: n, alias: alias.to_string() });
    ops
}


/// The console log (and the previous boot's), the UEFI variable store and
/// the cloud-init seeds of an instance address: the files removed with it
/// (before the domain is undefined: libvirt refuses to undefine a domain
/// whose variable store exists unless told to remove it, and the test
/// driver refuses that flag).
/// An instance's files: console logs, UEFI variable store and seeds on its
/// host (`state_dir`, listed through `exec`), its pending-wait record here
/// (`records`).
fn instance_files(state_dir: &Path, records: &Path, exec: &crate::host::exec::Executor, stack: &str, address: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let Some(addr) = crate::model::Address::parse(address) else { return Default::default() };
    let log = crate::model::instance::console_log_path(state_dir, stack, &addr);
    let previous = log.with_extension("log.1");
    let mut files = vec![log, previous, crate::model::instance::nvram_path(state_dir, stack, &addr)];
    let wait = crate::observe::pending_wait_path(records, stack, &addr);
    let prefix = format!("{}-", addr.file_stem());
    let seeds = state_dir.join(stack).join("seeds");
    let mut here = Vec::new();
    let names: Vec<String> = if exec.is_local() {
        files.push(wait);
        std::fs::read_dir(&seeds).map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
    } else {
        // The pending-wait record is this machine's: removed here, not on the host.
        here.push(wait);
        let argv = [std::ffi::OsStr::new("find"), seeds.as_os_str(), "-mindepth".as_ref(), "1".as_ref(), "-maxdepth".as_ref(), "1".as_ref(), "-printf".as_ref(), "%f\\n".as_ref()];
        match exec.output("list seeds", &seeds.display().to_string(), &argv, crate::host::exec::Input::None) {
            Ok(o) if o.success() => String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect(),
            _ => Vec::new(),
        }
    };
    for n in names {
        if n.starts_with(&prefix) && n.ends_with(".iso") && crate::model::Address::from_stem(addr.kind, n[..n.len() - 4].rsplit_once('-').map(|x| x.0).unwrap_or("")) == Some(addr.clone()) {
            files.push(seeds.join(n));
        }
    }
    (files, here)
}

/// Removes the other seeds of the instance `path` belongs to
/// (`<stem>-<hash>.iso` with another hash).
fn remove_stale_seeds(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return };
    let Some((stem, _)) = name.rsplit_once('-') else { return };
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n != name && n.ends_with(".iso") && n[..n.len() - 4].rsplit_once('-').map(|x| x.0) == Some(stem) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// After a complete destroy: removes the stack's now-empty directories and its lock.
///
/// Console logs, seeds and UEFI variable stores belong to the stack's instances only; after a
/// complete destroy every one left is a leftover of an interrupted removal
/// (the domain was undefined, the process killed before its files went), so
/// they go too. Disks and volumes are objects the plan lists: an unexpected
/// one keeps its directory.
pub fn remove_stack_dir(state_dir: &Path, stack: &str) {
    let dir = state_dir.join(stack);
    // Files of forgotten objects (removed blocks with destroy = false) stay,
    // and with them the record and the directory.
    let forgotten = crate::observe::Names::read(state_dir, stack).map(|n| n.forgotten).unwrap_or_default();
    for (sub, suffixes) in [("console", &[".log", ".log.1"][..]), ("seeds", &[".iso", ".iso.part"][..]), ("waits", &[""][..]), ("nvram", &["_VARS.fd"][..])] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if e.file_type().is_ok_and(|t| t.is_file()) && suffixes.iter().any(|x| n.ends_with(x)) && !forgotten.contains(&e.path().display().to_string()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    for sub in ["disks", "volumes", "console", "seeds", "waits", "nvram"] {
        let _ = std::fs::remove_dir(dir.join(sub));
    }
    // Host keys and known_hosts belong to the instances, all gone now.
    crate::host::ssh::SshDir::of(state_dir, stack).remove_all();
    let _ = std::fs::remove_file(dir.join(".lock"));
    let _ = std::fs::remove_dir(&dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine environment for unit tests: the given libvirt (usually
    /// test:///default), real `ip` links (never called by these tests), fake OVS.
    fn test_env(libvirt: crate::host::libvirt::VirtLibvirt, state_dir: impl Into<PathBuf>) -> Arc<Env> {
        let state_dir: PathBuf = state_dir.into();
        Arc::new(Env {
            links: Box::new(crate::host::links::IpLinks::local()),
            libvirt: Box::new(libvirt),
            ovs: Box::new(crate::host::ovs::FakeOvs::new(Default::default())),
            records: state_dir.clone(),
            state_dir,
            exec: crate::host::exec::Executor::Local,
            deliveries: Default::default(),
            shutdown_timeout: Duration::from_secs(1),
            detach_timeout: Duration::from_secs(1),
            peers: Default::default(),
            memo: Default::default(),
        })
    }

    /// An instance with a connection: its seed step brings the host key,
    /// and after the start the waits run in order between the two
    /// readiness marks (SSH, then cloud-init).
    #[test]
    fn ssh_waits_follow_the_start_between_readiness_marks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("id"), crate::model::ssh_key::fake_private_key("none", 1, "ssh-ed25519")).unwrap();
        std::fs::write(
            dir.path().join("main.vf.hcl"),
            "virtform { stack = \"st\" }\nnetwork \"lan\" {\n  address = \"10.9.0.1/24\"\n}\nport \"p\" {\n  network = network.lan\n  ip = \"10.9.0.5\"\n}\n\
             instance \"vm\" {\n  kernel = \"/k\"\n  ports = [port.p]\n  cloud_init {}\n  connection {\n    user = \"debian\"\n    private_key = file(\"${path.module}/id\")\n  }\n  wait_for {\n    ssh = true\n    cloud_init = true\n  }\n}\n",
        )
        .unwrap();
        let cfg = crate::config::load(&crate::config::LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/state".into(), ..Default::default() }).unwrap_or_else(|e| panic!("{}", e.render(false)));
        let observed = crate::observe::Observed { ovs: Some(Default::default()), ..Default::default() };
        let p = crate::plan::plan(&cfg, &observed, &crate::plan::PlanOptions { state_dir: "/state".into(), ..Default::default() });
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let env = test_env(crate::host::libvirt::VirtLibvirt::open("test:///default").unwrap(), "/state");
        let dag = lower(&p, &cfg, env, false, &BTreeMap::new());
        let ids: Vec<usize> = (0..dag.len()).filter(|i| dag.step(*i).address == "instance.vm").collect();
        let find = |f: &dyn Fn(&Op) -> bool| *ids.iter().find(|i| f(&dag.step(**i).op)).unwrap_or_else(|| panic!("step missing"));
        let seed = find(&|o| matches!(o, Op::WriteSeed { host_key: Some(h), .. } if h.stem == "vm" && h.patterns == ["st-vm", "10.9.0.5"] && h.comment == "virtform:st:instance.vm"));
        let start = find(&|o| matches!(o, Op::Start { .. }));
        let mark = find(&|o| matches!(o, Op::Readiness { pending: true, .. }));
        let ssh = find(&|o| matches!(o, Op::WaitSsh { conn, .. } if conn.user == "debian" && conn.ip.as_deref() == Some("10.9.0.5") && conn.port == 22));
        let ci = find(&|o| matches!(o, Op::WaitCloudInit { .. }));
        let clear = find(&|o| matches!(o, Op::Readiness { pending: false, path } if path == Path::new("/state/st/waits/vm")));
        let before = |a: usize, b: usize| {
            let mut stack = vec![b];
            let mut seen = std::collections::BTreeSet::new();
            while let Some(x) = stack.pop() {
                if x == a {
                    return true;
                }
                if seen.insert(x) {
                    stack.extend(dag.deps(x).iter().copied());
                }
            }
            false
        };
        for (a, b) in [(seed, start), (start, mark), (mark, ssh), (ssh, ci), (ci, clear)] {
            assert!(before(a, b), "{} does not come before {}", dag.step(a).describe(), dag.step(b).describe());
        }
        assert!(dag.step(ssh).is_wait() && dag.step(ci).is_wait());
        // The key never shows: not in a step's description, not in its debug form.
        for i in ids {
            let shown = format!("{} {:?}", dag.step(i).describe(), dag.step(i).op);
            assert!(!shown.contains("b3BlbnNzaC1rZXktdjE") && !shown.contains("PRIVATE"), "{shown}");
        }
    }

    /// Boot files from this machine: one delivery step per file on the
    /// host, shared by the domains booting it, each definition after the
    /// deliveries of its own files, and the deliveries free to start with
    /// the apply (nothing before them).
    #[test]
    fn boot_files_are_delivered_once_per_file_before_the_domains_that_boot_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.vf.hcl"),
            "virtform { stack = \"st\" }\ninstance \"a\" {\n  kernel = \"/boot/k\"\n  initrd = \"/boot/i\"\n}\ninstance \"b\" {\n  kernel = \"/boot/k\"\n}\ninstance \"c\" {\n  kernel = \"/boot/k2\"\n}\n",
        )
        .unwrap();
        let cfg = crate::config::load(&crate::config::LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/state".into(), ..Default::default() }).unwrap_or_else(|e| panic!("{}", e.render(false)));
        let p = crate::plan::plan(&cfg, &crate::observe::Observed::default(), &crate::plan::PlanOptions { state_dir: "/state".into(), ..Default::default() });
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let mut env = test_env(crate::host::libvirt::VirtLibvirt::open("test:///default").unwrap(), "/state");
        let deliveries = &mut Arc::get_mut(&mut env).unwrap().deliveries;
        deliveries.insert("/boot/k".into(), ("/here/k".into(), "aa".repeat(32)));
        deliveries.insert("/boot/i".into(), ("/here/i".into(), "bb".repeat(32)));
        let dag = lower(&p, &cfg, env, false, &BTreeMap::new());
        let all: Vec<usize> = (0..dag.len()).collect();
        let delivery = |f: &str| -> Vec<usize> { all.iter().copied().filter(|i| matches!(&dag.step(*i).op, Op::Deliver { there, .. } if there == Path::new(f))).collect() };
        let (k, i) = (delivery("/boot/k"), delivery("/boot/i"));
        assert_eq!((k.len(), i.len()), (1, 1), "one step per file");
        assert!(delivery("/boot/k2").is_empty(), "a file the host has (not delivered) has no step");
        let define = |name: &str| *all.iter().find(|i| matches!(&dag.step(**i).op, Op::Define { name: n, .. } if n == name)).unwrap();
        let mut a = dag.deps(define("st-a")).to_vec();
        a.sort();
        assert!(a.contains(&k[0]) && a.contains(&i[0]), "{a:?}");
        assert!(dag.deps(define("st-b")).contains(&k[0]) && !dag.deps(define("st-b")).contains(&i[0]));
        assert!(!dag.deps(define("st-c")).contains(&k[0]));
        assert!(dag.deps(k[0]).is_empty() && dag.deps(i[0]).is_empty());
        assert_eq!(dag.step(k[0]).describe(), "deliver boot file /boot/k");
    }

    /// Asked at once from several threads, a value is made once; a failure
    /// is not kept.
    #[test]
    fn once_maps_make_each_value_once_and_retry_failures() {
        let m: OnceMap<u32> = OnceMap::default();
        let made = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let v = m.get_or_try(Path::new("/k"), || {
                        made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        Ok(7)
                    });
                    assert_eq!(v.unwrap(), 7);
                });
            }
        });
        assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(m.get_or_try(Path::new("/f"), || Err(HostError::new("op", "/f", "no"))).is_err());
        assert_eq!(m.get_or_try(Path::new("/f"), || Ok(3)).unwrap(), 3, "tried again after a failure");
    }

    /// Imports whose marker is the registry: recorded before anything uses
    /// the object (the grow of an imported volume, the domain's definition);
    /// on destroy, removed by their own names, then forgotten.
    #[test]
    fn imports_are_registered_before_use_and_forgotten_after_removal() {
        use crate::observe::imports::{Imported, PathFact};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.vf.hcl"),
            "virtform { stack = \"st\" }\nnetwork \"lan\" {\n  type = \"isolated\"\n  bridge = \"virbr-x\"\n  address = \"10.9.0.1/24\"\n}\nvolume \"v\" {\n  size = \"2G\"\n}\nport \"p\" {\n  network = network.lan\n  ip = \"10.9.0.5\"\n}\n\
             instance \"vm\" {\n  kernel = \"/k\"\n  ports = [port.p]\n  volumes = [volume.v]\n}\nimport {\n  to = volume.v\n  id = \"/srv/v.qcow2\"\n}\n",
        )
        .unwrap();
        let cfg = crate::config::load(&crate::config::LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/state".into(), ..Default::default() }).unwrap_or_else(|e| panic!("{}", e.render(false)));
        let mut observed = crate::observe::Observed { ovs: Some(Default::default()), ..Default::default() };
        observed.paths.insert("/srv/v.qcow2".into(), PathFact::File { dev: 1, ino: 2, refusal: None, marker: None });
        observed.files.insert("/srv/v.qcow2".into(), crate::observe::ActualFile { format: ImageFormat::Qcow2, virtual_size: 1 << 30, backing_file: None });
        let p = crate::plan::plan(&cfg, &observed, &crate::plan::PlanOptions { state_dir: "/state".into(), ..Default::default() });
        assert!(p.errors.is_empty() && p.conflicts.is_empty(), "{:?} {:?}", p.errors, p.conflicts);
        let env = || {
            test_env(crate::host::libvirt::VirtLibvirt::open("test:///default").unwrap(), "/state")
        };
        let dag = lower(&p, &cfg, env(), false, &BTreeMap::new());
        let find = |f: &dyn Fn(&Op) -> bool| (0..dag.len()).find(|i| f(&dag.step(*i).op)).unwrap_or_else(|| panic!("step missing"));
        let reg = find(&|o| matches!(o, Op::Register { entry: Imported::File { path, .. }, expect: Some((1, 2)), .. } if path == "/srv/v.qcow2"));
        let grow = find(&|o| matches!(o, Op::ResizeDisk { path, size, .. } if path == Path::new("/srv/v.qcow2") && *size == 2 << 30));
        let define = find(&|o| matches!(o, Op::Define { def, .. } if def.disks.iter().any(|d| d.path == "/srv/v.qcow2")));
        assert!(dag.deps(grow).contains(&reg), "the grow does not wait for the registry");
        assert!(dag.deps(define).contains(&grow), "the domain does not wait for its volume");

        // Destroy, with the registry naming the volume and a libvirt network.
        observed.imports.insert("volume.v".into(), Imported::File { path: "/srv/v.qcow2".into(), dev: 1, ino: 2 });
        observed.imports.insert("network.lan".into(), Imported::LibvirtNetwork { name: "legacy".into(), uuid: "u-1".into() });
        observed.networks.insert("legacy".into(), crate::observe::ActualNetwork { name: "legacy".into(), uuid: "u-1".into(), active: true, autostart: true, def: None });
        let p = crate::plan::plan(&cfg, &observed, &crate::plan::PlanOptions { state_dir: "/state".into(), destroy: true, ..Default::default() });
        let dag = lower(&p, &cfg, env(), false, &BTreeMap::new());
        let find = |f: &dyn Fn(&Op) -> bool| (0..dag.len()).find(|i| f(&dag.step(*i).op)).unwrap_or_else(|| panic!("step missing in {:?}", (0..dag.len()).map(|i| dag.step(i).describe()).collect::<Vec<_>>()));
        let rm = find(&|o| matches!(o, Op::RemoveFile { path } if path == Path::new("/srv/v.qcow2")));
        let net = find(&|o| matches!(o, Op::RemoveLibvirtNetwork { name } if name == "legacy"));
        for (gone, addr) in [(rm, "volume.v"), (net, "network.lan")] {
            let forget = (0..dag.len()).find(|i| matches!(dag.step(*i).op, Op::Unregister { .. }) && dag.step(*i).address == addr).expect("an Unregister step");
            assert!(dag.deps(forget).contains(&gone), "{addr} is forgotten before it is removed");
        }
    }

    #[test]
    fn cloud_init_status_is_read_from_its_own_words() {
        assert_eq!(cloud_init_status("status: done\ntime: x\ndetail:\nDataSourceNoCloud [seed=/dev/vdb]\n"), Ok(true));
        assert_eq!(cloud_init_status("status: running\n"), Ok(false));
        assert_eq!(cloud_init_status("status: not run\n"), Ok(false));
        assert_eq!(cloud_init_status(""), Ok(false));
        let e = cloud_init_status("status: error\ntime: x\ndetail:\n('write_files', KeyError('content'))\n").unwrap_err();
        assert!(e.contains("\"error\"") && e.contains("KeyError('content')"), "{e}");
        assert_eq!(cloud_init_status("status: degraded done\nerrors: []\nrecoverable_errors:\nWARNING: x\n"), Ok(true));
        assert!(cloud_init_status("status: disabled\n").is_err());
    }

    /// An instance's removal takes its UEFI variable store with its logs
    /// (before the undefine), and a complete destroy removes a leftover one
    /// and the directory.
    #[test]
    fn nvram_goes_with_the_instance_and_the_stack() {
        let tmp = tempfile::tempdir().unwrap();
        let (files, here) = instance_files(tmp.path(), tmp.path(), &crate::host::exec::Executor::Local, "st", "instance.vm[\"a\"]");
        assert!(here.is_empty(), "{here:?}");
        assert!(files.contains(&tmp.path().join("st/nvram/vm@a_VARS.fd")), "{files:?}");
        let nvram = tmp.path().join("st/nvram");
        std::fs::create_dir_all(&nvram).unwrap();
        std::fs::write(nvram.join("old_VARS.fd"), b"vars").unwrap();
        remove_stack_dir(tmp.path(), "st");
        assert!(!tmp.path().join("st").exists());
    }

    /// A readiness wait on a guest that stopped fails at once, naming the
    /// domain and its state, instead of waiting out its timeout.
    #[test]
    fn a_wait_on_a_stopped_guest_fails_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        // test:///default: one running domain, "test"; each open is its own host.
        let libvirt = crate::host::libvirt::VirtLibvirt::open("test:///default").unwrap();
        libvirt.destroy("test").unwrap();
        let env = test_env(libvirt, tmp.path());
        let cx = StepContext::new(0, super::super::dag::Cancel::new());
        for (name, state) in [("test", "is shut off"), ("nosuch", "no longer exists")] {
            let step = HostStep {
                address: "instance.vm".into(),
                op: Op::WaitConsole { name: name.into(), log: tmp.path().join("none.log"), pattern: "READY".into(), timeout: Duration::from_secs(600) },
                env: env.clone(),
            };
            let t0 = Instant::now();
            let e = step.run(&cx).expect_err("the wait must fail");
            assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
            assert_eq!(e.message, format!("{name} {state} while waiting for \"READY\" on its console"));
            assert!(e.hint.as_deref().unwrap_or("").contains("virtform console ADDRESS"), "{:?}", e.hint);
        }
    }

    /// The probe that gates an SSH attempt: an open port answers, a closed
    /// one says so in the OS's words, a non-address is refused.
    #[test]
    fn the_ssh_wait_probes_the_port_before_spawning_ssh() {
        let here = crate::host::exec::Executor::Local;
        let t = Duration::from_secs(1);
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(probe_tcp(&here, "127.0.0.1", open.local_addr().unwrap().port(), t), Ok(()));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = probe_tcp(&here, "127.0.0.1", closed, t).unwrap_err();
        assert!(e.to_lowercase().contains("refused"), "{e}");
        assert!(probe_tcp(&here, "not-an-ip", 22, t).unwrap_err().contains("not an IP address"));
        // Locally a guest port is reached directly.
        let ip: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(here.reach_tcp(ip, 22).unwrap().addr, std::net::SocketAddr::new(ip, 22));
    }
}
