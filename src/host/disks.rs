//! Disk files and the image cache: inspecting image headers, the
//! content-addressed image cache, qcow2 overlays, blank disks, swap and
//! filesystems on ephemeral disks, and path containment under the state dir.
//!
//! Invariants:
//! - Image headers are read here, directly from the file ([`inspect`]); no
//!   program ever probes a format. Every `qemu-img` call names the format
//!   (`-f`, `-F`), so a crafted image is never reinterpreted.
//! - A base image with a backing file, an external data file, encryption, a
//!   corrupt mark or unknown incompatible features is refused, and so is one
//!   whose detected format differs from the declared one
//!   ([`check_base_image`], Nova's rules).
//! - Files appear atomically: they are written to a `.NAME.part` sibling,
//!   fsynced, and renamed into place. A leftover `.part` is stale by
//!   construction (its writer held the lock or the stack lock) and is removed.
//! - The image cache is content-addressed (`<cache_dir>/<sha256>`) and each
//!   image is fetched under its own exclusive lock (`.<sha256>.lock`, flock),
//!   so concurrent fetches of one image by threads or processes do one
//!   download and never collide. The lock file is removed by its holder
//!   (with an inode re-check on acquisition, so removal cannot race).
//! - Nothing unverified comes from the network: http(s) fetches need a sha256.
//! - Directories are created 0711 and files 0600 regardless of the umask:
//!   guests' data is readable by root only; libvirt's qemu user traverses
//!   the directories and gets each file it needs from libvirt's dynamic
//!   ownership while its domain runs. Cached base images are 0644: shared
//!   read-only by many domains, where libvirt's relabelling races
//!   ([`IMAGE_MODE`]).
//! - Callers compute paths under the state dir with [`state_path`], which
//!   refuses `..`, absolute paths and symlinks leading outside the root.

use super::exec::{Executor, FileKind, Input};
use super::{run, HostError};
use crate::model::disk::{DiskFormat, Filesystem};
use crate::model::image::ImageFormat;
use crate::model::common::hex;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
/// qcow2 header extension types.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_DATA_FILE: u32 = 0x4441_5441;
/// Incompatible feature bits qemu knows (dirty, corrupt, external data file,
/// compression type, extended L2 entries).
pub const QCOW2_KNOWN_INCOMPATIBLE: u64 = 0b1_1111;
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Files hold guests' data: readable by root only. libvirt's DAC driver
/// (dynamic ownership) hands each disk, overlay and backing image to the
/// qemu user while a domain runs and gives it back when it stops.
const FILE_MODE: u32 = 0o600;
/// Cached base images: 0644. Every overlay of every stack uses one as its
/// read-only backing file, and libvirt's relabelling of a shared file races:
/// a domain whose start fails gives the file back to root while another
/// domain's QEMU is opening it ("Permission denied", seen in
/// tests/e2e_faults.rs). They hold the image as fetched, never a guest's
/// writes (those go to the 0600 overlays); their directory is not listable.
const IMAGE_MODE: u32 = 0o644;
/// Directories: qemu (libvirt-qemu) must traverse them to the files libvirt
/// hands it; nobody else may list them.
const DIR_MODE: u32 = 0o711;
const BUF: usize = 1 << 20;
/// What [`inspect`] reads first.
const QCOW2_FIRST_READ: usize = 4 << 10;

/// What [`inspect`] found in an image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageInfo {
    /// The detected format: qcow2 when the file starts with qcow2's magic, raw otherwise.
    pub format: ImageFormat,
    /// The size the guest sees, in bytes (a raw file's length).
    pub virtual_size: u64,
    /// The backing file named in a qcow2 header.
    pub backing_file: Option<String>,
    /// The backing file's format (header extension), when recorded.
    pub backing_format: Option<String>,
    /// The external data file named in a qcow2 header extension.
    pub data_file: Option<String>,
    /// Bytes allocated on the host (st_blocks × 512).
    pub allocated: u64,
    /// qcow2 header details; `None` for raw.
    pub qcow2: Option<Qcow2Header>,
    /// A raw file that starts with another image format's signature (vmdk,
    /// vdi, vhdx, vpc, qed, luks): qemu would probe it as that format.
    pub signature: Option<String>,
}

/// The qcow2 header fields that matter for safety and display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Qcow2Header {
    /// 2 (compat 0.10) or 3 (compat 1.1).
    pub version: u32,
    pub cluster_size: u64,
    /// 0 none, 1 AES, 2 LUKS.
    pub crypt_method: u32,
    /// The raw incompatible-features bitmap (0 for version 2).
    pub incompatible_features: u64,
    /// Bits of `incompatible_features` qemu does not know; an image with any is refused.
    pub unknown_incompatible: u64,
    /// Not closed cleanly (lazy refcounts).
    pub dirty: bool,
    /// Marked corrupt by qemu.
    pub corrupt: bool,
    /// The image keeps its data in an external file (incompatible bit 2),
    /// whether or not the file is named in the header.
    pub external_data: bool,
    pub snapshots: u32,
}

impl ImageInfo {
    fn raw(virtual_size: u64, allocated: u64, signature: Option<&str>) -> ImageInfo {
        ImageInfo {
            format: ImageFormat::Raw,
            virtual_size,
            backing_file: None,
            backing_format: None,
            data_file: None,
            allocated,
            qcow2: None,
            signature: signature.map(str::to_string),
        }
    }
}

// ---------------------------------------------------------------------------
// inspect
// ---------------------------------------------------------------------------

/// Reads an image's header and reports its format, sizes, backing file and
/// data file. No process is run. A file starting with qcow2's magic must be
/// a well-formed qcow2 (a malformed one is an error, never "raw").
pub fn inspect(path: &Path) -> Result<ImageInfo, HostError> {
    let err = |m: String| HostError::new("inspect image", path.display().to_string(), m);
    let mut f = File::open(path).map_err(|e| err(open_error(&e)))?;
    let meta = f.metadata().map_err(|e| err(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()).hint("images and disks are regular files"));
    }
    let len = meta.len();
    let allocated = meta.blocks() * 512;
    inspect_prefix(&err, len, allocated, |want, head| {
        (&mut f).take(want).read_to_end(head).map(drop).map_err(|e| format!("cannot read: {e}"))
    })
}

/// [`inspect`] on the executor's host: in-process for the local host; for a
/// remote one `stat` and `head -c` (the first 4 KiB, and the first cluster
/// only when the header does not parse from those), parsed by the same code.
pub fn inspect_on(x: &Executor, path: &Path) -> Result<ImageInfo, HostError> {
    if x.is_local() {
        return inspect(path);
    }
    let object = path.display().to_string();
    let op = x.named("inspect image");
    let err = |m: String| HostError::new(op.clone(), object.clone(), m);
    let sh = [OsStr::new("stat"), OsStr::new("-L"), OsStr::new("-c"), OsStr::new("%f %s %b %B"), OsStr::new("--"), path.as_os_str()];
    let o = x.output("inspect image", &object, &sh, Input::None)?;
    if !o.success() {
        let msg = String::from_utf8_lossy(&o.stderr).trim().to_string();
        return Err(err(if msg.contains("No such file") { "does not exist".into() } else { msg }));
    }
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let v: Vec<u64> = text.split_whitespace().enumerate().filter_map(|(i, w)| if i == 0 { u64::from_str_radix(w, 16).ok() } else { w.parse().ok() }).collect();
    let [raw, len, blocks, block_size] = v[..] else {
        return Err(err(format!("cannot parse stat's output {text:?}")));
    };
    if raw & 0o170000 != 0o100000 {
        return Err(err("not a regular file".into()).hint("images and disks are regular files"));
    }
    let mut read = 0u64;
    inspect_prefix(&err, len, blocks * block_size, |want, head| {
        let n = (read + want).to_string();
        let argv = [OsStr::new("head"), OsStr::new("-c"), OsStr::new(&n), OsStr::new("--"), path.as_os_str()];
        let bytes = x.run_bytes("inspect image", &object, &argv, Input::None).map_err(|e| e.message)?;
        head.extend_from_slice(bytes.get(read as usize..).unwrap_or_default());
        read = head.len() as u64;
        Ok(())
    })
}

