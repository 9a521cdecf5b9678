//! `moved { from, to }` and `removed { from, lifecycle { destroy } }`
//! blocks: refactoring a configuration without touching the guests, the
//! Terraform way.
//!
//! The loader checks the blocks against the configuration alone: both ends
//! are addresses (written, not evaluated) of managed resources of one kind,
//! `from` is no longer declared, no two moves share a target, chains
//! (`a → b`, `b → c`) end at a declared resource, a `removed` names
//! something no longer declared. Whether an object is on the host under
//! `from`, and whether `to` has one already, is the planner's question
//! (`plan/moved.rs`). Every error is located like the rest of the
//! language's.
//!
//! Matching is by address *prefix* ([`Move::apply`]): `from = instance.a`
//! (no key) moves every instance of the block, `instance.a[1]` to
//! `instance.b[1]`; with a key on both ends it moves exactly one. Module
//! paths will be one more prefix level (`module.old` → `module.new`).

use super::diag::{Diagnostic, Diagnostics};
use super::parse::RawBlock;
use super::source::{Sources, Span};
use crate::model::{Address, Key, ModulePath, Resource};
use std::collections::BTreeMap;

/// One checked `moved` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub from: Address,
    pub to: Address,
    /// The `moved` keyword and the two expressions, for the planner's errors.
    pub span: Span,
    pub from_span: Span,
    pub to_span: Span,
}

impl Move {
    /// Where this move sends `a`, if it applies: the exact address, or an
    /// instance of a whole-block move (`instance.a` → `instance.b` takes
    /// `instance.a[1]` to `instance.b[1]`).
    pub fn apply(&self, a: &Address) -> Option<Address> {
        if *a == self.from {
            return Some(self.to.clone());
        }
        let whole = self.from.key == Key::None && self.to.key == Key::None;
        (whole && a.module == self.from.module && a.mode == self.from.mode && a.kind == self.from.kind && a.name == self.from.name).then(|| Address { module: self.to.module.clone(), name: self.to.name.clone(), ..a.clone() })
    }
}

/// One checked `removed` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Removed {
    pub from: Address,
    /// `lifecycle { destroy = false }`: forget the object (its marker goes,
    /// the object stays); true (the default): destroy it.
    pub destroy: bool,
    pub span: Span,
    pub from_span: Span,
}

impl Removed {
    /// Whether this block names `a` (exactly, or a whole block).
    pub fn covers(&self, a: &Address) -> bool {
        *a == self.from || (self.from.key == Key::None && a.module == self.from.module && a.mode == self.from.mode && a.kind == self.from.kind && a.name == self.from.name)
    }
}

/// The attributes a `moved` block takes.
pub const MOVED_ATTRS: &[&str] = &["from", "to"];

/// Longest chain of moves followed (a longer one is a cycle).
pub const MAX_CHAIN: usize = 64;

/// Follows the moves from `a` to the end of its chain; `None` when no move
/// applies. A cycle stops after [`MAX_CHAIN`] steps (the loader refuses
/// cycles, so that only guards hand-made values).
pub fn resolve(moves: &[Move], a: &Address) -> Option<Address> {
    chain(moves, a).ok().flatten()
}

/// A chain of moves that comes back to an address it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cycle;

/// The end of the chain of moves from `a` (`None`: no move applies), or
/// [`Cycle`] when the chain comes back to an address it passed.
pub fn chain(moves: &[Move], a: &Address) -> Result<Option<Address>, Cycle> {
    let mut seen = vec![a.clone()];
    let mut cur = a.clone();
    while let Some(next) = moves.iter().find_map(|m| m.apply(&cur)) {
        if seen.contains(&next) || seen.len() > MAX_CHAIN {
            return Err(Cycle);
        }
        seen.push(next.clone());
        cur = next;
    }
    Ok((seen.len() > 1).then_some(cur))
}

