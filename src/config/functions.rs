//! TEMPORARY interface shim while the function library is written (replaced wholesale).
use super::value::Value;
use std::path::Path;
pub struct FnCtx<'a> { pub base_dir: &'a Path }
#[derive(Debug, Clone, PartialEq)]
pub struct FnError { pub arg: Option<usize>, pub message: String }
pub fn call(name: &str, _ctx: &FnCtx<'_>, _args: Vec<Value>) -> Result<Value, FnError> {
    Err(FnError { arg: None, message: format!("unknown function {name}") })
}
pub fn names() -> &'static [&'static str] { &["can", "templatefile", "try"] }
pub fn signature(_name: &str) -> Option<&'static str> { None }
pub fn read_file(ctx: &FnCtx<'_>, path: &str) -> Result<String, FnError> {
    std::fs::read_to_string(ctx.base_dir.join(path)).map_err(|e| FnError { arg: Some(0), message: e.to_string() })
}
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates.into_iter().find(|c| c.len() > 2 && (c.starts_with(&name[..name.len().min(3)])))
}
