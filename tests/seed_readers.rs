//! virtform's cloud-init seed images read by independent ISO 9660 readers,
//! no VM and no libvirt needed:
//!
//! - genisoimage's `isoinfo`: volume label, Rock Ridge and Joliet present,
//!   the listing under each name system, every file's bytes (`-x`);
//! - libisofs through `xorriso` (what `xorriso -osirrox` and many distro
//!   tools use): the tree under Rock Ridge and under Joliet, no WARNING,
//!   SORRY, FAILURE or FATAL message at `-report_about WARNING`, exit
//!   status 0, the PVD's volume id, every file extracted byte for byte;
//! - util-linux's `blkid -p` (what cloud-init uses to find the seed by its
//!   label): TYPE=iso9660, LABEL=cidata.
//!
//! It also pins down why `xorriso` prints "Media summary: 1 session, 0 data
//! blocks" when it loads a seed (issue 15): a reporting convention of
//! libisoburn's TOC emulation for images of at most 32 blocks (64 KiB),
//! which genisoimage's small images share, not a defect of the image (see
//! `xorriso_zero_data_blocks_is_its_64k_header_convention`).
//!
//! The tools come from scripts/host-setup (packages genisoimage, xorriso,
//! util-linux). With VIRTFORM_REAL_HOST=1 (scripts/test sets it) a missing
//! tool FAILS these tests; without it they skip with a printed reason.

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use virtform::seed::{SeedInput, SeedNic, seed_files, seed_hash, write_iso, write_seed};

const HINT: &str = "run scripts/host-setup (packages genisoimage, xorriso, util-linux)";

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    what: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn run(program: &str, args: &[&str]) -> Run {
    let what = format!("{program} {}", args.join(" "));
    match Command::new(program).args(args).output() {
        Ok(o) => Run {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            what,
        },
        Err(e) => Run {
            ok: false,
            stdout: String::new(),
            stderr: format!("cannot run {program}: {e}"),
            what,
        },
    }
}

fn must(program: &str, args: &[&str]) -> Run {
    let r = run(program, args);
    assert!(r.ok, "`{}` failed:\n{}", r.what, r.all());
    r
}

