//! `network`: an L2 segment on the host (Linux bridge, OVS bridge, or a libvirt
//! NAT/isolated network).
//!
//! Invariants: the bridge name is always resolved (given, or derived from the
//! stack and address within 15 characters); kind-specific attributes are
//! rejected on the other kinds instead of being ignored.

use super::common::{sha, IfName, Ip, IpCidr, ResourceRef};
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
    /// The host it lives on (`host.NAME`). Default: the host of the instance that uses it (the instances whose ports are on it), else this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<ResourceRef>,
    /// `bridge` (default), `ovs`, `nat` or `isolated`.
    #[serde(rename = "type", default)]
    pub net_type: NetType,
    /// The bridge device name (at most 15 characters). Default: `vf` + a hash of stack and address + the name, cut to 15.
    pub bridge: Option<IfName>,
    /// MTU of the bridge (68 to 65535).
    pub mtu: Option<u32>,
    /// The host's own address on the segment with its prefix, e.g. "10.77.0.1/24". Required for nat and isolated; optional elsewhere (a tenant subnet where the host has no address leaves it out and sets `subnet`).
    pub address: Option<IpCidr>,
    /// The guests' prefix, e.g. "10.50.0.0/24"; port ips are checked against it. Default: the prefix of `address`.
    pub subnet: Option<IpCidr>,
    /// The guests' default gateway, inside `subnet`, written into their generated network-config. Default: the host's `address` on nat networks, none elsewhere.
    pub gateway: Option<Ip>,
    /// DNS servers written into the generated network-config of guests with a fixed ip. Default: the host's `address` on nat networks, none elsewhere.
    pub dns: Option<Vec<Ip>>,
    /// Spanning tree on a Linux bridge (default false).
    pub stp: Option<bool>,
    /// Forward delay of a Linux bridge in seconds (default 0).
    pub forward_delay: Option<u32>,
    /// OVS datapath type: `system` (default) or `netdev` (userspace).
    pub datapath_type: Option<Datapath>,
    /// DHCP range on a nat or isolated network (default: the upper half of the subnet).
    pub dhcp: Option<Dhcp>,
    /// Set for a `data "network"`: the existing object it names. Never
    /// deserialized: only the data source's own build sets it.
    #[serde(skip)]
    pub existing: Option<super::data::Existing>,
}

impl Network {
    pub fn bridge_name(&self) -> &str {
        self.bridge.as_ref().map(|b| b.0.as_str()).unwrap_or("")
    }

    /// The guests' prefix: `subnet`, else the prefix of `address`.
    pub fn subnet(&self) -> Option<IpCidr> {
        self.subnet.or(self.address.map(|a| a.network()))
    }

    /// The gateway guests with a fixed ip route through: `gateway`, else
    /// the host's address on a nat network (the host NATs).
    pub fn guest_gateway(&self) -> Option<std::net::IpAddr> {
        match self.gateway {
            Some(g) => Some(g.0),
            None if self.net_type == NetType::Nat => self.address.map(|a| a.addr),
            None => None,
        }
    }

    /// DNS servers for guests with a fixed ip: `dns`, else the host's
    /// address on a nat network (libvirt's dnsmasq answers there).
    pub fn guest_dns(&self) -> Vec<std::net::IpAddr> {
        match &self.dns {
            Some(d) => d.iter().map(|i| i.0).collect(),
            None if self.net_type == NetType::Nat => self.address.map(|a| a.addr).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// Whether this is a data source (an existing network virtform only reads).
    pub fn is_existing(&self) -> bool {
        self.existing.is_some()
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
        errs.extend(check_subnet(self.subnet, self.address, self.gateway, self.dns.as_deref()));
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
        let s = |v: Option<String>| v.map(Value::String).unwrap_or(Value::Null);
        to_value(
            self,
            [
                ("cidr", s(self.subnet().map(|a| a.to_string()))),
                ("subnet", s(self.subnet().map(|a| a.to_string()))),
                // Before `gateway` existed, the host's address was exported as it.
                ("gateway", s(self.gateway.map(|g| g.to_string()).or(self.address.map(|a| a.addr.to_string())))),
            ],
        )
    }
}

/// The rules that tie `subnet`, `address`, `gateway` and `dns` together,
/// shared by networks and data sources: a subnet is a prefix (no host
/// bits), an address lies in it, a gateway lies in it and is not its
/// network or broadcast address.
pub fn check_subnet(subnet: Option<IpCidr>, address: Option<IpCidr>, gateway: Option<Ip>, dns: Option<&[Ip]>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(sn) = subnet {
        if sn.network() != sn {
            errs.push(FieldError::new("subnet", format!("{sn} has host bits set; a subnet is a prefix such as {}", sn.network())).label(format!("did you mean \"{}\"?", sn.network())));
        }
        if let Some(a) = address
            && (a.network() != sn.network())
        {
            errs.push(
                FieldError::new("subnet", format!("subnet {sn} and address {a} disagree: the host's address must lie in the subnet with the same prefix length"))
                    .label(format!("address {a} is in {}", a.network())),
            );
        }
    }
    let effective = subnet.map(|s| s.network()).or(address.map(|a| a.network()));
    if let Some(g) = gateway {
        match effective {
            None => errs.push(FieldError::new("gateway", "a `gateway` needs a `subnet` (or an `address`) to lie in").label("add subnet = \"PREFIX/LEN\"")),
            Some(sn) if !sn.contains(g.0) => {
                errs.push(FieldError::new("gateway", format!("gateway {g} is outside the subnet {sn}")).label(format!("expected an address in {sn}")))
            }
            Some(sn) if sn.is_broadcast(g.0) || (sn.addr == g.0 && sn.prefix < 31) => {
                errs.push(FieldError::new("gateway", format!("gateway {g} is the network or broadcast address of {sn}")))
            }
            _ => {}
        }
    }
    if let Some(d) = dns
        && d.is_empty()
    {
        errs.push(FieldError::new("dns", "`dns` is an empty list; leave it out for the default"));
    }
    errs
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

/// `vf` + 4 hex of a hash of stack and address + `-` + the name, cut to 15
/// characters. In a module 8 hex (the hash covers the module path, and
/// one module is instantiated many times): `vf1a2b3c4d-lan`.
pub fn default_bridge(addr: &Address, ctx: &Ctx<'_>) -> IfName {
    let h = sha(&ctx.seed(addr));
    let mut s = if addr.module.is_root() {
        format!("vf{:02x}{:02x}-{}", h[0], h[1], addr.dashed())
    } else {
        format!("vf{:02x}{:02x}{:02x}{:02x}-{}", h[0], h[1], h[2], h[3], addr.dashed())
    };
    s.truncate(IfName::MAX);
    let s = s.trim_end_matches('-').to_string();
    IfName(s)
}
