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
pub mod host;
pub mod image;
pub mod instance;
pub mod network;
pub mod placement;
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
    Host,
    Network,
    Port,
    Image,
    Disk,
    Volume,
    Instance,
}

impl Kind {
    pub const ALL: [Kind; 7] = [Kind::Host, Kind::Network, Kind::Port, Kind::Image, Kind::Disk, Kind::Volume, Kind::Instance];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Host => "host",
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

/// One step of a module path: `module.web` or `module.web["a"]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleStep {
    pub name: String,
    pub key: Key,
}

/// Where a resource is declared: the root module (empty) or a chain of
/// module calls, as in OpenTofu's `addrs.ModuleInstance`
/// (`module.web["a"].module.db`). Shared (cloning an address clones a
/// pointer) and formatted once: an address is cloned and printed many
/// times in a plan.
#[derive(Clone, Default)]
pub struct ModulePath(Option<std::sync::Arc<PathData>>);

struct PathData {
    steps: Vec<ModuleStep>,
    /// `module.web["a"].module.db`.
    text: String,
    /// `web@a+db+`.
    stem: String,
}

impl ModulePath {
    pub fn root() -> ModulePath {
        ModulePath(None)
    }

    /// The path of these calls, outermost first.
    pub fn from_steps(steps: Vec<ModuleStep>) -> ModulePath {
        if steps.is_empty() {
            return ModulePath(None);
        }
        let mut text = String::new();
        let mut stem = String::new();
        for (i, st) in steps.iter().enumerate() {
            if i > 0 {
                text.push('.');
            }
            text.push_str("module.");
            text.push_str(&st.name);
            match &st.key {
                Key::None => {}
                Key::Index(n) => {
                    text.push('[');
                    text.push_str(&n.to_string());
                    text.push(']');
                }
                Key::Name(k) => {
                    text.push_str("[\"");
                    text.push_str(k);
                    text.push_str("\"]");
                }
            }
            stem.push_str(&st.name);
            push_key(&mut stem, &st.key, '@');
            stem.push('+');
        }
        ModulePath(Some(std::sync::Arc::new(PathData { steps, text, stem })))
    }

    pub fn steps(&self) -> &[ModuleStep] {
        self.0.as_ref().map(|d| d.steps.as_slice()).unwrap_or(&[])
    }

    pub fn is_root(&self) -> bool {
        self.0.is_none()
    }

    /// This path with one more call appended.
    pub fn child(&self, name: &str, key: Key) -> ModulePath {
        let mut v = self.steps().to_vec();
        v.push(ModuleStep { name: name.to_string(), key });
        ModulePath::from_steps(v)
    }

    /// Whether `self` is `other` or lies under it (a step of `other` without
    /// a key matches every instance of that call: `module.web` covers
    /// `module.web["a"]`).
    pub fn within(&self, other: &ModulePath) -> bool {
        let (o, s) = (other.steps(), self.steps());
        o.len() <= s.len() && o.iter().zip(s).enumerate().all(|(i, (o_, s_))| o_.name == s_.name && (o_.key == s_.key || (o_.key == Key::None && i == o.len() - 1)))
    }

    /// File-name-safe, injective: `web@a+db+` (each call `NAME[@KEY]` and a
    /// `+`, a character no name or key may contain); empty for the root.
    pub fn stem_prefix(&self) -> &str {
        self.0.as_ref().map(|d| d.stem.as_str()).unwrap_or("")
    }

    /// `s` after a run of `module.NAME[KEY].` steps, without parsing them
    /// into a path (None when a step is malformed).
    pub fn skip_prefix(mut s: &str) -> Option<&str> {
        while let Some(rest) = s.strip_prefix("module.") {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let (_, rest) = skip_key(&rest[end..])?;
            match rest.strip_prefix('.') {
                Some(r) => s = r,
                None if rest.is_empty() => return Some(""),
                None => return None,
            }
        }
        Some(s)
    }

    /// Parses a run of `module.NAME[KEY].` steps from the front of `s`,
    /// returning the path and the rest.
    pub fn parse_prefix(mut s: &str) -> Option<(ModulePath, &str)> {
        if !s.starts_with("module.") {
            return Some((ModulePath::root(), s));
        }
        let mut steps = Vec::new();
        while let Some(rest) = s.strip_prefix("module.") {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let name = &rest[..end];
            if check_name(name).is_err() {
                return None;
            }
            let (key, rest) = parse_key(&rest[end..])?;
            steps.push(ModuleStep { name: name.to_string(), key });
            match rest.strip_prefix('.') {
                Some(r) => s = r,
                None if rest.is_empty() => return Some((ModulePath::from_steps(steps), "")),
                None => return None,
            }
        }
        Some((ModulePath::from_steps(steps), s))
    }

