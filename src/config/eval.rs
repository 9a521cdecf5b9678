//! The expression evaluator.
//!
//! Invariants:
//! - Evaluation is pure: it reads only the scope it is given and, for `file`
//!   and `templatefile`, files below or beside the configuration.
//! - An `Unknown` operand makes the result `Unknown`; nothing is guessed.
//! - Every error carries the span of the sub-expression at fault.

use super::diag::Diagnostic;
use super::functions::{self, FnCtx};
use super::source::{FileId, Span};
use super::value::Value;
use hcl_edit::expr::{BinaryOperator, Expression, ObjectKey, TraversalOperator, UnaryOperator};
use hcl_edit::template::{Directive, Element, Strip, Template};
use hcl_edit::Span as _;
use std::collections::BTreeMap;

/// What names mean while evaluating: roots (`var`, `local`, `network`, …) and
/// variables bound by `for` expressions.
pub struct Evaluator<'a> {
    pub file: FileId,
    pub fallback: Span,
    pub fn_ctx: &'a FnCtx<'a>,
    pub roots: &'a BTreeMap<String, Value>,
    bound: Vec<(String, Value)>,
}

type R = Result<Value, Diagnostic>;

impl<'a> Evaluator<'a> {
    pub fn new(file: FileId, fallback: Span, fn_ctx: &'a FnCtx<'a>, roots: &'a BTreeMap<String, Value>) -> Self {
        Evaluator { file, fallback, fn_ctx, roots, bound: Vec::new() }
    }

    /// Binds a name (`count`, `each`) for this evaluation, shadowing roots.
    pub fn bind(mut self, name: &str, v: Value) -> Self {
        self.bound.push((name.to_string(), v));
        self
    }

    fn span_of(&self, r: Option<std::ops::Range<usize>>) -> Span {
        Span::from_opt(self.file, r, self.fallback)
    }

    fn err(&self, r: Option<std::ops::Range<usize>>, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::error(msg).at(self.span_of(r))
    }

