//! Built-in functions of the configuration language, with Terraform's names and
//! semantics.
//!
//! # Entry points
//! - [`call`] runs a function on already-evaluated arguments.
//! - [`names`] lists every function name (sorted), [`signature`] gives a usage
//!   line for messages, [`read_file`] is shared with the caller's `templatefile`,
//!   and [`did_you_mean`] suggests the closest of a set of names.
//! - `templatefile`, `try` and `can` are in the table (for names, signatures and
//!   suggestions) but are evaluated by the caller: `call` returns an error for them.
//!
//! # Conventions
//! - **Table.** `FUNCTIONS` maps each name (sorted) to its signature, arity,
//!   unknown-value policy and implementation. `call` checks the arity before the
//!   function runs, so implementations may index their arguments freely
//!   (they still go through `Args`, which never panics).
//! - **Unknown values.** A result that depends on a [`Value::Unknown`] is
//!   `Unknown`; nothing is guessed. Most functions read their whole arguments
//!   (`Unk::Deep`: any unknown anywhere makes the result unknown). Functions that
//!   only move elements around (`Unk::Shallow`: `length`, `concat`, `keys`,
//!   `element`, `slice`, ...) are unknown only when a whole argument is unknown,
//!   and carry unknown elements through. A few (`Unk::Custom`: `contains`,
//!   `lookup`, `coalesce`, `alltrue`, ...) decide for themselves, e.g. `alltrue([false, x])`
//!   is `false` whatever `x` turns out to be.
//! - **Conversions**, as Terraform does them: where a string is expected numbers
//!   and bools are accepted (`to_string_lossless`); where a number is expected a
//!   string holding a decimal number is accepted; where a bool is expected the
//!   strings `"true"` and `"false"` are. Mixed primitive elements given to
//!   `tolist`/`toset`/`tomap`/set functions are unified to strings.
//! - **Errors.** Implementations return messages without the function name; `call`
//!   prefixes `"name: "`. `FnError::arg` is the 0-based index of the argument to
//!   blame when there is one.
//! - **Safety.** No panics on any input: no `unwrap` on user data, string slicing
//!   only on character boundaries, bounded output sizes (`range` at 1024 elements
//!   like Terraform, `format` widths and precisions at 10 000), finite numbers only.
//!
//! # Known differences from Terraform
//! - Strings are measured in Unicode scalar values (`length`, `substr`, `strrev`,
//!   `format` widths), not grapheme clusters.
//! - Numbers are `f64`, not arbitrary precision: integers beyond 2^53 are
//!   approximate.
//! - `format("%v", n)` prints numbers as string conversion does (`1234567`), not in
//!   Go's `%g` shortest form (`1.234567e+06`).
//! - `replace` does not support `/regex/` patterns (it reports an error).
//! - `join` takes one list, as Terraform documents it (cty also accepts several).
//! - `yamldecode` resolves scalars with YAML 1.2 rules (serde_yaml): `yes`, `no`,
//!   `on`, `off` stay strings and timestamps are not normalized, where Terraform's
//!   YAML 1.1 decoder reads the former as bools.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use crate::model::common::hex;
use sha2::{Digest, Sha256};

use super::value::{Value, format_number};

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// What functions may need from their surroundings.
pub struct FnCtx<'a> {
    /// Directory that relative paths (`file`, `fileexists`, ...) are resolved against.
    pub base_dir: &'a Path,
}

/// A function call failed.
#[derive(Debug, Clone, PartialEq)]
pub struct FnError {
    /// 0-based index of the offending argument, when one is to blame.
    pub arg: Option<usize>,
    pub message: String,
}

impl fmt::Display for FnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FnError {}

fn err(message: impl Into<String>) -> FnError {
    FnError { arg: None, message: message.into() }
}

fn err_at(arg: usize, message: impl Into<String>) -> FnError {
    FnError { arg: Some(arg), message: message.into() }
}

/// Calls the function `name` with evaluated arguments.
pub fn call(name: &str, ctx: &FnCtx<'_>, args: Vec<Value>) -> Result<Value, FnError> {
    let Some(spec) = find(name) else {
        let message = match did_you_mean(name, names().iter().copied()) {
            Some(s) => format!("there is no function named {}; did you mean `{s}`?", quote(name)),
            None => format!("there is no function named {}", quote(name)),
        };
        return Err(err(message));
    };
    let Some(imp) = spec.imp else {
        return Err(err(format!(
            "{} is evaluated by the expression evaluator (its arguments are expressions, not values) and cannot be called with evaluated arguments",
            spec.name
        )));
    };
    if args.len() < spec.min || args.len() > spec.max {
        return Err(arity_error(spec, args.len()));
    }
    match spec.unk {
        Unk::Deep if args.iter().any(Value::contains_unknown) => return Ok(Value::Unknown),
        Unk::Shallow if args.iter().any(Value::is_unknown) => return Ok(Value::Unknown),
        _ => {}
    }
    let a = Args { v: &args, sig: spec.sig };
    match imp(ctx, &a) {
        Ok(Value::Number(n)) if n.is_nan() => Err(err(format!("{}: the result is not a number", spec.name))),
        Ok(Value::Number(n)) if n.is_infinite() => {
            Err(err(format!("{}: the result is too large to represent", spec.name)))
        }
        Ok(v) => Ok(v),
        Err(e) => Err(FnError { arg: e.arg, message: format!("{}: {}", spec.name, e.message) }),
    }
}

/// Every function name, sorted (including the caller-evaluated `templatefile`,
/// `try` and `can`).
pub fn names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| FUNCTIONS.iter().map(|s| s.name).collect())
}

/// A usage line such as `cidrhost(prefix, hostnum)`, for error messages.
pub fn signature(name: &str) -> Option<&'static str> {
    find(name).map(|s| s.sig)
}

/// Reads a UTF-8 text file. `path` is relative to `ctx.base_dir` or absolute; a
/// leading `~/` means the user's home directory, as in Terraform. Error messages
/// are not prefixed with a function name (the caller adds its own).
pub fn read_file(ctx: &FnCtx<'_>, path: &str) -> Result<String, FnError> {
    let bytes = read_bytes(ctx, path)?;
    String::from_utf8(bytes).map_err(|_| {
        err_at(
            0,
            format!("contents of {} are not valid UTF-8; use filebase64 to read binary files", quote(path)),
        )
    })
}

/// The candidate closest to `name` by edit distance (case-insensitive), if it is
/// close enough to be a plausible typo.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let needle: Vec<char> = name.to_lowercase().chars().collect();
    if needle.is_empty() {
        return None;
    }
    let allowed = if needle.len() <= 3 { 1 } else { 2 };
    let mut best: Option<(usize, &'a str)> = None;
    for cand in candidates {
        let c: Vec<char> = cand.to_lowercase().chars().collect();
        if c.len().abs_diff(needle.len()) > allowed {
            continue;
        }
        let d = levenshtein(&needle, &c);
        if d <= allowed && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, cand));
        }
    }
    best.map(|(_, c)| c)
}

fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

/// How a function treats unknown arguments (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Unk {
    /// Any unknown anywhere in any argument: the result is unknown.
    Deep,
    /// A wholly unknown argument: the result is unknown; unknown elements pass through.
    Shallow,
    /// The function handles unknowns itself.
    Custom,
}

type Impl = fn(&FnCtx<'_>, &Args<'_>) -> Result<Value, FnError>;

struct Spec {
    name: &'static str,
    sig: &'static str,
    min: usize,
    /// `VAR` for variadic functions.
    max: usize,
    unk: Unk,
    /// `None` for the functions evaluated by the caller.
    imp: Option<Impl>,
}

const VAR: usize = usize::MAX;

const fn def(name: &'static str, sig: &'static str, min: usize, max: usize, unk: Unk, imp: Impl) -> Spec {
    Spec { name, sig, min, max, unk, imp: Some(imp) }
}

const fn by_caller(name: &'static str, sig: &'static str, min: usize, max: usize) -> Spec {
    Spec { name, sig, min, max, unk: Unk::Custom, imp: None }
}

use Unk::{Custom, Deep, Shallow};

/// Every function, sorted by name (a test checks the order).
static FUNCTIONS: &[Spec] = &[
    def("abs", "abs(number)", 1, 1, Deep, f_abs),
    def("alltrue", "alltrue(list)", 1, 1, Custom, f_alltrue),
    def("anytrue", "anytrue(list)", 1, 1, Custom, f_anytrue),
    def("base64decode", "base64decode(string)", 1, 1, Deep, f_base64decode),
    def("base64encode", "base64encode(string)", 1, 1, Deep, f_base64encode),
    def("base64sha256", "base64sha256(string)", 1, 1, Deep, f_base64sha256),
    def("basename", "basename(path)", 1, 1, Deep, f_basename),
    by_caller("can", "can(expression)", 1, 1),
    def("ceil", "ceil(number)", 1, 1, Deep, f_ceil),
    def("chunklist", "chunklist(list, size)", 2, 2, Shallow, f_chunklist),
    def("cidrhost", "cidrhost(prefix, hostnum)", 2, 2, Deep, f_cidrhost),
    def("cidrnetmask", "cidrnetmask(prefix)", 1, 1, Deep, f_cidrnetmask),
    def("cidrsubnet", "cidrsubnet(prefix, newbits, netnum)", 3, 3, Deep, f_cidrsubnet),
    def("cidrsubnets", "cidrsubnets(prefix, newbits...)", 1, VAR, Deep, f_cidrsubnets),
    def("coalesce", "coalesce(values...)", 1, VAR, Custom, f_coalesce),
    def("coalescelist", "coalescelist(lists...)", 1, VAR, Custom, f_coalescelist),
    def("compact", "compact(list)", 1, 1, Deep, f_compact),
    def("concat", "concat(lists...)", 1, VAR, Shallow, f_concat),
    def("contains", "contains(list, value)", 2, 2, Custom, f_contains),
    def("dirname", "dirname(path)", 1, 1, Deep, f_dirname),
    def("distinct", "distinct(list)", 1, 1, Deep, f_distinct),
    def("element", "element(list, index)", 2, 2, Shallow, f_element),
    def("endswith", "endswith(string, suffix)", 2, 2, Deep, f_endswith),
    def("file", "file(path)", 1, 1, Deep, f_file),
    def("filebase64", "filebase64(path)", 1, 1, Deep, f_filebase64),
    def("fileexists", "fileexists(path)", 1, 1, Deep, f_fileexists),
    def("filesha256", "filesha256(path)", 1, 1, Deep, f_filesha256),
    def("flatten", "flatten(list)", 1, 1, Custom, f_flatten),
    def("floor", "floor(number)", 1, 1, Deep, f_floor),
    def("format", "format(spec, values...)", 1, VAR, Deep, f_format),
    def("formatlist", "formatlist(spec, values...)", 1, VAR, Custom, f_formatlist),
    def("index", "index(list, value)", 2, 2, Custom, f_index),
    def("join", "join(separator, list)", 2, 2, Deep, f_join),
    def("jsondecode", "jsondecode(string)", 1, 1, Deep, f_jsondecode),
    def("jsonencode", "jsonencode(value)", 1, 1, Deep, f_jsonencode),
    def("keys", "keys(map)", 1, 1, Shallow, f_keys),
    def("length", "length(value)", 1, 1, Shallow, f_length),
    def("lookup", "lookup(map, key, default)", 2, 3, Custom, f_lookup),
    def("lower", "lower(string)", 1, 1, Deep, f_lower),
    def("max", "max(numbers...)", 1, VAR, Deep, f_max),
    def("merge", "merge(maps...)", 0, VAR, Shallow, f_merge),
    def("min", "min(numbers...)", 1, VAR, Deep, f_min),
    def("one", "one(list)", 1, 1, Shallow, f_one),
    def("parseint", "parseint(string, base)", 2, 2, Deep, f_parseint),
    def("pathexpand", "pathexpand(path)", 1, 1, Deep, f_pathexpand),
    def("pow", "pow(base, exponent)", 2, 2, Deep, f_pow),
    def("range", "range(start, limit, step)", 1, 3, Deep, f_range),
    def("replace", "replace(string, substring, replacement)", 3, 3, Deep, f_replace),
    def("reverse", "reverse(list)", 1, 1, Shallow, f_reverse),
    def("setintersection", "setintersection(sets...)", 1, VAR, Deep, f_setintersection),
    def("setsubtract", "setsubtract(a, b)", 2, 2, Deep, f_setsubtract),
    def("setunion", "setunion(sets...)", 1, VAR, Deep, f_setunion),
    def("sha256", "sha256(string)", 1, 1, Deep, f_sha256),
    def("signum", "signum(number)", 1, 1, Deep, f_signum),
    def("slice", "slice(list, start_index, end_index)", 3, 3, Shallow, f_slice),
    def("sort", "sort(list)", 1, 1, Deep, f_sort),
    def("split", "split(separator, string)", 2, 2, Deep, f_split),
    def("startswith", "startswith(string, prefix)", 2, 2, Deep, f_startswith),
    def("strrev", "strrev(string)", 1, 1, Deep, f_strrev),
    def("substr", "substr(string, offset, length)", 3, 3, Deep, f_substr),
    def("sum", "sum(list)", 1, 1, Deep, f_sum),
    by_caller("templatefile", "templatefile(path, vars)", 2, 2),
    def("title", "title(string)", 1, 1, Deep, f_title),
    def("tobool", "tobool(value)", 1, 1, Deep, f_tobool),
    def("tolist", "tolist(value)", 1, 1, Shallow, f_tolist),
    def("tomap", "tomap(value)", 1, 1, Shallow, f_tomap),
    def("tonumber", "tonumber(value)", 1, 1, Deep, f_tonumber),
    def("toset", "toset(value)", 1, 1, Deep, f_toset),
    def("tostring", "tostring(value)", 1, 1, Deep, f_tostring),
    def("trim", "trim(string, cutset)", 2, 2, Deep, f_trim),
    def("trimprefix", "trimprefix(string, prefix)", 2, 2, Deep, f_trimprefix),
    def("trimspace", "trimspace(string)", 1, 1, Deep, f_trimspace),
    def("trimsuffix", "trimsuffix(string, suffix)", 2, 2, Deep, f_trimsuffix),
    by_caller("try", "try(expressions...)", 1, VAR),
    def("upper", "upper(string)", 1, 1, Deep, f_upper),
    def("values", "values(map)", 1, 1, Shallow, f_values),
    def("yamldecode", "yamldecode(string)", 1, 1, Deep, f_yamldecode),
    def("yamlencode", "yamlencode(value)", 1, 1, Deep, f_yamlencode),
    def("zipmap", "zipmap(keys, values)", 2, 2, Custom, f_zipmap),
];

fn find(name: &str) -> Option<&'static Spec> {
    FUNCTIONS.binary_search_by(|s| s.name.cmp(name)).ok().and_then(|i| FUNCTIONS.get(i))
}

fn arity_error(spec: &Spec, got: usize) -> FnError {
    let count = |n: usize| if n == 1 { "1 argument".to_string() } else { format!("{n} arguments") };
    let expected = if spec.max == VAR {
        format!("at least {}", count(spec.min))
    } else if spec.min == spec.max {
        count(spec.min)
    } else {
        format!("{} to {} arguments", spec.min, spec.max)
    };
    FnError {
        arg: (got > spec.max).then_some(spec.max),
        message: format!("{} expects {expected}, got {got}", spec.name),
    }
}

// ---------------------------------------------------------------------------
// Argument access and conversions
// ---------------------------------------------------------------------------

static NULL: Value = Value::Null;

/// The arguments of one call, with conversions that blame the right argument.
struct Args<'a> {
    v: &'a [Value],
    sig: &'static str,
}

impl Args<'_> {
    fn len(&self) -> usize {
        self.v.len()
    }

    fn get(&self, i: usize) -> &Value {
        self.v.get(i).unwrap_or(&NULL)
    }

    /// How messages name argument `i`: `` `prefix` `` or ``argument 3 (`values`)``.
    fn label(&self, i: usize) -> String {
        let inner = self.sig.split_once('(').map_or("", |(_, r)| r).trim_end_matches(')');
        let params: Vec<&str> = inner.split(", ").filter(|p| !p.is_empty()).collect();
        match params.get(i) {
            Some(p) if !p.ends_with("...") => format!("`{p}`"),
            _ => match params.last() {
                Some(p) => format!("argument {} (`{}`)", i + 1, p.trim_end_matches("...")),
                None => format!("argument {}", i + 1),
            },
        }
    }

    fn wrap<T>(&self, i: usize, r: Result<T, String>) -> Result<T, FnError> {
        r.map_err(|m| err_at(i, format!("{} {m}", self.label(i))))
    }

    fn str(&self, i: usize) -> Result<String, FnError> {
        self.wrap(i, conv_str(self.get(i)))
    }

    fn num(&self, i: usize) -> Result<f64, FnError> {
        self.wrap(i, conv_num(self.get(i)))
    }

    fn int(&self, i: usize) -> Result<i64, FnError> {
        self.wrap(i, conv_int(self.get(i)))
    }

    fn seq(&self, i: usize) -> Result<&[Value], FnError> {
        self.wrap(i, conv_seq(self.get(i)))
    }

    fn map(&self, i: usize) -> Result<&BTreeMap<String, Value>, FnError> {
        match self.get(i) {
            Value::Map(m) => Ok(m),
            other => Err(err_at(i, format!("{} must be a map, got {}", self.label(i), describe(other)))),
        }
    }
}

