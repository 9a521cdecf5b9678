//! Issue 6, items 8, 9, 10 and 12: no shell strings, hostile strings in
//! every user-controlled field, sensitive values never shown, and files
//! with user data not readable by others.
//!
//! - `no_shell_invocations`: greps the Rust sources for a shell spawned
//!   from Rust (fails naming file:line).
//! - `hostile_strings_are_rejected_or_escaped`: quotes, `<`, `&`, `]]>`,
//!   `$()`, backticks, newlines, NUL, `../` … in every field that reaches
//!   XML, a path or a command: the configuration is rejected with a located
//!   error, or the domain XML (written through the planner's lowering) is
//!   well-formed when read back with quick-xml and holds the value intact,
//!   no derived path leaves the state dir, and every interface name passes
//!   the host layer's check.
//! - `sensitive_values_are_never_shown` (real host): plan text and JSON,
//!   apply progress (text and JSON lines), `-vv` logs, outputs, error
//!   messages and every file under the state dir.
//! - `plan_files_are_private` (real host): `plan --out` writes 0600.
//!
//! Real-host tests need root, libvirtd and the guest assets (scripts/test);
//! without them they FAIL, they never skip.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use virtform::config::{self, LoadOptions};
use virtform::model::Spec;
use virtform::plan::desired::{DesiredBridge, Lowering};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// 8. No shell strings
// ---------------------------------------------------------------------------

/// Names of shells (as a program or a path to one).
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash", "csh", "tcsh", "fish", "busybox"];

/// String literals on one line of Rust (good enough for this check: no
/// raw strings spanning lines in the sources it reads).
fn string_literals(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < b.len() {
        // A `//` comment ends the code of the line.
        if b[i] == '/' && b.get(i + 1) == Some(&'/') {
            break;
        }
        if b[i] == '\'' {
            // A char literal ('"' would otherwise open a string) or a lifetime.
            if b.get(i + 2) == Some(&'\'') {
                i += 3;
                continue;
            }
            if b.get(i + 1) == Some(&'\\') && b.get(i + 3) == Some(&'\'') {
                i += 4;
                continue;
            }
        }
        if b[i] == '"' {
            let mut s = String::new();
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' && i + 1 < b.len() {
                    s.push(b[i + 1]);
                    i += 2;
                    continue;
                }
                s.push(b[i]);
                i += 1;
            }
            out.push(s);
        }
        i += 1;
    }
    out
}

fn is_shell(lit: &str) -> bool {
    let prog = lit.rsplit('/').next().unwrap_or(lit);
    (lit == prog || lit.starts_with('/')) && SHELLS.contains(&prog)
}

/// Where a line spawns something: a program is named or started here.
const SPAWN_CONTEXT: &[&str] = &["Command::new(", "run(", "run_with(", ".arg(", ".args(", "exec", "spawn", "const ", "static "];

/// Why a line of Rust spawns (or prepares to spawn) a shell, if it does.
/// `consts`: the file's `const NAME: &str = "…"` values, to follow
/// `Command::new(NAME)`.
fn shell_use_in(line: &str, consts: &BTreeMap<String, String>) -> Option<String> {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") {
        return None;
    }
    let code = trimmed.split(" //").next().unwrap_or("");
    let lits = string_literals(line);
    for lit in &lits {
        for sh in SHELLS {
            if lit.starts_with(&format!("{sh} -c")) || lit.contains(&format!("/{sh} -c")) || lit.contains(&format!(" {sh} -c")) {
                return Some(format!("the string \"{lit}\" runs `{sh} -c`"));
            }
        }
        if is_shell(lit) && SPAWN_CONTEXT.iter().any(|c| code.contains(c)) {
            return Some(format!("the string \"{lit}\" names a shell where a program is run or named"));
        }
    }
    // Command::new(NAME) with NAME a constant naming a shell.
    let mut rest = code;
    while let Some(i) = rest.find("Command::new(") {
        rest = &rest[i + "Command::new(".len()..];
        let arg: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        let name = arg.rsplit("::").next().unwrap_or("");
        if let Some(v) = consts.get(name)
            && is_shell(v)
        {
            return Some(format!("Command::new({arg}) runs the shell \"{v}\""));
        }
    }
    for f in ["libc::system(", "libc::popen(", "libc::execl(", "libc::execlp(", " system(", "popen("] {
        if code.contains(f) {
            return Some(format!("calls {}", f.trim()));
        }
    }
    None
}

