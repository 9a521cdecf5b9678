//! Fleets: a configuration with `host` blocks. Each host is observed over
//! its own executor (one SSH connection per remote host, all at the same
//! time) and its part of the configuration (`Configuration::on_host`) is
//! planned against what that host holds; the plan is shown host by host.
//!
//! `apply` and `destroy` take the stack's lock on every host (this
//! machine's `lock_stack`, a remote `flock` held over SSH on the others),
//! observe all hosts under the locks, plan each part, and run every
//! host's steps as one DAG, each step on its host's executor and libvirt.
//! Waits that connect to a remote host's guests (ssh, cloud_init, tcp) go
//! through that host's SSH master (`Executor::probe_tcp`, `reach_tcp`).
//! A saved plan (`plan --out`) holds every host's fingerprint; `apply
//! FILE` runs it only when each host still looks so. Imports are planned
//! on the host of their resource (the registry shared out by
//! `share_imports`; a remote host's imported files observed there).

use super::Global;
use crate::config::Configuration;
use crate::host::exec::{Executor, SshTarget};
use crate::host::libvirt::{Libvirt, VirtLibvirt};
use crate::host::links::IpLinks;
use crate::host::ovs::Vsctl;
use crate::host::HostError;
use crate::model::host::Reach;
use crate::observe::{self, Observed};
use crate::plan::{self, render, Plan, PlanOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Files a host gets from this machine: path there → (local file, sha256).
pub(super) type Deliveries = BTreeMap<PathBuf, (PathBuf, String)>;

/// One host of the fleet.
pub(super) struct Member {
    /// `host.a`; `None`: this machine.
    pub host: Option<String>,
    /// What the plan calls it: `host.a (root@10.99.0.11)` or `this machine`.
    pub label: String,
    pub state_dir: PathBuf,
    pub kvm: bool,
    /// Its part of the configuration (kernels and initrds at their paths
    /// on the host).
    pub cfg: Configuration,
    pub observed: Observed,
    pub exec: Executor,
    /// Taken by the apply's steps.
    pub libvirt: Option<VirtLibvirt>,
    /// Files the host gets from this machine: path there → (local file, sha256).
    pub deliveries: Deliveries,
    /// The identity file the executor logs in with (removed when dropped).
    _identity: Option<crate::host::ssh::Identity>,
}

/// Why a remote host could not be reached or read.
pub(super) struct Failed {
    host: String,
    uri: String,
    what: &'static str,
    error: HostError,
}

/// Every host's result, or each failure reported by host and `note`.
fn all_or_report<T>(results: Vec<Result<T, Failed>>, note: &str) -> Result<Vec<T>, ExitCode> {
    let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    if failed.is_empty() {
        return Ok(ok.into_iter().filter_map(Result::ok).collect());
    }
    for f in failed.into_iter().filter_map(Result::err) {
        f.report();
    }
    eprintln!("note: {note}");
    Err(ExitCode::from(1))
}

impl Failed {
    pub(super) fn report(&self) {
        eprintln!("error: {} ({}): cannot {}: {}", self.host, self.uri, self.what, self.error);
    }
}

/// The remote hosts the configuration declares (also those with nothing
/// placed on them: they may hold the stack's objects, which the plan then
/// deletes).
fn remote_hosts(cfg: &Configuration) -> Vec<(String, crate::model::host::Host, String)> {
    cfg.hosts()
        .filter_map(|(r, h)| match h.reach() {
            Ok(Reach::Ssh { user, address, .. }) => Some((r.address.to_string(), h.clone(), format!("{user}@{address}"))),
            _ => None,
        })
        .collect()
}

/// The hosts a `--target` list reaches: where the targeted resources and
/// what they depend on live (`None`: this machine). Every host without targets.
fn target_hosts(cfg: &Configuration, targets: &[String]) -> Option<std::collections::BTreeSet<Option<String>>> {
    if targets.is_empty() {
        return None;
    }
    let blocks = plan::target_blocks(cfg, targets);
    let mut hosts = std::collections::BTreeSet::new();
    for r in cfg.resources.iter().filter(|r| blocks.contains(&r.address.block())) {
        let a = r.address.to_string();
        match cfg.placement.spread.get(&a) {
            Some(on) => hosts.extend(on.iter().cloned()),
            None => {
                hosts.insert(cfg.placement.host_of(&a).map(str::to_string));
            }
        }
    }
    Some(hosts)
}

/// Whether the member's part places objects of the stack on its host
/// (anything but host blocks and images: cached images outlive destroy).
pub(super) fn places_objects(m: &Member) -> bool {
    m.cfg.resources.iter().any(|r| !matches!(r.spec.kind(), crate::model::Kind::Host | crate::model::Kind::Image))
}

/// Connects to every remote host at once (SSH, then libvirt): the members,
/// not yet observed, this machine first. Every host that cannot be reached
/// is reported; then nothing goes on, unless `--target` reaches nothing on
/// the hosts that failed: those are left out with a warning.
pub(super) fn connect(g: &Global, cfg: &Configuration, local: VirtLibvirt, local_kvm: bool, targets: &[String]) -> Result<Vec<Member>, ExitCode> {
    let (part, deliveries) = part_of(cfg, None, &g.state_dir).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })?;
    let mut out = vec![Member {
        host: None,
        label: "this machine".into(),
        state_dir: g.state_dir.clone(),
        kvm: local_kvm,
        cfg: part,
        observed: Observed::default(),
        exec: Executor::Local,
        libvirt: Some(local),
        deliveries,
        _identity: None,
    }];
    let remote = remote_hosts(cfg);
    let ssh_dir = crate::host::ssh::SshDir::of(&g.state_dir, &cfg.stack);
    let results: Vec<Result<Member, Failed>> = std::thread::scope(|s| {
        let handles: Vec<_> = remote
            .iter()
            .map(|(addr, h, dest)| {
                let ssh_dir = &ssh_dir;
                s.spawn(move || connect_remote(cfg, addr, h, dest, ssh_dir))
            })
            .collect();
        handles
            .into_iter()
            .zip(&remote)
            .map(|(j, (addr, h, _))| {
                j.join().unwrap_or_else(|_| Err(Failed { host: addr.clone(), uri: h.uri.clone(), what: "connect", error: HostError::new("connect", addr, "the connecting thread panicked") }))
            })
            .collect()
    });
    let reach = target_hosts(cfg, targets);
    let (results, passed): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| match (r, &reach) {
        (Err(f), Some(hosts)) => hosts.contains(&Some(f.host.clone())),
        _ => true,
    });
    for f in passed.into_iter().filter_map(Result::err) {
        eprintln!("warning: {} ({}): cannot {}: {}", f.host, f.uri, f.what, f.error);
        eprintln!("note: {} is left out of this run: --target reaches nothing on it", f.host);
    }
    out.extend(all_or_report(results, "nothing was planned or changed on any host")?);
    Ok(out)
}

