//! Plain data shared by every layer: identifiers, channels and purposes, events, times.
pub mod event;
pub mod ids;
pub mod kinds;
pub mod limits;
pub mod privacy;
pub mod time;

pub use event::{
    AttemptEvent, ConsentEvent, ConsumerEvent, ConsumerIdentifiersEvent, DncAddEvent,
    DncRemoveEvent, ErasureEvent, Event, EventKind, InboundAction, InboundEvent, LegalHoldEvent,
    LinkEvent, RedactedEvent, RequestSubmittedEvent, RequestUpdatedEvent, StoredEvent, UnlinkEvent,
};
pub use ids::{ContactKey, ContactRef, Token, mask};
pub use kinds::{
    AttemptOutcome, Channel, ChannelSet, ConsentStatus, Direction, DncType, DncTypeSet, OutcomeSet,
    Purpose, PurposeSet, Reason, ReasonSet,
};

/// Milliseconds since the Unix epoch, UTC. Every time in the core is one of these.
pub type Millis = i64;

pub const DAY_MS: Millis = 86_400_000;
