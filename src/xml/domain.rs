//! libvirt domain XML: [`domain_xml`] writes a whole domain, [`disk_device_xml`]
//! and [`nic_device_xml`] the devices for live attach/detach, and
//! [`parse_domain`] reads a domain back into an [`ObservedDomain`] holding only
//! the fields virtform manages, normalized so that equal means "no change".
//!
//! # How the planner compares
//!
//! ```text
//! desired  = ObservedDomain::from_def(&def)        // what libvirt should hold
//! observed = parse_domain(&inactive_xml)?           // virsh dumpxml --inactive
//! desired.changed_fields(&observed)                 // [] when nothing changed
//! let (a, b) = normalized_pair(&desired, &observed) // texts for a unified diff
//! ```
//!
//! Parse the **inactive** XML (`VIR_DOMAIN_XML_INACTIVE`): the live XML holds
//! runtime values (`<target dev='vnet0'/>`, `<alias>`, a `host-model` CPU
//! expanded to `custom` with a model and features) that are not the
//! configuration.
//!
//! What libvirt 9.0 rewrites when it stores a domain (checked against the
//! real daemon by `real_libvirt_round_trip`, see the tests), and how it is
//! normalized:
//! - the machine alias is expanded (`pc` → `pc-i440fx-7.2`, `q35` →
//!   `pc-q35-7.2`): compared by family when the desired one is an alias
//!   ([`machines_match`], [`ObservedDomain::align_aliases`]);
//! - a domain without `<cpu>` gets `<cpu mode='custom'><model
//!   fallback='forbid'>qemu64</model></cpu>`: equal to "no cpu" ([`DEFAULT_CPU_MODEL`]);
//! - `<boot dev='hd'/>` is added when no device has a boot order, even with
//!   direct kernel boot: both sides carry it;
//! - memory is stored in KiB; UUID, MAC and OVS interface id are lowercased;
//! - `<target dev='vnet…'>` is dropped (a reserved prefix): treated as absent;
//! - a disk `<serial>` may only hold `[A-Za-z0-9_ .+-]`; libvirt refuses
//!   anything else at define time (the model must check it).
//!
//! It also adds `placement`, `check`, `match`, controllers, PCI and drive
//! addresses, input, video, audio and an `<emulator>`, all ignored.

use super::tree::{Doc, Elem};
use super::write::XmlWriter;
use super::{normalize_uuid, scaled_to_kib, xml_safe, XmlError, NS, PREFIX};
use crate::model::common::Mac;
use crate::model::disk::Bus;
use crate::model::instance::{CpuMode, Firmware, Graphics};
use crate::model::port::NicModel;
use serde::{Deserialize, Serialize};

/// Where graphics listen: never on the outside.
pub const GRAPHICS_LISTEN: &str = "127.0.0.1";

/// Free PCIe root ports left on q35 machines for hot-plugged disks and NICs.
/// Each PCIe device sits on its own root port and libvirt only adds one
/// spare, so virtform writes enough root ports for the domain's own devices
/// plus these (what Nova's `num_pcie_ports` is for).
pub const Q35_HOTPLUG_SPARE_PORTS: usize = 8;

/// Root ports a q35 domain gets: one per virtio disk and NIC, five for the
/// other devices (USB controller, memballoon, rng, the virtio-serial
/// controller of the agent channel, and the pcie-to-pci bridge a SCSI
/// controller needs), plus the hot-plug spares.
/// libvirt adds more if this is short, so an overestimate only costs spares.
pub fn q35_root_ports(d: &DomainDef) -> usize {
    d.disks.iter().filter(|x| x.bus == Bus::Virtio).count() + d.nics.len() + 5 + Q35_HOTPLUG_SPARE_PORTS
}

/// The UEFI firmware (Debian's `ovmf` package): code without Secure Boot
/// and without SMM, for any machine.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The empty UEFI variable store template that goes with [`OVMF_CODE`].
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The Secure Boot firmware: needs SMM (q35), refuses to run without it.
pub const OVMF_CODE_SECURE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// The variable store template with the distribution's PK and Microsoft's
/// KEK/db enrolled and Secure Boot enabled (what Debian's firmware
/// descriptor `40-edk2-x86_64-secure-enrolled.json` pairs with the code).
pub const OVMF_VARS_SECURE: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// The Debian package that ships the OVMF files.
pub const OVMF_PACKAGE: &str = "ovmf";

/// The firmware files (code, variable store template) an EFI domain uses.
pub fn ovmf_files(secure_boot: bool) -> (&'static str, &'static str) {
    if secure_boot { (OVMF_CODE_SECURE, OVMF_VARS_SECURE) } else { (OVMF_CODE, OVMF_VARS) }
}

/// Every firmware file virtform may name (what observe checks for).
pub const OVMF_FILES: [&str; 4] = [OVMF_CODE, OVMF_VARS, OVMF_CODE_SECURE, OVMF_VARS_SECURE];

/// An explicit UEFI firmware: `<loader readonly='yes' type='pflash'>` and
/// the domain's own variable store `<nvram template=…>`, which libvirt
/// copies from the template when the domain starts and the file is missing
/// (and removes with `VIR_DOMAIN_UNDEFINE_NVRAM`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderDef {
    /// The read-only firmware code (`OVMF_CODE*.fd`).
    pub code: String,
    /// The variable store template (`OVMF_VARS*.fd`).
    pub vars_template: String,
    /// This domain's variable store (under the state dir).
    pub nvram: String,
    /// Secure Boot: `<loader secure='yes'>` and `<smm state='on'/>` (q35 only).
    pub secure: bool,
}

impl LoaderDef {
    /// OVMF as Debian ships it ([`ovmf_files`]), with the domain's variable store at `nvram`.
    pub fn ovmf(secure_boot: bool, nvram: String) -> LoaderDef {
        let (code, vars) = ovmf_files(secure_boot);
        LoaderDef { code: code.into(), vars_template: vars.into(), nvram, secure: secure_boot }
    }
}

/// `<domain type=…>`: `kvm` (hardware virtualization) or `qemu` (TCG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainKind {
    Kvm,
    Qemu,
}

impl DomainKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainKind::Kvm => "kvm",
            DomainKind::Qemu => "qemu",
        }
    }
}

/// `<cpu>`: the mode, and the model for mode `custom`.
///
/// Under `qemu` (TCG) `host-passthrough` is invalid (QEMU needs KVM for
/// `-cpu host`); `host-model` works (libvirt uses QEMU's TCG model). The
/// writer does not validate; callers do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuDef {
    pub mode: CpuMode,
    /// Only for [`CpuMode::Custom`]; written as `<model fallback='allow'>`.
    pub model: Option<String>,
}

/// `<disk device=…>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskDevice {
    Disk,
    Cdrom,
}

impl DiskDevice {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskDevice::Disk => "disk",
            DiskDevice::Cdrom => "cdrom",
        }
    }
}

/// The ownership marker in `<metadata>`: `<virtform:instance stack=… address=… spec-hash=…/>`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Marker {
    pub stack: String,
    pub address: String,
    pub spec_hash: String,
}