/// One remote host's SSH connection and libvirt, and the key file they
/// use (removed when it drops: keep it while they are in use).
pub(super) fn open_remote(addr: &str, h: &crate::model::host::Host, ssh_dir: &crate::host::ssh::SshDir) -> Result<(Executor, VirtLibvirt, crate::host::ssh::Identity), Failed> {
    let fail = |what: &'static str| move |error: HostError| Failed { host: addr.to_string(), uri: h.uri.clone(), what, error };
    let (Some(key), Some(known_hosts)) = (&h.private_key, &h.known_hosts) else {
        // Refused at load; kept as an error rather than a panic.
        return Err(fail("connect over SSH")(HostError::new("connect", addr, "no private_key or known_hosts")));
    };
    let stem = format!("host-{}", addr.trim_start_matches("host.").replace(['[', ']', '"', '.'], "_"));
    let identity = crate::host::ssh::Identity::write(ssh_dir, &stem, key).map_err(fail("write its key"))?;
    let target = SshTarget::from_libvirt_uri(addr, &h.uri, identity.path(), known_hosts).map_err(|m| fail("connect over SSH")(HostError::new("connect", addr, m)))?;
    let exec = Executor::ssh(target).map_err(fail("connect over SSH"))?;
    tracing::debug!(host = addr, "SSH connected");
    let libvirt = VirtLibvirt::open_on(&exec, "qemu:///system").map_err(fail("connect to its libvirtd"))?;
    tracing::debug!(host = addr, "libvirt connected");
    Ok((exec, libvirt, identity))
}

fn connect_remote(cfg: &Configuration, addr: &str, h: &crate::model::host::Host, dest: &str, ssh_dir: &crate::host::ssh::SshDir) -> Result<Member, Failed> {
    let fail = |what: &'static str| move |error: HostError| Failed { host: addr.to_string(), uri: h.uri.clone(), what, error };
    let (exec, libvirt, identity) = open_remote(addr, h, ssh_dir)?;
    let kvm = libvirt.kvm_usable();
    let state_dir = PathBuf::from(h.state_dir());
    let (part, deliveries) = part_of(cfg, Some(addr), &state_dir).map_err(|m| fail("deliver its files")(HostError::new("deliver", addr, m)))?;
    tracing::debug!(host = addr, "its part of the configuration taken");
    Ok(Member {
        host: Some(addr.to_string()),
        label: format!("{addr} ({dest})"),
        state_dir,
        kvm,
        cfg: part,
        observed: Observed::default(),
        exec,
        libvirt: Some(libvirt),
        deliveries,
        _identity: Some(identity),
    })
}

