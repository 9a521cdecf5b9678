//! The planner: desired state (a `Configuration`) + actual state (`Observed`)
//! → a plan of actions per resource.
//!
//! Invariants:
//! - Pure: no host access; the same inputs give the same plan.
//! - Only managed fields are compared, normalized (xml/ normalizes domains).
//! - Every change says how it lands: live, restart, or replace; a plan never
//!   promises a change that apply would skip.
//! - Objects that carry no virtform marker, or another stack's, are conflicts:
//!   reported, never touched.

pub mod desired;
mod import;
pub mod migrate;
pub mod moved;
mod network;
mod port;
mod volume;
pub mod render;

use crate::config::Configuration;
use crate::model::{Kind, Resource, Spec};
use crate::observe::Observed;
use desired::Lowering;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

/// What happens to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    NoOp,
    Create,
    Update,
    Replace,
    Delete,
    /// `removed { lifecycle { destroy = false } }`: the marker goes, the object stays.
    Forget,
}

impl Action {
    /// Terraform's `actions` array.
    pub fn actions(self) -> Vec<&'static str> {
        match self {
            Action::NoOp => vec!["no-op"],
            Action::Create => vec!["create"],
            Action::Update => vec!["update"],
            Action::Replace => vec!["delete", "create"],
            Action::Delete => vec!["delete"],
            Action::Forget => vec!["forget"],
        }
    }
}

/// How an attribute change lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Landing {
    /// Applied to the running object (hot-plug, start/stop, autostart, MTU…).
    Live,
    /// Redefine, then shut down gracefully and start again.
    Restart,
    /// Destroy and create.
    Replace,
}

/// One attribute that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttrChange {
    pub attr: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub landing: Landing,
    /// The host differs from what virtform last applied ("changed outside virtform").
    pub outside: bool,
    /// The value is derived from a sensitive input and must not be shown.
    pub sensitive: bool,
}

/// The plan for one resource instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceChange {
    pub address: String,
    pub kind: Kind,
    pub action: Action,
    /// Why (Terraform's `action_reason`): `replace_because_cannot_update`,
    /// `replace_by_request`, `delete_because_no_resource_config`, `drift`, …
    pub reason: Option<String>,
    pub changes: Vec<AttrChange>,
    /// For replacements caused by others: "disk.root is replaced".
    pub because: Vec<String>,
    /// Unified diff of the normalized domain XML (instances).
    pub xml_diff: Option<String>,
    /// The host object of a resource that is no longer configured (domain
    /// name, link name, file path), so it can be removed without its config.
    pub object: Option<String>,
    /// The `import` id when this change takes over an unmarked object.
    pub importing: Option<String>,
    /// The address the object had before a `moved` block moved it (this plan).
    pub previous_address: Option<String>,
    /// An instance that moves to this host live (its old host's plan no
    /// longer deletes it): see [`migrate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrate: Option<migrate::Migration>,
}

impl ResourceChange {
    fn new(address: String, kind: Kind, action: Action) -> ResourceChange {
        ResourceChange { address, kind, action, reason: None, changes: Vec::new(), because: Vec::new(), xml_diff: None, object: None, importing: None, previous_address: None, migrate: None }
    }

    /// The strongest landing among the changes.
    pub fn landing(&self) -> Option<Landing> {
        self.changes.iter().map(|c| c.landing).max()
    }
}

/// An object on the host that virtform may not touch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    pub address: String,
    pub object: String,
    /// What the object is and why it is not this resource's.
    pub message: String,
    /// The ways out, each a sentence and, where there is one, HCL to copy
    /// (an `import` block, a `data` source).
    pub ways_out: Vec<String>,
}

/// How a conflicting object could be brought in: its import id and, for
/// networks, the data source selector that would read it as it is.
#[derive(Debug, Clone, Default)]
pub(crate) struct Foreign {
    /// `domain "vm"`, `link "br0"`, …
    pub object: String,
    /// The `id` of an `import` block that would adopt it.
    pub import_id: Option<String>,
    /// `bridge = "br0"` (or `libvirt_network`/`ovs_bridge`) for a `data "network"`.
    pub data: Option<(&'static str, String)>,
}

impl Foreign {
    pub fn new(object: String) -> Foreign {
        Foreign { object, ..Default::default() }
    }
    pub fn import(mut self, id: &str) -> Foreign {
        self.import_id = Some(id.to_string());
        self
    }
    pub fn data(mut self, attr: &'static str, name: &str) -> Foreign {
        self.data = Some((attr, name.to_string()));
        self
    }
}

/// A data source as the plan read it: never changed by any apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataSource {
    pub address: String,
    /// "bridge br0", "libvirt network default", …
    pub object: String,
    pub facts: crate::model::data::NetworkFacts,
}

/// A complete plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub stack: String,
    /// Data sources, read again from the observation planned against.
    pub data: Vec<DataSource>,
    pub changes: Vec<ResourceChange>,
    pub conflicts: Vec<Conflict>,
    /// Errors that make the plan unappliable (prevent_destroy, unsupported kinds).
    pub errors: Vec<String>,
    /// Fingerprint of the observed host state this plan was made against.
    pub fingerprint: String,
    /// Objects taken over by import whose marker is the stack's registry
    /// (`<state>/<stack>/imports.json`): libvirt networks and files, by
    /// address; those of the registry that still match the host, and those
    /// this plan imports. The lowering uses their names and paths.
    pub imported: BTreeMap<String, crate::observe::imports::Imported>,
    /// Registry entries of addresses no longer configured (or destroyed)
    /// whose object is gone or is another one now: an apply drops them.
    pub forget: Vec<String>,
    /// The stack's record of moved and forgotten objects after this plan,
    /// when it changes (the apply writes it first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<crate::observe::Names>,
}

impl Plan {
    /// Changes that import an object.
    pub fn imports(&self) -> usize {
        self.changes.iter().filter(|c| c.importing.is_some()).count()
    }

    pub fn count(&self, a: Action) -> usize {
        self.changes.iter().filter(|c| c.action == a).count()
    }

    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::NoOp)
    }

    /// Changes that move an object to a new address (with or without other changes).
    pub fn moves(&self) -> usize {
        self.changes.iter().filter(|c| c.previous_address.is_some()).count()
    }

    pub fn summary(&self) -> String {
        let add = self.count(Action::Create) + self.count(Action::Replace);
        // A move with nothing else to do is counted as a move only.
        let change = self.changes.iter().filter(|c| c.action == Action::Update && !matches!(c.reason.as_deref(), Some("moved" | migrate::MIGRATE))).count();
        // A migrated guest's old host removes its files, not the guest.
        let destroy = self.count(Action::Delete) + self.count(Action::Replace) - self.changes.iter().filter(|c| c.migrate.is_some() && c.action == Action::Delete).count();
        let mut head = String::new();
        if self.imports() > 0 {
            head.push_str(&format!("{} to import, ", self.imports()));
        }
        if self.moves() > 0 {
            head.push_str(&format!("{} to move, ", self.moves()));
        }
        let migrations = self.changes.iter().filter(|c| c.migrate.is_some() && c.action == Action::Update).count();
        if migrations > 0 {
            head.push_str(&format!("{migrations} to migrate, "));
        }
        let forget = self.count(Action::Forget);
        let tail = if forget > 0 { format!(", {forget} to forget") } else { String::new() };
        format!("Plan: {head}{add} to add, {change} to change, {destroy} to destroy{tail}.")
    }
}

