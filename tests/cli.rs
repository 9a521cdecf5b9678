//! The command line, end to end through the binary: validate, graph, fmt,
//! completions, man page; exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_virtform"));
    c.env("NO_COLOR", "1").env_remove("VIRTFORM_STACK");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run virtform")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The examples' root configurations: each directory of `examples/`, and
/// for a repository-shaped one (`examples/modules`) each of its `envs/`.
fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    for p in subdirs(&root().join("examples")) {
        if p.join("envs").is_dir() { v.extend(subdirs(&p.join("envs"))) } else { v.push(p) }
    }
    v.sort();
    v
}

/// The examples' module directories (`examples/modules/modules/*`).
fn example_modules() -> Vec<PathBuf> {
    subdirs(&root().join("examples")).into_iter().filter(|p| p.join("modules").is_dir()).flat_map(|p| subdirs(&p.join("modules"))).collect()
}

fn subdirs(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    v.sort();
    v
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_example_validates() {
    let ex = examples();
    assert!(ex.len() >= 3, "expected at least three examples");
    for dir in ex {
        // An example that logs in over SSH reads a key the user makes
        // (its README says how): validate a copy with one beside it.
        let tmp = tempfile::tempdir().unwrap();
        let dir = if dir.join(".gitignore").is_file() && std::fs::read_to_string(dir.join(".gitignore")).unwrap().contains("id_ed25519") {
            for e in std::fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
            }
            let key = tmp.path().join("id_ed25519");
            let st = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).status().expect("ssh-keygen (openssh-client)");
            assert!(st.success());
            tmp.path().to_path_buf()
        } else {
            dir
        };
        let out = run(&["validate", dir.to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}{}", dir.display(), text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).starts_with("Success!"), "{}", text(&out.stdout));
    }
}

#[test]
fn every_example_is_formatted() {
    assert!(!example_modules().is_empty());
    for dir in examples().into_iter().chain(example_modules()) {
        let out = run(&["fmt", "--check", dir.to_str().unwrap()]);
        assert!(out.status.success(), "{} is not formatted:\n{}{}", dir.display(), text(&out.stdout), text(&out.stderr));
    }
}

#[test]
fn graph_of_the_quickstart() {
    let out = run(&["graph", root().join("examples/quickstart").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    insta::assert_snapshot!("graph_quickstart", text(&out.stdout));
}

#[test]
fn graph_of_the_nova_pair() {
    let out = run(&["graph", root().join("examples/nova-hybrid").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dot = text(&out.stdout);
    for edge in [
        "\"instance.vm\" -> \"disk.root\"",
        "\"instance.vm\" -> \"port.vif\"",
        "\"port.vif\" -> \"network.int\"",
        "\"disk.root\" -> \"image.tiny\"",
    ] {
        assert!(dot.contains(edge), "missing {edge} in\n{dot}");
    }
    assert_eq!(dot.matches("->").count(), 4, "{dot}");
}

#[test]
fn validate_reports_location_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.vf.hcl"), "network \"lan\" {\n  mtu = \"big\"\n}\n").unwrap();
    let out = run(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("main.vf.hcl:2:9"), "{err}");
    assert!(err.contains("2 |   mtu = \"big\""), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
}

#[test]
fn validate_json_has_ranges() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.vf.hcl"), "netwrk \"lan\" {}\n").unwrap();
    let out = run(&["validate", "--json", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["valid"], false);
    assert_eq!(v["error_count"], 1);
    let d = &v["diagnostics"][0];
    assert_eq!(d["range"]["start"]["line"], 1);
    assert_eq!(d["range"]["start"]["column"], 1);
    assert!(d["summary"].as_str().unwrap().contains("unknown block type"));

    let ok = run(&["validate", "--json", root().join("examples/quickstart").to_str().unwrap()]);
    assert!(ok.status.success());
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["resource_count"], 5);
}

#[test]
fn variables_from_flags_files_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.vf.hcl"),
        "variable \"n\" {\n  type = number\n}\nnetwork \"lan\" {\n  count = var.n\n}\noutput \"n\" {\n  value = length(network.lan)\n}\n",
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    // Missing value: error naming the variable.
    let out = run(&["validate", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("variable `n` has no value"));
    // Environment.
    let out = bin().args(["validate", d]).env("VIRTFORM_VAR_n", "3").output().unwrap();
    assert!(text(&out.stdout).contains("3 resource(s)"), "{}{}", text(&out.stdout), text(&out.stderr));
    // auto.vfvars beats the environment; --var beats both.
    std::fs::write(dir.path().join("x.auto.vfvars"), "n = 2\n").unwrap();
    let out = bin().args(["validate", d]).env("VIRTFORM_VAR_n", "3").output().unwrap();
    assert!(text(&out.stdout).contains("2 resource(s)"), "{}", text(&out.stdout));
    let out = bin().args(["validate", d, "--var", "n=4"]).env("VIRTFORM_VAR_n", "3").output().unwrap();
    assert!(text(&out.stdout).contains("4 resource(s)"), "{}", text(&out.stdout));
    // --var-file beats auto files.
    let vf = dir.path().join("more.vars");
    std::fs::write(&vf, "n = 5\n").unwrap();
    let out = run(&["validate", d, "--var-file", vf.to_str().unwrap()]);
    assert!(text(&out.stdout).contains("5 resource(s)"), "{}", text(&out.stdout));
}

#[test]
fn fmt_check_diff_and_write_keep_comments() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("main.vf.hcl");
    let messy = "# top comment\nnetwork \"lan\" {\n      type = \"bridge\" # the kind\n  address    =   \"10.77.0.1/24\"\n  // another comment\n}\n";
    std::fs::write(&f, messy).unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(&["fmt", "--check", "--diff", d]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("main.vf.hcl"));
    assert!(text(&out.stdout).contains("+  type    = \"bridge\" # the kind"), "{}", text(&out.stdout));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), messy, "--check must not write");
    let out = run(&["fmt", d]);
    assert!(out.status.success());
    let formatted = std::fs::read_to_string(&f).unwrap();
    for c in ["# top comment", "# the kind", "// another comment"] {
        assert!(formatted.contains(c), "lost {c:?}:\n{formatted}");
    }
    assert!(run(&["fmt", "--check", d]).status.success());
    assert!(run(&["validate", d]).status.success());
}

