//! `volume`: persistent block storage with its own lifecycle, attachable and
//! detachable while its instance runs.
//!
//! Invariants: the file lives at `<state_dir>/<stack>/volumes/<name>[@key].<fmt>`;
//! the serial is always resolved (given or derived from the name).

use super::common::{ResourceRef, Size};
use super::disk::{Bus, DiskFormat};
use super::{check_ref, to_value, Address, Ctx, FieldError, Kind};
use crate::config::value::Value;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Persistent block storage.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// The host it lives on (`host.NAME`). Default: the host of the instance that uses it, else this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<ResourceRef>,
    /// Virtual size. Required unless `image` is set. Growing it resizes live; shrinking is refused.
    pub size: Option<Size>,
    /// Optional base image (`image.NAME`) the volume starts from.
    pub image: Option<ResourceRef>,
    /// `qcow2` (default) or `raw`.
    #[serde(default)]
    pub format: DiskFormat,
    /// Serial number seen by the guest (/dev/disk/by-id/virtio-SERIAL), at most 20 characters. Default: derived from the name.
    pub serial: Option<String>,
    /// Guest bus (default virtio).
    pub bus: Option<Bus>,
}

/// The serial a volume gets without `serial`: its dashed name, at most 20 characters.
pub fn default_serial(addr: &Address) -> String {
    let mut s: String = addr.dashed().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    s.truncate(20);
    s
}

impl Volume {
    pub fn resolve(&mut self, addr: &Address, ctx: &Ctx<'_>) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if let Some(img) = &self.image {
            if let Err(e) = check_ref("image", img, Kind::Image, ctx) {
                errs.push(e);
            }
            if self.format != DiskFormat::Qcow2 {
                errs.push(FieldError::new("format", "a volume made from an image is a qcow2 overlay").label("remove `format` or set it to \"qcow2\""));
            }
        } else if self.size.is_none() {
            errs.push(FieldError::new("", "a volume needs `size` (or `image`)").label("add size = \"10G\""));
        }
        if let Some(s) = self.size {
            if s.0 < 1 << 20 {
                errs.push(FieldError::new("size", format!("size {s} is too small")).label("expected at least 1M"));
            } else if s.0 % 512 != 0 {
                errs.push(FieldError::new("size", format!("size {} is not a multiple of 512 bytes", s.0)));
            }
        }
        match &self.serial {
            Some(s) if s.is_empty() || s.len() > 20 || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {
                errs.push(FieldError::new("serial", format!("serial \"{s}\" is not valid")).label("expected 1 to 20 letters, digits, '-' or '_'"));
            }
            Some(_) => {}
            None => self.serial = Some(default_serial(addr)),
        }
        let _ = ctx;
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    pub fn path(&self, addr: &Address, ctx: &Ctx<'_>) -> String {
        ctx.stack_dir().join("volumes").join(format!("{}.{}", addr.file_stem(), self.format.as_str())).to_string_lossy().into_owned()
    }

    pub fn exports(&self, addr: &Address, ctx: &Ctx<'_>) -> Value {
        to_value(self, [("path", Value::String(self.path(addr, ctx))), ("size", self.size.map(|s| Value::Number(s.0 as f64)).unwrap_or(Value::Unknown))])
    }
}
