//! Rendering a plan: Terraform-shaped text (and JSON, see `to_json`).
//!
//! Invariant: values marked sensitive are never printed; they show as
//! `(sensitive value)`.

use super::{Action, AttrChange, Landing, Plan, ResourceChange};

struct Style {
    green: &'static str,
    yellow: &'static str,
    red: &'static str,
    bold: &'static str,
    dim: &'static str,
    reset: &'static str,
}

fn style(color: bool) -> Style {
    if color {
        Style { green: "\x1b[32m", yellow: "\x1b[33m", red: "\x1b[31m", bold: "\x1b[1m", dim: "\x1b[2m", reset: "\x1b[0m" }
    } else {
        Style { green: "", yellow: "", red: "", bold: "", dim: "", reset: "" }
    }
}

fn value(v: &Option<String>, sensitive: bool) -> String {
    if sensitive {
        return "(sensitive value)".into();
    }
    match v {
        Some(s) if s.parse::<f64>().is_ok() || s == "true" || s == "false" => s.clone(),
        Some(s) => format!("{s:?}"),
        None => "(none)".into(),
    }
}

fn landing_note(c: &AttrChange) -> &'static str {
    match c.landing {
        Landing::Live => "",
        Landing::Restart => " (restart)",
        Landing::Replace => " # forces replacement",
    }
}

fn header(rc: &ResourceChange) -> String {
    if let (Some(from), Some("moved")) = (&rc.previous_address, rc.reason.as_deref()) {
        return format!("# {from} has moved to {}", rc.address);
    }
    match (&rc.migrate, rc.action) {
        (Some(m), Action::Delete) => return format!("# {} will migrate live from here to {} (then its files here are removed)", rc.address, m.to),
        (Some(m), _) => return format!("# {} will migrate live from {} to {}", rc.address, m.from, m.to),
        (None, _) => {}
    }
    match rc.action {
        Action::Create => format!("# {} will be created", rc.address),
        Action::Delete => format!("# {} will be destroyed", rc.address),
        Action::Replace => format!("# {} must be replaced", rc.address),
        Action::Update => match rc.landing() {
            Some(Landing::Restart) => format!("# {} will be updated in-place (restart)", rc.address),
            _ => format!("# {} will be updated in-place (live)", rc.address),
        },
        Action::NoOp => format!("# {} is unchanged", rc.address),
        Action::Forget => format!("# {} will no longer be managed (the object stays as it is)", rc.address),
    }
}

/// " (mtu 1500, address 192.168.1.1/24, DHCP 192.168.122.2-192.168.122.254)".
fn facts_note(f: &crate::model::data::NetworkFacts) -> String {
    let mut parts = Vec::new();
    if let Some(t) = f.net_type {
        parts.push(format!("type {}", t.as_str()));
    }
    if !f.bridge.is_empty() {
        parts.push(format!("device {}", f.bridge));
    }
    if let Some(m) = f.mtu {
        parts.push(format!("mtu {m}"));
    }
    if let Some(a) = f.address {
        parts.push(format!("address {a}"));
    }
    if let Some((a, b)) = f.dhcp_range {
        parts.push(format!("DHCP {a}-{b}"));
    }
    if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) }
}

