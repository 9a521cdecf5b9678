//! SSH keys, read without any cryptography: the OpenSSH private key
//! format (`-----BEGIN OPENSSH PRIVATE KEY-----`, PROTOCOL.key) keeps the
//! public key and the cipher name in the clear, which is all virtform needs
//! to check a `connection.private_key` at validate time (is it a private
//! key, is it encrypted) and to authorize its public half in the guest.
//!
//! Invariants: nothing here prints, logs or returns the private part; every
//! error names what is wrong with the key, never its bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const END: &str = "-----END OPENSSH PRIVATE KEY-----";
const MAGIC: &[u8] = b"openssh-key-v1\0";

/// What a private key file holds, minus the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// `ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`, …
    pub key_type: String,
    /// The public key as an authorized_keys line without comment: `TYPE BASE64`.
    pub public: String,
    /// Encrypted with a passphrase (cipher other than `none`).
    pub encrypted: bool,
}

/// Reads an OpenSSH private key. The error is a sentence fit for a
/// diagnostic, and says how to get a usable key.
pub fn parse_private_key(text: &str) -> Result<KeyInfo, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("the private key is empty".into());
    }
    if t.starts_with("-----BEGIN") && t.contains("PRIVATE KEY-----") && !t.starts_with(BEGIN) {
        return Err("this is a PEM private key; virtform reads keys in the OpenSSH format: convert it with `ssh-keygen -p -f KEYFILE` (rewrites it in place) or make a new one with `ssh-keygen -t ed25519`".into());
    }
    if t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-") {
        return Err("this is a public key; `private_key` needs the private key file (the one without .pub)".into());
    }
    let Some(body) = t.strip_prefix(BEGIN).and_then(|b| b.trim_end().strip_suffix(END)) else {
        return Err(format!("not an OpenSSH private key: expected a text starting with {BEGIN}"));
    };
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = BASE64.decode(b64.as_bytes()).map_err(|_| "the private key is damaged: its body is not valid base64".to_string())?;
    let damaged = || "the private key is damaged: its structure is truncated or malformed".to_string();
    let mut r = Reader(bytes.strip_prefix(MAGIC).ok_or_else(|| "the private key is damaged: the openssh-key-v1 header is missing".to_string())?);
    let cipher = r.string().ok_or_else(damaged)?;
    let _kdf = r.string().ok_or_else(damaged)?;
    let _kdf_options = r.string().ok_or_else(damaged)?;
    let n = r.u32().ok_or_else(damaged)?;
    if n != 1 {
        return Err(format!("the key file holds {n} keys; virtform needs exactly one"));
    }
    let public = r.string().ok_or_else(damaged)?;
    let key_type = Reader(public).string().and_then(|k| std::str::from_utf8(k).ok()).filter(|k| !k.is_empty()).ok_or_else(damaged)?;
    Ok(KeyInfo { key_type: key_type.to_string(), public: format!("{key_type} {}", BASE64.encode(public)), encrypted: cipher != b"none" })
}

/// A key file in the OpenSSH format with the given cipher, number of keys
/// and key type, whose secret part is filler: enough for everything here
/// (which never decrypts), and no real key in any test.
#[doc(hidden)]
pub fn fake_private_key(cipher: &str, nkeys: u32, key_type: &str) -> String {
    let s = |b: &[u8], out: &mut Vec<u8>| {
        out.extend((b.len() as u32).to_be_bytes());
        out.extend(b);
    };
    let mut public = Vec::new();
    s(key_type.as_bytes(), &mut public);
    s(&[7u8; 32], &mut public);
    let mut v = MAGIC.to_vec();
    s(cipher.as_bytes(), &mut v);
    s(if cipher == "none" { b"none" } else { b"bcrypt" }, &mut v);
    s(b"", &mut v);
    v.extend(nkeys.to_be_bytes());
    s(&public, &mut v);
    s(b"private-part", &mut v);
    let b = BASE64.encode(&v);
    let lines: Vec<&str> = b.as_bytes().chunks(70).map(|c| std::str::from_utf8(c).unwrap_or("")).collect();
    format!("{BEGIN}\n{}\n{END}\n", lines.join("\n"))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Option<u32> {
        let (h, t) = self.0.split_at_checked(4)?;
        self.0 = t;
        Some(u32::from_be_bytes(h.try_into().ok()?))
    }
    fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        let (h, t) = self.0.split_at_checked(n)?;
        self.0 = t;
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cipher: &str, nkeys: u32, key_type: &str) -> String {
        fake_private_key(cipher, nkeys, key_type)
    }

    #[test]
    fn reads_the_public_half_and_the_cipher() {
        let k = parse_private_key(&key("none", 1, "ssh-ed25519")).unwrap();
        assert_eq!(k.key_type, "ssh-ed25519");
        assert!(k.public.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"), "{}", k.public);
        assert!(!k.encrypted);
        assert!(parse_private_key(&key("aes256-ctr", 1, "ssh-ed25519")).unwrap().encrypted);
    }

    #[test]
    fn refuses_what_is_not_one_openssh_private_key() {
        let cases = [
            ("", "empty"),
            ("ssh-ed25519 AAAAC3Nza user@host", "public key"),
            ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "PEM"),
            ("hello", "not an OpenSSH private key"),
            (&format!("{BEGIN}\n!!!\n{END}"), "base64"),
            (&format!("{BEGIN}\nAAAA\n{END}"), "header"),
            (&key("none", 2, "ssh-ed25519"), "2 keys"),
        ];
        for (text, want) in cases {
            let e = parse_private_key(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let mut truncated = key("none", 1, "ssh-ed25519");
        truncated.replace_range(60..120, "");
        assert!(parse_private_key(&truncated).is_err());
    }

    #[test]
    fn reads_a_key_made_by_ssh_keygen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let Ok(st) = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "t", "-f"]).arg(&path).status() else {
            assert!(std::env::var_os("VIRTFORM_REAL_HOST").is_none(), "ssh-keygen is missing: run scripts/host-setup");
            return;
        };
        assert!(st.success());
        let k = parse_private_key(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        assert_eq!(public.trim().trim_end_matches(" t"), k.public);
        assert!(!k.encrypted);
    }
}