/// `const NAME: &str = "value";` declarations of a file.
fn str_consts(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let t = line.trim_start().trim_start_matches("pub ").trim_start_matches("pub(crate) ");
        if let Some(rest) = t.strip_prefix("const ").or_else(|| t.strip_prefix("static "))
            && let Some((name, _)) = rest.split_once(':')
            && let Some(lit) = string_literals(line).first()
        {
            out.insert(name.trim().to_string(), lit.clone());
        }
    }
    out
}

fn shell_uses(text: &str) -> Vec<(usize, String)> {
    let consts = str_consts(text);
    text.lines().enumerate().filter_map(|(i, l)| shell_use_in(l, &consts).map(|w| (i + 1, w))).collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_shell_invocations() {
    // The checker itself finds what it must find.
    for bad in [
        r#"let c = Command::new("sh").arg("-c").arg(script);"#,
        r#"Command::new("/bin/bash").args(["-c", &cmd])"#,
        "const SHELL: &str = \"dash\";\nfn f() { Command::new(SHELL).arg(x); }",
        r#"host::run("busybox", &["sh", "-c", x])"#,
        r#"let s = format!("sh -c '{}'", cmd);"#,
        r#"unsafe { libc::system(cmd.as_ptr()) };"#,
    ] {
        assert!(!shell_uses(bad).is_empty(), "the checker misses: {bad}");
    }
    for good in [
        r#"Command::new("virsh").arg("-c").arg(URI)"#,
        r#"let q = '"'; let t = "ip";"#,
        r#"// Command::new("sh") in a comment"#,
        r#"eprintln!("bash completion: {x}");"#,
        r#"("shell", s("/bin/bash")),"#,
        "const IP: &str = \"ip\";\nlet c = Command::new(IP).arg(\"-c\");",
    ] {
        assert!(shell_uses(good).is_empty(), "the checker flags: {good}");
    }

    let mut files = Vec::new();
    for d in ["src", "scripts", "bench", "benches", "examples"] {
        rust_files(&root().join(d), &mut files);
    }
    for f in ["build.rs"] {
        if root().join(f).is_file() {
            files.push(root().join(f));
        }
    }
    assert!(files.len() > 20, "found only {} Rust files under {}", files.len(), root().display());
    let mut found = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap_or_default();
        for (n, why) in shell_uses(&text) {
            let line = text.lines().nth(n - 1).unwrap_or("");
            found.push(format!("{}:{n}: {why}\n    {}", f.strip_prefix(root()).unwrap_or(f).display(), line.trim()));
        }
    }
    eprintln!("[security] scanned {} Rust files for shell invocations", files.len());
    assert!(found.is_empty(), "Rust code must spawn programs with argument vectors, never through a shell:\n{}", found.join("\n"));
}

// ---------------------------------------------------------------------------
// 9. Hostile strings
// ---------------------------------------------------------------------------

const HOSTILE: &[(&str, &str)] = &[
    ("quotes", "a'b\"c"),
    ("markup", "<x>&amp;</x>"),
    ("CDATA end", "]]>"),
    ("command substitution", "$(reboot)"),
    ("backticks", "`reboot`"),
    ("newline", "a\nb"),
    ("carriage return", "a\r\nb"),
    ("NUL", "a\u{0}b"),
    ("bell", "a\u{7}b"),
    ("parent directories", "../../../../etc/passwd"),
    ("absolute path", "/etc/shadow"),
    ("leading dash", "--help"),
    ("hash", "a#b"),
    ("backslash", "a\\b"),
    ("percent", "%s%n"),
    ("unicode override", "a\u{202e}b"),
    ("long", "x"),
];