/// The format decision of [`inspect`] over a reader of the file's first
/// bytes (`read(n, head)` appends up to `n` more bytes to `head`).
/// [`inspect_on`] of many files: on a remote host two commands for all of
/// them (one `stat`, one `head -q -c 4096`), parsed by the same code; a
/// file whose first 4 KiB do not tell (raw files, a qcow2 header past
/// them) is inspected on its own, and anything unexpected in the batch (a
/// file gone or changed between the two commands) falls back to one
/// inspection per file. A converged plan of a host with 100 disks made 200
/// SSH round trips here before.
pub fn inspect_many_on(x: &Executor, paths: &[&Path]) -> Vec<Result<ImageInfo, HostError>> {
    if x.is_local() || paths.len() < 2 {
        return paths.iter().map(|p| inspect_on(x, p)).collect();
    }
    match inspect_batch(x, paths) {
        Some(v) => v,
        None => paths.iter().map(|p| inspect_on(x, p)).collect(),
    }
}

const NEED_MORE: &str = "(needs more than the batch read)";

fn inspect_batch(x: &Executor, paths: &[&Path]) -> Option<Vec<Result<ImageInfo, HostError>>> {
    let mut argv = vec![OsStr::new("stat"), OsStr::new("-L"), OsStr::new("--printf"), OsStr::new("%f %s %b %B\n"), OsStr::new("--")];
    argv.extend(paths.iter().map(|p| p.as_os_str()));
    let o = x.output("inspect images", "state dir", &argv, Input::None).ok()?;
    if !o.success() {
        return None;
    }
    let stats: Vec<[u64; 4]> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: Vec<u64> = l.split_whitespace().enumerate().filter_map(|(i, w)| if i == 0 { u64::from_str_radix(w, 16).ok() } else { w.parse().ok() }).collect();
            v.try_into().ok()
        })
        .collect::<Option<Vec<_>>>()?;
    if stats.len() != paths.len() || stats.iter().any(|[raw, ..]| raw & 0o170000 != 0o100000) {
        return None;
    }
    let first = QCOW2_FIRST_READ as u64;
    let count = first.to_string();
    let mut argv = vec![OsStr::new("head"), OsStr::new("-q"), OsStr::new("-c"), OsStr::new(&count), OsStr::new("--")];
    argv.extend(paths.iter().map(|p| p.as_os_str()));
    let bytes = x.run_bytes("inspect images", "state dir", &argv, Input::None).ok()?;
    let want: u64 = stats.iter().map(|s| s[1].min(first)).sum();
    if bytes.len() as u64 != want {
        return None;
    }
    let mut at = 0usize;
    let mut out = Vec::with_capacity(paths.len());
    for (p, [_, len, blocks, block_size]) in paths.iter().zip(&stats) {
        let n = (*len).min(first) as usize;
        let prefix = &bytes[at..at + n];
        at += n;
        let object = p.display().to_string();
        let op = x.named("inspect image");
        let err = |m: String| HostError::new(op.clone(), object.clone(), m);
        let mut given = false;
        let r = inspect_prefix(&err, *len, blocks * block_size, |want, head| {
            if given || want as usize > prefix.len() {
                return Err(NEED_MORE.into());
            }
            given = true;
            head.extend_from_slice(&prefix[..want as usize]);
            Ok(())
        });
        out.push(match r {
            Err(e) if e.message == NEED_MORE => inspect_on(x, p),
            r => r,
        });
    }
    Some(out)
}

fn inspect_prefix(err: &dyn Fn(String) -> HostError, len: u64, allocated: u64, mut read: impl FnMut(u64, &mut Vec<u8>) -> Result<(), String>) -> Result<ImageInfo, HostError> {
    // A qcow2 header, its extensions and the backing file name are almost
    // always in the first 4 KiB (qemu-img writes them there): read those,
    // and the whole first cluster (where qcow2 allows them, at most 2 MiB)
    // only when the header does not parse from them. A prefix that parses
    // gives what the whole cluster would: the parser fails on any read past
    // its input. Other formats: 64 KiB, enough for their signatures.
    // (Planning a host of 1,000 overlays read 64 KiB each before.)
    let malformed = |m: String| err(format!("malformed qcow2 image: {m}")).hint("the file is truncated or damaged; fetch or create it again (`qemu-img check` shows details)");
    let mut head = Vec::with_capacity(QCOW2_FIRST_READ);
    read(len.min(QCOW2_FIRST_READ as u64), &mut head).map_err(err)?;
    let is_qcow2 = head.len() >= 4 && &head[..4] == QCOW2_MAGIC;
    if is_qcow2 && let Ok(info) = parse_qcow2(&head, len, allocated) {
        return Ok(info);
    }
    let cluster = be32(&head, 20).filter(|b| is_qcow2 && (9..=21).contains(b)).map_or(64 << 10, |bits| 1u64 << bits).max(64 << 10);
    let want = len.min(cluster).saturating_sub(head.len() as u64);
    read(want, &mut head).map_err(err)?;
    if is_qcow2 {
        return parse_qcow2(&head, len, allocated).map_err(malformed);
    }
    Ok(ImageInfo::raw(len, allocated, signature(&head)))
}

fn open_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "does not exist".into(),
        io::ErrorKind::PermissionDenied => format!("permission denied ({e}); the file must be readable by the user running virtform"),
        _ => format!("cannot open: {e}"),
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// Parses a qcow2 header from the file's first bytes (`head`, at most one
/// cluster of 2 MiB). `len` is the file's length, to catch truncation.
fn parse_qcow2(head: &[u8], len: u64, allocated: u64) -> Result<ImageInfo, String> {
    let short = || format!("header truncated ({} bytes)", head.len());
    let version = be32(head, 4).ok_or_else(short)?;
    if version != 2 && version != 3 {
        return Err(format!("unsupported qcow2 version {version} (expected 2 or 3)"));
    }
    if head.len() < 72 {
        return Err(short());
    }
    let backing_offset = be64(head, 8).ok_or_else(short)?;
    let backing_size = be32(head, 16).ok_or_else(short)?;
    let cluster_bits = be32(head, 20).ok_or_else(short)?;
    let virtual_size = be64(head, 24).ok_or_else(short)?;
    let crypt_method = be32(head, 32).ok_or_else(short)?;
    let l1_size = be32(head, 36).ok_or_else(short)?;
    let l1_offset = be64(head, 40).ok_or_else(short)?;
    let refcount_offset = be64(head, 48).ok_or_else(short)?;
    let refcount_clusters = be32(head, 56).ok_or_else(short)?;
    let snapshots = be32(head, 60).ok_or_else(short)?;
    if !(9..=21).contains(&cluster_bits) {
        return Err(format!("invalid cluster_bits {cluster_bits} (expected 9 to 21)"));
    }
    let cluster_size = 1u64 << cluster_bits;
    // The backing file name and the header extensions live in the first cluster (qemu refuses them elsewhere).
    let head = &head[..head.len().min(cluster_size as usize)];
    let (incompatible, header_length) = if version == 3 {
        if head.len() < 104 {
            return Err(short());
        }
        let incompatible = be64(head, 72).ok_or_else(short)?;
        let header_length = be32(head, 100).ok_or_else(short)? as u64;
        if header_length < 104 || header_length > cluster_size {
            return Err(format!("invalid header length {header_length}"));
        }
        (incompatible, header_length)
    } else {
        (0, 72)
    };
    // The tables qemu needs must lie inside the file: a partial download or a
    // truncated copy fails here rather than at boot.
    let end = |off: u64, n: u64| off.checked_add(n).filter(|&e| e <= len);
    if l1_size > 0 && end(l1_offset, l1_size as u64 * 8).is_none() {
        return Err(format!("L1 table ({l1_size} entries at offset {l1_offset}) lies beyond the end of the file ({len} bytes)"));
    }
    if end(refcount_offset, refcount_clusters as u64 * cluster_size).is_none() {
        return Err(format!("refcount table at offset {refcount_offset} lies beyond the end of the file ({len} bytes)"));
    }
    let in_head = |off: u64, n: u64| -> Option<&[u8]> {
        let s = usize::try_from(off).ok()?;
        head.get(s..s.checked_add(usize::try_from(n).ok()?)?)
    };
    let backing_file = if backing_offset != 0 && backing_size != 0 {
        if backing_size > 1023 {
            return Err(format!("backing file name too long ({backing_size} bytes)"));
        }
        let name = in_head(backing_offset, backing_size as u64).ok_or_else(|| format!("backing file name at offset {backing_offset} lies outside the header cluster"))?;
        Some(String::from_utf8_lossy(name).into_owned())
    } else {
        None
    };
    // Header extensions: (type, length, data padded to 8 bytes)…, ending with type 0.
    let mut backing_format = None;
    let mut data_file = None;
    let mut at = header_length as usize;
    loop {
        let Some(ty) = be32(head, at) else {
            return Err(format!("header extensions run past the header cluster (offset {at})"));
        };
        if ty == EXT_END {
            break;
        }
        let n = be32(head, at + 4).ok_or_else(|| format!("header extension at offset {at} is truncated"))? as usize;
        let data = head.get(at + 8..at + 8 + n).ok_or_else(|| format!("header extension {ty:#x} at offset {at} runs past the header cluster"))?;
        match ty {
            EXT_BACKING_FORMAT => backing_format = Some(String::from_utf8_lossy(data).into_owned()),
            EXT_DATA_FILE => data_file = Some(String::from_utf8_lossy(data).into_owned()),
            _ => {} // feature names, bitmaps, encryption header pointer, unknown: not needed here
        }
        at += 8 + n.div_ceil(8) * 8;
    }
    Ok(ImageInfo {
        format: ImageFormat::Qcow2,
        virtual_size,
        backing_file,
        backing_format,
        data_file,
        allocated,
        qcow2: Some(Qcow2Header {
            version,
            cluster_size,
            crypt_method,
            incompatible_features: incompatible,
            unknown_incompatible: incompatible & !QCOW2_KNOWN_INCOMPATIBLE,
            dirty: incompatible & INCOMPAT_DIRTY != 0,
            corrupt: incompatible & INCOMPAT_CORRUPT != 0,
            external_data: incompatible & INCOMPAT_DATA_FILE != 0,
            snapshots,
        }),
        signature: None,
    })
}

