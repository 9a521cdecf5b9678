//! The image cache as a whole: what it holds, which stacks on this host use
//! each image, and removing the unused ones (`virtform cache list|prune`).
//!
//! The cache is `<state_dir>/images/<sha256>` (see [`super::disks`]); it
//! outlives `destroy` by design, so one download serves every stack and
//! every re-creation. A stack *uses* an image when a file under
//! `<state_dir>/<stack>/` (its disks and volumes) is a qcow2 whose backing
//! chain reaches the cached file. Headers are read with
//! [`disks::inspect`]: no process per file.
//!
//! Invariants of [`prune`]:
//! - An image in use is never removed, nor one whose use cannot be ruled
//!   out: while any stack's apply lock (`<state_dir>/<stack>/.lock`) is held
//!   by another run, prune removes nothing (that run may have planned with
//!   the image and not yet made its overlay), and it holds every stack's
//!   lock itself while it removes, so no apply starts planning meanwhile.
//! - Each image is removed under its own fetch lock (`.<sha256>.lock`,
//!   taken without waiting: an image being fetched is kept), first renamed
//!   to `.<sha256>.pruning`; a stack that appeared since the locks were
//!   taken (its lock busy, or its files using the image) gets the image
//!   renamed back. A `.pruning` file left by a killed prune is renamed back
//!   on the next run.
//! - A `.<sha256>.part` whose lock nobody holds is a dead fetch's leftover
//!   and is removed too.

use super::disks::{self, FileLock, image_lock_path};
use super::HostError;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The cache directory under a state dir.
pub fn cache_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("images")
}

/// Longest backing chain followed from a stack's file to the cache.
const MAX_CHAIN: usize = 16;
/// Deepest directory level searched under a stack directory.
const MAX_DEPTH: usize = 6;

/// One cached image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheEntry {
    pub sha256: String,
    pub path: String,
    /// Bytes allocated on the host (the copy is sparse).
    pub bytes_on_disk: u64,
    /// The file's length.
    pub size: u64,
    /// qcow2 or raw, from the header.
    pub format: String,
    pub virtual_size: u64,
    /// Stacks on this host with a disk or volume on this image, sorted.
    pub used_by: Vec<String>,
}

/// Everything cached, sorted by sha256, each with the stacks using it. A
/// missing cache directory is an empty cache.
pub fn list(state_dir: &Path) -> Result<Vec<CacheEntry>, HostError> {
    let dir = cache_dir(state_dir);
    let usage = usage(state_dir, &stack_dirs(state_dir)?);
    let mut out = Vec::new();
    for (sha, path, meta) in cache_files(&dir, "")? {
        let (format, virtual_size) = match disks::inspect(&path) {
            Ok(i) => (i.format.as_str().to_string(), i.virtual_size),
            Err(_) => ("unreadable".to_string(), 0),
        };
        let used_by = usage.get(&sha).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        out.push(CacheEntry { sha256: sha, path: path.to_string_lossy().into_owned(), bytes_on_disk: meta.blocks() * 512, size: meta.len(), format, virtual_size, used_by });
    }
    Ok(out)
}

/// The cached images (sha256) the files of one stack use.
pub fn used_by_stack(state_dir: &Path, stack: &str) -> BTreeSet<String> {
    let dir = state_dir.join(stack);
    usage(state_dir, &[(stack.to_string(), dir)]).into_keys().collect()
}