#[test]
fn fmt_reports_syntax_errors_with_location() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.vf.hcl"), "network \"lan\" {\n  mtu = = 1\n}\n").unwrap();
    let out = run(&["fmt", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("main.vf.hcl:2:"), "{}", text(&out.stderr));
}

#[test]
fn completions_and_man_page() {
    let out = run(&["completions", "bash"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("virtform"));
    let out = run(&["man"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(".TH virtform"), "{}", text(&out.stdout));
}

#[test]
fn bad_command_lines_exit_1() {
    let out = run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unrecognized subcommand"));
}

#[test]
fn missing_directory_is_a_clear_error() {
    let out = run(&["validate", "/nonexistent/virtform-dir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read the configuration directory"), "{}", text(&out.stderr));
    let empty = tempfile::tempdir().unwrap();
    let out = run(&["validate", empty.path().to_str().unwrap()]);
    assert!(text(&out.stderr).contains("no configuration files"), "{}", text(&out.stderr));
}

#[test]
fn sensitive_values_are_not_printed_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.vf.hcl"), "variable \"token\" {\n  type = number\n  sensitive = true\n}\n").unwrap();
    let out = run(&["validate", dir.path().to_str().unwrap(), "--var", "token=hunter2-secret"]);
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("invalid value for variable `token`"), "{all}");
    assert!(!all.contains("hunter2"), "the secret leaked: {all}");
}

#[test]
fn help_and_version_exit_0() {
    assert_eq!(run(&["--help"]).status.code(), Some(0));
    assert_eq!(run(&["--version"]).status.code(), Some(0));
    assert_eq!(run(&["validate", "--frob"]).status.code(), Some(1));
}

/// `virtform … | head`: a closed stdout ends the process quietly with 141
/// (128 + SIGPIPE, what a filter killed by SIGPIPE reports), without a
/// panic message. SIGPIPE itself stays ignored (libvirt needs that: see
/// src/main.rs), so both the explicit writers (man) and println! (graph,
/// validate) are covered.
#[test]
fn closed_stdout_ends_quietly() {
    let quick = root().join("examples/quickstart");
    for args in [vec!["man"], vec!["graph", quick.to_str().unwrap()], vec!["validate", "--json", quick.to_str().unwrap()]] {
        // A pipe whose read end is closed before the child starts.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = bin().args(&args).stdout(writer).stderr(std::process::Stdio::piped()).output().expect("run");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {:?}\n{err}", out.status);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Logs (-vv) on a stderr that is not a terminal carry no escape codes,
/// with or without NO_COLOR/--no-color (they once always did).
#[test]
fn logs_are_plain_text_off_a_terminal() {
    let dir = root().join("examples/quickstart");
    for no_color_env in [true, false] {
        let mut c = bin();
        if !no_color_env {
            c.env_remove("NO_COLOR");
        }
        let out = c.args(["--connect", "test:///default", "-vv", "plan", dir.to_str().unwrap()]).output().expect("run virtform");
        let err = text(&out.stderr);
        assert!(err.contains("DEBUG"), "expected debug logs: {err}");
        assert!(!err.contains('\u{1b}'), "escape codes in logs (NO_COLOR set: {no_color_env}): {err:?}");
    }
}

/// `virtform import ADDRESS ID`: bad arguments are refused before the host
/// is read (no libvirt needed), and an import block validates and formats.
#[test]
fn import_command_refuses_bad_arguments_and_import_blocks_validate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.vf.hcl"), "instance \"legacy\" {\n  name   = \"legacy-vm\"\n  kernel = \"/k\"\n}\nimport {\n  to = instance.legacy\n  id = \"legacy-vm\"\n}\n").unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(&["validate", d]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let out = run(&["fmt", "--check", d]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    for (args, want) in [
        (vec!["import", "instance.legacy", " ", d], "the id is empty"),
        (vec!["import", "data.network.lan", "br0", d], "is not the address of a resource"),
        (vec!["import", "legacy", "legacy-vm", d], "is not the address of a resource"),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stderr).contains(want), "{args:?}: {}", text(&out.stderr));
    }
    let out = run(&["import", "--help"]);
    assert!(text(&out.stdout).contains("ADDRESS") && text(&out.stdout).contains("<ID>"), "{}", text(&out.stdout));
}

