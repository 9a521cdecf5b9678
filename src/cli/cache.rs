//! `virtform cache list|prune`: the image cache under the state dir
//! (`<state_dir>/images`), which outlives `destroy` by design. `list` shows
//! each cached image with its size on disk and the stacks on this host
//! that use it; `prune` removes the unused ones (see
//! [`crate::host::cache`] for what "unused" means and how a concurrent
//! apply stays safe).

use super::Global;
use crate::host::cache::{self, CacheEntry, PruneReport, human_bytes};
use clap::{Args, Subcommand};
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the cached images: sha256, size on disk, the stacks on this host that use each.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the cached images no stack on this host uses (and dead fetches' partial files).
    Prune {
        /// Show what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(g: &Global, a: CacheArgs) -> ExitCode {
    match a.command {
        CacheCommand::List { json } => list(g, json),
        CacheCommand::Prune { dry_run, json } => prune(g, dry_run, json),
    }
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") }
}

fn stacks_text(used_by: &[String]) -> String {
    if used_by.is_empty() { "(unused)".to_string() } else { used_by.join(", ") }
}

fn list(g: &Global, json: bool) -> ExitCode {
    let dir = cache::cache_dir(&g.state_dir);
    let entries = match cache::list(&g.state_dir) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let total: u64 = entries.iter().map(|e| e.bytes_on_disk).sum();
    let unused: Vec<&CacheEntry> = entries.iter().filter(|e| e.used_by.is_empty()).collect();
    let unused_bytes: u64 = unused.iter().map(|e| e.bytes_on_disk).sum();
    if json {
        let v = serde_json::json!({
            "cache_dir": dir.to_string_lossy(),
            "images": entries,
            "bytes_on_disk": total,
            "unused_bytes_on_disk": unused_bytes,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    if entries.is_empty() {
        println!("The image cache ({}) is empty.", dir.display());
        return ExitCode::SUCCESS;
    }
    println!("Image cache {}:\n", dir.display());
    println!("  {:<64}  {:>9}  {:<6}  USED BY", "SHA256", "ON DISK", "FORMAT");
    for e in &entries {
        println!("  {:<64}  {:>9}  {:<6}  {}", e.sha256, human_bytes(e.bytes_on_disk), e.format, stacks_text(&e.used_by));
    }
    println!();
    let mut tail = format!("{}, {}", plural(entries.len(), "image"), human_bytes(total));
    if unused.is_empty() {
        tail.push_str("; every one is used by a stack on this host.");
    } else {
        tail.push_str(&format!("; {} unused, {} (`virtform cache prune` removes unused images).", unused.len(), human_bytes(unused_bytes)));
    }
    println!("{tail}");
    ExitCode::SUCCESS
}

fn prune(g: &Global, dry_run: bool, json: bool) -> ExitCode {
    let r = match cache::prune(&g.state_dir, dry_run) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}; the image cache is as listed by `virtform cache list`.");
            return ExitCode::from(1);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    print!("{}", prune_text(&cache::cache_dir(&g.state_dir), &r));
    ExitCode::SUCCESS
}

/// What `cache prune` prints.
fn prune_text(dir: &Path, r: &PruneReport) -> String {
    let mut out = String::new();
    let verb = if r.dry_run { "Would remove" } else { "Removed" };
    for p in &r.removed {
        let what = if p.what == "image" { String::new() } else { format!(" ({})", p.what) };
        out.push_str(&format!("{verb} {}{what}: {}\n", p.sha256, human_bytes(p.bytes_on_disk)));
    }
    for k in &r.kept {
        out.push_str(&format!("Kept {} ({}, unused): {}\n", k.sha256, human_bytes(k.bytes_on_disk), k.reason));
    }
    if r.removed.is_empty() {
        if r.kept.is_empty() && r.in_use.is_empty() {
            out.push_str(&format!("The image cache ({}) is empty; nothing to prune.\n", dir.display()));
            return out;
        }
        if r.kept.is_empty() {
            out.push_str("Nothing to prune: every cached image is used by a stack on this host.\n");
        }
    } else if r.dry_run {
        out.push_str(&format!("Would free {}; nothing was removed (--dry-run).\n", human_bytes(r.freed)));
    } else {
        out.push_str(&format!("Freed {}.\n", human_bytes(r.freed)));
    }
    if !r.in_use.is_empty() {
        let bytes: u64 = r.in_use.iter().map(|e| e.bytes_on_disk).sum();
        let mut stacks: Vec<&str> = r.in_use.iter().flat_map(|e| e.used_by.iter().map(String::as_str)).collect();
        stacks.sort();
        stacks.dedup();
        out.push_str(&format!("In use and kept: {}, {} (stacks {}).\n", plural(r.in_use.len(), "image"), human_bytes(bytes), stacks.join(", ")));
    }
    out
}

/// The line destroy prints about the images the stack used: they stay in
/// the cache. `None` when it used none (or they are gone).
pub fn destroy_summary(state_dir: &Path, used: &std::collections::BTreeSet<String>) -> Option<String> {
    if used.is_empty() {
        return None;
    }
    let entries = cache::list(state_dir).ok()?;
    let left: Vec<&CacheEntry> = entries.iter().filter(|e| used.contains(&e.sha256)).collect();
    if left.is_empty() {
        return None;
    }
    let bytes: u64 = left.iter().map(|e| e.bytes_on_disk).sum();
    let shared = left.iter().filter(|e| !e.used_by.is_empty()).count();
    let shared_text = match shared {
        0 => String::new(),
        n if n == left.len() && n == 1 => "; still used by another stack".to_string(),
        n if n == left.len() => "; all still used by other stacks".to_string(),
        n => format!("; {n} still used by other stacks"),
    };
    Some(format!("Left in the image cache: {}, {}{shared_text} (`virtform cache prune` removes unused images).", plural(left.len(), "image"), human_bytes(bytes)))
}
