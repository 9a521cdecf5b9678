//! `virtform plan`, `apply` and `destroy`.

use super::{dir_or_cwd, hosts_record, Global};
use crate::apply::dag::Event;
use crate::apply::engine::{self, Env};
use crate::config::Configuration;
use crate::host::libvirt::{Libvirt, VirtLibvirt};
use crate::host::links::IpLinks;
use crate::host::ovs::Vsctl;
use crate::observe::{self, Observed};
use crate::plan::{self, render, Plan, PlanOptions};
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Configuration directory (default: the current directory).
    pub dir: Option<PathBuf>,
    /// Plan the destruction of every object of the stack.
    #[arg(long)]
    pub destroy: bool,
    /// Force the replacement of a resource (repeatable), e.g. --replace instance.web.
    #[arg(long, value_name = "ADDRESS")]
    pub replace: Vec<String>,
    /// Plan only this resource and what it depends on (repeatable).
    #[arg(long, value_name = "ADDRESS")]
    pub target: Vec<String>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 when there is nothing to do, 2 when there are changes, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Save the plan to FILE; `virtform apply FILE` then does exactly it, and
    /// refuses if the host changed in between.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// The plan file format this virtform writes and reads.
const PLAN_FILE_FORMAT: &str = "1";

/// A saved plan: what to load, what the host looked like, what to do.
///
/// It holds the `--var` values as given (sensitive ones included, so that
/// `apply FILE` computes the same plan): it is written readable by its
/// owner only.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PlanFile {
    format_version: String,
    dir: PathBuf,
    vars: Vec<String>,
    var_files: Vec<PathBuf>,
    stack: String,
    state_dir: PathBuf,
    destroy: bool,
    replace: Vec<String>,
    #[serde(default)]
    targets: Vec<String>,
    fingerprint: String,
    plan: serde_json::Value,
    /// A fleet's plan (a configuration with `host` blocks): each host's
    /// fingerprint, this machine's as `host: null`; `plan` is then the
    /// fleet's JSON (`fleet::json`) and `fingerprint` is empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    hosts: Vec<SavedHost>,
}

/// One host of a saved fleet plan: what it looked like when planned.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct SavedHost {
    pub(super) host: Option<String>,
    pub(super) fingerprint: String,
}

/// What `apply FILE` of a fleet's plan checks before it changes anything:
/// every host as it was, the plan as it was (see `apply_saved`).
pub(super) struct Saved<'a> {
    file: &'a std::path::Path,
    hosts: &'a [SavedHost],
    plan: &'a serde_json::Value,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Configuration directory (default: the current directory), or a plan
    /// file saved by `plan --out`.
    pub dir: Option<PathBuf>,
    /// Progress as JSON lines (one object per event) on standard output.
    #[arg(long)]
    pub json: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// How many steps run at once on each host (waits do not count); at least 1.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub parallelism: u64,
    /// Force the replacement of a resource (repeatable).
    #[arg(long, value_name = "ADDRESS")]
    pub replace: Vec<String>,
    /// Apply only this resource and what it depends on (repeatable).
    #[arg(long, value_name = "ADDRESS")]
    pub target: Vec<String>,
    /// Seconds a guest gets to shut down gracefully before it is stopped.
    #[arg(long, default_value_t = 60)]
    pub shutdown_timeout: u64,
    /// Seconds a guest gets to release a hot-unplugged NIC or disk before the apply fails
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub detach_timeout: u64,
}

pub(super) struct Session {
    pub(super) cfg: Configuration,
    libvirt: VirtLibvirt,
    pub(super) observed: Observed,
    pub(super) kvm: bool,
}

/// The configuration of DIR; for a stack named with --stack whose directory
/// has no configuration files (deleted, or never there), an empty one, so
/// `destroy --stack NAME` and `show --stack NAME` still work.
///
/// A directory that does not exist (a typo) is an error, never an empty
/// configuration: `apply --stack prod ./typo` must not plan to delete every
/// object of stack prod.
/// `data`: how data sources read the host (plans and applies; `None`: read
/// it here, see [`DataFrom`]); a destroy does not need them, so a data
/// source that vanished never blocks tearing the stack down.
fn load_or_empty(g: &Global, dir: PathBuf, data: DataFrom) -> Result<Configuration, ExitCode> {
    let has_files = crate::config::config_files(&dir).map(|f| !f.is_empty()).unwrap_or(false);
    match (&g.stack, has_files) {
        (Some(stack), false) if dir.is_dir() => {
            if let Err(m) = crate::model::check_stack(stack) {
                eprintln!("error: {m}");
                return Err(ExitCode::from(1));
            }
            eprintln!("note: no configuration in {}; acting on stack \"{stack}\" from the host's markers alone", dir.display());
            Ok(Configuration::empty(stack, dir))
        }
        _ => match data {
            DataFrom::Host => g.load_reading_host(dir),
            DataFrom::Shared(h) => g.load_with_data(dir, h),
            DataFrom::Nowhere => g.load(dir),
        },
    }
}