/// `host`'s part of the configuration. On a remote host an instance's
/// `kernel` and `initrd` (files on this machine) become paths under the
/// host's state dir, named by their content
/// (`<state>/<stack>/boot/<sha256 prefix>-<name>`), delivered by a step of
/// their own before the domains that boot them are defined; a changed file
/// is a new path, so the plan shows it.
fn part_of(cfg: &Configuration, host: Option<&str>, state_dir: &std::path::Path) -> Result<(Configuration, Deliveries), String> {
    let mut part = cfg.on_host(host);
    let mut deliveries = BTreeMap::new();
    if host.is_none() {
        return Ok((part, deliveries));
    }
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    for r in &mut part.resources {
        let addr = r.address.to_string();
        if let crate::model::Spec::Instance(i) = &mut r.spec {
            for f in [&mut i.kernel, &mut i.initrd].into_iter().flatten() {
                let local = PathBuf::from(&*f);
                let sha = match hashes.get(&*f) {
                    Some(h) => h.clone(),
                    None => {
                        let h = Executor::Local.sha256(&local).map_err(|e| format!("{addr} boots {}, which this machine must deliver to {}: {}", local.display(), host.unwrap_or(""), e.message))?;
                        hashes.insert(f.clone(), h.clone());
                        h
                    }
                };
                let name = local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "boot".into());
                let there = state_dir.join(&cfg.stack).join("boot").join(format!("{}-{name}", &sha[..16.min(sha.len())]));
                *f = there.to_string_lossy().into_owned();
                deliveries.insert(there, (local, sha));
            }
        }
    }
    Ok((part, deliveries))
}

/// Moves keep the names of objects on every host (`moved::keep_names_on`
/// over each member's observation), and the parts are taken again when
/// that renamed something (it hashes the boot files once more).
pub(super) fn keep_names(cfg: &mut Configuration, members: &mut [Member]) -> Result<(), ExitCode> {
    let names = cfg.names.clone();
    let hosts: Vec<(&Observed, &std::path::Path)> = members.iter().map(|m| (&m.observed, m.state_dir.as_path())).collect();
    crate::plan::moved::keep_names_on(cfg, &hosts);
    if cfg.names != names { repart(cfg, members) } else { Ok(()) }
}

/// Each member's part again, from `cfg` as it is now (after
/// `keep_names`, which needs the observation).
pub(super) fn repart(cfg: &Configuration, members: &mut [Member]) -> Result<(), ExitCode> {
    for m in members.iter_mut() {
        let (part, deliveries) = part_of(cfg, m.host.as_deref(), &m.state_dir).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(1)
        })?;
        m.cfg = part;
        m.deliveries = deliveries;
    }
    Ok(())
}

/// Observes every member at once: this machine as a single-host run does
/// (`remember`: record image hashes, as applies do), each remote host
/// through its executor (its libvirt, links, OVS, state dir and firmware).
/// The stack's records (names, pending waits, the image hashes, the
/// import registry: [`share_imports`]) are this machine's and shared by all.
/// `local`: this machine's observation when already made (a plan reads it
/// while the configuration loads).
pub(super) fn observe_all(g: &Global, cfg: &Configuration, members: &mut [Member], remember: bool, local: Option<Observed>) -> Result<(), ExitCode> {
    let have_local = local.is_some();
    // The registry (this machine's) names files every remote host looks for: read once.
    let registry = observe::imports::read(&g.state_dir, &cfg.stack).map_err(|e| {
        eprintln!("error: {e}; nothing was changed on any host");
        ExitCode::from(1)
    })?;
    let registry = &registry;
    let results: Vec<Result<Observed, Failed>> = std::thread::scope(|s| {
        let handles: Vec<_> = members
            .iter()
            .map(|m| {
                s.spawn(move || -> Result<Observed, Failed> {
                    if m.host.is_none() && have_local {
                        return Ok(Observed::default());
                    }
                    let fail = |what: &'static str| move |error: HostError| Failed { host: m.host.clone().unwrap_or_else(|| "this machine".into()), uri: m.label.clone(), what, error };
                    let Some(libvirt) = &m.libvirt else {
                        return Err(fail("read it")(HostError::new("read", &m.label, "not connected")));
                    };
                    if m.host.is_none() {
                        return observe::observe(&IpLinks::local(), libvirt, &Vsctl::default(), cfg, &g.state_dir, remember).map_err(fail("read it"));
                    }
                    let mut o = observe::observe_host(&IpLinks::on(&m.exec), libvirt, &Vsctl::on(&m.exec)).map_err(fail("read it"))?;
                    o.files = observe::scan_files_on(&m.exec, &cfg.stack, &m.state_dir).map_err(fail("read its state dir"))?;
                    // The files the registry and this host's import blocks name, read there.
                    let wanted = observe::imports::wanted_paths(registry, &m.cfg, &m.state_dir);
                    if !wanted.is_empty() {
                        let scan = observe::imports::scan_on(&m.exec, &wanted, &m.state_dir);
                        o.paths = scan.paths;
                        o.files.extend(scan.files);
                    }
                    // OVMF is looked for on the host that boots the guest.
                    o.firmware = observe::firmware_files_on(&m.exec);
                    Ok(o)
                })
            })
            .collect();
        handles.into_iter().map(|j| j.join().unwrap_or_else(|_| Err(Failed { host: "?".into(), uri: String::new(), what: "read", error: HostError::new("read", "host", "the reading thread panicked") }))).collect()
    });
    let mut local = local;
    for (m, o) in members.iter_mut().zip(all_or_report(results, "nothing was changed on any host")?) {
        m.observed = if m.host.is_none() { local.take().unwrap_or(o) } else { o };
    }
    let first = &members[0].observed;
    let (hashes, pending, names) = (first.source_hashes.clone(), first.pending_waits.clone(), first.names.clone());
    for m in members.iter_mut().skip(1) {
        m.observed.source_hashes = hashes.clone();
        m.observed.pending_waits = pending.clone();
        m.observed.names = names.clone();
    }
    share_imports(cfg, members);
    Ok(())
}