/// Signatures of other image formats qemu would probe in a file (Nova's
/// format inspector checks the same ones). An ISO 9660 image is not listed:
/// it is a legitimate raw image (a cdrom).
fn signature(head: &[u8]) -> Option<&'static str> {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    if at(0, b"QFI\0") {
        Some("qed")
    } else if at(0, b"KDMV") || at(0, b"COWD") || at(0, b"# Disk DescriptorFile") {
        Some("vmdk")
    } else if at(0x40, &[0x7f, 0x10, 0xda, 0xbe]) {
        Some("vdi")
    } else if at(0, b"vhdxfile") {
        Some("vhdx")
    } else if at(0, b"conectix") {
        Some("vpc")
    } else if at(0, b"LUKS\xba\xbe") {
        Some("luks")
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// check_base_image
// ---------------------------------------------------------------------------

/// Nova's rules for a base image: no backing file, no external data file (a
/// crafted qcow2 could otherwise make qemu read host files), no encryption,
/// not marked corrupt, no unknown incompatible features, not empty, and the
/// detected format must be the declared one. `what` names the image in
/// errors (`image.base (/path)`).
pub fn check_base_image(info: &ImageInfo, declared: ImageFormat, what: &str) -> Result<(), HostError> {
    let refuse = |m: String, h: &str| Err(HostError::new("check image", what, m).hint(h));
    if info.format != declared {
        let found = match (&info.signature, info.format) {
            (Some(sig), _) => format!("a {sig} image"),
            (None, f) => format!("a {} image", f.as_str()),
        };
        let hint = match info.format {
            ImageFormat::Qcow2 => "set format = \"qcow2\" on the image (a qcow2 file used as raw would expose its header to the guest)".to_string(),
            ImageFormat::Raw if info.signature.is_some() => "convert it: qemu-img convert -O qcow2 SOURCE image.qcow2, and use that file".to_string(),
            ImageFormat::Raw => "set format = \"raw\" on the image, or convert it: qemu-img convert -f raw -O qcow2 SOURCE image.qcow2".to_string(),
        };
        return refuse(format!("declared {} but the file is {found}", declared.as_str()), &hint);
    }
    if let Some(sig) = &info.signature {
        return refuse(
            format!("the raw file starts with a {sig} header; qemu would probe it as {sig}"),
            "convert it with qemu-img convert -O qcow2 and use that file",
        );
    }
    if let Some(b) = &info.backing_file {
        return refuse(
            format!("it has a backing file ({b}); a base image must be self-contained (a backing file can make qemu read any host file)"),
            "flatten it: qemu-img convert -O qcow2 IMAGE flat.qcow2, and use the flat file",
        );
    }
    if let Some(q) = &info.qcow2 {
        if info.data_file.is_some() || q.external_data {
            let name = info.data_file.as_deref().filter(|s| !s.is_empty()).unwrap_or("not named in the header");
            return refuse(
                format!("it has an external data file ({name}); a base image must keep its data inside (a data file can make qemu read any host file)"),
                "convert it: qemu-img convert -O qcow2 IMAGE flat.qcow2, and use the converted file",
            );
        }
        if q.unknown_incompatible != 0 {
            return refuse(
                format!("it uses qcow2 incompatible features virtform does not know (bits {:#x})", q.unknown_incompatible),
                "convert it with this host's qemu-img: qemu-img convert -O qcow2 IMAGE new.qcow2",
            );
        }
        if q.crypt_method != 0 {
            return refuse(format!("it is encrypted (crypt method {})", q.crypt_method), "use an unencrypted image");
        }
        if q.corrupt {
            return refuse("it is marked corrupt by qemu".into(), "repair it with qemu-img check -r all IMAGE, or fetch it again");
        }
    }
    if info.virtual_size == 0 {
        return refuse("it is empty (virtual size 0)".into(), "check the source file");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// image cache
// ---------------------------------------------------------------------------

/// An image in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedImage {
    /// `<cache_dir>/<sha256>`.
    pub path: PathBuf,
    pub sha256: String,
    pub info: ImageInfo,
    /// True when this call copied or downloaded the image; false on a cache hit.
    pub fetched: bool,
}

/// Options of [`fetch_image_with`].
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Re-hash a cached file on a hit (a damaged cache entry is then fetched again).
    pub verify_cached: bool,
}

/// Fetches an image into the content-addressed cache (see [`fetch_image_with`]).
pub fn fetch_image(cache_dir: &Path, source: &str, sha256: Option<&str>, declared: ImageFormat) -> Result<CachedImage, HostError> {
    fetch_image_with(cache_dir, source, sha256, declared, &FetchOptions::default())
}

/// Fetches an image into `<cache_dir>/<sha256>`.
///
/// `source` is an absolute local path or an http(s) URL (fetched with curl;
/// needs `sha256`). Without `sha256` a local file is hashed first to learn
/// its name in the cache (so every call reads the whole file); with it, a
/// hit needs neither the source nor the network. Under the image's lock: a
/// cached file is a hit (inspected and checked, not re-hashed unless
/// `verify_cached`); otherwise
/// the image is copied (sparse) or downloaded to `.<sha256>.part` while
/// hashed, verified, inspected, checked against Nova's rules, fsynced and
/// renamed into place. A failed fetch leaves nothing behind.
pub fn fetch_image_with(cache_dir: &Path, source: &str, sha256: Option<&str>, declared: ImageFormat, opts: &FetchOptions) -> Result<CachedImage, HostError> {
    let err = |m: String| HostError::new("fetch image", source, m);
    let remote = source.starts_with("http://") || source.starts_with("https://");
    let expected = match sha256 {
        Some(h) => {
            let h = h.to_ascii_lowercase();
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(format!("\"{h}\" is not a SHA-256 digest")).hint("expected 64 hex digits"));
            }
            ensure_dir(cache_dir)?;
            h
        }
        None if remote => return Err(err("an image fetched over the network needs sha256".into()).hint("add sha256 = \"<64 hex digits>\" to the image")),
        None => {
            check_local_source(source)?;
            // The cache directory first: the hash is remembered in it.
            ensure_dir(cache_dir)?;
            source_hash(cache_dir, Path::new(source), true).map_err(|e| err(format!("cannot read: {e}")))?
        }
    };
    let path = cache_dir.join(&expected);
    let what = format!("{source} (cached as {})", path.display());
    let _lock = FileLock::acquire(&image_lock_path(cache_dir, &expected))?;

    if let Some(hit) = cached(&path, &expected, declared, &what, opts)? {
        return Ok(hit);
    }
    if !remote {
        check_local_source(source)?; // on a hit with a declared sha256 the source is not needed
    }
    let part = cache_dir.join(format!(".{expected}.part"));
    let _cleanup = RemoveOnDrop(&part);
    remove_if_exists(&part).map_err(|e| err(format!("cannot remove stale {}: {e}", part.display())))?;
    let t = std::time::Instant::now();
    let actual = if remote { download(source, &part)? } else { copy_hashing(Path::new(source), &part)? };
    if actual != expected {
        let m = match sha256 {
            Some(_) => format!("sha256 mismatch: expected {expected}, got {actual}"),
            None => format!("the file changed while it was copied (sha256 {expected} before, {actual} after)"),
        };
        let hint = if sha256.is_some() { "the source changed or the declared sha256 is wrong; if you trust the file, set sha256 to the actual value" } else { "retry when the file is no longer being written" };
        return Err(err(m).hint(hint));
    }
    let info = inspect(&part).map_err(|e| HostError { object: source.to_string(), ..e })?;
    check_base_image(&info, declared, source)?;
    finish_file(&part, &path, IMAGE_MODE).map_err(|e| err(format!("cannot store {}: {e}", path.display())))?;
    tracing::info!(source, path = %path.display(), bytes = info.allocated, ms = t.elapsed().as_millis() as u64, "image fetched");
    let info = ImageInfo { allocated: fs::metadata(&path).map(|m| m.blocks() * 512).unwrap_or(info.allocated), ..info };
    Ok(CachedImage { path, sha256: expected, info, fetched: true })
}

