//! Checks across resources: things no single resource can see.
//!
//! Invariant: each finding names both resources involved, with the span of
//! the attribute in the later one and a note at the earlier one.

use super::{Resource, Spec};
use crate::config::diag::{Diagnostic, Diagnostics};
use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// Duplicate MACs, bridges, domain names, fixed IPs; disks, ports and volumes
/// used by two instances.
pub fn check_all(resources: &[Resource]) -> Diagnostics {
    let mut c = Claims { resources, seen: HashMap::new(), diags: Diagnostics::default() };
    for (i, r) in resources.iter().enumerate() {
        // Formatted only for a message (the loop runs for every resource).
        let me = &r.address;
        match &r.spec {
            Spec::Network(n) => {
                c.claim("bridge", n.bridge_name().into(), i, Attr("bridge", None), &|a| {
                    format!("{me} and {} claim the same bridge \"{}\"", a.address, n.bridge_name())
                });
                if let Some(v) = n.vni {
                    c.claim("VNI", v.to_string().into(), i, Attr("vni", None), &|a| format!("{me} and {} are overlays with the same VNI {v}", a.address));
                }
            }
            Spec::Port(p) => {
                if let Some(mac) = p.mac {
                    c.claim("MAC", mac.to_string().into(), i, Attr("mac", None), &|a| format!("{me} and {} have the same MAC {mac}", a.address));
                }
                if let Some(ip) = p.ip {
                    c.claim("IP", format!("{} on {}", ip, p.network).into(), i, Attr("ip", None), &|a| {
                        format!("{me} and {} have the same fixed IP {ip} on {}", a.address, p.network)
                    });
                }
            }
            Spec::Instance(inst) => {
                let name = inst.domain_name();
                c.claim("domain name", name.into(), i, Attr("name", None), &|a| {
                    format!("{me} and {} would both be the libvirt domain \"{name}\"", a.address)
                });
                for (field, what, refs) in [("disks", "disk", &inst.disks), ("ports", "port", &inst.ports), ("volumes", "volume", &inst.volumes)] {
                    for (j, d) in refs.iter().enumerate() {
                        c.claim(what, d.0.as_str().into(), i, Attr(field, Some(j)), &|a| {
                            format!("{d} is used by two instances, {} and {me}", a.address)
                        });
                    }
                }
            }
            Spec::Host(_) | Spec::Image(_) | Spec::Disk(_) | Spec::Volume(_) => {}
        }
    }
    c.diags
}

/// What the resources claim so far: (what, value) -> (first claimant,
/// where it claims it). Keys borrow the resources and paths are formatted
/// only for a finding: this runs for every resource of every load.
struct Claims<'r> {
    resources: &'r [Resource],
    seen: HashMap<(&'static str, Cow<'r, str>), (usize, Attr)>,
    diags: Diagnostics,
}

impl<'r> Claims<'r> {
    /// Resource `idx` claims `what` = `value` at `attr`; a second claimant
    /// gets the error `msg(first claimant)`.
    fn claim(&mut self, what: &'static str, value: Cow<'r, str>, idx: usize, attr: Attr, msg: &dyn Fn(&Resource) -> String) {
        match self.seen.entry((what, value)) {
            Entry::Occupied(e) => {
                let (first, first_attr) = e.get();
                let a = &self.resources[*first];
                let b = &self.resources[idx];
                self.diags.push(
                    Diagnostic::error(msg(a))
                        .at_opt(b.span_of(&attr.path()))
                        .label(format!("{} {} is already used by {}", what, e.key().1, a.address))
                        .note(a.span_of(&first_attr.path()), format!("{} claims it here", a.address)),
                );
            }
            Entry::Vacant(e) => {
                e.insert((idx, attr));
            }
        }
    }
}

/// Where a resource claims something: an attribute, or an item of a list
/// attribute (`disks[1]`).
struct Attr(&'static str, Option<usize>);

impl Attr {
    fn path(&self) -> String {
        match self.1 {
            None => self.0.to_string(),
            Some(j) => format!("{}[{j}]", self.0),
        }
    }
}
