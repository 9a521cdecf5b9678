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
    let cfg = match g.load(dir_or_cwd(a.dir)) {
        Ok(c) => c,
        Err(c) => return c,
    };
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
