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

use super::{Action, AttrChange, Landing, Planner, ResourceChange};
use crate::observe::imports::Imported;
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

    /// An import of a libvirt network (`type = "nat"` or `"isolated"`), by
    /// name or UUID. Accepted: recorded in `imported` (name and UUID), so
    /// the lowering uses the network's own name and UUID.
    fn check_libvirt_network_import(&mut self, r: &Resource, n: &crate::model::network::Network, id: &str) -> Result<bool, (String, Option<String>)> {
        let addr = r.address.to_string();
        let uuid = crate::xml::normalize_uuid(id);
        let Some(net) = self.obs.networks.get(id).or_else(|| self.obs.networks.values().find(|x| x.uuid == uuid)) else {
            return Err(match self.id_elsewhere(id, "network") {
                Some(what) => (format!("{id:?} is {what}, not a libvirt network; a network with type = \"{}\" imports a libvirt network (by name or UUID)", n.net_type.as_str()), None),
                None => (format!("there is no libvirt network named {id:?} (or with that UUID) on this host"), Some("virsh -c qemu:///system net-list --all lists the libvirt networks".into())),
            });
        };
        let same = |o: &Imported| matches!(o, Imported::LibvirtNetwork { name, uuid } if *name == net.name && *uuid == net.uuid);
        if let Some((a, _)) = self.obs.imports.iter().find(|(_, o)| same(o)) {
            return if *a == addr { Ok(false) } else { Err((format!("libvirt network {:?}: it already belongs to {a} of this stack (its import registry says so)", net.name), None)) };
        }
        if let Some((st, a)) = self.obs.other_imports.iter().find_map(|(st, objs)| objs.iter().find(|(_, o)| same(o)).map(|(a, _)| (st, a))) {
            return Err((format!("libvirt network {:?} belongs to {a} of stack \"{st}\" (its import registry says so); an object is managed by one stack only, and virtform never imports another stack's", net.name), None));
        }
        if let Some(owner) = super::desired::derived_network_owner(&net.name, &net.uuid) {
            // A network virtform made (its UUID is a derived one).
            return self.foreign_owner(r, Some(owner)).map_err(|m| (format!("libvirt network {:?}: {m}", net.name), None));
        }
        // A bridge name the configuration does not write is derived: not
        // the network's, and virtform does not rename what it imports.
        if !r.spans.contains_key("bridge")
            && let Some(b) = net.def.as_ref().and_then(|d| d.bridge.clone())
            && b != n.bridge_name()
        {
            return Err((
                format!("libvirt network {:?} has the bridge {b:?}, but {addr} would name its bridge {:?}", net.name, n.bridge_name()),
                Some(format!("set bridge = {b:?} in {addr}: virtform keeps an imported network's bridge")),
            ));
        }
        self.imported.insert(addr, Imported::LibvirtNetwork { name: net.name.clone(), uuid: net.uuid.clone() });
        Ok(true)
    }

    /// An import of a disk or volume file, by absolute path. Accepted:
    /// recorded in `imported` (path, device, inode), so the lowering (and
    /// the domain XML) uses the file at its path.
    fn check_file_import(&mut self, r: &Resource, id: &str) -> Result<bool, (String, Option<String>)> {
        use crate::observe::imports::PathFact;
        let addr = r.address.to_string();
        let kind = r.address.kind;
        let format = match &r.spec {
            Spec::Disk(d) => {
                use crate::model::disk::DiskKind;
                let refuse = |what: &str| Err((format!("{addr} {what}, but an imported disk is used as it is"), None));
                if d.image.is_some() {
                    return refuse("has `image` (virtform would make a new overlay on it)");
                }
                if d.kind == DiskKind::Cdrom {
                    return refuse("is a cdrom of an image");
                }
                if d.kind == DiskKind::Swap {
                    return refuse("is a swap disk (virtform would run mkswap on a new file)");
                }
                if d.filesystem.is_some() {
                    return refuse("has `filesystem` (virtform would format a new file)");
                }
                d.format
            }
            Spec::Volume(v) => {
                if v.image.is_some() {
                    return Err((format!("{addr} has `image` (virtform would make a new overlay on it), but an imported volume is used as it is"), None));
                }
                v.format
            }
            _ => unreachable!(),
        };
        crate::observe::imports::check_path(id, &self.opts.state_dir).map_err(|m| (m, None))?;
        let same = |o: &Imported| matches!(o, Imported::File { path, .. } if path == id);
        if let Some((a, o)) = self.obs.imports.iter().find(|(_, o)| same(o)) {
            if *a == addr && o.matches(self.obs) {
                return Ok(false);
            }
            if *a != addr && o.matches(self.obs) {
                return Err((format!("file {id:?}: it already belongs to {a} of this stack (its import registry says so)"), None));
            }
        }
        if let Some((st, a)) = self.obs.other_imports.iter().find_map(|(st, objs)| objs.iter().find(|(_, o)| same(o)).map(|(a, _)| (st, a))) {
            return Err((format!("file {id:?} belongs to {a} of stack \"{st}\" (its import registry says so); an object is managed by one stack only, and virtform never imports another stack's"), None));
        }
        match self.obs.paths.get(id) {
            None | Some(PathFact::Missing) => Err(match self.id_elsewhere(id, "") {
                Some(what) => (format!("{id:?} is {what}, not a file; a {kind} imports a disk image file by its absolute path"), None),
                None => (format!("there is no file {id:?} on this host"), Some("check the path (it is the file's absolute path, e.g. /srv/vm/data.qcow2)".into())),
            }),
            Some(PathFact::NotAFile(what)) => Err((format!("{id:?} is {what}; a {kind} imports a regular file"), None)),
            Some(PathFact::Unreadable(m)) => Err((format!("{id:?} cannot be read: {m}"), None)),
            Some(PathFact::File { refusal: Some(m), .. }) => Err((format!("{id:?} is refused as a {kind}: {m}"), None)),
            Some(PathFact::File { marker: Some(m), .. }) if crate::host::parse_marker(m).is_some_and(|(st, a)| st != self.cfg.stack || a != addr) => {
                let (st, a) = crate::host::parse_marker(m).unwrap_or_default();
                Err(if st == self.cfg.stack {
                    (format!("file {id:?}: it already belongs to {a} of this stack (its {} attribute says so)", crate::observe::imports::XATTR), None)
                } else {
                    (format!("file {id:?} belongs to {a} of stack \"{st}\" (its {} attribute says so); an object is managed by one stack only, and virtform never imports another stack's", crate::observe::imports::XATTR), None)
                })
            }
            Some(PathFact::File { dev, ino, refusal: None, .. }) => {
                let have = self.obs.files.get(id).map(|f| f.format.as_str());
                if have != Some(format.as_str()) {
                    let have = have.unwrap_or("an unreadable");
                    return Err((format!("{id:?} is a {have} file, but {addr} has format = {:?}", format.as_str()), Some(format!("set format = \"{have}\" in {addr}"))));
                }
                self.imported.insert(addr, Imported::File { path: id.to_string(), dev: *dev, ino: *ino });
                Ok(true)
            }
        }
    }

    /// The change of an import whose marker is the registry (libvirt
    /// networks, disks, volumes): `marker: (none) -> virtform:<stack>:<address> (imports.json)`,
    /// live, first. Whether this plan imports the resource.
    pub(super) fn registry_import(&self, rc: &mut ResourceChange, r: &Resource) -> bool {
        if !self.imports_ok.contains(&rc.address) {
            return false;
        }
        rc.importing = self.import_of(r).map(|i| i.id.clone());
        let after = format!("virtform:{}:{} (in {})", self.cfg.stack, r.address, crate::observe::imports::registry_path(self.opts.records_dir(), &self.cfg.stack).display());
        rc.changes.insert(0, AttrChange { attr: "marker".into(), before: Some("(none)".into()), after: Some(after), landing: Landing::Live, outside: false, sensitive: false });
        true
    }

    /// An imported file's change: an update for the import (reason
    /// `import`); a replace (the file deleted and made anew) only with `--replace`.
    pub(super) fn finish_import(&mut self, rc: &mut ResourceChange, what: &str) {
        match rc.action {
            Action::Replace if !self.opts.replace.contains(&rc.address) => {
                let why: Vec<&str> = rc.changes.iter().filter(|c| c.landing == Landing::Replace).map(|c| c.attr.as_str()).collect();
                self.out.errors.push(format!(
                    "{}: importing {what} needs it replaced ({} cannot change in place): the file would be deleted and made anew; plan with --replace {} if that is meant, or make the configuration match the file",
                    rc.address,
                    why.join(", "),
                    rc.address
                ));
            }
            Action::Replace => {}
            _ => {
                rc.action = Action::Update;
                rc.reason = Some("import".into());
            }
        }
    }

    /// Whether the registry names an object for this resource that is gone
    /// or is another one now (a network redefined under its name, a file
    /// replaced at its path), and no import takes it over again: a located
    /// plan error, and the resource stays a no-op (virtform neither
    /// recreates the object under a derived name nor touches the new one).
    pub(super) fn stale_import(&mut self, r: &Resource) -> bool {
        let addr = r.address.to_string();
        let Some(o) = self.obs.imports.get(&addr) else { return false };
        if o.matches(self.obs) || self.imports_ok.contains(&addr) {
            return false;
        }
        let what = match o {
            Imported::LibvirtNetwork { name, uuid } => format!("libvirt network {name:?} (UUID {uuid}) is gone from the host, or is another network now"),
            Imported::File { path, .. } => format!("file {path:?} is gone, or is another file now (its inode changed)"),
        };
        let d = crate::config::diag::Diagnostic::error(format!("{addr}: the imported {what}; virtform will not recreate it nor touch what holds its name"))
            .at_opt(r.span_of("").or_else(|| self.import_of(r).and_then(|i| i.to_span)))
            .help(format!(
                "restore it, or take the object there now over again with `virtform import {addr} {}`, or remove {addr} from the configuration (the registry then forgets it)",
                o.object()
            ));
        self.located_error(d);
        true
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
                    NetType::Nat | NetType::Isolated => self.check_libvirt_network_import(r, n, id),
                    NetType::Overlay => Err(("an overlay network is made by virtform on each of its hosts; importing one is not supported".into(), Some("leave the import block out: the plan creates it".into()))),
                },
                Spec::Network(_) => Err(("a data source cannot be imported".into(), None)),
                Spec::Disk(_) | Spec::Volume(_) => self.check_file_import(r, id),
                Spec::Host(_) | Spec::Port(_) | Spec::Image(_) => Err((format!("a {} has no host object of its own to import", r.address.kind), None)),
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
