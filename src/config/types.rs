//! Type constraints (`string`, `list(number)`, `object({...})`, …) and the
//! conversions HCL performs when a value meets one.
//!
//! Invariant: `convert` never loses information silently: a value that does not
//! fit its type is an error naming the path inside the value (`[2].port`).

use super::value::{format_number, Value};
use hcl_edit::expr::{Expression, ObjectKey};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    Any,
    String,
    Number,
    Bool,
    List(Box<Type>),
    Set(Box<Type>),
    Map(Box<Type>),
    Tuple(Vec<Type>),
    /// Attribute types; `Some(default)` marks `optional(T, default)` (`Some(None)`: optional, no default).
    Object(BTreeMap<String, (Type, Option<Option<Value>>)>),
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Any => f.write_str("any"),
            Type::String => f.write_str("string"),
            Type::Number => f.write_str("number"),
            Type::Bool => f.write_str("bool"),
            Type::List(t) => write!(f, "list({t})"),
            Type::Set(t) => write!(f, "set({t})"),
            Type::Map(t) => write!(f, "map({t})"),
            Type::Tuple(ts) => {
                f.write_str("tuple([")?;
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{t}")?;
                }
                f.write_str("])")
            }
            Type::Object(m) => {
                f.write_str("object({")?;
                for (i, (k, (t, opt))) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    match opt {
                        Some(_) => write!(f, "{k} = optional({t})")?,
                        None => write!(f, "{k} = {t}")?,
                    }
                }
                f.write_str("})")
            }
        }
    }
}

const PRIMITIVES: &[&str] = &["any", "string", "number", "bool", "list", "set", "map", "tuple", "object"];

/// Parses a type expression. The error is (message, span of the offending sub-expression).
pub fn parse_type(e: &Expression) -> Result<Type, (String, Option<std::ops::Range<usize>>)> {
    use hcl_edit::Span as _;
    match e {
        Expression::Variable(v) => match v.as_str() {
            "any" => Ok(Type::Any),
            "string" => Ok(Type::String),
            "number" => Ok(Type::Number),
            "bool" => Ok(Type::Bool),
            "list" | "set" | "map" => Ok(match v.as_str() {
                "list" => Type::List(Box::new(Type::Any)),
                "set" => Type::Set(Box::new(Type::Any)),
                _ => Type::Map(Box::new(Type::Any)),
            }),
            other => Err((
                match super::functions::did_you_mean(other, PRIMITIVES.iter().copied()) {
                    Some(s) => format!("unknown type `{other}`; did you mean `{s}`?"),
                    None => format!("unknown type `{other}`; expected string, number, bool, list(T), set(T), map(T), object({{...}}), tuple([...]) or any"),
                },
                v.span(),
            )),
        },
        Expression::FuncCall(f) => {
            let name = f.name.name.as_str();
            let args: Vec<&Expression> = f.args.iter().collect();
            let one = |args: &[&Expression]| -> Result<Type, (String, Option<std::ops::Range<usize>>)> {
                if args.len() != 1 {
                    return Err((format!("{name}(...) takes one type argument"), e.span()));
                }
                parse_type(args[0])
            };
            match name {
                "list" => Ok(Type::List(Box::new(one(&args)?))),
                "set" => Ok(Type::Set(Box::new(one(&args)?))),
                "map" => Ok(Type::Map(Box::new(one(&args)?))),
                "tuple" => match args.as_slice() {
                    [Expression::Array(a)] => Ok(Type::Tuple(a.iter().map(parse_type).collect::<Result<_, _>>()?)),
                    _ => Err(("tuple(...) takes a list of types, like tuple([string, number])".into(), e.span())),
                },
                "object" => match args.as_slice() {
                    [Expression::Object(o)] => {
                        let mut m = BTreeMap::new();
                        for (k, v) in o.iter() {
                            let key = match k {
                                ObjectKey::Ident(i) => i.as_str().to_string(),
                                ObjectKey::Expression(Expression::Variable(i)) => i.as_str().to_string(),
                                ObjectKey::Expression(Expression::String(s)) => s.as_str().to_string(),
                                ObjectKey::Expression(other) => {
                                    return Err(("object attribute names must be plain names".into(), other.span()));
                                }
                            };
                            m.insert(key, parse_attr_type(v.expr())?);
                        }
                        Ok(Type::Object(m))
                    }
                    _ => Err(("object(...) takes attribute types, like object({ name = string })".into(), e.span())),
                },
                other => Err((format!("unknown type constructor `{other}`"), f.name.name.span())),
            }
        }
        other => Err(("a type must be written as a type name such as string or list(number), not as a value".into(), other.span())),
    }
}