/// The index of the host a registry entry goes to (see [`share_imports`]):
/// the one `placed` names when its observation holds the object, else the
/// first whose observation does (hosts sharing a filesystem all see a
/// file there), else the one `placed` names, else this machine (the first).
fn import_home(entry: &crate::observe::imports::Imported, hosts: &[(Option<&str>, &Observed)], placed: Option<&str>) -> usize {
    let at_placed = || placed.and_then(|p| hosts.iter().position(|(h, _)| *h == Some(p)));
    at_placed()
        .filter(|i| entry.matches(hosts[*i].1))
        .or_else(|| hosts.iter().position(|(_, o)| entry.matches(o)))
        .or_else(at_placed)
        .unwrap_or(0)
}

/// The stack's import registry (this machine's) shared out: each entry to
/// the host whose observation holds its object (the same name and UUID),
/// else to the host its address is placed on (whose plan then says the
/// object is gone), else to this machine. Other stacks' registries go to
/// every host (an object another stack imported is never taken over).
fn share_imports(cfg: &Configuration, members: &mut [Member]) {
    let Some(first) = members.first_mut() else { return };
    let (registry, others) = (std::mem::take(&mut first.observed.imports), first.observed.other_imports.clone());
    let hosts: Vec<(Option<&str>, &Observed)> = members.iter().map(|m| (m.host.as_deref(), &m.observed)).collect();
    let homes: Vec<usize> = registry.iter().map(|(a, o)| import_home(o, &hosts, cfg.placement.host_of(a))).collect();
    for ((a, o), at) in registry.into_iter().zip(homes) {
        members[at].observed.imports.insert(a, o);
    }
    for m in members.iter_mut().skip(1) {
        m.observed.other_imports = others.clone();
    }
}

/// Each member's plan; an instance whose host changed migrates live
/// where it can (`plan::migrate`).
pub(super) fn plans(members: &[Member], destroy: bool, replace: &[String], targets: &[String], fingerprint: bool) -> Vec<Plan> {
    // The records (the import registry) are this machine's, the first member's.
    let records = members.first().map(|m| m.state_dir.clone());
    let mut plans: Vec<Plan> = members
        .iter()
        .map(|m| {
            let opts = PlanOptions { destroy, replace: replace.to_vec(), state_dir: m.state_dir.clone(), kvm_usable: m.kvm, targets: targets.to_vec(), fingerprint, records: records.clone() };
            plan::plan(&m.cfg, &m.observed, &opts)
        })
        .collect();
    // A target lives on some hosts only: it is missing only when no part has it.
    for t in targets {
        let missing: Vec<String> = ["resource", "module"].iter().map(|w| format!("--target {t}: no such {w}")).collect();
        let is_missing = |p: &Plan| p.errors.iter().any(|e| missing.contains(e));
        if !plans.iter().all(is_missing) {
            for p in &mut plans {
                p.errors.retain(|e| !missing.contains(e));
            }
        } else {
            for p in plans.iter_mut().skip(1) {
                p.errors.retain(|e| !missing.contains(e));
            }
        }
    }
    if !destroy {
        let parts: Vec<plan::migrate::Part<'_>> =
            members.iter().map(|m| plan::migrate::Part { host: m.host.as_deref(), cfg: &m.cfg, observed: &m.observed, state_dir: &m.state_dir, kvm: m.kvm }).collect();
        plan::migrate::plan_migrations(&parts, &mut plans);
    }
    plans
}

