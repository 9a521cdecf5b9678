//! Value types shared by resource kinds: sizes, MACs, addresses, interface
//! names, durations and references to other resources.
//!
//! Invariant: each type parses strictly and says what it expected; once
//! parsed, it holds a normalized value (bytes, lowercase MAC, …).

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

/// A size in bytes, written as `"512M"`, `"10G"`, `"1.5G"` (exact only) or an integer of bytes.
/// Serialized in its shortest exact unit form (`"256M"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Size {
    pub fn parse(s: &str) -> Result<Size, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("a size must not be empty; write e.g. \"512M\" or \"10G\"".into());
        }
        if t.starts_with('-') {
            return Err(format!("\"{s}\" is negative; a size is at least 0, e.g. \"512M\" or \"10G\""));
        }
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim();
        let mult: u64 = match unit {
            "" | "B" | "b" => 1,
            "K" | "KiB" | "k" | "KB" => 1 << 10,
            "M" | "MiB" | "MB" => 1 << 20,
            "G" | "GiB" | "GB" => 1 << 30,
            "T" | "TiB" | "TB" => 1 << 40,
            _ => return Err(format!("unknown size unit \"{unit}\" in \"{s}\"; expected K, M, G or T (binary units)")),
        };
        if num.is_empty() || num.matches('.').count() > 1 {
            return Err(format!("\"{s}\" is not a size; write e.g. \"512M\" or \"10G\""));
        }
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let int: u64 = if int.is_empty() { 0 } else { int.parse().map_err(|_| format!("\"{s}\" is too large"))? };
        let mut bytes = int.checked_mul(mult).ok_or_else(|| format!("\"{s}\" is too large"))?;
        if !frac.is_empty() {
            // Exact fractions only: 1.5G is fine, 1.3K (1331.2 bytes) is not.
            let digits = u32::try_from(frac.len()).map_err(|_| format!("\"{s}\" has too many decimals"))?;
            let denom = 10u128.checked_pow(digits).ok_or_else(|| format!("\"{s}\" has too many decimals"))?;
            let f: u128 = frac.parse().map_err(|_| format!("\"{s}\" is not a size"))?;
            let scaled = f * mult as u128;
            if !scaled.is_multiple_of(denom) {
                return Err(format!("\"{s}\" is not a whole number of bytes; use a smaller unit"));
            }
            bytes = bytes.checked_add((scaled / denom) as u64).ok_or_else(|| format!("\"{s}\" is too large"))?;
        }
        Ok(Size(bytes))
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if b >= 1 << shift && b.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", b >> shift);
            }
        }
        write!(f, "{b}")
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"512M\" or \"10G\", or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                Size::parse(s).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                u64::try_from(n).map(Size).map_err(|_| E::custom("a size must not be negative"))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size(n))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Size, E> {
                Err(E::custom(format!("a size in bytes must be a whole number, got {n}")))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Size {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: a string with a binary unit (\"512M\", \"10G\", \"1.5G\" when exact) or an integer number of bytes.",
            "anyOf": [
                {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?\\s*([KMGT](i?B)?|B)?$"},
                {"type": "integer", "minimum": 0}
            ]
        })
    }
}

/// A duration such as `"120s"`, `"2m"`, `"1h30m"` or a number of seconds.
/// Serialized as text (`"120s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub u64 /* milliseconds */);

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Duration {
    pub fn parse(s: &str) -> Result<Duration, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("a duration must not be empty; write e.g. \"60s\" or \"2m\"".into());
        }
        let mut total: u64 = 0;
        let mut num = String::new();
        let mut chars = t.chars().peekable();
        let mut any = false;
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let mut unit = c.to_string();
            if c == 'm' && chars.peek() == Some(&'s') {
                unit.push(chars.next().unwrap_or('s'));
            }
            let mult = match unit.as_str() {
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return Err(format!("unknown duration unit \"{unit}\" in \"{s}\"; expected ms, s, m or h")),
            };
            let n: u64 = num.parse().map_err(|_| format!("\"{s}\" is not a duration; write e.g. \"60s\" or \"2m\""))?;
            total = n.checked_mul(mult).and_then(|x| total.checked_add(x)).ok_or_else(|| format!("\"{s}\" is too long"))?;
            num.clear();
            any = true;
        }
        if !num.is_empty() {
            if any {
                return Err(format!("\"{s}\" ends without a unit"));
            }
            let n: u64 = num.parse().map_err(|_| format!("\"{s}\" is too long"))?;
            total = n.checked_mul(1000).ok_or_else(|| format!("\"{s}\" is too long"))?;
        }
        Ok(Duration(total))
    }

    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"60s\" or \"2m\", or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
                Duration::parse(s).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
                u64::try_from(n).ok().and_then(|n| n.checked_mul(1000)).map(Duration).ok_or_else(|| E::custom("a duration must not be negative"))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
                n.checked_mul(1000).map(Duration).ok_or_else(|| E::custom("duration too long"))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: \"500ms\", \"60s\", \"2m\", \"1h30m\", or an integer number of seconds.",
            "anyOf": [{"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"}, {"type": "integer", "minimum": 0}]
        })
    }
}

