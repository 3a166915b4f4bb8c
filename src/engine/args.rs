//! Enum arguments as transports hand them over: unset, a known value, or something unknown.
use crate::error::{Error, Result};
use crate::model::Millis;
use serde::Serialize;

/// A time as a transport received it: none, epoch milliseconds, or text (RFC 3339, a date,
/// or digits) that the engine parses, so a bad one is reported like any other field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum When<'a> {
    #[default]
    Unset,
    Millis(Millis),
    Text(&'a str),
}

impl When<'_> {
    /// The time, refused (naming `field`) when it does not parse or lies out of range.
    pub fn resolve(&self, field: &str) -> Result<Option<Millis>> {
        match self {
            When::Unset => Ok(None),
            When::Millis(ms) => time_arg(field, Some(*ms)),
            When::Text(s) if s.trim().is_empty() => Ok(None),
            When::Text(s) => crate::model::time::parse_time(s.trim())
                .map(Some)
                .map_err(|e| Error::invalid(field, e)),
        }
    }
}

impl From<Option<Millis>> for When<'_> {
    fn from(v: Option<Millis>) -> Self {
        v.map_or(When::Unset, When::Millis)
    }
}

/// A caller's time, refused (naming `field`) outside the range every stored or checked time
/// lies in, so no age or expiry arithmetic can overflow.
pub fn time_arg(field: &str, v: Option<Millis>) -> Result<Option<Millis>> {
    v.map(|ms| crate::model::time::in_range(ms).map_err(|e| Error::invalid(field, e)))
        .transpose()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub enum Arg<T> {
    #[default]
    Unset,
    Set(T),
    /// What the caller sent, for the error message.
    Unknown(String),
}

impl<T: Copy> Arg<T> {
    pub fn require(&self, field: &str) -> Result<T> {
        match self {
            Arg::Set(v) => Ok(*v),
            Arg::Unset => Err(Error::invalid(field, "is required (got unspecified)")),
            Arg::Unknown(v) => Err(Error::invalid(field, format!("unknown value `{v}`"))),
        }
    }

    pub fn or(&self, field: &str, default: T) -> Result<T> {
        match self {
            Arg::Unset => Ok(default),
            _ => self.require(field),
        }
    }

    pub fn optional(&self, field: &str) -> Result<Option<T>> {
        match self {
            Arg::Unset => Ok(None),
            _ => self.require(field).map(Some),
        }
    }
}
