//! Normalized contact identifiers (E.164 phone, email, external id) and their masked form for logs.
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// An owned, normalized identifier. Phones are the E.164 digits as an integer
/// (E.164 has at most 15 digits and never starts with 0, so this is lossless).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContactKey {
    Phone(u64),
    Email(Box<str>),
    External(Box<str>),
    /// An identifier erased by a privacy request, kept only as its keyed hash so the
    /// person's opt-outs and DNC entries stay enforced. Never produced from user input.
    Erased(Token),
}

/// A keyed hash (truncated HMAC-SHA256) of a canonical identifier.
pub type Token = [u8; 16];

/// A borrowed identifier, as produced on the hot path without allocating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContactRef<'a> {
    Phone(u64),
    Email(Cow<'a, str>),
    External(&'a str),
    Erased(Token),
}

impl ContactRef<'_> {
    pub fn to_key(&self) -> ContactKey {
        match self {
            ContactRef::Phone(p) => ContactKey::Phone(*p),
            ContactRef::Email(e) => ContactKey::Email(e.as_ref().into()),
            ContactRef::External(x) => ContactKey::External((*x).into()),
            ContactRef::Erased(t) => ContactKey::Erased(*t),
        }
    }
}

impl ContactKey {
    pub fn as_ref(&self) -> ContactRef<'_> {
        match self {
            ContactKey::Phone(p) => ContactRef::Phone(*p),
            ContactKey::Email(e) => ContactRef::Email(Cow::Borrowed(e)),
            ContactKey::External(x) => ContactRef::External(x),
            ContactKey::Erased(t) => ContactRef::Erased(*t),
        }
    }

    /// The canonical text form: `+12025551234`, `jo@example.com`, `ext:42`.
    /// Parses only that canonical form (used for stored data, not user input).
    pub fn from_canonical(s: &str) -> Option<ContactKey> {
        if let Some(d) = s.strip_prefix('+') {
            if d.is_empty() || d.len() > 15 || !d.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            return d.parse().ok().map(ContactKey::Phone);
        }
        if let Some(h) = s.strip_prefix("erased:") {
            let mut t = [0u8; 16];
            return hex::decode_to_slice(h, &mut t)
                .ok()
                .map(|_| ContactKey::Erased(t));
        }
        if let Some(x) = s.strip_prefix("ext:") {
            return (!x.is_empty()).then(|| ContactKey::External(x.into()));
        }
        s.contains('@').then(|| ContactKey::Email(s.into()))
    }

    pub fn masked(&self) -> String {
        if let ContactKey::Erased(_) = self {
            return self.to_string();
        }
        mask(&self.to_string())
    }
}

/// Lowercase hex of `bytes`. `hex::encode` goes through a char iterator,
/// which was a few percent of an import's CPU (hashes, salts and tokens on every record).
pub fn hex_string(bytes: &[u8]) -> String {
    if bytes.len() > 32 {
        return hex::encode(bytes);
    }
    let mut buf = [0u8; 64];
    let out = &mut buf[..bytes.len() * 2];
    // The buffer is exactly twice the input; hex digits are ASCII.
    let _ = hex::encode_to_slice(bytes, out);
    String::from_utf8_lossy(out).into_owned()
}

fn write_token(f: &mut fmt::Formatter<'_>, t: &Token) -> fmt::Result {
    let mut buf = [0u8; 32];
    let _ = hex::encode_to_slice(t, &mut buf);
    f.write_str("erased:")?;
    f.write_str(std::str::from_utf8(&buf).unwrap_or_default())
}

impl fmt::Display for ContactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContactKey::Phone(p) => f.write_str(&phone_text(*p)),
            ContactKey::Email(e) => f.write_str(e),
            ContactKey::External(x) => write!(f, "ext:{x}"),
            ContactKey::Erased(t) => write_token(f, t),
        }
    }
}

/// Appends `n` in decimal. Check answers write a phone number and often a record id each,
/// and `format!` was a third of turning a decision into a response.
pub fn push_decimal(s: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    // ASCII digits: always valid UTF-8.
    s.push_str(std::str::from_utf8(decimal(n, &mut buf)).unwrap_or_default());
}

