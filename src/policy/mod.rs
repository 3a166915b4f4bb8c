//! The decision rules: pure functions from index facts, a named policy and a check to a verdict.
pub mod frequency;
mod policies;
mod rules;
mod settings;

pub use frequency::{FrequencyJudgement, FrequencyLimit, FrequencyLimitConfig};
pub use policies::Policies;
pub use rules::{CheckInput, Decision, Matched, RecordId, evaluate};
pub use settings::{Policy, PolicyConfig, PolicyError};