/// A domain to write. Plain owned values, resolved by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainDef {
    pub name: String,
    /// Lowercase dashed UUID; empty lets libvirt generate one (not recommended:
    /// virtform derives stable UUIDs).
    pub uuid: String,
    pub domain_type: DomainKind,
    pub memory_kib: u64,
    pub vcpus: u32,
    pub cpu: Option<CpuDef>,
    /// `pc`, `q35` or a versioned machine type.
    pub machine: String,
    pub firmware: Firmware,
    /// The explicit UEFI firmware of an EFI domain (None: BIOS, or an EFI
    /// domain left to libvirt's firmware autoselection). Left out of the
    /// spec hash when None, so BIOS domains keep the hashes they had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loader: Option<LoaderDef>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
    /// In order; targets from [`assign_targets`].
    pub disks: Vec<DiskDef>,
    pub nics: Vec<NicDef>,
    /// Serial console log file (`<serial type='file'>`, appended to). Empty: no serial console.
    pub console_log: String,
    pub graphics: Graphics,
    /// The QEMU guest agent's channel ([`GUEST_AGENT_CHANNEL`]). Every
    /// domain also gets a virtio-serial controller, so the channel can be
    /// hot-plugged later (libvirt cannot hot-plug the controller).
    #[serde(default)]
    pub guest_agent: bool,
    pub marker: Marker,
}

/// The name of the QEMU guest agent's virtio-serial port.
pub const GUEST_AGENT_CHANNEL: &str = "org.qemu.guest_agent.0";

/// A file-backed disk or cdrom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskDef {
    pub path: String,
    /// `qcow2` or `raw`.
    pub format: String,
    pub device: DiskDevice,
    pub bus: Bus,
    /// `vda`, `sda`, `hda`, … (see [`assign_targets`]).
    pub target: String,
    /// A cdrom is always read-only, whatever this says.
    pub readonly: bool,
    pub serial: Option<String>,
    /// Per-device boot order. When any disk has one, `<os><boot dev>` is not
    /// written (libvirt refuses both together).
    pub boot_order: Option<u32>,
}

/// One NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicDef {
    pub mac: Mac,
    pub model: NicModel,
    pub source: NicSource,
    /// Host tap name (`tapXXXXXXXXXXX`, at most 15 characters). Names starting
    /// with `vnet` are reserved by libvirt and dropped from its stored XML.
    pub target_dev: Option<String>,
    pub mtu: Option<u32>,
}

/// What a NIC plugs into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NicSource {
    /// `<interface type='bridge'>` on a Linux bridge (also the `qbr` bridge of a hybrid plug).
    Bridge { bridge: String },
    /// `<interface type='bridge'>` with `<virtualport type='openvswitch'>`: libvirt adds the tap to OVS.
    Ovs { bridge: String, interface_id: String },
    /// `<interface type='network'>` on a libvirt network.
    Network { network: String },
}

/// libvirt's name of a disk bus.
pub fn bus_str(bus: Bus) -> &'static str {
    match bus {
        Bus::Virtio => "virtio",
        Bus::Scsi => "scsi",
        Bus::Sata => "sata",
        Bus::Ide => "ide",
    }
}

/// libvirt's name of a NIC model.
pub fn nic_model_str(m: NicModel) -> &'static str {
    match m {
        NicModel::Virtio => "virtio",
        NicModel::E1000 => "e1000",
        NicModel::Rtl8139 => "rtl8139",
    }
}

/// libvirt's name of a CPU mode.
pub fn cpu_mode_str(m: CpuMode) -> &'static str {
    match m {
        CpuMode::HostModel => "host-model",
        CpuMode::HostPassthrough => "host-passthrough",
        CpuMode::Maximum => "maximum",
        CpuMode::Custom => "custom",
    }
}

/// The machine family: `"pc"` for `pc`, `pc-i440fx-7.2`, `pc-1.3`; `"q35"`
/// for `q35`, `pc-q35-7.2`; anything else is its own family.
pub fn machine_family(machine: &str) -> &str {
    if machine == "q35" || machine.starts_with("pc-q35-") {
        "q35"
    } else if machine == "pc" || machine.starts_with("pc-i440fx-") || machine.strip_prefix("pc-").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit())) {
        "pc"
    } else {
        machine
    }
}

/// Whether an observed machine satisfies a desired one: equal, or the desired
/// one is a family alias (`pc`, `q35`) that libvirt expanded to a versioned
/// type of that family. `pc-i440fx-7.2` desired vs `pc-i440fx-8.0` observed is a change.
pub fn machines_match(desired: &str, observed: &str) -> bool {
    desired == observed || ((desired == "pc" || desired == "q35") && machine_family(observed) == desired)
}

/// The bus a disk ends up on: the declared one, or the default (virtio for a
/// disk; for a cdrom ide on `pc` machines and sata on `q35`). An `ide` bus on a
/// q35 machine becomes `sata` (q35 has no IDE controller; libvirt refuses it,
/// and the guest sees the same ATA device on AHCI).
pub fn effective_bus(device: DiskDevice, bus: Option<Bus>, machine: &str) -> Bus {
    let q35 = machine_family(machine) == "q35";
    match (device, bus) {
        (_, Some(Bus::Ide)) if q35 => Bus::Sata,
        (_, Some(b)) => b,
        (DiskDevice::Disk, None) => Bus::Virtio,
        (DiskDevice::Cdrom, None) if q35 => Bus::Sata,
        (DiskDevice::Cdrom, None) => Bus::Ide,
    }
}

/// Guest device names, Nova blockinfo style, in declared order: virtio
/// `vda, vdb, …`; scsi and sata share `sda, sdb, …`; ide `hda, hdb, …`; after
/// `z` come `aa, ab, …` like the kernel. Each bus goes through
/// [`effective_bus`] (so `ide` on q35 is named as sata).
pub fn assign_targets(disks: &[(DiskDevice, Bus)], machine: &str) -> Vec<String> {
    let (mut vd, mut sd, mut hd) = (0usize, 0usize, 0usize);
    disks
        .iter()
        .map(|(device, bus)| {
            let (prefix, counter) = match effective_bus(*device, Some(*bus), machine) {
                Bus::Virtio => ("vd", &mut vd),
                Bus::Scsi | Bus::Sata => ("sd", &mut sd),
                Bus::Ide => ("hd", &mut hd),
            };
            let name = format!("{prefix}{}", disk_letters(*counter));
            *counter += 1;
            name
        })
        .collect()
}

