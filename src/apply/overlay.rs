//! Converging an `overlay` network on one of its hosts. The `linux`
//! backend: its Linux bridge, its VXLAN device enslaved to it, and the
//! head-end replication entries (one all-zeros FDB entry per other host's
//! `tunnel_ip`). The `ovs` backend ([`ovs_ops`]): an Open vSwitch bridge
//! and one VXLAN port per other host (`options:remote_ip`, `key` = the VNI,
//! `local_ip`, `dst_port`), committed in one OVSDB transaction.
//!
//! Invariants:
//! - The ops are computed from the links as they are when the step runs
//!   ([`ops`] is pure), so a step killed half-way is finished by the next
//!   apply, and a step that finds everything in place changes nothing.
//! - A link that carries another stack's or another address's marker is
//!   never touched; a VXLAN device of this overlay with another name (its
//!   VNI changed) is deleted, nothing else is.
//! - Both links get the marker with the spec hash last, after the peers:
//!   a step killed before that is planned as an update again. (The OVS
//!   backend's changes are one transaction: all of them land, or none.)
//! - An OVS tunnel port is this overlay's by the marker on its interface
//!   (the network's address, no hash); only such ports are changed or
//!   deleted, and a port another stack marked, or an unmarked one, holding
//!   a tunnel's name is refused.

use crate::host::links::{Link, LinkOp};
use crate::host::ovs::{OvsOp, OvsState};
use crate::plan::desired::{DesiredOverlay, DesiredOvsOverlay};

/// Whether `l` carries a marker of `stack` for `addr` (or for `from`, the
/// address the overlay was moved from).
fn ours(l: &Link, stack: &str, addr: &str, from: Option<&str>) -> bool {
    l.owner().is_some_and(|(s, a)| s == stack && (a == addr || Some(a) == from))
}

/// The link ops that take `links` to `want`; an error names a link that
/// holds one of the overlay's names and is not this overlay's.
pub fn ops(links: &[Link], want: &DesiredOverlay, marker: &str, stack: &str, addr: &str, from: Option<&str>) -> Result<Vec<LinkOp>, String> {
    let find = |n: &str| links.iter().find(|l| l.name == n);
    let (br, vx) = (want.bridge.name.as_str(), want.vxlan.as_str());
    for name in [br, vx] {
        if let Some(l) = find(name)
            && !ours(l, stack, addr, from)
        {
            return Err(match l.owner() {
                Some((s, a)) => format!("link {name} belongs to {a} of stack {s}; not touching it"),
                None => format!("link {name} exists without a virtform marker; not touching it"),
            });
        }
    }
    let mut out = Vec::new();
    match find(br) {
        // Marked at once (a killed step leaves a link that is ours), without
        // the hash until everything is in place.
        None => out.extend(super::engine::bridge_create_ops(&want.bridge, &crate::host::marker(stack, addr))),
        Some(l) if l.bridge.is_none() => return Err(format!("link {br} is not a bridge; plan again")),
        Some(l) => {
            // An overlay's bridge has no address: any it has goes.
            let addrs = l.addrs.iter().map(|a| a.to_string()).collect();
            out.extend(super::engine::bridge_update_ops(&want.bridge, marker, Some(addrs)).into_iter().filter(|o| !matches!(o, LinkOp::SetAlias { .. })));
        }
    }
    // This overlay's older VXLAN devices (another VNI, so another name).
    for l in links {
        if l.vxlan.is_some() && l.name != vx && ours(l, stack, addr, from) {
            out.push(LinkOp::Delete { name: l.name.clone() });
        }
    }
    let have = find(vx);
    let fits = have.and_then(|l| l.vxlan.as_ref()).filter(|v| (v.id, v.local, v.port) == (want.vni, Some(want.local), want.port));
    let peers: &[std::net::IpAddr] = match (have, fits) {
        (Some(l), Some(v)) => {
            if let Some(m) = want.bridge.mtu
                && l.mtu != m
            {
                out.push(LinkOp::SetMtu { name: vx.into(), mtu: m });
            }
            if l.master.as_deref() != Some(br) {
                out.push(LinkOp::SetMaster { name: vx.into(), master: br.into() });
            }
            &v.peers
        }
        (h, _) => {
            if h.is_some() {
                out.push(LinkOp::Delete { name: vx.into() });
            }
            out.push(LinkOp::CreateVxlan { name: vx.into(), alias: crate::host::marker(stack, addr), id: want.vni, local: want.local, port: want.port, mtu: want.bridge.mtu });
            out.push(LinkOp::SetMaster { name: vx.into(), master: br.into() });
            &[]
        }
    };
    out.push(LinkOp::SetUp { name: vx.into() });
    for p in &want.peers {
        if !peers.contains(p) {
            out.push(LinkOp::AddPeer { name: vx.into(), dst: *p });
        }
    }
    for p in peers {
        if !want.peers.contains(p) {
            out.push(LinkOp::DelPeer { name: vx.into(), dst: *p });
        }
    }
    out.push(LinkOp::SetAlias { name: vx.into(), alias: marker.into() });
    out.push(LinkOp::SetAlias { name: br.into(), alias: marker.into() });
    Ok(out)
}

