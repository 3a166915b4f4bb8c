//! The core's error type: what a caller did wrong, or why the service cannot answer safely.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Bad input. `message` names the value.
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    NotFound(String),
    /// A long-running call was cut off; the message says how to resume.
    #[error("{0}")]
    Aborted(String),
    /// The store cannot be reached; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// No credentials, or ones that are not valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// A known caller without the role the call needs.
    #[error("{0}")]
    PermissionDenied(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::ResourceExhausted(_) => "resource_exhausted",
            Error::FailedPrecondition(_) => "failed_precondition",
            Error::NotFound(_) => "not_found",
            Error::Aborted(_) => "aborted",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::PermissionDenied(_) => "permission_denied",
        }
    }

    /// The same error, with its field placed under a parent (`checks[3].` + `channel`).
    pub fn within(self, parent: &str) -> Error {
        match self {
            Error::InvalidArgument { field, message } => Error::InvalidArgument {
                field: format!("{parent}.{field}"),
                message,
            },
            other => other,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
