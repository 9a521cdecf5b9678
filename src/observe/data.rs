//! Data sources: the facts of existing networks, read from the host.
//!
//! Invariants:
//! - [`network_facts`] is pure: it reads an [`Observed`] (the links, the
//!   libvirt networks, the OVS state) and nothing else; the planner calls it
//!   again on the observation it plans against, so a network that vanished
//!   after loading is a plan error, not a failed apply.
//! - [`HostData`] reads the host once, on the first data source asked for
//!   (a configuration without `data` blocks costs nothing), through the
//!   same adapters as observation, and never changes anything. It serves
//!   loads that happen before observation (apply loads, locks, then
//!   observes under the lock); `plan` and `show`, which observe while
//!   loading, hand the loader that observation ([`SharedObservation`])
//!   instead of reading the host twice.

use super::{ActualNetwork, Observed};
use crate::host::links::LinkKind;
use crate::model::common::{Ip, IpCidr};
use crate::model::data::{DataReader, NetworkFacts, Selector};
use crate::model::network::NetType;
use std::sync::OnceLock;

/// The host's first global address on a link: IPv4 first, else IPv6.
fn first_address(obs: &Observed, dev: &str) -> Option<IpCidr> {
    let l = obs.links.get(dev)?;
    l.addrs.iter().find(|a| a.addr.is_ipv4()).or(l.addrs.first()).copied()
}

/// What a link is, for messages ("a veth", "an Open vSwitch bridge").
fn what_link(obs: &Observed, name: &str) -> Option<String> {
    if obs.ovs.as_ref().is_some_and(|o| o.bridges.contains_key(name)) {
        return Some("an Open vSwitch bridge".into());
    }
    let l = obs.links.get(name)?;
    Some(match &l.kind {
        LinkKind::Bridge => "a Linux bridge".into(),
        LinkKind::Veth => "a veth".into(),
        LinkKind::Tun => "a tun/tap device".into(),
        LinkKind::OpenvswitchInternal => "an Open vSwitch internal port".into(),
        LinkKind::Other(k) if k.is_empty() => "a network device".into(),
        LinkKind::Other(k) => format!("a {k} device"),
    })
}

/// The facts of the network `sel` names, or why it cannot be used.
pub fn network_facts(obs: &Observed, sel: &Selector) -> Result<NetworkFacts, String> {
    match sel {
        Selector::Bridge(name) => {
            let Some(l) = obs.links.get(name) else {
                return Err(format!("bridge {name} not found on this host"));
            };
            if l.kind != LinkKind::Bridge {
                let what = what_link(obs, name).unwrap_or_default();
                let hint = if what.contains("Open vSwitch bridge") { format!("; use ovs_bridge = \"{name}\"") } else { String::new() };
                return Err(format!("{name} is {what}, not a Linux bridge{hint}"));
            }
            Ok(NetworkFacts { net_type: Some(NetType::Bridge), bridge: name.clone(), mtu: Some(l.mtu), address: first_address(obs, name), dhcp_range: None })
        }
        Selector::OvsBridge(name) => {
            let Some(ovs) = &obs.ovs else {
                return Err(format!("Open vSwitch is not running, so the Open vSwitch bridge {name} cannot be read; start it (scripts/host-setup does)"));
            };
            if !ovs.bridges.contains_key(name) {
                let also = match what_link(obs, name) {
                    Some(w) if w.contains("Linux bridge") => format!(" ({name} is a Linux bridge: use bridge = \"{name}\")"),
                    Some(w) => format!(" ({name} is {w})"),
                    None => String::new(),
                };
                return Err(format!("Open vSwitch bridge {name} not found on this host{also}"));
            }
            let mtu = obs.links.get(name).map(|l| l.mtu);
            Ok(NetworkFacts { net_type: Some(NetType::Ovs), bridge: name.clone(), mtu, address: first_address(obs, name), dhcp_range: None })
        }
        Selector::LibvirtNetwork(name) => {
            let Some(n) = obs.networks.get(name) else {
                return Err(format!("libvirt network {name} not found on this host"));
            };
            libvirt_facts(obs, n)
        }
    }
}