    pub fn eval(&mut self, e: &Expression) -> R {
        match e {
            Expression::Null(_) => Ok(Value::Null),
            Expression::Bool(b) => Ok(Value::Bool(*b.value())),
            Expression::Number(n) => Ok(Value::Number(n.value().as_f64().unwrap_or(0.0))),
            Expression::String(s) => Ok(Value::String(s.value().clone())),
            Expression::Array(a) => a.iter().map(|x| self.eval(x)).collect::<Result<Vec<_>, _>>().map(Value::List),
            Expression::Object(o) => {
                let mut m = BTreeMap::new();
                for (k, v) in o.iter() {
                    let key = match k {
                        ObjectKey::Ident(i) => i.as_str().to_string(),
                        ObjectKey::Expression(Expression::Variable(v)) => v.as_str().to_string(),
                        ObjectKey::Expression(ke) => match self.eval(ke)? {
                            Value::Unknown => return Ok(Value::Unknown),
                            kv => kv.to_string_lossless().ok_or_else(|| {
                                self.err(ke.span(), format!("an object key must be a string, not a {}", kv.type_name()))
                            })?,
                        },
                    };
                    let val = self.eval(v.expr())?;
                    m.insert(key, val);
                }
                Ok(Value::Map(m))
            }
            Expression::StringTemplate(t) => self.template(t, e.span()),
            Expression::HeredocTemplate(h) => self.template(&h.template, e.span()),
            Expression::Parenthesis(p) => self.eval(p.inner()),
            Expression::Variable(v) => self.variable(v.as_str(), v.span()),
            Expression::Conditional(c) => match self.eval(&c.cond_expr)? {
                Value::Bool(true) => self.eval(&c.true_expr),
                Value::Bool(false) => self.eval(&c.false_expr),
                Value::Unknown => Ok(Value::Unknown),
                other => Err(self.err(
                    c.cond_expr.span(),
                    format!("the condition must be a bool, not a {}", other.type_name()),
                )),
            },
            Expression::FuncCall(f) => self.call(f, e.span()),
            Expression::UnaryOp(u) => {
                let v = self.eval(&u.expr)?;
                match (u.operator.value(), v) {
                    (_, Value::Unknown) => Ok(Value::Unknown),
                    (UnaryOperator::Neg, v) => match to_number(&v) {
                        Some(n) => Ok(Value::Number(-n)),
                        None => Err(self.err(u.expr.span(), format!("`-` needs a number, not a {}", v.type_name()))),
                    },
                    (UnaryOperator::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
                    (UnaryOperator::Not, v) => {
                        Err(self.err(u.expr.span(), format!("`!` needs a bool, not a {}", v.type_name())))
                    }
                }
            }
            Expression::BinaryOp(b) => self.binary(b),
            Expression::ForExpr(f) => self.for_expr(f),
            Expression::Traversal(t) => {
                if let Expression::Variable(v) = &t.expr {
                    return self.traverse_named(v.as_str(), v.span(), &t.operators);
                }
                let base = self.eval(&t.expr)?;
                self.traverse(base, &t.operators, String::from("value"))
            }
        }
    }

    fn variable(&self, name: &str, span: Option<std::ops::Range<usize>>) -> R {
        if let Some((_, v)) = self.bound.iter().rev().find(|(n, _)| n == name) {
            return Ok(v.clone());
        }
        if let Some(v) = self.roots.get(name) {
            return Ok(v.clone());
        }
        let mut names: Vec<&str> = self.roots.keys().map(String::as_str).collect();
        names.extend(self.bound.iter().map(|(n, _)| n.as_str()));
        let mut d = self.err(span, format!("unknown name `{name}`"));
        if let Some(s) = functions::did_you_mean(name, names) {
            d = d.label(format!("did you mean `{s}`?"));
        } else {
            d = d.label("expected var.NAME, local.NAME, a resource such as network.NAME, count.index or each.key");
        }
        Err(d)
    }

    /// Traverses from a named root by reference, cloning only the result: a
    /// reference like `disk.root[3].path` must not copy every disk.
    fn traverse_named(&mut self, name: &str, span: Option<std::ops::Range<usize>>, ops: &[hcl_edit::Decorated<TraversalOperator>]) -> R {
        // Evaluate the keys of the leading plain steps first (they need &mut self).
        let mut keys: Vec<Option<Value>> = Vec::new();
        for op in ops {
            match op.value() {
                TraversalOperator::GetAttr(_) | TraversalOperator::LegacyIndex(_) => keys.push(None),
                TraversalOperator::Index(ix) => keys.push(Some(self.eval(ix)?)),
                _ => break,
            }
        }
        let root: &Value = match self.bound.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => v,
            None => match self.roots.get(name) {
                Some(v) => v,
                None => return self.variable(name, span),
            },
        };
        let mut cur = root;
        let mut path = name.to_string();
        let mut done = 0;
        for (op, key) in ops.iter().zip(&keys) {
            let next = match (op.value(), key, cur) {
                (_, _, Value::Unknown) => return Ok(Value::Unknown),
                (_, Some(Value::Unknown), _) => return Ok(Value::Unknown),
                (TraversalOperator::GetAttr(a), _, Value::Map(m)) => m.get(a.as_str()),
                (TraversalOperator::Index(_), Some(k), Value::Map(m)) => k.to_string_lossless().and_then(|k| m.get(&k)),
                (TraversalOperator::Index(_), Some(Value::Number(n)), Value::List(l)) if n.fract() == 0.0 && *n >= 0.0 => l.get(*n as usize),
                (TraversalOperator::LegacyIndex(n), _, Value::List(l)) => l.get(*n.value() as usize),
                _ => None,
            };
            let Some(next) = next else { break };
            path = match op.value() {
                TraversalOperator::GetAttr(a) => format!("{path}.{}", a.as_str()),
                _ => format!("{path}[{}]", key.as_ref().map(|k| k.to_string()).unwrap_or_default()),
            };
            cur = next;
            done += 1;
        }
        let cur = cur.clone();
        if done < keys.len() {
            // The next plain step fails: let the owned path produce the message.
            let op = &ops[done];
            return match (op.value(), &keys[done]) {
                (TraversalOperator::GetAttr(a), _) => self.get_attr(cur, a.as_str(), &path, op.span()).and_then(|v| self.traverse(v, &ops[done + 1..], path.clone())),
                (TraversalOperator::Index(ix), Some(k)) => self.index(cur, k, &path, ix.span()).and_then(|v| self.traverse(v, &ops[done + 1..], path.clone())),
                _ => self.traverse(cur, &ops[done..], path),
            };
        }
        self.traverse(cur, &ops[done..], path)
    }

