//! The typed desired state: one module per resource kind.
//!
//! Invariants:
//! - A [`Resource`] holds a fully resolved spec: every default that virtform
//!   derives (bridge names, MACs, domain names, ids, paths) is filled in here,
//!   deterministically from the stack and the address, so re-planning never
//!   invents a new value.
//! - Validation here is about the desired state only; it never reads the host.
//! - Paths built from names stay under the state directory: resource names,
//!   keys and the stack name are restricted to safe characters.

pub mod common;
pub mod data;
pub mod disk;
pub mod image;
pub mod instance;
pub mod network;
pub mod port;
pub mod ssh_key;
pub mod validate;
pub mod volume;

use crate::config::source::Span;
use crate::config::value::Value;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// The six resource kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Network,
    Port,
    Image,
    Disk,
    Volume,
    Instance,
}

impl Kind {
    pub const ALL: [Kind; 6] = [Kind::Network, Kind::Port, Kind::Image, Kind::Disk, Kind::Volume, Kind::Instance];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Network => "network",
            Kind::Port => "port",
            Kind::Image => "image",
            Kind::Disk => "disk",
            Kind::Volume => "volume",
            Kind::Instance => "instance",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which instance of a resource block: none, `[0]` under count, `["k"]` under for_each.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    None,
    Index(usize),
    Name(String),
}

/// Whether an address names something virtform manages (`network.lan`) or
/// an existing object it only reads (`data.network.lan`), as in OpenTofu's
/// `addrs.ResourceMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Mode {
    #[default]
    Managed,
    Data,
}

/// `kind.name`, `kind.name[0]` or `kind.name["key"]`; data sources are
/// `data.kind.name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub mode: Mode,
    pub kind: Kind,
    pub name: String,
    pub key: Key,
}

impl Address {
    /// Parses `kind.name`, `kind.name[0]` or `kind.name["key"]` (the form
    /// `Display` writes and markers record).
    pub fn parse(s: &str) -> Option<Address> {
        let (mode, s) = match s.strip_prefix("data.") {
            Some(rest) => (Mode::Data, rest),
            None => (Mode::Managed, s),
        };
        let (kind, rest) = s.split_once('.')?;
        let kind = Kind::parse(kind)?;
        let (name, key) = match rest.split_once('[') {
            None => (rest, Key::None),
            Some((n, k)) => {
                let k = k.strip_suffix(']')?;
                let key = match k.strip_prefix('"').and_then(|k| k.strip_suffix('"')) {
                    Some(named) => Key::Name(named.to_string()),
                    None => Key::Index(k.parse().ok()?),
                };
                (n, key)
            }
        };
        (!name.is_empty()).then(|| Address { mode, kind, name: name.to_string(), key })
    }

    /// A managed resource's address.
    pub fn managed(kind: Kind, name: impl Into<String>, key: Key) -> Address {
        Address { mode: Mode::Managed, kind, name: name.into(), key }
    }

    pub fn is_data(&self) -> bool {
        self.mode == Mode::Data
    }

    /// The block's address without the instance key.
    pub fn block(&self) -> String {
        if self.is_data() { format!("data.{}.{}", self.kind, self.name) } else { format!("{}.{}", self.kind, self.name) }
    }

    /// A file-name-safe form: `root`, `root@0`, `root@web` (keys are validated to be safe).
    pub fn file_stem(&self) -> String {
        match &self.key {
            Key::None => self.name.clone(),
            Key::Index(i) => format!("{}@{i}", self.name),
            Key::Name(k) => format!("{}@{k}", self.name),
        }
    }