fn run_bytes(program: &str, args: &[&str]) -> Vec<u8> {
    let o = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        o.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// True when every tool answers. Otherwise: a failure under
/// VIRTFORM_REAL_HOST=1, a printed skip reason without it.
fn have_tools(test: &str) -> bool {
    let probes: [(&str, &[&str]); 4] = [
        ("isoinfo", &["-version"]),
        ("genisoimage", &["-version"]),
        ("xorriso", &["-version"]),
        ("blkid", &["-V"]),
    ];
    let missing: Vec<&str> = probes
        .iter()
        .filter(|(tool, args)| !run(tool, args).ok)
        .map(|(tool, _)| *tool)
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{} not installed: {HINT}", missing.join(", "));
    if std::env::var("VIRTFORM_REAL_HOST").as_deref() == Ok("1") {
        panic!("{test}: {msg}");
    }
    eprintln!("{test}: skipped ({msg}; with VIRTFORM_REAL_HOST=1 this fails)");
    false
}

/// Message lines of xorriso at WARNING severity or worse.
fn xorriso_problems(r: &Run) -> Vec<String> {
    r.all()
        .lines()
        .filter(|l| {
            [": WARNING :", ": SORRY :", ": FAILURE :", ": FATAL :", ": ABORT :"]
                .iter()
                .any(|s| l.contains(s))
        })
        .map(str::to_string)
        .collect()
}

/// Runs xorriso at `-report_about WARNING` and requires exit status 0 and
/// no message of WARNING severity or worse.
fn xorriso_clean(args: &[&str]) -> Run {
    let mut full = vec!["-report_about", "WARNING", "-abort_on", "FAILURE"];
    full.extend_from_slice(args);
    let r = run("xorriso", &full);
    assert!(r.ok, "`{}` failed:\n{}", r.what, r.all());
    let problems = xorriso_problems(&r);
    assert!(problems.is_empty(), "`{}` reported:\n{}", r.what, problems.join("\n"));
    r
}

/// The paths xorriso's `-find / ... -exec lsdl` prints, without the root.
fn xorriso_tree(image: &str, name_system: &[&str]) -> Vec<(String, String)> {
    let mut args: Vec<&str> = name_system.to_vec();
    args.extend(["-indev", image, "-find", "/", "-exec", "lsdl", "--"]);
    let r = xorriso_clean(&args);
    let mut out: Vec<(String, String)> = r
        .stdout
        .lines()
        .filter_map(|l| {
            let q = l.find('\'')?;
            let path = l[q..].trim().trim_matches('\'').to_string();
            let mode = l.split_whitespace().next()?.to_string();
            (path != "/").then_some((path, mode))
        })
        .collect();
    out.sort();
    out
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// Every check of one image holding exactly `files` (name, bytes).
fn check_image(image: &Path, files: &[(String, Vec<u8>)], scratch: &Path) {
    let p = image.to_str().unwrap();
    let mut want: Vec<String> = files.iter().map(|(n, _)| format!("/{n}")).collect();
    want.sort();

    // isoinfo
    let d = must("isoinfo", &["-d", "-i", p]).stdout;
    assert!(d.contains("Volume id: cidata\n"), "{d}");
    assert!(d.contains("Joliet with UCS level 3 found"), "{d}");
    assert!(d.contains("Rock Ridge signatures version 1 found"), "{d}");
    let size = fs::metadata(image).unwrap().len();
    assert!(d.contains(&format!("Volume size is: {}\n", size / 2048)), "volume space size != file size {size}:\n{d}");
    assert_eq!(sorted_lines(&must("isoinfo", &["-R", "-f", "-i", p]).stdout), want, "isoinfo Rock Ridge names");
    assert_eq!(sorted_lines(&must("isoinfo", &["-J", "-f", "-i", p]).stdout), want, "isoinfo Joliet names");
    let plain = sorted_lines(&must("isoinfo", &["-f", "-i", p]).stdout);
    assert_eq!(plain.len(), files.len(), "plain ISO 9660 names: {plain:?}");
    assert!(plain.iter().all(|n| n.ends_with(";1")), "{plain:?}");
    let listing = must("isoinfo", &["-R", "-l", "-i", p]).stdout;
    for (name, data) in files {
        let line = listing
            .lines()
            .find(|l| l.trim_end().ends_with(&format!("]  {name}")))
            .unwrap_or_else(|| panic!("{name} not in isoinfo -R -l:\n{listing}"));
        assert!(line.starts_with("-r--r--r--"), "Rock Ridge mode of {name}: {line}");
        assert!(line.contains(&format!(" {} ", data.len())), "size of {name}: {line}");
        for flag in ["-R", "-J"] {
            let got = run_bytes("isoinfo", &[flag, "-x", &format!("/{name}"), "-i", p]);
            assert!(got == *data, "isoinfo {flag} -x /{name}: {} bytes read, {} written", got.len(), data.len());
        }
    }

    // xorriso (libisofs), each tree in turn: Rock Ridge (its default),
    // Joliet (-read_fs norock), plain ISO 9660 (-read_fs ecma119)
    let loaded = |read_fs: &str| -> String {
        let toc = xorriso_clean(&["-read_fs", read_fs, "-indev", p, "-toc"]).stdout;
        toc.lines().find_map(|l| l.strip_prefix("ISO loaded   : ")).unwrap_or_default().to_string()
    };
    assert_eq!(loaded("any"), "Rock_Ridge");
    assert_eq!(loaded("norock"), "Joliet");
    assert_eq!(loaded("ecma119"), "Only_ECMA_119");
    let rr = xorriso_tree(p, &["-read_fs", "any"]);
    assert_eq!(rr.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), want, "xorriso Rock Ridge names");
    assert!(rr.iter().all(|(_, m)| m == "-r--r--r--"), "xorriso Rock Ridge modes: {rr:?}");
    let joliet = xorriso_tree(p, &["-read_fs", "norock"]);
    assert_eq!(joliet.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), want, "xorriso Joliet names");
    // plain names as isoinfo lists them, less the ";1" version (and a bare dot) xorriso drops
    let mut plain_x: Vec<String> = plain.iter().map(|n| n.trim_end_matches(";1").trim_end_matches('.').to_string()).collect();
    plain_x.sort();
    let ecma = xorriso_tree(p, &["-read_fs", "ecma119"]);
    assert_eq!(ecma.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), plain_x, "xorriso plain ISO 9660 names");
    let pvd = xorriso_clean(&["-indev", p, "-pvd_info"]).stdout;
    assert!(pvd.lines().any(|l| l == "Volume Id    : cidata"), "{pvd}");
    let toc = xorriso_clean(&["-indev", p, "-toc"]).stdout;
    assert!(toc.contains("ISO offers   : Rock_Ridge Joliet\n"), "{toc}");
    let out = scratch.join("xorriso-out");
    fs::create_dir_all(&out).unwrap();
    let mut args: Vec<String> = ["-osirrox", "on", "-indev", p].iter().map(|s| s.to_string()).collect();
    for (name, _) in files {
        args.extend(["-extract".into(), format!("/{name}"), out.join(name).to_str().unwrap().into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    xorriso_clean(&args);
    let mut extracted: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| format!("/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    extracted.sort();
    assert_eq!(extracted, want, "files xorriso extracted");
    for (name, data) in files {
        let got = fs::read(out.join(name)).unwrap();
        assert!(got == *data, "xorriso -extract /{name}: {} bytes, {} written", got.len(), data.len());
    }

    // blkid: how cloud-init finds the seed
    let blkid = must("blkid", &["-p", "-o", "export", p]).stdout;
    assert!(blkid.lines().any(|l| l == "TYPE=iso9660"), "{blkid}");
    assert!(blkid.lines().any(|l| l == "LABEL=cidata"), "{blkid}");
}

fn representative_seed() -> SeedInput {
    SeedInput {
        instance_id: "iid-stack-web-0".into(),
        hostname: "web-0".into(),
        user_data: Some(
            "#cloud-config\n\
             users:\n  - default\n\
             write_files:\n  - path: /etc/motd\n    content: |\n      built by virtform: äöü ✓\n    permissions: '0644'\n\
             runcmd:\n  - [sh, -c, 'echo ready > /run/vf-ready']\n  - [systemctl, restart, ssh]\n"
                .into(),
        ),
        meta_data: None,
        network_config: None,
        ssh_authorized_keys: vec![
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOp7x8Y5k2Wm0f3n8xq5b2j9v1c4d6e7f8g9h0i1j2k3 ops@example".into(),
        ],
        nics: vec![
            SeedNic {
                mac: "52:54:00:ab:cd:01".into(),
                ip: Some(("192.168.123.10".parse::<IpAddr>().unwrap(), 24)),
                gateway: Some("192.168.123.1".parse().unwrap()),
                dns: vec!["192.168.123.1".parse().unwrap()],
                mtu: None,
            },
            SeedNic { mac: "52:54:00:ab:cd:02".into(), ip: None, gateway: None, dns: Vec::new(), mtu: Some(9000) },
        ],
        ssh_host_key: None,
    }
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

/// The seed `write_seed` writes (the apply path): meta-data, network-config
/// and user-data, as every reader sees them.
#[test]
fn seed_written_by_write_seed_reads_back_with_isoinfo_xorriso_and_blkid() {
    if !have_tools("seed_written_by_write_seed_reads_back_with_isoinfo_xorriso_and_blkid") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = representative_seed();
    let path = tmp.path().join("seed/cidata.iso");
    let hash = write_seed(&path, &input).expect("write_seed");
    assert_eq!(hash, seed_hash(&input).unwrap());
    let files = seed_files(&input).unwrap();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["meta-data", "network-config", "user-data"]);
    check_image(&path, &files, tmp.path());
}

/// The writer's whole name space: the longest name (64 characters), one
/// character, a leading dot, a leading dash, a trailing dot, several dots,
/// mixed case, names whose ISO 9660 level 1 forms collide (`META_DA1`),
/// an empty file, files of exactly one sector, one byte more, and many
/// sectors.
#[test]
fn awkward_names_and_sizes_read_back_with_isoinfo_xorriso_and_blkid() {
    if !have_tools("awkward_names_and_sizes_read_back_with_isoinfo_xorriso_and_blkid") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let long = format!("{}.cfg", "x".repeat(60));
    assert_eq!(long.len(), virtform::seed::iso::MAX_NAME_LEN);
    let files: Vec<(String, Vec<u8>)> = vec![
        ("a".into(), b"1".to_vec()),
        (long, b"longest name".to_vec()),
        (".hidden".into(), b"h\n".to_vec()),
        ("-dash".into(), b"d\n".to_vec()),
        ("trailingdot.".into(), b"t\n".to_vec()),
        ("many.dots.in.name.tar.gz".into(), vec![7u8; 2048]),
        ("UPPER.Case_mixed".into(), b"U\n".to_vec()),
        ("meta-data-backup_1".into(), (0..300_000u32).map(|i| (i % 251) as u8).collect()),
        ("meta-data-backup_2".into(), vec![9u8; 2049]),
        ("empty".into(), Vec::new()),
        ("meta-data".into(), b"instance-id: iid-awkward\n".to_vec()),
    ];
    let image = tmp.path().join("awkward.iso");
    fs::write(&image, write_iso("cidata", &files).unwrap()).unwrap();
    check_image(&image, &files, tmp.path());
}

/// Why xorriso says "0 data blocks" when loading a seed, and that it is
/// harmless. libisoburn emulates a multi-session TOC on files and block
/// devices: the first 64 KiB (32 blocks) of such a medium are the header
/// of the first session, and further sessions are looked for from LBA 32
/// up to the PVD's volume space size. When that size is 32 blocks or less
/// the scan never starts ("Found 0 ISO sessions by scanning 0 kB"), and the
/// summary printed on loading counts 0 data blocks; above 32 the scan finds
/// no second session and the whole image becomes the one session. So the
/// summary depends on the size alone: genisoimage's own images of ≤ 32
/// blocks say the same, and in every case `-toc` lists one ISO session at
/// LBA 0 of exactly the volume space size, and the tree loads.
#[test]
fn xorriso_zero_data_blocks_is_its_64k_header_convention() {
    if !have_tools("xorriso_zero_data_blocks_is_its_64k_header_convention") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let load_summary = |image: &Path| -> (String, String) {
        let p = image.to_str().unwrap();
        // the drive summary is a NOTE: shown at -report_about NOTE
        let load = run("xorriso", &["-report_about", "NOTE", "-indev", p]);
        assert!(load.ok && xorriso_problems(&load).is_empty(), "`{}`:\n{}", load.what, load.all());
        let summary = load.all().lines().find(|l| l.starts_with("Media summary:")).unwrap_or_default().to_string();
        let toc = xorriso_clean(&["-indev", p, "-toc"]).stdout;
        let session = toc.lines().find(|l| l.starts_with("ISO session  :")).unwrap_or_default().to_string();
        (summary, session)
    };
    let blocks = |image: &Path| fs::metadata(image).unwrap().len() / 2048;

    // virtform's seed: small, so "0 data blocks" on loading; -toc has it all
    let seed = tmp.path().join("seed.iso");
    write_seed(&seed, &representative_seed()).unwrap();
    let n = blocks(&seed);
    assert!(n <= 32, "the representative seed is {n} blocks");
    let (summary, session) = load_summary(&seed);
    assert!(summary.starts_with("Media summary: 1 session, 0 data blocks,"), "{summary}");
    assert_eq!(session, format!("ISO session  :   1 ,         0 ,        {n}s , cidata"));

    // genisoimage's image of one small file: the same summary
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("meta-data"), "instance-id: iid-1\n").unwrap();
    let gen_small = tmp.path().join("genisoimage-small.iso");
    must("genisoimage", &["-quiet", "-no-pad", "-V", "cidata", "-r", "-o", gen_small.to_str().unwrap(), src.to_str().unwrap()]);
    let g = blocks(&gen_small);
    assert!(g <= 32, "genisoimage's small image is {g} blocks");
    let (summary, session) = load_summary(&gen_small);
    assert!(summary.starts_with("Media summary: 1 session, 0 data blocks,"), "{summary}");
    assert_eq!(session, format!("ISO session  :   1 ,         0 ,        {g}s , cidata"));

    // virtform's seed above 32 blocks: the summary counts every block
    let mut files = seed_files(&representative_seed()).unwrap();
    files.push(("padding".into(), vec![b'#'; 8 * 2048]));
    let big = tmp.path().join("big.iso");
    fs::write(&big, write_iso("cidata", &files).unwrap()).unwrap();
    let b = blocks(&big);
    assert!(b > 32, "{b} blocks");
    let (summary, session) = load_summary(&big);
    assert!(summary.starts_with(&format!("Media summary: 1 session, {b} data blocks,")), "{summary}");
    assert_eq!(session, format!("ISO session  :   1 ,         0 ,        {b}s , cidata"));
}

/// The warning check above can fail: a seed cut short (its volume space
/// size claims more than the file holds) makes xorriso warn.
#[test]
fn xorriso_warns_about_a_truncated_seed() {
    if !have_tools("xorriso_warns_about_a_truncated_seed") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut files = seed_files(&representative_seed()).unwrap();
    files.push(("padding".into(), vec![b'#'; 8 * 2048]));
    let mut bytes = write_iso("cidata", &files).unwrap();
    bytes.truncate(bytes.len() - 4 * 2048);
    let image = tmp.path().join("truncated.iso");
    fs::write(&image, &bytes).unwrap();
    let r = run("xorriso", &["-report_about", "WARNING", "-indev", image.to_str().unwrap(), "-toc"]);
    let problems = xorriso_problems(&r);
    assert!(!problems.is_empty(), "no warning from xorriso on a truncated image:\n{}", r.all());
}