/// An HCL string literal holding `s` exactly.
fn hcl(s: &str) -> String {
    let mut out = String::from("\"");
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A field that takes user text: where it goes in a configuration, and
/// what it should look like in the domain XML when accepted.
struct Field {
    name: &'static str,
    /// The configuration, `@` standing for the hostile HCL string.
    template: &'static str,
    /// Whether the accepted value must appear (decoded) in the domain XML.
    in_xml: bool,
}

const BASE: &str = r#"
network "lan" {
  bridge  = "vfsec0"
  address = "10.99.0.1/24"
}

image "tiny" {
  source = "/var/lib/virtform/assets/tiny.qcow2"
  sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
}

disk "root" {
  image = image.tiny
}

port "eth0" {
  network = network.lan
}
"#;

fn fields() -> Vec<Field> {
    vec![
        Field { name: "instance name", template: "instance \"vm\" {\n  name  = @\n  disks = [disk.root]\n}\n", in_xml: true },
        Field { name: "cmdline", template: "instance \"vm\" {\n  kernel  = \"/boot/vmlinuz\"\n  cmdline = @\n}\n", in_xml: true },
        Field { name: "kernel path", template: "instance \"vm\" {\n  kernel = @\n}\n", in_xml: true },
        Field { name: "initrd path", template: "instance \"vm\" {\n  kernel = \"/boot/vmlinuz\"\n  initrd = @\n}\n", in_xml: true },
        Field { name: "cpu model", template: "instance \"vm\" {\n  disks = [disk.root]\n  cpu {\n    mode  = \"custom\"\n    model = @\n  }\n}\n", in_xml: true },
        Field { name: "machine", template: "instance \"vm\" {\n  disks   = [disk.root]\n  machine = @\n}\n", in_xml: true },
        Field { name: "console pattern", template: "instance \"vm\" {\n  disks = [disk.root]\n  wait_for {\n    console = @\n  }\n}\n", in_xml: false },
        Field { name: "cloud_init user_data", template: "instance \"vm\" {\n  disks = [disk.root]\n  cloud_init {\n    user_data = @\n  }\n}\n", in_xml: false },
        Field { name: "cloud_init ssh key", template: "instance \"vm\" {\n  disks = [disk.root]\n  cloud_init {\n    ssh_authorized_keys = [@]\n  }\n}\n", in_xml: false },
        Field { name: "disk label", template: "disk \"data\" {\n  size       = \"1G\"\n  filesystem = \"ext4\"\n  label      = @\n}\ninstance \"vm\" {\n  disks = [disk.root, disk.data]\n}\n", in_xml: false },
        Field { name: "image source", template: "image \"other\" {\n  source = @\n  sha256 = \"1111111111111111111111111111111111111111111111111111111111111111\"\n}\ndisk \"d2\" {\n  image = image.other\n}\ninstance \"vm\" {\n  disks = [disk.d2]\n}\n", in_xml: false },
        Field { name: "network bridge", template: "network \"wan\" {\n  bridge = @\n}\nport \"p2\" {\n  network = network.wan\n}\ninstance \"vm\" {\n  disks = [disk.root]\n  ports = [port.p2]\n}\n", in_xml: true },
        Field { name: "port mac", template: "port \"p2\" {\n  network = network.lan\n  mac     = @\n}\ninstance \"vm\" {\n  disks = [disk.root]\n  ports = [port.p2]\n}\n", in_xml: true },
        Field { name: "port id", template: "port \"p2\" {\n  network = network.lan\n  id      = @\n}\ninstance \"vm\" {\n  disks = [disk.root]\n  ports = [port.p2]\n}\n", in_xml: false },
        Field { name: "volume serial", template: "volume \"v\" {\n  size   = \"1G\"\n  serial = @\n}\ninstance \"vm\" {\n  disks   = [disk.root]\n  volumes = [volume.v]\n}\n", in_xml: true },
        Field { name: "for_each key", template: "disk \"many\" {\n  for_each = toset([@])\n  size     = \"1G\"\n}\ninstance \"vm\" {\n  for_each = toset([@])\n  disks    = [disk.many[each.key]]\n}\n", in_xml: false },
        Field { name: "stack", template: "virtform {\n  stack = @\n}\ninstance \"vm\" {\n  disks = [disk.root]\n}\n", in_xml: false },
    ]
}

/// Reads an XML document with quick-xml: every text and attribute value,
/// decoded (attribute values normalized as an XML parser such as
/// libvirt's sees them); an error when it is not well-formed.
fn xml_values(xml: &str) -> Result<Vec<String>, String> {
    use quick_xml::events::Event;
    if let Some(c) = xml.chars().find(|&c| !matches!(c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)) {
        return Err(format!("holds the character U+{:04X}, which XML 1.0 cannot carry", c as u32));
    }
    let mut r = quick_xml::Reader::from_str(xml);
    r.config_mut().check_end_names = true;
    let mut vals = Vec::new();
    let mut depth = 0i64;
    let mut roots = 0;
    let mut text = String::new();
    let attrs = |s: &quick_xml::events::BytesStart, vals: &mut Vec<String>| -> Result<(), String> {
        for a in s.attributes() {
            let a = a.map_err(|e| format!("bad attribute: {e}"))?;
            vals.push(a.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(|e| format!("bad attribute value: {e}"))?.into_owned());
        }
        Ok(())
    };
    loop {
        match r.read_event() {
            Err(e) => return Err(format!("at byte {}: {e}", r.error_position())),
            Ok(Event::Start(s)) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
                vals.push(std::mem::take(&mut text));
                attrs(&s, &mut vals)?;
            }
            Ok(Event::Empty(s)) => {
                if depth == 0 {
                    roots += 1;
                }
                vals.push(std::mem::take(&mut text));
                attrs(&s, &mut vals)?;
            }
            Ok(Event::End(_)) => {
                depth -= 1;
                vals.push(std::mem::take(&mut text));
            }
            Ok(Event::Text(t)) => text.push_str(&t.xml10_content()),
            Ok(Event::CData(t)) => text.push_str(&t.xml10_content()),
            Ok(Event::GeneralRef(g)) => {
                if g.is_char_ref() {
                    match g.resolve_char_ref() {
                        Ok(Some(c)) => text.push(c),
                        _ => return Err("invalid character reference".into()),
                    }
                } else {
                    let name = g.xml10_content();
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => text.push_str(s),
                        None => return Err(format!("unknown entity &{name};")),
                    }
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
        }
        if depth < 0 {
            return Err("closing tag without an opening one".into());
        }
    }
    if depth != 0 || roots != 1 {
        return Err(format!("unbalanced document (depth {depth}, {roots} root elements)"));
    }
    Ok(vals)
}

/// A derived path: under the state dir, no `..`, no line breaks or NUL.
fn check_derived(what: &str, p: &str, state: &Path) -> Result<(), String> {
    let path = Path::new(p);
    if !path.starts_with(state) || path.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) || p.contains(['\n', '\r', '\0']) {
        return Err(format!("{what} {p:?} is not a plain path under the state dir {}", state.display()));
    }
    Ok(())
}