    /// Inverse of [`file_stem`](Self::file_stem): `root` → `kind.root`,
    /// `root@1` → `kind.root[1]`, `root@a` → `kind.root["a"]` (an all-digit
    /// key reads as an index).
    pub fn from_stem(kind: Kind, stem: &str) -> Option<Address> {
        let (name, key) = match stem.split_once('@') {
            None => (stem, Key::None),
            Some((n, k)) if !k.is_empty() && k.chars().all(|c| c.is_ascii_digit()) => (n, Key::Index(k.parse().ok()?)),
            Some((n, k)) if !k.is_empty() => (n, Key::Name(k.to_string())),
            _ => return None,
        };
        (!name.is_empty() && check_name(name).is_ok()).then(|| Address::managed(kind, name, key))
    }

    /// A dash-joined form for derived names: `web`, `web-0`, `web-a`.
    pub fn dashed(&self) -> String {
        match &self.key {
            Key::None => self.name.clone(),
            Key::Index(i) => format!("{}-{i}", self.name),
            Key::Name(k) => format!("{}-{k}", self.name),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Piece by piece: addresses are formatted tens of thousands of
        // times in a large plan, and `write!` of the whole was ~1,000
        // instructions each.
        if self.is_data() {
            f.write_str("data.")?;
        }
        f.write_str(self.kind.as_str())?;
        f.write_str(".")?;
        f.write_str(&self.name)?;
        match &self.key {
            Key::None => Ok(()),
            Key::Index(i) => write!(f, "[{i}]"),
            Key::Name(k) => {
                f.write_str("[\"")?;
                f.write_str(k)?;
                f.write_str("\"]")
            }
        }
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What resolving and checking a spec may consult.
pub struct Ctx<'a> {
    pub stack: &'a str,
    pub state_dir: &'a Path,
    pub config_dir: &'a Path,
    /// Resources built so far (every dependency of the one being built), by address.
    pub built: &'a BTreeMap<String, Resource>,
    /// Where data sources read existing objects; `None` at validate (their
    /// facts are then unknown).
    pub data: Option<&'a dyn data::DataReader>,
}

impl Ctx<'_> {
    /// A seed that makes derived values unique per stack and address.
    pub fn seed(&self, addr: &Address) -> String {
        format!("virtform:{}:{}", self.stack, addr)
    }

    /// The stack's directory under the state dir.
    pub fn stack_dir(&self) -> PathBuf {
        self.state_dir.join(self.stack)
    }

    /// Looks up a referenced resource.
    pub fn get(&self, r: &common::ResourceRef) -> Option<&Resource> {
        self.built.get(&r.0)
    }
}

/// An error about one attribute (path like `wait_for.timeout` or `disks[1]`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
    pub label: Option<String>,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { path: path.into(), message: message.into(), label: None }
    }

    pub fn label(mut self, l: impl Into<String>) -> FieldError {
        self.label = Some(l.into());
        self
    }
}

/// A resolved spec of one kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    Network(network::Network),
    Port(port::Port),
    Image(image::Image),
    Disk(disk::Disk),
    Volume(volume::Volume),
    Instance(Box<instance::Instance>),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Network(_) => Kind::Network,
            Spec::Port(_) => Kind::Port,
            Spec::Image(_) => Kind::Image,
            Spec::Disk(_) => Kind::Disk,
            Spec::Volume(_) => Kind::Volume,
            Spec::Instance(_) => Kind::Instance,
        }
    }

    /// The object other resources and outputs see for this resource.
    pub fn exports(&self, addr: &Address, ctx: &Ctx<'_>) -> Value {
        match self {
            Spec::Network(s) => s.exports(addr, ctx),
            Spec::Port(s) => s.exports(addr, ctx),
            Spec::Image(s) => s.exports(addr, ctx),
            Spec::Disk(s) => s.exports(addr, ctx),
            Spec::Volume(s) => s.exports(addr, ctx),
            Spec::Instance(s) => s.exports(addr, ctx),
        }
    }
}

/// `lifecycle { ... }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Lifecycle {
    pub prevent_destroy: bool,
    pub ignore_changes: Vec<String>,
    pub replace_triggered_by: Vec<String>,
}

