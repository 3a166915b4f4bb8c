//! Consumer privacy: who is known to the privacy service, their requests and legal holds,
//! applied from the change log, and the redaction rules an erasure applies to history.
mod redact;
mod state;

pub use redact::redactor;
pub use state::{Consumer, Hold, PrivacyState, Request};