/// The blocks (`disk.root`, `module.web["a"].port.p`) a `--target` list
/// reaches in the configuration: the targets, everything in targeted
/// modules, and what they depend on.
pub fn target_blocks(cfg: &Configuration, targets: &[String]) -> BTreeSet<String> {
    use crate::model::{Address, ModulePath};
    let block = |a: &str| Address::parse(a).map(|x| x.block()).unwrap_or_else(|| a.split('[').next().unwrap_or(a).to_string());
    let modules: Vec<ModulePath> = targets.iter().filter_map(|t| ModulePath::parse(t)).collect();
    let mut keep: BTreeSet<String> = targets.iter().filter(|t| ModulePath::parse(t).is_none()).map(|t| block(t)).collect();
    for r in &cfg.resources {
        if modules.iter().any(|m| r.address.module.within(m)) {
            keep.insert(r.address.block());
        }
    }
    let edges = cfg.graph.resource_edges();
    loop {
        let before = keep.len();
        for (from, to) in &edges {
            if from.is_resource() && to.is_resource() && keep.contains(&from.to_string()) {
                keep.insert(to.to_string());
            }
        }
        if keep.len() == before {
            break;
        }
    }
    keep
}

/// Options of `plan`.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Plan the destruction of everything of the stack.
    pub destroy: bool,
    /// Force these addresses to be replaced.
    pub replace: Vec<String>,
    pub state_dir: PathBuf,
    /// Whether `domain_type = "auto"` resolves to kvm.
    pub kvm_usable: bool,
    /// Only these resources (block `instance.web` or instance `disk.root[0]`
    /// addresses) and what they depend on.
    pub targets: Vec<String>,
    /// Compute the host fingerprint (saved plans, `--json`); empty otherwise.
    pub fingerprint: bool,
    /// This machine's state dir, where the stack's records (the import
    /// registry) live, when the plan is a remote host's part; `None`:
    /// `state_dir`.
    pub records: Option<PathBuf>,
}

impl PlanOptions {
    /// Where the stack's records are: this machine's state dir.
    pub fn records_dir(&self) -> &std::path::Path {
        self.records.as_deref().unwrap_or(&self.state_dir)
    }
}

/// Computes the plan. Pure.
pub fn plan(cfg: &Configuration, obs: &Observed, opts: &PlanOptions) -> Plan {
    let mut p = Planner {
        cfg,
        obs,
        opts,
        domains: HashMap::new(),
        disks_in_use: None,
        imports_ok: BTreeSet::new(),
        imports_refused: BTreeSet::new(),
        // The registry's entries whose object is still the one recorded.
        imported: obs.imports.iter().filter(|(_, o)| o.matches(obs)).map(|(a, o)| (a.clone(), o.clone())).collect(),
        moving: BTreeMap::new(),
        moves_refused: BTreeSet::new(),
        out: Plan { stack: cfg.stack.clone(), data: Vec::new(), changes: Vec::new(), conflicts: Vec::new(), errors: Vec::new(), fingerprint: String::new(), imported: BTreeMap::new(), forget: Vec::new(), names: None },
    };
    if !opts.destroy {
        p.data_sources();
        // Imports first: the lowering names imported objects by their host names.
        p.check_imports();
        p.moving = p.check_moves();
        p.domains = desired_domains(cfg, obs, opts, &p.imported);
    }
    p.run();
    p.out.imported = p.imported.clone();
    if opts.fingerprint {
        p.out.fingerprint = obs.fingerprint(&cfg.stack, &p.wanted_names());
    }
    p.out
}

/// An instance's desired domain definition and the form libvirt would
/// store it in.
type DesiredDomain = (crate::xml::domain::DomainDef, crate::xml::domain::ObservedDomain);

/// [`DesiredDomain`]s by instance address.
type DesiredDomains = HashMap<String, DesiredDomain>;

fn desired_domain(lowering: &Lowering<'_>, r: &Resource) -> Option<DesiredDomain> {
    let d = lowering.domain(r)?;
    let o = crate::xml::domain::ObservedDomain::from_def(&d);
    Some((d, o))
}

/// Lowers every instance to its domain definition up front, on up to four
/// threads for large configurations: the lowering (derived UUID, disk paths,
/// spec hash) is most of a converged plan's work at 1,000 instances, and
/// each instance's is independent of the others'. Still pure.
fn desired_domains(cfg: &Configuration, obs: &Observed, opts: &PlanOptions, imported: &BTreeMap<String, crate::observe::imports::Imported>) -> DesiredDomains {
    let lowering = Lowering { cfg, state_dir: &opts.state_dir, kvm_usable: opts.kvm_usable, source_hashes: &obs.source_hashes, imported };
    let instances: Vec<&Resource> = cfg.resources.iter().filter(|r| matches!(r.spec, Spec::Instance(_))).collect();
    let lower = |rs: &[&Resource]| -> Vec<(String, DesiredDomain)> { rs.iter().filter_map(|r| Some((r.address.to_string(), desired_domain(&lowering, r)?))).collect() };
    const PER_THREAD: usize = 128;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4).min(instances.len().div_ceil(PER_THREAD)).max(1);
    if threads == 1 {
        return lower(&instances).into_iter().collect();
    }
    let chunk = instances.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = instances.chunks(chunk).map(|c| s.spawn(move || lower(c))).collect();
        // A panicked thread's instances are simply not prepared: the
        // planner lowers them again, serially, and meets the same panic
        // where the rest of virtform reports one.
        handles.into_iter().filter_map(|h| h.join().ok()).flatten().collect()
    })
}

struct Planner<'a> {
    cfg: &'a Configuration,
    obs: &'a Observed,
    opts: &'a PlanOptions,
    /// Prepared by [`desired_domains`]; taken by [`Planner::instance`].
    domains: DesiredDomains,
    /// Disks (by address) of instances whose domain exists and is ours;
    /// built on first use (see [`Planner::instance_of_disk_exists`]).
    disks_in_use: Option<HashSet<String>>,
    /// Resources whose import [`Planner::check_imports`] accepted: their
    /// unmarked object is adopted instead of being a conflict.
    imports_ok: BTreeSet<String>,
    /// Resources whose import was refused (a plan error says why): they
    /// stay no-ops, whatever the host holds.
    imports_refused: BTreeSet<String>,
    /// See [`Plan::imported`].
    imported: BTreeMap<String, crate::observe::imports::Imported>,
    /// Moves this plan makes (`moved.rs`): target address → source address.
    moving: BTreeMap<String, String>,
    /// Targets of moves refused (a located plan error says why): no-ops.
    moves_refused: BTreeSet<String>,
    out: Plan,
}

