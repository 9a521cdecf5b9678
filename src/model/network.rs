//! `network`: an L2 segment on the host (Linux bridge, OVS bridge, or a libvirt
//! NAT/isolated network).
//!
//! Invariants: the bridge name is always resolved (given, or derived from the
//! stack and address within 15 characters); kind-specific attributes are
//! rejected on the other kinds instead of being ignored.

use super::common::{sha, IfName, Ip, IpCidr};
use super::{to_value, Address, Ctx, FieldError};
use crate::config::value::Value;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What kind of segment a network is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetType {
    /// A Linux bridge created and owned by virtform.
    #[default]
    Bridge,
    /// An Open vSwitch bridge.
    Ovs,
    /// A libvirt network with NAT to the outside, DHCP and DNS.
    Nat,
    /// A libvirt network without outside connectivity.
    Isolated,
}

impl NetType {
    pub fn as_str(self) -> &'static str {
        match self {
            NetType::Bridge => "bridge",
            NetType::Ovs => "ovs",
            NetType::Nat => "nat",
            NetType::Isolated => "isolated",
        }
    }

    pub fn is_libvirt(self) -> bool {
        matches!(self, NetType::Nat | NetType::Isolated)
    }
}

/// Open vSwitch datapath.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Datapath {
    /// The kernel datapath.
    System,
    /// The userspace datapath.
    Netdev,
}

/// A DHCP range on a libvirt network.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dhcp {
    /// First address handed out.
    pub start: Ip,
    /// Last address handed out.
    pub end: Ip,
}

/// An L2 segment on the host.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// `bridge` (default), `ovs`, `nat` or `isolated`.
    #[serde(rename = "type", default)]
    pub net_type: NetType,
    /// The bridge device name (at most 15 characters). Default: `vf` + a hash of stack and address + the name, cut to 15.
    pub bridge: Option<IfName>,
    /// MTU of the bridge (68 to 65535).
    pub mtu: Option<u32>,
    /// The host's address on the segment with its prefix, e.g. "10.77.0.1/24". Required for nat and isolated.
    pub address: Option<IpCidr>,
    /// Spanning tree on a Linux bridge (default false).
    pub stp: Option<bool>,
    /// Forward delay of a Linux bridge in seconds (default 0).
    pub forward_delay: Option<u32>,
    /// OVS datapath type: `system` (default) or `netdev` (userspace).
    pub datapath_type: Option<Datapath>,
    /// DHCP range on a nat or isolated network (default: the upper half of the subnet).
    pub dhcp: Option<Dhcp>,
}

impl Network {
    pub fn bridge_name(&self) -> &str {
        self.bridge.as_ref().map(|b| b.0.as_str()).unwrap_or("")
    }

    pub fn resolve(&mut self, addr: &Address, ctx: &Ctx<'_>) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        let t = self.net_type;
        if let Some(m) = self.mtu
            && !(68..=65535).contains(&m) {
                errs.push(FieldError::new("mtu", format!("MTU {m} is out of range")).label("expected 68 to 65535"));
            }
        if t != NetType::Bridge {
            for (set, name) in [(self.stp.is_some(), "stp"), (self.forward_delay.is_some(), "forward_delay")] {
                if set {
                    errs.push(FieldError::new(name, format!("`{name}` applies only to networks of type \"bridge\", this one is \"{}\"", t.as_str())));
                }
            }
        }
        if t != NetType::Ovs && self.datapath_type.is_some() {
            errs.push(FieldError::new("datapath_type", format!("`datapath_type` applies only to networks of type \"ovs\", this one is \"{}\"", t.as_str())));
        }
        if let Some(fd) = self.forward_delay
            && fd > 30 {
                errs.push(FieldError::new("forward_delay", format!("forward delay {fd}s is out of range")).label("expected 0 to 30 seconds"));
            }
        if let Some(a) = &self.address {
            if a.is_network_address() {
                errs.push(FieldError::new("address", format!("{a} is the network address itself; the host needs a host address such as {}", bump(a))));
            } else if a.is_broadcast(a.addr) {
                errs.push(FieldError::new("address", format!("{a} is the broadcast address of its network")));
            }
        }
        if t.is_libvirt() {
            match &self.address {
                None => errs.push(FieldError::new("", format!("a \"{}\" network needs `address` (the host's address with prefix, e.g. \"10.77.0.1/24\")", t.as_str()))),
                Some(a) if !a.addr.is_ipv4() => errs.push(FieldError::new("address", "nat and isolated networks need an IPv4 address")),
                _ => {}
            }
        } else if self.dhcp.is_some() {
            errs.push(FieldError::new("dhcp", format!("`dhcp` applies only to nat and isolated networks, this one is \"{}\"", t.as_str())));
        }
        if let (Some(d), Some(a)) = (&self.dhcp, &self.address) {
            for (ip, name) in [(d.start.0, "dhcp.start"), (d.end.0, "dhcp.end")] {
                if !a.contains(ip) {
                    errs.push(FieldError::new(name, format!("{ip} is outside the network {}", a.network())));
                }
            }
            if ip_num(d.start.0) > ip_num(d.end.0) {
                errs.push(FieldError::new("dhcp", format!("the DHCP range starts at {} after its end {}", d.start, d.end)));
            }
        }
        if self.bridge.is_none() {
            self.bridge = Some(default_bridge(addr, ctx));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    pub fn exports(&self, addr: &Address, _ctx: &Ctx<'_>) -> Value {
        let _ = addr;
        to_value(
            self,
            [
                ("cidr", self.address.map(|a| Value::String(a.network().to_string())).unwrap_or(Value::Null)),
                ("gateway", self.address.map(|a| Value::String(a.addr.to_string())).unwrap_or(Value::Null)),
            ],
        )
    }
}

fn ip_num(ip: std::net::IpAddr) -> u128 {
    match ip {
        std::net::IpAddr::V4(a) => u32::from(a) as u128,
        std::net::IpAddr::V6(a) => u128::from(a),
    }
}

fn bump(a: &IpCidr) -> String {
    match a.addr {
        std::net::IpAddr::V4(v) => format!("{}/{}", std::net::Ipv4Addr::from(u32::from(v).wrapping_add(1)), a.prefix),
        std::net::IpAddr::V6(v) => format!("{}/{}", std::net::Ipv6Addr::from(u128::from(v).wrapping_add(1)), a.prefix),
    }
}

/// `vf` + 4 hex of a hash of stack and address + `-` + the name, cut to 15 characters.
pub fn default_bridge(addr: &Address, ctx: &Ctx<'_>) -> IfName {
    let h = sha(&ctx.seed(addr));
    let mut s = format!("vf{:02x}{:02x}-{}", h[0], h[1], addr.dashed());
    s.truncate(IfName::MAX);
    let s = s.trim_end_matches('-').to_string();
    IfName(s)
}
