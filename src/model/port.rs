//! `port`: one NIC of an instance: MAC, network, plugging strategy, fixed IP.
//!
//! Invariants: MAC, id and host device names are derived from stack and
//! address when not given (stable across plans); the plug strategy always
//! matches the network's type; a fixed IP lies inside the network's subnet.

use super::common::{derived_uuid, Ip, Mac, ResourceRef};
use super::network::NetType;
use super::{check_ref, to_value, Address, Ctx, FieldError, Kind, Spec};
use crate::config::value::Value;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a port's host side is plugged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Plug {
    /// The instance's tap sits directly on a Linux bridge.
    Bridge,
    /// libvirt adds the tap to an OVS bridge (virtualport openvswitch).
    Ovs,
    /// Nova's hybrid plug: qbr Linux bridge + qvb/qvo veth into OVS.
    OvsHybrid,
    /// An interface on a libvirt nat/isolated network.
    Network,
}

impl Plug {
    pub fn as_str(self) -> &'static str {
        match self {
            Plug::Bridge => "bridge",
            Plug::Ovs => "ovs",
            Plug::OvsHybrid => "ovs_hybrid",
            Plug::Network => "network",
        }
    }
}

/// NIC model presented to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NicModel {
    #[default]
    Virtio,
    E1000,
    Rtl8139,
}

/// One NIC.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// The host it lives on (`host.NAME`). Default: the host of the instance that uses it, else this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<ResourceRef>,
    /// The network this port is on: `network.NAME`, or an existing one: `data.network.NAME`.
    pub network: ResourceRef,
    /// `bridge`, `ovs`, `ovs_hybrid` or `network`. Default: `bridge` on bridge networks, `ovs` on ovs networks, `network` on nat/isolated ones.
    pub plug: Option<Plug>,
    /// MAC address. Default: derived from stack and address in 52:54:00:xx:xx:xx.
    pub mac: Option<Mac>,
    /// A fixed IPv4/IPv6 address inside the network's subnet (a static DHCP entry on nat/isolated networks).
    pub ip: Option<Ip>,
    /// MTU of the host-side devices.
    pub mtu: Option<u32>,
    /// NIC model: `virtio` (default), `e1000`, `rtl8139`.
    #[serde(default)]
    pub model: NicModel,
    /// Port id (used for OVS iface-id and Nova device names). Default: a UUID derived from stack and address.
    pub id: Option<String>,
}

