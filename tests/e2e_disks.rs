//! Real-host tests of the disks adapter (`virtform::host::disks`): the image
//! cache (local and http sources, verification, Nova's base-image rules,
//! concurrent fetches), qcow2 overlays, blank disks, resizing, swap and
//! filesystems, and path containment.
//!
//! Needs `qemu-img`, `curl`, `python3`, `mkswap`, `mkfs.ext4`, `blkid` and the
//! test guest image `$VIRTFORM_ASSETS/tiny.qcow2` (default
//! /var/lib/virtform/assets, built by scripts/build-guest); `scripts/test`
//! provides them. When the image is missing these tests FAIL saying so; they
//! never skip. Everything happens in temporary directories that are removed
//! at the end; the only process started (the http server) is killed by its
//! PID when its guard drops.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use virtform::host::disks::{self, CachedImage, ImageInfo};
use virtform::model::disk::{DiskFormat, Filesystem};
use virtform::model::image::ImageFormat;

const HINT: &str = "run scripts/test (it runs scripts/host-setup and scripts/build-guest first)";
const MIB: u64 = 1 << 20;

/// The test guest image and its sha256 (from the SHA256SUMS next to it).
fn tiny() -> (PathBuf, String) {
    let dir = PathBuf::from(std::env::var("VIRTFORM_ASSETS").unwrap_or_else(|_| "/var/lib/virtform/assets".into()));
    let img = dir.join("tiny.qcow2");
    assert!(img.is_file(), "the test guest image {} is missing: {HINT}", img.display());
    let sums = fs::read_to_string(dir.join("SHA256SUMS")).unwrap_or_else(|e| panic!("{}/SHA256SUMS: {e}: {HINT}", dir.display()));
    let sha = sums
        .lines()
        .find_map(|l| l.strip_suffix("  tiny.qcow2").or_else(|| l.strip_suffix(" *tiny.qcow2")))
        .unwrap_or_else(|| panic!("tiny.qcow2 is not listed in {}/SHA256SUMS: {HINT}", dir.display()))
        .to_string();
    (img, sha)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn must(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}: {HINT}"));
    assert!(out.status.success(), "`{program} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qemu_info(p: &Path) -> serde_json::Value {
    serde_json::from_str(&must("qemu-img", &["info", "--output=json", s(p)])).unwrap()
}

/// Names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir).map(|r| r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    v.sort();
    v
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The cache holds exactly `expected` (besides `.sources.json`, the index
/// of local sources' hashes).
fn assert_clean_cache(cache: &Path, expected: &[&str]) {
    let held: Vec<String> = names(cache).into_iter().filter(|n| n != ".sources.json").collect();
    assert_eq!(held, expected.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "cache dir {} holds leftovers", cache.display());
}

#[test]
fn fetch_local_image_then_hit() {
    let (img, sha) = tiny();
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("state/images");

    let t = Instant::now();
    let first = disks::fetch_image(&cache, s(&img), Some(&sha), ImageFormat::Qcow2).unwrap();
    let t_first = t.elapsed();
    assert!(first.fetched);
    assert_eq!(first.path, cache.join(&sha));
    assert_eq!(first.sha256, sha);
    assert_eq!(first.info.format, ImageFormat::Qcow2);
    assert_eq!(first.info.virtual_size, 64 * MIB);
    assert_eq!(first.info.backing_file, None);
    assert_eq!(fs::read(&first.path).unwrap(), fs::read(&img).unwrap());
    assert_eq!(mode(&first.path), 0o644);
    assert_eq!(mode(&cache), 0o711);
    assert_eq!(mode(&d.path().join("state")), 0o711);
    assert_clean_cache(&cache, &[&sha]);

    let t = Instant::now();
    let second = disks::fetch_image(&cache, s(&img), Some(&sha), ImageFormat::Qcow2).unwrap();
    let t_hit = t.elapsed();
    assert!(!second.fetched, "the second fetch must be a cache hit");
    assert_eq!(second.path, first.path);
    assert_eq!(second.info, first.info);
    eprintln!("fetch of tiny.qcow2: {t_first:?} (copy + hash), hit: {t_hit:?}");

    // Upper-case digests are the same image.
    assert!(!disks::fetch_image(&cache, s(&img), Some(&sha.to_uppercase()), ImageFormat::Qcow2).unwrap().fetched);
    // Without a declared sha the source is hashed and found in the cache.
    let third = disks::fetch_image(&cache, s(&img), None, ImageFormat::Qcow2).unwrap();
    assert!(!third.fetched);
    assert_eq!(third.sha256, sha);
    // Re-hashing on request.
    let verified = disks::fetch_image_with(&cache, s(&img), Some(&sha), ImageFormat::Qcow2, &disks::FetchOptions { verify_cached: true }).unwrap();
    assert!(!verified.fetched);
    // The same content declared with the wrong format is refused even on a hit.
    let e = disks::fetch_image(&cache, s(&img), Some(&sha), ImageFormat::Raw).unwrap_err();
    assert!(e.message.contains("declared raw but the file is a qcow2 image"), "{e}");
    assert_clean_cache(&cache, &[&sha]);

    // With a declared sha256 a hit does not need the source any more.
    assert!(!disks::fetch_image(&cache, "/nonexistent/tiny.qcow2", Some(&sha), ImageFormat::Qcow2).unwrap().fetched);
    let e = disks::fetch_image(&cache, "/nonexistent/tiny.qcow2", None, ImageFormat::Qcow2).unwrap_err();
    assert_eq!(e.message, "does not exist");
}

#[test]
fn fetch_without_sha_and_damaged_cache_entries() {
    let (img, sha) = tiny();
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("images");
    let got = disks::fetch_image(&cache, s(&img), None, ImageFormat::Qcow2).unwrap();
    assert!(got.fetched);
    assert_eq!(got.sha256, sha);

    // A damaged entry (truncated by hand) is fetched again, not trusted.
    let bytes = fs::read(&got.path).unwrap();
    fs::remove_file(&got.path).unwrap();
    fs::write(&got.path, &bytes[..4096]).unwrap();
    let again = disks::fetch_image(&cache, s(&img), Some(&sha), ImageFormat::Qcow2).unwrap();
    assert!(again.fetched, "a truncated cache entry must be fetched again");
    assert_eq!(fs::read(&again.path).unwrap(), bytes);

    // Same length, different content: only verify_cached notices.
    let mut evil = bytes.clone();
    let n = evil.len();
    evil[n - 1] ^= 0xff;
    fs::remove_file(&got.path).unwrap();
    fs::write(&got.path, &evil).unwrap();
    assert!(!disks::fetch_image(&cache, s(&img), Some(&sha), ImageFormat::Qcow2).unwrap().fetched);
    let v = disks::fetch_image_with(&cache, s(&img), Some(&sha), ImageFormat::Qcow2, &disks::FetchOptions { verify_cached: true }).unwrap();
    assert!(v.fetched);
    assert_eq!(disks::hash_file(&v.path).unwrap(), sha);

    // A stale .part and lock file left by a killed fetch do not get in the way.
    fs::remove_file(&got.path).unwrap();
    fs::write(cache.join(format!(".{sha}.part")), b"half a download").unwrap();
    fs::write(cache.join(format!(".{sha}.lock")), b"").unwrap();
    assert!(disks::fetch_image(&cache, s(&img), Some(&sha), ImageFormat::Qcow2).unwrap().fetched);
    assert_clean_cache(&cache, &[&sha]);
}

#[test]
fn sha_mismatch_leaves_nothing() {
    let (img, sha) = tiny();
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("images");
    let wrong = "0".repeat(64);
    let e = disks::fetch_image(&cache, s(&img), Some(&wrong), ImageFormat::Qcow2).unwrap_err();
    assert!(e.message.contains(&format!("expected {wrong}")) && e.message.contains(&format!("got {sha}")), "{e}");
    assert_eq!(e.object, s(&img));
    assert!(e.hint.as_deref().unwrap_or("").contains("sha256"), "{e}");
    assert_clean_cache(&cache, &[]);
    let e = disks::fetch_image(&cache, s(&img), Some("abc"), ImageFormat::Qcow2).unwrap_err();
    assert!(e.message.contains("not a SHA-256 digest"), "{e}");
}

#[test]
fn unsafe_or_mismatched_images_are_refused() {
    let (img, _) = tiny();
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("images");
    let src = d.path().join("src");
    fs::create_dir(&src).unwrap();

    // A qcow2 with a backing file (here: the real test image).
    let ov = src.join("overlay.qcow2");
    must("qemu-img", &["create", "-q", "-f", "qcow2", "-b", s(&img), "-F", "qcow2", s(&ov)]);
    let e = disks::fetch_image(&cache, s(&ov), None, ImageFormat::Qcow2).unwrap_err();
    assert!(e.message.contains("has a backing file") && e.message.contains(s(&img)), "{e}");
    assert!(e.hint.as_deref().unwrap().contains("qemu-img convert"), "{e}");

    // A qcow2 pointing at a host file as its external data file.
    let df = src.join("datafile.qcow2");
    must("qemu-img", &["create", "-q", "-f", "qcow2", "-o", &format!("data_file={},data_file_raw=on", s(&src.join("host-file"))), s(&df), "1M"]);
    let e = disks::fetch_image(&cache, s(&df), None, ImageFormat::Qcow2).unwrap_err();
    assert!(e.message.contains("external data file") && e.message.contains("host-file"), "{e}");

    // A raw file declared qcow2, and a qcow2 declared raw.
    let raw = src.join("disk.raw");
    must("qemu-img", &["convert", "-q", "-f", "qcow2", "-O", "raw", s(&img), s(&raw)]);
    let e = disks::fetch_image(&cache, s(&raw), None, ImageFormat::Qcow2).unwrap_err();
    assert_eq!(e.message, "declared qcow2 but the file is a raw image");
    assert!(e.hint.as_deref().unwrap().contains("format = \"raw\""), "{e}");
    let e = disks::fetch_image(&cache, s(&img), None, ImageFormat::Raw).unwrap_err();
    assert_eq!(e.message, "declared raw but the file is a qcow2 image");
    // ...while the raw file declared raw is fine, and stays sparse.
    let ok = disks::fetch_image(&cache, s(&raw), None, ImageFormat::Raw).unwrap();
    assert!(ok.fetched);
    assert_eq!(ok.info.virtual_size, 64 * MIB);
    assert!(ok.info.allocated < 16 * MIB, "raw copy is not sparse: {} bytes allocated", ok.info.allocated);
    assert_clean_cache(&cache, &[&ok.sha256]);

    // Unreadable sources name the path and the problem.
    let e = disks::fetch_image(&cache, s(&src.join("missing.qcow2")), None, ImageFormat::Qcow2).unwrap_err();
    assert_eq!((e.object.as_str(), e.message.as_str()), (s(&src.join("missing.qcow2")), "does not exist"));
    let e = disks::fetch_image(&cache, s(&src), None, ImageFormat::Qcow2).unwrap_err();
    assert!(e.message.contains("is a directory"), "{e}");
    let e = disks::fetch_image(&cache, "relative/x.qcow2", None, ImageFormat::Qcow2).unwrap_err();
    assert!(e.message.contains("not an absolute path"), "{e}");
}

#[test]
fn concurrent_fetches_fetch_once() {
    let (img, sha) = tiny();
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("images");
    let n = 6;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, cache, img, sha) = (barrier.clone(), cache.clone(), img.clone(), sha.clone());
            std::thread::spawn(move || -> CachedImage {
                barrier.wait();
                // Half declare the sha, half let it be computed: both lock on the sha.
                let declared = (i % 2 == 0).then_some(sha.as_str());
                disks::fetch_image(&cache, s(&img), declared, ImageFormat::Qcow2).unwrap()
            })
        })
        .collect();
    let results: Vec<CachedImage> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.fetched).count(), 1, "exactly one thread fetches: {results:#?}");
    assert!(results.iter().all(|r| r.path == cache.join(&sha)));
    assert_clean_cache(&cache, &[&sha]);
    assert_eq!(disks::hash_file(&cache.join(&sha)).unwrap(), sha);
}