/// Parses an address written in a block (`from`/`to`): a managed resource
/// of a known kind, with an optional key. Errors say what was expected.
fn address(sources: &Sources, span: Span, what: &str, diags: &mut Diagnostics) -> Option<Address> {
    let text = sources.snippet(span).trim();
    match Address::parse(text) {
        Some(a) if a.is_data() => {
            diags.push(Diagnostic::error(format!("`{what}` names the data source {text}: virtform never manages data sources, so there is nothing to move or remove")).at(span).label("name a resource, like instance.vm"));
            None
        }
        Some(a) if crate::model::check_name(&a.name).is_err() || matches!(&a.key, Key::Name(k) if crate::model::check_key(k).is_err()) => {
            diags.push(Diagnostic::error(format!("`{what}` is not a valid resource address: {text}")).at(span).label("names are letters, digits, '_' or '-'; keys also '.'"));
            None
        }
        Some(a) => Some(a),
        None => {
            diags.push(
                Diagnostic::error(format!("`{what}` must be the address of a resource, like instance.vm, instance.runner[0] or instance.runner[\"alpha\"]"))
                    .at(span)
                    .label("written without quotes: KIND.NAME, optionally [INDEX] or [\"KEY\"]"),
            );
            None
        }
    }
}

/// Whether the configuration declares `a` (a whole-block address: any instance of the block).
fn declared(resources: &BTreeMap<String, &Resource>, blocks: &BTreeMap<String, Span>, a: &Address) -> Option<Option<Span>> {
    if let Some(r) = resources.get(&a.to_string()) {
        return Some(r.block_span);
    }
    if a.key == Key::None
        && let Some(s) = blocks.get(&a.block())
    {
        return Some(Some(*s));
    }
    None
}

/// `moved { from = module.old, to = module.new }` (or instances of them:
/// `module.app[0]` → `module.app["alpha"]`), expanded into one [`Move`] per
/// managed resource declared under `to`, from the same relative address
/// under `from`; the planner sees resource moves only. Resources the old call
/// had and the new one does not are orphans, as without the block.
fn module_moves(moves: &mut Vec<Move>, diags: &mut Diagnostics, resources: &[Resource], (fm, from_span): (&ModulePath, Span), (tm, to_span): (&ModulePath, Span), span: Span) {
    if fm == tm {
        diags.push(Diagnostic::error(format!("{fm} is moved to itself")).at(to_span).label("name the new module address, or remove the block"));
        return;
    }
    if let Some(r) = resources.iter().find(|r| r.address.module.within(fm)) {
        diags.push(
            Diagnostic::error(format!("{fm} is moved to {tm}, but the configuration still declares {fm} ({})", r.address))
                .at(from_span)
                .label("a module call cannot be at both addresses")
                .note(r.block_span, "still declared here")
                .help(format!("remove (or rename) the module block of {fm}, or remove this moved block")),
        );
        return;
    }
    let targets: Vec<&Resource> = resources.iter().filter(|r| !r.address.is_data() && r.address.module.within(tm)).collect();
    if targets.is_empty() {
        diags.push(Diagnostic::error(format!("{fm} is moved to {tm}, which declares no resources")).at(to_span).label("declare the module block (with its resources), or use removed blocks"));
        return;
    }
    let n = tm.steps().len();
    let (fl, tl) = (&fm.steps()[fm.steps().len() - 1], &tm.steps()[n - 1]);
    for r in targets {
        let steps = r.address.module.steps();
        let at = &steps[n - 1];
        let step = match (&fl.key, &tl.key) {
            // module.web → module.web2: every instance keeps its key.
            (Key::None, Key::None) => crate::model::ModuleStep { name: fl.name.clone(), key: at.key.clone() },
            (_, Key::None) if at.key != Key::None => {
                diags.push(
                    Diagnostic::error(format!("{fm} is one module instance, {tm} has several ({})", ModulePath::from_steps(steps[..n].to_vec())))
                        .at(to_span)
                        .label(format!("name the instance it becomes, like {tm}[0] or {tm}[\"a\"]")),
                );
                return;
            }
            _ => fl.clone(),
        };
        let mut from_steps = fm.steps()[..fm.steps().len() - 1].to_vec();
        from_steps.push(step);
        from_steps.extend_from_slice(&steps[n..]);
        let from = Address { module: ModulePath::from_steps(from_steps), ..r.address.clone() };
        if let Some(prev) = moves.iter().find(|m| m.to == r.address) {
            diags.push(
                Diagnostic::error(format!("two moves to {}: from {} and from {from}", r.address, prev.from))
                    .at(to_span)
                    .label("one address takes the object of one move only")
                    .note(Some(prev.to_span), "first moved here"),
            );
            return;
        }
        moves.push(Move { from, to: r.address.clone(), span, from_span, to_span });
    }
}

