//! The libvirt adapter: every libvirt call virtform makes goes through the
//! [`Libvirt`] trait, so the planner and the apply engine can run against an
//! in-memory fake; [`VirtLibvirt`] implements it with the `virt` crate
//! (libvirt's C library, 9.0 on Debian 12).
//!
//! # What the engine can rely on
//!
//! - **Idempotent steps.** `start` on a running domain, `destroy`/`undefine`
//!   of a missing or stopped domain, `shutdown` of a stopped one
//!   ([`ShutdownOutcome::AlreadyOff`]), `attach_device` of a device that is
//!   already there, `detach_device` of one that is gone, `start_network` on
//!   an active network, `destroy_network`/`undefine_network` of a missing one
//!   and `update_network_dhcp_host` of an entry already in (or already out of)
//!   the network all succeed without doing anything. A re-run after a crash
//!   converges.
//! - **Live means "live when running".** `attach_device`/`detach_device` with
//!   `live = true` touch the running guest only when the domain is active;
//!   the persistent config is always changed. Likewise a DHCP host entry goes
//!   into the live network only when it is active.
//! - **Undefine does not stop.** `undefine` of a running domain leaves it
//!   running as a transient domain (libvirt's semantics); stop it first
//!   (`shutdown` or `destroy`). The same holds for networks.
//! - **Errors** ([`HostError`]) name the operation (`"define domain"`), the
//!   object (the domain or network name), libvirt's message, and a hint when
//!   one is known (libvirtd not running, permission denied on a disk path,
//!   hot-plug without ACPI, KVM not usable, …). [`is_not_found`] tells a
//!   missing domain/network apart.
//! - **Observation** ([`Libvirt::domains`]) costs five listing calls plus one
//!   `XMLDesc(INACTIVE)` per domain (fetched by up to eight threads), whatever
//!   the number of domains. The XML never includes secure information.
//! - **Thread safety.** One [`VirtLibvirt`] is shared by all worker threads
//!   (libvirt connections are thread-safe). Network definitions and other
//!   network lifecycle changes are serialized process-wide: parallel defines
//!   race inside libvirt.
//! - **Reconnect.** When a call fails and the connection is no longer alive
//!   (libvirtd restarted), the connection is reopened once and the call
//!   retried once. Every retried closure re-reads the host first, so a retry
//!   never applies a change twice.
//!
//! # `domain_type = "auto"`: [`Libvirt::kvm_usable`]
//!
//! `/dev/kvm` being there and accessible is not enough: on nested hosts whose
//! outer hypervisor does not pass hardware virtualization through, KVM opens
//! and even runs a trivial guest, but a Linux guest hangs in early boot. The
//! check, cached per process and URI ([`VirtLibvirt::kvm_check`] gives the
//! reason):
//! 1. `VIRTFORM_DOMAIN_TYPE=kvm|qemu` decides outright (an explicit override
//!    for hosts where the detection is wrong either way);
//! 2. libvirt's domain capabilities for `virttype='kvm'` must exist, and the
//!    `host-model` CPU they describe must not *disable* any x86-64-v2
//!    baseline feature (`pni`, `ssse3`, `sse4.1`, `sse4.2`, `cx16`,
//!    `popcnt`): QEMU+KVM that cannot give guests SSE3 is a broken nested
//!    setup (QEMU warns "host doesn't support requested feature:
//!    CPUID.01H:ECX.pni");
//! 3. for a local connection, the host CPU must advertise `vmx` or `svm` in
//!    `/proc/cpuinfo` (what `kvm-ok` checks; an outer hypervisor that passes
//!    virtualization through shows them), and `/dev/kvm` must exist.
//!
//! On this project's CI machines (Firecracker guests) 2 and 3 both say no.

use super::HostError;
use crate::model::common::Mac;
use crate::xml::domain::{parse_domain, Marker, ObservedDomain};
use crate::xml::network::{dhcp_host_xml, parse_network, DhcpHost, ObservedNetwork};
use crate::xml::{Doc, Elem, XmlError, NS};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::network::Network;
use virt::sys;

/// The environment variable that overrides `domain_type = "auto"`: `kvm` or `qemu`.
pub const DOMAIN_TYPE_ENV: &str = "VIRTFORM_DOMAIN_TYPE";

/// How often a live detach is re-requested while waiting for the guest.
const DETACH_RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// How often the ACPI power button is pressed again during a graceful shutdown.
const SHUTDOWN_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// Polling interval for state and device waits.
const POLL: Duration = Duration::from_millis(200);
/// Up to this many threads fetch domain XML in [`Libvirt::domains`].
const MAX_FETCH_THREADS: usize = 8;

// ---------------------------------------------------------------- types

/// A domain's run state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainState {
    /// Running (also libvirt's "blocked": running, waiting on a resource).
    Running,
    Paused,
    Shutoff,
    /// `shutdown` (being shut down), `crashed`, `pmsuspended`, `nostate`, or `unknown`.
    Other(String),
}

/// One domain as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainInfo {
    pub name: String,
    /// Lowercase, dashed.
    pub uuid: String,
    pub state: DomainState,
    pub autostart: bool,
    pub persistent: bool,
    /// `virDomainGetXMLDesc(VIR_DOMAIN_XML_INACTIVE)`: the configuration, no secure information.
    pub inactive_xml: String,
    /// None when the XML could not be parsed; [`parse_error`](Self::parse_error) says why.
    pub observed: Option<ObservedDomain>,
    pub parse_error: Option<String>,
    /// The virtform marker from `<metadata>`, read on its own so that a
    /// domain whose XML virtform cannot fully parse still shows its owner.
    pub marker: Option<Marker>,
}

impl DomainInfo {
    /// The (stack, address) that owns this domain, from its `<metadata>`
    /// marker; None for a domain virtform did not create.
    pub fn owner(&self) -> Option<(&str, &str)> {
        self.marker.as_ref().filter(|m| !m.stack.is_empty() && !m.address.is_empty()).map(|m| (m.stack.as_str(), m.address.as_str()))
    }

    /// Running or paused (a QEMU process exists).
    pub fn is_active(&self) -> bool {
        matches!(self.state, DomainState::Running | DomainState::Paused) || matches!(&self.state, DomainState::Other(s) if s == "shutdown" || s == "pmsuspended")
    }
}

/// One libvirt network as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkInfo {
    pub name: String,
    pub uuid: String,
    pub active: bool,
    pub autostart: bool,
    pub persistent: bool,
    /// `virNetworkGetXMLDesc(VIR_NETWORK_XML_INACTIVE)`: the configuration.
    pub xml: String,
    pub observed: Option<ObservedNetwork>,
    pub parse_error: Option<String>,
}

/// A DHCP lease handed out by a libvirt network's dnsmasq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Lowercase.
    pub mac: String,
    pub ip: String,
    pub hostname: Option<String>,
    /// Seconds since the epoch.
    pub expiry: i64,
}

/// How a graceful shutdown was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The QEMU guest agent (`guest-shutdown`): answered, so the guest's
    /// own init system shuts down, whether or not it listens to ACPI.
    Agent,
    /// The ACPI power button: the guest has no agent channel, or its agent
    /// did not answer.
    Acpi,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Agent => "the guest agent",
            Via::Acpi => "the ACPI power button",
        }
    }
}

/// One interface as the guest agent reports it (`guest-network-get-interfaces`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestInterface {
    /// The guest's name for it (`eth0`, `ens3`, `lo`).
    pub name: String,
    /// Lowercase; None when the guest reports none.
    pub mac: Option<String>,
    /// Addresses with their prefix lengths, as reported.
    pub addrs: Vec<(std::net::IpAddr, u8)>,
}

/// How [`Libvirt::shutdown`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// The guest powered off after the last request, made through `Via`.
    Graceful(Via),
    /// The guest did not power off within the timeout and was destroyed.
    Forced,
    /// It was not running (or did not exist).
    AlreadyOff,
}

/// The answer of the KVM check, with the reason (for `plan` output and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmCheck {
    pub usable: bool,
    pub reason: String,
}

/// Everything virtform asks of libvirt. See the module documentation for
/// the guarantees (idempotency, "live when running", errors).
pub trait Libvirt: Send + Sync {
    /// Every domain with its inactive XML, state and autostart, sorted by
    /// name. Five listing calls plus one XMLDesc per domain. Run once per plan.
    fn domains(&self) -> Result<Vec<DomainInfo>, HostError>;
    /// One domain by name, None when it does not exist. The default filters
    /// [`domains`](Self::domains); [`VirtLibvirt`] looks it up directly.
    fn domain(&self, name: &str) -> Result<Option<DomainInfo>, HostError> {
        Ok(self.domains()?.into_iter().find(|d| d.name == name))
    }
    /// One domain's state alone (no XML), None when it does not exist: what
    /// a readiness wait polls to notice a guest that stopped.
    fn domain_state(&self, name: &str) -> Result<Option<DomainState>, HostError> {
        Ok(self.domain(name)?.map(|d| d.state))
    }
    /// Every libvirt network with its inactive XML, sorted by name.
    fn networks(&self) -> Result<Vec<NetworkInfo>, HostError>;
    /// Defines (or redefines) a domain; returns its UUID. Redefining a
    /// running domain changes its persistent config only (the next start
    /// uses it).
    fn define(&self, xml: &str) -> Result<String, HostError>;
    /// Undefines with managed save, snapshot metadata and NVRAM; done when
    /// the domain does not exist. A running domain keeps running (transient).
    fn undefine(&self, name: &str) -> Result<(), HostError>;
    /// Starts a defined domain (resumes a paused one); done when running.
    fn start(&self, name: &str) -> Result<(), HostError>;
    /// Asks the guest to power off through its agent when the agent answers,
    /// else with the ACPI power button; waits up to `timeout` for it to
    /// power off (asking again every 10 s, agent first again), then destroys.
    fn shutdown(&self, name: &str, timeout: Duration) -> Result<ShutdownOutcome, HostError>;
    /// The guest's interfaces as its QEMU guest agent reports them
    /// (`virDomainInterfaceAddresses`, source agent). An error when the
    /// domain is not running, has no agent channel, or its agent does not
    /// answer (libvirt answers at once while the agent is not connected,
    /// and gives up a connected agent that does not answer its sync after
    /// 5 s). Also how `wait_for { agent = true }` asks whether the agent is up.
    fn agent_interfaces(&self, name: &str) -> Result<Vec<GuestInterface>, HostError> {
        Err(HostError::new("ask the guest agent", name, "not supported by this libvirt adapter".to_string()))
    }
    /// Hard power-off; done when stopped or missing.
    fn destroy(&self, name: &str) -> Result<(), HostError>;
    fn set_autostart(&self, name: &str, on: bool) -> Result<(), HostError>;
    /// Writes virtform's marker element into the domain's `<metadata>`
    /// (persistent config, and the running guest's when active) without
    /// redefining it: an import's only change.
    fn set_marker(&self, name: &str, element: &str) -> Result<(), HostError> {
        let _ = element;
        Err(HostError::new("set marker", name, "not supported by this libvirt adapter".to_string()))
    }
    /// Removes virtform's marker element from the domain's `<metadata>`
    /// (persistent config, and the running guest's when active): a
    /// `removed { lifecycle { destroy = false } }`. No marker: done.
    fn remove_marker(&self, name: &str) -> Result<(), HostError> {
        Err(HostError::new("remove marker", name, "not supported by this libvirt adapter".to_string()))
    }
    /// Attaches a `<disk>` or `<interface>`: always to the persistent config,
    /// and to the running guest when `live` and the domain is active.
    /// Already attached (same target and source, or same MAC): done. The
    /// target or MAC used by another device: an error.
    fn attach_device(&self, name: &str, xml: &str, live: bool) -> Result<(), HostError>;
    /// Nova's way: detach from the persistent config, then (when `live` and
    /// active) from the guest, polling the live XML and re-requesting the
    /// detach every 5 s until the device (disk by target, NIC by MAC) is
    /// gone, or fail after `timeout` saying the guest did not release it.
    fn detach_device(&self, name: &str, xml: &str, live: bool, timeout: Duration) -> Result<(), HostError>;
    /// Grows a disk of a running domain to `bytes` (`virDomainBlockResize`,
    /// bytes). For a stopped domain resize the file instead (`qemu-img resize`).
    fn block_resize(&self, name: &str, target: &str, bytes: u64) -> Result<(), HostError>;
    /// Defines (or redefines) a network. Serialized process-wide.
    fn define_network(&self, xml: &str) -> Result<(), HostError>;
    fn start_network(&self, name: &str) -> Result<(), HostError>;
    fn destroy_network(&self, name: &str) -> Result<(), HostError>;
    /// Done when missing. An active network keeps running (transient).
    fn undefine_network(&self, name: &str) -> Result<(), HostError>;
    /// Sets a network's autostart flag; done when already so.
    fn set_network_autostart(&self, name: &str, on: bool) -> Result<(), HostError>;
    /// The live XML of an active domain (the inactive one when it is shut
    /// off); None when the domain does not exist.
    fn live_xml(&self, name: &str) -> Result<Option<String>, HostError>;
    /// Adds (`add`) or removes a `<host mac=… ip=… name=…/>` DHCP entry, in
    /// the config and (when active) the live network. An entry with the same
    /// MAC but other values is modified in place.
    fn update_network_dhcp_host(&self, network: &str, host_xml: &str, add: bool) -> Result<(), HostError>;
    /// The network's current DHCP leases.
    fn leases(&self, network: &str) -> Result<Vec<Lease>, HostError>;
    /// Whether `domain_type = "auto"` should pick `kvm` (see the module docs).
    fn kvm_usable(&self) -> bool;
}

