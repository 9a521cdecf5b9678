//! Actual state: what the host holds, read into typed values.
//!
//! Invariants:
//! - These types are plain values; building them is the only place that reads
//!   the host (through the adapters in `host/`). The planner takes them as
//!   input and never touches the host itself.
//! - Ownership is read from the objects' own markers (link alias, domain
//!   metadata), never from a local state file; the two exceptions, both
//!   under `<state>/<stack>/`: the import registry (`imports.rs`), for
//!   imported objects that cannot carry a marker, which only counts while
//!   the object it pins (UUID, inode) is still there; and `names.json`
//!   ([`Names`]), which says which address a moved object takes its names
//!   from and which files and libvirt networks a `removed` block forgot
//!   (their markers are their names).

pub mod agent;
pub mod data;
pub mod imports;

use crate::host::links::Link;
use crate::model::image::ImageFormat;
use crate::xml::domain::ObservedDomain;
use std::collections::BTreeMap;

/// A domain as libvirt holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActualDomain {
    pub name: String,
    pub running: bool,
    pub autostart: bool,
    /// The inactive definition, parsed; `None` when it could not be parsed.
    pub def: Option<ObservedDomain>,
    /// virtform's marker: (stack, address, spec hash).
    pub marker: Option<(String, String, String)>,
}

/// A libvirt network (nat/isolated networks are libvirt's).
#[derive(Debug, Clone, PartialEq)]
pub struct ActualNetwork {
    pub name: String,
    /// Lowercase, dashed. virtform derives it from stack and address: the
    /// ownership marker of a libvirt network (libvirt 9.0 networks have no metadata).
    pub uuid: String,
    pub active: bool,
    pub autostart: bool,
    /// The inactive definition, parsed; `None` when it could not be parsed.
    pub def: Option<crate::xml::network::ObservedNetwork>,
}

/// A disk or image file.
#[derive(Debug, Clone, PartialEq)]
pub struct ActualFile {
    pub format: ImageFormat,
    pub virtual_size: u64,
    pub backing_file: Option<String>,
}

/// Everything the planner needs to know about the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// All links, by name.
    pub links: BTreeMap<String, Link>,
    /// All domains, by name.
    pub domains: BTreeMap<String, ActualDomain>,
    /// All libvirt networks, by name.
    pub networks: BTreeMap<String, ActualNetwork>,
    /// Open vSwitch bridges and ports; `None` when OVS is not running (then
    /// a configuration with OVS networks cannot be planned).
    pub ovs: Option<crate::host::ovs::OvsState>,
    /// Files that exist, by absolute path (disk files of the stack and cached images).
    pub files: BTreeMap<String, ActualFile>,
    /// SHA-256 of local image sources that declare none, by source path.
    pub source_hashes: BTreeMap<String, String>,
    /// Addresses of the stack's instances whose readiness waits began and
    /// never finished (`<state>/<stack>/waits/<stem>`: a wait timed out, or
    /// the apply was killed): the next plan waits for them again.
    pub pending_waits: std::collections::BTreeSet<String>,
    /// The UEFI firmware files present on the host, of those an EFI
    /// instance may name ([`OVMF_FILES`](crate::xml::domain::OVMF_FILES)).
    pub firmware: std::collections::BTreeSet<String>,
    /// This stack's import registry (`<state>/<stack>/imports.json`):
    /// address → the libvirt network or file it took over.
    pub imports: BTreeMap<String, imports::Imported>,
    /// Every other stack's registry, by stack: their objects are never imported here.
    pub other_imports: BTreeMap<String, BTreeMap<String, imports::Imported>>,
    /// `lstat` facts of the paths import blocks and the registry name.
    pub paths: BTreeMap<String, imports::PathFact>,
    /// The stack's record of moved and forgotten objects
    /// (`<state>/<stack>/names.json`, see [`Names`]).
    pub names: Names,
}