    /// Parses a whole module path (`module.web["a"].module.db`).
    pub fn parse(s: &str) -> Option<ModulePath> {
        match ModulePath::parse_prefix(s)? {
            (p, "") if !p.is_root() => Some(p),
            _ => None,
        }
    }
}

impl PartialEq for ModulePath {
    fn eq(&self, other: &ModulePath) -> bool {
        self.steps() == other.steps()
    }
}

impl Eq for ModulePath {}

impl PartialOrd for ModulePath {
    fn partial_cmp(&self, other: &ModulePath) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ModulePath {
    fn cmp(&self, other: &ModulePath) -> std::cmp::Ordering {
        self.steps().cmp(other.steps())
    }
}

impl std::hash::Hash for ModulePath {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        // The text is the steps, written once.
        self.0.as_ref().map(|d| d.text.as_str()).unwrap_or("").hash(h)
    }
}

impl fmt::Debug for ModulePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModulePath({self})")
    }
}

impl fmt::Display for ModulePath {
    /// `module.web["a"].module.db` (no trailing dot; empty for the root).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_ref().map(|d| d.text.as_str()).unwrap_or(""))
    }
}

/// Like [`parse_key`] without building the key.
fn skip_key(s: &str) -> Option<((), &str)> {
    let Some(r) = s.strip_prefix('[') else { return Some(((), s)) };
    if let Some(r) = r.strip_prefix('"') {
        let end = r.find("\"]")?;
        return Some(((), &r[end + 2..]));
    }
    let end = r.find(']')?;
    Some(((), &r[end + 1..]))
}

fn push_key(s: &mut String, k: &Key, sep: char) {
    match k {
        Key::None => {}
        Key::Index(i) => {
            s.push(sep);
            s.push_str(&i.to_string());
        }
        Key::Name(n) => {
            s.push(sep);
            s.push_str(n);
        }
    }
}

fn write_key(f: &mut fmt::Formatter<'_>, k: &Key) -> fmt::Result {
    match k {
        Key::None => Ok(()),
        Key::Index(i) => write!(f, "[{i}]"),
        Key::Name(k) => {
            f.write_str("[\"")?;
            f.write_str(k)?;
            f.write_str("\"]")
        }
    }
}

/// `[0]` or `["k"]` at the front of `s` (or nothing): the key and the rest.
/// A quoted key ends at `"]` (keys never hold `"`).
fn parse_key(s: &str) -> Option<(Key, &str)> {
    let Some(r) = s.strip_prefix('[') else { return Some((Key::None, s)) };
    if let Some(r) = r.strip_prefix('"') {
        let end = r.find("\"]")?;
        return Some((Key::Name(r[..end].to_string()), &r[end + 2..]));
    }
    let end = r.find(']')?;
    Some((Key::Index(r[..end].parse().ok()?), &r[end + 1..]))
}

/// `kind.name`, `kind.name[0]` or `kind.name["key"]`; data sources are
/// `data.kind.name`; inside modules prefixed by the module path
/// (`module.web["a"].instance.vm[0]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    /// First, so that addresses sort the root module's first, then module by module.
    pub module: ModulePath,
    pub mode: Mode,
    pub kind: Kind,
    pub name: String,
    pub key: Key,
}

impl Address {
    /// Parses `kind.name`, `kind.name[0]` or `kind.name["key"]`, with an
    /// optional `data.` and module path in front (the form `Display` writes
    /// and markers record).
    pub fn parse(s: &str) -> Option<Address> {
        let (module, s) = ModulePath::parse_prefix(s)?;
        let (mode, s) = match s.strip_prefix("data.") {
            Some(rest) => (Mode::Data, rest),
            None => (Mode::Managed, s),
        };
        let (kind, rest) = s.split_once('.')?;
        let kind = Kind::parse(kind)?;
        let end = rest.find('[').unwrap_or(rest.len());
        let name = &rest[..end];
        let (key, tail) = parse_key(&rest[end..])?;
        (!name.is_empty() && tail.is_empty() && !name.contains('.')).then(|| Address { module, mode, kind, name: name.to_string(), key })
    }

    /// A managed resource's address (in the root module).
    pub fn managed(kind: Kind, name: impl Into<String>, key: Key) -> Address {
        Address { module: ModulePath::root(), mode: Mode::Managed, kind, name: name.into(), key }
    }

