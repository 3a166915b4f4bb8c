//! The decision rules: pure functions from index facts, a named policy and a check to a verdict.
mod policies;
mod rules;
mod settings;

pub use policies::Policies;
pub use rules::{CheckInput, Decision, Matched, RecordId, evaluate};
pub use settings::{Policy, PolicyConfig, PolicyError};
