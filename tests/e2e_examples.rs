//! The examples work as written (real host): `examples/ci-fleet/ci-job` (the
//! README's "Using virtform in CI" pipeline) with 3 VMs, and the
//! `nova-hybrid`, `nat`, `libvirt-default` and `debian` (the real cloud
//! image, reached over SSH) examples applied, checked and destroyed.
//!
//! Each run uses its own state directory (`VIRTFORM_STATE_DIR`); the
//! examples' own names (stacks, bridges, subnets) are used as written, so no
//! other test may use them. Without root, libvirtd, OVS and the guest assets
//! the tests FAIL, they never skip.

mod support;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn bin_dir() -> String {
    Path::new(env!("CARGO_BIN_EXE_virtform")).parent().expect("bin dir").display().to_string()
}

fn virtform(state: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_virtform"));
    cmd.args(["--no-color", "--state-dir"]).arg(state).args(args).env("NO_COLOR", "1").env_remove("VIRTFORM_STACK");
    Running::spawn(cmd, format!("virtform {}", args.join(" "))).wait(Duration::from_secs(400))
}

#[test]
fn ci_job_script_provisions_tests_and_tears_down() {
    preflight();
    let state = tempdir("vf-ex-ci-state-");
    let out_dir = tempdir("vf-ex-ci-out-");
    let job = format!("{}", 90_000 + std::process::id() % 9_000);
    let stack = format!("ci-{job}");
    assert!(leaks_of_stack(&stack).is_empty());
    let mut cmd = Command::new(format!("{}/ci-job", example("ci-fleet")));
    cmd.env("CI_JOB_ID", &job)
        .env("CI_OUTPUT_DIR", out_dir.path())
        .env("VIRTFORM_STATE_DIR", state.path())
        .env("PATH", format!("{}:{}", bin_dir(), std::env::var("PATH").unwrap_or_default()));
    let out = Running::spawn(cmd, format!("CI_JOB_ID={job} examples/ci-fleet/ci-job")).wait(Duration::from_secs(400));
    let leaks = leaks_of_stack(&stack);
    assert!(out.ok(), "the CI job failed:\n{}", out.show());
    assert_eq!(out.stdout.matches("virtform-tiny").count(), 3, "not every runner answered:\n{}", out.show());
    let ips: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.path().join(format!("ips-{job}.json"))).expect("ips file")).expect("ips json");
    assert_eq!(ips.as_object().map(|m| m.len()), Some(3), "{ips}");
    let apply = std::fs::read_to_string(out_dir.path().join(format!("apply-{job}.jsonl"))).expect("apply log");
    let summary = apply.lines().last().unwrap_or_default();
    assert!(summary.contains("\"event\":\"summary\"") && summary.contains("\"ok\":true"), "{summary}");
    assert!(leaks.is_empty(), "the job's teardown left: {leaks:?}");
}

#[test]
fn nova_hybrid_and_nat_examples_work_as_written() {
    preflight();
    for (name, check_ip) in [("nova-hybrid", "10.99.0.11"), ("nat", "10.98.0.10")] {
        let state = tempdir(&format!("vf-ex-{name}-state-"));
        let dir = example(name);
        let out = virtform(state.path(), &["apply", "--auto-approve", &dir]);
        let ping = run("ping", &["-c", "2", "-W", "3", check_ip]);
        let log = std::fs::read_to_string(state.path().join("nova/console/vm@a.log")).unwrap_or_default();
        let destroy = virtform(state.path(), &["destroy", "--auto-approve", &dir]);
        assert!(out.ok(), "{name}: apply failed:\n{}", out.show());
        assert!(ping.ok(), "{name}: the host cannot reach {check_ip}:\n{}", ping.show());
        if name == "nova-hybrid" {
            assert!(has_line(&log, "VF-PING 10.99.0.12 ok"), "vm a did not reach vm b:\n{log}");
        }
        assert!(destroy.ok(), "{name}: destroy failed:\n{}", destroy.show());
        let stack = if name == "nat" { "natdemo" } else { "nova" };
        assert!(leaks_of_stack(stack).is_empty(), "{name}: left {:?}", leaks_of_stack(stack));
    }
}