/// A parse failure: the message and the span of the offending sub-expression.
type TypeParseError = (String, Option<std::ops::Range<usize>>);

fn parse_attr_type(e: &Expression) -> Result<(Type, Option<Option<Value>>), TypeParseError> {
    use hcl_edit::Span as _;
    if let Expression::FuncCall(f) = e
        && f.name.name.as_str() == "optional" {
            let args: Vec<&Expression> = f.args.iter().collect();
            return match args.as_slice() {
                [t] => Ok((parse_type(t)?, Some(None))),
                [t, d] => {
                    let dv = super::eval::eval_standalone(d, &BTreeMap::new(), std::path::Path::new("."))
                        .map_err(|x| (x.message, d.span()))?;
                    let ty = parse_type(t)?;
                    let dv = convert(&dv, &ty).map_err(|x| (x.to_string(), d.span()))?;
                    Ok((ty, Some(Some(dv))))
                }
                _ => Err(("optional(...) takes a type and an optional default".into(), e.span())),
            };
        }
    Ok((parse_type(e)?, None))
}

/// A value that does not fit a type.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeError {
    /// Where inside the value, like `[1].name` (empty for the value itself).
    pub path: String,
    pub message: String,
}

impl fmt::Display for TypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "at {}: {}", self.path, self.message)
        }
    }
}

/// Converts `v` to type `t` with HCL's conversions (number ↔ string, bool ↔ string,
/// tuple → list/set, object → map…).
pub fn convert(v: &Value, t: &Type) -> Result<Value, TypeError> {
    conv(v, t, String::new())
}

fn mismatch(path: &str, want: &Type, v: &Value) -> TypeError {
    TypeError { path: path.to_string(), message: format!("expected {want}, got {} {v}", v.type_name()) }
}

