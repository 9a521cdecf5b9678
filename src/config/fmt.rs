//! TEMPORARY interface shim while the formatter is written (replaced wholesale).
#[derive(Debug, Clone, PartialEq)]
pub struct FmtError { pub message: String, pub line: usize, pub column: usize }
pub fn format_source(src: &str) -> Result<String, FmtError> { Ok(src.to_string()) }
