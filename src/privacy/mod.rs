//! Consumer privacy: who is known to the privacy service, their requests and legal holds,
//! applied from the change log. (How an erasure rewrites history is the store's:
//! `store::redact`.)
mod state;

pub use state::{Consumer, Hold, PrivacyState, Request};