/// A MAC address, normalized to lowercase `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub fn parse(s: &str) -> Result<Mac, String> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
            return Err(format!("\"{s}\" is not a MAC address; expected six hex pairs like \"52:54:00:12:34:56\""));
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            b[i] = u8::from_str_radix(p, 16).map_err(|_| format!("\"{s}\" is not a MAC address: \"{p}\" is not hex"))?;
        }
        if b[0] & 1 == 1 {
            return Err(format!("\"{s}\" is a multicast MAC address; a NIC needs a unicast one (first byte even)"));
        }
        Ok(Mac(b))
    }

    /// A stable locally-administered MAC in QEMU's 52:54:00 range from a seed.
    pub fn derived(seed: &str) -> Mac {
        let h = sha(seed);
        Mac([0x52, 0x54, 0x00, h[0], h[1], h[2]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        Mac::parse(&s).map_err(de::Error::custom)
    }
}

impl JsonSchema for Mac {
    fn schema_name() -> Cow<'static, str> {
        "Mac".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "description": "A unicast MAC address, e.g. \"52:54:00:12:34:56\".", "pattern": "^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$"})
    }
}

/// An IP address with a prefix length: `10.77.0.1/24` (a host address in its network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpCidr {
    pub fn parse(s: &str) -> Result<IpCidr, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("\"{s}\" is not in CIDR notation; expected an address with a prefix length like \"10.77.0.1/24\""))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("\"{a}\" in \"{s}\" is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("\"{p}\" in \"{s}\" is not a prefix length (0 to {max})"))?;
        Ok(IpCidr { addr, prefix })
    }

    fn bits(addr: IpAddr) -> (u128, u8) {
        match addr {
            IpAddr::V4(a) => (u32::from(a) as u128, 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    fn mask(&self) -> u128 {
        let (_, w) = Self::bits(self.addr);
        if self.prefix == 0 {
            0
        } else {
            let all: u128 = if w == 32 { u32::MAX as u128 } else { u128::MAX };
            (all << (w - self.prefix)) & all
        }
    }

    /// Whether `ip` lies in this address's network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let (a, _) = Self::bits(self.addr);
        let (b, _) = Self::bits(ip);
        a & self.mask() == b & self.mask()
    }

    /// The network part, e.g. `10.77.0.0/24`.
    pub fn network(&self) -> IpCidr {
        let (a, _) = Self::bits(self.addr);
        let n = a & self.mask();
        let addr = if self.addr.is_ipv4() {
            IpAddr::V4(std::net::Ipv4Addr::from(n as u32))
        } else {
            IpAddr::V6(std::net::Ipv6Addr::from(n))
        };
        IpCidr { addr, prefix: self.prefix }
    }

    pub fn is_network_address(&self) -> bool {
        self.addr.is_ipv4() && self.prefix < 31 && self.network().addr == self.addr
    }

    pub fn is_broadcast(&self, ip: IpAddr) -> bool {
        if !ip.is_ipv4() || self.prefix >= 31 {
            return false;
        }
        let (b, _) = Self::bits(ip);
        b | self.mask() == u32::MAX as u128
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpCidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpCidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IpCidr, D::Error> {
        let s = String::deserialize(d)?;
        IpCidr::parse(&s).map_err(de::Error::custom)
    }
}

impl JsonSchema for IpCidr {
    fn schema_name() -> Cow<'static, str> {
        "IpCidr".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "description": "An IP address with prefix length, e.g. \"10.77.0.1/24\"."})
    }
}

/// An IP address without prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Ip(pub IpAddr);

impl<'de> Deserialize<'de> for Ip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ip, D::Error> {
        let s = String::deserialize(d)?;
        if s.contains('/') {
            return Err(de::Error::custom(format!("\"{s}\" has a prefix length; expected a plain address like \"10.77.0.10\"")));
        }
        s.parse().map(Ip).map_err(|_| de::Error::custom(format!("\"{s}\" is not an IP address")))
    }
}

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl JsonSchema for Ip {
    fn schema_name() -> Cow<'static, str> {
        "Ip".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "description": "An IP address, e.g. \"10.77.0.10\"."})
    }
}

/// A Linux network interface name: 1 to 15 characters, no `/`, whitespace or `:`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct IfName(pub String);

impl IfName {
    pub const MAX: usize = 15;

