//! Plain data shared by every layer: identifiers, channels and purposes, events, times.
pub mod event;
pub mod ids;
pub mod kinds;

pub use event::{
    ConsentEvent, DncAddEvent, DncRemoveEvent, Event, EventKind, InboundAction, InboundEvent,
    LinkEvent, StoredEvent, UnlinkEvent,
};
pub use ids::{ContactKey, ContactRef, mask};
pub use kinds::{
    Channel, ChannelSet, ConsentStatus, Direction, DncType, DncTypeSet, Purpose, PurposeSet,
    Reason, ReasonSet,
};

/// Milliseconds since the Unix epoch, UTC. Every time in the core is one of these.
pub type Millis = i64;

pub const DAY_MS: Millis = 86_400_000;