fn change(attr: &str, before: impl ToString, after: impl ToString, landing: Landing, outside: bool) -> AttrChange {
    AttrChange { attr: attr.into(), before: Some(before.to_string()), after: Some(after.to_string()), landing, outside, sensitive: false }
}

impl Planner<'_> {
    /// The host object names the configuration would create (a foreign
    /// object with one of them is a conflict, so it matters to the plan).
    fn wanted_names(&self) -> BTreeSet<String> {
        let mut w = BTreeSet::new();
        for r in &self.cfg.resources {
            match &r.spec {
                Spec::Network(n) => {
                    w.insert(n.bridge_name().to_string());
                    w.insert(desired::libvirt_network_name(&self.cfg.stack, &self.cfg.names_of_str(&r.address.to_string())));
                }
                Spec::Port(p) => {
                    for prefix in ["qbr", "qvb", "qvo", "tap"] {
                        w.insert(p.dev(prefix));
                    }
                }
                Spec::Instance(i) => {
                    w.insert(i.domain_name().to_string());
                }
                _ => {}
            }
        }
        // Imported objects and import ids: a plan that adopts one must not
        // apply after it changed.
        for o in self.imported.values() {
            w.insert(o.object().to_string());
        }
        for i in &self.cfg.imports {
            w.insert(i.id.clone());
        }
        // Data sources' objects: a plan made against one must not apply
        // after it changed.
        for r in &self.cfg.data {
            if let Spec::Network(n) = &r.spec
                && let Some(ex) = &n.existing
            {
                w.insert(ex.selector.name().to_string());
                if let Some(b) = &n.bridge {
                    w.insert(b.0.clone());
                }
            }
        }
        w
    }

    fn lowering(&self) -> Lowering<'_> {
        Lowering { cfg: self.cfg, state_dir: &self.opts.state_dir, kvm_usable: self.opts.kvm_usable, source_hashes: &self.obs.source_hashes, imported: &self.imported }
    }

    /// Reads every data source again from the observation: one that
    /// vanished or changed since the configuration was loaded is a plan
    /// error (the load already refused what was missing then).
    fn data_sources(&mut self) {
        for r in &self.cfg.data {
            let Spec::Network(n) = &r.spec else { continue };
            let Some(ex) = &n.existing else { continue };
            let addr = r.address.to_string();
            match crate::observe::data::network_facts(self.obs, &ex.selector) {
                Err(m) => self.out.errors.push(format!("{addr}: {m}")),
                Ok(f) => {
                    if ex.read && (f.address != n.address || f.mtu != n.mtu || n.bridge.as_ref().is_some_and(|b| b.0 != f.bridge)) {
                        self.out.errors.push(format!("{addr}: {} changed while virtform was planning; plan again", ex.selector.describe()));
                    }
                    self.out.data.push(DataSource { address: addr, object: ex.selector.describe(), facts: f });
                }
            }
        }
    }

    fn run(&mut self) {
        let mut by_addr: BTreeMap<String, usize> = BTreeMap::new();
        if !self.opts.destroy {
            for r in &self.cfg.resources {
                // A host is where the others live: nothing of its own to plan.
                if matches!(r.spec, Spec::Host(_)) {
                    continue;
                }
                let rc = match &r.spec {
                    // Not even planned (no conflict either): the configuration
                    // meant an existing object, and a located error says why
                    // it was refused.
                    _ if self.imports_refused.contains(&r.address.to_string()) => ResourceChange::new(r.address.to_string(), r.address.kind, Action::NoOp),
                    _ if self.stale_import(r) => ResourceChange::new(r.address.to_string(), r.address.kind, Action::NoOp),
                    Spec::Network(_) => self.network(r),
                    Spec::Port(_) => self.port(r),
                    Spec::Image(_) => self.image(r),
                    Spec::Disk(_) => self.disk(r),
                    Spec::Volume(_) => self.volume(r),
                    Spec::Instance(_) => self.instance(r),
                    Spec::Host(_) => continue,
                };
                let mut rc = rc;
                self.moved_change(&mut rc);
                if self.imports_refused.contains(&rc.address) || self.moves_refused.contains(&rc.address) {
                    // Not even a create: the configuration meant an existing object.
                    rc = ResourceChange::new(rc.address, rc.kind, Action::NoOp);
                }
                if rc.action == Action::Create {
                    rc.changes = created_attrs(r);
                }
                by_addr.insert(rc.address.clone(), self.out.changes.len());
                self.out.changes.push(rc);
            }
            // Forced replacements and their consequences.
            for a in &self.opts.replace {
                match by_addr.get(a) {
                    Some(i) => {
                        let c = &mut self.out.changes[*i];
                        if matches!(c.action, Action::NoOp | Action::Update) {
                            c.action = Action::Replace;
                            c.reason = Some("replace_by_request".into());
                        }
                    }
                    None => self.out.errors.push(format!("--replace {a}: no such resource in the configuration")),
                }
            }
            self.propagate_replacements(&by_addr);
            self.lifecycle_rules();
        }
        self.orphans();
        if !self.opts.targets.is_empty() {
            self.restrict_to_targets();
        }
        self.out.names = self.next_names();
        // prevent_destroy
        for c in &self.out.changes {
            if matches!(c.action, Action::Delete | Action::Replace)
                && let Some(r) = self.cfg.resource(&c.address)
                    && r.lifecycle.prevent_destroy {
                        self.out.errors.push(format!(
                            "{} has lifecycle.prevent_destroy set, but the plan would {} it",
                            c.address,
                            if c.action == Action::Delete { "destroy" } else { "replace" }
                        ));
                    }
        }
    }

    /// `lifecycle { ignore_changes, replace_triggered_by }`.
    ///
    /// Ignored attributes are dropped from updates (the engine keeps the
    /// host's value when it redefines the object for another reason, see
    /// `apply::engine::keep_ignored`); creations and replacements use the
    /// configuration. `ports`, `disks` and `volumes` cannot be ignored: the
    /// devices would be half applied. A resource is replaced when anything
    /// it lists in `replace_triggered_by` is created, updated or replaced.
    fn lifecycle_rules(&mut self) {
        let changed: BTreeMap<String, Action> = self.out.changes.iter().filter(|c| c.action != Action::NoOp).map(|c| (c.address.clone(), c.action)).collect();
        for i in 0..self.out.changes.len() {
            let addr = self.out.changes[i].address.clone();
            let Some(r) = self.cfg.resource(&addr) else { continue };
            for bad in r.lifecycle.ignore_changes.iter().filter(|a| matches!(a.as_str(), "ports" | "disks" | "volumes")) {
                self.out.errors.push(format!("{addr}: lifecycle.ignore_changes = [{bad}] is not supported: device lists are applied as a whole (hot-plug) or not at all"));
            }
            if r.address.kind == Kind::Network && !r.lifecycle.ignore_changes.is_empty() {
                self.out.errors.push(format!("{addr}: lifecycle.ignore_changes is not supported on networks yet: a network is reconfigured as a whole"));
            }
            let c = &mut self.out.changes[i];
            if c.action == Action::Update && !r.lifecycle.ignore_changes.is_empty() {
                c.changes.retain(|ch| !ignored_attr(&ch.attr).is_some_and(|a| r.lifecycle.ignore_changes.iter().any(|x| x == a)));
                if c.changes.is_empty() {
                    c.action = Action::NoOp;
                    c.reason = None;
                    c.xml_diff = None;
                }
            }
            if matches!(c.action, Action::NoOp | Action::Update) {
                let key = match &r.address.key {
                    crate::model::Key::None => None,
                    crate::model::Key::Index(n) => Some(n.to_string()),
                    crate::model::Key::Name(k) => Some(format!("\"{k}\"")),
                };
                for t in &r.lifecycle.replace_triggered_by {
                    let t = match &key {
                        Some(k) => t.replace("[count.index]", &format!("[{k}]")).replace("[each.key]", &format!("[{k}]")),
                        None => t.clone(),
                    };
                    let hit = changed.keys().find(|a| **a == t || a.starts_with(&format!("{t}[")) || t.starts_with(&format!("{a}.")));
                    if let Some(a) = hit {
                        c.action = Action::Replace;
                        c.reason = Some("replace_by_triggers".into());
                        c.because.push(format!("{a} changes (replace_triggered_by)"));
                        break;
                    }
                }
            }
        }
    }

    /// Keeps the changes of the targets and of the blocks they depend on.
    /// (`target_blocks` is the configuration's part of it.)
    /// A target is a resource (`disk.root`, `disk.root[0]`, also inside a
    /// module: `module.web["a"].disk.root`) or a module (`module.web`: every
    /// instance; `module.web["a"]`: that one), with everything in it.
    fn restrict_to_targets(&mut self) {
        use crate::model::{Address, ModulePath};
        // The block of an address (`module.web["a"].disk.root` for `...disk.root[0]`).
        let block = |a: &str| Address::parse(a).map(|x| x.block()).unwrap_or_else(|| a.split('[').next().unwrap_or(a).to_string());
        let modules: Vec<ModulePath> = self.opts.targets.iter().filter_map(|t| ModulePath::parse(t)).collect();
        let in_module = |a: &str| Address::parse(a).is_some_and(|x| modules.iter().any(|m| x.module.within(m)));
        let res_targets: Vec<&String> = self.opts.targets.iter().filter(|t| ModulePath::parse(t).is_none()).collect();
        let mut keep = target_blocks(self.cfg, &self.opts.targets);
        // Orphans inside a targeted module (no configuration, no dependencies).
        for c in &self.out.changes {
            if in_module(&c.address) {
                keep.insert(block(&c.address));
            }
        }
        let exact: BTreeSet<&String> = res_targets.iter().copied().filter(|t| Address::parse(t).is_some_and(|a| a.key != crate::model::Key::None)).collect();
        for t in &self.opts.targets {
            let found = match ModulePath::parse(t) {
                Some(m) => self.cfg.resources.iter().any(|r| r.address.module.within(&m)) || self.out.changes.iter().any(|c| Address::parse(&c.address).is_some_and(|a| a.module.within(&m))),
                None => self.out.changes.iter().any(|c| c.address == *t || block(&c.address) == *t) || self.cfg.resource(t).is_some(),
            };
            if !found {
                self.out.errors.push(format!("--target {t}: no such {}", if ModulePath::parse(t).is_some() { "module" } else { "resource" }));
            }
        }
        let whole: BTreeSet<String> = res_targets.iter().filter(|t| !exact.contains(*t)).map(|t| t.to_string()).collect();
        self.out.changes.retain(|c| {
            let b = block(&c.address);
            if !keep.contains(&b) {
                return false;
            }
            // `disk.root[0]` targets only that instance of its block (dependencies stay whole).
            let narrowed = exact.iter().any(|t| block(t) == b) && !whole.contains(&b) && !in_module(&c.address);
            !narrowed || exact.contains(&c.address)
        });
    }

    /// A replaced disk replaces the instances that use it; a disk file
    /// recreated under a defined domain (deleted outside virtform) restarts it.
    fn propagate_replacements(&mut self, by_addr: &BTreeMap<String, usize>) {
        let recreated: BTreeSet<String> = self.out.changes.iter().filter(|c| c.action == Action::Create && c.reason.as_deref() == Some("drift")).map(|c| c.address.clone()).collect();
        for r in &self.cfg.resources {
            let Spec::Instance(inst) = &r.spec else { continue };
            for d in inst.disks.iter().filter(|d| recreated.contains(&d.0)) {
                if let Some(i) = by_addr.get(&r.address.to_string()) {
                    let c = &mut self.out.changes[*i];
                    if c.action == Action::NoOp || c.action == Action::Update {
                        c.action = Action::Update;
                        c.reason = Some("drift".into());
                        c.changes.push(AttrChange { attr: format!("disk {}", d.0), before: Some("(file missing)".into()), after: Some("(recreated)".into()), landing: Landing::Restart, outside: true, sensitive: false });
                    }
                }
            }
        }
        let replaced: BTreeSet<String> = self.out.changes.iter().filter(|c| c.action == Action::Replace).map(|c| c.address.clone()).collect();
        // A replaced volume is detached from its running instance and the new one attached.
        for r in &self.cfg.resources {
            let Spec::Instance(inst) = &r.spec else { continue };
            let vols: Vec<&str> = inst.volumes.iter().filter(|v| replaced.contains(&v.0)).map(|v| v.0.as_str()).collect();
            if vols.is_empty() {
                continue;
            }
            let Some(def) = self.lowering().domain(r) else { continue };
            let Some(i) = by_addr.get(&r.address.to_string()) else { continue };
            for v in vols {
                let Some(path) = self.cfg.resource(v).and_then(|vr| self.lowering().volume(vr)).map(|d| d.path) else { continue };
                let Some(target) = def.disks.iter().find(|d| d.path == path).map(|d| d.target.clone()) else { continue };
                let c = &mut self.out.changes[*i];
                if matches!(c.action, Action::NoOp | Action::Update) && !c.changes.iter().any(|x| x.attr == format!("disk:{target}")) {
                    c.action = Action::Update;
                    c.reason.get_or_insert_with(|| "update".into());
                    c.changes.push(AttrChange { attr: format!("disk:{target}"), before: Some(path.clone()), after: Some(format!("{path} (new {v})")), landing: Landing::Live, outside: false, sensitive: false });
                }
            }
        }
        for r in &self.cfg.resources {
            let Spec::Instance(inst) = &r.spec else { continue };
            let causes: Vec<String> = inst.disks.iter().filter(|d| replaced.contains(&d.0)).map(|d| format!("{} is replaced", d.0)).collect();
            if causes.is_empty() {
                continue;
            }
            if let Some(i) = by_addr.get(&r.address.to_string()) {
                let c = &mut self.out.changes[*i];
                if c.action != Action::Create {
                    c.action = Action::Replace;
                    c.reason = Some("replace_because_dependency_replaced".into());
                    c.because.extend(causes);
                }
            }
        }
    }

    fn conflict(&mut self, r: &Resource, f: Foreign, owner: Option<(String, String)>) -> ResourceChange {
        let addr = r.address.to_string();
        let object = f.object.clone();
        let (message, ways_out) = match owner {
            None => {
                let mut ways = Vec::new();
                if let Some(id) = &f.import_id {
                    ways.push(format!("to manage it with virtform from now on, import it:\n    import {{\n      to = {addr}\n      id = {id:?}\n    }}"));
                }
                if let Some((attr, name)) = &f.data {
                    ways.push(format!(
                        "to use it as it is without managing it, declare it as a data source and write data.network.{n} where {addr} is used:\n    data \"network\" \"{n}\" {{\n      {attr} = {name:?}\n    }}",
                        n = r.address.name
                    ));
                }
                ways.push(if f.import_id.is_some() || f.data.is_some() {
                    "or give this resource another host name, or remove the object".to_string()
                } else {
                    "give this resource another host name, or remove the object".to_string()
                });
                (format!("{object} exists on the host but was not created by virtform (it carries no virtform marker), so virtform will not touch it"), ways)
            }
            Some((s, a)) if s != self.cfg.stack => (
                format!("{object} belongs to {a} of stack \"{s}\" (its marker says so), so this stack will not touch it"),
                vec![format!("give this resource another host name, or remove {a} from stack \"{s}\" first; an object can be managed by one stack only")],
            ),
            Some((_, a)) => (
                format!("{object} belongs to {a} of this stack, not to {addr}"),
                vec![format!("two resources of this stack want the same host name: give one of them another name (or destroy {a} first if it was renamed)")],
            ),
        };
        self.out.conflicts.push(Conflict { address: addr, object, message, ways_out });
        let mut rc = ResourceChange::new(r.address.to_string(), r.address.kind, Action::NoOp);
        rc.reason = Some("conflict".into());
        rc
    }

    /// Whether the marker is `r`'s, or (moving it) the address it moves from.
    fn owned(&self, owner: &Option<(String, String)>, r: &Resource) -> bool {
        owner.as_ref().is_some_and(|(s, a)| *s == self.cfg.stack && self.marks(a, r))
    }

    /// Whether a marker's address `a` stands for `r` in this plan.
    fn marks(&self, a: &str, r: &Resource) -> bool {
        let me = r.address.to_string();
        *a == me || self.moving.get(&me).is_some_and(|f| f == a)
    }

    fn image(&mut self, r: &Resource) -> ResourceChange {
        let addr = r.address.to_string();
        match desired::image_cache_path(&self.opts.state_dir, r, &self.obs.source_hashes) {
            Some(p) if self.obs.files.contains_key(&p) => ResourceChange::new(addr, Kind::Image, Action::NoOp),
            _ => ResourceChange::new(addr, Kind::Image, Action::Create),
        }
    }

    fn disk(&mut self, r: &Resource) -> ResourceChange {
        let addr = r.address.to_string();
        let Some(want) = self.lowering().disk(r) else { return ResourceChange::new(addr, Kind::Disk, Action::NoOp) };
        if want.cdrom {
            return ResourceChange::new(addr, Kind::Disk, Action::NoOp);
        }
        let Some(have) = self.obs.files.get(&want.path) else {
            let exists = self.instance_of_disk_exists(&addr);
            let mut rc = ResourceChange::new(addr, Kind::Disk, Action::Create);
            if exists {
                rc.reason = Some("drift".into());
                rc.changes.push(AttrChange { attr: "file".into(), before: Some("(missing)".into()), after: Some(want.path.clone()), landing: Landing::Replace, outside: true, sensitive: false });
            }
            return rc;
        };
        if self.is_forgotten(&want.path) {
            return self.conflict(r, Foreign::new(format!("file {:?} (forgotten by a removed block; no longer virtform's)", want.path)), None);
        }
        let mut rc = ResourceChange::new(addr, Kind::Disk, Action::NoOp);
        let importing = self.registry_import(&mut rc, r);
        if have.backing_file != want.base {
            let images = self.opts.state_dir.join("images");
            let show = |p: &Option<String>| match p {
                None => "(none)".to_string(),
                Some(p) => match std::path::Path::new(p).strip_prefix(&images) {
                    Ok(sha) => format!("sha256:{}", sha.to_string_lossy().chars().take(12).collect::<String>()),
                    Err(_) => p.clone(),
                },
            };
            rc.changes.push(AttrChange {
                attr: "image".into(),
                before: Some(show(&have.backing_file)),
                after: Some(show(&want.base)),
                landing: Landing::Replace,
                outside: false,
                sensitive: false,
            });
        }
        if have.format.as_str() != want.format {
            rc.changes.push(change("format", have.format.as_str(), &want.format, Landing::Replace, false));
        }
        if let Some(size) = want.size {
            // An overlay is at least as large as its base.
            let base_size = want.base.as_ref().and_then(|b| self.obs.files.get(b)).map(|f| f.virtual_size).unwrap_or(0);
            let size = size.max(base_size);
            if have.virtual_size < size {
                rc.changes.push(change("size", crate::model::common::Size(have.virtual_size), crate::model::common::Size(size), Landing::Live, false));
            } else if have.virtual_size > size {
                rc.changes.push(change("size", crate::model::common::Size(have.virtual_size), crate::model::common::Size(size), Landing::Replace, false));
            }
        }
        if let Some(l) = rc.landing() {
            if l == Landing::Replace {
                rc.action = Action::Replace;
                rc.reason = Some("replace_because_cannot_update".into());
            } else {
                rc.action = Action::Update;
            }
        }
        if importing {
            self.finish_import(&mut rc, &format!("disk file {}", want.path));
        }
        rc
    }

    /// Whether an instance using the disk has its domain on the host (so a
    /// missing disk file is drift, not a first create). One pass over the
    /// instances, on first use: per missing disk, it was a pass over every
    /// resource (quadratic when many disk files were removed).
    fn instance_of_disk_exists(&mut self, disk_addr: &str) -> bool {
        let (cfg, obs) = (self.cfg, self.obs);
        self.disks_in_use
            .get_or_insert_with(|| {
                let mut used = HashSet::new();
                for r in &cfg.resources {
                    if let Spec::Instance(i) = &r.spec
                        && obs.domains.get(i.domain_name()).and_then(|d| d.marker.as_ref()).is_some_and(|m| m.0 == cfg.stack && (m.1 == r.address.to_string() || self.moving.get(&r.address.to_string()) == Some(&m.1)))
                    {
                        used.extend(i.disks.iter().map(|d| d.0.clone()));
                    }
                }
                used
            })
            .contains(disk_addr)
    }

    fn instance(&mut self, r: &Resource) -> ResourceChange {
        let Spec::Instance(inst) = &r.spec else { unreachable!() };
        let addr = r.address.to_string();
        let Some((want, desired)) = self.domains.remove(&addr).or_else(|| desired_domain(&self.lowering(), r)) else {
            return ResourceChange::new(addr, Kind::Instance, Action::NoOp);
        };
        if !self.firmware_present(r, inst) {
            // Nothing is planned for it: apply refuses the plan anyway.
            return ResourceChange::new(addr, Kind::Instance, Action::NoOp);
        }
        let seed = self.lowering().seed(r);
        if let Some((_, input)) = &seed
            && let Err(e) = crate::seed::seed_files(input)
        {
            self.out.errors.push(format!("{addr}: {e}"));
        }
        let Some(have) = self.obs.domains.get(&want.name) else {
            return ResourceChange::new(addr, Kind::Instance, Action::Create);
        };
        let owner = have.marker.as_ref().map(|(s, a, _)| (s.clone(), a.clone()));
        let importing = self.adopting(r, &owner);
        if !importing && !self.owned(&owner, r) {
            if owner.is_none() && self.import_of(r).is_some() {
                // The import was refused (a located plan error says why).
                return ResourceChange::new(addr, Kind::Instance, Action::NoOp);
            }
            return self.conflict(r, Foreign::new(format!("domain \"{}\"", want.name)).import(&want.name), owner);
        }
        // An existing domain keeps its UUID (libvirt cannot change it, and
        // an imported one was not derived by virtform): the engine's define
        // takes the host's (`apply::engine`, `Op::Define`).
        let mut desired = desired;
        if let Some(u) = have.def.as_ref().and_then(|d| d.uuid.clone()) {
            desired.uuid = Some(u);
        }
        let mut rc = ResourceChange::new(addr, Kind::Instance, Action::NoOp);
        if importing {
            rc.importing = self.import_of(r).map(|i| i.id.clone());
            rc.changes.push(AttrChange { attr: "marker".into(), before: Some("(none)".into()), after: Some(format!("virtform:{}:{}", self.cfg.stack, r.address)), landing: Landing::Live, outside: false, sensitive: false });
        }
        let outside = have.marker.as_ref().is_some_and(|m| m.2 == want.marker.spec_hash);
        match &have.def {
            None => {
                rc.changes.push(change("definition", "(unreadable)", "(as configured)", Landing::Restart, true));
            }
            Some(def) => {
                let fields = desired.changed_fields(def);
                let imported_volumes: BTreeSet<String> = self.imported.iter().filter(|(a, _)| a.starts_with("volume.")).map(|(_, o)| o.object().to_string()).collect();
                let seed_target = seed.as_ref().and_then(|(p, _)| want.disks.iter().find(|d| d.path == *p)).map(|d| format!("disk:{}", d.target));
                let seed_dir = self.opts.state_dir.join(&self.cfg.stack).join("seeds");
                let in_seeds = |p: &Option<String>| p.as_deref().is_some_and(|p| std::path::Path::new(p).parent() == Some(seed_dir.as_path()));
                for f in &fields {
                    if f == "marker" {
                        continue;
                    }
                    let (before, after) = field_values(f, def, &desired);
                    if Some(f) == seed_target.as_ref() || in_seeds(&before) {
                        // A new seed (user-data, network config… changed): write it, restart.
                        // Seeds are named after their content: show which content.
                        let show = |p: &Option<String>| {
                            p.as_deref().map(|p| match std::path::Path::new(p).file_stem().and_then(|n| n.to_str()).and_then(|n| n.rsplit_once('-')) {
                                Some((_, h)) if in_seeds(&Some(p.to_string())) => format!("seed {h}"),
                                _ => p.to_string(),
                            })
                        };
                        let after = show(&after).map(|a| format!("{a} (user_data, meta_data, network_config, keys or ports changed)"));
                        rc.changes.push(AttrChange { attr: "cloud_init".into(), before: show(&before), after, landing: Landing::Restart, outside, sensitive: false });
                        continue;
                    }
                    let landing = field_landing(f, &want, def, &self.opts.state_dir.join(&self.cfg.stack).join("volumes"), &imported_volumes);
                    rc.changes.push(AttrChange { attr: f.clone(), before, after, landing, outside, sensitive: r.sensitive.iter().any(|s| s == f) });
                }
                if !fields.is_empty() {
                    // Sensitive values never reach the diff.
                    let hidden = |d: &crate::xml::domain::ObservedDomain| {
                        let mut d = d.clone();
                        let secret = |a: &str| r.sensitive.iter().any(|s| s == a);
                        let mask = |v: &mut Option<String>| {
                            if v.is_some() {
                                *v = Some("(sensitive value)".into());
                            }
                        };
                        if secret("cmdline") {
                            mask(&mut d.cmdline);
                        }
                        if secret("kernel") {
                            mask(&mut d.kernel);
                        }
                        if secret("initrd") {
                            mask(&mut d.initrd);
                        }
                        d
                    };
                    let (a, b) = crate::xml::domain::normalized_pair(&hidden(&desired), &hidden(def));
                    // The marker's spec hash always differs when anything does: noise.
                    let strip = |t: &str| t.lines().filter(|l| !l.trim_start().starts_with("<marker ")).map(|l| format!("{l}\n")).collect::<String>();
                    let (a, b) = (strip(&a), strip(&b));
                    let diff = similar::TextDiff::from_lines(&b, &a);
                    rc.xml_diff = Some(diff.unified_diff().context_radius(2).header("host", "config").to_string());
                }
                if fields.iter().all(|f| f == "marker") && !fields.is_empty() && !importing {
                    rc.changes.push(change("marker", "older spec", "current spec", Landing::Live, false));
                }
            }
        }
        if let Some((p, _)) = &seed
            && !self.obs.files.contains_key(p)
            && !rc.changes.iter().any(|c| c.attr == "cloud_init")
        {
            rc.changes.push(change("cloud_init", "(seed file missing)", "(seed)", Landing::Restart, true));
        }
        let want_running = inst.state == crate::model::instance::State::Running;
        if have.running != want_running {
            let (b, a) = if want_running { ("shutoff", "running") } else { ("running", "shutoff") };
            // Not labelled as outside: an interrupted apply looks the same.
            rc.changes.push(change("state", b, a, Landing::Live, false));
        }
        if have.autostart != inst.autostart {
            rc.changes.push(change("autostart", have.autostart, inst.autostart, Landing::Live, outside));
        }
        // Waits of an earlier apply that never finished are waited for again
        // (a boot or restart in this plan waits anyway).
        if want_running
            && have.running
            && inst.wait_for.is_some()
            && self.obs.pending_waits.contains(&self.cfg.names_of_str(&rc.address))
            && !rc.changes.iter().any(|c| c.landing != Landing::Live || c.attr == "state")
        {
            rc.changes.push(change("readiness", "not confirmed (a wait_for of an earlier apply did not finish)", "waited for", Landing::Live, false));
        }
        match rc.landing() {
            Some(Landing::Replace) => {
                rc.action = Action::Replace;
                rc.reason = Some("replace_because_cannot_update".into());
                if importing && !self.opts.replace.contains(&rc.address) {
                    let why: Vec<&str> = rc.changes.iter().filter(|c| c.landing == Landing::Replace).map(|c| c.attr.as_str()).collect();
                    self.out.errors.push(format!(
                        "{}: importing domain {:?} needs it replaced ({} cannot change in place): the guest would be destroyed and defined anew; plan with --replace {} if that is meant, or make the configuration match the domain",
                        rc.address,
                        want.name,
                        why.join(", "),
                        rc.address
                    ));
                }
            }
            Some(_) => {
                rc.action = Action::Update;
                rc.reason = Some(if importing { "import".into() } else if outside { "drift".into() } else { "update".into() });
            }
            None => {}
        }
        rc
    }

    /// Whether the UEFI firmware files an EFI instance names are on the
    /// host (a fact observe read); if not, a plan error located at the
    /// instance's `secure_boot` (or `firmware`) attribute naming the files
    /// and the package. Apply would fail at the domain's start otherwise,
    /// after everything else was built.
    fn firmware_present(&mut self, r: &Resource, inst: &crate::model::instance::Instance) -> bool {
        if inst.firmware != crate::model::instance::Firmware::Efi {
            return true;
        }
        let (code, vars) = crate::xml::domain::ovmf_files(inst.secure_boot);
        let missing: Vec<&str> = [code, vars].into_iter().filter(|f| !self.obs.firmware.contains(*f)).collect();
        if missing.is_empty() {
            return true;
        }
        let (attr, what) = if inst.secure_boot { ("secure_boot", "secure_boot = true needs the Secure Boot UEFI firmware") } else { ("firmware", "firmware = \"efi\" needs the UEFI firmware") };
        let files = missing.join(" and ");
        let missing_n = missing.len();
        self.located_error(
            crate::config::diag::Diagnostic::error(format!("{}: {what} {files}, which this host does not have", r.address))
                .at_opt(r.span_of(attr))
                .label(if missing_n == 1 { "this file is missing" } else { "these files are missing" })
                .help(format!("install OVMF: apt-get install {} (scripts/host-setup does)", crate::xml::domain::OVMF_PACKAGE)),
        );
        false
    }

    /// Objects of this stack that the configuration no longer declares.
    fn orphans(&mut self) {
        let mut declared: BTreeSet<String> = if self.opts.destroy { BTreeSet::new() } else { self.cfg.resources.iter().map(|r| r.address.to_string()).collect() };
        // Objects a move takes to a declared address are not orphans.
        declared.extend(moved::froms(&self.moving));
        let stack = self.cfg.stack.clone();
        let mut found: BTreeMap<String, (Kind, Option<String>)> = BTreeMap::new();
        for d in self.obs.domains.values() {
            if let Some((s, a, _)) = &d.marker
                && *s == stack && !declared.contains(a) {
                    found.insert(a.clone(), (Kind::Instance, Some(d.name.clone())));
                }
        }
        // An overlay's bridge and VXLAN device carry the same marker: one object.
        let mut tunnels: BTreeMap<String, &str> = BTreeMap::new();
        for (name, l) in &self.obs.links {
            if let Some((s, a)) = self.obs.link_owner(name)
                && s == stack && !declared.contains(&a) {
                    let kind = crate::model::Address::parse(&a).map(|x| x.kind);
                    if kind == Some(Kind::Network) && l.vxlan.is_some() {
                        tunnels.insert(a, name);
                    } else if kind == Some(Kind::Network) {
                        found.insert(a, (Kind::Network, Some(name.clone())));
                    } else if kind == Some(Kind::Port) && name.len() > 3 {
                        found.insert(a, (Kind::Port, Some(format!("ovs_hybrid qbr{}", &name[3..]))));
                    }
                }
        }
        for (a, vx) in tunnels {
            let bridge = found.get(&a).and_then(|(_, o)| o.clone());
            found.insert(a, (Kind::Network, Some(crate::apply::overlay::object(bridge.as_deref(), Some(vx)))));
        }
        if let Some(ovs) = &self.obs.ovs {
            for name in ovs.bridges.keys() {
                if let Some((s, a)) = ovs.bridge_owner(name)
                    && s == stack && !declared.contains(&a) {
                        found.insert(a, (Kind::Network, Some(format!("ovs bridge {name}"))));
                    }
            }
            for name in ovs.ports.keys() {
                // An overlay's tunnel ports carry the network's marker and
                // go with its bridge; the others are hybrid plugs' qvo ports.
                if let Some((s, a)) = ovs.port_owner(name)
                    && s == stack && !declared.contains(&a) && name.len() > 3
                    && crate::model::Address::parse(&a).is_some_and(|x| x.kind == Kind::Port) {
                        found.entry(a).or_insert((Kind::Port, Some(format!("ovs_hybrid qbr{}", &name[3..]))));
                    }
            }
        }
        for (name, n) in &self.obs.networks {
            if self.is_forgotten(&format!("libvirt network {name}")) {
                continue;
            }
            if let Some(a) = desired::libvirt_network_owner(&stack, name, &n.uuid).map(|a| moved::current_of(self.obs, &a))
                && !declared.contains(&a) {
                    found.insert(a, (Kind::Network, Some(format!("libvirt network {name}"))));
                }
        }
        // Imported libvirt networks and files, by the registry (while it
        // still names the same object: one replaced by someone else is not ours).
        for (a, o) in &self.obs.imports {
            if declared.contains(a) {
                continue;
            }
            match crate::model::Address::parse(a).map(|x| x.kind) {
                Some(_) if o.matches(self.obs) && !self.opts.destroy && self.forgotten_by_block(a) => {
                    // Its marker is the registry entry (and a file's attribute):
                    // forgetting must drop those, which is not built; deleting
                    // it instead would lose what the user brought.
                    self.forget_refused(a, &format!("it is {}, imported through {} (forgetting imported objects is not supported yet)", o.describe(), crate::observe::imports::FILE));
                }
                Some(kind) if o.matches(self.obs) => {
                    found.insert(a.clone(), (kind, Some(o.describe())));
                }
                _ => self.out.forget.push(a.clone()),
            }
        }
        for (path, kind, a) in moved::stack_files(&self.opts.state_dir, &stack, self.obs) {
            if !declared.contains(&a) {
                found.insert(a, (kind, Some(path.to_string())));
            }
        }
        // Images live in the shared, content-addressed cache and are kept;
        // bridge, ovs and network ports have no host object of their own.
        for (a, (kind, object)) in found {
            if !self.opts.destroy && self.forgotten_by_block(&a) {
                // Hybrid ports' devices carry markers in three links and OVS.
                if kind == Kind::Port {
                    self.forget_refused(&a, "forgetting an ovs_hybrid port (its qbr/qvb/qvo markers) is not supported yet");
                    continue;
                }
                let mut rc = ResourceChange::new(a, kind, Action::Forget);
                rc.object = object;
                rc.reason = Some("forget_because_removed".into());
                self.out.changes.push(rc);
                continue;
            }
            let mut rc = ResourceChange::new(a, kind, Action::Delete);
            rc.object = object;
            rc.reason = Some(if self.opts.destroy { "delete_because_destroy".into() } else { "delete_because_no_resource_config".into() });
            self.out.changes.push(rc);
        }
    }
}


