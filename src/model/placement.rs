//! Which host each resource lives on.
//!
//! Invariants: every managed resource but an image and a host has exactly
//! one host: the one it names (`host = host.a`), else the host of the
//! instance that uses it (a disk, volume or port), else, for a network, the
//! host of the ports on it, else this machine. A disk, volume or port that
//! names another host than its instance, a network whose ports are on two
//! hosts, a port on a `data` network of a remote host, and two `host`
//! blocks that reach the same machine are located errors. Images live
//! where the disks and volumes made from them live (each host gets its own
//! copy). Nothing here touches a host.

use super::host::Reach;
use super::network::NetType;
use super::{Resource, Spec};
use crate::config::diag::{Diagnostic, Diagnostics};
use std::collections::{BTreeMap, BTreeSet};

/// The host of each resource: `None` is this machine (no `host` block, or
/// one whose URI is `qemu:///system`), `Some("host.a")` a remote host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pub of: BTreeMap<String, Option<String>>,
    /// What lives on several hosts, by the hosts it is on: images (where a
    /// disk or volume made from them is) and overlay networks (their `hosts`).
    pub spread: BTreeMap<String, BTreeSet<Option<String>>>,
}

impl Placement {
    /// The host `addr` lives on (`None`: this machine; also for anything unplaced).
    pub fn host_of(&self, addr: &str) -> Option<&str> {
        self.of.get(addr).and_then(|h| h.as_deref())
    }

    /// Every host something lives on, this machine (`None`) first when it is one.
    pub fn hosts(&self) -> BTreeSet<Option<String>> {
        self.of.values().cloned().chain(self.spread.values().flatten().cloned()).collect()
    }

    /// Whether `addr` (an image or overlay: any of its hosts) is on `host`.
    pub fn is_on(&self, addr: &str, host: Option<&str>) -> bool {
        match self.spread.get(addr) {
            Some(hs) => hs.iter().any(|h| h.as_deref() == host),
            None => self.host_of(addr) == host,
        }
    }
}

