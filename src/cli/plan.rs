//! `virtform plan`, `apply` and `destroy`.

use super::{dir_or_cwd, Global};
use crate::apply::dag::Event;
use crate::apply::engine::{self, Env};
use crate::config::Configuration;
use crate::host::libvirt::{Libvirt, VirtLibvirt};
use crate::host::links::{IpLinks, LinkHost};
use crate::observe::{self, Observed};
use crate::plan::{self, render, Plan, PlanOptions};
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Configuration directory (default: the current directory).
    pub dir: Option<PathBuf>,
    /// Plan the destruction of every object of the stack.
    #[arg(long)]
    pub destroy: bool,
    /// Force the replacement of a resource (repeatable), e.g. --replace instance.web.
    #[arg(long, value_name = "ADDRESS")]
    pub replace: Vec<String>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 when there is nothing to do, 2 when there are changes, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Configuration directory (default: the current directory).
    pub dir: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// How many steps run at once (waits do not count).
    #[arg(long, default_value_t = 10)]
    pub parallelism: usize,
    /// Force the replacement of a resource (repeatable).
    #[arg(long, value_name = "ADDRESS")]
    pub replace: Vec<String>,
    /// Seconds a guest gets to shut down gracefully before it is stopped.
    #[arg(long, default_value_t = 60)]
    pub shutdown_timeout: u64,
}

struct Session {
    cfg: Configuration,
    libvirt: VirtLibvirt,
    observed: Observed,
    kvm: bool,
}

fn open(g: &Global, dir: Option<PathBuf>) -> Result<Session, ExitCode> {
    let cfg = g.load(dir_or_cwd(dir))?;
    let libvirt = VirtLibvirt::open(&g.connect).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })?;
    let kvm = libvirt.kvm_usable();
    let observed = observe::observe(&IpLinks, &libvirt, &cfg, &g.state_dir).map_err(|e| {
        eprintln!("error: cannot read the host: {e}");
        ExitCode::from(1)
    })?;
    Ok(Session { cfg, libvirt, observed, kvm })
}

fn make_plan(g: &Global, s: &Session, destroy: bool, replace: &[String]) -> Plan {
    plan::plan(&s.cfg, &s.observed, &PlanOptions { destroy, replace: replace.to_vec(), state_dir: g.state_dir.clone(), kvm_usable: s.kvm })
}

pub fn run_plan(g: &Global, a: PlanArgs) -> ExitCode {
    let s = match open(g, a.dir) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let p = make_plan(g, &s, a.destroy, &a.replace);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&render::to_json(&p)).unwrap_or_default());
    } else {
        print!("{}", render::text(&p, g.color_stdout()));
    }
    if !p.errors.is_empty() || !p.conflicts.is_empty() {
        return ExitCode::from(1);
    }
    if a.detailed_exitcode && p.has_changes() { ExitCode::from(2) } else { ExitCode::SUCCESS }
}

