//! Issue 6, fault 1: crash anywhere. An apply of a topology with more than
//! 25 steps (a NAT network, an OVS bridge, hybrid-plugged and NAT ports,
//! disks, volumes, running instances) is killed with SIGKILL after step k,
//! for every k; then `plan` must succeed without conflicts (it describes our
//! own half-made objects as work to do, never as foreign), `apply` must
//! converge, the next plan must be empty, and the host must hold exactly the
//! desired objects. The same for `destroy` killed after every step: the next
//! plan succeeds, destroy converges, nothing of the stack is left (domain,
//! link, OVS port or bridge, libvirt network, file, `.part` file).
//!
//! The kill is driven from outside: the test reads `apply --json` progress
//! lines and kills the process (by its own PID) after the k-th finished step.
//! Figures (steps, kills, convergences, leaks) are printed for RELIABILITY.md.

mod support;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;
use support::*;

fn pid() -> u32 {
    std::process::id()
}

fn conf(ovs_bridge: &str, nat_bridge: &str, net: &str, ovs_net: &str) -> String {
    format!(
        r#"
variable "assets" {{ type = string }}

network "nat" {{
  type    = "nat"
  bridge  = "{nat_bridge}"
  address = "{net}.1/24"
}}

network "int" {{
  type          = "ovs"
  bridge        = "{ovs_bridge}"
  datapath_type = "netdev"
  address       = "{ovs_net}.1/24"
}}

image "tiny" {{ source = "${{var.assets}}/tiny.qcow2" }}

locals {{
  hybrid = toset(["h0", "h1", "h2"])
  nat    = toset(["n0", "n1"])
  all    = setunion(local.hybrid, local.nat)
}}

disk "root" {{
  for_each = local.all
  image    = image.tiny
}}

volume "data" {{
  for_each = local.all
  size     = "16M"
}}

port "hyb" {{
  for_each = local.hybrid
  network  = network.int
  plug     = "ovs_hybrid"
}}

port "nat" {{
  for_each = local.nat
  network  = network.nat
  ip       = "{net}.${{10 + index(tolist(local.nat), each.key)}}"
}}

instance "vm" {{
  for_each = local.all
  memory   = "128M"
  kernel   = "${{var.assets}}/vmlinuz"
  initrd   = "${{var.assets}}/initrd.gz"
  cmdline  = "console=ttyS0"
  disks    = [disk.root[each.key]]
  volumes  = [volume.data[each.key]]
  ports    = contains(local.hybrid, each.key) ? [port.hyb[each.key]] : [port.nat[each.key]]
}}
"#
    )
}

/// Runs `virtform <args> --json`, killing it after `kill_after` finished steps.
/// Returns (finished steps seen, killed?).
fn run_killed(s: &VfStack, args: &[&str], kill_after: usize) -> (usize, bool) {
    let mut argv: Vec<String> = vec!["--no-color".into(), "--state-dir".into(), s.state.path().display().to_string(), "--stack".into(), s.stack.clone(), "--var".into(), format!("assets={}", assets_dir().display())];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv.push("--json".into());
    argv.push(s.cfg.path().display().to_string());
    let mut child = Command::new(env!("CARGO_BIN_EXE_virtform")).args(&argv).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn virtform");
    let out = child.stdout.take().expect("stdout");
    let mut finished = 0;
    let mut killed = false;
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        if line.contains("\"event\":\"finished\"") {
            finished += 1;
            if finished == kill_after {
                let _ = child.kill(); // SIGKILL, by this child's PID
                killed = true;
                break;
            }
        }
    }
    let _ = child.wait();
    (finished, killed)
}

/// What the stack holds on the host, as sorted "kind name" lines.
fn inventory(s: &VfStack) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let prefix = format!("{}-", s.stack);
    v.extend(domain_names().into_iter().filter(|d| d.starts_with(&prefix)).map(|d| format!("domain {d}")));
    let marker = format!("virtform:{}:", s.stack);
    v.extend(link_lines().iter().filter(|l| l.contains(&marker)).filter_map(|l| link_name(l).map(|n| format!("link {n}"))));
    v.extend(ovs_marked(&s.stack).into_iter().map(|l| format!("ovs {}", l.split(',').next().unwrap_or(""))));
    let np = format!("vf-{}-", s.stack);
    v.extend(libvirt_networks().into_iter().filter(|n| n.starts_with(&np)).map(|n| format!("network {n}")));
    v.extend(files_under(&s.state.path().join(&s.stack)).into_iter().map(|p| format!("file {}", p.strip_prefix(s.state.path()).unwrap_or(&p).display())));
    v.extend(files_under(&s.state.path().join("images")).into_iter().filter(|p| p.to_string_lossy().ends_with(".part")).map(|p| format!("part {}", p.display())));
    v.sort();
    v
}

