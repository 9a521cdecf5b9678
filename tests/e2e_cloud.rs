//! Real-host end-to-end tests of issue 15: a real Debian 12 cloud image
//! (scripts/build-cloud-image: GPT, GRUB for BIOS and UEFI, cloud-init,
//! OpenSSH) booted from its disk alone, under both firmwares, consuming
//! virtform's NoCloud seed, reached over SSH with the host key virtform
//! generated and pinned.
//!
//! What the guests must show: the hostname from meta-data, write_files and
//! runcmd from user-data, the fixed address, gateway and DNS of the
//! generated network-config (and DHCP on the port without an ip, on an
//! isolated network),
//! cloud-init done with no errors from the NoCloud datasource, the root
//! grown to the 4G overlay, the connection's key authorized, and only the
//! host key virtform gave them. Then: `virtform ssh` passes argv and exit
//! status through; a guest presenting another host key is refused; a wait
//! that times out leaves the instance, and the next apply waits again
//! without a restart; a restart and the destroy shut the guest down
//! gracefully well inside the timeout.
//!
//! Needs root, libvirtd, OVMF and the cloud image (scripts/test provides
//! them); without them the tests FAIL, never skip.

mod support;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::*;

fn cloud_image() -> PathBuf {
    let p = assets_dir().join("debian-12-cloud.qcow2");
    assert!(p.is_file(), "the cloud image {} is missing: run scripts/build-cloud-image (scripts/test does)", p.display());
    p
}

/// A /24 third octet no host interface uses in 10.OCTET2.X.0/24.
fn free_subnet(second: u32) -> u32 {
    let addrs = run("ip", &["-o", "-4", "addr", "show"]).must().stdout;
    let start = std::process::id() % 200 + 20;
    (0..200).map(|i| (start - 20 + i) % 200 + 20).find(|x| !addrs.contains(&format!(" 10.{second}.{x}."))).expect("no free /24")
}

fn keypair(dir: &std::path::Path) -> PathBuf {
    let key = dir.join("id_ed25519");
    run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-C", "e2e", "-f", &key.display().to_string()]).must();
    key
}

fn config(key: &std::path::Path, lan: u32, nat: u32, user: &str, timeout: &str, memory: &str) -> String {
    format!(
        r#"
variable "assets" {{}}

image "debian" {{
  source = "{image}"
}}

network "lan" {{
  bridge  = "vfcl{pid}"
  address = "10.151.{lan}.1/24"
  gateway = "10.151.{lan}.1"
  dns     = ["10.151.{lan}.53"]
}}

# A management segment without a router: the guests' default route is the
# lan's gateway, their second NIC asks this network's DHCP for an address.
network "nat" {{
  type    = "isolated"
  address = "10.152.{nat}.1/24"
}}

locals {{
  fw = {{ bios = 10, efi = 11 }}
}}

disk "root" {{
  for_each = local.fw
  image    = image.debian
  size     = "4G"
}}

port "eth0" {{
  for_each = local.fw
  network  = network.lan
  ip       = "10.151.{lan}.${{each.value}}"
}}

port "eth1" {{
  for_each = local.fw
  network  = network.nat
}}

instance "vm" {{
  for_each = local.fw
  firmware = each.key
  memory   = "{memory}"
  disks    = [disk.root[each.key]]
  ports    = [port.eth0[each.key], port.eth1[each.key]]
  cloud_init {{
    user_data = <<-EOT
    #cloud-config
    write_files:
      - path: /etc/vf-e2e
        content: "hello from virtform\n"
    runcmd:
      - [sh, -c, "echo ran > /var/tmp/vf-runcmd"]
    EOT
  }}
  connection {{
    user        = "{user}"
    private_key = file("{key}")
  }}
  wait_for {{
    ssh        = true
    cloud_init = true
    timeout    = "{timeout}"
  }}
}}

output "ips" {{
  value = {{ for k, p in port.eth0 : k => p.ip }}
}}
"#,
        image = cloud_image().display(),
        pid = std::process::id() % 100000,
        key = key.display(),
        lan = lan,
        nat = nat,
        user = user,
        timeout = timeout,
        memory = memory,
    )
}

fn ssh_ok(s: &VfStack, addr: &str, cmd: &[&str]) -> String {
    let out = s.ssh(addr, cmd);
    assert!(out.ok(), "virtform ssh {addr} -- {cmd:?} failed:\n{}", out.show());
    out.stdout
}

fn no_key_material(what: &str, text: &str) {
    assert!(!text.contains("PRIVATE KEY") && !text.contains("b3BlbnNzaC1rZXktdjE"), "{what} shows key material:\n{text}");
}

