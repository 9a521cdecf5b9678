//! The import registry: `<state_dir>/<stack>/imports.json`, the objects a
//! stack took over whose marker cannot be written on the object itself
//! (libvirt networks: libvirt 9.0 networks have no metadata, and
//! virtform's own are marked by a UUID derived from stack and address;
//! disk and volume files outside `<state_dir>/<stack>/`).
//!
//! Invariants:
//! - An entry names the object *and* pins it: a libvirt network by name and
//!   UUID, a file by path, device and inode. An object is the stack's only
//!   while both still match (`Imported::matches`): a network redefined under
//!   the same name, or a file replaced at the same path, is not.
//! - Written only by the apply (under the stack lock), read-modify-write
//!   under a process-wide mutex (steps run in parallel), atomically (a temporary
//!   file renamed into place), 0600; the file goes when its last entry does.
//! - An imported path is absolute, normalized (no `.`, `..`, empty
//!   components or trailing slash), outside the state directory (the image
//!   cache and every stack's files), and a regular file, not a symlink
//!   ([`check_path`]); observe reads such paths with `lstat` only.
//! - On a remote host the same facts come from the host ([`scan_on`],
//!   [`path_fact_on`]: `stat` without following links, the header as
//!   `disks::inspect_on` reads it, `getfattr`; the real path by `realpath`
//!   against the host's state directory) and the marker is written there
//!   ([`write_marker_on`]: `setfattr`, the value hex-encoded so no byte
//!   of it is parsed). A host without user attributes, or without the
//!   `attr` tools, keeps the ownership in the registry only, as a local
//!   filesystem without them does. The registry itself is always this
//!   machine's.

use crate::host::exec::{Executor, Input};
use crate::host::HostError;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The registry's file name under `<state_dir>/<stack>/`.
pub const FILE: &str = "imports.json";

/// One imported object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Imported {
    /// A libvirt network, by name and UUID (lowercase, dashed).
    LibvirtNetwork { name: String, uuid: String },
    /// A disk or volume file, by absolute path, device and inode.
    File { path: String, dev: u64, ino: u64 },
}

impl Imported {
    /// The host name or path the lowering uses instead of the derived one.
    pub fn object(&self) -> &str {
        match self {
            Imported::LibvirtNetwork { name, .. } => name,
            Imported::File { path, .. } => path,
        }
    }

    /// How a plan names it ("libvirt network default", "/srv/data.qcow2").
    pub fn describe(&self) -> String {
        match self {
            Imported::LibvirtNetwork { name, .. } => format!("libvirt network {name}"),
            Imported::File { path, .. } => path.clone(),
        }
    }

    /// Whether the object the entry pins is still on the host, the same one.
    pub fn matches(&self, obs: &super::Observed) -> bool {
        match self {
            Imported::LibvirtNetwork { name, uuid } => obs.networks.get(name).is_some_and(|n| n.uuid == *uuid),
            Imported::File { path, dev, ino } => matches!(obs.paths.get(path), Some(PathFact::File { dev: d, ino: i, .. }) if d == dev && i == ino),
        }
    }
}

/// A stack's registry as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub format_version: u32,
    /// Address → object.
    pub objects: BTreeMap<String, Imported>,
}

/// What `lstat` says about an imported path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathFact {
    Missing,
    /// Not a regular file: "a directory", "a symlink", "a block device"…
    NotAFile(String),
    /// Unreadable for another reason (permissions…).
    Unreadable(String),
    /// A regular file; `refusal`: why virtform will not use it as a disk
    /// (a backing file, an external data file, a foreign signature…);
    /// `marker`: its `user.virtform` extended attribute, the marker the
    /// apply writes on an imported file (seen from every state directory).
    File { dev: u64, ino: u64, refusal: Option<String>, marker: Option<String> },
}

pub fn registry_path(state_dir: &Path, stack: &str) -> PathBuf {
    state_dir.join(stack).join(FILE)
}

/// Reads a stack's registry; a missing file is an empty one. A damaged one
/// is an error: ownership must not be forgotten silently.
pub fn read(state_dir: &Path, stack: &str) -> Result<Registry, HostError> {
    let p = registry_path(state_dir, stack);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            HostError::new("read import registry", p.display().to_string(), format!("not a virtform import registry: {e}")).hint("restore it, or remove it (the imported objects are then no longer this stack's)")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
        Err(e) => Err(HostError::new("read import registry", p.display().to_string(), e.to_string())),
    }
}