/// After a kill: plan succeeds with no conflicts and no errors.
fn assert_plan_truthful(s: &VfStack, what: &str, destroy: bool) {
    let mut args = vec!["plan", "--json"];
    if destroy {
        args.push("--destroy");
    }
    let out = s.vf(&args);
    assert!(out.ok(), "{what}: plan failed after the kill:\n{}", out.show());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{what}: plan --json is not JSON ({e}):\n{}", out.stdout));
    let conflicts = v.get("conflicts").and_then(|c| c.as_array()).map(|a| a.len()).unwrap_or(0);
    assert_eq!(conflicts, 0, "{what}: the plan sees our own objects as conflicts:\n{}", out.stdout);
    let errors = v.get("errors").and_then(|c| c.as_array()).map(|a| a.len()).unwrap_or(0);
    assert_eq!(errors, 0, "{what}: the plan has errors:\n{}", out.stdout);
}

#[test]
fn killed_apply_and_destroy_converge_at_every_step() {
    let s = VfStack::new("killed_apply_and_destroy_converge_at_every_step", "crash");
    let ovs_bridge = format!("vfk{}", pid());
    let nat_bridge = format!("vfkn{}", pid());
    let net = format!("10.234.{}", pid() % 250);
    let ovs_net = format!("10.235.{}", pid() % 250);
    s.write(&conf(&ovs_bridge, &nat_bridge, &net, &ovs_net));
    let started = Instant::now();

    // The full apply: how many steps, and what the host holds when converged.
    let (steps, _) = run_killed(&s, &["apply", "--auto-approve"], usize::MAX);
    assert!(steps >= 25, "the topology has only {steps} steps");
    s.assert_plan_empty("after the full apply");
    let desired = inventory(&s);
    eprintln!("[crash] {steps} steps; converged host: {} objects", desired.len());
    let destroy = s.vf(&["destroy", "--auto-approve", "--shutdown-timeout", "3"]);
    assert!(destroy.ok(), "{}", destroy.show());
    assert!(inventory(&s).is_empty(), "destroy left: {:?}", inventory(&s));

    let (mut apply_kills, mut destroy_kills, mut destroy_steps) = (0, 0, 0);
    for k in 1..steps {
        // Apply killed after step k.
        let (_, killed) = run_killed(&s, &["apply", "--auto-approve"], k);
        assert!(killed, "apply finished before step {k}");
        apply_kills += 1;
        assert_plan_truthful(&s, &format!("apply killed after step {k}"), false);
        let out = s.vf(&["apply", "--auto-approve"]);
        assert!(out.ok(), "apply killed after step {k}: the next apply did not converge:\n{}", out.show());
        s.assert_plan_empty(&format!("apply killed after step {k}, then converged"));
        assert_eq!(inventory(&s), desired, "apply killed after step {k}: the converged host differs");

        // Destroy killed after step k (as far as destroy has steps).
        let (seen, killed) = run_killed(&s, &["destroy", "--auto-approve", "--shutdown-timeout", "3"], k);
        if !killed {
            destroy_steps = destroy_steps.max(seen);
        }
        if killed {
            destroy_kills += 1;
            assert_plan_truthful(&s, &format!("destroy killed after step {k}"), true);
        }
        let out = s.vf(&["destroy", "--auto-approve", "--shutdown-timeout", "3"]);
        assert!(out.ok(), "destroy killed after step {k}: the next destroy did not converge:\n{}", out.show());
        let left = inventory(&s);
        assert!(left.is_empty(), "destroy killed after step {k}: left {left:?}");
    }
    eprintln!(
        "[crash] RESULT: {steps}-step apply killed after each of steps 1..{} ({apply_kills} kills), {destroy_steps}-step destroy killed after each of its steps ({destroy_kills} kills); every plan after a kill succeeded without conflicts, every re-run converged, 0 objects leaked; {:.0}s",
        steps - 1,
        started.elapsed().as_secs_f64()
    );
}