/// A cache hit, if `path` holds a plausible image. A damaged entry (it does
/// not parse, or fails `verify_cached`) is removed so it is fetched again; a
/// well-formed entry that breaks the rules for this declaration is an error.
fn cached(path: &Path, sha: &str, declared: ImageFormat, what: &str, opts: &FetchOptions) -> Result<Option<CachedImage>, HostError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(HostError::new("fetch image", path.display().to_string(), format!("cannot stat cache entry: {e}"))),
        Ok(m) if !m.is_file() => {
            return Err(HostError::new("fetch image", path.display().to_string(), "the cache entry is not a regular file").hint("remove it; virtform will fetch the image again"));
        }
        Ok(_) => {}
    }
    let damaged = |why: String| -> Result<Option<CachedImage>, HostError> {
        tracing::warn!(path = %path.display(), why, "damaged cache entry, fetching again");
        fs::remove_file(path).map_err(|e| HostError::new("fetch image", path.display().to_string(), format!("cannot remove damaged cache entry: {e}")))?;
        Ok(None)
    };
    let info = match inspect(path) {
        Ok(i) => i,
        Err(e) => return damaged(e.to_string()),
    };
    if info.virtual_size == 0 {
        return damaged("empty".into());
    }
    if opts.verify_cached {
        let actual = hash_file(path).map_err(|e| HostError::new("fetch image", path.display().to_string(), format!("cannot read: {e}")))?;
        if actual != sha {
            return damaged(format!("sha256 is {actual}"));
        }
    }
    check_base_image(&info, declared, what)?;
    Ok(Some(CachedImage { path: path.to_path_buf(), sha256: sha.to_string(), info, fetched: false }))
}

fn check_local_source(source: &str) -> Result<(), HostError> {
    let err = |m: String| HostError::new("fetch image", source, m);
    if !source.starts_with('/') {
        return Err(err("not an absolute path or http(s) URL".into()));
    }
    let f = File::open(source).map_err(|e| err(open_error(&e)))?;
    let m = f.metadata().map_err(|e| err(format!("cannot stat: {e}")))?;
    if !m.is_file() {
        return Err(err(if m.is_dir() { "is a directory, not an image file".into() } else { "not a regular file".into() }));
    }
    Ok(())
}

/// Copies `src` to `dst` (created 0600, new), hashing what it reads; runs of
/// zeros become holes, so sparse raw images stay sparse. Returns the sha256.
fn copy_hashing(src: &Path, dst: &Path) -> Result<String, HostError> {
    let rerr = |e: io::Error| HostError::new("fetch image", src.display().to_string(), format!("cannot read: {e}"));
    let werr = |e: io::Error| HostError::new("fetch image", dst.display().to_string(), format!("cannot write: {e}"));
    let mut input = File::open(src).map_err(|e| HostError::new("fetch image", src.display().to_string(), open_error(&e)))?;
    let out = create_file(dst).map_err(werr)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut off = 0u64;
    loop {
        let n = read_full(&mut input, &mut buf).map_err(rerr)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        let mut pos = 0;
        for chunk in buf[..n].chunks(64 << 10) {
            if chunk.iter().any(|&b| b != 0) {
                out.write_all_at(chunk, off + pos as u64).map_err(werr)?;
            }
            pos += chunk.len();
        }
        off += n as u64;
    }
    out.set_len(off).map_err(werr)?;
    Ok(hex(&hasher.finalize()))
}

/// Downloads `url` to `part` with curl (argument vector; no shell) and
/// returns the file's sha256.
fn download(url: &str, part: &Path) -> Result<String, HostError> {
    let p = part.to_string_lossy();
    let args = [
        "--fail", "--location", "--silent", "--show-error", "--proto", "=http,https", "--proto-redir", "=http,https",
        "--connect-timeout", "30", "--speed-limit", "1024", "--speed-time", "60", "-o", &p, url,
    ];
    run("download image", url, "curl", &args, None).map_err(|e| e.hint("check the URL and the network; curl's message is above"))?;
    fs::set_permissions(part, fs::Permissions::from_mode(FILE_MODE)).map_err(|e| HostError::new("download image", p.to_string(), e.to_string()))?;
    hash_file(part).map_err(|e| HostError::new("download image", p.to_string(), format!("cannot read: {e}")))
}

/// The sha256 of a file, hex.
pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    loop {
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The index of local image sources' hashes in the cache directory.
const SOURCE_INDEX: &str = ".sources.json";

/// What identifies a file's content without reading it: device, inode,
/// size, modification and change times (ns). The change time cannot be set
/// by users, so a file rewritten in place gets a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

fn file_key(m: &fs::Metadata) -> FileKey {
    let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
    FileKey { dev: m.dev(), ino: m.ino(), size: m.len(), mtime_ns: ns(m.mtime(), m.mtime_nsec()), ctime_ns: ns(m.ctime(), m.ctime_nsec()) }
}

#[derive(Debug, Default, Serialize, serde::Deserialize)]
struct SourceIndex {
    /// By source path: the file's key when it was hashed, and its SHA-256.
    sources: std::collections::BTreeMap<String, (FileKey, String)>,
}

fn read_source_index(cache_dir: &Path) -> SourceIndex {
    fs::read(cache_dir.join(SOURCE_INDEX)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// The SHA-256 of a local image source (one that declares no `sha256`),
/// taken from the cache's index when the file is the one hashed before
/// (same [`FileKey`]), else computed (and remembered when `remember`:
/// applies do, plans only read). A converged plan of a stack on a large
/// cloud image then costs a `stat`, not a read of the whole image.
///
/// A hash is remembered only when the file did not change while it was
/// read and was last modified more than 2 s earlier (a file written in the
/// same clock tick as the hash could change without changing its key).
/// The index is a cache: a lost or damaged one only costs a hash.
pub fn source_hash(cache_dir: &Path, source: &Path, remember: bool) -> io::Result<String> {
    let before = file_key(&fs::metadata(source)?);
    let name = source.to_string_lossy().into_owned();
    let index = read_source_index(cache_dir);
    if let Some((key, sha)) = index.sources.get(&name)
        && *key == before
    {
        return Ok(sha.clone());
    }
    let sha = hash_file(source)?;
    let after = fs::metadata(source).map(|m| file_key(&m)).ok();
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
    if remember && after == Some(before) && now_ns - before.mtime_ns.max(before.ctime_ns) > 2_000_000_000 {
        // Read again: hashing a large image takes a while, and another
        // fetch may have written the index meanwhile.
        let mut index = read_source_index(cache_dir);
        index.sources.insert(name, (before, sha.clone()));
        if let Ok(text) = serde_json::to_vec(&index) {
            // Atomic: readers see the old index or the new one. Two fetches
            // at once may lose one entry (a hash next time), never corrupt it.
            let tmp = cache_dir.join(format!("{SOURCE_INDEX}.{}.part", std::process::id()));
            let written = create_file(&tmp).and_then(|mut f| io::Write::write_all(&mut f, &text)).and_then(|()| fs::rename(&tmp, cache_dir.join(SOURCE_INDEX)));
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                tracing::debug!("cannot update {}: {e}", cache_dir.join(SOURCE_INDEX).display());
            }
        }
    }
    Ok(sha)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// An exclusive flock on a lock file, removed by its holder on drop. A
/// waiter that wins the lock re-checks that the path still names the inode
/// it locked (the previous holder may have removed it) and retries if not.
pub(crate) struct FileLock {
    file: File,
    path: PathBuf,
}

/// The lock file of cached image `sha256` (held while fetching it, and by
/// `virtform cache prune` while removing it).
pub(crate) fn image_lock_path(cache_dir: &Path, sha256: &str) -> PathBuf {
    cache_dir.join(format!(".{sha256}.lock"))
}

impl FileLock {
    /// Takes the lock without waiting: `None` while another holder has it.
    pub(crate) fn try_acquire(path: &Path) -> Result<Option<FileLock>, HostError> {
        let err = |m: String| HostError::new("lock image", path.display().to_string(), m);
        loop {
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(FILE_MODE).open(path).map_err(|e| err(e.to_string()))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => return Ok(None),
                Err(fs::TryLockError::Error(e)) => return Err(err(e.to_string())),
            }
            let mine = file.metadata().map_err(|e| err(e.to_string()))?;
            match fs::metadata(path) {
                Ok(now) if now.ino() == mine.ino() && now.dev() == mine.dev() => return Ok(Some(FileLock { file, path: path.to_path_buf() })),
                _ => continue,
            }
        }
    }

    fn acquire(path: &Path) -> Result<FileLock, HostError> {
        let err = |m: String| HostError::new("lock image", path.display().to_string(), m);
        loop {
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(FILE_MODE).open(path).map_err(|e| err(e.to_string()))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    tracing::info!(lock = %path.display(), "waiting for another fetch of this image");
                    file.lock().map_err(|e| err(e.to_string()))?;
                }
                Err(fs::TryLockError::Error(e)) => return Err(err(e.to_string())),
            }
            let mine = file.metadata().map_err(|e| err(e.to_string()))?;
            match fs::metadata(path) {
                Ok(now) if now.ino() == mine.ino() && now.dev() == mine.dev() => return Ok(FileLock { file, path: path.to_path_buf() }),
                _ => continue, // removed or replaced by the previous holder: lock the new one
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Remove while still holding the lock; waiters then see a stale inode and retry.
        let _ = fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Removes a file on drop (a `.part` after a failure; a no-op after the rename).
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.0);
    }
}

// ---------------------------------------------------------------------------
// files and directories
// ---------------------------------------------------------------------------

/// Joins `rel` to `root`, refusing anything that could leave `root`: an
/// absolute `rel`, a `..` component, or an existing symlink component that
/// resolves outside `root` (dangling symlinks are refused too). Every file
/// operation on the state dir computes its path with this.
pub fn state_path(root: &Path, rel: &Path) -> Result<PathBuf, HostError> {
    let err = |m: &str| HostError::new("resolve path", rel.display().to_string(), format!("{m} (state dir {})", root.display()));
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err(err("refusing a path with `..`")),
            Component::RootDir | Component::Prefix(_) => return Err(err("refusing an absolute path")),
        }
    }
    if parts.is_empty() {
        return Err(err("the path names nothing"));
    }
    let canon_root = match root.canonicalize() {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(root.join(rel)), // nothing exists below it yet
        Err(e) => return Err(err(&format!("cannot resolve the state dir: {e}"))),
    };
    let mut cur = root.to_path_buf();
    for p in &parts {
        cur.push(p);
        match fs::symlink_metadata(&cur) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(err(&format!("cannot stat {}: {e}", cur.display()))),
            Ok(m) if m.file_type().is_symlink() => match cur.canonicalize() {
                Ok(t) if t.starts_with(&canon_root) => {}
                Ok(t) => return Err(err(&format!("{} is a symlink to {}, outside the state dir", cur.display(), t.display()))),
                Err(_) => return Err(err(&format!("{} is a dangling symlink", cur.display()))),
            },
            Ok(_) => {}
        }
    }
    Ok(root.join(rel))
}

