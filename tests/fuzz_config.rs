//! Issue 6, item 7: a fuzz test of configuration loading and evaluation.
//!
//! Inputs: the examples and a few seed configurations, mutated (byte flips,
//! token deletions and duplications, splices between seeds, line swaps,
//! interesting fragments) or with attribute values replaced by random
//! expressions from a small grammar (literals at the edges, references,
//! every function with 0 to 3 arguments, operators, conditionals, `for`,
//! splats, templates). Each input is written as `main.vf.hcl` and loaded
//! with `virtform::config::load`, on a thread with the binary's main-thread
//! stack (8 MiB), under `catch_unwind`.
//!
//! Fails on any panic, and on an error diagnostic without a location (every
//! input comes from a file, so every error must point into it). Every input
//! the formatter accepts is formatted: no panic, idempotent, and a
//! configuration that loads still loads after formatting.
//!
//! Bounded by time: `VIRTFORM_FUZZ_SECS` (default 20). Seeded:
//! `VIRTFORM_FUZZ_SEED` (default fixed, so runs are reproducible). The input
//! being tried is always on disk (printed at the start): after a crash that
//! `catch_unwind` cannot stop (a stack overflow aborts), it is the culprit.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use virtform::config::{self, LoadOptions};

/// xorshift64*: small, fast, seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const SEEDS: &[&str] = &[
    r#"variable "n" {
  type    = number
  default = 2
  validation {
    condition     = var.n < 10
    error_message = "too many"
  }
}

variable "names" {
  type    = list(string)
  default = ["a", "b"]
}

variable "secret" {
  default   = "hunter2"
  sensitive = true
}

locals {
  subnet = "10.70.0.0/24"
  tags   = { for i, n in var.names : n => i }
  joined = join(",", [for n in var.names : upper(n)])
  maybe  = var.n > 1 ? "many" : "one"
  tpl    = "host-%{ for n in var.names }${n}-%{ endfor }end"
  nums   = [for i in range(var.n) : cidrhost(local.subnet, 10 + i)]
}

network "lan" {
  bridge  = "vffz0"
  address = "${cidrhost(local.subnet, 1)}/24"
  mtu     = 1500
}

image "base" {
  source = "/var/lib/virtform/assets/tiny.qcow2"
}

disk "root" {
  count = var.n
  image = image.base
  size  = "1G"
}

port "p" {
  count   = var.n
  network = network.lan
  ip      = local.nums[count.index]
}

instance "vm" {
  count   = var.n
  vcpus   = 1
  memory  = "256M"
  disks   = [disk.root[count.index]]
  ports   = [port.p[count.index]]
  cmdline = "console=ttyS0 secret=${var.secret}"
  kernel  = "/boot/vmlinuz"
  wait_for {
    console = "login:"
    timeout = "60s"
  }
  lifecycle {
    ignore_changes = [memory]
  }
}

output "ips" {
  value = port.p[*].ip
}

output "secret" {
  value     = var.secret
  sensitive = true
}
"#,
    r#"locals {
  m = merge({ a = 1 }, { b = "x" })
  k = keys(local.m)
  v = values(local.m)
  l = lookup(local.m, "a", 0)
  c = coalesce(null, "", "z")
  s = split("/", "a/b/c")
  f = format("%s-%03d", "x", 7)
  e = element(local.s, 5)
  j = jsonencode({ x = [1, 2, { y = null }] })
  y = yamlencode({ x = [1, 2] })
  b = base64decode(base64encode("hi"))
  t = try(local.m.nope, "fallback")
  n = can(tonumber("x")) ? 1 : 2
  z = zipmap(["a", "b"], [1, 2])
  r = reverse(sort(["b", "a"]))
  d = distinct(flatten([[1], [1, 2]]))
  p = pow(2, 10) + abs(-3) * ceil(1.5) / floor(2.5) % 3
  q = substr("hello", 1, 3)
  w = replace("a-b-c", "-", "_")
  x = cidrsubnet("10.0.0.0/8", 8, 2)
  h = sha256("x")
}
"#,
    r#"network "ovs" {
  type          = "ovs"
  bridge        = "vf-ovs0"
  datapath_type = "netdev"
}