/// The configuration attribute a planned change belongs to (for
/// `ignore_changes`); None for host details no attribute names.
fn ignored_attr(attr: &str) -> Option<&str> {
    Some(match attr {
        "memory" | "current_memory" => "memory",
        "vcpus" | "cpu" | "cmdline" | "kernel" | "initrd" | "autostart" | "state" | "graphics" | "cloud_init" | "guest_agent" => attr,
        "mtu" | "address" | "stp" | "forward_delay" | "dhcp" | "datapath_type" | "size" => attr,
        _ => return None,
    })
}

/// The attributes a created resource will have (its resolved spec), for display.
fn created_attrs(r: &Resource) -> Vec<AttrChange> {
    let v = serde_json::to_value(&r.spec).unwrap_or_default();
    let Some(m) = v.as_object() else { return Vec::new() };
    m.iter()
        .filter(|(_, x)| !x.is_null() && x.as_array().is_none_or(|a| !a.is_empty()))
        .map(|(k, x)| {
            let sensitive = r.sensitive.iter().any(|s| s == k || s.starts_with(&format!("{k}.")));
            let unknown = r.unknown.contains(k);
            let shown = if unknown {
                "(known after apply)".to_string()
            } else {
                x.to_string()
            };
            AttrChange { attr: k.clone(), before: None, after: Some(shown), landing: Landing::Live, outside: false, sensitive }
        })
        .collect()
}