/// 0 → a, 25 → z, 26 → aa, 701 → zz, 702 → aaa (the kernel's sd naming).
fn disk_letters(mut i: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Target names starting with these are generated by libvirt and dropped
/// from the inactive XML, so they are not configuration.
fn normalize_target_dev(dev: Option<&str>) -> Option<String> {
    match dev {
        Some(d) if !d.is_empty() && !d.starts_with("vnet") && !d.starts_with("macvtap") && !d.starts_with("macvlan") => Some(xml_safe(d)),
        _ => None,
    }
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(xml_safe)
}

fn boots_from_os(d: &DomainDef) -> bool {
    d.kernel.as_deref().is_none_or(str::is_empty) && d.disks.iter().all(|x| x.boot_order.is_none())
}

// ---------------------------------------------------------------- writing

/// The marker element alone, for `virDomainSetMetadata` (libvirt puts it
/// in virtform's namespace under the `virtform` prefix): how an import
/// marks a domain without redefining it.
pub fn marker_element(m: &Marker) -> String {
    let mut w = XmlWriter::new();
    w.empty("instance", &[("stack", &m.stack), ("address", &m.address), ("spec-hash", &m.spec_hash)]);
    w.finish()
}

/// The whole domain document. Deterministic; every value escaped.
pub fn domain_xml(d: &DomainDef) -> String {
    let mut w = XmlWriter::new();
    w.start("domain", &[("type", d.domain_type.as_str())]);
    w.text("name", &[], &d.name);
    if !d.uuid.is_empty() {
        w.text("uuid", &[], &d.uuid);
    }
    w.start("metadata", &[]);
    let xmlns = format!("xmlns:{PREFIX}");
    let tag = format!("{PREFIX}:instance");
    w.empty(&tag, &[(&xmlns, NS), ("stack", &d.marker.stack), ("address", &d.marker.address), ("spec-hash", &d.marker.spec_hash)]);
    w.end("metadata");
    let mem = d.memory_kib.to_string();
    w.text("memory", &[("unit", "KiB")], &mem);
    w.text("currentMemory", &[("unit", "KiB")], &mem);
    w.text("vcpu", &[], &d.vcpus.to_string());

    // EFI with an explicit loader (what virtform's lowering always gives):
    // libvirt stores the paths as written, so the inactive XML reads back
    // unchanged; autoselection (`<os firmware='efi'>`) only for a
    // definition without one.
    let loader = d.loader.as_ref().filter(|_| d.firmware == Firmware::Efi);
    let autoselect = d.firmware == Firmware::Efi && loader.is_none();
    w.start("os", if autoselect { &[("firmware", "efi")] } else { &[] });
    w.text("type", &[("arch", "x86_64"), ("machine", &d.machine)], "hvm");
    if autoselect {
        w.start("firmware", &[]);
        w.empty("feature", &[("enabled", "no"), ("name", "enrolled-keys")]);
        w.empty("feature", &[("enabled", "no"), ("name", "secure-boot")]);
        w.end("firmware");
    }
    if let Some(l) = loader {
        if l.secure {
            w.text("loader", &[("readonly", "yes"), ("secure", "yes"), ("type", "pflash")], &l.code);
        } else {
            w.text("loader", &[("readonly", "yes"), ("type", "pflash")], &l.code);
        }
        w.text("nvram", &[("template", &l.vars_template)], &l.nvram);
    }
    for (tag, v) in [("kernel", &d.kernel), ("initrd", &d.initrd), ("cmdline", &d.cmdline)] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            w.text(tag, &[], v);
        }
    }
    if boots_from_os(d) {
        w.empty("boot", &[("dev", "hd")]);
    }
    w.end("os");

    // ACPI and APIC: without ACPI, QEMU refuses PCI hot-plug ("Bus 'pci.0'
    // does not support hotplugging"), also under TCG.
    w.start("features", &[]);
    w.empty("acpi", &[]);
    w.empty("apic", &[]);
    if loader.is_some_and(|l| l.secure) {
        // Secure Boot firmware refuses to run without SMM (q35 only).
        w.empty("smm", &[("state", "on")]);
    }
    w.end("features");

    if let Some(cpu) = &d.cpu {
        match (cpu.mode, cpu.model.as_deref()) {
            (CpuMode::Custom, Some(model)) => {
                w.start("cpu", &[("mode", "custom"), ("match", "exact")]);
                w.text("model", &[("fallback", "allow")], model);
                w.end("cpu");
            }
            (mode, _) => w.empty("cpu", &[("mode", cpu_mode_str(mode))]),
        }
    }
    w.empty("clock", &[("offset", "utc")]);
    w.text("on_poweroff", &[], "destroy");
    w.text("on_reboot", &[], "restart");
    w.text("on_crash", &[], "destroy");

    w.start("devices", &[]);
    for disk in &d.disks {
        write_disk(&mut w, disk);
    }
    if machine_family(&d.machine) == "q35" {
        // Index 0 must be the root complex; without explicit indexes libvirt
        // would give 0 to the first root port and refuse the domain.
        w.empty("controller", &[("type", "pci"), ("index", "0"), ("model", "pcie-root")]);
        for i in 1..=q35_root_ports(d) {
            w.empty("controller", &[("type", "pci"), ("index", &i.to_string()), ("model", "pcie-root-port")]);
        }
    }
    for nic in &d.nics {
        write_nic(&mut w, nic);
    }
    // Always there, so that the agent channel can be hot-plugged into a
    // domain that was defined without it (libvirt cannot hot-plug the
    // controller itself: "'virtio-serial' controller cannot be hot plugged").
    w.empty("controller", &[("type", "virtio-serial"), ("index", "0")]);
    if d.guest_agent {
        write_agent_channel(&mut w);
    }
    if !d.console_log.is_empty() {
        w.start("serial", &[("type", "file")]);
        w.empty("source", &[("path", &d.console_log), ("append", "on")]);
        w.empty("target", &[("port", "0")]);
        w.end("serial");
        w.start("console", &[("type", "file")]);
        w.empty("source", &[("path", &d.console_log), ("append", "on")]);
        w.empty("target", &[("type", "serial"), ("port", "0")]);
        w.end("console");
    }
    let gtype = match d.graphics {
        Graphics::None => None,
        Graphics::Vnc => Some("vnc"),
        Graphics::Spice => Some("spice"),
    };
    if let Some(t) = gtype {
        w.start("graphics", &[("type", t), ("autoport", "yes")]);
        w.empty("listen", &[("type", "address"), ("address", GRAPHICS_LISTEN)]);
        w.end("graphics");
    }
    w.empty("memballoon", &[("model", "virtio")]);
    w.start("rng", &[("model", "virtio")]);
    w.text("backend", &[("model", "random")], "/dev/urandom");
    w.end("rng");
    w.end("devices");
    w.end("domain");
    w.finish()
}

/// `<disk>` for `virDomainAttachDeviceFlags`/`DetachDeviceFlags`: the same element as in [`domain_xml`].
pub fn disk_device_xml(d: &DiskDef) -> String {
    let mut w = XmlWriter::new();
    write_disk(&mut w, d);
    w.finish()
}

/// `<interface>` for live attach/detach: the same element as in [`domain_xml`].
pub fn nic_device_xml(n: &NicDef) -> String {
    let mut w = XmlWriter::new();
    write_nic(&mut w, n);
    w.finish()
}

/// The guest agent's `<channel>` for a live attach: the same element as in [`domain_xml`].
pub fn agent_channel_xml() -> String {
    let mut w = XmlWriter::new();
    write_agent_channel(&mut w);
    w.finish()
}

