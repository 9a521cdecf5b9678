//! Loading a configuration: files → raw blocks → references → dependency
//! graph → evaluation in dependency order → typed, validated resources.
//!
//! Invariants:
//! - Loading never touches the host; it reads only the configuration
//!   directory, its variable files and files named by `file()`/`templatefile()`.
//! - Every error is a [`Diagnostic`] with the span of what is wrong; loading
//!   collects as many independent errors as it can before giving up.
//! - References are found by walking expressions before evaluation; each
//!   becomes a graph edge; evaluation follows the graph's order.

pub mod de;
pub mod ser;
pub mod diag;
pub mod eval;
pub mod fmt;
pub mod functions;
pub mod import;
pub mod moved;
pub mod parse;
pub mod refs;
pub mod source;
pub mod types;
pub mod value;
pub mod vars;

use crate::graph::{DepGraph, Node};
use crate::model::{self, Address, Key, Kind, Lifecycle, ModulePath, Resource};
use diag::{Diagnostic, Diagnostics, Severity};
use eval::Evaluator;
use functions::FnCtx;
use parse::{RawAttr, RawBlock, RawBody};
use refs::{Reference, Step};
use source::{Sources, Span};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use value::Value;

/// Block kinds allowed at the top level.
pub const BLOCK_KINDS: &[&str] = &["virtform", "variable", "locals", "output", "data", "import", "moved", "removed", "module", "host", "network", "port", "image", "disk", "volume", "instance"];

/// Types of `data` blocks.
pub const DATA_KINDS: &[&str] = &["network"];

/// Attributes every resource block accepts besides its own.
pub const META_ARGS: &[&str] = &["count", "for_each", "depends_on", "lifecycle"];

/// Extension of configuration files.
pub const CONFIG_SUFFIX: &str = ".vf.hcl";
/// Extension of automatically loaded variable files.
pub const AUTO_VARS_SUFFIX: &str = ".auto.vfvars";

/// What to load and with which inputs.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub dir: PathBuf,
    /// `--var NAME=VALUE`, in order.
    pub vars: Vec<String>,
    /// `--var-file FILE`, in order.
    pub var_files: Vec<PathBuf>,
    /// Environment variables (only `VIRTFORM_VAR_*` are read).
    pub env: Vec<(String, String)>,
    /// `--stack` / `VIRTFORM_STACK`: overrides the configuration's stack.
    pub stack: Option<String>,
    pub state_dir: PathBuf,
    /// Values only the host knows, by port address: the IP a DHCP server
    /// leased to a port without a fixed `ip`. They fill the port's exported
    /// `ip` (for outputs and references) and never its spec.
    pub facts: BTreeMap<String, String>,
    /// The guest agent's addresses by instance address (a host fact like
    /// `facts`): they fill the instance's exported `addresses` and nothing
    /// else. Read only for instances whose `addresses` something reads
    /// ([`Configuration::agent_fact_readers`]).
    pub agent_addresses: BTreeMap<String, Vec<String>>,
    /// Where `data` blocks read the host; `None` (validate, graph): their
    /// facts are unknown.
    pub data: Option<DataHandle>,
}

/// A shared [`DataReader`](model::data::DataReader) in [`LoadOptions`].
#[derive(Clone)]
pub struct DataHandle(pub std::sync::Arc<dyn model::data::DataReader>);

impl std::fmt::Debug for DataHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataHandle")
    }
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Configuration {
    pub sources: Sources,
    pub dir: PathBuf,
    pub stack: String,
    /// Resource instances in dependency order.
    pub resources: Vec<Resource>,
    /// Data source instances (`data.network.lan`), read-only, in dependency order.
    pub data: Vec<Resource>,
    pub graph: DepGraph,
    pub outputs: Vec<Output>,
    pub variables: Vec<VariableValue>,
    pub warnings: Diagnostics,
    /// `import` blocks, checked against the resources (`import.rs`); the
    /// command line's `virtform import ADDRESS ID` adds one.
    pub imports: Vec<import::Import>,
    /// `moved` blocks, checked against the resources (`moved.rs`).
    pub moves: Vec<moved::Move>,
    /// `removed` blocks.
    pub removed: Vec<moved::Removed>,
    /// The address each moved resource takes its host names from (domain
    /// name, bridge, MAC, port id, file stems), when not its own: filled by
    /// [`crate::plan::moved::keep_names`] from the moves and the host's
    /// record (`<state>/<stack>/names.json`); empty after loading.
    pub names: BTreeMap<String, Address>,
    /// The host each resource lives on (`model::placement`); everything is
    /// on this machine when there are no `host` blocks.
    pub placement: model::placement::Placement,
    /// Position in `resources` by address, for `resource()` (planning looks
    /// up every reference; a linear scan would make it quadratic).
    index: BTreeMap<String, usize>,
    /// Names of the `instance` blocks whose `addresses` (a host fact the
    /// guest agent reports) an output or a local reads, also through the
    /// whole object (`instance.vm`): the only instances whose agent
    /// `output`, `apply` and `show` ask. Nothing else queries an agent.
    pub agent_fact_readers: BTreeSet<String>,
    /// The same for `data`.
    data_index: BTreeMap<String, usize>,
}

#[derive(Debug, Clone)]
pub struct Output {
    pub name: String,
    pub value: Value,
    pub sensitive: bool,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct VariableValue {
    pub name: String,
    pub value: Value,
    pub sensitive: bool,
}

/// Loading failed: the diagnostics, and the sources needed to render them.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{diags}")]
pub struct LoadError {
    pub sources: Sources,
    pub diags: Diagnostics,
}

impl LoadError {
    pub fn render(&self, color: bool) -> String {
        self.diags.render(&self.sources, color)
    }
}

/// Formats `Did you mean` for names.
fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    functions::did_you_mean(name, candidates).map(|s| format!("did you mean `{s}`?"))
}

/// Lists the configuration files of a directory, sorted. Every entry whose
/// name ends in `.vf.hcl` is listed, whatever it is: a directory, a FIFO or
/// a dangling link named like a configuration file is reported when read
/// ([`read_source`]), never silently skipped.
pub fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    entries_with_suffix(dir, CONFIG_SUFFIX)
}

fn entries_with_suffix(dir: &Path, suffix: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(suffix) && n.len() > suffix.len()))
        .collect();
    files.sort();
    Ok(files)
}

fn auto_var_files(dir: &Path) -> Vec<PathBuf> {
    entries_with_suffix(dir, AUTO_VARS_SUFFIX).unwrap_or_default()
}

/// Reads one configuration or variables file. `inside`: the configuration
/// directory the file was found in; a symbolic link leading out of it is
/// refused (the directory is the configuration, and an error snippet would
/// show another file's contents). Directories, devices and FIFOs are
/// refused (a FIFO would block). Text that is not UTF-8 is registered
/// (lossily) and reported at the first bad byte.
pub fn read_source(path: &Path, what: &str, inside: Option<&Path>, sources: &mut Sources) -> Result<source::FileId, Diagnostic> {
    let shown = source::display_path(path);
    if let Some(dir) = inside
        && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
    {
        let target = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_default();
        let Ok(real) = std::fs::canonicalize(path) else {
            return Err(Diagnostic::error(format!("{shown} is a symbolic link to {target}, which does not exist")).help("remove the link or restore its target"));
        };
        let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        if !real.starts_with(&root) {
            return Err(Diagnostic::error(format!("{shown} is a symbolic link to {}, outside the configuration directory", real.display()))
                .help("virtform reads configuration files only from inside the configuration directory; copy the file in, or pass variables with --var-file"));
        }
    }
    let meta = std::fs::metadata(path).map_err(|e| Diagnostic::error(format!("cannot read the {what} {shown}: {e}")))?;
    if meta.is_dir() {
        return Err(Diagnostic::error(format!("{shown} is a directory, not a {what}")).help(if inside.is_some() {
            "rename it so that its name does not end in .vf.hcl or .auto.vfvars"
        } else {
            "name a file"
        }));
    }
    if !meta.is_file() {
        return Err(Diagnostic::error(format!("{shown} is not a regular file")).help(format!("a {what} must be a regular file")));
    }
    let bytes = std::fs::read(path).map_err(|e| Diagnostic::error(format!("cannot read the {what} {shown}: {e}")))?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(sources.add(path, text)),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bad = e.as_bytes().get(at).copied().unwrap_or(0);
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let id = sources.add(path, text);
            Err(Diagnostic::error(format!("{shown} is not UTF-8 text"))
                .at(Span::new(id, at..at + char::REPLACEMENT_CHARACTER.len_utf8()))
                .label(format!("byte 0x{bad:02x} is not valid UTF-8"))
                .help(format!("a {what} is UTF-8 text; is this a binary file?")))
        }
    }
}

/// Loads and validates the configuration in `opts.dir`.
pub fn load(opts: &LoadOptions) -> Result<Configuration, LoadError> {
    let mut l = Loader::new(opts);
    match l.run() {
        Ok(mut c) => {
            scrub(&mut c.warnings, &l.secrets);
            Ok(c)
        }
        Err(()) => {
            l.diags.sort();
            scrub(&mut l.diags, &l.secrets);
            Err(LoadError { sources: l.sources, diags: l.diags })
        }
    }
}

/// "string \"x\"", "number 5", "null": a value with its type, for messages.
fn described(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Unknown => "a value known only after apply".into(),
        v => format!("{} {v}", v.type_name()),
    }
}

/// Shortest sensitive value that messages are scrubbed of: shorter ones
/// ("1", "yes") would mangle unrelated words and say little anyway.
const MIN_SECRET_LEN: usize = 3;

/// The texts a sensitive value can show up as in a message: its leaves
/// (strings, numbers, map keys), raw and as quoted/escaped.
fn secret_texts(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            out.push(s.clone());
            out.push(format!("{s:?}").trim_matches('"').to_string());
            out.push(serde_json::to_string(s).unwrap_or_default().trim_matches('"').to_string());
        }
        Value::Number(n) => out.push(value::format_number(*n)),
        Value::Bool(_) | Value::Null | Value::Unknown => {}
        Value::List(xs) | Value::Set(xs) => xs.iter().for_each(|x| secret_texts(x, out)),
        Value::Map(m) => {
            for (k, x) in m {
                out.push(k.clone());
                secret_texts(x, out);
            }
        }
    }
}

/// Replaces every sensitive value in the diagnostics' words (messages,
/// labels, notes, help) with `(sensitive value)`. Errors say what is wrong
/// with a value by quoting it ("cannot convert \"…\" to a number"), so
/// rather than teach every function and check to tell sensitive values
/// apart, their words are scrubbed here, once, before anything is printed.
fn scrub(diags: &mut Diagnostics, secrets: &[String]) {
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| s.chars().count() >= MIN_SECRET_LEN).collect();
    if secrets.is_empty() {
        return;
    }
    // Longest first, so a secret containing another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    let clean = |t: &mut String| {
        for s in &secrets {
            if t.contains(s.as_str()) {
                *t = t.replace(s.as_str(), "(sensitive value)");
            }
        }
    };
    for d in &mut diags.0 {
        clean(&mut d.message);
        if let Some(l) = &mut d.label {
            clean(l);
        }
        if let Some(h) = &mut d.help {
            clean(h);
        }
        for (_, n) in &mut d.notes {
            clean(n);
        }
    }
}

/// Declared names, for reference checks.
struct Names<'a> {
    vars: &'a BTreeSet<String>,
    locals: &'a BTreeSet<String>,
    res: &'a BTreeSet<(Kind, String)>,
    data: &'a BTreeSet<(Kind, String)>,
    /// Module calls and the outputs of the module each calls.
    modules: &'a BTreeMap<String, BTreeSet<String>>,
}

struct ResourceBlock {
    mode: model::Mode,
    kind: Kind,
    name: String,
    block: RawBlock,
}

