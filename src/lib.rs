//! virtform: a declarative applier for KVM/libvirt hosts.
//!
//! See ARCHITECTURE.md for the bird's-eye view and the invariants of each module.

pub mod cli;
pub mod config;
pub mod graph;
pub mod host;
pub mod model;
pub mod schema;
pub mod xml;
