//! cloud-init NoCloud seed contents (`meta-data`, `user-data`,
//! `network-config`) and the seed image file.
//!
//! The input ([`SeedInput`]) is independent of the model so the planner,
//! the apply engine and tests can all build one. Content generation is pure;
//! only [`write_seed`] touches the file system.
//!
//! What is generated when the configuration leaves a file out:
//! - `meta-data`: `instance-id` and `local-hostname`.
//! - `user-data`: `#cloud-config` with `ssh_authorized_keys` (or an empty
//!   mapping). Keys given next to a `#cloud-config` user-data are merged into
//!   its `ssh_authorized_keys` list; next to any other kind of user-data
//!   (a shell script, MIME multipart, a Jinja template) they are an error,
//!   since there is no safe place to put them.
//! - `network-config` (version 2): only when some NIC has a fixed address;
//!   each NIC is matched by MAC and renamed `eth<N>` (its position), fixed
//!   NICs get `addresses`, the others `dhcp4: true`; the first gateway of
//!   each address family becomes the one default route of that family, as
//!   `gateway4`/`gateway6`: every renderer turns those into the interface's
//!   own gateway (ifupdown's `gateway` line), while a `routes` entry to
//!   0.0.0.0/0 becomes, with Debian 12's ifupdown renderer, a `post-up route
//!   add … || true` that silently does nothing without net-tools (seen on
//!   the real image: the guest had no default route).

use crate::host::exec::{Executor, FileKind};
use super::iso::{IsoError, write_iso};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The volume label cloud-init's NoCloud data source looks for.
pub const SEED_VOLUME_ID: &str = "cidata";
/// Mode of seed files: they may hold secrets.
pub const SEED_FILE_MODE: u32 = 0o600;
/// Mode of directories [`write_seed`] creates: traversable but not listable
/// by others. Not 0700: under `qemu:///system` QEMU runs as `libvirt-qemu`
/// and opens the seed itself (libvirt hands it the file, not its directory),
/// so a 0700 root-owned parent makes the domain fail to start with
/// "Permission denied". The file itself stays 0600.
pub const SEED_DIR_MODE: u32 = 0o711;

const CLOUD_CONFIG: &str = "#cloud-config";
const KEYS: &str = "ssh_authorized_keys";

/// One NIC of the instance, in the order the guest sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedNic {
    /// `52:54:00:12:34:56` (any case).
    pub mac: String,
    /// A fixed address and its prefix length; `None`: DHCP.
    pub ip: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    /// DNS servers for a NIC with a fixed address (a DHCP NIC gets them from
    /// its DHCP server).
    pub dns: Vec<IpAddr>,
    pub mtu: Option<u32>,
}

/// Everything a seed is made of.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeedInput {
    pub instance_id: String,
    pub hostname: String,
    /// Used as given (except for merged keys); may hold secrets.
    pub user_data: Option<String>,
    /// Used as given; default: instance-id and local-hostname.
    pub meta_data: Option<String>,
    /// Used as given; default: generated from `nics` when one has a fixed IP.
    pub network_config: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
    pub nics: Vec<SeedNic>,
    /// The guest's SSH host key, given to cloud-init (`ssh_keys`) so that
    /// virtform can verify the guest it connects to. Not part of the seed's
    /// name: the apply adds it when it writes the seed.
    pub ssh_host_key: Option<HostKey>,
}

/// An ed25519 SSH host key pair in OpenSSH text form.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct HostKey {
    pub private: String,
    /// `ssh-ed25519 AAAA… comment`
    pub public: String,
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostKey {{ private: (sensitive), public: {:?} }}", self.public)
    }
}

/// Why a seed cannot be made. Never carries the contents of user-data,
/// meta-data or network-config.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cloud-init: {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("cloud-init: {file} is not valid YAML{}", location(*.line, *.column))]
    InvalidYaml {
        file: &'static str,
        line: usize,
        column: usize,
    },
    #[error(
        "cloud-init: ssh_authorized_keys can only be merged into a #cloud-config user-data, \
         and this user-data does not start with #cloud-config (a script, MIME multipart or template?): \
         put the keys into the user-data yourself, or drop ssh_authorized_keys"
    )]
    KeysNeedCloudConfig,
    #[error(
        "cloud-init: user-data: cannot merge ssh_authorized_keys: {reason}; \
         list the keys in the user-data's own ssh_authorized_keys instead"
    )]
    CannotMergeKeys { reason: String },
    #[error(
        "cloud-init: this instance has a `connection`, so virtform hands the guest its SSH host key in the \
         user-data, and this user-data does not start with #cloud-config (a script, MIME multipart or template?): \
         make it a #cloud-config document, or drop the `connection`"
    )]
    HostKeyNeedsCloudConfig,
    #[error(
        "cloud-init: user-data sets `ssh_keys`, but this instance has a `connection`: virtform generates the \
         guest's SSH host key itself (to verify every connection), so remove `ssh_keys` from the user-data"
    )]
    HostKeyGiven,
    #[error(transparent)]
    Iso(#[from] IsoError),
    #[error("cloud-init seed {path}: cannot {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn location(line: usize, column: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" (line {line}, column {column})")
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SeedError {
    SeedError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Parses YAML text; errors say where, never what.
fn parse_yaml(file: &'static str, text: &str) -> Result<serde_yaml::Value, SeedError> {
    serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        SeedError::InvalidYaml { file, line, column }
    })
}

fn to_yaml<T: Serialize>(file: &'static str, value: &T) -> Result<String, SeedError> {
    serde_yaml::to_string(value).map_err(|_| invalid(file, "cannot be serialized as YAML"))
}