/// One module's source: a directory's blocks classified, the modules it
/// calls, its dependency graph. Read once per directory and shared by every
/// instance (and every caller) of the module.
#[derive(Default)]
struct ModuleSrc {
    dir: PathBuf,
    settings: Option<RawBlock>,
    var_blocks: Vec<RawBlock>,
    /// Variable declarations (modules only; the root's are read with its values).
    decls: Vec<vars::VarDecl>,
    var_names: BTreeSet<String>,
    local_names: BTreeSet<String>,
    locals: BTreeMap<String, RawAttr>,
    outputs: BTreeMap<String, RawBlock>,
    import_blocks: Vec<RawBlock>,
    moved_blocks: Vec<RawBlock>,
    removed_blocks: Vec<RawBlock>,
    resources: BTreeMap<(Kind, String), ResourceBlock>,
    data: BTreeMap<(Kind, String), ResourceBlock>,
    calls: BTreeMap<String, ModuleCall>,
    graph: DepGraph,
    /// Instance blocks whose `addresses` an output or local of this module reads.
    agent_readers: BTreeSet<String>,
}

/// A `module "NAME" { source = ... }` block and the module it calls.
struct ModuleCall {
    name: String,
    block: RawBlock,
    source: std::rc::Rc<ModuleSrc>,
}

/// What evaluating the module instances accumulates.
struct Acc {
    built: BTreeMap<String, Resource>,
    order: Vec<String>,
    /// The merged graph: the root's, plus every module instance's scoped.
    graph: DepGraph,
    stack: String,
    state_dir: PathBuf,
}

/// `a/b/../c/./d` → `a/c/d` without touching the file system (for the
/// paths of module sources, shown in every error inside them); a `..`
/// that would climb above the start of a relative path is kept.
fn normalize_lexically(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

/// `name` (a reference written in a module: `network.lan`, `module.db`) as
/// an address from the root: `module.web["a"].network.lan`.
fn qualify(path: &ModulePath, name: &str) -> String {
    if path.is_root() { name.to_string() } else { format!("{path}.{name}") }
}

/// The graph node a reference in `src` stands for, if it names a block.
fn ref_node(r: &Reference, src: &ModuleSrc) -> Option<Node> {
    let first = r.first_attr()?;
    match r.root.as_str() {
        "var" if src.var_names.contains(first) => Some(Node::Var(first.to_string())),
        "local" if src.local_names.contains(first) => Some(Node::Local(first.to_string())),
        "module" if src.calls.contains_key(first) => Some(Node::Module(first.to_string())),
        "data" => {
            let kind = Kind::parse(first)?;
            let Some(Step::Attr(n)) = r.steps.get(1) else { return None };
            src.data.contains_key(&(kind, n.clone())).then(|| Node::Data(kind, n.clone()))
        }
        root => {
            let kind = Kind::parse(root)?;
            src.resources.contains_key(&(kind, first.to_string())).then(|| Node::Resource(kind, first.to_string()))
        }
    }
}

struct Loader<'o> {
    opts: &'o LoadOptions,
    sources: Sources,
    diags: Diagnostics,
    warnings: Diagnostics,
    /// Texts of sensitive variables' values, scrubbed from every message.
    secrets: Vec<String>,
    /// Instance blocks whose `addresses` an output or a local reads.
    agent_fact_readers: BTreeSet<String>,
    /// Modules read so far, by canonical directory.
    module_cache: BTreeMap<PathBuf, std::rc::Rc<ModuleSrc>>,
}

type Res<T> = Result<T, ()>;

impl<'o> Loader<'o> {
    fn new(opts: &'o LoadOptions) -> Self {
        Loader { opts, sources: Sources::default(), diags: Diagnostics::default(), warnings: Diagnostics::default(), secrets: Vec::new(), agent_fact_readers: BTreeSet::new(), module_cache: BTreeMap::new() }
    }

    fn fail<T>(&mut self, d: Diagnostic) -> Res<T> {
        self.diags.push(d);
        Err(())
    }

    fn checkpoint(&self) -> Res<()> {
        if self.diags.0.iter().any(|d| d.severity == Severity::Error) { Err(()) } else { Ok(()) }
    }

    fn run(&mut self) -> Res<Configuration> {
        let dir = self.opts.dir.clone();
        let root = self.read_module(&dir, true, &mut Vec::new())?;
        self.checkpoint()?;

        // Variables.
        let base_dir = dir.clone();
        let fn_ctx = FnCtx { base_dir: &base_dir };
        let var_values = self.variables(&root.var_blocks, &fn_ctx)?;
        let sensitive_vars: BTreeSet<String> = var_values.iter().filter(|v| v.sensitive).map(|v| v.name.clone()).collect();
        let mut roots: BTreeMap<String, Value> = BTreeMap::new();
        roots.insert("var".into(), Value::Map(var_values.iter().map(|v| (v.name.clone(), v.value.clone())).collect()));

        // Stack.
        let stack = self.stack(root.settings.as_ref(), &fn_ctx, &roots)?;
        let mut acc = Acc { built: BTreeMap::new(), order: Vec::new(), graph: root.graph.clone(), stack: stack.clone(), state_dir: self.opts.state_dir.clone() };
        let outputs = self.eval_module(&root, &ModulePath::root(), &var_values, &sensitive_vars, &[], &mut acc);
        self.checkpoint()?;
        let outputs = outputs?;
        let Acc { mut built, order: order_out, graph, .. } = acc;
        let (mut data, mut resources): (Vec<Resource>, Vec<Resource>) = order_out.iter().filter_map(|a| built.remove(a)).partition(|r| r.address.is_data());
        self.diags.extend(model::validate::check_all(&resources));
        let (placement, placement_diags) = model::placement::place(&resources);
        self.diags.extend(placement_diags);
        // The whole configuration is this machine's part when nothing is remote.
        set_tunnels(&mut resources, None);
        let mut iroots = BTreeMap::new();
        iroots.insert("var".to_string(), Value::Map(var_values.iter().map(|v| (v.name.clone(), v.value.clone())).collect()));
        iroots.insert("virtform".into(), Value::map([("stack", Value::String(stack.clone()))]));
        let (imports, import_diags) = import::check(&root.import_blocks, &self.sources, &resources, &fn_ctx, &iroots);
        self.diags.extend(import_diags);
        let (moves, removed, moved_diags) = moved::check(&root.moved_blocks, &root.removed_blocks, &self.sources, &resources);
        self.diags.extend(moved_diags);
        data.shrink_to_fit();
        self.checkpoint()?;
        resources.shrink_to_fit();
        let mut warnings = std::mem::take(&mut self.warnings);
        warnings.extend(Diagnostics(self.diags.0.drain(..).filter(|d| d.severity == Severity::Warning).collect()));
        let index = resources.iter().enumerate().map(|(i, r)| (r.address.to_string(), i)).collect();
        let data_index = data.iter().enumerate().map(|(i, r)| (r.address.to_string(), i)).collect();
        Ok(Configuration {
            sources: std::mem::take(&mut self.sources),
            dir,
            stack,
            resources,
            data,
            data_index,
            graph,
            outputs,
            variables: var_values,
            warnings,
            imports,
            moves,
            removed,
            names: BTreeMap::new(),
            placement,
            index,
            agent_fact_readers: std::mem::take(&mut self.agent_fact_readers),
        })
    }

    /// Reads one module's directory (the root configuration, or a `module`
    /// block's `source`): its files, its blocks classified, the modules it
    /// calls (recursively, each directory once), and its dependency graph.
    /// `chain`: the directories of the calls being read, for cycles.
    fn read_module(&mut self, dir: &Path, root: bool, chain: &mut Vec<PathBuf>) -> Res<std::rc::Rc<ModuleSrc>> {
        let files = match config_files(dir) {
            Ok(f) => f,
            Err(e) => return self.fail(Diagnostic::error(format!("cannot read the configuration directory {}: {e}", dir.display()))),
        };
        if files.is_empty() {
            return self.fail(
                Diagnostic::error(format!("no configuration files (*{CONFIG_SUFFIX}) in {}", dir.display()))
                    .help("run virtform in a directory with .vf.hcl files, or pass the directory as an argument"),
            );
        }
        let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        chain.push(canonical);
        let r = self.read_module_files(dir, &files, root, chain);
        chain.pop();
        r
    }

    fn read_module_files(&mut self, dir: &Path, files: &[PathBuf], root: bool, chain: &mut Vec<PathBuf>) -> Res<std::rc::Rc<ModuleSrc>> {
        let start = self.diags.0.len();
        let mut bodies = Vec::new();
        for f in files {
            let id = match read_source(f, "configuration file", Some(dir), &mut self.sources) {
                Ok(id) => id,
                Err(d) => {
                    self.diags.push(d);
                    continue;
                }
            };
            match parse::parse_file(&self.sources, id) {
                Ok(b) => bodies.push(b),
                Err(d) => self.diags.extend(d),
            }
        }
        if self.diags.0[start..].iter().any(|d| d.severity == Severity::Error) {
            return Err(());
        }

        // Classify top-level blocks.
        let mut src = ModuleSrc { dir: dir.to_path_buf(), ..ModuleSrc::default() };
        let mut locals: Vec<RawAttr> = Vec::new();
        let mut resources: Vec<ResourceBlock> = Vec::new();
        let mut outputs: Vec<RawBlock> = Vec::new();
        let mut call_blocks: Vec<RawBlock> = Vec::new();
        let mut seen: BTreeMap<String, Span> = BTreeMap::new();
        for body in bodies {
            for a in &body.attrs {
                self.diags.push(
                    Diagnostic::error(format!("unexpected attribute `{}` at the top level", a.name))
                        .at(a.name_span)
                        .label("expected a block such as network \"NAME\" { ... }"),
                );
            }
            for b in body.blocks {
                let want_labels = match b.kind.as_str() {
                    "virtform" | "locals" | "import" | "moved" | "removed" => 0,
                    "data" => 2,
                    k if BLOCK_KINDS.contains(&k) => 1,
                    k => {
                        let mut d = Diagnostic::error(format!("unknown block type `{k}`")).at(b.kind_span);
                        d = match suggest(k, BLOCK_KINDS.iter().copied()) {
                            Some(s) => d.label(s),
                            None => d.label(format!("expected one of {}", BLOCK_KINDS.join(", "))),
                        };
                        self.diags.push(d);
                        continue;
                    }
                };
                if !root && matches!(b.kind.as_str(), "virtform" | "import" | "moved" | "removed") {
                    self.diags.push(
                        Diagnostic::error(format!("a `{}` block belongs in the root configuration, not in a module", b.kind))
                            .at(b.kind_span)
                            .label(match b.kind.as_str() {
                                "import" => "move it to the root configuration, with `to = module.NAME.KIND.NAME`",
                                "moved" | "removed" => "move it to the root configuration, with the addresses from there (module.NAME.KIND.NAME)",
                                _ => "the stack is the root configuration's",
                            }),
                    );
                    continue;
                }
                if b.labels.len() != want_labels {
                    let what = if want_labels == 2 {
                        "a `data` block takes two labels: its type and its name, like data \"network\" \"lan\"".to_string()
                    } else if want_labels == 0 {
                        format!("a `{}` block takes no label", b.kind)
                    } else {
                        format!("a `{}` block takes exactly one label, its name", b.kind)
                    };
                    let span = b.labels.get(want_labels).map(|l| l.1).unwrap_or(b.kind_span);
                    self.diags.push(Diagnostic::error(what).at(span).label(if want_labels == 2 {
                        "write `data \"network\" \"NAME\" { ... }`".to_string()
                    } else if want_labels == 0 {
                        format!("write `{} {{ ... }}`", b.kind)
                    } else {
                        format!("write `{} \"NAME\" {{ ... }}`", b.kind)
                    }));
                    continue;
                }
                if want_labels == 1 {
                    let (name, span) = b.labels[0].clone();
                    if let Err(m) = model::check_name(&name) {
                        self.diags.push(Diagnostic::error(m).at(span));
                        continue;
                    }
                    let key = format!("{}.{name}", b.kind);
                    if let Some(prev) = seen.get(&key) {
                        self.diags.push(
                            Diagnostic::error(format!("duplicate {} \"{name}\"", b.kind))
                                .at(span)
                                .label(format!("{key} is already declared"))
                                .note(Some(*prev), "first declared here"),
                        );
                        continue;
                    }
                    seen.insert(key, span);
                }
                if want_labels == 2 {
                    let (kind, kspan) = b.labels[0].clone();
                    let (name, span) = b.labels[1].clone();
                    if !DATA_KINDS.contains(&kind.as_str()) {
                        let mut d = Diagnostic::error(format!("there is no data source of type \"{kind}\"")).at(kspan);
                        d = match suggest(&kind, DATA_KINDS.iter().copied()) {
                            Some(s) => d.label(s),
                            None => d.label(format!("expected one of {}", DATA_KINDS.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", "))),
                        };
                        self.diags.push(d);
                        continue;
                    }
                    if let Err(m) = model::check_name(&name) {
                        self.diags.push(Diagnostic::error(m).at(span));
                        continue;
                    }
                    let key = format!("data.{kind}.{name}");
                    if let Some(prev) = seen.get(&key) {
                        self.diags.push(
                            Diagnostic::error(format!("duplicate data \"{kind}\" \"{name}\""))
                                .at(span)
                                .label(format!("{key} is already declared"))
                                .note(Some(*prev), "first declared here"),
                        );
                        continue;
                    }
                    seen.insert(key, span);
                    if let Some(lc) = b.body.blocks_named("lifecycle").next() {
                        self.diags.push(Diagnostic::error("a data source has no `lifecycle`: virtform never creates, changes or destroys it").at(lc.kind_span));
                        continue;
                    }
                    let kind = Kind::parse(&kind).expect("data kind");
                    resources.push(ResourceBlock { mode: model::Mode::Data, kind, name, block: b });
                    continue;
                }
                match b.kind.as_str() {
                    "virtform" => {
                        if let Some(prev) = &src.settings {
                            self.diags.push(
                                Diagnostic::error("duplicate `virtform` block")
                                    .at(b.kind_span)
                                    .note(Some(prev.kind_span), "first declared here"),
                            );
                        } else {
                            src.settings = Some(b);
                        }
                    }
                    "variable" => src.var_blocks.push(b),
                    "output" => outputs.push(b),
                    "import" => src.import_blocks.push(b),
                    "moved" => src.moved_blocks.push(b),
                    "removed" => src.removed_blocks.push(b),
                    "module" => call_blocks.push(b),
                    "locals" => {
                        for nb in &b.body.blocks {
                            self.diags.push(Diagnostic::error(format!("unexpected block `{}` in locals", nb.kind)).at(nb.kind_span).label("locals holds only attributes: name = expression"));
                        }
                        for a in b.body.attrs {
                            let key = format!("local.{}", a.name);
                            if let Some(prev) = seen.get(&key) {
                                self.diags.push(
                                    Diagnostic::error(format!("duplicate local `{}`", a.name))
                                        .at(a.name_span)
                                        .note(Some(*prev), "first declared here"),
                                );
                                continue;
                            }
                            seen.insert(key, a.name_span);
                            locals.push(a);
                        }
                    }
                    k => {
                        let kind = Kind::parse(k).expect("resource kind");
                        let name = b.labels[0].0.clone();
                        resources.push(ResourceBlock { mode: model::Mode::Managed, kind, name, block: b });
                    }
                }
            }
        }