/// Places every resource (see the module's invariants).
pub fn place(resources: &[Resource]) -> (Placement, Diagnostics) {
    let mut diags = Diagnostics::default();
    // A host block that reaches this machine is this machine; two blocks
    // reaching the same remote machine would plan against each other's
    // objects (each would see the other's as its orphans).
    let mut local_hosts = BTreeSet::new();
    let mut reached: BTreeMap<(String, u16), &Resource> = BTreeMap::new();
    for r in resources {
        if let Spec::Host(h) = &r.spec {
            match h.reach() {
                Ok(Reach::Local) => {
                    local_hosts.insert(r.address.to_string());
                }
                Ok(Reach::Ssh { address, port, .. }) => {
                    if let Some(first) = reached.insert((address.clone(), port), r) {
                        diags.push(
                            Diagnostic::error(format!("{} and {} reach the same host ({address}, port {port})", first.address, r.address))
                                .at_opt(r.span_of("uri"))
                                .label("one host block per machine: its resources would plan against each other's objects")
                                .note(first.span_of("uri"), format!("{} reaches it here", first.address)),
                        );
                    }
                }
                Err(_) => {} // the host's own error
            }
        }
    }
    let norm = |h: &str| if local_hosts.contains(h) { None } else { Some(h.to_string()) };
    let named = |r: &Resource| r.spec.host().map(|h| norm(&h.0));
    let mut p = Placement::default();
    // Instances first: their host is what they name.
    let mut user_of: BTreeMap<String, (&Resource, Option<String>, String)> = BTreeMap::new();
    for r in resources {
        if let Spec::Instance(i) = &r.spec {
            let host = named(r).unwrap_or(None);
            p.of.insert(r.address.to_string(), host.clone());
            let uses = i.disks.iter().enumerate().map(|(j, d)| (d, format!("disks[{j}]")));
            let uses = uses.chain(i.volumes.iter().enumerate().map(|(j, d)| (d, format!("volumes[{j}]"))));
            let uses = uses.chain(i.ports.iter().enumerate().map(|(j, d)| (d, format!("ports[{j}]"))));
            for (dep, at) in uses {
                // A second user is validate's "used twice" error.
                user_of.entry(dep.0.clone()).or_insert((r, host.clone(), at));
            }
        }
    }
    let show = |h: &Option<String>| h.clone().unwrap_or_else(|| "this machine".into());
    for r in resources {
        let a = r.address.to_string();
        match &r.spec {
            Spec::Disk(_) | Spec::Volume(_) | Spec::Port(_) => {
                let user = user_of.get(&a);
                let host = match (named(r), user) {
                    (Some(h), Some((inst, ih, at))) if &h != ih => {
                        diags.push(
                            Diagnostic::error(format!("{a} is on {} but {} uses it on {}", show(&h), inst.address, show(ih)))
                                .at_opt(r.span_of("host"))
                                .label(format!("a {} lives on the host of its instance", r.address.kind))
                                .note(inst.span_of(at), format!("{} uses it here", inst.address)),
                        );
                        h
                    }
                    (Some(h), _) => h,
                    (None, Some((_, ih, _))) => ih.clone(),
                    (None, None) => None,
                };
                p.of.insert(a, host);
            }
            _ => {}
        }
    }
    // Overlays: on their hosts; their ports on one of them.
    let mut overlays = BTreeMap::new();
    for r in resources {
        if let Spec::Network(n) = &r.spec
            && n.net_type == NetType::Overlay
        {
            let on: BTreeSet<Option<String>> = n.members.iter().map(|m| if m.local { None } else { norm(&m.host) }).collect();
            overlays.insert(r.address.to_string(), (r, on.clone()));
            p.spread.insert(r.address.to_string(), on);
        }
    }
    // Networks: named, else where their ports are.
    let mut ports_on: BTreeMap<&str, Vec<(&Resource, Option<String>)>> = BTreeMap::new();
    for r in resources {
        if let Spec::Port(port) = &r.spec {
            let h = p.of.get(&r.address.to_string()).cloned().flatten();
            if let Some((net, on)) = overlays.get(port.network.0.as_str()) {
                if !on.contains(&h) {
                    diags.push(
                        Diagnostic::error(format!(
                            "{} is on {} but the overlay {} spans {}",
                            r.address,
                            show(&h),
                            net.address,
                            on.iter().map(show).collect::<Vec<_>>().join(", ")
                        ))
                        .at_opt(r.span_of("network"))
                        .label("a port plugs into an overlay on one of its hosts")
                        .note(net.span_of("hosts"), format!("add {}'s host here", r.address)),
                    );
                }
                continue;
            }
            ports_on.entry(port.network.0.as_str()).or_default().push((r, h));
        }
    }
    for r in resources {
        let a = r.address.to_string();
        if let Spec::Network(n) = &r.spec {
            if n.net_type == NetType::Overlay {
                continue;
            }
            let ports = ports_on.get(a.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            let host = match named(r) {
                Some(h) => {
                    for (port, ph) in ports {
                        if ph != &h {
                            diags.push(
                                Diagnostic::error(format!("{} is on {} but its network {a} is on {}", port.address, show(ph), show(&h)))
                                    .at_opt(port.span_of("network"))
                                    .label("a port plugs into a network on its own host")
                                    .note(r.span_of("host"), format!("{a} is placed here")),
                            );
                        }
                    }
                    h
                }
                None => {
                    let hosts: BTreeSet<&Option<String>> = ports.iter().map(|(_, h)| h).collect();
                    if hosts.len() > 1 {
                        let mut d = Diagnostic::error(format!(
                            "the ports on {a} are on {} hosts ({}): a network lives on one host",
                            hosts.len(),
                            hosts.iter().map(|h| show(h)).collect::<Vec<_>>().join(", ")
                        ))
                        .at_opt(r.block_span)
                        .label("give each host its own network (or set `host` here and keep its ports there)");
                        for (port, ph) in ports {
                            d = d.note(port.span_of("network"), format!("{} is on {}", port.address, show(ph)));
                        }
                        diags.push(d);
                    }
                    ports.first().and_then(|(_, h)| h.clone())
                }
            };
            p.of.insert(a, host);
        }
    }
    // Data sources are read on this machine only.
    for (net, ports) in &ports_on {
        if net.contains("data.") {
            for (port, ph) in ports {
                if ph.is_some() {
                    diags.push(
                        Diagnostic::error(format!("{} is on {} but {net} is read on this machine: data sources read this machine only", port.address, show(ph)))
                            .at_opt(port.span_of("network"))
                            .label("declare the network on that host (network \"NAME\" { host = … }) instead"),
                    );
                }
            }
        }
    }
    // Images: wherever a disk or volume made from them lives.
    for r in resources {
        let image = match &r.spec {
            Spec::Disk(d) => d.image.as_ref(),
            Spec::Volume(v) => v.image.as_ref(),
            _ => None,
        };
        if let Some(img) = image {
            let h = p.of.get(&r.address.to_string()).cloned().flatten();
            p.spread.entry(img.0.clone()).or_default().insert(h);
        }
    }
    for r in resources {
        if let Spec::Image(_) = r.spec {
            // An unused image is fetched on this machine, as before.
            p.spread.entry(r.address.to_string()).or_insert_with(|| BTreeSet::from([None]));
        }
    }
    (p, diags)
}