    fn traverse(&mut self, mut cur: Value, ops: &[hcl_edit::Decorated<TraversalOperator>], mut path: String) -> R {
        for (i, op) in ops.iter().enumerate() {
            if cur.is_unknown() {
                return Ok(Value::Unknown);
            }
            match op.value() {
                TraversalOperator::GetAttr(a) => {
                    let key = a.as_str();
                    cur = self.get_attr(cur, key, &path, op.span())?;
                    path = format!("{path}.{key}");
                }
                TraversalOperator::Index(ix) => {
                    let k = self.eval(ix)?;
                    cur = self.index(cur, &k, &path, ix.span())?;
                    path = format!("{path}[{k}]");
                }
                TraversalOperator::LegacyIndex(n) => {
                    let k = Value::Number(*n.value() as f64);
                    cur = self.index(cur, &k, &path, op.span())?;
                    path = format!("{path}.{}", n.value());
                }
                TraversalOperator::AttrSplat(_) | TraversalOperator::FullSplat(_) => {
                    let full = matches!(op.value(), TraversalOperator::FullSplat(_));
                    let rest = &ops[i + 1..];
                    let take = if full {
                        rest.len()
                    } else {
                        rest.iter().take_while(|o| matches!(o.value(), TraversalOperator::GetAttr(_))).count()
                    };
                    let items = match cur {
                        Value::Null => Vec::new(),
                        Value::List(v) | Value::Set(v) => v,
                        Value::Map(m) if !full => vec![Value::Map(m)],
                        Value::Map(m) => m.into_values().collect(),
                        other => vec![other],
                    };
                    let mut out = Vec::with_capacity(items.len());
                    for it in items {
                        out.push(self.traverse(it, &rest[..take], format!("{path}[*]"))?);
                    }
                    return self.traverse(Value::List(out), &rest[take..], format!("{path}[*]"));
                }
            }
        }
        Ok(cur)
    }

    fn get_attr(&self, cur: Value, key: &str, path: &str, span: Option<std::ops::Range<usize>>) -> R {
        match cur {
            Value::Map(mut m) => match m.remove(key) {
                Some(v) => Ok(v),
                None => {
                    let mut d = self.err(span, format!("`{path}` has no attribute `{key}`"));
                    if let Some(s) = functions::did_you_mean(key, m.keys().map(String::as_str)) {
                        d = d.label(format!("did you mean `{s}`?"));
                    } else if m.len() <= 12 && !m.is_empty() {
                        let known: Vec<_> = m.keys().map(|k| format!("`{k}`")).collect();
                        d = d.label(format!("expected one of {}", known.join(", ")));
                    }
                    Err(d)
                }
            },
            Value::List(_) | Value::Set(_) => Err(self
                .err(span, format!("`{path}` is a list; it has no attribute `{key}`"))
                .label(format!("use an index such as `{path}[0].{key}` or a splat `{path}[*].{key}`"))),
            Value::Null => Err(self.err(span, format!("`{path}` is null; it has no attribute `{key}`"))),
            other => Err(self.err(span, format!("`{path}` is a {}; it has no attribute `{key}`", other.type_name()))),
        }
    }