        // The modules this one calls.
        for b in call_blocks {
            if let Some(call) = self.module_call_source(b, chain) {
                src.calls.insert(call.name.clone(), call);
            }
        }
        if self.diags.0[start..].iter().any(|d| d.severity == Severity::Error) {
            return Err(());
        }

        // Declared names, for reference checks.
        src.var_names = src.var_blocks.iter().map(|b| b.labels[0].0.clone()).collect();
        src.local_names = locals.iter().map(|a| a.name.clone()).collect();
        let res_names: BTreeSet<(Kind, String)> = resources.iter().filter(|r| r.mode == model::Mode::Managed).map(|r| (r.kind, r.name.clone())).collect();
        let data_names: BTreeSet<(Kind, String)> = resources.iter().filter(|r| r.mode == model::Mode::Data).map(|r| (r.kind, r.name.clone())).collect();
        let module_outputs: BTreeMap<String, BTreeSet<String>> = src.calls.iter().map(|(n, c)| (n.clone(), c.source.outputs.keys().cloned().collect())).collect();
        let (var_names, local_names) = (src.var_names.clone(), src.local_names.clone());
        let names = Names { vars: &var_names, locals: &local_names, res: &res_names, data: &data_names, modules: &module_outputs };

        // The graph.
        let readers_before = std::mem::take(&mut self.agent_fact_readers);
        let mut graph = DepGraph::default();
        for v in &src.var_names {
            graph.add_node(Node::Var(v.clone()));
        }
        for a in &locals {
            let me = Node::Local(a.name.clone());
            graph.add_node(me.clone());
            let rs = refs::references(&a.expr, a.file, a.expr_span);
            self.add_refs(&mut graph, &me, &rs, &names, None);
        }
        for r in &resources {
            let me = if r.mode == model::Mode::Data { Node::Data(r.kind, r.name.clone()) } else { Node::Resource(r.kind, r.name.clone()) };
            self.block_refs(&mut graph, me, &r.block.body, &names);
        }
        for (name, c) in &src.calls {
            self.block_refs(&mut graph, Node::Module(name.clone()), &c.block.body, &names);
        }
        for o in &outputs {
            let me = Node::Output(o.labels[0].0.clone());
            graph.add_node(me.clone());
            for a in &o.body.attrs {
                let rs = refs::references(&a.expr, a.file, a.expr_span);
                self.add_refs(&mut graph, &me, &rs, &names, None);
            }
        }
        src.agent_readers = std::mem::replace(&mut self.agent_fact_readers, readers_before);
        for d in graph.cycles() {
            self.diags.push(d);
        }
        src.graph = graph;
        if !root {
            let fn_ctx = FnCtx { base_dir: dir };
            let blocks = std::mem::take(&mut src.var_blocks);
            src.decls = self.var_decls(&blocks, &fn_ctx);
            src.var_blocks = blocks;
        }
        if self.diags.0[start..].iter().any(|d| d.severity == Severity::Error) {
            return Err(());
        }
        src.locals = locals.into_iter().map(|a| (a.name.clone(), a)).collect();
        for r in resources {
            let key = (r.kind, r.name.clone());
            if r.mode == model::Mode::Data {
                src.data.insert(key, r);
            } else {
                src.resources.insert(key, r);
            }
        }
        src.outputs = outputs.into_iter().map(|o| (o.labels[0].0.clone(), o)).collect();
        Ok(std::rc::Rc::new(src))
    }

    /// References of a resource, data source or module block become its edges.
    fn block_refs(&mut self, graph: &mut DepGraph, me: Node, body: &RawBody, names: &Names<'_>) {
        graph.add_node(me.clone());
        let has_count = body.attr("count").is_some();
        let has_each = body.attr("for_each").is_some();
        let ctx = Some((has_count, has_each));
        for (a, _) in all_attrs(body, "") {
            if a.name == "depends_on" || a.name == "replace_triggered_by" {
                let rs = refs::references(&a.expr, a.file, a.expr_span);
                self.add_refs(graph, &me, &rs, names, ctx);
                continue;
            }
            if a.name == "ignore_changes" || (matches!(me, Node::Module(_)) && a.name == "source") {
                continue;
            }
            let rs = refs::references(&a.expr, a.file, a.expr_span);
            let rs = if a.name == "count" || a.name == "for_each" {
                self.forbid_self(&rs, "count", &a.name);
                self.forbid_self(&rs, "each", &a.name);
                rs.into_iter().filter(|x| x.root != "count" && x.root != "each").collect()
            } else {
                rs
            };
            self.add_refs(graph, &me, &rs, names, ctx);
        }
    }

    /// A `module` block: its `source` resolved (relative to the calling
    /// file's directory) and read; errors are located at the block.
    fn module_call_source(&mut self, b: RawBlock, chain: &mut Vec<PathBuf>) -> Option<ModuleCall> {
        let name = b.labels[0].0.clone();
        for nb in &b.body.blocks {
            let what = if nb.kind == "lifecycle" { "a module block has no `lifecycle`; set it on the module's resources".to_string() } else { format!("unexpected block `{}` in module \"{name}\"", nb.kind) };
            self.diags.push(Diagnostic::error(what).at(nb.kind_span).label("module blocks hold source, count, for_each, depends_on and the module's inputs"));
        }
        for a in &b.body.attrs {
            if matches!(a.name.as_str(), "providers" | "version") {
                self.diags.push(Diagnostic::error(format!("`{}` is not supported in a module block", a.name)).at(a.name_span).label("virtform has local modules only: source = \"./DIR\""));
            }
        }
        let Some(sa) = b.body.attr("source") else {
            self.diags.push(Diagnostic::error(format!("module \"{name}\" has no `source`")).at(b.header_span()).label("add source = \"./modules/NAME\", a directory of .vf.hcl files"));
            return None;
        };
        let text = match &sa.expr {
            hcl_edit::expr::Expression::String(s) => s.as_str().to_string(),
            _ => {
                self.diags.push(Diagnostic::error("a module's `source` must be a literal string").at(sa.expr_span).label("write source = \"./modules/NAME\" (it is read before anything is evaluated)"));
                return None;
            }
        };
        if !(text.starts_with("./") || text.starts_with("../")) {
            self.diags.push(
                Diagnostic::error(format!("module source \"{text}\" is not a local directory"))
                    .at(sa.expr_span)
                    .label("virtform has local modules only: start the path with ./ or ../"),
            );
            return None;
        }
        let caller_dir = self.sources.get(sa.file).path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = normalize_lexically(&caller_dir.join(&text));
        let shown = source::display_path(&dir);
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                self.diags.push(Diagnostic::error(format!("module source {shown} is not a directory")).at(sa.expr_span).label("a module is a directory of .vf.hcl files"));
                return None;
            }
            Err(e) => {
                self.diags.push(Diagnostic::error(format!("module source directory {shown} cannot be read: {e}")).at(sa.expr_span).label("the path is relative to the directory of this file"));
                return None;
            }
        }
        let canonical = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        if let Some(i) = chain.iter().position(|c| *c == canonical) {
            let mut cycle: Vec<String> = chain[i..].iter().map(|p| source::display_path(p)).collect();
            cycle.push(source::display_path(&canonical));
            self.diags.push(
                Diagnostic::error(format!("module cycle: {}", cycle.join(" -> ")))
                    .at(sa.expr_span)
                    .label(format!("module \"{name}\" calls a module that is already being expanded"))
                    .help("a module cannot call itself, directly or through other modules"),
            );
            return None;
        }
        let source = match self.module_cache.get(&canonical) {
            Some(s) => s.clone(),
            None => {
                let start = self.diags.0.len();
                let r = self.read_module(&dir, false, chain);
                let header = b.header_span();
                for d in &mut self.diags.0[start..] {
                    d.notes.push((Some(header), format!("in module \"{name}\" (source \"{text}\"), called here")));
                }
                let s = r.ok()?;
                self.module_cache.insert(canonical, s.clone());
                s
            }
        };
        Some(ModuleCall { name, block: b, source })
    }

    /// Evaluates one module instance (the root, or one instance of a
    /// `module` block) in its graph's order; resources go into `acc` with
    /// addresses under `path`. Returns its outputs.
    #[allow(clippy::too_many_arguments)]
    fn eval_module(&mut self, src: &ModuleSrc, path: &ModulePath, var_values: &[VariableValue], sensitive_vars: &BTreeSet<String>, inherited: &[String], acc: &mut Acc) -> Res<Vec<Output>> {
        let dir = src.dir.clone();
        let fn_ctx = FnCtx { base_dir: &dir };
        let stack = acc.stack.clone();
        let mut roots: BTreeMap<String, Value> = BTreeMap::new();
        roots.insert("var".into(), Value::Map(var_values.iter().map(|v| (v.name.clone(), v.value.clone())).collect()));
        roots.insert("virtform".into(), Value::map([("stack", Value::String(stack.clone()))]));
        roots.insert(
            "path".into(),
            Value::map([
                ("module", Value::String(dir.to_string_lossy().into_owned())),
                ("root", Value::String(self.opts.dir.to_string_lossy().into_owned())),
                ("cwd", Value::String(std::env::current_dir().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default())),
            ]),
        );
        roots.insert("local".into(), Value::Map(BTreeMap::new()));
        roots.insert("module".into(), Value::Map(BTreeMap::new()));
        for k in Kind::ALL {
            roots.insert(k.as_str().into(), Value::Map(BTreeMap::new()));
        }
        roots.insert("data".into(), Value::Map(DATA_KINDS.iter().map(|k| (k.to_string(), Value::Map(BTreeMap::new()))).collect()));
        for r in &src.agent_readers {
            self.agent_fact_readers.insert(if path.is_root() { r.clone() } else { format!("{path}.{r}") });
        }

        // Evaluate in dependency order.
        let graph = &src.graph;
        let mut sensitive_nodes: BTreeSet<Node> = sensitive_vars.iter().map(|v| Node::Var(v.clone())).collect();
        let mut out_values = Vec::new();
        let state_dir = acc.state_dir.clone();
        let mut failed_nodes: BTreeSet<Node> = BTreeSet::new();
        for node in graph.order() {
            // Dependents of a block that failed are skipped: their errors would only echo it.
            if graph.deps(&node).iter().any(|d| failed_nodes.contains(*d)) {
                failed_nodes.insert(node.clone());
                continue;
            }
            let sensitive_dep = graph.deps(&node).iter().any(|d| sensitive_nodes.contains(*d));
            match &node {
                Node::Var(_) => {}
                Node::Local(name) => {
                    let a = &src.locals[name];
                    let v = Evaluator::new(a.file, a.expr_span, &fn_ctx, &roots).eval(&a.expr);
                    // Each local can wrap the one before: a chain of them
                    // would build a value deep enough to overflow the stack
                    // of every recursive walk (clone, compare, print).
                    let v = v.and_then(|v| {
                        if v.deeper_than(value::MAX_DEPTH) {
                            Err(Diagnostic::error(format!("local.{name} is nested more than {} levels deep", value::MAX_DEPTH)).at(a.expr_span))
                        } else {
                            Ok(v)
                        }
                    });
                    match v {
                        Ok(v) => {
                            if let Some(Value::Map(m)) = roots.get_mut("local") {
                                m.insert(name.clone(), v);
                            }
                        }
                        Err(d) => {
                            self.diags.push(d);
                            failed_nodes.insert(node.clone());
                        }
                    }
                    if sensitive_dep {
                        sensitive_nodes.insert(node.clone());
                    }
                }
                Node::Data(kind, name) | Node::Resource(kind, name) => {
                    let is_data = matches!(node, Node::Data(..));
                    let rb = if is_data { &src.data[&(*kind, name.clone())] } else { &src.resources[&(*kind, name.clone())] };
                    let sensitive_attrs = self.sensitive_attrs(&rb.block.body, &sensitive_nodes, &src.var_names, &src.local_names);
                    let ctx_paths = ResCtx { stack: &stack, state_dir: &state_dir, config_dir: &dir, module: path, inherited };
                    let exports = graph.is_referenced(&node);
                    match self.resource(rb, &fn_ctx, &roots, &ctx_paths, &mut acc.built, &mut acc.order, &sensitive_attrs, exports) {
                        Ok(v) => {
                            let slot = if is_data {
                                roots.get_mut("data").and_then(|d| match d {
                                    Value::Map(m) => m.get_mut(kind.as_str()),
                                    _ => None,
                                })
                            } else {
                                roots.get_mut(kind.as_str())
                            };
                            if let Some(Value::Map(m)) = slot {
                                m.insert(name.clone(), v);
                            }
                        }
                        Err(()) => {
                            failed_nodes.insert(node.clone());
                        }
                    }
                }
                Node::Module(name) => {
                    let call = &src.calls[name];
                    match self.module_call(call, src, &fn_ctx, &roots, path, &sensitive_nodes, inherited, acc) {
                        Ok((v, sensitive_out)) => {
                            if let Some(Value::Map(m)) = roots.get_mut("module") {
                                m.insert(name.clone(), v);
                            }
                            // What reads a module that got or gives sensitive values is sensitive.
                            if sensitive_dep || sensitive_out {
                                sensitive_nodes.insert(node.clone());
                            }
                        }
                        Err(()) => {
                            failed_nodes.insert(node.clone());
                        }
                    }
                }
                Node::Output(name) => {
                    let o = &src.outputs[name];
                    out_values.push(self.output(o, &fn_ctx, &roots, sensitive_dep));
                }
                Node::Scoped(..) => {}
            }
        }
        if !failed_nodes.is_empty() {
            return Err(());
        }
        Ok(out_values.into_iter().flatten().collect())
    }

    /// Every instance of a `module` block: its inputs evaluated in the
    /// caller's scope, converted and validated against the module's
    /// variables, then the module evaluated under `parent.module.NAME[KEY]`.
    /// The value `module.NAME` reads: the outputs as an object, a list of
    /// them under `count`, a map under `for_each`.
    #[allow(clippy::too_many_arguments)]
    fn module_call(&mut self, call: &ModuleCall, parent_src: &ModuleSrc, fn_ctx: &FnCtx<'_>, roots: &BTreeMap<String, Value>, parent: &ModulePath, sensitive_nodes: &BTreeSet<Node>, inherited: &[String], acc: &mut Acc) -> Res<(Value, bool)> {
        const META: &[&str] = &["source", "count", "for_each", "depends_on"];
        let body = &call.block.body;
        let child = call.source.clone();
        let header = call.block.header_span();
        let here = if parent.is_root() { format!("module.{}", call.name) } else { format!("{parent}.module.{}", call.name) };
        // Inputs are the module's variables.
        let inputs: Vec<&RawAttr> = body.attrs.iter().filter(|a| !META.contains(&a.name.as_str()) && !matches!(a.name.as_str(), "providers" | "version")).collect();
        let mut bad = false;
        for a in &inputs {
            if !child.var_names.contains(&a.name) {
                let mut d = Diagnostic::error(format!("module \"{}\" has no variable `{}`", call.name, a.name)).at(a.name_span);
                d = match suggest(&a.name, child.var_names.iter().map(String::as_str)) {
                    Some(s) => d.label(format!("unknown input; {s}")),
                    None if child.var_names.is_empty() => d.label("unknown input: the module declares no variables"),
                    None => d.label(format!("unknown input; the module's variables are {}", child.var_names.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", "))),
                };
                self.diags.push(d.note(Some(header), "in this module block"));
                bad = true;
            }
        }
        for d in &child.decls {
            if d.default.is_none() && !inputs.iter().any(|a| a.name == d.name) {
                self.diags.push(
                    Diagnostic::error(format!("module \"{}\" is missing the required input `{}`", call.name, d.name))
                        .at(header)
                        .label(format!("add {} = ... to this block", d.name))
                        .note(Some(d.span), "the variable is declared here without a default"),
                );
                bad = true;
            }
        }
        if bad {
            return Err(());
        }
        let (instances, shape) = self.instances(body, fn_ctx, roots, &here)?;
        let mut deps: Vec<String> = self.depends_on(body).into_iter().map(|d| qualify(parent, &d)).collect();
        deps.extend(inherited.iter().cloned());
        let sensitive_inputs = self.sensitive_attrs(body, sensitive_nodes, &parent_src.var_names, &parent_src.local_names);
                let (mut list, mut map, mut single) = (Vec::new(), BTreeMap::new(), Value::Null);
        let mut failed = false;
        let mut sensitive_out = false;
        for (key, count_v, each) in instances {
            let path = parent.child(&call.name, key.clone());
            let bind = instance_bindings(count_v, each);
            let scope = Scope { fn_ctx, roots, bind: &bind };
            let start = self.diags.0.len();
            let mut raw: BTreeMap<String, (vars::Raw, vars::Origin)> = BTreeMap::new();
            for d in &child.decls {
                if let Some(v) = &d.default {
                    let span = child.var_blocks.iter().find(|b| b.labels[0].0 == d.name).and_then(|b| b.body.attr("default")).map(|a| a.expr_span).unwrap_or(d.span);
                    raw.insert(d.name.clone(), (vars::Raw::Value(v.clone()), vars::Origin::Default(span)));
                }
            }
            let mut ok = true;
            for a in &inputs {
                match scope.evaluator(a).eval(&a.expr) {
                    Ok(v) => {
                        raw.insert(a.name.clone(), (vars::Raw::Value(v), vars::Origin::Input(a.expr_span)));
                    }
                    Err(d) => {
                        self.diags.push(d);
                        ok = false;
                    }
                }
            }
            let child_dir = child.dir.clone();
            let child_ctx = FnCtx { base_dir: &child_dir };
            let values = if ok { self.convert_vars(&child.decls, &child.var_blocks, &raw, &child_ctx) } else { Err(()) };
            let outputs = values.and_then(|mut values| {
                for v in &mut values {
                    v.sensitive |= sensitive_inputs.contains(&v.name);
                }
                let sens: BTreeSet<String> = values.iter().filter(|v| v.sensitive).map(|v| v.name.clone()).collect();
                let r = self.eval_module(&child, &path, &values, &sens, &deps, acc);
                acc.graph.merge_scoped(&child.graph, &path);
                r
            });
            for d in &mut self.diags.0[start..] {
                d.notes.push((Some(header), format!("in {path}, called here")));
            }
            // The merged graph: the call reads the instance's outputs; the
            // instance's variables read what the inputs refer to.
            let me = Node::scoped(parent, Node::Module(call.name.clone()));
            for o in child.outputs.keys() {
                acc.graph.add_edge(&me, &Node::scoped(&path, Node::Output(o.clone())), header);
            }
            for a in &inputs {
                for r in refs::references(&a.expr, a.file, a.expr_span) {
                    if let Some(n) = ref_node(&r, parent_src) {
                        acc.graph.add_edge(&Node::scoped(&path, Node::Var(a.name.clone())), &Node::scoped(parent, n), r.span);
                    }
                }
            }
            // The block's depends_on holds for each resource of the instance.
            if let Some(a) = body.attr("depends_on") {
                let targets: Vec<(Node, Span)> = refs::references(&a.expr, a.file, a.expr_span).iter().filter_map(|r| ref_node(r, parent_src).map(|n| (n, r.span))).collect();
                for n in child.graph.g.node_weights().filter(|n| n.is_resource()) {
                    for (t, span) in &targets {
                        acc.graph.add_edge(&Node::scoped(&path, n.clone()), &Node::scoped(parent, t.clone()), *span);
                    }
                }
            }
            let Ok(outputs) = outputs else {
                failed = true;
                continue;
            };
            sensitive_out |= outputs.iter().any(|o| o.sensitive);
            let obj = Value::Map(outputs.into_iter().map(|o| (o.name, o.value)).collect());
            match key {
                Key::None => single = obj,
                Key::Index(_) => list.push(obj),
                Key::Name(k) => {
                    map.insert(k, obj);
                }
            }
        }
        if failed {
            return Err(());
        }
        let v = match shape {
            0 => single,
            1 => Value::List(list),
            _ => Value::Map(map),
        };
        Ok((v, sensitive_out))
    }

    /// Notes an output or local that reads an instance's `addresses` (or the
    /// whole instance object); refuses a resource that reads `addresses`:
    /// a host fact never becomes desired state.
    fn agent_fact_reference(&mut self, me: &Node, name: &str, r: &Reference) {
        // The first attribute after the name and its indexes.
        let attr = r.steps.iter().skip(1).find_map(|s| match s {
            Step::Attr(a) => Some(a.as_str()),
            _ => None,
        });
        let reads = attr.is_none_or(|a| a == "addresses");
        match me {
            Node::Output(_) | Node::Local(_) if reads => {
                self.agent_fact_readers.insert(name.to_string());
            }
            Node::Resource(..) | Node::Data(..) | Node::Module(..) if attr == Some("addresses") => self.diags.push(
                Diagnostic::error(format!("`instance.{name}.addresses` is a host fact (what the guest agent reports) and cannot configure a resource"))
                    .at(r.span)
                    .label("read it in an output; give the port a fixed `ip` to use an address here"),
            ),
            _ => {}
        }
    }

    fn forbid_self(&mut self, rs: &[Reference], root: &str, attr: &str) {
        for r in rs.iter().filter(|r| r.root == root) {
            self.diags.push(
                Diagnostic::error(format!("`{root}` cannot be used in `{attr}`"))
                    .at(r.span)
                    .label(format!("`{attr}` is evaluated before the instances it creates exist")),
            );
        }
    }

    fn add_refs(&mut self, graph: &mut DepGraph, me: &Node, rs: &[Reference], names: &Names<'_>, repetition: Option<(bool, bool)>) {
        let (vars, locals, res) = (names.vars, names.locals, names.res);
        for r in rs {
            match r.root.as_str() {
                "var" => match r.first_attr() {
                    Some(v) if vars.contains(v) => graph.add_edge(me, &Node::Var(v.to_string()), r.span),
                    Some(v) => {
                        let mut d = Diagnostic::error(format!("reference to undeclared variable `var.{v}`")).at(r.span);
                        d = match suggest(v, vars.iter().map(String::as_str)) {
                            Some(s) => d.label(s),
                            None => d.label(format!("declare it with: variable \"{v}\" {{}}")),
                        };
                        self.diags.push(d);
                    }
                    None => self.diags.push(Diagnostic::error("`var` must be followed by a variable name, like var.workers").at(r.span)),
                },
                "local" => match r.first_attr() {
                    Some(v) if locals.contains(v) => graph.add_edge(me, &Node::Local(v.to_string()), r.span),
                    Some(v) => {
                        let mut d = Diagnostic::error(format!("reference to undeclared local `local.{v}`")).at(r.span);
                        if let Some(s) = suggest(v, locals.iter().map(String::as_str)) {
                            d = d.label(s);
                        }
                        self.diags.push(d);
                    }
                    None => self.diags.push(Diagnostic::error("`local` must be followed by a name, like local.prefix").at(r.span)),
                },
                "count" | "each" => {
                    let (has_count, has_each) = repetition.unwrap_or((false, false));
                    let (ok, attrs, meta) = if r.root == "count" { (has_count, &["index"][..], "count") } else { (has_each, &["key", "value"][..], "for_each") };
                    if !ok {
                        self.diags.push(
                            Diagnostic::error(format!("`{}` is only available in a resource with `{meta}`", r.root))
                                .at(r.span)
                                .label(format!("add `{meta}` to this block, or remove this reference")),
                        );
                    } else {
                        match r.first_attr() {
                            Some(a) if attrs.contains(&a) => {}
                            other => {
                                let got = other.unwrap_or("");
                                let mut d = Diagnostic::error(format!("`{}.{got}` does not exist", r.root)).at(r.span);
                                d = match suggest(got, attrs.iter().copied()) {
                                    Some(s) => d.label(s),
                                    None => d.label(format!("expected {}", attrs.iter().map(|a| format!("{}.{a}", r.root)).collect::<Vec<_>>().join(" or "))),
                                };
                                self.diags.push(d);
                            }
                        }
                    }
                }
                "module" => match r.first_attr() {
                    Some(m) if names.modules.contains_key(m) => {
                        // The output read, after the module's name and an optional index.
                        let output = r.steps.iter().skip(1).find_map(|s| match s {
                            Step::Attr(a) => Some(a.as_str()),
                            _ => None,
                        });
                        let outs = &names.modules[m];
                        match output {
                            Some(o) if !outs.contains(o) => {
                                let mut d = Diagnostic::error(format!("module \"{m}\" has no output `{o}`")).at(r.span);
                                d = match suggest(o, outs.iter().map(String::as_str)) {
                                    Some(s) => d.label(s),
                                    None if outs.is_empty() => d.label("the module declares no outputs"),
                                    None => d.label(format!("its outputs are {}", outs.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", "))),
                                };
                                self.diags.push(d);
                            }
                            _ => graph.add_edge(me, &Node::Module(m.to_string()), r.span),
                        }
                    }
                    Some(m) => {
                        let mut d = Diagnostic::error(format!("reference to undeclared module `module.{m}`")).at(r.span);
                        d = match suggest(m, names.modules.keys().map(String::as_str)) {
                            Some(s) => d.label(s),
                            None => d.label(format!("declare it with: module \"{m}\" {{ source = \"./modules/{m}\" }}")),
                        };
                        self.diags.push(d);
                    }
                    None => self.diags.push(Diagnostic::error("`module` must be followed by a module name, like module.web").at(r.span)),
                },
                "virtform" => {
                    if r.first_attr() != Some("stack") {
                        self.diags.push(Diagnostic::error("the only attribute of `virtform` is `stack`").at(r.span).label("expected virtform.stack"));
                    }
                }
                "path" => {
                    if !matches!(r.first_attr(), Some("module") | Some("root") | Some("cwd")) {
                        self.diags.push(Diagnostic::error("`path` has the attributes `module`, `root` and `cwd`").at(r.span));
                    }
                }
                "data" => {
                    let kind = r.first_attr();
                    let name = match r.steps.get(1) {
                        Some(Step::Attr(n)) => Some(n.as_str()),
                        _ => None,
                    };
                    match (kind, name) {
                        (Some(k), Some(n)) if Kind::parse(k).is_some_and(|kind| names.data.contains(&(kind, n.to_string()))) => {
                            graph.add_edge(me, &Node::Data(Kind::parse(k).expect("kind"), n.to_string()), r.span)
                        }
                        (Some(k), Some(n)) if DATA_KINDS.contains(&k) => {
                            let same = names.data.iter().map(|(_, n)| n.as_str());
                            let mut d = Diagnostic::error(format!("reference to undeclared data source `data.{k}.{n}`")).at(r.span);
                            d = match suggest(n, same) {
                                Some(s) => d.label(s),
                                None => d.label(format!("declare it with: data \"{k}\" \"{n}\" {{ ... }}")),
                            };
                            self.diags.push(d);
                        }
                        (Some(k), _) if !DATA_KINDS.contains(&k) => {
                            self.diags.push(Diagnostic::error(format!("there is no data source of type \"{k}\"")).at(r.span).label("expected data.network.NAME"));
                        }
                        _ => self.diags.push(Diagnostic::error("`data` must be followed by a type and a name, like data.network.lan").at(r.span)),
                    }
                }
                root => {
                    if let Some(kind) = Kind::parse(root) {
                        match r.first_attr() {
                            Some(n) if res.contains(&(kind, n.to_string())) => {
                                if kind == Kind::Instance {
                                    self.agent_fact_reference(me, n, r);
                                }
                                graph.add_edge(me, &Node::Resource(kind, n.to_string()), r.span)
                            }
                            Some(n) => {
                                let same_kind = res.iter().filter(|(k, _)| *k == kind).map(|(_, n)| n.as_str());
                                let mut d = Diagnostic::error(format!("reference to undeclared resource `{root}.{n}`")).at(r.span);
                                d = match suggest(n, same_kind) {
                                    Some(s) => d.label(s),
                                    None => d.label(format!("no {root} named \"{n}\" is declared")),
                                };
                                self.diags.push(d);
                            }
                            None => self.diags.push(
                                Diagnostic::error(format!("`{root}` must be followed by a resource name, like {root}.NAME")).at(r.span),
                            ),
                        }
                    } else {
                        let mut roots: Vec<&str> = vec!["var", "local", "count", "each", "virtform", "path", "data", "module"];
                        roots.extend(Kind::ALL.iter().map(|k| k.as_str()));
                        let mut d = Diagnostic::error(format!("unknown name `{root}`")).at(r.span);
                        d = match suggest(root, roots.iter().copied()) {
                            Some(s) => d.label(s),
                            None => d.label("expected var.NAME, local.NAME, a resource like network.NAME, count.index or each.key"),
                        };
                        self.diags.push(d);
                    }
                }
            }
        }
    }

    fn variables(&mut self, blocks: &[RawBlock], fn_ctx: &FnCtx<'_>) -> Res<Vec<VariableValue>> {
        let empty = BTreeMap::new();
        let decls = self.var_decls(blocks, fn_ctx);
        self.checkpoint()?;
        let mut raw = self.root_var_sources(&decls, blocks, fn_ctx, &empty);
        for d in &decls {
            if !raw.contains_key(&d.name) {
                self.diags.push(vars::missing(d));
            }
        }
        self.checkpoint()?;
        raw.retain(|k, _| decls.iter().any(|d| d.name == *k));
        self.convert_vars(&decls, blocks, &raw, fn_ctx)
    }

    /// The declarations of `variable` blocks (type, default, description,
    /// sensitive), their errors pushed.
    fn var_decls(&mut self, blocks: &[RawBlock], fn_ctx: &FnCtx<'_>) -> Vec<vars::VarDecl> {
        let empty = BTreeMap::new();
        let mut decls = Vec::new();
        const VAR_ATTRS: &[&str] = &["type", "default", "description", "sensitive", "nullable"];
        for b in blocks {
            let name = b.labels[0].0.clone();
            let mut decl = vars::VarDecl { name: name.clone(), ty: types::Type::Any, default: None, description: None, sensitive: false, span: b.labels[0].1 };
            for a in &b.body.attrs {
                match a.name.as_str() {
                    "type" => match types::parse_type(&a.expr) {
                        Ok(t) => decl.ty = t,
                        Err((m, r)) => self.diags.push(Diagnostic::error(m).at(Span::from_opt(a.file, r, a.expr_span))),
                    },
                    "default" | "description" | "sensitive" | "nullable" => {
                        let rs = refs::references(&a.expr, a.file, a.expr_span);
                        if let Some(r) = rs.first() {
                            self.diags.push(Diagnostic::error(format!("`{}` of a variable must be a constant", a.name)).at(r.span).label("variables cannot refer to other values"));
                            continue;
                        }
                        match Evaluator::new(a.file, a.expr_span, fn_ctx, &empty).eval(&a.expr) {
                            Ok(v) => match a.name.as_str() {
                                "default" => decl.default = Some(v),
                                "description" => decl.description = v.as_str().map(str::to_string),
                                "sensitive" => match v.as_bool() {
                                    Some(s) => decl.sensitive = s,
                                    None => self.diags.push(Diagnostic::error("`sensitive` must be true or false").at(a.expr_span)),
                                },
                                _ => {}
                            },
                            Err(d) => self.diags.push(d),
                        }
                    }
                    other => {
                        let mut d = Diagnostic::error(format!("unknown attribute `{other}` in variable \"{name}\"")).at(a.name_span);
                        d = match suggest(other, VAR_ATTRS.iter().copied()) {
                            Some(s) => d.label(s),
                            None => d.label(format!("expected one of {}", VAR_ATTRS.join(", "))),
                        };
                        self.diags.push(d);
                    }
                }
            }
            for nb in &b.body.blocks {
                if nb.kind != "validation" {
                    let mut d = Diagnostic::error(format!("unknown block `{}` in variable \"{name}\"", nb.kind)).at(nb.kind_span);
                    if let Some(s) = suggest(&nb.kind, ["validation"]) {
                        d = d.label(s);
                    }
                    self.diags.push(d);
                }
            }
            if let Some(d) = decl.default.clone() {
                match types::convert(&d, &decl.ty) {
                    Ok(v) => decl.default = Some(v),
                    Err(e) => {
                        let span = b.body.attr("default").map(|a| a.expr_span).unwrap_or(decl.span);
                        self.diags.push(Diagnostic::error(format!("the default of variable `{name}` does not match its type {}", decl.ty)).at(span).label(e.to_string()));
                    }
                }
            }
            decls.push(decl);
        }
        decls
    }

    /// The root's variable values by precedence: defaults, environment,
    /// auto files, --var-file, --var.
    fn root_var_sources(&mut self, decls: &[vars::VarDecl], blocks: &[RawBlock], fn_ctx: &FnCtx<'_>, empty: &BTreeMap<String, Value>) -> BTreeMap<String, (vars::Raw, vars::Origin)> {
        let mut raw: BTreeMap<String, (vars::Raw, vars::Origin)> = BTreeMap::new();
        for d in decls {
            if let Some(v) = &d.default {
                let span = blocks
                    .iter()
                    .find(|b| b.labels[0].0 == d.name)
                    .and_then(|b| b.body.attr("default"))
                    .map(|a| a.expr_span)
                    .unwrap_or(d.span);
                raw.insert(d.name.clone(), (vars::Raw::Value(v.clone()), vars::Origin::Default(span)));
            }
        }
        for (k, v) in &self.opts.env {
            if let Some(n) = k.strip_prefix("VIRTFORM_VAR_")
                && decls.iter().any(|d| d.name == n) {
                    raw.insert(n.to_string(), (vars::Raw::Text(v.clone()), vars::Origin::Env(k.clone())));
                }
        }
        let auto = auto_var_files(&self.opts.dir);
        let n_auto = auto.len();
        let files = auto.into_iter().chain(self.opts.var_files.iter().cloned());
        for (i, f) in files.enumerate() {
            // Auto files come from the configuration directory; --var-file names any file on purpose.
            let inside = if i < n_auto { Some(self.opts.dir.as_path()) } else { None };
            let what = if inside.is_some() { "variables file" } else { "variables file (--var-file)" };
            let id = match read_source(&f, what, inside, &mut self.sources) {
                Ok(id) => id,
                Err(d) => {
                    self.diags.push(d);
                    continue;
                }
            };
            let body = match parse::parse_file(&self.sources, id) {
                Ok(b) => b,
                Err(d) => {
                    self.diags.extend(d);
                    continue;
                }
            };
            for b in &body.blocks {
                self.diags.push(Diagnostic::error("a variables file holds only `name = value` lines").at(b.kind_span));
            }
            for a in &body.attrs {
                if !decls.iter().any(|d| d.name == a.name) {
                    self.warnings.push(vars::undeclared(&a.name, decls, &vars::Origin::File(a.name_span)));
                    continue;
                }
                let rs = refs::references(&a.expr, a.file, a.expr_span);
                if let Some(r) = rs.first() {
                    self.diags.push(Diagnostic::error("values in a variables file must be constants").at(r.span));
                    continue;
                }
                match Evaluator::new(a.file, a.expr_span, fn_ctx, empty).eval(&a.expr) {
                    Ok(v) => {
                        raw.insert(a.name.clone(), (vars::Raw::Value(v), vars::Origin::File(a.expr_span)));
                    }
                    Err(d) => self.diags.push(d),
                }
            }
        }
        for flag in &self.opts.vars {
            match vars::split_flag(flag) {
                Ok((k, v)) => {
                    if !decls.iter().any(|d| d.name == k) {
                        self.diags.push(vars::undeclared(&k, decls, &vars::Origin::Flag(k.clone())));
                        continue;
                    }
                    raw.insert(k.clone(), (vars::Raw::Text(v), vars::Origin::Flag(k)));
                }
                Err(d) => self.diags.push(d),
            }
        }
        raw
    }

    /// Converts each variable's raw value to its type and checks its
    /// validation blocks (the root's from its sources, a module's from the
    /// module block's inputs and the defaults).
    fn convert_vars(&mut self, decls: &[vars::VarDecl], blocks: &[RawBlock], raw: &BTreeMap<String, (vars::Raw, vars::Origin)>, fn_ctx: &FnCtx<'_>) -> Res<Vec<VariableValue>> {
        for d in decls.iter().filter(|d| d.sensitive) {
            match raw.get(&d.name) {
                Some((vars::Raw::Text(t), _)) => self.secrets.push(t.clone()),
                Some((vars::Raw::Value(v), _)) => secret_texts(v, &mut self.secrets),
                None => {}
            }
        }
        let start = self.diags.0.len();
        // Convert and validate.
        let mut out = Vec::new();
        for d in decls {
            let Some((r, origin)) = raw.get(&d.name) else {
                self.diags.push(vars::missing(d));
                continue;
            };
            let at = match origin {
                vars::Origin::File(s) | vars::Origin::Default(s) | vars::Origin::Input(s) => *s,
                _ => d.span,
            };
            let v = match r {
                vars::Raw::Value(v) => Ok(v.clone()),
                vars::Raw::Text(t) => vars::text_to_value(t, &d.ty, &self.opts.dir),
            };
            let v = v.and_then(|v| types::convert(&v, &d.ty).map_err(|e| e.to_string()));
            let v = match v {
                Ok(v) => v,
                Err(m) => {
                    let shown = if d.sensitive { "(sensitive value)".to_string() } else { m };
                    self.diags.push(
                        Diagnostic::error(format!("invalid value for variable `{}` (set by {})", d.name, origin.describe()))
                            .at(at)
                            .label(format!("expected {}: {shown}", d.ty)),
                    );
                    continue;
                }
            };
            if d.sensitive {
                secret_texts(&v, &mut self.secrets);
            }
            // validation { condition, error_message }
            let block = blocks.iter().find(|b| b.labels[0].0 == d.name).expect("declared");
            let mut vroots = BTreeMap::new();
            vroots.insert("var".to_string(), Value::map([(d.name.clone(), v.clone())]));
            for vb in block.body.blocks_named("validation") {
                let (Some(cond), Some(msg)) = (vb.body.attr("condition"), vb.body.attr("error_message")) else {
                    self.diags.push(Diagnostic::error("a validation block needs `condition` and `error_message`").at(vb.kind_span));
                    continue;
                };
                for a in &vb.body.attrs {
                    if a.name != "condition" && a.name != "error_message" {
                        let mut dd = Diagnostic::error(format!("unknown attribute `{}` in validation", a.name)).at(a.name_span);
                        if let Some(s) = suggest(&a.name, ["condition", "error_message"]) {
                            dd = dd.label(s);
                        }
                        self.diags.push(dd);
                    }
                }
                for r in refs::references(&cond.expr, cond.file, cond.expr_span) {
                    if !(r.root == "var" && r.first_attr() == Some(d.name.as_str())) {
                        self.diags.push(Diagnostic::error(format!("a validation condition may refer only to var.{}", d.name)).at(r.span));
                    }
                }
                let res = Evaluator::new(cond.file, cond.expr_span, fn_ctx, &vroots).eval(&cond.expr);
                let message = Evaluator::new(msg.file, msg.expr_span, fn_ctx, &vroots)
                    .eval(&msg.expr)
                    .ok()
                    .and_then(|m| m.as_str().map(str::to_string))
                    .unwrap_or_else(|| "the value is not valid".into());
                match res {
                    Ok(Value::Bool(true)) | Ok(Value::Unknown) => {}
                    Ok(Value::Bool(false)) => self.diags.push(
                        Diagnostic::error(format!("invalid value for variable `{}`: {message}", d.name))
                            .at(at)
                            .label(format!("set by {}", origin.describe()))
                            .note(Some(cond.expr_span), "this validation condition failed"),
                    ),
                    Ok(other) => self.diags.push(Diagnostic::error(format!("a validation condition must be a bool, not a {}", other.type_name())).at(cond.expr_span)),
                    Err(dd) => self.diags.push(dd),
                }
            }
            out.push(VariableValue { name: d.name.clone(), value: v, sensitive: d.sensitive });
        }
        if self.diags.0[start..].iter().any(|d| d.severity == Severity::Error) {
            return Err(());
        }
        Ok(out)
    }

    fn stack(&mut self, settings: Option<&RawBlock>, fn_ctx: &FnCtx<'_>, roots: &BTreeMap<String, Value>) -> Res<String> {
        let mut from_config = None;
        if let Some(b) = settings {
            for nb in &b.body.blocks {
                self.diags.push(Diagnostic::error(format!("unexpected block `{}` in virtform", nb.kind)).at(nb.kind_span));
            }
            for a in &b.body.attrs {
                if a.name != "stack" {
                    let mut d = Diagnostic::error(format!("unknown attribute `{}` in the virtform block", a.name)).at(a.name_span);
                    d = match suggest(&a.name, ["stack"]) {
                        Some(s) => d.label(s),
                        None => d.label("expected `stack`"),
                    };
                    self.diags.push(d);
                    continue;
                }
                for r in refs::references(&a.expr, a.file, a.expr_span) {
                    if r.root != "var" {
                        self.diags.push(Diagnostic::error("the stack name may refer only to variables").at(r.span));
                    }
                }
                self.checkpoint()?;
                match Evaluator::new(a.file, a.expr_span, fn_ctx, roots).eval(&a.expr) {
                    Ok(Value::String(s)) => {
                        if let Err(m) = model::check_stack(&s) {
                            self.diags.push(Diagnostic::error(m).at(a.expr_span));
                        }
                        from_config = Some(s);
                    }
                    Ok(other) => self.diags.push(Diagnostic::error(format!("`stack` must be a string, not a {}", other.type_name())).at(a.expr_span)),
                    Err(d) => self.diags.push(d),
                }
            }
        }
        self.checkpoint()?;
        if let Some(s) = &self.opts.stack {
            if let Err(m) = model::check_stack(s) {
                return self.fail(Diagnostic::error(format!("{m} (from --stack or VIRTFORM_STACK)")));
            }
            return Ok(s.clone());
        }
        if let Some(s) = from_config {
            return Ok(s);
        }
        let dirname = std::fs::canonicalize(&self.opts.dir)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "default".into());
        let cleaned: String = dirname.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
        let mut cleaned = cleaned.trim_start_matches(['-', '_']).to_string();
        cleaned.truncate(32);
        if model::check_stack(&cleaned).is_err() {
            cleaned = "default".into();
        }
        Ok(cleaned)
    }

    /// Attributes of a resource that derive from sensitive values.
    fn sensitive_attrs(&self, body: &RawBody, sensitive: &BTreeSet<Node>, vars: &BTreeSet<String>, locals: &BTreeSet<String>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (a, path) in all_attrs(body, "") {
            for r in refs::references(&a.expr, a.file, a.expr_span) {
                let node = match (r.root.as_str(), r.first_attr()) {
                    ("var", Some(v)) if vars.contains(v) => Node::Var(v.to_string()),
                    ("local", Some(v)) if locals.contains(v) => Node::Local(v.to_string()),
                    ("module", Some(m)) => Node::Module(m.to_string()),
                    _ => continue,
                };
                if sensitive.contains(&node) {
                    out.insert(path.clone());
                }
            }
        }
        out
    }

    /// The instances of a block under `count` or `for_each` (or the one
    /// without): keys and the `count`/`each` values; shape 0 single, 1 list, 2 map.
    fn instances(&mut self, body: &RawBody, fn_ctx: &FnCtx<'_>, roots: &BTreeMap<String, Value>, block_addr: &str) -> Res<(Vec<InstanceSeed>, u8)> {
        let count = body.attr("count");
        let for_each = body.attr("for_each");
        if let (Some(_), Some(fe)) = (count, for_each) {
            return self.fail(
                Diagnostic::error(format!("{block_addr} sets both `count` and `for_each`"))
                    .at(fe.name_span)
                    .label("use one of them")
                    .note(count.map(|c| c.name_span), "count is set here"),
            );
        }
        // Instances: (key, count/each roots).
        let mut instances: Vec<InstanceSeed> = Vec::new();
        let shape;
        if let Some(c) = count {
            let v = Evaluator::new(c.file, c.expr_span, fn_ctx, roots).eval(&c.expr).map_err(|d| self.diags.push(d))?;
            let n = match &v {
                Value::Unknown => return self.fail(Diagnostic::error("`count` is not known until apply").at(c.expr_span).label("count must be known at plan time")),
                v => eval::to_number(v),
            };
            let n = match n {
                Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= 100_000.0 => n as usize,
                Some(n) => {
                    return self.fail(Diagnostic::error(format!("`count` must be a whole number from 0 to 100000, got {}", value::format_number(n))).at(c.expr_span));
                }
                None => return self.fail(Diagnostic::error(format!("`count` must be a number, got {}", described(&v))).at(c.expr_span)),
            };
            for i in 0..n {
                instances.push((Key::Index(i), Some(Value::map([("index", Value::Number(i as f64))])), None));
            }
            shape = 1;
        } else if let Some(fe) = for_each {
            let v = Evaluator::new(fe.file, fe.expr_span, fn_ctx, roots).eval(&fe.expr).map_err(|d| self.diags.push(d))?;
            let pairs: Vec<(String, Value)> = match v {
                Value::Map(m) => m.into_iter().collect(),
                Value::Set(items) => {
                    let mut out = Vec::new();
                    for it in items {
                        match it {
                            Value::String(s) => out.push((s.clone(), Value::String(s))),
                            Value::Unknown => return self.fail(Diagnostic::error("`for_each` contains values not known until apply").at(fe.expr_span)),
                            other => {
                                return self.fail(
                                    Diagnostic::error(format!("`for_each` over a set needs strings, got a {}", other.type_name())).at(fe.expr_span),
                                );
                            }
                        }
                    }
                    out
                }
                Value::List(_) => {
                    return self.fail(
                        Diagnostic::error("`for_each` needs a map or a set of strings, not a list")
                            .at(fe.expr_span)
                            .label("convert it with toset(...)"),
                    );
                }
                Value::Unknown => return self.fail(Diagnostic::error("`for_each` is not known until apply").at(fe.expr_span).label("for_each must be known at plan time")),
                other => {
                    return self.fail(Diagnostic::error(format!("`for_each` needs a map or a set of strings, got {}", described(&other))).at(fe.expr_span));
                }
            };
            for (k, v) in pairs {
                if let Err(m) = model::check_key(&k) {
                    return self.fail(Diagnostic::error(m).at(fe.expr_span));
                }
                instances.push((Key::Name(k.clone()), None, Some((k, v))));
            }
            shape = 2;
        } else {
            instances.push((Key::None, None, None));
            shape = 0;
        }
        Ok((instances, shape))
    }

    #[allow(clippy::too_many_arguments)]
    fn resource(
        &mut self,
        rb: &ResourceBlock,
        fn_ctx: &FnCtx<'_>,
        roots: &BTreeMap<String, Value>,
        paths: &ResCtx<'_>,
        built: &mut BTreeMap<String, Resource>,
        order: &mut Vec<String>,
        sensitive: &BTreeSet<String>,
        exports: bool,
    ) -> Res<Value> {
        let body = &rb.block.body;
        let block_addr = qualify(paths.module, &format!("{}.{}", rb.kind, rb.name));
        let (instances, shape) = self.instances(body, fn_ctx, roots, &block_addr)?;

        let lifecycle = self.lifecycle(body)?;
        if !lifecycle.ignore_changes.is_empty() {
            let names = model::attribute_names(rb.kind);
            let lc_block = body.blocks_named("lifecycle").next().and_then(|b| b.body.attr("ignore_changes")).map(|a| a.expr_span);
            for ic in &lifecycle.ignore_changes {
                let first = ic.split(['.', '[']).next().unwrap_or("");
                if ic != "all" && !names.iter().any(|n| n == first) {
                    let mut d = Diagnostic::error(format!("`ignore_changes` names `{ic}`, which is not an attribute of {}", rb.kind)).at_opt(lc_block);
                    d = match suggest(first, names.iter().map(String::as_str)) {
                        Some(s) => d.label(s),
                        None => d.label(format!("expected one of {}", names.join(", "))),
                    };
                    self.diags.push(d);
                }
            }
            self.checkpoint()?;
        }
        let mut depends_on: Vec<String> = self.depends_on(body).into_iter().map(|d| qualify(paths.module, &d)).collect();
        depends_on.extend(paths.inherited.iter().cloned());
        let mut lifecycle = lifecycle;
        if !paths.module.is_root() {
            for t in &mut lifecycle.replace_triggered_by {
                *t = qualify(paths.module, t);
            }
        }
        let (mut spans, mut name_spans) = (BTreeMap::new(), BTreeMap::new());
        body_spans(body, "", true, &mut spans, &mut name_spans);
        let spans = std::sync::Arc::new(spans);
        let mut list = Vec::new();
        let mut map = BTreeMap::new();
        let mut single = Value::Null;
        let mut failed = false;
        for (key, count_v, each) in instances {
            let addr = Address { module: paths.module.clone(), mode: rb.mode, kind: rb.kind, name: rb.name.clone(), key: key.clone() };
            let bind = instance_bindings(count_v, each);
            let scope = Scope { fn_ctx, roots, bind: &bind };
            let attrs = match self.eval_body(body, &scope, true) {
                Ok(v) => v,
                Err(()) => {
                    failed = true;
                    continue;
                }
            };
            let mut unknown = BTreeSet::new();
            if let Value::Map(m) = &attrs {
                for (k, v) in m {
                    if unknown_outside_refs(v) {
                        unknown.insert(k.clone());
                    }
                }
            }
            let ctx = model::Ctx { stack: paths.stack, state_dir: paths.state_dir, config_dir: paths.config_dir, built, data: self.opts.data.as_ref().map(|d| &*d.0 as &dyn model::data::DataReader) };
            match model::build(&addr, &attrs, &ctx, exports) {
                Ok((spec, mut exports)) => {
                    if let (Some(ip), Value::Map(m)) = (self.opts.facts.get(&addr.to_string()), &mut exports)
                        && matches!(m.get("ip"), Some(Value::Unknown))
                    {
                        m.insert("ip".into(), Value::String(ip.clone()));
                    }
                    if let (Some(ips), Value::Map(m)) = (self.opts.agent_addresses.get(&addr.to_string()), &mut exports)
                        && matches!(m.get("addresses"), Some(Value::Unknown))
                    {
                        m.insert("addresses".into(), Value::List(ips.iter().map(|ip| Value::String(ip.clone())).collect()));
                    }
                    let r = Resource {
                        address: addr.clone(),
                        spec,
                        depends_on: depends_on.clone(),
                        lifecycle: lifecycle.clone(),
                        unknown,
                        sensitive: sensitive.clone(),
                        spans: spans.clone(),
                        block_span: Some(rb.block.header_span()),
                    };
                    let a = addr.to_string();
                    order.push(a.clone());
                    built.insert(a, r);
                    match &key {
                        Key::None => single = exports,
                        Key::Index(_) => list.push(exports),
                        Key::Name(k) => {
                            map.insert(k.clone(), exports);
                        }
                    }
                }
                Err(errs) => {
                    failed = true;
                    for e in errs {
                        self.diags.push(self.field_diag(&addr, rb, &e, &spans, &name_spans));
                    }
                }
            }
        }
        if failed {
            return Err(());
        }
        Ok(match shape {
            0 => single,
            1 => Value::List(list),
            _ => Value::Map(map),
        })
    }

    /// Turns a model error into a located diagnostic.
    fn field_diag(&self, addr: &Address, rb: &ResourceBlock, e: &model::FieldError, spans: &BTreeMap<String, Span>, name_spans: &BTreeMap<String, Span>) -> Diagnostic {
        let header = rb.block.header_span();
        let lookup = |p: &str| -> Option<Span> {
            let mut p = p.to_string();
            loop {
                if let Some(s) = spans.get(&p) {
                    return Some(*s);
                }
                match p.rfind(['.', '[']) {
                    Some(i) => p.truncate(i),
                    None => return None,
                }
            }
        };
        let prefix = if e.path.is_empty() { String::new() } else { format!("{}.", e.path) };
        // serde: unknown field `x`, expected one of `a`, `b`
        if let Some(rest) = e.message.strip_prefix("unknown field `") {
            let field = rest.split('`').next().unwrap_or("");
            let expected: Vec<&str> = rest.split('`').skip(2).step_by(2).filter(|s| !s.is_empty()).collect();
            // serde_path_to_error's path ends with the unknown field itself.
            let parent = e.path.strip_suffix(field).map(|p| p.trim_end_matches('.')).unwrap_or(&e.path).to_string();
            let e = &model::FieldError { path: parent, ..e.clone() };
            let prefix = if e.path.is_empty() { String::new() } else { format!("{}.", e.path) };
            let mut choices = expected.clone();
            if e.path.is_empty() {
                choices.extend(META_ARGS.iter().copied());
            }
            let where_ = if e.path.is_empty() { format!("{addr}") } else { format!("`{}` of {addr}", e.path) };
            let mut d = Diagnostic::error(format!("unknown attribute `{field}` in {where_}"))
                .at_opt(name_spans.get(&format!("{prefix}{field}")).copied().or(lookup(&e.path)).or(Some(header)));
            d = match suggest(field, choices.iter().copied()) {
                Some(s) => d.label(s),
                None => d.label(format!("expected one of {}", choices.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "))),
            };
            return d;
        }
        if let Some(rest) = e.message.strip_prefix("missing field `") {
            let field = rest.split('`').next().unwrap_or("");
            let at = if e.path.is_empty() { Some(header) } else { lookup(&e.path) };
            return Diagnostic::error(format!("{addr} is missing the required attribute `{prefix}{field}`")).at_opt(at).label(format!("add {field} = ..."));
        }
        if let Some(rest) = e.message.strip_prefix("unknown variant `") {
            let got = rest.split('`').next().unwrap_or("");
            let expected: Vec<&str> = rest.split('`').skip(2).step_by(2).filter(|s| !s.is_empty()).collect();
            let mut d = Diagnostic::error(format!("invalid value \"{got}\" for `{}` in {addr}", e.path)).at_opt(lookup(&e.path).or(Some(header)));
            let list = expected.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
            d = match functions::did_you_mean(got, expected.iter().copied()) {
                Some(s) => d.label(format!("did you mean \"{s}\"? expected one of {list}")),
                None => d.label(format!("expected one of {list}")),
            };
            return d;
        }
        let span = if e.path.is_empty() { Some(header) } else { lookup(&e.path).or(Some(header)) };
        let what = if e.path.is_empty() { format!("{addr}: {}", e.message) } else { format!("invalid `{}` in {addr}: {}", e.path, e.message) };
        let mut d = Diagnostic::error(what).at_opt(span);
        if let Some(l) = &e.label {
            d = d.label(l.clone());
        }
        d
    }

    /// Evaluates a block body into a map: attributes and nested blocks (as maps).
    fn eval_body(&mut self, body: &RawBody, scope: &Scope<'_>, top: bool) -> Res<Value> {
        let mut m = BTreeMap::new();
        let mut ok = true;
        for a in &body.attrs {
            if top && META_ARGS.contains(&a.name.as_str()) {
                continue;
            }
            match scope.evaluator(a).eval(&a.expr) {
                Ok(v) => {
                    if !matches!(v, Value::Null) {
                        m.insert(a.name.clone(), v);
                    }
                }
                Err(d) => {
                    self.diags.push(d);
                    ok = false;
                }
            }
        }
        let mut seen_blocks: BTreeMap<&str, Span> = BTreeMap::new();
        for b in &body.blocks {
            if top && b.kind == "lifecycle" {
                continue;
            }
            if let Some(prev) = seen_blocks.get(b.kind.as_str()) {
                self.diags.push(Diagnostic::error(format!("duplicate `{}` block", b.kind)).at(b.kind_span).note(Some(*prev), "first declared here"));
                ok = false;
                continue;
            }
            seen_blocks.insert(&b.kind, b.kind_span);
            if let Some(l) = b.labels.first() {
                self.diags.push(Diagnostic::error(format!("a `{}` block takes no label", b.kind)).at(l.1));
                ok = false;
                continue;
            }
            if m.contains_key(&b.kind) {
                self.diags.push(Diagnostic::error(format!("`{}` is set both as an attribute and as a block", b.kind)).at(b.kind_span));
                ok = false;
                continue;
            }
            match self.eval_body(&b.body, scope, false) {
                Ok(v) => {
                    m.insert(b.kind.clone(), v);
                }
                Err(()) => ok = false,
            }
        }
        if ok { Ok(Value::Map(m)) } else { Err(()) }
    }

    fn lifecycle(&mut self, body: &RawBody) -> Res<Lifecycle> {
        let mut lc = Lifecycle::default();
        let blocks: Vec<&RawBlock> = body.blocks_named("lifecycle").collect();
        if blocks.len() > 1 {
            return self.fail(Diagnostic::error("duplicate `lifecycle` block").at(blocks[1].kind_span));
        }
        let Some(b) = blocks.first() else { return Ok(lc) };
        const ATTRS: &[&str] = &["prevent_destroy", "ignore_changes", "replace_triggered_by"];
        for a in &b.body.attrs {
            match a.name.as_str() {
                "prevent_destroy" => match &a.expr {
                    hcl_edit::expr::Expression::Bool(v) => lc.prevent_destroy = *v.value(),
                    _ => self.diags.push(Diagnostic::error("`prevent_destroy` must be the literal true or false").at(a.expr_span)),
                },
                "ignore_changes" | "replace_triggered_by" => {
                    let hcl_edit::expr::Expression::Array(arr) = &a.expr else {
                        self.diags.push(Diagnostic::error(format!("`{}` must be a list", a.name)).at(a.expr_span));
                        continue;
                    };
                    for item in arr.iter() {
                        let text = match item {
                            hcl_edit::expr::Expression::Variable(v) => Some(v.as_str().to_string()),
                            hcl_edit::expr::Expression::String(s) => Some(s.as_str().to_string()),
                            hcl_edit::expr::Expression::Traversal(_) => {
                                let rs = refs::references(item, a.file, a.expr_span);
                                rs.first().map(|r| self.sources.snippet(r.span).to_string())
                            }
                            _ => None,
                        };
                        match text {
                            Some(t) if a.name == "ignore_changes" => lc.ignore_changes.push(t),
                            Some(t) => lc.replace_triggered_by.push(t),
                            None => self.diags.push(Diagnostic::error(format!("`{}` lists attribute names or references", a.name)).at(a.expr_span)),
                        }
                    }
                }
                other => {
                    let mut d = Diagnostic::error(format!("unknown attribute `{other}` in lifecycle")).at(a.name_span);
                    d = match suggest(other, ATTRS.iter().copied()) {
                        Some(s) => d.label(s),
                        None => d.label(format!("expected one of {}", ATTRS.join(", "))),
                    };
                    self.diags.push(d);
                }
            }
        }
        self.checkpoint()?;
        Ok(lc)
    }

    fn depends_on(&mut self, body: &RawBody) -> Vec<String> {
        let Some(a) = body.attr("depends_on") else { return Vec::new() };
        let hcl_edit::expr::Expression::Array(arr) = &a.expr else {
            self.diags.push(Diagnostic::error("`depends_on` must be a list of resources, like [network.lan]").at(a.expr_span));
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in arr.iter() {
            let rs = refs::references(item, a.file, a.expr_span);
            match rs.as_slice() {
                [r] if (Kind::parse(&r.root).is_some() || r.root == "module" || r.root == "data") && r.steps.iter().all(|s| !matches!(s, Step::Dynamic)) => {
                    out.push(self.sources.snippet(r.span).to_string());
                }
                _ => self.diags.push(Diagnostic::error("`depends_on` lists resources or modules, like network.lan or module.web").at(a.expr_span)),
            }
        }
        out
    }

    fn output(&mut self, o: &RawBlock, fn_ctx: &FnCtx<'_>, roots: &BTreeMap<String, Value>, sensitive_dep: bool) -> Option<Output> {
        let name = o.labels[0].0.clone();
        const ATTRS: &[&str] = &["value", "sensitive", "description", "depends_on"];
        let mut out = Output { name: name.clone(), value: Value::Null, sensitive: false, description: None };
        let mut has_value = false;
        for a in &o.body.attrs {
            match a.name.as_str() {
                "value" => match Evaluator::new(a.file, a.expr_span, fn_ctx, roots).eval(&a.expr) {
                    Ok(v) => {
                        out.value = v;
                        has_value = true;
                    }
                    Err(d) => {
                        self.diags.push(d);
                        return None;
                    }
                },
                "sensitive" => match &a.expr {
                    hcl_edit::expr::Expression::Bool(b) => out.sensitive = *b.value(),
                    _ => self.diags.push(Diagnostic::error("`sensitive` must be the literal true or false").at(a.expr_span)),
                },
                "description" => out.description = self.sources.snippet(a.expr_span).trim_matches('"').to_string().into(),
                "depends_on" => {}
                other => {
                    let mut d = Diagnostic::error(format!("unknown attribute `{other}` in output \"{name}\"")).at(a.name_span);
                    d = match suggest(other, ATTRS.iter().copied()) {
                        Some(s) => d.label(s),
                        None => d.label(format!("expected one of {}", ATTRS.join(", "))),
                    };
                    self.diags.push(d);
                }
            }
        }
        if !has_value {
            self.diags.push(Diagnostic::error(format!("output \"{name}\" has no `value`")).at(o.header_span()).label("add value = ..."));
            return None;
        }
        if sensitive_dep && !out.sensitive {
            let span = o.body.attr("value").map(|a| a.expr_span);
            self.diags.push(
                Diagnostic::error(format!("output \"{name}\" refers to sensitive values"))
                    .at_opt(span)
                    .label("add sensitive = true to this output so its value is never printed"),
            );
            return None;
        }
        Some(out)
    }
}

/// What a resource body is evaluated with: roots plus `count`/`each`.
struct Scope<'a> {
    fn_ctx: &'a FnCtx<'a>,
    roots: &'a BTreeMap<String, Value>,
    bind: &'a [(&'a str, Value)],
}