impl Port {
    pub fn resolve(&mut self, addr: &Address, ctx: &Ctx<'_>) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if let Err(e) = check_ref("network", &self.network, Kind::Network, ctx) {
            return Err(vec![e]);
        }
        let Some(Spec::Network(net)) = ctx.get(&self.network).map(|r| &r.spec) else {
            return Err(vec![FieldError::new("network", format!("{} is not a network", self.network))]);
        };
        let allowed: &[Plug] = match net.net_type {
            NetType::Overlay if net.ovs_overlay() => &[Plug::Ovs, Plug::OvsHybrid],
            NetType::Bridge | NetType::Overlay => &[Plug::Bridge],
            NetType::Ovs => &[Plug::Ovs, Plug::OvsHybrid],
            NetType::Nat | NetType::Isolated => &[Plug::Network],
        };
        let plug = self.plug.unwrap_or(allowed[0]);
        if !allowed.contains(&plug) {
            let names: Vec<String> = allowed.iter().map(|p| format!("\"{}\"", p.as_str())).collect();
            errs.push(
                FieldError::new("plug", format!("plug \"{}\" cannot be used on {} (type \"{}\"{})", plug.as_str(), self.network, net.net_type.as_str(), if net.ovs_overlay() { ", backend \"ovs\"" } else { "" }))
                    .label(format!("expected {}", names.join(" or "))),
            );
        }
        self.plug = Some(plug);
        if let Some(m) = self.mtu
            && !(68..=65535).contains(&m) {
                errs.push(FieldError::new("mtu", format!("MTU {m} is out of range")).label("expected 68 to 65535"));
            }
        if let Some(ip) = self.ip {
            // A data network read at validate has facts not known yet.
            let unread = net.existing.as_ref().is_some_and(|e| !e.read);
            match net.subnet() {
                None if unread => {}
                None if net.is_existing() => errs.push(
                    FieldError::new("ip", format!("a fixed ip needs a subnet, and the host has no address on {}, so none is known", self.network))
                        .label(format!("set `subnet` (and `gateway`) on {}, e.g. subnet = \"192.168.1.0/24\"", self.network)),
                ),
                None => errs.push(
                    FieldError::new("ip", format!("a fixed ip needs its network to have a `subnet` (or an `address`), and {} has neither", self.network))
                        .label("set `subnet` on the network, e.g. \"10.50.0.0/24\" (or the host's `address`, e.g. \"10.50.0.1/24\")"),
                ),
                Some(sn) if !sn.contains(ip.0) => errs.push(
                    FieldError::new("ip", format!("{ip} is outside {}'s subnet {sn}", self.network)).label(format!("expected an address in {sn}")),
                ),
                Some(_) if net.address.is_some_and(|a| a.addr == ip.0) => errs.push(FieldError::new("ip", format!("{ip} is the host's own address on {}", self.network))),
                Some(_) if net.gateway.is_some_and(|g| g.0 == ip.0) => errs.push(FieldError::new("ip", format!("{ip} is the gateway of {}", self.network))),
                Some(sn) if sn.is_broadcast(ip.0) || sn.addr == ip.0 && sn.prefix < 31 => {
                    errs.push(FieldError::new("ip", format!("{ip} is the network or broadcast address of {sn}")))
                }
                _ => {}
            }
        }
        if let Some(id) = &self.id
            && (id.len() < 11 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')) {
                errs.push(FieldError::new("id", format!("port id \"{id}\" must be at least 11 letters, digits or '-' (device names use its first 11)")));
            }
        let seed = ctx.seed(addr);
        if self.mac.is_none() {
            self.mac = Some(Mac::derived(&seed));
        }
        if self.id.is_none() {
            self.id = Some(derived_uuid(&seed));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or("")
    }

    /// Nova device name: prefix + first 11 characters of the port id.
    pub fn dev(&self, prefix: &str) -> String {
        let id = self.id();
        // The first 11 characters (ids are checked to be ASCII; the
        // char-wise path is for an id that has not been checked yet).
        let head = match id.get(..11) {
            Some(h) if id.is_ascii() => std::borrow::Cow::Borrowed(h),
            _ => std::borrow::Cow::Owned(id.chars().take(11).collect::<String>()),
        };
        let mut s = String::with_capacity(prefix.len() + head.len());
        s.push_str(prefix);
        s.push_str(&head);
        s
    }

    pub fn exports(&self, _addr: &Address, _ctx: &Ctx<'_>) -> Value {
        let hybrid = self.plug == Some(Plug::OvsHybrid);
        let opt = |b: bool, prefix: &str| if b { Value::String(self.dev(prefix)) } else { Value::Null };
        to_value(
            self,
            [
                ("ip", self.ip.map(|i| Value::String(i.to_string())).unwrap_or(Value::Unknown)),
                ("tap", Value::String(self.dev("tap"))),
                ("qbr", opt(hybrid, "qbr")),
                ("qvb", opt(hybrid, "qvb")),
                ("qvo", opt(hybrid, "qvo")),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_use_the_first_eleven_characters_of_the_id() {
        let p = |id: &str| Port { host: None, network: ResourceRef("network.n".into()), plug: None, mac: None, ip: None, mtu: None, model: NicModel::default(), id: Some(id.into()) };
        assert_eq!(p("3519d39f-95ee-556a-aaf9-58cc638a60ed").dev("tap"), "tap3519d39f-95");
        assert_eq!(p("3519d39f-95ee-556a-aaf9-58cc638a60ed").dev("qvo"), "qvo3519d39f-95");
        assert_eq!(p("short").dev("qbr"), "qbrshort");
        // Not yet checked (the check rejects it): characters, not bytes.
        assert_eq!(p("äöüäöüäöüäöüäöü").dev("tap"), "tapäöüäöüäöüäö");
    }
}