fn conv(v: &Value, t: &Type, path: String) -> Result<Value, TypeError> {
    if v.is_unknown() || *t == Type::Any {
        return Ok(v.clone());
    }
    if *v == Value::Null {
        return Ok(Value::Null);
    }
    match t {
        Type::Any => Ok(v.clone()),
        Type::String => match v {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                Ok(Value::String(v.to_string_lossless().unwrap_or_default()))
            }
            _ => Err(mismatch(&path, t, v)),
        },
        Type::Number => match v {
            Value::Number(_) => Ok(v.clone()),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .map(Value::Number)
                .ok_or_else(|| TypeError { path, message: format!("expected number, got string {v}") }),
            _ => Err(mismatch(&path, t, v)),
        },
        Type::Bool => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) if s == "true" => Ok(Value::Bool(true)),
            Value::String(s) if s == "false" => Ok(Value::Bool(false)),
            _ => Err(mismatch(&path, t, v)),
        },
        Type::List(et) | Type::Set(et) => {
            let items = v.as_seq().ok_or_else(|| mismatch(&path, t, v))?;
            let out = items
                .iter()
                .enumerate()
                .map(|(i, x)| conv(x, et, format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if matches!(t, Type::Set(_)) { Value::set(out) } else { Value::List(out) })
        }
        Type::Tuple(ts) => {
            let items = v.as_seq().ok_or_else(|| mismatch(&path, t, v))?;
            if items.len() != ts.len() {
                return Err(TypeError { path, message: format!("expected {t} with {} elements, got {}", ts.len(), items.len()) });
            }
            Ok(Value::List(
                items.iter().zip(ts).enumerate().map(|(i, (x, et))| conv(x, et, format!("{path}[{i}]"))).collect::<Result<_, _>>()?,
            ))
        }
        Type::Map(et) => {
            let m = v.as_map().ok_or_else(|| mismatch(&path, t, v))?;
            Ok(Value::Map(
                m.iter().map(|(k, x)| Ok((k.clone(), conv(x, et, format!("{path}[\"{k}\"]"))?))).collect::<Result<_, TypeError>>()?,
            ))
        }
        Type::Object(attrs) => {
            let m = v.as_map().ok_or_else(|| mismatch(&path, t, v))?;
            for k in m.keys() {
                if !attrs.contains_key(k) {
                    let mut message = format!("unexpected attribute `{k}`");
                    if let Some(s) = super::functions::did_you_mean(k, attrs.keys().map(String::as_str)) {
                        message.push_str(&format!("; did you mean `{s}`?"));
                    }
                    return Err(TypeError { path, message });
                }
            }
            let mut out = BTreeMap::new();
            for (k, (at, opt)) in attrs {
                let sub = format!("{path}.{k}");
                match (m.get(k), opt) {
                    (Some(x), _) if *x != Value::Null => {
                        out.insert(k.clone(), conv(x, at, sub)?);
                    }
                    (_, Some(default)) => {
                        out.insert(k.clone(), default.clone().unwrap_or(Value::Null));
                    }
                    (Some(_), None) => {
                        out.insert(k.clone(), Value::Null);
                    }
                    (None, None) => {
                        return Err(TypeError { path, message: format!("attribute `{k}` is required by {t}") });
                    }
                }
            }
            Ok(Value::Map(out))
        }
    }
}

/// Renders a number-ish value for messages.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Number(n) => format_number(*n),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(src: &str) -> Type {
        parse_type(&hcl_edit::parser::parse_expr(src).unwrap()).unwrap()
    }

    #[test]
    fn parses_types() {
        assert_eq!(ty("list(number)"), Type::List(Box::new(Type::Number)));
        assert_eq!(ty("map(object({ a = string, b = optional(number, 2) }))").to_string(), "map(object({a = string, b = optional(number)}))");
        let e = parse_type(&hcl_edit::parser::parse_expr("strng").unwrap()).unwrap_err();
        assert!(e.0.contains("did you mean `string`"), "{}", e.0);
    }

    #[test]
    fn converts_like_hcl() {
        assert_eq!(convert(&Value::string("2"), &Type::Number), Ok(Value::Number(2.0)));
        assert_eq!(convert(&Value::Number(2.0), &Type::String), Ok(Value::string("2")));
        let v = Value::List(vec![Value::string("b"), Value::string("a"), Value::string("b")]);
        assert_eq!(convert(&v, &ty("set(string)")), Ok(Value::set(vec![Value::string("a"), Value::string("b")])));
        let e = convert(&Value::List(vec![Value::Number(1.0), Value::map([("x", Value::Null)])]), &ty("list(number)")).unwrap_err();
        assert_eq!(e.path, "[1]");
        let o = convert(&Value::map([("a", Value::string("x"))]), &ty("object({ a = string, b = optional(number, 2) })")).unwrap();
        assert_eq!(o, Value::map([("a", Value::string("x")), ("b", Value::Number(2.0))]));
        let e = convert(&Value::map([("aa", Value::string("x"))]), &ty("object({ a = string })")).unwrap_err();
        assert!(e.message.contains("did you mean `a`"), "{}", e.message);
        assert!(convert(&Value::string("yes"), &Type::Bool).is_err());
    }
}