/// Creates `dir` and its missing parents with mode 0711 (whatever the umask).
pub fn ensure_dir(dir: &Path) -> Result<(), HostError> {
    let err = |p: &Path, e: io::Error| HostError::new("create directory", p.display().to_string(), e.to_string());
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur {
        match fs::metadata(p) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(err(p, io::Error::other("exists and is not a directory"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(p),
            Err(e) => return Err(err(p, e)),
        }
        cur = p.parent().filter(|p| !p.as_os_str().is_empty());
    }
    for p in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(DIR_MODE).create(p) {
            Ok(()) => fs::set_permissions(p, fs::Permissions::from_mode(DIR_MODE)).map_err(|e| err(p, e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {} // a concurrent creator
            Err(e) => return Err(err(p, e)),
        }
    }
    Ok(())
}

fn create_file(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path)?;
    f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// fsyncs `part`, gives it `mode`, renames it to `dst` and fsyncs the directory.
fn finish_file(part: &Path, dst: &Path, mode: u32) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(part)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.sync_all()?;
    drop(f);
    fs::rename(part, dst)?;
    if let Some(dir) = dst.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `.NAME.part` next to `path`.
fn part_path(path: &Path, suffix: &str) -> Result<PathBuf, HostError> {
    let name = path.file_name().ok_or_else(|| HostError::new("create disk", path.display().to_string(), "the path has no file name"))?;
    Ok(path.with_file_name(format!(".{}.{suffix}", name.to_string_lossy())))
}

fn disk_format_as_image(f: DiskFormat) -> ImageFormat {
    match f {
        DiskFormat::Qcow2 => ImageFormat::Qcow2,
        DiskFormat::Raw => ImageFormat::Raw,
    }
}

fn exists_on(x: &Executor, path: &Path) -> Result<bool, HostError> {
    if x.is_local() {
        return exists(path);
    }
    Ok(x.stat(path).map_err(|e| HostError::new(x.named("create disk"), path.display().to_string(), format!("cannot stat: {}", e.message)))?.is_some())
}

/// [`ensure_dir`] on the executor's host: the missing directories are
/// created top-down with mode 0711; existing ones are left as they are. On
/// a remote host ONE round trip: `mkdir -p -m 711` of each level from the
/// top (`-p` leaves an existing level alone, `-m` gives a new one its mode
/// whatever the umask); when that fails, a walk with `stat` says which
/// level is in the way.
pub fn ensure_dir_on(x: &Executor, dir: &Path) -> Result<(), HostError> {
    if x.is_local() {
        return ensure_dir(dir);
    }
    let mode = format!("{DIR_MODE:o}");
    let mut levels: Vec<&Path> = dir.ancestors().filter(|p| !p.as_os_str().is_empty() && p.parent().is_some()).collect();
    levels.reverse();
    let s = OsStr::new;
    let argvs: Vec<[&OsStr; 6]> = levels.iter().map(|p| [s("mkdir"), s("-p"), s("-m"), s(&mode), s("--"), p.as_os_str()]).collect();
    let chain: Vec<&[&OsStr]> = argvs.iter().map(|a| &a[..]).collect();
    let Err(failed) = x.run_chain_remote("create directory", &dir.display().to_string(), &chain, Input::None, None) else {
        return Ok(());
    };
    let mut cur = Some(dir);
    while let Some(p) = cur {
        // (A level under a file cannot be stated: "Not a directory".)
        match x.stat(p) {
            Ok(Some(st)) if st.kind == FileKind::Dir => break,
            Ok(Some(_)) => return Err(HostError::new(x.named("create directory"), p.display().to_string(), "exists and is not a directory")),
            _ => {}
        }
        cur = p.parent().filter(|p| !p.as_os_str().is_empty());
    }
    Err(failed)
}

/// [`finish_file`] on the executor's host.
fn finish_file_on(x: &Executor, part: &Path, dst: &Path, mode: u32) -> Result<(), HostError> {
    if x.is_local() {
        return finish_file(part, dst, mode).map_err(|e| HostError::new("finish file", dst.display().to_string(), e.to_string()));
    }
    x.install_file(part, dst, mode)
}

/// Removes a file on its host on drop (a `.part` after a failure; a no-op after the rename).
struct RemoveOnDropOn<'a>(&'a Executor, &'a Path);

impl Drop for RemoveOnDropOn<'_> {
    fn drop(&mut self) {
        let _ = self.0.remove_file(self.1);
    }
}

fn exists(path: &Path) -> Result<bool, HostError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(HostError::new("create disk", path.display().to_string(), format!("cannot stat: {e}"))),
    }
}

// ---------------------------------------------------------------------------
// disks
// ---------------------------------------------------------------------------

/// Creates a qcow2 overlay at `path` on `base` (absolute), grown to `size`
/// when that is larger than the base. A `size` smaller than the base is
/// refused. Idempotent: an existing overlay on the same base with the
/// expected size is left alone; any other existing file is an error.
pub fn create_overlay(path: &Path, base: &Path, base_format: ImageFormat, size: Option<u64>) -> Result<(), HostError> {
    create_overlay_on(&Executor::Local, path, base, base_format, size)
}