/// A value's type for messages, with the value itself when it is short.
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {}", quote(s)),
        Value::Number(n) => format!("number {}", format_number(*n)),
        Value::Bool(b) => format!("bool {b}"),
        other => other.type_name().to_string(),
    }
}

/// A string quoted for messages, shortened when long.
fn quote(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() > MAX {
        let short: String = s.chars().take(MAX).collect();
        format!("{}…", Value::String(short))
    } else {
        Value::String(s.to_string()).to_string()
    }
}

fn conv_str(v: &Value) -> Result<String, String> {
    match v {
        Value::Null => Err("must not be null".into()),
        other => other
            .to_string_lossless()
            .ok_or_else(|| format!("must be a string, got {}", other.type_name())),
    }
}

fn conv_num(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) if n.is_finite() => Ok(*n),
        Value::Number(_) => Err("must be a finite number".into()),
        Value::String(s) => parse_number(s).ok_or_else(|| format!("must be a number, got string {}", quote(s))),
        Value::Null => Err("must not be null".into()),
        other => Err(format!("must be a number, got {}", other.type_name())),
    }
}

/// Largest integer an `f64` holds exactly.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

fn conv_int(v: &Value) -> Result<i64, String> {
    let n = conv_num(v)?;
    if n.fract() != 0.0 {
        return Err(format!("must be a whole number, got {}", format_number(n)));
    }
    if n.abs() > MAX_EXACT {
        return Err(format!("is out of range ({}); whole numbers up to 2^53 are supported", format_number(n)));
    }
    Ok(n as i64)
}

fn conv_bool(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        Value::Null => Err("must not be null".into()),
        other => Err(format!("must be a bool, got {}", describe(other))),
    }
}

fn conv_seq(v: &Value) -> Result<&[Value], String> {
    match v {
        Value::List(xs) | Value::Set(xs) => Ok(xs),
        Value::Null => Err("must not be null".into()),
        other => Err(format!("must be a list or set, got {}", other.type_name())),
    }
}

/// Parses a decimal number the way Terraform converts strings to numbers:
/// optional sign, digits with an optional fraction, optional exponent. No
/// whitespace, no hex, no `inf`/`nan`.
fn parse_number(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let int_start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let mut digits = i - int_start;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == exp_start {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    s.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// The coarse kind of a value, for unifying element types.
fn kind(v: &Value) -> Option<&'static str> {
    match v {
        Value::String(_) => Some("string"),
        Value::Number(_) => Some("number"),
        Value::Bool(_) => Some("bool"),
        Value::List(_) | Value::Set(_) => Some("list"),
        Value::Map(_) => Some("map"),
        Value::Null | Value::Unknown => None,
    }
}

/// Unifies element types the way Terraform does for collections: mixed strings,
/// numbers and bools all become strings; a primitive mixed with a collection, or
/// a list with a map, is an error.
fn unify(items: Vec<Value>) -> Result<Vec<Value>, String> {
    let mut kinds: Vec<&'static str> = items.iter().filter_map(kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    if kinds.len() <= 1 {
        return Ok(items);
    }
    if kinds.iter().any(|k| *k == "list" || *k == "map") {
        return Err(format!("all elements must have the same type, but found {}", kinds.join(" and ")));
    }
    Ok(items
        .into_iter()
        .map(|v| match v {
            Value::Number(_) | Value::Bool(_) => Value::String(v.to_string_lossless().unwrap_or_default()),
            other => other,
        })
        .collect())
}

// ---------------------------------------------------------------------------
// Filesystem
// ---------------------------------------------------------------------------

fn resolve_path(ctx: &FnCtx<'_>, path: &str) -> Result<PathBuf, FnError> {
    let expanded = expand_home(path).map_err(|m| err_at(0, m))?;
    let p = Path::new(&expanded);
    Ok(if p.is_absolute() { p.to_path_buf() } else { ctx.base_dir.join(p) })
}

/// The most `file()` and its kin read: a configuration input, not a disk image.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

fn read_bytes(ctx: &FnCtx<'_>, path: &str) -> Result<Vec<u8>, FnError> {
    use std::io::Read;
    let full = resolve_path(ctx, path)?;
    let io_err = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => err_at(0, format!("no file exists at {}", quote(path))),
        _ => err_at(0, format!("cannot read {}: {e}", quote(path))),
    };
    let meta = std::fs::metadata(&full).map_err(io_err)?;
    if meta.is_dir() {
        return Err(err_at(0, format!("{} is a directory, not a file", quote(path))));
    }
    // A device or FIFO (/dev/zero, /dev/stdin) would never end or block.
    if !meta.is_file() {
        return Err(err_at(0, format!("{} is not a regular file", quote(path))));
    }
    let f = std::fs::File::open(&full).map_err(io_err)?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(io_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(err_at(0, format!("{} is larger than {} MiB", quote(path), MAX_FILE_BYTES >> 20)));
    }
    Ok(bytes)
}

/// Expands a leading `~` to the home directory (Terraform's `pathexpand`).
fn expand_home(path: &str) -> Result<String, String> {
    let Some(rest) = path.strip_prefix('~') else {
        return Ok(path.to_string());
    };
    if !rest.is_empty() && !rest.starts_with('/') {
        return Err(format!(
            "cannot expand {}: only `~` and `~/...` (the current user's home directory) are supported",
            quote(path)
        ));
    }
    let home = std::env::var("HOME")
        .ok()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("cannot expand {}: the HOME environment variable is not set", quote(path)))?;
    Ok(go_clean(&format!("{home}/{rest}")))
}

/// Go's `path.Clean` for slash-separated paths.
fn go_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

fn f_file(ctx: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    read_file(ctx, &a.str(0)?).map(Value::String)
}

fn f_fileexists(ctx: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let path = a.str(0)?;
    let full = resolve_path(ctx, &path)?;
    match std::fs::metadata(&full) {
        Ok(m) if m.is_file() => Ok(Value::Bool(true)),
        Ok(m) if m.is_dir() => Err(err_at(0, format!("{} is a directory, not a file", quote(&path)))),
        Ok(_) => Err(err_at(0, format!("{} is not a regular file", quote(&path)))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Bool(false)),
        Err(e) => Err(err_at(0, format!("cannot check {}: {e}", quote(&path)))),
    }
}

fn f_filebase64(ctx: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let bytes = read_bytes(ctx, &a.str(0)?)?;
    Ok(Value::String(BASE64.encode(bytes)))
}

fn f_filesha256(ctx: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let bytes = read_bytes(ctx, &a.str(0)?)?;
    Ok(Value::String(hex(&Sha256::digest(&bytes))))
}

/// Go's `filepath.Base`.
fn f_basename(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let p = a.str(0)?;
    if p.is_empty() {
        return Ok(Value::string("."));
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(Value::string("/"));
    }
    let base = trimmed.rsplit_once('/').map_or(trimmed, |(_, b)| b);
    Ok(Value::string(base))
}

/// Go's `filepath.Dir`.
fn f_dirname(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let p = a.str(0)?;
    let dir = match p.rfind('/') {
        Some(i) => &p[..=i],
        None => "",
    };
    Ok(Value::String(go_clean(dir)))
}

fn f_pathexpand(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let p = a.str(0)?;
    expand_home(&p).map(Value::String).map_err(|m| err_at(0, m))
}

// ---------------------------------------------------------------------------
// Strings
// ---------------------------------------------------------------------------

fn f_format(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let spec = a.str(0)?;
    go_format(&spec, a.v.get(1..).unwrap_or_default()).map(Value::String).map_err(|e| e.into_fn_error(""))
}

fn f_formatlist(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    if a.v.iter().any(Value::is_unknown) {
        return Ok(Value::Unknown);
    }
    let spec = a.str(0)?;
    let vals = a.v.get(1..).unwrap_or_default();
    // The length of the list arguments, and which argument set it.
    let mut len: Option<(usize, usize)> = None;
    for (i, v) in vals.iter().enumerate() {
        if let Value::List(xs) | Value::Set(xs) = v {
            match len {
                None => len = Some((xs.len(), i + 1)),
                Some((l, j)) if l != xs.len() => {
                    return Err(err_at(
                        i + 1,
                        format!(
                            "argument {} has length {}, which is inconsistent with argument {} of length {l}",
                            i + 2,
                            xs.len(),
                            j + 1
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    let n = len.map_or(1, |(l, _)| l);
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let row: Vec<Value> = vals
            .iter()
            .map(|v| match v {
                Value::List(xs) | Value::Set(xs) => xs.get(k).cloned().unwrap_or(Value::Null),
                other => other.clone(),
            })
            .collect();
        if row.iter().any(Value::contains_unknown) {
            out.push(Value::Unknown);
            continue;
        }
        let s = go_format(&spec, &row).map_err(|e| e.into_fn_error(&format!("error on format iteration {k}: ")))?;
        out.push(Value::String(s));
    }
    Ok(Value::List(out))
}

fn f_join(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let sep = a.str(0)?;
    let list = a.seq(1)?;
    let mut parts = Vec::with_capacity(list.len());
    for (i, el) in list.iter().enumerate() {
        if matches!(el, Value::Null) {
            return Err(err_at(1, format!("element {i} of the list is null; cannot join null values")));
        }
        parts.push(conv_str(el).map_err(|m| err_at(1, format!("element {i} of the list {m}")))?);
    }
    Ok(Value::String(parts.join(&sep)))
}

fn f_split(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let sep = a.str(0)?;
    let s = a.str(1)?;
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| Value::String(c.to_string())).collect()
    } else {
        s.split(sep.as_str()).map(Value::string).collect()
    };
    Ok(Value::List(parts))
}

fn f_lower(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::String(a.str(0)?.to_lowercase()))
}

fn f_upper(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::String(a.str(0)?.to_uppercase()))
}

/// Go's `strings.Title`: upper-cases the first letter of each word.
fn f_title(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    fn separator(c: char) -> bool {
        if c.is_ascii() {
            return !(c.is_ascii_alphanumeric() || c == '_');
        }
        if c.is_alphanumeric() {
            return false;
        }
        c.is_whitespace()
    }
    let s = a.str(0)?;
    let mut out = String::with_capacity(s.len());
    let mut prev = ' ';
    for c in s.chars() {
        if separator(prev) {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => out.push(u),
                _ => out.push(c),
            }
        } else {
            out.push(c);
        }
        prev = c;
    }
    Ok(Value::String(out))
}

fn f_replace(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let s = a.str(0)?;
    let sub = a.str(1)?;
    let rep = a.str(2)?;
    if sub.len() > 1 && sub.starts_with('/') && sub.ends_with('/') {
        return Err(err_at(
            1,
            format!(
                "regular expression patterns like {} are not supported; give a plain substring (without the surrounding slashes)",
                quote(&sub)
            ),
        ));
    }
    Ok(Value::String(s.replace(sub.as_str(), &rep)))
}

fn f_trimspace(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::string(a.str(0)?.trim()))
}

fn f_trim(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let s = a.str(0)?;
    let cutset = a.str(1)?;
    Ok(Value::string(s.trim_matches(|c| cutset.contains(c))))
}

fn f_trimprefix(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let s = a.str(0)?;
    let p = a.str(1)?;
    Ok(Value::string(s.strip_prefix(p.as_str()).unwrap_or(&s)))
}

fn f_trimsuffix(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let s = a.str(0)?;
    let p = a.str(1)?;
    Ok(Value::string(s.strip_suffix(p.as_str()).unwrap_or(&s)))
}

fn f_startswith(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::Bool(a.str(0)?.starts_with(a.str(1)?.as_str())))
}

fn f_endswith(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::Bool(a.str(0)?.ends_with(a.str(1)?.as_str())))
}

/// `substr(string, offset, length)`: a negative offset counts from the end, a
/// negative length means "to the end". Out-of-range parts are clamped, as in
/// Terraform.
fn f_substr(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let s = a.str(0)?;
    let offset = a.int(1)?;
    let length = a.int(2)?;
    let chars: Vec<char> = s.chars().collect();
    let total = chars.len() as i64;
    let start = if offset < 0 { offset + total } else { offset }.clamp(0, total);
    let end = if length < 0 { total } else { start.saturating_add(length).min(total) };
    let out: String = chars.get(start as usize..end as usize).unwrap_or_default().iter().collect();
    Ok(Value::String(out))
}

fn f_strrev(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::String(a.str(0)?.chars().rev().collect()))
}

// ---------------------------------------------------------------------------
// format
// ---------------------------------------------------------------------------

/// Largest width or precision accepted in a format verb.
const MAX_WIDTH: usize = 10_000;

#[derive(Default)]
struct Verb {
    raw: String,
    offset: usize,
    zero: bool,
    sharp: bool,
    minus: bool,
    plus: bool,
    space: bool,
    width: Option<usize>,
    prec: Option<usize>,
    verb: char,
}

/// A `format` failure: the message, and the 0-based index of the value to blame
/// (`None` blames the spec).
struct FormatError {
    value: Option<usize>,
    message: String,
}

impl FormatError {
    fn spec(message: String) -> Self {
        FormatError { value: None, message }
    }

    /// As an error of a call whose argument 0 is the spec and 1.. the values.
    fn into_fn_error(self, prefix: &str) -> FnError {
        err_at(self.value.map_or(0, |v| v + 1), format!("{prefix}{}", self.message))
    }
}

/// Terraform's `format`: Go-like verbs applied to language values.
fn go_format(spec: &str, args: &[Value]) -> Result<String, FormatError> {
    let chars: Vec<(usize, char)> = spec.char_indices().collect();
    let ch = |i: usize| chars.get(i).map(|c| c.1);
    let mut out = String::with_capacity(spec.len());
    let mut i = 0;
    let mut next_arg = 1;
    let mut max_used = 0;
    let mut verbs = 0;
    while let Some(&(offset, c)) = chars.get(i) {
        if c != '%' {
            out.push(c);
            i += 1;
            continue;
        }
        if ch(i + 1) == Some('%') {
            out.push('%');
            i += 2;
            continue;
        }
        let mut v = Verb { offset, ..Verb::default() };
        i += 1;
        while let Some(f) = ch(i) {
            match f {
                '0' => v.zero = true,
                '#' => v.sharp = true,
                '-' => v.minus = true,
                '+' => v.plus = true,
                ' ' => v.space = true,
                _ => break,
            }
            i += 1;
        }
        let mut argnum = next_arg;
        if ch(i) == Some('[') {
            i += 1;
            let n = read_decimal(&chars, &mut i);
            if ch(i) != Some(']') || n.is_none_or(|n| n == 0) {
                return Err(FormatError::spec(format!("invalid argument index in format string at offset {offset}")));
            }
            i += 1;
            argnum = n.unwrap_or(0);
        }
        if ch(i).is_some_and(|c| c.is_ascii_digit()) {
            v.width = read_decimal(&chars, &mut i).filter(|w| *w <= MAX_WIDTH);
            if v.width.is_none() {
                return Err(FormatError::spec(format!("width at offset {offset} is too large (at most {MAX_WIDTH})")));
            }
        }
        if ch(i) == Some('.') {
            i += 1;
            v.prec = if ch(i).is_some_and(|c| c.is_ascii_digit()) {
                read_decimal(&chars, &mut i).filter(|p| *p <= MAX_WIDTH)
            } else {
                Some(0)
            };
            if v.prec.is_none() {
                return Err(FormatError::spec(format!("precision at offset {offset} is too large (at most {MAX_WIDTH})")));
            }
        }
        let Some(&(voff, vc)) = chars.get(i) else {
            return Err(FormatError::spec(format!("invalid format string starting at offset {offset}: the verb is incomplete")));
        };
        if !vc.is_ascii_alphabetic() {
            return Err(FormatError::spec(format!("unrecognized format character {vc:?} at offset {voff}")));
        }
        i += 1;
        v.verb = vc;
        v.raw = spec.get(offset..voff + 1).unwrap_or_default().to_string();
        verbs += 1;
        let Some(arg) = argnum.checked_sub(1).and_then(|k| args.get(k)) else {
            return Err(FormatError::spec(format!(
                "not enough arguments for \"{}\" at offset {offset}: it needs argument {argnum}, but {} given",
                v.raw,
                match args.len() {
                    0 => "none were".to_string(),
                    1 => "only 1 was".to_string(),
                    n => format!("only {n} were"),
                }
            )));
        };
        max_used = max_used.max(argnum);
        next_arg = argnum + 1;
        format_verb(&mut out, &v, arg).map_err(|message| FormatError { value: Some(argnum - 1), message })?;
    }
    if args.len() > max_used {
        let message = if verbs == 0 {
            "too many arguments; no verbs in format string".to_string()
        } else {
            format!("too many arguments; only {max_used} used by format string")
        };
        return Err(FormatError { value: Some(max_used), message });
    }
    Ok(out)
}

/// Reads decimal digits at `*i` (None on overflow or when there are none).
fn read_decimal(chars: &[(usize, char)], i: &mut usize) -> Option<usize> {
    let mut n: Option<usize> = None;
    while let Some(d) = chars.get(*i).and_then(|c| c.1.to_digit(10)) {
        n = n.unwrap_or(0).checked_mul(10).and_then(|x| x.checked_add(d as usize)).or(Some(usize::MAX));
        *i += 1;
    }
    n.filter(|n| *n != usize::MAX)
}

