//! cloud-init NoCloud seeds: the files (`nocloud`) and the ISO 9660 image
//! that carries them (`iso`).
//!
//! Invariants:
//! - Pure until [`nocloud::write_seed`]: content generation and the ISO
//!   writer touch nothing; the same input gives the same bytes, so
//!   [`nocloud::seed_hash`] tells the planner whether a seed must be
//!   rewritten without writing it.
//! - Generated YAML is built by a serializer (serde_yaml), never by pasting
//!   user values into text.
//! - Error messages never print user-data, meta-data or network-config
//!   contents (they may hold secrets); they name the file and, for YAML
//!   errors, the line and column.
//! - A seed file is written atomically (`<path>.part`, fsync, rename), mode
//!   0600, and a symlink at its path is replaced, never followed.

pub mod iso;
pub mod nocloud;

pub use iso::{IsoEntry, IsoError, IsoReader, write_iso};
pub use nocloud::{
    HostKey, SEED_VOLUME_ID, SeedError, SeedInput, SeedNic, seed_files, seed_hash, seed_iso, write_seed, write_seed_on,
};