/// `examples/libvirt-default`: a guest leased an address by libvirt's own
/// `default` network (made active for the test, and returned as found).
#[test]
fn libvirt_default_example_works_as_written() {
    preflight();
    let _default = DefaultNetwork::ensure();
    let state = tempdir("vf-ex-default-state-");
    let dir = example("libvirt-default");
    let out = virtform(state.path(), &["apply", "--auto-approve", &dir]);
    let ip = virtform(state.path(), &["output", "ip", "-C", &dir]);
    let net = virtform(state.path(), &["output", "--json", "network", "-C", &dir]);
    let destroy = virtform(state.path(), &["destroy", "--auto-approve", &dir]);
    assert!(out.ok(), "apply failed:\n{}", out.show());
    let ip = ip.stdout.trim().trim_matches('"').to_string();
    assert!(ip.starts_with("192.168.122."), "not a lease of the default network: {ip:?}\n{}", out.show());
    let net: serde_json::Value = serde_json::from_str(&net.stdout).unwrap_or_default();
    assert_eq!(net["subnet"], "192.168.122.0/24", "{net}");
    assert_eq!(net["gateway"], "192.168.122.1", "{net}");
    assert!(destroy.ok(), "destroy failed:\n{}", destroy.show());
    assert!(virsh(&["net-info", "default"]).ok(), "destroy removed the default network");
    assert!(leaks_of_stack("defaultnet").is_empty(), "left {:?}", leaks_of_stack("defaultnet"));
}

/// `examples/debian`: the real cloud image, as the README shows it: a key
/// made with ssh-keygen next to the configuration, apply (waits for SSH and
/// cloud-init), then `virtform ssh instance.vm -- cloud-init status`.
#[test]
fn debian_example_works_as_written() {
    preflight();
    let image = assets_dir().join("debian-12-cloud.qcow2");
    assert!(image.is_file(), "the cloud image {} is missing: run scripts/build-cloud-image (scripts/test does)", image.display());
    assert!(leaks_of_stack("debian").is_empty(), "objects of stack debian exist already: {:?}", leaks_of_stack("debian"));
    let state = tempdir("vf-ex-debian-state-");
    // A copy, so the key the README has the user make lands beside it.
    let dir = tempdir("vf-ex-debian-cfg-");
    std::fs::copy(format!("{}/main.vf.hcl", example("debian")), dir.path().join("main.vf.hcl")).expect("copy the example");
    let key = dir.path().join("id_ed25519").display().to_string();
    run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", &key]).must();
    let d = dir.path().display().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_virtform"));
    cmd.args(["--no-color", "--state-dir"]).arg(state.path()).args(["apply", "--auto-approve", &d]).env("NO_COLOR", "1").env_remove("VIRTFORM_STACK");
    let out = Running::spawn(cmd, "virtform apply examples/debian".into()).wait(Duration::from_secs(900));
    let status = virtform(state.path(), &["ssh", "instance.vm", "-C", &d, "--", "cloud-init", "status"]);
    let motd = virtform(state.path(), &["ssh", "instance.vm", "-C", &d, "--", "cat", "/etc/motd"]);
    let destroy = virtform(state.path(), &["destroy", "--auto-approve", &d]);
    assert!(out.ok(), "apply failed:\n{}", out.show());
    assert!(status.ok() && status.stdout.contains("status: done"), "{}", status.show());
    assert!(motd.stdout.contains("Provisioned by virtform."), "{}", motd.show());
    assert!(destroy.ok(), "destroy failed:\n{}", destroy.show());
    assert!(leaks_of_stack("debian").is_empty(), "left {:?}", leaks_of_stack("debian"));
}