network "nat" {
  type    = "nat"
  address = "10.90.0.1/24"
  dhcp {
    start = "10.90.0.100"
    end   = "10.90.0.200"
  }
}

port "h" {
  for_each = toset(["a", "b"])
  network  = network.ovs
  plug     = "ovs_hybrid"
  mtu      = 1450
}

volume "data" {
  size   = "64M"
  serial = "data-1"
}

disk "swap" {
  size = "128M"
  kind = "swap"
}

instance "x" {
  for_each = port.h
  kernel   = "/boot/vmlinuz"
  ports    = [each.value]
  cpu {
    mode  = "custom"
    model = "qemu64"
  }
  depends_on = [network.nat]
}
"#,
];

/// Fragments that parsers and evaluators trip on.
const FRAGMENTS: &[&str] = &[
    "${", "%{", "}", "{", "[", "]", "(", ")", "\"", "\\", "\\u0000", "\\U0010FFFF", "<<EOT\n", "<<-EOT\n", "EOT\n", "\n", "=", "==", "=>", "...", "?", ":", ",", ".",
    "[*]", ".*", "#", "//", "/*", "*/", "1e309", "-0", "0x10", "99999999999999999999999", "1.5", "null", "true", "count.index", "each.key", "each.value",
    "var.n", "local.m", "network.lan", "network.lan.bridge", "port.p[0].ip", "disk.root[*].path", "virtform.stack", "path.module", "for x in", "if", "endif", "endfor",
    "\u{0}", "\u{feff}", "é", "🦀", "\t", "\r\n", "count", "for_each", "depends_on", "lifecycle", "dynamic", "provider",
];

const FUNCTIONS: &[&str] = &[
    "abs", "alltrue", "anytrue", "base64decode", "base64encode", "base64sha256", "basename", "ceil", "chunklist", "cidrhost", "cidrnetmask", "cidrsubnet", "cidrsubnets", "coalesce",
    "coalescelist", "compact", "concat", "contains", "dirname", "distinct", "element", "endswith", "fileexists", "flatten", "floor", "format", "formatlist", "index", "join", "jsondecode",
    "jsonencode", "keys", "length", "lookup", "lower", "max", "merge", "min", "one", "parseint", "pathexpand", "pow", "range", "replace", "reverse", "setintersection", "setsubtract",
    "setunion", "sha256", "signum", "slice", "sort", "split", "startswith", "strrev", "substr", "sum", "title", "tobool", "tolist", "tomap", "tonumber", "toset", "tostring", "trim",
    "trimprefix", "trimspace", "trimsuffix", "upper", "values", "yamldecode", "yamlencode", "zipmap", "try", "can", "nosuchfunction",
];

