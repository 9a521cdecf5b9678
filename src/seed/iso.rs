//! A small, pure ISO 9660 writer (with Rock Ridge and Joliet) and reader.
//!
//! The writer makes the kind of image `genisoimage -V cidata -J -r` makes for
//! a cloud-init NoCloud seed: one flat root directory of regular files, named
//! three ways so that every reader finds the original names:
//!
//! - plain ISO 9660 (level 1, `META_DAT.;1`) in the primary volume
//!   descriptor, for readers that know nothing else;
//! - Rock Ridge (SUSP `SP`/`CE`/`ER`, RRIP 1991A `PX` and `NM`) on the same
//!   directory records: Linux's isofs and cloud-init read `meta-data`;
//! - Joliet (a supplementary volume descriptor, UCS-2 level 3 names) for
//!   Windows and cloudbase-init.
//!
//! Output is deterministic: files are sorted by name and every timestamp is
//! derived from the content (a hash of the label, names and bytes), nothing
//! depends on the clock or the host, so the same files give the same bytes
//! (and the same sha256). Deriving the time from the content rather than
//! fixing it gives different seeds different volume UUIDs (blkid builds an
//! ISO's UUID from its creation time).
//!
//! Layout (2048-byte sectors): 0–15 system area (zero), 16 primary volume
//! descriptor, 17 Joliet descriptor, 18 terminator, 19–22 path tables (type L
//! and M for each descriptor), 23 the Rock Ridge continuation area (the `ER`
//! entry, too large for the root's `.` record), then the ISO/Rock Ridge root
//! directory, the Joliet root directory, and the files' data, each file
//! starting on a sector boundary and shared by both directories.
//!
//! No padding after the last file (genisoimage adds 150 sectors by default
//! for old CD drives' read-ahead; a virtio disk needs none), so a seed is
//! usually 29–32 sectors. `xorriso` loading an image of at most 32 sectors
//! (64 KiB) prints "Media summary: 1 session, 0 data blocks": libisoburn
//! takes the first 64 KiB of a file or block device as the header of its
//! emulated multi-session TOC and scans for sessions from sector 32 up to
//! the volume space size, so for a small image it scans nothing. Its `-toc`
//! still lists the one session at sector 0 with the full size, the tree
//! loads, and genisoimage's own small images print the same summary
//! (tests/seed_readers.rs shows all three).
//!
//! The reader ([`IsoReader`]) parses what the writer makes and what common
//! tools make (one directory level, which is all a seed has): the volume
//! labels, the root directory under each name system, and file contents. It
//! checks every offset and never panics on malformed input.

use std::collections::HashSet;

/// Bytes per logical sector (and block): the only size this module uses.
pub const SECTOR: usize = 2048;
/// Longest file name accepted: a Joliet name holds 64 UCS-2 characters.
/// (Joliet names carry no `;1` version suffix, as genisoimage writes them.)
pub const MAX_NAME_LEN: usize = 64;
/// Longest volume id accepted: the Joliet volume id holds 16 UCS-2 characters.
pub const MAX_VOLUME_ID_LEN: usize = 16;

const FIRST_VD: usize = 16;
const PVD_SECTOR: u32 = 16;
const SVD_SECTOR: u32 = 17;
const TERMINATOR_SECTOR: u32 = 18;
const PVD_L_PATH: u32 = 19;
const PVD_M_PATH: u32 = 20;
const SVD_L_PATH: u32 = 21;
const SVD_M_PATH: u32 = 22;
const CE_SECTOR: u32 = 23;
const FIRST_DIR_SECTOR: u32 = 24;

const PATH_TABLE_SIZE: u32 = 10;
const FLAG_DIRECTORY: u8 = 0x02;
/// Joliet UCS-2 level 3 escape sequence.
const JOLIET_ESCAPE: &[u8; 3] = b"%/E";
/// Timestamps are derived from the content (see [`Stamp`]): from
/// 1980-01-01 00:00:00 UTC up to 2^30 seconds (34 years) later: in the past,
/// so no tool sees a file from the future.
const STAMP_BASE: u64 = 315_532_800;
/// "Not specified" as a volume descriptor date.
const VD_DATE_UNSET: &[u8; 16] = b"0000000000000000";

const FILE_MODE: u32 = 0o100444;
const DIR_MODE: u32 = 0o040555;

const RRIP_ID: &[u8] = b"RRIP_1991A";
const RRIP_DES: &[u8] =
    b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const RRIP_SRC: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

/// What can go wrong writing or reading an image. Messages name files, never
/// their contents.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IsoError {
    #[error("invalid file name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error(
        "duplicate file name {name:?} (names must differ in more than letter case: Joliet readers ignore case)"
    )]
    DuplicateName { name: String },
    #[error("invalid volume id {id:?}: {reason}")]
    InvalidVolumeId { id: String, reason: &'static str },
    #[error("file {name:?} is too large for an ISO 9660 image ({size} bytes)")]
    FileTooLarge { name: String, size: u64 },
    #[error("the image would be too large ({sectors} sectors)")]
    TooLarge { sectors: u64 },
    #[error("not a readable ISO 9660 image: {0}")]
    Malformed(String),
    #[error("no file named {0:?} in the image")]
    NotFound(String),
}

// ---------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------

