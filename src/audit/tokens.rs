//! Keyed hashes of identifiers (HMAC-SHA256, truncated to 128 bits): audit subjects and the
//! form in which an erased person's opt-outs stay enforced.
use crate::model::{ContactKey, ContactRef, Token};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::io::Write as _;
use std::path::Path;

#[derive(Clone)]
pub struct Tokenizer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokenizer(..)")
    }
}

impl Tokenizer {
    pub fn from_key(key: &[u8]) -> Tokenizer {
        Tokenizer {
            mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length"),
        }
    }

    /// Reads the key file, or creates it with 32 random bytes, readable by the owner only.
    /// Whoever holds this key can test guesses against erased identifiers: keep it out of
    /// backups of the data directory where that matters (`privacy.key_file`).
    pub fn load_or_create(path: &Path) -> std::io::Result<Tokenizer> {
        match std::fs::read(path) {
            Ok(key) if key.len() >= 16 => return Ok(Tokenizer::from_key(&key)),
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: key shorter than 16 bytes", path.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let key: [u8; 32] = rand::random();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(path)?;
        f.write_all(&key)?;
        f.sync_all()?;
        Ok(Tokenizer::from_key(&key))
    }

    /// The token of an identifier; an erased identifier is its own token.
    pub fn token(&self, key: &ContactRef<'_>) -> Token {
        let mut mac = self.mac.clone();
        match key {
            ContactRef::Erased(t) => return *t,
            ContactRef::Phone(p) => {
                let mut buf = [0u8; 24];
                let mut cur = std::io::Cursor::new(&mut buf[..]);
                let _ = write!(cur, "+{p}");
                let n = cur.position() as usize;
                mac.update(&buf[..n]);
            }
            ContactRef::Email(e) => mac.update(e.as_bytes()),
            ContactRef::External(x) => {
                mac.update(b"ext:");
                mac.update(x.as_bytes());
            }
        }
        let full = mac.finalize().into_bytes();
        let mut t = [0u8; 16];
        t.copy_from_slice(&full[..16]);
        t
    }

    pub fn token_of(&self, key: &ContactKey) -> Token {
        self.token(&key.as_ref())
    }

    /// The subject name used in audit records: `erased:<hex>`, the same text an erased
    /// identifier has everywhere else.
    pub fn subject(&self, key: &ContactKey) -> String {
        ContactKey::Erased(self.token_of(key)).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_keyed_and_stable() {
        let a = Tokenizer::from_key(b"key one, sixteen+");
        let b = Tokenizer::from_key(b"key two, sixteen+");
        let k = ContactKey::Phone(12025550100);
        assert_eq!(a.token_of(&k), a.token_of(&k));
        assert_ne!(a.token_of(&k), b.token_of(&k));
        assert_ne!(
            a.token_of(&ContactKey::Email("x@y.z".into())),
            a.token_of(&ContactKey::External("x@y.z".into()))
        );
        let t = a.token_of(&k);
        assert_eq!(a.token_of(&ContactKey::Erased(t)), t);
    }
}