/// How a changed domain field lands. NICs and volumes are hot-plugged
/// (detached and attached live, and in the persistent config).
fn field_landing(field: &str, want: &crate::xml::domain::DomainDef, have: &crate::xml::domain::ObservedDomain, volumes_dir: &std::path::Path, imported_volumes: &BTreeSet<String>) -> Landing {
    match field {
        // A new firmware or variable store is a new machine (its NVRAM
        // holds the boot entries and keys the old firmware wrote).
        "name" | "uuid" | "domain_type" | "arch" | "machine" | "firmware" | "loader" | "nvram" => Landing::Replace,
        f if f.starts_with("nic:") => Landing::Live,
        // The agent channel is hot-plugged into a domain that has a
        // virtio-serial controller (every domain virtform defines has one);
        // a domain defined without one (by virtform before the agent
        // channel existed) gets it with a restart: libvirt cannot hot-plug
        // the controller. Removing the channel is a restart too.
        "guest_agent" if want.guest_agent && have.virtio_serial => Landing::Live,
        f if f.starts_with("disk:") => {
            let target = &f["disk:".len()..];
            let in_volumes = |p: Option<&str>| p.is_some_and(|p| std::path::Path::new(p).parent() == Some(volumes_dir) || imported_volumes.contains(p));
            let want_disk = want.disks.iter().find(|d| d.target == target);
            let have_disk = have.disks.iter().find(|d| d.target == target);
            // The boot disk (first disk) changing its file means a new machine.
            if want.disks.first().is_some_and(|d| d.target == target) && !want_disk.is_some_and(|d| in_volumes(Some(&d.path))) {
                Landing::Replace
            } else if want_disk.is_none_or(|d| in_volumes(Some(&d.path))) && have_disk.is_none_or(|d| in_volumes(d.path.as_deref())) {
                Landing::Live
            } else {
                Landing::Restart
            }
        }
        _ => Landing::Restart,
    }
}