/// Every other stack's registry under the state dir (unreadable ones are
/// skipped with a warning: they only add refusals).
pub fn read_others(state_dir: &Path, stack: &str) -> BTreeMap<String, Registry> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(state_dir) else { return out };
    for e in rd.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else { continue };
        if name == stack || name == "images" || name.starts_with('.') || !e.path().join(FILE).is_file() {
            continue;
        }
        match read(state_dir, &name) {
            Ok(r) => {
                out.insert(name, r);
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    out
}

static WRITE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Changes a stack's registry: read, `f`, written atomically (0600), or
/// removed when empty.
pub fn update(state_dir: &Path, stack: &str, f: impl FnOnce(&mut Registry)) -> Result<(), HostError> {
    let _g = WRITE.lock().unwrap_or_else(|p| p.into_inner());
    let mut r = read(state_dir, stack)?;
    f(&mut r);
    r.format_version = 1;
    let p = registry_path(state_dir, stack);
    let err = |e: std::io::Error| HostError::new("write import registry", p.display().to_string(), e.to_string());
    if r.objects.is_empty() {
        return match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(e)),
            _ => Ok(()),
        };
    }
    crate::host::disks::ensure_dir(&state_dir.join(stack))?;
    let tmp = state_dir.join(stack).join(format!(".{FILE}.part"));
    let _ = std::fs::remove_file(&tmp);
    let text = serde_json::to_vec_pretty(&r).map_err(|e| err(std::io::Error::other(e)))?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        std::io::Write::write_all(&mut f, &text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)
    };
    write().map_err(err)
}

/// Why a path cannot be imported as a disk or volume file, before looking
/// at it: not absolute, not normalized, or under the state directory.
pub fn check_path(path: &str, state_dir: &Path) -> Result<(), String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(format!("{path:?} is not an absolute path; an imported disk or volume is named by its absolute path"));
    }
    let normal = path.len() > 1 && path.split('/').skip(1).all(|c| !c.is_empty() && c != "." && c != "..");
    if !normal {
        return Err(format!("{path:?} is not a normalized path (no `.`, `..`, `//` or trailing `/`); write the file's own path"));
    }
    let norm_state: PathBuf = state_dir.components().filter(|c| !matches!(c, Component::CurDir)).collect();
    // Through symbolic links in its directories too: the file's real path.
    let real = std::fs::canonicalize(p).ok();
    let under = |dir: &Path| p.starts_with(dir) || real.as_deref().is_some_and(|r| r.starts_with(dir));
    if under(&norm_state) || std::fs::canonicalize(state_dir).is_ok_and(|s| under(&s)) {
        return Err(format!(
            "{path:?} is under virtform's state directory {}: the image cache and the stacks' own files are never imported",
            state_dir.display()
        ));
    }
    Ok(())
}

/// `lstat`s a path and, for a regular file, reads its header: the fact the
/// planner checks an import against. `info` is the header when readable.
pub fn path_fact(path: &Path) -> (PathFact, Option<crate::host::disks::ImageInfo>) {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (PathFact::Missing, None),
        Err(e) => return (PathFact::Unreadable(e.to_string()), None),
    };
    if let Some(what) = not_a_file(m.mode()) {
        return (PathFact::NotAFile(what.into()), None);
    }
    file_fact(crate::host::disks::inspect(path), path, m.dev(), m.ino(), || read_marker(path))
}

/// What a path of file mode `mode` (`st_mode`) is when it is not a
/// regular file.
fn not_a_file(mode: u32) -> Option<&'static str> {
    match mode & 0o170000 {
        0o100000 => None,
        0o120000 => Some("a symbolic link (import the file it names, by its own path)"),
        0o040000 => Some("a directory"),
        _ => Some("not a regular file (a device, FIFO or socket)"),
    }
}

/// The fact of a regular file from its header (or why it is unreadable):
/// refused as a disk where a base image would be.
fn file_fact(
    header: Result<crate::host::disks::ImageInfo, HostError>,
    path: &Path,
    dev: u64,
    ino: u64,
    marker: impl FnOnce() -> Option<String>,
) -> (PathFact, Option<crate::host::disks::ImageInfo>) {
    match header {
        Ok(info) => {
            let refusal = crate::host::disks::check_base_image(&info, info.format, &path.display().to_string()).err().map(|e| match e.hint {
                Some(h) => format!("{}; {h}", e.message),
                None => e.message,
            });
            (PathFact::File { dev, ino, refusal, marker: marker() }, Some(info))
        }
        Err(e) => (PathFact::Unreadable(e.message), None),
    }
}