/// A random expression of at most `depth` levels.
fn expr(rng: &mut Rng, depth: u32) -> String {
    let leaf = depth == 0 || rng.chance(30);
    if leaf {
        return match rng.below(12) {
            0 => rng.pick(&["0", "1", "-1", "1.5", "1e308", "-1e308", "9007199254740993", "100000", "100001", "0.1", "65536", "4294967296"]).to_string(),
            1 => rng.pick(&["\"\"", "\"x\"", "\"10.0.0.0/8\"", "\"512M\"", "\"1.5G\"", "\"-1G\"", "\"52:54:00:00:00:01\"", "\"a b\"", "\"../x\"", "\"${1}\"", "\"%{ if true }y%{ endif }\"", "\"\\u0000\""]).to_string(),
            2 => rng.pick(&["true", "false", "null"]).to_string(),
            3 => rng.pick(&["var.n", "var.names", "var.secret", "var.nope", "local.subnet", "local.tags", "local.m", "local.nope"]).to_string(),
            4 => rng.pick(&["network.lan", "network.lan.bridge", "network.lan.nope", "port.p", "port.p[0]", "port.p[0].ip", "port.p[*].mac", "disk.root[1].path", "disk.root[9]", "image.base.source", "instance.vm[0].name"]).to_string(),
            5 => rng.pick(&["count.index", "each.key", "each.value", "virtform.stack", "path.module", "path.cwd", "self"]).to_string(),
            6 => "[]".to_string(),
            7 => "{}".to_string(),
            _ => format!("\"{}\"", rng.pick(&["a", "vf", "%s", "$${x}", "<x>", "&", "]]>"])),
        };
    }
    let d = depth - 1;
    match rng.below(11) {
        0 | 1 => {
            let f = rng.pick(FUNCTIONS);
            let n = rng.below(4);
            let args: Vec<String> = (0..n).map(|_| expr(rng, d)).collect();
            format!("{f}({})", args.join(", "))
        }
        2 => {
            let n = rng.below(4);
            format!("[{}]", (0..n).map(|_| expr(rng, d)).collect::<Vec<_>>().join(", "))
        }
        3 => {
            let n = rng.below(3);
            format!("{{ {} }}", (0..n).map(|i| format!("k{i} = {}", expr(rng, d))).collect::<Vec<_>>().join(", "))
        }
        4 => format!("{} {} {}", expr(rng, d), rng.pick(&["+", "-", "*", "/", "%", "==", "!=", "<", ">=", "&&", "||"]), expr(rng, d)),
        5 => format!("{} ? {} : {}", expr(rng, d), expr(rng, d), expr(rng, d)),
        6 => format!("[for x in {} : {}]", expr(rng, d), if rng.chance(50) { "x".to_string() } else { expr(rng, d) }),
        7 => format!("{{ for k, v in {} : k => v }}", expr(rng, d)),
        8 => format!("{}[{}]", expr(rng, d), expr(rng, d)),
        9 => format!("\"pre-${{{}}}-post\"", expr(rng, d)),
        _ => format!("{}{}", rng.pick(&["-", "!"]), expr(rng, d)),
    }
}

