//! Issue 6, item 6: bad input of every kind gives a clear error with its
//! location (file:line:column for configuration, the flag for the command
//! line, the file for a saved plan, the object for a host surprise), exit
//! code 1, no panic, and no change to the host.
//!
//! This catalogue adds to tests/diagnostics.rs (which checks 59 bad
//! configurations through the library); none of those is repeated here.
//! Every case runs the binary, so exit codes, panics (RUST_BACKTRACE=1 is
//! set), aborts and hangs are seen as a user would see them.
//!
//! Real host: the saved-plan and host-surprise cases observe (and try to
//! apply to) the host; each takes an inventory before and after (domains,
//! libvirt networks, links, OVS bridges and ports, a recursive listing of
//! the state directory) and asserts that nothing of the test changed. The
//! configuration and command-line cases also run `plan` against a
//! temporary state directory, under one inventory pair.
//!
//! Needs root and a running libvirtd: run scripts/test. When they are
//! missing the tests FAIL saying so; they never skip.
//!
//! `VF_BAD_SHOW=1 cargo test --test bad_input -- --nocapture` prints every
//! case's output.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Held by the tests that change the host on purpose (saved plan files,
/// host surprises): a saved plan's fingerprint covers the whole host, so
/// the surprises must not appear while a plan file is checked.
static HOST_CHANGES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn host_changes() -> std::sync::MutexGuard<'static, ()> {
    HOST_CHANGES.lock().unwrap_or_else(|e| e.into_inner())
}

fn show_all() -> bool {
    std::env::var_os("VF_BAD_SHOW").is_some()
}

/// Common checks of a bad input's result: exit code 1, no crash, the
/// expected words. Returns the failure, naming the case.
fn check_exit_1(case: &str, out: &Out) -> Result<(), String> {
    if show_all() {
        eprintln!("===== {case}\n{}", out.show());
    }
    if let Some(c) = out.crashed() {
        return Err(format!("{case}: crashed ({c}):\n{}", out.show()));
    }
    if out.code != Some(1) {
        return Err(format!("{case}: expected exit code 1:\n{}", out.show()));
    }
    Ok(())
}

/// Runs `f` over the cases on a few threads; the failures, in case order.
fn in_parallel<T: Sync>(cases: &[T], f: impl Fn(&T) -> Result<(), String> + Sync) -> Vec<String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<(usize, String)>> = Default::default();
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(c) = cases.get(i) else { break };
                    if let Err(e) = f(c) {
                        results.lock().unwrap().push((i, e));
                    }
                }
            });
        }
    });
    let mut r = results.into_inner().unwrap();
    r.sort();
    r.into_iter().map(|(_, e)| e).collect()
}