/// Kills a child process by its PID on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn fetch_waits_for_another_process_holding_the_image_lock() {
    let (img, sha) = tiny();
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("images");
    fs::create_dir(&cache).unwrap();
    let lock = cache.join(format!(".{sha}.lock"));
    // flock(1) holds the image's lock for 1.5 s, as another virtform would.
    let holder = KillOnDrop(Command::new("flock").args([s(&lock), "sleep", "1.5"]).spawn().unwrap_or_else(|e| panic!("cannot run flock: {e}: {HINT}")));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = fs::File::open(&lock).map(|f| matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock))).unwrap_or(false);
        if held {
            break;
        }
        assert!(Instant::now() < deadline, "flock did not take {}", lock.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    let got = disks::fetch_image(&cache, s(&img), Some(&sha), ImageFormat::Qcow2).unwrap();
    let waited = t.elapsed();
    assert!(got.fetched);
    assert!(waited >= Duration::from_millis(800), "the fetch did not wait for the lock holder ({waited:?})");
    drop(holder);
    assert_clean_cache(&cache, &[&sha]);
}

#[test]
fn overlays_grow_and_never_shrink() {
    let (img, sha) = tiny();
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let base = disks::fetch_image(&state.join("images"), s(&img), Some(&sha), ImageFormat::Qcow2).unwrap();

    let root = disks::state_path(&state, Path::new("demo/disks/root.qcow2")).unwrap();
    disks::create_overlay(&root, &base.path, ImageFormat::Qcow2, Some(128 * MIB)).unwrap();
    let q = qemu_info(&root);
    assert_eq!(q["backing-filename"].as_str(), Some(s(&base.path)));
    assert_eq!(q["backing-filename-format"].as_str(), Some("qcow2"));
    assert_eq!(q["virtual-size"].as_u64(), Some(128 * MIB));
    must("qemu-img", &["check", "-q", "-f", "qcow2", s(&root)]);
    assert_eq!(mode(&root), 0o600);
    assert_eq!(mode(&state.join("demo")), 0o711);
    assert_eq!(mode(&state.join("demo/disks")), 0o711);
    let info: ImageInfo = disks::inspect(&root).unwrap();
    assert_eq!(info.backing_file.as_deref(), Some(s(&base.path)));
    assert_eq!(info.virtual_size, 128 * MIB);
    // Idempotent: the same overlay again is fine; a different one is a conflict.
    disks::create_overlay(&root, &base.path, ImageFormat::Qcow2, Some(128 * MIB)).unwrap();
    let e = disks::create_overlay(&root, &base.path, ImageFormat::Qcow2, Some(256 * MIB)).unwrap_err();
    assert!(e.message.contains("already exists"), "{e}");

    // No size: the base's size.
    let same = disks::state_path(&state, Path::new("demo/disks/same.qcow2")).unwrap();
    disks::create_overlay(&same, &base.path, ImageFormat::Qcow2, None).unwrap();
    assert_eq!(qemu_info(&same)["virtual-size"].as_u64(), Some(64 * MIB));

    // Smaller than the image: refused, nothing created.
    let small = disks::state_path(&state, Path::new("demo/disks/small.qcow2")).unwrap();
    let e = disks::create_overlay(&small, &base.path, ImageFormat::Qcow2, Some(32 * MIB)).unwrap_err();
    assert!(e.message.contains("smaller than the image's virtual size"), "{e}");
    assert!(e.hint.as_deref().unwrap().contains(&(64 * MIB).to_string()), "{e}");
    // The wrong base format is refused before qemu-img runs.
    let e = disks::create_overlay(&small, &base.path, ImageFormat::Raw, None).unwrap_err();
    assert!(e.message.contains("declared raw"), "{e}");
    assert_eq!(names(&state.join("demo/disks")), ["root.qcow2", "same.qcow2"]);

    // Resize grows; shrinking is refused; the same size is a no-op.
    disks::resize(&root, 256 * MIB).unwrap();
    assert_eq!(qemu_info(&root)["virtual-size"].as_u64(), Some(256 * MIB));
    assert_eq!(qemu_info(&root)["backing-filename"].as_str(), Some(s(&base.path)));
    let e = disks::resize(&root, 100 * MIB).unwrap_err();
    assert!(e.message.contains("cannot shrink from 268435456 to 104857600 bytes"), "{e}");
    disks::resize(&root, 256 * MIB).unwrap();
    assert_eq!(qemu_info(&root)["virtual-size"].as_u64(), Some(256 * MIB));

    // Remove is idempotent and leaves the base alone.
    disks::remove(&root).unwrap();
    disks::remove(&root).unwrap();
    disks::remove(&same).unwrap();
    assert_eq!(names(&state.join("demo/disks")), Vec::<String>::new());
    assert_eq!(disks::hash_file(&base.path).unwrap(), sha);
}