/// Loads the configuration and observes the host, at the same time: the
/// load is CPU work, the host reads are waits on libvirtd, `ip` and
/// `ovs-vsctl`. Only the stack's files need the configuration; they are
/// scanned as soon as it is loaded, while the host reads go on. For
/// commands that hold no lock (`plan`, `show`).
///
/// A configuration error is reported alone, and the reading thread stops
/// at its next phase (connect, KVM check, read), so a typo does not cost a
/// whole host read. (The thread is always joined: a process that exits
/// while a thread is inside libvirt can crash in libvirt's exit handlers.)
fn open(g: &Global, dir: Option<PathBuf>, read_data: bool) -> Result<Session, ExitCode> {
    let dir = dir_or_cwd(dir);
    let cancel = std::sync::atomic::AtomicBool::new(false);
    // Data sources are answered from the observation made here.
    let shared = std::sync::Arc::new(observe::data::SharedObservation::default());
    let (cfg, host) = std::thread::scope(|s| {
        let host = s.spawn(|| -> Result<(VirtLibvirt, bool, Observed), HostFailure> {
            let _unfilled = shared.guard();
            let go_on = || if cancel.load(std::sync::atomic::Ordering::Relaxed) { Err(HostFailure::Cancelled) } else { Ok(()) };
            let libvirt = VirtLibvirt::open(&g.connect).map_err(HostFailure::Connect)?;
            go_on()?;
            let kvm = libvirt.kvm_usable();
            go_on()?;
            let observed = observe::observe_host(&IpLinks::local(), &libvirt, &Vsctl::default()).map_err(HostFailure::Read)?;
            shared.put(Ok(&observed));
            Ok((libvirt, kvm, observed))
        });
        let data = if read_data { DataFrom::Shared(crate::config::DataHandle(shared.clone())) } else { DataFrom::Nowhere };
        let cfg = load_or_empty(g, dir, data);
        if cfg.is_err() {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // The stack's files, while the host is still being read.
        let cfg = cfg.map(|cfg| {
            let scanned = observe::scan_files(&cfg, &g.state_dir, false);
            (cfg, scanned)
        });
        (cfg, host.join())
    });
    let host = host.unwrap_or(Err(HostFailure::Panic));
    let (cfg, scanned) = match cfg {
        Ok(c) => c,
        Err(code) => {
            // A data source that waited for a failed read said "see below".
            if let Err(f) = host {
                f.report();
            }
            return Err(code);
        }
    };
    let (libvirt, kvm, mut observed) = host.map_err(HostFailure::report)?;
    let (files, hashes) = scanned.map_err(|e| HostFailure::Read(e).report())?;
    observed.files = files;
    observed.source_hashes = hashes;
    observed.pending_waits = observe::scan_pending_waits(&g.state_dir, &cfg.stack);
    observed.add_imports(observe::imports::scan(&cfg, &g.state_dir).map_err(|e| HostFailure::Read(e).report())?);
    observed.names = observe::Names::read(&g.state_dir, &cfg.stack).map_err(|e| HostFailure::Read(e).report())?;
    let mut cfg = cfg;
    crate::plan::moved::keep_names(&mut cfg, &observed, &g.state_dir);
    Ok(Session { cfg, libvirt, observed, kvm })
}

/// Where the loader's data sources read the host.
enum DataFrom {
    /// Read it for them (loads before observation: apply).
    Host,
    /// The observation another thread is making (plan, show).
    Shared(crate::config::DataHandle),
    /// Nowhere: facts unknown (destroy).
    Nowhere,
}

/// Why the host could not be read; printed only once the configuration loaded.
enum HostFailure {
    Connect(crate::host::HostError),
    Read(crate::host::HostError),
    Panic,
    /// Stopped because the configuration failed to load (not reported).
    Cancelled,
}

impl HostFailure {
    fn report(self) -> ExitCode {
        match self {
            HostFailure::Connect(e) => eprintln!("error: {e}"),
            HostFailure::Read(e) => eprintln!("error: cannot read the host: {e}"),
            HostFailure::Panic => eprintln!("error: cannot read the host: the reading thread panicked"),
            HostFailure::Cancelled => {}
        }
        ExitCode::from(1)
    }
}

/// Opens the libvirt connection and checks KVM while the configuration
/// loads (an apply observes only under the stack's lock, after the load).
pub(super) fn load_and_connect(g: &Global, dir: PathBuf, read_data: bool) -> Result<(Configuration, (VirtLibvirt, bool)), ExitCode> {
    let (cfg, conn) = std::thread::scope(|s| {
        let conn = s.spawn(|| -> Result<(VirtLibvirt, bool), HostFailure> {
            let libvirt = VirtLibvirt::open(&g.connect).map_err(HostFailure::Connect)?;
            let kvm = libvirt.kvm_usable();
            Ok((libvirt, kvm))
        });
        (load_or_empty(g, dir, if read_data { DataFrom::Host } else { DataFrom::Nowhere }), conn.join())
    });
    let cfg = cfg?;
    let conn = conn.unwrap_or(Err(HostFailure::Panic)).map_err(HostFailure::report)?;
    Ok((cfg, conn))
}

/// Observes the host for a loaded configuration, over a connection opened
/// beforehand (with whether KVM is usable).
pub(super) fn connect(g: &Global, cfg: Configuration, (libvirt, kvm): (VirtLibvirt, bool)) -> Result<Session, ExitCode> {
    let observed = observe::observe(&IpLinks::local(), &libvirt, &Vsctl::default(), &cfg, &g.state_dir, true).map_err(|e| HostFailure::Read(e).report())?;
    let mut cfg = cfg;
    crate::plan::moved::keep_names(&mut cfg, &observed, &g.state_dir);
    Ok(Session { cfg, libvirt, observed, kvm })
}

/// `fingerprint`: whether the plan needs the host's fingerprint (saved
/// plans and `--json`); hashing every owned domain's definition costs time
/// on large hosts, so plain plans and applies skip it.
fn make_plan(g: &Global, s: &Session, destroy: bool, replace: &[String], targets: &[String], fingerprint: bool) -> Plan {
    plan::plan(&s.cfg, &s.observed, &PlanOptions { destroy, replace: replace.to_vec(), state_dir: g.state_dir.clone(), kvm_usable: s.kvm, targets: targets.to_vec(), fingerprint, records: None })
}

pub fn run_plan(g: &Global, a: PlanArgs) -> ExitCode {
    let s = match open(g, a.dir.clone(), !a.destroy) {
        Ok(s) => s,
        Err(c) => return c,
    };
    if let Err(c) = check_hosts_record(g, &s.cfg) {
        return c;
    }
    if s.cfg.hosts().next().is_some() {
        return plan_fleet(g, &a, s);
    }
    let p = make_plan(g, &s, a.destroy, &a.replace, &a.target, a.out.is_some() || a.json);
    let refused = !p.errors.is_empty() || !p.conflicts.is_empty();
    let code = write_plan(g, &a, &s, &p, refused);
    // The process ends here: the connection is closed, but the loaded
    // configuration and the observed host are not taken apart piece by
    // piece (at 1,000 instances that was 1.4 % of a converged plan's
    // instructions, all of it after the answer was known).
    let Session { cfg, libvirt, observed, kvm: _ } = s;
    drop(libvirt);
    std::mem::forget((cfg, observed, p));
    code
}

/// `plan` of a configuration with `host` blocks: every host observed, each
/// host's part planned against it (see `fleet.rs`).
fn plan_fleet(g: &Global, a: &PlanArgs, s: Session) -> ExitCode {
    let Session { mut cfg, libvirt, observed, kvm } = s;
    let mut members = match super::fleet::connect(g, &cfg, libvirt, kvm, &a.target) {
        Ok(m) => m,
        Err(c) => return c,
    };
    if let Err(c) = super::fleet::observe_all(g, &cfg, &mut members, false, Some(observed)) {
        return c;
    }
    if let Err(c) = super::fleet::keep_names(&mut cfg, &mut members) {
        return c;
    }
    let plans = super::fleet::plans(&members, a.destroy, &a.replace, &a.target, a.json || a.out.is_some());
    // Rendered for --json and --out only (a converged plan of many hosts
    // prints text).
    let json = (a.json || a.out.is_some()).then(|| super::fleet::json(&cfg.stack, &members, &plans));
    let refused = plans.iter().any(|p| !p.errors.is_empty() || !p.conflicts.is_empty());
    if let (Some(out), Some(json), false) = (&a.out, &json, refused) {
        let hosts = members.iter().zip(&plans).map(|(m, p)| SavedHost { host: m.host.clone(), fingerprint: p.fingerprint.clone() }).collect();
        let pf = PlanFile { fingerprint: String::new(), hosts, ..plan_file(g, a, &cfg, json.clone()) };
        if let Err(e) = write_private(out, &serde_json::to_string_pretty(&pf).unwrap_or_default()) {
            eprintln!("error: cannot write the plan file {}: {e}", out.display());
            return ExitCode::from(1);
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json.unwrap_or_default()).unwrap_or_default());
    } else {
        print!("{}", super::fleet::text(&members, &plans, g.color_stdout()));
    }
    if refused {
        if let Some(out) = &a.out {
            eprintln!("error: no plan file written to {}: apply would refuse this plan (see above)", out.display());
        }
        return ExitCode::from(1);
    }
    if a.detailed_exitcode && plans.iter().any(Plan::has_changes) { ExitCode::from(2) } else { ExitCode::SUCCESS }
}

