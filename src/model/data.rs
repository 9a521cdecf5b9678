//! `data "network"`: an existing network on the host (a Linux bridge, a
//! libvirt network or an Open vSwitch bridge) that virtform reads and never
//! changes.
//!
//! Invariants:
//! - Exactly one selector (`bridge`, `libvirt_network`, `ovs_bridge`).
//! - Nothing a data source says can change the object: attributes of a
//!   managed network that would (`mtu`, `address`, `stp`, …) are refused,
//!   each by name. `subnet`, `gateway` and `dns` describe the guests' side
//!   (checked like a network's) and are never written to the host.
//! - The facts (type, bridge device, MTU, the host's address, DHCP range)
//!   come from a [`DataReader`]: the host when planning, none at validate
//!   (then they are unknown, like Terraform's data sources at validate).
//!   The result is a [`Network`] spec with [`Network::existing`] set, so
//!   ports plug into it with the same code as into a managed network.

use super::common::{Ip, IpCidr};
use super::network::{check_subnet, NetType, Network};
use super::{Address, Ctx, FieldError};
use crate::config::value::Value;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which existing object a data network names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "selector", content = "name", rename_all = "snake_case")]
pub enum Selector {
    /// A Linux bridge, by device name.
    Bridge(String),
    /// A libvirt network, by name.
    LibvirtNetwork(String),
    /// An Open vSwitch bridge, by name.
    OvsBridge(String),
}

impl Selector {
    pub fn attr(&self) -> &'static str {
        match self {
            Selector::Bridge(_) => "bridge",
            Selector::LibvirtNetwork(_) => "libvirt_network",
            Selector::OvsBridge(_) => "ovs_bridge",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Selector::Bridge(n) | Selector::LibvirtNetwork(n) | Selector::OvsBridge(n) => n,
        }
    }

    /// "bridge br0", "libvirt network default", "Open vSwitch bridge br-int".
    pub fn describe(&self) -> String {
        match self {
            Selector::Bridge(n) => format!("bridge {n}"),
            Selector::LibvirtNetwork(n) => format!("libvirt network {n}"),
            Selector::OvsBridge(n) => format!("Open vSwitch bridge {n}"),
        }
    }

    /// The network type ports on it plug as, known from the selector alone.
    fn net_type(&self) -> NetType {
        match self {
            Selector::Bridge(_) => NetType::Bridge,
            Selector::OvsBridge(_) => NetType::Ovs,
            Selector::LibvirtNetwork(_) => NetType::Isolated,
        }
    }
}

/// What a data network stands for, kept on its resolved [`Network`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Existing {
    pub selector: Selector,
    /// Whether the facts were read from the host (false at validate).
    pub read: bool,
}

/// What the host says about an existing network.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct NetworkFacts {
    /// `bridge`, `ovs`, `nat` (a libvirt network that forwards) or `isolated`.
    pub net_type: Option<NetType>,
    /// The bridge device guests' taps join (a libvirt network's bridge).
    pub bridge: String,
    pub mtu: Option<u32>,
    /// The host's first global IPv4 address on it (else IPv6), with prefix.
    pub address: Option<IpCidr>,
    /// A libvirt network's DHCP range.
    pub dhcp_range: Option<(Ip, Ip)>,
}

/// Reads existing networks for data sources (the host, or a test's fake).
pub trait DataReader: Send + Sync + std::panic::RefUnwindSafe {
    /// The facts of the object `sel` names, or why it cannot be used
    /// ("bridge br0 not found on this host"), without the address.
    fn network(&self, sel: &Selector) -> Result<NetworkFacts, String>;
}

/// `data "network"` as written.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataNetwork {
    /// An existing Linux bridge, by device name.
    pub bridge: Option<String>,
    /// An existing libvirt network, by name (e.g. "default").
    pub libvirt_network: Option<String>,
    /// An existing Open vSwitch bridge, by name (e.g. "br-int").
    pub ovs_bridge: Option<String>,
    /// The guests' prefix on it, for ports with a fixed ip. Default: the prefix of the host's address on it, if it has one.
    pub subnet: Option<IpCidr>,
    /// The guests' default gateway (inside `subnet`). Default: the host's address on a libvirt NAT network.
    pub gateway: Option<Ip>,
    /// DNS servers for guests with a fixed ip. Default: the host's address on a libvirt NAT network.
    pub dns: Option<Vec<Ip>>,
}

/// Attributes of a managed network that would change an existing one.
const WOULD_CHANGE: &[(&str, &str)] = &[
    ("type", "the type is read from the object the selector names"),
    ("mtu", "its MTU is read from the host: data.network.NAME.mtu"),
    ("address", "the host's address on it is read from the host: data.network.NAME.address"),
    ("stp", "spanning tree is the owner's setting"),
    ("forward_delay", "the forward delay is the owner's setting"),
    ("datapath_type", "the datapath is the owner's setting"),
    ("dhcp", "its DHCP range is read from the host: data.network.NAME.dhcp_range"),
];