    fn index(&self, cur: Value, k: &Value, path: &str, span: Option<std::ops::Range<usize>>) -> R {
        if k.is_unknown() {
            return Ok(Value::Unknown);
        }
        match cur {
            Value::List(v) => {
                let Some(i) = to_number(k).filter(|n| n.fract() == 0.0) else {
                    return Err(self.err(span, format!("`{path}` is a list; its index must be a whole number, not {k}")));
                };
                if i < 0.0 || i as usize >= v.len() {
                    return Err(self
                        .err(span, format!("index {i} is out of range for `{path}`"))
                        .label(format!("`{path}` has {} element(s)", v.len())));
                }
                Ok(v.into_iter().nth(i as usize).unwrap_or(Value::Null))
            }
            Value::Map(mut m) => {
                let Some(key) = k.to_string_lossless() else {
                    return Err(self.err(span, format!("`{path}` is a map; its key must be a string, not a {}", k.type_name())));
                };
                match m.remove(&key) {
                    Some(v) => Ok(v),
                    None => {
                        let mut d = self.err(span, format!("`{path}` has no element with key \"{key}\""));
                        if let Some(s) = functions::did_you_mean(&key, m.keys().map(String::as_str)) {
                            d = d.label(format!("did you mean \"{s}\"?"));
                        }
                        Err(d)
                    }
                }
            }
            Value::Set(_) => Err(self
                .err(span, format!("`{path}` is a set; elements of a set cannot be indexed"))
                .label("convert it with tolist() first")),
            other => Err(self.err(span, format!("`{path}` is a {}; it cannot be indexed", other.type_name()))),
        }
    }

    fn binary(&mut self, b: &hcl_edit::expr::BinaryOp) -> R {
        use BinaryOperator::*;
        let op = *b.operator.value();
        let l = self.eval(&b.lhs_expr)?;
        // Short-circuit only on known bools, like HCL.
        if op == And && l == Value::Bool(false) {
            return Ok(Value::Bool(false));
        }
        if op == Or && l == Value::Bool(true) {
            return Ok(Value::Bool(true));
        }
        let r = self.eval(&b.rhs_expr)?;
        if l.contains_unknown() || r.contains_unknown() {
            return Ok(Value::Unknown);
        }
        match op {
            Eq => Ok(Value::Bool(values_equal(&l, &r))),
            NotEq => Ok(Value::Bool(!values_equal(&l, &r))),
            And | Or => {
                let lb = l.as_bool().ok_or_else(|| {
                    self.err(b.lhs_expr.span(), format!("`{}` needs bools, not a {}", op_text(op), l.type_name()))
                })?;
                let rb = r.as_bool().ok_or_else(|| {
                    self.err(b.rhs_expr.span(), format!("`{}` needs bools, not a {}", op_text(op), r.type_name()))
                })?;
                Ok(Value::Bool(if op == And { lb && rb } else { lb || rb }))
            }
            _ => {
                let ln = to_number(&l).ok_or_else(|| {
                    self.err(b.lhs_expr.span(), format!("`{}` needs numbers, not a {}", op_text(op), l.type_name()))
                })?;
                let rn = to_number(&r).ok_or_else(|| {
                    self.err(b.rhs_expr.span(), format!("`{}` needs numbers, not a {}", op_text(op), r.type_name()))
                })?;
                let v = match op {
                    Plus => Value::Number(ln + rn),
                    Minus => Value::Number(ln - rn),
                    Mul => Value::Number(ln * rn),
                    Div | Mod if rn == 0.0 => {
                        return Err(self.err(b.rhs_expr.span(), "division by zero"));
                    }
                    Div => Value::Number(ln / rn),
                    Mod => Value::Number(ln % rn),
                    Less => Value::Bool(ln < rn),
                    LessEq => Value::Bool(ln <= rn),
                    Greater => Value::Bool(ln > rn),
                    GreaterEq => Value::Bool(ln >= rn),
                    Eq | NotEq | And | Or => unreachable_bool(),
                };
                Ok(v)
            }
        }
    }

