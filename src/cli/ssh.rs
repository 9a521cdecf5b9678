//! `virtform ssh ADDRESS [-- COMMAND…]`: an interactive session, or one
//! command, on an instance, as its `connection`'s user with its key, the
//! guest's host key checked against the stack's known_hosts (never
//! trust-on-first-use). The remote command's exit status is passed through.
//! An instance on a remote host is reached through that host's SSH master
//! (a loopback port joined to a connection the host's sshd makes).

use super::{dir_or_cwd, instance_at, Global};
use crate::apply::engine::ssh_conn;
use crate::host::exec::Executor;
use crate::host::libvirt::{Libvirt, VirtLibvirt};
use crate::host::ssh;
use clap::Args;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

#[derive(Debug, Args)]
pub struct SshArgs {
    /// The instance, e.g. instance.vm or 'instance.web["a"]'.
    pub address: String,
    /// Configuration directory (default: the current directory).
    #[arg(long, short = 'C')]
    pub dir: Option<PathBuf>,
    /// The command to run and its arguments, after `--` (each argument is
    /// quoted for the remote shell, so it arrives as given). Without one:
    /// an interactive login.
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub fn run(g: &Global, a: SshArgs) -> ExitCode {
    let cfg = match g.load_reading_host(dir_or_cwd(a.dir)) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let (addr, inst) = match instance_at(&cfg, &a.address, "ssh") {
        Ok(x) => x,
        Err(c) => return c,
    };
    let Some(conn) = ssh_conn(&g.state_dir, &cfg, &addr, inst, &crate::observe::imports::read(&g.state_dir, &cfg.stack).map(|r| r.objects).unwrap_or_default()) else {
        eprintln!("error: virtform ssh {addr}: the instance has no `connection` block, so virtform does not know whom to log in as; add connection {{ user = \"debian\", private_key = file(\"...\") }} and apply");
        return ExitCode::from(1);
    };
    let name = inst.domain_name();
    let fail = |m: String| {
        eprintln!("error: virtform ssh {addr}: {m}");
        ExitCode::from(1)
    };
    // The instance's host: this machine, or a host block's (its guests
    // are reached through that host's SSH master).
    let on = cfg.placement.host_of(&addr.to_string()).map(str::to_string);
    let (exec, libvirt, _host_key) = match &on {
        None => match VirtLibvirt::open(&g.connect) {
            Ok(l) => (Executor::Local, l, None),
            Err(e) => return fail(e.to_string()),
        },
        Some(host) => {
            let Some((_, h)) = cfg.hosts().find(|(r, _)| r.address.to_string() == *host) else {
                return fail(format!("its host {host} is not declared"));
            };
            match super::fleet::open_remote(host, h, &ssh::SshDir::of(&g.state_dir, &cfg.stack)) {
                Ok((exec, libvirt, identity)) => (exec, libvirt, Some(identity)),
                Err(f) => {
                    f.report();
                    return ExitCode::from(1);
                }
            }
        }
    };
    let where_ = on.as_deref().unwrap_or("this host");
    match libvirt.domain(name) {
        Ok(Some(d)) if d.is_active() => {}
        Ok(Some(_)) => return fail(format!("domain {name} is not running on {where_}; start it with `virtform apply` (state = \"running\")")),
        Ok(None) => return fail(format!("domain {name} does not exist on {where_}; create it with `virtform apply`")),
        Err(e) => return fail(e.to_string()),
    }
    let mut target = match conn.target(&libvirt, &addr) {
        Ok(Some(t)) => t,
        Ok(None) => return fail(format!("the guest has no DHCP lease yet, so its address is unknown; wait for it to boot (`virtform console {addr}`)")),
        Err(e) => return fail(e.to_string()),
    };
    let guest = target.host.clone();
    let reach = match target.through(&exec) {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let id = match ssh::Identity::write(&target.dir, &target.stem, &conn.key) {
        Ok(i) => i,
        Err(e) => return fail(e.to_string()),
    };
    let mut args = ssh::ssh_args(&target, id.path(), false);
    if !a.command.is_empty() {
        args.push("--".into());
        args.push(ssh::remote_command(&a.command));
    }
    let mut child = match Command::new("ssh").args(&args).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot run ssh: {e} (install openssh-client; scripts/host-setup does)")),
    };
    // ssh's own messages pass through; a host key mismatch gets our verdict after them.
    let mut mismatch = false;
    if let Some(err) = child.stderr.take() {
        let mut out = std::io::stderr();
        for line in std::io::BufReader::new(err).split(b'\n').map_while(Result::ok) {
            let text = String::from_utf8_lossy(&line);
            mismatch |= matches!(ssh::classify(&text), ssh::Failure::HostKey(_));
            let _ = out.write_all(&line);
            let _ = out.write_all(b"\n");
        }
    }
    let status = child.wait();
    drop((id, reach));
    let code = status.ok().and_then(|s| s.code()).unwrap_or(255);
    if code == 255 && mismatch {
        eprintln!(
            "error: virtform ssh {addr}: the guest at {} did not present the host key virtform gave it (pinned as {} in {}); refusing to connect",
            guest,
            target.alias,
            target.dir.known_hosts().display()
        );
    }
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
