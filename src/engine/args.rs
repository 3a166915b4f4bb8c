//! Enum arguments as transports hand them over: unset, a known value, or something unknown.
use crate::error::{Error, Result};
use crate::model::Millis;
use serde::Serialize;

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