// ---------------------------------------------------------------- errors

/// Whether the error says a domain or network does not exist.
pub fn is_not_found(e: &HostError) -> bool {
    e.message.starts_with("Domain not found") || e.message.starts_with("Network not found")
}

fn code_is(e: &VirtError, n: ErrorNumber) -> bool {
    e.code().is(n)
}

fn virt_not_found(e: &VirtError) -> bool {
    code_is(e, ErrorNumber::NoDomain) || code_is(e, ErrorNumber::NoNetwork)
}

fn unsupported_flags(e: &VirtError) -> bool {
    (code_is(e, ErrorNumber::InvalidArg) || code_is(e, ErrorNumber::NoSupport)) && e.message().contains("unsupported flags")
}

/// A hint for what libvirt said, when one helps.
fn hint_for(code_known: Option<ErrorNumber>, msg: &str) -> Option<&'static str> {
    let m = msg.to_ascii_lowercase();
    if code_known == Some(ErrorNumber::NoConnect)
        || m.contains("failed to connect socket")
        || m.contains("connection refused")
        || m.contains("libvirt-sock")
        || m.contains("cannot recv data")
        || m.contains("client socket is closed")
    {
        return Some("is libvirtd running? scripts/host-setup starts it");
    }
    if code_known == Some(ErrorNumber::AuthFailed) || (code_known == Some(ErrorNumber::OperationDenied) && !m.contains("read only")) || m.contains("authentication") {
        return Some("connect as root or as a member of the libvirt group (qemu:///system needs it)");
    }
    if m.contains("bus 'pci.0' does not support hotplugging") || m.contains("does not support hotplugging") {
        return Some("hot-plug needs <features><acpi/></features> in the domain (virtform writes it; a domain defined elsewhere may lack it)");
    }
    if m.contains("permission denied") {
        return Some(
            "QEMU runs as libvirt-qemu: the file and every directory above it must be reachable by that user (a 0700 directory or a path under /root is not); \
             with AppArmor, only the paths named in the domain XML are allowed",
        );
    }
    if m.contains("/dev/kvm") || m.contains("kvm is not available") || m.contains("kvm_init") {
        return Some("KVM is not usable on this host: set domain_type = \"qemu\" (or VIRTFORM_DOMAIN_TYPE=qemu)");
    }
    if m.contains("already exists with uuid") {
        return Some("a domain with this name but another UUID exists: it is not this resource (import it on purpose, or pick another name)");
    }
    if m.contains("is already in use by interface") || m.contains("already in use by network") || m.contains("bridge name") && m.contains("in use") {
        return Some("another network or host link already uses this bridge name or address range");
    }
    if m.contains("no such file or directory") {
        return Some("a file named in the XML does not exist on the host");
    }
    if code_known == Some(ErrorNumber::NoSupport) || m.contains("not supported by the connection driver") {
        return Some("this libvirt driver does not support the operation");
    }
    None
}

fn host_err(op: &str, object: &str, e: &VirtError) -> HostError {
    let code = match e.code() {
        virt::enumutil::Enum::Known(k) => Some(k),
        virt::enumutil::Enum::Unknown(_) => None,
    };
    let mut message = e.message().trim().to_string();
    // is_not_found() relies on libvirt's English prefixes; keep them even if
    // a daemon answers in another language.
    for (n, prefix) in [(ErrorNumber::NoDomain, "Domain not found"), (ErrorNumber::NoNetwork, "Network not found")] {
        if code_is(e, n) && !message.starts_with(prefix) {
            message = format!("{prefix}: {message}");
        }
    }
    let mut he = HostError::new(op, object, message);
    if let Some(h) = hint_for(code, e.message()) {
        he = he.hint(h);
    }
    he
}

// ---------------------------------------------------------------- the adapter

/// The libvirt connection, shared by worker threads, and a few extra
/// connections for long operations.
///
/// libvirtd serves at most `max_client_requests` (default 5) calls of one
/// client at a time; a domain start under TCG holds its call for seconds, so
/// ten parallel starts over one connection went in waves of about three
/// (BENCHMARKS.md, "Starting guests"). Long calls ([`Self::call_long`]) take
/// an extra connection of their own when one is idle or can be opened (up to
/// [`LONG_CONNECTIONS`]), and fall back to the shared one otherwise.
#[derive(Debug)]
pub struct VirtLibvirt {
    uri: String,
    state: RwLock<ConnState>,
    /// Idle extra connections, and how many are open (idle or in use).
    long: Mutex<(Vec<Connect>, usize)>,
    /// The host's executor: a remote one's SSH session carries these
    /// connections (the URI names the session's wrapper), so it lives as
    /// long as the adapter and is dropped after them (fields drop in order).
    exec: super::exec::Executor,
}

/// Extra connections for long calls (each serves one call at a time).
const LONG_CONNECTIONS: usize = 8;

#[derive(Debug)]
struct ConnState {
    conn: Connect,
    generation: u64,
}

/// Serializes network lifecycle changes across every connection of the process.
static NETWORK_LOCK: Mutex<()> = Mutex::new(());

/// How long a lost connection is retried before the operation fails.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(20);

fn network_lock() -> std::sync::MutexGuard<'static, ()> {
    NETWORK_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_connect(uri: &str) -> Result<Connect, HostError> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    // Otherwise libvirt prints every error to stderr as well.
    QUIET.call_once(virt::error::clear_error_callback);
    if uri.contains('\0') {
        return Err(HostError::new("connect to libvirt", uri.replace('\0', "\\0"), "the URI contains a NUL character"));
    }
    Connect::open(Some(uri)).map_err(|e| host_err("connect to libvirt", uri, &e))
}

impl VirtLibvirt {
    /// Opens a read-write connection (`qemu:///system`, `test:///default`, `qemu+ssh://…`).
    pub fn open(uri: &str) -> Result<Self, HostError> {
        Self::open_with(uri, super::exec::Executor::Local)
    }

    /// Opens a connection to the executor's host: `local_uri` for the local
    /// host, [`super::exec::Executor::libvirt_uri`] (qemu+ssh through the
    /// executor's SSH connection, its known_hosts checked) for a remote one.
    pub fn open_on(exec: &super::exec::Executor, local_uri: &str) -> Result<Self, HostError> {
        let uri = exec.libvirt_uri(local_uri);
        Self::open_with(&uri, exec.clone()).map_err(|mut e| {
            if !exec.is_local() {
                e.op = format!("{} on {}", e.op, exec.host_name());
            }
            e
        })
    }

    fn open_with(uri: &str, exec: super::exec::Executor) -> Result<Self, HostError> {
        let conn = open_connect(uri)?;
        Ok(VirtLibvirt { uri: uri.to_string(), exec, state: RwLock::new(ConnState { conn, generation: 0 }), long: Mutex::new((Vec::new(), 0)) })
    }

    /// Migrates the running domain `name` live to `dest`'s host, the way
    /// Nova does without shared storage: the client drives libvirt's
    /// migration protocol over both connections (source and destination
    /// talk directly for the memory and the disks), the disks' top layers
    /// are copied into the files already prepared on the destination
    /// (`VIR_MIGRATE_NON_SHARED_INC`: their backing images must be there),
    /// the domain is defined there with its own definition (UUID, MACs,
    /// marker) and undefined here. On failure libvirt leaves the domain
    /// running here.
    pub fn migrate_live(&self, name: &str, dest: &VirtLibvirt) -> Result<(), HostError> {
        use virt::sys;
        let flags = sys::VIR_MIGRATE_LIVE
            | sys::VIR_MIGRATE_PERSIST_DEST
            | sys::VIR_MIGRATE_UNDEFINE_SOURCE
            | sys::VIR_MIGRATE_NON_SHARED_INC
            | sys::VIR_MIGRATE_ABORT_ON_ERROR
            | sys::VIR_MIGRATE_CHANGE_PROTECTION;
        let (dconn, _) = dest.current();
        let to = if dest.exec.is_local() { "this machine" } else { dest.exec.host_name() };
        let on = if self.exec.is_local() { String::new() } else { format!(" on {}", self.exec.host_name()) };
        let Some(d) = self.call("look up domain", name, |c| lookup_domain(c, name))? else {
            return Err(HostError::new(format!("migrate domain{on}"), name, "no such domain").hint("plan again"));
        };
        d.migrate2(&dconn, None, flags, None, None, 0).map(|_| ()).map_err(|e| {
            HostError::new(format!("migrate domain{on} to {to}"), name, e.to_string())
                .hint("libvirt leaves a domain whose migration failed running on its source; plan again to see where it is")
        })
    }

    /// The executor of this adapter's host.
    pub fn executor(&self) -> &super::exec::Executor {
        &self.exec
    }

