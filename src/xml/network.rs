//! libvirt network XML for `nat` and `isolated` networks: [`network_xml`]
//! writes one, [`dhcp_host_xml`] the `<host>` entry for `virNetworkUpdate`,
//! [`parse_network`] reads one back into an [`ObservedNetwork`].
//!
//! What libvirt 9.0 rewrites when it stores a network (checked by
//! `real_libvirt_round_trip`): the UUID is lowercased; a `<mac>` for the
//! bridge is generated; `stp` defaults to on and `delay` to 0 when absent; a
//! netmask stays a netmask (we compare the prefix length). DHCP host MACs are
//! stored **as written** (not lowercased), so the reader normalizes them.
//! libvirt 9.0 networks have no `<metadata>`: ownership is by name prefix
//! and virtform's ledger (DESIGN.md §4).

use super::tree::{Doc, Elem};
use super::write::XmlWriter;
use super::{normalize_uuid, xml_safe, XmlError};
use crate::model::common::Mac;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// `<forward mode='nat'/>`, or no forward element (isolated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forward {
    Nat,
    None,
}

/// A static DHCP entry: this MAC gets this address (and hostname).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpHost {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub name: Option<String>,
}

/// A libvirt network to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDef {
    pub name: String,
    /// Empty lets libvirt generate one.
    pub uuid: String,
    pub bridge: String,
    pub mtu: Option<u32>,
    /// The host's address on the network and the prefix length.
    pub address: Option<(Ipv4Addr, u8)>,
    pub forward: Forward,
    /// First and last address handed out. Needs `address`.
    pub dhcp_range: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Static entries (written inside `<dhcp>`; with hosts but no range, the
    /// `<dhcp>` element holds only hosts).
    pub hosts: Vec<DhcpHost>,
    pub stp: bool,
    /// Forward delay in seconds.
    pub delay: u32,
}

/// The network document. Deterministic; every value escaped.
pub fn network_xml(n: &NetworkDef) -> String {
    let mut w = XmlWriter::new();
    w.start("network", &[]);
    w.text("name", &[], &n.name);
    if !n.uuid.is_empty() {
        w.text("uuid", &[], &n.uuid);
    }
    if n.forward == Forward::Nat {
        w.empty("forward", &[("mode", "nat")]);
    }
    let delay = n.delay.to_string();
    w.empty("bridge", &[("name", &n.bridge), ("stp", if n.stp { "on" } else { "off" }), ("delay", &delay)]);
    if let Some(m) = n.mtu {
        w.empty("mtu", &[("size", &m.to_string())]);
    }
    if let Some((addr, prefix)) = n.address {
        let (a, p) = (addr.to_string(), prefix.to_string());
        let has_dhcp = n.dhcp_range.is_some() || !n.hosts.is_empty();
        if has_dhcp {
            w.start("ip", &[("address", &a), ("prefix", &p)]);
            w.start("dhcp", &[]);
            if let Some((start, end)) = n.dhcp_range {
                w.empty("range", &[("start", &start.to_string()), ("end", &end.to_string())]);
            }
            for h in &n.hosts {
                write_host(&mut w, &h.mac, h.ip, h.name.as_deref());
            }
            w.end("dhcp");
            w.end("ip");
        } else {
            w.empty("ip", &[("address", &a), ("prefix", &p)]);
        }
    }
    w.end("network");
    w.finish()
}

/// `<host mac=… name=… ip=…/>` for `virNetworkUpdate` (section ip-dhcp-host;
/// add-last to add, delete to remove, modify to change).
pub fn dhcp_host_xml(mac: &Mac, ip: Ipv4Addr, name: Option<&str>) -> String {
    let mut w = XmlWriter::new();
    write_host(&mut w, mac, ip, name);
    w.finish()
}

fn write_host(w: &mut XmlWriter, mac: &Mac, ip: Ipv4Addr, name: Option<&str>) {
    let (m, i) = (mac.to_string(), ip.to_string());
    match name.filter(|n| !n.is_empty()) {
        Some(name) => w.empty("host", &[("mac", &m), ("name", name), ("ip", &i)]),
        None => w.empty("host", &[("mac", &m), ("ip", &i)]),
    }
}

