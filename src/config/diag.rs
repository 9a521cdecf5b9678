//! Diagnostics: errors about the configuration, located in its source.
//!
//! Invariant: every diagnostic about something written in a file carries the
//! span of that thing; rendering shows `file:line:column`, the source line and
//! a caret marker under the span, then what was expected.

use super::source::{Sources, Span};
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// What is wrong, in one line.
    pub message: String,
    /// Where it is.
    pub span: Option<Span>,
    /// Text printed under the caret (what was expected, a suggestion).
    pub label: Option<String>,
    /// Secondary locations (the first declaration of a duplicate, the rest of a cycle).
    pub notes: Vec<(Option<Span>, String)>,
    /// A hint on how to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span: None,
            label: None,
            notes: Vec::new(),
            help: None,
        }
    }

    pub fn at(mut self, span: Span) -> Diagnostic {
        self.span = Some(span);
        self
    }

    pub fn at_opt(mut self, span: Option<Span>) -> Diagnostic {
        if self.span.is_none() {
            self.span = span;
        }
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    pub fn note(mut self, span: Option<Span>, note: impl Into<String>) -> Diagnostic {
        self.notes.push((span, note.into()));
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// `file:line:column` of the primary span.
    pub fn location(&self, sources: &Sources) -> Option<String> {
        self.span.map(|s| {
            let f = sources.get(s.file);
            let (l, c) = f.line_col(s.start);
            format!("{}:{}:{}", f.display, l, c)
        })
    }

    /// Human rendering with the source line and a caret marker.
    pub fn render(&self, sources: &Sources, color: bool) -> String {
        let (red, bold, blue, reset) = if color {
            ("\x1b[1;31m", "\x1b[1m", "\x1b[1;34m", "\x1b[0m")
        } else {
            ("", "", "", "")
        };
        let mut out = String::new();
        let sev = match self.severity {
            Severity::Error => format!("{red}error{reset}"),
            Severity::Warning => format!("{bold}warning{reset}"),
        };
        let _ = writeln!(out, "{sev}: {bold}{}{reset}", self.message);
        if let Some(span) = self.span {
            render_snippet(&mut out, sources, span, self.label.as_deref(), "^", (blue, reset));
        } else if let Some(label) = &self.label {
            let _ = writeln!(out, "  = {label}");
        }
        for (span, note) in &self.notes {
            match span {
                Some(span) => {
                    let _ = writeln!(out, "  {blue}note{reset}: {note}");
                    render_snippet(&mut out, sources, *span, None, "-", (blue, reset));
                }
                None => {
                    let _ = writeln!(out, "  {blue}={reset} note: {note}");
                }
            }
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "  {blue}={reset} help: {help}");
        }
        out
    }

    /// Machine-readable form, shaped like Terraform's `validate -json` diagnostics.
    pub fn to_json(&self, sources: &Sources) -> serde_json::Value {
        let range = |span: Span| {
            let f = sources.get(span.file);
            let (sl, sc) = f.line_col(span.start);
            let (el, ec) = f.line_col(span.end);
            serde_json::json!({
                "filename": f.display,
                "start": {"line": sl, "column": sc, "byte": span.start},
                "end": {"line": el, "column": ec, "byte": span.end},
            })
        };
        let mut detail = self.label.clone().unwrap_or_default();
        if let Some(help) = &self.help {
            if !detail.is_empty() {
                detail.push_str("; ");
            }
            detail.push_str(help);
        }
        serde_json::json!({
            "severity": self.severity,
            "summary": self.message,
            "detail": detail,
            "range": self.span.map(range),
            "snippet": self.span.map(|s| {
                let f = sources.get(s.file);
                let (l, _) = f.line_col(s.start);
                serde_json::json!({"line": l, "code": f.line_text(l)})
            }),
            "notes": self.notes.iter().map(|(s, n)| serde_json::json!({"message": n, "range": s.map(range)})).collect::<Vec<_>>(),
        })
    }
}

fn render_snippet(out: &mut String, sources: &Sources, span: Span, label: Option<&str>, mark: &str, (blue, reset): (&str, &str)) {
    let f = sources.get(span.file);
    let (line, col) = f.line_col(span.start);
    let (end_line, end_col) = f.line_col(span.end);
    let text = f.line_text(line);
    let gutter = line.to_string().len();
    let pad = " ".repeat(gutter);
    let _ = writeln!(out, "{pad}{blue}-->{reset} {}:{}:{}", f.display, line, col);
    let _ = writeln!(out, "{pad} {blue}|{reset}");
    let _ = writeln!(out, "{blue}{line}{reset} {blue}|{reset} {}", text.replace('\t', " "));
    let line_chars = text.chars().count();
    let width = if end_line == line { end_col.saturating_sub(col).max(1) } else { (line_chars + 1).saturating_sub(col).max(1) };
    let marker = format!("{}{}", " ".repeat(col - 1), mark.repeat(width));
    match label {
        Some(l) => {
            let _ = writeln!(out, "{pad} {blue}|{reset} {blue}{marker}{reset} {l}");
        }
        None => {
            let _ = writeln!(out, "{pad} {blue}|{reset} {blue}{marker}{reset}");
        }
    }
}

/// A non-empty list of diagnostics: the error type of loading a configuration.
#[derive(Debug, Clone, Default, thiserror::Error)]
#[error("{} error(s) in the configuration", .0.len())]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    /// Sorts by location so output is stable across runs.
    pub fn sort(&mut self) {
        self.0.sort_by_key(|d| d.span.map(|s| (s.file, s.start)).unwrap_or((usize::MAX, 0)));
    }

    pub fn render(&self, sources: &Sources, color: bool) -> String {
        let mut out = String::new();
        for d in &self.0 {
            out.push_str(&d.render(sources, color));
            out.push('\n');
        }
        out
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_line_and_caret() {
        let mut s = Sources::default();
        let id = s.add(std::path::Path::new("/nonexistent/main.vf.hcl"), "a {\n  memroy = 1\n}\n".into());
        let d = Diagnostic::error("unknown attribute `memroy`")
            .at(Span { file: id, start: 6, end: 12 })
            .label("did you mean `memory`?");
        let r = d.render(&s, false);
        assert!(r.contains("main.vf.hcl:2:3"), "{r}");
        assert!(r.contains("2 |   memroy = 1"), "{r}");
        assert!(r.contains("  |   ^^^^^^ did you mean `memory`?"), "{r}");
        let j = d.to_json(&s);
        assert_eq!(j["range"]["start"]["line"], 2);
        assert_eq!(j["range"]["start"]["column"], 3);
    }
}