/// Human before/after values of a domain field.
fn field_values(field: &str, have: &crate::xml::domain::ObservedDomain, want: &crate::xml::domain::ObservedDomain) -> (Option<String>, Option<String>) {
    use crate::model::common::Size;
    let mem = |k: u64| Size(k * 1024).to_string();
    match field {
        "memory" => (Some(mem(have.memory_kib)), Some(mem(want.memory_kib))),
        "current_memory" => (Some(mem(have.current_memory_kib)), Some(mem(want.current_memory_kib))),
        "vcpus" => (Some(have.vcpus.to_string()), Some(want.vcpus.to_string())),
        "cmdline" => (have.cmdline.clone(), want.cmdline.clone()),
        "kernel" => (have.kernel.clone(), want.kernel.clone()),
        "initrd" => (have.initrd.clone(), want.initrd.clone()),
        "name" => (Some(have.name.clone()), Some(want.name.clone())),
        "machine" => (Some(have.machine.clone()), Some(want.machine.clone())),
        "features" => (Some(have.features.join(", ")), Some(want.features.join(", "))),
        "firmware" => {
            let fw = |d: &crate::xml::domain::ObservedDomain| match d.firmware {
                crate::model::instance::Firmware::Bios => "bios".to_string(),
                crate::model::instance::Firmware::Efi => "efi".to_string(),
            };
            (Some(fw(have)), Some(fw(want)))
        }
        "loader" => {
            let l = |d: &crate::xml::domain::ObservedDomain| {
                Some(match &d.loader {
                    None => "(none)".to_string(),
                    Some(l) if l.secure => format!("{} (secure boot)", l.path),
                    Some(l) => l.path.clone(),
                })
            };
            (l(have), l(want))
        }
        "nvram" => {
            let n = |d: &crate::xml::domain::ObservedDomain| {
                Some(match &d.nvram {
                    None => "(none)".to_string(),
                    Some(n) => format!("{} (from {})", n.path.as_deref().unwrap_or("(libvirt's default)"), n.template.as_deref().unwrap_or("(libvirt's default)")),
                })
            };
            (n(have), n(want))
        }
        "guest_agent" => (Some(have.guest_agent.to_string()), Some(want.guest_agent.to_string())),
        f if f.starts_with("disk:") => {
            let t = &f["disk:".len()..];
            let find = |d: &crate::xml::domain::ObservedDomain| d.disks.iter().find(|x| x.target == t).and_then(|x| x.path.clone());
            (find(have), find(want))
        }
        f if f.starts_with("nic:") => {
            use crate::xml::domain::ObservedNicSource as S;
            let m = &f["nic:".len()..];
            let find = |d: &crate::xml::domain::ObservedDomain| {
                d.nics.iter().find(|x| x.mac.to_string() == m).map(|x| match &x.source {
                    S::Bridge { bridge } => format!("bridge {bridge}"),
                    S::Ovs { bridge, .. } => format!("ovs {bridge}"),
                    S::Network { network } => format!("network {network}"),
                    S::Other { kind } => kind.clone(),
                })
            };
            (find(have), find(want))
        }
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_kinds;

#[cfg(test)]
mod tests_data;

#[cfg(test)]
mod tests_import;

#[cfg(test)]
mod tests_firmware;

#[cfg(test)]
mod tests_agent;

#[cfg(test)]
mod tests_moved;

#[cfg(test)]
mod tests_modules;
