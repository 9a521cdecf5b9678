//! Planning networks: Linux bridges (`bridge`), Open vSwitch bridges
//! (`ovs`) and libvirt networks (`nat`, `isolated`).
//!
//! Invariants:
//! - Ownership: a Linux bridge by its alias marker, an OVS bridge by its
//!   `external_ids:virtform` marker, a libvirt network by the UUID virtform
//!   derives from stack and address (libvirt 9.0 networks have no metadata).
//! - Drift is told from change by the marker's spec hash where the object
//!   carries one; a libvirt network's changes are all shown as updates.

use super::desired::{DesiredBridge, DesiredOverlay, DesiredOvsBridge, DesiredOvsOverlay};
use super::{change, AttrChange, Foreign, Landing, Planner, ResourceChange};
use crate::model::network::NetType;
use crate::model::{Kind, Resource, Spec};
use crate::plan::Action;
use std::collections::BTreeSet;

/// The addresses of a link, shown as a set.
fn show_set(s: &BTreeSet<String>) -> String {
    if s.is_empty() { "(none)".to_string() } else { s.iter().cloned().collect::<Vec<_>>().join(", ") }
}

/// An overlay's peer addresses, as the plan shows them.
fn show_peers(p: &[std::net::IpAddr]) -> String {
    if p.is_empty() { "(none)".to_string() } else { p.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ") }
}

impl Planner<'_> {
    pub(super) fn network(&mut self, r: &Resource) -> ResourceChange {
        let Spec::Network(n) = &r.spec else { unreachable!() };
        match n.net_type {
            NetType::Bridge => self.linux_bridge(r),
            NetType::Ovs => self.ovs_bridge(r),
            NetType::Nat | NetType::Isolated => self.libvirt_network(r),
            NetType::Overlay if n.ovs_overlay() => self.ovs_overlay(r),
            NetType::Overlay => self.overlay(r),
        }
    }

    /// An overlay with the `ovs` backend on this host: its Open vSwitch
    /// bridge as an `ovs` network's (datapath, MTU, realized by
    /// ovs-vswitchd), then its VXLAN ports (one per other host, with the
    /// VNI, this host's and the peer's addresses). Every change lands live.
    /// The userspace datapath sends VXLAN only from an address on an OVS
    /// bridge: a `tunnel_ip` elsewhere is a plan error, not a silent
    /// tunnel that carries nothing. The same overlay built by the `linux`
    /// backend (its backend changed) is replaced.
    fn ovs_overlay(&mut self, r: &Resource) -> ResourceChange {
        let Spec::Network(n) = &r.spec else { unreachable!() };
        let addr = r.address.to_string();
        let Some(want) = DesiredOvsOverlay::from_network(n) else {
            return ResourceChange::new(addr, Kind::Network, Action::NoOp);
        };
        let Some(ovs) = &self.obs.ovs else {
            self.out.errors.push(format!(
                "{addr}: Open vSwitch is not running (ovs-vsctl cannot reach ovsdb-server), and this overlay's backend is \"ovs\"; start it (scripts/host-setup does) and plan again"
            ));
            return ResourceChange::new(addr, Kind::Network, Action::NoOp);
        };
        let br = want.bridge.as_str();
        let userspace = (want.datapath_type.as_deref() == Some("netdev")).then_some(ovs);
        if !self.tunnel_address_ok(&addr, want.local, userspace) {
            return ResourceChange::new(addr, Kind::Network, Action::NoOp);
        }
        if !ovs.bridges.contains_key(br)
            && let Some(l) = self.obs.links.get(br)
        {
            let owner = self.obs.link_owner(br);
            if l.bridge.is_some() && self.owned(&owner, r) {
                // This overlay on a Linux bridge: the backend changed.
                let vx = format!("vx{}", want.vni);
                let vx = self.obs.links.get(&vx).filter(|_| self.owned(&self.obs.link_owner(&vx), r)).map(|_| vx);
                let mut rc = ResourceChange::new(addr, Kind::Network, Action::Replace);
                rc.reason = Some("replace_because_cannot_update".into());
                rc.object = Some(crate::apply::overlay::object(Some(br), vx.as_deref()));
                rc.changes.push(change("backend", "linux", "ovs", Landing::Replace, false));
                return rc;
            }
            let f = Foreign::new(format!("link \"{br}\" (not an Open vSwitch bridge; the bridge of overlay {addr})"));
            let f = if l.bridge.is_some() { f.data("bridge", br) } else { f };
            return self.conflict(r, f, owner);
        }
        if ovs.bridges.contains_key(br) {
            let owner = ovs.bridge_owner(br);
            if !self.owned(&owner, r) {
                return self.conflict(r, Foreign::new(format!("Open vSwitch bridge \"{br}\" (the bridge of overlay {addr})")).data("ovs_bridge", br), owner);
            }
        }
        for (name, _) in &want.tunnels {
            if ovs.ports.contains_key(name) {
                let owner = ovs.port_owner(name);
                if !self.owned(&owner, r) {
                    return self.conflict(r, Foreign::new(format!("Open vSwitch port \"{name}\" (a tunnel of overlay {addr})")), owner);
                }
            }
        }
        let Some(have) = ovs.bridges.get(br) else {
            return ResourceChange::new(addr, Kind::Network, Action::Create);
        };
        let outside = ovs.bridge_marker_hash(br).as_deref() == Some(want.hash().as_str());
        let mut rc = ResourceChange::new(addr, Kind::Network, Action::NoOp);
        if let Some(dp) = &want.datapath_type
            && have.datapath() != dp
        {
            rc.changes.push(change("datapath_type", have.datapath(), dp, Landing::Live, outside));
        }
        if have.datapath_id.is_none() {
            rc.changes.push(change("state", "not set up by ovs-vswitchd", "set up", Landing::Live, true));
        }
        if let Some(m) = want.mtu {
            let have_mtu = ovs.ports.get(br).and_then(|p| p.mtu_request);
            if have_mtu != Some(m) {
                rc.changes.push(change("mtu", have_mtu.map(|v| v.to_string()).unwrap_or_else(|| "(default)".into()), m, Landing::Live, outside));
            }
        }
        self.ovs_tunnel_changes(&mut rc, ovs, &want, r, outside);
        Self::finish_update(&mut rc, outside);
        rc
    }

    /// An `ovs` overlay's tunnel ports on this host against `want`: the
    /// peers its ports reach (`peers`), and each wanted port whose options
    /// are wrong or that ovs-vswitchd could not set up (`tunnel NAME`).
    fn ovs_tunnel_changes(&self, rc: &mut ResourceChange, ovs: &crate::host::ovs::OvsState, want: &DesiredOvsOverlay, r: &Resource, outside: bool) {
        let show_opts = |o: &std::collections::BTreeMap<String, String>| o.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
        let mut peers: Vec<std::net::IpAddr> = Vec::new();
        let ours = ovs.ports.iter().filter(|(name, p)| p.bridge.as_deref() == Some(want.bridge.as_str()) && p.iface_type == "vxlan" && self.owned(&ovs.port_owner(name), r));
        for (name, p) in ours {
            let Some(ip) = p.options.get("remote_ip").and_then(|v| v.parse().ok()) else { continue };
            peers.push(ip);
            // A port to a host the overlay no longer spans (or misnamed) shows in `peers` only.
            if !want.tunnels.iter().any(|(n, x)| n == name && *x == ip) || (p.options == want.options(ip) && p.error.is_none()) {
                continue;
            }
            let before = match &p.error {
                Some(e) => format!("{} (error: {e})", show_opts(&p.options)),
                None => show_opts(&p.options),
            };
            rc.changes.push(change(&format!("tunnel {name}"), before, show_opts(&want.options(ip)), Landing::Live, outside));
        }
        peers.sort();
        let wanted: Vec<std::net::IpAddr> = want.tunnels.iter().map(|(_, ip)| *ip).collect();
        if peers != wanted {
            rc.changes.push(change("peers", show_peers(&peers), show_peers(&wanted), Landing::Live, outside));
        }
    }

    /// An overlay on this host: its bridge as a Linux bridge's, then its
    /// VXLAN device (VNI, local address, port, enslaved, MTU, up) and the
    /// peers it floods to. Every change lands live.
    fn overlay(&mut self, r: &Resource) -> ResourceChange {
        let Spec::Network(n) = &r.spec else { unreachable!() };
        let addr = r.address.to_string();
        let Some(want) = DesiredOverlay::from_network(n) else {
            // Not on this host (an overlay is placed on its hosts only).
            return ResourceChange::new(addr, Kind::Network, Action::NoOp);
        };
        if !self.tunnel_address_ok(&addr, want.local, None) {
            return ResourceChange::new(addr, Kind::Network, Action::NoOp);
        }
        let hash = want.hash();
        let (br, vx) = (&want.bridge.name, &want.vxlan);
        if let Some(ovs) = &self.obs.ovs
            && ovs.bridges.contains_key(br)
            && self.owned(&ovs.bridge_owner(br), r)
        {
            // This overlay on an Open vSwitch bridge: the backend changed.
            let mut rc = ResourceChange::new(addr, Kind::Network, Action::Replace);
            rc.reason = Some("replace_because_cannot_update".into());
            rc.object = Some(format!("ovs bridge {br}"));
            rc.changes.push(change("backend", "ovs", "linux", Landing::Replace, false));
            return rc;
        }
        for name in [br, vx] {
            let Some(link) = self.obs.links.get(name.as_str()) else { continue };
            let owner = self.obs.link_owner(name);
            if !self.owned(&owner, r) {
                let what = if name == br { "bridge" } else { "VXLAN device" };
                let f = Foreign::new(format!("link \"{name}\" (the {what} of overlay {addr})"));
                let f = if link.bridge.is_some() { f.data("bridge", name) } else { f };
                return self.conflict(r, f, owner);
            }
        }
        let Some(link) = self.obs.links.get(br.as_str()) else {
            return ResourceChange::new(addr, Kind::Network, Action::Create);
        };
        let outside = link.alias.as_deref().and_then(crate::host::marker_hash) == Some(&hash);
        let mut rc = ResourceChange::new(addr, Kind::Network, Action::NoOp);
        if !self.bridge_changes(&mut rc, link, &want.bridge, outside) {
            return rc;
        }
        let show_tunnel = |id: u32, local: Option<std::net::IpAddr>, port: u16| {
            format!("{vx}: VNI {id}, local {}, port {port}", local.map(|l| l.to_string()).unwrap_or_else(|| "(any)".into()))
        };
        let wanted = show_tunnel(want.vni, Some(want.local), want.port);
        match self.obs.links.get(vx.as_str()) {
            None => rc.changes.push(change("tunnel", "(none)", wanted, Landing::Live, outside)),
            Some(l) => {
                match &l.vxlan {
                    None => rc.changes.push(change("tunnel", format!("{vx}: not a VXLAN device"), wanted, Landing::Live, outside)),
                    Some(v) => {
                        if (v.id, v.local, v.port) != (want.vni, Some(want.local), want.port) {
                            rc.changes.push(change("tunnel", show_tunnel(v.id, v.local, v.port), wanted, Landing::Live, outside));
                        }
                        if v.peers != want.peers {
                            rc.changes.push(change("peers", show_peers(&v.peers), show_peers(&want.peers), Landing::Live, outside));
                        }
                    }
                }
                if l.master.as_deref() != Some(br.as_str()) {
                    rc.changes.push(change("tunnel_master", l.master.clone().unwrap_or_else(|| "(none)".into()), br.clone(), Landing::Live, outside));
                }
                if let Some(m) = want.bridge.mtu
                    && l.mtu != m
                {
                    rc.changes.push(change("tunnel_mtu", l.mtu, m, Landing::Live, outside));
                }
                if !l.up {
                    rc.changes.push(change("tunnel_state", "down", "up", Landing::Live, outside));
                }
            }
        }
        Self::finish_update(&mut rc, outside);
        rc
    }

    /// Whether an overlay's tunnels can leave this host from `local`: it is
    /// an address of one of the host's links and, on the userspace OVS
    /// datapath (`userspace`: the host's OVS), of an OVS bridge (the
    /// datapath routes VXLAN only from there). A plan error otherwise: the
    /// tunnels would be made and carry nothing.
    fn tunnel_address_ok(&mut self, addr: &str, local: std::net::IpAddr, userspace: Option<&crate::host::ovs::OvsState>) -> bool {
        let on = self.obs.links.values().find(|l| l.addrs.iter().any(|a| a.addr == local));
        let problem = match (on, userspace) {
            (None, _) => "is not an address of this host (on none of its links)".to_string(),
            (Some(l), Some(ovs)) if !ovs.bridges.contains_key(&l.name) => format!("is on {}, which is not an Open vSwitch bridge", l.name),
            _ => return true,
        };
        let fix = if userspace.is_some() {
            "the userspace (netdev) datapath sends VXLAN only from an address on an Open vSwitch bridge, so these tunnels would carry nothing. \
             Put the address on an OVS bridge of the underlay (as Neutron's br-phy: ovs-vsctl add-br br-phy -- set bridge br-phy datapath_type=netdev -- add-port br-phy ETH; ip addr add ADDR dev br-phy), or set the host's tunnel_ip to such an address"
        } else {
            "a VXLAN tunnel is sent from an address of the host itself, so these tunnels would carry nothing. Set the host's tunnel_ip to its underlay address (`ip -br addr` on the host lists them)"
        };
        self.out.errors.push(format!("{addr}: the tunnel address {local} {problem}; {fix}"));
        false
    }

    /// MTU, addresses and state of the link a network's bridge is, compared
    /// with what is wanted (Linux bridges and OVS bridges' internal ports).
    fn link_changes(&self, rc: &mut ResourceChange, name: &str, mtu: Option<u32>, address: Option<crate::model::common::IpCidr>, outside: bool) {
        let Some(link) = self.obs.links.get(name) else { return };
        if let Some(m) = mtu
            && link.mtu != m
        {
            rc.changes.push(change("mtu", link.mtu, m, Landing::Live, outside));
        }
        let have: BTreeSet<String> = link.addrs.iter().map(|a| a.to_string()).collect();
        let wanted: BTreeSet<String> = address.iter().map(|a| a.to_string()).collect();
        if have != wanted {
            rc.changes.push(change("address", show_set(&have), show_set(&wanted), Landing::Live, outside));
        }
        if !link.up {
            rc.changes.push(change("state", "down", "up", Landing::Live, outside));
        }
    }

    /// A Linux bridge's options, MTU, addresses and state against `want`
    /// (networks of type bridge, and an overlay's bridge). `false`: the link
    /// is not a bridge, and `rc` says it must be replaced.
    fn bridge_changes(&self, rc: &mut ResourceChange, link: &crate::host::links::Link, want: &DesiredBridge, outside: bool) -> bool {
        let Some(b) = link.bridge.as_ref() else {
            rc.action = Action::Replace;
            rc.reason = Some("replace_because_cannot_update".into());
            rc.changes.push(change("type", "not a bridge", "bridge", Landing::Replace, true));
            return false;
        };
        if b.stp != want.stp {
            rc.changes.push(change("stp", b.stp, want.stp, Landing::Live, outside));
        }
        if b.forward_delay_cs / 100 != want.forward_delay_s {
            rc.changes.push(change("forward_delay", b.forward_delay_cs / 100, want.forward_delay_s, Landing::Live, outside));
        }
        self.link_changes(rc, &want.name, want.mtu, want.address, outside);
        true
    }

    fn finish_update(rc: &mut ResourceChange, outside: bool) {
        if !rc.changes.is_empty() {
            rc.action = Action::Update;
            rc.reason = Some(if rc.importing.is_some() { "import".into() } else if outside { "drift".into() } else { "update".into() });
        } else if !outside {
            // Same values, older marker: refresh the marker only.
            rc.action = Action::Update;
            rc.reason = Some("marker".into());
            rc.changes.push(change("marker", "older spec", "current spec", Landing::Live, false));
        }
    }

    fn linux_bridge(&mut self, r: &Resource) -> ResourceChange {
        let Spec::Network(n) = &r.spec else { unreachable!() };
        let want = DesiredBridge::from_network(n);
        let addr = r.address.to_string();
        let Some(link) = self.obs.links.get(&want.name) else {
            return ResourceChange::new(addr, Kind::Network, Action::Create);
        };
        let owner = self.obs.link_owner(&want.name);
        let importing = self.adopting(r, &owner);
        if !importing && !self.owned(&owner, r) {
            if owner.is_none() && self.import_of(r).is_some() {
                return ResourceChange::new(addr, Kind::Network, Action::NoOp);
            }
            let f = Foreign::new(format!("link \"{}\"", want.name));
            let f = if link.bridge.is_some() { f.import(&want.name).data("bridge", &want.name) } else { f };
            return self.conflict(r, f, owner);
        }
        let outside = link.alias.as_deref().and_then(crate::host::marker_hash) == Some(&want.hash());
        let mut rc = ResourceChange::new(addr, Kind::Network, Action::NoOp);
        if importing {
            // The marker lives in the alias: an alias someone else set is
            // replaced, and the plan shows it.
            self.import_marker(&mut rc, r, link.alias.as_deref());
        }
        if !self.bridge_changes(&mut rc, link, &want, outside) {
            return rc;
        }
        Self::finish_update(&mut rc, outside);
        rc
    }

    /// The change an import is: the marker written, live.
    /// `before`: what holds the marker's place now (a Linux bridge's alias).
    fn import_marker(&self, rc: &mut ResourceChange, r: &Resource, before: Option<&str>) {
        rc.importing = self.import_of(r).map(|i| i.id.clone());
        let before = before.map(|a| format!("(alias {a:?})")).unwrap_or_else(|| "(none)".into());
        rc.changes.push(change("marker", before, format!("virtform:{}:{}", self.cfg.stack, r.address), Landing::Live, false));
    }

    fn ovs_bridge(&mut self, r: &Resource) -> ResourceChange {
        let Spec::Network(n) = &r.spec else { unreachable!() };
        let addr = r.address.to_string();
        let want = DesiredOvsBridge::from_network(n);
        let Some(ovs) = &self.obs.ovs else {
            self.out.errors.push(format!(
                "{addr}: Open vSwitch is not running (ovs-vsctl cannot reach ovsdb-server); start it (scripts/host-setup does) and plan again"
            ));
            return ResourceChange::new(addr, Kind::Network, Action::NoOp);
        };
        let Some(have) = ovs.bridges.get(&want.name) else {
            if let Some(l) = self.obs.links.get(&want.name) {
                // A Linux link (not an OVS bridge) holds the name.
                let owner = l.owner().map(|(s, a)| (s.to_string(), a.to_string()));
                let f = Foreign::new(format!("link \"{}\" (not an Open vSwitch bridge)", want.name));
                let f = if l.bridge.is_some() { f.data("bridge", &want.name) } else { f };
                return self.conflict(r, f, owner);
            }
            return ResourceChange::new(addr, Kind::Network, Action::Create);
        };
        let owner = ovs.bridge_owner(&want.name);
        let importing = self.adopting(r, &owner);
        if !importing && !self.owned(&owner, r) {
            if owner.is_none() && self.import_of(r).is_some() {
                return ResourceChange::new(addr, Kind::Network, Action::NoOp);
            }
            return self.conflict(r, Foreign::new(format!("Open vSwitch bridge \"{}\"", want.name)).import(&want.name).data("ovs_bridge", &want.name), owner);
        }
        let outside = ovs.bridge_marker_hash(&want.name).as_deref() == Some(want.hash().as_str());
        let mut rc = ResourceChange::new(addr, Kind::Network, Action::NoOp);
        if importing {
            self.import_marker(&mut rc, r, None);
        }
        if let Some(dp) = &want.datapath_type {
            let have_dp = if have.datapath_type.is_empty() { "system" } else { have.datapath_type.as_str() };
            if have_dp != dp {
                rc.changes.push(change("datapath_type", have_dp, dp, Landing::Live, outside));
            }
        }
        // The MTU lives in OVS (the local port's mtu_request); `ip` changes
        // to it are undone by ovs-vswitchd.
        if let Some(m) = want.mtu {
            let have_mtu = ovs.ports.get(&want.name).and_then(|p| p.mtu_request);
            if have_mtu != Some(m) {
                let show = have_mtu.map(|v| v.to_string()).unwrap_or_else(|| "(default)".into());
                rc.changes.push(change("mtu", show, m, Landing::Live, outside));
            }
        }
        self.link_changes(&mut rc, &want.name, None, n.address, outside);
        Self::finish_update(&mut rc, outside);
        rc
    }

    fn libvirt_network(&mut self, r: &Resource) -> ResourceChange {
        let addr = r.address.to_string();
        let Some(want) = self.lowering().libvirt_network(r) else { return ResourceChange::new(addr, Kind::Network, Action::NoOp) };
        let Some(have) = self.obs.networks.get(&want.name) else {
            if let Some(l) = self.obs.links.get(&want.bridge) {
                let owner = l.owner().map(|(s, a)| (s.to_string(), a.to_string()));
                let f = Foreign::new(format!("link \"{}\" (the bridge of libvirt network \"{}\")", want.bridge, want.name));
                let f = if l.bridge.is_some() { f.data("bridge", &want.bridge) } else { f };
                return self.conflict(r, f, owner);
            }
            return ResourceChange::new(addr, Kind::Network, Action::Create);
        };
        if have.uuid != want.uuid || self.is_forgotten(&format!("libvirt network {}", want.name)) {
            // Not ours: libvirt networks carry no metadata marker; virtform's
            // own have the UUID derived from the stack and address, imported
            // ones the UUID the registry recorded.
            let owner = super::desired::derived_network_owner(&want.name, &have.uuid);
            let f = Foreign::new(format!("libvirt network \"{}\" (UUID {}, not the {} virtform derives for {addr})", want.name, have.uuid, want.uuid))
                .import(&want.name)
                .data("libvirt_network", &want.name);
            return self.conflict(r, f, owner);
        }
        let mut rc = ResourceChange::new(addr, Kind::Network, Action::NoOp);
        let importing = self.registry_import(&mut rc, r);
        match &have.def {
            None => rc.changes.push(change("definition", "(unreadable)", "(as configured)", Landing::Restart, true)),
            Some(d) => {
                let fwd = |f: &Option<String>| f.clone().unwrap_or_else(|| "none (isolated)".into());
                let want_fwd = match want.forward {
                    crate::xml::network::Forward::Nat => Some("nat".to_string()),
                    crate::xml::network::Forward::None => None,
                };
                if d.forward != want_fwd {
                    rc.changes.push(change("forward", fwd(&d.forward), fwd(&want_fwd), Landing::Restart, false));
                }
                if d.bridge.as_deref() != Some(want.bridge.as_str()) {
                    rc.changes.push(change("bridge", d.bridge.clone().unwrap_or_default(), &want.bridge, Landing::Restart, false));
                }
                if d.mtu != want.mtu {
                    let m = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_else(|| "(default)".into());
                    rc.changes.push(change("mtu", m(d.mtu), m(want.mtu), Landing::Restart, false));
                }
                let a = |v: Option<(std::net::Ipv4Addr, u8)>| v.map(|(a, p)| format!("{a}/{p}")).unwrap_or_else(|| "(none)".into());
                if d.address != want.address {
                    rc.changes.push(change("address", a(d.address), a(want.address), Landing::Restart, false));
                }
                let range = |v: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>| v.map(|(s, e)| format!("{s}-{e}")).unwrap_or_else(|| "(none)".into());
                if d.dhcp_range != want.dhcp_range {
                    rc.changes.push(change("dhcp", range(d.dhcp_range), range(want.dhcp_range), Landing::Restart, false));
                }
                if d.stp != want.stp || d.delay != want.delay {
                    rc.changes.push(change("stp", format!("{} delay {}", d.stp, d.delay), format!("{} delay {}", want.stp, want.delay), Landing::Restart, false));
                }
                let show = |h: &crate::xml::network::DhcpHost| h.ip.to_string();
                let macs: BTreeSet<_> = d.hosts.iter().chain(&want.hosts).map(|h| h.mac).collect();
                for m in macs {
                    let x = d.hosts.iter().find(|h| h.mac == m);
                    let y = want.hosts.iter().find(|h| h.mac == m);
                    if x.map(|h| (h.ip, &h.name)) != y.map(|h| (h.ip, &h.name)) {
                        rc.changes.push(AttrChange {
                            attr: format!("dhcp_host {m}"),
                            before: x.map(show),
                            after: y.map(show),
                            landing: Landing::Live,
                            outside: false,
                            sensitive: false,
                        });
                    }
                }
            }
        }
        if !have.active {
            rc.changes.push(change("state", "inactive", "active", Landing::Live, false));
        }
        if !have.autostart {
            rc.changes.push(change("autostart", false, true, Landing::Live, false));
        }
        if !rc.changes.is_empty() {
            rc.action = Action::Update;
            rc.reason = Some(if importing { "import".into() } else { "update".into() });
        }
        rc
    }
}