/// A plan file of `plan` for `cfg` (its fingerprints to be filled in).
fn plan_file(g: &Global, a: &PlanArgs, cfg: &Configuration, plan: serde_json::Value) -> PlanFile {
    PlanFile {
        format_version: PLAN_FILE_FORMAT.into(),
        dir: std::fs::canonicalize(&cfg.dir).unwrap_or(cfg.dir.clone()),
        vars: g.vars.clone(),
        var_files: g.var_files.iter().map(|f| std::fs::canonicalize(f).unwrap_or(f.clone())).collect(),
        stack: cfg.stack.clone(),
        state_dir: g.state_dir.clone(),
        destroy: a.destroy,
        replace: a.replace.clone(),
        targets: a.target.clone(),
        fingerprint: String::new(),
        plan,
        hosts: Vec::new(),
    }
}

/// Writes the plan file (`--out`), prints the plan, and says how to exit.
fn write_plan(g: &Global, a: &PlanArgs, s: &Session, p: &Plan, refused: bool) -> ExitCode {
    if let (Some(out), false) = (&a.out, refused) {
        let pf = PlanFile { fingerprint: p.fingerprint.clone(), ..plan_file(g, a, &s.cfg, render::to_json(p)) };
        let text = serde_json::to_string_pretty(&pf).unwrap_or_default();
        if let Err(e) = write_private(out, &text) {
            eprintln!("error: cannot write the plan file {}: {e}", out.display());
            return ExitCode::from(1);
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&render::to_json(p)).unwrap_or_default());
    } else {
        print!("{}", render::text(p, g.color_stdout()));
    }
    if refused {
        if let Some(out) = &a.out {
            eprintln!("error: no plan file written to {}: apply would refuse this plan (see above)", out.display());
        }
        return ExitCode::from(1);
    }
    if a.detailed_exitcode && p.has_changes() { ExitCode::from(2) } else { ExitCode::SUCCESS }
}

pub fn run_apply(g: &Global, a: ApplyArgs, destroy: bool) -> ExitCode {
    let dir = dir_or_cwd(a.dir.clone());
    if dir.is_file() {
        return apply_saved(g, a, &dir, destroy);
    }
    // Load first (to know the stack), lock, then observe under the lock.
    let (cfg, conn) = match load_and_connect(g, dir.clone(), !destroy) {
        Ok(x) => x,
        Err(c) => return c,
    };
    if cfg.hosts().next().is_some() {
        return apply_fleet(g, &a, cfg, conn, destroy, None);
    }
    let _lock = match lock_stack(g, &cfg.stack) {
        Ok(l) => l,
        Err(c) => return c,
    };
    // Under the lock: hosts this stack used are declared, or forgotten.
    let (_, forgotten) = match check_hosts_record(g, &cfg) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let (stack, complete) = (cfg.stack.clone(), a.target.is_empty());
    // The lock is held for the whole observe, plan and apply.
    let s = match connect(g, cfg, conn) {
        Ok(s) => s,
        Err(c) => return c,
    };
    if s.cfg.resources.is_empty() && !destroy && s.cfg.sources.files().is_empty() {
        eprintln!("error: no configuration to apply in {}", s.cfg.dir.display());
        return ExitCode::from(1);
    }
    let p = make_plan(g, &s, destroy, &a.replace, &a.target, false);
    let code = execute(g, &a, s, p, destroy, true);
    // Forgotten hosts leave the record once an apply went through.
    if code == ExitCode::SUCCESS
        && complete
        && !forgotten.is_empty()
        && let Err(e) = hosts_record::HostsRecord::default().write(&g.state_dir, &stack)
    {
        eprintln!("warning: {e}");
    }
    code
}