/// The plan text: each host's part under its name (a host with nothing of
/// the stack and nothing to do is one line), then the fleet's totals.
pub(super) fn text(members: &[Member], plans: &[Plan], color: bool) -> String {
    let bold = if color { "\x1b[1m" } else { "" };
    let reset = if color { "\x1b[0m" } else { "" };
    let mut out = String::new();
    let mut total = Plan::default();
    for (m, p) in members.iter().zip(plans) {
        let idle = p.changes.is_empty() && p.errors.is_empty() && p.conflicts.is_empty() && p.data.is_empty();
        if idle {
            out.push_str(&format!("{bold}On {}{reset}: nothing of this stack, nothing to do.\n\n", m.label));
            continue;
        }
        out.push_str(&format!("{bold}On {}{reset}:\n\n", m.label));
        out.push_str(&render::text(p, color));
        out.push('\n');
        total.changes.extend(p.changes.iter().cloned());
    }
    out.push_str(&format!("Fleet of {} hosts: {}\n", members.len(), total.summary()));
    out
}

/// The plan as JSON: the stack, and one entry per host.
pub(super) fn json(stack: &str, members: &[Member], plans: &[Plan]) -> serde_json::Value {
    serde_json::json!({
        "stack": stack,
        "hosts": members.iter().zip(plans).map(|(m, p)| serde_json::json!({
            "host": m.host,
            "label": m.label,
            "plan": render::to_json(p),
        })).collect::<Vec<_>>()
    })
}

/// Takes the stack's lock on every remote member (`<state>/<stack>/.lock`
/// there), waiting while another run holds one. This machine's lock is
/// the caller's (`lock_stack`), taken first.
pub(super) fn lock_remote(cfg: &Configuration, members: &[Member]) -> Result<Vec<HeldLock>, ExitCode> {
    let remote: Vec<&Member> = members.iter().filter(|m| m.host.is_some()).collect();
    // Every host at once first: the usual case, where no one else holds any.
    let tries: Vec<Result<Option<HeldLock>, ExitCode>> = std::thread::scope(|s| {
        let handles: Vec<_> = remote.iter().map(|m| s.spawn(|| lock_one(cfg, m, false))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Err(ExitCode::from(1)))).collect()
    });
    let mut held = Vec::new();
    let mut busy = false;
    for t in tries {
        match t {
            Ok(Some(l)) => held.push(l),
            Ok(None) => busy = true,
            // The locks taken are released as `held` drops.
            Err(c) => return Err(c),
        }
    }
    if !busy {
        return Ok(held);
    }
    // Another run holds one: let go of all of them, then take them one by
    // one in the hosts' order, as every run does when it must wait, so two
    // runs never each hold what the other waits for.
    drop(held);
    remote.iter().map(|m| lock_one(cfg, m, true).and_then(|l| l.ok_or(ExitCode::from(1)))).collect()
}