    /// The URI this adapter was opened with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn current(&self) -> (Connect, u64) {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        (s.conn.clone(), s.generation)
    }

    /// Replaces the connection unless another thread already did since
    /// `generation`, retrying for [`RECONNECT_PATIENCE`] (a restart of libvirtd).
    fn reconnect(&self, generation: u64) -> Result<Connect, HostError> {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        if s.generation == generation {
            // A restarting libvirtd needs a few seconds before its socket answers.
            let deadline = Instant::now() + RECONNECT_PATIENCE;
            let conn = loop {
                match open_connect(&self.uri) {
                    Ok(c) => break c,
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(_) => std::thread::sleep(Duration::from_millis(250)),
                }
            };
            tracing::warn!(uri = %self.uri, "libvirt connection was lost; reconnected");
            s.conn = conn;
            s.generation += 1;
        }
        Ok(s.conn.clone())
    }

    /// Runs `f` on the connection; when it fails and the connection is dead,
    /// reconnects once and runs `f` again. `f` must re-read what it changes.
    fn call<T>(&self, op: &str, object: &str, f: impl Fn(&Connect) -> Result<T, VirtError>) -> Result<T, HostError> {
        let (conn, generation) = self.current();
        match f(&conn) {
            Ok(v) => Ok(v),
            Err(e) => {
                if conn.is_alive().unwrap_or(false) {
                    return Err(host_err(op, object, &e));
                }
                drop(conn);
                let conn = self.reconnect(generation).map_err(|re| {
                    let mut he = host_err(op, object, &e);
                    he.message = format!("{} (the connection was lost and reconnecting failed: {})", he.message, re.message);
                    he
                })?;
                f(&conn).map_err(|e| host_err(op, object, &e))
            }
        }
    }

    /// [`Self::call`] for a call that may hold libvirtd for seconds (a domain
    /// start or destroy): on an extra connection of its own when one is idle
    /// or may be opened, else on the shared one. A failure on an extra
    /// connection that is dead drops it and runs `f` again through
    /// [`Self::call`] (which reconnects the shared one when needed).
    fn call_long<T>(&self, op: &str, object: &str, f: impl Fn(&Connect) -> Result<T, VirtError>) -> Result<T, HostError> {
        let taken = {
            let mut g = self.long.lock().unwrap_or_else(|p| p.into_inner());
            match g.0.pop() {
                Some(c) => Some(Ok(c)),
                None if g.1 < LONG_CONNECTIONS => {
                    g.1 += 1;
                    Some(Err(()))
                }
                None => None,
            }
        };
        let conn = match taken {
            None => return self.call(op, object, f),
            Some(Ok(c)) => c,
            // Opened outside the lock; a failure gives the slot back.
            Some(Err(())) => match open_connect(&self.uri) {
                Ok(c) => c,
                Err(_) => {
                    self.long.lock().unwrap_or_else(|p| p.into_inner()).1 -= 1;
                    return self.call(op, object, f);
                }
            },
        };
        match f(&conn) {
            Ok(v) => {
                self.long.lock().unwrap_or_else(|p| p.into_inner()).0.push(conn);
                Ok(v)
            }
            Err(e) if conn.is_alive().unwrap_or(false) => {
                self.long.lock().unwrap_or_else(|p| p.into_inner()).0.push(conn);
                Err(host_err(op, object, &e))
            }
            Err(_) => {
                drop(conn);
                self.long.lock().unwrap_or_else(|p| p.into_inner()).1 -= 1;
                self.call(op, object, f)
            }
        }
    }

    /// The domain's XML: live (`inactive = false`) or its persistent config.
    pub fn domain_xml(&self, name: &str, inactive: bool) -> Result<String, HostError> {
        let flags = if inactive { sys::VIR_DOMAIN_XML_INACTIVE } else { 0 };
        self.call("read domain XML", name, |c| c.lookup_domain_by_name(name)?.xml_desc(flags))
    }

    /// The network's XML: live or its persistent config.
    pub fn network_xml(&self, name: &str, inactive: bool) -> Result<String, HostError> {
        self.call("read network XML", name, |c| {
            let n = c.lookup_network_by_name(name)?;
            if inactive { network_config_xml(&n) } else { n.xml_desc(0) }
        })
    }

    /// The KVM check with its reason; see the module docs. Cached per
    /// process and URI, except the environment override.
    pub fn kvm_check(&self) -> KvmCheck {
        if let Some(c) = kvm_override(std::env::var(DOMAIN_TYPE_ENV).ok().as_deref()) {
            return c;
        }
        static CACHE: Mutex<Vec<(String, KvmCheck)>> = Mutex::new(Vec::new());
        if let Some((_, c)) = CACHE.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(u, _)| *u == self.uri) {
            return c.clone();
        }
        let caps = self.call("read domain capabilities", "kvm", |c| c.domain_capabilities(None, Some("x86_64"), None, Some("kvm"), 0));
        let local = if is_local_uri(&self.uri) {
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").map_err(|e| format!("cannot read /proc/cpuinfo: {e}"));
            // Whether QEMU (libvirt-qemu, group kvm) may open it is libvirt's
            // business (its capabilities say); here only that it exists.
            let dev = match std::fs::metadata("/dev/kvm") {
                Ok(m) if std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()) => Ok(()),
                Ok(_) => Err("/dev/kvm is not a character device".to_string()),
                Err(e) => Err(format!("/dev/kvm: {e}")),
            };
            Some((cpuinfo, dev))
        } else {
            None
        };
        let check = decide_kvm(caps.as_deref().map_err(|e| e.to_string()), local.as_ref().map(|(c, d)| (c.as_deref().map_err(Clone::clone), d.clone())));
        tracing::info!(uri = %self.uri, usable = check.usable, reason = %check.reason, "KVM check");
        CACHE.lock().unwrap_or_else(|p| p.into_inner()).push((self.uri.clone(), check.clone()));
        check
    }
}