/// `virtform cache list|prune` against a temporary state dir: an image one
/// stack's overlay is made on (qemu-img), one nobody uses. The unused one
/// goes, only on a real prune; the used one survives every prune.
#[test]
fn cache_list_and_prune_keep_images_in_use() {
    use virtform::host::cache::human_bytes;
    let t = tempfile::tempdir().unwrap();
    let st = t.path();
    let images = st.join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(st.join("web/disks")).unwrap();
    let used = "1".repeat(64);
    let unused = "2".repeat(64);
    let qemu_img = |args: &[&str]| {
        let o = Command::new("qemu-img").args(args).output().expect("qemu-img (package qemu-utils)");
        assert!(o.status.success(), "qemu-img: {}", text(&o.stderr));
    };
    qemu_img(&["create", "-q", "-f", "qcow2", images.join(&used).to_str().unwrap(), "32M"]);
    std::fs::write(images.join(&unused), vec![0x5a; 1 << 20]).unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", images.join(&used).to_str().unwrap(), "-F", "qcow2", st.join("web/disks/root@1.qcow2").to_str().unwrap()]);
    use std::os::unix::fs::MetadataExt;
    let on_disk = |sha: &str| std::fs::metadata(images.join(sha)).unwrap().blocks() * 512;
    let (u, n) = (on_disk(&used), on_disk(&unused));
    let sd = st.to_str().unwrap();
    let vf = |args: &[&str]| -> String {
        let mut full = vec!["--state-dir", sd, "cache"];
        full.extend_from_slice(args);
        let out = run(&full);
        assert!(out.status.success(), "virtform {}: {}{}", full.join(" "), text(&out.stdout), text(&out.stderr));
        assert_eq!(text(&out.stderr), "", "stderr of virtform {}", full.join(" "));
        text(&out.stdout)
    };

    let list = vf(&["list"]);
    let row = |sha: &str, bytes: u64, fmt: &str, by: &str| format!("  {sha}  {:>9}  {fmt:<6}  {by}\n", human_bytes(bytes));
    let want = format!(
        "Image cache {}:\n\n  {:<64}  {:>9}  {:<6}  USED BY\n{}{}\n2 images, {}; 1 unused, {} (`virtform cache prune` removes unused images).\n",
        images.display(), "SHA256", "ON DISK", "FORMAT",
        row(&used, u, "qcow2", "web"), row(&unused, n, "raw", "(unused)"),
        human_bytes(u + n), human_bytes(n)
    );
    assert_eq!(list, want);

    let json: serde_json::Value = serde_json::from_str(&vf(&["list", "--json"])).unwrap();
    let imgs = json["images"].as_array().unwrap();
    assert_eq!(imgs.len(), 2);
    assert_eq!(imgs[0]["sha256"], used.as_str());
    assert_eq!(imgs[0]["used_by"], serde_json::json!(["web"]));
    assert_eq!(imgs[0]["virtual_size"], 32 << 20);
    assert_eq!(imgs[1]["used_by"], serde_json::json!([]));
    assert_eq!(imgs[1]["bytes_on_disk"], n);
    assert_eq!(json["unused_bytes_on_disk"], n);

    let in_use = format!("In use and kept: 1 image, {} (stacks web).\n", human_bytes(u));
    let dry = vf(&["prune", "--dry-run"]);
    assert_eq!(dry, format!("Would remove {unused}: {}\nWould free {}; nothing was removed (--dry-run).\n{in_use}", human_bytes(n), human_bytes(n)));
    assert!(images.join(&unused).exists(), "--dry-run removed the image");

    let pruned = vf(&["prune"]);
    assert_eq!(pruned, format!("Removed {unused}: {}\nFreed {}.\n{in_use}", human_bytes(n), human_bytes(n)));
    assert!(!images.join(&unused).exists(), "the unused image is still there");
    assert!(images.join(&used).exists(), "prune removed an image in use");

    assert_eq!(vf(&["prune"]), format!("Nothing to prune: every cached image is used by a stack on this host.\n{in_use}"));
    let json: serde_json::Value = serde_json::from_str(&vf(&["prune", "--dry-run", "--json"])).unwrap();
    assert_eq!(json["removed"], serde_json::json!([]));
    assert_eq!(json["freed"], 0);

    // a stack destroyed since: its image is unused now, and goes
    std::fs::remove_dir_all(st.join("web")).unwrap();
    assert_eq!(vf(&["prune"]), format!("Removed {used}: {}\nFreed {}.\n", human_bytes(u), human_bytes(u)));
    assert_eq!(vf(&["list"]), format!("The image cache ({}) is empty.\n", images.display()));
}