#[test]
fn blank_disks_swap_and_filesystems() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let p = |rel: &str| disks::state_path(&state, Path::new(rel)).unwrap();
    let blkid = |f: &Path| must("blkid", &["-o", "export", s(f)]);

    // Raw ext4, formatted in place.
    let raw = p("demo/disks/data.raw");
    disks::create_blank(&raw, DiskFormat::Raw, 64 * MIB).unwrap();
    disks::create_blank(&raw, DiskFormat::Raw, 64 * MIB).unwrap(); // idempotent
    assert_eq!(fs::metadata(&raw).unwrap().len(), 64 * MIB);
    assert_eq!(mode(&raw), 0o600);
    disks::format_filesystem(&raw, Filesystem::Ext4, Some("scratch")).unwrap();
    let b = fs::read(&raw).unwrap();
    assert_eq!(&b[1080..1082], &[0x53, 0xef], "ext2/3/4 superblock magic");
    assert_eq!(&b[1144..1151], b"scratch", "volume name in the superblock");
    let id = blkid(&raw);
    assert!(id.contains("TYPE=ext4") && id.contains("LABEL=scratch"), "{id}");

    // qcow2 swap: formatted as a raw temporary and converted into place.
    let swap = p("demo/disks/swap.qcow2");
    disks::create_blank(&swap, DiskFormat::Qcow2, 32 * MIB).unwrap();
    disks::format_swap(&swap, Some("swap0")).unwrap();
    let info = disks::inspect(&swap).unwrap();
    assert_eq!((info.format, info.virtual_size, info.backing_file), (ImageFormat::Qcow2, 32 * MIB, None));
    assert_eq!(mode(&swap), 0o600);
    let flat = d.path().join("flat.raw");
    must("qemu-img", &["convert", "-f", "qcow2", "-O", "raw", s(&swap), s(&flat)]);
    let b = fs::read(&flat).unwrap();
    assert_eq!(&b[4096 - 10..4096], b"SWAPSPACE2", "swap signature at the end of the first page");
    let id = blkid(&flat);
    assert!(id.contains("TYPE=swap") && id.contains("LABEL=swap0"), "{id}");

    // qcow2 ext4.
    let fsq = p("demo/disks/fs.qcow2");
    disks::create_blank(&fsq, DiskFormat::Qcow2, 64 * MIB).unwrap();
    disks::format_filesystem(&fsq, Filesystem::Ext4, None).unwrap();
    fs::remove_file(&flat).unwrap();
    must("qemu-img", &["convert", "-f", "qcow2", "-O", "raw", s(&fsq), s(&flat)]);
    assert!(blkid(&flat).contains("TYPE=ext4"));
    assert_eq!(disks::inspect(&fsq).unwrap().virtual_size, 64 * MIB);

    // A different blank disk at the same path is a conflict; remove cleans up.
    let e = disks::create_blank(&swap, DiskFormat::Qcow2, 64 * MIB).unwrap_err();
    assert!(e.message.contains("already exists"), "{e}");
    for f in [&raw, &swap, &fsq] {
        disks::remove(f).unwrap();
    }
    assert_eq!(names(&state.join("demo/disks")), Vec::<String>::new());
}