/// Writes an ISO 9660 image with Rock Ridge and Joliet names holding `files`
/// (name, contents) in its root directory, labelled `volume_id`.
///
/// Names must be 1–64 characters of `[A-Za-z0-9._-]`, not `.` or `..`, and
/// distinct ignoring letter case. The volume id must be 1–16 characters of
/// `[A-Za-z0-9_-]` (it is written as given: `cidata` stays lowercase, as
/// cloud-init and genisoimage expect). The order of `files` does not matter.
pub fn write_iso(volume_id: &str, files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, IsoError> {
    check_volume_id(volume_id)?;
    let mut sorted: Vec<&(String, Vec<u8>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut seen = HashSet::new();
    for (name, data) in &sorted {
        check_name(name)?;
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(IsoError::DuplicateName { name: name.clone() });
        }
        if u32::try_from(data.len()).is_err() {
            return Err(IsoError::FileTooLarge {
                name: name.clone(),
                size: data.len() as u64,
            });
        }
    }
    let iso_names = level1_names(sorted.iter().map(|f| f.0.as_str()));
    let stamp = Stamp::of(volume_id, &sorted);
    let date = stamp.record_date();

    // Directory records, sizes first (they do not depend on extents).
    let root_dot_su = {
        let mut su = susp_sp();
        su.extend(rrip_px(DIR_MODE, 2));
        su.extend(susp_ce(CE_SECTOR, 0, er_entry().len() as u32));
        su
    };
    let root_dotdot_su = rrip_px(DIR_MODE, 2);
    let file_su: Vec<Vec<u8>> = sorted
        .iter()
        .map(|(name, _)| {
            let mut su = rrip_px(FILE_MODE, 1);
            su.extend(rrip_nm(name.as_bytes()));
            su
        })
        .collect();
    let joliet_names: Vec<Vec<u8>> = sorted.iter().map(|(name, _)| ucs2(name)).collect();

    // Record order: "." and ".." first, then files sorted by identifier.
    let mut iso_order: Vec<usize> = (0..sorted.len()).collect();
    iso_order
        .sort_by(|&a, &b| identifier_order(iso_names[a].as_bytes(), iso_names[b].as_bytes(), 1));
    let mut joliet_order: Vec<usize> = (0..sorted.len()).collect();
    joliet_order.sort_by(|&a, &b| identifier_order(&joliet_names[a], &joliet_names[b], 2));

    let iso_sizes: Vec<usize> = [
        record_len(1, root_dot_su.len()),
        record_len(1, root_dotdot_su.len()),
    ]
    .into_iter()
    .chain(
        iso_order
            .iter()
            .map(|&i| record_len(iso_names[i].len(), file_su[i].len())),
    )
    .collect();
    let joliet_sizes: Vec<usize> = [record_len(1, 0), record_len(1, 0)]
        .into_iter()
        .chain(
            joliet_order
                .iter()
                .map(|&i| record_len(joliet_names[i].len(), 0)),
        )
        .collect();
    let iso_dir_sectors = dir_sectors(&iso_sizes);
    let joliet_dir_sectors = dir_sectors(&joliet_sizes);

    let iso_dir = FIRST_DIR_SECTOR;
    let joliet_dir = iso_dir + iso_dir_sectors;
    let mut next = u64::from(joliet_dir + joliet_dir_sectors);
    let mut extents = Vec::with_capacity(sorted.len());
    for (_, data) in &sorted {
        if data.is_empty() {
            extents.push(0u32); // no data, no sector (as mkisofs does)
        } else {
            extents.push(u32::try_from(next).map_err(|_| IsoError::TooLarge { sectors: next })?);
            next += sectors_for(data.len() as u64);
        }
    }
    let total = u32::try_from(next).map_err(|_| IsoError::TooLarge { sectors: next })?;
    let total_bytes = usize::try_from(u64::from(total) * SECTOR as u64)
        .map_err(|_| IsoError::TooLarge { sectors: next })?;

    let iso_dir_len = iso_dir_sectors * SECTOR as u32;
    let joliet_dir_len = joliet_dir_sectors * SECTOR as u32;

    // Directory extents.
    let mut iso_records = vec![
        dir_record(
            iso_dir,
            iso_dir_len,
            FLAG_DIRECTORY,
            &[0],
            &root_dot_su,
            date,
        ),
        dir_record(
            iso_dir,
            iso_dir_len,
            FLAG_DIRECTORY,
            &[1],
            &root_dotdot_su,
            date,
        ),
    ];
    for &i in &iso_order {
        iso_records.push(dir_record(
            extents[i],
            sorted[i].1.len() as u32,
            0,
            iso_names[i].as_bytes(),
            &file_su[i],
            date,
        ));
    }
    let mut joliet_records = vec![
        dir_record(joliet_dir, joliet_dir_len, FLAG_DIRECTORY, &[0], &[], date),
        dir_record(joliet_dir, joliet_dir_len, FLAG_DIRECTORY, &[1], &[], date),
    ];
    for &i in &joliet_order {
        joliet_records.push(dir_record(
            extents[i],
            sorted[i].1.len() as u32,
            0,
            &joliet_names[i],
            &[],
            date,
        ));
    }

    let mut img = vec![0u8; total_bytes];
    let put = |img: &mut Vec<u8>, sector: u32, bytes: &[u8]| {
        let at = sector as usize * SECTOR;
        img[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(
        &mut img,
        PVD_SECTOR,
        &volume_descriptor(false, volume_id, total, iso_dir, iso_dir_len, &stamp),
    );
    put(
        &mut img,
        SVD_SECTOR,
        &volume_descriptor(true, volume_id, total, joliet_dir, joliet_dir_len, &stamp),
    );
    put(&mut img, TERMINATOR_SECTOR, &terminator());
    put(&mut img, PVD_L_PATH, &path_table(iso_dir, false));
    put(&mut img, PVD_M_PATH, &path_table(iso_dir, true));
    put(&mut img, SVD_L_PATH, &path_table(joliet_dir, false));
    put(&mut img, SVD_M_PATH, &path_table(joliet_dir, true));
    put(&mut img, CE_SECTOR, &er_entry());
    put(
        &mut img,
        iso_dir,
        &pack_records(&iso_records, iso_dir_sectors),
    );
    put(
        &mut img,
        joliet_dir,
        &pack_records(&joliet_records, joliet_dir_sectors),
    );
    for (i, (_, data)) in sorted.iter().enumerate() {
        if !data.is_empty() {
            put(&mut img, extents[i], data);
        }
    }
    Ok(img)
}

fn check_volume_id(id: &str) -> Result<(), IsoError> {
    let bad = |reason| {
        Err(IsoError::InvalidVolumeId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > MAX_VOLUME_ID_LEN {
        return bad("longer than 16 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return bad("only letters, digits, '_' and '-' are allowed");
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), IsoError> {
    let bad = |reason| {
        Err(IsoError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only letters, digits, '.', '_' and '-' are allowed");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are reserved");
    }
    Ok(())
}

/// ISO 9660 level 1 identifiers (`NAME8.EXT;1`, d-characters), unique.
/// `names` come sorted, so collisions are resolved the same way every time.
fn level1_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let dchars = |s: &str, max: usize| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    b.to_ascii_uppercase() as char
                } else {
                    '_'
                }
            })
            .take(max)
            .collect()
    };
    let mut taken = HashSet::new();
    let mut out = Vec::new();
    for name in names {
        let (base, ext) = match name.rfind('.') {
            Some(i) => (&name[..i], &name[i + 1..]),
            None => (name, ""),
        };
        let ext = dchars(ext, 3);
        let mut base = dchars(base, 8);
        if base.is_empty() && ext.is_empty() {
            base.push('_');
        }
        let mut candidate = format!("{base}.{ext};1");
        let mut n = 1u32;
        while taken.contains(&candidate) {
            let digits = n.to_string();
            let keep = base.len().min(8 - digits.len());
            candidate = format!("{}{digits}.{ext};1", &base[..keep]);
            n += 1;
        }
        taken.insert(candidate.clone());
        out.push(candidate);
    }
    out
}

/// ISO 9660 §9.3 ordering of file identifiers: by name, then extension
/// (the shorter padded with spaces), then version. `unit` is the character
/// width (1 for d-characters, 2 for UCS-2).
fn identifier_order(a: &[u8], b: &[u8], unit: usize) -> std::cmp::Ordering {
    fn split(id: &[u8], unit: usize) -> (&[u8], &[u8]) {
        let chars = id.len() / unit;
        let is = |i: usize, c: u8| {
            id[i * unit + unit - 1] == c
                && id[i * unit..i * unit + unit - 1].iter().all(|&x| x == 0)
        };
        let semi = (0..chars).find(|&i| is(i, b';')).unwrap_or(chars);
        let dot = (0..semi).rev().find(|&i| is(i, b'.')).unwrap_or(semi);
        let name = &id[..dot * unit];
        let ext = if dot < semi {
            &id[(dot + 1) * unit..semi * unit]
        } else {
            &[][..]
        };
        (name, ext)
    }
    fn padded_cmp(a: &[u8], b: &[u8], unit: usize) -> std::cmp::Ordering {
        let space: Vec<u8> = (0..unit)
            .map(|i| if i + 1 == unit { b' ' } else { 0 })
            .collect();
        let n = a.len().max(b.len());
        let at = |s: &[u8], i: usize| -> u8 { if i < s.len() { s[i] } else { space[i % unit] } };
        (0..n)
            .map(|i| at(a, i).cmp(&at(b, i)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }
    let (an, ae) = split(a, unit);
    let (bn, be) = split(b, unit);
    padded_cmp(an, bn, unit)
        .then_with(|| padded_cmp(ae, be, unit))
        .then_with(|| a.cmp(b))
}

fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

fn both16(v: u16) -> [u8; 4] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], b[0], b[1]]
}

fn both32(v: u32) -> [u8; 8] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], l[2], l[3], b[0], b[1], b[2], b[3]]
}

