//! Email addresses: trimmed and lower-cased, with a structural check that fails closed.
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("not an email address: {0}")]
    Malformed(&'static str),
}

/// Borrows when the input is already normalized, so the common case allocates nothing.
pub fn normalize(input: &str) -> Result<Cow<'_, str>, EmailError> {
    let t = input.trim();
    if t.len() > 254 {
        return Err(EmailError::Malformed("longer than 254 characters"));
    }
    let (local, domain) = t.split_once('@').ok_or(EmailError::Malformed("no @"))?;
    if local.is_empty() || local.len() > 64 {
        return Err(EmailError::Malformed("empty or over-long local part"));
    }
    if domain.contains('@') {
        return Err(EmailError::Malformed("more than one @"));
    }
    if domain.is_empty()
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(EmailError::Malformed("domain needs a dot-separated name"));
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EmailError::Malformed("contains white space"));
    }
    if t.chars().any(|c| c.is_uppercase()) {
        Ok(Cow::Owned(t.to_lowercase()))
    } else {
        Ok(Cow::Borrowed(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lowercases() {
        assert_eq!(
            normalize("  Jane.Doe@Example.COM ").unwrap(),
            "jane.doe@example.com"
        );
        assert!(matches!(
            normalize("jo@example.com").unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "jo",
            "@example.com",
            "jo@",
            "jo@example",
            "jo@@example.com",
            "j o@example.com",
            "jo@.com",
        ] {
            assert!(normalize(s).is_err(), "{s}");
        }
    }
}