    /// A data source's address (in the root module).
    pub fn data(kind: Kind, name: impl Into<String>, key: Key) -> Address {
        Address { module: ModulePath::root(), mode: Mode::Data, kind, name: name.into(), key }
    }

    /// The same address inside `module`.
    pub fn in_module(mut self, module: ModulePath) -> Address {
        self.module = module;
        self
    }

    pub fn is_data(&self) -> bool {
        self.mode == Mode::Data
    }

    /// The block's address without the instance key (with the module path).
    pub fn block(&self) -> String {
        let mut s = String::new();
        if !self.module.is_root() {
            s.push_str(&self.module.to_string());
            s.push('.');
        }
        if self.is_data() {
            s.push_str("data.");
        }
        s.push_str(self.kind.as_str());
        s.push('.');
        s.push_str(&self.name);
        s
    }

    /// A file-name-safe, injective form: `root`, `root@0`, `root@web`; in a
    /// module the path's stem first: `web@a+root@0` (keys are validated to
    /// be safe, and neither names nor keys hold `+` or `@`).
    pub fn file_stem(&self) -> String {
        let mut s = self.module.stem_prefix().to_string();
        s.push_str(&self.name);
        push_key(&mut s, &self.key, '@');
        s
    }

    /// Inverse of [`file_stem`](Self::file_stem): `root` → `kind.root`,
    /// `root@1` → `kind.root[1]`, `root@a` → `kind.root["a"]` (an all-digit
    /// key reads as an index), `web@a+root` → `module.web["a"].kind.root`.
    pub fn from_stem(kind: Kind, stem: &str) -> Option<Address> {
        fn step(s: &str) -> Option<(String, Key)> {
            let (name, key) = match s.split_once('@') {
                None => (s, Key::None),
                Some((n, k)) if !k.is_empty() && k.chars().all(|c| c.is_ascii_digit()) => (n, Key::Index(k.parse().ok()?)),
                Some((n, k)) if !k.is_empty() && check_key(k).is_ok() => (n, Key::Name(k.to_string())),
                _ => return None,
            };
            (check_name(name).is_ok()).then(|| (name.to_string(), key))
        }
        let mut parts: Vec<&str> = stem.split('+').collect();
        let last = parts.pop()?;
        let mut module = Vec::new();
        for p in parts {
            let (name, key) = step(p)?;
            module.push(ModuleStep { name, key });
        }
        let (name, key) = step(last)?;
        Some(Address { module: ModulePath::from_steps(module), mode: Mode::Managed, kind, name, key })
    }

    /// A dash-joined form of the resource's own part for derived names:
    /// `web`, `web-0`, `web-a` (without the module path).
    pub fn dashed(&self) -> String {
        match &self.key {
            Key::None => self.name.clone(),
            Key::Index(i) => format!("{}-{i}", self.name),
            Key::Name(k) => format!("{}-{k}", self.name),
        }
    }