/// `virtform ssh` and `virtform console` refuse what they cannot do with
/// an error saying why (libvirt's in-process test driver stands in for the
/// host: it has none of these domains).
#[test]
fn ssh_and_console_say_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.vf.hcl"), "virtform { stack = \"clitest\" }\ninstance \"vm\" {\n  kernel = \"/k\"\n}\ninstance \"web\" {\n  kernel = \"/k\"\n}\n").unwrap();
    let d = dir.path().to_str().unwrap();
    let s = state.path().to_str().unwrap();
    let vf = |args: &[&str]| {
        let mut full = vec!["--connect", "test:///default", "--state-dir", s];
        full.extend_from_slice(args);
        let o = run(&full);
        (o.status.code(), text(&o.stderr), text(&o.stdout))
    };
    let cases: [(&[&str], &str); 5] = [
        (&["ssh", "instance.nope", "-C", d], "there is no instance.nope in the configuration"),
        (&["ssh", "network.lan", "-C", d], "is not the address of an instance"),
        (&["ssh", "instance.vm", "-C", d, "--", "true"], "has no `connection` block"),
        (&["console", "instance.nope", "-C", d], "its instances: instance.vm, instance.web"),
        (&["console", "instance.vm", "-C", d], "domain clitest-vm does not exist on this host and has no console log"),
    ];
    for (args, want) in cases {
        let (code, err, _) = vf(args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // The log of the last boot is shown when the domain is not running.
    let console = state.path().join("clitest/console");
    std::fs::create_dir_all(&console).unwrap();
    std::fs::write(console.join("vm.log"), "boot line 1\nlogin: ").unwrap();
    let (code, err, out) = vf(&["console", "instance.vm", "-C", d]);
    assert_eq!((code, out.as_str()), (Some(0), "boot line 1\nlogin: "), "{err}");
}

/// The import registry as the commands see it: entries whose object is
/// gone, of addresses no longer configured, are forgotten by an apply
/// (nothing on the host is touched); a damaged registry stops the plan
/// with its path (ownership is never forgotten silently).
#[test]
fn stale_import_registry_entries_are_forgotten_and_a_damaged_registry_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.vf.hcl"), "virtform { stack = \"clireg\" }\n").unwrap();
    let d = dir.path().to_str().unwrap();
    let s = state.path().to_str().unwrap();
    let vf = |args: &[&str]| {
        let mut full = vec!["--connect", "test:///default", "--state-dir", s];
        full.extend_from_slice(args);
        full.push(d);
        let o = run(&full);
        (o.status.code(), text(&o.stderr), text(&o.stdout))
    };
    let reg = state.path().join("clireg/imports.json");
    std::fs::create_dir_all(reg.parent().unwrap()).unwrap();
    let gone = state.path().join("nowhere.qcow2");
    std::fs::write(&reg, format!("{{\"format_version\":1,\"objects\":{{\"disk.old\":{{\"kind\":\"file\",\"path\":{:?},\"dev\":1,\"ino\":2}},\"network.old\":{{\"kind\":\"libvirt_network\",\"name\":\"vfimp-gone\",\"uuid\":\"5c0ffee0-0000-4000-8000-000000000001\"}}}}}}", gone.display().to_string())).unwrap();
    let (code, err, out) = vf(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(0), "{err}{out}");
    assert!(reg.exists(), "a plan changed the registry");
    let (code, err, out) = vf(&["apply", "--auto-approve"]);
    assert_eq!(code, Some(0), "{err}{out}");
    assert!(!reg.exists(), "the stale entries were not forgotten: {:?}", std::fs::read_to_string(&reg));
    std::fs::write(&reg, "{not json").unwrap();
    let (code, err, _) = vf(&["plan"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a virtform import registry") && err.contains(&reg.display().to_string()), "{err}");
}
