//! How large a caller's values may be, and which characters identifiers and keys refuse:
//! one table, so every transport and every write enforces the same bounds.

/// The longest valid email address (RFC 5321: 64 local + @ + 255 domain), and so the
/// longest contact of any kind.
pub const MAX_CONTACT: usize = 320;
/// Short labels: correlation_id, category, subject, campaign_id, source, list names.
pub const MAX_LABEL: usize = 256;
/// An external id, without its `ext:` prefix.
pub const MAX_EXTERNAL_ID: usize = 256;
/// Idempotency keys and provider message ids.
pub const MAX_KEY: usize = 256;
/// Free text kept with a record: proof, notes, reasons, inbound message text.
pub const MAX_TEXT: usize = 4096;

/// Why `v` cannot be an identifier or key of at most `max` bytes (the caller names the
/// field): too long, or holding a control character (NUL included).
pub fn key_problem(v: &str, max: usize) -> Option<String> {
    if v.len() > max {
        return Some(format!("{} bytes, at most {max}", v.len()));
    }
    v.chars()
        .position(char::is_control)
        .map(|i| format!("holds a control character at character {i}"))
}

/// Why free text or a label of at most `max` bytes is refused: only its length; control
/// characters are kept (and never echoed raw).
pub fn text_problem(v: &str, max: usize) -> Option<String> {
    (v.len() > max).then(|| format!("{} bytes, at most {max}", v.len()))
}