fn sectors_for(bytes: u64) -> u64 {
    bytes.div_ceil(SECTOR as u64)
}

fn record_len(ident_len: usize, su_len: usize) -> usize {
    let pad = usize::from(ident_len.is_multiple_of(2));
    let len = 33 + ident_len + pad + su_len;
    len + len % 2
}

/// A directory record (ISO 9660 §9.1). The caller keeps it under 256 bytes
/// (names are at most 64 characters, system use at most 110 bytes).
fn dir_record(
    extent: u32,
    size: u32,
    flags: u8,
    ident: &[u8],
    su: &[u8],
    date: [u8; 7],
) -> Vec<u8> {
    let len = record_len(ident.len(), su.len());
    debug_assert!(len <= 255);
    let mut r = Vec::with_capacity(len);
    r.push(len as u8);
    r.push(0); // extended attribute record length
    r.extend(both32(extent));
    r.extend(both32(size));
    r.extend(date);
    r.push(flags);
    r.push(0); // file unit size
    r.push(0); // interleave gap
    r.extend(both16(1)); // volume sequence number
    r.push(ident.len() as u8);
    r.extend(ident);
    if ident.len().is_multiple_of(2) {
        r.push(0);
    }
    r.extend(su);
    r.resize(len, 0);
    r
}

/// How many sectors the records take when none may cross a sector boundary.
fn dir_sectors(sizes: &[usize]) -> u32 {
    let (mut sectors, mut used) = (1u32, 0usize);
    for &s in sizes {
        if used + s > SECTOR {
            sectors += 1;
            used = 0;
        }
        used += s;
    }
    sectors
}

fn pack_records(records: &[Vec<u8>], sectors: u32) -> Vec<u8> {
    let mut out = vec![0u8; sectors as usize * SECTOR];
    let (mut sector, mut used) = (0usize, 0usize);
    for r in records {
        if used + r.len() > SECTOR {
            sector += 1;
            used = 0;
        }
        let at = sector * SECTOR + used;
        out[at..at + r.len()].copy_from_slice(r);
        used += r.len();
    }
    out
}

