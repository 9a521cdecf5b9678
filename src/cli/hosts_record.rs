//! The remote hosts a stack has objects on, recorded on this machine
//! (`<state>/<stack>/hosts.json`, 0600, written atomically under the
//! stack's lock): what a host's objects cannot tell when its `host` block
//! is gone, because then virtform cannot reach the host at all.
//!
//! - A recorded host the configuration no longer declares refuses the plan
//!   (nothing is planned or changed anywhere): its objects would otherwise
//!   be left behind while the plan says "no changes". The error says what
//!   to do: put the block back with nothing placed on it (the plan then
//!   deletes what the stack has there), or, for a host gone for good,
//!   `removed { from = host.NAME  lifecycle { destroy = false } }`, which
//!   forgets it.
//! - Before an apply runs, the record gains every declared host that holds
//!   or will hold something of the stack (placed resources, or planned
//!   changes: orphans being deleted); after a complete apply (every step
//!   done, no `--target`) it is exactly the hosts with resources placed on
//!   them, and forgotten hosts leave it.

use crate::config::Configuration;
use crate::host::HostError;
use crate::model::Kind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Host address (`host.b`) → its libvirt URI when it was recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostsRecord {
    #[serde(default)]
    pub hosts: BTreeMap<String, String>,
}

impl HostsRecord {
    pub fn path(state_dir: &Path, stack: &str) -> PathBuf {
        state_dir.join(stack).join("hosts.json")
    }

    /// A missing file is an empty record; a damaged one an error (planning
    /// without it could leave a host's objects behind unsaid).
    pub fn read(state_dir: &Path, stack: &str) -> Result<HostsRecord, HostError> {
        let p = HostsRecord::path(state_dir, stack);
        match std::fs::read_to_string(&p) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| {
                HostError::new("read", p.display().to_string(), e.to_string()).hint("the record of the hosts this stack has objects on is damaged: restore it, or remove it if every host the stack used is still declared")
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HostsRecord::default()),
            Err(e) => Err(HostError::new("read", p.display().to_string(), e.to_string())),
        }
    }

    /// Writes the record atomically (0600); an empty one removes the file.
    pub fn write(&self, state_dir: &Path, stack: &str) -> Result<(), HostError> {
        crate::observe::write_record(&HostsRecord::path(state_dir, stack), (!self.hosts.is_empty()).then_some(self))
    }
}

/// The remote hosts the configuration declares: address → URI.
pub fn declared(cfg: &Configuration) -> BTreeMap<String, String> {
    cfg.hosts().filter(|(_, h)| !h.is_local()).map(|(r, h)| (r.address.to_string(), h.uri.clone())).collect()
}

/// The recorded hosts the configuration no longer declares, checked
/// against its `removed` blocks: `Ok(forgotten)` (each with a note to
/// show), or every error.
pub fn check(cfg: &Configuration, record: &HostsRecord, state_dir: &Path) -> Result<Vec<(String, String)>, Vec<String>> {
    let declared = declared(cfg);
    let path = HostsRecord::path(state_dir, &cfg.stack);
    let mut forgotten = Vec::new();
    let mut errors = Vec::new();
    for (addr, uri) in record.hosts.iter().filter(|(a, _)| !declared.contains_key(*a)) {
        let removed = cfg.removed.iter().find(|r| r.from.kind == Kind::Host && r.from.to_string() == *addr);
        match removed {
            Some(r) if !r.destroy => forgotten.push((
                addr.clone(),
                format!("{addr} ({uri}) is forgotten (removed with destroy = false): whatever stack \"{}\" has there is left as it is, and virtform no longer plans for it", cfg.stack),
            )),
            Some(_) => errors.push(format!(
                "removed {{ from = {addr} }}: what stack \"{}\" has on {addr} ({uri}) cannot be destroyed without its host block (virtform reaches a host only through it). Put the host block back, with nothing placed on it, and apply: that deletes them; then remove the block. Or set lifecycle {{ destroy = false }} to forget the host and leave its objects",
                cfg.stack
            )),
            None if cfg.sources.files().is_empty() => errors.push(format!(
                "{addr} ({uri}) has objects of stack \"{}\" (recorded in {}), and this run has no configuration, so it cannot reach that host: run it with the configuration that declares {addr}",
                cfg.stack,
                path.display()
            )),
            None => errors.push(format!(
                "{addr} ({uri}) has objects of stack \"{}\" (recorded in {}), but the configuration no longer declares it, so virtform cannot reach it to remove them. Put its host block back, with nothing placed on it, and apply: that deletes them; then remove the block. If the host is gone for good, forget it with removed {{ from = {addr}  lifecycle {{ destroy = false }} }}",
                cfg.stack,
                path.display()
            )),
        }
    }
    if errors.is_empty() { Ok(forgotten) } else { Err(errors) }
}