/// The remote hosts this stack used ([`hosts_record`]) against the
/// configuration: the record and its forgotten hosts (each noted); any
/// other host no longer declared refuses the run, before anything is planned.
fn check_hosts_record(g: &Global, cfg: &Configuration) -> Result<(hosts_record::HostsRecord, Vec<(String, String)>), ExitCode> {
    let record = hosts_record::HostsRecord::read(&g.state_dir, &cfg.stack).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })?;
    match hosts_record::check(cfg, &record, &g.state_dir) {
        Ok(forgotten) => {
            for (_, note) in &forgotten {
                eprintln!("note: {note}");
            }
            Ok((record, forgotten))
        }
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            eprintln!("error: nothing was planned or changed on any host.");
            Err(ExitCode::from(1))
        }
    }
}

/// `apply`/`destroy` of a configuration with `host` blocks: the stack's lock
/// here and on every remote host, every host observed under them, each
/// host's part planned, shown, confirmed, and run as one DAG.
/// With `saved` (`apply FILE`), every host must look as it did when the
/// plan was made and the plan must be the saved one; then it runs without
/// asking, as a saved plan of one host does.
fn apply_fleet(g: &Global, a: &ApplyArgs, mut cfg: Configuration, (libvirt, kvm): (VirtLibvirt, bool), destroy: bool, saved: Option<Saved>) -> ExitCode {
    use super::fleet;
    let _lock = match lock_stack(g, &cfg.stack) {
        Ok(l) => l,
        Err(c) => return c,
    };
    let mut members = match fleet::connect(g, &cfg, libvirt, kvm, &a.target) {
        Ok(m) => m,
        Err(c) => return c,
    };
    tracing::debug!(hosts = members.len(), "connected");
    let _remote_locks = match fleet::lock_remote(&cfg, &members) {
        Ok(l) => l,
        Err(c) => return c,
    };
    tracing::debug!("locked on every host");
    let (old_record, forgotten) = match check_hosts_record(g, &cfg) {
        Ok(x) => x,
        Err(c) => return c,
    };
    if let Err(c) = fleet::observe_all(g, &cfg, &mut members, true, None) {
        return c;
    }
    tracing::debug!("observed every host");
    // Moves start from the objects of every host; their record is this
    // machine's (see the README, "Many hosts").
    if let Err(c) = fleet::keep_names(&mut cfg, &mut members) {
        return c;
    }
    let plans = fleet::plans(&members, destroy, &a.replace, &a.target, saved.is_some());
    if let Some(saved) = &saved
        && let Err(e) = same_as_saved(saved, &cfg.stack, &members, &plans)
    {
        eprintln!("error: {e}; nothing was changed on any host. Run `virtform plan` again.");
        return ExitCode::from(1);
    }
    if !a.json && saved.is_none() {
        print!("{}", fleet::text(&members, &plans, g.color_stdout()));
    }
    if plans.iter().any(|p| !p.conflicts.is_empty() || !p.errors.is_empty()) {
        eprintln!("error: the plan has conflicts or errors; nothing was changed on any host.");
        return ExitCode::from(1);
    }
    let declared = hosts_record::declared(&cfg);
    let holding = |with_changes: bool| -> Vec<String> {
        members.iter().zip(&plans).filter(|(m, p)| fleet::places_objects(m) || (with_changes && p.has_changes())).filter_map(|(m, _)| m.host.clone()).collect()
    };
    let (during, placed) = (hosts_record::during(&old_record, &forgotten, &declared, &holding(true)), holding(false));
    if !plans.iter().any(Plan::has_changes) {
        if !destroy
            && a.target.is_empty()
            && let Err(e) = hosts_record::after_complete(&declared, &placed).write(&g.state_dir, &cfg.stack)
        {
            eprintln!("warning: {e}");
        }
        if destroy {
            engine::remove_stack_dir(&g.state_dir, &cfg.stack);
            fleet::remove_remote_stack_dirs(&cfg, &members, false);
        }
        if a.json {
            println!("{}", serde_json::json!({"event": "summary", "ok": true, "done": 0, "already": 0, "failed": 0, "skipped": 0, "outputs": super::output::outputs_json(&cfg)}));
        } else if destroy {
            println!("Destroy complete: nothing of stack \"{}\" is left on any of the {} hosts.", cfg.stack, members.len());
        } else {
            println!("Apply complete: nothing to do.");
            super::output::print_outputs(&cfg);
        }
        return ExitCode::SUCCESS;
    }
    if !a.auto_approve && saved.is_none() && !confirm() {
        return ExitCode::from(1);
    }
    tracing::debug!("planned");
    // The hosts this run leaves objects on, recorded before it changes any.
    if let Err(e) = during.write(&g.state_dir, &cfg.stack) {
        eprintln!("error: {e}");
        eprintln!("error: nothing was changed on any host.");
        return ExitCode::from(1);
    }
    let dag = fleet::lower_all(g, a, &mut members, &plans);
    tracing::debug!(steps = dag.len(), "lowered");
    if let Err(cycle) = dag.validate() {
        eprintln!("internal error: the apply steps form a cycle: {}", cycle.join(" -> "));
        return ExitCode::from(1);
    }
    let report = run_dag(a, &dag);
    // The steps hold the connections; they end before the executors do.
    drop(dag);
    if report.ok() && a.target.is_empty() {
        if let Err(e) = hosts_record::after_complete(&declared, if destroy { &[] } else { &placed }).write(&g.state_dir, &cfg.stack) {
            eprintln!("warning: {e}");
        }
        if !destroy {
            // No stack directory left empty on any host, and nothing where nothing is placed any more.
            fleet::remove_remote_stack_dirs(&cfg, &members, true);
        }
    }
    if report.ok() && destroy {
        engine::remove_stack_dir(&g.state_dir, &cfg.stack);
        fleet::remove_remote_stack_dirs(&cfg, &members, false);
    }
    if a.json {
        println!("{}", serde_json::json!({"event": "summary", "ok": report.ok(), "done": report.done.len(), "already": report.already.len(), "failed": report.failed.len(), "skipped": report.skipped.len(), "outputs": super::output::outputs_json(&cfg)}));
        return if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) };
    }
    finish(&report, destroy, &format!(" ({} hosts)", members.len()), "The hosts are", || {
        if !destroy {
            super::output::print_outputs(&cfg);
        }
    })
}