/// The managed fields of a libvirt network, normalized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedNetwork {
    pub name: String,
    pub uuid: Option<String>,
    /// The forward mode (`nat`, `route`, `open`, …); None for an isolated network.
    pub forward: Option<String>,
    pub bridge: Option<String>,
    /// libvirt's default: on.
    pub stp: bool,
    /// libvirt's default: 0.
    pub delay: u32,
    pub mtu: Option<u32>,
    /// The first IPv4 `<ip>`: address and prefix length (from `prefix` or `netmask`).
    pub address: Option<(Ipv4Addr, u8)>,
    pub dhcp_range: Option<(Ipv4Addr, Ipv4Addr)>,
    /// DHCP hosts with a MAC, MACs lowercase.
    pub hosts: Vec<DhcpHost>,
}

/// Reads a network (preferably `virsh net-dumpxml --inactive`).
pub fn parse_network(xml: &str) -> Result<ObservedNetwork, XmlError> {
    let doc = Doc::parse(xml, "network")?;
    let root = doc.root();
    let name = root.req_child("name")?.text().to_string();
    let uuid = root.child("uuid").map(|u| normalize_uuid(u.text())).filter(|u| !u.is_empty());
    // A <forward> without mode is NAT (libvirt's default).
    let forward = root.child("forward").map(|f| f.attr("mode").unwrap_or("nat").to_string());
    let (mut bridge, mut stp, mut delay) = (None, true, 0);
    if let Some(b) = root.child("bridge") {
        bridge = b.attr("name").map(str::to_string);
        stp = match b.attr("stp") {
            None | Some("on") | Some("yes") => true,
            Some("off") | Some("no") => false,
            Some(other) => return Err(XmlError::invalid(b, Some("stp"), other, "\"on\" or \"off\"")),
        };
        delay = b.attr_parse::<u32>("delay", "a forward delay in seconds")?.unwrap_or(0);
    }
    let mtu = match root.child("mtu") {
        Some(m) => m.attr_parse::<u32>("size", "an MTU in bytes")?,
        None => None,
    };
    let (mut address, mut dhcp_range, mut hosts) = (None, None, Vec::new());
    let v4 = root.children("ip").find(|ip| matches!(ip.attr("family"), None | Some("ipv4")) && ip.attr("address").is_some_and(|a| !a.contains(':')));
    if let Some(ip) = v4 {
        let a = ip.req_attr("address")?;
        let addr: Ipv4Addr = a.trim().parse().map_err(|_| XmlError::invalid(ip, Some("address"), a, "an IPv4 address"))?;
        let prefix = if let Some(p) = ip.attr("prefix") {
            p.trim().parse::<u8>().ok().filter(|p| *p <= 32).ok_or_else(|| XmlError::invalid(ip, Some("prefix"), p, "a prefix length from 0 to 32"))?
        } else if let Some(m) = ip.attr("netmask") {
            netmask_prefix(m).ok_or_else(|| XmlError::invalid(ip, Some("netmask"), m, "a netmask such as 255.255.255.0"))?
        } else {
            // libvirt's default for an address without prefix or netmask: the classful network.
            match addr.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                _ => 24,
            }
        };
        address = Some((addr, prefix));
        if let Some(dhcp) = ip.child("dhcp") {
            if let Some(r) = dhcp.child("range") {
                dhcp_range = Some((ipv4_attr(r, "start")?, ipv4_attr(r, "end")?));
            }
            for h in dhcp.children("host") {
                let Some(m) = h.attr("mac") else { continue };
                let mac = Mac::parse(m.trim()).map_err(|e| XmlError::invalid(h, Some("mac"), m, e))?;
                hosts.push(DhcpHost { mac, ip: ipv4_attr(h, "ip")?, name: h.attr("name").filter(|n| !n.is_empty()).map(str::to_string) });
            }
        }
    }
    Ok(ObservedNetwork { name, uuid, forward, bridge, stp, delay, mtu, address, dhcp_range, hosts })
}

fn ipv4_attr(e: Elem<'_>, name: &'static str) -> Result<Ipv4Addr, XmlError> {
    let v = e.req_attr(name)?;
    v.trim().parse().map_err(|_| XmlError::invalid(e, Some(name), v, "an IPv4 address"))
}

fn netmask_prefix(m: &str) -> Option<u8> {
    let bits = u32::from(m.trim().parse::<Ipv4Addr>().ok()?);
    let prefix = bits.leading_ones();
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then_some(prefix as u8)
}