/// The record while an apply runs: the old one without the forgotten
/// hosts, plus every declared host in `holding` (resources placed on it or
/// changes planned there).
pub fn during(old: &HostsRecord, forgotten: &[(String, String)], declared: &BTreeMap<String, String>, holding: &[String]) -> HostsRecord {
    let mut hosts: BTreeMap<String, String> = old.hosts.iter().filter(|(a, _)| !forgotten.iter().any(|(f, _)| f == *a)).map(|(a, u)| (a.clone(), u.clone())).collect();
    for a in holding {
        if let Some(u) = declared.get(a) {
            hosts.insert(a.clone(), u.clone());
        }
    }
    HostsRecord { hosts }
}

/// The record after a complete apply (every step done, nothing targeted):
/// the declared hosts with resources placed on them, and only those.
pub fn after_complete(declared: &BTreeMap<String, String>, placed: &[String]) -> HostsRecord {
    HostsRecord { hosts: placed.iter().filter_map(|a| declared.get(a).map(|u| (a.clone(), u.clone()))).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> Configuration {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("id"), crate::model::ssh_key::fake_private_key("none", 1, "ssh-ed25519")).unwrap();
        std::fs::write(dir.path().join("known_hosts"), "").unwrap();
        std::fs::write(dir.path().join("main.vf.hcl"), src).unwrap();
        crate::config::load(&crate::config::LoadOptions { dir: dir.path().to_path_buf(), state_dir: "/state".into(), ..Default::default() }).unwrap_or_else(|e| panic!("{}", e.render(false)))
    }

    const HOST_A: &str = "host \"a\" {\n  uri = \"qemu+ssh://root@10.99.0.11/system\"\n  private_key = file(\"${path.module}/id\")\n  known_hosts = \"${path.module}/known_hosts\"\n}\n";

    fn record(hosts: &[(&str, &str)]) -> HostsRecord {
        HostsRecord { hosts: hosts.iter().map(|(a, u)| (a.to_string(), u.to_string())).collect() }
    }

    #[test]
    fn a_recorded_host_without_its_block_refuses_the_plan_saying_what_to_do() {
        let cfg = load(&format!("virtform {{ stack = \"s\" }}\n{HOST_A}"));
        let rec = record(&[("host.a", "qemu+ssh://root@10.99.0.11/system"), ("host.c", "qemu+ssh://root@10.99.0.13/system")]);
        let e = check(&cfg, &rec, Path::new("/state")).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("host.c (qemu+ssh://root@10.99.0.13/system) has objects of stack \"s\" (recorded in /state/s/hosts.json)"), "{}", e[0]);
        assert!(e[0].contains("Put its host block back") && e[0].contains("removed { from = host.c  lifecycle { destroy = false } }"), "{}", e[0]);
        // Every recorded host declared: nothing to say.
        assert_eq!(check(&cfg, &record(&[("host.a", "x")]), Path::new("/state")), Ok(vec![]));
    }

    #[test]
    fn a_removed_block_forgets_a_host_only_with_destroy_false() {
        let rec = record(&[("host.c", "qemu+ssh://root@10.99.0.13/system")]);
        let cfg = load("virtform { stack = \"s\" }\nremoved {\n  from = host.c\n  lifecycle {\n    destroy = false\n  }\n}\n");
        let f = check(&cfg, &rec, Path::new("/state")).unwrap();
        assert_eq!(f.len(), 1);
        assert!(f[0].1.contains("host.c (qemu+ssh://root@10.99.0.13/system) is forgotten"), "{}", f[0].1);
        let cfg = load("virtform { stack = \"s\" }\nremoved {\n  from = host.c\n}\n");
        let e = check(&cfg, &rec, Path::new("/state")).unwrap_err();
        assert!(e[0].contains("cannot be destroyed without its host block") && e[0].contains("destroy = false"), "{}", e[0]);
    }

    #[test]
    fn the_record_grows_while_an_apply_runs_and_is_exact_after_a_complete_one() {
        let declared: BTreeMap<String, String> = [("host.a".to_string(), "ua".to_string()), ("host.b".to_string(), "ub".to_string())].into();
        let old = record(&[("host.b", "ub"), ("host.z", "uz"), ("host.y", "uy")]);
        let forgotten = vec![("host.y".to_string(), String::new())];
        let d = during(&old, &forgotten, &declared, &["host.a".to_string()]);
        assert_eq!(d, record(&[("host.a", "ua"), ("host.b", "ub"), ("host.z", "uz")]));
        assert_eq!(after_complete(&declared, &["host.b".to_string()]), record(&[("host.b", "ub")]));
    }

    #[test]
    fn the_record_round_trips_and_an_empty_one_removes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let rec = record(&[("host.b", "qemu+ssh://root@10.99.0.12/system")]);
        rec.write(dir.path(), "s").unwrap();
        let p = HostsRecord::path(dir.path(), "s");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(HostsRecord::read(dir.path(), "s").unwrap(), rec);
        HostsRecord::default().write(dir.path(), "s").unwrap();
        assert!(!p.exists());
        assert_eq!(HostsRecord::read(dir.path(), "s").unwrap(), HostsRecord::default());
        std::fs::write(&p, "{not json").unwrap();
        assert!(HostsRecord::read(dir.path(), "s").unwrap_err().hint.is_some());
    }
}
