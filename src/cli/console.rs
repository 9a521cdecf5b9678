//! `virtform console ADDRESS`: an instance's serial console. While the
//! domain runs it follows the console as the guest writes it (until the
//! domain stops, or Ctrl-C); otherwise it prints the log of the last boot.
//! The console is a log file (`<serial type='file'>`), so this works for
//! any number of readers and never steals the console from anyone.

use super::{dir_or_cwd, instance_at, Global};
use crate::host::libvirt::{Libvirt, VirtLibvirt};
use clap::Args;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The instance, e.g. instance.vm or 'instance.web["a"]'.
    pub address: String,
    /// Configuration directory (default: the current directory).
    #[arg(long, short = 'C')]
    pub dir: Option<PathBuf>,
    /// Print what the console shows so far and exit, even while the domain runs.
    #[arg(long)]
    pub no_follow: bool,
}

pub fn run(g: &Global, a: ConsoleArgs) -> ExitCode {
    let cfg = match g.load(dir_or_cwd(a.dir)) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let (addr, inst) = match instance_at(&cfg, &a.address, "console") {
        Ok(x) => x,
        Err(c) => return c,
    };
    let Some(parsed) = crate::model::Address::parse(&addr) else { return ExitCode::from(1) };
    let log = crate::model::instance::console_log_path(&g.state_dir, &cfg.stack, cfg.names_of(&parsed));
    let name = inst.domain_name().to_string();
    let libvirt = match VirtLibvirt::open(&g.connect) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: virtform console {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let running = |l: &VirtLibvirt| matches!(l.domain(&name), Ok(Some(d)) if d.is_active());
    let exists = matches!(libvirt.domain(&name), Ok(Some(_)));
    if !exists && !log.exists() {
        eprintln!("error: virtform console {addr}: domain {name} does not exist on this host and has no console log; create it with `virtform apply`");
        return ExitCode::from(1);
    }
    let follow = !a.no_follow && running(&libvirt);
    if !follow {
        return match std::fs::read(&log) {
            Ok(b) => {
                let _ = std::io::stdout().write_all(&b);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: virtform console {addr}: cannot read the console log {}: {e}", log.display());
                ExitCode::from(1)
            }
        };
    }
    eprintln!("virtform: following the console of {name} ({}); Ctrl-C to stop", log.display());
    let mut out = std::io::stdout();
    let mut pos = 0u64;
    let mut inode = 0u64;
    let mut last_check = Instant::now();
    loop {
        if let Ok(mut f) = std::fs::File::open(&log) {
            let meta = f.metadata().ok();
            let (ino, len) = meta.map(|m| (m.ino(), m.len())).unwrap_or((0, 0));
            // A fresh boot rotates the log: start the new one from its beginning.
            if ino != inode || len < pos {
                inode = ino;
                pos = 0;
            }
            if len > pos && f.seek(std::io::SeekFrom::Start(pos)).is_ok() {
                let mut buf = Vec::new();
                if let Ok(n) = f.take(len - pos).read_to_end(&mut buf) {
                    pos += n as u64;
                    if out.write_all(&buf).and_then(|_| out.flush()).is_err() {
                        return ExitCode::SUCCESS; // the reader went away (a pipe closed)
                    }
                }
            }
        }
        if last_check.elapsed() > Duration::from_secs(1) {
            last_check = Instant::now();
            if !running(&libvirt) {
                eprintln!("\nvirtform: domain {name} is no longer running");
                return ExitCode::SUCCESS;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
