//! Planning `moved` and `removed` blocks.
//!
//! A move changes a resource's *address*, never its host objects: the
//! objects keep every name virtform derived from the old address (domain
//! name and UUID, console log, seed and variable-store stems, bridge name,
//! MAC, port id and its tap/qbr/qvb/qvo names, disk and volume paths,
//! libvirt network name and UUID, volume serial). A running domain cannot
//! be renamed, an interface rename drops the guest's link, a file in use
//! cannot be renamed under the guest: so nothing is renamed, now or later.
//!
//! How the names are kept:
//! - [`keep_names`] (run on the loaded configuration and the observation,
//!   before planning and applying) finds, per resource, the address its
//!   names derive from ("names address"): the `from` of a move planned now
//!   (or that address's own names address), else the stack's record
//!   `<state>/<stack>/names.json` ([`crate::observe::Names`]) written by the
//!   apply of an earlier move. It rewrites the spec's derived defaults
//!   (those equal to what the new address derives) to the names address's,
//!   and records it in [`Configuration::names`], which the lowering uses
//!   for every path and id it derives. So every later plan, with or
//!   without the moved block, wants the objects as they are.
//! - The apply writes the record first, then rewrites the markers (the
//!   domain's `<metadata>` in place, the link alias, `external_ids`);
//!   objects whose marker *is* their name (files, libvirt networks) need
//!   only the record.
//!
//! A `removed { lifecycle { destroy = false } }` forgets: the marker is
//! removed where there is one (domain metadata, link alias, OVS
//! external_ids); a file or libvirt network, whose marker is its path or
//! derived UUID, is listed as forgotten in the record so that orphans and
//! destroy pass it by (and a resource that later wants it is a conflict).
//!
//! Invariant: pure (the record comes in `Observed::names`).

use super::{AttrChange, Landing, Planner};
use crate::config::moved::Move;
use crate::config::Configuration;
use crate::model::{Address, Kind, Resource, Spec};
use crate::observe::{Names, Observed};
use std::collections::{BTreeMap, BTreeSet};

/// A move the plan makes: the host's objects of `from` become `to`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedMove {
    pub from: String,
    pub to: String,
    /// The moved block that lands the object on `to` (the chain's last).
    pub block: usize,
}

/// The address whose names the record says `a` (a current address) keeps.
fn recorded<'a>(obs: &'a Observed, a: &str) -> Option<&'a str> {
    obs.names.names.get(a).map(String::as_str)
}

/// The current address of a names address found on the host (a file stem,
/// a libvirt network name): the resource the record says keeps those
/// names, else the names address itself.
pub(super) fn current_of(obs: &Observed, names: &str) -> String {
    obs.names.names.iter().find(|(_, n)| n.as_str() == names).map(|(a, _)| a.clone()).unwrap_or_else(|| names.to_string())
}

/// Every address of the stack the host holds objects of, with the objects
/// (`domain "demo-vm"`, `file …`): markers, and names found through the record.
pub fn host_addresses(stack: &str, obs: &Observed, state_dir: &std::path::Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in obs.domains.values() {
        if let Some((s, a, _)) = &d.marker
            && s == stack
        {
            out.entry(a.clone()).or_default().push(format!("domain \"{}\"", d.name));
        }
    }
    for name in obs.links.keys() {
        if let Some((s, a)) = obs.link_owner(name)
            && s == stack
        {
            out.entry(a).or_default().push(format!("link \"{name}\""));
        }
    }
    if let Some(ovs) = &obs.ovs {
        for name in ovs.bridges.keys() {
            if let Some((s, a)) = ovs.bridge_owner(name)
                && s == stack
            {
                out.entry(a).or_default().push(format!("Open vSwitch bridge \"{name}\""));
            }
        }
    }
    for (name, n) in &obs.networks {
        if obs.names.forgotten.contains(&format!("libvirt network {name}")) {
            continue;
        }
        if let Some(a) = super::desired::libvirt_network_owner(stack, name, &n.uuid) {
            out.entry(current_of(obs, &a)).or_default().push(format!("libvirt network \"{name}\""));
        }
    }
    for (path, _, a) in stack_files(state_dir, stack, obs) {
        out.entry(a).or_default().push(format!("file {path}"));
    }
    out
}