/// [`create_overlay`] on the executor's host (`base` is a path there).
pub fn create_overlay_on(x: &Executor, path: &Path, base: &Path, base_format: ImageFormat, size: Option<u64>) -> Result<(), HostError> {
    let op = x.named("create overlay");
    let err = |m: String| HostError::new(op.clone(), path.display().to_string(), m);
    if !base.is_absolute() {
        return Err(err(format!("the base image path {} is not absolute", base.display())));
    }
    let base_info = inspect_on(x, base)?;
    check_base_image(&base_info, base_format, &base.display().to_string())?;
    let want = overlay_size(base_info.virtual_size, size).map_err(|(m, h)| err(m).hint(h))?;
    let base_s = base.to_string_lossy();
    if exists_on(x, path)? {
        let cur = inspect_on(x, path)?;
        if cur.format == ImageFormat::Qcow2 && cur.backing_file.as_deref() == Some(&*base_s) && cur.virtual_size == want {
            return Ok(());
        }
        return Err(err(format!(
            "already exists as a {} image (backing file {}, size {}), not an overlay on {base_s} of size {want}",
            cur.format.as_str(),
            cur.backing_file.as_deref().unwrap_or("none"),
            cur.virtual_size
        ))
        .hint("remove it, or let virtform replace the disk"));
    }
    let parent = path.parent().ok_or_else(|| err("the path has no parent directory".into()))?;
    ensure_dir_on(x, parent)?;
    let part = part_path(path, "part")?;
    let _cleanup = RemoveOnDropOn(x, &part);
    x.remove_file(&part).map_err(|e| err(format!("cannot remove stale {}: {}", part.display(), e.message)))?;
    let part_s = part.to_string_lossy();
    let want_s = want.to_string();
    let mut args = vec!["create", "-q", "-f", "qcow2", "-b", &base_s, "-F", base_format.as_str(), &part_s];
    if want > base_info.virtual_size {
        args.push(&want_s);
    }
    x.run("create overlay", &path.display().to_string(), "qemu-img", &args, None)?;
    finish_file_on(x, &part, path, FILE_MODE).map_err(|e| err(e.message))
}

/// The virtual size of an overlay: `size`, at least the base's (an error
/// and its hint otherwise), or the base's.
fn overlay_size(base: u64, size: Option<u64>) -> Result<u64, (String, String)> {
    match size {
        Some(s) if s < base => Err((
            format!("size {s} is smaller than the image's virtual size {base}; a disk cannot shrink its image"),
            format!("set size to at least {base} bytes or remove `size`"),
        )),
        Some(s) => Ok(s),
        None => Ok(base),
    }
}

/// [`create_overlay_on`] for a caller that made sure `path`'s directory
/// exists, with the base's facts at hand (one inspection for all the
/// overlays of a run): on a remote host ONE command (`qemu-img create` into
/// a `.part`, chmod, sync, a hard link to `path`, the `.part` removed, sync),
/// where `create_overlay_on` asks the host eight times. The link never
/// replaces a file: when `path` exists this fails and changes nothing (the
/// caller then inspects what is there).
pub fn create_overlay_fresh_on(x: &Executor, path: &Path, base: &Path, base_info: &ImageInfo, size: Option<u64>) -> Result<(), HostError> {
    if x.is_local() {
        return create_overlay_on(x, path, base, base_info.format, size);
    }
    let op = x.named("create overlay");
    let err = |m: String| HostError::new(op.clone(), path.display().to_string(), m);
    if !base.is_absolute() {
        return Err(err(format!("the base image path {} is not absolute", base.display())));
    }
    check_base_image(base_info, base_info.format, &base.display().to_string())?;
    let want = overlay_size(base_info.virtual_size, size).map_err(|(m, h)| err(m).hint(h))?;
    let part = part_path(path, "part")?;
    let want_s = want.to_string();
    let mode = format!("{FILE_MODE:o}");
    let dir = path.parent().ok_or_else(|| err("the path has no parent directory".into()))?;
    let s = OsStr::new;
    let mut create = vec![s("qemu-img"), s("create"), s("-q"), s("-f"), s("qcow2"), s("-b"), base.as_os_str(), s("-F"), s(base_info.format.as_str()), part.as_os_str()];
    if want > base_info.virtual_size {
        create.push(s(&want_s));
    }
    let chain: [&[&OsStr]; 6] = [
        &create,
        &[s("chmod"), s(&mode), s("--"), part.as_os_str()],
        &[s("sync"), s("--"), part.as_os_str()],
        &[s("ln"), s("-T"), s("--"), part.as_os_str(), path.as_os_str()],
        &[s("rm"), s("-f"), s("--"), part.as_os_str()],
        &[s("sync"), s("--"), dir.as_os_str()],
    ];
    x.run_chain_remote("create overlay", &path.display().to_string(), &chain, Input::None, Some(&part)).map(drop)
}

/// Creates a blank disk of `size` bytes: qcow2 (`qemu-img create`) or a
/// sparse raw file. Idempotent for an existing blank disk of that format and size.
pub fn create_blank(path: &Path, format: DiskFormat, size: u64) -> Result<(), HostError> {
    create_blank_on(&Executor::Local, path, format, size)
}

/// [`create_blank`] on the executor's host.
pub fn create_blank_on(x: &Executor, path: &Path, format: DiskFormat, size: u64) -> Result<(), HostError> {
    let op = x.named("create disk");
    let err = |m: String| HostError::new(op.clone(), path.display().to_string(), m);
    if size == 0 {
        return Err(err("size must not be 0".into()));
    }
    if exists_on(x, path)? {
        let cur = inspect_on(x, path)?;
        if cur.format == disk_format_as_image(format) && cur.backing_file.is_none() && cur.virtual_size == size {
            return Ok(());
        }
        return Err(err(format!("already exists as a {} image of size {}, not a blank {} disk of size {size}", cur.format.as_str(), cur.virtual_size, format.as_str()))
            .hint("remove it, or let virtform replace the disk"));
    }
    let parent = path.parent().ok_or_else(|| err("the path has no parent directory".into()))?;
    ensure_dir_on(x, parent)?;
    let part = part_path(path, "part")?;
    let _cleanup = RemoveOnDropOn(x, &part);
    x.remove_file(&part).map_err(|e| err(format!("cannot remove stale {}: {}", part.display(), e.message)))?;
    match format {
        DiskFormat::Qcow2 => {
            x.run("create disk", &path.display().to_string(), "qemu-img", &["create", "-q", "-f", "qcow2", &part.to_string_lossy(), &size.to_string()], None)?;
        }
        DiskFormat::Raw => {
            if x.is_local() {
                let f = create_file(&part).map_err(|e| err(e.to_string()))?;
                f.set_len(size).map_err(|e| err(e.to_string()))?;
            } else {
                x.create_sparse(&part, size).map_err(|e| err(e.message))?;
            }
        }
    }
    finish_file_on(x, &part, path, FILE_MODE).map_err(|e| err(e.message))
}

/// Grows a disk to `new_size` bytes (`qemu-img resize`, never `--shrink`).
/// Equal size is a no-op; a smaller size is refused. The disk must not be in
/// use by a running guest (grow those through libvirt's block resize).
pub fn resize(path: &Path, new_size: u64) -> Result<(), HostError> {
    resize_on(&Executor::Local, path, new_size)
}

/// [`resize`] on the executor's host.
pub fn resize_on(x: &Executor, path: &Path, new_size: u64) -> Result<(), HostError> {
    let op = "resize disk";
    let info = inspect_on(x, path)?;
    if new_size < info.virtual_size {
        return Err(HostError::new(x.named(op), path.display().to_string(), format!("cannot shrink from {} to {new_size} bytes", info.virtual_size))
            .hint("shrinking loses data; keep the size, or replace the disk"));
    }
    if new_size == info.virtual_size {
        return Ok(());
    }
    let p = path.to_string_lossy();
    x.run(op, &p, "qemu-img", &["resize", "-q", "-f", info.format.as_str(), &p, &new_size.to_string()], None)?;
    Ok(())
}

/// Removes a disk file and any `.part` leftover next to it. Removing what is
/// not there succeeds.
pub fn remove(path: &Path) -> Result<(), HostError> {
    remove_on(&Executor::Local, path)
}

/// [`remove`] on the executor's host.
pub fn remove_on(x: &Executor, path: &Path) -> Result<(), HostError> {
    for p in [path.to_path_buf(), part_path(path, "part")?, part_path(path, "fmt.raw")?] {
        x.remove_file(&p).map_err(|e| HostError::new(x.named("remove disk"), p.display().to_string(), e.message))?;
    }
    Ok(())
}