#[test]
fn state_paths_stay_under_the_root() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    fs::create_dir_all(state.join("demo")).unwrap();
    for bad in ["../x", "demo/../../x", "/etc/passwd"] {
        let e = disks::state_path(&state, Path::new(bad)).unwrap_err();
        assert!(e.to_string().contains(bad), "{e}");
    }
    std::os::unix::fs::symlink("/", state.join("demo/escape")).unwrap();
    let e = disks::state_path(&state, Path::new("demo/escape/etc/passwd")).unwrap_err();
    assert!(e.message.contains("outside the state dir"), "{e}");
    assert_eq!(disks::state_path(&state, Path::new("demo/disks/a.qcow2")).unwrap(), state.join("demo/disks/a.qcow2"));
}

/// A `python3 -m http.server` child, killed by its PID on drop.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start(dir: &Path) -> HttpServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
        let child = Command::new(python)
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory", s(dir), &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python} -m http.server: {e}: {HINT}"));
        let server = HttpServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http server on port {port} did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn fetch_over_http() {
    let (img, sha) = tiny();
    let d = tempfile::tempdir().unwrap();
    let www = d.path().join("www");
    fs::create_dir(&www).unwrap();
    fs::copy(&img, www.join("tiny.qcow2")).unwrap();
    let cache = d.path().join("images");
    let server = HttpServer::start(&www);
    let url = server.url("tiny.qcow2");

    let e = disks::fetch_image(&cache, &server.url("nope.qcow2"), Some(&sha), ImageFormat::Qcow2).unwrap_err();
    assert!(e.message.contains("404"), "{e}");
    let wrong = "f".repeat(64);
    let e = disks::fetch_image(&cache, &url, Some(&wrong), ImageFormat::Qcow2).unwrap_err();
    assert!(e.message.contains(&format!("expected {wrong}, got {sha}")), "{e}");
    assert_eq!(e.object, url);
    assert_clean_cache(&cache, &[]);
    let e = disks::fetch_image(&cache, &url, None, ImageFormat::Qcow2).unwrap_err();
    assert!(e.message.contains("needs sha256"), "{e}");

    let got = disks::fetch_image(&cache, &url, Some(&sha), ImageFormat::Qcow2).unwrap();
    assert!(got.fetched);
    assert_eq!(fs::read(&got.path).unwrap(), fs::read(&img).unwrap());
    assert_eq!(mode(&got.path), 0o644);
    assert_clean_cache(&cache, &[&sha]);

    // A hit needs no network: stop the server first.
    drop(server);
    let hit = disks::fetch_image(&cache, &url, Some(&sha), ImageFormat::Qcow2).unwrap();
    assert!(!hit.fetched);
    assert_eq!(hit.path, got.path);
}