impl<'a> Scope<'a> {
    fn evaluator(&self, a: &RawAttr) -> Evaluator<'a> {
        let mut e = Evaluator::new(a.file, a.expr_span, self.fn_ctx, self.roots);
        for (n, v) in self.bind {
            e = e.bind(n, v.clone());
        }
        e
    }
}

/// One instance to build: its key, `count` and `each` values.
type InstanceSeed = (Key, Option<Value>, Option<(String, Value)>);

struct ResCtx<'a> {
    stack: &'a str,
    state_dir: &'a Path,
    config_dir: &'a Path,
    /// The module instance the resource is in (root: empty).
    module: &'a ModulePath,
    /// `depends_on` of the module blocks around it, as addresses from the root.
    inherited: &'a [String],
}

/// Every attribute in a body and its nested blocks, with dotted paths.
fn all_attrs<'a>(body: &'a RawBody, prefix: &str) -> Vec<(&'a RawAttr, String)> {
    let mut out: Vec<(&RawAttr, String)> = body.attrs.iter().map(|a| (a, format!("{prefix}{}", a.name))).collect();
    for b in &body.blocks {
        out.extend(all_attrs(&b.body, &format!("{prefix}{}.", b.kind)));
    }
    out
}

impl Configuration {
    /// A configuration with no resources, for acting on a stack whose
    /// configuration directory is gone (`destroy --stack NAME`, `show`).
    pub fn empty(stack: &str, dir: PathBuf) -> Configuration {
        Configuration {
            sources: Sources::default(),
            dir,
            stack: stack.to_string(),
            resources: Vec::new(),
            data: Vec::new(),
            data_index: BTreeMap::new(),
            graph: DepGraph::default(),
            outputs: Vec::new(),
            variables: Vec::new(),
            warnings: Diagnostics::default(),
            imports: Vec::new(),
            moves: Vec::new(),
            removed: Vec::new(),
            names: BTreeMap::new(),
            placement: Default::default(),
            index: BTreeMap::new(),
            agent_fact_readers: BTreeSet::new(),
        }
    }