fn is_sha256(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Regular files of the cache named `.<sha256><suffix>` (or `<sha256>` for
/// an empty suffix), sorted by sha256.
fn cache_files(dir: &Path, suffix: &str) -> Result<Vec<(String, PathBuf, fs::Metadata)>, HostError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HostError::new("read image cache", dir.display().to_string(), e.to_string())),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let sha = if suffix.is_empty() { Some(name.as_str()) } else { name.strip_prefix('.').and_then(|n| n.strip_suffix(suffix)) };
        let Some(sha) = sha.filter(|s| is_sha256(s)) else { continue };
        let Ok(meta) = fs::symlink_metadata(e.path()) else { continue };
        if meta.file_type().is_file() {
            out.push((sha.to_string(), e.path(), meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The stack directories of a state dir: `<state_dir>/<stack>/`, every
/// directory with a valid stack name except the cache's.
fn stack_dirs(state_dir: &Path) -> Result<Vec<(String, PathBuf)>, HostError> {
    let rd = match fs::read_dir(state_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HostError::new("read state dir", state_dir.display().to_string(), e.to_string())),
    };
    let mut out: Vec<(String, PathBuf)> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(n, _)| n != "images" && crate::model::check_stack(n).is_ok())
        .collect();
    out.sort();
    Ok(out)
}

/// sha256 → the stacks whose files use that cached image.
fn usage(state_dir: &Path, stacks: &[(String, PathBuf)]) -> BTreeMap<String, BTreeSet<String>> {
    let cache = cache_dir(state_dir);
    let cache_canon = fs::canonicalize(&cache).ok();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (stack, dir) in stacks {
        let mut files = Vec::new();
        walk(dir, 0, &mut files);
        for f in files {
            if let Some(sha) = cached_base(&f, &cache, cache_canon.as_deref()) {
                out.entry(sha).or_default().insert(stack.clone());
            }
        }
    }
    out
}

/// Regular files under `dir` (symlinks are not followed).
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&e.path(), depth + 1, out),
            Ok(t) if t.is_file() => out.push(e.path()),
            _ => {}
        }
    }
}

/// The cached image `file`'s backing chain reaches, if any.
fn cached_base(file: &Path, cache: &Path, cache_canon: Option<&Path>) -> Option<String> {
    let mut cur = file.to_path_buf();
    for _ in 0..MAX_CHAIN {
        let backing = disks::inspect(&cur).ok()?.backing_file?;
        let b = Path::new(&backing);
        let b = if b.is_absolute() { b.to_path_buf() } else { cur.parent().unwrap_or(Path::new("/")).join(b) };
        if let Some(name) = b.file_name().map(|n| n.to_string_lossy().into_owned()).filter(|n| is_sha256(n)) {
            let parent = b.parent().unwrap_or(Path::new(""));
            if parent == cache || cache_canon.is_some_and(|c| fs::canonicalize(parent).is_ok_and(|p| p == c)) {
                return Some(name);
            }
        }
        // Only regular files are opened (a FIFO would block the open).
        if !fs::metadata(&b).is_ok_and(|m| m.is_file()) {
            return None;
        }
        cur = b;
    }
    None
}

/// What [`prune`] did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Removed (or to be removed) unused images and dead fetches' `.part` files.
    pub removed: Vec<Pruned>,
    /// Unused images kept, each with the reason.
    pub kept: Vec<Kept>,
    /// Images in use (not candidates), with their stacks.
    pub in_use: Vec<CacheEntry>,
    /// Bytes freed on disk (or that would be).
    pub freed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub sha256: String,
    pub path: String,
    /// "image" or "partial download".
    pub what: &'static str,
    pub bytes_on_disk: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub sha256: String,
    pub bytes_on_disk: u64,
    pub reason: String,
}