/// Checks one accepted configuration; the problems found.
fn check_accepted(cfg: &config::Configuration, state: &Path, field: &Field, value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let empty = BTreeMap::new();
    let low = Lowering { cfg, state_dir: state, kvm_usable: false, source_hashes: &empty, imported: &Default::default() };
    let mut all_values: Vec<String> = Vec::new();
    for r in &cfg.resources {
        match &r.spec {
            Spec::Network(n) => {
                let b = DesiredBridge::from_network(n);
                if let Err(e) = virtform::host::links::check_name(&b.name) {
                    problems.push(format!("network bridge {:?} is accepted by the configuration but refused by the host layer only at apply: {e}", b.name));
                }
            }
            Spec::Disk(_) => {
                if let Some(d) = low.disk(r) {
                    if let Err(e) = check_derived(&format!("disk {}", r.address), &d.path, state) {
                        problems.push(e);
                    }
                    if let Some(b) = &d.base
                        && let Err(e) = check_derived("image cache file", b, state)
                    {
                        problems.push(e);
                    }
                }
            }
            Spec::Instance(_) => {
                let Some(def) = low.domain(r) else {
                    problems.push(format!("{} has no domain definition", r.address));
                    continue;
                };
                if let Err(e) = check_derived("console log", &def.console_log, state) {
                    problems.push(e);
                }
                for d in &def.disks {
                    if !d.path.starts_with("/var/lib/virtform/assets") && let Err(e) = check_derived("disk", &d.path, state) {
                        problems.push(e);
                    }
                }
                for n in &def.nics {
                    if let Some(t) = &n.target_dev
                        && let Err(e) = virtform::host::links::check_name(t)
                    {
                        problems.push(format!("tap name {t:?}: {e}"));
                    }
                }
                let xml = virtform::xml::domain::domain_xml(&def);
                match xml_values(&xml) {
                    Ok(v) => all_values.extend(v),
                    Err(e) => problems.push(format!("the domain XML of {} is not well-formed: {e}\n{xml}", r.address)),
                }
                for d in &def.disks {
                    if let Err(e) = xml_values(&virtform::xml::domain::disk_device_xml(d)) {
                        problems.push(format!("a disk device XML is not well-formed: {e}"));
                    }
                }
                for n in &def.nics {
                    if let Err(e) = xml_values(&virtform::xml::domain::nic_device_xml(n)) {
                        problems.push(format!("an interface device XML is not well-formed: {e}"));
                    }
                }
            }
            _ => {}
        }
    }
    if field.in_xml && !all_values.iter().any(|v| v.contains(value) || v.eq_ignore_ascii_case(value)) {
        // src/xml replaces what XML 1.0 cannot carry (C0 controls) with U+FFFD.
        let replaced: String = value.chars().map(|c| if matches!(c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF) { c } else { '\u{FFFD}' }).collect();
        if replaced != value && all_values.iter().any(|v| v.contains(&replaced)) {
            problems.push(format!("accepted, but written to the XML as {replaced:?}: the domain does not get the configured value"));
        } else {
            problems.push(format!("the accepted value {value:?} does not appear intact in the domain XML (decoded values: {all_values:?})"));
        }
    }
    problems
}