/// [`path_fact`] on a host: on a remote one `stat` of the path itself
/// (`%f %d %i`: mode, device, inode, as `lstat` gives them), its header
/// read as [`crate::host::disks::inspect_on`] reads it, and its marker
/// ([`read_marker_on`]).
pub fn path_fact_on(x: &Executor, path: &Path) -> (PathFact, Option<crate::host::disks::ImageInfo>) {
    if x.is_local() {
        return path_fact(path);
    }
    let object = path.display().to_string();
    let argv = [OsStr::new("stat"), OsStr::new("-c"), OsStr::new("%f %d %i"), OsStr::new("--"), path.as_os_str()];
    let o = match x.output("inspect imported file", &object, &argv, Input::None) {
        Ok(o) => o,
        Err(e) => return (PathFact::Unreadable(e.to_string()), None),
    };
    if !o.success() {
        let msg = String::from_utf8_lossy(&o.stderr).trim().to_string();
        return (if msg.contains("No such file") { PathFact::Missing } else { PathFact::Unreadable(msg) }, None);
    }
    let Some((mode, dev, ino)) = parse_stat(&String::from_utf8_lossy(&o.stdout)) else {
        return (PathFact::Unreadable(format!("cannot parse stat's output {:?}", String::from_utf8_lossy(&o.stdout))), None);
    };
    if let Some(what) = not_a_file(mode) {
        return (PathFact::NotAFile(what.into()), None);
    }
    file_fact(crate::host::disks::inspect_on(x, path), path, dev, ino, || read_marker_on(x, path))
}

/// `stat -c '%f %d %i'`: the mode in hex, device and inode in decimal.
fn parse_stat(text: &str) -> Option<(u32, u64, u64)> {
    let mut w = text.split_whitespace();
    let mode = u32::from_str_radix(w.next()?, 16).ok()?;
    let (dev, ino) = (w.next()?.parse().ok()?, w.next()?.parse().ok()?);
    w.next().is_none().then_some((mode, dev, ino))
}

/// [`read_marker`] on a host: on a remote one `getfattr` (none when it
/// fails: no attribute, no user attributes, no `attr` tools there).
pub fn read_marker_on(x: &Executor, path: &Path) -> Option<String> {
    if x.is_local() {
        return read_marker(path);
    }
    let argv = [OsStr::new("getfattr"), OsStr::new("--absolute-names"), OsStr::new("--only-values"), OsStr::new("-h"), OsStr::new("-n"), OsStr::new(XATTR), OsStr::new("--"), path.as_os_str()];
    let o = x.output("read the marker of imported file", &path.display().to_string(), &argv, Input::None).ok()?;
    (o.success() && !o.stdout.is_empty()).then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// [`write_marker`] on a host: on a remote one `setfattr` with the value
/// hex-encoded (`0x…`: no byte of the marker is parsed). A filesystem
/// without user attributes, or a host without `setfattr` (Debian's `attr`
/// package), is not an error: the registry still holds the ownership.
pub fn write_marker_on(x: &Executor, path: &Path, marker: &str) -> Result<(), HostError> {
    if x.is_local() {
        return write_marker(path, marker);
    }
    let value = format!("0x{}", crate::model::common::hex(marker.as_bytes()));
    let argv = [OsStr::new("setfattr"), OsStr::new("-h"), OsStr::new("-n"), OsStr::new(XATTR), OsStr::new("-v"), OsStr::new(&value), OsStr::new("--"), path.as_os_str()];
    let object = path.display().to_string();
    let o = x.output("mark imported file", &object, &argv, Input::None)?;
    if o.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&o.stderr).trim().to_string();
    if o.code == Some(127) || msg.contains("not supported") || msg.contains("not found") {
        tracing::warn!("{object} on {}: cannot write its {XATTR} attribute ({msg}); the import is recorded in the registry only", x.host_name());
        return Ok(());
    }
    Err(HostError::new(x.named("mark imported file"), object, msg))
}

/// The extended attribute an imported file carries: `virtform:<stack>:<address>`.
pub const XATTR: &str = "user.virtform";

