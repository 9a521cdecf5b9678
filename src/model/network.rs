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
    /// One L2 segment across hosts: on each of its `hosts` a bridge joined
    /// to every other host's `tunnel_ip` by VXLAN (a Linux bridge with a
    /// kernel VXLAN device, or an Open vSwitch bridge with VXLAN ports).
    Overlay,
}

impl NetType {
    pub fn as_str(self) -> &'static str {
        match self {
            NetType::Bridge => "bridge",
            NetType::Ovs => "ovs",
            NetType::Nat => "nat",
            NetType::Isolated => "isolated",
            NetType::Overlay => "overlay",
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

impl Datapath {
    /// The name OVS gives it (`datapath_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            Datapath::System => "system",
            Datapath::Netdev => "netdev",
        }
    }
}

/// How an overlay network's tunnels are built on each host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverlayBackend {
    /// A Linux bridge with a kernel VXLAN device and a static head-end
    /// replication FDB (one all-zeros entry per other host).
    #[default]
    Linux,
    /// An Open vSwitch bridge with one VXLAN port per other host (the
    /// Neutron way); guests plug in with `plug = "ovs"` (or `"ovs_hybrid"`).
    Ovs,
}

/// The name of an `ovs` overlay's VXLAN port to `peer` on each host: `v`,
/// the VNI in 6 hex digits, then the peer's IPv4 address in 8 (for IPv6,
/// 8 hex of a hash of it): 15 characters, an interface name, and one per
/// (overlay, peer), since OVS port names are host-wide.
pub fn ovs_tunnel_port(vni: u32, peer: std::net::IpAddr) -> String {
    let tail = match peer {
        std::net::IpAddr::V4(a) => format!("{:08x}", u32::from(a)),
        std::net::IpAddr::V6(a) => super::common::hex(&sha(&a.to_string())[..4]),
    };
    format!("v{:06x}{tail}", vni & 0xff_ffff)
}

/// The VXLAN UDP port (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// Bytes VXLAN over IPv4 adds to a frame (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// The same over IPv6 (outer header 40).
pub const VXLAN_OVERHEAD_V6: u32 = 70;
/// An overlay's MTU when it names none: a 1500-byte underlay less the IPv4 encapsulation.
pub const OVERLAY_DEFAULT_MTU: u32 = 1500 - VXLAN_OVERHEAD_V4;

/// One host of an overlay network: its address (`host.a`; `None` when its
/// block reaches this machine) and its underlay address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMember {
    pub host: String,
    pub local: bool,
    pub tunnel_ip: std::net::IpAddr,
}