/// The seed's files, sorted by name: `meta-data`, `network-config` (when
/// given or generated), `user-data`.
pub fn seed_files(input: &SeedInput) -> Result<Vec<(String, Vec<u8>)>, SeedError> {
    let mut files = vec![("meta-data".to_string(), meta_data(input)?.into_bytes())];
    if let Some(net) = network_config(input)? {
        files.push(("network-config".to_string(), net.into_bytes()));
    }
    files.push(("user-data".to_string(), user_data(input)?.into_bytes()));
    Ok(files)
}

/// The seed image (ISO 9660, label `cidata`, Rock Ridge and Joliet names).
/// Deterministic: the same input gives the same bytes.
pub fn seed_iso(input: &SeedInput) -> Result<Vec<u8>, SeedError> {
    Ok(write_iso(SEED_VOLUME_ID, &seed_files(input)?)?)
}

/// The sha256 (hex) of the seed image [`write_seed`] would write for this
/// input, so a planner can tell whether a seed on disk is current without
/// writing anything: compare it with the file's sha256.
pub fn seed_hash(input: &SeedInput) -> Result<String, SeedError> {
    Ok(sha256_hex(&seed_iso(input)?))
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::model::common::hex(&Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------
// meta-data
// ---------------------------------------------------------------------------

fn meta_data(input: &SeedInput) -> Result<String, SeedError> {
    if let Some(md) = &input.meta_data {
        parse_yaml("meta-data", md)?;
        return Ok(md.clone());
    }
    if input.instance_id.trim().is_empty() {
        return Err(invalid("instance_id", "must not be empty"));
    }
    #[derive(Serialize)]
    struct MetaData<'a> {
        #[serde(rename = "instance-id")]
        instance_id: &'a str,
        #[serde(rename = "local-hostname", skip_serializing_if = "str::is_empty")]
        local_hostname: &'a str,
    }
    to_yaml11(
        "meta-data",
        &MetaData {
            instance_id: &input.instance_id,
            local_hostname: &input.hostname,
        },
    )
}

// ---------------------------------------------------------------------------
// user-data
// ---------------------------------------------------------------------------

fn check_keys(keys: &[String]) -> Result<(), SeedError> {
    for (i, k) in keys.iter().enumerate() {
        if k.trim().is_empty() {
            return Err(invalid(format!("ssh_authorized_keys[{i}]"), "empty"));
        }
        if k.contains(['\n', '\r']) {
            return Err(invalid(
                format!("ssh_authorized_keys[{i}]"),
                "one key per entry: it contains a line break",
            ));
        }
    }
    Ok(())
}

fn is_cloud_config(text: &str) -> bool {
    text.starts_with(CLOUD_CONFIG)
}

fn user_data(input: &SeedInput) -> Result<String, SeedError> {
    let text = user_data_with_keys(input)?;
    match &input.ssh_host_key {
        None => Ok(text),
        Some(_) if !is_cloud_config(&text) => Err(SeedError::HostKeyNeedsCloudConfig),
        Some(k) => merge_host_key(&text, k),
    }
}

/// Adds the host key (`ssh_keys`) to a `#cloud-config` document, and
/// `ssh_genkeytypes: [ed25519]` unless the document sets it, so that the
/// key virtform verifies is the guest's only one (cloud-init generates
/// only the listed types, and never one that exists; an empty list is a
/// schema error in cloud-init 22.4).
fn merge_host_key(text: &str, key: &HostKey) -> Result<String, SeedError> {
    use serde_yaml::Value;
    let map = match parse_yaml("user-data", text)? {
        Value::Mapping(m) => m,
        Value::Null => serde_yaml::Mapping::new(),
        _ => return Err(SeedError::CannotMergeKeys { reason: "the document is not a YAML mapping".into() }),
    };
    if map.contains_key("ssh_keys") {
        return Err(SeedError::HostKeyGiven);
    }
    let mut keys = serde_yaml::Mapping::new();
    keys.insert("ed25519_private".into(), key.private.as_str().into());
    keys.insert("ed25519_public".into(), key.public.as_str().into());
    let mut fragment = serde_yaml::Mapping::new();
    fragment.insert("ssh_keys".into(), Value::Mapping(keys));
    if !map.contains_key("ssh_genkeytypes") {
        fragment.insert("ssh_genkeytypes".into(), Value::Sequence(vec!["ed25519".into()]));
    }
    append_entries(text, map, fragment)
}

/// Adds top-level `entries` (absent from `map`, the parsed `text`) to a
/// `#cloud-config` document: appended to the user's text, kept byte for
/// byte, when the result parses to the union; else the union
/// re-serialized (see [`merge_keys`] on YAML 1.1).
fn append_entries(text: &str, map: serde_yaml::Mapping, entries: serde_yaml::Mapping) -> Result<String, SeedError> {
    use serde_yaml::Value;
    let mut appended = text.to_string();
    if !appended.ends_with('\n') {
        appended.push('\n');
    }
    appended.push_str(&to_yaml("user-data", &entries)?);
    let mut expected = map;
    expected.extend(entries);
    if serde_yaml::from_str::<Value>(&appended).ok() == Some(Value::Mapping(expected.clone())) {
        return Ok(appended);
    }
    reserialize(Value::Mapping(expected))
}

fn reserialize(doc: serde_yaml::Value) -> Result<String, SeedError> {
    if let Some(path) = yaml11_hazard(&doc, "") {
        return Err(SeedError::CannotMergeKeys {
            reason: format!(
                "the document must be re-serialized, and the string at {} would change meaning for cloud-init's \
                 YAML 1.1 parser (a word like yes/no/on/off, or something number- or date-like)",
                if path.is_empty() { "the top" } else { &path }
            ),
        });
    }
    Ok(format!("{CLOUD_CONFIG}\n{}", to_yaml("user-data", &doc)?))
}

fn user_data_with_keys(input: &SeedInput) -> Result<String, SeedError> {
    let keys = &input.ssh_authorized_keys;
    check_keys(keys)?;
    let Some(ud) = &input.user_data else {
        let mut doc = serde_yaml::Mapping::new();
        if !keys.is_empty() {
            doc.insert(
                KEYS.into(),
                keys.iter()
                    .map(|k| serde_yaml::Value::from(k.as_str()))
                    .collect(),
            );
        }
        return Ok(format!("{CLOUD_CONFIG}\n{}", to_yaml("user-data", &doc)?));
    };
    if !is_cloud_config(ud) {
        return if keys.is_empty() {
            Ok(ud.clone())
        } else {
            Err(SeedError::KeysNeedCloudConfig)
        };
    }
    let doc = parse_yaml("user-data", ud)?;
    if keys.is_empty() {
        return Ok(ud.clone());
    }
    merge_keys(ud, doc, keys)
}

/// Adds `keys` to a `#cloud-config` document's `ssh_authorized_keys`.
///
/// When the document has no such list, the list (serialized on its own) is
/// appended to the user's text, which is kept byte for byte: cloud-init reads
/// YAML 1.1 (PyYAML), serde_yaml YAML 1.2, and re-serializing would change
/// what some scalars mean there (`'yes'` would lose its quotes and become a
/// boolean). The result is parsed back and must be the original mapping plus
/// the list. Otherwise the document is re-serialized with the merged list,
/// after checking that no string in it would be read differently by YAML 1.1.
fn merge_keys(text: &str, doc: serde_yaml::Value, keys: &[String]) -> Result<String, SeedError> {
    use serde_yaml::Value;
    let mut map = match doc {
        Value::Mapping(m) => m,
        Value::Null => serde_yaml::Mapping::new(),
        _ => {
            return Err(SeedError::CannotMergeKeys {
                reason: "the document is not a YAML mapping".into(),
            });
        }
    };
    let new_keys = |existing: &[Value]| -> Vec<Value> {
        let mut seen: HashSet<&str> = existing.iter().filter_map(Value::as_str).collect();
        keys.iter()
            .filter(|k| seen.insert(k.as_str()))
            .map(|k| Value::from(k.as_str()))
            .collect()
    };
    match map.get(KEYS) {
        None => {
            let mut fragment = serde_yaml::Mapping::new();
            fragment.insert(KEYS.into(), Value::Sequence(new_keys(&[])));
            // Appended when that reads back right; else (flow style, a
            // document end marker...) re-serialized.
            return append_entries(text, map, fragment);
        }
        Some(Value::Sequence(existing)) => {
            let mut merged = existing.clone();
            merged.extend(new_keys(existing));
            map.insert(KEYS.into(), Value::Sequence(merged));
        }
        Some(Value::Null) => {
            map.insert(KEYS.into(), Value::Sequence(new_keys(&[])));
        }
        Some(_) => {
            return Err(SeedError::CannotMergeKeys {
                reason: "its ssh_authorized_keys is not a list".into(),
            });
        }
    }
    reserialize(Value::Mapping(map))
}

/// The path of the first string (key or value) that serde_yaml writes
/// unquoted but YAML 1.1 would read as a boolean, number or timestamp.
/// Conservative: it may flag a harmless string, never misses these kinds.
fn yaml11_hazard(v: &serde_yaml::Value, path: &str) -> Option<String> {
    use serde_yaml::Value;
    fn risky(s: &str) -> bool {
        let Ok(out) = serde_yaml::to_string(s) else {
            return true;
        };
        if out.starts_with(['\'', '"']) {
            return false; // serde_yaml quotes it: read back as a string everywhere
        }
        let lower = s.to_ascii_lowercase();
        let b = s.as_bytes();
        matches!(
            lower.as_str(),
            "yes" | "no" | "on" | "off" | "y" | "n" | "true" | "false" | "null" | "~"
        ) || (b
            .first()
            .is_some_and(|c| c.is_ascii_digit() || b"+-.".contains(c))
            && s.bytes()
                .all(|c| c.is_ascii_hexdigit() || b"_:.+-xXoO".contains(&c)))
            || (b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-')
    }
    match v {
        Value::String(s) if risky(s) => Some(path.to_string()),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| yaml11_hazard(item, &format!("{path}[{i}]"))),
        Value::Mapping(m) => m.iter().find_map(|(k, val)| {
            let name = match k {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            };
            let here = if path.is_empty() {
                name
            } else {
                format!("{path}.{name}")
            };
            match k {
                Value::String(s) if risky(s) => Some(here),
                _ => yaml11_hazard(val, &here),
            }
        }),
        Value::Tagged(t) => yaml11_hazard(&t.value, path),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// network-config
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct NetworkConfig {
    version: u8,
    ethernets: serde_yaml::Mapping,
}

#[derive(Serialize)]
struct Ethernet {
    #[serde(rename = "match")]
    match_: MatchMac,
    #[serde(rename = "set-name")]
    set_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    dhcp4: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    addresses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nameservers: Option<Nameservers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
}

#[derive(Serialize)]
struct Nameservers {
    addresses: Vec<String>,
}

#[derive(Serialize)]
struct MatchMac {
    macaddress: String,
}

fn normalize_mac(i: usize, mac: &str) -> Result<String, SeedError> {
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Ok(mac.to_ascii_lowercase())
    } else {
        Err(invalid(
            format!("nics[{i}].mac"),
            format!("{mac:?} is not a MAC address like 52:54:00:12:34:56"),
        ))
    }
}

fn network_config(input: &SeedInput) -> Result<Option<String>, SeedError> {
    if let Some(nc) = &input.network_config {
        parse_yaml("network-config", nc)?;
        return Ok(Some(nc.clone()));
    }
    if !input.nics.iter().any(|n| n.ip.is_some()) {
        return Ok(None);
    }
    let mut ethernets = serde_yaml::Mapping::new();
    let mut macs = HashSet::new();
    let (mut route4, mut route6) = (false, false);
    for (i, nic) in input.nics.iter().enumerate() {
        let mac = normalize_mac(i, &nic.mac)?;
        if !macs.insert(mac.clone()) {
            return Err(invalid(
                format!("nics[{i}].mac"),
                format!("{mac} is used by another NIC"),
            ));
        }
        let mut addresses = Vec::new();
        if let Some((ip, len)) = nic.ip {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if len > max {
                return Err(invalid(
                    format!("nics[{i}].ip"),
                    format!("prefix length {len} is larger than {max}"),
                ));
            }
            addresses.push(format!("{ip}/{len}"));
        }
        let (mut gateway4, mut gateway6) = (None, None);
        if let Some(gw) = nic.gateway {
            let (done, slot) = if gw.is_ipv4() { (&mut route4, &mut gateway4) } else { (&mut route6, &mut gateway6) };
            if !*done {
                *done = true;
                *slot = Some(gw.to_string());
            }
        }
        if nic.mtu == Some(0) {
            return Err(invalid(format!("nics[{i}].mtu"), "must be positive"));
        }
        let name = format!("eth{i}");
        let eth = Ethernet {
            match_: MatchMac { macaddress: mac },
            set_name: name.clone(),
            dhcp4: nic.ip.is_none().then_some(true),
            nameservers: (nic.ip.is_some() && !nic.dns.is_empty()).then(|| Nameservers { addresses: nic.dns.iter().map(|d| d.to_string()).collect() }),
            addresses,
            gateway4,
            gateway6,
            mtu: nic.mtu,
        };
        let value = serde_yaml::to_value(&eth)
            .map_err(|_| invalid("network-config", "cannot be serialized"))?;
        ethernets.insert(name.into(), value);
    }
    Ok(Some(to_yaml11("network-config", &NetworkConfig { version: 2, ethernets })?))
}

/// Serializes a document virtform generates (meta-data, network-config)
/// in block style with every string double-quoted. cloud-init reads YAML 1.1
/// (PyYAML), where plain scalars mean more than in serde_yaml's YAML 1.2: a
/// plain `52:54:00:23:42:24` (colon-separated digit groups under 60) is a
/// base-60 integer, 41135125344, and `on`/`no` are booleans. cloud-init then
/// waited for a NIC of that "MAC", failed its init-local stage and left the
/// NICs unconfigured (about one derived MAC in 80). Quoted, a string is a
/// string to both. Keys are virtform's own names, written plain.
fn to_yaml11<T: Serialize>(file: &'static str, value: &T) -> Result<String, SeedError> {
    let v = serde_yaml::to_value(value).map_err(|_| invalid(file, "cannot be serialized as YAML"))?;
    let mut out = String::new();
    match &v {
        serde_yaml::Value::Mapping(m) => emit_mapping(&mut out, m, 0),
        other => {
            out.push_str(&scalar11(other));
            out.push('\n');
        }
    }
    Ok(out)
}

fn emit_mapping(out: &mut String, m: &serde_yaml::Mapping, indent: usize) {
    use serde_yaml::Value;
    for (k, v) in m {
        out.push_str(&" ".repeat(indent));
        out.push_str(k.as_str().unwrap_or_default());
        out.push(':');
        match v {
            Value::Mapping(inner) if !inner.is_empty() => {
                out.push('\n');
                emit_mapping(out, inner, indent + 2);
            }
            // serde_yaml's layout: a list under a key at the key's indent.
            Value::Sequence(items) if !items.is_empty() => {
                out.push('\n');
                for item in items {
                    out.push_str(&" ".repeat(indent));
                    out.push_str("- ");
                    out.push_str(&scalar11(item));
                    out.push('\n');
                }
            }
            other => {
                out.push(' ');
                out.push_str(&scalar11(other));
                out.push('\n');
            }
        }
    }
}

/// One value in a form YAML 1.1 and 1.2 read alike: strings double-quoted
/// (JSON escapes are YAML escapes), numbers and booleans plain, anything
/// nested (never generated inside a list) as JSON, YAML's flow style.
fn scalar11(v: &serde_yaml::Value) -> String {
    use serde_yaml::Value;
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------
// The seed file
// ---------------------------------------------------------------------------

/// Writes the seed image to `path` and returns its sha256 (hex, equal to
/// [`seed_hash`] of the same input).
///
/// - Atomic: written to `<path>.part` (created exclusively, never through a
///   symlink), fsynced, renamed over `path`, the directory fsynced.
/// - Mode 0600 whatever the umask: a seed can hold secrets. (libvirt's
///   dynamic ownership hands it to the qemu user while a domain runs.)
/// - Missing parent directories are created 0711 ([`SEED_DIR_MODE`]: QEMU's
///   user must traverse them); existing ones are left as they are.
/// - A symlink at `path` is replaced by the file, never followed, so a seed
///   never lands outside its directory.
/// - An existing regular file with exactly these bytes and mode is left
///   alone (same inode), so a running domain keeps its seed.
pub fn write_seed(path: &Path, input: &SeedInput) -> Result<String, SeedError> {
    let iso = seed_iso(input)?;
    let hash = sha256_hex(&iso);
    let io_err = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source: io::Error| SeedError::Io {
            op,
            path: p,
            source,
        }
    };
    let Some(name) = path.file_name() else {
        return Err(SeedError::Io {
            op: "write",
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
        });
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(SEED_DIR_MODE)
            .create(&dir)
            .map_err(io_err("create directory", &dir))?;
    }
    if unchanged(path, &iso) {
        return Ok(hash);
    }
    let mut part_name = name.to_os_string();
    part_name.push(".part");
    let part = dir.join(part_name);
    match fs::remove_file(&part) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove stale", &part)(e)),
    }
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(SEED_FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&part)
            .map_err(io_err("create", &part))?;
        f.set_permissions(fs::Permissions::from_mode(SEED_FILE_MODE))
            .map_err(io_err("chmod", &part))?;
        f.write_all(&iso).map_err(io_err("write", &part))?;
        f.sync_all().map_err(io_err("fsync", &part))?;
        drop(f);
        fs::rename(&part, path).map_err(io_err("rename into place", path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync directory", &dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&part);
    }
    result.map(|()| hash)
}

/// [`write_seed`] on the executor's host: the same image and hash; the
/// missing directories made 0711, the file written atomically 0600
/// ([`Executor::write_atomic`]), left alone when it already holds the image
/// with that mode.
pub fn write_seed_on(x: &Executor, path: &Path, input: &SeedInput) -> Result<String, SeedError> {
    if x.is_local() {
        return write_seed(path, input);
    }
    let iso = seed_iso(input)?;
    let hash = sha256_hex(&iso);
    let host_err = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |e: crate::host::HostError| SeedError::Io { op, path: p, source: io::Error::other(e.to_string()) }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    crate::host::disks::ensure_dir_on(x, &dir).map_err(host_err("create directory", &dir))?;
    let st = x.stat(path).map_err(host_err("stat", path))?;
    if st.is_some_and(|s| s.kind == FileKind::File && s.len == iso.len() as u64 && s.mode == SEED_FILE_MODE)
        && x.read(path).map_err(host_err("read", path))? == iso
    {
        return Ok(hash);
    }
    x.write_atomic(path, &iso, SEED_FILE_MODE).map_err(host_err("write", path))?;
    Ok(hash)
}

/// `path` is a regular file (not a symlink) with mode 0600 holding `bytes`.
fn unchanged(path: &Path, bytes: &[u8]) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.file_type().is_file()
        || meta.len() != bytes.len() as u64
        || meta.permissions().mode() & 0o7777 != SEED_FILE_MODE
    {
        return false;
    }
    let Ok(mut f) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return false;
    };
    let mut current = Vec::with_capacity(bytes.len());
    f.read_to_end(&mut current).is_ok() && current == bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::iso::IsoReader;
    use serde_yaml::Value;
    use std::os::unix::fs::MetadataExt;

    fn input() -> SeedInput {
        SeedInput {
            instance_id: "iid-web-1".into(),
            hostname: "web".into(),
            ..Default::default()
        }
    }

    fn nic(mac: &str, ip: Option<&str>, gw: Option<&str>, mtu: Option<u32>) -> SeedNic {
        SeedNic {
            mac: mac.into(),
            ip: ip.map(|s| {
                let (a, l) = s.split_once('/').unwrap();
                (a.parse().unwrap(), l.parse().unwrap())
            }),
            gateway: gw.map(|g| g.parse().unwrap()),
            dns: Vec::new(),
            mtu,
        }
    }

    fn file<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
        files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| std::str::from_utf8(c).unwrap())
    }

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap_or_else(|e| panic!("not YAML ({e}):\n{text}"))
    }

    #[test]
    fn defaults() {
        let files = seed_files(&input()).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["meta-data", "user-data"],
            "no network-config without fixed IPs"
        );
        assert_eq!(
            file(&files, "meta-data").unwrap(),
            "instance-id: \"iid-web-1\"\nlocal-hostname: \"web\"\n"
        );
        let ud = file(&files, "user-data").unwrap();
        assert_eq!(ud, "#cloud-config\n{}\n");
        assert_eq!(yaml(ud), Value::Mapping(Default::default()));
    }

    #[test]
    fn meta_data_values_are_escaped() {
        let mut i = input();
        i.instance_id = "id: with\nnewline #and 'quotes\"".into();
        i.hostname = "- not a list".into();
        let files = seed_files(&i).unwrap();
        let md = yaml(file(&files, "meta-data").unwrap());
        assert_eq!(md["instance-id"].as_str(), Some(i.instance_id.as_str()));
        assert_eq!(md["local-hostname"].as_str(), Some("- not a list"));
        i.instance_id = " ".into();
        assert!(matches!(seed_files(&i), Err(SeedError::Invalid { .. })));
    }

    #[test]
    fn given_files_are_used_as_given() {
        let mut i = input();
        i.meta_data = Some("instance-id: custom\n# comment\n".into());
        i.user_data = Some("#!/bin/sh\necho hi\n".into());
        i.network_config = Some("version: 1\nconfig: []\n".into());
        i.nics = vec![nic("52:54:00:00:00:01", Some("10.0.0.5/24"), None, None)];
        let files = seed_files(&i).unwrap();
        assert_eq!(file(&files, "meta-data"), i.meta_data.as_deref());
        assert_eq!(file(&files, "user-data"), i.user_data.as_deref());
        assert_eq!(file(&files, "network-config"), i.network_config.as_deref());
    }

    #[test]
    fn keys_without_user_data() {
        let mut i = input();
        i.ssh_authorized_keys = vec![
            "ssh-ed25519 AAAAC3Nza a@b".into(),
            "ssh-rsa AAAAB3 c@d: #x".into(),
        ];
        let files = seed_files(&i).unwrap();
        let ud = file(&files, "user-data").unwrap();
        assert!(ud.starts_with("#cloud-config\n"), "{ud}");
        let v = yaml(ud);
        let keys: Vec<&str> = v[KEYS]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            ["ssh-ed25519 AAAAC3Nza a@b", "ssh-rsa AAAAB3 c@d: #x"]
        );
    }

    #[test]
    fn keys_are_appended_to_cloud_config_keeping_its_text() {
        let mut i = input();
        let original = "#cloud-config\n# my comment\npackage_upgrade: yes\nruncmd:\n  - [echo, 'on']\nwrite_files:\n  - path: /x\n    permissions: 0644\n    content: secret-value\n";
        i.user_data = Some(original.into());
        i.ssh_authorized_keys = vec!["ssh-ed25519 AAAA k1".into()];
        let files = seed_files(&i).unwrap();
        let ud = file(&files, "user-data").unwrap();
        assert!(
            ud.starts_with(original),
            "the user's text is kept byte for byte:\n{ud}"
        );
        let v = yaml(ud);
        assert_eq!(v[KEYS][0].as_str(), Some("ssh-ed25519 AAAA k1"));
        assert_eq!(v["runcmd"][0][1].as_str(), Some("on"));

        // no trailing newline
        i.user_data = Some("#cloud-config\nhostname: x".into());
        let files = seed_files(&i).unwrap();
        let v = yaml(file(&files, "user-data").unwrap());
        assert_eq!(v["hostname"].as_str(), Some("x"));
        assert_eq!(v[KEYS][0].as_str(), Some("ssh-ed25519 AAAA k1"));

        // header only
        i.user_data = Some("#cloud-config\n".into());
        let ud = file(&seed_files(&i).unwrap(), "user-data")
            .unwrap()
            .to_string();
        assert!(ud.starts_with("#cloud-config\n"));
        assert_eq!(yaml(&ud)[KEYS][0].as_str(), Some("ssh-ed25519 AAAA k1"));
    }

    #[test]
    fn keys_merge_into_an_existing_list() {
        let mut i = input();
        i.user_data = Some(
            "#cloud-config\nssh_authorized_keys:\n  - ssh-ed25519 AAAA k1\nhostname: box\n".into(),
        );
        i.ssh_authorized_keys = vec!["ssh-ed25519 AAAA k1".into(), "ssh-ed25519 BBBB k2".into()];
        let ud = file(&seed_files(&i).unwrap(), "user-data")
            .unwrap()
            .to_string();
        assert!(ud.starts_with("#cloud-config\n"), "{ud}");
        let v = yaml(&ud);
        let keys: Vec<&str> = v[KEYS]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            ["ssh-ed25519 AAAA k1", "ssh-ed25519 BBBB k2"],
            "no duplicates"
        );
        assert_eq!(v["hostname"].as_str(), Some("box"));

        // flow style top level: re-serialized, still right
        i.user_data = Some("#cloud-config\n{hostname: box}\n".into());
        let v = yaml(file(&seed_files(&i).unwrap(), "user-data").unwrap());
        assert_eq!(v["hostname"].as_str(), Some("box"));
        assert_eq!(v[KEYS].as_sequence().unwrap().len(), 2);
    }

    #[test]
    fn merging_refuses_what_it_cannot_do_safely() {
        let mut i = input();
        i.ssh_authorized_keys = vec!["ssh-ed25519 AAAA k1".into()];
        i.user_data = Some("#!/bin/sh\necho password=hunter2\n".into());
        let e = seed_files(&i).unwrap_err();
        assert!(matches!(e, SeedError::KeysNeedCloudConfig), "{e}");
        assert!(!e.to_string().contains("hunter2"));

        i.user_data = Some("#cloud-config\nssh_authorized_keys: not-a-list\n".into());
        assert!(matches!(
            seed_files(&i),
            Err(SeedError::CannotMergeKeys { .. })
        ));
        i.user_data = Some("#cloud-config\n- a\n- b\n".into());
        assert!(matches!(
            seed_files(&i),
            Err(SeedError::CannotMergeKeys { .. })
        ));
        // re-serializing would turn the quoted string 'yes' into a YAML 1.1 boolean
        i.user_data =
            Some("#cloud-config\nssh_authorized_keys: [k0]\nchpasswd: {expire: 'no'}\n".into());
        let e = seed_files(&i).unwrap_err().to_string();
        assert!(e.contains("chpasswd.expire"), "{e}");
    }

    #[test]
    fn yaml_errors_never_show_contents() {
        let mut i = input();
        i.user_data = Some("#cloud-config\npassword: hunter2\n  bad: [indent\n".into());
        let e = seed_files(&i).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                SeedError::InvalidYaml {
                    file: "user-data",
                    ..
                }
            ),
            "{msg}"
        );
        assert!(!msg.contains("hunter2") && !msg.contains("bad"), "{msg}");
        assert!(msg.contains("line"), "{msg}");
        assert!(!format!("{e:?}").contains("hunter2"));

        i.user_data = None;
        i.meta_data = Some("instance-id: [secret-thing\n".into());
        let msg = seed_files(&i).unwrap_err().to_string();
        assert!(
            msg.contains("meta-data") && !msg.contains("secret-thing"),
            "{msg}"
        );

        i.meta_data = None;
        i.ssh_authorized_keys = vec!["ssh-ed25519 AAAA\nmore".into()];
        assert!(matches!(seed_files(&i), Err(SeedError::Invalid { .. })));
    }

    /// A MAC of digit groups under 60 is a base-60 integer to YAML 1.1
    /// (cloud-init's PyYAML): every generated string is double-quoted, the
    /// numbers and booleans are not.
    #[test]
    fn generated_network_config_quotes_macs_yaml11_would_read_as_numbers() {
        let mut i = input();
        i.nics = vec![nic("52:54:00:23:42:24", Some("10.77.0.10/24"), Some("10.77.0.1"), Some(1450)), nic("52:54:00:aa:00:02", None, None, None)];
        let nc = network_config(&i).unwrap().unwrap();
        for want in ["macaddress: \"52:54:00:23:42:24\"", "set-name: \"eth0\"", "- \"10.77.0.10/24\"", "gateway4: \"10.77.0.1\"", "macaddress: \"52:54:00:aa:00:02\"", "version: 2", "mtu: 1450", "dhcp4: true"] {
            assert!(nc.contains(want), "{want:?} missing:\n{nc}");
        }
        // Still the same document for a YAML 1.2 reader.
        let v: serde_yaml::Value = serde_yaml::from_str(&nc).unwrap();
        assert_eq!(v["ethernets"]["eth0"]["match"]["macaddress"], serde_yaml::Value::from("52:54:00:23:42:24"));
        assert_eq!(v["ethernets"]["eth0"]["mtu"], serde_yaml::Value::from(1450));
        assert!(!nc.contains("macaddress: 52"), "{nc}");
    }

    #[test]
    fn network_config_from_nics() {
        let mut i = input();
        i.nics = vec![
            nic(
                "52:54:00:AA:00:01",
                Some("10.77.0.10/24"),
                Some("10.77.0.1"),
                Some(1450),
            ),
            nic("52:54:00:aa:00:02", None, None, None),
            nic(
                "52:54:00:aa:00:03",
                Some("10.78.0.10/16"),
                Some("10.78.0.1"),
                None,
            ),
            nic(
                "52:54:00:aa:00:04",
                Some("fd00::10/64"),
                Some("fd00::1"),
                None,
            ),
        ];
        i.nics[0].dns = vec!["10.77.0.1".parse().unwrap(), "10.77.0.2".parse().unwrap()];
        i.nics[1].dns = vec!["10.77.0.1".parse().unwrap()];
        let files = seed_files(&i).unwrap();
        let text = file(&files, "network-config").unwrap();
        let v = yaml(text);
        assert_eq!(v["version"].as_u64(), Some(2));
        assert_eq!(v["ethernets"]["eth0"]["nameservers"]["addresses"][1].as_str(), Some("10.77.0.2"), "{text}");
        assert!(v["ethernets"]["eth1"].get("nameservers").is_none(), "a DHCP NIC takes DNS from DHCP:\n{text}");
        let eth = v["ethernets"].as_mapping().unwrap();
        let names: Vec<&str> = eth.keys().map(|k| k.as_str().unwrap()).collect();
        assert_eq!(names, ["eth0", "eth1", "eth2", "eth3"]);
        let e0 = &v["ethernets"]["eth0"];
        assert_eq!(
            e0["match"]["macaddress"].as_str(),
            Some("52:54:00:aa:00:01")
        );
        assert_eq!(e0["set-name"].as_str(), Some("eth0"));
        assert_eq!(e0["addresses"][0].as_str(), Some("10.77.0.10/24"));
        assert_eq!(e0["gateway4"].as_str(), Some("10.77.0.1"));
        assert!(e0.get("routes").is_none() && e0.get("gateway6").is_none());
        assert_eq!(e0["mtu"].as_u64(), Some(1450));
        assert!(e0.get("dhcp4").is_none());
        let e1 = &v["ethernets"]["eth1"];
        assert_eq!(e1["dhcp4"].as_bool(), Some(true));
        assert!(e1.get("addresses").is_none() && e1.get("mtu").is_none());
        let e2 = &v["ethernets"]["eth2"];
        assert!(
            e2.get("gateway4").is_none(),
            "only one IPv4 default route:\n{text}"
        );
        let e3 = &v["ethernets"]["eth3"];
        assert_eq!(e3["addresses"][0].as_str(), Some("fd00::10/64"));
        assert_eq!(e3["gateway6"].as_str(), Some("fd00::1"));
        assert!(text.starts_with("version: 2\n"), "{text}");
    }

    #[test]
    fn network_config_rejects_bad_nics() {
        let mut i = input();
        i.nics = vec![nic("52:54:00:aa:00:01", Some("10.0.0.1/33"), None, None)];
        assert!(matches!(seed_files(&i), Err(SeedError::Invalid { .. })));
        i.nics = vec![nic("52:54:00:aa:00", Some("10.0.0.1/24"), None, None)];
        assert!(matches!(seed_files(&i), Err(SeedError::Invalid { .. })));
        i.nics = vec![
            nic("52:54:00:aa:00:01", Some("10.0.0.1/24"), None, None),
            nic("52:54:00:AA:00:01", None, None, None),
        ];
        assert!(matches!(seed_files(&i), Err(SeedError::Invalid { .. })));
        // DHCP-only NICs: no network-config at all
        i.nics = vec![nic("52:54:00:aa:00:01", None, None, None)];
        assert!(file(&seed_files(&i).unwrap(), "network-config").is_none());
    }

    #[test]
    fn iso_holds_the_files_and_hash_is_stable() {
        let mut i = input();
        i.ssh_authorized_keys = vec!["ssh-ed25519 AAAA k1".into()];
        i.nics = vec![nic(
            "52:54:00:aa:00:01",
            Some("10.0.0.5/24"),
            Some("10.0.0.1"),
            None,
        )];
        let iso = seed_iso(&i).unwrap();
        let r = IsoReader::new(&iso).unwrap();
        assert_eq!(r.volume_id(), "cidata");
        assert_eq!(r.joliet_volume_id(), Some("cidata"));
        for (name, data) in seed_files(&i).unwrap() {
            assert_eq!(r.read_file(&name).unwrap(), &data[..]);
        }
        let h = seed_hash(&i).unwrap();
        assert_eq!(h.len(), 64);
        assert_eq!(h, seed_hash(&i.clone()).unwrap());
        assert_eq!(h, sha256_hex(&iso));
        i.hostname = "other".into();
        assert_ne!(h, seed_hash(&i).unwrap());
    }

    #[test]
    fn write_seed_is_atomic_private_and_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("seeds/sub/web.iso");
        let i = input();
        let h = write_seed(&path, &i).unwrap();
        assert_eq!(h, seed_hash(&i).unwrap());
        assert_eq!(sha256_hex(&fs::read(&path).unwrap()), h);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        for d in [tmp.path().join("seeds"), tmp.path().join("seeds/sub")] {
            assert_eq!(
                fs::metadata(&d).unwrap().permissions().mode() & 0o7777,
                0o711,
                "{}",
                d.display()
            );
        }
        assert!(!tmp.path().join("seeds/sub/web.iso.part").exists());

        // same input: untouched (same inode)
        let ino = meta.ino();
        assert_eq!(write_seed(&path, &i).unwrap(), h);
        assert_eq!(fs::metadata(&path).unwrap().ino(), ino);

        // new input: a new file, a stale .part is cleaned up
        fs::write(tmp.path().join("seeds/sub/web.iso.part"), b"stale").unwrap();
        let mut j = i.clone();
        j.hostname = "changed".into();
        let h2 = write_seed(&path, &j).unwrap();
        assert_ne!(h2, h);
        assert_ne!(fs::metadata(&path).unwrap().ino(), ino);
        assert_eq!(sha256_hex(&fs::read(&path).unwrap()), h2);
        assert!(!tmp.path().join("seeds/sub/web.iso.part").exists());

        // an existing directory keeps its mode
        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        write_seed(&open.join("x.iso"), &i).unwrap();
        assert_eq!(
            fs::metadata(&open).unwrap().permissions().mode() & 0o7777,
            0o755
        );

        // a wrong mode is repaired by rewriting
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_seed(&path, &j).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
    }

    #[test]
    fn write_seed_never_follows_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"precious").unwrap();
        let dir = tmp.path().join("seeds");
        fs::create_dir(&dir).unwrap();
        let path = dir.join("web.iso");
        std::os::unix::fs::symlink(&outside, &path).unwrap();
        // and a symlinked .part, too
        let other = tmp.path().join("other");
        fs::write(&other, b"also precious").unwrap();
        std::os::unix::fs::symlink(&other, dir.join("web.iso.part")).unwrap();

        let h = write_seed(&path, &input()).unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"precious");
        assert_eq!(fs::read(&other).unwrap(), b"also precious");
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(
            meta.file_type().is_file(),
            "the symlink was replaced by a file"
        );
        assert_eq!(sha256_hex(&fs::read(&path).unwrap()), h);

        // a directory at the path is an error naming the path
        let e = write_seed(&dir, &input()).unwrap_err().to_string();
        assert!(e.contains("seeds"), "{e}");
    }

    #[test]
    fn write_seed_errors_do_not_leak_user_data() {
        let tmp = tempfile::tempdir().unwrap();
        let mut i = input();
        i.user_data = Some("#cloud-config\npassword: hunter2\n".into());
        let blocker = tmp.path().join("file");
        fs::write(&blocker, b"").unwrap();
        let e = write_seed(&blocker.join("sub/seed.iso"), &i).unwrap_err();
        let msg = format!("{e} {e:?}");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("create directory"), "{msg}");
    }

    fn host_key() -> HostKey {
        HostKey {
            private: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\nSECRETBODY\n-----END OPENSSH PRIVATE KEY-----\n".into(),
            public: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk virtform:st:instance.vm".into(),
        }
    }

    #[test]
    fn host_key_goes_into_ssh_keys_and_is_the_only_one() {
        let mut i = input();
        i.ssh_host_key = Some(host_key());
        i.ssh_authorized_keys = vec!["ssh-ed25519 AAAA k1".into()];
        let ud = user_data(&i).unwrap();
        assert!(ud.starts_with("#cloud-config\n"), "{ud}");
        let v = yaml(&ud);
        assert_eq!(v["ssh_keys"]["ed25519_private"].as_str(), Some(host_key().private.as_str()));
        assert_eq!(v["ssh_keys"]["ed25519_public"].as_str(), Some(host_key().public.as_str()));
        assert_eq!(v["ssh_genkeytypes"], Value::Sequence(vec!["ed25519".into()]));
        assert_eq!(v[KEYS][0].as_str(), Some("ssh-ed25519 AAAA k1"));
        // The user's own document is kept byte for byte, the key appended.
        let mine = "#cloud-config\n# mine\nruncmd:\n  - [touch, '/x y']\nssh_genkeytypes: [rsa]\n";
        i.user_data = Some(mine.into());
        let ud = user_data(&i).unwrap();
        assert!(ud.starts_with(mine), "{ud}");
        let v = yaml(&ud);
        assert_eq!(v["ssh_genkeytypes"][0].as_str(), Some("rsa"), "the user's choice stays");
        assert!(v["ssh_keys"]["ed25519_private"].as_str().unwrap().contains("SECRETBODY"));
        // The debug form never shows the private half.
        assert!(!format!("{i:?}").contains("SECRETBODY"));
    }

    #[test]
    fn host_key_refuses_what_it_cannot_merge() {
        let mut i = input();
        i.ssh_host_key = Some(host_key());
        i.user_data = Some("#!/bin/sh\necho hi\n".into());
        assert!(matches!(user_data(&i), Err(SeedError::HostKeyNeedsCloudConfig)));
        i.user_data = Some("#cloud-config\nssh_keys:\n  rsa_private: x\n".into());
        let e = user_data(&i).unwrap_err();
        assert!(matches!(e, SeedError::HostKeyGiven));
        assert!(e.to_string().contains("remove `ssh_keys`"), "{e}");
        // Flow style cannot take an appended block: re-serialized, same meaning.
        i.user_data = Some("#cloud-config\n{hostname: box}\n".into());
        let v = yaml(&user_data(&i).unwrap());
        assert_eq!(v["hostname"].as_str(), Some("box"));
        assert!(v["ssh_keys"]["ed25519_public"].is_string());
    }

}