fn format_verb(out: &mut String, v: &Verb, arg: &Value) -> Result<(), String> {
    let bad = |m: String| format!("unsupported value for \"{}\" at offset {}: {m}", v.raw, v.offset);
    if v.verb != 'v' && matches!(arg, Value::Null) {
        return Err(bad("null value cannot be formatted".into()));
    }
    let text = match v.verb {
        'v' => {
            let s = match arg {
                _ if v.sharp => json_encode(arg).map_err(bad)?,
                Value::String(s) => s.clone(),
                Value::Number(n) => format_number(*n),
                Value::Bool(b) => b.to_string(),
                _ => json_encode(arg).map_err(bad)?,
            };
            pad(s, v)
        }
        't' => pad(conv_bool(arg).map_err(|m| bad(format!("the value {m}")))?.to_string(), v),
        'b' | 'd' | 'o' | 'x' | 'X' => {
            let n = conv_num(arg).map_err(|m| bad(format!("the value {m}")))?;
            format_int(n, v).map_err(bad)?
        }
        'e' | 'E' | 'f' | 'g' | 'G' => {
            let n = conv_num(arg).map_err(|m| bad(format!("the value {m}")))?;
            format_float(n, v)
        }
        's' | 'q' => {
            let mut s = conv_str(arg).map_err(|m| bad(format!("the value {m}")))?;
            if let Some(p) = v.prec {
                s = s.chars().take(p).collect();
            }
            if v.verb == 'q' {
                let mut q = String::new();
                json_quote(&s, &mut q);
                s = q;
            }
            pad(s, v)
        }
        other => return Err(format!("unsupported format verb {other:?} in \"{}\" at offset {}", v.raw, v.offset)),
    };
    out.push_str(&text);
    Ok(())
}

/// Pads to the verb's width, in characters.
fn pad(s: String, v: &Verb) -> String {
    let len = s.chars().count();
    let width = v.width.unwrap_or(0);
    if len >= width {
        return s;
    }
    let fill = width - len;
    if v.minus {
        s + &" ".repeat(fill)
    } else {
        let c = if v.zero { "0" } else { " " };
        c.repeat(fill) + &s
    }
}

/// Lays out sign, prefix and digits in the verb's width, as Go does for numbers.
fn pad_number(sign: &str, prefix: &str, digits: &str, v: &Verb, zero_ok: bool) -> String {
    let len = sign.len() + prefix.len() + digits.len();
    let width = v.width.unwrap_or(0);
    if len >= width {
        return format!("{sign}{prefix}{digits}");
    }
    let fill = width - len;
    if v.minus {
        format!("{sign}{prefix}{digits}{}", " ".repeat(fill))
    } else if v.zero && zero_ok {
        format!("{sign}{prefix}{}{digits}", "0".repeat(fill))
    } else {
        format!("{}{sign}{prefix}{digits}", " ".repeat(fill))
    }
}

fn sign_of(neg: bool, v: &Verb) -> &'static str {
    if neg {
        "-"
    } else if v.plus {
        "+"
    } else if v.space {
        " "
    } else {
        ""
    }
}

/// `%b %d %o %x %X` of a whole number.
fn format_int(n: f64, v: &Verb) -> Result<String, String> {
    if n.fract() != 0.0 {
        return Err(format!("an integer is required, got {}", format_number(n)));
    }
    let neg = n < 0.0;
    let mag = n.abs();
    let mut digits = if mag < 1.0e38 {
        let u = mag as u128;
        match v.verb {
            'b' => format!("{u:b}"),
            'o' => format!("{u:o}"),
            'x' => format!("{u:x}"),
            'X' => format!("{u:X}"),
            _ => u.to_string(),
        }
    } else if v.verb == 'd' {
        format!("{mag:.0}")
    } else {
        return Err(format!("the number {} is too large for this verb", format_number(n)));
    };
    if let Some(p) = v.prec {
        if p == 0 && mag == 0.0 {
            digits.clear();
        } else if digits.len() < p {
            digits = "0".repeat(p - digits.len()) + &digits;
        }
    }
    let prefix = match (v.sharp, v.verb) {
        (true, 'b') => "0b",
        (true, 'o') => "0",
        (true, 'x') => "0x",
        (true, 'X') => "0X",
        _ => "",
    };
    Ok(pad_number(sign_of(neg, v), prefix, &digits, v, v.prec.is_none()))
}

/// `%e %E %f %g %G`, as Go formats them.
fn format_float(n: f64, v: &Verb) -> String {
    let neg = n < 0.0;
    let a = n.abs();
    let upper = v.verb.is_ascii_uppercase();
    let body = match v.verb {
        'f' => format!("{:.*}", v.prec.unwrap_or(6), a),
        'e' | 'E' => {
            let s = format!("{:.*e}", v.prec.unwrap_or(6), a);
            let (mant, exp) = s.split_once('e').unwrap_or((s.as_str(), "0"));
            go_exponent(mant, exp.parse().unwrap_or(0), upper)
        }
        _ => format_g(a, v.prec, upper),
    };
    pad_number(sign_of(neg, v), "", &body, v, true)
}

fn go_exponent(mant: &str, exp: i64, upper: bool) -> String {
    let e = if upper { 'E' } else { 'e' };
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mant}{e}{sign}{:02}", exp.abs())
}

/// Go's `%g`: shortest representation, or `prec` significant digits; exponent
/// form for exponents < -4 or >= the precision (6 when shortest).
fn format_g(a: f64, prec: Option<usize>, upper: bool) -> String {
    if a == 0.0 {
        return "0".into();
    }
    let sci = match prec {
        None => format!("{a:e}"),
        Some(p) => format!("{:.*e}", p.max(1) - 1, a),
    };
    let (mant, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let mut digits: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    let nd = digits.len();
    let dp = exp + 1;
    let shortest = prec.is_none();
    let p = prec.map_or(nd, |p| p.max(1));
    let mut eprec = p;
    if eprec > nd && nd as i64 >= dp {
        eprec = nd;
    }
    if shortest {
        eprec = 6;
    }
    let digit = |i: i64| -> char {
        usize::try_from(i).ok().and_then(|i| digits.get(i)).map_or('0', |d| *d as char)
    };
    if exp < -4 || exp >= eprec as i64 {
        let decimals = p.min(nd).saturating_sub(1);
        let mut m = String::new();
        m.push(digit(0));
        if decimals > 0 {
            m.push('.');
            for i in 1..=decimals {
                m.push(digit(i as i64));
            }
        }
        go_exponent(&m, exp, upper)
    } else {
        let p2 = if p as i64 > dp { nd } else { p };
        let decimals = (p2 as i64 - dp).max(0);
        let mut s = String::new();
        if dp <= 0 {
            s.push('0');
        } else {
            for i in 0..dp {
                s.push(digit(i));
            }
        }
        if decimals > 0 {
            s.push('.');
            for i in 0..decimals {
                s.push(digit(dp + i));
            }
        }
        s
    }
}

// ---------------------------------------------------------------------------
// Collections
// ---------------------------------------------------------------------------

fn f_length(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let n = match a.get(0) {
        Value::String(s) => s.chars().count(),
        Value::List(xs) | Value::Set(xs) => xs.len(),
        Value::Map(m) => m.len(),
        Value::Null => return Err(err_at(0, "argument must not be null")),
        other => {
            return Err(err_at(
                0,
                format!("argument must be a string, list, set or map, got {}", other.type_name()),
            ));
        }
    };
    Ok(Value::Number(n as f64))
}

fn f_concat(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let mut out = Vec::new();
    for i in 0..a.len() {
        out.extend_from_slice(a.seq(i)?);
    }
    Ok(Value::List(out))
}

fn f_merge(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let mut out = BTreeMap::new();
    let mut any = false;
    for (i, v) in a.v.iter().enumerate() {
        match v {
            Value::Null => {}
            Value::Map(m) => {
                any = true;
                out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            other => {
                return Err(err_at(i, format!("{} must be a map, got {}", a.label(i), other.type_name())));
            }
        }
    }
    Ok(if any || a.v.is_empty() { Value::Map(out) } else { Value::Null })
}

/// Unknown only when the map or the key is; an unknown default matters only when
/// the key is missing.
fn f_lookup(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    if a.get(0).is_unknown() || a.get(1).is_unknown() {
        return Ok(Value::Unknown);
    }
    let m = a.map(0)?;
    let key = a.str(1)?;
    match m.get(&key) {
        Some(v) => Ok(v.clone()),
        None if a.len() == 3 => Ok(a.get(2).clone()),
        None => Err(err_at(1, format!("the map has no key {}, and no default was given", quote(&key)))),
    }
}

fn f_keys(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::List(a.map(0)?.keys().map(Value::string).collect()))
}

fn f_values(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::List(a.map(0)?.values().cloned().collect()))
}

fn f_contains(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    if a.get(0).is_unknown() {
        return Ok(Value::Unknown);
    }
    let list = a.seq(0)?;
    if list.is_empty() {
        return Ok(Value::Bool(false));
    }
    let needle = a.get(1);
    if needle.contains_unknown() {
        return Ok(Value::Unknown);
    }
    let mut unknown = false;
    for el in list {
        if el.contains_unknown() {
            unknown = true;
        } else if el == needle {
            return Ok(Value::Bool(true));
        }
    }
    Ok(if unknown { Value::Unknown } else { Value::Bool(false) })
}

fn f_index(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let list = match a.get(0) {
        Value::Unknown => return Ok(Value::Unknown),
        Value::List(xs) => xs,
        Value::Set(_) => {
            return Err(err_at(0, "`list` must be a list, got set; sets have no order (convert with tolist() first)"));
        }
        other => return Err(err_at(0, format!("`list` must be a list, got {}", other.type_name()))),
    };
    let needle = a.get(1);
    if needle.contains_unknown() {
        return Ok(Value::Unknown);
    }
    for (i, el) in list.iter().enumerate() {
        if el.contains_unknown() {
            return Ok(Value::Unknown);
        }
        if el == needle {
            return Ok(Value::Number(i as f64));
        }
    }
    Err(err_at(1, format!("{needle} is not in the list")))
}

fn f_element(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let list = match a.get(0) {
        Value::List(xs) => xs,
        Value::Set(_) => {
            return Err(err_at(0, "cannot read elements from a set, which has no order (convert with tolist() first)"));
        }
        other => return Err(err_at(0, format!("`list` must be a list, got {}", other.type_name()))),
    };
    let idx = a.int(1)?;
    if idx < 0 {
        return Err(err_at(1, format!("index must not be negative, got {idx}")));
    }
    if list.is_empty() {
        return Err(err_at(0, "list is empty"));
    }
    let i = (idx as u64 % list.len() as u64) as usize;
    Ok(list.get(i).cloned().unwrap_or(Value::Null))
}

/// Terraform's limit on the length of `range`'s result.
const RANGE_LIMIT: usize = 1024;

fn f_range(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let labels: &[&str] = match a.len() {
        1 => &["limit"],
        2 => &["start", "limit"],
        _ => &["start", "limit", "step"],
    };
    let mut nums = Vec::with_capacity(3);
    for (i, label) in labels.iter().enumerate() {
        nums.push(conv_num(a.get(i)).map_err(|m| err_at(i, format!("`{label}` {m}")))?);
    }
    let (start, limit, step) = match nums[..] {
        [l] => (0.0, l, if l < 0.0 { -1.0 } else { 1.0 }),
        [s, l] => (s, l, if l < s { -1.0 } else { 1.0 }),
        [s, l, st] => (s, l, st),
        _ => return Err(err("expects 1 to 3 arguments")),
    };
    if step == 0.0 {
        return Err(err_at(2, "step must not be zero"));
    }
    if step > 0.0 && limit < start {
        return Err(err_at(1, "limit must not be less than start when step is positive"));
    }
    if step < 0.0 && limit > start {
        return Err(err_at(1, "limit must not be greater than start when step is negative"));
    }
    let mut out = Vec::new();
    for i in 0..=RANGE_LIMIT {
        let x = start + i as f64 * step;
        if (step > 0.0 && x >= limit) || (step < 0.0 && x <= limit) {
            return Ok(Value::List(out));
        }
        if i == RANGE_LIMIT {
            break;
        }
        out.push(Value::Number(x));
    }
    Err(err(format!(
        "more than {RANGE_LIMIT} values were generated; either decrease the difference between start and limit or use a larger step"
    )))
}

fn f_toset(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    match a.get(0) {
        Value::Null => Ok(Value::Null),
        Value::List(xs) | Value::Set(xs) => Ok(Value::set(unify(xs.clone()).map_err(|m| err_at(0, m))?)),
        other => Err(err_at(0, format!("cannot convert {} to a set", other.type_name()))),
    }
}

fn f_tolist(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    match a.get(0) {
        Value::Null => Ok(Value::Null),
        Value::List(xs) | Value::Set(xs) => Ok(Value::List(unify(xs.clone()).map_err(|m| err_at(0, m))?)),
        other => Err(err_at(0, format!("cannot convert {} to a list", other.type_name()))),
    }
}

fn f_tomap(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    match a.get(0) {
        Value::Null => Ok(Value::Null),
        Value::Map(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let vals = unify(m.values().cloned().collect()).map_err(|m| err_at(0, m))?;
            Ok(Value::Map(keys.into_iter().zip(vals).collect()))
        }
        other => Err(err_at(0, format!("cannot convert {} to a map", other.type_name()))),
    }
}

fn f_tostring(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    match a.get(0) {
        Value::Null => Ok(Value::Null),
        v => v
            .to_string_lossless()
            .map(Value::String)
            .ok_or_else(|| err_at(0, format!("cannot convert {} to a string", v.type_name()))),
    }
}

fn f_tonumber(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    match a.get(0) {
        Value::Null => Ok(Value::Null),
        Value::Number(n) => Ok(Value::Number(*n)),
        Value::String(s) => parse_number(s)
            .map(Value::Number)
            .ok_or_else(|| err_at(0, format!("cannot convert {} to a number", quote(s)))),
        other => Err(err_at(0, format!("cannot convert {} to a number", other.type_name()))),
    }
}

fn f_tobool(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    match a.get(0) {
        Value::Null => Ok(Value::Null),
        Value::Bool(b) => Ok(Value::Bool(*b)),
        Value::String(s) if s == "true" => Ok(Value::Bool(true)),
        Value::String(s) if s == "false" => Ok(Value::Bool(false)),
        Value::String(s) => Err(err_at(0, format!("cannot convert {} to a bool; only \"true\" and \"false\" are allowed", quote(s)))),
        other => Err(err_at(0, format!("cannot convert {} to a bool", other.type_name()))),
    }
}

fn f_coalesce(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let has_string = a.v.iter().any(|v| matches!(v, Value::String(_)));
    for v in a.v {
        match v {
            Value::Unknown => return Ok(Value::Unknown),
            Value::Null => {}
            Value::String(s) if s.is_empty() => {}
            Value::Number(_) | Value::Bool(_) if has_string => {
                return Ok(Value::String(v.to_string_lossless().unwrap_or_default()));
            }
            other => return Ok(other.clone()),
        }
    }
    Err(err("no non-null, non-empty-string arguments"))
}

fn f_coalescelist(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    for (i, v) in a.v.iter().enumerate() {
        match v {
            Value::Unknown => return Ok(Value::Unknown),
            Value::Null => {}
            Value::List(xs) | Value::Set(xs) if xs.is_empty() => {}
            Value::List(_) | Value::Set(_) => return Ok(v.clone()),
            other => return Err(err_at(i, format!("{} must be a list, got {}", a.label(i), other.type_name()))),
        }
    }
    Err(err("no non-empty list arguments"))
}

fn f_compact(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let mut out = Vec::new();
    for (i, el) in a.seq(0)?.iter().enumerate() {
        if matches!(el, Value::Null) {
            continue;
        }
        let s = conv_str(el).map_err(|m| err_at(0, format!("element {i} of the list {m}")))?;
        if !s.is_empty() {
            out.push(Value::String(s));
        }
    }
    Ok(Value::List(out))
}

fn f_distinct(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let mut seen: HashMap<String, Vec<&Value>> = HashMap::new();
    let mut out = Vec::new();
    for el in a.seq(0)? {
        let bucket = seen.entry(el.sort_key()).or_default();
        if !bucket.contains(&el) {
            bucket.push(el);
            out.push(el.clone());
        }
    }
    Ok(Value::List(out))
}

fn f_flatten(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    /// Returns false when an unknown element makes the result unknown.
    fn walk(xs: &[Value], out: &mut Vec<Value>) -> bool {
        for x in xs {
            match x {
                Value::Unknown => return false,
                Value::List(ys) | Value::Set(ys) => {
                    if !walk(ys, out) {
                        return false;
                    }
                }
                other => out.push(other.clone()),
            }
        }
        true
    }
    if a.get(0).is_unknown() {
        return Ok(Value::Unknown);
    }
    let list = a.seq(0)?;
    let mut out = Vec::new();
    Ok(if walk(list, &mut out) { Value::List(out) } else { Value::Unknown })
}

fn f_reverse(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::List(a.seq(0)?.iter().rev().cloned().collect()))
}

