//! `virtform validate [DIR] [--json]`.

use super::{dir_or_cwd, Global};
use crate::config;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Configuration directory (default: the current directory).
    pub dir: Option<PathBuf>,
    /// Print the result as JSON (diagnostics shaped like Terraform's).
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, a: ValidateArgs) -> ExitCode {
    let dir = dir_or_cwd(a.dir);
    if a.json {
        let (valid, diags, sources, count) = match config::load(&g.load_options(dir)) {
            Ok(c) => (true, c.warnings.0.clone(), c.sources.clone(), c.resources.len()),
            Err(e) => (false, e.diags.0.clone(), e.sources.clone(), 0),
        };
        let errors = diags.iter().filter(|d| d.severity == config::diag::Severity::Error).count();
        let out = serde_json::json!({
            "format_version": "1.0",
            "valid": valid,
            "error_count": errors,
            "warning_count": diags.len() - errors,
            "resource_count": count,
            "diagnostics": diags.iter().map(|d| d.to_json(&sources)).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return if valid { ExitCode::SUCCESS } else { ExitCode::from(1) };
    }
    match g.load(dir) {
        Ok(c) => {
            let blocks: std::collections::BTreeSet<String> = c.resources.iter().map(|r| r.address.block()).collect();
            println!(
                "Success! The configuration is valid: stack \"{}\", {} resource(s) from {} block(s), {} output(s).",
                c.stack,
                c.resources.len(),
                blocks.len(),
                c.outputs.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
