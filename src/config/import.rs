//! `import { to = ADDRESS, id = "..." }` blocks: taking over objects made
//! outside virtform, the Terraform way.
//!
//! The loader only checks the blocks against the configuration (the `to`
//! address names a declared resource instance, one import per address, a
//! non-empty `id` known at plan time); whether the id names an object on the
//! host, and of the right kind, is the planner's question (`plan/import.rs`).
//! Every error is located like the rest of the language's.

use super::diag::{Diagnostic, Diagnostics};
use super::eval::Evaluator;
use super::functions::FnCtx;
use super::parse::RawBlock;
use super::source::{Sources, Span};
use super::value::Value;
use crate::model::{Address, Resource};
use std::collections::BTreeMap;

/// One checked `import` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// The resource instance that takes the object over.
    pub to: Address,
    /// The host object: a domain name or UUID, a bridge name, a libvirt
    /// network name, a file path.
    pub id: String,
    /// The block's `import` keyword, its `to` and `id` expressions; `None`
    /// for the command line's `virtform import ADDRESS ID`.
    pub span: Option<Span>,
    pub to_span: Option<Span>,
    pub id_span: Option<Span>,
}

/// The attributes an `import` block takes.
pub const IMPORT_ATTRS: &[&str] = &["to", "id"];

/// Checks the `import` blocks against the built resources. `roots`: the
/// evaluated variables and locals (an `id` may use them).
pub(super) fn check(blocks: &[RawBlock], sources: &Sources, resources: &[Resource], fn_ctx: &FnCtx<'_>, roots: &BTreeMap<String, Value>) -> (Vec<Import>, Diagnostics) {
    let mut diags = Diagnostics::default();
    let mut out: Vec<Import> = Vec::new();
    let declared: BTreeMap<String, &Resource> = resources.iter().map(|r| (r.address.to_string(), r)).collect();
    for b in blocks {
        for nb in &b.body.blocks {
            diags.push(Diagnostic::error(format!("unexpected block `{}` in import", nb.kind)).at(nb.kind_span).label("an import block holds only `to` and `id`"));
        }
        let mut ok = true;
        for a in &b.body.attrs {
            if !IMPORT_ATTRS.contains(&a.name.as_str()) {
                let mut d = Diagnostic::error(format!("unknown attribute `{}` in import", a.name)).at(a.name_span);
                d = match super::functions::did_you_mean(&a.name, IMPORT_ATTRS.iter().copied()) {
                    Some(s) => d.label(format!("did you mean `{s}`?")),
                    None => d.label("expected `to` or `id`"),
                };
                diags.push(d);
                ok = false;
            }
        }
        let to = b.body.attr("to");
        let id = b.body.attr("id");
        if to.is_none() {
            diags.push(Diagnostic::error("an import block needs `to`, the address of the resource that takes the object over").at(b.kind_span).label("add `to = instance.NAME` (or network.NAME, disk.NAME, volume.NAME)"));
            ok = false;
        }
        if id.is_none() {
            diags.push(Diagnostic::error("an import block needs `id`, the host object to take over").at(b.kind_span).label("add `id = \"...\"`: a domain name or UUID, a bridge or libvirt network name, a file path"));
            ok = false;
        }
        let (Some(to), Some(id)) = (to, id) else { continue };
        // `to` is an address, written as one (not evaluated: it names a
        // resource, it does not read it).
        let text = sources.snippet(to.expr_span).trim();
        let address = match Address::parse(text) {
            Some(a) if a.is_data() => {
                diags.push(Diagnostic::error(format!("{text} is a data source: virtform never manages it, so it cannot be imported")).at(to.expr_span).label("import into a resource (network.NAME), or keep reading it as a data source"));
                ok = false;
                None
            }
            Some(a) if !declared.contains_key(&a.to_string()) => {
                let block = a.block();
                let instances: Vec<&str> = declared.keys().filter(|k| **k == block || k.starts_with(&format!("{block}["))).map(String::as_str).collect();
                let mut d = Diagnostic::error(format!("import to undeclared resource `{a}`")).at(to.expr_span);
                d = if instances.is_empty() {
                    let same_kind: Vec<&str> = declared.values().filter(|r| r.address.kind == a.kind).map(|r| r.address.name.as_str()).collect();
                    match super::functions::did_you_mean(&a.name, same_kind.iter().copied()) {
                        Some(s) => d.label(format!("did you mean `{}.{s}`?", a.kind)),
                        None => d.label(format!("no {} named \"{}\" is declared; declare the resource the object becomes, then import into it", a.kind, a.name)),
                    }
                } else {
                    d.label(format!("{block} has the instance(s) {}", instances.join(", ")))
                };
                diags.push(d);
                ok = false;
                None
            }
            Some(a) => Some(a),
            None => {
                diags.push(Diagnostic::error("`to` must be the address of a resource, like instance.legacy or disk.root[0]").at(to.expr_span).label("written without quotes"));
                ok = false;
                None
            }
        };
        if let Some(r) = super::refs::references(&id.expr, id.file, id.expr_span).into_iter().find(|r| r.root != "var" && r.root != "local") {
            diags.push(Diagnostic::error("the `id` of an import must be known before planning").at(r.span).label("use a string, a variable or a local"));
            continue;
        }
        let value = match Evaluator::new(id.file, id.expr_span, fn_ctx, roots).eval(&id.expr) {
            Ok(v) => v,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        let id_text = match &value {
            Value::String(s) if s.trim().is_empty() => {
                diags.push(Diagnostic::error("the `id` of an import is empty").at(id.expr_span).label("name the host object: a domain name or UUID, a bridge or libvirt network name, a file path"));
                continue;
            }
            Value::String(s) => s.clone(),
            other => {
                diags.push(Diagnostic::error(format!("the `id` of an import must be a string, not {}", other.type_name())).at(id.expr_span));
                continue;
            }
        };
        let (Some(address), true) = (address, ok) else { continue };
        if let Some(prev) = out.iter().find(|i| i.to == address) {
            diags.push(
                Diagnostic::error(format!("two imports to {address}"))
                    .at(to.expr_span)
                    .label("a resource takes over one object")
                    .note(prev.to_span, "first imported here"),
            );
            continue;
        }
        // Disks and volumes share one namespace: file paths.
        let files = |k: crate::model::Kind| matches!(k, crate::model::Kind::Disk | crate::model::Kind::Volume);
        if let Some(prev) = out.iter().find(|i| i.id == id_text && (i.to.kind == address.kind || (files(i.to.kind) && files(address.kind)))) {
            diags.push(
                Diagnostic::error(format!("{id_text:?} is imported twice, into {} and {address}", prev.to))
                    .at(id.expr_span)
                    .label("an object can belong to one resource only")
                    .note(prev.id_span, "first imported here"),
            );
            continue;
        }
        out.push(Import { to: address, id: id_text, span: Some(b.kind_span), to_span: Some(to.expr_span), id_span: Some(id.expr_span) });
    }
    (out, diags)
}