/// Whether a fleet's plan, made again under the locks, is the saved one:
/// the same hosts, each looking as it did (its fingerprint), and the same
/// plan; the first difference in words.
fn same_as_saved(saved: &Saved, stack: &str, members: &[super::fleet::Member], plans: &[Plan]) -> Result<(), String> {
    let file = saved.file.display();
    let now: Vec<Option<&str>> = members.iter().map(|m| m.host.as_deref()).collect();
    let then: Vec<Option<&str>> = saved.hosts.iter().map(|h| h.host.as_deref()).collect();
    if now != then {
        let name = |h: &Option<&str>| h.unwrap_or("this machine").to_string();
        return Err(format!(
            "the plan in {file} is for hosts {}, but the configuration reaches {} now",
            then.iter().map(name).collect::<Vec<_>>().join(", "),
            now.iter().map(name).collect::<Vec<_>>().join(", ")
        ));
    }
    for ((m, p), h) in members.iter().zip(plans).zip(saved.hosts) {
        if p.fingerprint != h.fingerprint {
            return Err(format!("{} changed since this plan was made ({file})", m.label));
        }
    }
    if super::fleet::json(stack, members, plans) != *saved.plan {
        return Err(format!("the plan in {file} is not what virtform plans now: the configuration changed since it was made, or the file was edited"));
    }
    Ok(())
}

/// The end of an apply's text output: the headline when every step
/// succeeded (each step was printed as it finished) and `after`, else the
/// report and how to converge.
fn finish(report: &crate::apply::dag::Report, destroy: bool, suffix: &str, who: &str, after: impl FnOnce()) -> ExitCode {
    println!();
    if report.ok() {
        let rendered = report.render();
        let headline = rendered.lines().last().unwrap_or("").replace("Apply complete", if destroy { "Destroy complete" } else { "Apply complete" });
        println!("{headline}{suffix}");
        after();
        ExitCode::SUCCESS
    } else {
        print!("{}", report.render());
        println!();
        eprintln!("{who} left as the report says; run `virtform plan` to see what remains, and `virtform apply` again to converge.");
        ExitCode::from(1)
    }
}

/// `virtform show [DIR] [--json]`: what the host holds for the stack.
pub fn run_show(g: &Global, dir: Option<PathBuf>, json: bool) -> ExitCode {
    let s = match open(g, dir, false) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let stack = s.cfg.stack.clone();
    let mut objects = Vec::new();
    // The guest agents of the stack's running domains that have its channel,
    // asked together (`show` is where they are read; `plan` never asks).
    let ask: Vec<String> = s
        .observed
        .domains
        .values()
        .filter(|d| d.running && d.def.as_ref().is_some_and(|x| x.guest_agent) && d.marker.as_ref().is_some_and(|m| m.0 == stack))
        .map(|d| d.name.clone())
        .collect();
    let answers = crate::observe::agent::ask_all(&s.libvirt, &ask);
    for d in s.observed.domains.values() {
        if let Some((st, a, _)) = &d.marker
            && *st == stack
        {
            let mut o = serde_json::json!({"address": a, "kind": "domain", "object": d.name, "state": if d.running { "running" } else { "shutoff" }, "autostart": d.autostart});
            match answers.get(&d.name) {
                Some(Ok(ifaces)) => {
                    let macs: Vec<String> = d.def.as_ref().map(|x| x.nics.iter().map(|n| n.mac.to_string()).collect()).unwrap_or_default();
                    let list: Vec<serde_json::Value> = crate::observe::agent::ordered(ifaces, &macs)
                        .iter()
                        .flat_map(|i| i.addrs.iter().map(move |(ip, prefix)| serde_json::json!({"name": i.name, "mac": i.mac, "ip": ip.to_string(), "prefix": prefix})))
                        .collect();
                    o["addresses"] = serde_json::Value::Array(list);
                }
                Some(Err(e)) => o["agent_error"] = serde_json::Value::String(e.clone()),
                None => {}
            }
            objects.push(o);
        }
    }
    for l in s.observed.links.values() {
        if let Some((st, a)) = l.owner()
            && st == stack
        {
            objects.push(serde_json::json!({"address": a, "kind": "link", "object": l.name, "mtu": l.mtu, "up": l.up, "addresses": l.addrs.iter().map(|x| x.to_string()).collect::<Vec<_>>()}));
        }
    }
    let stack_dir = g.state_dir.join(&stack);
    for (p, f) in &s.observed.files {
        if std::path::Path::new(p).starts_with(&stack_dir) {
            objects.push(serde_json::json!({"kind": "file", "object": p, "format": f.format.as_str(), "virtual_size": f.virtual_size, "backing_file": f.backing_file}));
        }
    }
    // Imported libvirt networks and files: the registry's, while they are still the ones imported.
    for (a, o) in s.observed.imports.iter().filter(|(_, o)| o.matches(&s.observed)) {
        match o {
            crate::observe::imports::Imported::File { path, .. } => {
                let f = s.observed.files.get(path);
                objects.push(serde_json::json!({"address": a, "kind": "file", "object": path, "imported": true, "format": f.map(|f| f.format.as_str()), "virtual_size": f.map(|f| f.virtual_size), "backing_file": f.and_then(|f| f.backing_file.clone())}));
            }
            crate::observe::imports::Imported::LibvirtNetwork { name, uuid } => {
                objects.push(serde_json::json!({"address": a, "kind": "network", "object": name, "imported": true, "uuid": uuid}));
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"stack": stack, "objects": objects})).unwrap_or_default());
    } else if objects.is_empty() {
        println!("The host holds nothing of stack \"{stack}\".");
    } else {
        println!("Stack \"{stack}\" on this host:\n");
        for o in &objects {
            let addr = o["address"].as_str().unwrap_or("-");
            let kind = o["kind"].as_str().unwrap_or("");
            let obj = o["object"].as_str().unwrap_or("");
            let extra = match kind {
                "domain" => o["state"].as_str().unwrap_or("").to_string(),
                "link" => format!("mtu {}", o["mtu"]),
                "network" => format!("libvirt network, imported, UUID {}", o["uuid"].as_str().unwrap_or("")),
                "file" if o["imported"] == true => format!("{} {}, imported", o["format"].as_str().unwrap_or(""), crate::model::common::Size(o["virtual_size"].as_u64().unwrap_or(0))),
                _ => format!("{} {}", o["format"].as_str().unwrap_or(""), crate::model::common::Size(o["virtual_size"].as_u64().unwrap_or(0))),
            };
            println!("  {addr:<24} {kind:<7} {obj}  ({extra})");
            if let Some(list) = o["addresses"].as_array().filter(|_| kind == "domain") {
                for x in list {
                    println!("  {:<24} {:<7}   {} {} {}/{}", "", "", x["name"].as_str().unwrap_or(""), x["mac"].as_str().unwrap_or("-"), x["ip"].as_str().unwrap_or(""), x["prefix"]);
                }
            } else if let Some(e) = o["agent_error"].as_str() {
                println!("  {:<24} {:<7}   (guest agent: {e})", "", "");
            }
        }
    }
    ExitCode::SUCCESS
}