/// What the host's objects cannot say themselves about moves and
/// `removed { destroy = false }`, kept in `<state>/<stack>/names.json`
/// (0600, written atomically by the apply):
/// - `names`: resource address → the address its host names derive from
///   (a moved domain keeps its name, UUID, console log and seed stems, a
///   moved bridge its name, a moved port its MAC and id, a moved disk or
///   volume its file). Written before the markers are rewritten.
/// - `forgotten`: host objects the stack no longer owns although they
///   still look like its own (a file under `<state>/<stack>/`, a libvirt
///   network whose UUID virtform derived): orphans and destroy skip them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Names {
    #[serde(default)]
    pub names: BTreeMap<String, String>,
    #[serde(default)]
    pub forgotten: std::collections::BTreeSet<String>,
}

impl Names {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.forgotten.is_empty()
    }

    /// Where the record lives.
    pub fn path(state_dir: &std::path::Path, stack: &str) -> std::path::PathBuf {
        state_dir.join(stack).join("names.json")
    }

    /// Reads the record; a missing file is an empty record, an unreadable
    /// one an error (planning without it would rename or delete moved objects).
    pub fn read(state_dir: &std::path::Path, stack: &str) -> Result<Names, crate::host::HostError> {
        let p = Names::path(state_dir, stack);
        match std::fs::read_to_string(&p) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| crate::host::HostError::new("read", p.display().to_string(), e.to_string()).hint("the record of moved and forgotten objects is damaged: restore it, or remove it and re-add the moved blocks")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Names::default()),
            Err(e) => Err(crate::host::HostError::new("read", p.display().to_string(), e.to_string())),
        }
    }

    /// Writes the record atomically (0600); an empty record removes the file.
    pub fn write(&self, state_dir: &std::path::Path, stack: &str) -> Result<(), crate::host::HostError> {
        write_record(&Names::path(state_dir, stack), (!self.is_empty()).then_some(self))
    }
}

/// Writes one of a stack's records on this machine (`names.json`,
/// `hosts.json`): pretty JSON into a `.part` beside it (0600, fsynced), then
/// renamed over it; `None` removes the file (an empty record).
pub fn write_record<T: serde::Serialize>(p: &std::path::Path, value: Option<&T>) -> Result<(), crate::host::HostError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| crate::host::HostError::new("write", p.display().to_string(), e.to_string());
    let Some(value) = value else {
        return match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(e)),
            _ => Ok(()),
        };
    };
    if let Some(d) = p.parent() {
        crate::host::disks::ensure_dir(d)?;
    }
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = p.with_file_name(format!(".{name}.part"));
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, p).map_err(err)
}

impl Observed {
    /// The owner recorded in a link's alias.
    pub fn link_owner(&self, name: &str) -> Option<(String, String)> {
        self.links.get(name).and_then(Link::owner).map(|(s, a)| (s.to_string(), a.to_string()))
    }