/// `n`'s decimal digits, written at the end of `buf`.
pub fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// `+` and the E.164 digits.
pub fn phone_text(p: u64) -> String {
    let mut s = String::with_capacity(21);
    s.push('+');
    push_decimal(&mut s, p);
    s
}

impl ContactRef<'_> {
    /// The canonical text (what `Display` writes), for phones without the formatting
    /// machinery.
    pub fn text(&self) -> String {
        match self {
            ContactRef::Phone(p) => phone_text(*p),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for ContactRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContactRef::Phone(p) => f.write_str(&phone_text(*p)),
            ContactRef::Email(e) => f.write_str(e),
            ContactRef::External(x) => write!(f, "ext:{x}"),
            ContactRef::Erased(t) => write_token(f, t),
        }
    }
}

impl Serialize for ContactKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContactKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ContactKey::from_canonical(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("not a canonical contact: {}", mask(&s)))
        })
    }
}

/// Most bytes of a caller's value an error message quotes.
pub const QUOTE_MAX: usize = 64;

/// A caller's value as an error message may show it: at most QUOTE_MAX bytes, control
/// characters escaped (`\u{0}`), and the full length said when it was cut.
pub fn quote(s: &str) -> String {
    let mut end = s.len().min(QUOTE_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 24);
    for c in s[..end].chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if end < s.len() {
        out.push_str(&format!("... ({} bytes)", s.len()));
    }
    out
}

/// What a log may say of an input that did not parse: its length and kind, never its text
/// (masking the raw input kept nine of ten digits of `2025550143`).
pub fn describe_unparsed(s: &str) -> String {
    let kind = if s.contains('@') {
        "email-like"
    } else if s.bytes().any(|b| b.is_ascii_digit()) {
        "with digits"
    } else {
        "text"
    };
    format!("<unparsed, {} bytes, {kind}>", s.len())
}

/// Masks a phone, email or other identifier for logs and metrics: `+1202***1234`, `j***@example.com`.
pub fn mask(s: &str) -> String {
    if let Some((local, domain)) = s.split_once('@') {
        let first = local.chars().next().unwrap_or('*');
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 6 {
        return "***".to_string();
    }
    let head: String = chars[..chars.len().min(5).min(chars.len() - 4)]
        .iter()
        .collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}***{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_short_and_escaped() {
        assert_eq!(quote("abc"), "abc");
        assert_eq!(quote("a\0b\n"), "a\\u{0}b\\n");
        let long = "x".repeat(1 << 20);
        let q = quote(&long);
        assert!(q.len() < 100, "{q}");
        assert!(q.ends_with("(1048576 bytes)"), "{q}");
        // Never cut inside a character.
        assert!(quote(&"é".repeat(40)).starts_with("éé"));
        assert!(!describe_unparsed("2025550143").contains("2025"));
    }

    #[test]
    fn masks_phones_and_emails() {
        assert_eq!(mask("+12025551234"), "+1202***1234");
        assert_eq!(mask("jane.doe@example.com"), "j***@example.com");
        assert_eq!(mask("12345"), "***");
    }

    #[test]
    fn canonical_round_trip() {
        for s in [
            "+12025551234",
            "jo@example.com",
            "ext:crm-42",
            "erased:00112233445566778899aabbccddeeff",
        ] {
            let k = ContactKey::from_canonical(s).unwrap();
            assert_eq!(k.to_string(), s);
        }
        assert!(ContactKey::from_canonical("2025551234").is_none());
        assert!(ContactKey::from_canonical("+12a").is_none());
    }

    #[test]
    fn phone_text_is_plus_and_digits() {
        for p in [
            0,
            7,
            10,
            12025551234,
            447911123456,
            999_999_999_999_999,
            u64::MAX,
        ] {
            assert_eq!(phone_text(p), format!("+{p}"));
        }
        assert_eq!(ContactRef::Phone(12025551234).text(), "+12025551234");
        assert_eq!(ContactRef::Phone(12025551234).to_string(), "+12025551234");
        let e = ContactRef::Email("jo@example.com".into());
        assert_eq!(e.text(), "jo@example.com");
    }
}