/// Writes a file that holds user data (a plan file: variables, possibly
/// sensitive): created with mode 0600 next to its destination, then renamed
/// over it, so it is never readable by others, not even for a moment, and
/// never half-written.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    if path.is_dir() {
        return Err(std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory"));
    }
    let tmp = dir.join(format!(".{name}.vf-tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Reads and checks a plan file before anything else happens: its format,
/// its stack name (it becomes a path under the state dir), and that the
/// command line does not ask for something the plan cannot do.
fn read_plan_file(g: &Global, a: &ApplyArgs, file: &std::path::Path, destroy: bool) -> Result<PlanFile, String> {
    let shown = file.display();
    let text = std::fs::read(file).map_err(|e| format!("cannot read the plan file {shown}: {e}"))?;
    if text.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(format!("{shown} is empty, not a virtform plan file; make one with `virtform plan --out {shown}`"));
    }
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| format!("{shown} is not a virtform plan file: {e}"))?;
    // The version first: a newer file may not parse as this version's fields.
    match v.get("format_version") {
        Some(serde_json::Value::String(f)) if f == PLAN_FILE_FORMAT => {}
        Some(serde_json::Value::String(f)) => {
            return Err(format!("{shown} has plan file format {f:?}; this virtform reads format {PLAN_FILE_FORMAT:?} (was it written by another version?); run `virtform plan --out` again"));
        }
        _ => return Err(format!("{shown} is not a virtform plan file: it has no `format_version`")),
    }
    let pf: PlanFile = serde_json::from_value(v).map_err(|e| format!("{shown} is not a virtform plan file: {e}"))?;
    crate::model::check_stack(&pf.stack).map_err(|m| format!("{shown} is not a valid plan file: {m}"))?;
    if pf.plan.get("stack").and_then(|s| s.as_str()) != Some(pf.stack.as_str()) {
        return Err(format!("{shown} is not a valid plan file: its plan is not for its stack \"{}\"", pf.stack));
    }
    if let Some(st) = &g.stack
        && *st != pf.stack
    {
        return Err(format!("{shown} is a plan for stack \"{}\", but --stack (or VIRTFORM_STACK) says \"{st}\"", pf.stack));
    }
    for (flag, given) in [("--var", !g.vars.is_empty()), ("--var-file", !g.var_files.is_empty()), ("--target", !a.target.is_empty()), ("--replace", !a.replace.is_empty())] {
        if given {
            return Err(format!("{flag} cannot be used with a saved plan ({shown}): the plan was made with its own; run `virtform plan {flag} ... --out FILE` instead"));
        }
    }
    if destroy && !pf.destroy {
        return Err(format!("{shown} is not a destroy plan; `virtform destroy` takes a configuration directory (or use `virtform apply {shown}`)"));
    }
    Ok(pf)
}

/// `apply FILE`: re-observe, refuse if the host changed since the plan was
/// made, else do exactly the saved plan.
fn apply_saved(g: &Global, a: ApplyArgs, file: &std::path::Path, destroy: bool) -> ExitCode {
    let pf = match read_plan_file(g, &a, file, destroy) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}; nothing was changed.");
            return ExitCode::from(1);
        }
    };
    let g2 = Global { vars: pf.vars.clone(), var_files: pf.var_files.clone(), stack: Some(pf.stack.clone()), state_dir: pf.state_dir.clone(), ..g.clone() };
    let a = ApplyArgs { replace: pf.replace.clone(), target: pf.targets.clone(), ..a };
    if !pf.hosts.is_empty() {
        // A fleet's plan: loaded here, locked, observed and compared host
        // by host in apply_fleet.
        let (cfg, conn) = match load_and_connect(&g2, pf.dir.clone(), !pf.destroy) {
            Ok(x) => x,
            Err(c) => {
                eprintln!("error: cannot plan again what the plan file {} was made from ({}); nothing was changed.", file.display(), pf.dir.display());
                return c;
            }
        };
        if cfg.hosts().next().is_none() {
            eprintln!("error: the plan in {} is a fleet's, but {} declares no host blocks now; nothing was changed. Run `virtform plan` again.", file.display(), pf.dir.display());
            return ExitCode::from(1);
        }
        let saved = Saved { file, hosts: &pf.hosts, plan: &pf.plan };
        return apply_fleet(&g2, &a, cfg, conn, pf.destroy, Some(saved));
    }
    let _lock = match lock_stack(&g2, &pf.stack) {
        Ok(l) => l,
        Err(c) => return c,
    };
    let s = match open(&g2, Some(pf.dir.clone()), !pf.destroy) {
        Ok(s) => s,
        Err(c) => {
            eprintln!("error: cannot plan again what the plan file {} was made from ({}); nothing was changed.", file.display(), pf.dir.display());
            return c;
        }
    };
    if s.cfg.hosts().next().is_some() {
        eprintln!("error: the plan in {} is for this machine alone, but {} declares host blocks now; nothing was changed. Run `virtform plan` again.", file.display(), pf.dir.display());
        return ExitCode::from(1);
    }
    let p = make_plan(&g2, &s, pf.destroy, &pf.replace, &pf.targets, true);
    if p.fingerprint != pf.fingerprint {
        eprintln!("error: the host changed since this plan was made ({}); nothing was changed. Run `virtform plan` again.", file.display());
        return ExitCode::from(1);
    }
    if render::to_json(&p) != pf.plan {
        eprintln!("error: the plan in {} is not what virtform plans now: the configuration changed since it was made, or the file was edited; nothing was changed. Run `virtform plan` again.", file.display());
        return ExitCode::from(1);
    }
    let a = ApplyArgs { auto_approve: true, ..a };
    execute(&g2, &a, s, p, pf.destroy, false)
}

