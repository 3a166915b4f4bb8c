//! How an erasure rewrites a stored event: identifiers become tokens, opt-outs and DNC
//! entries stay (so the person stays suppressed), everything else about them is dropped.
use super::Redactor;
use crate::model::{ConsentStatus, ContactKey, Event, RedactedEvent, Token};
use std::collections::HashMap;

pub fn redactor(erase: HashMap<ContactKey, Token>) -> Redactor {
    Box::new(move |ev: &Event| redact(&erase, ev))
}

pub type SharedRedactor = std::sync::Arc<dyn Fn(&Event) -> Option<Event> + Send + Sync>;

/// The same, shared across threads: a replica's log block fetched after the erasure runs it
/// when it arrives.
pub fn shared_redactor(erase: HashMap<ContactKey, Token>) -> SharedRedactor {
    std::sync::Arc::new(move |ev: &Event| redact(&erase, ev))
}

fn redact(erase: &HashMap<ContactKey, Token>, ev: &Event) -> Option<Event> {
    let token = |k: &ContactKey| erase.get(k).map(|t| ContactKey::Erased(*t));
    let tombstone = || {
        Some(Event::Redacted(RedactedEvent {
            was: ev.audit_kind().to_string(),
        }))
    };
    match ev {
        Event::ConsentRecorded(c) => {
            let t = token(&c.contact)?;
            if c.status == ConsentStatus::Granted {
                // A grant of someone who asked to be forgotten permits nothing any more.
                return tombstone();
            }
            let mut c = c.clone();
            c.contact = t;
            c.proof = String::new();
            Some(Event::ConsentRecorded(c))
        }
        Event::DncAdded(d) => {
            let t = token(&d.contact)?;
            let mut d = d.clone();
            d.contact = t;
            d.note = String::new();
            Some(Event::DncAdded(d))
        }
        Event::IdentityLinked(l) => {
            let person = ContactKey::External(l.person.as_str().into());
            (erase.contains_key(&l.contact) || erase.contains_key(&person))
                .then(tombstone)
                .flatten()
        }
        Event::IdentityUnlinked(u) => erase.contains_key(&u.contact).then(tombstone).flatten(),
        Event::InboundReceived(i) => erase.contains_key(&i.contact).then(tombstone).flatten(),
        // An attempt says who was called about what: it goes with the person's other data.
        Event::AttemptRecorded(a) => erase.contains_key(&a.contact).then(tombstone).flatten(),
        Event::ConsumerRegistered(c) => {
            let (ids, changed) = map_all(&c.identifiers, &token);
            changed.then_some(Event::ConsumerRegistered(crate::model::ConsumerEvent {
                identifiers: ids,
            }))
        }
        Event::ConsumerIdentifiersAdded(c) => {
            let (ids, changed) = map_all(&c.identifiers, &token);
            changed.then_some(Event::ConsumerIdentifiersAdded(
                crate::model::ConsumerIdentifiersEvent {
                    consumer_seq: c.consumer_seq,
                    identifiers: ids,
                },
            ))
        }
        Event::LegalHoldPlaced(h) | Event::LegalHoldReleased(h) => {
            let t = token(&h.contact)?;
            let mut h = h.clone();
            h.contact = t;
            Some(match ev {
                Event::LegalHoldPlaced(_) => Event::LegalHoldPlaced(h),
                _ => Event::LegalHoldReleased(h),
            })
        }
        Event::DncRemoved(r) => {
            let t = token(r.contact.as_ref()?)?;
            let mut r = r.clone();
            r.contact = Some(t);
            Some(Event::DncRemoved(r))
        }
        Event::Redacted(_)
        | Event::PrivacyRequestSubmitted(_)
        | Event::PrivacyRequestUpdated(_)
        | Event::SubjectsErased(_) => None,
    }
}

fn map_all(
    ids: &[ContactKey],
    token: &impl Fn(&ContactKey) -> Option<ContactKey>,
) -> (Vec<ContactKey>, bool) {
    let mut changed = false;
    let out = ids
        .iter()
        .map(|k| match token(k) {
            Some(t) => {
                changed = true;
                t
            }
            None => k.clone(),
        })
        .collect();
    (out, changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChannelSet, ConsentEvent, PurposeSet};

    fn consent(status: ConsentStatus) -> Event {
        Event::ConsentRecorded(ConsentEvent {
            contact: ContactKey::Phone(12025550100),
            status,
            channels: ChannelSet::all(),
            purposes: PurposeSet::all(),
            category: None,
            source: "web".into(),
            proof: "ip 203.0.113.9".into(),
            effective_at: 1,
            expires_at: None,
            campaign_id: String::new(),
        })
    }

    #[test]
    fn opt_outs_stay_as_tokens_and_grants_go() {
        let t = [7u8; 16];
        let map = HashMap::from([(ContactKey::Phone(12025550100), t)]);
        match redact(&map, &consent(ConsentStatus::Withdrawn)) {
            Some(Event::ConsentRecorded(c)) => {
                assert_eq!(c.contact, ContactKey::Erased(t));
                assert!(c.proof.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            redact(&map, &consent(ConsentStatus::Granted)),
            Some(Event::Redacted(_))
        ));
        assert_eq!(
            redact(&HashMap::new(), &consent(ConsentStatus::Granted)),
            None
        );
    }
}