    fn for_expr(&mut self, f: &hcl_edit::expr::ForExpr) -> R {
        let coll = self.eval(&f.intro.collection_expr)?;
        let items: Vec<(Value, Value)> = match coll {
            Value::Unknown => return Ok(Value::Unknown),
            Value::List(v) | Value::Set(v) => v.into_iter().enumerate().map(|(i, x)| (Value::Number(i as f64), x)).collect(),
            Value::Map(m) => m.into_iter().map(|(k, v)| (Value::String(k), v)).collect(),
            Value::Null => Vec::new(),
            other => {
                return Err(self.err(
                    f.intro.collection_expr.span(),
                    format!("a `for` expression needs a list, set or map, not a {}", other.type_name()),
                ));
            }
        };
        let mut list = Vec::new();
        let mut map: BTreeMap<String, Value> = BTreeMap::new();
        let mut grouped: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (k, v) in items {
            let n = self.bound.len();
            if let Some(kv) = &f.intro.key_var {
                self.bound.push((kv.as_str().to_string(), k));
            }
            self.bound.push((f.intro.value_var.as_str().to_string(), v));
            let res = self.for_item(f);
            self.bound.truncate(n);
            match res? {
                None => {}
                Some((None, v)) => list.push(v),
                Some((Some(key), v)) => {
                    if key.is_unknown() {
                        return Ok(Value::Unknown);
                    }
                    let ks = key.to_string_lossless().ok_or_else(|| {
                        self.err(f.key_expr.as_ref().and_then(|k| k.span()), "a `for` key must be a string")
                    })?;
                    if f.grouping {
                        grouped.entry(ks).or_default().push(v);
                    } else if map.insert(ks.clone(), v).is_some() {
                        return Err(self
                            .err(f.key_expr.as_ref().and_then(|k| k.span()), format!("duplicate key \"{ks}\" in a `for` expression"))
                            .label("add `...` after the value to group values by key"));
                    }
                }
            }
        }
        if f.key_expr.is_some() {
            if f.grouping {
                return Ok(Value::Map(grouped.into_iter().map(|(k, v)| (k, Value::List(v))).collect()));
            }
            return Ok(Value::Map(map));
        }
        Ok(Value::List(list))
    }

    fn for_item(&mut self, f: &hcl_edit::expr::ForExpr) -> Result<Option<(Option<Value>, Value)>, Diagnostic> {
        if let Some(c) = &f.cond {
            match self.eval(&c.expr)? {
                Value::Bool(true) => {}
                Value::Bool(false) => return Ok(None),
                Value::Unknown => return Ok(Some((None, Value::Unknown))),
                other => {
                    return Err(self.err(c.expr.span(), format!("a `for` condition must be a bool, not a {}", other.type_name())));
                }
            }
        }
        let key = match &f.key_expr {
            Some(k) => Some(self.eval(k)?),
            None => None,
        };
        Ok(Some((key, self.eval(&f.value_expr)?)))
    }

    fn call(&mut self, f: &hcl_edit::expr::FuncCall, span: Option<std::ops::Range<usize>>) -> R {
        let name = f.name.name.as_str();
        if f.name.is_namespaced() {
            return Err(self.err(f.name.name.span(), format!("namespaced functions are not supported: `{name}`")));
        }
        match name {
            "try" => {
                let mut last = None;
                for a in f.args.iter() {
                    match self.eval(a) {
                        Ok(v) => return Ok(v),
                        Err(e) => last = Some(e),
                    }
                }
                return Err(match last {
                    Some(e) => e.note(None, "no argument of try() could be evaluated; this is the last error"),
                    None => self.err(span, "try() needs at least one argument"),
                });
            }
            "can" => {
                if f.args.len() != 1 {
                    return Err(self.err(span, format!("can expects 1 argument, got {}", f.args.len())));
                }
                let a = f.args.iter().next().expect("one argument");
                return Ok(Value::Bool(self.eval(a).is_ok()));
            }
            _ => {}
        }
        let arg_exprs: Vec<&Expression> = f.args.iter().collect();
        let mut args = Vec::with_capacity(arg_exprs.len());
        for a in &arg_exprs {
            args.push(self.eval(a)?);
        }
        if f.args.expand_final() {
            match args.pop() {
                Some(Value::List(v)) | Some(Value::Set(v)) => args.extend(v),
                Some(Value::Unknown) => return Ok(Value::Unknown),
                Some(other) => {
                    return Err(self.err(
                        arg_exprs.last().and_then(|a| a.span()),
                        format!("`...` expands a list, not a {}", other.type_name()),
                    ));
                }
                None => {}
            }
        }
        if name == "templatefile" {
            return self.templatefile(args, &arg_exprs, span);
        }
        functions::call(name, self.fn_ctx, args).map_err(|e| {
            let at = e.arg.and_then(|i| arg_exprs.get(i.min(arg_exprs.len().saturating_sub(1)))).and_then(|a| a.span());
            let at = if e.arg.is_some() && at.is_some() {
                at
            } else if e.message.contains("unknown function") || !functions::names().contains(&name) {
                f.name.name.span()
            } else {
                span
            };
            let mut d = self.err(at, e.message);
            if let Some(sig) = functions::signature(name) {
                d = d.label(format!("usage: {sig}"));
            }
            d
        })
    }

