//! The command line: one file per command; this module holds the shared flags.
//!
//! Invariant: commands return an exit code (0 success, 1 error, 2 "changes"
//! where `--detailed-exitcode` asks for it); they print errors themselves so
//! that diagnostics keep their source snippets.

pub mod cache;
pub mod console;
pub mod fleet;
pub mod fmt;
pub mod graph;
pub mod hosts_record;
pub mod import;
pub mod output;
pub mod plan;
pub mod ssh;
pub mod validate;

use crate::config::{self, LoadOptions};
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Declarative, Terraform-style applier for KVM/libvirt hosts.
#[derive(Debug, Parser)]
#[command(name = "virtform", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Set a variable: NAME=VALUE (repeatable; later wins).
    #[arg(long = "var", value_name = "NAME=VALUE", global = true)]
    pub vars: Vec<String>,
    /// Read variables from an HCL file of `name = value` lines (repeatable).
    #[arg(long = "var-file", value_name = "FILE", global = true)]
    pub var_files: Vec<PathBuf>,
    /// Ownership namespace of every object this configuration creates (default: the `virtform { stack }` setting, else the directory name).
    #[arg(long, env = "VIRTFORM_STACK", global = true)]
    pub stack: Option<String>,
    /// libvirt connection URI.
    #[arg(long, env = "VIRTFORM_CONNECT", default_value = "qemu:///system", global = true)]
    pub connect: String,
    /// Where virtform keeps disks, the image cache, consoles and locks.
    #[arg(long, env = "VIRTFORM_STATE_DIR", default_value = "/var/lib/virtform", global = true)]
    pub state_dir: PathBuf,
    /// More logging (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No colour in output (also when NO_COLOR is set).
    #[arg(long, global = true)]
    pub no_color: bool,
}

impl Global {
    /// Colour only on a terminal, and never with --no-color or NO_COLOR.
    pub fn color(&self, stream_is_tty: bool) -> bool {
        !self.no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && stream_is_tty
    }

    pub fn color_stderr(&self) -> bool {
        self.color(std::io::stderr().is_terminal())
    }

    pub fn color_stdout(&self) -> bool {
        self.color(std::io::stdout().is_terminal())
    }

    pub fn load_options(&self, dir: PathBuf) -> LoadOptions {
        LoadOptions {
            dir,
            vars: self.vars.clone(),
            var_files: self.var_files.clone(),
            env: std::env::vars().filter(|(k, _)| k.starts_with("VIRTFORM_VAR_")).collect(),
            stack: self.stack.clone(),
            state_dir: self.state_dir.clone(),
            facts: Default::default(),
            agent_addresses: Default::default(),
            data: None,
        }
    }

    /// Loads a configuration, printing diagnostics (and warnings) on stderr.
    /// Data sources are not read (their facts are unknown): for commands
    /// that do not look at the host (`validate`, `graph`).
    pub fn load(&self, dir: PathBuf) -> Result<config::Configuration, ExitCode> {
        self.load_opts(self.load_options(dir))
    }

    /// Loads a configuration whose data sources read the host (through
    /// `--connect` for libvirt networks), on the first one asked for.
    pub fn load_reading_host(&self, dir: PathBuf) -> Result<config::Configuration, ExitCode> {
        self.load_with_data(dir, config::DataHandle(std::sync::Arc::new(crate::observe::data::HostData::new(&self.connect))))
    }

    /// Loads a configuration whose data sources are answered by `data`.
    pub fn load_with_data(&self, dir: PathBuf, data: config::DataHandle) -> Result<config::Configuration, ExitCode> {
        let mut opts = self.load_options(dir);
        opts.data = Some(data);
        self.load_opts(opts)
    }

