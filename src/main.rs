//! The `virtform` binary: parse the command line and run the command.
//!
//! Exit codes: 0 success, 1 any error (including a bad command line: clap's
//! own code 2 is reserved for `plan --detailed-exitcode`'s "changes present").

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Like every Unix filter: `virtform plan | head` ends quietly instead of
    // panicking on a closed pipe.
    // SAFETY: restoring the default disposition of SIGPIPE at startup, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