/// The stack's lock on one remote host (its directory made first): `None`
/// when another run holds it and `wait` is false; with `wait`, polls until
/// it is free (saying once that it waits).
fn lock_one(cfg: &Configuration, m: &Member, wait: bool) -> Result<Option<HeldLock>, ExitCode> {
    let dir = m.state_dir.join(&cfg.stack);
    let path = dir.join(".lock");
    let fail = |e: HostError| {
        eprintln!("error: {}: cannot take the stack lock {}: {e}", m.label, path.display());
        ExitCode::from(1)
    };
    m.exec.mkdir_all(&dir, 0o755).map_err(fail)?;
    let mut said = false;
    loop {
        // The lock file says who holds it, for a later run that finds it held.
        match m.exec.try_lock(&path, holder_line().trim_end()).map_err(fail)? {
            Some(l) => return Ok(Some(HeldLock { lock: Some(l), exec: m.exec.clone(), path, dir })),
            None if break_stale_lock(&m.exec, &path).map_err(fail)? => {
                eprintln!(
                    "note: the lock of stack \"{}\" on {} was held by a virtform run on this machine that is gone (it lost {} while running): its holder there was ended",
                    cfg.stack, m.label, m.label
                );
            }
            None if !wait => return Ok(None),
            None => {
                if !said {
                    eprintln!("waiting for the lock of stack \"{}\" on {} ({}): another virtform run holds it", cfg.stack, m.label, path.display());
                    said = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
    }
}

/// This machine in a remote lock file: its machine id (else its host name).
fn machine_id() -> String {
    let id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let id = id.trim();
    if !id.is_empty() {
        return id.to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string()
}

/// What a run writes into a remote lock file it holds.
fn holder_line() -> String {
    format!("virtform {} {}\n", machine_id(), std::process::id())
}

/// A remote lock held by a run of this machine that is gone: the holder's
/// session on the host outlived it (the host was unreachable when the run
/// ended, so its sshd never saw the connection close). Its holder process
/// there (exactly the `flock … cat` virtform runs, with the lock file open)
/// is ended by PID. The lock file must name the same dead run twice, 2 s
/// apart (a new holder rewrites it at once). Holders of other machines are
/// never touched.
fn break_stale_lock(exec: &Executor, path: &std::path::Path) -> Result<bool, HostError> {
    use std::ffi::OsStr;
    let holder = |bytes: Option<Vec<u8>>| -> Option<u32> {
        let text = String::from_utf8(bytes?).ok()?;
        let mut w = text.split_whitespace();
        let (tag, machine, pid) = (w.next()?, w.next()?, w.next()?.parse::<u32>().ok()?);
        (tag == "virtform" && machine == machine_id()).then_some(pid)
    };
    let alive = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "virtform");
    let Some(pid) = holder(exec.read_opt(path)?) else { return Ok(false) };
    if alive(pid) {
        return Ok(false);
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    if holder(exec.read_opt(path)?) != Some(pid) {
        return Ok(false);
    }
    let pattern: String = path.display().to_string().chars().flat_map(|c| if "*?[]\\".contains(c) { vec!['\\', c] } else { vec![c] }).collect();
    let argv = ["find", "/proc", "-mindepth", "3", "-maxdepth", "3", "-path", "/proc/*/fd/*", "-lname", &pattern].map(OsStr::new);
    let found = exec.output("find the lock's holder", &path.display().to_string(), &argv, crate::host::exec::Input::None)?;
    // Its holder command, as this version runs it or as the one before did.
    let p = path.as_os_str().as_encoded_bytes();
    let cmdline = |argv: &[&[u8]]| argv.iter().flat_map(|a| a.iter().copied().chain([0u8])).collect::<Vec<u8>>();
    let wants = [cmdline(&[b"flock", b"-n", b"-E", b"75", p, b"tee", b"--", p]), cmdline(&[b"flock", b"-n", b"-E", b"75", p, b"cat"])];
    let mut ended = false;
    for line in String::from_utf8_lossy(&found.stdout).lines() {
        let Some(p) = line.strip_prefix("/proc/").and_then(|r| r.split('/').next()).and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Some(got) = exec.read_opt(std::path::Path::new(&format!("/proc/{p}/cmdline")))? else { continue };
        if !wants.contains(&got) {
            continue;
        }
        let pid = p.to_string();
        let kill = ["kill", "-TERM", "--", pid.as_str()].map(OsStr::new);
        ended |= exec.output("end the stale lock holder", &pid, &kill, crate::host::exec::Input::None)?.success();
    }
    if ended {
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    Ok(ended)
}

/// A stack lock held on a remote host. Dropped, it removes its lock file
/// (still holding the lock, as `lock_stack` does here) and the stack
/// directory when nothing else is in it, then releases the lock: a
/// refused or failed run leaves the host's state dir as it was, and a
/// host with nothing of the stack left keeps no empty directory.
pub(super) struct HeldLock {
    lock: Option<crate::host::exec::RemoteLock>,
    exec: Executor,
    path: PathBuf,
    dir: PathBuf,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let _ = self.exec.remove_file(&self.path);
        let argv = [std::ffi::OsStr::new("rmdir"), std::ffi::OsStr::new("--ignore-fail-on-non-empty"), self.dir.as_os_str()];
        let _ = self.exec.output("remove the stack directory", &self.dir.display().to_string(), &argv, crate::host::exec::Input::None);
        drop(self.lock.take());
    }
}

/// After a complete destroy: the stack's directory on each remote host,
/// as `engine::remove_stack_dir` does here (leftover logs, seeds,
/// delivered boot files, UEFI stores; empty directories). With
/// `after_apply`, after a complete apply: the same on the hosts where
/// nothing of the stack is placed any more (a guest migrated away, a host
/// block kept with nothing on it), and on the others only the empty
/// directories (a guest that left them), so none is left behind.
pub(super) fn remove_remote_stack_dirs(cfg: &Configuration, members: &[Member], after_apply: bool) {
    use std::ffi::OsStr;
    for m in members.iter().filter(|m| m.host.is_some()) {
        let dir = m.state_dir.join(&cfg.stack);
        let present = |subs: &[&str]| -> Vec<PathBuf> {
            let all: Vec<PathBuf> = subs.iter().map(|s| dir.join(s)).collect();
            let stats = m.exec.stat_many(&all.iter().map(PathBuf::as_path).collect::<Vec<_>>()).unwrap_or_default();
            all.into_iter().zip(stats).filter(|(_, s)| s.is_some()).map(|(p, _)| p).collect()
        };
        let with_files = if after_apply && places_objects(m) { Vec::new() } else { present(&["console", "seeds", "nvram", "boot", "waits"]) };
        if !with_files.is_empty() {
            let mut argv: Vec<&OsStr> = vec![OsStr::new("find")];
            argv.extend(with_files.iter().map(|p| p.as_os_str()));
            argv.extend(["-type", "f", "-delete"].map(OsStr::new));
            let _ = m.exec.output("remove the stack's files", &dir.display().to_string(), &argv, crate::host::exec::Input::None);
        }
        let existing = present(&["disks", "volumes", "console", "seeds", "nvram", "boot", "waits"]);
        if !existing.is_empty() {
            let mut argv: Vec<&OsStr> = vec![OsStr::new("rmdir"), OsStr::new("--ignore-fail-on-non-empty")];
            argv.extend(existing.iter().map(|p| p.as_os_str()));
            let _ = m.exec.output("remove the stack's directories", &dir.display().to_string(), &argv, crate::host::exec::Input::None);
        }
        // The directory itself goes with the lock (`HeldLock`), still held
        // until then.
    }
}

/// The step DAG of every member's plan, one DAG: each member's steps on
/// its own executor and libvirt connection (taken from the member).
pub(super) fn lower_all(g: &Global, a: &super::plan::ApplyArgs, members: &mut [Member], plans: &[Plan]) -> crate::apply::dag::Dag<crate::apply::engine::HostStep> {
    use crate::apply::engine::{self, Env};
    let mut dag = crate::apply::dag::Dag::new();
    let peers: BTreeMap<Option<String>, Executor> = members.iter().map(|m| (m.host.clone(), m.exec.clone())).collect();
    // Each member's steps, by position in the one DAG.
    let mut spans = Vec::new();
    for (m, p) in members.iter_mut().zip(plans) {
        let Some(libvirt) = m.libvirt.take() else { continue };
        let local = m.host.is_none();
        let env = std::sync::Arc::new(Env {
            links: if local { Box::new(IpLinks::local()) } else { Box::new(IpLinks::on(&m.exec)) },
            libvirt: Box::new(libvirt),
            ovs: if local { Box::new(Vsctl::default()) } else { Box::new(Vsctl::on(&m.exec)) },
            state_dir: m.state_dir.clone(),
            exec: m.exec.clone(),
            records: g.state_dir.clone(),
            deliveries: std::mem::take(&mut m.deliveries),
            shutdown_timeout: std::time::Duration::from_secs(a.shutdown_timeout),
            detach_timeout: std::time::Duration::from_secs(a.detach_timeout),
            peers: peers.clone(),
            memo: Default::default(),
        });
        let start = dag.len();
        dag.append(engine::lower(p, &m.cfg, env, m.kvm, &m.observed.source_hashes));
        spans.push((m.host.clone(), start..dag.len()));
    }
    migrations_first(&mut dag, &spans);
    // depends_on across hosts (each host's lowering sees its own part only).
    let ranges: Vec<std::ops::Range<usize>> = spans.iter().map(|(_, r)| r.clone()).collect();
    let parts: Vec<Vec<(String, Vec<String>)>> = spans
        .iter()
        .map(|(h, _)| {
            let part = members.iter().find(|m| m.host == *h).map(|m| &m.cfg);
            part.map(|c| c.resources.iter().filter(|r| !r.depends_on.is_empty()).map(|r| (r.address.to_string(), r.depends_on.clone())).collect()).unwrap_or_default()
        })
        .collect();
    let steps: Vec<(String, bool)> = (0..dag.len()).map(|i| (dag.step(i).address.clone(), dag.step(i).op.is_removal())).collect();
    for (after, before) in cross_host_edges(&ranges, &parts, &steps) {
        dag.depend(after, before);
    }
    dag
}

/// The edges `depends_on` makes between hosts: `(step, the step it
/// follows)`. Each host's part lists its resources' `depends_on`
/// (`parts[i]`, for the steps in `ranges[i]`); `steps[id]` is a step's
/// address and whether it removes. A resource's steps that make or change
/// follow those of what it depends on on the other hosts; a removal of
/// what it depends on follows the resource's own removal (as on one host).
/// A `depends_on` names a block, an instance or a module, as on one host.
fn cross_host_edges(ranges: &[std::ops::Range<usize>], parts: &[Vec<(String, Vec<String>)>], steps: &[(String, bool)]) -> Vec<(usize, usize)> {
    let mut edges = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let Some(mine) = ranges.get(i) else { continue };
        for (addr, deps) in part {
            let own: Vec<usize> = mine.clone().filter(|s| steps[*s].0 == *addr).collect();
            for d in deps {
                for theirs in ranges.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, r)| r) {
                    for t in theirs.clone().filter(|t| crate::apply::engine::depends_on_names(d, &steps[*t].0)) {
                        for s in &own {
                            match (steps[*s].1, steps[t].1) {
                                (false, false) => edges.push((*s, t)),
                                (true, true) => edges.push((t, *s)),
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
    }
    edges
}

/// A migrated guest's old host removes what it used (its disk files, its
/// ports, the networks it was on) only after the guest has left: each
/// removal on the source host runs after every migration from it.
fn migrations_first(dag: &mut crate::apply::dag::Dag<crate::apply::engine::HostStep>, spans: &[(Option<String>, std::ops::Range<usize>)]) {
    use crate::apply::engine::Op;
    let mut edges = Vec::new();
    for (_, range) in spans {
        for id in range.clone() {
            let Op::Migrate { from, .. } = &dag.step(id).op else { continue };
            let Some((_, source)) = spans.iter().find(|(h, _)| h == from) else { continue };
            for r in source.clone() {
                if dag.step(r).op.is_removal() {
                    edges.push((r, id));
                }
            }
        }
    }
    for (r, id) in edges {
        dag.depend(r, id);
    }
}

#[cfg(test)]
mod tests {
    use super::{cross_host_edges, import_home};
    use crate::observe::imports::Imported;
    use crate::observe::Observed;

    /// A registry entry goes to the host holding its object (the same name
    /// and UUID), else to the host its address is placed on, else here.
    #[test]
    fn an_imported_network_is_planned_on_the_host_that_holds_it() {
        let net = |uuid: &str| {
            let mut o = Observed::default();
            let n = crate::observe::ActualNetwork { name: "legacy".into(), uuid: uuid.into(), active: true, autostart: true, def: None };
            o.networks.insert("legacy".into(), n);
            o
        };
        let (here, b, c) = (Observed::default(), net("u-1"), net("u-other"));
        let hosts = [(None, &here), (Some("host.b"), &b), (Some("host.c"), &c)];
        let entry = Imported::LibvirtNetwork { name: "legacy".into(), uuid: "u-1".into() };
        assert_eq!(import_home(&entry, &hosts, Some("host.c")), 1, "where the object is");
        let gone = Imported::LibvirtNetwork { name: "legacy".into(), uuid: "u-2".into() };
        assert_eq!(import_home(&gone, &hosts, Some("host.c")), 2, "where it is placed: its plan says it is gone");
        assert_eq!(import_home(&gone, &hosts, None), 0);
        assert_eq!(import_home(&gone, &hosts, Some("host.undeclared")), 0);
    }

    /// Hosts sharing a filesystem (NFS, or the lab's hosts outside their
    /// private directories) all see an imported file: it goes to the host
    /// its address is placed on when that one sees it too.
    #[test]
    fn an_imported_file_seen_by_several_hosts_goes_to_the_one_it_is_placed_on() {
        use crate::observe::imports::PathFact;
        let seen = || {
            let mut o = Observed::default();
            o.paths.insert("/srv/d.qcow2".into(), PathFact::File { dev: 1, ino: 2, refusal: None, marker: None });
            o
        };
        let (here, b, c) = (seen(), Observed::default(), seen());
        let hosts = [(None, &here), (Some("host.b"), &b), (Some("host.c"), &c)];
        let entry = Imported::File { path: "/srv/d.qcow2".into(), dev: 1, ino: 2 };
        assert_eq!(import_home(&entry, &hosts, Some("host.c")), 2, "placed there, and seen there");
        assert_eq!(import_home(&entry, &hosts, Some("host.b")), 0, "not seen where placed: where it is");
        assert_eq!(import_home(&entry, &hosts, None), 0);
    }

    /// instance.app on host b depends on instance.db (host a) and on
    /// module.cache (host c): its making follows theirs; removals go the
    /// other way; a step of the same host is left to that host's lowering.
    #[test]
    fn depends_on_across_hosts_orders_the_steps_of_both_hosts() {
        let steps: Vec<(String, bool)> = [
            ("instance.db", false),        // 0: host a
            ("disk.db", false),            // 1: host a
            ("instance.app", false),       // 2: host b
            ("instance.app", true),        // 3: host b (a replaced domain's removal)
            ("network.lan", false),        // 4: host b
            ("module.cache.instance.c", false), // 5: host c
            ("module.cache.instance.c", true),  // 6: host c
        ]
        .iter()
        .map(|(a, r)| (a.to_string(), *r))
        .collect();
        let ranges = vec![0..2, 2..5, 5..7];
        let parts = vec![vec![], vec![("instance.app".to_string(), vec!["instance.db".to_string(), "module.cache".to_string(), "network.lan".to_string()])], vec![]];
        let mut e = cross_host_edges(&ranges, &parts, &steps);
        e.sort();
        assert_eq!(e, vec![(2, 0), (2, 5), (6, 3)]);
    }
}
