//! Converging an `overlay` network on one of its hosts: its Linux bridge,
//! its VXLAN device enslaved to it, and the head-end replication entries
//! (one all-zeros FDB entry per other host's `tunnel_ip`).
//!
//! Invariants:
//! - The ops are computed from the links as they are when the step runs
//!   ([`ops`] is pure), so a step killed half-way is finished by the next
//!   apply, and a step that finds everything in place changes nothing.
//! - A link that carries another stack's or another address's marker is
//!   never touched; a VXLAN device of this overlay with another name (its
//!   VNI changed) is deleted, nothing else is.
//! - Both links get the marker with the spec hash last, after the peers:
//!   a step killed before that is planned as an update again.

use crate::host::links::{Link, LinkOp};
use crate::plan::desired::DesiredOverlay;

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
}
