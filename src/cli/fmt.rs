//! `virtform fmt [DIR|FILE…] [--check] [--diff]`.

use super::Global;
use crate::config::{self, fmt::format_source};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct FmtArgs {
    /// Directories or files (default: the current directory). Directories are
    /// searched for *.vf.hcl and *.vfvars files.
    pub paths: Vec<PathBuf>,
    /// Change nothing; exit 1 when a file is not formatted.
    #[arg(long)]
    pub check: bool,
    /// Show a unified diff of the changes.
    #[arg(long)]
    pub diff: bool,
    /// Also search subdirectories.
    #[arg(long, short)]
    pub recursive: bool,
}

fn is_config(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(config::CONFIG_SUFFIX) || n.ends_with(".vfvars"))
}

fn collect(p: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if p.is_file() {
        out.push(p.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            if recursive && !e.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                collect(&e, recursive, out)?;
            }
        } else if is_config(&e) {
            out.push(e);
        }
    }
    Ok(())
}

pub fn run(g: &Global, a: FmtArgs) -> ExitCode {
    let paths = if a.paths.is_empty() { vec![PathBuf::from(".")] } else { a.paths.clone() };
    let mut files = Vec::new();
    for p in &paths {
        if let Err(e) = collect(p, a.recursive, &mut files) {
            eprintln!("error: cannot read {}: {e}", p.display());
            return ExitCode::from(1);
        }
    }
    let color = g.color_stdout();
    let mut failed = false;
    let mut unformatted = 0;
    for f in files {
        let shown = config::source::display_path(&f);
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read {shown}: {e}");
                failed = true;
                continue;
            }
        };
        let formatted = match format_source(&text) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {shown}:{}:{}: {}", e.line, e.column, e.message);
                failed = true;
                continue;
            }
        };
        if formatted == text {
            continue;
        }
        unformatted += 1;
        println!("{shown}");
        if a.diff {
            print!("{}", unified_diff(&text, &formatted, &shown, color));
        }
        if !a.check
            && let Err(e) = write_atomic(&f, &formatted) {
                eprintln!("error: cannot write {shown}: {e}");
                failed = true;
            }
    }
    if failed || (a.check && unformatted > 0) { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

/// A unified diff between two texts.
pub fn unified_diff(old: &str, new: &str, name: &str, color: bool) -> String {
    let diff = similar::TextDiff::from_lines(old, new);
    let text = diff.unified_diff().context_radius(3).header(&format!("a/{name}"), &format!("b/{name}")).to_string();
    if !color {
        return text;
    }
    text.lines()
        .map(|l| {
            if l.starts_with('+') && !l.starts_with("+++") {
                format!("\x1b[32m{l}\x1b[0m\n")
            } else if l.starts_with('-') && !l.starts_with("---") {
                format!("\x1b[31m{l}\x1b[0m\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// Writes via a temporary file in the same directory and a rename.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.vf-fmt.{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
