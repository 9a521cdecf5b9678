//! `image`: a base image, fetched once into a content-addressed cache.
//!
//! Invariants: remote sources carry a sha256 (nothing unverified is fetched
//! from the network); local paths are made absolute against the config dir.

use super::{resolve_path, to_value, Address, Ctx, FieldError};
use crate::config::value::Value;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Disk image formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageFormat {
    #[default]
    Qcow2,
    Raw,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Raw => "raw",
        }
    }
}

/// A base image.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// A local path (relative to the configuration directory or absolute), `file://` URL, or `http(s)://` URL.
    pub source: String,
    /// Expected SHA-256 of the image file (hex). Required for http(s) sources.
    pub sha256: Option<String>,
    /// Declared format, checked against the file: `qcow2` (default) or `raw`.
    #[serde(default)]
    pub format: ImageFormat,
}

impl Image {
    pub fn is_remote(&self) -> bool {
        self.source.starts_with("http://") || self.source.starts_with("https://")
    }

    pub fn resolve(&mut self, _addr: &Address, ctx: &Ctx<'_>) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if self.source.trim().is_empty() {
            errs.push(FieldError::new("source", "`source` must not be empty"));
        } else if let Some(p) = self.source.strip_prefix("file://") {
            if !p.starts_with('/') {
                errs.push(FieldError::new("source", format!("\"{}\" is not an absolute file:// URL", self.source)).label("expected file:///absolute/path"));
            } else {
                self.source = p.to_string();
            }
        } else if self.is_remote() {
            if self.sha256.is_none() {
                errs.push(
                    FieldError::new("sha256", format!("an image fetched from {} needs `sha256`", self.source))
                        .label("virtform never boots unverified downloads; add sha256 = \"<64 hex digits>\""),
                );
            }
        } else if self.source.contains("://") {
            errs.push(FieldError::new("source", format!("unsupported URL scheme in \"{}\"", self.source)).label("expected a path, file://, http:// or https://"));
        } else {
            self.source = resolve_path(ctx, &self.source);
        }
        if let Some(h) = &mut self.sha256 {
            *h = h.to_ascii_lowercase();
            if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                errs.push(FieldError::new("sha256", format!("\"{h}\" is not a SHA-256 digest")).label("expected 64 hex digits"));
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    pub fn exports(&self, _addr: &Address, ctx: &Ctx<'_>) -> Value {
        let path = match &self.sha256 {
            Some(h) => Value::String(ctx.state_dir.join("images").join(h).to_string_lossy().into_owned()),
            None => Value::Unknown,
        };
        to_value(self, [("path", path), ("sha256", self.sha256.clone().map(Value::String).unwrap_or(Value::Unknown))])
    }
}