    /// A stable fingerprint of the part of the host a stack's plan depends
    /// on (plan files refuse to apply when it changed since): objects that
    /// carry the stack's marker, objects with a name in `wanted` (what the
    /// configuration would create: conflicts), and the stack's files. Other
    /// stacks' and unrelated objects do not count, so a busy host does not
    /// invalidate every saved plan.
    pub fn fingerprint(&self, stack: &str, wanted: &std::collections::BTreeSet<String>) -> String {
        use sha2::Digest;
        let mine = |marker: Option<&str>| marker.is_some_and(|m| m.strip_prefix("virtform:").and_then(|r| r.split_once(':')).is_some_and(|(s, _)| s == stack));
        let mut h = sha2::Sha256::new();
        for (n, l) in &self.links {
            if !wanted.contains(n) && !mine(l.alias.as_deref()) {
                continue;
            }
            h.update(format!("link {n} {:?} {:?} {} {} {:?} {:?} {} {:?}\n", l.kind, l.alias, l.mtu, l.up, l.master, l.addrs, l.promisc, l.veth_peer).as_bytes());
            if let Some(b) = &l.bridge {
                h.update(format!(" {} {}\n", b.stp, b.forward_delay_cs).as_bytes());
            }
        }
        for (n, d) in &self.domains {
            if !wanted.contains(n) && d.marker.as_ref().is_none_or(|m| m.0 != stack) {
                continue;
            }
            h.update(format!("domain {n} {} {} {:?}\n", d.running, d.autostart, d.marker).as_bytes());
            if let Some(def) = &d.def {
                h.update(def.normalized_xml().as_bytes());
            }
        }
        let net_prefix = format!("vf-{stack}-");
        for (n, net) in &self.networks {
            if !wanted.contains(n) && !n.starts_with(&net_prefix) {
                continue;
            }
            h.update(format!("network {n} {} {} {} {:?}\n", net.uuid, net.active, net.autostart, net.def).as_bytes());
        }
        if let Some(ovs) = &self.ovs {
            for (n, b) in &ovs.bridges {
                if wanted.contains(n) || mine(ovs.bridge_marker(n)) {
                    h.update(format!("ovs bridge {n} {:?}\n", b).as_bytes());
                }
            }
            for (n, p) in &ovs.ports {
                if wanted.contains(n) || mine(ovs.port_marker(n)) {
                    h.update(format!("ovs port {n} {:?}\n", p).as_bytes());
                }
            }
        }
        for (p, f) in &self.files {
            h.update(format!("file {p} {:?} {} {:?}\n", f.format, f.virtual_size, f.backing_file).as_bytes());
        }
        for (a, i) in &self.imports {
            h.update(format!("import {a} {i:?}\n").as_bytes());
        }
        for (st, objs) in &self.other_imports {
            for (a, i) in objs.iter().filter(|(_, i)| wanted.contains(i.object())) {
                h.update(format!("import of {st} {a} {i:?}\n").as_bytes());
            }
        }
        for (p, f) in &self.paths {
            h.update(format!("path {p} {f:?}\n").as_bytes());
        }
        for a in &self.pending_waits {
            h.update(format!("pending wait {a}\n").as_bytes());
        }
        for f in &self.firmware {
            h.update(format!("firmware {f}\n").as_bytes());
        }
        if !self.names.is_empty() {
            h.update(format!("names {:?} {:?}\n", self.names.names, self.names.forgotten).as_bytes());
        }
        crate::model::common::hex(&h.finalize())
    }
}

/// The UEFI firmware files of [`OVMF_FILES`](crate::xml::domain::OVMF_FILES)
/// that exist (regular files, or symlinks to them). A few `stat` calls.
pub fn firmware_files() -> std::collections::BTreeSet<String> {
    crate::xml::domain::OVMF_FILES.iter().filter(|f| std::path::Path::new(f).is_file()).map(|f| f.to_string()).collect()
}

/// [`firmware_files`] on a host reached through `exec` (one `stat` of
/// them all; when that fails, they count as absent).
pub fn firmware_files_on(exec: &crate::host::exec::Executor) -> std::collections::BTreeSet<String> {
    if exec.is_local() {
        return firmware_files();
    }
    let files = crate::xml::domain::OVMF_FILES;
    let paths: Vec<&std::path::Path> = files.iter().map(std::path::Path::new).collect();
    let stats = exec.stat_many(&paths).unwrap_or_default();
    files.iter().zip(stats).filter(|(_, s)| s.is_some_and(|s| s.kind == crate::host::exec::FileKind::File)).map(|(f, _)| f.to_string()).collect()
}

/// Files by path, and hashes of image sources by source path.
pub type Scanned = (BTreeMap<String, ActualFile>, BTreeMap<String, String>);

/// Where an instance's pending-wait marker lives.
pub fn pending_wait_path(state_dir: &std::path::Path, stack: &str, addr: &crate::model::Address) -> std::path::PathBuf {
    state_dir.join(stack).join("waits").join(addr.file_stem())
}