/// Splits text into tokens (runs of word characters, single others), keeping everything.
fn tokens(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_word: Option<bool> = None;
    for (i, c) in s.char_indices() {
        let word = c.is_alphanumeric() || c == '_';
        if i > start && !(word && prev_word == Some(true)) {
            out.push(&s[start..i]);
            start = i;
        }
        prev_word = Some(word);
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

fn mutate(rng: &mut Rng, corpus: &[String]) -> Vec<u8> {
    let base = rng.pick(corpus).clone();
    let rounds = 1 + rng.below(3);
    let mut text = base;
    let mut bytes: Option<Vec<u8>> = None;
    for _ in 0..rounds {
        match rng.below(9) {
            0 => {
                // Byte flips (may leave UTF-8).
                let mut b = bytes.take().unwrap_or_else(|| text.clone().into_bytes());
                for _ in 0..1 + rng.below(4) {
                    if b.is_empty() {
                        break;
                    }
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
                match String::from_utf8(b) {
                    Ok(t) => text = t,
                    Err(e) => bytes = Some(e.into_bytes()),
                }
            }
            1 | 2 => {
                // Delete or duplicate a run of tokens.
                let t = tokens(&text);
                if t.is_empty() {
                    continue;
                }
                let i = rng.below(t.len());
                let n = 1 + rng.below(3).min(t.len() - i - 1);
                let mut out: Vec<&str> = t[..i].to_vec();
                if rng.chance(50) {
                    out.extend_from_slice(&t[i..i + n]);
                    out.extend_from_slice(&t[i..i + n]);
                }
                out.extend_from_slice(&t[i + n..]);
                text = out.concat();
            }
            3 => {
                // Splice a chunk of another input in.
                let other = rng.pick(corpus);
                let ot = tokens(other);
                let t = tokens(&text);
                if ot.is_empty() || t.is_empty() {
                    continue;
                }
                let a = rng.below(ot.len());
                let b = (a + 1 + rng.below(40)).min(ot.len());
                let at = rng.below(t.len());
                text = format!("{}{}{}", t[..at].concat(), ot[a..b].concat(), t[at..].concat());
            }
            4..=6 => {
                // Replace the value of an attribute with a random expression.
                let lines: Vec<&str> = text.lines().collect();
                let candidates: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| l.contains(" = ") && !l.trim_end().ends_with('{')).map(|(i, _)| i).collect();
                if candidates.is_empty() {
                    continue;
                }
                let i = *rng.pick(&candidates);
                let (lhs, _) = lines[i].split_once(" = ").unwrap_or((lines[i], ""));
                let depth = 1 + rng.below(4) as u32;
                let e = expr(rng, depth);
                let mut out: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
                out[i] = format!("{lhs} = {e}");
                text = out.join("\n") + "\n";
            }
            7 => {
                // Insert an interesting fragment.
                let t = tokens(&text);
                let at = rng.below(t.len() + 1);
                text = format!("{}{}{}", t[..at.min(t.len())].concat(), rng.pick(FRAGMENTS), t[at.min(t.len())..].concat());
            }
            _ => {
                // Swap two lines.
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.len() > 1 {
                    let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                    lines.swap(a, b);
                    text = lines.join("\n") + "\n";
                }
            }
        }
    }
    bytes.unwrap_or_else(|| text.into_bytes())
}

fn corpus() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut c: Vec<String> = SEEDS.iter().map(|s| s.to_string()).collect();
    let mut dirs: Vec<PathBuf> = fs::read_dir(root.join("examples")).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    dirs.sort();
    for d in dirs {
        for f in config::config_files(&d).unwrap_or_default() {
            if let Ok(t) = fs::read_to_string(&f) {
                c.push(t);
            }
        }
    }
    assert!(c.len() >= 6, "the corpus is too small ({} inputs): examples missing?", c.len());
    c
}

#[derive(Default)]
struct Stats {
    tried: u64,
    loaded: u64,
    rejected: u64,
    formatted: u64,
    load_time: Duration,
    fmt_time: Duration,
}

/// Loads one input; a problem, if any.
fn try_input(dir: &Path, bytes: &[u8], stats: &mut Stats) -> Option<String> {
    fs::write(dir.join("main.vf.hcl"), bytes).expect("write the input");
    let opts = LoadOptions { dir: dir.to_path_buf(), state_dir: "/var/lib/virtform-fuzz".into(), ..Default::default() };
    stats.tried += 1;
    let t0 = Instant::now();
    let loaded = std::panic::catch_unwind(|| config::load(&opts));
    stats.load_time += t0.elapsed();
    let loaded = match loaded {
        Ok(r) => r,
        Err(p) => return Some(format!("config::load panicked: {}", panic_text(&p))),
    };
    let ok = match &loaded {
        Ok(_) => {
            stats.loaded += 1;
            true
        }
        Err(e) => {
            stats.rejected += 1;
            for d in e.diags.0.iter().filter(|d| d.severity == config::diag::Severity::Error) {
                if d.span.is_none() {
                    return Some(format!("an error without a location: {}", d.message));
                }
            }
            // Rendering must not panic either (spans into odd text).
            if let Err(p) = std::panic::catch_unwind(|| e.render(true)) {
                return Some(format!("rendering the diagnostics panicked: {}", panic_text(&p)));
            }
            false
        }
    };
    let Ok(text) = std::str::from_utf8(bytes) else { return None };
    let t0 = Instant::now();
    let formatted = std::panic::catch_unwind(|| config::fmt::format_source(text));
    stats.fmt_time += t0.elapsed();
    let formatted = match formatted {
        Ok(Ok(f)) => f,
        Ok(Err(_)) => return None,
        Err(p) => return Some(format!("fmt panicked: {}", panic_text(&p))),
    };
    stats.formatted += 1;
    match std::panic::catch_unwind(|| config::fmt::format_source(&formatted)) {
        Ok(Ok(again)) if again == formatted => {}
        Ok(Ok(again)) => return Some(format!("fmt is not idempotent:\n--- once ---\n{formatted}\n--- twice ---\n{again}")),
        Ok(Err(e)) => return Some(format!("fmt produced text it cannot parse ({}:{}: {}):\n{formatted}", e.line, e.column, e.message)),
        Err(p) => return Some(format!("fmt of formatted text panicked: {}", panic_text(&p))),
    }
    if ok {
        fs::write(dir.join("main.vf.hcl"), &formatted).expect("write the formatted input");
        match std::panic::catch_unwind(|| config::load(&opts)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Some(format!("the configuration loads, but not after fmt:\n{}\n--- formatted ---\n{formatted}", e.render(false))),
            Err(p) => return Some(format!("config::load of the formatted text panicked: {}", panic_text(&p))),
        }
        fs::write(dir.join("main.vf.hcl"), bytes).expect("write the input back");
    }
    None
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "(no message)".into())
}