/// One instance of a resource block, resolved and validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resource {
    pub address: Address,
    pub spec: Spec,
    pub depends_on: Vec<String>,
    pub lifecycle: Lifecycle,
    /// Attributes whose value is known only after apply.
    pub unknown: BTreeSet<String>,
    /// Attributes derived from sensitive values (never printed).
    pub sensitive: BTreeSet<String>,
    #[serde(skip)]
    /// Shared by the instances of a `count`/`for_each` block.
    pub spans: std::sync::Arc<BTreeMap<String, Span>>,
    #[serde(skip)]
    pub block_span: Option<Span>,
}

impl Resource {
    /// The span of an attribute path (falling back to its parents, then the block).
    pub fn span_of(&self, path: &str) -> Option<Span> {
        let mut p = path.to_string();
        loop {
            if let Some(s) = self.spans.get(&p) {
                return Some(*s);
            }
            match p.rfind(['.', '[']) {
                Some(i) => p.truncate(i),
                None => return self.block_span,
            }
        }
    }
}

/// Builds and resolves the spec of `addr` from its evaluated attributes.
/// Returns the spec and, when `exports` (something refers to the resource),
/// the exported object other resources and outputs may reference; else
/// `Value::Null` (building it is a good part of loading a large
/// configuration, and nothing would read it).
pub fn build(addr: &Address, attrs: &Value, ctx: &Ctx<'_>, want_exports: bool) -> Result<(Spec, Value), Vec<FieldError>> {
    fn de<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, Vec<FieldError>> {
        crate::config::de::from_value(v).map_err(|(path, e)| vec![FieldError::new(if path == "." { String::new() } else { path }, e.0)])
    }
    if addr.is_data() {
        return match addr.kind {
            Kind::Network => {
                let (net, mut exports) = data::build_network(addr, attrs, ctx)?;
                if let Value::Map(m) = &mut exports {
                    m.insert(common::REF_KEY.into(), Value::String(addr.to_string()));
                }
                Ok((Spec::Network(net), if want_exports { exports } else { Value::Null }))
            }
            k => Err(vec![FieldError::new("", format!("there is no data source of type \"{k}\"; the only one is \"network\""))]),
        };
    }
    let spec = match addr.kind {
        Kind::Network => {
            let mut s: network::Network = de(attrs)?;
            s.resolve(addr, ctx)?;
            Spec::Network(s)
        }
        Kind::Port => {
            let mut s: port::Port = de(attrs)?;
            s.resolve(addr, ctx)?;
            Spec::Port(s)
        }
        Kind::Image => {
            let mut s: image::Image = de(attrs)?;
            s.resolve(addr, ctx)?;
            Spec::Image(s)
        }
        Kind::Disk => {
            let mut s: disk::Disk = de(attrs)?;
            s.resolve(addr, ctx)?;
            Spec::Disk(s)
        }
        Kind::Volume => {
            let mut s: volume::Volume = de(attrs)?;
            s.resolve(addr, ctx)?;
            Spec::Volume(s)
        }
        Kind::Instance => {
            let mut s: instance::Instance = de(attrs)?;
            s.resolve(addr, ctx)?;
            Spec::Instance(Box::new(s))
        }
    };
    if !want_exports {
        return Ok((spec, Value::Null));
    }
    let mut exports = spec.exports(addr, ctx);
    if let Value::Map(m) = &mut exports {
        m.insert(common::REF_KEY.into(), Value::String(addr.to_string()));
    }
    Ok((spec, exports))
}

/// Serializes a spec into a language value (for exports), merging `extra` on top.
pub fn to_value<T: Serialize>(spec: &T, extra: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    let mut v = crate::config::ser::to_value(spec).unwrap_or(Value::Null);
    if let Value::Map(m) = &mut v {
        for (k, x) in extra {
            m.insert(k.to_string(), x);
        }
    }
    v
}

