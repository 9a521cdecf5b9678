//! libvirt XML: domain, device and network documents written with quick-xml's
//! writer, and read back into typed, normalized values for diffing.
//!
//! Invariants:
//! - **Every user value is escaped.** Documents are built with
//!   [`quick_xml::Writer`]; element and attribute names are our constants,
//!   values go through [`escape_attr`]/[`escape_text`]. Nothing is spliced
//!   into markup with `format!`. Newlines, tabs and carriage returns are
//!   written as character references so they survive attribute-value
//!   normalization (a literal newline in an attribute reads back as a space).
//!   Characters XML 1.0 cannot carry at all (NUL and the other C0 controls,
//!   U+FFFE, U+FFFF) are replaced by U+FFFD; such a value then reads back
//!   different from what was asked, which shows up as a diff: the model
//!   rejects them before they get here.
//! - **Output is deterministic.** The same input gives the same bytes.
//! - **Parsing never panics** and ignores everything it does not manage
//!   (controllers, `<alias>`, `<address>`, `<seclabel>`, …); errors name the
//!   element path and attribute that was malformed.
//! - **Normalization is shared.** Units, case (MAC, UUID), defaults libvirt
//!   fills in (`currentMemory`, `stp`, lifecycle actions) and auto-generated
//!   names (`vnet0`) are normalized in one place per document kind, the same
//!   way for desired (`Observed*::from_def`) and observed values.

pub mod domain;
pub mod network;
mod tree;
mod write;

pub use tree::{Attr, Doc, Elem};

/// virtform's XML namespace for the domain `<metadata>` marker.
pub const NS: &str = "https://virtform.dev/xmlns/virtform/1";
/// The prefix virtform writes for [`NS`]. Readers match by URI, never by prefix.
pub const PREFIX: &str = "virtform";