    fn templatefile(&mut self, args: Vec<Value>, exprs: &[&Expression], span: Option<std::ops::Range<usize>>) -> R {
        let span2 = span.clone();
        let span3 = span.clone();
        if args.len() != 2 {
            return Err(self.err(span, format!("templatefile expects 2 arguments, got {}", args.len())).label("usage: templatefile(path, vars)"));
        }
        let Some(path) = args[0].as_str() else {
            return Err(self.err(exprs[0].span(), "templatefile: the path must be a string"));
        };
        let vars = match &args[1] {
            Value::Map(m) => m.clone(),
            Value::Unknown => return Ok(Value::Unknown),
            other => return Err(self.err(exprs[1].span(), format!("templatefile: vars must be a map, not a {}", other.type_name()))),
        };
        let text = functions::read_file(self.fn_ctx, path).map_err(|e| self.err(exprs[0].span(), e.message))?;
        let tpl = hcl_edit::parser::parse_template(&text).map_err(|e| {
            self.err(span2.clone(), format!("templatefile: {path}:{}:{}: {}", e.location().line(), e.location().column(), e.message()))
        })?;
        let empty = BTreeMap::new();
        let mut inner = Evaluator::new(self.file, self.span_of(span3), self.fn_ctx, &empty);
        inner.bound = vars.into_iter().collect();
        inner.template(&tpl, None).map_err(|e| {
            let mut d = self.err(span, format!("templatefile: in {path}: {}", e.message));
            d.label = e.label;
            d
        })
    }

    fn template(&mut self, t: &Template, span: Option<std::ops::Range<usize>>) -> R {
        // A template that is exactly one interpolation yields its value unchanged.
        if let Some(Element::Interpolation(i)) = t.as_single_element() {
            return self.eval(&i.expr);
        }
        let _ = span;
        let els: Vec<&Element> = t.iter().collect();
        let mut out = String::new();
        let mut unknown = false;
        for (idx, el) in els.iter().enumerate() {
            match el {
                Element::Literal(s) => {
                    let mut text: &str = s.value();
                    if idx > 0 && strips_after(els[idx - 1]) {
                        text = text.trim_start();
                    }
                    if idx + 1 < els.len() && strips_before(els[idx + 1]) {
                        text = text.trim_end();
                    }
                    out.push_str(text);
                }
                Element::Interpolation(i) => match self.eval(&i.expr)? {
                    Value::Unknown => unknown = true,
                    v => match v.to_string_lossless() {
                        Some(s) => out.push_str(&s),
                        None if v == Value::Null => {
                            return Err(self.err(i.expr.span(), "cannot insert null into a string template"));
                        }
                        None => {
                            return Err(self
                                .err(i.expr.span(), format!("cannot insert a {} into a string template", v.type_name()))
                                .label("use jsonencode(), join() or a for directive"));
                        }
                    },
                },
                Element::Directive(d) => match d.as_ref() {
                    Directive::If(i) => match self.eval(&i.if_expr.cond_expr)? {
                        Value::Bool(true) => push_template(&mut out, &mut unknown, self.template(&i.if_expr.template, None)?),
                        Value::Bool(false) => {
                            if let Some(e) = &i.else_expr {
                                push_template(&mut out, &mut unknown, self.template(&e.template, None)?);
                            }
                        }
                        Value::Unknown => unknown = true,
                        other => {
                            return Err(self.err(
                                i.if_expr.cond_expr.span(),
                                format!("an %{{if}} condition must be a bool, not a {}", other.type_name()),
                            ));
                        }
                    },
                    Directive::For(fd) => {
                        let fe = &fd.for_expr;
                        let items: Vec<(Value, Value)> = match self.eval(&fe.collection_expr)? {
                            Value::Unknown => {
                                unknown = true;
                                Vec::new()
                            }
                            Value::List(v) | Value::Set(v) => v.into_iter().enumerate().map(|(i, x)| (Value::Number(i as f64), x)).collect(),
                            Value::Map(m) => m.into_iter().map(|(k, v)| (Value::String(k), v)).collect(),
                            other => {
                                return Err(self.err(
                                    fe.collection_expr.span(),
                                    format!("%{{for}} needs a list, set or map, not a {}", other.type_name()),
                                ));
                            }
                        };
                        for (k, v) in items {
                            let n = self.bound.len();
                            if let Some(kv) = &fe.key_var {
                                self.bound.push((kv.as_str().to_string(), k));
                            }
                            self.bound.push((fe.value_var.as_str().to_string(), v));
                            let r = self.template(&fe.template, None);
                            self.bound.truncate(n);
                            push_template(&mut out, &mut unknown, r?);
                        }
                    }
                },
            }
        }
        Ok(if unknown { Value::Unknown } else { Value::String(out) })
    }
}

