//! The guest agent's facts: the addresses a guest reports through its QEMU
//! guest agent (`instance.NAME.addresses`, and `virtform show`).
//!
//! Invariants:
//! - Asked only where something reads them: the instances an output or a
//!   local reads (`Configuration::agent_fact_readers`) for `output` and the
//!   outputs after `apply`, and the stack's running domains with an agent
//!   channel for `show`. Never during `plan` or an apply's observation (a
//!   slow or hung agent cannot slow down or block a plan, unlike
//!   Terraform's libvirt provider, whose refresh asks every guest's agent).
//! - A host fact never becomes desired state: the addresses fill the
//!   instance's exported `addresses` (through
//!   `LoadOptions::agent_addresses`) for outputs, nothing else; the plan
//!   loads without them, where `addresses` is unknown.
//! - Bounded: one thread per domain (at most [`MAX_THREADS`] at a time),
//!   each joined; libvirt answers at once for a domain whose agent is not
//!   connected and gives up a connected one that does not answer after 5 s.

use crate::config::Configuration;
use crate::host::libvirt::{GuestInterface, Libvirt};
use crate::model::Spec;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// At most this many agents are asked at the same time.
pub const MAX_THREADS: usize = 8;

/// Whether an address is worth reporting: not loopback, not link-local
/// (`169.254.0.0/16`, and `fe80::/10`, which is on every interface and
/// useless without a scope), not unspecified.
pub fn reported(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_loopback() && !a.is_unspecified() && !a.is_link_local(),
        IpAddr::V6(a) => !a.is_loopback() && !a.is_unspecified() && (a.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// The guest's interfaces in a stable, useful order, without loopback:
/// first those whose MAC is one of `macs` (the instance's ports), in that
/// order, then the others by name; within one interface IPv4 before IPv6.
/// Addresses that are not [`reported`] are dropped, and so are interfaces
/// left without any.
pub fn ordered(ifaces: &[GuestInterface], macs: &[String]) -> Vec<GuestInterface> {
    let mut out: Vec<(usize, GuestInterface)> = ifaces
        .iter()
        .filter(|i| i.name != "lo")
        .map(|i| {
            let mut i = i.clone();
            i.addrs.retain(|(a, _)| reported(a));
            i.addrs.sort_by_key(|(a, _)| a.is_ipv6());
            let rank = i.mac.as_deref().and_then(|m| macs.iter().position(|x| x.eq_ignore_ascii_case(m))).unwrap_or(usize::MAX);
            (rank, i)
        })
        .filter(|(_, i)| !i.addrs.is_empty())
        .collect();
    out.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    out.into_iter().map(|(_, i)| i).collect()
}

/// `instance.NAME.addresses`: the IP addresses (no prefix) of [`ordered`].
pub fn address_list(ifaces: &[GuestInterface], macs: &[String]) -> Vec<String> {
    ordered(ifaces, macs).iter().flat_map(|i| i.addrs.iter().map(|(a, _)| a.to_string())).collect()
}

/// The MACs of an instance's ports, in its order.
pub fn port_macs(cfg: &Configuration, inst: &crate::model::instance::Instance) -> Vec<String> {
    inst.ports
        .iter()
        .filter_map(|p| match cfg.resource(&p.0).map(|r| &r.spec) {
            Some(Spec::Port(port)) => port.mac.map(|m| m.to_string()),
            _ => None,
        })
        .collect()
}

/// Asks every domain in `names` for its interfaces, [`MAX_THREADS`] at a
/// time; an agent that does not answer gives its error.
pub fn ask_all(libvirt: &dyn Libvirt, names: &[String]) -> BTreeMap<String, Result<Vec<GuestInterface>, String>> {
    let mut out = BTreeMap::new();
    for chunk in names.chunks(MAX_THREADS) {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|n| (n, s.spawn(move || libvirt.agent_interfaces(n).map_err(|e| e.message)))).collect();
            for (n, h) in handles {
                out.insert(n.clone(), h.join().unwrap_or_else(|_| Err("the thread asking the agent panicked".into())));
            }
        });
    }
    out
}