/// `inspect` reads the first 4 KiB and the whole first cluster only when
/// the header does not parse from them: a backing file name that qemu-img
/// placed elsewhere in the first cluster is still found, and one past it
/// is still an error.
#[test]
fn backing_name_anywhere_in_the_first_cluster() {
    let (img, _) = tiny();
    let d = tempfile::tempdir().unwrap();
    let ov = d.path().join("ov.qcow2");
    must("qemu-img", &["create", "-q", "-f", "qcow2", "-b", s(&img), "-F", "qcow2", s(&ov)]);
    let info = disks::inspect(&ov).unwrap();
    assert_eq!(info.backing_file.as_deref(), Some(s(&img)));
    let bytes = fs::read(&ov).unwrap();
    assert!(bytes.len() > 70_000, "overlay of {} bytes", bytes.len());
    let off = u64::from_be_bytes(bytes[8..16].try_into().unwrap()) as usize;
    let n = u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as usize;
    assert!(off + n < 4096, "qemu-img wrote the name at {off}");
    for (at, ok) in [(8192usize, true), (65_536 - n, true), (70_000, false)] {
        let mut b = bytes.clone();
        let name = b[off..off + n].to_vec();
        b[off..off + n].fill(0);
        b[at..at + n].copy_from_slice(&name);
        b[8..16].copy_from_slice(&(at as u64).to_be_bytes());
        let moved = d.path().join(format!("moved-{at}.qcow2"));
        fs::write(&moved, &b).unwrap();
        match disks::inspect(&moved) {
            Ok(i) if ok => assert_eq!(i.backing_file.as_deref(), Some(s(&img)), "name at {at}"),
            Err(e) if !ok => assert!(e.message.contains("lies outside the header cluster"), "name at {at}: {e}"),
            r => panic!("name at {at}: {r:?}"),
        }
    }
}

