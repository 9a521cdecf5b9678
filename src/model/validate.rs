//! Checks across resources: things no single resource can see.
//!
//! Invariant: each finding names both resources involved, with the span of
//! the attribute in the later one and a note at the earlier one.

use super::{Resource, Spec};
use crate::config::diag::{Diagnostic, Diagnostics};
use std::collections::HashMap;

/// Duplicate MACs, bridges, domain names, fixed IPs; disks, ports and volumes
/// used by two instances.
pub fn check_all(resources: &[Resource]) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let mut seen: HashMap<(String, String), (usize, String)> = HashMap::new();
    let mut claim = |diags: &mut Diagnostics, what: &str, value: String, idx: usize, path: String, msg: &dyn Fn(&Resource) -> String| {
        let key = (what.to_string(), value);
        if let Some((first, first_path)) = seen.get(&key) {
            let a = &resources[*first];
            let b = &resources[idx];
            diags.push(
                Diagnostic::error(msg(a))
                    .at_opt(b.span_of(&path))
                    .label(format!("{} {} is already used by {}", what, key.1, a.address))
                    .note(a.span_of(first_path), format!("{} claims it here", a.address)),
            );
        } else {
            seen.insert(key, (idx, path));
        }
    };
    for (i, r) in resources.iter().enumerate() {
        // Formatted only for a message (the loop runs for every resource).
        let me = &r.address;
        match &r.spec {
            Spec::Network(n) => {
                claim(&mut diags, "bridge", n.bridge_name().to_string(), i, "bridge".into(), &|a| {
                    format!("{me} and {} claim the same bridge \"{}\"", a.address, n.bridge_name())
                });
            }
            Spec::Port(p) => {
                if let Some(mac) = p.mac {
                    claim(&mut diags, "MAC", mac.to_string(), i, "mac".into(), &|a| format!("{me} and {} have the same MAC {mac}", a.address));
                }
                if let Some(ip) = p.ip {
                    claim(&mut diags, "IP", format!("{} on {}", ip, p.network), i, "ip".into(), &|a| {
                        format!("{me} and {} have the same fixed IP {ip} on {}", a.address, p.network)
                    });
                }
            }
            Spec::Instance(inst) => {
                let name = inst.domain_name().to_string();
                claim(&mut diags, "domain name", name.clone(), i, "name".into(), &|a| {
                    format!("{me} and {} would both be the libvirt domain \"{name}\"", a.address)
                });
                for (field, refs) in [("disks", &inst.disks), ("ports", &inst.ports), ("volumes", &inst.volumes)] {
                    for (j, d) in refs.iter().enumerate() {
                        claim(&mut diags, field.trim_end_matches('s'), d.to_string(), i, format!("{field}[{j}]"), &|a| {
                            format!("{d} is used by two instances, {} and {me}", a.address)
                        });
                    }
                }
            }
            Spec::Image(_) | Spec::Disk(_) | Spec::Volume(_) => {}
        }
    }
    diags
}
