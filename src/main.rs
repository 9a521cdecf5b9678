//! The `virtform` binary: parse the command line and run the command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = virtform::cli::Cli::parse();
    virtform::cli::run(cli)
}