    pub fn load_opts(&self, opts: LoadOptions) -> Result<config::Configuration, ExitCode> {
        match config::load(&opts) {
            Ok(c) => {
                if !c.warnings.is_empty() {
                    eprint!("{}", c.warnings.render(&c.sources, self.color_stderr()));
                }
                Ok(c)
            }
            Err(e) => {
                eprint!("{}", e.render(self.color_stderr()));
                let n = e.diags.0.iter().filter(|d| d.severity == config::diag::Severity::Error).count();
                eprintln!("{n} error(s); nothing was changed.");
                Err(ExitCode::from(1))
            }
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a configuration: syntax, references, types, and every resource's rules.
    Validate(validate::ValidateArgs),
    /// Rewrite configuration files in the canonical layout (comments are kept).
    Fmt(fmt::FmtArgs),
    /// Print the dependency graph as Graphviz DOT.
    Graph(graph::GraphArgs),
    /// Show what apply would change on the host.
    Plan(plan::PlanArgs),
    /// Bring the host to the configuration.
    Apply(plan::ApplyArgs),
    /// Remove every object of the stack from the host.
    Destroy(plan::ApplyArgs),
    /// Take over an object made outside virtform (writes its ownership marker only).
    Import(import::ImportArgs),
    /// Print the configuration's outputs.
    Output(output::OutputArgs),
    /// The image cache (images outlive destroy): list cached images and the stacks using them, prune the unused.
    Cache(cache::CacheArgs),
    /// Show what the host holds for the stack (objects carrying its marker).
    Show {
        /// Configuration directory (default: the current directory); with --stack it may be absent.
        dir: Option<PathBuf>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Log in to an instance over SSH, or run one command there (after `--`).
    Ssh(ssh::SshArgs),
    /// Follow an instance's serial console (print its log when it is not running).
    Console(console::ConsoleArgs),
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    init_tracing(cli.global.verbose, cli.global.color_stderr());
    let g = &cli.global;
    match cli.command {
        Command::Validate(a) => validate::run(g, a),
        Command::Fmt(a) => fmt::run(g, a),
        Command::Graph(a) => graph::run(g, a),
        Command::Plan(a) => plan::run_plan(g, a),
        Command::Apply(a) => plan::run_apply(g, a, false),
        Command::Destroy(a) => plan::run_apply(g, a, true),
        Command::Import(a) => import::run(g, a),
        Command::Output(a) => output::run(g, a),
        Command::Show { dir, json } => plan::run_show(g, dir, json),
        Command::Ssh(a) => ssh::run(g, a),
        Command::Console(a) => console::run(g, a),
        Command::Cache(a) => cache::run(g, a),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "virtform", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                // `virtform man | head`: quiet, as a filter killed by SIGPIPE.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(141),
                Err(e) => {
                    eprintln!("error: cannot write the man page: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Logs go to stderr, coloured only where the rest of stderr is (a
/// terminal, no --no-color or NO_COLOR): escape codes in a CI log or a
/// redirected file are noise.
fn init_tracing(verbose: u8, color: bool) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    // With -v each line carries the time since start: where a run's time
    // goes (connect, observe, plan, each step) reads off the log.
    let b = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_ansi(color);
    let _ = if verbose == 0 { b.without_time().try_init() } else { b.with_timer(tracing_subscriber::fmt::time::Uptime::default()).try_init() };
}

/// The default configuration directory: the current one.
pub fn dir_or_cwd(d: Option<PathBuf>) -> PathBuf {
    d.unwrap_or_else(|| PathBuf::from("."))
}

/// The instance a command names: its address (canonical form) and spec, or
/// an error (printed) naming the instances there are.
pub fn instance_at<'c>(cfg: &'c config::Configuration, address: &str, cmd: &str) -> Result<(String, &'c crate::model::instance::Instance), ExitCode> {
    let Some(addr) = crate::model::Address::parse(address).filter(|a| !a.is_data() && a.kind == crate::model::Kind::Instance) else {
        eprintln!("error: virtform {cmd}: {address:?} is not the address of an instance (like instance.vm or instance.web[0])");
        return Err(ExitCode::from(1));
    };
    let key = addr.to_string();
    match cfg.resource(&key).map(|r| &r.spec) {
        Some(crate::model::Spec::Instance(i)) => Ok((key, i)),
        _ => {
            let all: Vec<String> = cfg.resources.iter().filter(|r| r.spec.kind() == crate::model::Kind::Instance).map(|r| r.address.to_string()).collect();
            eprintln!(
                "error: virtform {cmd}: there is no {key} in the configuration of {}; its instances: {}",
                cfg.dir.display(),
                if all.is_empty() { "none".to_string() } else { all.join(", ") }
            );
            Err(ExitCode::from(1))
        }
    }
}
