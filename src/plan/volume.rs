//! Planning volumes: persistent block storage with its own lifecycle.
//!
//! Invariants:
//! - A volume is created once and never replaced or deleted as a side
//!   effect: not when its instance is replaced, not when its format or base
//!   image changes (that is an error asking for `--replace`); only an explicit
//!   `--replace`, or its block leaving the configuration, removes its file.
//! - Growing lands live (through the running guest's block resize);
//!   shrinking is refused with an error, never done.

use super::{change, Landing, Planner, ResourceChange};
use crate::model::common::Size;
use crate::model::{Kind, Resource};
use crate::plan::Action;

impl Planner<'_> {
    pub(super) fn volume(&mut self, r: &Resource) -> ResourceChange {
        let addr = r.address.to_string();
        let Some(want) = self.lowering().volume(r) else { return ResourceChange::new(addr, Kind::Volume, Action::NoOp) };
        let Some(have) = self.obs.files.get(&want.path) else {
            return ResourceChange::new(addr, Kind::Volume, Action::Create);
        };
        if self.is_forgotten(&want.path) {
            return self.conflict(r, super::Foreign::new(format!("file {:?} (forgotten by a removed block; no longer virtform's)", want.path)), None);
        }
        let mut rc = ResourceChange::new(addr.clone(), Kind::Volume, Action::NoOp);
        if self.registry_import(&mut rc, r) {
            rc.action = Action::Update;
            rc.reason = Some("import".into());
        }
        let forced = self.opts.replace.contains(&addr);
        if have.format.as_str() != want.format && !forced {
            self.out.errors.push(format!(
                "{addr}: the volume's file {} is {} but the configuration says {}; virtform never replaces a volume implicitly (its data would be lost). Keep the format, or back the data up and run with --replace {addr}",
                want.path,
                have.format.as_str(),
                want.format
            ));
            return rc;
        }
        if let Some(size) = want.size {
            let base_size = want.base.as_ref().and_then(|b| self.obs.files.get(b)).map(|f| f.virtual_size).unwrap_or(0);
            let size = size.max(base_size);
            if have.virtual_size < size {
                rc.changes.push(change("size", Size(have.virtual_size), Size(size), Landing::Live, false));
                rc.action = Action::Update;
                rc.reason.get_or_insert_with(|| "update".into());
            } else if have.virtual_size > size && !forced {
                self.out.errors.push(format!(
                    "{addr}: shrinking a volume is refused ({} on the host, {} configured): it would cut off the guest's data. Set size = \"{}\" or larger",
                    Size(have.virtual_size),
                    Size(size),
                    Size(have.virtual_size)
                ));
            }
        }
        rc
    }
}