/// The stack's own disk and volume files on the host (not forgotten), each
/// with its kind and the current address of the names address its stem
/// reads as (a moved file keeps its path).
pub(super) fn stack_files<'o>(state_dir: &std::path::Path, stack: &str, obs: &'o Observed) -> Vec<(&'o str, Kind, String)> {
    let disk_dir = state_dir.join(stack).join("disks");
    let volume_dir = state_dir.join(stack).join("volumes");
    let mut out = Vec::new();
    for path in obs.files.keys().filter(|p| !obs.names.forgotten.contains(*p)) {
        let p = std::path::Path::new(path);
        let kind = if p.parent() == Some(disk_dir.as_path()) {
            Kind::Disk
        } else if p.parent() == Some(volume_dir.as_path()) {
            Kind::Volume
        } else {
            continue;
        };
        if let Some(a) = p.file_stem().and_then(|s| s.to_str()).and_then(|stem| Address::from_stem(kind, stem)) {
            out.push((path.as_str(), kind, current_of(obs, &a.to_string())));
        }
    }
    out
}

/// The chain of moves from `a`: the end address and the index of the last
/// block applied; `None` when no move applies (or the chain loops, which
/// the loader refuses).
fn chain_end(moves: &[Move], a: &Address) -> Option<(Address, usize)> {
    let mut cur = a.clone();
    let mut last = None;
    for _ in 0..crate::config::moved::MAX_CHAIN {
        match moves.iter().enumerate().find_map(|(i, m)| m.apply(&cur).map(|n| (i, n))) {
            Some((i, next)) if next != cur => {
                cur = next;
                last = Some(i);
            }
            _ => break,
        }
    }
    last.map(|i| (cur, i))
}

/// The moves this plan makes: for every address the host holds objects of
/// that the configuration does not declare, the end of its chain of moves,
/// when that is declared. `on_host`: [`host_addresses`].
pub fn planned_moves(cfg: &Configuration, obs: &Observed, on_host: &BTreeMap<String, Vec<String>>) -> Vec<PlannedMove> {
    if cfg.moves.is_empty() {
        return Vec::new();
    }
    let mut candidates: BTreeSet<String> = on_host.keys().cloned().collect();
    // A bridge, ovs or network port has no host object of its own (its MAC
    // and tap live in its instance's definition): its moves are taken as
    // they are written, so the port keeps its MAC and id.
    for m in cfg.moves.iter().filter(|m| m.from.kind == Kind::Port) {
        if m.from.key != crate::model::Key::None {
            candidates.insert(m.from.to_string());
        } else {
            for r in cfg.resources.iter().filter(|r| r.address.kind == Kind::Port) {
                candidates.insert(Address { module: m.from.module.clone(), name: m.from.name.clone(), ..r.address.clone() }.to_string());
            }
        }
    }
    let mut out = Vec::new();
    for a in &candidates {
        if cfg.resource(a).is_some() {
            continue;
        }
        let Some(addr) = Address::parse(a) else { continue };
        if let Some((to, block)) = chain_end(&cfg.moves, &addr)
            && cfg.resource(&to.to_string()).is_some()
            // A port's move applied already (it has no marker to tell): the
            // record says so. The target records the names it took; the
            // source either records the same origin, or nothing any more
            // (the apply dropped it: so does the middle of a chain, which
            // records the chain's origin at its end, never its own address).
            && !(addr.kind == Kind::Port && recorded(obs, &to.to_string()).is_some_and(|r| recorded(obs, a).is_none_or(|o| o == r)))
        {
            out.push(PlannedMove { from: a.clone(), to: to.to_string(), block });
        }
    }
    out
}