fn push_template(out: &mut String, unknown: &mut bool, v: Value) {
    match v {
        Value::Unknown => *unknown = true,
        v => out.push_str(&v.to_string_lossless().unwrap_or_default()),
    }
}

fn strip_of(el: &Element) -> (bool, bool) {
    let s = match el {
        Element::Literal(_) => return (false, false),
        Element::Interpolation(i) => i.strip,
        Element::Directive(d) => match d.as_ref() {
            Directive::If(i) => i.if_expr.strip,
            Directive::For(f) => f.for_expr.strip,
        },
    };
    (matches!(s, Strip::Start | Strip::Both), matches!(s, Strip::End | Strip::Both))
}

/// The element strips whitespace from the literal before it (`~` after `${`).
fn strips_before(el: &Element) -> bool {
    strip_of(el).0
}

/// The element strips whitespace from the literal after it (`~` before `}`).
fn strips_after(el: &Element) -> bool {
    strip_of(el).1
}

fn unreachable_bool() -> Value {
    Value::Null
}

fn op_text(op: BinaryOperator) -> &'static str {
    use BinaryOperator::*;
    match op {
        Eq => "==",
        NotEq => "!=",
        LessEq => "<=",
        GreaterEq => ">=",
        Less => "<",
        Greater => ">",
        Plus => "+",
        Minus => "-",
        Mul => "*",
        Div => "/",
        Mod => "%",
        And => "&&",
        Or => "||",
    }
}

/// Numbers and numeric strings convert to numbers, as in HCL.
pub fn to_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => Some(*n),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

/// Equality across list/set and with numeric normalisation.
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y,
        (Value::List(x), Value::List(y)) | (Value::Set(x), Value::Set(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((k1, v1), (k2, v2))| k1 == k2 && values_equal(v1, v2))
        }
        _ => a == b,
    }
}

