//! `virtform output [NAME] [--json]`: the configuration's outputs.

use super::{dir_or_cwd, Global};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Only this output (its raw value: strings without quotes).
    pub name: Option<String>,
    /// Configuration directory (default: the current directory).
    #[arg(long, short = 'C')]
    pub dir: Option<PathBuf>,
    /// As JSON (sensitive values are null unless named explicitly).
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, a: OutputArgs) -> ExitCode {
    let dir = dir_or_cwd(a.dir);
    let cfg = match g.load_reading_host(dir.clone()) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let cfg = with_host_facts(g, &dir, cfg);
    if let Some(name) = &a.name {
        let Some(o) = cfg.outputs.iter().find(|o| &o.name == name) else {
            let names: Vec<&str> = cfg.outputs.iter().map(|o| o.name.as_str()).collect();
            eprintln!("error: no output named \"{name}\"; the configuration has: {}", if names.is_empty() { "none".to_string() } else { names.join(", ") });
            return ExitCode::from(1);
        };
        // Asking for one output by name is asking for its value, sensitive or not (as Terraform).
        if a.json {
            println!("{}", o.value.to_json());
        } else {
            match o.value.as_str() {
                Some(s) => println!("{s}"),
                None => println!("{}", o.value),
            }
        }
        return ExitCode::SUCCESS;
    }
    if a.json {
        let m: serde_json::Map<String, serde_json::Value> = cfg
            .outputs
            .iter()
            .map(|o| (o.name.clone(), serde_json::json!({"sensitive": o.sensitive, "value": if o.sensitive { serde_json::Value::Null } else { o.value.to_json() }})))
            .collect();
        println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
    } else {
        for o in &cfg.outputs {
            println!("{} = {}", o.name, shown(o));
        }
    }
    ExitCode::SUCCESS
}

fn shown(o: &crate::config::Output) -> String {
    if o.sensitive { "(sensitive value)".to_string() } else { o.value.to_string() }
}

/// Outputs after an apply, sensitive ones hidden.
pub fn print_outputs(cfg: &crate::config::Configuration) {
    if cfg.outputs.is_empty() {
        return;
    }
    println!("\nOutputs:\n");
    for o in &cfg.outputs {
        println!("{} = {}", o.name, shown(o));
    }
}

/// Outputs as a JSON object of values (sensitive ones null).
pub fn outputs_json(cfg: &crate::config::Configuration) -> serde_json::Map<String, serde_json::Value> {
    cfg.outputs.iter().map(|o| (o.name.clone(), if o.sensitive { serde_json::Value::Null } else { o.value.to_json() })).collect()
}

/// Ports without a fixed `ip` on a nat/isolated network: their MAC and the
/// libvirt network that leases them an address.
fn leased_ports(cfg: &crate::config::Configuration, state_dir: &std::path::Path) -> Vec<(String, String, String)> {
    use crate::model::Spec;
    // A port's libvirt network may be an imported one.
    let imported = crate::observe::imports::read(state_dir, &cfg.stack).map(|r| r.objects).unwrap_or_default();
    cfg.resources
        .iter()
        .filter_map(|r| {
            let Spec::Port(p) = &r.spec else { return None };
            if p.ip.is_some() {
                return None;
            }
            let Some(Spec::Network(n)) = cfg.resource(&p.network.0).map(|x| &x.spec) else { return None };
            let mac = p.mac?.to_string();
            n.net_type.is_libvirt().then(|| (r.address.to_string(), mac, crate::plan::desired::libvirt_name_of(&cfg.stack, &cfg.names_of_str(&p.network.0), n, &imported)))
        })
        .collect()
}

/// Reloads the configuration with the addresses libvirt's DHCP servers
/// leased to ports without a fixed IP, and the addresses the guest agents
/// of the instances whose `addresses` an output reads report, so outputs
/// show them instead of "(known after apply)". Without such ports and
/// instances (or without libvirt) the configuration is returned as it is.
pub fn with_host_facts(g: &Global, dir: &std::path::Path, cfg: crate::config::Configuration) -> crate::config::Configuration {
    use crate::host::libvirt::Libvirt;
    let ports = leased_ports(&cfg, &g.state_dir);
    if ports.is_empty() && cfg.agent_fact_readers.is_empty() {
        return cfg;
    }
    let Ok(libvirt) = crate::host::libvirt::VirtLibvirt::open(&g.connect) else { return cfg };
    let agent_addresses = crate::observe::agent::addresses_read(&cfg, &libvirt);
    let mut leases: std::collections::BTreeMap<String, Vec<crate::host::libvirt::Lease>> = Default::default();
    let mut facts = std::collections::BTreeMap::new();
    for (addr, mac, net) in ports {
        let l = leases.entry(net.clone()).or_insert_with(|| libvirt.leases(&net).unwrap_or_default());
        // The newest lease of the MAC.
        if let Some(lease) = l.iter().filter(|x| x.mac.eq_ignore_ascii_case(&mac)).max_by_key(|x| x.expiry) {
            facts.insert(addr, lease.ip.split('/').next().unwrap_or(&lease.ip).to_string());
        }
    }
    if facts.is_empty() && agent_addresses.is_empty() {
        return cfg;
    }
    let mut opts = g.load_options(dir.to_path_buf());
    opts.facts = facts;
    opts.agent_addresses = agent_addresses;
    if !cfg.data.is_empty() {
        opts.data = Some(crate::config::DataHandle(std::sync::Arc::new(crate::observe::data::HostData::new(&g.connect))));
    }
    crate::config::load(&opts).unwrap_or(cfg)
}