pub fn run_apply(g: &Global, a: ApplyArgs, destroy: bool) -> ExitCode {
    let dir = dir_or_cwd(a.dir.clone());
    // Load first (to know the stack), lock, then observe under the lock.
    let cfg = match g.load(dir.clone()) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let _lock = match lock_stack(g, &cfg.stack) {
        Ok(l) => l,
        Err(c) => return c,
    };
    let s = match open(g, Some(dir)) {
        // (the lock is held for the whole apply)
        Ok(s) => s,
        Err(c) => return c,
    };
    let p = make_plan(g, &s, destroy, &a.replace);
    print!("{}", render::text(&p, g.color_stdout()));
    if !p.conflicts.is_empty() || !p.errors.is_empty() {
        eprintln!("error: the plan has conflicts or errors; nothing was changed.");
        return ExitCode::from(1);
    }
    if !p.has_changes() {
        if destroy {
            engine::remove_stack_dir(&g.state_dir, &s.cfg.stack);
            println!("Destroy complete: nothing of stack \"{}\" is left on this host.", s.cfg.stack);
        } else {
            println!("Apply complete: nothing to do.");
            print_outputs(&s.cfg);
        }
        return ExitCode::SUCCESS;
    }
    if !a.auto_approve && !confirm() {
        return ExitCode::from(1);
    }
    let env = Arc::new(Env {
        links: Box::new(IpLinks),
        libvirt: Box::new(s.libvirt),
        state_dir: g.state_dir.clone(),
        shutdown_timeout: Duration::from_secs(a.shutdown_timeout),
    });
    let dag = engine::lower(&p, &s.cfg, env, s.kvm, &s.observed.source_hashes);
    if let Err(cycle) = dag.validate() {
        eprintln!("internal error: the apply steps form a cycle: {}", cycle.join(" -> "));
        return ExitCode::from(1);
    }
    let out = std::sync::Mutex::new(std::io::stdout());
    let report = dag.run(a.parallelism.max(1), &|e| {
        let line = match e {
            Event::Finished { description, address, outcome: Ok(o), elapsed, .. } => {
                let mark = if matches!(o, crate::apply::dag::StepOutcome::AlreadyDone) { "=" } else { "+" };
                format!("{mark} {address}: {description} ({:.1}s)", elapsed.as_secs_f64())
            }
            Event::Finished { description, address, outcome: Err(err), .. } => format!("x {address}: {description}: {}", err.message),
            Event::Skipped { description, address, because_description, .. } => format!("- {address}: {description} skipped (after {because_description} failed)"),
            _ => return,
        };
        if let Ok(mut o) = out.lock() {
            let _ = writeln!(o, "{line}");
        }
    });
    println!();
    if report.ok() {
        // Every step was already printed as it finished: only the headline.
        let rendered = report.render();
        let headline = rendered.lines().last().unwrap_or("").replace("Apply complete", if destroy { "Destroy complete" } else { "Apply complete" });
        println!("{headline}");
        if destroy {
            engine::remove_stack_dir(&g.state_dir, &s.cfg.stack);
        } else {
            print_outputs(&s.cfg);
        }
        ExitCode::SUCCESS
    } else {
        print!("{}", report.render());
        println!();
        eprintln!("The host is left as the report says; run `virtform plan` to see what remains, and `virtform apply` again to converge.");
        ExitCode::from(1)
    }
}

fn confirm() -> bool {
    if !std::io::stdin().is_terminal() {
        eprintln!("error: not asking for confirmation without a terminal; pass --auto-approve to apply");
        return false;
    }
    print!("\nDo you want to perform these actions? Only 'yes' is accepted: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if line.trim() == "yes" {
        true
    } else {
        eprintln!("Apply cancelled; nothing was changed.");
        false
    }
}

fn print_outputs(cfg: &Configuration) {
    if cfg.outputs.is_empty() {
        return;
    }
    println!("\nOutputs:\n");
    for o in &cfg.outputs {
        let v = if o.sensitive { "(sensitive value)".to_string() } else { o.value.to_string() };
        println!("{} = {v}", o.name);
    }
}

/// An exclusive lock per stack: `<state_dir>/<stack>/.lock`.
fn lock_stack(g: &Global, stack: &str) -> Result<std::fs::File, ExitCode> {
    let dir = g.state_dir.join(stack);
    if let Err(e) = crate::host::disks::ensure_dir(&dir) {
        eprintln!("error: {e}");
        return Err(ExitCode::from(1));
    }
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| {
        eprintln!("error: cannot open the stack lock {}: {e}", path.display());
        ExitCode::from(1)
    })?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!("Another virtform run holds the lock of stack \"{stack}\" ({}); waiting for it to finish…", path.display());
            f.lock().map_err(|e| {
                eprintln!("error: cannot lock {}: {e}", path.display());
                ExitCode::from(1)
            })?;
            Ok(f)
        }
        Err(std::fs::TryLockError::Error(e)) => {
            eprintln!("error: cannot lock {}: {e}", path.display());
            Err(ExitCode::from(1))
        }
    }
}

#[allow(dead_code)]
fn _uses(_: &dyn LinkHost, _: &dyn Libvirt) {}
