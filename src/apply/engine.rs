//! Lowering a plan into host steps joined in a DAG, and running them.
//!
//! Invariants:
//! - Every step is idempotent and re-checks the host before acting, so a
//!   re-run after a failure or a kill converges.
//! - Creates follow the configuration's dependencies (image → disk →
//!   instance, network → instance); removals run in reverse (an instance is
//!   gone before its disk file or its bridge is removed).
//! - Only objects the plan names are touched; conflicts never reach here
//!   (`apply` refuses a plan with conflicts or errors).

use super::dag::{Dag, Step, StepContext, StepError, StepOutcome};
use crate::config::Configuration;
use crate::host::links::{LinkHost, LinkOp};
use crate::host::libvirt::Libvirt;
use crate::host::{disks, marker_with_hash, HostError};
use crate::model::image::ImageFormat;
use crate::model::{Kind, Spec};
use crate::plan::desired::{DesiredBridge, Lowering};
use crate::plan::{Action, Landing, Plan};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The host adapters steps use.
pub struct Env {
    pub links: Box<dyn LinkHost>,
    pub libvirt: Box<dyn Libvirt>,
    pub state_dir: PathBuf,
    /// Graceful shutdown timeout before a forced stop.
    pub shutdown_timeout: Duration,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Op {
    FetchImage { source: String, sha256: Option<String>, format: ImageFormat },
    Links { ops: Vec<LinkOp>, what: String },
    CreateDisk { path: PathBuf, base: Option<PathBuf>, size: Option<u64>, format: crate::model::disk::DiskFormat },
    /// Grow a disk file; through libvirt's block resize when its domain runs
    /// (`domain` = (domain name, target device)), else offline.
    ResizeDisk { path: PathBuf, size: u64, domain: Option<(String, String)> },
    RemoveFile { path: PathBuf },
    Define { name: String, xml: String, console_dir: PathBuf },
    /// Start; `log` is the console log, rotated to `<log>.1` before a fresh boot
    /// so a readiness wait never matches the previous boot's output.
    Start { name: String, log: Option<PathBuf> },
    Stop { name: String },
    /// Shut down (gracefully, forced after the timeout), undefine, and delete the console logs.
    Remove { name: String, logs: Vec<PathBuf> },
    Autostart { name: String, on: bool },
    WaitConsole { name: String, log: PathBuf, pattern: String, timeout: Duration },
}

/// One step of an apply.
pub struct HostStep {
    pub address: String,
    pub op: Op,
    pub env: Arc<Env>,
}

fn herr(e: HostError) -> StepError {
    let hint = e.hint.clone();
    let s = StepError::new(format!("{} {}: {}", e.op, e.object, e.message));
    match hint {
        Some(h) => s.with_hint(h),
        None => s,
    }
}

impl Step for HostStep {
    fn describe(&self) -> String {
        match &self.op {
            Op::FetchImage { source, .. } => format!("fetch image {source}"),
            Op::Links { what, .. } => what.clone(),
            Op::CreateDisk { path, base: Some(_), .. } => format!("create overlay {}", path.display()),
            Op::CreateDisk { path, .. } => format!("create disk {}", path.display()),
            Op::ResizeDisk { path, size, .. } => format!("grow {} to {}", path.display(), crate::model::common::Size(*size)),
            Op::RemoveFile { path } => format!("remove {}", path.display()),
            Op::Define { name, .. } => format!("define domain {name}"),
            Op::Start { name, .. } => format!("start domain {name}"),
            Op::Stop { name } => format!("shut down domain {name}"),
            Op::Remove { name, .. } => format!("remove domain {name}"),
            Op::Autostart { name, on } => format!("set autostart of {name} to {on}"),
            Op::WaitConsole { name, pattern, .. } => format!("wait for {pattern:?} on the console of {name}"),
        }
    }

    fn address(&self) -> &str {
        &self.address
    }

    fn is_wait(&self) -> bool {
        matches!(self.op, Op::WaitConsole { .. })
    }

