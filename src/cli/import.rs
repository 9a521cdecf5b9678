//! `virtform import ADDRESS ID [DIR]`: takes over one object made outside
//! virtform, as an `import { to = ADDRESS, id = ID }` block would, but writes
//! only the ownership marker (for libvirt networks, disks and volumes: the
//! entry in the stack's import registry): whatever else the configuration asks of the
//! object is left to the next `plan`/`apply`, which shows it with its
//! update class.

use super::plan::{connect, execute, load_and_connect, lock_stack, ApplyArgs, Session};
use super::{dir_or_cwd, Global};
use crate::config::import::Import;
use crate::model::Address;
use crate::plan::{self, render, Action, PlanOptions};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The resource that takes the object over, e.g. instance.legacy or network.lan.
    pub address: String,
    /// The host object: a domain name or UUID, a Linux or Open vSwitch bridge
    /// name, a libvirt network name or UUID, a disk or volume file's absolute path.
    pub id: String,
    /// Configuration directory (default: the current directory).
    pub dir: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
}

pub fn run(g: &Global, a: ImportArgs) -> ExitCode {
    let Some(to) = Address::parse(&a.address).filter(|t| !t.is_data()) else {
        eprintln!("error: virtform import: {:?} is not the address of a resource (like instance.legacy, network.lan or disk.root[0])", a.address);
        return ExitCode::from(1);
    };
    if a.id.trim().is_empty() {
        eprintln!("error: virtform import {to}: the id is empty: name the host object (a domain name or UUID, a bridge or libvirt network name, a file's absolute path)");
        return ExitCode::from(1);
    }
    let dir = dir_or_cwd(a.dir.clone());
    let (mut cfg, conn) = match load_and_connect(g, dir, true) {
        Ok(x) => x,
        Err(c) => return c,
    };
    if cfg.resource(&to.to_string()).is_none() {
        eprintln!("error: virtform import {to}: no such resource in the configuration of {}; declare the resource the object becomes, then import into it", cfg.dir.display());
        return ExitCode::from(1);
    }
    if let Some(host) = cfg.placement.host_of(&to.to_string()) {
        eprintln!(
            "error: virtform import {to}: it is placed on {host}, and this command imports on this machine only; write the import in the configuration instead, and apply:\n  import {{\n    to = {to}\n    id = {:?}\n  }}",
            a.id
        );
        return ExitCode::from(1);
    }
    match cfg.imports.iter().find(|i| i.to == to) {
        Some(i) if i.id != a.id => {
            let at = i.to_span.and_then(|s| crate::config::diag::Diagnostic::error("").at(s).location(&cfg.sources)).unwrap_or_default();
            eprintln!("error: virtform import {to}: the configuration already imports {:?} into it ({at}); remove that block or use its id", i.id);
            return ExitCode::from(1);
        }
        Some(_) => {}
        None => cfg.imports.push(Import { to: to.clone(), id: a.id.clone(), span: None, to_span: None, id_span: None }),
    }
    let _lock = match lock_stack(g, &cfg.stack) {
        Ok(l) => l,
        Err(c) => return c,
    };
    let s: Session = match connect(g, cfg, conn) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let addr = to.to_string();
    // Only the marker is written now: a replace the import needs is the next
    // plan's (refused there without --replace), so its error is not this
    // command's. (Planning with `--replace ADDRESS` would make the change a
    // forced replace, which the engine would carry out.)
    let mut p = plan::plan(&s.cfg, &s.observed, &PlanOptions { state_dir: g.state_dir.clone(), kvm_usable: s.kvm, targets: vec![addr.clone()], ..Default::default() });
    p.changes.retain(|c| c.address == addr);
    let needs_replace = format!("{addr}: importing ");
    p.errors.retain(|e| !(e.starts_with(&needs_replace) && e.contains("needs it replaced")));
    let Some(rc) = p.changes.first_mut() else {
        print!("{}", render::text(&p, g.color_stdout()));
        return ExitCode::from(1);
    };
    if !p.errors.is_empty() || !p.conflicts.is_empty() {
        print!("{}", render::text(&p, g.color_stdout()));
        eprintln!("error: nothing was imported and nothing was changed.");
        return ExitCode::from(1);
    }
    if rc.importing.is_none() {
        println!("{addr} already manages {:?}: nothing to import.", a.id);
        return ExitCode::SUCCESS;
    }
    let later: Vec<String> = rc.changes.iter().filter(|c| c.attr != "marker").map(|c| c.attr.clone()).collect();
    let class = match rc.action {
        Action::Replace => "a replace (needs --replace)",
        _ => match rc.landing() {
            Some(crate::plan::Landing::Restart) => "a restart",
            _ => "live",
        },
    };
    print!("{}", render::text(&p, g.color_stdout()));
    let rc = &mut p.changes[0];
    if !later.is_empty() {
        println!("\nvirtform import writes only the marker now. The rest ({}) is {class}: `virtform plan` shows it, `virtform apply` does it.", later.join(", "));
        rc.reason = Some(crate::apply::engine::IMPORT_MARKER_ONLY.into());
    }
    // Whatever the plan said, the marker and nothing else.
    rc.changes.retain(|c| c.attr == "marker");
    rc.action = Action::Update;
    rc.because.clear();
    rc.xml_diff = None;
    let apply = ApplyArgs {
        dir: None,
        json: false,
        auto_approve: a.auto_approve,
        parallelism: 1,
        replace: Vec::new(),
        target: Vec::new(),
        shutdown_timeout: 60,
        detach_timeout: 60,
    };
    execute(g, &apply, s, p, false, false)
}