    /// The address `a`'s host names derive from: its own, or the one it
    /// was moved from ([`Configuration::names`]).
    pub fn names_of<'a>(&'a self, a: &'a Address) -> &'a Address {
        if self.names.is_empty() {
            return a;
        }
        self.names.get(&a.to_string()).unwrap_or(a)
    }

    /// [`names_of`](Self::names_of) for an address written as text.
    pub fn names_of_str(&self, a: &str) -> String {
        match self.names.get(a) {
            Some(n) => n.to_string(),
            None => a.to_string(),
        }
    }

    /// The `host` blocks, by address (`host.a`), with what they reach.
    pub fn hosts(&self) -> impl Iterator<Item = (&Resource, &model::host::Host)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            model::Spec::Host(h) => Some((r, h)),
            _ => None,
        })
    }

    /// Whether any resource lives on a remote host.
    pub fn is_fleet(&self) -> bool {
        self.placement.hosts().iter().any(Option::is_some)
    }

    /// The part of the configuration that lives on `host` (`None`: this
    /// machine): its resources (images where a disk or volume on it needs
    /// them; no host blocks), data sources on this machine's part only,
    /// everything else (outputs, moves, imports, the graph) as it is. Each part is observed on, planned against and
    /// applied to its own host; the planner sees an ordinary configuration.
    pub fn on_host(&self, host: Option<&str>) -> Configuration {
        let resources: Vec<Resource> = self
            .resources
            .iter()
            .filter(|r| !matches!(r.spec, model::Spec::Host(_)) && self.placement.is_on(&r.address.to_string(), host))
            .cloned()
            .collect();
        let index = resources.iter().enumerate().map(|(i, r)| (r.address.to_string(), i)).collect();
        let mut part = self.clone();
        let mut resources = resources;
        set_tunnels(&mut resources, host);
        part.resources = resources;
        part.index = index;
        // An import is planned where its resource is (one to an undeclared
        // address, an error, on this machine).
        part.imports.retain(|i| self.placement.is_on(&i.to.to_string(), host));
        // Data sources read this machine (a remote port on one is a
        // placement error): a remote host's part has none.
        if host.is_some() {
            part.data = Vec::new();
            part.data_index = BTreeMap::new();
        }
        part
    }

    /// A resource or data source instance by address (`network.lan[0]`, `data.network.lan`).
    pub fn resource(&self, addr: &str) -> Option<&Resource> {
        match self.index.get(addr) {
            Some(i) => self.resources.get(*i),
            None => self.data_index.get(addr).and_then(|i| self.data.get(*i)),
        }
    }
}

