//! Planning `import` blocks: checking each against the host, then letting
//! the resource's planner treat the unmarked object as its own.
//!
//! Invariants:
//! - An import adopts only an object that carries **no** marker, found by
//!   the name the resource would give it, of the kind the resource is. An
//!   id that names nothing, another kind's object, another stack's (or
//!   another address's) object, or an object the resource would not call by
//!   that name is a located plan error, and the resource stays a no-op:
//!   apply refuses a plan with errors, so nothing on the host changes.
//! - An object that already carries this resource's marker makes its
//!   import block a no-op: after the apply that wrote the marker, the plan
//!   says nothing about the import.
//! - The import itself is one change, `marker: (none) -> virtform:<stack>:<address>`,
//!   landing live; whatever else the configuration asks is diffed as for any
//!   owned object and lands as its class says (a restart only when one of
//!   those changes needs it; a replace only with `--replace`).

use super::Planner;
use crate::config::diag::Diagnostic;
use crate::config::import::Import;
use crate::model::network::NetType;
use crate::model::{Resource, Spec};

impl Planner<'_> {
    /// The import block naming this resource instance, if any.
    pub(super) fn import_of(&self, r: &Resource) -> Option<&Import> {
        self.cfg.imports.iter().find(|i| i.to == r.address)
    }

    /// Whether the planner adopts this resource's unmarked object: an
    /// import names it and [`Planner::check_imports`] accepted it.
    pub(super) fn adopting(&self, r: &Resource, owner: &Option<(String, String)>) -> bool {
        owner.is_none() && self.imports_ok.contains(&r.address.to_string())
    }

    /// A located plan error about an import (rendered with its source line).
    fn import_error(&mut self, i: &Import, at_to: bool, message: String, help: Option<String>) {
        let from = if i.span.is_none() { " (virtform import)" } else { "" };
        let mut d = Diagnostic::error(format!("import {}{from}: {message}", i.to)).at_opt(if at_to { i.to_span } else { i.id_span });
        if let Some(h) = help {
            d = d.help(h);
        }
        self.located_error(d);
    }

    /// A plan error rendered as a diagnostic: file:line:column, the source
    /// line and its marker (without the leading "error: ", as plan errors
    /// are printed under their own heading).
    pub(super) fn located_error(&mut self, d: Diagnostic) {
        let text = d.render(&self.cfg.sources, false);
        self.out.errors.push(text.strip_prefix("error: ").unwrap_or(&text).trim_end().to_string());
    }

    /// What the id names on the host besides `want` (for kind mismatches).
    fn id_elsewhere(&self, id: &str, not: &str) -> Option<String> {
        let mut found = Vec::new();
        if not != "domain" && (self.obs.domains.contains_key(id) || self.domain_by_uuid(id).is_some()) {
            found.push("a libvirt domain (import it into an instance)".to_string());
        }
        if not != "link" && self.obs.links.contains_key(id) && !self.obs.ovs.as_ref().is_some_and(|o| o.bridges.contains_key(id)) {
            found.push("a Linux link (import a bridge into a network with type = \"bridge\")".to_string());
        }
        if not != "ovs" && self.obs.ovs.as_ref().is_some_and(|o| o.bridges.contains_key(id)) {
            found.push("an Open vSwitch bridge (import it into a network with type = \"ovs\")".to_string());
        }
        if not != "network" && self.obs.networks.contains_key(id) {
            found.push("a libvirt network".to_string());
        }
        (!found.is_empty()).then(|| found.join(" and "))
    }

    fn domain_by_uuid(&self, id: &str) -> Option<&crate::observe::ActualDomain> {
        let want = crate::xml::normalize_uuid(id);
        if want.len() != 36 {
            return None;
        }
        self.obs.domains.values().find(|d| d.def.as_ref().and_then(|x| x.uuid.as_deref()) == Some(want.as_str()))
    }

    /// The owner named by a marker, as a sentence, or None when the object
    /// may be adopted (no marker) or already is this resource's.
    fn foreign_owner(&self, r: &Resource, owner: Option<(String, String)>) -> Result<bool, String> {
        match owner {
            None => Ok(true),
            Some((s, a)) if s == self.cfg.stack && a == r.address.to_string() => Ok(false),
            Some((s, a)) if s == self.cfg.stack => Err(format!("it already belongs to {a} of this stack")),
            Some((s, a)) => Err(format!("it belongs to {a} of stack \"{s}\" (its marker says so); an object is managed by one stack only, and virtform never imports another stack's")),
        }
    }

    /// Checks every import against the observation; fills `imports_ok`
    /// with the addresses whose object may be adopted.
    pub(super) fn check_imports(&mut self) {
        let imports = self.cfg.imports.clone();
        for i in &imports {
            let Some(r) = self.cfg.resource(&i.to.to_string()) else {
                self.imports_refused.insert(i.to.to_string());
                self.import_error(i, true, "no such resource in the configuration".into(), None);
                continue;
            };
            let id = i.id.as_str();
            let verdict: Result<bool, (String, Option<String>)> = match &r.spec {
                Spec::Instance(inst) => {
                    let by_name = self.obs.domains.get(id);
                    match by_name.or_else(|| self.domain_by_uuid(id)) {
                        None => Err(match self.id_elsewhere(id, "domain") {
                            Some(what) => (format!("{id:?} is {what}, not a libvirt domain; an instance imports a domain (by name or UUID)"), None),
                            None => (format!("there is no libvirt domain named {id:?} (or with that UUID) on this host"), Some("virsh -c qemu:///system list --all lists the domains; check the name and --connect".into())),
                        }),
                        Some(d) if d.name != inst.domain_name() => Err((
                            format!("the domain is named {:?}, but {} would be the domain {:?}", d.name, i.to, inst.domain_name()),
                            Some(format!("set name = {:?} in {}: virtform keeps an imported domain's name", d.name, i.to)),
                        )),
                        Some(d) => {
                            let owner = d.marker.as_ref().map(|(s, a, _)| (s.clone(), a.clone()));
                            self.foreign_owner(r, owner).map_err(|m| (format!("domain {:?}: {m}", d.name), None))
                        }
                    }
                }
                Spec::Network(n) if n.existing.is_none() => match n.net_type {
                    NetType::Bridge => match self.obs.links.get(id) {
                        _ if id != n.bridge_name() => Err((
                            format!("{} would be the bridge {:?}, not {id:?}", i.to, n.bridge_name()),
                            Some(format!("set bridge = {id:?} in {}", i.to)),
                        )),
                        None => Err(match self.id_elsewhere(id, "link") {
                            Some(what) => (format!("{id:?} is {what}, not a Linux bridge"), None),
                            None => (format!("there is no link named {id:?} on this host"), Some("ip link show lists the links".into())),
                        }),
                        Some(l) if l.bridge.is_none() => Err((format!("link {id:?} is not a Linux bridge; a network with type = \"bridge\" imports a bridge"), None)),
                        Some(_) if self.obs.ovs.as_ref().is_some_and(|o| o.bridges.contains_key(id)) => {
                            Err((format!("{id:?} is an Open vSwitch bridge, not a Linux bridge"), Some(format!("set type = \"ovs\" in {}", i.to))))
                        }
                        Some(_) => {
                            let owner = self.obs.link_owner(id);
                            self.foreign_owner(r, owner).map_err(|m| (format!("link {id:?}: {m}"), None))
                        }
                    },
                    NetType::Ovs => match &self.obs.ovs {
                        _ if id != n.bridge_name() => Err((
                            format!("{} would be the Open vSwitch bridge {:?}, not {id:?}", i.to, n.bridge_name()),
                            Some(format!("set bridge = {id:?} in {}", i.to)),
                        )),
                        None => Err(("Open vSwitch is not running, so the bridge cannot be read".into(), None)),
                        Some(o) if !o.bridges.contains_key(id) => Err(match self.id_elsewhere(id, "ovs") {
                            Some(what) => (format!("{id:?} is {what}, not an Open vSwitch bridge"), None),
                            None => (format!("there is no Open vSwitch bridge named {id:?} on this host"), Some("ovs-vsctl list-br lists the bridges".into())),
                        }),
                        Some(o) => {
                            let owner = o.bridge_owner(id);
                            self.foreign_owner(r, owner).map_err(|m| (format!("Open vSwitch bridge {id:?}: {m}"), None))
                        }
                    },
                    NetType::Nat | NetType::Isolated => Err((
                        "importing a libvirt network is not supported yet (virtform marks its libvirt networks by a UUID derived from stack and address, which an existing network does not have)".into(),
                        Some(format!("read it as it is with data \"network\" \"{}\" {{ libvirt_network = {id:?} }}", r.address.name)),
                    )),
                },
                Spec::Network(_) => Err(("a data source cannot be imported".into(), None)),
                Spec::Disk(_) | Spec::Volume(_) => Err((
                    format!("importing a {} is not supported yet: virtform keeps its disk files under <state_dir>/{}/ by address", r.address.kind, self.cfg.stack),
                    None,
                )),
                Spec::Port(_) | Spec::Image(_) => Err((format!("a {} has no host object of its own to import", r.address.kind), None)),
            };
            match verdict {
                Ok(true) => {
                    self.imports_ok.insert(r.address.to_string());
                }
                Ok(false) => {} // already this resource's: the block is a no-op
                Err((m, help)) => {
                    self.imports_refused.insert(r.address.to_string());
                    self.import_error(i, false, m, help);
                }
            }
        }
    }
}