fn libvirt_facts(obs: &Observed, n: &ActualNetwork) -> Result<NetworkFacts, String> {
    let name = &n.name;
    if !n.active {
        return Err(format!("libvirt network {name} is defined but not active; start it (virsh net-start {name}): virtform does not start networks it does not own"));
    }
    let Some(def) = &n.def else {
        return Err(format!("the definition of libvirt network {name} cannot be read"));
    };
    let Some(bridge) = def.bridge.clone() else {
        return Err(format!("libvirt network {name} has no bridge device (forward mode {}); virtform can attach guests only to networks with a bridge", def.forward.as_deref().unwrap_or("none")));
    };
    // nat and route forward to the outside through the host; the rest
    // (none, open, or a bridge of the host's own) do not route through it.
    let net_type = match def.forward.as_deref() {
        Some("nat") | Some("route") => NetType::Nat,
        _ => NetType::Isolated,
    };
    let address = def.address.map(|(a, p)| IpCidr { addr: std::net::IpAddr::V4(a), prefix: p }).or_else(|| first_address(obs, &bridge));
    let mtu = def.mtu.or_else(|| obs.links.get(&bridge).map(|l| l.mtu));
    Ok(NetworkFacts {
        net_type: Some(net_type),
        bridge,
        mtu,
        address,
        dhcp_range: def.dhcp_range.map(|(a, b)| (Ip(std::net::IpAddr::V4(a)), Ip(std::net::IpAddr::V4(b)))),
    })
}

/// Reads data sources from the real host: links, libvirt networks (over
/// its own connection to `uri`) and Open vSwitch, once.
pub struct HostData {
    uri: String,
    read: OnceLock<Result<Observed, String>>,
}

impl HostData {
    pub fn new(uri: &str) -> HostData {
        HostData { uri: uri.to_string(), read: OnceLock::new() }
    }

    fn observed(&self) -> &Result<Observed, String> {
        self.read.get_or_init(|| {
            use crate::host::{libvirt::Libvirt, links::LinkHost, ovs::Ovs};
            let (links, networks, ovs) = std::thread::scope(|s| {
                let ovs = s.spawn(|| crate::host::ovs::Vsctl::default().state());
                let links = s.spawn(|| crate::host::links::IpLinks::local().list());
                let networks = crate::host::libvirt::VirtLibvirt::open(&self.uri).and_then(|l| l.networks());
                (links.join(), networks, ovs.join())
            });
            let links = links.map_err(|_| "the thread listing links panicked".to_string())?.map_err(|e| format!("cannot list the host's links: {e}"))?;
            let networks = networks.map_err(|e| format!("cannot list libvirt networks: {e}"))?;
            let mut o = Observed { ovs: ovs.ok().and_then(Result::ok), ..Observed::default() };
            for l in links {
                o.links.insert(l.name.clone(), l);
            }
            for n in networks {
                o.networks.insert(n.name.clone(), ActualNetwork { name: n.name, uuid: n.uuid, active: n.active, autostart: n.autostart, def: n.observed });
            }
            Ok(o)
        })
    }
}

impl DataReader for HostData {
    fn network(&self, sel: &Selector) -> Result<NetworkFacts, String> {
        match self.observed() {
            Ok(o) => network_facts(o, sel),
            Err(e) => Err(e.clone()),
        }
    }
}

/// Data sources answered from an observation another thread is making
/// while the configuration loads (`plan`, `show`): the loader waits for it
/// on the first data source asked for, so the host is read once. Whoever
/// observes must [`SharedObservation::put`] a result, also on failure;
/// [`SharedObservation::guard`] does so when it is dropped unfilled (a
/// failed or panicked read), so the loader never waits forever.
#[derive(Default)]
pub struct SharedObservation {
    slot: std::sync::Mutex<Option<Result<Observed, String>>>,
    ready: std::sync::Condvar,
}

impl SharedObservation {
    /// Hands the links, libvirt networks and OVS state of `r` to the loader.
    pub fn put(&self, r: Result<&Observed, String>) {
        let r = r.map(|o| Observed { links: o.links.clone(), networks: o.networks.clone(), ovs: o.ovs.clone(), ..Observed::default() });
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(r);
        }
        self.ready.notify_all();
    }

    /// Puts an error when dropped before anything was put.
    pub fn guard(&self) -> impl Drop + '_ {
        struct Guard<'a>(&'a SharedObservation);
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                self.0.put(Err("the host could not be read (see the error below)".into()));
            }
        }
        Guard(self)
    }
}

impl DataReader for SharedObservation {
    fn network(&self, sel: &Selector) -> Result<NetworkFacts, String> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        while slot.is_none() {
            slot = self.ready.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
        match slot.as_ref() {
            Some(Ok(o)) => network_facts(o, sel),
            Some(Err(e)) => Err(e.clone()),
            None => Err("the host was not read".into()),
        }
    }
}

/// Reads data sources from an observation already made (tests, and
/// commands that observed before loading).
pub struct ObservedData(pub Observed);

impl DataReader for ObservedData {
    fn network(&self, sel: &Selector) -> Result<NetworkFacts, String> {
        network_facts(&self.0, sel)
    }
}