fn f_slice(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let list = match a.get(0) {
        Value::List(xs) => xs,
        Value::Set(_) => {
            return Err(err_at(
                0,
                "cannot slice a set, because its elements do not have indices; convert it with tolist() first",
            ));
        }
        other => return Err(err_at(0, format!("`list` must be a list, got {}", other.type_name()))),
    };
    let start = a.int(1)?;
    let end = a.int(2)?;
    let len = list.len() as i64;
    if start < 0 {
        return Err(err_at(1, format!("start index must not be less than zero, got {start}")));
    }
    if start > len {
        return Err(err_at(1, format!("start index {start} is greater than the length of the list ({len})")));
    }
    if end < 0 {
        return Err(err_at(2, format!("end index must not be less than zero, got {end}")));
    }
    if end > len {
        return Err(err_at(2, format!("end index {end} is greater than the length of the list ({len})")));
    }
    if start > end {
        return Err(err_at(1, format!("start index {start} is greater than end index {end}")));
    }
    Ok(Value::List(list.get(start as usize..end as usize).unwrap_or_default().to_vec()))
}

fn f_sort(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let mut out = Vec::new();
    for (i, el) in a.seq(0)?.iter().enumerate() {
        if matches!(el, Value::Null) {
            return Err(err_at(0, format!("element {i} of the list is null; a null string cannot be sorted")));
        }
        out.push(conv_str(el).map_err(|m| err_at(0, format!("element {i} of the list {m}")))?);
    }
    out.sort();
    Ok(Value::List(out.into_iter().map(Value::String).collect()))
}

fn f_zipmap(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    if a.get(0).contains_unknown() || a.get(1).is_unknown() {
        return Ok(Value::Unknown);
    }
    let keys = a.seq(0)?;
    let vals = a.seq(1)?;
    if keys.len() != vals.len() {
        return Err(err_at(
            1,
            format!("number of keys ({}) does not match number of values ({})", keys.len(), vals.len()),
        ));
    }
    let mut out = BTreeMap::new();
    for (i, (k, v)) in keys.iter().zip(vals).enumerate() {
        if matches!(k, Value::Null) {
            return Err(err_at(0, format!("the keys list has a null value at index {i}")));
        }
        let k = conv_str(k).map_err(|m| err_at(0, format!("key {i} {m}")))?;
        out.insert(k, v.clone());
    }
    Ok(Value::Map(out))
}

/// The elements of every argument (each a list or set), unified together.
fn set_args(a: &Args<'_>) -> Result<Vec<Vec<Value>>, FnError> {
    let mut groups = Vec::with_capacity(a.len());
    for i in 0..a.len() {
        groups.push(a.seq(i)?.to_vec());
    }
    let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
    let all = unify(groups.into_iter().flatten().collect()).map_err(err)?;
    let mut it = all.into_iter();
    Ok(sizes.into_iter().map(|n| it.by_ref().take(n).collect()).collect())
}

fn f_setunion(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::set(set_args(a)?.into_iter().flatten().collect()))
}

fn f_setintersection(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let mut groups = set_args(a)?.into_iter();
    let first = groups.next().unwrap_or_default();
    let rest: Vec<Vec<Value>> = groups.collect();
    Ok(Value::set(first.into_iter().filter(|x| rest.iter().all(|g| g.contains(x))).collect()))
}

fn f_setsubtract(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let mut groups = set_args(a)?.into_iter();
    let first = groups.next().unwrap_or_default();
    let second = groups.next().unwrap_or_default();
    Ok(Value::set(first.into_iter().filter(|x| !second.contains(x)).collect()))
}

fn f_alltrue(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    if a.get(0).is_unknown() {
        return Ok(Value::Unknown);
    }
    let mut unknown = false;
    for (i, el) in a.seq(0)?.iter().enumerate() {
        match el {
            Value::Unknown => unknown = true,
            Value::Null => return Ok(Value::Bool(false)),
            _ => {
                if !conv_bool(el).map_err(|m| err_at(0, format!("element {i} of the list {m}")))? {
                    return Ok(Value::Bool(false));
                }
            }
        }
    }
    Ok(if unknown { Value::Unknown } else { Value::Bool(true) })
}

fn f_anytrue(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    if a.get(0).is_unknown() {
        return Ok(Value::Unknown);
    }
    let mut unknown = false;
    for (i, el) in a.seq(0)?.iter().enumerate() {
        match el {
            Value::Unknown => unknown = true,
            Value::Null => {}
            _ => {
                if conv_bool(el).map_err(|m| err_at(0, format!("element {i} of the list {m}")))? {
                    return Ok(Value::Bool(true));
                }
            }
        }
    }
    Ok(if unknown { Value::Unknown } else { Value::Bool(false) })
}

fn f_one(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    match a.seq(0)? {
        [] => Ok(Value::Null),
        [x] => Ok(x.clone()),
        xs => Err(err_at(0, format!("the list must have zero or one elements, but it has {}", xs.len()))),
    }
}

fn f_chunklist(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let list = a.seq(0)?;
    let size = a.int(1)?;
    if size < 0 {
        return Err(err_at(1, format!("size must not be negative, got {size}")));
    }
    if list.is_empty() {
        return Ok(Value::List(Vec::new()));
    }
    if size == 0 {
        return Ok(Value::List(vec![Value::List(list.to_vec())]));
    }
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    Ok(Value::List(list.chunks(size).map(|c| Value::List(c.to_vec())).collect()))
}

// ---------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------

fn numbers(a: &Args<'_>) -> Result<Vec<f64>, FnError> {
    let mut out = Vec::with_capacity(a.len());
    for i in 0..a.len() {
        if let Value::List(_) | Value::Set(_) = a.get(i) {
            return Err(err_at(
                i,
                format!("{} must be a number, got list (to use a list's elements as arguments, write `list...`)", a.label(i)),
            ));
        }
        out.push(a.num(i)?);
    }
    Ok(out)
}

fn f_min(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::Number(numbers(a)?.into_iter().fold(f64::INFINITY, f64::min)))
}

fn f_max(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::Number(numbers(a)?.into_iter().fold(f64::NEG_INFINITY, f64::max)))
}

fn f_sum(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let list = a.seq(0)?;
    if list.is_empty() {
        return Err(err_at(0, "cannot sum an empty list"));
    }
    let mut total = 0.0;
    for (i, el) in list.iter().enumerate() {
        total += conv_num(el).map_err(|m| err_at(0, format!("element {i} of the list {m}")))?;
    }
    Ok(Value::Number(total))
}

fn f_abs(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::Number(a.num(0)?.abs()))
}

fn f_ceil(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::Number(a.num(0)?.ceil()))
}

fn f_floor(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::Number(a.num(0)?.floor()))
}

fn f_signum(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let n = a.num(0)?;
    Ok(Value::Number(if n > 0.0 {
        1.0
    } else if n < 0.0 {
        -1.0
    } else {
        0.0
    }))
}

fn f_pow(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let base = a.num(0)?;
    let exp = a.num(1)?;
    let r = base.powf(exp);
    if r.is_nan() {
        return Err(err(format!(
            "{} raised to the power {} is not a real number",
            format_number(base),
            format_number(exp)
        )));
    }
    Ok(Value::Number(r))
}

fn f_parseint(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let s = a.str(0)?;
    let base = a.int(1)?;
    if !(2..=62).contains(&base) {
        return Err(err_at(1, format!("base must be a whole number between 2 and 62 inclusive, got {base}")));
    }
    let bad = || err_at(0, format!("cannot parse {} as a base {base} integer", quote(&s)));
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(&s)),
    };
    if digits.is_empty() {
        return Err(bad());
    }
    let base_u = base as u32;
    let mut exact: Option<u128> = Some(0);
    let mut approx = 0.0f64;
    for c in digits.chars() {
        let d = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 10,
            'A'..='Z' if base <= 36 => c as u32 - 'A' as u32 + 10,
            'A'..='Z' => c as u32 - 'A' as u32 + 36,
            _ => return Err(bad()),
        };
        if d >= base_u {
            return Err(bad());
        }
        exact = exact.and_then(|x| x.checked_mul(u128::from(base_u))).and_then(|x| x.checked_add(u128::from(d)));
        approx = approx * f64::from(base_u) + f64::from(d);
    }
    let n = exact.map_or(approx, |x| x as f64);
    if !n.is_finite() {
        return Err(err_at(0, format!("{} is too large to represent", quote(&s))));
    }
    Ok(Value::Number(if neg { -n } else { n }))
}

// ---------------------------------------------------------------------------
// Network (CIDR)
// ---------------------------------------------------------------------------

/// A parsed prefix: the network address (host bits cleared) and its length.
#[derive(Clone, Copy)]
struct Net {
    v6: bool,
    addr: u128,
    len: u32,
}

impl Net {
    fn bits(&self) -> u32 {
        if self.v6 { 128 } else { 32 }
    }

    /// The host part: all ones for `host_bits` bits.
    fn host_mask(&self) -> u128 {
        ones(self.bits() - self.len)
    }

    fn family(&self) -> &'static str {
        if self.v6 { "IPv6" } else { "IPv4" }
    }
}

/// A mask of `n` low bits set (n ≤ 128).
fn ones(n: u32) -> u128 {
    if n >= 128 { u128::MAX } else { (1u128 << n) - 1 }
}

fn fmt_addr(v6: bool, a: u128) -> String {
    if v6 { Ipv6Addr::from(a).to_string() } else { Ipv4Addr::from(a as u32).to_string() }
}

/// IPv4 dotted quad, allowing leading zeros (read as decimal) like Terraform.
fn parse_ipv4(s: &str) -> Option<u32> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut out = 0u32;
    for p in parts {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u32 = p.parse().ok()?;
        if n > 255 {
            return None;
        }
        out = (out << 8) | n;
    }
    Some(out)
}

fn parse_cidr(s: &str) -> Result<Net, String> {
    let bad = |why: &str| format!("prefix {} is not a valid CIDR prefix: {why}", quote(s));
    let Some((ip, len)) = s.split_once('/') else {
        return Err(bad("expected an address, a slash and a prefix length, like \"10.0.0.0/16\""));
    };
    let (v6, addr) = if let Some(v4) = parse_ipv4(ip) {
        (false, u128::from(v4))
    } else if let Ok(v6) = ip.parse::<Ipv6Addr>() {
        (true, u128::from(v6))
    } else {
        return Err(bad(&format!("{} is not an IP address", quote(ip))));
    };
    let bits = if v6 { 128 } else { 32 };
    let len: u32 = if !len.is_empty() && len.len() <= 3 && len.bytes().all(|b| b.is_ascii_digit()) {
        len.parse().unwrap_or(u32::MAX)
    } else {
        u32::MAX
    };
    if len > bits {
        return Err(bad(&format!(
            "the prefix length must be a number from 0 to {bits} for an IPv{} address",
            if v6 { 6 } else { 4 }
        )));
    }
    let net = Net { v6, addr, len };
    Ok(Net { addr: addr & !net.host_mask(), ..net })
}

fn cidr_arg(a: &Args<'_>) -> Result<Net, FnError> {
    parse_cidr(&a.str(0)?).map_err(|m| err_at(0, m))
}

fn f_cidrhost(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let net = cidr_arg(a)?;
    let n = a.num(1)?;
    if n.fract() != 0.0 {
        return Err(err_at(1, format!("`hostnum` must be a whole number, got {}", format_number(n))));
    }
    let host_bits = net.bits() - net.len;
    let max = net.host_mask();
    let out_of_range = || {
        let count = if host_bits >= 128 { "2^128".to_string() } else { (1u128 << host_bits).to_string() };
        err_at(
            1,
            format!(
                "prefix of {} bits does not accommodate a host numbered {} (it has {count} addresses: hostnum must be from -{count} to {max})",
                net.len,
                format_number(n)
            ),
        )
    };
    if n.abs() >= 1.0e38 {
        return Err(out_of_range());
    }
    let h = n as i128;
    let host: u128 = if h >= 0 {
        h as u128
    } else {
        let back = h.unsigned_abs() - 1;
        if back > max {
            return Err(out_of_range());
        }
        max - back
    };
    if host > max {
        return Err(out_of_range());
    }
    Ok(Value::String(fmt_addr(net.v6, net.addr | host)))
}

fn f_cidrnetmask(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let net = cidr_arg(a)?;
    if net.v6 {
        return Err(err_at(0, format!("IPv6 addresses cannot have a netmask: {}", a.str(0)?)));
    }
    Ok(Value::String(fmt_addr(false, ones(32) & !net.host_mask())))
}

/// Terraform allows at most 32 new bits per step (portability of the subnet number).
const MAX_NEWBITS: i64 = 32;

fn f_cidrsubnet(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let net = cidr_arg(a)?;
    let newbits = a.int(1)?;
    let netnum = a.int(2)?;
    if newbits < 0 {
        return Err(err_at(1, format!("`newbits` must not be negative, got {newbits}")));
    }
    if newbits > MAX_NEWBITS {
        return Err(err_at(1, format!("may not extend prefix by more than {MAX_NEWBITS} bits, got {newbits}")));
    }
    let newlen = net.len + newbits as u32;
    if newlen > net.bits() {
        return Err(err_at(
            1,
            format!(
                "insufficient address space to extend prefix of {} by {newbits}: an {} prefix has at most {} bits",
                net.len,
                net.family(),
                net.bits()
            ),
        ));
    }
    if netnum < 0 || netnum as u128 > ones(newbits as u32) {
        return Err(err_at(
            2,
            format!(
                "prefix extension of {newbits} does not accommodate a subnet numbered {netnum} (netnum must be from 0 to {})",
                ones(newbits as u32)
            ),
        ));
    }
    let shifted = (netnum as u128).checked_shl(net.bits() - newlen).unwrap_or(0);
    Ok(Value::String(format!("{}/{newlen}", fmt_addr(net.v6, net.addr | shifted))))
}

fn f_cidrsubnets(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let net = cidr_arg(a)?;
    let last = net.addr | net.host_mask();
    // Next free address; None once the address space is exhausted.
    let mut pos = Some(net.addr);
    let mut prev: Option<String> = None;
    let mut out = Vec::new();
    for i in 1..a.len() {
        let newbits = a.int(i)?;
        if newbits < 1 {
            return Err(err_at(i, format!("must extend prefix by at least one bit, got {newbits}")));
        }
        if newbits > MAX_NEWBITS {
            return Err(err_at(i, format!("may not extend prefix by more than {MAX_NEWBITS} bits, got {newbits}")));
        }
        let newlen = net.len + newbits as u32;
        if newlen > net.bits() {
            return Err(err_at(
                i,
                format!("would extend prefix to {newlen} bits, which is too long for an {} address", net.family()),
            ));
        }
        let size_mask = ones(net.bits() - newlen);
        let start = pos.and_then(|p| p.checked_add(size_mask)).map(|p| p & !size_mask);
        let Some(start) = start.filter(|s| s.checked_add(size_mask).is_some_and(|end| end <= last)) else {
            let after = prev.map_or_else(|| format!("in {}", a.str(0).unwrap_or_default()), |p| format!("after {p}"));
            return Err(err_at(
                i,
                format!("not enough remaining address space for a subnet with a prefix of {newlen} bits {after}"),
            ));
        };
        let s = format!("{}/{newlen}", fmt_addr(net.v6, start));
        out.push(Value::String(s.clone()));
        prev = Some(s);
        pos = (start | size_mask).checked_add(1);
    }
    Ok(Value::List(out))
}

// ---------------------------------------------------------------------------
// Encoding and hashing
// ---------------------------------------------------------------------------

fn f_base64encode(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::String(BASE64.encode(a.str(0)?)))
}

fn f_base64decode(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let s = a.str(0)?;
    // Go's decoder, which Terraform uses, ignores line breaks.
    let compact: String = s.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    let bytes = BASE64
        .decode(compact.as_bytes())
        .map_err(|e| err_at(0, format!("the given value is not valid base64: {e}")))?;
    String::from_utf8(bytes)
        .map(Value::String)
        .map_err(|_| err_at(0, "the decoded bytes are not valid UTF-8; use filebase64 or keep the data base64-encoded"))
}

fn f_base64sha256(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::String(BASE64.encode(Sha256::digest(a.str(0)?.as_bytes()))))
}

fn f_sha256(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::String(hex(&Sha256::digest(a.str(0)?.as_bytes()))))
}

/// Numbers as Terraform writes them in JSON and YAML: never in exponent form.
fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.0e15 { format_number(n) } else { format!("{n}") }
}

/// Writes a JSON string the way Go's encoder (and so Terraform) does, escaping
/// `<`, `>`, `&`, U+2028 and U+2029.
fn json_quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_write(v: &Value, out: &mut String) -> Result<(), String> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_finite() => out.push_str(&number_text(*n)),
        Value::Number(_) => return Err("a non-finite number cannot be encoded as JSON".into()),
        Value::String(s) => json_quote(s, out),
        Value::List(xs) | Value::Set(xs) => {
            out.push('[');
            for (i, x) in xs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_write(x, out)?;
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_quote(k, out);
                out.push(':');
                json_write(x, out)?;
            }
            out.push('}');
        }
        Value::Unknown => return Err("a value that is not known yet cannot be encoded".into()),
    }
    Ok(())
}

fn json_encode(v: &Value) -> Result<String, String> {
    let mut out = String::new();
    json_write(v, &mut out)?;
    Ok(out)
}