#[test]
fn real_image_boots_bios_and_efi_with_cloud_init_and_pinned_ssh() {
    let image = cloud_image();
    // Declared before the stack: dropped after its destroy, which loads the
    // configuration (and so reads the key).
    let keys = tempdir("vf-cloud-keys-");
    let s = VfStack::new("real_image_boots_bios_and_efi_with_cloud_init_and_pinned_ssh", "cloud");
    let key = keypair(keys.path());
    let (lan, nat) = (free_subnet(151), free_subnet(152));
    s.write(&config(&key, lan, nat, "debian", "900s", "1G"));

    let plan = s.vf(&["plan"]);
    assert!(plan.ok(), "plan failed:\n{}", plan.show());
    no_key_material("plan", &plan.all());

    let t0 = Instant::now();
    let out = s.vf_within(&["apply", "--auto-approve"], Duration::from_secs(1200));
    // On failure the guests' consoles say how far they got (the stack's
    // destroy removes the logs).
    let consoles = || {
        ["vm@bios.log", "vm@efi.log"]
            .iter()
            .map(|f| {
                let c = s.console(f);
                let lines: Vec<&str> = c.lines().collect();
                format!("--- console {f} (last 40 lines) ---\n{}\n", lines[lines.len().saturating_sub(40)..].join("\n"))
            })
            .collect::<String>()
    };
    assert!(out.ok() && out.stdout.contains("Apply complete"), "apply failed:\n{}\n{}", out.show(), consoles());
    eprintln!("[e2e] cloud: apply to SSH and cloud-init done (2 guests, BIOS + UEFI, TCG): {:.1}s", t0.elapsed().as_secs_f64());
    no_key_material("apply", &out.all());
    for step in ["wait for an SSH login as debian", "wait for cloud-init to finish"] {
        assert!(out.all().contains(step), "apply did not {step}:\n{}", out.show());
    }

    let state = s.state.path().join(&s.stack);
    let ssh_dir = state.join("ssh");
    let known_hosts = fs::read_to_string(ssh_dir.join("known_hosts")).expect("known_hosts of the stack");
    for (fw, last) in [("bios", 10), ("efi", 11)] {
        let addr = format!("instance.vm[\"{fw}\"]");
        let domain = format!("{}-vm-{fw}", s.stack);
        let ip = format!("10.151.{lan}.{last}");
        // The seed: NoCloud, meta-data's hostname, user-data's files and commands.
        assert_eq!(ssh_ok(&s, &addr, &["hostname"]).trim(), domain);
        assert_eq!(ssh_ok(&s, &addr, &["cat", "/etc/vf-e2e"]), "hello from virtform\n");
        assert_eq!(ssh_ok(&s, &addr, &["cat", "/var/tmp/vf-runcmd"]).trim(), "ran");
        let status = ssh_ok(&s, &addr, &["cloud-init", "status", "--long"]);
        assert!(status.contains("status: done") && !status.to_lowercase().contains("error"), "{fw}: {status}");
        let result = ssh_ok(&s, &addr, &["sudo", "cat", "/run/cloud-init/result.json"]);
        let v: serde_json::Value = serde_json::from_str(&result).expect("result.json");
        assert_eq!(v["v1"]["errors"], serde_json::json!([]), "{fw}: {result}");
        assert!(v["v1"]["datasource"].as_str().unwrap_or("").contains("NoCloud"), "{fw}: {result}");
        let log = ssh_ok(&s, &addr, &["sudo", "cat", "/var/log/cloud-init.log"]);
        // Its lines read "… - schema.py[WARNING]: …".
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("[WARNING]") || l.contains("[ERROR]") || l.contains("[CRITICAL]") || l.contains("Traceback")).collect();
        assert!(warnings.is_empty(), "{fw}: cloud-init logged warnings or errors:\n{}", warnings.join("\n"));
        // The network-config: fixed address, default route, DNS; DHCP on eth1.
        let addrs = ssh_ok(&s, &addr, &["ip", "-4", "-o", "addr", "show"]);
        assert!(addrs.contains(&format!("inet {ip}/24")), "{fw}: {addrs}");
        assert!(addrs.contains(&format!("inet 10.152.{nat}.")), "{fw}: no DHCP address on the isolated network's port:\n{addrs}");
        let routes = ssh_ok(&s, &addr, &["ip", "-4", "route", "show", "default"]);
        assert!(routes.contains(&format!("default via 10.151.{lan}.1")), "{fw}: {routes}");
        let resolv = ssh_ok(&s, &addr, &["cat", "/etc/resolv.conf"]);
        assert!(resolv.contains(&format!("nameserver 10.151.{lan}.53")), "{fw}: the network-config's DNS is not in effect:\n{resolv}");
        // The root grew to the overlay's 4G (growpart).
        let df = ssh_ok(&s, &addr, &["df", "-B1", "--output=size", "/"]);
        let size: u64 = df.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
        assert!(size > 3_500_000_000, "{fw}: root is {size} bytes, not grown to 4G");
        // The firmware it booted with.
        let efi = ssh_ok(&s, &addr, &["sh", "-c", "test -d /sys/firmware/efi && echo efi || echo bios"]);
        assert_eq!(efi.trim(), fw);
        // Only the host key virtform generated, pinned under the domain name and the ip.
        let host_pub = fs::read_to_string(ssh_dir.join(format!("vm@{fw}.host_ed25519.pub"))).expect("host key");
        let blob = host_pub.split_whitespace().nth(1).unwrap();
        let guest_keys = ssh_ok(&s, &addr, &["sudo", "sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub"]);
        assert_eq!(guest_keys.lines().count(), 1, "{fw}: the guest has other host keys:\n{guest_keys}");
        assert!(guest_keys.contains(blob), "{fw}: the guest's key is not virtform's");
        assert!(known_hosts.lines().any(|l| l.starts_with(&format!("{domain},{ip} ssh-ed25519 {blob}"))), "{fw}: {known_hosts}");
        // Secrets on disk are private.
        use std::os::unix::fs::PermissionsExt;
        let f = ssh_dir.join(format!("vm@{fw}.host_ed25519"));
        assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600, "{}", f.display());
        for seed in files_under(&state.join("seeds")) {
            assert_eq!(fs::metadata(&seed).unwrap().permissions().mode() & 0o777, 0o600, "{}", seed.display());
        }
    }
    assert!(ssh_dir.read_dir().unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".id-")), "identity files left behind");

    // `virtform ssh`: argv arrives as given, the exit status comes back.
    let bios = "instance.vm[\"bios\"]";
    assert_eq!(ssh_ok(&s, bios, &["printf", "%s|", "a b", "c'd", "$HOME", "*"]), "a b|c'd|$HOME|*|");
    let seven = s.ssh(bios, &["sh", "-c", "exit 7"]);
    assert_eq!(seven.code, Some(7), "{}", seven.show());
    s.assert_plan_empty("after apply");

    // A guest that presents another host key than the pinned one is refused:
    // here virtform's key for it is replaced behind its back.
    let kfile = ssh_dir.join("vm@bios.host_ed25519");
    let saved = fs::read(&kfile).unwrap();
    let pubfile = ssh_dir.join("vm@bios.host_ed25519.pub");
    let saved_pub = fs::read(&pubfile).unwrap();
    let other = tempdir("vf-cloud-other-");
    let other_key = keypair(other.path());
    fs::copy(&other_key, &kfile).unwrap();
    fs::copy(other_key.with_extension("pub"), &pubfile).unwrap();
    let refused = s.ssh(bios, &["true"]);
    assert!(!refused.ok() && refused.stderr.contains("did not present the host key virtform gave it"), "{}", refused.show());
    fs::write(&kfile, &saved).unwrap();
    fs::write(&pubfile, &saved_pub).unwrap();
    assert!(s.ssh(bios, &["true"]).ok(), "the restored key is accepted again");

    // A wait that times out leaves the instance; the next apply waits again
    // without restarting it. The guest is stopped behind virtform's back so
    // that the apply starts it, then waits as a user it cannot log in as.
    let efi = format!("{}-vm-efi", s.stack);
    virsh(&["destroy", &efi]).must();
    s.write(&config(&key, lan, nat, "nobody", "20s", "1G"));
    let failed = s.vf_within(&["apply", "--auto-approve"], Duration::from_secs(600));
    assert!(!failed.ok(), "an SSH wait as the wrong user passed:\n{}", failed.show());
    let text = failed.all();
    assert!(text.contains(&efi) && text.contains("no SSH login within 20s") && text.contains(&format!("nobody@10.151.{lan}.11")), "{}", failed.show());
    assert_eq!(domain_state(&efi), "running", "the instance was not left in place");
    let domid = virsh(&["domid", &efi]).must().stdout;
    s.write(&config(&key, lan, nat, "debian", "900s", "1G"));
    let plan = s.vf(&["plan"]);
    let block = plan_block(&plan.stdout, "instance.vm[\"efi\"]").unwrap_or_default().to_string();
    assert!(block.contains("readiness") && !block.contains("restart") && !block.contains("replace"), "{}", plan.show());
    assert!(plan_block(&plan.stdout, "instance.vm[\"bios\"]").is_none(), "{}", plan.show());
    let again = s.vf_within(&["apply", "--auto-approve"], Duration::from_secs(900));
    assert!(again.ok() && again.all().contains("wait for an SSH login as debian"), "{}", again.show());
    assert_eq!(virsh(&["domid", &efi]).must().stdout, domid, "the re-wait restarted the guest");
    s.assert_plan_empty("after the re-wait");

    // A restart (memory) and the destroy shut down gracefully, well inside the 60 s timeout.
    s.write(&config(&key, lan, nat, "debian", "900s", "1152M"));
    let t = Instant::now();
    let restart = s.vf_within(&["apply", "--auto-approve", "--target", bios], Duration::from_secs(900));
    assert!(restart.ok() && !restart.all().contains("forced off"), "{}", restart.show());
    eprintln!("[e2e] cloud: restart of the BIOS guest to SSH again: {:.1}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let destroy = s.vf_within(&["destroy", "--auto-approve"], Duration::from_secs(300));
    // Graceful: the engine warns when a guest had to be forced off.
    assert!(destroy.ok() && !destroy.all().contains("forced off"), "{}", destroy.show());
    eprintln!("[e2e] cloud: destroy of 2 running real guests: {:.1}s", t.elapsed().as_secs_f64());
    assert!(!ssh_dir.exists(), "the stack's SSH directory outlived the destroy");
    assert!(image.is_file(), "the cached image's source is untouched");
}