    /// [`dashed`](Self::dashed) behind the module path's stem: `web` in the
    /// root, `web@a+vm-0` in `module.web["a"]`. Injective across module
    /// instances (`+` and `@` appear in no name or key); the default domain
    /// name is the stack and this.
    pub fn qualified_dashed(&self) -> String {
        let mut s = self.module.stem_prefix().to_string();
        s.push_str(&self.dashed());
        s
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Piece by piece: addresses are formatted tens of thousands of
        // times in a large plan, and `write!` of the whole was ~1,000
        // instructions each.
        if let Some(d) = &self.module.0 {
            f.write_str(&d.text)?;
            f.write_str(".")?;
        }
        if self.is_data() {
            f.write_str("data.")?;
        }
        f.write_str(self.kind.as_str())?;
        f.write_str(".")?;
        f.write_str(&self.name)?;
        write_key(f, &self.key)
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
    Host(host::Host),
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
            Spec::Host(_) => Kind::Host,
            Spec::Network(_) => Kind::Network,
            Spec::Port(_) => Kind::Port,
            Spec::Image(_) => Kind::Image,
            Spec::Disk(_) => Kind::Disk,
            Spec::Volume(_) => Kind::Volume,
            Spec::Instance(_) => Kind::Instance,
        }
    }

    /// The `host` it names, if any (a host itself names none).
    pub fn host(&self) -> Option<&common::ResourceRef> {
        match self {
            Spec::Host(_) | Spec::Image(_) => None,
            Spec::Network(s) => s.host.as_ref(),
            Spec::Port(s) => s.host.as_ref(),
            Spec::Disk(s) => s.host.as_ref(),
            Spec::Volume(s) => s.host.as_ref(),
            Spec::Instance(s) => s.host.as_ref(),
        }
    }

    /// The object other resources and outputs see for this resource.
    pub fn exports(&self, addr: &Address, ctx: &Ctx<'_>) -> Value {
        match self {
            Spec::Host(s) => s.exports(addr, ctx),
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
        Kind::Host => {
            let mut s: host::Host = de(attrs)?;
            s.resolve(addr, ctx)?;
            Spec::Host(s)
        }
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
    if let Some(h) = spec.host() {
        check_ref("host", h, Kind::Host, ctx).map_err(|e| vec![e])?;
    }
    if !want_exports {
        return Ok((spec, Value::Null));
    }
    // Paths a resource exports are on its host: a `host` names its state dir.
    let host_dir = spec.host().and_then(|h| ctx.get(h)).and_then(|r| match &r.spec {
        Spec::Host(h) if !h.is_local() => Some(PathBuf::from(h.state_dir())),
        _ => None,
    });
    let mut exports = match &host_dir {
        Some(d) => spec.exports(addr, &Ctx { stack: ctx.stack, state_dir: d, config_dir: ctx.config_dir, built: ctx.built, data: ctx.data }),
        None => spec.exports(addr, ctx),
    };
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
        Kind::Host => schemars::schema_for!(host::Host),
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
        let d = Address::data(Kind::Network, "lan", Key::None);
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
    fn module_addresses_round_trip() {
        let p = ModulePath::root().child("web", Key::Name("a.b".into())).child("db", Key::None);
        let a = Address::managed(Kind::Instance, "vm", Key::Index(0)).in_module(p.clone());
        assert_eq!(a.to_string(), "module.web[\"a.b\"].module.db.instance.vm[0]");
        assert_eq!(a.block(), "module.web[\"a.b\"].module.db.instance.vm");
        assert_eq!(a.file_stem(), "web@a.b+db+vm@0");
        assert_eq!(Address::from_stem(Kind::Instance, &a.file_stem()), Some(a.clone()));
        assert_eq!(a.qualified_dashed(), "web@a.b+db+vm-0");
        assert_eq!(a.dashed(), "vm-0");
        let d = Address::data(Kind::Network, "lan", Key::None).in_module(ModulePath::root().child("net", Key::Index(3)));
        assert_eq!(d.to_string(), "module.net[3].data.network.lan");
        for x in [a, d] {
            assert_eq!(Address::parse(&x.to_string()), Some(x));
        }
        assert_eq!(ModulePath::parse("module.web[\"a.b\"].module.db"), Some(p.clone()));
        assert_eq!(p.to_string(), "module.web[\"a.b\"].module.db");
        assert!(p.within(&ModulePath::parse("module.web").unwrap()));
        assert!(p.within(&ModulePath::parse("module.web[\"a.b\"]").unwrap()));
        assert!(!p.within(&ModulePath::parse("module.web[\"a\"]").unwrap()));
        assert!(!ModulePath::parse("module.web").unwrap().within(&p));
        for bad in ["module.web", "module.instance.vm", "module.1x.instance.vm", "module.web[\"a\".instance.vm", "instance.vm.x", "module..instance.vm"] {
            assert_eq!(Address::parse(bad), None, "{bad}");
        }
        // Root addresses keep their old forms (existing stacks see no diff).
        let r = Address::managed(Kind::Instance, "vm", Key::Name("a".into()));
        assert_eq!((r.file_stem().as_str(), r.qualified_dashed().as_str()), ("vm@a", "vm-a"));
    }

    #[test]
    fn module_stems_never_collide() {
        // module.a["x-y"].instance.vm vs module.a["x"].instance["y-vm"]-like names.
        let one = Address::managed(Kind::Instance, "vm", Key::None).in_module(ModulePath::root().child("a", Key::Name("x-y".into())));
        let two = Address::managed(Kind::Instance, "y-vm", Key::None).in_module(ModulePath::root().child("a", Key::Name("x".into())));
        let three = Address::managed(Kind::Instance, "vm", Key::None).in_module(ModulePath::root().child("a", Key::Name("x".into())).child("y", Key::None));
        let flat = Address::managed(Kind::Instance, "a-x-y-vm", Key::None);
        let stems: BTreeSet<String> = [&one, &two, &three, &flat].iter().map(|a| a.file_stem()).collect();
        let dashed: BTreeSet<String> = [&one, &two, &three, &flat].iter().map(|a| a.qualified_dashed()).collect();
        assert_eq!((stems.len(), dashed.len()), (4, 4), "{stems:?} {dashed:?}");
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