/// SUSP "SP": the system use sharing protocol is in use, no bytes skipped.
fn susp_sp() -> Vec<u8> {
    vec![b'S', b'P', 7, 1, 0xbe, 0xef, 0]
}

/// SUSP "CE": more system use entries at `sector`+`offset`, `len` bytes.
fn susp_ce(sector: u32, offset: u32, len: u32) -> Vec<u8> {
    let mut e = vec![b'C', b'E', 28, 1];
    e.extend(both32(sector));
    e.extend(both32(offset));
    e.extend(both32(len));
    e
}

/// SUSP "ER": Rock Ridge (RRIP 1991A) is the extension in use. Linux's
/// isofs prefers Rock Ridge over Joliet only when it sees this entry.
fn er_entry() -> Vec<u8> {
    let len = 8 + RRIP_ID.len() + RRIP_DES.len() + RRIP_SRC.len();
    let mut e = vec![
        b'E',
        b'R',
        len as u8,
        1,
        RRIP_ID.len() as u8,
        RRIP_DES.len() as u8,
        RRIP_SRC.len() as u8,
        1,
    ];
    e.extend(RRIP_ID);
    e.extend(RRIP_DES);
    e.extend(RRIP_SRC);
    e
}

/// RRIP 1991A "PX": POSIX mode, links, uid 0, gid 0.
fn rrip_px(mode: u32, links: u32) -> Vec<u8> {
    let mut e = vec![b'P', b'X', 36, 1];
    e.extend(both32(mode));
    e.extend(both32(links));
    e.extend(both32(0));
    e.extend(both32(0));
    e
}

/// RRIP "NM": the alternate (POSIX) name, in one piece.
fn rrip_nm(name: &[u8]) -> Vec<u8> {
    let mut e = vec![b'N', b'M', (5 + name.len()) as u8, 1, 0];
    e.extend(name);
    e
}

/// A text field padded with spaces (ASCII) or UCS-2 spaces (Joliet).
fn text_field(s: &str, len: usize, joliet: bool) -> Vec<u8> {
    let mut out = if joliet {
        ucs2(s)
    } else {
        s.as_bytes().to_vec()
    };
    out.truncate(len);
    while out.len() < len {
        if joliet && out.len() + 1 < len {
            out.extend([0, b' ']);
        } else if joliet {
            out.push(0);
        } else {
            out.push(b' ');
        }
    }
    out
}

/// The one point in time an image records everywhere, derived from its
/// content: 1980-01-01 UTC plus (the first 30 bits of a sha256 of the label,
/// names and bytes) seconds, and hundredths from the next byte.
struct Stamp {
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    hundredths: u32,
}

impl Stamp {
    fn of(volume_id: &str, files: &[&(String, Vec<u8>)]) -> Stamp {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(volume_id.as_bytes());
        for (name, data) in files {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((data.len() as u64).to_le_bytes());
            h.update(data);
        }
        let d = h.finalize();
        let offset = u64::from(u32::from_le_bytes([d[0], d[1], d[2], d[3]]) >> 2);
        Stamp::at(STAMP_BASE + offset, u32::from(d[4]) % 100)
    }

    /// UTC civil time of Unix time `t` (Howard Hinnant's days-to-civil).
    fn at(t: u64, hundredths: u32) -> Stamp {
        let days = (t / 86_400) as i64;
        let secs = (t % 86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u32;
        Stamp {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
            hundredths,
        }
    }

    /// Directory record form (§9.1.5): years since 1900, ..., GMT offset 0.
    fn record_date(&self) -> [u8; 7] {
        [
            (self.year - 1900) as u8,
            self.month as u8,
            self.day as u8,
            self.hour as u8,
            self.minute as u8,
            self.second as u8,
            0,
        ]
    }

    /// Volume descriptor form (§8.4.26.1): 16 digits, GMT offset 0.
    fn vd_date(&self) -> Vec<u8> {
        let mut d = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.hundredths
        )
        .into_bytes();
        d.push(0);
        d
    }
}

/// The primary (`joliet = false`) or Joliet supplementary volume descriptor.
fn volume_descriptor(
    joliet: bool,
    volume_id: &str,
    total: u32,
    root: u32,
    root_len: u32,
    stamp: &Stamp,
) -> Vec<u8> {
    let mut d = Vec::with_capacity(SECTOR);
    d.push(if joliet { 2 } else { 1 });
    d.extend(b"CD001");
    d.push(1); // version
    d.push(0); // volume flags (SVD) / unused (PVD)
    d.extend(text_field("", 32, joliet)); // system identifier
    d.extend(text_field(volume_id, 32, joliet));
    d.extend([0u8; 8]);
    d.extend(both32(total));
    let mut escape = [0u8; 32];
    if joliet {
        escape[..3].copy_from_slice(JOLIET_ESCAPE);
    }
    d.extend(escape);
    d.extend(both16(1)); // volume set size
    d.extend(both16(1)); // volume sequence number
    d.extend(both16(SECTOR as u16)); // logical block size
    d.extend(both32(PATH_TABLE_SIZE));
    let (l, m) = if joliet {
        (SVD_L_PATH, SVD_M_PATH)
    } else {
        (PVD_L_PATH, PVD_M_PATH)
    };
    d.extend(l.to_le_bytes());
    d.extend(0u32.to_le_bytes());
    d.extend(m.to_be_bytes());
    d.extend(0u32.to_be_bytes());
    d.extend(dir_record(
        root,
        root_len,
        FLAG_DIRECTORY,
        &[0],
        &[],
        stamp.record_date(),
    ));
    d.extend(text_field("", 128, joliet)); // volume set
    d.extend(text_field("", 128, joliet)); // publisher
    d.extend(text_field("", 128, joliet)); // data preparer
    d.extend(text_field("VIRTFORM", 128, joliet)); // application
    d.extend(text_field("", 37, joliet)); // copyright file
    d.extend(text_field("", 37, joliet)); // abstract file
    d.extend(text_field("", 37, joliet)); // bibliographic file
    d.extend(stamp.vd_date()); // creation
    d.extend(stamp.vd_date()); // modification
    d.extend(VD_DATE_UNSET); // expiration
    d.push(0);
    d.extend(VD_DATE_UNSET); // effective
    d.push(0);
    d.push(1); // file structure version
    debug_assert_eq!(d.len(), 882);
    d.resize(SECTOR, 0);
    d
}

