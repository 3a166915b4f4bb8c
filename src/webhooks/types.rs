//! Webhook event types (`consent.withdrawn`, `dnc.added`, ...): which change-log event is
//! delivered as which, and the sets an endpoint subscribes to.
use crate::model::{ConsentStatus, Event, InboundAction};

macro_rules! types {
    ($($v:ident => $n:literal),* $(,)?) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub enum EventType { $($v),* }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$v),*];
            pub const fn as_str(self) -> &'static str {
                match self { $(EventType::$v => $n),* }
            }
        }
    };
}

types! {
    ConsentGranted => "consent.granted",
    ConsentWithdrawn => "consent.withdrawn",
    ConsentDenied => "consent.denied",
    DncAdded => "dnc.added",
    DncRemoved => "dnc.removed",
    IdentityLinked => "identity.linked",
    IdentityUnlinked => "identity.unlinked",
    InboundOptOut => "inbound.opt_out",
    InboundOptIn => "inbound.opt_in",
    InboundHelp => "inbound.help",
    InboundMessage => "inbound.message",
    AttemptRecorded => "attempt.recorded",
    ConsumerRegistered => "privacy.consumer_registered",
    ConsumerUpdated => "privacy.consumer_updated",
    RequestSubmitted => "privacy.request_submitted",
    RequestUpdated => "privacy.request_updated",
    LegalHoldPlaced => "privacy.legal_hold_placed",
    LegalHoldReleased => "privacy.legal_hold_released",
    SubjectsErased => "privacy.subjects_erased",
}

impl EventType {
    /// What `ev` is delivered as; None for what is left of an erased event (the erasure
    /// itself is delivered as `privacy.subjects_erased`).
    pub fn of(ev: &Event) -> Option<EventType> {
        Some(match ev {
            Event::ConsentRecorded(c) => match c.status {
                ConsentStatus::Granted => EventType::ConsentGranted,
                ConsentStatus::Withdrawn => EventType::ConsentWithdrawn,
                ConsentStatus::Denied => EventType::ConsentDenied,
            },
            Event::DncAdded(_) => EventType::DncAdded,
            Event::DncRemoved(_) => EventType::DncRemoved,
            Event::IdentityLinked(_) => EventType::IdentityLinked,
            Event::IdentityUnlinked(_) => EventType::IdentityUnlinked,
            Event::InboundReceived(i) => match i.action {
                InboundAction::OptOut => EventType::InboundOptOut,
                InboundAction::OptIn => EventType::InboundOptIn,
                InboundAction::Help => EventType::InboundHelp,
                InboundAction::None => EventType::InboundMessage,
            },
            Event::AttemptRecorded(_) => EventType::AttemptRecorded,
            Event::ConsumerRegistered(_) => EventType::ConsumerRegistered,
            Event::ConsumerIdentifiersAdded(_) => EventType::ConsumerUpdated,
            Event::PrivacyRequestSubmitted(_) => EventType::RequestSubmitted,
            Event::PrivacyRequestUpdated(_) => EventType::RequestUpdated,
            Event::LegalHoldPlaced(_) => EventType::LegalHoldPlaced,
            Event::LegalHoldReleased(_) => EventType::LegalHoldReleased,
            Event::SubjectsErased(_) => EventType::SubjectsErased,
            Event::Redacted(_) => return None,
        })
    }
}

/// The types an endpoint takes, as bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeSet(u32);

impl TypeSet {
    pub fn all() -> TypeSet {
        TypeSet((1u32 << EventType::ALL.len()) - 1)
    }

    pub fn is_all(self) -> bool {
        self == TypeSet::all()
    }

    pub fn contains(self, t: EventType) -> bool {
        self.0 & (1 << t as u8) != 0
    }

    /// Exact types or groups (`consent` or `consent.*`); empty is every type. Err names the
    /// position of the first name that is neither.
    pub fn parse(names: &[String]) -> Result<TypeSet, (usize, String)> {
        if names.is_empty() {
            return Ok(TypeSet::all());
        }
        let mut bits = 0u32;
        for (i, n) in names.iter().enumerate() {
            let group = n.strip_suffix(".*").unwrap_or(n);
            let before = bits;
            for t in EventType::ALL {
                let name = t.as_str();
                let in_group = name
                    .strip_prefix(group)
                    .is_some_and(|rest| rest.starts_with('.'));
                if name == n || in_group {
                    bits |= 1 << *t as u8;
                }
            }
            if bits == before && !names[..i].contains(n) {
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                return Err((
                    i,
                    format!(
                        "`{}` is not an event type or group; types: {}",
                        crate::model::ids::quote(n),
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(TypeSet(bits))
    }

    pub fn names(self) -> Vec<&'static str> {
        EventType::ALL
            .iter()
            .filter(|t| self.contains(**t))
            .map(|t| t.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_exact_names() {
        let s = TypeSet::parse(&["consent".into(), "dnc.added".into()]).unwrap();
        assert_eq!(
            s.names(),
            [
                "consent.granted",
                "consent.withdrawn",
                "consent.denied",
                "dnc.added"
            ]
        );
        let s = TypeSet::parse(&["inbound.*".into()]).unwrap();
        assert!(s.contains(EventType::InboundOptOut) && !s.contains(EventType::DncAdded));
        assert_eq!(TypeSet::parse(&["dnc.add".into()]).unwrap_err().0, 0);
        assert_eq!(TypeSet::parse(&["con".into()]).unwrap_err().0, 0);
        assert!(TypeSet::parse(&[]).unwrap().is_all());
    }
}