    pub fn parse(s: &str) -> Result<IfName, String> {
        if s.is_empty() {
            return Err("an interface name must not be empty".into());
        }
        if s.len() > Self::MAX {
            return Err(format!(
                "interface name \"{s}\" is {} characters long; Linux allows at most {} (IFNAMSIZ)",
                s.len(),
                Self::MAX
            ));
        }
        // Linux itself refuses only '/', ':' and whitespace; the rest of what
        // it accepts breaks the tools around it (`ip` reads a leading '-' as
        // an option, `name@peer` is its own notation, quotes and '#' do not
        // survive configuration files of other tools): refused here, with
        // the location, not at apply.
        if s == "." || s == ".." || s.starts_with('-') || !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            return Err(format!(
                "{s:?} is not a valid interface name: use letters, digits, '_', '-' and '.', not starting with '-'"
            ));
        }
        Ok(IfName(s.to_string()))
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IfName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IfName, D::Error> {
        let s = String::deserialize(d)?;
        IfName::parse(&s).map_err(de::Error::custom)
    }
}

impl JsonSchema for IfName {
    fn schema_name() -> Cow<'static, str> {
        "IfName".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "minLength": 1, "maxLength": 15, "pattern": "^[A-Za-z0-9_.][A-Za-z0-9_.-]*$", "description": "A Linux interface name (at most 15 characters)."})
    }
}

/// The hidden key carrying a resource's address inside its object value.
pub const REF_KEY: &str = "__ref";

/// A reference to another resource, written as `network.lan` or `disk.root[0]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ResourceRef(pub String);

impl ResourceRef {
    /// The kind part of the address (`network` in `network.lan` and in `data.network.lan`).
    pub fn kind(&self) -> &str {
        self.local().strip_prefix("data.").unwrap_or(self.local()).split('.').next().unwrap_or("")
    }

    /// Whether it names a data source (`data.network.lan`, also in a module).
    pub fn is_data(&self) -> bool {
        self.local().starts_with("data.")
    }

    /// The address after its module path (`network.lan` in `module.net.network.lan`).
    fn local(&self) -> &str {
        crate::model::ModulePath::skip_prefix(&self.0).unwrap_or(&self.0)
    }
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ResourceRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ResourceRef, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResourceRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a reference to a resource, like network.lan or disk.root[0]")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<ResourceRef, A::Error> {
                let mut found = None;
                while let Some(k) = m.next_key::<String>()? {
                    if k == REF_KEY {
                        found = Some(m.next_value::<String>()?);
                    } else {
                        m.next_value::<de::IgnoredAny>()?;
                    }
                }
                found.map(ResourceRef).ok_or_else(|| {
                    de::Error::custom("expected a reference to a resource, like network.lan, not a map")
                })
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<ResourceRef, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ResourceRef, E> {
                Err(E::custom(format!(
                    "expected a reference to a resource, like network.lan, not the string \"{s}\" (write it without quotes)"
                )))
            }
        }
        // The configuration's deserializer offers only the address entry of
        // a resource object for this name; others see the value as it is.
        d.deserialize_newtype_struct(REF_NEWTYPE, V)
    }
}

/// The newtype name under which [`ResourceRef`] asks to be deserialized.
pub const REF_NEWTYPE: &str = "$virtform::ResourceRef";

impl JsonSchema for ResourceRef {
    fn schema_name() -> Cow<'static, str> {
        "ResourceRef".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "object", "description": "A reference to another resource, written as an expression: network.lan, disk.root[0], port.eth0[\"a\"]."})
    }
}

/// SHA-256 of a string.
pub fn sha(seed: &str) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(seed.as_bytes());
    h.finalize().into()
}

/// A stable UUID (version 5 layout) derived from a seed.
pub fn derived_uuid(seed: &str) -> String {
    let mut b = sha(seed);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid_string(&b)
}

/// Lower-case hexadecimal of `bytes` (the one hex encoder: hashes, UUIDs;
/// built without `format!`, which was a tenth of a plan's instructions at
/// 1,000 instances).
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

/// The first 16 bytes of `b` as a UUID string (8-4-4-4-12).
pub fn uuid_string(b: &[u8]) -> String {
    uuid_dashed(&hex(&b[..16]))
}

