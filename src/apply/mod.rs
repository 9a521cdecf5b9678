//! The apply engine: turns a plan into host operations.
//!
//! - `dag`: the generic step-DAG executor — idempotent steps run in
//!   dependency order, independent branches in parallel up to a slot limit,
//!   waits outside the limit; a failure stops its dependents only (no
//!   rollback), and the report lists done, already-done, failed, skipped and
//!   not-started steps.
//! - `engine`: the steps (`Op`), their lowering from a plan, and what each does.
//! - `overlay`: the link ops that converge (or remove) an overlay network on one host.

pub mod dag;
pub mod engine;
pub mod overlay;
