//! Parsing: HCL text → a raw tree of attributes and blocks with spans.
//!
//! Invariants: nothing is evaluated here; every raw item keeps the span of its
//! name and of its whole text; duplicate attributes in one body are errors.

use super::diag::{Diagnostic, Diagnostics};
use super::source::{FileId, Sources, Span};
use hcl_edit::expr::Expression;
use hcl_edit::structure::{BlockLabel, Body, Structure};
use hcl_edit::Span as _;

/// `name = expr`.
#[derive(Debug, Clone)]
pub struct RawAttr {
    pub name: String,
    pub name_span: Span,
    pub expr: Expression,
    pub expr_span: Span,
    pub file: FileId,
}

/// `kind "label" { body }`.
#[derive(Debug, Clone)]
pub struct RawBlock {
    pub kind: String,
    pub kind_span: Span,
    pub labels: Vec<(String, Span)>,
    pub body: RawBody,
    pub span: Span,
}

impl RawBlock {
    /// The span of the block's header (`kind "label"`), for messages about the block itself.
    pub fn header_span(&self) -> Span {
        let end = self.labels.last().map(|l| l.1.end).unwrap_or(self.kind_span.end);
        Span { end, ..self.kind_span }
    }
}

#[derive(Debug, Clone)]
pub struct RawBody {
    pub attrs: Vec<RawAttr>,
    pub blocks: Vec<RawBlock>,
    pub file: FileId,
    pub span: Span,
}

impl RawBody {
    pub fn attr(&self, name: &str) -> Option<&RawAttr> {
        self.attrs.iter().find(|a| a.name == name)
    }

    pub fn blocks_named<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a RawBlock> + 'a {
        self.blocks.iter().filter(move |b| b.kind == kind)
    }
}

/// Parses one file of the configuration.
pub fn parse_file(sources: &Sources, file: FileId) -> Result<RawBody, Diagnostics> {
    let src = &sources.get(file).text;
    let body = hcl_edit::parser::parse_body(src).map_err(|e| parse_error(sources, file, &e))?;
    let whole = Span { file, start: 0, end: src.len() };
    let mut diags = Diagnostics::default();
    let raw = convert_body(&body, file, whole, &mut diags);
    if diags.is_empty() { Ok(raw) } else { Err(diags) }
}

/// Parses a standalone expression (a `--var` value typed on the command line).
pub fn parse_expr(src: &str) -> Result<Expression, String> {
    hcl_edit::parser::parse_expr(src).map_err(|e| e.message().to_string())
}

fn parse_error(sources: &Sources, file: FileId, e: &hcl_edit::parser::Error) -> Diagnostics {
    let f = sources.get(file);
    let loc = e.location();
    let start = f.offset_of(loc.line(), loc.column());
    let end = f.text[start..].chars().next().map(|c| start + c.len_utf8()).unwrap_or(start);
    let message = e.message().trim();
    let expected = if message.is_empty() { "invalid HCL syntax".to_string() } else { message.to_string() };
    if message.contains("redefined attribute") {
        let name: String = f.text[start..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-').collect();
        let end = start + name.len().max(1);
        return Diagnostic::error(format!("duplicate attribute `{name}`"))
            .at(Span { file, start, end })
            .label("each attribute may appear only once in a block")
            .into();
    }
    Diagnostic::error("syntax error")
        .at(Span { file, start, end })
        .label(expected)
        .into()
}

fn convert_body(body: &Body, file: FileId, span: Span, diags: &mut Diagnostics) -> RawBody {
    let mut raw = RawBody { attrs: Vec::new(), blocks: Vec::new(), file, span };
    // Position of each attribute by name: a linear search per attribute made
    // a `locals` block of n entries cost n² (200,000 locals took minutes).
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for s in body.iter() {
        match s {
            Structure::Attribute(a) => {
                let whole = Span::from_opt(file, a.span(), span);
                let name_span = Span::from_opt(file, a.key.span(), whole);
                let name = a.key.as_str().to_string();
                if let Some(prev) = seen.get(&name).map(|&i| &raw.attrs[i]) {
                    diags.push(
                        Diagnostic::error(format!("attribute `{name}` is set twice"))
                            .at(name_span)
                            .label("each attribute may appear only once in a block")
                            .note(Some(prev.name_span), "first set here"),
                    );
                    continue;
                }
                seen.insert(name.clone(), raw.attrs.len());
                raw.attrs.push(RawAttr {
                    name,
                    name_span,
                    expr_span: Span::from_opt(file, a.value.span(), whole),
                    expr: a.value.clone(),
                    file,
                });
            }
            Structure::Block(b) => {
                let whole = Span::from_opt(file, b.span(), span);
                let kind_span = Span::from_opt(file, b.ident.span(), whole);
                let labels = b
                    .labels
                    .iter()
                    .map(|l| {
                        let s = Span::from_opt(file, l.span(), kind_span);
                        let text = match l {
                            BlockLabel::Ident(i) => i.as_str().to_string(),
                            BlockLabel::String(st) => st.as_str().to_string(),
                        };
                        (text, s)
                    })
                    .collect();
                let body_span = Span::from_opt(file, b.body.span(), whole);
                raw.blocks.push(RawBlock {
                    kind: b.ident.as_str().to_string(),
                    kind_span,
                    labels,
                    body: convert_body(&b.body, file, body_span, diags),
                    span: whole,
                });
            }
        }
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn keeps_spans_of_names_and_labels() {
        let mut s = Sources::default();
        let f = s.add(Path::new("t.vf.hcl"), "network \"lan\" {\n  mtu = 1500\n}\n".into());
        let body = parse_file(&s, f).unwrap();
        let b = &body.blocks[0];
        assert_eq!(b.kind, "network");
        assert_eq!(s.snippet(b.labels[0].1), "\"lan\"");
        assert_eq!(s.snippet(b.body.attrs[0].name_span), "mtu");
        assert_eq!(s.snippet(b.body.attrs[0].expr_span), "1500");
    }

    #[test]
    fn syntax_error_has_location() {
        let mut s = Sources::default();
        let f = s.add(Path::new("t.vf.hcl"), "network \"lan\" {\n  mtu = = 1\n}\n".into());
        let e = parse_file(&s, f).unwrap_err();
        let loc = e.0[0].location(&s).unwrap();
        assert!(loc.ends_with("t.vf.hcl:2:9"), "{loc}");
    }

    #[test]
    fn duplicate_attribute_is_an_error() {
        let mut s = Sources::default();
        let f = s.add(Path::new("t.vf.hcl"), "a {\n  x = 1\n  x = 2\n}\n".into());
        let e = parse_file(&s, f).unwrap_err();
        assert!(e.0[0].message.contains("duplicate attribute `x`"), "{}", e.0[0].message);
    }
}
