//! References: found by walking expressions before anything is evaluated.
//!
//! Invariant: variables bound by `for` expressions and template `for`
//! directives are never reported as references; every reference carries the
//! span of the text that names it.

use super::source::{FileId, Span};
use hcl_edit::expr::{Expression, ObjectKey, TraversalOperator};
use hcl_edit::template::{Directive, Element, Template};
use hcl_edit::Span as _;

/// One step after the root of a reference.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Attr(String),
    /// A literal index or key (`[0]`, `["a"]`).
    Index(String),
    /// A computed index (`[count.index]`), a splat, or anything not literal.
    Dynamic,
}

/// `root.a.b[0]` as written in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub root: String,
    pub steps: Vec<Step>,
    pub span: Span,
}

impl Reference {
    /// The first attribute name after the root (`var.x` → `x`, `disk.root[0]` → `root`).
    pub fn first_attr(&self) -> Option<&str> {
        match self.steps.first() {
            Some(Step::Attr(a)) => Some(a),
            _ => None,
        }
    }
}

/// Every reference in `expr`.
pub fn references(expr: &Expression, file: FileId, fallback: Span) -> Vec<Reference> {
    let mut w = Walker { file, fallback, bound: Vec::new(), out: Vec::new() };
    w.expr(expr);
    w.out
}

struct Walker {
    file: FileId,
    fallback: Span,
    bound: Vec<String>,
    out: Vec<Reference>,
}

impl Walker {
    fn span(&self, r: Option<std::ops::Range<usize>>) -> Span {
        Span::from_opt(self.file, r, self.fallback)
    }

    fn root(&mut self, name: &str, steps: Vec<Step>, span: Span) {
        if !self.bound.iter().any(|b| b == name) {
            self.out.push(Reference { root: name.to_string(), steps, span });
        }
    }

    fn expr(&mut self, e: &Expression) {
        match e {
            Expression::Null(_) | Expression::Bool(_) | Expression::Number(_) | Expression::String(_) => {}
            Expression::Array(a) => a.iter().for_each(|x| self.expr(x)),
            Expression::Object(o) => {
                for (k, v) in o.iter() {
                    if let ObjectKey::Expression(k) = k {
                        // A bare identifier key in parentheses is an expression; a plain
                        // word key like `a = 1` parses as Ident and is no reference.
                        self.expr(k);
                    }
                    self.expr(v.expr());
                }
            }
            Expression::StringTemplate(t) => self.template(t),
            Expression::HeredocTemplate(h) => self.template(&h.template),
            Expression::Parenthesis(p) => self.expr(p.inner()),
            Expression::Variable(v) => {
                let span = self.span(v.span());
                self.root(v.as_str(), Vec::new(), span);
            }
            Expression::Conditional(c) => {
                self.expr(&c.cond_expr);
                self.expr(&c.true_expr);
                self.expr(&c.false_expr);
            }
            Expression::FuncCall(f) => f.args.iter().for_each(|a| self.expr(a)),
            Expression::UnaryOp(u) => self.expr(&u.expr),
            Expression::BinaryOp(b) => {
                self.expr(&b.lhs_expr);
                self.expr(&b.rhs_expr);
            }
            Expression::ForExpr(f) => {
                self.expr(&f.intro.collection_expr);
                let n = self.bound.len();
                if let Some(k) = &f.intro.key_var {
                    self.bound.push(k.as_str().to_string());
                }
                self.bound.push(f.intro.value_var.as_str().to_string());
                if let Some(k) = &f.key_expr {
                    self.expr(k);
                }
                self.expr(&f.value_expr);
                if let Some(c) = &f.cond {
                    self.expr(&c.expr);
                }
                self.bound.truncate(n);
            }
            Expression::Traversal(t) => {
                // Walk computed indexes for their own references.
                for op in &t.operators {
                    if let TraversalOperator::Index(ix) = op.value() {
                        self.expr(ix);
                    }
                }
                let Expression::Variable(root) = &t.expr else {
                    self.expr(&t.expr);
                    return;
                };
                let mut steps = Vec::new();
                let mut end = root.span().map(|r| r.end);
                for op in &t.operators {
                    let step = match op.value() {
                        TraversalOperator::GetAttr(i) => Step::Attr(i.as_str().to_string()),
                        TraversalOperator::LegacyIndex(n) => Step::Index(n.to_string()),
                        TraversalOperator::Index(Expression::Number(n)) => Step::Index(n.to_string()),
                        TraversalOperator::Index(Expression::String(s)) => Step::Index(s.as_str().to_string()),
                        _ => Step::Dynamic,
                    };
                    let dynamic = step == Step::Dynamic;
                    steps.push(step);
                    if let Some(r) = op.span() {
                        end = Some(r.end);
                    }
                    if dynamic {
                        break;
                    }
                }
                let start = root.span().map(|r| r.start);
                let span = match (start, end) {
                    (Some(s), Some(e)) => Span { file: self.file, start: s, end: e },
                    _ => self.span(t.span()),
                };
                self.root(root.as_str(), steps, span);
            }
        }
    }

    fn template(&mut self, t: &Template) {
        for el in t.iter() {
            match el {
                Element::Literal(_) => {}
                Element::Interpolation(i) => self.expr(&i.expr),
                Element::Directive(d) => match d.as_ref() {
                    Directive::If(i) => {
                        self.expr(&i.if_expr.cond_expr);
                        self.template(&i.if_expr.template);
                        if let Some(e) = &i.else_expr {
                            self.template(&e.template);
                        }
                    }
                    Directive::For(f) => {
                        let fe = &f.for_expr;
                        self.expr(&fe.collection_expr);
                        let n = self.bound.len();
                        if let Some(k) = &fe.key_var {
                            self.bound.push(k.as_str().to_string());
                        }
                        self.bound.push(fe.value_var.as_str().to_string());
                        self.template(&fe.template);
                        self.bound.truncate(n);
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(src: &str) -> Vec<(String, Vec<Step>, String)> {
        let e = hcl_edit::parser::parse_expr(src).unwrap();
        let fb = Span { file: 0, start: 0, end: 0 };
        references(&e, 0, fb)
            .into_iter()
            .map(|r| (r.root, r.steps, src[r.span.start..r.span.end].to_string()))
            .collect()
    }

    #[test]
    fn finds_traversals_with_spans() {
        let r = refs("[disk.root[count.index], port.web.mac]");
        assert_eq!(r[0].0, "count");
        assert_eq!(r[1], ("disk".into(), vec![Step::Attr("root".into()), Step::Dynamic], "disk.root[count.index]".into()));
        assert_eq!(r[2], ("port".into(), vec![Step::Attr("web".into()), Step::Attr("mac".into())], "port.web.mac".into()));
    }

    #[test]
    fn for_variables_are_not_references() {
        let r = refs("[for k, v in var.m : \"${k}=${v}\" if v != local.skip]");
        let roots: Vec<_> = r.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(roots, vec!["var", "local"]);
    }

    #[test]
    fn template_and_function_arguments_are_walked() {
        let r = refs("format(\"%s-%d\", var.prefix, length(\"${local.a}%{ for x in var.l }${x}%{ endfor }\"))");
        let roots: Vec<_> = r.iter().map(|x| format!("{}.{:?}", x.0, x.1.first())).collect();
        assert_eq!(roots.len(), 3, "{roots:?}");
    }

    #[test]
    fn literal_indexes_are_kept() {
        let r = refs("disk.root[1].path");
        assert_eq!(r[0].1, vec![Step::Attr("root".into()), Step::Index("1".into()), Step::Attr("path".into())]);
    }
}