fn terminator() -> Vec<u8> {
    let mut d = vec![255];
    d.extend(b"CD001");
    d.push(1);
    d
}

/// A path table with the root directory only (type L little-endian, type M big-endian).
fn path_table(root: u32, big_endian: bool) -> Vec<u8> {
    let mut t = vec![1, 0];
    if big_endian {
        t.extend(root.to_be_bytes());
        t.extend(1u16.to_be_bytes());
    } else {
        t.extend(root.to_le_bytes());
        t.extend(1u16.to_le_bytes());
    }
    t.extend([0, 0]); // root identifier (0x00) and padding
    t
}

// ---------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------

/// A volume descriptor's label and root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Volume {
    volume_id: String,
    root_extent: u32,
    root_size: u32,
}

/// One file or directory in a root directory, under one name system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoEntry {
    /// The name: the ISO 9660 identifier as recorded (e.g. `META_DAT.;1`),
    /// the Rock Ridge `NM` name, or the Joliet name (a `;1` suffix, when a writer added one, removed).
    pub name: String,
    /// The Rock Ridge `PX` mode (e.g. `0o100444`), when read with Rock Ridge.
    pub mode: Option<u32>,
    pub is_dir: bool,
    /// First sector of the data.
    pub extent: u32,
    /// Size in bytes.
    pub size: u32,
}

/// Reads an image made by [`write_iso`] (or genisoimage/xorriso): labels,
/// the root directory under each name system, file contents.
#[derive(Debug)]
pub struct IsoReader<'a> {
    data: &'a [u8],
    primary: Volume,
    joliet: Option<Volume>,
    volume_space: u32,
}