fn report(category: &str, total: usize, failures: Vec<String>) {
    eprintln!("[bad_input] {category}: {total} distinct bad inputs, {} failed", failures.len());
    assert!(failures.is_empty(), "{} of {total} {category} cases failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

// ---------------------------------------------------------------------------
// Configuration language
// ---------------------------------------------------------------------------

/// What a configuration directory holds for one case.
enum Entry {
    Text(&'static str, String),
    Bytes(&'static str, Vec<u8>),
    Dir(&'static str),
    /// A symbolic link NAME → TARGET (TARGET relative to the case's scratch dir when it starts with "@").
    Symlink(&'static str, String),
    Fifo(&'static str),
    /// A file only its owner (root) may read; the case runs as `nobody`.
    Unreadable(&'static str, String),
}

struct ConfigCase {
    name: String,
    entries: Vec<Entry>,
    /// Extra arguments (before the directory).
    args: Vec<String>,
    /// The file the error is in and the text it points at (`skip` earlier
    /// occurrences skipped); None: the message must name the file.
    file: &'static str,
    at: Option<(String, usize)>,
    /// Check only `file:line:` (deep nesting: the parser stops at its depth limit).
    line_only: bool,
    msg: &'static str,
}

fn cc(name: &str, src: &str, at: &str, msg: &'static str) -> ConfigCase {
    ConfigCase {
        name: name.to_string(),
        entries: vec![Entry::Text("main.vf.hcl", src.to_string())],
        args: Vec::new(),
        file: "main.vf.hcl",
        at: Some((at.to_string(), 0)),
        line_only: false,
        msg,
    }
}

impl ConfigCase {
    fn line_only(mut self) -> Self {
        self.line_only = true;
        self
    }

    fn skip(mut self, n: usize) -> Self {
        if let Some(a) = &mut self.at {
            a.1 = n;
        }
        self
    }
}

/// A quickstart-shaped configuration with one attribute replaced or added
/// in a block; `@` marks where the case's line goes.
fn in_instance(line: &str) -> String {
    format!(
        "network \"lan\" {{\n  bridge  = \"vfbad0\"\n  address = \"10.250.0.1/24\"\n}}\n\nimage \"tiny\" {{\n  source = \"/var/lib/virtform/assets/tiny.qcow2\"\n}}\n\ndisk \"root\" {{\n  image = image.tiny\n}}\n\nport \"eth0\" {{\n  network = network.lan\n}}\n\ninstance \"vm\" {{\n  disks = [disk.root]\n  ports = [port.eth0]\n  {line}\n}}\n"
    )
}

fn in_locals(line: &str) -> String {
    format!("locals {{\n  {line}\n}}\n")
}

fn nested(open: &str, close: &str, inner: &str, depth: usize) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

fn config_cases() -> Vec<ConfigCase> {
    let mut v = vec![
        // --- values and types of resource attributes
        cc("memory is a bool", &in_instance("memory = true"), "true", "memory"),
        cc("vcpus is fractional", &in_instance("vcpus = 1.5"), "1.5", "vcpus"),
        cc("vcpus is zero", &in_instance("vcpus = 0"), "0\n", "out of range"),
        cc("vcpus is huge", &in_instance("vcpus = 100000"), "100000", "out of range"),
        cc("memory below 16M", &in_instance("memory = \"1M\""), "\"1M\"", "too small"),
        cc("exabyte size unit", &in_instance("memory = \"16E\""), "\"16E\"", "unknown size unit"),
        cc("memory as a huge integer", &in_instance("memory = 1e30"), "1e30", "memory"),
        cc("negative size", "disk \"d\" {\n  size = \"-1G\"\n}\n", "\"-1G\"", "is negative"),
        cc("empty size", "disk \"d\" {\n  size = \"\"\n}\n", "\"\"", "size"),
        cc("size with a huge mantissa", "disk \"d\" {\n  size = \"99999999999999999999G\"\n}\n", "\"999", "size"),
        cc("state is not an enum value", &in_instance("state = \"paused\""), "\"paused\"", "invalid value \"paused\" for `state`"),
        cc("firmware typo", &in_instance("firmware = \"uefi\""), "\"uefi\"", "invalid value \"uefi\""),
        cc("domain_type unknown", &in_instance("domain_type = \"xen\""), "\"xen\"", "invalid value \"xen\""),
        cc("graphics is a number", &in_instance("graphics = 1"), "1\n", "graphics"),
        cc("cmdline is a resource", &in_instance("kernel = \"/k\"\n  cmdline = disk.root"), "disk.root\n", "cmdline"),
        cc("disks is a string", "disk \"d\" {\n  size = \"1G\"\n}\ninstance \"vm\" {\n  disks = \"disk.d\"\n}\n", "\"disk.d\"", "disks"),
        cc("ports holds numbers", "network \"lan\" {}\ninstance \"vm\" {\n  kernel = \"/k\"\n  ports = [1, 2]\n}\n", "1, 2]", "ports"),
        cc("wait_for timeout unit", &in_instance("wait_for {\n    console = \"x\"\n    timeout = \"10 parsecs\"\n  }"), "\"10 parsecs\"", "timeout"),
        cc("wait_for tcp port too big", &in_instance("wait_for {\n    tcp = 70000\n  }"), "70000", "tcp"),
        cc("empty domain name", &in_instance("name = \"\""), "\"\"", "is not a valid domain name"),
        cc("domain name with a slash", &in_instance("name = \"a/b\""), "\"a/b\"", "is not a valid domain name"),
        cc("domain name too long", &in_instance(&format!("name = \"{}\"", "n".repeat(65))), "\"nnn", "is not a valid domain name"),
        cc("machine with a space", &in_instance("machine = \"pc q35\""), "\"pc q35\"", "is not a machine type"),
        cc("port id too short", "network \"n\" {}\nport \"p\" {\n  network = network.n\n  id = \"short\"\n}\n", "\"short\"", "port id \"short\""),
        cc("port id with a slash", "network \"n\" {}\nport \"p\" {\n  network = network.n\n  id = \"../../../etc/x\"\n}\n", "\"../", "port id"),
        cc("MAC too long", "network \"n\" {}\nport \"p\" {\n  network = network.n\n  mac = \"52:54:00:00:00:00:00\"\n}\n", "\"52:54", "is not a MAC address"),
        cc("address octet out of range", "network \"n\" {\n  address = \"300.1.1.1/24\"\n}\n", "\"300.1.1.1/24\"", "300.1.1.1"),
        cc("port ip is the broadcast address", "network \"n\" {\n  address = \"10.9.0.1/24\"\n}\nport \"p\" {\n  network = network.n\n  ip = \"10.9.0.255\"\n}\n", "\"10.9.0.255\"", "broadcast"),
        cc("bridge name with a space", "network \"n\" {\n  bridge = \"vf lan\"\n}\n", "\"vf lan\"", "bridge"),
        cc("empty bridge name", "network \"n\" {\n  bridge = \"\"\n}\n", "\"\"", "bridge"),
        cc("bridge name with a slash", "network \"n\" {\n  bridge = \"../x\"\n}\n", "\"../x\"", "bridge"),
        cc("bridge name starting with a dash", "network \"n\" {\n  bridge = \"-vf0\"\n}\n", "\"-vf0\"", "not a valid interface name"),
        cc("bridge name with a hash", "network \"n\" {\n  bridge = \"vf#0\"\n}\n", "\"vf#0\"", "not a valid interface name"),
        cc("bridge name with a quote", "network \"n\" {\n  bridge = \"vf'0\"\n}\n", "\"vf'0\"", "not a valid interface name"),
        cc("control character in cmdline", &in_instance("kernel = \"/k\"\n  cmdline = \"a\\u0001b\""), "\"a\\u0001b\"", "control character"),
        cc("newline in a kernel path", &in_instance("kernel = \"/k\\n\""), "\"/k\\n\"", "control character"),
        cc("negative forward delay", "network \"n\" {\n  forward_delay = -1\n}\n", "-1", "forward_delay"),
        cc("mtu out of range", "network \"n\" {\n  mtu = 99999999999999999999999\n}\n", "9999", "mtu"),
        cc("sha256 not hex", "image \"i\" {\n  source = \"/x.qcow2\"\n  sha256 = \"xyz\"\n}\n", "\"xyz\"", "sha256"),
        cc("empty image source", "image \"i\" {\n  source = \"\"\n}\n", "\"\"", "must not be empty"),
        cc("relative file URL", "image \"i\" {\n  source = \"file://x.qcow2\"\n}\n", "\"file://x.qcow2\"", "is not an absolute file:// URL"),
        cc("cpu model without custom mode", &in_instance("cpu {\n    mode  = \"host-model\"\n    model = \"qemu64\"\n  }"), "\"qemu64\"", "applies only to cpu mode \"custom\""),
        cc("volume serial too long", "volume \"v\" {\n  size = \"1G\"\n  serial = \"abcdefghijklmnopqrstuvwxyz\"\n}\n", "\"abcdef", "serial"),
        cc("volume serial with markup", "volume \"v\" {\n  size = \"1G\"\n  serial = \"<x>&\"\n}\n", "\"<x>&\"", "serial"),
        // --- functions
        cc("length without arguments", &in_locals("x = length()"), "length()", "length"),
        cc("length with two arguments", &in_locals("x = length([1], [2])"), "[2]", "length expects 1 argument, got 2"),
        cc("join of a string", &in_locals("x = join(\",\", \"abc\")"), "\"abc\"", "join"),
        cc("cidrsubnet with too many bits", &in_locals("x = cidrsubnet(\"10.0.0.0/8\", 40, 1)"), "40", "cidrsubnet"),
        cc("base64decode of garbage", &in_locals("x = base64decode(\"!!!\")"), "\"!!!\"", "base64"),
        cc("file that does not exist", &in_locals("x = file(\"nope.txt\")"), "\"nope.txt\"", "no file exists"),
        cc("file of a directory", &in_locals("x = file(\"/etc\")"), "\"/etc\"", "is a directory"),
        cc("file of a device", &in_locals("x = file(\"/dev/zero\")"), "\"/dev/zero\"", "not a regular file"),
        cc("templatefile without the file", &in_locals("x = templatefile(\"t.tpl\", {})"), "\"t.tpl\"", "t.tpl"),
        cc("tonumber of words", &in_locals("x = tonumber(\"abc\")"), "\"abc\"", "tonumber"),
        cc("element of an empty list", &in_locals("x = element([], 0)"), "[]", "empty"),
        cc("format verb of the wrong type", &in_locals("x = format(\"%d\", \"x\")"), "\"x\"", "format"),
        cc("format with a huge width", &in_locals("x = format(\"%999999999999d\", 1)"), "\"%9", "format"),
        cc("lookup without a default", &in_locals("x = lookup({}, \"k\")"), "\"k\"", "no default was given"),
        cc("upper of a list", &in_locals("x = upper([\"a\"])"), "[\"a\"]", "upper"),
        cc("coalesce of nothing", &in_locals("x = coalesce()"), "coalesce", "coalesce"),
        cc("min without arguments", &in_locals("x = min()"), "min", "min"),
        cc("merge of a number", &in_locals("x = merge(1)"), "1)", "merge"),
        cc("range too long", &in_locals("x = range(1e12)"), "range", "range"),
        cc("pow overflows", &in_locals("x = pow(10, 400) + 1"), "pow(", "too large"),
        cc("parseint of garbage", &in_locals("x = parseint(\"zz\", 10)"), "\"zz\"", "parseint"),
        cc("parseint with base 99", &in_locals("x = parseint(\"1\", 99)"), "99", "parseint"),
        cc("function named like a root", &in_locals("x = var(1)"), "var(", "var"),
        cc("jsondecode of garbage", &in_locals("x = jsondecode(\"{\")"), "\"{\"", "jsondecode"),
        cc("yamldecode of garbage", &in_locals("x = yamldecode(\"a: [\")"), "\"a: [\"", "yamldecode"),
        cc("cidrhost beyond the subnet", &in_locals("x = cidrhost(\"10.0.0.0/30\", 9)"), "9)", "cidrhost"),
        // --- references
        cc("undeclared local", &in_locals("x = local.y"), "local.y", "reference to undeclared local `local.y`"),
        cc("attribute of a string variable", "variable \"s\" {\n  default = \"x\"\n}\nlocals {\n  x = var.s.y\n}\n", ".y", "`var.s` is a string; it has no attribute `y`"),
        cc("unknown attribute of a resource", "network \"lan\" {}\nlocals {\n  x = network.lan.nope\n}\n", ".nope", "`network.lan` has no attribute `nope`"),
        cc("index into a single resource", "network \"lan\" {}\nlocals {\n  x = network.lan[0]\n}\n", "0]", "`network.lan` has no element with key"),
        cc("string key into a counted resource", "network \"lan\" {\n  count = 1\n}\nlocals {\n  x = network.lan[\"a\"]\n}\n", "\"a\"]", "its index must be a whole number"),
        cc("resource refers to itself", "network \"n\" {\n  mtu = network.n.mtu\n}\n", "network.n.mtu", "cycle"),
        cc("virtform attribute typo", &in_locals("x = virtform.stak"), "virtform.stak", "the only attribute of `virtform` is `stack`"),
        cc("path attribute typo", &in_locals("x = path.modul"), "path.modul", "`path` has the attributes `module`, `root` and `cwd`"),
        cc("unknown root name", &in_locals("x = netwrk.lan"), "netwrk.lan", "unknown name `netwrk`"),
        cc("count attribute typo", "network \"n\" {\n  count = 2\n  mtu = 1500 + count.indx\n}\n", "count.indx", "`count.indx` does not exist"),
        cc("each attribute typo", "network \"n\" {\n  for_each = toset([\"a\"])\n  bridge = each.val\n}\n", "each.val", "`each.val` does not exist"),
        cc("output referenced", "output \"o\" {\n  value = 1\n}\nlocals {\n  x = output.o\n}\n", "output.o", "unknown name `output`"),
        cc("bare var", &in_locals("x = var"), "var\n", "`var` must be followed by a variable name"),
        cc("depends_on holds a string", "network \"a\" {}\nnetwork \"b\" {\n  depends_on = [\"network.a\"]\n}\n", "[\"network.a\"]", "`depends_on` lists resources"),
        cc("count in for_each", "network \"n\" {\n  for_each = toset([tostring(count.index)])\n}\n", "count.index", "`count` cannot be used in `for_each`"),
        // --- count and for_each
        cc("count known only after apply", "network \"n\" {}\nport \"p\" {\n  network = network.n\n}\nnetwork \"m\" {\n  count = length(port.p.ip)\n}\n", "length(port.p.ip)", "count"),
        cc("for_each key with a space", "network \"n\" {\n  for_each = toset([\"a b\"])\n}\n", "toset", "is not usable"),
        cc("for_each over a string", "network \"n\" {\n  for_each = \"abc\"\n}\n", "\"abc\"", "for_each"),
        cc("for_each over a number", "network \"n\" {\n  for_each = 5\n}\n", "5\n", "for_each"),
        cc("for_each is null", "network \"n\" {\n  for_each = null\n}\n", "null", "for_each"),
        cc("count is null", "network \"n\" {\n  count = null\n}\n", "null", "count"),
        cc("count is a bool", "network \"n\" {\n  count = true\n}\n", "true", "count"),
        cc("count is fractional", "network \"n\" {\n  count = 2.5\n}\n", "2.5", "count"),
        cc("count is a word", "network \"n\" {\n  count = \"two\"\n}\n", "\"two\"", "count"),
        cc("count above the limit", "network \"n\" {\n  count = 100001\n}\n", "100001", "`count` must be a whole number from 0 to 100000"),
        cc("count is 1e300", "network \"n\" {\n  count = 1e300\n}\n", "1e300", "`count` must be a whole number from 0 to 100000"),
        cc("count.index in a for_each resource", "network \"n\" {\n  for_each = toset([\"a\"])\n  mtu = 1500 + count.index\n}\n", "count.index", "`count` is only available in a resource with `count`"),
        cc("count on a variable", "variable \"v\" {\n  count = 2\n}\n", "count", "unknown attribute `count` in variable \"v\""),
        cc("lifecycle flag is a word", "network \"n\" {\n  lifecycle {\n    prevent_destroy = \"yes\"\n  }\n}\n", "\"yes\"", "prevent_destroy"),
        cc("lifecycle unknown attribute", "network \"n\" {\n  lifecycle {\n    prevent_destroi = true\n  }\n}\n", "prevent_destroi", "prevent_destroi"),
        cc("replace_triggered_by an unknown kind", "network \"n\" {\n  lifecycle {\n    replace_triggered_by = [nonsense.x]\n  }\n}\n", "nonsense.x", "unknown name `nonsense`"),
        // --- numbers at the edges
        cc("a number of 5000 digits", &in_instance(&format!("vcpus = {}", "9".repeat(5000))), "vcpus", "syntax error"),
        cc("cidrhost with a huge host number", &in_locals("x = cidrhost(\"10.0.0.0/8\", 1e20)"), "1e20", "cidrhost"),
        cc("negative fractional vcpus", &in_instance("vcpus = -0.5"), "-0.5", "vcpus"),
        // --- unicode
        cc("non-ASCII resource name", "network \"lån\" {}\n", "\"lån\"", "is not a valid name"),
        cc("bridge name over 15 bytes in 10 characters", "network \"n\" {\n  bridge = \"brüüüüüüü0\"\n}\n", "\"brü", "Linux allows at most 15"),
        cc("non-ASCII attribute name", "network \"n\" {\n  mtü = 1500\n}\n", "mtü", "unknown attribute `mtü`"),
        cc("zero-width space in a block type", "net\u{200b}work \"n\" {}\n", "\u{200b}", "syntax error"),
        cc("fullwidth equals sign", "network \"n\" {\n  mtu ＝ 1500\n}\n", "＝", "syntax error"),
        cc("emoji in a for_each key", "network \"n\" {\n  for_each = toset([\"🦀\"])\n}\n", "toset", "is not usable"),
        // --- syntax
        cc("unterminated heredoc", "locals {\n  x = <<EOT\nabc\n}\n", "abc", "heredoc"),
        cc("unterminated block", "network \"n\" {\n  mtu = 1500\n", "\n", "syntax error").skip(1),
        cc("stray closing brace", "network \"n\" {}\n}\n", "}\n", "syntax error").skip(1),
        cc("invalid escape", &in_locals("x = \"a\\qb\""), "b\"", "invalid escape sequence"),
        cc("unclosed interpolation", &in_locals("x = \"${1 + \""), "x =", "syntax error"),
        cc("if directive without endif", &in_locals("x = \"%{ if true }yes\""), "x =", "syntax error"),
        cc("NUL byte in the text", "network \"n\" {\n  mtu = 1\u{0}500\n}\n", "\u{0}", "syntax error"),
        cc("deeply nested parentheses", &in_locals(&format!("x = {}", nested("(", ")", "1", 20_000))), "(((", "nested").line_only(),
        cc("deeply nested lists", &in_locals(&format!("x = {}", nested("[", "]", "1", 20_000))), "[[[", "nested").line_only(),
        cc("deeply nested objects", &in_locals(&format!("x = {}", nested("{a = ", "}", "1", 20_000))), "{a =", "nested").line_only(),
        cc("deeply nested blocks", &nested("a {\n", "}\n", "", 20_000), "a {", "nesting depth").skip(64).line_only(),
        cc("a chain of 100000 additions", &in_locals(&format!("x = 1{}\n  y = local.x.z", " + 1".repeat(100_000))), "x =", "syntax error").line_only(),
        cc("deeply nested conditionals", &in_locals(&format!("x = {}1{}", "true ? ".repeat(20_000), " : 0".repeat(20_000))), "true ?", "nested").line_only(),
        cc("deeply nested unary minus", &in_locals(&format!("x = {}1", "-".repeat(50_000))), "---", "nested").line_only(),
        cc("deeply nested function calls", &in_locals(&format!("x = {}1{}", "abs(".repeat(20_000), ")".repeat(20_000))), "abs(", "nested").line_only(),
        cc("a chain of 300 locals, each wrapping the last", &{
            let mut t = String::from("locals {\n  l0 = 1\n");
            for i in 1..300 {
                t.push_str(&format!("  l{i} = [local.l{}]\n", i - 1));
            }
            t + "}\n"
        }, "[local.l256]", "local.l257 is nested more than 256 levels deep"),
        // --- conversions and operators
        cc("string plus number", &in_locals("x = \"a\" + 1"), "\"a\"", "number"),
        cc("list compared to a number", &in_locals("x = [1] < 2"), "[1]", "number"),
        cc("not of a number", &in_locals("x = !5"), "5", "bool"),
        cc("for over a number", &in_locals("x = [for i in 5 : i]"), "5 :", "for"),
        cc("duplicate keys from a for", &in_locals("x = { for s in [\"a\", \"a\"] : s => 1 }"), "s => 1", "duplicate key \"a\" in a `for` expression"),
        cc("string index into a list", &in_locals("x = [1, 2][\"a\"]"), "\"a\"", "index"),
        cc("attribute of a list", &in_locals("x = [1].foo"), ".foo", "it has no attribute `foo`"),
        cc("negative index", &in_locals("x = [1, 2][-1]"), "-1", "index"),
        cc("conditional on a string", &in_locals("x = \"x\" ? 1 : 2"), "\"x\"", "bool"),
        cc("modulo by zero", &in_locals("x = 1 % 0"), "0\n", "zero"),
        // --- blocks and files
        cc("unknown virtform attribute", "virtform {\n  stak = \"x\"\n}\n", "stak", "stak"),
        cc("duplicate virtform block", "virtform {}\nvirtform {}\n", "virtform", "duplicate `virtform` block").skip(1),
        cc("block inside locals", "locals {\n  network \"n\" {}\n}\n", "network", "unexpected block `network` in locals"),
        cc("duplicate local across blocks", "locals {\n  x = 1\n}\nlocals {\n  x = 2\n}\n", "x = 2", "duplicate local `x`"),
        cc("output without value", "output \"o\" {\n  description = \"d\"\n}\n", "output \"o\"", "value"),
        cc("output unknown attribute", "output \"o\" {\n  value = 1\n  valeu = 2\n}\n", "valeu", "valeu"),
        cc("variable attribute typo", "variable \"v\" {\n  defualt = 1\n}\n", "defualt", "unknown attribute `defualt` in variable \"v\""),
        cc("validation condition is a string", "variable \"v\" {\n  default = 1\n  validation {\n    condition = \"yes\"\n    error_message = \"no\"\n  }\n}\n", "\"yes\"", "condition"),
        cc("validation refers to another variable", "variable \"w\" {\n  default = 1\n}\nvariable \"v\" {\n  default = 1\n  validation {\n    condition = var.w > 0\n    error_message = \"no\"\n  }\n}\n", "var.w >", "var.w"),
        cc("type with an unknown element type", "variable \"v\" {\n  type = list(strng)\n}\n", "strng", "did you mean `string`?"),
        cc("sensitive is a word", "variable \"v\" {\n  default = 1\n  sensitive = \"yes\"\n}\n", "\"yes\"", "`sensitive` must be true or false"),
        cc("variable default refers to a variable", "variable \"w\" {\n  default = 1\n}\nvariable \"v\" {\n  default = var.w\n}\n", "var.w\n", "`default` of a variable must be a constant"),
        cc("resource block without a label", "network {\n}\n", "network", "takes exactly one label"),
        cc("locals with a label", "locals \"x\" {\n  a = 1\n}\n", "\"x\"", "a `locals` block takes no label"),
        cc("empty resource name", "network \"\" {}\n", "\"\"", "is not a valid name"),
    ];

    // Files: the error names the right one of several, and odd files.
    v.push(ConfigCase {
        name: "error in the second of two files".into(),
        entries: vec![Entry::Text("a.vf.hcl", "network \"a\" {}\n".into()), Entry::Text("b.vf.hcl", "network \"b\" {\n  mtu = \"big\"\n}\n".into())],
        args: vec![],
        line_only: false,
        file: "b.vf.hcl",
        at: Some(("\"big\"".into(), 0)),
        msg: "expected a number",
    });
    v.push(ConfigCase {
        name: "duplicate resource across two files".into(),
        entries: vec![Entry::Text("a.vf.hcl", "network \"lan\" {}\n".into()), Entry::Text("b.vf.hcl", "\nnetwork \"lan\" {}\n".into())],
        args: vec![],
        line_only: false,
        file: "b.vf.hcl",
        at: Some(("\"lan\"".into(), 0)),
        msg: "duplicate network \"lan\"",
    });
    v.push(ConfigCase {
        name: "syntax error in an auto.vfvars file".into(),
        entries: vec![Entry::Text("main.vf.hcl", "variable \"n\" {\n  default = 1\n}\n".into()), Entry::Text("x.auto.vfvars", "n = = 2\n".into())],
        args: vec![],
        line_only: false,
        file: "x.auto.vfvars",
        at: Some(("= 2".into(), 0)),
        msg: "syntax error",
    });
    v.push(ConfigCase {
        name: "block in an auto.vfvars file".into(),
        entries: vec![Entry::Text("main.vf.hcl", "variable \"n\" {\n  default = 1\n}\n".into()), Entry::Text("x.auto.vfvars", "n = 2\nnetwork \"x\" {}\n".into())],
        args: vec![],
        line_only: false,
        file: "x.auto.vfvars",
        at: Some(("network".into(), 0)),
        msg: "a variables file holds only `name = value` lines",
    });
    v.push(ConfigCase {
        name: "reference in an auto.vfvars file".into(),
        entries: vec![Entry::Text("main.vf.hcl", "variable \"n\" {\n  default = 1\n}\n".into()), Entry::Text("x.auto.vfvars", "n = var.n\n".into())],
        args: vec![],
        line_only: false,
        file: "x.auto.vfvars",
        at: Some(("var.n".into(), 0)),
        msg: "values in a variables file must be constants",
    });
    v.push(ConfigCase {
        name: "binary garbage".into(),
        entries: vec![Entry::Bytes("main.vf.hcl", {
            let mut b = b"network \"n\" {\n  mtu = 1500\n}\n# ".to_vec();
            b.extend([0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0x01, 0x02]);
            b.extend(b"\n");
            b
        })],
        args: vec![],
        line_only: false,
        file: "main.vf.hcl",
        at: Some(("\u{fffd}".into(), 0)),
        msg: "is not UTF-8 text",
    });
    v.push(ConfigCase {
        name: "only binary garbage".into(),
        entries: vec![Entry::Bytes("main.vf.hcl", (0..=255u8).rev().cycle().take(4096).collect())],
        args: vec![],
        line_only: false,
        file: "main.vf.hcl",
        at: Some(("".into(), 0)),
        msg: "is not UTF-8 text",
    });
    v.push(ConfigCase {
        name: "a configuration file that is a directory".into(),
        entries: vec![Entry::Text("a.vf.hcl", "network \"a\" {}\n".into()), Entry::Dir("main.vf.hcl")],
        args: vec![],
        line_only: false,
        file: "main.vf.hcl",
        at: None,
        msg: "is a directory",
    });
    v.push(ConfigCase {
        name: "an unreadable configuration file".into(),
        entries: vec![Entry::Unreadable("main.vf.hcl", "network \"n\" {}\n".into())],
        args: vec![],
        line_only: false,
        file: "main.vf.hcl",
        at: None,
        msg: "ermission denied",
    });
    v.push(ConfigCase {
        name: "a symbolic link out of the directory".into(),
        entries: vec![Entry::Text("a.vf.hcl", "network \"a\" {}\n".into()), Entry::Symlink("main.vf.hcl", "@outside.vf.hcl".into())],
        args: vec![],
        line_only: false,
        file: "main.vf.hcl",
        at: None,
        msg: "outside the configuration directory",
    });
    v.push(ConfigCase {
        name: "a symbolic link to /etc/passwd".into(),
        entries: vec![Entry::Symlink("main.vf.hcl", "/etc/passwd".into())],
        args: vec![],
        line_only: false,
        file: "main.vf.hcl",
        at: None,
        msg: "outside the configuration directory",
    });
    v.push(ConfigCase {
        name: "a dangling symbolic link".into(),
        entries: vec![Entry::Text("a.vf.hcl", "network \"a\" {}\n".into()), Entry::Symlink("main.vf.hcl", "@missing.vf.hcl".into())],
        args: vec![],
        line_only: false,
        file: "main.vf.hcl",
        at: None,
        msg: "main.vf.hcl",
    });
    v.push(ConfigCase {
        name: "a FIFO named like a configuration file".into(),
        entries: vec![Entry::Text("a.vf.hcl", "network \"a\" {}\n".into()), Entry::Fifo("main.vf.hcl")],
        args: vec![],
        line_only: false,
        file: "main.vf.hcl",
        at: None,
        msg: "not a regular file",
    });
    v.push(ConfigCase {
        name: "an auto.vfvars file that is a directory".into(),
        entries: vec![Entry::Text("main.vf.hcl", "variable \"n\" {\n  default = 1\n}\n".into()), Entry::Dir("x.auto.vfvars")],
        args: vec![],
        line_only: false,
        file: "x.auto.vfvars",
        at: None,
        msg: "is a directory",
    });
    v
}

fn make_entries(dir: &Path, scratch: &Path, entries: &[Entry]) -> Result<(), String> {
    for e in entries {
        match e {
            Entry::Text(n, t) => fs::write(dir.join(n), t).map_err(|e| e.to_string())?,
            Entry::Bytes(n, b) => fs::write(dir.join(n), b).map_err(|e| e.to_string())?,
            Entry::Dir(n) => fs::create_dir(dir.join(n)).map_err(|e| e.to_string())?,
            Entry::Symlink(n, target) => {
                let t = match target.strip_prefix('@') {
                    Some(rel) => {
                        let p = scratch.join(rel);
                        if !rel.starts_with("missing") {
                            fs::write(&p, "network \"outside\" {}\n").map_err(|e| e.to_string())?;
                        }
                        p
                    }
                    None => PathBuf::from(target),
                };
                std::os::unix::fs::symlink(&t, dir.join(n)).map_err(|e| e.to_string())?
            }
            Entry::Fifo(n) => {
                let c = std::ffi::CString::new(dir.join(n).display().to_string()).map_err(|e| e.to_string())?;
                // SAFETY: a valid NUL-terminated path.
                if unsafe { libc::mkfifo(c.as_ptr(), 0o644) } != 0 {
                    return Err(format!("mkfifo: {}", std::io::Error::last_os_error()));
                }
            }
            Entry::Unreadable(n, t) => {
                fs::write(dir.join(n), t).map_err(|e| e.to_string())?;
                fs::set_permissions(dir.join(n), fs::Permissions::from_mode(0o000)).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

fn run_config_case(case: &ConfigCase, state: &Path) -> Result<(), String> {
    let dir = tempdir("vf-bad-cfg-");
    let scratch = tempdir("vf-bad-scratch-");
    make_entries(dir.path(), scratch.path(), &case.entries).map_err(|e| format!("{}: setup: {e}", case.name))?;
    let state_s = state.display().to_string();
    let dir_s = dir.path().display().to_string();
    let mut args: Vec<&str> = vec!["--no-color", "--state-dir", &state_s, "plan"];
    args.extend(case.args.iter().map(String::as_str));
    args.push(&dir_s);
    let out = if case.entries.iter().any(|e| matches!(e, Entry::Unreadable(..))) {
        // Root reads any file: run as nobody, who may enter the directory but not read the file.
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", env!("CARGO_BIN_EXE_virtform")]).args(&args).env("NO_COLOR", "1").env("RUST_BACKTRACE", "1");
        run_with(cmd, format!("setpriv --reuid=nobody virtform {}", args.join(" ")), VF_TIMEOUT)
    } else {
        let mut o = vf(&args);
        // The same through `validate`, the command users run first.
        let mut vargs = args.clone();
        vargs[3] = "validate";
        let v = vf(&vargs);
        if v.code != o.code || v.stderr != o.stderr {
            o.stderr.push_str(&format!("\n[validate differs:]\n{}", v.show()));
        }
        o
    };
    let name = &case.name;
    check_exit_1(name, &out)?;
    let err = &out.stderr;
    if !err.contains(case.msg) {
        return Err(format!("{name}: the message lacks {:?}:\n{}", case.msg, out.show()));
    }
    if !err.contains("nothing was changed") {
        return Err(format!("{name}: does not say that nothing was changed:\n{}", out.show()));
    }
    match &case.at {
        Some((needle, skip)) => {
            let src = case
                .entries
                .iter()
                .find_map(|e| match e {
                    Entry::Text(n, t) if *n == case.file => Some(t.clone()),
                    Entry::Bytes(n, b) if *n == case.file => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                })
                .ok_or_else(|| format!("{name}: no source for {}", case.file))?;
            let (line, col) = locate(&src, needle, *skip).ok_or_else(|| format!("{name}: needle {needle:?} not in the source"))?;
            let want = if case.line_only { format!("{}:{line}:", case.file) } else { format!("{}:{line}:{col}", case.file) };
            if !err.contains(&want) {
                return Err(format!("{name}: expected the location {want}:\n{}", out.show()));
            }
            if !err.contains(&format!("{line} | ")) || !err.contains('^') {
                return Err(format!("{name}: no source line with a marker:\n{}", out.show()));
            }
        }
        None => {
            if !err.contains(case.file) {
                return Err(format!("{name}: the message does not name {}:\n{}", case.file, out.show()));
            }
        }
    }
    if !listing(state).is_empty() {
        return Err(format!("{name}: the state directory is not empty: {:?}", listing(state)));
    }
    Ok(())
}

#[test]
fn configuration_language() {
    preflight(false);
    let cases = config_cases();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names must be distinct");
    let state = tempdir("vf-bad-state-");
    let before = Inventory::take(state.path());
    let failures = in_parallel(&cases, |case| run_config_case(case, state.path()));
    let mut failures = failures;
    let after = Inventory::take(state.path());
    // Names these configurations could give host objects: the fixed bridge
    // names in them, and stacks named after their directories.
    if let Err(e) = assert_unchanged("configuration cases", &before, &after, &["vfbad0", "vf-bad-cfg-"]) {
        failures.push(e);
    }
    report("configuration language", cases.len(), failures);
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

struct CliCase {
    name: &'static str,
    /// Arguments; `{ok}` a valid configuration directory, `{state}` the
    /// state directory, `{file}` a regular file, `{empty}` an empty
    /// directory, `{vars}` a directory of variables files, `\xff` a byte
    /// that is not UTF-8.
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    /// Words the error must contain: what is wrong, and the flag (or path) it is about.
    msg: &'static [&'static str],
}

const fn cli(name: &'static str, args: &'static [&'static str], msg: &'static [&'static str]) -> CliCase {
    CliCase { name, args, env: &[], msg }
}

fn cli_cases() -> Vec<CliCase> {
    vec![
        cli("subcommand typo", &["plann", "{ok}"], &["unrecognized subcommand 'plann'", "plan"]),
        cli("unknown flag", &["plan", "--frobnicate", "{ok}"], &["unexpected argument '--frobnicate'"]),
        cli("flag of another command", &["apply", "--detailed-exitcode", "{ok}"], &["unexpected argument '--detailed-exitcode'"]),
        cli("flag typo", &["plan", "--destory", "{ok}"], &["--destory", "--destroy"]),
        cli("flag given twice", &["plan", "--json", "--json", "{ok}"], &["'--json' cannot be used multiple times"]),
        cli("two directories", &["plan", "{ok}", "{empty}"], &["unexpected argument"]),
        cli("--var without a value", &["plan", "{ok}", "--var"], &["a value is required for '--var"]),
        cli("--var without =", &["plan", "{ok}", "--var", "n"], &["--var \"n\" is not of the form NAME=VALUE"]),
        cli("--var without a name", &["plan", "{ok}", "--var", "=3"], &["--var \"=3\" is not of the form NAME=VALUE"]),
        cli("--var with a list of the wrong type", &["plan", "{ok}", "--var", "l=[1, \"x\"]"], &["invalid value for variable `l`", "--var l="]),
        cli("--var with a broken expression", &["plan", "{ok}", "--var", "l=[1,"], &["invalid value for variable `l`", "--var l="]),
        cli("--var with a number that overflows", &["plan", "{ok}", "--var", "n=1e999"], &["invalid value for variable `n`", "--var n="]),
        cli("--var that is not UTF-8", &["plan", "{ok}", "--var", "\\xff=1"], &["invalid UTF-8"]),
        cli("--var-file that does not exist", &["plan", "{ok}", "--var-file", "/nonexistent/x.vfvars"], &["cannot read the variables file (--var-file) /nonexistent/x.vfvars"]),
        cli("--var-file that is a directory", &["plan", "{ok}", "--var-file", "{empty}"], &["is a directory, not a variables file (--var-file)"]),
        cli("--var-file with a syntax error", &["plan", "{ok}", "--var-file", "{vars}/syntax.vfvars"], &["syntax error", "syntax.vfvars:1:5"]),
        cli("--var-file with a block", &["plan", "{ok}", "--var-file", "{vars}/block.vfvars"], &["a variables file holds only `name = value` lines", "block.vfvars:1:1"]),
        cli("--var-file of binary garbage", &["plan", "{ok}", "--var-file", "{vars}/binary.vfvars"], &["is not UTF-8 text", "binary.vfvars:1:"]),
        cli("--var-file with a value of the wrong type", &["plan", "{ok}", "--var-file", "{vars}/type.vfvars"], &["invalid value for variable `n`", "type.vfvars:1:5"]),
        cli("--var-file that is /dev/zero", &["plan", "{ok}", "--var-file", "/dev/zero"], &["/dev/zero is not a regular file"]),
        cli("--var-file with an empty name", &["plan", "{ok}", "--var-file", ""], &["--var-file"]),
        Cli2::env("environment variable of the wrong type", &["plan", "{ok}"], &[("VIRTFORM_VAR_n", "abc")], &["invalid value for variable `n`", "VIRTFORM_VAR_n"]),
        cli("missing configuration directory", &["plan", "/nonexistent/virtform-plan-dir"], &["cannot read the configuration directory /nonexistent/virtform-plan-dir"]),
        cli("configuration directory that is a file", &["plan", "{file}"], &["cannot read the configuration directory", "Not a directory"]),
        cli("apply of an empty directory", &["apply", "--auto-approve", "{empty}"], &["no configuration to apply in"]),
        cli("directory that is not UTF-8 and does not exist", &["plan", "/tmp/\\xff-vf-nonexistent"], &["cannot read the configuration directory"]),
        cli("output of a missing directory", &["output", "-C", "/nonexistent/vf-out"], &["cannot read the configuration directory /nonexistent/vf-out"]),
        cli("output that does not exist", &["output", "nope", "-C", "{ok}"], &["no output named \"nope\""]),
        cli("graph of a file", &["graph", "{file}"], &["cannot read the configuration directory"]),
        cli("fmt of a missing path", &["fmt", "/nonexistent/vf-fmt"], &["cannot read /nonexistent/vf-fmt"]),
        cli("parallelism 0", &["apply", "--auto-approve", "--parallelism", "0", "{ok}"], &["'0' for '--parallelism"]),
        cli("negative parallelism", &["apply", "--auto-approve", "--parallelism", "-1", "{ok}"], &["'-1'"]),
        cli("parallelism is a word", &["apply", "--auto-approve", "--parallelism", "many", "{ok}"], &["'many' for '--parallelism"]),
        cli("parallelism overflows", &["apply", "--auto-approve", "--parallelism", "99999999999999999999", "{ok}"], &["for '--parallelism"]),
        cli("shutdown timeout is a word", &["apply", "--auto-approve", "--shutdown-timeout", "soon", "{ok}"], &["'soon' for '--shutdown-timeout"]),
        cli("stack with a path", &["plan", "--stack", "../../etc", "{ok}"], &["stack name \"../../etc\" is not valid", "--stack"]),
        cli("empty stack", &["plan", "--stack", "", "{ok}"], &["stack name \"\" is not valid", "--stack"]),
        cli("stack with a space", &["plan", "--stack", "my stack", "{ok}"], &["stack name \"my stack\" is not valid", "--stack"]),
        cli("stack of 33 characters", &["plan", "--stack", "abcdefghijklmnopqrstuvwxyzabcdefg", "{ok}"], &["is not valid", "--stack"]),
        cli("stack that looks like a flag", &["plan", "--stack", "-x", "{ok}"], &["unexpected argument '-x'"]),
        cli("non-ASCII stack", &["plan", "--stack", "stäck", "{ok}"], &["stack name \"stäck\" is not valid"]),
        Cli2::env("stack from the environment with a path", &["plan", "{ok}"], &[("VIRTFORM_STACK", "../x")], &["stack name \"../x\" is not valid", "VIRTFORM_STACK"]),
        cli("destroy of a stack with a path", &["destroy", "--auto-approve", "--stack", "../x", "{empty}"], &["stack name \"../x\" is not valid"]),
        cli("show of a stack with a path", &["show", "--stack", "a/b"], &["stack name \"a/b\" is not valid"]),
        Cli2::env("empty state dir from the environment", &["plan", "{ok}"], &[("VIRTFORM_STATE_DIR", "")], &["--state-dir"]),
        cli("state dir that is a file", &["apply", "--auto-approve", "--state-dir", "{file}", "{ok}"], &["Not a directory", "vf-bad-file"]),
        cli("target that does not exist", &["plan", "--target", "network.nope", "{ok}"], &["--target network.nope: no such resource"]),
        cli("target that is not an address", &["plan", "--target", "network.", "{ok}"], &["--target network."]),
        cli("plan --out of a plan with errors", &["plan", "--target", "network.nope", "--out", "{state}/never.plan", "{ok}"], &["--target network.nope: no such resource", "no plan file written to"]),
        cli("replace of a missing resource", &["plan", "--replace", "instance.nope", "{ok}"], &["--replace instance.nope"]),
        cli("libvirt URI that is not one", &["plan", "--connect", "bogus:///nothing", "{ok}"], &["bogus:///nothing"]),
        cli("plan --out into a missing directory", &["plan", "--out", "/nonexistent/vf/p.plan", "{ok}"], &["cannot write the plan file /nonexistent/vf/p.plan"]),
        cli("plan --out onto a directory", &["plan", "--out", "{empty}", "{ok}"], &["cannot write the plan file"]),
        cli("completions for an unknown shell", &["completions", "nosh"], &["invalid value 'nosh'"]),
        cli("apply without confirmation and without a terminal", &["apply", "{ok}"], &["--auto-approve"]),
    ]
}

/// Constructors of cases with an environment.
struct Cli2;

impl Cli2 {
    const fn env(name: &'static str, args: &'static [&'static str], env: &'static [(&'static str, &'static str)], msg: &'static [&'static str]) -> CliCase {
        CliCase { name, args, env, msg }
    }
}

/// The valid configuration the command-line cases start from: a variable
/// of each kind and one bridge named after the process.
fn write_ok_config(dir: &Path) -> String {
    let bridge = format!("vfbc{}", pid());
    fs::write(
        dir.join("main.vf.hcl"),
        format!("variable \"n\" {{\n  type    = number\n  default = 1\n}}\n\nvariable \"l\" {{\n  type    = list(number)\n  default = []\n}}\n\nnetwork \"lan\" {{\n  bridge = \"{bridge}\"\n}}\n\noutput \"n\" {{\n  value = var.n\n}}\n"),
    )
    .unwrap();
    bridge
}

fn run_cli_case(case: &CliCase, dirs: &CliDirs) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let stack = format!("vfbad-cli-{}", pid());
    let mut args: Vec<std::ffi::OsString> = vec!["--no-color".into()];
    let global_state = !case.args.contains(&"--state-dir");
    if global_state {
        args.push("--state-dir".into());
        args.push(dirs.state.path().into());
    }
    if !case.args.contains(&"--stack") && !case.env.iter().any(|(k, _)| *k == "VIRTFORM_STACK") && case.args.first() != Some(&"show") {
        args.push("--stack".into());
        args.push(stack.clone().into());
    }
    for a in case.args {
        let a = a
            .replace("{ok}", &dirs.ok.path().display().to_string())
            .replace("{state}", &dirs.state.path().display().to_string())
            .replace("{file}", &dirs.file.display().to_string())
            .replace("{empty}", &dirs.empty.path().display().to_string())
            .replace("{vars}", &dirs.vars.path().display().to_string());
        let bytes = a.replace("\\xff", "\u{0}").into_bytes().into_iter().map(|b| if b == 0 { 0xff } else { b }).collect::<Vec<u8>>();
        args.push(std::ffi::OsStr::from_bytes(&bytes).to_os_string());
    }
    let mut cmd = vf_command();
    cmd.args(&args);
    for (k, v) in case.env {
        cmd.env(k, v);
    }
    let shown: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let out = run_with(cmd, format!("virtform {}", shown.join(" ")), VF_TIMEOUT);
    check_exit_1(case.name, &out)?;
    // Errors the planner finds (--target, --replace) are part of the plan text on stdout.
    let all = out.all();
    for m in case.msg {
        if !all.contains(m) {
            return Err(format!("{}: the error lacks {m:?}:\n{}", case.name, out.show()));
        }
    }
    if !all.contains("error") {
        return Err(format!("{}: no error message:\n{}", case.name, out.show()));
    }
    Ok(())
}

struct CliDirs {
    ok: tempfile::TempDir,
    state: tempfile::TempDir,
    empty: tempfile::TempDir,
    vars: tempfile::TempDir,
    file: PathBuf,
    _scratch: tempfile::TempDir,
}

#[test]
fn command_line() {
    preflight(false);
    let scratch = tempdir("vf-bad-cli-");
    let file = scratch.path().join("vf-bad-file");
    fs::write(&file, "not a directory\n").unwrap();
    let dirs = CliDirs { ok: tempdir("vf-bad-cli-ok-"), state: tempdir("vf-bad-cli-state-"), empty: tempdir("vf-bad-cli-empty-"), vars: tempdir("vf-bad-cli-vars-"), file, _scratch: scratch };
    let bridge = write_ok_config(dirs.ok.path());
    fs::write(dirs.vars.path().join("syntax.vfvars"), "n = = 2\n").unwrap();
    fs::write(dirs.vars.path().join("block.vfvars"), "network \"x\" {}\n").unwrap();
    fs::write(dirs.vars.path().join("binary.vfvars"), [0xffu8, 0xfe, 0, 1, 2]).unwrap();
    fs::write(dirs.vars.path().join("type.vfvars"), "n = \"many\"\n").unwrap();
    let cases = cli_cases();
    let before = Inventory::take(dirs.state.path());
    let failures = in_parallel(&cases, |c| run_cli_case(c, &dirs));
    let after = Inventory::take(dirs.state.path());
    let mut failures = failures;
    if let Err(e) = assert_unchanged("command-line cases", &before, &after, &[&format!("vfbad-cli-{}", pid()), &bridge]) {
        failures.push(e);
    }
    report("command line", cases.len(), failures);
}

// ---------------------------------------------------------------------------
// Saved plan files
// ---------------------------------------------------------------------------

/// What a case does to a fresh plan file (its text and JSON) before applying it.
enum PlanEdit {
    /// Replaces the file with these bytes.
    Bytes(Vec<u8>),
    /// Transforms the text.
    Text(fn(&str) -> String),
    /// Transforms the JSON.
    Json(fn(&mut serde_json::Value)),
    /// Leaves the file as it is (the case changes the command line or the host).
    Keep,
    /// Replaces the file with a directory.
    Dir,
}

struct PlanCase {
    name: &'static str,
    edit: PlanEdit,
    /// The command and extra arguments (the file is appended): `apply` or `destroy`.
    cmd: &'static [&'static str],
    /// Change the host between `plan --out` and the apply (the stale case).
    touch_host: bool,
    msg: &'static str,
}

fn pc(name: &'static str, edit: PlanEdit, msg: &'static str) -> PlanCase {
    PlanCase { name, edit, cmd: &["apply", "--auto-approve"], touch_host: false, msg }
}

fn plan_cases() -> Vec<PlanCase> {
    vec![
        pc("corrupt JSON", PlanEdit::Text(|t| t.replacen("\"stack\"", "\"stack\" ::", 1)), "is not a virtform plan file"),
        pc("truncated", PlanEdit::Text(|t| t[..t.len() / 2].to_string()), "is not a virtform plan file"),
        pc("truncated by one byte", PlanEdit::Text(|t| t.trim_end()[..t.trim_end().len() - 1].to_string()), "is not a virtform plan file"),
        pc("empty", PlanEdit::Bytes(Vec::new()), "is empty"),
        pc("only whitespace", PlanEdit::Bytes(b"\n \n\t\n".to_vec()), "is empty"),
        pc("binary garbage", PlanEdit::Bytes((0..=255u8).collect()), "is not a virtform plan file"),
        pc("JSON that is not an object", PlanEdit::Bytes(b"[1, 2, 3]".to_vec()), "has no `format_version`"),
        pc("JSON nested too deeply", PlanEdit::Bytes(format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes()), "is not a virtform plan file"),
        pc("a plan of terraform", PlanEdit::Bytes(br#"{"format_version": "1.2", "terraform_version": "1.9.0", "planned_values": {}}"#.to_vec()), "has plan file format \"1.2\""),
        pc("format_version newer than supported", PlanEdit::Json(|v| v["format_version"] = "2".into()), "has plan file format \"2\""),
        pc("format_version is a number", PlanEdit::Json(|v| v["format_version"] = 1.into()), "has no `format_version`"),
        pc("a required field missing", PlanEdit::Json(|v| {
            v.as_object_mut().unwrap().remove("fingerprint");
        }), "missing field `fingerprint`"),
        pc("a field of the wrong type", PlanEdit::Json(|v| v["destroy"] = "yes".into()), "is not a virtform plan file"),
        pc("stack edited into a path", PlanEdit::Json(|v| v["stack"] = "../../../tmp/vf-escape".into()), "stack name \"../../../tmp/vf-escape\" is not valid"),
        pc("stack edited to another stack", PlanEdit::Json(|v| v["stack"] = "someone-else".into()), "its plan is not for its stack \"someone-else\""),
        pc("an action added by hand", PlanEdit::Json(|v| {
            let rc = v["plan"]["resource_changes"].as_array_mut().unwrap();
            let mut extra = rc[0].clone();
            extra["address"] = "network.extra".into();
            rc.push(extra);
        }), "is not what virtform plans now"),
        pc("an action changed by hand", PlanEdit::Json(|v| v["plan"]["resource_changes"][0]["change"]["actions"] = serde_json::json!(["delete"])), "is not what virtform plans now"),
        pc("the fingerprint edited", PlanEdit::Json(|v| v["fingerprint"] = "0".repeat(64).into()), "the host changed since this plan was made"),
        pc("a variable added by hand", PlanEdit::Json(|v| v["vars"] = serde_json::json!(["nope=1"])), "undeclared variable `nope`"),
        pc("the directory edited to a missing one", PlanEdit::Json(|v| v["dir"] = "/nonexistent/vf-plan-dir".into()), "cannot read the configuration directory /nonexistent/vf-plan-dir"),
        pc("a directory instead of a file", PlanEdit::Dir, "no configuration"),
        PlanCase { name: "stale after a host change", edit: PlanEdit::Keep, cmd: &["apply", "--auto-approve"], touch_host: true, msg: "the host changed since this plan was made" },
        PlanCase { name: "applied for another stack", edit: PlanEdit::Keep, cmd: &["--stack", "another-stack", "apply", "--auto-approve"], touch_host: false, msg: "is a plan for stack" },
        PlanCase { name: "applied with --var", edit: PlanEdit::Keep, cmd: &["--var", "n=2", "apply", "--auto-approve"], touch_host: false, msg: "--var cannot be used with a saved plan" },
        PlanCase { name: "applied with --target", edit: PlanEdit::Keep, cmd: &["apply", "--auto-approve", "--target", "network.lan"], touch_host: false, msg: "--target cannot be used with a saved plan" },
        PlanCase { name: "a create plan given to destroy", edit: PlanEdit::Keep, cmd: &["destroy", "--auto-approve"], touch_host: false, msg: "is not a destroy plan" },
    ]
}

struct PlanFixture {
    cfg: tempfile::TempDir,
    state: tempfile::TempDir,
    stack: String,
    bridge: String,
}

impl PlanFixture {
    fn new() -> PlanFixture {
        let cfg = tempdir("vf-bad-plan-cfg-");
        let bridge = format!("vfbp{}", pid());
        fs::write(
            cfg.path().join("main.vf.hcl"),
            format!("variable \"n\" {{\n  default = 1\n}}\n\nnetwork \"lan\" {{\n  bridge  = \"{bridge}\"\n  address = \"10.251.{}.1/24\"\n}}\n", pid() % 250),
        )
        .unwrap();
        PlanFixture { cfg, state: tempdir("vf-bad-plan-state-"), stack: format!("vfbad-plan-{}", pid()), bridge }
    }

    /// `plan --out FILE` of the unchanged host.
    fn plan_out(&self, file: &Path) -> Result<String, String> {
        let out = vf(&["--no-color", "--state-dir", &self.state.path().display().to_string(), "--stack", &self.stack, "plan", "--out", &file.display().to_string(), &self.cfg.path().display().to_string()]);
        if !out.ok() {
            return Err(format!("plan --out failed:\n{}", out.show()));
        }
        fs::read_to_string(file).map_err(|e| format!("plan --out wrote nothing: {e}"))
    }
}

fn run_plan_case(case: &PlanCase, fx: &PlanFixture, scratch: &Path) -> Result<(), String> {
    let name = case.name;
    let file = scratch.join(format!("{}.plan", name.replace(' ', "-")));
    // The fingerprint covers the whole host (every link and domain, see the
    // report): another process changing anything in between shows as "the
    // host changed". Try again with a fresh plan.
    const ATTEMPTS: usize = 8;
    for attempt in 0..ATTEMPTS {
        let _ = fs::remove_file(&file);
        let _ = fs::remove_dir(&file);
        let text = fx.plan_out(&file).map_err(|e| format!("{name}: {e}"))?;
        match &case.edit {
            PlanEdit::Bytes(b) => fs::write(&file, b).unwrap(),
            PlanEdit::Text(f) => fs::write(&file, f(&text)).unwrap(),
            PlanEdit::Json(f) => {
                let mut v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{name}: plan --out wrote no JSON: {e}"))?;
                f(&mut v);
                fs::write(&file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
            }
            PlanEdit::Keep => {}
            PlanEdit::Dir => {
                fs::remove_file(&file).unwrap();
                fs::create_dir(&file).unwrap();
            }
        }
        // A host change the plan depends on: a link with the name it wants.
        let dummy = fx.bridge.clone();
        if case.touch_host {
            run("ip", &["link", "add", "name", &dummy, "type", "bridge"]).must();
        }
        let before = Inventory::take(fx.state.path());
        let mut args: Vec<String> = vec!["--no-color".into()];
        args.extend(case.cmd.iter().map(|s| s.to_string()));
        args.push(file.display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = vf(&args);
        let after = Inventory::take(fx.state.path());
        if case.touch_host {
            run("ip", &["link", "del", "dev", &dummy]).must();
        }
        let raced = !case.touch_host && case.msg != "the host changed since this plan was made" && out.stderr.contains("the host changed since this plan was made");
        if raced && attempt + 1 < ATTEMPTS {
            eprintln!("[{name}] the host changed under the test (another process); again");
            continue;
        }
        check_exit_1(name, &out)?;
        if !out.stderr.contains(case.msg) {
            return Err(format!("{name}: the error lacks {:?}:\n{}", case.msg, out.show()));
        }
        if !out.stderr.contains(&file.display().to_string()) {
            return Err(format!("{name}: the error does not name the plan file {}:\n{}", file.display(), out.show()));
        }
        if !out.stderr.contains("nothing was changed") {
            return Err(format!("{name}: does not say that nothing was changed:\n{}", out.show()));
        }
        assert_unchanged(name, &before, &after, &[&fx.stack, &fx.bridge, &dummy])?;
        if std::path::Path::new("/tmp/vf-escape").exists() {
            return Err(format!("{name}: /tmp/vf-escape was created outside the state dir"));
        }
        return Ok(());
    }
    unreachable!()
}

#[test]
fn saved_plan_files() {
    preflight(false);
    let _quiet = host_changes();
    let fx = PlanFixture::new();
    let mut guard = HostGuard::default();
    guard.links = vec![fx.bridge.clone(), format!("vfbx{}", pid())];
    guard.stacks = vec![(fx.stack.clone(), fx.state.path().to_path_buf(), fx.cfg.path().to_path_buf())];
    let scratch = tempdir("vf-bad-plans-");
    let cases = plan_cases();
    // One at a time: the stale case changes the host, which every other case's fingerprint sees.
    let mut failures = Vec::new();
    for c in &cases {
        if let Err(e) = run_plan_case(c, &fx, scratch.path()) {
            failures.push(e);
        }
    }
    report("saved plan file", cases.len(), failures);
}

// ---------------------------------------------------------------------------
// Host surprises: objects with the names the configuration wants
// ---------------------------------------------------------------------------

struct HostCase {
    name: &'static str,
    /// Sets the surprise up (given the bridge and domain names, the stack
    /// and the test's scratch directory); the case's guard removes it.
    setup: fn(&HostNames, &Path),
    /// The address and object the conflict must name (None: not a
    /// conflict but an error naming `object`).
    address: Option<&'static str>,
    object: fn(&HostNames) -> String,
    /// Words the error must contain, besides the object.
    msg: &'static str,
    /// Also `plan` must exit 1 (false when only apply meets the surprise).
    plan_fails: bool,
}

struct HostNames {
    bridge: String,
    domain: String,
    stack: String,
    state: PathBuf,
}

fn marker(stack: &str, address: &str) -> String {
    format!("<vf:instance xmlns:vf=\"https://virtform.dev/xmlns/virtform/1\" stack=\"{stack}\" address=\"{address}\" spec-hash=\"0000000000000000\"/>")
}

fn add_bridge(name: &str, alias: Option<&str>) {
    run("ip", &["link", "add", "name", name, "type", "bridge"]).must();
    if let Some(a) = alias {
        run("ip", &["link", "set", "dev", name, "alias", a]).must();
    }
}

fn host_cases() -> Vec<HostCase> {
    vec![
        HostCase {
            name: "an unmanaged Linux bridge with the wanted name",
            setup: |n, _| {
                add_bridge(&n.bridge, None);
            },
            address: Some("network.lan"),
            object: |n| n.bridge.clone(),
            msg: "conflict",
            plan_fails: true,
        },
        HostCase {
            name: "a veth (not a bridge) with the wanted name",
            setup: |n, _| {
                run("ip", &["link", "add", "name", &n.bridge, "type", "veth", "peer", "name", &format!("{}p", n.bridge)]).must();
            },
            address: Some("network.lan"),
            object: |n| n.bridge.clone(),
            msg: "conflict",
            plan_fails: true,
        },
        HostCase {
            name: "a bridge of another stack with the wanted name",
            setup: |n, _| {
                add_bridge(&n.bridge, Some(&format!("virtform:other-{}:network.lan", pid())));
            },
            address: Some("network.lan"),
            object: |n| n.bridge.clone(),
            msg: "conflict",
            plan_fails: true,
        },
        HostCase {
            name: "a bridge of this stack for another address",
            setup: |n, _| {
                add_bridge(&n.bridge, Some(&format!("virtform:{}:network.other", n.stack)));
            },
            address: Some("network.lan"),
            object: |n| n.bridge.clone(),
            msg: "conflict",
            plan_fails: true,
        },
        HostCase {
            name: "a domain with the wanted name and no marker",
            setup: |n, dir| {
                define_domain(&n.domain, None, dir).must();
            },
            address: Some("instance.vm"),
            object: |n| n.domain.clone(),
            msg: "conflict",
            plan_fails: true,
        },
        HostCase {
            name: "a domain of another stack with the wanted name",
            setup: |n, dir| {
                define_domain(&n.domain, Some(&marker(&format!("other-{}", pid()), "instance.vm")), dir).must();
            },
            address: Some("instance.vm"),
            object: |n| n.domain.clone(),
            msg: "conflict",
            plan_fails: true,
        },
        HostCase {
            name: "a domain of this stack for another address with the wanted name",
            setup: |n, dir| {
                define_domain(&n.domain, Some(&marker(&n.stack, "instance.other")), dir).must();
            },
            address: Some("instance.vm"),
            object: |n| n.domain.clone(),
            msg: "conflict",
            plan_fails: true,
        },
        HostCase {
            name: "the stack's directory is a file",
            setup: |n, _| {
                fs::write(n.state.join(&n.stack), "not a directory\n").unwrap();
            },
            address: None,
            object: |n| n.state.join(&n.stack).display().to_string(),
            msg: "not a directory",
            plan_fails: false,
        },
        HostCase {
            name: "the stack's lock is a directory",
            setup: |n, _| {
                fs::create_dir_all(n.state.join(&n.stack).join(".lock")).unwrap();
            },
            address: None,
            object: |n| n.state.join(&n.stack).join(".lock").display().to_string(),
            msg: "cannot open the stack lock",
            plan_fails: false,
        },
        HostCase {
            name: "the stack's disks directory is a file",
            setup: |n, _| {
                fs::create_dir_all(n.state.join(&n.stack)).unwrap();
                fs::write(n.state.join(&n.stack).join("disks"), "not a directory\n").unwrap();
            },
            address: None,
            object: |n| n.state.join(&n.stack).join("disks").display().to_string(),
            msg: "Not a directory",
            plan_fails: true,
        },
    ]
}

fn run_host_case(i: usize, case: &HostCase) -> Result<(), String> {
    let name = case.name;
    let cfg = tempdir("vf-bad-host-cfg-");
    let state = tempdir("vf-bad-host-state-");
    let scratch = tempdir("vf-bad-host-scratch-");
    // Every name carries the case's token "-h<i>-<pid>": cases run in parallel
    // and each inventory check looks only at its own case's objects.
    let token = format!("-h{i}-{}", pid());
    let names = HostNames { bridge: format!("vf{token}"), domain: format!("vfbad{token}"), stack: format!("vfbad{token}"), state: state.path().to_path_buf() };
    let assets = assets_dir();
    fs::write(
        cfg.path().join("main.vf.hcl"),
        format!(
            "network \"lan\" {{\n  bridge  = \"{}\"\n  address = \"10.252.{}.1/24\"\n}}\n\nport \"eth0\" {{\n  network = network.lan\n}}\n\ninstance \"vm\" {{\n  name    = \"{}\"\n  memory  = \"64M\"\n  kernel  = \"{}\"\n  initrd  = \"{}\"\n  ports   = [port.eth0]\n  state   = \"shutoff\"\n}}\n",
            names.bridge,
            pid() % 250,
            names.domain,
            assets.join("vmlinuz").display(),
            assets.join("initrd.gz").display()
        ),
    )
    .unwrap();
    let mut guard = HostGuard::default();
    guard.links = vec![names.bridge.clone(), format!("{}p", names.bridge)];
    guard.domains = vec![names.domain.clone()];
    (case.setup)(&names, scratch.path());
    let object = (case.object)(&names);
    let vfa = |args: &[&str]| {
        let mut a: Vec<String> = vec!["--no-color".into(), "--state-dir".into(), state.path().display().to_string(), "--stack".into(), names.stack.clone()];
        a.extend(args.iter().map(|s| s.to_string()));
        a.push(cfg.path().display().to_string());
        vf(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let tokens = [token.as_str()];
    let before = Inventory::take(state.path());

    let plan = vfa(&["plan", "--detailed-exitcode"]);
    if case.plan_fails {
        check_exit_1(&format!("{name} (plan)"), &plan)?;
        let all = plan.all();
        let named = match case.address {
            Some(addr) => all.lines().any(|l| l.contains(case.msg) && l.contains(addr) && l.contains(&object)),
            None => all.contains(case.msg) && all.contains(&object),
        };
        if !named {
            return Err(format!("{name}: plan does not report {:?} naming {:?} and {object}:\n{}", case.msg, case.address, plan.show()));
        }
        if let Some(addr) = case.address {
            let json = vfa(&["plan", "--json"]);
            check_exit_1(&format!("{name} (plan --json)"), &json)?;
            let v: serde_json::Value = serde_json::from_str(&json.stdout).map_err(|e| format!("{name}: plan --json is not JSON ({e}):\n{}", json.show()))?;
            let listed = v["conflicts"].as_array().is_some_and(|a| a.iter().any(|c| c["address"] == addr));
            if !listed {
                return Err(format!("{name}: plan --json lists no conflict for {addr}:\n{}", json.show()));
            }
        }
    }
    let apply = vfa(&["apply", "--auto-approve"]);
    check_exit_1(&format!("{name} (apply)"), &apply)?;
    if !apply.all().contains(&object) {
        return Err(format!("{name}: apply does not name {object}:\n{}", apply.show()));
    }
    if case.address.is_some() && !apply.stderr.contains("nothing was changed") {
        return Err(format!("{name}: apply does not say that nothing was changed:\n{}", apply.show()));
    }
    let after = Inventory::take(state.path());
    assert_unchanged(name, &before, &after, &tokens)?;
    let problems = guard.cleanup();
    if !problems.is_empty() {
        return Err(format!("{name}: {}", problems.join("\n")));
    }
    Ok(())
}

#[test]
fn host_surprises() {
    preflight(true);
    let _quiet = host_changes();
    let cases = host_cases();
    let indexed: Vec<(usize, &HostCase)> = cases.iter().enumerate().collect();
    let failures = in_parallel(&indexed, |(i, c)| run_host_case(*i, c));
    report("host surprise", cases.len(), failures);
}