/// A stack lock taken by prune (released on drop; the file stays, as any
/// holder may leave it).
struct HeldStack(#[allow(dead_code)] File);

/// Takes the lock of every stack not yet in `held`, without waiting, and
/// returns the stacks whose lock another run holds. A stack without a lock
/// file has no run in progress (a run creates it before anything else).
fn lock_stacks(stacks: &[(String, PathBuf)], held: &mut BTreeMap<String, HeldStack>) -> Result<Vec<String>, HostError> {
    let mut busy = Vec::new();
    for (name, dir) in stacks {
        if held.contains_key(name) {
            continue;
        }
        let path = dir.join(".lock");
        let f = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(HostError::new("lock stack", path.display().to_string(), format!("cannot open the stack's lock: {e}")).hint("run virtform cache prune as the user that runs apply (root)")),
        };
        match f.try_lock() {
            Ok(()) => {
                let same = match (f.metadata(), fs::metadata(&path)) {
                    (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                    _ => false,
                };
                if same {
                    held.insert(name.clone(), HeldStack(f));
                } else {
                    // Unlinked meanwhile by a finishing run; another may have begun.
                    busy.push(name.clone());
                }
            }
            Err(std::fs::TryLockError::WouldBlock) => busy.push(name.clone()),
            Err(std::fs::TryLockError::Error(e)) => return Err(HostError::new("lock stack", path.display().to_string(), e.to_string())),
        }
    }
    Ok(busy)
}

fn io_err(op: &str, p: &Path) -> impl FnOnce(std::io::Error) -> HostError {
    let (op, p) = (op.to_string(), p.display().to_string());
    move |e| HostError::new(op, p, e.to_string())
}

/// Removes the cached images no stack on this host uses, and dead fetches'
/// `.part` files (see the module's invariants). With `dry_run` nothing is
/// changed and the report says what would go.
pub fn prune(state_dir: &Path, dry_run: bool) -> Result<PruneReport, HostError> {
    let dir = cache_dir(state_dir);
    let mut report = PruneReport { dry_run, ..Default::default() };
    if !dir.is_dir() {
        return Ok(report);
    }
    let mut held: BTreeMap<String, HeldStack> = BTreeMap::new();
    let stacks = stack_dirs(state_dir)?;
    let busy = lock_stacks(&stacks, &mut held)?;

    // A killed prune's renamed image goes back first (it may be in use).
    if !dry_run {
        for (sha, path, _) in cache_files(&dir, ".pruning")? {
            let image = dir.join(&sha);
            if let Some(_lock) = FileLock::try_acquire(&image_lock_path(&dir, &sha))?
                && !image.exists()
            {
                fs::rename(&path, &image).map_err(io_err("restore image", &image))?;
            }
        }
    }

    for e in list(state_dir)? {
        if !e.used_by.is_empty() {
            report.in_use.push(e);
            continue;
        }
        let keep = |reason: String| Kept { sha256: e.sha256.clone(), bytes_on_disk: e.bytes_on_disk, reason };
        if !busy.is_empty() {
            let names = busy.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
            report.kept.push(keep(format!("another virtform run holds the lock of stack {names} and may be about to use it; prune again when it has finished")));
            continue;
        }
        let Some(_lock) = FileLock::try_acquire(&image_lock_path(&dir, &e.sha256))? else {
            report.kept.push(keep("another virtform run is fetching it".into()));
            continue;
        };
        let path = PathBuf::from(&e.path);
        if !dry_run {
            let aside = dir.join(format!(".{}.pruning", e.sha256));
            fs::rename(&path, &aside).map_err(io_err("remove image", &path))?;
            // A stack that appeared since the locks were taken.
            let now = stack_dirs(state_dir)?;
            let new: Vec<(String, PathBuf)> = now.into_iter().filter(|(n, _)| !held.contains_key(n)).collect();
            let late_busy = lock_stacks(&new, &mut held)?;
            let late_use = usage(state_dir, &new).get(&e.sha256).cloned().unwrap_or_default();
            if !late_busy.is_empty() || !late_use.is_empty() {
                fs::rename(&aside, &path).map_err(io_err("restore image", &path))?;
                let who: Vec<String> = late_busy.into_iter().chain(late_use).map(|s| format!("\"{s}\"")).collect();
                report.kept.push(keep(format!("stack {} appeared while pruning", who.join(", "))));
                continue;
            }
            fs::remove_file(&aside).map_err(io_err("remove image", &aside))?;
        }
        report.freed += e.bytes_on_disk;
        report.removed.push(Pruned { sha256: e.sha256.clone(), path: e.path.clone(), what: "image", bytes_on_disk: e.bytes_on_disk });
    }

    for (sha, path, meta) in cache_files(&dir, ".part")? {
        let Some(_lock) = FileLock::try_acquire(&image_lock_path(&dir, &sha))? else { continue };
        if !dry_run {
            fs::remove_file(&path).map_err(io_err("remove partial download", &path))?;
        }
        let bytes = meta.blocks() * 512;
        report.freed += bytes;
        report.removed.push(Pruned { sha256: sha, path: path.to_string_lossy().into_owned(), what: "partial download", bytes_on_disk: bytes });
    }
    drop(held);
    Ok(report)
}

/// Bytes for people: `512 B`, `4.0 KiB`, `812 MiB`, `1.6 GiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v >= 100.0 { format!("{v:.0} {}", UNITS[unit]) } else { format!("{v:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn qemu_img(args: &[&str]) {
        let o = Command::new("qemu-img").args(args).output().expect("qemu-img (package qemu-utils)");
        assert!(o.status.success(), "qemu-img {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// A state dir with three cached images (A qcow2, B raw, C qcow2):
    /// stack `web` has an overlay on A and a volume on an overlay of an
    /// overlay of B (a chain); stack `db` has a disk on A by a relative
    /// backing path; C is used by nobody; `scratch` holds a blank qcow2
    /// and a qcow2 on a base outside the cache. Plus noise: the source
    /// index, a lock file, a non-sha file, a directory named like a sha.
    fn fake_state() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let st = t.path();
        let images = cache_dir(st);
        fs::create_dir_all(&images).unwrap();
        qemu_img(&["create", "-q", "-f", "qcow2", s(&images.join(A)), "64M"]);
        fs::write(images.join(B), vec![1u8; 3 * 4096]).unwrap();
        qemu_img(&["create", "-q", "-f", "qcow2", s(&images.join(C)), "16M"]);
        fs::write(images.join(".sources.json"), "{}").unwrap();
        fs::write(images.join("README"), "not an image").unwrap();
        fs::create_dir(images.join("d".repeat(64))).unwrap();
        for d in ["web/disks", "web/volumes", "db/disks", "scratch/disks", "web/console"] {
            fs::create_dir_all(st.join(d)).unwrap();
        }
        qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&images.join(A)), "-F", "qcow2", s(&st.join("web/disks/root@1.qcow2"))]);
        qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&images.join(B)), "-F", "raw", s(&st.join("web/volumes/base.qcow2"))]);
        qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&st.join("web/volumes/base.qcow2")), "-F", "qcow2", s(&st.join("web/volumes/data.qcow2"))]);
        fs::write(st.join("web/console/vm.log"), "boot\n").unwrap();
        qemu_img(&["create", "-q", "-f", "qcow2", "-b", &format!("../../images/{A}"), "-F", "qcow2", s(&st.join("db/disks/root.qcow2"))]);
        qemu_img(&["create", "-q", "-f", "qcow2", s(&st.join("scratch/disks/blank.qcow2")), "1M"]);
        let outside = st.join("elsewhere.raw");
        fs::write(&outside, [0u8; 512]).unwrap();
        qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&outside), "-F", "raw", s(&st.join("scratch/disks/other.qcow2"))]);
        t
    }

    #[test]
    fn list_reports_each_image_with_the_stacks_using_it() {
        let t = fake_state();
        let l = list(t.path()).unwrap();
        let got: Vec<(&str, Vec<&str>, &str)> = l.iter().map(|e| (&e.sha256[..1], e.used_by.iter().map(String::as_str).collect(), e.format.as_str())).collect();
        assert_eq!(got, [("a", vec!["db", "web"], "qcow2"), ("b", vec!["web"], "raw"), ("c", vec![], "qcow2")]);
        let b = &l[1];
        assert_eq!(b.size, 3 * 4096);
        assert_eq!(b.virtual_size, 3 * 4096);
        assert!(b.bytes_on_disk >= 4096, "{b:?}");
        assert_eq!(b.path, cache_dir(t.path()).join(B).to_string_lossy());
        assert_eq!(used_by_stack(t.path(), "web"), BTreeSet::from([A.to_string(), B.to_string()]));
        assert_eq!(used_by_stack(t.path(), "db"), BTreeSet::from([A.to_string()]));
        assert!(used_by_stack(t.path(), "scratch").is_empty());
        assert!(used_by_stack(t.path(), "nosuch").is_empty());
    }

    #[test]
    fn empty_or_missing_cache_lists_nothing() {
        let t = tempfile::tempdir().unwrap();
        assert!(list(t.path()).unwrap().is_empty());
        assert!(list(&t.path().join("missing")).unwrap().is_empty());
        let r = prune(t.path(), false).unwrap();
        assert!(r.removed.is_empty() && r.kept.is_empty() && r.freed == 0);
    }

    #[test]
    fn prune_removes_only_unused_images_and_dead_partial_downloads() {
        let t = fake_state();
        let images = cache_dir(t.path());
        fs::write(images.join(format!(".{C}.part")).as_path(), vec![5u8; 8192]).unwrap();
        let c_bytes = fs::metadata(images.join(C)).unwrap().blocks() * 512;

        let dry = prune(t.path(), true).unwrap();
        assert!(dry.dry_run);
        let what: Vec<(&str, &str)> = dry.removed.iter().map(|p| (&p.sha256[..1], p.what)).collect();
        assert_eq!(what, [("c", "image"), ("c", "partial download")]);
        assert_eq!(dry.freed, c_bytes + 8192);
        assert_eq!(dry.in_use.iter().map(|e| &e.sha256[..1]).collect::<Vec<_>>(), ["a", "b"]);
        assert!(images.join(C).exists() && images.join(format!(".{C}.part")).exists(), "a dry run removed something");

        let r = prune(t.path(), false).unwrap();
        assert_eq!(r.removed, dry.removed);
        assert_eq!(r.freed, dry.freed);
        assert!(!images.join(C).exists() && !images.join(format!(".{C}.part")).exists());
        assert!(images.join(A).exists() && images.join(B).exists(), "an image in use was removed");
        assert!(images.join(".sources.json").exists() && images.join("README").exists());
        let names: Vec<String> = fs::read_dir(&images).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(!names.iter().any(|n| n.ends_with(".lock") || n.ends_with(".pruning")), "{names:?}");

        // nothing left to prune
        let again = prune(t.path(), false).unwrap();
        assert!(again.removed.is_empty() && again.freed == 0);
        // the stack's overlays still open on their images
        assert_eq!(list(t.path()).unwrap().len(), 2);
    }

    #[test]
    fn prune_keeps_everything_unused_while_a_stack_is_being_applied() {
        let t = fake_state();
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(t.path().join("scratch/.lock")).unwrap();
        lock.lock().unwrap();
        let r = prune(t.path(), false).unwrap();
        assert!(r.removed.is_empty(), "{r:?}");
        assert_eq!(r.kept.len(), 1);
        assert!(r.kept[0].reason.contains("stack \"scratch\""), "{}", r.kept[0].reason);
        assert!(cache_dir(t.path()).join(C).exists());
        drop(lock);
        // a left-over lock file nobody holds is no obstacle
        let r = prune(t.path(), false).unwrap();
        assert_eq!(r.removed.len(), 1);
        assert!(t.path().join("scratch/.lock").exists(), "prune removed a stack's lock file");
    }

    #[test]
    fn prune_keeps_an_image_being_fetched_and_restores_a_killed_prunes_image() {
        let t = fake_state();
        let images = cache_dir(t.path());
        let held = FileLock::try_acquire(&image_lock_path(&images, C)).unwrap().expect("lock");
        let r = prune(t.path(), false).unwrap();
        assert_eq!(r.kept.len(), 1, "{r:?}");
        assert_eq!(r.kept[0].reason, "another virtform run is fetching it");
        assert!(images.join(C).exists());
        drop(held);

        // a prune killed after renaming A aside: A is back, and used
        fs::rename(images.join(A), images.join(format!(".{A}.pruning"))).unwrap();
        let r = prune(t.path(), false).unwrap();
        assert!(images.join(A).exists(), "the renamed image was not restored");
        assert_eq!(r.in_use.iter().map(|e| &e.sha256[..1]).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(4096), "4.0 KiB");
        assert_eq!(human_bytes(812 << 20), "812 MiB");
        assert_eq!(human_bytes(1_717_986_918), "1.6 GiB");
    }
}