/// `<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>`:
/// libvirt picks the socket path (under /var/lib/libvirt/qemu/channel) and
/// the virtio-serial port.
fn write_agent_channel(w: &mut XmlWriter) {
    w.start("channel", &[("type", "unix")]);
    w.empty("target", &[("type", "virtio"), ("name", GUEST_AGENT_CHANNEL)]);
    w.end("channel");
}

fn write_disk(w: &mut XmlWriter, d: &DiskDef) {
    w.start("disk", &[("type", "file"), ("device", d.device.as_str())]);
    // No cache='none': it means O_DIRECT, which tmpfs (and overlayfs on older
    // kernels) refuse, and virtform's disks often live there in CI. QEMU's
    // default (writeback) is safe for a guest that flushes, and fast under TCG.
    w.empty("driver", &[("name", "qemu"), ("type", &d.format)]);
    w.empty("source", &[("file", &d.path)]);
    w.empty("target", &[("dev", &d.target), ("bus", bus_str(d.bus))]);
    if d.readonly || d.device == DiskDevice::Cdrom {
        w.empty("readonly", &[]);
    }
    if let Some(s) = d.serial.as_deref().filter(|s| !s.is_empty()) {
        w.text("serial", &[], s);
    }
    if let Some(o) = d.boot_order {
        w.empty("boot", &[("order", &o.to_string())]);
    }
    w.end("disk");
}

fn write_nic(w: &mut XmlWriter, n: &NicDef) {
    let mac = n.mac.to_string();
    match &n.source {
        NicSource::Bridge { bridge } => {
            w.start("interface", &[("type", "bridge")]);
            w.empty("mac", &[("address", &mac)]);
            w.empty("source", &[("bridge", bridge)]);
        }
        NicSource::Ovs { bridge, interface_id } => {
            w.start("interface", &[("type", "bridge")]);
            w.empty("mac", &[("address", &mac)]);
            w.empty("source", &[("bridge", bridge)]);
            w.start("virtualport", &[("type", "openvswitch")]);
            w.empty("parameters", &[("interfaceid", interface_id)]);
            w.end("virtualport");
        }
        NicSource::Network { network } => {
            w.start("interface", &[("type", "network")]);
            w.empty("mac", &[("address", &mac)]);
            w.empty("source", &[("network", network)]);
        }
    }
    if let Some(t) = n.target_dev.as_deref().filter(|t| !t.is_empty()) {
        w.empty("target", &[("dev", t)]);
    }
    w.empty("model", &[("type", nic_model_str(n.model))]);
    if let Some(m) = n.mtu {
        w.empty("mtu", &[("size", &m.to_string())]);
    }
    w.end("interface");
}

/// A `<interface>` element that identifies an observed NIC for a detach
/// (libvirt matches interfaces by MAC; the type and source must parse).
/// None for interface types virtform does not write.
pub fn detach_nic_xml(n: &ObservedNic) -> Option<String> {
    let mac = n.mac.to_string();
    let mut w = XmlWriter::new();
    match &n.source {
        ObservedNicSource::Bridge { bridge } | ObservedNicSource::Ovs { bridge, .. } => {
            w.start("interface", &[("type", "bridge")]);
            w.empty("mac", &[("address", &mac)]);
            w.empty("source", &[("bridge", bridge)]);
        }
        ObservedNicSource::Network { network } => {
            w.start("interface", &[("type", "network")]);
            w.empty("mac", &[("address", &mac)]);
            w.empty("source", &[("network", network)]);
        }
        ObservedNicSource::Other { .. } => return None,
    }
    w.end("interface");
    Some(w.finish())
}

/// A `<disk>` element that identifies an observed disk for a detach (by target).
pub fn detach_disk_xml(d: &ObservedDisk) -> Option<String> {
    if d.disk_type != "file" {
        return None;
    }
    let mut w = XmlWriter::new();
    w.start("disk", &[("type", "file"), ("device", &d.device)]);
    if let Some(f) = &d.format {
        w.empty("driver", &[("name", "qemu"), ("type", f)]);
    }
    if let Some(p) = &d.path {
        w.empty("source", &[("file", p)]);
    }
    match &d.bus {
        Some(b) => w.empty("target", &[("dev", &d.target), ("bus", b)]),
        None => w.empty("target", &[("dev", &d.target)]),
    }
    w.end("disk");
    Some(w.finish())
}

// ---------------------------------------------------------------- reading

/// The managed fields of a domain as libvirt holds them, normalized.
///
/// Open-ended libvirt vocabularies (disk bus and device, NIC model, graphics
/// type) are kept as libvirt's strings so that something virtform never
/// writes (a floppy, a `usb` disk, an `e1000e` NIC) still parses and shows up
/// as drift instead of failing the whole observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedDomain {
    pub name: String,
    /// Lowercase, dashed.
    pub uuid: Option<String>,
    pub domain_type: DomainKind,
    pub memory_kib: u64,
    /// Defaults to `memory_kib` when absent (as libvirt does).
    pub current_memory_kib: u64,
    pub vcpus: u32,
    /// `model` only for mode custom.
    pub cpu: Option<CpuDef>,
    pub arch: Option<String>,
    /// Exactly as stored (`pc-i440fx-7.2`); see [`machine_family`], [`machines_match`].
    pub machine: String,
    pub firmware: Firmware,
    /// `<os><loader>`, when given.
    pub loader: Option<ObservedLoader>,
    /// `<os><nvram>`, when given.
    pub nvram: Option<ObservedNvram>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
    /// `<os><boot dev>` values in order.
    pub boot_devs: Vec<String>,
    /// The managed features present (`acpi`, `apic`), sorted.
    pub features: Vec<String>,
    pub clock_offset: String,
    pub on_poweroff: String,
    pub on_reboot: String,
    pub on_crash: String,
    pub disks: Vec<ObservedDisk>,
    pub nics: Vec<ObservedNic>,
    /// Path of the first file-backed serial port (else console).
    pub console_log: Option<String>,
    pub graphics: Vec<ObservedGraphics>,
    /// A virtio `<channel>` named [`GUEST_AGENT_CHANNEL`] is there (its
    /// source path, alias and port are libvirt's and not compared).
    #[serde(default)]
    pub guest_agent: bool,
    /// A virtio-serial controller (or a virtio channel or console, for
    /// which libvirt adds one) is there: the agent channel can be
    /// hot-plugged. Not compared: it only decides how a change lands.
    #[serde(default)]
    pub virtio_serial: bool,
    pub marker: Option<Marker>,
}

/// `<loader readonly=… secure=… type=…>PATH</loader>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedLoader {
    pub path: String,
    pub readonly: bool,
    pub secure: bool,
    /// `pflash` or `rom`.
    pub kind: Option<String>,
}