/// Finds each resource's names address (see the module documentation) and
/// rewrites the derived defaults of the moved ones. Run once, after
/// loading and observing, before planning (and lowering for the apply).
pub fn keep_names(cfg: &mut Configuration, obs: &Observed, state_dir: &std::path::Path) {
    keep_names_on(cfg, &[(obs, state_dir)]);
}

/// [`keep_names`] for a fleet: the objects of every host (each with its
/// state dir) are where moves start from; the record (`Observed::names`,
/// this machine's) is read from the first, as every host carries it.
pub fn keep_names_on(cfg: &mut Configuration, hosts: &[(&Observed, &std::path::Path)]) {
    let Some(&(obs, _)) = hosts.first() else { return };
    if cfg.moves.is_empty() && obs.names.names.is_empty() {
        return;
    }
    let mut on_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if !cfg.moves.is_empty() {
        for (o, state_dir) in hosts {
            for (a, objects) in host_addresses(&cfg.stack, o, state_dir) {
                on_host.entry(a).or_default().extend(objects);
            }
        }
    }
    // A move onto an address the host has objects of is refused (the
    // planner says so); the target keeps its own names.
    let mut moves: BTreeMap<String, PlannedMove> = BTreeMap::new();
    for m in planned_moves(cfg, obs, &on_host).into_iter().filter(|m| !on_host.contains_key(&m.to)) {
        // Two chains to one target are a plan error; the first keeps its names meanwhile.
        moves.entry(m.to.clone()).or_insert(m);
    }
    let mut names: BTreeMap<String, Address> = BTreeMap::new();
    for r in &cfg.resources {
        let a = r.address.to_string();
        let origin = match moves.get(&a) {
            Some(m) => recorded(obs, &m.from).unwrap_or(&m.from).to_string(),
            None => match recorded(obs, &a) {
                Some(o) => o.to_string(),
                None => continue,
            },
        };
        if origin != a
            && let Some(o) = Address::parse(&origin)
            && o.kind == r.address.kind
        {
            names.insert(a, o);
        }
    }
    // Recorded names of addresses no longer declared (orphans about to be
    // deleted): their removal finds the console logs and variable stores
    // under the names they kept.
    for (a, o) in &obs.names.names {
        if a != o
            && !names.contains_key(a)
            && cfg.resource(a).is_none()
            && let Some(o) = Address::parse(o)
        {
            names.insert(a.clone(), o);
        }
    }
    let stack = cfg.stack.clone();
    for r in &mut cfg.resources {
        if let Some(o) = names.get(&r.address.to_string()) {
            rebase(r, o, &stack);
        }
    }
    cfg.names = names;
}

/// Rewrites the defaults of `r`'s spec that derive from its address to the
/// values `names` derives (a value the configuration set stays).
fn rebase(r: &mut Resource, names: &Address, stack: &str) {
    use crate::model::common::{derived_uuid, Mac};
    let dir = std::path::Path::new("");
    // Only the stack enters these derivations (the model's own functions).
    let ctx = crate::model::Ctx { stack, state_dir: dir, config_dir: dir, built: empty(), data: None };
    let (new_seed, old_seed) = (ctx.seed(&r.address), ctx.seed(names));
    match &mut r.spec {
        Spec::Instance(i) => {
            if i.name.as_deref() == Some(crate::model::instance::default_name(&r.address, &ctx).as_str()) {
                i.name = Some(crate::model::instance::default_name(names, &ctx));
            }
        }
        Spec::Port(p) => {
            if p.mac == Some(Mac::derived(&new_seed)) {
                p.mac = Some(Mac::derived(&old_seed));
            }
            if p.id.as_deref() == Some(derived_uuid(&new_seed).as_str()) {
                p.id = Some(derived_uuid(&old_seed));
            }
        }
        Spec::Network(n) => {
            if n.bridge.as_ref() == Some(&crate::model::network::default_bridge(&r.address, &ctx)) {
                n.bridge = Some(crate::model::network::default_bridge(names, &ctx));
            }
        }
        Spec::Volume(v) => {
            if v.serial.as_deref() == Some(crate::model::volume::default_serial(&r.address).as_str()) {
                v.serial = Some(crate::model::volume::default_serial(names));
            }
        }
        Spec::Host(_) | Spec::Disk(_) | Spec::Image(_) => {}
    }
}