#[test]
fn hostile_strings_are_rejected_or_escaped() {
    let state = PathBuf::from("/var/lib/virtform-hostile-test-state");
    let mut failures = Vec::new();
    let (mut accepted, mut rejected) = (0, 0);
    for field in fields() {
        for (case, value) in HOSTILE {
            let value = if *case == "long" { "x".repeat(5000) } else { value.to_string() };
            let dir = tempfile::tempdir().unwrap();
            let src = format!("{BASE}{}", field.template.replace('@', &hcl(&value)));
            fs::write(dir.path().join("main.vf.hcl"), &src).unwrap();
            let opts = LoadOptions { dir: dir.path().to_path_buf(), state_dir: state.clone(), ..Default::default() };
            let what = format!("{} = {case} ({value:.40?})", field.name);
            let loaded = std::panic::catch_unwind(|| config::load(&opts));
            let loaded = match loaded {
                Ok(l) => l,
                Err(_) => {
                    failures.push(format!("{what}: loading panicked"));
                    continue;
                }
            };
            match loaded {
                Err(e) => {
                    rejected += 1;
                    for d in &e.diags.0 {
                        if d.location(&e.sources).is_none() {
                            failures.push(format!("{what}: rejected without a location: {}", d.message));
                        }
                    }
                }
                Ok(cfg) => {
                    accepted += 1;
                    let problems = check_accepted(&cfg, &state, &field, &value);
                    if problems.is_empty() {
                        continue;
                    }
                    failures.push(format!("{what}:\n  {}", problems.join("\n  ")));
                }
            }
        }
    }
    eprintln!("[security] hostile strings: {accepted} accepted (checked), {rejected} rejected with a location");
    assert!(failures.is_empty(), "{} hostile-string failures:\n\n{}", failures.len(), failures.join("\n\n"));
}

// ---------------------------------------------------------------------------
// 10. Sensitive values (real host)
// ---------------------------------------------------------------------------

/// A stack with a sensitive variable in an instance's cmdline and in an
/// output: a bridge, a port and a kernel-booted instance left shut off (so
/// no guest runs and no console log is written).
struct SecretStack {
    cfg: tempfile::TempDir,
    state: tempfile::TempDir,
    /// An empty directory: destroy by the stack's markers alone.
    nocfg: tempfile::TempDir,
    stack: String,
    bridge: String,
    domain: String,
    guard: HostGuard,
}