    fn run(&self, cx: &StepContext) -> Result<StepOutcome, StepError> {
        let env = &self.env;
        match &self.op {
            Op::FetchImage { source, sha256, format } => {
                let c = disks::fetch_image(&env.state_dir.join("images"), source, sha256.as_deref(), *format).map_err(herr)?;
                Ok(if c.fetched { StepOutcome::Done } else { StepOutcome::AlreadyDone })
            }
            Op::Links { ops, .. } => {
                env.links.apply(ops).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::CreateDisk { path, base, size, format } => {
                if let Ok(info) = disks::inspect(path) {
                    if info.backing_file.as_deref() == base.as_ref().and_then(|b| b.to_str()) && size.is_none_or(|s| info.virtual_size >= s) {
                        return Ok(StepOutcome::AlreadyDone);
                    }
                    // A stale file from an interrupted or replaced disk.
                    disks::remove(path).map_err(herr)?;
                }
                if let Some(parent) = path.parent() {
                    disks::ensure_dir(parent).map_err(herr)?;
                }
                match base {
                    Some(b) => {
                        let base_info = disks::inspect(b).map_err(herr)?;
                        let size = size.filter(|s| *s > base_info.virtual_size);
                        disks::create_overlay(path, b, base_info.format, size).map_err(herr)?
                    }
                    None => disks::create_blank(path, *format, size.unwrap_or(1 << 30)).map_err(herr)?,
                }
                Ok(StepOutcome::Done)
            }
            Op::ResizeDisk { path, size, domain } => {
                let info = disks::inspect(path).map_err(herr)?;
                if info.virtual_size >= *size {
                    return Ok(StepOutcome::AlreadyDone);
                }
                if let Some((name, target)) = domain
                    && env.libvirt.domain(name).map_err(herr)?.is_some_and(|d| d.is_active())
                {
                    // qemu holds the image locked: grow it through the running guest.
                    env.libvirt.block_resize(name, target, *size).map_err(herr)?;
                } else {
                    disks::resize(path, *size).map_err(herr)?;
                }
                Ok(StepOutcome::Done)
            }
            Op::RemoveFile { path } => {
                if !path.exists() {
                    return Ok(StepOutcome::AlreadyDone);
                }
                disks::remove(path).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::Define { xml, console_dir, .. } => {
                disks::ensure_dir(console_dir).map_err(herr)?;
                env.libvirt.define(xml).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::Start { name, log } => {
                let running = env.libvirt.domain(name).map_err(herr)?.is_some_and(|d| d.is_active());
                if running {
                    return Ok(StepOutcome::AlreadyDone);
                }
                if let Some(log) = log.as_ref().filter(|l| l.exists()) {
                    let old = log.with_extension("log.1");
                    std::fs::rename(log, &old).map_err(|e| StepError::new(format!("cannot rotate the console log {}: {e}", log.display())))?;
                }
                env.libvirt.start(name).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::Stop { name } => {
                env.libvirt.shutdown(name, env.shutdown_timeout).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::Remove { name, logs } => {
                env.libvirt.shutdown(name, env.shutdown_timeout).map_err(herr)?;
                env.libvirt.undefine(name).map_err(herr)?;
                for l in logs {
                    disks::remove(l).map_err(herr)?;
                }
                Ok(StepOutcome::Done)
            }
            Op::Autostart { name, on } => {
                env.libvirt.set_autostart(name, *on).map_err(herr)?;
                Ok(StepOutcome::Done)
            }
            Op::WaitConsole { name, log, pattern, timeout } => {
                let start = Instant::now();
                loop {
                    if let Ok(text) = std::fs::read(log)
                        && String::from_utf8_lossy(&text).contains(pattern.as_str()) {
                            return Ok(StepOutcome::Done);
                        }
                    if start.elapsed() > *timeout {
                        return Err(StepError::new(format!(
                            "{name} is not ready: {pattern:?} did not appear on its console within {}s",
                            timeout.as_secs()
                        ))
                        .with_hint(format!("see the console log {}", log.display())));
                    }
                    cx.sleep(Duration::from_millis(250))?;
                }
            }
        }
    }
}

/// Builds the step DAG for a plan.
pub fn lower(plan: &Plan, cfg: &Configuration, env: Arc<Env>, kvm_usable: bool, source_hashes: &BTreeMap<String, String>) -> Dag<HostStep> {
    let mut b = Builder { dag: Dag::new(), env: env.clone(), created: BTreeMap::new(), removed: BTreeMap::new() };
    let lowering = Lowering { cfg, state_dir: &env.state_dir, kvm_usable, source_hashes };
    let mut instance_removals = Vec::new();
    // Pass 1: removals (instances first).
    for c in plan.changes.iter().filter(|c| c.kind == Kind::Instance && matches!(c.action, Action::Delete | Action::Replace)) {
        let name = match (&c.object, cfg.resource(&c.address).map(|r| &r.spec)) {
            (Some(o), _) => o.clone(),
            (None, Some(Spec::Instance(i))) => i.domain_name().to_string(),
            _ => continue,
        };
        let logs = console_logs(&env.state_dir, &cfg.stack, &c.address);
        let id = b.step(&c.address, Op::Remove { name, logs });
        b.removed.insert(c.address.clone(), id);
        instance_removals.push(id);
    }
    for c in plan.changes.iter().filter(|c| c.kind != Kind::Instance && matches!(c.action, Action::Delete | Action::Replace)) {
        let op = match c.kind {
            Kind::Disk | Kind::Volume => {
                let path = match (&c.object, cfg.resource(&c.address)) {
                    (Some(o), _) => Some(PathBuf::from(o)),
                    (None, Some(r)) => lowering.disk(r).map(|d| PathBuf::from(d.path)),
                    _ => None,
                };
                path.map(|p| Op::RemoveFile { path: p })
            }
            Kind::Network => {
                let name = match (&c.object, cfg.resource(&c.address).map(|r| &r.spec)) {
                    (Some(o), _) => Some(o.clone()),
                    (None, Some(Spec::Network(n))) => Some(n.bridge_name().to_string()),
                    _ => None,
                };
                name.map(|n| Op::Links { what: format!("delete bridge {n}"), ops: vec![LinkOp::Delete { name: n }] })
            }
            _ => None,
        };
        if let Some(op) = op {
            let id = b.step(&c.address, op);
            for r in &instance_removals {
                b.dag.depend(id, *r);
            }
            b.removed.insert(c.address.clone(), id);
        }
    }
    // Pass 2: creates and updates, in the configuration's order (dependencies first).
    for r in &cfg.resources {
        let addr = r.address.to_string();
        let Some(c) = plan.changes.iter().find(|c| c.address == addr) else { continue };
        let creating = matches!(c.action, Action::Create | Action::Replace);
        match &r.spec {
            Spec::Image(img) if creating => {
                let id = b.step(&addr, Op::FetchImage { source: img.source.clone(), sha256: img.sha256.clone(), format: img.format });
                b.created.insert(addr, id);
            }
            Spec::Network(n) => {
                let want = DesiredBridge::from_network(n);
                let alias = marker_with_hash(&cfg.stack, &addr, &want.hash());
                let ops = if creating { bridge_create_ops(&want, &alias) } else if c.action == Action::Update { bridge_update_ops(&want, &alias, plan_links_addrs(c)) } else { continue };
                let what = if creating { format!("create bridge {}", want.name) } else { format!("configure bridge {}", want.name) };
                let id = b.step(&addr, Op::Links { ops, what });
                b.after_removal(id, &addr);
                b.created.insert(addr, id);
            }
            Spec::Disk(_) if creating || c.action == Action::Update => {
                let Some(d) = lowering.disk(r) else { continue };
                let op = if creating {
                    let format = match &r.spec {
                        Spec::Disk(x) => x.format,
                        _ => crate::model::disk::DiskFormat::Qcow2,
                    };
                    Op::CreateDisk { path: d.path.clone().into(), base: d.base.map(PathBuf::from), size: d.size, format }
                } else {
                    let domain = cfg.resources.iter().find_map(|ir| match &ir.spec {
                        Spec::Instance(i) if i.disks.iter().any(|x| x.0 == addr) => lowering
                            .domain(ir)
                            .and_then(|def| def.disks.iter().find(|dd| dd.path == d.path).map(|dd| (def.name.clone(), dd.target.clone()))),
                        _ => None,
                    });
                    Op::ResizeDisk { path: d.path.clone().into(), size: d.size.unwrap_or(0), domain }
                };
                let id = b.step(&addr, op);
                b.after_removal(id, &addr);
                b.after_created_deps(id, r, cfg);
                b.created.insert(addr, id);
            }
            Spec::Instance(inst) => {
                let Some(def) = lowering.domain(r) else { continue };
                let name = def.name.clone();
                let console_dir = Path::new(&def.console_log).parent().map(Path::to_path_buf).unwrap_or_default();
                let running = inst.state == crate::model::instance::State::Running;
                let restart = c.landing() == Some(Landing::Restart);
                let redefine = creating || c.changes.iter().any(|ch| ch.landing != Landing::Live || ch.attr == "marker");
                let mut last = None;
                if redefine {
                    let id = b.step(&addr, Op::Define { name: name.clone(), xml: crate::xml::domain::domain_xml(&def), console_dir });
                    b.after_removal(id, &addr);
                    b.after_created_deps(id, r, cfg);
                    last = Some(id);
                }
                if c.action == Action::Update && restart {
                    let id = b.step(&addr, Op::Stop { name: name.clone() });
                    b.chain(id, last);
                    last = Some(id);
                }
                let state_change = c.action == Action::Update && c.changes.iter().any(|ch| ch.attr == "state");
                if c.action == Action::Update && state_change && !running {
                    let id = b.step(&addr, Op::Stop { name: name.clone() });
                    b.chain(id, last);
                    last = Some(id);
                }
                let updating = c.action == Action::Update;
                if (updating && c.changes.iter().any(|ch| ch.attr == "autostart")) || (creating && inst.autostart) {
                    let id = b.step(&addr, Op::Autostart { name: name.clone(), on: inst.autostart });
                    b.chain(id, last);
                    last = Some(id);
                }
                let start = running && (creating || restart || state_change);
                if start {
                    let id = b.step(&addr, Op::Start { name: name.clone(), log: Some(def.console_log.clone().into()) });
                    b.chain(id, last);
                    last = Some(id);
                    if let Some(w) = &inst.wait_for
                        && let Some(p) = &w.console {
                            let timeout = w.timeout.map(|t| t.as_std()).unwrap_or(Duration::from_secs(300));
                            let wid = b.step(&addr, Op::WaitConsole { name: name.clone(), log: def.console_log.clone().into(), pattern: p.clone(), timeout });
                            b.chain(wid, last);
                            last = Some(wid);
                        }
                }
                if let Some(l) = last {
                    b.created.insert(addr, l);
                }
            }
            _ => {}
        }
    }
    b.dag
}

struct Builder {
    dag: Dag<HostStep>,
    env: Arc<Env>,
    created: BTreeMap<String, usize>,
    removed: BTreeMap<String, usize>,
}

impl Builder {
    fn step(&mut self, address: &str, op: Op) -> usize {
        self.dag.add(HostStep { address: address.to_string(), op, env: self.env.clone() })
    }

    fn chain(&mut self, id: usize, after: Option<usize>) {
        if let Some(a) = after {
            self.dag.depend(id, a);
        }
    }

    /// A replaced object is created after its old self is removed.
    fn after_removal(&mut self, id: usize, addr: &str) {
        if let Some(r) = self.removed.get(addr) {
            self.dag.depend(id, *r);
        }
    }

    /// After the creation steps of everything this resource refers to.
    fn after_created_deps(&mut self, id: usize, r: &crate::model::Resource, cfg: &Configuration) {
        let deps: Vec<String> = match &r.spec {
            Spec::Disk(d) => d.image.iter().map(|x| x.0.clone()).collect(),
            Spec::Instance(i) => {
                let mut v: Vec<String> = i.disks.iter().chain(&i.volumes).map(|x| x.0.clone()).collect();
                v.extend(i.ports.iter().map(|x| x.0.clone()));
                v
            }
            _ => Vec::new(),
        };
        for d in deps {
            if let Some(s) = self.created.get(&d) {
                self.dag.depend(id, *s);
            }
        }
        // depends_on names blocks (`network.lan`) or instances (`disk.root[0]`).
        for d in &r.depends_on {
            let prefix = format!("{d}[");
            let hits: Vec<usize> = self.created.iter().filter(|(a, _)| *a == d || a.starts_with(&prefix)).map(|(_, s)| *s).collect();
            for s in hits {
                self.dag.depend(id, s);
            }
        }
        // Bridge-plugged ports add no steps of their own: depend on their networks.
        if let Spec::Instance(i) = &r.spec {
            for p in &i.ports {
                if let Some(Spec::Port(port)) = cfg.resource(&p.0).map(|x| &x.spec)
                    && let Some(s) = self.created.get(&port.network.0)
                {
                    self.dag.depend(id, *s);
                }
            }
        }
    }
}

/// The addresses the bridge had, when the plan changes them.
fn plan_links_addrs(c: &crate::plan::ResourceChange) -> Option<Vec<String>> {
    c.changes
        .iter()
        .find(|x| x.attr == "address")
        .map(|x| x.before.clone().unwrap_or_default().split(", ").filter(|s| *s != "(none)").map(str::to_string).collect())
}

fn bridge_create_ops(want: &DesiredBridge, alias: &str) -> Vec<LinkOp> {
    let mut ops = vec![LinkOp::CreateBridge {
        name: want.name.clone(),
        alias: alias.to_string(),
        mtu: want.mtu,
        stp: want.stp,
        forward_delay_cs: want.forward_delay_s * 100,
        mcast_snooping: true,
    }];
    if let Some(a) = want.address {
        ops.push(LinkOp::AddAddr { name: want.name.clone(), addr: a });
    }
    ops.push(LinkOp::SetUp { name: want.name.clone() });
    ops
}

fn bridge_update_ops(want: &DesiredBridge, alias: &str, old_addrs: Option<Vec<String>>) -> Vec<LinkOp> {
    let n = want.name.clone();
    let addresses_changed = old_addrs.is_some();
    let old: Vec<crate::model::common::IpCidr> = old_addrs.unwrap_or_default().iter().filter_map(|a| crate::model::common::IpCidr::parse(a).ok()).collect();
    let mut ops = Vec::new();
    if let Some(m) = want.mtu {
        ops.push(LinkOp::SetMtu { name: n.clone(), mtu: m });
    }
    ops.push(LinkOp::SetBridgeOpts { name: n.clone(), stp: want.stp, forward_delay_cs: want.forward_delay_s * 100, mcast_snooping: true });
    for c in &old {
        if Some(*c) != want.address {
            ops.push(LinkOp::DelAddr { name: n.clone(), addr: *c });
        }
    }
    if let Some(a) = want.address
        && addresses_changed
        && !old.contains(&a)
    {
        ops.push(LinkOp::AddAddr { name: n.clone(), addr: a });
    }
    ops.push(LinkOp::SetUp { name: n.clone() });
    ops.push(LinkOp::SetAlias { name: n, alias: alias.to_string() });
    ops
}


/// The console log (and the previous boot's) of an instance address.
fn console_logs(state_dir: &Path, stack: &str, address: &str) -> Vec<PathBuf> {
    let Some(addr) = crate::model::Address::parse(address) else { return Vec::new() };
    let log = crate::model::instance::console_log_path(state_dir, stack, &addr);
    let previous = log.with_extension("log.1");
    vec![log, previous]
}

/// After a complete destroy: removes the stack's now-empty directories and its lock.
pub fn remove_stack_dir(state_dir: &Path, stack: &str) {
    let dir = state_dir.join(stack);
    for sub in ["disks", "volumes", "console", "seeds"] {
        let _ = std::fs::remove_dir(dir.join(sub));
    }
    let _ = std::fs::remove_file(dir.join(".lock"));
    let _ = std::fs::remove_dir(&dir);
}