/// Checks that a reference points at a resource of the expected kind (for
/// networks, a `data "network"` too).
pub fn check_ref(path: &str, r: &common::ResourceRef, want: Kind, ctx: &Ctx<'_>) -> Result<(), FieldError> {
    if r.is_data() && want != Kind::Network {
        return Err(FieldError::new(path, format!("expected a reference to a {want}, got a reference to the data source {r}"))
            .label(format!("write {want}.NAME here")));
    }
    if r.kind() != want.as_str() {
        return Err(FieldError::new(path, format!("expected a reference to a {want}, got a reference to {r}"))
            .label(format!("write {want}.NAME here")));
    }
    if ctx.get(r).is_none() {
        return Err(FieldError::new(path, format!("{r} is not declared")));
    }
    Ok(())
}

/// Resolves a user path relative to the configuration directory.
pub fn resolve_path(ctx: &Ctx<'_>, p: &str) -> String {
    let path = Path::new(p);
    if path.is_absolute() {
        p.to_string()
    } else {
        ctx.config_dir.join(path).to_string_lossy().into_owned()
    }
}

/// Names usable in block labels and for_each keys: they end up in file names and
/// derived interface/domain names.
pub fn check_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{s}\" is not a valid name: use 1 to 64 letters, digits, '_' or '-', starting with a letter or '_'"
        ))
    }
}

/// for_each keys: letters, digits, `_`, `-`, `.` (not leading), at most 64.
pub fn check_key(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "for_each key \"{s}\" is not usable: keys name files and devices, so use 1 to 64 letters, digits, '_', '-' or '.' (not first)"
        ))
    }
}

/// Stack names: they name a directory and prefix domain names.
pub fn check_stack(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("stack name \"{s}\" is not valid: use 1 to 32 letters, digits, '_' or '-', starting with a letter or digit"))
    }
}

/// The attribute names of a kind, from its schema (for `ignore_changes` and suggestions).
pub fn attribute_names(kind: Kind) -> Vec<String> {
    let schema = match kind {
        Kind::Network => schemars::schema_for!(network::Network),
        Kind::Port => schemars::schema_for!(port::Port),
        Kind::Image => schemars::schema_for!(image::Image),
        Kind::Disk => schemars::schema_for!(disk::Disk),
        Kind::Volume => schemars::schema_for!(volume::Volume),
        Kind::Instance => schemars::schema_for!(instance::Instance),
    };
    schema
        .as_object()
        .and_then(|o| o.get("properties"))
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_render_like_terraform() {
        let a = Address::managed(Kind::Disk, "root", Key::Index(2));
        assert_eq!(a.to_string(), "disk.root[2]");
        assert_eq!(a.file_stem(), "root@2");
        let b = Address::managed(Kind::Port, "p", Key::Name("a".into()));
        assert_eq!(b.to_string(), "port.p[\"a\"]");
        assert_eq!(b.dashed(), "p-a");
        let d = Address { mode: Mode::Data, kind: Kind::Network, name: "lan".into(), key: Key::None };
        assert_eq!(d.to_string(), "data.network.lan");
        assert_eq!(d.block(), "data.network.lan");
        for a in [a, b, d] {
            assert_eq!(Address::parse(&a.to_string()), Some(a));
        }
        assert_eq!(Address::parse("data.lan"), None);
        assert_eq!(Address::parse("disk"), None);
        assert_eq!(Address::parse("disk.root[x]"), None);
    }

    #[test]
    fn names_keys_and_stacks_are_safe() {
        assert!(check_name("web_1-a").is_ok());
        assert!(check_name("../x").is_err());
        assert!(check_name("1abc").is_err());
        assert!(check_key("eu.west-1").is_ok());
        assert!(check_key("../etc").is_err());
        assert!(check_key("a/b").is_err());
        assert!(check_stack("ci-1234").is_ok());
        assert!(check_stack("a b").is_err());
    }
}
