//! `disk`: an instance-local disk: a qcow2 overlay on an image, or blank
//! (optionally swap or a formatted filesystem), or a cdrom of an image.
//!
//! Invariants: the file lives at `<state_dir>/<stack>/disks/<name>[@key].<fmt>`;
//! an overlay is always qcow2; a blank disk has a size.

use super::common::{ResourceRef, Size};
use super::{check_ref, to_value, Address, Ctx, FieldError, Kind};
use crate::config::value::Value;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiskFormat {
    #[default]
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

/// What the disk is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiskKind {
    /// A regular disk (default).
    #[default]
    Disk,
    /// A swap disk (mkswap).
    Swap,
    /// A read-only cdrom of an image.
    Cdrom,
}

/// Filesystems virtform can create on a blank ephemeral disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Filesystem {
    Ext4,
    Ext3,
    Ext2,
    Xfs,
    Vfat,
}

/// Guest bus of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Bus {
    Virtio,
    Scsi,
    Sata,
    Ide,
}

/// An instance-local disk.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// The host it lives on (`host.NAME`). Default: the host of the instance that uses it, else this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<ResourceRef>,
    /// Base image (`image.NAME`): the disk is a qcow2 overlay on it (or, for a cdrom, the image itself).
    pub image: Option<ResourceRef>,
    /// Virtual size. Required for blank disks; an overlay is grown to it when larger than the image.
    pub size: Option<Size>,
    /// `qcow2` (default) or `raw` (blank disks only).
    #[serde(default)]
    pub format: DiskFormat,
    /// `disk` (default), `swap` or `cdrom`.
    #[serde(default)]
    pub kind: DiskKind,
    /// Create this filesystem on a blank disk.
    pub filesystem: Option<Filesystem>,
    /// Filesystem or swap label.
    pub label: Option<String>,
    /// Guest bus. Default: virtio for disks, ide (pc) or sata (q35) for cdroms.
    pub bus: Option<Bus>,
}

impl Disk {
    pub fn resolve(&mut self, _addr: &Address, ctx: &Ctx<'_>) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if let Some(img) = &self.image
            && let Err(e) = check_ref("image", img, Kind::Image, ctx) {
                errs.push(e);
            }
        match self.kind {
            DiskKind::Cdrom => {
                if self.image.is_none() {
                    errs.push(FieldError::new("", "a cdrom disk needs `image`"));
                }
                if self.size.is_some() {
                    errs.push(FieldError::new("size", "a cdrom has the size of its image; remove `size`"));
                }
                if self.bus == Some(Bus::Virtio) {
                    errs.push(FieldError::new("bus", "a cdrom cannot be on the virtio bus").label("expected \"ide\", \"sata\" or \"scsi\""));
                }
            }
            DiskKind::Disk | DiskKind::Swap => {
                if self.image.is_some() && self.format != DiskFormat::Qcow2 {
                    errs.push(FieldError::new("format", "a disk made from an image is a qcow2 overlay").label("remove `format` or set it to \"qcow2\""));
                }
                if self.image.is_none() && self.size.is_none() {
                    errs.push(FieldError::new("", "a blank disk needs `size`").label("add size = \"10G\", or image = image.NAME for an overlay"));
                }
            }
        }
        if self.kind == DiskKind::Swap {
            if self.image.is_some() {
                errs.push(FieldError::new("image", "a swap disk is blank; remove `image`"));
            }
            if self.filesystem.is_some() {
                errs.push(FieldError::new("filesystem", "a swap disk has no filesystem; remove `filesystem`"));
            }
        }
        if self.filesystem.is_some() && self.image.is_some() {
            errs.push(FieldError::new("filesystem", "`filesystem` formats a blank disk; this disk has an image"));
        }
        if let Some(s) = self.size {
            if s.0 < 1 << 20 {
                errs.push(FieldError::new("size", format!("size {s} is too small")).label("expected at least 1M"));
            } else if s.0 % 512 != 0 {
                errs.push(FieldError::new("size", format!("size {} is not a multiple of 512 bytes", s.0)));
            }
        }
        if let Some(l) = &self.label {
            let max = if self.filesystem == Some(Filesystem::Vfat) { 11 } else if self.filesystem == Some(Filesystem::Xfs) { 12 } else { 16 };
            if l.len() > max || l.chars().any(|c| c.is_control() || c == '/') {
                errs.push(FieldError::new("label", format!("label \"{l}\" is not valid: at most {max} characters, no '/'")));
            }
            if self.filesystem.is_none() && self.kind != DiskKind::Swap {
                errs.push(FieldError::new("label", "`label` needs `filesystem` or kind = \"swap\""));
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// Where the disk file lives.
    pub fn path(&self, addr: &Address, ctx: &Ctx<'_>) -> String {
        let ext = match (self.kind, self.format) {
            (DiskKind::Cdrom, _) => "iso",
            (_, f) => f.as_str(),
        };
        ctx.stack_dir().join("disks").join(format!("{}.{ext}", addr.file_stem())).to_string_lossy().into_owned()
    }

    pub fn exports(&self, addr: &Address, ctx: &Ctx<'_>) -> Value {
        to_value(self, [("path", Value::String(self.path(addr, ctx))), ("size", self.size.map(|s| Value::Number(s.0 as f64)).unwrap_or(Value::Unknown))])
    }
}