/// Makes a blank disk a swap disk (mkswap). See [`format_filesystem`] for how formats are handled.
pub fn format_swap(path: &Path, label: Option<&str>) -> Result<(), HostError> {
    let mut args = vec!["-f"];
    if let Some(l) = label {
        args.extend(["-L", l]);
    }
    format_with(path, "mkswap", &args)
}

/// Creates a filesystem on a blank disk. A raw file is formatted in place; a
/// qcow2 disk is formatted as a sparse raw temporary of the same size and
/// converted into place (`qemu-img convert -O qcow2`; no qemu-nbd, no mount).
pub fn format_filesystem(path: &Path, fs: Filesystem, label: Option<&str>) -> Result<(), HostError> {
    let (program, mut args): (&str, Vec<&str>) = match fs {
        Filesystem::Ext4 => ("mkfs.ext4", vec!["-F", "-q"]),
        Filesystem::Ext3 => ("mkfs.ext3", vec!["-F", "-q"]),
        Filesystem::Ext2 => ("mkfs.ext2", vec!["-F", "-q"]),
        Filesystem::Xfs => ("mkfs.xfs", vec!["-f", "-q"]),
        Filesystem::Vfat => ("mkfs.vfat", vec![]),
    };
    if let Some(l) = label {
        args.extend([if fs == Filesystem::Vfat { "-n" } else { "-L" }, l]);
    }
    format_with(path, program, &args)
}