impl SecretStack {
    fn new(tag: &str) -> SecretStack {
        preflight(true);
        let stack = format!("vfsec-{tag}-{}", pid());
        let bridge = format!("vfs{tag}{}", pid());
        assert!(bridge.len() <= 15, "{bridge}");
        let domain = format!("{stack}-vm");
        let cfg = tempdir("vf-sec-cfg-");
        let assets = assets_dir();
        fs::write(
            cfg.path().join("main.vf.hcl"),
            format!(
                r#"variable "token" {{
  type      = string
  sensitive = true
}}

network "lan" {{
  bridge  = "{bridge}"
  address = "10.254.{net}.1/24"
}}

port "eth0" {{
  network = network.lan
}}

instance "vm" {{
  memory  = "64M"
  kernel  = "{kernel}"
  initrd  = "{initrd}"
  cmdline = "console=ttyS0 vf.token=${{var.token}}"
  ports   = [port.eth0]
  state   = "shutoff"
}}

output "token" {{
  value     = var.token
  sensitive = true
}}

output "domain" {{
  value = instance.vm.name
}}
"#,
                net = pid() % 250,
                kernel = assets.join("vmlinuz").display(),
                initrd = assets.join("initrd.gz").display(),
            ),
        )
        .unwrap();
        let state = tempdir("vf-sec-state-");
        let nocfg = tempdir("vf-sec-nocfg-");
        let mut guard = HostGuard::default();
        guard.stacks = vec![(stack.clone(), state.path().to_path_buf(), nocfg.path().to_path_buf())];
        guard.domains = vec![domain.clone()];
        guard.links = vec![bridge.clone()];
        SecretStack { cfg, state, nocfg, stack, bridge, domain, guard }
    }

    /// `virtform --state-dir S --stack K --var token=SECRET ARGS... DIR`.
    fn vf(&self, secret: &str, args: &[&str]) -> Out {
        let state = self.state.path().display().to_string();
        let var = format!("token={secret}");
        let dir = self.cfg.path().display().to_string();
        let mut a = vec!["--no-color", "--state-dir", &state, "--stack", &self.stack, "--var", &var];
        a.extend_from_slice(args);
        if !matches!(args.first(), Some(&"output")) {
            a.push(&dir);
        } else {
            a.extend_from_slice(&["-C", &dir]);
        }
        vf(&a)
    }

    /// Cleans the host up and checks that nothing of the stack is left.
    fn finish(mut self) {
        let problems = self.guard.cleanup();
        assert!(problems.is_empty(), "cleanup:\n{}", problems.join("\n"));
        assert!(!domain_names().contains(&self.domain), "LEAK: domain {}", self.domain);
        assert!(!link_names().contains(&self.bridge), "LEAK: bridge {}", self.bridge);
        let _ = &self.nocfg;
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())) {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn sensitive_values_are_never_shown() {
    let st = SecretStack::new("a");
    let secret = format!("vfSECRET-{}-q7x", pid());
    let secret2 = format!("vfSECRET2-{}-k3w", pid());
    let leaks = std::cell::RefCell::new(Vec::new());
    let check = |what: &str, out: &Out, must_succeed: bool| {
        let mut leaks = leaks.borrow_mut();
        if let Some(c) = out.crashed() {
            leaks.push(format!("{what}: crashed ({c}):\n{}", out.show()));
        }
        if must_succeed && !out.ok() {
            leaks.push(format!("{what}: failed:\n{}", out.show()));
        }
        if out.all().contains(&secret) || out.all().contains(&secret2) {
            leaks.push(format!("{what}: THE SECRET LEAKED:\n{}", out.show()));
        }
    };

    // Plan: text, JSON, debug logs.
    let plan = st.vf(&secret, &["plan"]);
    check("plan", &plan, true);
    assert!(plan.stdout.contains("(sensitive value)"), "plan does not mark the cmdline sensitive:\n{}", plan.show());
    check("plan -vv", &st.vf(&secret, &["-vv", "plan"]), true);
    let json = st.vf(&secret, &["plan", "--json"]);
    check("plan --json", &json, true);
    assert!(serde_json::from_str::<serde_json::Value>(&json.stdout).is_ok(), "plan --json is not JSON:\n{}", json.show());

    // Apply: text progress with debug logs, then JSON lines.
    let apply = st.vf(&secret, &["-vv", "apply", "--auto-approve"]);
    check("apply -vv", &apply, true);
    assert!(domain_names().contains(&st.domain), "apply did not define {}:\n{}", st.domain, apply.show());
    check("apply --json (nothing to do)", &st.vf(&secret, &["apply", "--json", "--auto-approve"]), true);
    // A new secret: an update of the cmdline, as JSON progress lines (the
    // text plan's XML diff: `sensitive_change_is_hidden_in_the_plan_diff`).
    let up = st.vf(&secret2, &["-vv", "apply", "--json", "--auto-approve"]);
    check("apply --json (update)", &up, true);
    let xml = virsh(&["dumpxml", "--inactive", &st.domain]).must().stdout;
    assert!(xml.contains(&secret2), "the update did not reach the domain (cmdline):\n{xml}");

    // Outputs.
    let out = st.vf(&secret2, &["output"]);
    check("output", &out, true);
    assert!(out.stdout.contains("token = (sensitive value)"), "{}", out.show());
    let oj = st.vf(&secret2, &["output", "--json"]);
    check("output --json", &oj, true);
    // Asked for by name, an output is shown (as Terraform's `output NAME`).
    let named = st.vf(&secret2, &["output", "token"]);
    assert!(named.ok() && named.stdout.contains(&secret2), "output token (by name) should print the value:\n{}", named.show());

    // show.
    for args in [&["show"][..], &["show", "--json"][..]] {
        let o = st.vf(&secret2, args);
        check(&format!("{args:?}"), &o, true);
    }

    // Error messages about the sensitive variable's value.
    let bad = tempdir("vf-sec-bad-");
    fs::write(
        bad.path().join("main.vf.hcl"),
        "variable \"token\" {\n  type      = string\n  sensitive = true\n  validation {\n    condition     = length(var.token) > 1000\n    error_message = \"the token is too short\"\n  }\n}\n",
    )
    .unwrap();
    let bad2 = tempdir("vf-sec-bad2-");
    fs::write(
        bad2.path().join("main.vf.hcl"),
        "variable \"token\" {\n  type      = string\n  sensitive = true\n}\n\nlocals {\n  a = cidrhost(var.token, 1)\n  b = file(var.token)\n  c = tonumber(var.token)\n  d = lookup({}, var.token)\n  e = { x = 1 }[var.token]\n  f = format(\"%d\", var.token)\n}\n\nnetwork \"n\" {\n  count = var.token\n}\n\nnetwork \"m\" {\n  address = var.token\n}\n",
    )
    .unwrap();
    let bad3 = tempdir("vf-sec-bad3-");
    fs::write(bad3.path().join("main.vf.hcl"), "variable \"token\" {\n  type      = number\n  sensitive = true\n}\n").unwrap();
    for (what, dir) in [("a failed validation", bad.path()), ("six function errors, a bad count and a bad address", bad2.path()), ("a value of the wrong type", bad3.path())] {
        for cmd in ["validate", "plan"] {
            let var = format!("token={secret}");
            let o = vf(&["--no-color", "--state-dir", &st.state.path().display().to_string(), cmd, "--var", &var, &dir.display().to_string()]);
            if o.code != Some(1) {
                leaks.borrow_mut().push(format!("{cmd} with {what}: expected exit code 1:\n{}", o.show()));
            }
            check(&format!("{cmd} with {what}"), &o, false);
            let o = vf_env(&["--no-color", cmd, &dir.display().to_string()], &[("VIRTFORM_VAR_token", &secret)]);
            check(&format!("{cmd} with {what} (from the environment)"), &o, false);
        }
    }

    // Files virtform wrote (state dir; no console log: the guest never ran).
    for f in files_containing(st.state.path(), &secret).into_iter().chain(files_containing(st.state.path(), &secret2)) {
        leaks.borrow_mut().push(format!("the state dir file {f} holds the secret"));
    }

    // Destroy through virtform (progress output too), then nothing may be left.
    let d = st.vf(&secret2, &["destroy", "--auto-approve"]);
    check("destroy", &d, true);
    st.finish();
    let leaks = leaks.into_inner();
    assert!(leaks.is_empty(), "{} problems:\n\n{}", leaks.len(), leaks.join("\n\n"));
}

/// When a sensitive value in an instance's cmdline changes, the text plan
/// (`plan`, and `apply` before it asks) shows neither the old nor the new
/// secret: the attribute line says `(sensitive value) -> (sensitive value)`
/// and the XML diff under the instance masks `<cmdline>` (fixed in
/// `Planner::instance`; it printed both secrets before).
#[test]
fn sensitive_change_is_hidden_in_the_plan_diff() {
    let st = SecretStack::new("b");
    let s1 = format!("vfSECRET-{}-d1f", pid());
    let s2 = format!("vfSECRET2-{}-d2f", pid());
    st.vf(&s1, &["apply", "--auto-approve"]).must();
    let plan = st.vf(&s2, &["plan"]);
    let leaked = plan.all().contains(&s1) || plan.all().contains(&s2);
    st.finish();
    assert!(!leaked, "the plan shows the sensitive cmdline:\n{}", plan.show());
}

// ---------------------------------------------------------------------------
// 12. Files with user data are private
// ---------------------------------------------------------------------------

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0)
}