/// An overlay's tunnel on one host: set in that host's part of the
/// configuration (`Configuration::on_host`), read by the planner and the apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tunnel {
    /// This host's underlay address (the VXLAN device's `local`).
    pub local: std::net::IpAddr,
    /// Every other host's underlay address, sorted: one FDB entry each.
    pub peers: Vec<std::net::IpAddr>,
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
    /// `bridge` (default), `ovs`, `nat`, `isolated` or `overlay`.
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
    /// OVS datapath type: `system` (default) or `netdev` (userspace), on `ovs` networks and `backend = "ovs"` overlays.
    pub datapath_type: Option<Datapath>,
    /// DHCP range on a nat or isolated network (default: the upper half of the subnet).
    pub dhcp: Option<Dhcp>,
    /// The hosts an `overlay` network spans (`[host.a, host.b]`): on each, a bridge joined to every other one's `tunnel_ip` by VXLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<ResourceRef>>,
    /// The VXLAN network identifier of an `overlay` (1 to 16777215), unique among the configuration's overlays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// How an `overlay`'s tunnels are built: `linux` (default: a Linux bridge and a kernel VXLAN device on each host) or `ovs` (an Open vSwitch bridge with a VXLAN port per other host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<OverlayBackend>,
    /// An overlay's hosts with their underlay addresses, in `hosts` order (set by resolve).
    #[serde(skip)]
    pub members: Vec<OverlayMember>,
    /// An overlay's tunnel on the host whose part of the configuration this
    /// is (shown in its plan; never read from the configuration).
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub tunnel: Option<Box<Tunnel>>,
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

    /// The VXLAN device of a Linux overlay on each of its hosts: `vx` + the VNI.
    pub fn vxlan_device(&self) -> Option<String> {
        (self.net_type == NetType::Overlay && !self.ovs_overlay()).then(|| format!("vx{}", self.vni.unwrap_or(0)))
    }

    /// Whether this is an overlay built of Open vSwitch VXLAN ports.
    pub fn ovs_overlay(&self) -> bool {
        self.net_type == NetType::Overlay && self.backend == Some(OverlayBackend::Ovs)
    }

    /// Whether guests plug into this network's bridge through Open vSwitch
    /// (an `ovs` network, or an overlay with the `ovs` backend).
    pub fn on_ovs(&self) -> bool {
        self.net_type == NetType::Ovs || self.ovs_overlay()
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
        if t == NetType::Overlay {
            self.resolve_overlay(ctx, &mut errs);
        } else {
            for (set, name) in [(self.hosts.is_some(), "hosts"), (self.vni.is_some(), "vni"), (self.backend.is_some(), "backend")] {
                if set {
                    errs.push(FieldError::new(name, format!("`{name}` applies only to networks of type \"overlay\", this one is \"{}\"", t.as_str())));
                }
            }
        }
        if t != NetType::Bridge && t != NetType::Overlay {
            for (set, name) in [(self.stp.is_some(), "stp"), (self.forward_delay.is_some(), "forward_delay")] {
                if set {
                    errs.push(FieldError::new(name, format!("`{name}` applies only to networks of type \"bridge\", this one is \"{}\"", t.as_str())));
                }
            }
        }
        if !self.on_ovs() && self.datapath_type.is_some() {
            let what = if t == NetType::Overlay { "an overlay with backend \"linux\"".to_string() } else { format!("\"{}\"", t.as_str()) };
            errs.push(
                FieldError::new("datapath_type", format!("`datapath_type` applies only to networks of type \"ovs\" and overlays with backend = \"ovs\", this one is {what}"))
                    .label(if t == NetType::Overlay { "add backend = \"ovs\", or leave datapath_type out" } else { "leave datapath_type out" }),
            );
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

    /// An overlay's own rules: `vni` and `hosts` given and sound, no
    /// `host` or host `address` (it spans hosts), the MTU lowered for the
    /// encapsulation by default; its members' underlay addresses recorded.
    fn resolve_overlay(&mut self, ctx: &Ctx<'_>, errs: &mut Vec<FieldError>) {
        match self.vni {
            None => errs.push(FieldError::new("", "an \"overlay\" network needs `vni` (its VXLAN network identifier, 1 to 16777215)").label("add vni = 5001")),
            Some(v) if !(1..=16_777_215).contains(&v) => errs.push(FieldError::new("vni", format!("VNI {v} is out of range")).label("expected 1 to 16777215 (24 bits)")),
            _ => {}
        }
        if self.host.is_some() {
            errs.push(FieldError::new("host", "an overlay spans hosts: list them in `hosts`, not `host`").label("write hosts = [host.a, host.b]"));
        }
        if self.address.is_some() {
            errs.push(
                FieldError::new("address", "an overlay has no host address: it is one segment on several hosts, and the same address on each would collide")
                    .label("leave `address` out and set `subnet` (and `gateway`, if a guest routes)"),
            );
        }
        if self.mtu.is_none() {
            self.mtu = Some(OVERLAY_DEFAULT_MTU);
        }
        let Some(hosts) = &self.hosts else {
            errs.push(FieldError::new("", "an \"overlay\" network needs `hosts` (the hosts it spans, e.g. [host.a, host.b])").label("add hosts = [host.a, host.b]"));
            return;
        };
        if hosts.is_empty() {
            errs.push(FieldError::new("hosts", "an overlay spans at least one host; `hosts` is empty").label("list the hosts, e.g. [host.a, host.b]"));
        }
        let mut seen: Vec<&ResourceRef> = Vec::new();
        let mut members = Vec::new();
        let mut tunnel_ips: Vec<(std::net::IpAddr, &ResourceRef)> = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            let at = format!("hosts[{i}]");
            if let Err(e) = super::check_ref(&at, h, super::Kind::Host, ctx) {
                errs.push(e);
                continue;
            }
            if seen.contains(&h) {
                errs.push(FieldError::new(at, format!("{h} is listed twice")).label("each host once"));
                continue;
            }
            seen.push(h);
            let Some(super::Spec::Host(host)) = ctx.get(h).map(|r| &r.spec) else { continue };
            let Some(ip) = host.tunnel_ip else {
                let why = if host.is_local() { "it is this machine" } else { "its URI names the host by name, not by address" };
                errs.push(FieldError::new(at, format!("{h} has no `tunnel_ip` ({why}); the overlay's tunnels need its underlay address")).label(format!("set tunnel_ip in {h}")));
                continue;
            };
            if let Some((_, other)) = tunnel_ips.iter().find(|(x, _)| *x == ip.0) {
                errs.push(FieldError::new(at, format!("{h} and {other} have the same tunnel_ip {ip}")).label("each host needs its own underlay address"));
                continue;
            }
            if let Some((first, _)) = tunnel_ips.first()
                && first.is_ipv4() != ip.0.is_ipv4()
            {
                errs.push(FieldError::new(at, format!("{h}'s tunnel_ip {ip} is not of the same family as the other hosts'")).label("one address family per overlay"));
                continue;
            }
            tunnel_ips.push((ip.0, h));
            members.push(OverlayMember { host: h.0.clone(), local: host.is_local(), tunnel_ip: ip.0 });
        }
        if let (Some(m), Some((first, _))) = (self.mtu, tunnel_ips.first()) {
            let overhead = if first.is_ipv4() { VXLAN_OVERHEAD_V4 } else { VXLAN_OVERHEAD_V6 };
            if m > 65535 - overhead {
                errs.push(FieldError::new("mtu", format!("MTU {m} leaves no room for the VXLAN encapsulation ({overhead} bytes)")).label(format!("expected at most {}", 65535 - overhead)));
            }
        }
        self.members = members;
    }

    /// This overlay's tunnel on `host` (`None`: this machine), from its members.
    pub fn tunnel_on(&self, host: Option<&str>) -> Option<Box<Tunnel>> {
        let me = self.members.iter().find(|m| if m.local { host.is_none() } else { Some(m.host.as_str()) == host })?;
        let mut peers: Vec<std::net::IpAddr> = self.members.iter().filter(|m| *m != me).map(|m| m.tunnel_ip).collect();
        peers.sort();
        Some(Box::new(Tunnel { local: me.tunnel_ip, peers }))
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
