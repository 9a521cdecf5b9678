//! Input variables: declarations and where their values come from.
//!
//! Precedence, lowest first (Terraform's): `default`, `VIRTFORM_VAR_<name>`,
//! `*.auto.vfvars` files in lexical order, then `--var-file` files in the order
//! given, then `--var` flags in the order given.
//!
//! Invariant: values from the command line and the environment are strings;
//! they are parsed as HCL only when the variable's type is not `string`.

use super::diag::{Diagnostic, Diagnostics};
use super::source::Span;
use super::types::Type;
use super::value::Value;

/// A declared variable.
#[derive(Debug, Clone)]
pub struct VarDecl {
    pub name: String,
    pub ty: Type,
    pub default: Option<Value>,
    pub description: Option<String>,
    pub sensitive: bool,
    pub span: Span,
}

/// Where a value was set.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// The `default` attribute (its span).
    Default(Span),
    Env(String),
    File(Span),
    Flag(String),
    /// An input of a `module` block (its expression's span).
    Input(Span),
}

impl Origin {
    pub fn describe(&self) -> String {
        match self {
            Origin::Default(_) => "its default".into(),
            Origin::Env(n) => format!("the environment variable {n}"),
            Origin::File(_) => "a variables file".into(),
            Origin::Flag(name) => format!("--var {name}=..."),
            Origin::Input(_) => "the module block's input".into(),
        }
    }
}

/// A raw value before type conversion.
#[derive(Debug, Clone)]
pub enum Raw {
    /// Already a value (defaults, var files).
    Value(Value),
    /// A string from the command line or environment.
    Text(String),
}

/// Splits `--var k=v`.
pub fn split_flag(s: &str) -> Result<(String, String), Diagnostic> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(Diagnostic::error(format!("--var \"{s}\" is not of the form NAME=VALUE"))),
    }
}

/// Converts a text value for a declared type: strings stay as they are;
/// other types parse the text as an HCL expression.
pub fn text_to_value(text: &str, ty: &Type, base_dir: &std::path::Path) -> Result<Value, String> {
    match ty {
        Type::String | Type::Any => Ok(Value::String(text.to_string())),
        _ => {
            let e = super::parse::parse_expr(text).map_err(|m| format!("\"{text}\" is not a valid value: {m}"))?;
            super::eval::eval_standalone(&e, &Default::default(), base_dir).map_err(|d| d.message)
        }
    }
}

/// Unknown variable names named on the command line are errors; in files, warnings.
pub fn undeclared(name: &str, declared: &[VarDecl], origin: &Origin) -> Diagnostic {
    let names = declared.iter().map(|d| d.name.as_str());
    let mut d = Diagnostic::error(format!("a value is given for undeclared variable `{name}` by {}", origin.describe()));
    if let Some(s) = super::functions::did_you_mean(name, names) {
        d = d.label(format!("did you mean `{s}`?"));
    } else {
        d = d.label(format!("declare it with: variable \"{name}\" {{}}"));
    }
    if let Origin::File(span) = origin {
        d = d.at(*span);
        d.severity = super::diag::Severity::Warning;
    }
    d
}

pub fn missing(decl: &VarDecl) -> Diagnostic {
    Diagnostic::error(format!("variable `{}` has no value", decl.name))
        .at(decl.span)
        .label("it has no default")
        .help(format!(
            "set it with --var {n}=..., --var-file FILE, VIRTFORM_VAR_{n}=..., or a *.auto.vfvars file",
            n = decl.name
        ))
}

pub fn push_all(diags: &mut Diagnostics, v: Vec<Diagnostic>) {
    for d in v {
        diags.push(d);
    }
}
