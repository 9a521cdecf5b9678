//! Planning ports.
//!
//! A `bridge`, `ovs` or `network` port has no host object of its own: libvirt
//! creates the tap (and, for `ovs`, the OVS port) when the domain starts or
//! the NIC is attached, so its changes show in its instance's plan. An
//! `ovs_hybrid` port owns Nova's devices: the `qbr` Linux bridge, the
//! `qvb`/`qvo` veth pair and the `qvo` port on the OVS bridge, all marked
//! with `virtform:<stack>:<address>;h=<hash>`.
//!
//! Invariants:
//! - A device with the port's name but another owner (or none) is a
//!   conflict; nothing of the port is touched then.
//! - Partial state (a missing qvo, qvb out of its qbr, a missing OVS port,
//!   wrong external-ids) is an update that repairs exactly what is missing.

use super::{AttrChange, Foreign, Landing, Planner, ResourceChange};
use crate::host::links::{hybrid_plug_ops, Link};
use crate::host::marker_with_hash;
use crate::host::ovs::hybrid_ovs_ops;
use crate::model::port::Plug;
use crate::model::{Kind, Resource, Spec};
use crate::plan::Action;

impl Planner<'_> {
    pub(super) fn port(&mut self, r: &Resource) -> ResourceChange {
        let Spec::Port(p) = &r.spec else { unreachable!() };
        let addr = r.address.to_string();
        if p.plug != Some(Plug::OvsHybrid) {
            let mut rc = ResourceChange::new(addr, Kind::Port, Action::NoOp);
            // Plugged the hybrid way before: those devices go (a replacement;
            // the instance's NIC is detached first and attached again).
            let qbr = p.dev("qbr");
            let ours = [qbr.clone(), p.dev("qvb"), p.dev("qvo")].iter().any(|n| self.owned(&self.obs.link_owner(n), r));
            if ours {
                rc.action = Action::Replace;
                rc.reason = Some("replace_because_cannot_update".into());
                rc.object = Some(format!("ovs_hybrid {qbr}"));
                rc.changes.push(super::change("plug", "ovs_hybrid", p.plug.map(|x| x.as_str()).unwrap_or("?"), Landing::Replace, false));
            }
            return rc;
        }
        let Some(want) = self.lowering().hybrid(r) else { return ResourceChange::new(addr, Kind::Port, Action::NoOp) };
        let marker = marker_with_hash(&self.cfg.stack, &addr, &want.hash());
        // Ownership of the three links.
        for name in [&want.qbr, &want.qvb, &want.qvo] {
            if self.obs.links.contains_key(name.as_str()) {
                let owner = self.obs.link_owner(name);
                if !self.owned(&owner, r) {
                    return self.conflict(r, Foreign::new(format!("link \"{name}\"")), owner);
                }
            }
        }
        let Some(ovs) = &self.obs.ovs else {
            self.out.errors.push(format!(
                "{addr}: Open vSwitch is not running (ovs-vsctl cannot reach ovsdb-server); start it (scripts/host-setup does) and plan again"
            ));
            return ResourceChange::new(addr, Kind::Port, Action::NoOp);
        };
        if ovs.ports.contains_key(&want.qvo) {
            let owner = ovs.port_owner(&want.qvo);
            if !self.owned(&owner, r) {
                return self.conflict(r, Foreign::new(format!("Open vSwitch port \"{}\"", want.qvo)), owner);
            }
        }
        let links: Vec<Link> = [&want.qbr, &want.qvb, &want.qvo].iter().filter_map(|n| self.obs.links.get(n.as_str()).cloned()).collect();
        let any_link = !links.is_empty();
        let any_ovs = ovs.ports.contains_key(&want.qvo);
        if !any_link && !any_ovs {
            return ResourceChange::new(addr, Kind::Port, Action::Create);
        }
        let link_ops = hybrid_plug_ops(&links, &want.qbr, &want.qvb, &want.qvo, want.mtu, &marker);
        let ovs_ops = hybrid_ovs_ops(ovs, &want.bridge, &want.qvo, &want.iface_id, &want.mac, &want.vm_uuid, &marker);
        let mut rc = ResourceChange::new(addr, Kind::Port, Action::NoOp);
        // Same hash in the marker: the host was changed behind virtform's back.
        let outside = links.iter().any(|l| l.alias.as_deref() == Some(marker.as_str()));
        for op in &link_ops {
            rc.changes.push(AttrChange {
                attr: op.name().to_string(),
                before: Some("(as found)".into()),
                after: Some(op.describe()),
                landing: Landing::Live,
                outside,
                sensitive: false,
            });
        }
        for op in &ovs_ops {
            rc.changes.push(AttrChange {
                attr: format!("ovs {}", want.qvo),
                before: Some("(as found)".into()),
                after: Some(op.describe()),
                landing: Landing::Live,
                outside,
                sensitive: false,
            });
        }
        if !rc.changes.is_empty() {
            rc.action = Action::Update;
            rc.reason = Some(if outside { "drift".into() } else { "update".into() });
        }
        rc
    }
}