/// Evaluates an expression with the given roots (a convenience for tests and
/// for small standalone evaluations such as `--var` values).
pub fn eval_standalone(expr: &Expression, roots: &BTreeMap<String, Value>, base_dir: &std::path::Path) -> R {
    let ctx = FnCtx { base_dir };
    let fb = Span { file: 0, start: 0, end: 0 };
    Evaluator::new(0, fb, &ctx, roots).eval(expr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(src: &str) -> Value {
        try_ev(src).unwrap_or_else(|e| panic!("{src}: {}", e.message))
    }

    fn try_ev(src: &str) -> R {
        let e = hcl_edit::parser::parse_expr(src).unwrap();
        let mut roots = BTreeMap::new();
        roots.insert(
            "var".into(),
            Value::map([
                ("n", Value::Number(3.0)),
                ("m", Value::map([("a", Value::Number(1.0)), ("b", Value::Number(2.0))])),
                ("l", Value::List(vec![Value::string("x"), Value::string("y")])),
                ("u", Value::Unknown),
            ]),
        );
        roots.insert(
            "disk".into(),
            Value::map([(
                "root",
                Value::List(vec![
                    Value::map([("path", Value::string("/d/0"))]),
                    Value::map([("path", Value::string("/d/1"))]),
                ]),
            )]),
        );
        eval_standalone(&e, &roots, std::path::Path::new("."))
    }

    #[test]
    fn arithmetic_and_comparison() {
        assert_eq!(ev("1 + 2 * 3"), Value::Number(7.0));
        assert_eq!(ev("10 % 4 == 2 && !false"), Value::Bool(true));
        assert_eq!(ev("var.n > 2 ? \"big\" : \"small\""), Value::string("big"));
        assert!(try_ev("1 / 0").unwrap_err().message.contains("division by zero"));
    }

    #[test]
    fn templates_and_strip_markers() {
        assert_eq!(ev("\"n=${var.n}\""), Value::string("n=3"));
        assert_eq!(ev("\"${var.l}\""), Value::List(vec![Value::string("x"), Value::string("y")]));
        assert_eq!(ev("\"%{ for x in var.l }${x},%{ endfor }\""), Value::string("x,y,"));
        assert_eq!(ev("\"a  ${~ var.n ~}  b\""), Value::string("a3b"));
        assert_eq!(ev("\"%{ if var.n == 3 }yes%{ else }no%{ endif }\""), Value::string("yes"));
        assert!(try_ev("\"x${var.m}\"").unwrap_err().message.contains("cannot insert a map"));
        assert_eq!(try_ev("\"${var.m}\"").unwrap(), Value::map([("a", Value::Number(1.0)), ("b", Value::Number(2.0))]));
    }

    #[test]
    fn traversal_index_and_splat() {
        assert_eq!(ev("disk.root[1].path"), Value::string("/d/1"));
        assert_eq!(ev("disk.root[*].path"), Value::List(vec![Value::string("/d/0"), Value::string("/d/1")]));
        assert_eq!(ev("var.m[\"b\"]"), Value::Number(2.0));
        let e = try_ev("disk.root[5]").unwrap_err();
        assert!(e.message.contains("index 5 is out of range for `disk.root`"), "{}", e.message);
        let e = try_ev("disk.root.path").unwrap_err();
        assert!(e.message.contains("is a list"), "{}", e.message);
        let e = try_ev("var.m.c").unwrap_err();
        assert!(e.message.contains("has no attribute `c`"), "{}", e.message);
    }

    #[test]
    fn for_expressions() {
        assert_eq!(ev("[for x in var.l : upper(x)]").as_seq().map(|s| s.len()), Some(2));
        assert_eq!(ev("{for k, v in var.m : k => v * 10}"), Value::map([("a", Value::Number(10.0)), ("b", Value::Number(20.0))]));
        assert_eq!(ev("[for i, x in var.l : i if x != \"x\"]"), Value::List(vec![Value::Number(1.0)]));
        assert_eq!(ev("{for x in [\"a\", \"a\"] : x => x...}"), Value::map([("a", Value::List(vec![Value::string("a"), Value::string("a")]))]));
        assert!(try_ev("{for x in [\"a\", \"a\"] : x => x}").unwrap_err().message.contains("duplicate key"));
    }

    #[test]
    fn unknown_propagates() {
        assert_eq!(ev("var.u + 1"), Value::Unknown);
        assert_eq!(ev("\"ip=${var.u}\""), Value::Unknown);
        assert_eq!(ev("var.u.anything"), Value::Unknown);
        assert_eq!(ev("false && var.u"), Value::Bool(false));
    }

    #[test]
    fn try_and_can() {
        assert_eq!(ev("try(var.m.zzz, \"fallback\")"), Value::string("fallback"));
        assert_eq!(ev("can(var.m.zzz)"), Value::Bool(false));
        assert_eq!(ev("can(var.m.a)"), Value::Bool(true));
    }

    #[test]
    fn unknown_names_suggest() {
        let e = try_ev("vr.n").unwrap_err();
        assert_eq!(e.label.as_deref(), Some("did you mean `var`?"));
    }
}