#[test]
fn fuzz_configuration_loading() {
    let secs: u64 = std::env::var("VIRTFORM_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("VIRTFORM_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x005e_ed0f_c0ff_ee00);
    // The input under test lives here, so a crash leaves it behind.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-config-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    eprintln!("[fuzz] seed {seed}, {secs} s; the current input is {}", dir.join("main.vf.hcl").display());
    let corpus = corpus();
    // Quiet panics: they are caught and reported with their input.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let d = dir.clone();
    // The binary's main thread has 8 MiB of stack; test threads only 2 MiB.
    let result = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || {
            let mut rng = Rng(seed | 1);
            let mut stats = Stats::default();
            let mut failures: Vec<(Vec<u8>, String)> = Vec::new();
            let started = Instant::now();
            // Every seed as is, first.
            let mut queue: Vec<Vec<u8>> = corpus.iter().map(|c| c.clone().into_bytes()).collect();
            while started.elapsed() < Duration::from_secs(secs) && failures.len() < 10 {
                let input = queue.pop().unwrap_or_else(|| mutate(&mut rng, &corpus));
                if let Some(problem) = try_input(&d, &input, &mut stats) {
                    failures.push((input, problem));
                }
            }
            (stats, failures, started.elapsed())
        })
        .expect("spawn the fuzz thread")
        .join();
    std::panic::set_hook(hook);
    let (stats, failures, elapsed) = result.expect("the fuzz thread died");
    eprintln!(
        "[fuzz] {} inputs in {:.1} s ({:.0}/s): {} loaded, {} rejected with located errors, {} formatted idempotently",
        stats.tried,
        elapsed.as_secs_f64(),
        stats.tried as f64 / elapsed.as_secs_f64(),
        stats.loaded,
        stats.rejected,
        stats.formatted
    );
    eprintln!("[fuzz] time in config::load {:.1} s, in fmt {:.1} s", stats.load_time.as_secs_f64(), stats.fmt_time.as_secs_f64());
    let mut report = Vec::new();
    for (i, (input, problem)) in failures.iter().enumerate() {
        let saved = dir.join(format!("failure-{i}.vf.hcl"));
        let _ = fs::write(&saved, input);
        report.push(format!("{problem}\n  input saved as {}:\n{}", saved.display(), String::from_utf8_lossy(input)));
    }
    if failures.is_empty() {
        let _ = fs::remove_dir_all(&dir);
    }
    assert!(failures.is_empty(), "{} fuzz failures:\n\n{}", failures.len(), report.join("\n\n"));
    assert!(stats.tried > 100, "only {} inputs tried", stats.tried);
}