/// The instances whose waits did not finish (see [`Observed::pending_waits`]).
pub fn scan_pending_waits(state_dir: &std::path::Path, stack: &str) -> std::collections::BTreeSet<String> {
    let Ok(rd) = std::fs::read_dir(state_dir.join(stack).join("waits")) else { return Default::default() };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| crate::model::Address::from_stem(crate::model::Kind::Instance, n)).map(|a| a.to_string()))
        .collect()
}

/// Reads the files the stack may own (its disks and the image cache) and
/// hashes local image sources that declare no sha256.
///
/// One `read_dir` per directory and one header read per file; no processes.
/// `remember`: record the hashes of local image sources in the image
/// cache's index ([`disks::source_hash`](crate::host::disks::source_hash));
/// applies do (under the stack lock), plans only read it.
pub fn scan_files(cfg: &crate::config::Configuration, state_dir: &std::path::Path, remember: bool) -> Result<Scanned, crate::host::HostError> {
    use crate::host::{disks, HostError};
    let mut files = BTreeMap::new();
    let dirs = [state_dir.join(&cfg.stack).join("disks"), state_dir.join(&cfg.stack).join("volumes"), state_dir.join(&cfg.stack).join("seeds"), state_dir.join("images")];
    for dir in dirs {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(HostError::new("list", dir.display().to_string(), e.to_string())),
        };
        for entry in rd.flatten() {
            let p = entry.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // `.part` files and locks are in-flight work, not objects.
            if name.starts_with('.') || !p.is_file() {
                continue;
            }
            match disks::inspect(&p) {
                Ok(info) => {
                    files.insert(p.to_string_lossy().into_owned(), ActualFile { format: info.format, virtual_size: info.virtual_size, backing_file: info.backing_file });
                }
                Err(e) => tracing::warn!("cannot inspect {}: {e}", p.display()),
            }
        }
    }
    let mut hashes = BTreeMap::new();
    for r in &cfg.resources {
        if let crate::model::Spec::Image(img) = &r.spec
            && img.sha256.is_none()
            && !img.is_remote()
        {
            {
                let h = disks::source_hash(&state_dir.join("images"), std::path::Path::new(&img.source), remember)
                    .map_err(|e| HostError::new("read image", &img.source, e.to_string()).hint(format!("{} declares this source; check the path", r.address)))?;
                hashes.insert(img.source.clone(), h);
            }
        }
    }
    Ok((files, hashes))
}

/// [`scan_files`]'s files on a remote host (its state dir, through its
/// executor): the directories that exist listed in one `find`, then each
/// file's header (`disks::inspect_on`). Source hashes are the client's
/// (images are delivered from here), so this returns files only.
pub fn scan_files_on(exec: &crate::host::exec::Executor, stack: &str, state_dir: &std::path::Path) -> Result<BTreeMap<String, ActualFile>, crate::host::HostError> {
    use crate::host::{disks, exec::FileKind};
    use std::ffi::OsStr;
    let dirs = [state_dir.join(stack).join("disks"), state_dir.join(stack).join("volumes"), state_dir.join(stack).join("seeds"), state_dir.join("images")];
    let stats = exec.stat_many(&dirs.iter().map(|d| d.as_path()).collect::<Vec<_>>())?;
    let present: Vec<&OsStr> = dirs.iter().zip(stats).filter(|(_, s)| s.is_some_and(|s| s.kind == FileKind::Dir)).map(|(d, _)| d.as_os_str()).collect();
    let mut files = BTreeMap::new();
    if present.is_empty() {
        return Ok(files);
    }
    let mut argv: Vec<&OsStr> = vec![OsStr::new("find")];
    argv.extend(present.iter().copied());
    argv.extend(["-mindepth", "1", "-maxdepth", "1", "-type", "f", "-print0"].map(OsStr::new));
    let out = exec.run_bytes("list the state dir", &state_dir.display().to_string(), &argv, crate::host::exec::Input::None)?;
    let paths: Vec<&std::path::Path> = out
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| std::path::Path::new(std::str::from_utf8(p).unwrap_or_default()))
        // `.part` files and locks are in-flight work, not objects.
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.is_empty() && !n.starts_with('.')))
        .collect();
    for (p, r) in paths.iter().zip(disks::inspect_many_on(exec, &paths)) {
        match r {
            Ok(info) => {
                files.insert(p.to_string_lossy().into_owned(), ActualFile { format: info.format, virtual_size: info.virtual_size, backing_file: info.backing_file });
            }
            Err(e) => tracing::warn!("cannot inspect {} on {}: {e}", p.display(), exec.host_name()),
        }
    }
    Ok(files)
}