fn f_jsonencode(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    json_encode(a.get(0)).map(Value::String).map_err(|m| err_at(0, m))
}

fn f_jsondecode(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    let s = a.str(0)?;
    let j: serde_json::Value = serde_json::from_str(&s).map_err(|e| err_at(0, format!("invalid JSON: {e}")))?;
    Ok(Value::from_json(&j))
}

fn f_yamldecode(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    fn convert(y: &serde_yaml::Value) -> Result<Value, String> {
        use serde_yaml::Value as Y;
        Ok(match y {
            Y::Null => Value::Null,
            Y::Bool(b) => Value::Bool(*b),
            Y::Number(n) => match n.as_f64() {
                Some(f) if f.is_finite() => Value::Number(f),
                _ => return Err(format!("the number {n} cannot be represented")),
            },
            Y::String(s) => Value::String(s.clone()),
            Y::Sequence(xs) => Value::List(xs.iter().map(convert).collect::<Result<_, _>>()?),
            Y::Mapping(m) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    let key = match convert(k)? {
                        Value::String(s) => s,
                        Value::Number(n) => format_number(n),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => "null".to_string(),
                        other => return Err(format!("mapping keys must be strings, got a {}", other.type_name())),
                    };
                    out.insert(key, convert(v)?);
                }
                Value::Map(out)
            }
            Y::Tagged(t) => convert(&t.value)?,
        })
    }
    let s = a.str(0)?;
    let mut y: serde_yaml::Value = serde_yaml::from_str(&s).map_err(|e| err_at(0, format!("invalid YAML: {e}")))?;
    y.apply_merge().map_err(|e| err_at(0, format!("invalid YAML: {e}")))?;
    convert(&y).map_err(|m| err_at(0, m))
}

fn f_yamlencode(_: &FnCtx<'_>, a: &Args<'_>) -> Result<Value, FnError> {
    Ok(Value::String(YamlEmitter::encode(a.get(0))))
}

/// A small YAML emitter that reproduces the output of the libyaml-derived
/// emitter behind Terraform's `yamlencode`: block style, every string
/// double-quoted (multi-line strings as `|` literals when they can be), keys
/// quoted, sequences inside mappings not indented, long quoted strings folded
/// after column 80, and `...` after a plain scalar document.
struct YamlEmitter {
    out: String,
    column: usize,
    indent: i64,
    indents: Vec<i64>,
    whitespace: bool,
    indention: bool,
    open_ended: bool,
}

const YAML_INDENT: i64 = 2;
const YAML_WIDTH: usize = 80;

fn yaml_is_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn yaml_printable(c: char) -> bool {
    matches!(c, '\n' | '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}') && c != '\u{feff}'
}

impl YamlEmitter {
    fn encode(v: &Value) -> String {
        let mut e = YamlEmitter {
            out: String::new(),
            column: 0,
            indent: -1,
            indents: Vec::new(),
            whitespace: true,
            indention: true,
            open_ended: false,
        };
        e.node(v, true, false, false);
        e.write_indent();
        if e.open_ended {
            e.write_indicator("...", true, false, false);
            e.write_indent();
        }
        e.out
    }

    fn put(&mut self, c: char) {
        self.out.push(c);
        self.column += 1;
    }

    fn put_break(&mut self) {
        self.out.push('\n');
        self.column = 0;
    }