/// The addresses of the instances whose `addresses` the configuration
/// reads, by instance address. An instance whose agent does not answer gets
/// an empty list (and a warning, unless it is meant to be shut off), so an
/// output is never "(known after apply)" after an apply.
pub fn addresses_read(cfg: &Configuration, libvirt: &dyn Libvirt) -> BTreeMap<String, Vec<String>> {
    let wanted: Vec<(String, &crate::model::instance::Instance)> = cfg
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Instance(i) if i.guest_agent && cfg.agent_fact_readers.contains(&if r.address.module.is_root() { r.address.name.clone() } else { format!("{}.{}", r.address.module, r.address.name) }) => Some((r.address.to_string(), &**i)),
            _ => None,
        })
        .collect();
    if wanted.is_empty() {
        return BTreeMap::new();
    }
    let names: Vec<String> = wanted.iter().map(|(_, i)| i.domain_name().to_string()).collect();
    let answers = ask_all(libvirt, &names);
    wanted
        .into_iter()
        .map(|(addr, inst)| {
            let list = match answers.get(inst.domain_name()) {
                Some(Ok(ifaces)) => address_list(ifaces, &port_macs(cfg, inst)),
                Some(Err(e)) => {
                    if inst.state == crate::model::instance::State::Running {
                        tracing::warn!("{addr}: the guest agent of {} did not answer ({e}); its `addresses` are empty", inst.domain_name());
                    }
                    Vec::new()
                }
                None => Vec::new(),
            };
            (addr, list)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, mac: Option<&str>, addrs: &[&str]) -> GuestInterface {
        GuestInterface {
            name: name.into(),
            mac: mac.map(str::to_string),
            addrs: addrs
                .iter()
                .map(|a| {
                    let (ip, p) = a.split_once('/').unwrap();
                    (ip.parse().unwrap(), p.parse().unwrap())
                })
                .collect(),
        }
    }

    #[test]
    fn loopback_and_link_local_are_left_out_and_ports_come_first() {
        let ifaces = vec![
            iface("lo", Some("00:00:00:00:00:00"), &["127.0.0.1/8", "::1/128"]),
            iface("eth9", Some("52:54:00:99:99:99"), &["192.168.9.9/24"]),
            iface("eth1", Some("52:54:00:00:00:02"), &["fe80::5054:ff:fe00:2/64", "2001:db8::2/64", "10.1.0.2/24"]),
            iface("eth0", Some("52:54:00:00:00:01"), &["10.0.0.5/24", "fe80::1/64"]),
            iface("docker0", None, &["169.254.1.1/16"]),
        ];
        let macs = vec!["52:54:00:00:00:01".to_string(), "52:54:00:00:00:02".to_string()];
        assert_eq!(address_list(&ifaces, &macs), ["10.0.0.5", "10.1.0.2", "2001:db8::2", "192.168.9.9"]);
        let o = ordered(&ifaces, &macs);
        assert_eq!(o.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["eth0", "eth1", "eth9"]);
        assert_eq!(o[1].addrs.len(), 2);
        // MACs compare without regard to case.
        assert_eq!(address_list(&ifaces, &["52:54:00:00:00:02".to_uppercase()])[0], "10.1.0.2");
    }

    /// The whole path on libvirt's test driver (which makes up one address
    /// per NIC for any source): only the instance an output reads is
    /// asked, and the reloaded output holds its address.
    #[test]
    fn outputs_get_the_addresses_of_the_instances_they_read() {
        use crate::host::libvirt::VirtLibvirt;
        let dir = tempfile::tempdir().unwrap();
        let stack = format!("agut{}", std::process::id());
        std::fs::write(
            dir.path().join("main.vf.hcl"),
            format!(
                r#"
virtform {{ stack = "{stack}" }}
network "lan" {{ bridge = "vfag-ut0" }}
port "p" {{ network = network.lan }}
port "q" {{ network = network.lan }}
instance "read" {{
  kernel = "/nonexistent/vmlinuz"
  ports  = [port.p]
}}
instance "unread" {{
  kernel = "/nonexistent/vmlinuz"
  ports  = [port.q]
}}
instance "off" {{
  kernel      = "/nonexistent/vmlinuz"
  guest_agent = false
}}
output "ips" {{ value = instance.read.addresses }}
output "none" {{ value = instance.off.addresses }}
"#
            ),
        )
        .unwrap();
        let mut opts = crate::config::LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/state".into(), ..Default::default() };
        let cfg = crate::config::load(&opts).unwrap_or_else(|e| panic!("{}", e.render(false)));
        assert_eq!(cfg.agent_fact_readers.iter().collect::<Vec<_>>(), ["off", "read"]);
        let lv = VirtLibvirt::open("test:///default").unwrap();
        let lowering = crate::plan::desired::Lowering { cfg: &cfg, state_dir: std::path::Path::new("/state"), kvm_usable: false, source_hashes: &Default::default(), imported: &Default::default() };
        for a in ["instance.read", "instance.unread"] {
            let def = lowering.domain(cfg.resource(a).unwrap()).unwrap();
            lv.define(&crate::xml::domain::domain_xml(&def)).unwrap();
            lv.start(&def.name).unwrap();
        }
        let got = addresses_read(&cfg, &lv);
        for a in ["instance.read", "instance.unread"] {
            let name = match &cfg.resource(a).unwrap().spec {
                Spec::Instance(i) => i.domain_name().to_string(),
                _ => unreachable!(),
            };
            lv.destroy(&name).unwrap();
            lv.undefine(&name).unwrap();
        }
        // Asked: the instance an output reads (with the agent channel); not the other two.
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got["instance.read"].len(), 1);
        let ip = got["instance.read"][0].clone();
        assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{ip}");
        let value = |c: &Configuration, n: &str| c.outputs.iter().find(|o| o.name == n).unwrap().value.clone();
        assert!(value(&cfg, "ips").contains_unknown(), "unknown until read");
        assert_eq!(value(&cfg, "none").to_json(), serde_json::json!([]), "no channel: known to be empty");
        opts.agent_addresses = got;
        let cfg2 = crate::config::load(&opts).unwrap();
        assert_eq!(value(&cfg2, "ips").to_json(), serde_json::json!([ip]));
        // The fact changes no spec.
        assert_eq!(cfg2.resource("instance.read").unwrap().spec, cfg.resource("instance.read").unwrap().spec);
    }

    #[test]
    fn no_interfaces_no_addresses() {
        assert!(address_list(&[], &[]).is_empty());
        assert!(address_list(&[iface("lo", None, &["127.0.0.1/8"])], &[]).is_empty());
    }
}