/// 32 hex digits grouped 8-4-4-4-12 with dashes.
pub fn uuid_dashed(hex32: &str) -> String {
    let mut u = String::with_capacity(36);
    for (i, r) in [0..8, 8..12, 12..16, 16..20, 20..32].into_iter().enumerate() {
        if i > 0 {
            u.push('-');
        }
        u.push_str(&hex32[r]);
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_refs_know_their_kind_inside_modules() {
        for (r, kind, data) in [("network.lan", "network", false), ("data.network.lan", "network", true), ("module.web[\"a.b\"].port.p[0]", "port", false), ("module.n.module.m.data.network.x", "network", true)] {
            let r = ResourceRef(r.into());
            assert_eq!((r.kind(), r.is_data()), (kind, data), "{r}");
        }
    }

    #[test]
    fn hex_and_uuid_strings() {
        assert_eq!(hex(&[0, 1, 0xab, 0xff]), "0001abff");
        assert_eq!(hex(&[]), "");
        let b: Vec<u8> = (0u8..16).map(|i| i * 17).collect();
        assert_eq!(uuid_string(&b), "00112233-4455-6677-8899-aabbccddeeff");
        let u = derived_uuid("seed");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "5", "version 5 layout: {u}");
    }

    #[test]
    fn sizes() {
        assert_eq!(Size::parse("512M"), Ok(Size(512 << 20)));
        assert_eq!(Size::parse("1.5G"), Ok(Size(3 << 29)));
        assert_eq!(Size::parse("10GiB"), Ok(Size(10 << 30)));
        assert_eq!(Size::parse("4096"), Ok(Size(4096)));
        assert!(Size::parse("1.3K").unwrap_err().contains("whole number of bytes"));
        assert!(Size::parse("12X").unwrap_err().contains("unknown size unit"));
        assert!(Size::parse("99999999999999T").unwrap_err().contains("too large"));
        assert!(Size::parse("").is_err());
        assert!(Size::parse("1.2.3G").is_err());
        assert!(Size::parse("-1G").unwrap_err().contains("negative"), "{:?}", Size::parse("-1G"));
        assert_eq!(Size(3 << 29).to_string(), "1536M");
    }

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("120s"), Ok(Duration(120_000)));
        assert_eq!(Duration::parse("1h30m"), Ok(Duration(5_400_000)));
        assert_eq!(Duration::parse("250ms"), Ok(Duration(250)));
        assert_eq!(Duration::parse("90"), Ok(Duration(90_000)));
        assert!(Duration::parse("5x").is_err());
        assert!(Duration::parse("5s3").is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(Mac::parse("52:54:00:AB:cd:01").unwrap().to_string(), "52:54:00:ab:cd:01");
        assert!(Mac::parse("52:54:00:ab:cd").is_err());
        assert!(Mac::parse("01:00:5e:00:00:01").unwrap_err().contains("multicast"));
        assert!(Mac::parse("zz:54:00:ab:cd:01").is_err());
        assert_eq!(Mac::derived("a"), Mac::derived("a"));
        assert_ne!(Mac::derived("a"), Mac::derived("b"));
    }

    #[test]
    fn cidrs() {
        let c = IpCidr::parse("10.77.0.1/24").unwrap();
        assert!(c.contains("10.77.0.200".parse().unwrap()));
        assert!(!c.contains("10.78.0.1".parse().unwrap()));
        assert_eq!(c.network().to_string(), "10.77.0.0/24");
        assert!(c.is_broadcast("10.77.0.255".parse().unwrap()));
        assert!(IpCidr::parse("10.77.0.1").is_err());
        assert!(IpCidr::parse("10.77.0.1/33").is_err());
        assert!(IpCidr::parse("10.277.0.1/24").is_err());
        let v6 = IpCidr::parse("fd00::1/64").unwrap();
        assert!(v6.contains("fd00::99".parse().unwrap()));
    }

    #[test]
    fn ifnames() {
        assert!(IfName::parse("vf-lan0").is_ok());
        assert!(IfName::parse("a-very-long-bridge").unwrap_err().contains("at most 15"));
        assert!(IfName::parse("a/b").is_err());
        for ok in ["br-ex", "virbr0", "eth0.100", "qbr0123456789a", "_x"] {
            assert!(IfName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["-br", "a#b", "a'b", "a\"b", "a\\b", "a@b", "a$(x)", "a b", "é", "a\u{1}"] {
            let e = IfName::parse(bad).unwrap_err();
            assert!(e.contains("not a valid interface name"), "{bad}: {e}");
        }
    }

    #[test]
    fn uuids_are_stable_and_versioned() {
        let u = derived_uuid("demo/port.a");
        assert_eq!(u, derived_uuid("demo/port.a"));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "5");
    }
}

/// A secret string (an SSH private key). Its value reaches only the code
/// that uses it: `Debug` and `Serialize` (exports, plan JSON, spec hashes)
/// show `(sensitive)`, never the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub const SHOWN: &'static str = "(sensitive)";

    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must hand it on.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Secret::SHOWN)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(Secret::SHOWN)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> Cow<'static, str> {
        "Secret".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "description": "A sensitive string: never printed, never in a plan file."})
    }
}