pub(super) fn execute(g: &Global, a: &ApplyArgs, s: Session, p: Plan, destroy: bool, show_plan: bool) -> ExitCode {
    if show_plan && !a.json {
        print!("{}", render::text(&p, g.color_stdout()));
    }
    if !p.conflicts.is_empty() || !p.errors.is_empty() {
        if a.json {
            eprint!("{}", render::text(&p, false));
        }
        eprintln!("error: the plan has conflicts or errors; nothing was changed.");
        return ExitCode::from(1);
    }
    // Registry entries of objects gone or replaced by someone else, for
    // addresses no longer configured: not the stack's any more.
    if !p.forget.is_empty()
        && let Err(e) = crate::observe::imports::update(&g.state_dir, &s.cfg.stack, |r| r.objects.retain(|a, _| !p.forget.contains(a)))
    {
        eprintln!("warning: {e}");
    }
    // The cached images this stack uses: destroy leaves them in the cache and says so.
    let cache_used = if destroy { stack_images(g, &s) } else { Default::default() };
    if !p.has_changes() {
        if a.json {
            let outputs = super::output::outputs_json(&s.cfg);
            println!("{}", serde_json::json!({"event": "summary", "ok": true, "done": 0, "already": 0, "failed": 0, "skipped": 0, "outputs": outputs}));
            if destroy {
                engine::remove_stack_dir(&g.state_dir, &s.cfg.stack);
            }
            return ExitCode::SUCCESS;
        }
        if destroy {
            engine::remove_stack_dir(&g.state_dir, &s.cfg.stack);
            println!("Destroy complete: nothing of stack \"{}\" is left on this host.", s.cfg.stack);
            if let Some(line) = super::cache::destroy_summary(&g.state_dir, &cache_used) {
                println!("{line}");
            }
        } else {
            println!("Apply complete: nothing to do.");
            super::output::print_outputs(&s.cfg);
        }
        return ExitCode::SUCCESS;
    }
    if !a.auto_approve && !confirm() {
        return ExitCode::from(1);
    }
    let env = Arc::new(Env {
        links: Box::new(IpLinks::local()),
        libvirt: Box::new(s.libvirt),
        ovs: Box::new(Vsctl::default()),
        state_dir: g.state_dir.clone(),
        exec: crate::host::exec::Executor::Local,
        records: g.state_dir.clone(),
        deliveries: Default::default(),
        shutdown_timeout: Duration::from_secs(a.shutdown_timeout),
        detach_timeout: Duration::from_secs(a.detach_timeout),
        peers: Default::default(),
            memo: Default::default(),
    });
    let dag = engine::lower(&p, &s.cfg, env, s.kvm, &s.observed.source_hashes);
    if let Err(cycle) = dag.validate() {
        eprintln!("internal error: the apply steps form a cycle: {}", cycle.join(" -> "));
        return ExitCode::from(1);
    }
    let report = run_dag(a, &dag);
    // Outputs with what only the host knows now (DHCP-leased addresses).
    let cfg_out = if destroy { s.cfg.clone() } else { super::output::with_host_facts(g, &s.cfg.dir, s.cfg.clone()) };
    if a.json {
        let outputs = super::output::outputs_json(&cfg_out);
        println!("{}", serde_json::json!({"event": "summary", "ok": report.ok(), "done": report.done.len(), "already": report.already.len(), "failed": report.failed.len(), "skipped": report.skipped.len(), "outputs": outputs}));
        if report.ok() && destroy {
            engine::remove_stack_dir(&g.state_dir, &s.cfg.stack);
        }
        return if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) };
    }
    finish(&report, destroy, "", "The host is", || {
        if destroy {
            engine::remove_stack_dir(&g.state_dir, &s.cfg.stack);
            if let Some(line) = super::cache::destroy_summary(&g.state_dir, &cache_used) {
                println!("{line}");
            }
        } else {
            super::output::print_outputs(&cfg_out);
        }
    })
}