fn empty() -> &'static BTreeMap<String, Resource> {
    static EMPTY: std::sync::OnceLock<BTreeMap<String, Resource>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Default::default)
}

impl Planner<'_> {
    /// Checks the planned moves against the host (a target that has
    /// objects of its own is a located error; both stay no-ops) and
    /// returns the accepted ones, by target.
    pub(super) fn check_moves(&mut self) -> BTreeMap<String, String> {
        // Imported libvirt networks and files are owned through the import
        // registry, keyed by address; a move would have to rekey it (not
        // built), and without that the old address's entry would read as an
        // orphan: refused, so the apply never deletes what the user brought.
        for a in self.obs.imports.keys() {
            let Some(addr) = Address::parse(a) else { continue };
            if let Some(block) = self.cfg.moves.iter().find(|m| m.apply(&addr).is_some()) {
                let span = block.from_span;
                self.located_error(
                    crate::config::diag::Diagnostic::error(format!("moved: {a} was imported (recorded in {}); moving an imported libvirt network, disk or volume is not supported yet", crate::observe::imports::FILE))
                        .at(span)
                        .label("an imported object keeps its address")
                        .help(format!("keep the resource at {a} and remove this moved block")),
                );
            }
        }
        if self.cfg.moves.is_empty() {
            return BTreeMap::new();
        }
        let on_host = host_addresses(&self.cfg.stack, self.obs, &self.opts.state_dir);
        let moves = planned_moves(self.cfg, self.obs, &on_host);
        if moves.is_empty() {
            return BTreeMap::new();
        }
        let mut ok = BTreeMap::new();
        let mut targets: BTreeMap<&str, &PlannedMove> = BTreeMap::new();
        for m in &moves {
            let block = &self.cfg.moves[m.block];
            if let Some(prev) = targets.get(m.to.as_str()) {
                // Two host addresses reach one target through different chains.
                self.located_error(
                    crate::config::diag::Diagnostic::error(format!("moved: both {} and {} would move to {}", prev.from, m.from, m.to))
                        .at(block.to_span)
                        .label("one address takes the objects of one move only"),
                );
                ok.remove(&m.to);
                self.moves_refused.insert(m.to.clone());
                continue;
            }
            targets.insert(&m.to, m);
            if let Some(objects) = on_host.get(&m.to) {
                self.located_error(
                    crate::config::diag::Diagnostic::error(format!("moved: {} cannot move to {}: the host already has {} for {}", m.from, m.to, objects.join(", "), m.to))
                        .at(block.to_span)
                        .label("this address already has its objects")
                        .help(format!("destroy one of the two first (a removed block for {}, or apply without this moved block), or move to a free address", m.from)),
                );
                self.moves_refused.insert(m.to.clone());
                continue;
            }
            ok.insert(m.to.clone(), m.from.clone());
        }
        ok
    }

    /// The move's own change, added to the resource's (and an update when
    /// the move is all the configuration asks).
    pub(super) fn moved_change(&self, rc: &mut super::ResourceChange) {
        let Some(from) = self.moving.get(&rc.address) else { return };
        // The spec hash of a domain's marker covers the address: the move
        // is the marker's change, shown once.
        rc.changes.retain(|c| !(c.attr == "marker" && c.before.as_deref() == Some("older spec")));
        rc.previous_address = Some(from.clone());
        rc.changes.insert(0, AttrChange { attr: "address".into(), before: Some(from.clone()), after: Some(rc.address.clone()), landing: Landing::Live, outside: false, sensitive: false });
        if rc.action == super::Action::NoOp || (rc.action == super::Action::Update && rc.changes.iter().all(|c| c.attr == "address")) {
            rc.action = super::Action::Update;
            rc.reason = Some("moved".into());
        }
    }

    /// The stack's record after this plan: moves added, deleted and
    /// forgotten addresses dropped, forgotten files and libvirt networks
    /// listed. `None` when it does not change.
    pub(super) fn next_names(&self) -> Option<Names> {
        let mut n = self.obs.names.clone();
        // Only the moves this plan applies (`--target` may leave some out).
        let applied: BTreeSet<&str> = self.out.changes.iter().filter(|c| c.previous_address.is_some()).map(|c| c.address.as_str()).collect();
        for (to, from) in self.moving.iter().filter(|(to, _)| applied.contains(to.as_str())) {
            let origin = n.names.remove(from).unwrap_or_else(|| from.clone());
            if origin == *to {
                n.names.remove(to);
            } else {
                n.names.insert(to.clone(), origin);
            }
        }
        for c in &self.out.changes {
            match c.action {
                super::Action::Delete => {
                    n.names.remove(&c.address);
                }
                super::Action::Forget => {
                    // A forgotten guest keeps using its console log, seeds and
                    // variable store: a complete destroy of the stack passes them by.
                    if c.kind == Kind::Instance
                        && let Some(a) = Address::parse(n.names.get(&c.address).map(String::as_str).unwrap_or(&c.address))
                    {
                        let (state, stack) = (&self.opts.state_dir, &self.cfg.stack);
                        let log = crate::model::instance::console_log_path(state, stack, &a);
                        n.forgotten.insert(format!("{}.1", log.display()));
                        n.forgotten.insert(log.display().to_string());
                        n.forgotten.insert(crate::model::instance::nvram_path(state, stack, &a).display().to_string());
                        let seeds = state.join(stack).join("seeds");
                        let prefix = format!("{}-", a.file_stem());
                        for p in self.obs.files.keys() {
                            let p = std::path::Path::new(p);
                            if p.parent() == Some(seeds.as_path()) && p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with(&prefix)) {
                                n.forgotten.insert(p.display().to_string());
                            }
                        }
                    }
                    n.names.remove(&c.address);
                    if let Some(o) = &c.object
                        && matches!(c.kind, Kind::Disk | Kind::Volume | Kind::Network)
                        && (o.starts_with('/') || o.starts_with("libvirt network "))
                    {
                        n.forgotten.insert(o.clone());
                    }
                }
                _ => {}
            }
        }
        (n != self.obs.names).then_some(n)
    }

    /// Whether a `removed` block with `destroy = false` covers an orphan.
    pub(super) fn forgotten_by_block(&self, a: &str) -> bool {
        let Some(addr) = Address::parse(a) else { return false };
        self.cfg.removed.iter().any(|r| !r.destroy && r.covers(&addr))
    }

    /// A forget that cannot be done (no way to take the marker off without
    /// touching the object): a located error at the removed block.
    pub(super) fn forget_refused(&mut self, a: &str, why: &str) {
        let Some(addr) = Address::parse(a) else { return };
        let Some(b) = self.cfg.removed.iter().find(|r| r.covers(&addr)) else { return };
        self.located_error(crate::config::diag::Diagnostic::error(format!("removed: {a} cannot be forgotten: {why}")).at(b.from_span).label("set lifecycle { destroy = true } to destroy it instead"));
    }

    /// Paths and libvirt networks a `removed` block forgot: nobody's.
    pub(super) fn is_forgotten(&self, object: &str) -> bool {
        self.obs.names.forgotten.contains(object)
    }
}

/// The addresses of a set of moves (for orphan checks).
pub(super) fn froms(moving: &BTreeMap<String, String>) -> BTreeSet<String> {
    moving.values().cloned().collect()
}