/// Builds a data network: the selector and the guests' side from `attrs`,
/// the rest from the reader (unknown without one).
pub fn build_network(addr: &Address, attrs: &Value, ctx: &Ctx<'_>) -> Result<(Network, Value), Vec<FieldError>> {
    let mut errs = Vec::new();
    if let Value::Map(m) = attrs {
        for (name, why) in WOULD_CHANGE {
            if m.get(*name).is_some_and(|v| !matches!(v, Value::Null)) {
                errs.push(
                    FieldError::new(*name, format!("`{name}` would change an existing network, which a data source never does ({})", why.replace("NAME", &addr.name)))
                        .label("remove this attribute; to manage the network, declare a `network` resource and import it instead"),
                );
            }
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let d: DataNetwork = crate::config::de::from_value(attrs).map_err(|(path, e)| vec![FieldError::new(if path == "." { String::new() } else { path }, e.0)])?;
    let given: Vec<Selector> = [
        d.bridge.clone().map(Selector::Bridge),
        d.libvirt_network.clone().map(Selector::LibvirtNetwork),
        d.ovs_bridge.clone().map(Selector::OvsBridge),
    ]
    .into_iter()
    .flatten()
    .collect();
    let selector = match given.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(vec![FieldError::new("", "a data network needs exactly one selector: `bridge`, `libvirt_network` or `ovs_bridge`, and has none")
                .label("add bridge = \"br0\", libvirt_network = \"default\" or ovs_bridge = \"br-int\"")]);
        }
        [_, second, ..] => {
            return Err(vec![FieldError::new(second.attr(), format!("a data network needs exactly one selector, and this one has {}: {}", given.len(), given.iter().map(|s| format!("`{}`", s.attr())).collect::<Vec<_>>().join(", ")))
                .label("keep one of them")]);
        }
    };
    let name = selector.name();
    let name_ok = match &selector {
        Selector::LibvirtNetwork(n) => !n.is_empty() && n.len() <= 200 && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')),
        _ => super::common::IfName::parse(name).is_ok(),
    };
    if !name_ok {
        let why = match &selector {
            Selector::LibvirtNetwork(_) => "a libvirt network name of letters, digits, '_', '-' and '.'".to_string(),
            _ => super::common::IfName::parse(name).err().unwrap_or_default(),
        };
        return Err(vec![FieldError::new(selector.attr(), format!("\"{name}\" cannot name an existing network: {why}"))]);
    }
    let facts = match ctx.data {
        None => None,
        Some(reader) => match reader.network(&selector) {
            Ok(f) => Some(f),
            Err(m) => {
                let label = if m.contains("not found") { "create it first, or correct the name" } else { "virtform reads this network as it is and never changes it" };
                return Err(vec![FieldError::new(selector.attr(), m).label(label)]);
            }
        },
    };
    let read = facts.is_some();
    let facts = facts.unwrap_or_default();
    let net_type = facts.net_type.unwrap_or(selector.net_type());
    let subnet = d.subnet.or(facts.address.map(|a| a.network()));
    errs.extend(check_subnet(d.subnet, facts.address.filter(|_| d.subnet.is_some()), d.gateway, d.dns.as_deref()));
    if !errs.is_empty() {
        // "address" errors here are about the host's address: say so.
        for e in &mut errs {
            if e.path == "subnet" && e.message.contains("disagree") {
                e.message = format!("{} (the host's address on {} is read from the host)", e.message, selector.describe());
            }
        }
        return Err(errs);
    }
    let bridge = match &selector {
        Selector::Bridge(n) | Selector::OvsBridge(n) => n.clone(),
        Selector::LibvirtNetwork(_) => facts.bridge.clone(),
    };
    let net = Network {
        host: None,
        net_type,
        bridge: if bridge.is_empty() { None } else { Some(super::common::IfName(bridge)) },
        mtu: facts.mtu,
        address: facts.address,
        subnet,
        gateway: d.gateway,
        dns: d.dns.clone(),
        stp: None,
        forward_delay: None,
        datapath_type: None,
        dhcp: facts.dhcp_range.map(|(start, end)| super::network::Dhcp { start, end }),
        hosts: None,
        vni: None,
        backend: None,
        members: Vec::new(),
        tunnel: None,
        existing: Some(Existing { selector: selector.clone(), read }),
    };
    let fact = |v: Option<Value>| if read { v.unwrap_or(Value::Null) } else { Value::Unknown };
    let given_or_fact = |given: Option<Value>, f: Option<Value>| match given {
        Some(v) => v,
        None => fact(f),
    };
    let s = |x: String| Value::String(x);
    let mut exports = std::collections::BTreeMap::new();
    for sel in ["bridge", "libvirt_network", "ovs_bridge"] {
        exports.insert(sel.to_string(), if sel == selector.attr() { s(name.to_string()) } else { Value::Null });
    }
    exports.insert("type".into(), fact(facts.net_type.map(|t| s(t.as_str().into()))));
    exports.insert("device".into(), fact((!facts.bridge.is_empty()).then(|| s(facts.bridge.clone())).or(net.bridge.as_ref().map(|b| s(b.0.clone())))));
    exports.insert("mtu".into(), fact(facts.mtu.map(|m| Value::Number(m as f64))));
    exports.insert("address".into(), fact(facts.address.map(|a| s(a.to_string()))));
    exports.insert("subnet".into(), given_or_fact(d.subnet.map(|x| s(x.to_string())), subnet.map(|x| s(x.to_string()))));
    exports.insert("cidr".into(), exports["subnet"].clone());
    exports.insert("gateway".into(), given_or_fact(d.gateway.map(|g| s(g.to_string())), net.guest_gateway().map(|g| s(g.to_string()))));
    exports.insert(
        "dns".into(),
        given_or_fact(d.dns.as_ref().map(|v| Value::List(v.iter().map(|i| s(i.to_string())).collect())), Some(Value::List(net.guest_dns().into_iter().map(|i| s(i.to_string())).collect()))),
    );
    exports.insert(
        "dhcp_range".into(),
        fact(facts.dhcp_range.map(|(a, b)| Value::map([("start", s(a.to_string())), ("end", s(b.to_string()))]))),
    );
    Ok((net, Value::Map(exports)))
}

/// The attribute names a data network accepts (for suggestions and the schema).
pub fn attribute_names() -> Vec<String> {
    ["bridge", "libvirt_network", "ovs_bridge", "subnet", "gateway", "dns"].iter().map(|s| s.to_string()).collect()
}