fn c_path(path: &Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

/// A file's `user.virtform` attribute (not following symlinks); None when
/// it has none or the filesystem keeps no user attributes.
pub fn read_marker(path: &Path) -> Option<String> {
    let p = c_path(path).ok()?;
    let name = std::ffi::CString::new(XATTR).ok()?;
    let mut buf = [0u8; 512];
    // SAFETY: both strings are NUL-terminated; the buffer's length is passed.
    let n = unsafe { libc::lgetxattr(p.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n > 0).then(|| String::from_utf8_lossy(&buf[..n as usize]).into_owned())
}

/// Writes the marker attribute on an imported file. A filesystem without
/// user attributes (`ENOTSUP`) is not an error: the registry still holds
/// the ownership; only other state directories cannot see it.
pub fn write_marker(path: &Path, marker: &str) -> Result<(), HostError> {
    let err = |e: std::io::Error| HostError::new("mark imported file", path.display().to_string(), e.to_string());
    let p = c_path(path).map_err(err)?;
    let name = std::ffi::CString::new(XATTR).map_err(|e| err(std::io::Error::other(e)))?;
    // SAFETY: NUL-terminated strings; the value's pointer and length belong together.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), name.as_ptr(), marker.as_ptr().cast(), marker.len(), 0) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOTSUP) {
        tracing::warn!("{}: the filesystem keeps no user attributes; the import is recorded in the registry only", path.display());
        return Ok(());
    }
    Err(err(e))
}

/// What observe reads for imports: this stack's registry, the others', and
/// the facts of every path an import block or the registry names (those
/// that are usable files also go into `Observed::files`).
#[derive(Debug, Default)]
pub struct Scan {
    pub registry: Registry,
    pub others: BTreeMap<String, Registry>,
    pub paths: BTreeMap<String, PathFact>,
    pub files: BTreeMap<String, super::ActualFile>,
}

/// Reads [`Scan`] for a configuration.
pub fn scan(cfg: &crate::config::Configuration, state_dir: &Path) -> Result<Scan, HostError> {
    let registry = read(state_dir, &cfg.stack)?;
    let others = read_others(state_dir, &cfg.stack);
    let wanted = wanted_paths(&registry, cfg, state_dir);
    let mut s = Scan { registry, others, ..Default::default() };
    for p in wanted {
        if s.paths.contains_key(&p) {
            continue;
        }
        let (fact, info) = path_fact(Path::new(&p));
        if let (PathFact::File { refusal: None, .. }, Some(info)) = (&fact, info) {
            s.files.insert(p.clone(), super::ActualFile { format: info.format, virtual_size: info.virtual_size, backing_file: info.backing_file });
        }
        s.paths.insert(p, fact);
    }
    Ok(s)
}

/// The facts of `paths` on a remote host (for [`Scan::paths`] and
/// [`Scan::files`]; the registries are this machine's): each path's real
/// path is resolved there first (`realpath -m`, with the host's state
/// directory), and one inside that state directory is refused as
/// [`check_path`] refuses one here.
pub fn scan_on(x: &Executor, paths: &[String], state_dir: &Path) -> Scan {
    let mut s = Scan::default();
    let mut argv: Vec<&OsStr> = vec![OsStr::new("realpath"), OsStr::new("-m"), OsStr::new("--"), state_dir.as_os_str()];
    argv.extend(paths.iter().map(OsStr::new));
    let real: Vec<String> = match x.output("resolve imported paths", "state dir", &argv, Input::None) {
        Ok(o) if o.success() => String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect(),
        _ => Vec::new(),
    };
    let state_real = real.first().cloned();
    for (i, p) in paths.iter().enumerate() {
        if s.paths.contains_key(p) {
            continue;
        }
        let inside = match (&state_real, real.get(i + 1)) {
            (Some(sd), Some(r)) if Path::new(r).starts_with(sd) && r != p => Some(r.clone()),
            _ => None,
        };
        if let Some(r) = inside {
            let why = format!("inside virtform's state directory {} through a symbolic link (its real path is {r}): the image cache and the stacks' own files are never imported", state_dir.display());
            s.paths.insert(p.clone(), PathFact::NotAFile(why));
            continue;
        }
        let (fact, info) = path_fact_on(x, Path::new(p));
        if let (PathFact::File { refusal: None, .. }, Some(info)) = (&fact, info) {
            s.files.insert(p.clone(), super::ActualFile { format: info.format, virtual_size: info.virtual_size, backing_file: info.backing_file });
        }
        s.paths.insert(p.clone(), fact);
    }
    s
}

/// The paths whose facts a host's observation needs: every file the
/// registry names (an entry is matched against each host's facts) and
/// every file an import block of `cfg` (that host's part) names.
pub fn wanted_paths(registry: &Registry, cfg: &crate::config::Configuration, state_dir: &Path) -> Vec<String> {
    use crate::model::Kind;
    let mut wanted: Vec<String> = registry.objects.values().filter_map(|o| match o {
        Imported::File { path, .. } => Some(path.clone()),
        _ => None,
    }).collect();
    wanted.extend(cfg.imports.iter().filter(|i| matches!(i.to.kind, Kind::Disk | Kind::Volume) && check_path(&i.id, state_dir).is_ok()).map(|i| i.id.clone()));
    wanted.sort();
    wanted.dedup();
    wanted
}

impl super::Observed {
    /// Merges an import [`Scan`] into the observation.
    pub fn add_imports(&mut self, s: Scan) {
        self.imports = s.registry.objects;
        self.other_imports = s.others.into_iter().map(|(k, v)| (k, v.objects)).collect();
        self.paths = s.paths;
        self.files.extend(s.files);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_absolute_normalized_and_outside_the_state_dir() {
        let st = Path::new("/var/lib/virtform");
        assert!(check_path("/srv/vm/data.qcow2", st).is_ok());
        for bad in ["data.qcow2", "./data.qcow2", "/srv/../etc/x", "/srv/./x", "/srv//x", "/srv/x/", "/"] {
            assert!(check_path(bad, st).is_err(), "{bad}");
        }
        let e = check_path("/var/lib/virtform/images/abc", st).unwrap_err();
        assert!(e.contains("state directory"), "{e}");
        assert!(check_path("/var/lib/virtform/other/disks/a.qcow2", st).is_err());
        assert!(check_path("/var/lib/virtform2/a.qcow2", st).is_ok());
    }

    /// A directory link into the state dir does not smuggle a stack's file in.
    #[test]
    fn a_path_through_a_symlinked_directory_is_checked_by_its_real_path() {
        let tmp = tempfile::tempdir().unwrap();
        let st = tmp.path().join("state");
        std::fs::create_dir_all(st.join("other/disks")).unwrap();
        std::fs::write(st.join("other/disks/a.qcow2"), b"x").unwrap();
        std::os::unix::fs::symlink(st.join("other/disks"), tmp.path().join("link")).unwrap();
        let via = tmp.path().join("link/a.qcow2");
        let e = check_path(via.to_str().unwrap(), &st).unwrap_err();
        assert!(e.contains("state directory"), "{e}");
    }

    #[test]
    fn the_registry_is_written_0600_atomically_and_removed_when_empty() {
        let d = tempfile::tempdir().unwrap();
        let e = Imported::LibvirtNetwork { name: "default".into(), uuid: "u".into() };
        update(d.path(), "st", |r| {
            r.objects.insert("network.lan".into(), e.clone());
        })
        .unwrap();
        let p = registry_path(d.path(), "st");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read(d.path(), "st").unwrap().objects.get("network.lan"), Some(&e));
        assert!(read_others(d.path(), "other").contains_key("st"));
        update(d.path(), "st", |r| {
            r.objects.remove("network.lan");
        })
        .unwrap();
        assert!(!p.exists());
        std::fs::create_dir_all(d.path().join("bad")).unwrap();
        std::fs::write(registry_path(d.path(), "bad"), "{").unwrap();
        assert!(read(d.path(), "bad").unwrap_err().to_string().contains("not a virtform import registry"));
    }

    #[test]
    fn path_facts_refuse_links_directories_and_backing_files() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.raw");
        std::fs::write(&f, vec![0u8; 4096]).unwrap();
        assert!(matches!(path_fact(&f).0, PathFact::File { refusal: None, .. }));
        std::os::unix::fs::symlink(&f, d.path().join("l")).unwrap();
        assert!(matches!(path_fact(&d.path().join("l")).0, PathFact::NotAFile(w) if w.contains("symbolic link")));
        assert!(matches!(path_fact(d.path()).0, PathFact::NotAFile(w) if w == "a directory"));
        assert_eq!(path_fact(&d.path().join("none")).0, PathFact::Missing);
        // The marker attribute, where the filesystem keeps user attributes.
        if write_marker(&f, "virtform:st:disk.d").is_ok() && read_marker(&f).is_some() {
            assert!(matches!(path_fact(&f).0, PathFact::File { marker: Some(m), .. } if m == "virtform:st:disk.d"));
        }
    }

    /// What a remote host's `stat -c '%f %d %i'` says, read as `lstat` is here.
    #[test]
    fn a_remote_stat_is_read_as_lstat() {
        assert_eq!(parse_stat("81a4 2049 1234567\n"), Some((0o100644, 2049, 1234567)));
        assert_eq!(parse_stat("a1ff 2049 9"), Some((0o120777, 2049, 9)));
        for bad in ["", "81a4 2049", "zz 1 2", "81a4 x 2", "81a4 1 2 3"] {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
        assert_eq!(not_a_file(0o100644), None);
        assert!(not_a_file(0o120777).is_some_and(|w| w.contains("symbolic link")));
        assert_eq!(not_a_file(0o040755), Some("a directory"));
        assert!(not_a_file(0o060660).is_some_and(|w| w.contains("device")));
        // Locally the same function classifies what lstat gave.
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(path_fact_on(&Executor::Local, d.path()).0, PathFact::NotAFile(w) if w == "a directory"));
    }
}