/// Runs the steps with the live display (a spinner per running step on a
/// terminal), one line per finished step, or JSON events with `--json`.
pub(super) fn run_dag(a: &ApplyArgs, dag: &crate::apply::dag::Dag<engine::HostStep>) -> crate::apply::dag::Report {
    let out = std::sync::Mutex::new(std::io::stdout());
    let json = a.json;
    // On a terminal: a live display (a spinner per running step, an overall bar).
    let live = !json && std::io::stdout().is_terminal();
    let multi = indicatif::MultiProgress::new();
    let total = multi.add(indicatif::ProgressBar::new(dag.len() as u64));
    if live {
        total.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {elapsed}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    } else {
        total.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let spinners: std::sync::Mutex<std::collections::HashMap<usize, indicatif::ProgressBar>> = Default::default();
    let report = dag.run(a.parallelism.max(1) as usize, &|e| {
        if live {
            match &e {
                Event::Started { id, description, address } => {
                    let sp = multi.insert_before(&total, indicatif::ProgressBar::new_spinner());
                    sp.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()));
                    sp.set_message(format!("{address}: {description}"));
                    sp.enable_steady_tick(Duration::from_millis(120));
                    if let Ok(mut m) = spinners.lock() {
                        m.insert(*id, sp);
                    }
                    return;
                }
                other => {
                    if let Ok(mut m) = spinners.lock()
                        && let Some(sp) = m.remove(&other.id())
                    {
                        sp.finish_and_clear();
                        multi.remove(&sp);
                    }
                    total.inc(1);
                }
            }
        }
        if json {
            let v = match &e {
                Event::Started { description, address, .. } => serde_json::json!({"event": "started", "address": address, "step": description}),
                Event::Finished { description, address, outcome: Ok(o), elapsed, .. } => serde_json::json!({"event": "finished", "address": address, "step": description, "outcome": if matches!(o, crate::apply::dag::StepOutcome::AlreadyDone) { "already_done" } else { "done" }, "seconds": elapsed.as_secs_f64()}),
                Event::Finished { description, address, outcome: Err(err), elapsed, .. } => serde_json::json!({"event": "failed", "address": address, "step": description, "error": err.message, "hint": err.hint, "seconds": elapsed.as_secs_f64()}),
                Event::Skipped { description, address, because_description, .. } => serde_json::json!({"event": "skipped", "address": address, "step": description, "because": because_description}),
                Event::Cancelled { description, address, .. } => serde_json::json!({"event": "cancelled", "address": address, "step": description}),
            };
            if let Ok(mut o) = out.lock() {
                let _ = writeln!(o, "{v}");
            }
            return;
        }
        let line = match e {
            Event::Finished { description, address, outcome: Ok(o), elapsed, .. } => {
                let mark = if matches!(o, crate::apply::dag::StepOutcome::AlreadyDone) { "=" } else { "+" };
                format!("{mark} {address}: {description} ({:.1}s)", elapsed.as_secs_f64())
            }
            Event::Finished { description, address, outcome: Err(err), .. } => format!("x {address}: {description}: {}", err.message),
            Event::Skipped { description, address, because_description, .. } => format!("- {address}: {description} skipped (after {because_description} failed)"),
            _ => return,
        };
        if live {
            let _ = multi.println(line);
        } else if let Ok(mut o) = out.lock() {
            let _ = writeln!(o, "{line}");
        }
    });
    total.finish_and_clear();
    report
}

/// The cached images (sha256) the stack uses: those its disks and volumes
/// on this host are made on, and those its configuration names.
fn stack_images(g: &Global, s: &Session) -> std::collections::BTreeSet<String> {
    let mut used = crate::host::cache::used_by_stack(&g.state_dir, &s.cfg.stack);
    for r in s.cfg.resources.iter().filter(|r| r.address.kind == crate::model::Kind::Image) {
        if let Some(p) = crate::plan::desired::image_cache_path(&g.state_dir, r, &s.observed.source_hashes)
            && let Some(name) = std::path::Path::new(&p).file_name()
        {
            used.insert(name.to_string_lossy().into_owned());
        }
    }
    used
}

fn confirm() -> bool {
    if !std::io::stdin().is_terminal() {
        eprintln!("error: not asking for confirmation without a terminal; pass --auto-approve to apply");
        return false;
    }
    print!("\nDo you want to perform these actions? Only 'yes' is accepted: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if line.trim() == "yes" {
        true
    } else {
        eprintln!("Apply cancelled; nothing was changed.");
        false
    }
}

/// The exclusive lock of a stack, held until dropped.
pub(super) struct StackLock {
    _file: std::fs::File,
    path: PathBuf,
    dir: PathBuf,
    /// This run created the stack directory (to hold the lock).
    created_dir: bool,
}

impl Drop for StackLock {
    /// A run removes the lock file (whoever created it: a run killed
    /// while holding the lock leaves its file behind, and the next run
    /// takes it over and removes it), and the stack directory it created
    /// when nothing else is in it, so a refused or failed apply leaves the
    /// state dir as it found it. Done while the lock is still held; a
    /// waiter then finds its lock file unlinked and retries
    /// ([`lock_stack`]).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if self.created_dir {
            // Fails, as it should, unless the directory is empty.
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// An exclusive lock per stack: `<state_dir>/<stack>/.lock`.
///
/// The lock file can be unlinked by the holder before us (destroy removes
/// the stack directory; so does a run that created it and left it empty):
/// after taking the lock we check that the path still names the file we
/// locked, and start again if not. Without that check, a waiter would hold
/// a lock on a deleted file while a newcomer locks a fresh one: two applies
/// of one stack at once.
pub(super) fn lock_stack(g: &Global, stack: &str) -> Result<StackLock, ExitCode> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let dir = g.state_dir.join(stack);
    let path = dir.join(".lock");
    let mut said_waiting = false;
    let mut created_dir = false;
    loop {
        created_dir |= !dir.exists();
        if let Err(e) = crate::host::disks::ensure_dir(&dir) {
            eprintln!("error: {e}");
            return Err(ExitCode::from(1));
        }
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&path).map_err(|e| {
            eprintln!("error: cannot open the stack lock {}: {e}", path.display());
            ExitCode::from(1)
        })?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                if !said_waiting {
                    eprintln!("Another virtform run holds the lock of stack \"{stack}\" ({}); waiting for it to finish…", path.display());
                    said_waiting = true;
                }
                f.lock().map_err(|e| {
                    eprintln!("error: cannot lock {}: {e}", path.display());
                    ExitCode::from(1)
                })?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                eprintln!("error: cannot lock {}: {e}", path.display());
                return Err(ExitCode::from(1));
            }
        }
        let locked = f.metadata().map(|m| (m.dev(), m.ino())).ok();
        let current = std::fs::metadata(&path).map(|m| (m.dev(), m.ino())).ok();
        if locked.is_some() && locked == current {
            return Ok(StackLock { _file: f, path, dir, created_dir });
        }
        // Unlinked by the previous holder: drop this lock and take the current file's.
    }
}