#[test]
fn plan_files_are_private() {
    let st = SecretStack::new("c");
    let secret = format!("vfSECRET-{}-p9z", pid());
    let dir = tempdir("vf-sec-plans-");
    let fresh = dir.path().join("fresh.plan");
    let out = st.vf(&secret, &["plan", "--out", &fresh.display().to_string()]);
    assert!(out.ok(), "{}", out.show());
    assert!(!out.all().contains(&secret), "plan --out printed the secret:\n{}", out.show());
    // The plan file holds the --var values (so that apply FILE plans the same): it must be private.
    assert!(files_containing(dir.path(), &secret).contains(&fresh.display().to_string()), "the plan file no longer holds the variables; revisit this test");
    assert_eq!(mode(&fresh), 0o600, "plan --out wrote {} with mode {:o}", fresh.display(), mode(&fresh));
    // Over an existing world-readable file: replaced by a private one.
    let old = dir.path().join("old.plan");
    fs::write(&old, "old").unwrap();
    fs::set_permissions(&old, fs::Permissions::from_mode(0o644)).unwrap();
    st.vf(&secret, &["plan", "--out", &old.display().to_string()]).must();
    assert_eq!(mode(&old), 0o600, "plan --out over a 0644 file left mode {:o}", mode(&old));
    // No temporary file is left next to it.
    let names: Vec<String> = fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "files next to the plan files: {names:?}");
    // A refused apply of it leaves the state dir as it was (no stack dir, no lock).
    let before = listing(st.state.path());
    fs::write(&old, fs::read_to_string(&old).unwrap().replace("\"format_version\": \"1\"", "\"format_version\": \"9\"")).unwrap();
    let refused = vf(&["--no-color", "apply", "--auto-approve", &old.display().to_string()]);
    assert_eq!(refused.code, Some(1), "{}", refused.show());
    assert_eq!(listing(st.state.path()), before, "a refused apply changed the state dir");
    st.finish();
}