/// `<nvram template=…>PATH</nvram>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedNvram {
    pub path: Option<String>,
    pub template: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedDisk {
    /// `file`, `block`, `dir`, `network`, `volume`.
    pub disk_type: String,
    /// The file (or device, directory, `pool/volume`, network name); None for an empty cdrom tray.
    pub path: Option<String>,
    /// `<driver type>`: `qcow2`, `raw`, ….
    pub format: Option<String>,
    /// `disk`, `cdrom`, `floppy`, `lun`.
    pub device: String,
    /// `virtio`, `scsi`, `sata`, `ide`, ….
    pub bus: Option<String>,
    pub target: String,
    pub readonly: bool,
    pub serial: Option<String>,
    pub boot_order: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedNic {
    pub mac: Mac,
    pub model: Option<String>,
    pub source: ObservedNicSource,
    /// None when absent or libvirt-generated (`vnet…`).
    pub target_dev: Option<String>,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObservedNicSource {
    Bridge { bridge: String },
    /// Lowercase interface id.
    Ovs { bridge: String, interface_id: String },
    Network { network: String },
    /// Any other `<interface type>` (`user`, `ethernet`, `direct`, …).
    Other { kind: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedGraphics {
    /// `vnc`, `spice`, ….
    pub kind: String,
    pub listen: Option<String>,
}

/// Reads a domain (preferably `virsh dumpxml --inactive`). Ignores every
/// element and attribute virtform does not manage.
pub fn parse_domain(xml: &str) -> Result<ObservedDomain, XmlError> {
    let doc = Doc::parse_skipping(xml, "domain", NOT_READ)?;
    let root = doc.root();
    let t = root.req_attr("type")?;
    let domain_type = match t {
        "kvm" => DomainKind::Kvm,
        "qemu" => DomainKind::Qemu,
        other => return Err(XmlError::invalid(root, Some("type"), other, "\"kvm\" or \"qemu\"")),
    };
    let name = root.req_child("name")?.text().to_string();
    let uuid = root.child("uuid").map(|u| normalize_uuid(u.text())).filter(|u| !u.is_empty());
    let memory_kib = memory(root.req_child("memory")?)?;
    let current_memory_kib = match root.child("currentMemory") {
        Some(m) => memory(m)?,
        None => memory_kib,
    };
    let vcpus = match root.child("vcpu") {
        Some(v) => v.text_parse::<u32>("a number of vCPUs")?,
        None => 1,
    };
    let cpu = match root.child("cpu") {
        None => None,
        Some(c) => {
            let mode = match c.attr("mode").unwrap_or("custom") {
                "host-model" => CpuMode::HostModel,
                "host-passthrough" => CpuMode::HostPassthrough,
                "maximum" => CpuMode::Maximum,
                "custom" => CpuMode::Custom,
                other => return Err(XmlError::invalid(c, Some("mode"), other, "host-model, host-passthrough, maximum or custom")),
            };
            let model = if mode == CpuMode::Custom { c.child("model").map(|m| m.text().trim().to_string()).filter(|m| !m.is_empty()) } else { None };
            Some(CpuDef { mode, model })
        }
    };

    let os = root.req_child("os")?;
    let ostype = os.req_child("type")?;
    let machine = ostype.attr("machine").unwrap_or("").to_string();
    let arch = ostype.attr("arch").map(str::to_string);
    let firmware = match os.attr("firmware") {
        Some("efi") => Firmware::Efi,
        Some("bios") => Firmware::Bios,
        Some(other) => return Err(XmlError::invalid(os, Some("firmware"), other, "\"bios\" or \"efi\"")),
        None if os.child("loader").is_some_and(|l| l.attr("type") == Some("pflash")) => Firmware::Efi,
        None => Firmware::Bios,
    };
    let text_of = |tag: &str| os.child(tag).and_then(Elem::text_opt);
    let (kernel, initrd, cmdline) = (text_of("kernel"), text_of("initrd"), text_of("cmdline"));
    let loader = os.child("loader").map(|l| ObservedLoader {
        path: l.text().trim().to_string(),
        readonly: l.attr("readonly") == Some("yes"),
        secure: l.attr("secure") == Some("yes"),
        kind: l.attr("type").map(str::to_string),
    });
    let nvram = os.child("nvram").map(|n| ObservedNvram { path: n.text_opt().map(|p| p.trim().to_string()), template: n.attr("template").map(str::to_string) });
    let mut boot_devs: Vec<String> = os.children("boot").filter_map(|b| b.attr("dev")).map(str::to_string).collect();

    let mut features: Vec<String> = match root.child("features") {
        Some(f) => f
            .elements()
            // `<smm state='off'/>` is the absence of SMM.
            .filter(|c| c.ns().is_none() && MANAGED_FEATURES.contains(&c.name()) && !(c.name() == "smm" && c.attr("state") == Some("off")))
            .map(|c| c.name().to_string())
            .collect(),
        None => Vec::new(),
    };
    features.sort();
    features.dedup();
    let clock_offset = root.child("clock").and_then(|c| c.attr("offset")).unwrap_or("utc").to_string();
    let action = |tag: &str, default: &str| root.child(tag).map(|e| e.text().trim().to_string()).unwrap_or_else(|| default.to_string());

    let mut disks = Vec::new();
    let mut nics = Vec::new();
    let mut console_log = None;
    let mut graphics = Vec::new();
    let (mut guest_agent, mut virtio_serial) = (false, false);
    if let Some(devices) = root.child("devices") {
        for c in devices.children("channel") {
            let target = c.child("target");
            let virtio = target.is_some_and(|t| t.attr("type") == Some("virtio"));
            virtio_serial |= virtio;
            guest_agent |= virtio && target.and_then(|t| t.attr("name")) == Some(GUEST_AGENT_CHANNEL);
        }
        virtio_serial |= devices.children("controller").any(|c| c.attr("type") == Some("virtio-serial"))
            || devices.children("console").any(|c| c.child("target").and_then(|t| t.attr("type")) == Some("virtio"));
        for d in devices.children("disk") {
            disks.push(parse_disk(d)?);
        }
        for n in devices.children("interface") {
            nics.push(parse_nic(n)?);
        }
        console_log = devices
            .children("serial")
            .chain(devices.children("console"))
            .filter(|s| s.attr("type") == Some("file"))
            .find_map(|s| s.child("source").and_then(|src| src.attr("path")).map(str::to_string));
        for g in devices.children("graphics") {
            let listen = g
                .attr("listen")
                .or_else(|| g.children("listen").find_map(|l| l.attr("address")))
                .map(str::to_string);
            graphics.push(ObservedGraphics { kind: g.attr("type").unwrap_or("").to_string(), listen });
        }
    }

    if boot_devs.is_empty() && disks.iter().all(|d| d.boot_order.is_none()) {
        // libvirt's default, which it also writes into the stored XML (even
        // with direct kernel boot).
        boot_devs.push("hd".to_string());
    }

    let marker = root.child("metadata").and_then(|md| md.ns_child(NS, "instance")).map(|m| {
        // Unprefixed attributes; a prefixed one in our namespace is accepted too.
        let get = |n: &str| m.attr(n).or_else(|| m.ns_attr(NS, n)).unwrap_or("").to_string();
        Marker { stack: get("stack"), address: get("address"), spec_hash: get("spec-hash") }
    });

    Ok(ObservedDomain {
        name,
        uuid,
        domain_type,
        memory_kib,
        current_memory_kib,
        vcpus,
        cpu,
        arch,
        machine,
        firmware,
        loader,
        nvram,
        kernel,
        initrd,
        cmdline,
        boot_devs,
        features,
        clock_offset,
        on_poweroff: action("on_poweroff", "destroy"),
        on_reboot: action("on_reboot", "restart"),
        on_crash: action("on_crash", "destroy"),
        disks,
        nics,
        console_log,
        graphics,
        guest_agent,
        virtio_serial,
        marker,
    })
}

/// Elements [`parse_domain`] never looks at, wherever they are (PCI
/// addresses, aliases, devices virtform does not manage): left out of the
/// tree unread (with their contents), which is about a third of a typical
/// definition. None of them may be a name `parse_domain` reads anywhere.
const NOT_READ: &[&str] = &[
    "address", "alias", "input", "audio", "memballoon", "rng", "video", "sound", "redirdev", "hub", "watchdog",
    "seclabel", "emulator", "hostdev", "smartcard", "panic", "tpm", "vsock", "iommu", "filesystem", "shmem", "pm", "sysinfo", "cputune",
    "numatune", "memtune", "blkiotune", "resource", "iothreads",
];

/// Features virtform writes and therefore compares (`smm` for Secure Boot).
const MANAGED_FEATURES: [&str; 3] = ["acpi", "apic", "smm"];

fn memory(e: Elem<'_>) -> Result<u64, XmlError> {
    let n: u64 = e.text_parse("a whole number")?;
    scaled_to_kib(n, e.attr("unit")).map_err(|msg| XmlError::invalid(e, Some("unit"), e.attr("unit").unwrap_or(""), format!("a libvirt unit (KiB, MiB, GiB, b, …): {msg}")))
}

fn parse_disk(d: Elem<'_>) -> Result<ObservedDisk, XmlError> {
    let disk_type = d.attr("type").unwrap_or("file").to_string();
    let path = d.child("source").and_then(|s| match disk_type.as_str() {
        "block" => s.attr("dev").map(str::to_string),
        "dir" => s.attr("dir").map(str::to_string),
        "network" => s.attr("name").map(str::to_string),
        "volume" => Some(format!("{}/{}", s.attr("pool").unwrap_or(""), s.attr("volume").unwrap_or(""))),
        _ => s.attr("file").map(str::to_string),
    });
    let target = d.req_child("target")?;
    let dev = target.req_attr("dev")?.to_string();
    let boot_order = match d.child("boot") {
        Some(b) => b.attr_parse::<u32>("order", "a boot order number")?,
        None => None,
    };
    Ok(ObservedDisk {
        disk_type,
        path,
        format: d.child("driver").and_then(|x| x.attr("type")).map(str::to_string),
        device: d.attr("device").unwrap_or("disk").to_string(),
        bus: target.attr("bus").map(str::to_string),
        target: dev,
        readonly: d.child("readonly").is_some(),
        serial: d.child("serial").and_then(Elem::text_opt),
        boot_order,
    })
}

fn parse_nic(n: Elem<'_>) -> Result<ObservedNic, XmlError> {
    let mac_el = n.req_child("mac")?;
    let mac_s = mac_el.req_attr("address")?;
    let mac = Mac::parse(mac_s.trim()).map_err(|e| XmlError::invalid(mac_el, Some("address"), mac_s, e))?;
    let kind = n.attr("type").unwrap_or("");
    let src = |a: &str| n.child("source").and_then(|s| s.attr(a)).unwrap_or("").to_string();
    let source = match kind {
        "bridge" => match n.child("virtualport").filter(|v| v.attr("type") == Some("openvswitch")) {
            Some(vp) => ObservedNicSource::Ovs {
                bridge: src("bridge"),
                interface_id: vp.child("parameters").and_then(|p| p.attr("interfaceid")).map(normalize_uuid).unwrap_or_default(),
            },
            None => ObservedNicSource::Bridge { bridge: src("bridge") },
        },
        "network" => ObservedNicSource::Network { network: src("network") },
        other => ObservedNicSource::Other { kind: other.to_string() },
    };
    let mtu = match n.child("mtu") {
        Some(m) => m.attr_parse::<u32>("size", "an MTU in bytes")?,
        None => None,
    };
    Ok(ObservedNic {
        mac,
        model: n.child("model").and_then(|m| m.attr("type")).map(str::to_string),
        source,
        target_dev: normalize_target_dev(n.child("target").and_then(|t| t.attr("dev"))),
        mtu,
    })
}

// ---------------------------------------------------------------- comparing

impl ObservedDomain {
    /// What libvirt should hold after defining `d`: the desired side of a comparison.
    pub fn from_def(d: &DomainDef) -> ObservedDomain {
        ObservedDomain {
            name: xml_safe(&d.name),
            uuid: Some(normalize_uuid(&d.uuid)).filter(|u| !u.is_empty()),
            domain_type: d.domain_type,
            memory_kib: d.memory_kib,
            current_memory_kib: d.memory_kib,
            vcpus: d.vcpus,
            cpu: d.cpu.as_ref().map(|c| CpuDef {
                mode: c.mode,
                model: if c.mode == CpuMode::Custom { c.model.as_deref().map(|m| xml_safe(m.trim())).filter(|m| !m.is_empty()) } else { None },
            }),
            arch: Some("x86_64".to_string()),
            machine: xml_safe(&d.machine),
            firmware: d.firmware,
            loader: d.loader.as_ref().filter(|_| d.firmware == Firmware::Efi).map(|l| ObservedLoader { path: xml_safe(l.code.trim()), readonly: true, secure: l.secure, kind: Some("pflash".into()) }),
            nvram: d.loader.as_ref().filter(|_| d.firmware == Firmware::Efi).map(|l| ObservedNvram { path: non_empty(Some(l.nvram.trim())), template: Some(xml_safe(&l.vars_template)) }),
            kernel: non_empty(d.kernel.as_deref()),
            initrd: non_empty(d.initrd.as_deref()),
            cmdline: non_empty(d.cmdline.as_deref()),
            // libvirt adds <boot dev='hd'/> whenever no device has a boot order.
            boot_devs: if d.disks.iter().all(|x| x.boot_order.is_none()) { vec!["hd".to_string()] } else { Vec::new() },
            features: ["acpi", "apic"].into_iter().chain(d.loader.as_ref().filter(|l| l.secure && d.firmware == Firmware::Efi).map(|_| "smm")).map(str::to_string).collect(),
            clock_offset: "utc".into(),
            on_poweroff: "destroy".into(),
            on_reboot: "restart".into(),
            on_crash: "destroy".into(),
            disks: d.disks.iter().map(ObservedDisk::from_def).collect(),
            nics: d.nics.iter().map(ObservedNic::from_def).collect(),
            console_log: non_empty(Some(&d.console_log)),
            graphics: match d.graphics {
                Graphics::None => Vec::new(),
                Graphics::Vnc => vec![ObservedGraphics { kind: "vnc".into(), listen: Some(GRAPHICS_LISTEN.into()) }],
                Graphics::Spice => vec![ObservedGraphics { kind: "spice".into(), listen: Some(GRAPHICS_LISTEN.into()) }],
            },
            guest_agent: d.guest_agent,
            virtio_serial: true,
            marker: Some(Marker { stack: xml_safe(&d.marker.stack), address: xml_safe(&d.marker.address), spec_hash: xml_safe(&d.marker.spec_hash) }),
        }
    }

    /// [`machine_family`] of this domain's machine.
    pub fn machine_family(&self) -> &str {
        machine_family(&self.machine)
    }

    /// Replaces values libvirt expanded from an alias by the desired spelling
    /// when they are equivalent (today: the machine type, see
    /// [`machines_match`]). Call on the observed side before comparing.
    pub fn align_aliases(&mut self, desired: &ObservedDomain) {
        if let std::borrow::Cow::Owned(o) = self.aligned_to(desired) {
            *self = o;
        }
    }

    /// [`align_aliases`](Self::align_aliases) as a value, borrowing when
    /// nothing needs replacing (most comparisons of a large plan).
    pub fn aligned_to(&self, desired: &ObservedDomain) -> std::borrow::Cow<'_, ObservedDomain> {
        let machine = self.machine != desired.machine && machines_match(&desired.machine, &self.machine);
        let cpu = desired.cpu.is_none() && self.cpu.as_ref().is_some_and(is_default_cpu);
        if !machine && !cpu {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut o = self.clone();
        if machine {
            o.machine = desired.machine.clone();
        }
        if cpu {
            o.cpu = None;
        }
        std::borrow::Cow::Owned(o)
    }

    /// A canonical copy: disks sorted by target (vda < vdb < … < vdz < vdaa),
    /// NICs by MAC (their order in the XML is not what the guest sees; PCI
    /// addresses are), graphics by type, features sorted.
    pub fn normalized(&self) -> ObservedDomain {
        self.normalized_cow().into_owned()
    }

    /// [`normalized`](Self::normalized), borrowing when already canonical.
    pub fn normalized_cow(&self) -> std::borrow::Cow<'_, ObservedDomain> {
        let sorted = self.disks.windows(2).all(|w| target_key(&w[0].target) <= target_key(&w[1].target))
            && self.nics.windows(2).all(|w| w[0].mac <= w[1].mac)
            && self.graphics.windows(2).all(|w| (&w[0].kind, &w[0].listen) <= (&w[1].kind, &w[1].listen))
            && self.features.windows(2).all(|w| w[0] < w[1]);
        if sorted {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut n = self.clone();
        n.disks.sort_by(|a, b| target_key(&a.target).cmp(&target_key(&b.target)));
        n.nics.sort_by_key(|x| x.mac);
        n.graphics.sort_by(|a, b| (&a.kind, &a.listen).cmp(&(&b.kind, &b.listen)));
        n.features.sort();
        n.features.dedup();
        std::borrow::Cow::Owned(n)
    }

    /// The managed fields as canonical XML: sorted as [`normalized`](Self::normalized),
    /// attributes in alphabetical order, one line per device, so that a
    /// unified diff of two renderings shows only real changes.
    pub fn normalized_xml(&self) -> String {
        let n = self.normalized();
        let mut w = XmlWriter::new();
        w.start("domain", &[("type", n.domain_type.as_str())]);
        w.text("name", &[], &n.name);
        if let Some(u) = &n.uuid {
            w.text("uuid", &[], u);
        }
        if let Some(m) = &n.marker {
            w.empty("marker", &[("address", &m.address), ("spec-hash", &m.spec_hash), ("stack", &m.stack)]);
        }
        w.text("memory", &[("unit", "KiB")], &n.memory_kib.to_string());
        w.text("currentMemory", &[("unit", "KiB")], &n.current_memory_kib.to_string());
        w.text("vcpu", &[], &n.vcpus.to_string());
        match &n.cpu {
            None => {}
            Some(CpuDef { mode, model: Some(model) }) => w.empty("cpu", &[("mode", cpu_mode_str(*mode)), ("model", model)]),
            Some(CpuDef { mode, model: None }) => w.empty("cpu", &[("mode", cpu_mode_str(*mode))]),
        }
        let fw = match n.firmware {
            Firmware::Bios => "bios",
            Firmware::Efi => "efi",
        };
        let mut os_attrs = Vec::new();
        if let Some(a) = &n.arch {
            os_attrs.push(("arch", a.as_str()));
        }
        os_attrs.push(("firmware", fw));
        os_attrs.push(("machine", n.machine.as_str()));
        w.start("os", &os_attrs);
        if let Some(l) = &n.loader {
            let mut a = vec![("path", l.path.as_str()), ("readonly", if l.readonly { "yes" } else { "no" }), ("secure", if l.secure { "yes" } else { "no" })];
            if let Some(k) = &l.kind {
                a.push(("type", k));
            }
            w.empty("loader", &a);
        }
        if let Some(nv) = &n.nvram {
            let mut a = Vec::new();
            if let Some(p) = &nv.path {
                a.push(("path", p.as_str()));
            }
            if let Some(t) = &nv.template {
                a.push(("template", t.as_str()));
            }
            w.empty("nvram", &a);
        }
        for (tag, v) in [("kernel", &n.kernel), ("initrd", &n.initrd), ("cmdline", &n.cmdline)] {
            if let Some(v) = v {
                w.text(tag, &[], v);
            }
        }
        for b in &n.boot_devs {
            w.empty("boot", &[("dev", b)]);
        }
        w.end("os");
        if n.features.is_empty() {
            w.empty("features", &[]);
        } else {
            w.start("features", &[]);
            for f in &n.features {
                w.empty(f, &[]);
            }
            w.end("features");
        }
        w.empty("clock", &[("offset", &n.clock_offset)]);
        w.empty("lifecycle", &[("on_crash", &n.on_crash), ("on_poweroff", &n.on_poweroff), ("on_reboot", &n.on_reboot)]);
        w.start("devices", &[]);
        for d in &n.disks {
            let boot = d.boot_order.map(|b| b.to_string());
            let mut a: Vec<(&str, &str)> = Vec::new();
            if let Some(b) = &boot {
                a.push(("boot", b));
            }
            if let Some(b) = &d.bus {
                a.push(("bus", b));
            }
            a.push(("device", &d.device));
            if let Some(f) = &d.format {
                a.push(("format", f));
            }
            a.push(("readonly", if d.readonly { "yes" } else { "no" }));
            if let Some(s) = &d.serial {
                a.push(("serial", s));
            }
            if let Some(p) = &d.path {
                a.push(("source", p));
            }
            a.push(("target", &d.target));
            a.push(("type", &d.disk_type));
            w.empty("disk", &a);
        }
        for nic in &n.nics {
            let mac = nic.mac.to_string();
            let mtu = nic.mtu.map(|m| m.to_string());
            let mut a: Vec<(&str, &str)> = Vec::new();
            let (kind, src, ifid) = match &nic.source {
                ObservedNicSource::Bridge { bridge } => ("bridge", Some(bridge.as_str()), None),
                ObservedNicSource::Ovs { bridge, interface_id } => ("ovs", Some(bridge.as_str()), Some(interface_id.as_str())),
                ObservedNicSource::Network { network } => ("network", Some(network.as_str()), None),
                ObservedNicSource::Other { kind } => (kind.as_str(), None, None),
            };
            if let Some(i) = ifid {
                a.push(("interfaceid", i));
            }
            a.push(("mac", &mac));
            if let Some(m) = &nic.model {
                a.push(("model", m));
            }
            if let Some(m) = &mtu {
                a.push(("mtu", m));
            }
            if let Some(s) = src {
                a.push(("source", s));
            }
            if let Some(t) = &nic.target_dev {
                a.push(("target", t));
            }
            a.push(("type", kind));
            w.empty("interface", &a);
        }
        if n.guest_agent {
            w.empty("channel", &[("name", GUEST_AGENT_CHANNEL), ("type", "virtio")]);
        }
        if let Some(c) = &n.console_log {
            w.empty("console", &[("log", c)]);
        }
        for g in &n.graphics {
            match &g.listen {
                Some(l) => w.empty("graphics", &[("listen", l), ("type", &g.kind)]),
                None => w.empty("graphics", &[("type", &g.kind)]),
            }
        }
        w.end("devices");
        w.end("domain");
        w.finish()
    }

    /// The managed fields that differ between `self` (desired, from
    /// [`from_def`](Self::from_def)) and `observed`, after alias alignment and
    /// normalization. Names: `name`, `uuid`, `domain_type`, `memory`,
    /// `current_memory`, `vcpus`, `cpu`, `arch`, `machine`, `firmware`,
    /// `loader`, `nvram`, `kernel`, `initrd`, `cmdline`, `boot`, `features`, `clock`,
    /// `lifecycle`, `console_log`, `graphics`, `guest_agent`, `marker`, and per device
    /// `disk:<target>` and `nic:<mac>` (added, removed or changed). Empty: no change.
    pub fn changed_fields(&self, observed: &ObservedDomain) -> Vec<String> {
        // Copies only where aligning or sorting changes something (a
        // converged plan compares 1,000 of these: three copies each were
        // a sixth of its serial part).
        let obs = observed.aligned_to(self);
        let (a, b) = (self.normalized_cow(), obs.normalized_cow());
        let mut out = Vec::new();
        let mut check = |name: &str, differ: bool| {
            if differ {
                out.push(name.to_string());
            }
        };
        check("name", a.name != b.name);
        check("uuid", a.uuid != b.uuid);
        check("domain_type", a.domain_type != b.domain_type);
        check("memory", a.memory_kib != b.memory_kib);
        check("current_memory", a.current_memory_kib != b.current_memory_kib);
        check("vcpus", a.vcpus != b.vcpus);
        check("cpu", a.cpu != b.cpu);
        check("arch", a.arch != b.arch);
        check("machine", a.machine != b.machine);
        check("firmware", a.firmware != b.firmware);
        check("loader", a.loader != b.loader);
        check("nvram", a.nvram != b.nvram);
        check("kernel", a.kernel != b.kernel);
        check("initrd", a.initrd != b.initrd);
        check("cmdline", a.cmdline != b.cmdline);
        check("boot", a.boot_devs != b.boot_devs);
        check("features", a.features != b.features);
        check("clock", a.clock_offset != b.clock_offset);
        check("lifecycle", (&a.on_poweroff, &a.on_reboot, &a.on_crash) != (&b.on_poweroff, &b.on_reboot, &b.on_crash));
        check("console_log", a.console_log != b.console_log);
        check("graphics", a.graphics != b.graphics);
        check("guest_agent", a.guest_agent != b.guest_agent);
        check("marker", a.marker != b.marker);
        let mut targets: Vec<&str> = a.disks.iter().chain(&b.disks).map(|d| d.target.as_str()).collect();
        targets.sort_by_key(|t| target_key(t));
        targets.dedup();
        for t in targets {
            let x: Vec<_> = a.disks.iter().filter(|d| d.target == t).collect();
            let y: Vec<_> = b.disks.iter().filter(|d| d.target == t).collect();
            if x != y {
                out.push(format!("disk:{t}"));
            }
        }
        let mut macs: Vec<Mac> = a.nics.iter().chain(&b.nics).map(|n| n.mac).collect();
        macs.sort();
        macs.dedup();
        for m in macs {
            let x: Vec<_> = a.nics.iter().filter(|n| n.mac == m).collect();
            let y: Vec<_> = b.nics.iter().filter(|n| n.mac == m).collect();
            if x != y {
                out.push(format!("nic:{m}"));
            }
        }
        out
    }
}

/// The CPU libvirt 9.0 writes into the stored XML of an x86_64 domain
/// defined without `<cpu>`: `<cpu mode='custom' match='exact' check='none'>
/// <model fallback='forbid'>qemu64</model></cpu>` (QEMU's default model).
/// It is what "no cpu" means, so it is not a change.
pub const DEFAULT_CPU_MODEL: &str = "qemu64";

fn is_default_cpu(c: &CpuDef) -> bool {
    c.mode == CpuMode::Custom && c.model.as_deref() == Some(DEFAULT_CPU_MODEL)
}

/// The texts to diff for a plan: `desired.normalized_xml()` and the observed
/// one after [`ObservedDomain::align_aliases`].
pub fn normalized_pair(desired: &ObservedDomain, observed: &ObservedDomain) -> (String, String) {
    (desired.normalized_xml(), observed.aligned_to(desired).normalized_xml())
}

/// Sort key of a target name: prefix, then length, then name (vdz < vdaa).
fn target_key(t: &str) -> (&str, usize, &str) {
    let split = t.len().min(2);
    (t.get(..split).unwrap_or(t), t.len(), t)
}

impl ObservedDisk {
    pub fn from_def(d: &DiskDef) -> ObservedDisk {
        ObservedDisk {
            disk_type: "file".into(),
            path: Some(xml_safe(&d.path)),
            format: Some(xml_safe(&d.format)),
            device: d.device.as_str().into(),
            bus: Some(bus_str(d.bus).into()),
            target: xml_safe(&d.target),
            readonly: d.readonly || d.device == DiskDevice::Cdrom,
            serial: non_empty(d.serial.as_deref()),
            boot_order: d.boot_order,
        }
    }
}

impl ObservedNic {
    pub fn from_def(n: &NicDef) -> ObservedNic {
        ObservedNic {
            mac: n.mac,
            model: Some(nic_model_str(n.model).into()),
            source: match &n.source {
                NicSource::Bridge { bridge } => ObservedNicSource::Bridge { bridge: xml_safe(bridge) },
                NicSource::Ovs { bridge, interface_id } => ObservedNicSource::Ovs { bridge: xml_safe(bridge), interface_id: normalize_uuid(&xml_safe(interface_id)) },
                NicSource::Network { network } => ObservedNicSource::Network { network: xml_safe(network) },
            },
            target_dev: normalize_target_dev(n.target_dev.as_deref()),
            mtu: n.mtu,
        }
    }
}

#[cfg(test)]
#[path = "domain_tests.rs"]
mod tests;