impl ObservedNetwork {
    /// What libvirt should hold after defining `n`.
    pub fn from_def(n: &NetworkDef) -> ObservedNetwork {
        ObservedNetwork {
            name: xml_safe(&n.name),
            uuid: Some(normalize_uuid(&n.uuid)).filter(|u| !u.is_empty()),
            forward: match n.forward {
                Forward::Nat => Some("nat".into()),
                Forward::None => None,
            },
            bridge: Some(xml_safe(&n.bridge)),
            stp: n.stp,
            delay: n.delay,
            mtu: n.mtu,
            address: n.address,
            dhcp_range: if n.address.is_some() { n.dhcp_range } else { None },
            hosts: if n.address.is_some() {
                n.hosts.iter().map(|h| DhcpHost { mac: h.mac, ip: h.ip, name: h.name.as_deref().filter(|s| !s.is_empty()).map(xml_safe) }).collect()
            } else {
                Vec::new()
            },
        }
    }

    /// A canonical copy: hosts sorted by MAC.
    pub fn normalized(&self) -> ObservedNetwork {
        let mut n = self.clone();
        n.hosts.sort_by(|a, b| (a.mac, a.ip, &a.name).cmp(&(b.mac, b.ip, &b.name)));
        n
    }

    /// The managed fields as canonical XML (attributes alphabetical, hosts
    /// sorted by MAC) for a plan's unified diff.
    pub fn normalized_xml(&self) -> String {
        let n = self.normalized();
        let mut w = XmlWriter::new();
        w.start("network", &[]);
        w.text("name", &[], &n.name);
        if let Some(u) = &n.uuid {
            w.text("uuid", &[], u);
        }
        w.empty("forward", &[("mode", n.forward.as_deref().unwrap_or("none"))]);
        let delay = n.delay.to_string();
        let stp = if n.stp { "on" } else { "off" };
        match &n.bridge {
            Some(b) => w.empty("bridge", &[("delay", &delay), ("name", b), ("stp", stp)]),
            None => w.empty("bridge", &[("delay", &delay), ("stp", stp)]),
        }
        if let Some(m) = n.mtu {
            w.empty("mtu", &[("size", &m.to_string())]);
        }
        if let Some((a, p)) = n.address {
            w.start("ip", &[("address", &a.to_string()), ("prefix", &p.to_string())]);
            if let Some((s, e)) = n.dhcp_range {
                w.empty("range", &[("end", &e.to_string()), ("start", &s.to_string())]);
            }
            for h in &n.hosts {
                let (ip, mac) = (h.ip.to_string(), h.mac.to_string());
                match &h.name {
                    Some(name) => w.empty("host", &[("ip", &ip), ("mac", &mac), ("name", name)]),
                    None => w.empty("host", &[("ip", &ip), ("mac", &mac)]),
                }
            }
            w.end("ip");
        }
        w.end("network");
        w.finish()
    }

    /// The managed fields that differ between `self` (desired) and
    /// `observed`: `name`, `uuid`, `forward`, `bridge`, `stp`, `delay`, `mtu`,
    /// `address`, `dhcp_range`, and `host:<mac>` per DHCP entry (added,
    /// removed or changed; these can be applied live with virNetworkUpdate).
    pub fn changed_fields(&self, observed: &ObservedNetwork) -> Vec<String> {
        let (a, b) = (self.normalized(), observed.normalized());
        let mut out: Vec<String> = [
            ("name", a.name != b.name),
            ("uuid", a.uuid != b.uuid),
            ("forward", a.forward != b.forward),
            ("bridge", a.bridge != b.bridge),
            ("stp", a.stp != b.stp),
            ("delay", a.delay != b.delay),
            ("mtu", a.mtu != b.mtu),
            ("address", a.address != b.address),
            ("dhcp_range", a.dhcp_range != b.dhcp_range),
        ]
        .into_iter()
        .filter(|(_, d)| *d)
        .map(|(n, _)| n.to_string())
        .collect();
        let mut macs: Vec<Mac> = a.hosts.iter().chain(&b.hosts).map(|h| h.mac).collect();
        macs.sort();
        macs.dedup();
        for m in macs {
            let x: Vec<_> = a.hosts.iter().filter(|h| h.mac == m).collect();
            let y: Vec<_> = b.hosts.iter().filter(|h| h.mac == m).collect();
            if x != y {
                out.push(format!("host:{m}"));
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