/// Nothing virtform writes under the state dir is readable by others:
/// disks (the guests' data), overlays, console logs, seeds: 0600. Cached
/// base images are 0644 (shared backing files, see the comment below).
/// Directories are 0711: QEMU (libvirt-qemu) must traverse them to the files
/// libvirt's dynamic ownership hands it while the domain runs; nobody else
/// can list them. The guest here runs, so the test also shows that QEMU
/// reaches a 0600 overlay.
#[test]
fn state_dir_files_are_not_world_readable() {
    preflight(true);
    let stack = format!("vfsec-d-{}", pid());
    let cfg = tempdir("vf-sec-modes-cfg-");
    let state = tempdir("vf-sec-modes-state-");
    let nocfg = tempdir("vf-sec-modes-nocfg-");
    fs::write(
        cfg.path().join("main.vf.hcl"),
        format!(
            "image \"tiny\" {{\n  source = \"{}\"\n}}\n\ndisk \"root\" {{\n  image = image.tiny\n}}\n\ndisk \"data\" {{\n  size = \"16M\"\n}}\n\ninstance \"vm\" {{\n  memory = \"128M\"\n  kernel = \"{a}/vmlinuz\"\n  initrd = \"{a}/initrd.gz\"\n  cmdline = \"console=ttyS0\"\n  disks  = [disk.root, disk.data]\n  wait_for {{\n    console = \"VF-READY\"\n    timeout = \"180s\"\n  }}\n}}\n",
            assets_dir().join("tiny.qcow2").display(),
            a = assets_dir().display()
        ),
    )
    .unwrap();
    let mut guard = HostGuard::default();
    guard.stacks = vec![(stack.clone(), state.path().to_path_buf(), nocfg.path().to_path_buf())];
    guard.domains = vec![format!("{stack}-vm")];
    let out = vf(&["--no-color", "--state-dir", &state.path().display().to_string(), "--stack", &stack, "apply", "--auto-approve", &cfg.path().display().to_string()]);
    assert!(out.ok(), "{}", out.show());
    let mut bad = Vec::new();
    let stack_dir = state.path().join(&stack);
    if mode(&stack_dir) != 0o711 {
        bad.push(format!("{} has mode {:o}, not 711", stack_dir.display(), mode(&stack_dir)));
    }
    let images = state.path().join("images");
    if mode(&images) != 0o711 {
        bad.push(format!("{} has mode {:o}, not 711", images.display(), mode(&images)));
    }
    let mut files = 0;
    for entry in listing(state.path()) {
        let rel = entry.split(' ').next().unwrap_or("").trim_end_matches('/');
        let p = state.path().join(rel);
        if p.is_dir() {
            continue;
        }
        files += 1;
        // Cached base images are shared read-only backing files of every
        // stack's overlays: 0644 (see IMAGE_MODE in src/host/disks.rs).
        // The cache's own index (`.sources.json`) is private like the rest.
        let dotfile = p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        let allowed = if p.parent() == Some(images.as_path()) && !dotfile { 0o644 } else { 0o600 };
        if mode(&p) & 0o777 != allowed {
            bad.push(format!("{} has mode {:o}, not {allowed:o}", p.display(), mode(&p)));
        }
    }
    // disks root and data, the cached image, the console log at least.
    assert!(files >= 4, "too few files under the state dir: {:?}", listing(state.path()));
    drop(guard);
    assert!(bad.is_empty(), "files with user data readable by others:\n{}", bad.join("\n"));
}

/// `virtform ssh vm -- ARGS…` quotes each argument for the guest's login
/// shell: whatever the arguments hold, a POSIX shell hands the remote
/// program exactly the vector given (here dash, Debian's /bin/sh, stands in
/// for the guest's shell).
#[test]
fn remote_commands_reach_the_guest_as_the_argument_vector_given() {
    use virtform::host::ssh::remote_command;
    let hostile = ["a b", "'", "\"", "$HOME", "`id`", "$(reboot)", "\\", "*", "-n", "--", "a'b'c", "\n", "é", "", ";", "|", "&", "~", "#x", "{a,b}"];
    let argv: Vec<String> = hostile.iter().map(|s| s.to_string()).collect();
    let script = format!("for a in {}; do printf '%s\\0' \"$a\"; done", remote_command(&argv));
    let out = std::process::Command::new("/bin/sh").args(["-c", &script]).output().expect("/bin/sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut got: Vec<String> = out.stdout.split(|b| *b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
    assert_eq!(got.pop().as_deref(), Some(""), "output ends with a NUL");
    assert_eq!(got, argv);
}