fn malformed<T>(what: impl Into<String>) -> Result<T, IsoError> {
    Err(IsoError::Malformed(what.into()))
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn trim_text(b: &[u8], joliet: bool) -> String {
    let s = if joliet {
        from_ucs2(b)
    } else {
        String::from_utf8_lossy(b).into_owned()
    };
    s.trim_end_matches([' ', '\0']).to_string()
}

fn from_ucs2(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// A SUSP entry: its signature and its body (after the 4-byte header).
type SuspEntry<'a> = (&'a [u8; 2], &'a [u8]);

/// A parsed directory record (the fields the reader needs).
struct Record<'a> {
    extent: u32,
    size: u32,
    flags: u8,
    ident: &'a [u8],
    system_use: &'a [u8],
}

impl<'a> IsoReader<'a> {
    /// Parses the volume descriptors of `data`.
    pub fn new(data: &'a [u8]) -> Result<IsoReader<'a>, IsoError> {
        let mut primary = None;
        let mut joliet = None;
        let mut volume_space = 0;
        for n in FIRST_VD.. {
            let Some(vd) = data.get(n * SECTOR..(n + 1) * SECTOR) else {
                return malformed("no volume descriptor set terminator");
            };
            if &vd[1..6] != b"CD001" {
                return malformed(format!("sector {n} is not a volume descriptor"));
            }
            match vd[0] {
                1 if primary.is_none() => {
                    volume_space = le32(&vd[80..84]);
                    primary = Some(Self::volume(vd, false)?);
                }
                2 if joliet.is_none()
                    && vd[88] == b'%'
                    && vd[89] == b'/'
                    && matches!(vd[90], b'@' | b'C' | b'E') =>
                {
                    joliet = Some(Self::volume(vd, true)?);
                }
                255 => break,
                _ => {}
            }
        }
        let Some(primary) = primary else {
            return malformed("no primary volume descriptor");
        };
        Ok(IsoReader {
            data,
            primary,
            joliet,
            volume_space,
        })
    }

    fn volume(vd: &[u8], joliet: bool) -> Result<Volume, IsoError> {
        if u16::from_le_bytes([vd[128], vd[129]]) as usize != SECTOR {
            return malformed("logical block size is not 2048");
        }
        let root = &vd[156..190];
        Ok(Volume {
            volume_id: trim_text(&vd[40..72], joliet),
            root_extent: le32(&root[2..6]),
            root_size: le32(&root[10..14]),
        })
    }

    /// The primary volume descriptor's volume id (trailing blanks removed).
    pub fn volume_id(&self) -> &str {
        &self.primary.volume_id
    }

    /// The Joliet descriptor's volume id, when the image has Joliet.
    pub fn joliet_volume_id(&self) -> Option<&str> {
        self.joliet.as_ref().map(|v| v.volume_id.as_str())
    }

    /// The volume space size in sectors, as recorded.
    pub fn volume_space(&self) -> u32 {
        self.volume_space
    }

    fn extent(&self, extent: u32, size: u32) -> Result<&'a [u8], IsoError> {
        let start = extent as usize * SECTOR;
        let end = start.saturating_add(size as usize);
        match self.data.get(start..end) {
            Some(b) => Ok(b),
            None => malformed(format!(
                "extent at sector {extent} ({size} bytes) lies outside the image"
            )),
        }
    }

    fn records(&self, volume: &Volume) -> Result<Vec<Record<'a>>, IsoError> {
        let dir = self.extent(volume.root_extent, volume.root_size)?;
        let mut out = Vec::new();
        let mut at = 0usize;
        while at < dir.len() {
            let len = dir[at] as usize;
            if len == 0 {
                at = (at / SECTOR + 1) * SECTOR; // rest of the sector is padding
                continue;
            }
            let Some(r) = dir.get(at..at + len) else {
                return malformed("directory record runs past its directory");
            };
            if len < 34 || 33 + r[32] as usize > len {
                return malformed("directory record too short");
            }
            let ident_len = r[32] as usize;
            let su_start = 33 + ident_len + usize::from(ident_len.is_multiple_of(2));
            out.push(Record {
                extent: le32(&r[2..6]),
                size: le32(&r[10..14]),
                flags: r[25],
                ident: &r[33..33 + ident_len],
                system_use: r.get(su_start..).unwrap_or(&[]),
            });
            at += len;
        }
        Ok(out)
    }

    /// SUSP entries of a system use area, following `CE` continuations.
    fn susp_entries(&self, system_use: &'a [u8]) -> Result<Vec<SuspEntry<'a>>, IsoError> {
        let mut out = Vec::new();
        let mut area = system_use;
        let mut hops = 0;
        loop {
            let mut next = None;
            let mut at = 0usize;
            while at + 4 <= area.len() {
                let len = area[at + 2] as usize;
                if len < 4 || at + len > area.len() {
                    break;
                }
                let sig: &[u8; 2] = area[at..at + 2].try_into().unwrap_or(&[0, 0]);
                let body = &area[at + 4..at + len];
                match sig {
                    b"CE" if body.len() >= 24 => {
                        next = Some((le32(&body[0..4]), le32(&body[8..12]), le32(&body[16..20])))
                    }
                    b"ST" => break,
                    _ => out.push((sig, body)),
                }
                at += len;
            }
            let Some((sector, offset, len)) = next else {
                break;
            };
            hops += 1;
            if hops > 16 {
                return malformed("too many SUSP continuation areas");
            }
            let start = sector as usize * SECTOR + offset as usize;
            area = match self.data.get(start..start + len as usize) {
                Some(a) => a,
                None => return malformed("SUSP continuation area outside the image"),
            };
        }
        Ok(out)
    }

    /// Whether the root directory announces Rock Ridge (`SP` in its `.`
    /// record, an `ER` entry naming RRIP).
    pub fn has_rock_ridge(&self) -> Result<bool, IsoError> {
        let records = self.records(&self.primary)?;
        let Some(dot) = records.first() else {
            return Ok(false);
        };
        let entries = self.susp_entries(dot.system_use)?;
        let sp = entries
            .first()
            .is_some_and(|(sig, body)| *sig == b"SP" && body.starts_with(&[0xbe, 0xef]));
        let er = entries.iter().any(|(sig, body)| {
            *sig == b"ER"
                && body.len() >= 4
                && body.get(4..4 + body[0] as usize).is_some_and(|id| {
                    id == b"RRIP_1991A" || id == b"IEEE_P1282" || id == b"IEEE_1282"
                })
        });
        Ok(sp && er)
    }

    fn entries_of(&self, volume: &Volume, mode: Names) -> Result<Vec<IsoEntry>, IsoError> {
        let mut out = Vec::new();
        for r in self.records(volume)? {
            if r.ident == [0] || r.ident == [1] {
                continue;
            }
            let is_dir = r.flags & FLAG_DIRECTORY != 0;
            let (name, mode) = match mode {
                Names::Iso => (String::from_utf8_lossy(r.ident).into_owned(), None),
                Names::Joliet => {
                    let mut n = from_ucs2(r.ident);
                    if n.ends_with(";1") {
                        n.truncate(n.len() - 2);
                    }
                    (n, None)
                }
                Names::RockRidge => {
                    let mut name: Option<Vec<u8>> = None;
                    let mut px = None;
                    for (sig, body) in self.susp_entries(r.system_use)? {
                        match sig {
                            b"NM" if !body.is_empty() => {
                                name.get_or_insert_with(Vec::new).extend(&body[1..])
                            }
                            b"PX" if body.len() >= 4 => px = Some(le32(&body[0..4])),
                            _ => {}
                        }
                    }
                    match name {
                        Some(n) => (String::from_utf8_lossy(&n).into_owned(), px),
                        None => return malformed("a directory record has no Rock Ridge NM entry"),
                    }
                }
            };
            out.push(IsoEntry {
                name,
                mode,
                is_dir,
                extent: r.extent,
                size: r.size,
            });
        }
        Ok(out)
    }

    /// The root directory with plain ISO 9660 identifiers (`META_DAT.;1`).
    pub fn iso_entries(&self) -> Result<Vec<IsoEntry>, IsoError> {
        self.entries_of(&self.primary, Names::Iso)
    }

    /// The root directory with Rock Ridge names and modes.
    pub fn rock_ridge_entries(&self) -> Result<Vec<IsoEntry>, IsoError> {
        if !self.has_rock_ridge()? {
            return malformed("no Rock Ridge extensions");
        }
        self.entries_of(&self.primary, Names::RockRidge)
    }

    /// The root directory with Joliet names.
    pub fn joliet_entries(&self) -> Result<Vec<IsoEntry>, IsoError> {
        match &self.joliet {
            Some(v) => self.entries_of(v, Names::Joliet),
            None => malformed("no Joliet volume descriptor"),
        }
    }

    /// The contents of a file.
    pub fn contents(&self, entry: &IsoEntry) -> Result<&'a [u8], IsoError> {
        if entry.size == 0 {
            return Ok(&[]);
        }
        self.extent(entry.extent, entry.size)
    }

    /// The contents of the file with this Rock Ridge name.
    pub fn read_file(&self, name: &str) -> Result<&'a [u8], IsoError> {
        let entries = self.rock_ridge_entries()?;
        match entries.iter().find(|e| e.name == name && !e.is_dir) {
            Some(e) => self.contents(e),
            None => Err(IsoError::NotFound(name.to_string())),
        }
    }
}