/// The human plan.
pub fn text(plan: &Plan, color: bool) -> String {
    let s = style(color);
    let mut out = String::new();
    if !plan.data.is_empty() {
        out.push_str("Data sources (read from the host, never changed):\n");
        for d in &plan.data {
            out.push_str(&format!("  {}{}{}: {}{}\n", s.bold, d.address, s.reset, d.object, facts_note(&d.facts)));
        }
        out.push('\n');
    }
    for c in &plan.conflicts {
        out.push_str(&format!("{}error{}: conflict: {}: {}.\n", s.red, s.reset, c.address, c.message));
        for w in &c.ways_out {
            let mut lines = w.lines();
            if let Some(first) = lines.next() {
                out.push_str(&format!("  - {first}\n"));
            }
            for l in lines {
                out.push_str(&format!("  {l}\n"));
            }
        }
        out.push('\n');
    }
    let changes: Vec<&ResourceChange> = plan.changes.iter().filter(|c| c.action != Action::NoOp).collect();
    if changes.is_empty() && (!plan.errors.is_empty() || !plan.conflicts.is_empty()) {
        // Errors or conflicts: "No changes" would read as "the host matches".
    } else if changes.is_empty() {
        out.push_str("No changes. The host matches the configuration.\n");
    } else {
        if !plan.conflicts.is_empty() {
            out.push_str("Once the conflicts above are resolved, virtform would also perform these actions:\n\n");
        } else {
            out.push_str("virtform will perform the following actions:\n\n");
        }
        for rc in changes {
            let (sym, col) = match rc.action {
                Action::Create => ("  +", s.green),
                Action::Delete => ("  -", s.red),
                Action::Replace => ("-/+", s.red),
                Action::Update => ("  ~", s.yellow),
                Action::NoOp => ("   ", ""),
                Action::Forget => ("  .", s.dim),
            };
            match (&rc.importing, rc.action) {
                // Plainly, in red: the object the user brought is made again.
                (Some(id), Action::Replace) => out.push_str(&format!(
                    "  {}{}# {} will be imported (id {id:?}) and then REPLACED: the existing object is destroyed and made again{}\n",
                    s.bold, s.red, rc.address, s.reset
                )),
                (Some(id), _) => out.push_str(&format!("  {}# {} will be imported (id {id:?}){}\n", s.bold, rc.address, s.reset)),
                (None, _) => {}
            }
            if let (Some(from), false) = (&rc.previous_address, rc.reason.as_deref() == Some("moved")) {
                out.push_str(&format!("  {}# {from} has moved to {}{}\n", s.bold, rc.address, s.reset));
            }
            out.push_str(&format!("  {}{}{}\n", s.bold, header(rc), s.reset));
            if rc.changes.iter().any(|c| c.outside) {
                out.push_str(&format!("  {}# (changed outside virtform){}\n", s.dim, s.reset));
            }
            for b in &rc.because {
                out.push_str(&format!("  {}# because {b}{}\n", s.dim, s.reset));
            }
            // The resource's own part (the `#` line above names the module path).
            let local = crate::model::ModulePath::skip_prefix(&rc.address).filter(|r| !r.is_empty()).unwrap_or(&rc.address);
            let (kind, name) = local.split_once('.').unwrap_or((local, ""));
            out.push_str(&format!("{col}{sym}{} {kind} {name:?} {{\n", s.reset));
            let width = rc.changes.iter().map(|c| c.attr.len()).max().unwrap_or(0);
            for c in rc.changes.iter().filter(|c| c.before.is_none() && rc.action == Action::Create) {
                let shown = if c.sensitive { "(sensitive value)".to_string() } else { c.after.clone().unwrap_or_default() };
                out.push_str(&format!("      {}+{} {:width$} = {shown}\n", s.green, s.reset, c.attr));
            }
            if let (Action::Delete, Some(o), None) = (rc.action, &rc.object, &rc.migrate) {
                out.push_str(&format!("      {}-{} object = {o:?}\n", s.red, s.reset));
            }
            if let (Action::Forget, Some(o)) = (rc.action, &rc.object) {
                out.push_str(&format!("      {}.{} object = {o:?} (kept; {}){}\n", s.dim, s.reset, forget_note(rc), ""));
            }
            for c in rc.changes.iter().filter(|_| rc.action != Action::Create) {
                out.push_str(&format!(
                    "      {}~{} {:width$} = {} -> {}{}{}\n",
                    s.yellow,
                    s.reset,
                    c.attr,
                    value(&c.before, c.sensitive),
                    value(&c.after, c.sensitive),
                    landing_note(c),
                    if c.outside { " (changed outside virtform)" } else { "" },
                ));
            }
            out.push_str("    }\n");
            if let Some(d) = &rc.xml_diff {
                for l in d.lines() {
                    let col = if l.starts_with('+') && !l.starts_with("+++") {
                        s.green
                    } else if l.starts_with('-') && !l.starts_with("---") {
                        s.red
                    } else {
                        s.dim
                    };
                    out.push_str(&format!("      {col}{l}{}\n", s.reset));
                }
            }
            out.push('\n');
        }
        out.push_str(&format!("{}{}{}\n", s.bold, plan.summary(), s.reset));
    }
    match plan.conflicts.len() {
        0 => {}
        1 => out.push_str(&format!("{}error{}: 1 conflict: nothing can be applied until it is resolved\n", s.red, s.reset)),
        n => out.push_str(&format!("{}error{}: {n} conflicts: nothing can be applied until they are resolved\n", s.red, s.reset)),
    }
    for e in &plan.errors {
        out.push_str(&format!("{}error{}: {e}\n", s.red, s.reset));
    }
    out
}