    fn write_indent(&mut self) {
        let indent = usize::try_from(self.indent.max(0)).unwrap_or(0);
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.put_break();
        }
        while self.column < indent {
            self.put(' ');
        }
        self.whitespace = true;
        self.indention = true;
    }

    fn write_indicator(&mut self, s: &str, need_ws: bool, is_ws: bool, is_indention: bool) {
        if need_ws && !self.whitespace {
            self.put(' ');
        }
        for c in s.chars() {
            self.put(c);
        }
        self.whitespace = is_ws;
        self.indention = self.indention && is_indention;
        self.open_ended = false;
    }

    fn increase_indent(&mut self, flow: bool, indentless: bool) {
        self.indents.push(self.indent);
        if self.indent < 0 {
            self.indent = if flow { YAML_INDENT } else { 0 };
        } else if !indentless {
            self.indent += YAML_INDENT;
        }
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().unwrap_or(-1);
    }

    fn node(&mut self, v: &Value, root: bool, mapping_ctx: bool, simple_key: bool) {
        match v {
            Value::List(xs) | Value::Set(xs) if xs.is_empty() => self.flow_empty("[", "]"),
            Value::Map(m) if m.is_empty() => self.flow_empty("{", "}"),
            Value::List(xs) | Value::Set(xs) => {
                self.increase_indent(false, mapping_ctx && !self.indention);
                for x in xs {
                    self.write_indent();
                    self.write_indicator("-", true, false, true);
                    self.node(x, false, false, false);
                }
                self.pop_indent();
            }
            Value::Map(m) => {
                self.increase_indent(false, false);
                for (k, x) in m {
                    self.write_indent();
                    if k.len() <= 128 && !k.chars().any(yaml_is_break) {
                        self.string(k, true);
                        self.write_indicator(":", false, false, false);
                    } else {
                        self.write_indicator("?", true, false, true);
                        self.string(k, false);
                        self.write_indent();
                        self.write_indicator(":", true, false, true);
                    }
                    self.node(x, false, true, false);
                }
                self.pop_indent();
            }
            Value::String(s) => self.string(s, simple_key),
            Value::Number(n) => self.plain(&number_text(*n), root),
            Value::Bool(b) => self.plain(if *b { "true" } else { "false" }, root),
            Value::Null | Value::Unknown => self.plain("null", root),
        }
    }

    fn flow_empty(&mut self, open: &str, close: &str) {
        self.write_indicator(open, true, true, false);
        self.write_indicator(close, false, false, false);
    }

    fn plain(&mut self, text: &str, root: bool) {
        if !self.whitespace {
            self.put(' ');
        }
        for c in text.chars() {
            self.put(c);
        }
        self.whitespace = false;
        self.indention = false;
        if root {
            self.open_ended = true;
        }
    }

    fn string(&mut self, s: &str, simple_key: bool) {
        let literal = !simple_key && s.contains('\n') && Self::literal_allowed(s);
        self.increase_indent(true, false);
        if literal {
            self.literal(s);
        } else {
            self.double_quoted(s, !simple_key);
        }
        self.pop_indent();
    }

    /// libyaml refuses block scalars with unprintable characters, a space before a
    /// line break, or a trailing space.
    fn literal_allowed(s: &str) -> bool {
        let chars: Vec<char> = s.chars().collect();
        chars.iter().all(|c| yaml_printable(*c))
            && chars.last() != Some(&' ')
            && !chars.windows(2).any(|w| w[0] == ' ' && yaml_is_break(w[1]))
    }

    fn literal(&mut self, s: &str) {
        self.write_indicator("|", true, false, false);
        if s.starts_with(' ') || s.starts_with(yaml_is_break) {
            self.write_indicator("2", false, false, false);
        }
        let mut rev = s.chars().rev();
        let chomp = match (rev.next(), rev.next()) {
            (None, _) => Some("-"),
            (Some(last), _) if !yaml_is_break(last) => Some("-"),
            (Some(_), None) => Some("+"),
            (Some(_), Some(prev)) if yaml_is_break(prev) => Some("+"),
            _ => None,
        };
        if let Some(c) = chomp {
            self.write_indicator(c, false, false, false);
        }
        self.put_break();
        self.indention = true;
        self.whitespace = true;
        let mut breaks = true;
        for c in s.chars() {
            if c == '\n' {
                self.put_break();
                self.indention = true;
                breaks = true;
            } else if yaml_is_break(c) {
                self.out.push(c);
                self.column = 0;
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                    breaks = false;
                }
                self.put(c);
                self.indention = false;
            }
        }
    }

    fn double_quoted(&mut self, s: &str, allow_breaks: bool) {
        self.write_indicator("\"", true, false, false);
        let chars: Vec<char> = s.chars().collect();
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if !yaml_printable(c) || yaml_is_break(c) || c == '"' || c == '\\' {
                self.put('\\');
                let short = match c {
                    '\0' => Some('0'),
                    '\u{7}' => Some('a'),
                    '\u{8}' => Some('b'),
                    '\t' => Some('t'),
                    '\n' => Some('n'),
                    '\u{b}' => Some('v'),
                    '\u{c}' => Some('f'),
                    '\r' => Some('r'),
                    '\u{1b}' => Some('e'),
                    '"' => Some('"'),
                    '\\' => Some('\\'),
                    '\u{85}' => Some('N'),
                    '\u{a0}' => Some('_'),
                    '\u{2028}' => Some('L'),
                    '\u{2029}' => Some('P'),
                    _ => None,
                };
                match short {
                    Some(e) => self.put(e),
                    None => {
                        let v = c as u32;
                        let escaped = if v <= 0xff {
                            format!("x{v:02X}")
                        } else if v <= 0xffff {
                            format!("u{v:04X}")
                        } else {
                            format!("U{v:08X}")
                        };
                        for e in escaped.chars() {
                            self.put(e);
                        }
                    }
                }
                spaces = false;
            } else if c == ' ' {
                if allow_breaks && !spaces && self.column > YAML_WIDTH && i != 0 && i + 1 != chars.len() {
                    self.write_indent();
                    if chars.get(i + 1) == Some(&' ') {
                        self.put('\\');
                    }
                } else {
                    self.put(' ');
                }
                spaces = true;
            } else {
                self.put(c);
                spaces = false;
            }
        }
        self.write_indicator("\"", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::string(x)
    }
    fn n(x: f64) -> Value {
        Value::Number(x)
    }
    fn b(x: bool) -> Value {
        Value::Bool(x)
    }
    fn l(xs: Vec<Value>) -> Value {
        Value::List(xs)
    }
    fn sl(xs: &[&str]) -> Value {
        Value::List(xs.iter().map(|x| s(x)).collect())
    }
    fn nl(xs: &[f64]) -> Value {
        Value::List(xs.iter().map(|x| n(*x)).collect())
    }
    fn m(entries: Vec<(&str, Value)>) -> Value {
        Value::map(entries)
    }
    const U: Value = Value::Unknown;

    fn ctx_call(dir: &Path, name: &str, args: Vec<Value>) -> Result<Value, FnError> {
        call(name, &FnCtx { base_dir: dir }, args)
    }
    fn c(name: &str, args: Vec<Value>) -> Result<Value, FnError> {
        ctx_call(Path::new("/nonexistent-virtform-base"), name, args)
    }
    fn ok(name: &str, args: Vec<Value>) -> Value {
        match c(name, args) {
            Ok(v) => v,
            Err(e) => panic!("{name} failed: {}", e.message),
        }
    }
    fn fail(name: &str, args: Vec<Value>) -> FnError {
        match c(name, args) {
            Ok(v) => panic!("{name} unexpectedly returned {v}"),
            Err(e) => e,
        }
    }
    /// Asserts an error whose message contains `needle`, and returns it.
    fn fails_with(name: &str, args: Vec<Value>, needle: &str) -> FnError {
        let e = fail(name, args);
        assert!(e.message.contains(needle), "message {:?} does not contain {:?}", e.message, needle);
        assert!(e.message.starts_with(name), "message {:?} lacks the function name", e.message);
        e
    }

    /// A fresh directory under the system temp dir.
    fn temp_dir(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "virtform-fn-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    // --- table, API ----------------------------------------------------------

    #[test]
    fn table_is_sorted_unique_and_complete() {
        let names = names();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "FUNCTIONS must be sorted and unique");
        for required in [
            "file", "fileexists", "filebase64", "filesha256", "basename", "dirname", "pathexpand", "format",
            "formatlist", "join", "split", "lower", "upper", "title", "replace", "trimspace", "trim", "trimprefix",
            "trimsuffix", "startswith", "endswith", "substr", "strrev", "length", "concat", "merge", "lookup",
            "keys", "values", "contains", "index", "element", "range", "toset", "tolist", "tomap", "tostring",
            "tonumber", "tobool", "min", "max", "sum", "abs", "ceil", "floor", "pow", "signum", "parseint",
            "coalesce", "coalescelist", "compact", "distinct", "flatten", "reverse", "slice", "sort", "zipmap",
            "setunion", "setintersection", "setsubtract", "alltrue", "anytrue", "one", "chunklist", "cidrhost",
            "cidrsubnet", "cidrnetmask", "cidrsubnets", "base64encode", "base64decode", "base64sha256", "sha256",
            "jsonencode", "jsondecode", "yamlencode", "yamldecode", "templatefile", "try", "can",
        ] {
            assert!(names.contains(&required), "missing {required}");
        }
        for spec in FUNCTIONS {
            assert!(spec.sig.starts_with(&format!("{}(", spec.name)), "bad signature for {}", spec.name);
            assert!(spec.min <= spec.max);
        }
    }

    #[test]
    fn signatures() {
        assert_eq!(signature("cidrhost"), Some("cidrhost(prefix, hostnum)"));
        assert_eq!(signature("templatefile"), Some("templatefile(path, vars)"));
        assert_eq!(signature("nope"), None);
    }

    #[test]
    fn caller_evaluated_functions_are_refused() {
        for name in ["templatefile", "try", "can"] {
            let e = fail(name, vec![s("x"), m(vec![])]);
            assert!(e.message.contains("evaluated by the expression evaluator"), "{}", e.message);
        }
    }

    #[test]
    fn unknown_function_suggests_closest() {
        let e = fail("lowr", vec![s("A")]);
        assert_eq!(e.message, "there is no function named \"lowr\"; did you mean `lower`?");
        assert_eq!(e.arg, None);
        let e = fail("Upper", vec![s("a")]);
        assert!(e.message.ends_with("did you mean `upper`?"), "{}", e.message);
        let e = fail("frobnicate", vec![]);
        assert_eq!(e.message, "there is no function named \"frobnicate\"");
    }

    #[test]
    fn did_you_mean_helper() {
        let cands = ["cidrhost", "cidrsubnet", "cidrsubnets"];
        assert_eq!(did_you_mean("cidrhots", cands), Some("cidrhost"));
        assert_eq!(did_you_mean("cidrsubnetz", cands), Some("cidrsubnet"));
        assert_eq!(did_you_mean("x", cands), None);
        assert_eq!(did_you_mean("", cands), None);
        assert_eq!(did_you_mean(&"y".repeat(10_000), cands), None);
    }

    #[test]
    fn arity_errors() {
        let e = fail("join", vec![s(",")]);
        assert_eq!(e.message, "join expects 2 arguments, got 1");
        assert_eq!(e.arg, None);
        let e = fail("upper", vec![s("a"), s("b")]);
        assert_eq!(e.message, "upper expects 1 argument, got 2");
        assert_eq!(e.arg, Some(1));
        assert_eq!(fail("concat", vec![]).message, "concat expects at least 1 argument, got 0");
        assert_eq!(fail("lookup", vec![m(vec![])]).message, "lookup expects 2 to 3 arguments, got 1");
        assert_eq!(fail("range", vec![]).message, "range expects 1 to 3 arguments, got 0");
    }

    #[test]
    fn type_errors_name_the_argument() {
        let e = fail("cidrhost", vec![l(vec![]), n(1.0)]);
        assert_eq!(e.message, "cidrhost: `prefix` must be a string, got list");
        assert_eq!(e.arg, Some(0));
        let e = fail("upper", vec![Value::Null]);
        assert_eq!(e.message, "upper: `string` must not be null");
        let e = fail("concat", vec![sl(&["a"]), s("b")]);
        assert_eq!(e.message, "concat: argument 2 (`lists`) must be a list or set, got string");
        assert_eq!(e.arg, Some(1));
    }

    // --- filesystem --------------------------------------------------------

    #[test]
    fn file_functions() {
        let dir = temp_dir("file");
        std::fs::write(dir.join("hello.txt"), "hello\n").expect("write");
        std::fs::write(dir.join("bin"), [0xffu8, 0x00, 0x01]).expect("write");
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        let call = |name: &str, p: &str| ctx_call(&dir, name, vec![s(p)]);

        assert_eq!(call("file", "hello.txt"), Ok(s("hello\n")));
        let abs = dir.join("hello.txt").to_string_lossy().to_string();
        assert_eq!(call("file", &abs), Ok(s("hello\n")));
        let ctx = FnCtx { base_dir: &dir };
        assert_eq!(read_file(&ctx, "hello.txt"), Ok("hello\n".to_string()));

        let e = call("file", "missing.txt").unwrap_err();
        assert_eq!(e.message, "file: no file exists at \"missing.txt\"");
        assert_eq!(e.arg, Some(0));
        let e = call("file", "bin").unwrap_err();
        assert!(e.message.contains("not valid UTF-8; use filebase64"), "{}", e.message);
        let e = call("file", "sub").unwrap_err();
        assert!(e.message.contains("is a directory"), "{}", e.message);
        let e = read_file(&ctx, "missing.txt").unwrap_err();
        assert_eq!(e.message, "no file exists at \"missing.txt\"");

        assert_eq!(call("fileexists", "hello.txt"), Ok(b(true)));
        assert_eq!(call("fileexists", "nope.txt"), Ok(b(false)));
        assert!(call("fileexists", "sub").unwrap_err().message.contains("is a directory, not a file"));

        assert_eq!(call("filebase64", "bin"), Ok(s("/wAB")));
        assert!(call("filebase64", "nope").unwrap_err().message.starts_with("filebase64: no file exists"));

        assert_eq!(
            call("filesha256", "hello.txt"),
            Ok(s("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"))
        );
        assert!(call("filesha256", "nope").is_err());

        assert_eq!(ctx_call(&dir, "file", vec![U]), Ok(U));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn basename_and_dirname_follow_go() {
        for (p, base, dir) in [
            ("foo/bar/baz.txt", "baz.txt", "foo/bar"),
            ("/foo/bar/", "bar", "/foo/bar"),
            ("baz", "baz", "."),
            ("/", "/", "/"),
            ("", ".", "."),
            ("/a", "a", "/"),
            ("a//b/../c/d", "d", "a/c"),
            ("héllo/wörld", "wörld", "héllo"),
        ] {
            assert_eq!(ok("basename", vec![s(p)]), s(base), "basename({p:?})");
            assert_eq!(ok("dirname", vec![s(p)]), s(dir), "dirname({p:?})");
        }
        fails_with("basename", vec![l(vec![])], "`path` must be a string, got list");
        fails_with("dirname", vec![Value::Null], "must not be null");
    }

    #[test]
    fn pathexpand_uses_home() {
        let Ok(home) = std::env::var("HOME") else { return };
        if home.is_empty() {
            return;
        }
        let home = go_clean(&home);
        assert_eq!(ok("pathexpand", vec![s("~/.ssh/id_rsa")]), s(&format!("{home}/.ssh/id_rsa")));
        assert_eq!(ok("pathexpand", vec![s("~")]), s(&home));
        assert_eq!(ok("pathexpand", vec![s("/etc/hosts")]), s("/etc/hosts"));
        assert_eq!(ok("pathexpand", vec![s("a/~b")]), s("a/~b"));
        fails_with("pathexpand", vec![s("~alice/x")], "only `~` and `~/...`");
    }

    // --- format -------------------------------------------------------------

    fn fmt(spec: &str, args: Vec<Value>) -> String {
        let mut all = vec![s(spec)];
        all.extend(args);
        match ok("format", all) {
            Value::String(x) => x,
            other => panic!("format returned {other}"),
        }
    }

    #[test]
    fn format_verbs() {
        assert_eq!(fmt("Hello, %s!", vec![s("Ander")]), "Hello, Ander!");
        assert_eq!(fmt("There are %d lights", vec![n(4.0)]), "There are 4 lights");
        assert_eq!(fmt("%d", vec![s("42")]), "42");
        assert_eq!(fmt("%5d|%-5d|%05d", vec![n(42.0), n(42.0), n(-42.0)]), "   42|42   |-0042");
        assert_eq!(fmt("%+d % d", vec![n(5.0), n(5.0)]), "+5  5");
        assert_eq!(fmt("%x %X %o %b", vec![n(255.0), n(255.0), n(8.0), n(5.0)]), "ff FF 10 101");
        assert_eq!(fmt("%#x %#o %#b", vec![n(255.0), n(8.0), n(5.0)]), "0xff 010 0b101");
        assert_eq!(fmt("%.3d", vec![n(7.0)]), "007");
        assert_eq!(fmt("%f", vec![n(1.23456)]), "1.234560");
        assert_eq!(fmt("%.2f", vec![n(1.23456)]), "1.23");
        assert_eq!(fmt("%8.2f|%-8.2f|%08.2f", vec![n(-1.23456), n(1.23456), n(-1.23456)]), "   -1.23|1.23    |-0001.23");
        assert_eq!(fmt("%e", vec![n(123456.789)]), "1.234568e+05");
        assert_eq!(fmt("%.2E", vec![n(0.000123)]), "1.23E-04");
        assert_eq!(fmt("%g %g %g", vec![n(1234567.0), n(0.5), n(100.0)]), "1.234567e+06 0.5 100");
        assert_eq!(fmt("%g %g", vec![n(0.00001), n(0.0001)]), "1e-05 0.0001");
        assert_eq!(fmt("%.3g %.3g %.3g", vec![n(1.23456), n(1234.0), n(100.0)]), "1.23 1.23e+03 100");
        assert_eq!(fmt("%t %t", vec![b(true), s("false")]), "true false");
        assert_eq!(fmt("%q", vec![s("a\"b<")]), "\"a\\\"b\\u003c\"");
        assert_eq!(fmt("%.3s|%5s|%-5s|", vec![s("abcdef"), s("ab"), s("ab")]), "abc|   ab|ab   |");
        assert_eq!(fmt("%s %s", vec![n(1.5), b(true)]), "1.5 true");
        assert_eq!(fmt("100%%", vec![]), "100%");
        assert_eq!(fmt("%v %v %v %v", vec![s("x"), n(12345678.0), b(false), Value::Null]), "x 12345678 false null");
        assert_eq!(fmt("%v", vec![m(vec![("a", n(1.0))])]), "{\"a\":1}");
        assert_eq!(fmt("%#v %#v", vec![s("hello"), sl(&["a"])]), "\"hello\" [\"a\"]");
        assert_eq!(fmt("%[2]s %[1]s %s", vec![s("a"), s("b")]), "b a b");
        assert_eq!(fmt("%5v|", vec![s("é")]), "    é|");
        assert_eq!(fmt("ünï %s", vec![s("ok")]), "ünï ok");
    }

    #[test]
    fn format_errors() {
        let e = fails_with("format", vec![s("%s and %s"), s("a")], "not enough arguments");
        assert!(e.message.contains("\"%s\" at offset 7"), "{}", e.message);
        assert_eq!(e.arg, Some(0));
        let e = fails_with("format", vec![s("%s %d"), s("a"), n(1.5)], "an integer is required");
        assert_eq!(e.arg, Some(2));
        fails_with("format", vec![s("%d"), s("abc")], "must be a number");
        fails_with("format", vec![s("%s"), sl(&["a"])], "must be a string, got list");
        fails_with("format", vec![s("%s"), Value::Null], "null value cannot be formatted");
        fails_with("format", vec![s("%y"), s("a")], "unsupported format verb 'y'");
        fails_with("format", vec![s("abc %"), s("a")], "invalid format string starting at offset 4");
        fails_with("format", vec![s("%!"), s("a")], "unrecognized format character '!'");
        fails_with("format", vec![s("x"), s("a")], "too many arguments; no verbs in format string");
        let e = fails_with("format", vec![s("%s"), s("a"), s("b")], "too many arguments; only 1 used");
        assert_eq!(e.arg, Some(2));
        fails_with("format", vec![s("%99999999999999999999999d"), n(1.0)], "too large");
        fails_with("format", vec![s("%[0]d"), n(1.0)], "invalid argument index");
        assert_eq!(ok("format", vec![s("%s"), U]), U);
        assert_eq!(ok("format", vec![s("%v"), l(vec![U])]), U);
    }

    #[test]
    fn formatlist_iterates() {
        assert_eq!(
            ok("formatlist", vec![s("Hello, %s!"), sl(&["Valentina", "Ander"])]),
            sl(&["Hello, Valentina!", "Hello, Ander!"])
        );
        assert_eq!(
            ok("formatlist", vec![s("%s=%d"), sl(&["a", "b"]), n(1.0)]),
            sl(&["a=1", "b=1"])
        );
        assert_eq!(ok("formatlist", vec![s("%s"), l(vec![])]), l(vec![]));
        assert_eq!(ok("formatlist", vec![s("x")]), sl(&["x"]));
        assert_eq!(ok("formatlist", vec![s("%s"), l(vec![s("a"), U])]), l(vec![s("a"), U]));
        assert_eq!(ok("formatlist", vec![s("%s"), U]), U);
        fails_with("formatlist", vec![s("%s%s"), sl(&["a", "b"]), sl(&["c"])], "inconsistent");
        let e = fails_with("formatlist", vec![s("%s %d"), n(1.0), sl(&["a"])], "error on format iteration 0");
        assert_eq!(e.arg, Some(2));
    }

    // --- strings ----------------------------------------------------------

    #[test]
    fn join_and_split() {
        assert_eq!(ok("join", vec![s(", "), sl(&["a", "b", "c"])]), s("a, b, c"));
        assert_eq!(ok("join", vec![s("-"), l(vec![s("a"), n(1.0), b(true)])]), s("a-1-true"));
        assert_eq!(ok("join", vec![s(","), Value::set(vec![s("b"), s("a")])]), s("a,b"));
        assert_eq!(ok("join", vec![s(","), l(vec![s("a"), U])]), U);
        fails_with("join", vec![s(","), l(vec![s("a"), Value::Null])], "element 1 of the list is null");
        fails_with("join", vec![s(","), s("abc")], "`list` must be a list or set, got string");
        fails_with("join", vec![s(","), l(vec![sl(&["x"])])], "element 0 of the list must be a string");

        assert_eq!(ok("split", vec![s(","), s("a,b,c")]), sl(&["a", "b", "c"]));
        assert_eq!(ok("split", vec![s(","), s("")]), sl(&[""]));
        assert_eq!(ok("split", vec![s(""), s("héj")]), sl(&["h", "é", "j"]));
        fails_with("split", vec![s(","), m(vec![])], "`string` must be a string, got map");
    }

    #[test]
    fn case_functions() {
        assert_eq!(ok("lower", vec![s("HELLO Ünï")]), s("hello ünï"));
        assert_eq!(ok("upper", vec![s("hello ünï")]), s("HELLO ÜNÏ"));
        assert_eq!(ok("upper", vec![n(1.0)]), s("1"));
        assert_eq!(ok("title", vec![s("hello world-foo_bar élan")]), s("Hello World-Foo_bar Élan"));
        fails_with("lower", vec![l(vec![])], "must be a string");
        fails_with("upper", vec![m(vec![])], "must be a string");
        fails_with("title", vec![Value::Null], "must not be null");
    }

    #[test]
    fn replace_is_plain_substring() {
        assert_eq!(ok("replace", vec![s("1 + 2 + 3"), s("+"), s("-")]), s("1 - 2 - 3"));
        assert_eq!(ok("replace", vec![s("a.b.c"), s("."), s("")]), s("abc"));
        assert_eq!(ok("replace", vec![s("/"), s("/"), s("x")]), s("x"));
        let e = fails_with("replace", vec![s("abc"), s("/b/"), s("x")], "regular expression patterns");
        assert_eq!(e.arg, Some(1));
    }

    #[test]
    fn trimming() {
        assert_eq!(ok("trimspace", vec![s("  hello\n\t")]), s("hello"));
        assert_eq!(ok("trim", vec![s("?!hello?!"), s("!?")]), s("hello"));
        assert_eq!(ok("trimprefix", vec![s("helloworld"), s("hello")]), s("world"));
        assert_eq!(ok("trimprefix", vec![s("hellohello"), s("hello")]), s("hello"));
        assert_eq!(ok("trimprefix", vec![s("world"), s("hello")]), s("world"));
        assert_eq!(ok("trimsuffix", vec![s("helloworld"), s("world")]), s("hello"));
        fails_with("trimspace", vec![l(vec![])], "must be a string");
        fails_with("trim", vec![s("x"), l(vec![])], "`cutset` must be a string");
        fails_with("trimprefix", vec![s("x"), Value::Null], "`prefix` must not be null");
        fails_with("trimsuffix", vec![m(vec![]), s("x")], "`string` must be a string");
    }

    #[test]
    fn starts_and_ends() {
        assert_eq!(ok("startswith", vec![s("hello world"), s("hello")]), b(true));
        assert_eq!(ok("startswith", vec![s("hello world"), s("world")]), b(false));
        assert_eq!(ok("endswith", vec![s("hello world"), s("world")]), b(true));
        assert_eq!(ok("endswith", vec![s("hello"), s("")]), b(true));
        fails_with("startswith", vec![s("x"), l(vec![])], "`prefix` must be a string");
        fails_with("endswith", vec![l(vec![]), s("x")], "`string` must be a string");
    }

    #[test]
    fn substr_counts_characters() {
        assert_eq!(ok("substr", vec![s("hello world"), n(1.0), n(4.0)]), s("ello"));
        assert_eq!(ok("substr", vec![s("🤔🤷"), n(0.0), n(1.0)]), s("🤔"));
        assert_eq!(ok("substr", vec![s("hello world"), n(-5.0), n(-1.0)]), s("world"));
        assert_eq!(ok("substr", vec![s("hello"), n(10.0), n(2.0)]), s(""));
        assert_eq!(ok("substr", vec![s("hello"), n(-10.0), n(2.0)]), s("he"));
        assert_eq!(ok("substr", vec![s("hello"), n(3.0), n(100.0)]), s("lo"));
        assert_eq!(ok("substr", vec![s("héllo"), n(1.0), n(0.0)]), s(""));
        assert_eq!(ok("substr", vec![s("hello"), n(1.0), n(1e15)]), s("ello"));
        fails_with("substr", vec![s("hello"), n(1.5), n(1.0)], "`offset` must be a whole number, got 1.5");
        fails_with("substr", vec![s("hello"), n(1.0), n(1e300)], "`length` is out of range");
    }

    #[test]
    fn strrev_reverses_characters() {
        assert_eq!(ok("strrev", vec![s("hello")]), s("olleh"));
        assert_eq!(ok("strrev", vec![s("a☃b")]), s("b☃a"));
        fails_with("strrev", vec![l(vec![])], "must be a string");
    }

    // --- collections ------------------------------------------------------

    #[test]
    fn length_of_everything() {
        assert_eq!(ok("length", vec![s("héllo")]), n(5.0));
        assert_eq!(ok("length", vec![l(vec![U, U])]), n(2.0));
        assert_eq!(ok("length", vec![Value::set(vec![s("a"), s("a")])]), n(1.0));
        assert_eq!(ok("length", vec![m(vec![("a", U)])]), n(1.0));
        assert_eq!(ok("length", vec![U]), U);
        fails_with("length", vec![n(5.0)], "must be a string, list, set or map, got number");
        fails_with("length", vec![Value::Null], "must not be null");
    }

    #[test]
    fn concat_and_merge() {
        assert_eq!(ok("concat", vec![sl(&["a"]), l(vec![U]), Value::set(vec![n(1.0)])]), l(vec![s("a"), U, n(1.0)]));
        assert_eq!(ok("concat", vec![sl(&["a"]), U]), U);
        fails_with("concat", vec![sl(&["a"]), m(vec![])], "argument 2 (`lists`) must be a list or set, got map");

        assert_eq!(
            ok("merge", vec![m(vec![("a", n(1.0)), ("b", n(2.0))]), Value::Null, m(vec![("b", U), ("c", n(3.0))])]),
            m(vec![("a", n(1.0)), ("b", U), ("c", n(3.0))])
        );
        assert_eq!(ok("merge", vec![]), m(vec![]));
        assert_eq!(ok("merge", vec![Value::Null]), Value::Null);
        assert_eq!(ok("merge", vec![m(vec![]), U]), U);
        fails_with("merge", vec![m(vec![]), sl(&["a"])], "argument 2 (`maps`) must be a map, got list");
    }

    #[test]
    fn lookup_keys_values() {
        let mp = m(vec![("a", s("ay")), ("b", s("bee")), ("u", U)]);
        assert_eq!(ok("lookup", vec![mp.clone(), s("a")]), s("ay"));
        assert_eq!(ok("lookup", vec![mp.clone(), s("c"), s("what?")]), s("what?"));
        assert_eq!(ok("lookup", vec![mp.clone(), s("u")]), U);
        assert_eq!(ok("lookup", vec![mp.clone(), U]), U);
        assert_eq!(ok("lookup", vec![mp.clone(), s("a"), U]), s("ay"));
        assert_eq!(ok("lookup", vec![mp.clone(), s("c"), U]), U);
        assert_eq!(ok("lookup", vec![U, s("a")]), U);
        let e = fails_with("lookup", vec![mp.clone(), s("c")], "no key \"c\"");
        assert_eq!(e.arg, Some(1));
        fails_with("lookup", vec![sl(&["a"]), s("a")], "`map` must be a map, got list");

        assert_eq!(ok("keys", vec![mp.clone()]), sl(&["a", "b", "u"]));
        assert_eq!(ok("values", vec![mp.clone()]), l(vec![s("ay"), s("bee"), U]));
        assert_eq!(ok("keys", vec![U]), U);
        fails_with("keys", vec![sl(&["a"])], "`map` must be a map, got list");
        fails_with("values", vec![s("a")], "`map` must be a map, got string");
    }

    #[test]
    fn contains_and_index() {
        assert_eq!(ok("contains", vec![sl(&["a", "b"]), s("b")]), b(true));
        assert_eq!(ok("contains", vec![sl(&["a", "b"]), s("c")]), b(false));
        assert_eq!(ok("contains", vec![nl(&[1.0]), s("1")]), b(false));
        assert_eq!(ok("contains", vec![l(vec![U, s("b")]), s("b")]), b(true));
        assert_eq!(ok("contains", vec![l(vec![U, s("b")]), s("c")]), U);
        assert_eq!(ok("contains", vec![l(vec![]), U]), b(false));
        assert_eq!(ok("contains", vec![U, s("c")]), U);
        fails_with("contains", vec![s("abc"), s("a")], "`list` must be a list or set, got string");

        assert_eq!(ok("index", vec![sl(&["a", "b", "c"]), s("b")]), n(1.0));
        assert_eq!(ok("index", vec![l(vec![s("a"), U]), s("a")]), n(0.0));
        assert_eq!(ok("index", vec![l(vec![U, s("a")]), s("a")]), U);
        let e = fails_with("index", vec![sl(&["a"]), s("z")], "\"z\" is not in the list");
        assert_eq!(e.arg, Some(1));
        fails_with("index", vec![Value::set(vec![s("a")]), s("a")], "sets have no order");
    }

    #[test]
    fn element_wraps() {
        let list = sl(&["a", "b", "c"]);
        assert_eq!(ok("element", vec![list.clone(), n(1.0)]), s("b"));
        assert_eq!(ok("element", vec![list.clone(), n(3.0)]), s("a"));
        assert_eq!(ok("element", vec![list.clone(), n(9e15)]), s("a"));
        assert_eq!(ok("element", vec![l(vec![U]), n(0.0)]), U);
        assert_eq!(fail("element", vec![l(vec![]), n(0.0)]).message, "element: list is empty");
        fails_with("element", vec![list.clone(), n(-1.0)], "index must not be negative");
        fails_with("element", vec![list, n(0.5)], "must be a whole number");
        fails_with("element", vec![Value::set(vec![s("a")]), n(0.0)], "cannot read elements from a set");
    }

    #[test]
    fn range_like_terraform() {
        assert_eq!(ok("range", vec![n(3.0)]), nl(&[0.0, 1.0, 2.0]));
        assert_eq!(ok("range", vec![n(0.0)]), l(vec![]));
        assert_eq!(ok("range", vec![n(-3.0)]), nl(&[0.0, -1.0, -2.0]));
        assert_eq!(ok("range", vec![n(1.0), n(4.0)]), nl(&[1.0, 2.0, 3.0]));
        assert_eq!(ok("range", vec![n(4.0), n(1.0)]), nl(&[4.0, 3.0, 2.0]));
        assert_eq!(ok("range", vec![n(1.0), n(8.0), n(2.0)]), nl(&[1.0, 3.0, 5.0, 7.0]));
        assert_eq!(ok("range", vec![n(1.0), n(2.0), n(0.25)]), nl(&[1.0, 1.25, 1.5, 1.75]));
        assert_eq!(ok("range", vec![n(10.0), n(5.0), n(-2.0)]), nl(&[10.0, 8.0, 6.0]));
        assert_eq!(ok("range", vec![s("2")]), nl(&[0.0, 1.0]));
        match ok("range", vec![n(1024.0)]) {
            Value::List(xs) => assert_eq!(xs.len(), 1024),
            other => panic!("{other}"),
        }
        assert_eq!(fail("range", vec![n(1.0), n(2.0), n(0.0)]).message, "range: step must not be zero");
        fails_with("range", vec![n(1025.0)], "more than 1024 values");
        fails_with("range", vec![n(0.0), n(1e300), n(1e-300)], "more than 1024 values");
        fails_with("range", vec![n(5.0), n(1.0), n(1.0)], "limit must not be less than start");
        fails_with("range", vec![n(1.0), n(5.0), n(-1.0)], "limit must not be greater than start");
        fails_with("range", vec![s("x")], "`limit` must be a number");
    }

    #[test]
    fn conversions() {
        assert_eq!(ok("toset", vec![sl(&["b", "a", "b"])]), Value::set(vec![s("a"), s("b")]));
        assert_eq!(ok("toset", vec![l(vec![s("a"), n(1.0), b(true)])]), Value::set(vec![s("a"), s("1"), s("true")]));
        assert_eq!(ok("toset", vec![l(vec![s("a"), U])]), U);
        fails_with("toset", vec![m(vec![])], "cannot convert map to a set");
        fails_with("toset", vec![l(vec![s("a"), sl(&["b"])])], "all elements must have the same type");

        assert_eq!(ok("tolist", vec![Value::set(vec![s("b"), s("a")])]), sl(&["a", "b"]));
        assert_eq!(ok("tolist", vec![l(vec![n(1.0), s("a"), U])]), l(vec![s("1"), s("a"), U]));
        assert_eq!(ok("tolist", vec![Value::Null]), Value::Null);
        fails_with("tolist", vec![s("a")], "cannot convert string to a list");

        assert_eq!(ok("tomap", vec![m(vec![("a", n(1.0)), ("b", s("x"))])]), m(vec![("a", s("1")), ("b", s("x"))]));
        fails_with("tomap", vec![sl(&["a"])], "cannot convert list to a map");

        assert_eq!(ok("tostring", vec![n(1.5)]), s("1.5"));
        assert_eq!(ok("tostring", vec![b(true)]), s("true"));
        assert_eq!(ok("tostring", vec![Value::Null]), Value::Null);
        fails_with("tostring", vec![sl(&["a"])], "cannot convert list to a string");

        assert_eq!(ok("tonumber", vec![s("12")]), n(12.0));
        assert_eq!(ok("tonumber", vec![s("-1.5e3")]), n(-1500.0));
        assert_eq!(ok("tonumber", vec![n(3.0)]), n(3.0));
        assert_eq!(ok("tonumber", vec![Value::Null]), Value::Null);
        for bad in ["abc", "", " 1", "0x10", "inf", "NaN", "1e999", "1e", "."] {
            fails_with("tonumber", vec![s(bad)], "cannot convert");
        }
        fails_with("tonumber", vec![b(true)], "cannot convert bool to a number");

        assert_eq!(ok("tobool", vec![s("true")]), b(true));
        assert_eq!(ok("tobool", vec![b(false)]), b(false));
        assert_eq!(ok("tobool", vec![Value::Null]), Value::Null);
        fails_with("tobool", vec![s("yes")], "cannot convert \"yes\" to a bool");
        fails_with("tobool", vec![n(1.0)], "cannot convert number to a bool");
    }

    #[test]
    fn numeric_functions() {
        assert_eq!(ok("min", vec![n(12.0), n(54.0), n(3.0)]), n(3.0));
        assert_eq!(ok("max", vec![n(12.0), s("54"), n(3.0)]), n(54.0));
        let e = fails_with("min", vec![nl(&[1.0, 2.0])], "write `list...`");
        assert_eq!(e.arg, Some(0));
        fails_with("max", vec![n(1.0), s("x")], "argument 2 (`numbers`) must be a number");

        assert_eq!(ok("sum", vec![nl(&[10.0, 13.0, 6.0, 4.5])]), n(33.5));
        assert_eq!(ok("sum", vec![Value::set(vec![n(1.0), n(2.0)])]), n(3.0));
        fails_with("sum", vec![l(vec![])], "cannot sum an empty list");
        fails_with("sum", vec![l(vec![n(1.0), s("x")])], "element 1 of the list must be a number");
        fails_with("sum", vec![nl(&[1e308, 1e308])], "too large to represent");

        assert_eq!(ok("abs", vec![n(-12.4)]), n(12.4));
        assert_eq!(ok("ceil", vec![n(5.1)]), n(6.0));
        assert_eq!(ok("floor", vec![n(-5.1)]), n(-6.0));
        assert_eq!(ok("signum", vec![n(-13.0)]), n(-1.0));
        assert_eq!(ok("signum", vec![n(0.0)]), n(0.0));
        assert_eq!(ok("signum", vec![n(344.0)]), n(1.0));
        assert_eq!(ok("pow", vec![n(3.0), n(2.0)]), n(9.0));
        assert_eq!(ok("pow", vec![n(4.0), n(0.0)]), n(1.0));
        fails_with("abs", vec![s("x")], "`number` must be a number");
        fails_with("ceil", vec![b(true)], "must be a number, got bool");
        fails_with("floor", vec![Value::Null], "must not be null");
        fails_with("signum", vec![l(vec![])], "must be a number");
        fails_with("pow", vec![n(10.0), n(400.0)], "too large to represent");
        fails_with("pow", vec![n(-8.0), n(0.5)], "not a real number");
    }

    #[test]
    fn parseint_bases() {
        assert_eq!(ok("parseint", vec![s("100"), n(10.0)]), n(100.0));
        assert_eq!(ok("parseint", vec![s("FF"), n(16.0)]), n(255.0));
        assert_eq!(ok("parseint", vec![s("-10"), n(16.0)]), n(-16.0));
        assert_eq!(ok("parseint", vec![s("1011111011101111"), n(2.0)]), n(48879.0));
        assert_eq!(ok("parseint", vec![s("aA"), n(62.0)]), n(10.0 * 62.0 + 36.0));
        assert_eq!(ok("parseint", vec![s("zz"), n(36.0)]), n(35.0 * 36.0 + 35.0));
        assert!(matches!(ok("parseint", vec![s(&"z".repeat(40)), n(36.0)]), Value::Number(x) if x > 1e60));
        fails_with("parseint", vec![s("12"), n(2.0)], "cannot parse \"12\" as a base 2 integer");
        fails_with("parseint", vec![s(""), n(10.0)], "cannot parse");
        fails_with("parseint", vec![s("1.5"), n(10.0)], "cannot parse");
        fails_with("parseint", vec![s("10"), n(1.0)], "between 2 and 62");
        fails_with("parseint", vec![s("10"), n(63.0)], "between 2 and 62");
        fails_with("parseint", vec![s(&"z".repeat(400)), n(36.0)], "too large to represent");
    }

    #[test]
    fn coalescing() {
        assert_eq!(ok("coalesce", vec![s(""), Value::Null, s("b")]), s("b"));
        assert_eq!(ok("coalesce", vec![n(1.0), n(2.0)]), n(1.0));
        assert_eq!(ok("coalesce", vec![n(1.0), s("x")]), s("1"));
        assert_eq!(ok("coalesce", vec![s("a"), U]), s("a"));
        assert_eq!(ok("coalesce", vec![s(""), U, s("b")]), U);
        fails_with("coalesce", vec![Value::Null, s("")], "no non-null, non-empty-string arguments");

        assert_eq!(ok("coalescelist", vec![l(vec![]), sl(&["c", "d"])]), sl(&["c", "d"]));
        assert_eq!(ok("coalescelist", vec![sl(&["a"]), U]), sl(&["a"]));
        assert_eq!(ok("coalescelist", vec![U, sl(&["a"])]), U);
        fails_with("coalescelist", vec![l(vec![]), l(vec![])], "no non-empty list arguments");
        fails_with("coalescelist", vec![l(vec![]), s("x")], "argument 2 (`lists`) must be a list");
    }

    #[test]
    fn compact_distinct_flatten_reverse() {
        assert_eq!(ok("compact", vec![l(vec![s("a"), s(""), Value::Null, s("b")])]), sl(&["a", "b"]));
        assert_eq!(ok("compact", vec![l(vec![s("a"), U])]), U);
        fails_with("compact", vec![l(vec![sl(&["a"])])], "element 0 of the list must be a string");

        assert_eq!(ok("distinct", vec![sl(&["a", "b", "a", "c", "b"])]), sl(&["a", "b", "c"]));
        assert_eq!(ok("distinct", vec![nl(&[0.1, 0.1000001, 0.1])]), nl(&[0.1, 0.1000001]));
        assert_eq!(ok("distinct", vec![l(vec![s("a"), U])]), U);
        fails_with("distinct", vec![s("abc")], "must be a list or set");

        assert_eq!(
            ok("flatten", vec![l(vec![sl(&["a", "b"]), l(vec![]), l(vec![sl(&["c"])]), m(vec![("k", U)])])]),
            l(vec![s("a"), s("b"), s("c"), m(vec![("k", U)])])
        );
        assert_eq!(ok("flatten", vec![l(vec![sl(&["a"]), U])]), U);
        assert_eq!(ok("flatten", vec![U]), U);
        fails_with("flatten", vec![m(vec![])], "must be a list or set, got map");

        assert_eq!(ok("reverse", vec![nl(&[1.0, 2.0, 3.0])]), nl(&[3.0, 2.0, 1.0]));
        assert_eq!(ok("reverse", vec![l(vec![U, s("a")])]), l(vec![s("a"), U]));
        fails_with("reverse", vec![s("abc")], "must be a list or set");
    }

    #[test]
    fn slicing() {
        let list = sl(&["a", "b", "c", "d"]);
        assert_eq!(ok("slice", vec![list.clone(), n(1.0), n(3.0)]), sl(&["b", "c"]));
        assert_eq!(ok("slice", vec![list.clone(), n(4.0), n(4.0)]), l(vec![]));
        assert_eq!(ok("slice", vec![l(vec![U, s("b")]), n(1.0), n(2.0)]), sl(&["b"]));
        fails_with("slice", vec![list.clone(), n(-1.0), n(2.0)], "start index must not be less than zero");
        fails_with("slice", vec![list.clone(), n(0.0), n(5.0)], "end index 5 is greater than the length of the list (4)");
        fails_with("slice", vec![list.clone(), n(3.0), n(1.0)], "start index 3 is greater than end index 1");
        fails_with("slice", vec![list, n(5.0), n(5.0)], "start index 5 is greater than the length");
        fails_with("slice", vec![Value::set(vec![s("a")]), n(0.0), n(1.0)], "cannot slice a set");
    }

    #[test]
    fn sorting() {
        assert_eq!(ok("sort", vec![sl(&["e", "d", "a", "x"])]), sl(&["a", "d", "e", "x"]));
        assert_eq!(ok("sort", vec![nl(&[10.0, 9.0, 1.0])]), sl(&["1", "10", "9"]));
        assert_eq!(ok("sort", vec![l(vec![s("b"), U])]), U);
        fails_with("sort", vec![l(vec![s("a"), Value::Null])], "element 1 of the list is null");
        fails_with("sort", vec![l(vec![m(vec![])])], "element 0 of the list must be a string");
    }

    #[test]
    fn zipmap_pairs() {
        assert_eq!(
            ok("zipmap", vec![sl(&["a", "b"]), l(vec![n(1.0), U])]),
            m(vec![("a", n(1.0)), ("b", U)])
        );
        assert_eq!(ok("zipmap", vec![l(vec![s("a"), U]), nl(&[1.0, 2.0])]), U);
        assert_eq!(ok("zipmap", vec![sl(&["a"]), U]), U);
        fails_with("zipmap", vec![sl(&["a", "b"]), nl(&[1.0])], "number of keys (2) does not match number of values (1)");
        fails_with("zipmap", vec![l(vec![Value::Null]), nl(&[1.0])], "null value at index 0");
        fails_with("zipmap", vec![l(vec![sl(&["x"])]), nl(&[1.0])], "key 0 must be a string");
    }

    #[test]
    fn set_functions() {
        let set = |xs: &[&str]| Value::set(xs.iter().map(|x| s(x)).collect());
        assert_eq!(ok("setunion", vec![sl(&["a", "b"]), sl(&["b", "c"]), sl(&["d"])]), set(&["a", "b", "c", "d"]));
        assert_eq!(ok("setunion", vec![sl(&["a"]), nl(&[1.0])]), set(&["1", "a"]));
        assert_eq!(ok("setintersection", vec![sl(&["a", "b"]), sl(&["b", "c"]), sl(&["b", "d"])]), set(&["b"]));
        assert_eq!(ok("setintersection", vec![sl(&["a", "a"])]), set(&["a"]));
        assert_eq!(ok("setsubtract", vec![sl(&["a", "b", "c"]), sl(&["a", "c"])]), set(&["b"]));
        assert_eq!(ok("setunion", vec![l(vec![U])]), U);
        fails_with("setunion", vec![sl(&["a"]), s("b")], "argument 2 (`sets`) must be a list or set");
        fails_with("setintersection", vec![m(vec![])], "must be a list or set, got map");
        fails_with("setsubtract", vec![sl(&["a"]), m(vec![])], "`b` must be a list or set");
        fails_with("setunion", vec![sl(&["a"]), l(vec![sl(&["b"])])], "all elements must have the same type");
    }

    #[test]
    fn alltrue_anytrue() {
        assert_eq!(ok("alltrue", vec![l(vec![b(true), s("true")])]), b(true));
        assert_eq!(ok("alltrue", vec![l(vec![])]), b(true));
        assert_eq!(ok("alltrue", vec![l(vec![b(true), b(false)])]), b(false));
        assert_eq!(ok("alltrue", vec![l(vec![U, b(false)])]), b(false));
        assert_eq!(ok("alltrue", vec![l(vec![U, b(true)])]), U);
        assert_eq!(ok("alltrue", vec![U]), U);
        fails_with("alltrue", vec![l(vec![s("yes")])], "element 0 of the list must be a bool");
        assert_eq!(ok("anytrue", vec![l(vec![b(false), s("true")])]), b(true));
        assert_eq!(ok("anytrue", vec![l(vec![])]), b(false));
        assert_eq!(ok("anytrue", vec![l(vec![U, b(true)])]), b(true));
        assert_eq!(ok("anytrue", vec![l(vec![U, b(false)])]), U);
        fails_with("anytrue", vec![s("true")], "must be a list or set");
    }

    #[test]
    fn one_and_chunklist() {
        assert_eq!(ok("one", vec![l(vec![])]), Value::Null);
        assert_eq!(ok("one", vec![sl(&["a"])]), s("a"));
        assert_eq!(ok("one", vec![Value::set(vec![U])]), U);
        fails_with("one", vec![sl(&["a", "b"])], "zero or one elements, but it has 2");

        assert_eq!(
            ok("chunklist", vec![sl(&["a", "b", "c", "d", "e"]), n(2.0)]),
            l(vec![sl(&["a", "b"]), sl(&["c", "d"]), sl(&["e"])])
        );
        assert_eq!(ok("chunklist", vec![sl(&["a"]), n(0.0)]), l(vec![sl(&["a"])]));
        assert_eq!(ok("chunklist", vec![l(vec![]), n(3.0)]), l(vec![]));
        assert_eq!(ok("chunklist", vec![sl(&["a"]), n(9e15)]), l(vec![sl(&["a"])]));
        fails_with("chunklist", vec![sl(&["a"]), n(-1.0)], "size must not be negative");
        fails_with("chunklist", vec![sl(&["a"]), n(1.5)], "`size` must be a whole number");
    }

    // --- network --------------------------------------------------------------

    #[test]
    fn cidrhost_v4_and_v6() {
        assert_eq!(ok("cidrhost", vec![s("10.12.112.0/20"), n(16.0)]), s("10.12.112.16"));
        assert_eq!(ok("cidrhost", vec![s("10.12.112.0/20"), n(268.0)]), s("10.12.113.12"));
        assert_eq!(ok("cidrhost", vec![s("10.12.127.3/20"), n(1.0)]), s("10.12.112.1"));
        assert_eq!(ok("cidrhost", vec![s("192.168.1.0/24"), n(-1.0)]), s("192.168.1.255"));
        assert_eq!(ok("cidrhost", vec![s("192.168.1.0/24"), n(-256.0)]), s("192.168.1.0"));
        assert_eq!(ok("cidrhost", vec![s("10.0.0.1/32"), n(0.0)]), s("10.0.0.1"));
        assert_eq!(ok("cidrhost", vec![s("010.000.000.000/8"), n(1.0)]), s("10.0.0.1"));
        assert_eq!(ok("cidrhost", vec![s("fd00:fd12:3456:7890:00a2::/72"), n(34.0)]), s("fd00:fd12:3456:7890::22"));
        assert_eq!(ok("cidrhost", vec![s("2001:db8::/64"), n(-1.0)]), s("2001:db8::ffff:ffff:ffff:ffff"));
        assert_eq!(ok("cidrhost", vec![s("::/0"), n(1.0)]), s("::1"));
        assert_eq!(ok("cidrhost", vec![s("10.0.0.0/8"), s("5")]), s("10.0.0.5"));

        let e = fail("cidrhost", vec![s("10.0.0.0/33"), n(1.0)]);
        assert!(e.message.starts_with("cidrhost: prefix \"10.0.0.0/33\" is not a valid CIDR prefix"), "{}", e.message);
        assert_eq!(e.arg, Some(0));
        for bad in ["10.0.0.0", "10.0.0/8", "10.0.0.256/8", "abc/8", "10.0.0.0/-1", "10.0.0.0/", "::/129", "10.0.0.0/ 8"] {
            fails_with("cidrhost", vec![s(bad), n(1.0)], "is not a valid CIDR prefix");
        }
        let e = fails_with("cidrhost", vec![s("192.168.1.0/24"), n(256.0)], "prefix of 24 bits does not accommodate a host numbered 256");
        assert_eq!(e.arg, Some(1));
        fails_with("cidrhost", vec![s("192.168.1.0/24"), n(-257.0)], "from -256 to 255");
        fails_with("cidrhost", vec![s("192.168.1.0/24"), n(1e300)], "does not accommodate");
        fails_with("cidrhost", vec![s("192.168.1.0/24"), n(1.5)], "whole number");
    }

    #[test]
    fn cidrnetmask_v4_only() {
        assert_eq!(ok("cidrnetmask", vec![s("172.16.0.0/12")]), s("255.240.0.0"));
        assert_eq!(ok("cidrnetmask", vec![s("0.0.0.0/0")]), s("0.0.0.0"));
        assert_eq!(ok("cidrnetmask", vec![s("10.1.2.3/32")]), s("255.255.255.255"));
        fails_with("cidrnetmask", vec![s("2001:db8::/32")], "IPv6 addresses cannot have a netmask: 2001:db8::/32");
        fails_with("cidrnetmask", vec![s("bogus")], "is not a valid CIDR prefix");
    }

    #[test]
    fn cidrsubnet_extends() {
        assert_eq!(ok("cidrsubnet", vec![s("172.16.0.0/12"), n(4.0), n(2.0)]), s("172.18.0.0/16"));
        assert_eq!(ok("cidrsubnet", vec![s("10.1.2.0/24"), n(4.0), n(15.0)]), s("10.1.2.240/28"));
        assert_eq!(ok("cidrsubnet", vec![s("fd00:fd12:3456:7890::/56"), n(16.0), n(162.0)]), s("fd00:fd12:3456:7800:a200::/72"));
        assert_eq!(ok("cidrsubnet", vec![s("10.0.0.0/8"), n(0.0), n(0.0)]), s("10.0.0.0/8"));
        assert_eq!(ok("cidrsubnet", vec![s("0.0.0.0/0"), n(32.0), n(4294967295.0)]), s("255.255.255.255/32"));
        fails_with("cidrsubnet", vec![s("10.0.0.0/30"), n(3.0), n(0.0)], "insufficient address space to extend prefix of 30 by 3");
        fails_with("cidrsubnet", vec![s("10.0.0.0/8"), n(2.0), n(4.0)], "prefix extension of 2 does not accommodate a subnet numbered 4");
        fails_with("cidrsubnet", vec![s("10.0.0.0/8"), n(2.0), n(-1.0)], "does not accommodate a subnet numbered -1");
        fails_with("cidrsubnet", vec![s("2001:db8::/32"), n(33.0), n(0.0)], "more than 32 bits");
        fails_with("cidrsubnet", vec![s("10.0.0.0/8"), n(-1.0), n(0.0)], "must not be negative");
    }

    #[test]
    fn cidrsubnets_allocates_consecutively() {
        assert_eq!(
            ok("cidrsubnets", vec![s("10.1.0.0/16"), n(4.0), n(4.0), n(8.0), n(4.0)]),
            sl(&["10.1.0.0/20", "10.1.16.0/20", "10.1.32.0/24", "10.1.48.0/20"])
        );
        assert_eq!(
            ok("cidrsubnets", vec![s("fd00:fd12:3456:7890::/56"), n(16.0), n(16.0), n(16.0), n(32.0)]),
            sl(&[
                "fd00:fd12:3456:7800::/72",
                "fd00:fd12:3456:7800:100::/72",
                "fd00:fd12:3456:7800:200::/72",
                "fd00:fd12:3456:7800:300::/88",
            ])
        );
        assert_eq!(ok("cidrsubnets", vec![s("10.0.0.0/8")]), l(vec![]));
        assert_eq!(ok("cidrsubnets", vec![s("0.0.0.0/0"), n(1.0), n(1.0)]), sl(&["0.0.0.0/1", "128.0.0.0/1"]));
        assert_eq!(ok("cidrsubnets", vec![s("::/0"), n(1.0), n(1.0)]), sl(&["::/1", "8000::/1"]));
        let e = fails_with("cidrsubnets", vec![s("10.0.0.0/24"), n(1.0), n(1.0), n(1.0)], "not enough remaining address space for a subnet with a prefix of 25 bits after 10.0.0.128/25");
        assert_eq!(e.arg, Some(3));
        fails_with("cidrsubnets", vec![s("10.0.0.0/30"), n(3.0)], "would extend prefix to 33 bits, which is too long for an IPv4 address");
        fails_with("cidrsubnets", vec![s("10.0.0.0/8"), n(0.0)], "at least one bit");
    }

    // --- encoding -------------------------------------------------------------

    #[test]
    fn base64_and_hashes() {
        assert_eq!(ok("base64encode", vec![s("Hello World")]), s("SGVsbG8gV29ybGQ="));
        assert_eq!(ok("base64decode", vec![s("SGVsbG8gV29ybGQ=")]), s("Hello World"));
        assert_eq!(ok("base64decode", vec![s("SGVsbG8g\nV29ybGQ=")]), s("Hello World"));
        fails_with("base64decode", vec![s("not base64!")], "not valid base64");
        fails_with("base64decode", vec![s("/wAB")], "not valid UTF-8");
        fails_with("base64encode", vec![l(vec![])], "must be a string");
        assert_eq!(ok("sha256", vec![s("hello world")]), s("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"));
        assert_eq!(ok("base64sha256", vec![s("hello world")]), s("uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek="));
        fails_with("sha256", vec![m(vec![])], "must be a string");
        fails_with("base64sha256", vec![Value::Null], "must not be null");
    }

    #[test]
    fn json_round_trip_like_terraform() {
        let v = m(vec![
            ("a", s("<b>&\u{2028}")),
            ("n", nl(&[1.0, 1.5, 1e20, -0.000001])),
            ("z", l(vec![b(true), Value::Null])),
        ]);
        let j = ok("jsonencode", vec![v]);
        assert_eq!(
            j,
            s(r#"{"a":"\u003cb\u003e\u0026\u2028","n":[1,1.5,100000000000000000000,-0.000001],"z":[true,null]}"#)
        );
        assert_eq!(ok("jsonencode", vec![s("tab\there\u{1}")]), s(r#""tab\there\u0001""#));
        assert_eq!(ok("jsonencode", vec![l(vec![U])]), U);
        assert_eq!(
            ok("jsondecode", vec![s(r#"{"hello": "world", "list": [1, true, null]}"#)]),
            m(vec![("hello", s("world")), ("list", l(vec![n(1.0), b(true), Value::Null]))])
        );
        let e = fails_with("jsondecode", vec![s("{\"a\": ")], "invalid JSON");
        assert_eq!(e.arg, Some(0));
        fails_with("jsondecode", vec![s("")], "invalid JSON");
    }

    fn yaml(v: Value) -> String {
        match ok("yamlencode", vec![v]) {
            Value::String(x) => x,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn yamlencode_matches_terraform() {
        assert_eq!(yaml(m(vec![("a", s("b")), ("c", s("d"))])), "\"a\": \"b\"\n\"c\": \"d\"\n");
        assert_eq!(
            yaml(m(vec![("foo", nl(&[1.0, 2.0, 3.0])), ("bar", s("baz"))])),
            "\"bar\": \"baz\"\n\"foo\":\n- 1\n- 2\n- 3\n"
        );
        assert_eq!(
            yaml(m(vec![("foo", l(vec![n(1.0), m(vec![("a", s("b")), ("c", s("d"))]), n(3.0)])), ("bar", s("baz"))])),
            "\"bar\": \"baz\"\n\"foo\":\n- 1\n- \"a\": \"b\"\n  \"c\": \"d\"\n- 3\n"
        );
        assert_eq!(yaml(b(true)), "true\n...\n");
        assert_eq!(yaml(n(0.0)), "0\n...\n");
        assert_eq!(yaml(s("")), "\"\"\n");
        assert_eq!(yaml(s("hello")), "\"hello\"\n");
        assert_eq!(yaml(m(vec![])), "{}\n");
        assert_eq!(yaml(l(vec![])), "[]\n");
        assert_eq!(yaml(sl(&["b"])), "- \"b\"\n");
        assert_eq!(yaml(l(vec![sl(&["a", "b"]), l(vec![])])), "- - \"a\"\n  - \"b\"\n- []\n");
        assert_eq!(yaml(m(vec![("x", m(vec![])), ("y", Value::Null)])), "\"x\": {}\n\"y\": null\n");
        assert_eq!(yaml(s("tab\there 😀")), "\"tab\\there \\U0001F600\"\n");
        assert_eq!(ok("yamlencode", vec![l(vec![U])]), U);
        fails_with("yamlencode", vec![], "expects 1 argument");
    }

    #[test]
    fn yamlencode_cloud_init() {
        let user_data = m(vec![
            ("hostname", s("web-1")),
            ("package_update", b(true)),
            ("packages", sl(&["nginx", "qemu-guest-agent"])),
            (
                "users",
                l(vec![m(vec![
                    ("name", s("admin")),
                    ("groups", sl(&["sudo"])),
                    ("shell", s("/bin/bash")),
                    ("ssh_authorized_keys", sl(&["ssh-ed25519 AAAAC3Nza admin@example"])),
                ])]),
            ),
            (
                "write_files",
                l(vec![m(vec![
                    ("path", s("/etc/motd")),
                    ("permissions", s("0644")),
                    ("content", s("Welcome!\nManaged by virtform.\n")),
                ])]),
            ),
            ("runcmd", l(vec![sl(&["systemctl", "enable", "--now", "nginx"]), s("echo done")])),
            ("bootcmd", l(vec![s("line one\nline two")])),
        ]);
        let expected = r#""bootcmd":
- |-
  line one
  line two
"hostname": "web-1"
"package_update": true
"packages":
- "nginx"
- "qemu-guest-agent"
"runcmd":
- - "systemctl"
  - "enable"
  - "--now"
  - "nginx"
- "echo done"
"users":
- "groups":
  - "sudo"
  "name": "admin"
  "shell": "/bin/bash"
  "ssh_authorized_keys":
  - "ssh-ed25519 AAAAC3Nza admin@example"
"write_files":
- "content": |
    Welcome!
    Managed by virtform.
  "path": "/etc/motd"
  "permissions": "0644"
"#;
        assert_eq!(yaml(user_data.clone()), expected);
        // And it reads back to the same value.
        assert_eq!(ok("yamldecode", vec![s(expected)]), user_data);
    }

    #[test]
    fn yamlencode_edge_strings() {
        // Trailing blank lines keep a `+` chomping indicator; leading spaces an indent hint.
        assert_eq!(yaml(m(vec![("a", s("x\n\n"))])), "\"a\": |+\n  x\n\n");
        assert_eq!(yaml(m(vec![("a", s("  x\ny"))])), "\"a\": |2-\n    x\n  y\n");
        // A space before a line break forces the quoted style.
        assert_eq!(yaml(m(vec![("a", s("x \ny"))])), "\"a\": \"x \\ny\"\n");
        // Long quoted strings fold after column 80, like libyaml.
        let long = "word ".repeat(30);
        let long = long.trim_end();
        let out = yaml(m(vec![("k", s(long))]));
        assert!(out.lines().count() > 1, "{out}");
        assert!(out.lines().all(|line| line.chars().count() <= 90), "{out}");
        assert_eq!(ok("yamldecode", vec![s(&out)]), m(vec![("k", s(long))]));
        // Keys longer than 128 bytes become complex keys.
        let key = "k".repeat(130);
        let out = yaml(m(vec![(key.as_str(), n(1.0))]));
        assert_eq!(out, format!("? \"{key}\"\n: 1\n"));
        assert_eq!(ok("yamldecode", vec![s(&out)]), m(vec![(key.as_str(), n(1.0))]));
    }

    #[test]
    fn yamldecode_values() {
        assert_eq!(
            ok("yamldecode", vec![s("hello: world\nlist: [1, true, null]\n")]),
            m(vec![("hello", s("world")), ("list", l(vec![n(1.0), b(true), Value::Null]))])
        );
        assert_eq!(ok("yamldecode", vec![s("")]), Value::Null);
        assert_eq!(ok("yamldecode", vec![s("1: a\ntrue: b\n")]), m(vec![("1", s("a")), ("true", s("b"))]));
        assert_eq!(
            ok("yamldecode", vec![s("base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n")]),
            m(vec![("base", m(vec![("x", n(1.0))])), ("derived", m(vec![("x", n(1.0)), ("y", n(2.0))]))])
        );
        fails_with("yamldecode", vec![s("a: [1, 2")], "invalid YAML");
        fails_with("yamldecode", vec![s("a: 1\n---\nb: 2\n")], "invalid YAML");
        fails_with("yamldecode", vec![s("? [1, 2]\n: x\n")], "mapping keys must be strings");
        fails_with("yamldecode", vec![s("x: .inf\n")], "cannot be represented");
    }

    // --- robustness -------------------------------------------------------------

    #[test]
    fn no_function_panics_on_odd_arguments() {
        let samples = vec![
            Value::Null,
            U,
            b(true),
            n(0.0),
            n(-1.0),
            n(1.5),
            n(1e300),
            n(-1e300),
            n(f64::MAX),
            s(""),
            s("é☃🤔"),
            s("%"),
            s("%[99999999999999999999]d"),
            s("/"),
            s("~"),
            s("::/0"),
            s("10.0.0.0/8"),
            l(vec![]),
            l(vec![U, Value::Null, s("x"), n(2.0)]),
            Value::set(vec![s("a"), n(1.0)]),
            m(vec![]),
            m(vec![("a", l(vec![n(1.0)]))]),
        ];
        let dir = temp_dir("fuzz");
        for name in names() {
            for x in &samples {
                let _ = ctx_call(&dir, name, vec![x.clone()]);
                for y in &samples {
                    let _ = ctx_call(&dir, name, vec![x.clone(), y.clone()]);
                    for z in [Value::Null, n(-1.0), n(3.0), s("x"), l(vec![])] {
                        let _ = ctx_call(&dir, name, vec![x.clone(), y.clone(), z]);
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn results_are_never_non_finite() {
        assert!(fail("max", vec![n(1e308), n(f64::INFINITY)]).message.contains("finite"));
        fails_with("sum", vec![nl(&[f64::MAX, f64::MAX])], "too large to represent");
    }
}
