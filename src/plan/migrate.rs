//! Moving an instance between hosts (issue 17, item 5): when a fleet's
//! plans delete an instance on one host and create it on another (its
//! `host` changed), the pair becomes one live migration where that is
//! feasible, and stays a deletion and a creation, saying why, where not.
//!
//! Invariants:
//! - Pure: reads the hosts' parts, observations and plans; changes only
//!   the plans.
//! - A migration is planned only when the guest runs on its old host, is
//!   not a UEFI guest (its variable store would not follow), and the
//!   definition its new host's part lowers to has the spec hash of the
//!   running domain's marker: the guest's definition (name, UUID, MACs,
//!   disk, seed and boot file paths, marker) is the same on both hosts, so
//!   libvirt moves it as it is and nothing else changes with it.
//! - The migration is the new host's change to the instance (an update
//!   whose only attribute is `host`, reason `migrate`). The old host's
//!   deletion of the domain becomes the removal of the guest's files there
//!   (console logs, seeds; reason `migrate` too: the migration undefines
//!   the domain). The old host's deletions of the instance's disk, volume
//!   and port objects stay. The apply runs every removal on the old host
//!   after the migration.

use super::desired::Lowering;
use super::{AttrChange, Landing, Plan};
use crate::config::Configuration;
use crate::model::{Kind, Spec};
use crate::observe::Observed;
use crate::plan::Action;

/// A live migration a plan carries out.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Migration {
    /// The host it runs on now: `host.a`, or `None` for this machine.
    pub from_host: Option<String>,
    /// How the plan names both hosts ("host.a", "this machine").
    pub from: String,
    pub to: String,
    /// The libvirt domain.
    pub domain: String,
    /// The kernel and initrd it boots (the same paths on both hosts): the
    /// old host removes its copies when no other guest there boots them.
    #[serde(skip)]
    pub boot_files: Vec<String>,
}

/// One host of the fleet, as the migration pass sees it.
pub struct Part<'a> {
    /// `host.a`; `None`: this machine.
    pub host: Option<&'a str>,
    pub cfg: &'a Configuration,
    pub observed: &'a Observed,
    pub state_dir: &'a std::path::Path,
    pub kvm: bool,
}

fn label(host: Option<&str>) -> String {
    host.map(str::to_string).unwrap_or_else(|| "this machine".into())
}

/// Turns each instance deleted on one host and created on another into a
/// migration where feasible; where not, the creation says why.
pub fn plan_migrations(parts: &[Part<'_>], plans: &mut [Plan]) {
    for j in 0..plans.len() {
        for k in 0..plans[j].changes.len() {
            let c = &plans[j].changes[k];
            if c.kind != Kind::Instance || c.action != Action::Create {
                continue;
            }
            let addr = c.address.clone();
            // The host that still runs it: its plan deletes the domain.
            let Some((i, d)) = plans.iter().enumerate().filter(|(i, _)| *i != j).find_map(|(i, p)| {
                p.changes.iter().position(|x| x.address == addr && x.kind == Kind::Instance && x.action == Action::Delete && x.object.is_some()).map(|d| (i, d))
            }) else {
                continue;
            };
            let (from, to) = (label(parts[i].host), label(parts[j].host));
            let domain = plans[i].changes[d].object.clone().unwrap_or_default();
            match feasible(&parts[i], &parts[j], &plans[j], &addr, &domain) {
                Ok(boot_files) => {
                    let m = Migration { from_host: parts[i].host.map(str::to_string), from: from.clone(), to: to.clone(), domain: domain.clone(), boot_files };
                    let gone = &mut plans[i].changes[d];
                    gone.reason = Some(MIGRATE.into());
                    gone.migrate = Some(m.clone());
                    let c = &mut plans[j].changes[k];
                    c.action = Action::Update;
                    c.reason = Some(MIGRATE.into());
                    c.changes = vec![AttrChange { attr: "host".into(), before: Some(from.clone()), after: Some(to.clone()), landing: Landing::Live, outside: false, sensitive: false }];
                    c.migrate = Some(m);
                }
                Err(why) => {
                    plans[j].changes[k].because.push(format!("it cannot migrate live from {from}: {why}; it is deleted there and created here"));
                }
            }
        }
    }
}

/// The reason of a migration's change.
pub const MIGRATE: &str = "migrate";

/// Why the instance cannot migrate, or the boot files it takes along.
fn feasible(src: &Part<'_>, dst: &Part<'_>, dst_plan: &Plan, addr: &str, domain: &str) -> Result<Vec<String>, String> {
    let Some(have) = src.observed.domains.get(domain) else { return Err(format!("domain {domain} is not on {}", label(src.host))) };
    if !have.running {
        return Err(format!("domain {domain} is not running there (a stopped guest is created anew)"));
    }
    let Some(r) = dst.cfg.resource(addr) else { return Err("it is not in the new host's part".into()) };
    let Spec::Instance(inst) = &r.spec else { return Err("not an instance".into()) };
    if inst.firmware == crate::model::instance::Firmware::Efi {
        return Err("a UEFI guest's variable store does not move with it yet".into());
    }
    let lowering = Lowering { cfg: dst.cfg, state_dir: dst.state_dir, kvm_usable: dst.kvm, source_hashes: &dst.observed.source_hashes, imported: &dst_plan.imported };
    let Some(want) = lowering.domain(r) else { return Err("its definition cannot be lowered".into()) };
    if want.name != domain {
        return Err(format!("it would be the domain {} there, not {domain}", want.name));
    }
    let running = have.marker.as_ref().map(|m| m.2.as_str()).unwrap_or("");
    if running != want.marker.spec_hash {
        return Err(
            "its definition there differs from the running one (its configuration changed too, or the hosts' state dirs differ); change only `host` to migrate, then apply the rest".into(),
        );
    }
    Ok([want.kernel, want.initrd].into_iter().flatten().collect())
}