/// What forgetting does to an object of this kind, plainly.
fn forget_note(rc: &ResourceChange) -> &'static str {
    match rc.kind {
        crate::model::Kind::Instance => "its virtform metadata is removed; a running guest keeps running",
        crate::model::Kind::Disk | crate::model::Kind::Volume => "the file stays where it is, listed as forgotten in the stack's names.json",
        crate::model::Kind::Network if rc.object.as_deref().is_some_and(|o| o.starts_with("libvirt network ")) => {
            "its UUID stays virtform's derived one; it is listed as forgotten in the stack's names.json"
        }
        _ => "its marker is removed",
    }
}

/// The JSON plan (see `schema/plan.schema.json` once published).
pub fn to_json(plan: &Plan) -> serde_json::Value {
    serde_json::json!({
        "format_version": "1.0",
        "stack": plan.stack,
        "fingerprint": plan.fingerprint,
        "resource_changes": plan.changes.iter().map(|c| serde_json::json!({
            "address": c.address,
            "type": c.kind,
            "change": {
                "actions": c.action.actions(),
                "attributes": c.changes.iter().map(|a| serde_json::json!({
                    "name": a.attr,
                    "before": if a.sensitive { serde_json::Value::Null } else { serde_json::json!(a.before) },
                    "after": if a.sensitive {
                        serde_json::Value::Null
                    } else if c.action == super::Action::Create {
                        // Created attributes hold JSON text of the resolved spec.
                        a.after.as_deref().and_then(|t| serde_json::from_str(t).ok()).unwrap_or(serde_json::Value::Null)
                    } else {
                        serde_json::json!(a.after)
                    },
                    "sensitive": a.sensitive,
                    "landing": a.landing,
                    "outside": a.outside,
                })).collect::<Vec<_>>(),
            },
            "action_reason": c.reason,
            "because": c.because,
            "importing": c.importing.as_ref().map(|id| serde_json::json!({"id": id})),
            "previous_address": c.previous_address,
            "migrate": c.migrate.as_ref().map(|m| serde_json::json!({"from": m.from, "to": m.to, "domain": m.domain})),
        })).collect::<Vec<_>>(),
        "data_sources": plan.data.iter().map(|d| serde_json::json!({
            "address": d.address,
            "mode": "data",
            "type": "network",
            "object": d.object,
            "facts": {
                "type": d.facts.net_type.map(|t| t.as_str()),
                "device": if d.facts.bridge.is_empty() { None } else { Some(&d.facts.bridge) },
                "mtu": d.facts.mtu,
                "address": d.facts.address.map(|a| a.to_string()),
                "dhcp_range": d.facts.dhcp_range.map(|(a, b)| serde_json::json!({"start": a.to_string(), "end": b.to_string()})),
            },
        })).collect::<Vec<_>>(),
        "conflicts": plan.conflicts,
        "errors": plan.errors,
    })
}