/// Whether an OVS marker's (stack, address) is this overlay's (or the
/// address it was moved from).
fn ours_ovs(owner: Option<(String, String)>, stack: &str, addr: &str, from: Option<&str>) -> bool {
    owner.is_some_and(|(s, a)| s == stack && (a == addr || Some(a.as_str()) == from))
}

/// The OVS ops that take `state` to `want` (an overlay with the `ovs`
/// backend on this host): the bridge made or repaired (datapath, MTU,
/// marker), this overlay's tunnel ports to hosts it no longer spans
/// deleted, and each wanted tunnel port added or set right. An error names
/// a bridge or port that holds one of the overlay's names and is not its.
pub fn ovs_ops(state: &OvsState, want: &DesiredOvsOverlay, marker: &str, stack: &str, addr: &str, from: Option<&str>) -> Result<Vec<OvsOp>, String> {
    let br = want.bridge.as_str();
    if let Some(p) = state.ports.get(br)
        && p.bridge.as_deref() != Some(br)
    {
        return Err(format!("Open vSwitch port {br} (on bridge {}) holds the name of the overlay's bridge; not touching it", p.bridge.as_deref().unwrap_or("?")));
    }
    if state.bridges.contains_key(br) && !ours_ovs(state.bridge_owner(br), stack, addr, from) {
        return Err(match state.bridge_owner(br) {
            Some((s, a)) => format!("Open vSwitch bridge {br} belongs to {a} of stack {s}; not touching it"),
            None => format!("Open vSwitch bridge {br} exists without a virtform marker; not touching it"),
        });
    }
    for (name, _) in &want.tunnels {
        if state.ports.contains_key(name) && !ours_ovs(state.port_owner(name), stack, addr, from) {
            return Err(match state.port_owner(name) {
                Some((s, a)) => format!("Open vSwitch port {name} belongs to {a} of stack {s}; not touching it"),
                None => format!("Open vSwitch port {name} exists without a virtform marker; not touching it"),
            });
        }
    }
    let mut out = crate::host::ovs::bridge_ops_with_mtu(state, br, want.datapath_type.as_deref(), want.mtu, marker);
    // Tunnels of this overlay to hosts it no longer spans (or under an old VNI).
    for (name, p) in &state.ports {
        if p.iface_type == "vxlan" && ours_ovs(state.port_owner(name), stack, addr, from) && !want.tunnels.iter().any(|(n, _)| n == name) {
            out.push(OvsOp::DelPort { port: name.clone() });
        }
    }
    let port_marker = crate::host::marker(stack, addr);
    for (name, peer) in &want.tunnels {
        let options = want.options(*peer);
        let set = OvsOp::SetTunnel { bridge: br.into(), port: name.clone(), kind: "vxlan".into(), options: options.clone(), marker: port_marker.clone() };
        match state.ports.get(name) {
            None => out.push(set),
            Some(p) if p.bridge.as_deref() != Some(br) => out.extend([OvsOp::DelPort { port: name.clone() }, set]),
            Some(p) if p.iface_type != "vxlan" || p.options != options || state.port_marker(name) != Some(port_marker.as_str()) || p.error.is_some() => out.push(set),
            Some(_) => {}
        }
    }
    Ok(out)
}