fn lookup_domain(c: &Connect, name: &str) -> Result<Option<Domain>, VirtError> {
    match c.lookup_domain_by_name(name) {
        Ok(d) => Ok(Some(d)),
        Err(e) if virt_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The persistent config of a network. Drivers without
/// `VIR_NETWORK_XML_INACTIVE` (test:///default) give the live XML instead.
fn network_config_xml(n: &Network) -> Result<String, VirtError> {
    match n.xml_desc(sys::VIR_NETWORK_XML_INACTIVE) {
        Err(e) if unsupported_flags(&e) => n.xml_desc(0),
        r => r,
    }
}

fn lookup_network(c: &Connect, name: &str) -> Result<Option<Network>, VirtError> {
    match c.lookup_network_by_name(name) {
        Ok(n) => Ok(Some(n)),
        Err(e) if virt_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn map_state(s: virt::domain::DomainStateEnum) -> DomainState {
    use virt::domain::DomainState as S;
    match s {
        virt::enumutil::Enum::Known(S::Running | S::Blocked) => DomainState::Running,
        virt::enumutil::Enum::Known(S::Paused) => DomainState::Paused,
        virt::enumutil::Enum::Known(S::Shutoff) => DomainState::Shutoff,
        virt::enumutil::Enum::Known(S::Shutdown) => DomainState::Other("shutdown".into()),
        virt::enumutil::Enum::Known(S::Crashed) => DomainState::Other("crashed".into()),
        virt::enumutil::Enum::Known(S::PMSuspended) => DomainState::Other("pmsuspended".into()),
        virt::enumutil::Enum::Known(S::NoState) => DomainState::Other("nostate".into()),
        virt::enumutil::Enum::Unknown(_) => DomainState::Other("unknown".into()),
    }
}

/// The state of one domain (one call; errors checked, unlike `Domain::state`).
fn domain_state(d: &Domain) -> Result<DomainState, VirtError> {
    Ok(map_state(d.info()?.state))
}

/// The marker in a domain's `<metadata>`, read without the rest of the document.
fn read_marker(xml: &str) -> Option<Marker> {
    let doc = Doc::parse(xml, "domain").ok()?;
    let m = doc.root().child("metadata")?.ns_child(NS, "instance")?;
    let get = |n: &str| m.attr(n).or_else(|| m.ns_attr(NS, n)).unwrap_or("").to_string();
    Some(Marker { stack: get("stack"), address: get("address"), spec_hash: get("spec-hash") })
}

/// `uuid` is the domain's raw UUID (formatted here: libvirt's own
/// formatter, sixteen `%02x` through snprintf, was 6 % of the instructions
/// of a converged plan over 1,000 domains).
fn domain_info(d: &Domain, uuid: &[u8; 16], state: DomainState, autostart: bool, persistent: bool, xml: String) -> Result<DomainInfo, VirtError> {
    let (observed, parse_error) = match parse_domain(&xml) {
        Ok(o) => (Some(o), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(DomainInfo {
        name: d.name()?,
        uuid: crate::model::common::uuid_string(uuid),
        state,
        autostart,
        persistent,
        // The parsed definition carries the marker; the separate (second)
        // parse only when the definition could not be parsed as a whole.
        marker: match &observed {
            Some(o) => o.marker.clone(),
            None => read_marker(&xml),
        },
        inactive_xml: xml,
        observed,
        parse_error,
    })
}

/// Raw UUIDs: formatting thousands of UUID strings showed in profiles.
/// Whether the running guest's agent has its channel open (libvirt's
/// `<target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>`
/// in the live XML).
fn agent_connected(d: &Domain) -> bool {
    d.xml_desc(0).ok().is_some_and(|x| channel_state_connected(&x))
}

/// Whether the agent's channel closes within 3 s (libvirt learns of it by
/// an event, shortly after the port closed).
fn agent_closes(d: &Domain) -> bool {
    let start = Instant::now();
    loop {
        if !agent_connected(d) {
            return true;
        }
        if start.elapsed() >= Duration::from_secs(3) {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

fn channel_state_connected(xml: &str) -> bool {
    let Ok(doc) = Doc::parse(xml, "domain") else { return false };
    doc.root().child("devices").is_some_and(|devs| {
        devs.children("channel").any(|c| {
            c.child("target").is_some_and(|t| t.attr("name") == Some(crate::xml::domain::GUEST_AGENT_CHANNEL) && t.attr("state") == Some("connected"))
        })
    })
}

fn uuid_set(ds: Vec<Domain>) -> HashSet<[u8; 16]> {
    ds.iter().filter_map(|d| d.uuid().ok()).map(|u| *u.as_bytes()).collect()
}

fn domain_name_of(xml: &str) -> String {
    Doc::parse(xml, "domain").ok().and_then(|d| d.root().child("name").map(|n| n.text().trim().to_string())).unwrap_or_else(|| "(unnamed domain)".into())
}

fn network_name_of(xml: &str) -> String {
    Doc::parse(xml, "network").ok().and_then(|d| d.root().child("name").map(|n| n.text().trim().to_string())).unwrap_or_else(|| "(unnamed network)".into())
}

// ---------------------------------------------------------------- devices

/// How a device is identified in a domain: a disk by its target, a NIC by
/// its MAC, a virtio channel (the guest agent's) by its target name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DeviceKey {
    Disk { target: String, source: Option<String> },
    Nic { mac: String },
    Channel { name: String },
}

impl DeviceKey {
    fn describe(&self) -> String {
        match self {
            DeviceKey::Disk { target, .. } => format!("disk {target}"),
            DeviceKey::Nic { mac } => format!("interface {mac}"),
            DeviceKey::Channel { name } => format!("channel {name}"),
        }
    }
}

fn disk_source(d: Elem<'_>) -> Option<String> {
    let s = d.child("source")?;
    s.attr("file").or_else(|| s.attr("dev")).or_else(|| s.attr("dir")).or_else(|| s.attr("name")).map(str::to_string)
}

fn device_key(xml: &str) -> Result<DeviceKey, String> {
    let doc = match Doc::parse(xml, "disk") {
        Ok(r) => r,
        Err(XmlError::UnexpectedRoot { found, .. }) if found == "interface" || found == "channel" => Doc::parse(xml, if found == "interface" { "interface" } else { "channel" }).map_err(|e| e.to_string())?,
        Err(XmlError::UnexpectedRoot { found, .. }) => return Err(format!("expected a <disk>, <interface> or <channel> device, found <{found}>")),
        Err(e) => return Err(e.to_string()),
    };
    let root = doc.root();
    if root.name() == "disk" {
        let target = root.child("target").and_then(|t| t.attr("dev")).filter(|t| !t.is_empty()).ok_or("the <disk> has no <target dev=…>")?;
        Ok(DeviceKey::Disk { target: target.to_string(), source: disk_source(root) })
    } else if root.name() == "channel" {
        let name = root.child("target").filter(|t| t.attr("type") == Some("virtio")).and_then(|t| t.attr("name")).ok_or("the <channel> has no <target type='virtio' name=…>")?;
        Ok(DeviceKey::Channel { name: name.to_string() })
    } else {
        let mac = root.child("mac").and_then(|m| m.attr("address")).ok_or("the <interface> has no <mac address=…> (virtform matches NICs by MAC)")?;
        Ok(DeviceKey::Nic { mac: mac.trim().to_ascii_lowercase() })
    }
}

/// Whether a domain document holds the device.
#[derive(Debug, PartialEq, Eq)]
enum Presence {
    Absent,
    Same,
    /// The key is used by another device (described).
    Other(String),
}

fn presence(domain_xml: &str, key: &DeviceKey) -> Result<Presence, XmlError> {
    let doc = Doc::parse(domain_xml, "domain")?;
    let root = doc.root();
    let Some(devices) = root.child("devices") else { return Ok(Presence::Absent) };
    match key {
        DeviceKey::Disk { target, source } => {
            for d in devices.children("disk") {
                if d.child("target").and_then(|t| t.attr("dev")) == Some(target.as_str()) {
                    let found = disk_source(d);
                    return Ok(if source.is_none() || found == *source {
                        Presence::Same
                    } else {
                        Presence::Other(format!("target {target} is used by {}", found.as_deref().unwrap_or("an empty drive")))
                    });
                }
            }
        }
        DeviceKey::Nic { mac } => {
            for i in devices.children("interface") {
                if i.child("mac").and_then(|m| m.attr("address")).map(|a| a.trim().to_ascii_lowercase()).as_deref() == Some(mac.as_str()) {
                    return Ok(Presence::Same);
                }
            }
        }
        DeviceKey::Channel { name } => {
            if devices.children("channel").any(|c| c.child("target").is_some_and(|t| t.attr("type") == Some("virtio") && t.attr("name") == Some(name.as_str()))) {
                return Ok(Presence::Same);
            }
        }
    }
    Ok(Presence::Absent)
}

/// Errors after which waiting for a detach cannot help.
fn permanent(e: &VirtError) -> bool {
    [ErrorNumber::NoSupport, ErrorNumber::OperationUnsupported, ErrorNumber::InvalidArg, ErrorNumber::XmlError, ErrorNumber::ConfigUnsupported, ErrorNumber::NoDomain]
        .iter()
        .any(|n| code_is(e, *n))
}

// ---------------------------------------------------------------- DHCP hosts

fn parse_host_entry(xml: &str) -> Result<DhcpHost, String> {
    let doc = Doc::parse(xml, "host").map_err(|e| e.to_string())?;
    let h = doc.root();
    let mac_s = h.attr("mac").ok_or("the <host> entry has no mac (virtform matches DHCP entries by MAC)")?;
    let mac = Mac::parse(mac_s.trim()).map_err(|e| format!("invalid mac {mac_s:?}: {e}"))?;
    let ip_s = h.attr("ip").ok_or("the <host> entry has no ip")?;
    let ip: Ipv4Addr = ip_s.trim().parse().map_err(|_| format!("invalid ip {ip_s:?}: expected an IPv4 address"))?;
    Ok(DhcpHost { mac, ip, name: h.attr("name").filter(|n| !n.is_empty()).map(str::to_string) })
}

/// The virNetworkUpdate command (and its XML) that brings `hosts` to the wish; None when nothing to do.
fn dhcp_command(hosts: &[DhcpHost], want: &DhcpHost, add: bool, want_xml: &str) -> Option<(sys::virNetworkUpdateCommand, String)> {
    let existing = hosts.iter().find(|h| h.mac == want.mac);
    match (add, existing) {
        (true, None) => Some((sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, want_xml.to_string())),
        (true, Some(h)) if h == want => None,
        (true, Some(_)) => Some((sys::VIR_NETWORK_UPDATE_COMMAND_MODIFY, want_xml.to_string())),
        (false, Some(h)) => Some((sys::VIR_NETWORK_UPDATE_COMMAND_DELETE, dhcp_host_xml(&h.mac, h.ip, h.name.as_deref()))),
        (false, None) => None,
    }
}

// ---------------------------------------------------------------- leases (FFI)

unsafe extern "C" {
    fn free(p: *mut std::ffi::c_void);
}

/// `virNetworkGetDHCPLeases` (not wrapped by the `virt` crate).
fn dhcp_leases(net: &Network) -> Result<Vec<Lease>, VirtError> {
    use std::ffi::{c_char, CStr};
    let mut arr: *mut sys::virNetworkDHCPLeasePtr = std::ptr::null_mut();
    // SAFETY: `net` holds a valid reference to a virNetwork for the duration
    // of the call; `arr` is an out-parameter libvirt fills with an array of
    // `n` lease pointers it allocated (or leaves null when n <= 0).
    let n = unsafe { sys::virNetworkGetDHCPLeases(net.as_ptr(), std::ptr::null(), &mut arr, 0) };
    if n < 0 {
        return Err(VirtError::last_error());
    }
    let text = |p: *mut c_char| -> Option<String> {
        // SAFETY: libvirt's lease strings are NUL-terminated or null.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    };
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: i < n, the array has n valid entries; each lease is read
        // once and then freed with libvirt's own free function.
        unsafe {
            let l = *arr.add(i);
            if l.is_null() {
                continue;
            }
            out.push(Lease {
                mac: text((*l).mac).unwrap_or_default().to_ascii_lowercase(),
                ip: text((*l).ipaddr).unwrap_or_default(),
                hostname: text((*l).hostname).filter(|h| !h.is_empty() && h != "*"),
                expiry: (*l).expirytime,
            });
            sys::virNetworkDHCPLeaseFree(l);
        }
    }
    if !arr.is_null() {
        // SAFETY: the array itself was allocated by libvirt with malloc.
        unsafe { free(arr.cast()) };
    }
    Ok(out)
}

// ---------------------------------------------------------------- KVM

/// `kvm`/`qemu` in the override variable decide; anything else is ignored (with a warning).
fn kvm_override(v: Option<&str>) -> Option<KvmCheck> {
    match v.map(str::trim) {
        Some("kvm") => Some(KvmCheck { usable: true, reason: format!("{DOMAIN_TYPE_ENV}=kvm") }),
        Some("qemu") => Some(KvmCheck { usable: false, reason: format!("{DOMAIN_TYPE_ENV}=qemu") }),
        None | Some("") | Some("auto") => None,
        Some(other) => {
            tracing::warn!("{DOMAIN_TYPE_ENV}={other:?} is neither kvm nor qemu; ignored");
            None
        }
    }
}

/// Whether the URI names the local host (`qemu:///system`, `test:///default`).
fn is_local_uri(uri: &str) -> bool {
    match uri.split_once("://") {
        Some((scheme, rest)) => (rest.starts_with('/') || rest.is_empty() || rest.starts_with("localhost/")) && !scheme.contains("+ssh") && !scheme.contains("+tcp") && !scheme.contains("+tls"),
        None => true,
    }
}

/// x86-64-v2 baseline features (libvirt's names) every KVM host can give a guest.
const BASELINE_FEATURES: [&str; 6] = ["pni", "ssse3", "sse4.1", "sse4.2", "cx16", "popcnt"];

/// Checks libvirt's domain capabilities for `virttype='kvm'`: Ok, or why not.
fn domcaps_verdict(xml: &str) -> Result<(), String> {
    let doc = Doc::parse(xml, "domainCapabilities").map_err(|e| format!("unreadable domain capabilities: {e}"))?;
    let root = doc.root();
    if root.child("domain").map(|d| d.text().trim()) != Some("kvm") {
        return Err("libvirt offers no kvm domain type".into());
    }
    let disabled: Vec<&str> = root
        .child("cpu")
        .into_iter()
        .flat_map(|c| c.children("mode"))
        .filter(|m| m.attr("name") == Some("host-model") && m.attr("supported") != Some("no"))
        .flat_map(|m| m.children("feature"))
        .filter(|f| f.attr("policy") == Some("disable"))
        .filter_map(|f| f.attr("name"))
        .filter(|n| BASELINE_FEATURES.contains(n))
        .collect();
    if !disabled.is_empty() {
        return Err(format!(
            "KVM cannot give guests the CPU's baseline features ({} disabled in libvirt's host-model CPU): a nested host without full virtualization support, where guests hang",
            disabled.join(", ")
        ));
    }
    Ok(())
}

/// Whether /proc/cpuinfo advertises hardware virtualization.
fn cpu_has_virt(cpuinfo: &str) -> bool {
    cpuinfo.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// The KVM decision from libvirt's domain capabilities for kvm (or why
/// they could not be read) and, for a local host, /proc/cpuinfo and whether
/// /dev/kvm exists.
/// What a local host says: /proc/cpuinfo (or why it could not be read), and
/// whether /dev/kvm exists.
type LocalKvmFacts<'a> = (Result<&'a str, String>, Result<(), String>);

fn decide_kvm(domcaps: Result<&str, String>, local: Option<LocalKvmFacts<'_>>) -> KvmCheck {
    let mut why = Vec::new();
    match domcaps {
        Ok(xml) => {
            if let Err(e) = domcaps_verdict(xml) {
                why.push(e);
            }
        }
        Err(e) => why.push(format!("libvirt has no kvm domain capabilities: {e}")),
    }
    if let Some((cpuinfo, dev)) = local {
        match cpuinfo {
            Ok(c) if cpu_has_virt(c) => {}
            Ok(_) => why.push("the host CPU advertises neither vmx nor svm (hardware virtualization is not passed through to this machine)".into()),
            Err(e) => why.push(e),
        }
        if let Err(e) = dev {
            why.push(e);
        }
    }
    if why.is_empty() {
        KvmCheck { usable: true, reason: "libvirt offers kvm with the host CPU's features, and the CPU supports hardware virtualization".into() }
    } else {
        KvmCheck { usable: false, reason: why.join("; ") }
    }
}

// ---------------------------------------------------------------- the trait

impl Libvirt for VirtLibvirt {
    fn domains(&self) -> Result<Vec<DomainInfo>, HostError> {
        self.call("list domains", &self.uri, |c| {
            let all = c.list_all_domains(0)?;
            // States from listings sized by the domains in them (the
            // listing of all domains already says which are inactive: no
            // id). Running, paused and transient domains are all active, so
            // those listings are skipped when no domain is: a host of
            // shut-off domains costs one filtered listing (autostart), each
            // of which walks every domain in libvirtd.
            let any_active = all.iter().any(|d| d.id().is_some());
            let active_set = |flag| -> Result<HashSet<[u8; 16]>, VirtError> { if any_active { Ok(uuid_set(c.list_all_domains(flag)?)) } else { Ok(HashSet::new()) } };
            let running = active_set(sys::VIR_CONNECT_LIST_DOMAINS_RUNNING)?;
            let paused = active_set(sys::VIR_CONNECT_LIST_DOMAINS_PAUSED)?;
            let transient = active_set(sys::VIR_CONNECT_LIST_DOMAINS_TRANSIENT)?;
            let autostart = uuid_set(c.list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_AUTOSTART)?);
            let fetch = |d: &Domain| -> Result<Option<DomainInfo>, VirtError> {
                let uuid = *d.uuid()?.as_bytes();
                let xml = match d.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE) {
                    Ok(x) => x,
                    Err(e) if virt_not_found(&e) => return Ok(None), // undefined meanwhile
                    Err(e) => return Err(e),
                };
                let state = if running.contains(&uuid) {
                    DomainState::Running
                } else if paused.contains(&uuid) {
                    DomainState::Paused
                } else if d.id().is_none() {
                    DomainState::Shutoff
                } else {
                    match domain_state(d) {
                        Ok(s) => s,
                        Err(e) if virt_not_found(&e) => return Ok(None),
                        Err(e) => return Err(e),
                    }
                };
                domain_info(d, &uuid, state, autostart.contains(&uuid), !transient.contains(&uuid), xml).map(Some)
            };
            let workers = (all.len() / 16).clamp(1, MAX_FETCH_THREADS);
            let mut out: Vec<DomainInfo> = if workers == 1 {
                let mut v = Vec::with_capacity(all.len());
                for d in &all {
                    v.extend(fetch(d)?);
                }
                v
            } else {
                let results: Vec<Result<Vec<DomainInfo>, VirtError>> = std::thread::scope(|s| {
                    let handles: Vec<_> = (0..workers)
                        .map(|w| {
                            let (all, fetch) = (&all, &fetch);
                            s.spawn(move || {
                                let mut v = Vec::new();
                                for d in all.iter().skip(w).step_by(workers) {
                                    v.extend(fetch(d)?);
                                }
                                Ok(v)
                            })
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
                });
                let mut v = Vec::with_capacity(all.len());
                for r in results {
                    v.extend(r?);
                }
                v
            };
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn domain(&self, name: &str) -> Result<Option<DomainInfo>, HostError> {
        self.call("read domain", name, |c| {
            let Some(d) = lookup_domain(c, name)? else { return Ok(None) };
            let xml = match d.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE) {
                Ok(x) => x,
                Err(e) if virt_not_found(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            let state = domain_state(&d)?;
            let uuid = *d.uuid()?.as_bytes();
            domain_info(&d, &uuid, state, d.autostart()?, d.is_persistent()?, xml).map(Some)
        })
    }

    fn domain_state(&self, name: &str) -> Result<Option<DomainState>, HostError> {
        self.call("read domain state", name, |c| match lookup_domain(c, name)? {
            None => Ok(None),
            Some(d) => match domain_state(&d) {
                Ok(s) => Ok(Some(s)),
                Err(e) if virt_not_found(&e) => Ok(None),
                Err(e) => Err(e),
            },
        })
    }

    fn networks(&self) -> Result<Vec<NetworkInfo>, HostError> {
        self.call("list networks", &self.uri, |c| {
            let all = c.list_all_networks(0)?;
            let names = |v: Vec<Network>| -> HashSet<String> { v.iter().filter_map(|n| n.uuid_string().ok()).collect() };
            let active = names(c.list_all_networks(sys::VIR_CONNECT_LIST_NETWORKS_ACTIVE)?);
            let autostart = names(c.list_all_networks(sys::VIR_CONNECT_LIST_NETWORKS_AUTOSTART)?);
            let transient = names(c.list_all_networks(sys::VIR_CONNECT_LIST_NETWORKS_TRANSIENT)?);
            let mut out = Vec::with_capacity(all.len());
            for n in &all {
                let uuid = n.uuid_string()?;
                let xml = match network_config_xml(n) {
                    Ok(x) => x,
                    Err(e) if virt_not_found(&e) => continue,
                    Err(e) => return Err(e),
                };
                let (observed, parse_error) = match parse_network(&xml) {
                    Ok(o) => (Some(o), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                out.push(NetworkInfo {
                    name: n.name()?,
                    active: active.contains(&uuid),
                    autostart: autostart.contains(&uuid),
                    persistent: !transient.contains(&uuid),
                    uuid: uuid.to_ascii_lowercase(),
                    xml,
                    observed,
                    parse_error,
                });
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn define(&self, xml: &str) -> Result<String, HostError> {
        let name = domain_name_of(xml);
        self.call("define domain", &name, |c| {
            // No VIR_DOMAIN_DEFINE_VALIDATE: libvirt's RNG validation costs
            // ~12 ms per define (4 ms without) and the XML comes from a tested
            // writer; anything libvirt drops shows up as a diff on read-back.
            Ok(c.define_domain_xml(xml)?.uuid_string()?.to_ascii_lowercase())
        })
    }

    fn undefine(&self, name: &str) -> Result<(), HostError> {
        self.call("undefine domain", name, |c| {
            let Some(d) = lookup_domain(c, name)? else { return Ok(()) };
            let all = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | sys::VIR_DOMAIN_UNDEFINE_NVRAM;
            let r = match d.undefine_flags(all) {
                // test:///default (and drivers without NVRAM) reject the flag.
                Err(e) if unsupported_flags(&e) || (code_is(&e, ErrorNumber::NoSupport) || code_is(&e, ErrorNumber::InvalidArg)) && e.message().to_ascii_lowercase().contains("nvram") => {
                    d.undefine_flags(all & !sys::VIR_DOMAIN_UNDEFINE_NVRAM)
                }
                r => r,
            };
            match r {
                Err(e) if virt_not_found(&e) => Ok(()),
                // A transient domain that was already undefined.
                Err(e) if code_is(&e, ErrorNumber::OperationInvalid) && !d.is_persistent().unwrap_or(true) => Ok(()),
                r => r,
            }
        })
    }

    fn start(&self, name: &str) -> Result<(), HostError> {
        self.call_long("start domain", name, |c| {
            let d = c.lookup_domain_by_name(name)?;
            match domain_state(&d)? {
                DomainState::Running => Ok(()),
                DomainState::Paused => d.resume(),
                _ => match d.create() {
                    Err(e) if code_is(&e, ErrorNumber::OperationInvalid) && d.is_active().unwrap_or(false) => Ok(()),
                    r => r,
                },
            }
        })
    }

    fn shutdown(&self, name: &str, timeout: Duration) -> Result<ShutdownOutcome, HostError> {
        let op = "shutdown domain";
        // Ask the agent, else press the power button (resuming a paused guest
        // first so it can see either). None: the domain is off or gone.
        let ask = |first: bool| {
            self.call(op, name, |c| {
                let Some(d) = lookup_domain(c, name)? else { return Ok(None) };
                if first {
                    match domain_state(&d)? {
                        DomainState::Shutoff => return Ok(None),
                        DomainState::Paused => d.resume()?,
                        _ => {}
                    }
                }
                // The agent answers unless the guest has no channel, no agent
                // running, or a hung one (libvirt's 5 s sync gives up then).
                let connected = agent_connected(&d);
                match d.shutdown_flags(sys::VIR_DOMAIN_SHUTDOWN_GUEST_AGENT) {
                    Ok(()) => return Ok(Some(Via::Agent)),
                    // A race seen with Debian 12 guests: the agent starts the
                    // shutdown, systemd stops the agent, its port closes before
                    // libvirt has its answer, and libvirt reports "not
                    // connected". The guest is shutting down: no ACPI press now
                    // (the retry in 10 s asks again if it is still up).
                    Err(e) if connected && code_is(&e, ErrorNumber::AgentUnresponsive) && agent_closes(&d) => {
                        tracing::debug!(domain = name, "the guest agent took the shutdown and closed its channel ({})", e.message());
                        return Ok(Some(Via::Agent));
                    }
                    Err(e) => tracing::debug!(domain = name, "the guest agent did not take the shutdown ({}); pressing the ACPI power button", e.message()),
                }
                match d.shutdown_flags(sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN) {
                    Ok(()) => Ok(Some(Via::Acpi)),
                    Err(e) if virt_not_found(&e) || (code_is(&e, ErrorNumber::OperationInvalid) && !d.is_active().unwrap_or(true)) => Ok(None),
                    // Drivers without the flags (the test driver): the plain call.
                    Err(e) if unsupported_flags(&e) => d.shutdown().map(|()| Some(Via::Acpi)),
                    Err(e) => Err(e),
                }
            })
        };
        let Some(mut via) = ask(true)? else {
            return Ok(ShutdownOutcome::AlreadyOff);
        };
        let start = Instant::now();
        let mut last_press = start;
        loop {
            let active = self.call(op, name, |c| match lookup_domain(c, name)? {
                None => Ok(false),
                Some(d) => match d.is_active() {
                    Err(e) if virt_not_found(&e) => Ok(false),
                    r => r,
                },
            })?;
            if !active {
                tracing::debug!(domain = name, via = via.as_str(), seconds = start.elapsed().as_secs_f64(), "shut down through {}", via.as_str());
                return Ok(ShutdownOutcome::Graceful(via));
            }
            if start.elapsed() >= timeout {
                break;
            }
            if last_press.elapsed() >= SHUTDOWN_RETRY_INTERVAL {
                // A guest still booting may have missed the first request
                // (or its agent came up since).
                if let Ok(Some(v)) = ask(false) {
                    via = v;
                }
                last_press = Instant::now();
            }
            std::thread::sleep(POLL.min(timeout.saturating_sub(start.elapsed())).max(Duration::from_millis(10)));
        }
        tracing::warn!(domain = name, ?timeout, "guest did not power off after {}; destroying it", via.as_str());
        let destroyed = self.call(op, name, |c| {
            let Some(d) = lookup_domain(c, name)? else { return Ok(false) };
            match d.destroy() {
                Ok(()) => Ok(true),
                Err(e) if virt_not_found(&e) || (code_is(&e, ErrorNumber::OperationInvalid) && !d.is_active().unwrap_or(true)) => Ok(false),
                Err(e) => Err(e),
            }
        })?;
        Ok(if destroyed { ShutdownOutcome::Forced } else { ShutdownOutcome::Graceful(via) })
    }

    fn agent_interfaces(&self, name: &str) -> Result<Vec<GuestInterface>, HostError> {
        let ifaces = self.call("ask the guest agent", name, |c| c.lookup_domain_by_name(name)?.interface_addresses(sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0))?;
        Ok(ifaces
            .into_iter()
            .map(|i| GuestInterface {
                name: i.name,
                mac: i.hwaddr.filter(|m| !m.is_empty()).map(|m| m.to_ascii_lowercase()),
                addrs: i.addrs.iter().filter_map(|a| Some((a.addr.parse().ok()?, u8::try_from(a.prefix).ok()?))).collect(),
            })
            .collect())
    }

    fn destroy(&self, name: &str) -> Result<(), HostError> {
        self.call_long("destroy domain", name, |c| {
            let Some(d) = lookup_domain(c, name)? else { return Ok(()) };
            match d.destroy() {
                Err(e) if virt_not_found(&e) || (code_is(&e, ErrorNumber::OperationInvalid) && !d.is_active().unwrap_or(true)) => Ok(()),
                r => r,
            }
        })
    }

    fn set_marker(&self, name: &str, element: &str) -> Result<(), HostError> {
        self.call("set marker", name, |c| {
            let d = c.lookup_domain_by_name(name)?;
            // VIR_DOMAIN_METADATA_ELEMENT = 2; AFFECT_CONFIG = 2, AFFECT_LIVE = 1.
            let flags = if d.is_active()? { 3 } else { 2 };
            d.set_metadata(2, Some(element), Some(crate::xml::PREFIX), Some(crate::xml::NS), flags)
        })
    }

    fn remove_marker(&self, name: &str) -> Result<(), HostError> {
        self.call("remove marker", name, |c| {
            let d = c.lookup_domain_by_name(name)?;
            let flags = if d.is_active()? { 3 } else { 2 };
            d.set_metadata(2, None, None, Some(crate::xml::NS), flags)
        })
    }

    fn set_autostart(&self, name: &str, on: bool) -> Result<(), HostError> {
        self.call("set autostart", name, |c| {
            let d = c.lookup_domain_by_name(name)?;
            if d.autostart()? != on {
                d.set_autostart(on)?;
            }
            Ok(())
        })
    }

    fn attach_device(&self, name: &str, xml: &str, live: bool) -> Result<(), HostError> {
        let op = "attach device";
        let key = device_key(xml).map_err(|e| HostError::new(op, name, e))?;
        let object = format!("{name} ({})", key.describe());
        // Ok(Err(conflict)) carries a conflict found on the host.
        let r = self.call(op, &object, |c| {
            let d = c.lookup_domain_by_name(name)?;
            let mut flags = 0;
            let conflict = |p: Presence, flag: u32, flags: &mut u32| -> Result<(), String> {
                match p {
                    Presence::Absent => {
                        *flags |= flag;
                        Ok(())
                    }
                    Presence::Same => Ok(()),
                    Presence::Other(why) => Err(why),
                }
            };
            let config = d.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)?;
            match presence(&config, &key) {
                Ok(p) => {
                    if let Err(why) = conflict(p, sys::VIR_DOMAIN_AFFECT_CONFIG, &mut flags) {
                        return Ok(Err(format!("{why} in the persistent config")));
                    }
                }
                Err(e) => return Ok(Err(format!("cannot read the domain's XML: {e}"))),
            }
            if live && d.is_active()? {
                match presence(&d.xml_desc(0)?, &key) {
                    Ok(p) => {
                        if let Err(why) = conflict(p, sys::VIR_DOMAIN_AFFECT_LIVE, &mut flags) {
                            return Ok(Err(format!("{why} in the running guest")));
                        }
                    }
                    Err(e) => return Ok(Err(format!("cannot read the domain's live XML: {e}"))),
                }
            }
            if flags != 0 {
                d.attach_device_flags(xml, flags)?;
            }
            Ok(Ok(()))
        })?;
        r.map_err(|why| HostError::new(op, object, why).hint("detach the other device first, or pick another target/MAC"))
    }

    fn detach_device(&self, name: &str, xml: &str, live: bool, timeout: Duration) -> Result<(), HostError> {
        let op = "detach device";
        let key = device_key(xml).map_err(|e| HostError::new(op, name, e))?;
        let object = format!("{name} ({})", key.describe());
        let present_in = |c: &Connect, inactive: bool| -> Result<Option<(Domain, bool)>, VirtError> {
            let Some(d) = lookup_domain(c, name)? else { return Ok(None) };
            let x = d.xml_desc(if inactive { sys::VIR_DOMAIN_XML_INACTIVE } else { 0 })?;
            // An unreadable document: assume present and let libvirt decide.
            let here = presence(&x, &key).map(|p| p != Presence::Absent).unwrap_or(true);
            Ok(Some((d, here)))
        };
        // 1. The persistent config, so the device does not come back at the next start.
        self.call(op, &object, |c| {
            let Some((d, true)) = present_in(c, true)? else { return Ok(()) };
            match d.detach_device_flags(xml, sys::VIR_DOMAIN_AFFECT_CONFIG) {
                // Gone meanwhile ("no target device", "device not found").
                Err(e) if present_in(c, true)?.is_none_or(|(_, here)| !here) => {
                    tracing::debug!(error = %e, "config detach raced with removal");
                    Ok(())
                }
                r => r,
            }
        })?;
        if !live {
            return Ok(());
        }
        // 2. The running guest: request, poll the live XML, re-request.
        let live_present = |c: &Connect| -> Result<Option<Domain>, VirtError> {
            match present_in(c, false)? {
                Some((d, true)) if d.is_active()? => Ok(Some(d)),
                _ => Ok(None),
            }
        };
        let start = Instant::now();
        let mut last_request: Option<Instant> = None;
        let mut last_error: Option<String> = None;
        loop {
            let fatal = self.call(op, &object, |c| {
                let Some(d) = live_present(c)? else { return Ok(Some(None)) };
                if last_request.is_none_or(|t| t.elapsed() >= DETACH_RETRY_INTERVAL) {
                    if let Err(e) = d.detach_device_flags(xml, sys::VIR_DOMAIN_AFFECT_LIVE) {
                        if live_present(c)?.is_none() {
                            return Ok(Some(None));
                        }
                        if permanent(&e) {
                            return Err(e);
                        }
                        return Ok(Some(Some(e.message().to_string())));
                    }
                    return Ok(Some(Some(String::new())));
                }
                Ok(None)
            })?;
            match fatal {
                Some(None) => return Ok(()), // gone
                Some(Some(msg)) => {
                    last_request = Some(Instant::now());
                    if !msg.is_empty() {
                        last_error = Some(msg);
                    }
                }
                None => {}
            }
            if start.elapsed() >= timeout {
                let gone = self.call(op, &object, |c| live_present(c).map(|d| d.is_none()))?;
                if gone {
                    return Ok(());
                }
                let mut msg = format!("the guest did not release the device within {:.0?}; it is still in the live XML (already removed from the persistent config)", timeout);
                if let Some(e) = last_error {
                    msg.push_str(&format!("; libvirt said: {e}"));
                }
                return Err(HostError::new(op, object, msg).hint(
                    "the guest OS must handle ACPI PCI hot-unplug (a guest still booting or without acpiphp/pciehp ignores it); retry, or stop the domain to finish the detach",
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    fn block_resize(&self, name: &str, target: &str, bytes: u64) -> Result<(), HostError> {
        self.call("resize disk", &format!("{name} ({target})"), |c| c.lookup_domain_by_name(name)?.block_resize(target, bytes, sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES))
    }

    fn define_network(&self, xml: &str) -> Result<(), HostError> {
        let name = network_name_of(xml);
        let _serial = network_lock();
        self.call("define network", &name, |c| c.define_network_xml(xml).map(|_| ()))
    }

    fn start_network(&self, name: &str) -> Result<(), HostError> {
        let _serial = network_lock();
        self.call("start network", name, |c| {
            let n = c.lookup_network_by_name(name)?;
            if n.is_active()? {
                return Ok(());
            }
            match n.create() {
                Err(e) if code_is(&e, ErrorNumber::OperationInvalid) && n.is_active().unwrap_or(false) => Ok(()),
                r => r,
            }
        })
    }

    fn destroy_network(&self, name: &str) -> Result<(), HostError> {
        let _serial = network_lock();
        self.call("stop network", name, |c| {
            let Some(n) = lookup_network(c, name)? else { return Ok(()) };
            if !n.is_active()? {
                return Ok(());
            }
            match n.destroy() {
                Err(e) if virt_not_found(&e) || (code_is(&e, ErrorNumber::OperationInvalid) && !n.is_active().unwrap_or(true)) => Ok(()),
                r => r,
            }
        })
    }

    fn undefine_network(&self, name: &str) -> Result<(), HostError> {
        let _serial = network_lock();
        self.call("undefine network", name, |c| {
            let Some(n) = lookup_network(c, name)? else { return Ok(()) };
            match n.undefine() {
                Err(e) if virt_not_found(&e) => Ok(()),
                Err(e) if code_is(&e, ErrorNumber::OperationInvalid) && !n.is_persistent().unwrap_or(true) => Ok(()),
                r => r,
            }
        })
    }

    fn set_network_autostart(&self, name: &str, on: bool) -> Result<(), HostError> {
        let _serial = network_lock();
        self.call("set network autostart", name, |c| {
            let n = c.lookup_network_by_name(name)?;
            if n.autostart()? != on {
                n.set_autostart(on)?;
            }
            Ok(())
        })
    }

    fn live_xml(&self, name: &str) -> Result<Option<String>, HostError> {
        self.call("read domain", name, |c| match lookup_domain(c, name)? {
            None => Ok(None),
            Some(d) => d.xml_desc(0).map(Some),
        })
    }

    fn update_network_dhcp_host(&self, network: &str, host_xml: &str, add: bool) -> Result<(), HostError> {
        let op = if add { "add DHCP host" } else { "remove DHCP host" };
        let want = parse_host_entry(host_xml).map_err(|e| HostError::new(op, network, e))?;
        let object = format!("{network} ({})", want.mac);
        let _serial = network_lock();
        let r = self.call(op, &object, |c| {
            let n = c.lookup_network_by_name(network)?;
            let hosts = |inactive: bool| -> Result<Result<Vec<DhcpHost>, String>, VirtError> {
                let xml = if inactive { network_config_xml(&n)? } else { n.xml_desc(0)? };
                Ok(parse_network(&xml).map(|o| o.hosts).map_err(|e| format!("cannot read the network's XML: {e}")))
            };
            let config = match hosts(true)? {
                Ok(h) => dhcp_command(&h, &want, add, host_xml),
                Err(e) => return Ok(Err(e)),
            };
            let live = if n.is_active()? {
                match hosts(false)? {
                    Ok(h) => dhcp_command(&h, &want, add, host_xml),
                    Err(e) => return Ok(Err(e)),
                }
            } else {
                None
            };
            let section = sys::VIR_NETWORK_SECTION_IP_DHCP_HOST;
            match (config, live) {
                (Some(a), Some(b)) if a == b => n.update(a.0, section, -1, &a.1, sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG | sys::VIR_NETWORK_UPDATE_AFFECT_LIVE)?,
                (a, b) => {
                    if let Some((cmd, x)) = a {
                        n.update(cmd, section, -1, &x, sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG)?;
                    }
                    if let Some((cmd, x)) = b {
                        n.update(cmd, section, -1, &x, sys::VIR_NETWORK_UPDATE_AFFECT_LIVE)?;
                    }
                }
            }
            Ok(Ok(()))
        })?;
        r.map_err(|e| HostError::new(op, object, e))
    }

    fn leases(&self, network: &str) -> Result<Vec<Lease>, HostError> {
        self.call("read DHCP leases", network, |c| dhcp_leases(&c.lookup_network_by_name(network)?))
    }

    fn kvm_usable(&self) -> bool {
        self.kvm_check().usable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::disk::Bus;
    use crate::model::instance::{Firmware, Graphics};
    use crate::model::port::NicModel;
    use crate::xml::domain::{disk_device_xml, domain_xml, nic_device_xml, DiskDef, DiskDevice, DomainDef, DomainKind, NicDef, NicSource};
    use crate::xml::network::{network_xml, Forward, NetworkDef};

    const TEST_URI: &str = "test:///default";

    fn mac(s: &str) -> Mac {
        Mac::parse(s).unwrap()
    }

    /// A name unique to this process and call (test:///default is shared by
    /// every connection of the process, and tests run in parallel).
    fn unique(prefix: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        format!("vf-ut-{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
    }

    fn disk(target: &str, path: &str) -> DiskDef {
        DiskDef { path: path.into(), format: "qcow2".into(), device: DiskDevice::Disk, bus: Bus::Virtio, target: target.into(), readonly: false, serial: None, boot_order: None }
    }

    /// A stable UUID per name (virtform always sets one; without it a
    /// redefinition would get a new UUID and clash with the old one).
    fn uuid_of(name: &str) -> String {
        use sha2::Digest;
        crate::model::common::uuid_string(&sha2::Sha256::digest(name.as_bytes()))
    }

    fn def(name: &str) -> DomainDef {
        DomainDef {
            name: name.into(),
            uuid: uuid_of(name),
            domain_type: DomainKind::Qemu,
            memory_kib: 64 * 1024,
            vcpus: 1,
            cpu: None,
            machine: "pc".into(),
            firmware: Firmware::Bios,
            loader: None,
            kernel: Some("/nonexistent/vmlinuz".into()),
            initrd: None,
            cmdline: Some("console=ttyS0".into()),
            disks: vec![disk("vda", "/nonexistent/root.qcow2")],
            nics: vec![NicDef { mac: mac("52:54:00:aa:00:01"), model: NicModel::Virtio, source: NicSource::Bridge { bridge: "vf-nobr".into() }, target_dev: Some("tapvfut0".into()), mtu: None }],
            console_log: "/nonexistent/console.log".into(),
            graphics: Graphics::None,
            guest_agent: true,
            marker: Marker { stack: "ut".into(), address: format!("instance.{name}"), spec_hash: "sha256:0".into() },
        }
    }

    fn open() -> VirtLibvirt {
        VirtLibvirt::open(TEST_URI).expect("test:///default opens in-process")
    }

    // ------------------------------------------------------------ pure parts

    const DOMCAPS_OK: &str = r#"<domainCapabilities><path>/usr/bin/qemu-system-x86_64</path><domain>kvm</domain><arch>x86_64</arch>
      <cpu><mode name='host-passthrough' supported='yes'/><mode name='host-model' supported='yes'><model fallback='forbid'>EPYC-Milan</model>
      <feature policy='require' name='x2apic'/><feature policy='disable' name='xsaves'/></mode></cpu></domainCapabilities>"#;
    /// Trimmed from this project's CI host (nested KVM under Firecracker).
    const DOMCAPS_NESTED: &str = r#"<domainCapabilities><domain>kvm</domain><arch>x86_64</arch>
      <cpu><mode name='host-model' supported='yes'><model fallback='forbid'>EPYC-Milan</model>
      <feature policy='require' name='hypervisor'/><feature policy='disable' name='pni'/><feature policy='disable' name='pclmuldq'/>
      <feature policy='disable' name='ssse3'/><feature policy='disable' name='sse4.1'/><feature policy='disable' name='sse4.2'/></mode></cpu></domainCapabilities>"#;
    const CPU_SVM: &str = "processor\t: 0\nflags\t\t: fpu vme de pse svm sse2\n";
    const CPU_NONE: &str = "processor\t: 0\nflags\t\t: fpu vme de pse hypervisor sse2 pni\n";

    #[test]
    fn kvm_decision() {
        let ok = decide_kvm(Ok(DOMCAPS_OK), Some((Ok(CPU_SVM), Ok(()))));
        assert!(ok.usable, "{}", ok.reason);
        // Remote: only libvirt's view counts.
        assert!(decide_kvm(Ok(DOMCAPS_OK), None).usable);

        let nested = decide_kvm(Ok(DOMCAPS_NESTED), Some((Ok(CPU_NONE), Ok(()))));
        assert!(!nested.usable);
        assert!(nested.reason.contains("pni, ssse3, sse4.1, sse4.2 disabled"), "{}", nested.reason);
        assert!(nested.reason.contains("neither vmx nor svm"), "{}", nested.reason);
        // Each signal alone is enough.
        assert!(!decide_kvm(Ok(DOMCAPS_NESTED), Some((Ok(CPU_SVM), Ok(())))).usable);
        assert!(!decide_kvm(Ok(DOMCAPS_OK), Some((Ok(CPU_NONE), Ok(())))).usable);
        let nodev = decide_kvm(Ok(DOMCAPS_OK), Some((Ok(CPU_SVM), Err("/dev/kvm: Permission denied".into()))));
        assert!(!nodev.usable && nodev.reason.contains("/dev/kvm"));
        let nocaps = decide_kvm(Err("this function is not supported".into()), None);
        assert!(!nocaps.usable && nocaps.reason.contains("no kvm domain capabilities"));
        assert!(!decide_kvm(Ok("<domainCapabilities><domain>qemu</domain></domainCapabilities>"), None).usable);
        assert!(!decide_kvm(Ok("not xml <"), None).usable);

        assert_eq!(kvm_override(Some("kvm")).map(|c| c.usable), Some(true));
        assert_eq!(kvm_override(Some("qemu")).map(|c| c.usable), Some(false));
        assert_eq!(kvm_override(Some("auto")), None);
        assert_eq!(kvm_override(Some("xen")), None);
        assert_eq!(kvm_override(None), None);
    }

    #[test]
    fn local_uris() {
        assert!(is_local_uri("qemu:///system"));
        assert!(is_local_uri("qemu:///session"));
        assert!(is_local_uri("test:///default"));
        assert!(!is_local_uri("qemu+ssh://root@host/system"));
        assert!(!is_local_uri("qemu+tcp://host/system"));
    }

    #[test]
    fn agent_channel_state_is_read_from_the_live_xml() {
        let live = |state: &str| format!("<domain><devices><channel type='unix'><source mode='bind' path='/x'/><target type='virtio' name='org.qemu.guest_agent.0' state='{state}'/></channel></devices></domain>");
        assert!(channel_state_connected(&live("connected")));
        assert!(!channel_state_connected(&live("disconnected")));
        assert!(!channel_state_connected("<domain><devices/></domain>"));
        assert!(!channel_state_connected("<domain><devices><channel type='unix'><target type='virtio' name='org.other' state='connected'/></channel></devices></domain>"));
    }

    #[test]
    fn device_keys_and_presence() {
        let vdb = disk_device_xml(&disk("vdb", "/v/data.qcow2"));
        let nic = nic_device_xml(&NicDef { mac: mac("52:54:00:AA:00:02"), model: NicModel::Virtio, source: NicSource::Network { network: "n".into() }, target_dev: None, mtu: None });
        assert_eq!(device_key(&vdb), Ok(DeviceKey::Disk { target: "vdb".into(), source: Some("/v/data.qcow2".into()) }));
        assert_eq!(device_key(&nic), Ok(DeviceKey::Nic { mac: "52:54:00:aa:00:02".into() }));
        assert!(device_key("<memballoon model='virtio'/>").unwrap_err().contains("<disk>, <interface> or <channel>"));
        assert_eq!(device_key(&crate::xml::domain::agent_channel_xml()), Ok(DeviceKey::Channel { name: "org.qemu.guest_agent.0".into() }));
        assert!(device_key("<channel type='pty'><target type='serial' port='0'/></channel>").unwrap_err().contains("virtio"));
        let with = "<domain><devices><channel type='unix'><source mode='bind' path='/x'/><target type='virtio' name='org.qemu.guest_agent.0'/><alias name='channel0'/></channel></devices></domain>";
        let key = DeviceKey::Channel { name: "org.qemu.guest_agent.0".into() };
        assert_eq!(presence(with, &key).unwrap(), Presence::Same);
        assert_eq!(presence("<domain><devices/></domain>", &key).unwrap(), Presence::Absent);
        assert!(device_key("<disk type='file'/>").unwrap_err().contains("target"));
        assert!(device_key("<interface type='network'/>").unwrap_err().contains("mac"));
        assert!(device_key("<disk").is_err());

        let mut d = def("p");
        d.disks.push(disk("vdb", "/v/data.qcow2"));
        let xml = domain_xml(&d);
        assert_eq!(presence(&xml, &device_key(&vdb).unwrap()), Ok(Presence::Same));
        assert_eq!(presence(&xml, &DeviceKey::Disk { target: "vdc".into(), source: None }), Ok(Presence::Absent));
        match presence(&xml, &DeviceKey::Disk { target: "vdb".into(), source: Some("/other".into()) }) {
            Ok(Presence::Other(why)) => assert!(why.contains("/v/data.qcow2"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(presence(&xml, &DeviceKey::Nic { mac: "52:54:00:aa:00:01".into() }), Ok(Presence::Same));
        assert_eq!(presence(&xml, &device_key(&nic).unwrap()), Ok(Presence::Absent));
    }

    #[test]
    fn dhcp_commands_converge() {
        let a = DhcpHost { mac: mac("52:54:00:00:00:01"), ip: "10.1.0.10".parse().unwrap(), name: Some("a".into()) };
        let x = dhcp_host_xml(&a.mac, a.ip, a.name.as_deref());
        assert_eq!(parse_host_entry(&x), Ok(a.clone()));
        assert!(parse_host_entry("<host ip='10.1.0.1'/>").unwrap_err().contains("mac"));
        assert!(parse_host_entry("<host mac='52:54:00:00:00:01' ip='x'/>").unwrap_err().contains("IPv4"));
        assert_eq!(dhcp_command(&[], &a, true, &x).map(|c| c.0), Some(sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST));
        assert_eq!(dhcp_command(std::slice::from_ref(&a), &a, true, &x), None);
        let mut moved = a.clone();
        moved.ip = "10.1.0.11".parse().unwrap();
        assert_eq!(dhcp_command(std::slice::from_ref(&moved), &a, true, &x).map(|c| c.0), Some(sys::VIR_NETWORK_UPDATE_COMMAND_MODIFY));
        // Delete names the entry as the host holds it.
        let del = dhcp_command(std::slice::from_ref(&moved), &a, false, &x).unwrap();
        assert_eq!(del.0, sys::VIR_NETWORK_UPDATE_COMMAND_DELETE);
        assert!(del.1.contains("10.1.0.11"), "{}", del.1);
        assert_eq!(dhcp_command(&[], &a, false, &x), None);
    }

    #[test]
    fn hints() {
        assert_eq!(
            hint_for(Some(ErrorNumber::SystemError), "Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory"),
            Some("is libvirtd running? scripts/host-setup starts it")
        );
        assert!(hint_for(None, "Cannot access storage file '/root/x/d.qcow2' (as uid:64055, gid:64055): Permission denied").unwrap().contains("libvirt-qemu"));
        assert!(hint_for(None, "internal error: unable to execute QEMU command 'device_add': Bus 'pci.0' does not support hotplugging").unwrap().contains("acpi"));
        assert!(hint_for(None, "operation failed: domain 'x' already exists with uuid 1234").unwrap().contains("another UUID"));
        assert_eq!(hint_for(Some(ErrorNumber::NoDomain), "Domain not found: no domain with matching name 'x'"), None);
    }

    #[test]
    fn open_errors_name_the_uri() {
        let e = VirtLibvirt::open("nosuchdriver:///x").unwrap_err();
        assert_eq!((e.op.as_str(), e.object.as_str()), ("connect to libvirt", "nosuchdriver:///x"));
        assert!(!e.message.is_empty());
        let e = VirtLibvirt::open("test:///def\0ault").unwrap_err();
        assert!(e.message.contains("NUL"));
        // libvirtd not listening (no daemon needed: the socket does not exist).
        let uri = "qemu:///system?socket=/nonexistent/virtform/libvirt-sock";
        let e = VirtLibvirt::open(uri).unwrap_err();
        assert!(e.message.contains("Failed to connect socket"), "{e}");
        assert_eq!(e.hint.as_deref(), Some("is libvirtd running? scripts/host-setup starts it"));
        assert_eq!(e.object, uri);
    }

    // ------------------------------------------------------------ test:///default

    #[test]
    fn domain_round_trip_on_the_test_driver() {
        let lv = open();
        let name = unique("dom");
        let d = def(&name);
        let uuid = lv.define(&domain_xml(&d)).expect("define");
        assert_eq!(uuid.len(), 36);
        // Redefining the same XML is fine (an update).
        assert_eq!(lv.define(&domain_xml(&d)).unwrap(), uuid);

        let all = lv.domains().unwrap();
        let info = all.iter().find(|i| i.name == name).expect("listed");
        assert!(all.windows(2).all(|w| w[0].name <= w[1].name), "sorted by name");
        assert_eq!(info.uuid, uuid);
        assert_eq!(info.state, DomainState::Shutoff);
        assert!(info.persistent && !info.autostart && !info.is_active());
        assert_eq!(info.owner(), Some(("ut", format!("instance.{name}").as_str())));
        assert_eq!(info.parse_error, None);
        let observed = info.observed.as_ref().expect("parsed");
        assert_eq!(observed.name, name);
        assert!(!info.inactive_xml.contains("passwd"), "never secure info");
        // The test driver stores what it is given: nothing changed.
        assert_eq!(ObservedDomain::from_def(&d).changed_fields(observed), Vec::<String>::new());
        // The preinstalled "test" domain has no marker.
        assert_eq!(all.iter().find(|i| i.name == "test").map(|i| i.owner()), Some(None));
        assert_eq!(lv.domain(&name).unwrap().as_ref(), Some(info));

        lv.set_autostart(&name, true).unwrap();
        lv.set_autostart(&name, true).unwrap();
        assert!(lv.domain(&name).unwrap().unwrap().autostart);
        lv.set_autostart(&name, false).unwrap();

        lv.start(&name).unwrap();
        lv.start(&name).unwrap(); // idempotent
        assert_eq!(lv.domain(&name).unwrap().unwrap().state, DomainState::Running);
        // The test driver makes up one address per NIC for any source.
        assert_eq!(
            lv.agent_interfaces(&name).unwrap(),
            vec![GuestInterface { name: "tapvfut0".into(), mac: Some("52:54:00:aa:00:01".into()), addrs: vec![("192.168.0.1".parse().unwrap(), 24)] }]
        );
        // The test driver has no agent (the flag is refused): the power button.
        assert_eq!(lv.shutdown(&name, Duration::from_secs(5)).unwrap(), ShutdownOutcome::Graceful(Via::Acpi));
        assert_eq!(lv.shutdown(&name, Duration::from_secs(5)).unwrap(), ShutdownOutcome::AlreadyOff);
        let e = lv.agent_interfaces(&name).unwrap_err();
        assert_eq!((e.op.as_str(), e.object.as_str()), ("ask the guest agent", name.as_str()), "not running: {e}");
        lv.start(&name).unwrap();
        lv.destroy(&name).unwrap();
        lv.destroy(&name).unwrap(); // stopped: done
        assert_eq!(lv.domain(&name).unwrap().unwrap().state, DomainState::Shutoff);

        // The test driver rejects UNDEFINE_NVRAM: retried without it.
        lv.undefine(&name).unwrap();
        assert_eq!(lv.domain(&name).unwrap(), None);
        lv.undefine(&name).unwrap();
        lv.destroy(&name).unwrap();
        assert_eq!(lv.shutdown(&name, Duration::from_secs(1)).unwrap(), ShutdownOutcome::AlreadyOff);
        assert!(lv.domains().unwrap().iter().all(|i| i.name != name));

        let e = lv.start(&name).unwrap_err();
        assert!(is_not_found(&e), "{e}");
        assert_eq!((e.op.as_str(), e.object.as_str()), ("start domain", name.as_str()));
    }

    #[test]
    fn define_errors_name_the_domain() {
        let lv = open();
        let name = unique("bad");
        let mut d = def(&name);
        d.memory_kib = 0;
        let e = lv.define(&domain_xml(&d)).unwrap_err();
        eprintln!("{e}");
        assert_eq!((e.op.as_str(), e.object.as_str()), ("define domain", name.as_str()));
        assert!(!e.message.is_empty());
        assert!(e.to_string().starts_with(&format!("define domain {name}: ")), "{e}");
        assert_eq!(lv.domain(&name).unwrap(), None);
    }

    #[test]
    fn device_operations_report_the_driver_error() {
        let lv = open();
        let name = unique("dev");
        lv.define(&domain_xml(&def(&name))).unwrap();
        // Already in the config: nothing to do, so no driver call at all.
        lv.attach_device(&name, &disk_device_xml(&disk("vda", "/nonexistent/root.qcow2")), false).unwrap();
        // Same target, other file: a conflict, reported without touching the host.
        let e = lv.attach_device(&name, &disk_device_xml(&disk("vda", "/other.qcow2")), false).unwrap_err();
        assert!(e.message.contains("target vda is used by /nonexistent/root.qcow2"), "{e}");
        assert_eq!(e.object, format!("{name} (disk vda)"));
        // test:///default cannot attach or detach devices.
        let e = lv.attach_device(&name, &disk_device_xml(&disk("vdb", "/nonexistent/data.qcow2")), true).unwrap_err();
        assert_eq!(e.op, "attach device");
        assert_eq!(e.object, format!("{name} (disk vdb)"));
        // Not there: detach is done without asking the driver.
        lv.detach_device(&name, &disk_device_xml(&disk("vdb", "/nonexistent/data.qcow2")), true, Duration::from_secs(1)).unwrap();
        let e = lv.detach_device(&name, &disk_device_xml(&disk("vda", "/nonexistent/root.qcow2")), true, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.op, "detach device");
        assert!(e.object.contains("disk vda"));
        let e = lv.attach_device(&name, "<memballoon model='none'/>", true).unwrap_err();
        assert!(e.message.contains("<disk>, <interface> or <channel>"), "{e}");
        // Missing domain: detach is done, attach is an error.
        lv.undefine(&name).unwrap();
        lv.detach_device(&name, &disk_device_xml(&disk("vdb", "/x")), true, Duration::from_secs(1)).unwrap();
        assert!(is_not_found(&lv.attach_device(&name, &disk_device_xml(&disk("vdb", "/x")), true).unwrap_err()));
    }

    fn net(name: &str, bridge: &str, third: u8) -> NetworkDef {
        NetworkDef {
            name: name.into(),
            uuid: uuid_of(name),
            bridge: bridge.into(),
            mtu: None,
            address: Some((Ipv4Addr::new(10, 213, third, 1), 24)),
            forward: Forward::Nat,
            dhcp_range: Some((Ipv4Addr::new(10, 213, third, 100), Ipv4Addr::new(10, 213, third, 200))),
            hosts: Vec::new(),
            stp: false,
            delay: 0,
        }
    }

    #[test]
    fn network_round_trip_on_the_test_driver() {
        let lv = open();
        let name = unique("net");
        let n = net(&name, &format!("vfut{}", std::process::id() % 100_000), 7);
        lv.define_network(&network_xml(&n)).unwrap();
        let info = lv.networks().unwrap().into_iter().find(|i| i.name == name).expect("listed");
        assert!(!info.active && info.persistent && !info.autostart);
        assert_eq!(info.parse_error, None);
        assert_eq!(ObservedNetwork::from_def(&n).changed_fields(info.observed.as_ref().unwrap()), Vec::<String>::new());
        lv.start_network(&name).unwrap();
        lv.start_network(&name).unwrap();
        assert!(lv.networks().unwrap().iter().any(|i| i.name == name && i.active));

        let host = dhcp_host_xml(&mac("52:54:00:AB:00:01"), Ipv4Addr::new(10, 213, 7, 10), Some("web"));
        lv.update_network_dhcp_host(&name, &host, true).unwrap();
        lv.update_network_dhcp_host(&name, &host, true).unwrap(); // already there
        for inactive in [false, true] {
            let x = lv.network_xml(&name, inactive).unwrap();
            assert_eq!(x.matches("52:54:00:ab:00:01").count() + x.matches("52:54:00:AB:00:01").count(), 1, "{x}");
        }
        // Same MAC, new address: modified in place.
        let moved = dhcp_host_xml(&mac("52:54:00:ab:00:01"), Ipv4Addr::new(10, 213, 7, 11), Some("web"));
        lv.update_network_dhcp_host(&name, &moved, true).unwrap();
        let hosts = parse_network(&lv.network_xml(&name, false).unwrap()).unwrap().hosts;
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].ip, Ipv4Addr::new(10, 213, 7, 11));
        lv.update_network_dhcp_host(&name, &host, false).unwrap();
        lv.update_network_dhcp_host(&name, &host, false).unwrap();
        for inactive in [false, true] {
            assert!(parse_network(&lv.network_xml(&name, inactive).unwrap()).unwrap().hosts.is_empty());
        }
        let e = lv.update_network_dhcp_host(&name, "<host ip='10.0.0.1'/>", true).unwrap_err();
        assert!(e.message.contains("mac"), "{e}");

        // The test driver has no DHCP leases; the error says so (the real host's are checked in tests/e2e_libvirt.rs).
        let e = lv.leases(&name).unwrap_err();
        assert_eq!(e.op, "read DHCP leases");
        assert_eq!(e.hint.as_deref(), Some("this libvirt driver does not support the operation"));

        lv.destroy_network(&name).unwrap();
        lv.destroy_network(&name).unwrap();
        lv.undefine_network(&name).unwrap();
        lv.undefine_network(&name).unwrap();
        lv.destroy_network(&name).unwrap();
        assert!(lv.networks().unwrap().iter().all(|i| i.name != name));
        assert!(is_not_found(&lv.start_network(&name).unwrap_err()));
        assert!(is_not_found(&lv.leases(&name).unwrap_err()));
    }

    #[test]
    fn parallel_network_defines_are_serialized() {
        let lv = std::sync::Arc::new(open());
        let names: Vec<String> = (0..8).map(|_| unique("pnet")).collect();
        std::thread::scope(|s| {
            for (i, name) in names.iter().enumerate() {
                let lv = lv.clone();
                s.spawn(move || {
                    let n = net(name, &format!("vfp{}x{i}", std::process::id() % 10_000), 20 + i as u8);
                    lv.define_network(&network_xml(&n)).unwrap();
                    lv.start_network(name).unwrap();
                });
            }
        });
        let nets = lv.networks().unwrap();
        for name in &names {
            assert!(nets.iter().any(|n| &n.name == name && n.active), "{name} missing");
            lv.destroy_network(name).unwrap();
            lv.undefine_network(name).unwrap();
        }
    }

    #[test]
    fn many_domains_are_listed_by_several_threads() {
        let lv = open();
        let names: Vec<String> = (0..40).map(|_| unique("many")).collect();
        for (i, n) in names.iter().enumerate() {
            let mut d = def(n);
            d.nics[0].mac = Mac([0x52, 0x54, 0x00, 0xbb, 0x00, i as u8]);
            lv.define(&domain_xml(&d)).unwrap();
        }
        lv.start(&names[3]).unwrap();
        let all = lv.domains().unwrap();
        for (i, n) in names.iter().enumerate() {
            let info = all.iter().find(|d| &d.name == n).unwrap_or_else(|| panic!("{n} missing"));
            assert_eq!(info.state, if i == 3 { DomainState::Running } else { DomainState::Shutoff });
            assert_eq!(info.owner().map(|o| o.1.to_string()), Some(format!("instance.{n}")));
        }
        lv.destroy(&names[3]).unwrap();
        for n in &names {
            lv.undefine(n).unwrap();
        }
        let left: Vec<_> = lv.domains().unwrap().into_iter().filter(|d| names.contains(&d.name)).collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn kvm_is_not_offered_by_the_test_driver() {
        // test:///default has no domain capabilities; whatever the host, the
        // answer is no (unless the environment overrides it).
        if std::env::var(DOMAIN_TYPE_ENV).is_ok() {
            return;
        }
        let c = open().kvm_check();
        assert!(!c.usable, "{}", c.reason);
        assert!(c.reason.contains("no kvm domain capabilities"), "{}", c.reason);
    }
}