/// Checks the `moved` and `removed` blocks against the built resources.
pub(super) fn check(moved: &[RawBlock], removed: &[RawBlock], sources: &Sources, resources: &[Resource]) -> (Vec<Move>, Vec<Removed>, Diagnostics) {
    let mut diags = Diagnostics::default();
    let by_addr: BTreeMap<String, &Resource> = resources.iter().map(|r| (r.address.to_string(), r)).collect();
    let mut blocks: BTreeMap<String, Span> = BTreeMap::new();
    for r in resources {
        if let Some(s) = r.block_span {
            blocks.entry(r.address.block()).or_insert(s);
        }
    }
    let mut moves: Vec<Move> = Vec::new();
    for b in moved {
        for nb in &b.body.blocks {
            diags.push(Diagnostic::error(format!("unexpected block `{}` in moved", nb.kind)).at(nb.kind_span).label("a moved block holds only `from` and `to`"));
        }
        let mut ok = true;
        for a in &b.body.attrs {
            if !MOVED_ATTRS.contains(&a.name.as_str()) {
                let mut d = Diagnostic::error(format!("unknown attribute `{}` in moved", a.name)).at(a.name_span);
                d = match super::functions::did_you_mean(&a.name, MOVED_ATTRS.iter().copied()) {
                    Some(s) => d.label(format!("did you mean `{s}`?")),
                    None => d.label("expected `from` or `to`"),
                };
                diags.push(d);
                ok = false;
            }
        }
        let (from, to) = (b.body.attr("from"), b.body.attr("to"));
        if from.is_none() {
            diags.push(Diagnostic::error("a moved block needs `from`, the address the object had").at(b.kind_span).label("add `from = instance.OLD`"));
        }
        if to.is_none() {
            diags.push(Diagnostic::error("a moved block needs `to`, the address the object has now").at(b.kind_span).label("add `to = instance.NEW`"));
        }
        let (Some(from), Some(to)) = (from, to) else { continue };
        // A whole module call (or one instance of it): one move per resource
        // the new call declares, from the same place in the old one.
        let (fm, tm) = (ModulePath::parse(sources.snippet(from.expr_span).trim()), ModulePath::parse(sources.snippet(to.expr_span).trim()));
        match (fm, tm) {
            (Some(fm), Some(tm)) => {
                if ok {
                    module_moves(&mut moves, &mut diags, resources, (&fm, from.expr_span), (&tm, to.expr_span), b.kind_span);
                }
                continue;
            }
            (Some(fm), None) => {
                diags.push(Diagnostic::error(format!("{fm} is a module call: it moves to another module call")).at(to.expr_span).label("write a module address here, like module.new or module.new[\"a\"]"));
                continue;
            }
            (None, Some(tm)) => {
                diags.push(Diagnostic::error(format!("{tm} is a module call: only a module call moves to it")).at(from.expr_span).label("write a module address here, like module.old"));
                continue;
            }
            (None, None) => {}
        }
        let fa = address(sources, from.expr_span, "from", &mut diags);
        let ta = address(sources, to.expr_span, "to", &mut diags);
        let (Some(fa), Some(ta), true) = (fa, ta, ok) else { continue };
        if fa.kind != ta.kind {
            diags.push(
                Diagnostic::error(format!("cannot move {fa} to {ta}: a {} cannot become a {}", fa.kind, ta.kind).replace("a instance", "an instance").replace("a image", "an image"))
                    .at(to.expr_span)
                    .label(format!("expected a {} address here", fa.kind))
                    .note(Some(from.expr_span), "moved from here"),
            );
            continue;
        }
        if fa == ta {
            diags.push(Diagnostic::error(format!("{fa} is moved to itself")).at(to.expr_span).label("name the new address, or remove the block"));
            continue;
        }
        if let Some(at) = declared(&by_addr, &blocks, &fa) {
            diags.push(
                Diagnostic::error(format!("{fa} is moved to {ta}, but the configuration still declares {fa}"))
                    .at(from.expr_span)
                    .label("an object cannot be at both addresses")
                    .note(at, "still declared here")
                    .help(format!("remove (or rename) the block of {fa}, or remove this moved block")),
            );
            continue;
        }
        if let Some(prev) = moves.iter().find(|m| m.to == ta) {
            diags.push(
                Diagnostic::error(format!("two moves to {ta}: from {} and from {fa}", prev.from))
                    .at(to.expr_span)
                    .label("one address takes the object of one move only")
                    .note(Some(prev.to_span), "first moved here"),
            );
            continue;
        }
        if let Some(prev) = moves.iter().find(|m| m.from == fa) {
            diags.push(
                Diagnostic::error(format!("{fa} is moved twice, to {} and to {ta}", prev.to))
                    .at(from.expr_span)
                    .label("an object moves to one address")
                    .note(Some(prev.from_span), "first moved here"),
            );
            continue;
        }
        moves.push(Move { from: fa, to: ta, span: b.kind_span, from_span: from.expr_span, to_span: to.expr_span });
    }
    // Chains end at a declared resource, and never loop.
    for m in &moves {
        let Ok(cur) = chain(&moves, &m.from) else {
            diags.push(Diagnostic::error(format!("the moves from {} go round in a circle", m.from)).at(m.to_span).label("a chain of moves must end at a declared resource"));
            continue;
        };
        let cur = cur.unwrap_or_else(|| m.to.clone());
        if declared(&by_addr, &blocks, &cur).is_none() {
            let block = cur.block();
            let instances: Vec<&str> = by_addr.keys().filter(|k| **k == block || k.starts_with(&format!("{block}["))).map(String::as_str).collect();
            let d = Diagnostic::error(format!("{} is moved to {cur}, which is not declared", m.from)).at(m.to_span);
            let d = if instances.is_empty() {
                d.label(format!("declare {block}, or use a removed block to stop managing {}", m.from))
            } else {
                d.label(format!("{block} has the instance(s) {}", instances.join(", ")))
            };
            diags.push(d);
        }
    }
    let mut rm: Vec<Removed> = Vec::new();
    for b in removed {
        let mut destroy = true;
        let mut ok = true;
        for a in &b.body.attrs {
            if a.name != "from" {
                diags.push(Diagnostic::error(format!("unknown attribute `{}` in removed", a.name)).at(a.name_span).label("expected `from` and a `lifecycle { destroy = ... }` block"));
                ok = false;
            }
        }
        for nb in &b.body.blocks {
            if nb.kind != "lifecycle" {
                diags.push(Diagnostic::error(format!("unexpected block `{}` in removed", nb.kind)).at(nb.kind_span).label("a removed block holds `from` and `lifecycle { destroy = ... }`"));
                ok = false;
                continue;
            }
            for nb2 in &nb.body.blocks {
                diags.push(Diagnostic::error(format!("unexpected block `{}` in lifecycle", nb2.kind)).at(nb2.kind_span));
                ok = false;
            }
            for a in &nb.body.attrs {
                match (a.name.as_str(), &a.expr) {
                    ("destroy", hcl_edit::expr::Expression::Bool(v)) => destroy = *v.value(),
                    ("destroy", _) => {
                        diags.push(Diagnostic::error("`destroy` must be the literal true or false").at(a.expr_span));
                        ok = false;
                    }
                    (other, _) => {
                        diags.push(Diagnostic::error(format!("unknown attribute `{other}` in the lifecycle of a removed block")).at(a.name_span).label("expected `destroy`"));
                        ok = false;
                    }
                }
            }
        }
        let Some(from) = b.body.attr("from") else {
            diags.push(Diagnostic::error("a removed block needs `from`, the address virtform stops managing").at(b.kind_span).label("add `from = instance.NAME`"));
            continue;
        };
        let Some(fa) = address(sources, from.expr_span, "from", &mut diags) else { continue };
        if !ok {
            continue;
        }
        if let Some(at) = declared(&by_addr, &blocks, &fa) {
            diags.push(
                Diagnostic::error(format!("{fa} is removed, but the configuration still declares it"))
                    .at(from.expr_span)
                    .label("a removed block is for a resource whose block is gone")
                    .note(at, "still declared here")
                    .help(format!("delete the block of {fa} together with this removed block")),
            );
            continue;
        }
        if let Some(m) = moves.iter().find(|m| m.from == fa) {
            diags.push(Diagnostic::error(format!("{fa} is both moved and removed")).at(from.expr_span).label("keep one of the two").note(Some(m.from_span), "moved here"));
            continue;
        }
        if let Some(prev) = rm.iter().find(|r| r.from == fa) {
            diags.push(Diagnostic::error(format!("{fa} is removed twice")).at(from.expr_span).note(Some(prev.from_span), "first removed here"));
            continue;
        }
        rm.push(Removed { from: fa, destroy, span: b.kind_span, from_span: from.expr_span });
    }
    (moves, rm, diags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    fn mv(from: &str, to: &str) -> Move {
        let s = Span::new(0, 0..0);
        Move { from: Address::parse(from).unwrap(), to: Address::parse(to).unwrap(), span: s, from_span: s, to_span: s }
    }

    #[test]
    fn moves_match_exactly_or_by_block_prefix_and_chain() {
        let moves = [mv("instance.a", "instance.b"), mv("instance.b[1]", "instance.c[\"x\"]")];
        let r = |a: &str| resolve(&moves, &Address::parse(a).unwrap()).map(|a| a.to_string());
        assert_eq!(r("instance.a").as_deref(), Some("instance.b"));
        assert_eq!(r("instance.a[0]").as_deref(), Some("instance.b[0]"));
        assert_eq!(r("instance.a[1]").as_deref(), Some("instance.c[\"x\"]"));
        assert_eq!(r("instance.z"), None);
        assert_eq!(r("disk.a"), None);
        let one = mv("instance.r[0]", "instance.r[\"alpha\"]");
        assert_eq!(one.apply(&Address::managed(Kind::Instance, "r", Key::Index(1))), None);
    }

    #[test]
    fn moves_respect_module_paths() {
        let moves = [mv("instance.a", "instance.b"), mv("instance.vm", "module.web[\"a\"].instance.vm"), mv("module.old.disk.d", "module.new[0].disk.d")];
        let r = |a: &str| resolve(&moves, &Address::parse(a).unwrap()).map(|a| a.to_string());
        // A root block's move does not reach a block of the same name in a module.
        assert_eq!(r("module.x.instance.a[0]"), None);
        assert_eq!(r("instance.vm[2]").as_deref(), Some("module.web[\"a\"].instance.vm[2]"));
        assert_eq!(r("module.old.disk.d[\"k\"]").as_deref(), Some("module.new[0].disk.d[\"k\"]"));
        let rm = Removed { from: Address::parse("instance.a").unwrap(), destroy: false, span: Span::new(0, 0..0), from_span: Span::new(0, 0..0) };
        assert!(rm.covers(&Address::parse("instance.a[1]").unwrap()) && !rm.covers(&Address::parse("module.m.instance.a[1]").unwrap()));
    }

    #[test]
    fn fmt_formats_moved_and_removed_blocks() {
        let src = "moved {\nfrom=instance.a\n    to = instance.b[\"x\"]\n}\nremoved {\n  from = instance.x\n  lifecycle {\ndestroy=false\n}\n}\n";
        let want = "moved {\n  from = instance.a\n  to   = instance.b[\"x\"]\n}\nremoved {\n  from = instance.x\n  lifecycle {\n    destroy = false\n  }\n}\n";
        assert_eq!(crate::config::fmt::format_source(src).unwrap(), want);
        assert_eq!(crate::config::fmt::format_source(want).unwrap(), want);
    }
}