/// The ops that remove an overlay from a host: its VXLAN device, then its
/// bridge, each only when it is there and carries the overlay's marker.
pub fn remove_ops(links: &[Link], bridge: Option<&str>, vxlan: Option<&str>, stack: &str, addr: &str) -> Result<Vec<LinkOp>, String> {
    let mut out = Vec::new();
    for name in [vxlan, bridge].into_iter().flatten() {
        let Some(l) = links.iter().find(|l| l.name == name) else { continue };
        if !ours(l, stack, addr, None) {
            return Err(format!("link {name} no longer carries the marker of {addr}; not touching it"));
        }
        out.push(LinkOp::Delete { name: name.into() });
    }
    Ok(out)
}

/// The object a plan names for an overlay on a host: `overlay BRIDGE VXLAN`,
/// `-` for a link that is not there.
pub fn object(bridge: Option<&str>, vxlan: Option<&str>) -> String {
    format!("overlay {} {}", bridge.unwrap_or("-"), vxlan.unwrap_or("-"))
}

/// The (bridge, VXLAN device) an [`object`] names.
pub fn parse_object(o: &str) -> Option<(Option<String>, Option<String>)> {
    let rest = o.strip_prefix("overlay ")?;
    let (b, v) = rest.split_once(' ')?;
    let some = |x: &str| (x != "-").then(|| x.to_string());
    Some((some(b), some(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::links::{BridgeInfo, LinkKind, VxlanInfo};
    use crate::plan::desired::DesiredBridge;

    const MARK: &str = "virtform:s:network.t;h=abc";

    fn want(peers: &[&str]) -> DesiredOverlay {
        DesiredOverlay {
            bridge: DesiredBridge { name: "vfab-t".into(), mtu: Some(1450), stp: false, forward_delay_s: 0, address: None },
            vxlan: "vx5001".into(),
            vni: 5001,
            port: 4789,
            local: "10.99.0.11".parse().unwrap(),
            peers: peers.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn link(name: &str, alias: &str) -> Link {
        Link {
            name: name.into(),
            ifindex: 1,
            kind: LinkKind::Bridge,
            alias: (!alias.is_empty()).then(|| alias.to_string()),
            mtu: 1450,
            up: true,
            promisc: false,
            master: None,
            mac: None,
            addrs: vec![],
            bridge: Some(BridgeInfo { stp: false, forward_delay_cs: 0, mcast_snooping: true }),
            veth_peer: None,
            ipv6_disabled: None,
            vxlan: None,
        }
    }

    fn vxlan(name: &str, id: u32, peers: &[&str], alias: &str) -> Link {
        Link {
            kind: LinkKind::Other("vxlan".into()),
            bridge: None,
            master: Some("vfab-t".into()),
            vxlan: Some(VxlanInfo { id, local: Some("10.99.0.11".parse().unwrap()), port: 4789, peers: peers.iter().map(|p| p.parse().unwrap()).collect() }),
            ..link(name, alias)
        }
    }

    fn names(ops: &[LinkOp]) -> Vec<String> {
        ops.iter().map(|o| format!("{} {}", o.name(), o.describe())).collect()
    }

    #[test]
    fn from_nothing_the_bridge_then_the_device_then_one_entry_per_peer_then_the_markers() {
        let ops = ops(&[], &want(&["10.99.0.12", "10.99.0.13"]), MARK, "s", "network.t", None).unwrap();
        assert_eq!(
            names(&ops),
            [
                "vfab-t create bridge",
                "vfab-t set up",
                "vx5001 create VXLAN device (VNI 5001, local 10.99.0.11)",
                "vx5001 enslave to vfab-t",
                "vx5001 set up",
                "vx5001 add tunnel peer 10.99.0.12",
                "vx5001 add tunnel peer 10.99.0.13",
                "vx5001 set alias",
                "vfab-t set alias",
            ]
        );
    }

    #[test]
    fn a_host_added_is_one_entry_and_a_host_removed_is_one_entry_nothing_is_recreated() {
        let have = [link("vfab-t", MARK), vxlan("vx5001", 5001, &["10.99.0.12", "10.99.0.13"], MARK)];
        let ops = ops(&have, &want(&["10.99.0.12", "10.99.0.14"]), MARK, "s", "network.t", None).unwrap();
        let n = names(&ops);
        assert!(n.contains(&"vx5001 add tunnel peer 10.99.0.14".to_string()) && n.contains(&"vx5001 remove tunnel peer 10.99.0.13".to_string()), "{n:?}");
        assert!(!n.iter().any(|x| x.contains("create") || x.contains("delete") || x.contains("10.99.0.12")), "{n:?}");
    }

    #[test]
    fn a_changed_vni_replaces_the_device_and_a_foreign_link_is_refused() {
        let have = [link("vfab-t", MARK), vxlan("vx5000", 5000, &["10.99.0.12"], MARK)];
        let n = names(&ops(&have, &want(&["10.99.0.12"]), MARK, "s", "network.t", None).unwrap());
        assert!(n.contains(&"vx5000 delete link".to_string()) && n.contains(&"vx5001 add tunnel peer 10.99.0.12".to_string()), "{n:?}");
        let foreign = [link("vfab-t", MARK), vxlan("vx5001", 5001, &[], "virtform:other:network.t")];
        let e = ops(&foreign, &want(&[]), MARK, "s", "network.t", None).unwrap_err();
        assert!(e.contains("vx5001 belongs to network.t of stack other"), "{e}");
        let unmarked = [link("vfab-t", "")];
        assert!(ops(&unmarked, &want(&[]), MARK, "s", "network.t", None).unwrap_err().contains("without a virtform marker"));
    }

    #[test]
    fn removal_takes_the_device_then_the_bridge_and_only_ours() {
        let have = [link("vfab-t", MARK), vxlan("vx5001", 5001, &[], MARK)];
        assert_eq!(names(&remove_ops(&have, Some("vfab-t"), Some("vx5001"), "s", "network.t").unwrap()), ["vx5001 delete link", "vfab-t delete link"]);
        assert!(remove_ops(&have, Some("vfab-t"), None, "s", "network.u").is_err());
        assert!(remove_ops(&[], Some("vfab-t"), Some("vx5001"), "s", "network.t").unwrap().is_empty());
        assert_eq!(parse_object(&object(None, Some("vx5001"))), Some((None, Some("vx5001".into()))));
    }

    fn ovs_want(peers: &[&str]) -> DesiredOvsOverlay {
        let peers: Vec<std::net::IpAddr> = peers.iter().map(|p| p.parse().unwrap()).collect();
        DesiredOvsOverlay {
            bridge: "vfab-t".into(),
            datapath_type: Some("netdev".into()),
            mtu: Some(1450),
            vni: 5001,
            port: 4789,
            local: "10.98.0.11".parse().unwrap(),
            tunnels: peers.iter().map(|p| (crate::model::network::ovs_tunnel_port(5001, *p), *p)).collect(),
        }
    }

    fn ovs_names(ops: &[OvsOp]) -> Vec<String> {
        ops.iter().map(|o| format!("{} {}", o.object(), o.describe())).collect()
    }

    fn ovs_after(ops: &[Vec<OvsOp>]) -> crate::host::ovs::FakeOvs {
        use crate::host::ovs::Ovs;
        let f = crate::host::ovs::FakeOvs::default();
        for o in ops {
            f.apply(o).unwrap();
        }
        f
    }

    #[test]
    fn ovs_from_nothing_is_the_bridge_and_one_vxlan_port_per_peer_then_nothing() {
        use crate::host::ovs::Ovs;
        let want = ovs_want(&["10.98.0.12", "10.98.0.13"]);
        let ops = ovs_ops(&OvsState::default(), &want, MARK, "s", "network.t", None).unwrap();
        assert_eq!(
            ovs_names(&ops),
            ["vfab-t create OVS bridge (datapath netdev)", "v0013890a62000c set up VXLAN tunnel port on vfab-t to 10.98.0.12", "v0013890a62000d set up VXLAN tunnel port on vfab-t to 10.98.0.13"]
        );
        let f = ovs_after(&[ops]);
        let st = f.state().unwrap();
        let p = &st.ports["v0013890a62000c"];
        assert_eq!((p.iface_type.as_str(), p.options.get("key").map(String::as_str), p.options.get("local_ip").map(String::as_str)), ("vxlan", Some("5001"), Some("10.98.0.11")));
        assert_eq!(st.port_owner("v0013890a62000c"), Some(("s".into(), "network.t".into())));
        assert_eq!(st.ports["vfab-t"].mtu_request, Some(1450));
        assert_eq!(ovs_ops(&st, &want, MARK, "s", "network.t", None).unwrap(), vec![], "converged");
    }

    #[test]
    fn ovs_a_host_added_or_removed_is_one_port_and_a_foreign_name_is_refused() {
        use crate::host::ovs::Ovs;
        let f = ovs_after(&[ovs_ops(&OvsState::default(), &ovs_want(&["10.98.0.12", "10.98.0.13"]), MARK, "s", "network.t", None).unwrap()]);
        let st = f.state().unwrap();
        let n = ovs_names(&ovs_ops(&st, &ovs_want(&["10.98.0.12", "10.98.0.14"]), MARK, "s", "network.t", None).unwrap());
        assert_eq!(n, ["v0013890a62000d delete OVS port", "v0013890a62000e set up VXLAN tunnel port on vfab-t to 10.98.0.14"]);
        // A peer's options changed by hand: that port alone is set right.
        f.edit(|s| {
            s.ports.get_mut("v0013890a62000c").unwrap().options.insert("key".into(), "7".into());
        });
        let n = ovs_names(&ovs_ops(&f.state().unwrap(), &ovs_want(&["10.98.0.12", "10.98.0.13"]), MARK, "s", "network.t", None).unwrap());
        assert_eq!(n, ["v0013890a62000c set up VXLAN tunnel port on vfab-t to 10.98.0.12"]);
        // Another stack's port under a tunnel's name, an unmarked bridge: refused.
        f.edit(|s| {
            s.ports.get_mut("v0013890a62000c").unwrap().external_ids.insert("virtform".into(), "virtform:other:network.t".into());
        });
        let e = ovs_ops(&f.state().unwrap(), &ovs_want(&["10.98.0.12"]), MARK, "s", "network.t", None).unwrap_err();
        assert!(e.contains("port v0013890a62000c belongs to network.t of stack other"), "{e}");
        let bare = ovs_after(&[vec![OvsOp::AddBridge { name: "vfab-t".into(), datapath_type: None, marker: "x".into(), mtu: None }]]);
        bare.edit(|s| {
            s.bridges.get_mut("vfab-t").unwrap().external_ids.clear();
        });
        assert!(ovs_ops(&bare.state().unwrap(), &ovs_want(&[]), MARK, "s", "network.t", None).unwrap_err().contains("without a virtform marker"));
        // A moved overlay's ports (marked for the old address) are its own.
        let moved = ovs_after(&[ovs_ops(&OvsState::default(), &ovs_want(&["10.98.0.12"]), "virtform:s:network.old;h=1", "s", "network.old", None).unwrap()]);
        let n = ovs_names(&ovs_ops(&moved.state().unwrap(), &ovs_want(&["10.98.0.12"]), MARK, "s", "network.t", Some("network.old")).unwrap());
        assert_eq!(n, ["vfab-t update OVS bridge", "v0013890a62000c set up VXLAN tunnel port on vfab-t to 10.98.0.12"], "re-marked");
    }
}