/// Each overlay's tunnel on `host` (`None`: this machine): its own
/// underlay address and its peers'; none where it does not span `host`.
fn set_tunnels(resources: &mut [Resource], host: Option<&str>) {
    for r in resources {
        if let model::Spec::Network(n) = &mut r.spec
            && n.net_type == model::network::NetType::Overlay
        {
            n.tunnel = n.tunnel_on(host);
        }
    }
}

/// Where each attribute of a resource body is written: its expression (and
/// each list item's) and its name, by path (`disks`, `disks[0]`,
/// `cloud_init.user_data`), for locating errors. Purely structural, so one
/// map serves every instance of a `count`/`for_each` block (built per
/// instance, they were a sixth of loading 3,000 resources).
fn body_spans(body: &RawBody, prefix: &str, top: bool, spans: &mut BTreeMap<String, Span>, name_spans: &mut BTreeMap<String, Span>) {
    for a in &body.attrs {
        if top && META_ARGS.contains(&a.name.as_str()) {
            continue;
        }
        let path = format!("{prefix}{}", a.name);
        if let hcl_edit::expr::Expression::Array(arr) = &a.expr {
            use hcl_edit::Span as _;
            for (i, item) in arr.iter().enumerate() {
                if let Some(r) = item.span() {
                    spans.insert(format!("{path}[{i}]"), Span::new(a.file, r));
                }
            }
        }
        spans.insert(path.clone(), a.expr_span);
        name_spans.insert(path, a.name_span);
    }
    for b in &body.blocks {
        if top && b.kind == "lifecycle" {
            continue;
        }
        let path = format!("{prefix}{}", b.kind);
        // The first block of a kind (a second one is an error of its own).
        if spans.contains_key(&path) {
            continue;
        }
        spans.insert(path.clone(), b.kind_span);
        name_spans.insert(path.clone(), b.kind_span);
        body_spans(&b.body, &format!("{path}."), false, spans, name_spans);
    }
}

/// Whether a value holds an unknown, not counting the insides of referenced
/// resource objects (a reference itself is always known).
fn unknown_outside_refs(v: &Value) -> bool {
    match v {
        Value::Unknown => true,
        Value::Map(m) if m.contains_key(model::common::REF_KEY) => false,
        Value::Map(m) => m.values().any(unknown_outside_refs),
        Value::List(l) | Value::Set(l) => l.iter().any(unknown_outside_refs),
        _ => false,
    }
}

/// `count` (`count.index`) and `each` (`each.key`, `each.value`) of one
/// instance of a block with `count` or `for_each`, as evaluation bindings.
fn instance_bindings(count: Option<Value>, each: Option<(String, Value)>) -> Vec<(&'static str, Value)> {
    let mut bind = Vec::new();
    if let Some(c) = count {
        bind.push(("count", c));
    }
    if let Some((k, v)) = each {
        bind.push(("each", Value::map([("key", Value::String(k)), ("value", v)])));
    }
    bind
}
