//! The `virtform` binary: parse the command line and run the command.
//!
//! Exit codes: 0 success, 1 any error (including a bad command line: clap's
//! own code 2 is reserved for `plan --detailed-exitcode`'s "changes present").

use clap::Parser;
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: reading 1,000 domains' XML and
/// planning them is allocation-bound (malloc and free were about 30 % of a
/// converged plan's instructions; see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // SIGPIPE stays ignored (Rust's default): libvirt writes to its sockets
    // with plain write(2), so a connection that libvirtd closed (a restart)
    // would otherwise kill the process with SIGPIPE in the middle of an
    // apply, instead of the reconnect the adapter does. Like every Unix
    // filter, `virtform plan | head` still ends quietly: a write to a closed
    // stdout or stderr exits with 141 (128 + SIGPIPE), as a killed filter would.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<String>().map(String::as_str).or_else(|| info.payload().downcast_ref::<&str>().copied()).unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info)
    }));
    let cli = match virtform::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    virtform::cli::run(cli)
}
