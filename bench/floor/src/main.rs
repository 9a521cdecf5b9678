//! The floor of a converged `virtform plan`: the reads no planner can avoid,
//! done the cheapest way, and nothing else.
//!
//! - one libvirt connection;
//! - list all domains (one call), fetch each domain's inactive XML;
//! - one link dump (`ip -json -details addr show`, one process);
//! - one `stat` per disk file (one directory listing, then stat each file).
//!
//! Usage: vfb-floor URI DISK_DIR [THREADS]
//! THREADS (default 1) fetch the XML over the one connection concurrently.
//! Prints one number: domains + links bytes + files stat'ed (so the work
//! cannot be optimized away), nothing else.

use std::process::{Command, ExitCode, Stdio};
use virt::connect::Connect;
use virt::sys;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: vfb-floor URI DISK_DIR [THREADS]");
        return ExitCode::from(2);
    }
    let threads: usize = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1).max(1);
    virt::error::clear_error_callback();
    let conn = match Connect::open(Some(&args[1])) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("connect: {e}");
            return ExitCode::from(1);
        }
    };
    let domains = match conn.list_all_domains(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("list: {e}");
            return ExitCode::from(1);
        }
    };
    let fetch = |ds: &[virt::domain::Domain]| -> usize {
        ds.iter().map(|d| d.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE).map(|x| x.len()).unwrap_or(0)).sum()
    };
    let xml_bytes: usize = if threads == 1 || domains.len() < 2 {
        fetch(&domains)
    } else {
        let chunk = domains.len().div_ceil(threads);
        std::thread::scope(|s| {
            let hs: Vec<_> = domains.chunks(chunk).map(|c| s.spawn(move || fetch(c))).collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        })
    };
    let links = Command::new("ip")
        .args(["-json", "-details", "addr", "show"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| o.stdout.len())
        .unwrap_or(0);
    let mut files = 0usize;
    if let Ok(rd) = std::fs::read_dir(&args[2]) {
        for e in rd.flatten() {
            if std::fs::metadata(e.path()).is_ok() {
                files += 1;
            }
        }
    }
    println!("{}", domains.len() + xml_bytes + links + files);
    ExitCode::SUCCESS
}
