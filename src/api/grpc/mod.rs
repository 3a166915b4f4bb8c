//! The gRPC transport (tonic): the preflight.v1 services, health and reflection.
mod consent;
pub mod convert;
mod decision;
mod dnc;
mod events;
pub mod status;

pub use consent::ConsentApi;
pub use decision::DecisionApi;
pub use dnc::DncApi;
pub use events::EventApi;
