//! `virtform graph [DIR]`: the dependency graph as DOT.

use super::{dir_or_cwd, Global};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Configuration directory (default: the current directory).
    pub dir: Option<PathBuf>,
}

pub fn run(g: &Global, a: GraphArgs) -> ExitCode {
    match g.load(dir_or_cwd(a.dir)) {
        Ok(c) => {
            print!("{}", c.graph.to_dot());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
