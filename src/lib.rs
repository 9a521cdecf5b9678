//! virtform: a declarative applier for KVM/libvirt hosts.
//!
//! See ARCHITECTURE.md for the bird's-eye view and the invariants of each module.

#![allow(clippy::result_large_err)] // diagnostics are large and cold; boxing them buys nothing

pub mod apply;
pub mod cli;
pub mod config;
pub mod graph;
pub mod host;
pub mod model;
pub mod observe;
pub mod plan;
pub mod schema;
pub mod seed;
pub mod xml;