#[derive(Clone, Copy)]
enum Names {
    Iso,
    RockRidge,
    Joliet,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, c)| (n.to_string(), c.as_bytes().to_vec()))
            .collect()
    }

    fn seed() -> Vec<(String, Vec<u8>)> {
        files(&[
            ("user-data", "#cloud-config\n{}\n"),
            ("meta-data", "instance-id: iid-1\nlocal-hostname: web\n"),
            ("network-config", "version: 2\n"),
        ])
    }

    fn names(entries: &[IsoEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn round_trip_labels_names_and_contents() {
        let img = write_iso("cidata", &seed()).unwrap();
        assert_eq!(img.len() % SECTOR, 0);
        let r = IsoReader::new(&img).unwrap();
        assert_eq!(r.volume_id(), "cidata");
        assert_eq!(r.joliet_volume_id(), Some("cidata"));
        assert_eq!(r.volume_space() as usize * SECTOR, img.len());
        assert!(r.has_rock_ridge().unwrap());

        let rr = r.rock_ridge_entries().unwrap();
        assert_eq!(names(&rr), ["meta-data", "network-config", "user-data"]);
        assert!(rr.iter().all(|e| e.mode == Some(0o100444) && !e.is_dir));
        let joliet = r.joliet_entries().unwrap();
        assert_eq!(names(&joliet), ["meta-data", "network-config", "user-data"]);
        let iso = r.iso_entries().unwrap();
        assert_eq!(names(&iso), ["META_DAT.;1", "NETWORK_.;1", "USER_DAT.;1"]);

        for (name, data) in seed() {
            assert_eq!(r.read_file(&name).unwrap(), &data[..], "{name}");
            let j = joliet.iter().find(|e| e.name == name).unwrap();
            assert_eq!(r.contents(j).unwrap(), &data[..], "{name} via Joliet");
        }
        // both name systems point at the same data
        for e in &rr {
            let j = joliet.iter().find(|j| j.name == e.name).unwrap();
            assert_eq!((e.extent, e.size), (j.extent, j.size));
        }
        assert_eq!(r.read_file("nope"), Err(IsoError::NotFound("nope".into())));
    }

    #[test]
    fn deterministic_and_order_independent() {
        let a = write_iso("cidata", &seed()).unwrap();
        let mut reversed = seed();
        reversed.reverse();
        let b = write_iso("cidata", &reversed).unwrap();
        assert_eq!(a, b);
        let c = write_iso(
            "cidata",
            &files(&[("user-data", "#cloud-config\n{}\n"), ("meta-data", "x")]),
        )
        .unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn layout_matches_the_spec() {
        let img = write_iso("cidata", &seed()).unwrap();
        assert!(
            img[..16 * SECTOR].iter().all(|&b| b == 0),
            "system area is zero"
        );
        let pvd = &img[16 * SECTOR..17 * SECTOR];
        assert_eq!(&pvd[..7], b"\x01CD001\x01");
        assert_eq!(&pvd[40..72], format!("{:32}", "cidata").as_bytes());
        let created = &pvd[813..830];
        assert!(created[..16].iter().all(u8::is_ascii_digit) && created[16] == 0);
        assert!(
            created.starts_with(b"20"),
            "{}",
            String::from_utf8_lossy(created)
        );
        assert_eq!(&pvd[830..847], created, "modified = created");
        assert_eq!(&pvd[847..864], b"0000000000000000\0");
        assert_eq!(&img[17 * SECTOR + 813..17 * SECTOR + 830], created);
        let svd = &img[17 * SECTOR..18 * SECTOR];
        assert_eq!(&svd[..7], b"\x02CD001\x01");
        assert_eq!(&svd[88..91], b"%/E");
        assert_eq!(&svd[40..52], &ucs2("cidata")[..]);
        assert_eq!(&img[18 * SECTOR..18 * SECTOR + 7], b"\xffCD001\x01");
        // both-endian fields agree
        assert_eq!(&pvd[80..84], &[pvd[87], pvd[86], pvd[85], pvd[84]]);
        // L and M path tables name the same root
        let l = le32(&img[19 * SECTOR + 2..]);
        let m = u32::from_be_bytes(img[20 * SECTOR + 2..20 * SECTOR + 6].try_into().unwrap());
        assert_eq!(l, m);
        assert_eq!(l, le32(&pvd[158..162]));
        // file data starts on sector boundaries, padded with zeros
        let r = IsoReader::new(&img).unwrap();
        for e in r.rock_ridge_entries().unwrap() {
            let end = e.extent as usize * SECTOR + e.size as usize;
            assert!(
                img[end..(end / SECTOR + 1) * SECTOR]
                    .iter()
                    .all(|&b| b == 0)
            );
        }
    }

    #[test]
    fn stamps_are_civil_utc_and_follow_the_content() {
        let f = |t| {
            let s = Stamp::at(t, 7);
            String::from_utf8(s.vd_date()[..16].to_vec()).unwrap()
        };
        assert_eq!(f(946_684_800), "2000010100000007");
        assert_eq!(f(951_782_400 + 3661), "2000022901010107");
        assert_eq!(f(1_700_000_000), "2023111422132007");
        assert_eq!(f(STAMP_BASE + (1 << 30) - 1), "2014010913370307");
        assert_eq!(
            Stamp::at(1_700_000_000, 0).record_date(),
            [123, 11, 14, 22, 13, 20, 0]
        );
        let pvd_date = |img: &[u8]| img[16 * SECTOR + 813..16 * SECTOR + 830].to_vec();
        let a = write_iso("cidata", &seed()).unwrap();
        let b = write_iso("cidata", &files(&[("meta-data", "instance-id: other\n")])).unwrap();
        assert_ne!(
            pvd_date(&a),
            pvd_date(&b),
            "different seeds, different volume UUIDs"
        );
    }

    #[test]
    fn rejects_bad_names_and_ids() {
        let one = |n: &str| write_iso("cidata", &files(&[(n, "x")]));
        for bad in ["", ".", "..", "a/b", "a b", "ü", "x;1", &"a".repeat(65)] {
            assert!(
                matches!(one(bad), Err(IsoError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(one(&"a".repeat(64)).is_ok());
        assert!(matches!(
            write_iso("cidata", &files(&[("meta-data", "a"), ("META-DATA", "b")])),
            Err(IsoError::DuplicateName { .. })
        ));
        assert!(matches!(
            write_iso("cidata", &files(&[("a", "a"), ("a", "b")])),
            Err(IsoError::DuplicateName { .. })
        ));
        for bad in ["", "ci data", "x".repeat(17).as_str()] {
            assert!(
                matches!(write_iso(bad, &[]), Err(IsoError::InvalidVolumeId { .. })),
                "{bad:?}"
            );
        }
        // messages name the file, nothing else
        let e = one("a b").unwrap_err().to_string();
        assert!(e.contains("\"a b\""), "{e}");
    }

    #[test]
    fn level1_names_are_unique_and_valid() {
        let many: Vec<(String, Vec<u8>)> = (0..30)
            .map(|i| (format!("meta-data-{i:02}"), vec![i as u8; i]))
            .collect();
        let img = write_iso("cidata", &many).unwrap();
        let r = IsoReader::new(&img).unwrap();
        let iso = r.iso_entries().unwrap();
        let set: HashSet<&str> = names(&iso).into_iter().collect();
        assert_eq!(set.len(), 30);
        for n in &set {
            let (base, rest) = n.split_once('.').unwrap();
            assert!(
                base.len() <= 8 && rest.len() <= 5 && rest.ends_with(";1"),
                "{n}"
            );
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"_.;".contains(&b)),
                "{n}"
            );
        }
        // records are sorted by identifier
        let sorted = {
            let mut v = iso.clone();
            v.sort_by(|a, b| identifier_order(a.name.as_bytes(), b.name.as_bytes(), 1));
            v
        };
        assert_eq!(iso, sorted);
        for (name, data) in &many {
            assert_eq!(r.read_file(name).unwrap(), &data[..]);
        }
        assert_eq!(
            level1_names(["a.tar.gz", "noext", ".hidden"].into_iter()),
            ["A_TAR.GZ;1", "NOEXT.;1", ".HID;1"]
        );
    }

    #[test]
    fn many_and_large_files_span_sectors() {
        // enough records to need several directory sectors, one file of 3 MiB
        let mut list: Vec<(String, Vec<u8>)> = (0..60)
            .map(|i| {
                (
                    format!("file-with-a-rather-long-name-number-{i:03}"),
                    format!("{i}\n").into_bytes(),
                )
            })
            .collect();
        let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        list.push(("big".into(), big.clone()));
        list.push(("empty".into(), Vec::new()));
        let img = write_iso("cidata", &list).unwrap();
        let r = IsoReader::new(&img).unwrap();
        let rr = r.rock_ridge_entries().unwrap();
        let jo = r.joliet_entries().unwrap();
        assert_eq!(rr.len(), 62);
        assert_eq!(jo.len(), 62);
        assert_eq!(r.read_file("big").unwrap(), &big[..]);
        assert_eq!(r.read_file("empty").unwrap(), b"");
        for (name, data) in &list {
            assert_eq!(r.read_file(name).unwrap(), &data[..]);
            let j = jo.iter().find(|e| &e.name == name).unwrap();
            assert_eq!(r.contents(j).unwrap(), &data[..]);
        }
    }

    #[test]
    fn empty_image_is_valid() {
        let img = write_iso("cidata", &[]).unwrap();
        let r = IsoReader::new(&img).unwrap();
        assert!(r.rock_ridge_entries().unwrap().is_empty());
        assert!(r.joliet_entries().unwrap().is_empty());
    }

    #[test]
    fn reader_never_panics_on_garbage() {
        let img = write_iso("cidata", &seed()).unwrap();
        assert!(IsoReader::new(&[]).is_err());
        assert!(IsoReader::new(&img[..17 * SECTOR]).is_err());
        // flip bytes all over the metadata area and truncate: errors, never panics
        for at in (16 * SECTOR..img.len().min(30 * SECTOR)).step_by(7) {
            let mut bad = img.clone();
            bad[at] ^= 0xff;
            if let Ok(r) = IsoReader::new(&bad) {
                let _ = r
                    .rock_ridge_entries()
                    .map(|es| es.iter().filter(|e| r.contents(e).is_ok()).count());
                let _ = r.joliet_entries();
                let _ = r.iso_entries();
            }
        }
        for len in [16 * SECTOR + 100, 19 * SECTOR, 25 * SECTOR, img.len() - 1] {
            if let Ok(r) = IsoReader::new(&img[..len]) {
                let _ = r
                    .rock_ridge_entries()
                    .map(|es| es.iter().filter(|e| r.contents(e).is_ok()).count());
                let _ = r.joliet_entries();
            }
        }
    }
}
