//! Turns what callers type into canonical identifiers: E.164 phones, lower-case emails, `ext:` ids.
pub mod email;
pub mod phone;

use crate::model::ContactRef;
pub use phone::{PhoneError, PhoneNormalizer, Region};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    #[error("empty contact")]
    Empty,
    #[error("phone: {0}")]
    Phone(#[from] PhoneError),
    #[error("email: {0}")]
    Email(#[from] email::EmailError),
    #[error("external id must be `ext:` followed by 1 to 256 visible characters")]
    External,
    #[error("{0} bytes, at most {max}", max = crate::model::limits::MAX_CONTACT)]
    TooLong(usize),
    #[error("holds a control character")]
    Control,
}

/// Normalizes any contact: `ext:<id>`, an email (anything with `@`), else a phone.
pub fn contact<'a>(
    phones: &PhoneNormalizer,
    input: &'a str,
    region: Option<Region>,
) -> Result<ContactRef<'a>, ContactError> {
    if input.len() > crate::model::limits::MAX_CONTACT {
        return Err(ContactError::TooLong(input.len()));
    }
    let t = input.trim();
    if t.is_empty() {
        return Err(ContactError::Empty);
    }
    if t.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(ContactError::Control);
    }
    if let Some(id) = t.strip_prefix("ext:") {
        if id.is_empty()
            || id.len() > crate::model::limits::MAX_EXTERNAL_ID
            || id.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ContactError::External);
        }
        return Ok(ContactRef::External(id));
    }
    if t.contains('@') {
        return Ok(ContactRef::Email(email::normalize(t)?));
    }
    Ok(ContactRef::Phone(phones.normalize(t, region)?))
}