/// What went wrong reading a libvirt XML document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed XML (quick-xml's message and the byte offset).
    #[error("malformed XML at byte {position}: {message}")]
    Syntax { position: u64, message: String },
    /// The document has no root element.
    #[error("the document is empty: expected a <{expected}> element")]
    Empty { expected: &'static str },
    /// The root element is not the expected one.
    #[error("expected a <{expected}> document, found <{found}>")]
    UnexpectedRoot { expected: &'static str, found: String },
    /// A required element is missing.
    #[error("<{parent}> has no <{element}> element")]
    MissingElement { parent: String, element: &'static str },
    /// A required attribute is missing.
    #[error("<{element}> has no `{attribute}` attribute")]
    MissingAttribute { element: String, attribute: &'static str },
    /// An attribute or element text that does not parse.
    #[error("invalid {what} {value:?} in <{element}>: expected {expected}")]
    InvalidValue { element: String, what: String, value: String, expected: String },
    /// Elements nested deeper than any libvirt document (defends the stack).
    #[error("elements nested deeper than {limit} levels at <{element}>")]
    TooDeep { element: String, limit: usize },
}

impl XmlError {
    pub(crate) fn invalid(element: Elem<'_>, attribute: Option<&str>, value: &str, expected: impl Into<String>) -> XmlError {
        XmlError::InvalidValue {
            element: element.path(),
            what: match attribute {
                Some(a) => format!("attribute `{a}`"),
                None => "text".to_string(),
            },
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// Escapes an attribute value (quotes, `<`, `>`, `&`, and `\t` `\n` `\r` as
/// character references); characters XML cannot carry become U+FFFD.
pub fn escape_attr(s: &str) -> std::borrow::Cow<'_, str> {
    escape(s, true)
}

/// Escapes element text (`<`, `>`, `&`, and `\r` as a character reference);
/// characters XML cannot carry become U+FFFD.
pub fn escape_text(s: &str) -> std::borrow::Cow<'_, str> {
    escape(s, false)
}

fn escape(s: &str, attr: bool) -> std::borrow::Cow<'_, str> {
    let needs = s.chars().any(|c| matches!(c, '<' | '>' | '&' | '\r') || (attr && matches!(c, '"' | '\'' | '\n' | '\t')) || !xml_char(c));
    if !needs {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => out.push_str("&#13;"),
            '"' if attr => out.push_str("&quot;"),
            '\'' if attr => out.push_str("&apos;"),
            '\n' if attr => out.push_str("&#10;"),
            '\t' if attr => out.push_str("&#9;"),
            c if !xml_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether XML 1.0 can carry this character at all (the `Char` production).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// What a value looks like after a trip through an XML document: characters
/// XML cannot carry replaced by U+FFFD. Used by `from_def` so a desired value
/// compares equal to what libvirt would store.
pub(crate) fn xml_safe(s: &str) -> String {
    // Nearly every string is clean: copy it whole instead of char by char.
    if s.chars().all(xml_char) {
        return s.to_string();
    }
    s.chars().map(|c| if xml_char(c) { c } else { '\u{FFFD}' }).collect()
}

/// Converts a libvirt scaled integer (`<memory unit='MiB'>256</memory>`) to
/// KiB, rounding up like libvirt does. Units as libvirt's `virScaleInteger`:
/// `b`/`byte`/`bytes`; `k`/`KiB` (1024) and `KB` (1000), and likewise M, G,
/// T, P, E; case-insensitive; no unit means KiB.
pub fn scaled_to_kib(value: u64, unit: Option<&str>) -> Result<u64, String> {
    let bytes: u128 = match unit.map(str::trim) {
        None | Some("") => return Ok(value),
        Some(u) => {
            let lower = u.to_ascii_lowercase();
            if matches!(lower.as_str(), "b" | "byte" | "bytes") {
                value as u128
            } else {
                let mut chars = lower.chars();
                let power = match chars.next() {
                    Some('k') => 1,
                    Some('m') => 2,
                    Some('g') => 3,
                    Some('t') => 4,
                    Some('p') => 5,
                    Some('e') => 6,
                    _ => return Err(format!("unknown unit \"{u}\"")),
                };
                let base: u128 = match chars.as_str() {
                    "" | "ib" => 1024,
                    "b" => 1000,
                    _ => return Err(format!("unknown unit \"{u}\"")),
                };
                (value as u128).checked_mul(base.pow(power)).ok_or_else(|| format!("{value} {u} is too large"))?
            }
        }
    };
    u64::try_from(bytes.div_ceil(1024)).map_err(|_| format!("{value} {} is too large", unit.unwrap_or("")))
}

/// Lowercases a UUID and adds the dashes when it was written without them
/// (libvirt accepts both and always prints the dashed lowercase form).
pub fn normalize_uuid(s: &str) -> String {
    // Already canonical (what virtform writes and libvirt returns).
    let b = s.as_bytes();
    if b.len() == 36 && b.iter().enumerate().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_digit() || (b'a'..=b'f').contains(c) }) {
        return s.to_string();
    }
    let hex: String = s.chars().filter(|c| *c != '-' && !c.is_whitespace()).collect();
    if hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        crate::model::common::uuid_dashed(&hex.to_ascii_lowercase())
    } else {
        s.trim().to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_scale_like_libvirt() {
        assert_eq!(scaled_to_kib(256, Some("MiB")), Ok(262144));
        assert_eq!(scaled_to_kib(256, Some("M")), Ok(262144));
        assert_eq!(scaled_to_kib(256, Some("m")), Ok(262144));
        assert_eq!(scaled_to_kib(262144, None), Ok(262144));
        assert_eq!(scaled_to_kib(262144, Some("KiB")), Ok(262144));
        assert_eq!(scaled_to_kib(262144, Some("k")), Ok(262144));
        assert_eq!(scaled_to_kib(1, Some("GiB")), Ok(1 << 20));
        assert_eq!(scaled_to_kib(1, Some("G")), Ok(1 << 20));
        assert_eq!(scaled_to_kib(1, Some("T")), Ok(1 << 30));
        assert_eq!(scaled_to_kib(268435456, Some("b")), Ok(262144));
        assert_eq!(scaled_to_kib(268435456, Some("bytes")), Ok(262144));
        // Decimal units, rounded up to a whole KiB.
        assert_eq!(scaled_to_kib(1024, Some("KB")), Ok(1000));
        assert_eq!(scaled_to_kib(1, Some("MB")), Ok(977));
        assert_eq!(scaled_to_kib(1, Some("b")), Ok(1));
        assert!(scaled_to_kib(1, Some("parsecs")).unwrap_err().contains("unknown unit"));
        assert!(scaled_to_kib(1, Some("Mx")).is_err());
        assert!(scaled_to_kib(u64::MAX, Some("EiB")).unwrap_err().contains("too large"));
    }

    #[test]
    fn uuids_normalize() {
        assert_eq!(normalize_uuid("0B7F6A3E-5D2C-4C1A-9E8B-7F6A3E5D2C4C"), "0b7f6a3e-5d2c-4c1a-9e8b-7f6a3e5d2c4c");
        assert_eq!(normalize_uuid("0b7f6a3e5d2c4c1a9e8b7f6a3e5d2c4c"), "0b7f6a3e-5d2c-4c1a-9e8b-7f6a3e5d2c4c");
        assert_eq!(normalize_uuid("not-a-uuid"), "not-a-uuid");
        assert_eq!(normalize_uuid("0b7f6a3e-5d2c-4c1a-9e8b-7f6a3e5d2c4c"), "0b7f6a3e-5d2c-4c1a-9e8b-7f6a3e5d2c4c");
        // Canonical shape with a stray character is not taken as canonical.
        assert_eq!(normalize_uuid("0b7f6a3e-5d2c-4c1a-9e8b-7f6a3e5d2c4g"), "0b7f6a3e-5d2c-4c1a-9e8b-7f6a3e5d2c4g");
        assert_eq!(normalize_uuid("0b7f6a3e-5d2c-4c1a-9e8b 7f6a3e5d2c4c"), "0b7f6a3e-5d2c-4c1a-9e8b-7f6a3e5d2c4c");
    }

    #[test]
    fn xml_safe_replaces_only_what_xml_cannot_carry() {
        assert_eq!(xml_safe("plain ünïcode\ttab"), "plain ünïcode\ttab");
        assert_eq!(xml_safe("a\u{0}b\u{1b}c"), "a\u{FFFD}b\u{FFFD}c");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_attr("a<b>&'\"\n\t\r"), "a&lt;b&gt;&amp;&apos;&quot;&#10;&#9;&#13;");
        assert_eq!(escape_text("a<b>&'\"\n\t\r"), "a&lt;b&gt;&amp;'\"\n\t&#13;");
        assert_eq!(escape_text("a\u{0}b\u{1b}c\u{FFFF}"), "a\u{FFFD}b\u{FFFD}c\u{FFFD}");
        assert!(matches!(escape_attr("plain"), std::borrow::Cow::Borrowed(_)));
    }
}