/// Local sources without a declared sha256 are hashed once: the fetch
/// remembers the hash under the file's identity (inode, size, mtime,
/// ctime); a plan then takes it from the index; a rewritten file is hashed
/// again; plans never write the index.
#[test]
fn local_source_hashes_are_remembered_by_file_identity() {
    let (img, sha) = tiny();
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("images");
    let src = d.path().join("src.qcow2");
    fs::copy(&img, &src).unwrap();
    // Old enough to be remembered (a file modified in the last 2 s is not).
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    fs::File::options().write(true).open(&src).unwrap().set_modified(old).unwrap();
    std::thread::sleep(Duration::from_millis(2100)); // ctime is now, too
    let index = cache.join(".sources.json");
    // A plan's read: computed, not remembered.
    fs::create_dir_all(&cache).unwrap();
    assert_eq!(disks::source_hash(&cache, &src, false).unwrap(), sha);
    assert!(!index.exists(), "a plan wrote the index");
    // The fetch remembers it.
    let got = disks::fetch_image(&cache, s(&src), None, ImageFormat::Qcow2).unwrap();
    assert_eq!(got.sha256, sha);
    let text = fs::read_to_string(&index).expect("the fetch wrote no index");
    assert!(text.contains(&sha) && text.contains(s(&src)), "{text}");
    assert_eq!(mode(&index), 0o600);
    // The index answers (a forged entry for the same identity proves it is used).
    let forged = text.replace(&sha, &"0".repeat(64));
    fs::write(&index, &forged).unwrap();
    assert_eq!(disks::source_hash(&cache, &src, false).unwrap(), "0".repeat(64));
    // Rewriting the file in place (same size, same mtime) changes its ctime: hashed again.
    let mut bytes = fs::read(&src).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&src, &bytes).unwrap();
    fs::File::options().write(true).open(&src).unwrap().set_modified(old).unwrap();
    let h = disks::source_hash(&cache, &src, false).unwrap();
    assert_ne!(h, "0".repeat(64));
    assert_ne!(h, sha);
    // A damaged index is only a cache miss.
    fs::write(&index, b"{not json").unwrap();
    assert_eq!(disks::source_hash(&cache, &src, false).unwrap(), h);
}