/// Reads the host state that does not depend on the configuration: libvirt
/// networks, Open vSwitch, the link dump and libvirt domains, each on its own
/// thread (they wait on different daemons and processes). Errors are
/// reported in that order, whichever came first.
pub fn observe_host(
    links: &dyn crate::host::links::LinkHost,
    libvirt: &dyn crate::host::libvirt::Libvirt,
    ovs: &dyn crate::host::ovs::Ovs,
) -> Result<Observed, crate::host::HostError> {
    use crate::host::HostError;
    fn joined<T>(h: std::thread::ScopedJoinHandle<'_, Result<T, HostError>>, what: &str) -> Result<T, HostError> {
        h.join().unwrap_or_else(|_| Err(HostError::new("read the host", what, "the reading thread panicked")))
    }
    let (networks, ovs_state, link_list, domains) = std::thread::scope(|s| {
        let networks = s.spawn(|| libvirt.networks());
        let ovs_state = s.spawn(|| ovs.state());
        let link_list = s.spawn(|| links.list());
        let domains = libvirt.domains();
        (joined(networks, "libvirt networks"), joined(ovs_state, "Open vSwitch"), joined(link_list, "links"), domains)
    });
    let mut o = Observed { firmware: firmware_files(), ..Default::default() };
    for n in networks? {
        o.networks.insert(n.name.clone(), ActualNetwork { name: n.name, uuid: n.uuid, active: n.active, autostart: n.autostart, def: n.observed });
    }
    // OVS is read when it runs; a configuration that needs it and finds it
    // down gets a plan error saying how to start it.
    o.ovs = match ovs_state {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!("Open vSwitch not available: {e}");
            None
        }
    };
    for l in link_list? {
        o.links.insert(l.name.clone(), l);
    }
    for d in domains? {
        let marker = d.marker.as_ref().map(|m| (m.stack.clone(), m.address.clone(), m.spec_hash.clone()));
        o.domains.insert(
            d.name.clone(),
            ActualDomain {
                name: d.name.clone(),
                running: matches!(d.state, crate::host::libvirt::DomainState::Running | crate::host::libvirt::DomainState::Paused),
                autostart: d.autostart,
                def: d.observed,
                marker,
            },
        );
    }
    Ok(o)
}

/// Reads the whole host state the planner needs: [`observe_host`] and, at
/// the same time, the stack's files ([`scan_files`], remembering source
/// hashes when `remember`).
pub fn observe(
    links: &dyn crate::host::links::LinkHost,
    libvirt: &dyn crate::host::libvirt::Libvirt,
    ovs: &dyn crate::host::ovs::Ovs,
    cfg: &crate::config::Configuration,
    state_dir: &std::path::Path,
    remember: bool,
) -> Result<Observed, crate::host::HostError> {
    let (host, files) = std::thread::scope(|s| {
        let files = s.spawn(|| scan_files(cfg, state_dir, remember));
        let host = observe_host(links, libvirt, ovs);
        let files = files.join().unwrap_or_else(|_| Err(crate::host::HostError::new("read the host", "state dir", "the reading thread panicked")));
        (host, files)
    });
    let mut o = host?;
    let (files, hashes) = files?;
    o.files = files;
    o.source_hashes = hashes;
    o.pending_waits = scan_pending_waits(state_dir, &cfg.stack);
    o.add_imports(imports::scan(cfg, state_dir)?);
    o.names = Names::read(state_dir, &cfg.stack)?;
    Ok(o)
}