fn format_with(path: &Path, program: &str, args: &[&str]) -> Result<(), HostError> {
    let op = format!("format disk ({program})");
    let err = |m: String| HostError::new(op.clone(), path.display().to_string(), m);
    let info = inspect(path)?;
    if info.backing_file.is_some() || info.data_file.is_some() {
        return Err(err("only a blank disk can be formatted; this one has a backing or data file".into()));
    }
    let target = match info.format {
        ImageFormat::Raw => path.to_path_buf(),
        ImageFormat::Qcow2 => part_path(path, "fmt.raw")?,
    };
    let _cleanup = (info.format == ImageFormat::Qcow2).then(|| RemoveOnDrop(&target));
    if info.format == ImageFormat::Qcow2 {
        remove_if_exists(&target).map_err(|e| err(e.to_string()))?;
        create_file(&target).and_then(|f| f.set_len(info.virtual_size)).map_err(|e| err(format!("cannot create {}: {e}", target.display())))?;
    }
    let t = target.to_string_lossy();
    let mut full: Vec<&str> = args.to_vec();
    full.push(&t);
    run(&op, &path.display().to_string(), program, &full, None)?;
    if info.format == ImageFormat::Qcow2 {
        let part = part_path(path, "part")?;
        let _c = RemoveOnDrop(&part);
        remove_if_exists(&part).map_err(|e| err(e.to_string()))?;
        run(&op, &path.display().to_string(), "qemu-img", &["convert", "-q", "-f", "raw", "-O", "qcow2", &t, &part.to_string_lossy()], None)?;
        finish_file(&part, path, FILE_MODE).map_err(|e| err(e.to_string()))?;
    } else {
        File::open(path).and_then(|f| f.sync_all()).map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn qemu_img(args: &[&str]) -> String {
        let out = Command::new("qemu-img").args(args).output().expect("qemu-img not found: run scripts/host-setup");
        assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// `qemu-img info --output=json`, without opening the backing chain.
    fn qinfo(p: &Path) -> serde_json::Value {
        serde_json::from_str(&qemu_img(&["info", "--output=json", s(p)])).unwrap()
    }

    fn assert_matches_qemu(p: &Path, fmt: &str) {
        let i = inspect(p).unwrap();
        let q = qinfo(p);
        assert_eq!(q["format"], i.format.as_str(), "{}", p.display());
        assert_eq!(i.format.as_str(), fmt);
        // qemu rounds a raw file's size up to whole 512-byte sectors; we report the file's length.
        let qsize = if i.format == ImageFormat::Raw { i.virtual_size.div_ceil(512) * 512 } else { i.virtual_size };
        assert_eq!(q["virtual-size"].as_u64(), Some(qsize), "{}", p.display());
        assert_eq!(q["actual-size"].as_u64(), Some(i.allocated), "{}", p.display());
        assert_eq!(q["backing-filename"].as_str(), i.backing_file.as_deref());
        assert_eq!(q["backing-filename-format"].as_str(), i.backing_format.as_deref());
        assert_eq!(q["format-specific"]["data"]["data-file"].as_str(), i.data_file.as_deref());
        if let Some(h) = &i.qcow2 {
            assert_eq!(q["cluster-size"].as_u64(), Some(h.cluster_size));
            assert_eq!(q["format-specific"]["data"]["compat"].as_str(), Some(if h.version == 2 { "0.10" } else { "1.1" }));
        }
    }

    #[test]
    fn inspect_agrees_with_qemu_img() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        qemu_img(&["create", "-q", "-f", "qcow2", s(&p("base.qcow2")), "100M"]);
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4096", s(&p("v2.qcow2")), "3G"]);
        qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&p("base.qcow2")), "-F", "qcow2", s(&p("overlay.qcow2")), "200M"]);
        qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&p("base.qcow2")), "-F", "qcow2", s(&p("same.qcow2"))]);
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", &format!("data_file={}", s(&p("data.raw"))), s(&p("df.qcow2")), "10M"]);
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", &format!("data_file={},data_file_raw=on", s(&p("data2.raw"))), s(&p("dfraw.qcow2")), "10M"]);
        qemu_img(&["create", "-q", "-f", "raw", s(&p("disk.raw")), "5M"]);
        std::fs::write(p("small.raw"), b"hello world").unwrap();
        qemu_img(&["convert", "-q", "-f", "raw", "-O", "qcow2", s(&p("disk.raw")), s(&p("conv.qcow2"))]);
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", "extended_l2=on,compression_type=zstd", s(&p("ext.qcow2")), "1G"]);
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", "-b", s(&p("base.qcow2")), "-F", "qcow2", s(&p("big.qcow2"))]);
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-b", s(&p("disk.raw")), "-F", "raw", s(&p("tiny.qcow2"))]);

        for n in ["base.qcow2", "v2.qcow2", "overlay.qcow2", "same.qcow2", "df.qcow2", "dfraw.qcow2", "conv.qcow2", "ext.qcow2", "big.qcow2", "tiny.qcow2"] {
            assert_matches_qemu(&p(n), "qcow2");
        }
        for n in ["disk.raw", "small.raw", "data.raw"] {
            assert_matches_qemu(&p(n), "raw");
        }

        let ov = inspect(&p("overlay.qcow2")).unwrap();
        assert_eq!(ov.virtual_size, 200 << 20);
        assert_eq!(ov.backing_file.as_deref(), Some(s(&p("base.qcow2"))));
        assert_eq!(ov.backing_format.as_deref(), Some("qcow2"));
        assert_eq!(inspect(&p("same.qcow2")).unwrap().virtual_size, 100 << 20);
        let df = inspect(&p("df.qcow2")).unwrap();
        assert_eq!(df.data_file.as_deref(), Some(s(&p("data.raw"))));
        assert!(df.qcow2.as_ref().unwrap().external_data);
        let v2 = inspect(&p("v2.qcow2")).unwrap();
        assert_eq!((v2.qcow2.as_ref().unwrap().version, v2.qcow2.as_ref().unwrap().cluster_size), (2, 4096));
        let ext = inspect(&p("ext.qcow2")).unwrap().qcow2.unwrap();
        assert_eq!(ext.incompatible_features, 0b11000, "compression type + extended L2");
        assert_eq!(ext.unknown_incompatible, 0);
        assert_eq!(inspect(&p("small.raw")).unwrap().virtual_size, 11);
    }

    #[test]
    fn base_image_rules() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        qemu_img(&["create", "-q", "-f", "qcow2", s(&p("base.qcow2")), "10M"]);
        qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&p("base.qcow2")), "-F", "qcow2", s(&p("ov.qcow2"))]);
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", &format!("data_file={}", s(&p("d.raw"))), s(&p("df.qcow2")), "10M"]);
        qemu_img(&["create", "-q", "-f", "raw", s(&p("r.raw")), "10M"]);

        let ok = inspect(&p("base.qcow2")).unwrap();
        check_base_image(&ok, ImageFormat::Qcow2, "image.base").unwrap();
        check_base_image(&inspect(&p("r.raw")).unwrap(), ImageFormat::Raw, "image.r").unwrap();

        let e = check_base_image(&inspect(&p("ov.qcow2")).unwrap(), ImageFormat::Qcow2, "image.ov").unwrap_err();
        assert!(e.message.contains("backing file") && e.message.contains("base.qcow2"), "{e}");
        assert!(e.hint.unwrap().contains("qemu-img convert"));
        let e = check_base_image(&inspect(&p("df.qcow2")).unwrap(), ImageFormat::Qcow2, "image.df").unwrap_err();
        assert!(e.message.contains("external data file") && e.message.contains("d.raw"), "{e}");
        let e = check_base_image(&inspect(&p("r.raw")).unwrap(), ImageFormat::Qcow2, "image.r").unwrap_err();
        assert_eq!(e.message, "declared qcow2 but the file is a raw image");
        assert_eq!(e.object, "image.r");
        let e = check_base_image(&ok, ImageFormat::Raw, "image.base").unwrap_err();
        assert_eq!(e.message, "declared raw but the file is a qcow2 image");
        assert!(e.hint.unwrap().contains("format = \"qcow2\""));

        // Header bits set by hand: unknown incompatible feature, corrupt, data-file bit without a name, encryption.
        let bytes = std::fs::read(p("base.qcow2")).unwrap();
        let patched = |name: &str, at: usize, val: &[u8]| {
            let mut b = bytes.clone();
            b[at..at + val.len()].copy_from_slice(val);
            std::fs::write(p(name), b).unwrap();
            inspect(&p(name)).unwrap()
        };
        let i = patched("unk.qcow2", 72, &(1u64 << 40).to_be_bytes());
        assert_eq!(i.qcow2.as_ref().unwrap().unknown_incompatible, 1 << 40);
        assert!(check_base_image(&i, ImageFormat::Qcow2, "x").unwrap_err().message.contains("bits 0x10000000000"));
        let i = patched("cor.qcow2", 72, &2u64.to_be_bytes());
        assert!(check_base_image(&i, ImageFormat::Qcow2, "x").unwrap_err().message.contains("corrupt"));
        let i = patched("dfbit.qcow2", 72, &4u64.to_be_bytes());
        assert!(check_base_image(&i, ImageFormat::Qcow2, "x").unwrap_err().message.contains("not named in the header"));
        let i = patched("enc.qcow2", 32, &1u32.to_be_bytes());
        assert!(check_base_image(&i, ImageFormat::Qcow2, "x").unwrap_err().message.contains("encrypted"));

        // Another format's signature in a raw file.
        let mut vmdk = b"# Disk DescriptorFile\nRW 8 FLAT \"/etc/shadow\" 0\n".to_vec();
        vmdk.resize(4096, 0);
        std::fs::write(p("evil.raw"), &vmdk).unwrap();
        let i = inspect(&p("evil.raw")).unwrap();
        assert_eq!((i.format, i.signature.as_deref()), (ImageFormat::Raw, Some("vmdk")));
        assert!(check_base_image(&i, ImageFormat::Raw, "x").unwrap_err().message.contains("vmdk header"));
        assert!(check_base_image(&i, ImageFormat::Qcow2, "x").unwrap_err().message.contains("a vmdk image"));
        std::fs::write(p("empty.raw"), b"").unwrap();
        assert!(check_base_image(&inspect(&p("empty.raw")).unwrap(), ImageFormat::Raw, "x").unwrap_err().message.contains("empty"));
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("b.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", "-b", "/some/where", "-F", "raw", "-u", s(&base), "10M"]);
        let good = std::fs::read(&base).unwrap();
        let f = d.path().join("t");
        // Unlink first: rewriting a file in place through truncation is slow on ext4 (auto_da_alloc flushes it).
        let put = |f: &Path, b: &[u8]| {
            let _ = std::fs::remove_file(f);
            std::fs::write(f, b).unwrap();
        };
        // Every truncation of a real qcow2 is either an error or parses; never a panic, never raw.
        for n in (0..1100).chain((1100..good.len()).step_by(4093)).chain([good.len() - 1]) {
            put(&f, &good[..n]);
            match inspect(&f) {
                Ok(i) => assert!(n < 4 && i.format == ImageFormat::Raw || i.format == ImageFormat::Qcow2, "{n}: {i:?}"),
                Err(e) => assert!(e.message.starts_with("malformed qcow2 image: "), "{n}: {e}"),
            }
        }
        put(&f, &good[..200]);
        let e = inspect(&f).unwrap_err();
        assert!(e.message.contains("beyond the end of the file"), "{e}");
        assert!(e.to_string().contains("truncated or damaged"), "{e}");
        put(&f, &good[..50]);
        assert!(inspect(&f).unwrap_err().message.contains("header truncated (50 bytes)"));
        // Mutations of a real header (with backing file name and extensions),
        // parsed in memory: errors or values, never a panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let head = &good[..good.len().min(64 << 10)];
        let (mut ok, mut bad) = (0, 0);
        for _ in 0..20_000 {
            let mut b = head.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = 4 + (next() % 508) as usize;
                b[at] = next() as u8;
            }
            let cut = if next().is_multiple_of(4) { (next() % b.len() as u64) as usize } else { b.len() };
            match parse_qcow2(&b[..cut], good.len() as u64, 0) {
                Ok(_) => ok += 1,
                Err(_) => bad += 1,
            }
        }
        assert!(ok > 1000 && bad > 1000, "mutations: {ok} parsed, {bad} refused");
        put(&f, b"QFI\xfb\0\0\0\x07");
        assert!(inspect(&f).unwrap_err().message.contains("unsupported qcow2 version 7"));
        // Not a file, missing.
        assert!(inspect(d.path()).unwrap_err().message.contains("not a regular file"));
        assert_eq!(inspect(&d.path().join("nope")).unwrap_err().message, "does not exist");
    }

    #[test]
    fn state_path_containment() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("state");
        std::fs::create_dir_all(root.join("demo/disks")).unwrap();
        assert_eq!(state_path(&root, Path::new("demo/disks/a.qcow2")).unwrap(), root.join("demo/disks/a.qcow2"));
        assert_eq!(state_path(&root, Path::new("./x")).unwrap(), root.join("./x"));
        for bad in ["../x", "a/../../x", "a/..", "/etc/passwd", "", "."] {
            assert!(state_path(&root, Path::new(bad)).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("demo"), root.join("in")).unwrap();
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
        let e = state_path(&root, Path::new("out/passwd")).unwrap_err();
        assert!(e.message.contains("outside the state dir"), "{e}");
        assert!(state_path(&root, Path::new("in/disks/a")).is_ok());
        assert!(state_path(&root, Path::new("dangling/x")).unwrap_err().message.contains("dangling"));
        // A root that does not exist yet: lexical checks only.
        assert!(state_path(&d.path().join("new"), Path::new("a/b")).is_ok());
        assert!(state_path(&d.path().join("new"), Path::new("../b")).is_err());
    }

    #[test]
    fn ensure_dir_modes_ignore_umask() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/c");
        ensure_dir(&deep).unwrap();
        ensure_dir(&deep).unwrap();
        for p in [d.path().join("a"), d.path().join("a/b"), deep] {
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o711);
        }
        std::fs::write(d.path().join("f"), b"").unwrap();
        assert!(ensure_dir(&d.path().join("f/g")).is_err());
    }

    #[test]
    fn hex_and_hash() {
        assert_eq!(hex(&[0, 1, 0xab, 0xff]), "0001abff");
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"abc").unwrap();
        assert_eq!(hash_file(&d.path().join("f")).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn sparse_copy_keeps_holes_and_content() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src.raw");
        let f = File::create(&src).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", (8 << 20) - 4).unwrap();
        drop(f);
        let dst = d.path().join("dst.raw");
        let sha = copy_hashing(&src, &dst).unwrap();
        assert_eq!(sha, hash_file(&src).unwrap());
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        let m = std::fs::metadata(&dst).unwrap();
        assert!(m.blocks() * 512 <= 256 << 10, "copy is not sparse: {} bytes allocated", m.blocks() * 512);
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
    }

    /// Prints inspect vs `qemu-img info` timings (`cargo test -- --nocapture`).
    #[test]
    fn inspect_is_faster_than_qemu_img_info() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("x.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", s(&f), "10G"]);
        let n = 20;
        let t = std::time::Instant::now();
        for _ in 0..n {
            inspect(&f).unwrap();
        }
        let ours = t.elapsed() / n;
        let t = std::time::Instant::now();
        for _ in 0..n {
            qinfo(&f);
        }
        let theirs = t.elapsed() / n;
        eprintln!("inspect {ours:?} per file, qemu-img info {theirs:?} per file");
        assert!(ours < theirs);
    }
}
