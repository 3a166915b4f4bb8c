//! The JSON a webhook delivers for one change-log event: `{"type", "timestamp", "data"}`
//! (Standard Webhooks), where `data` names the contact, the person, channels, purposes and
//! the seq. Proof and notes stay in the store: a receiver reads them with GetContact.
use super::types::EventType;
use crate::model::event::{attempt_id, consent_id, consumer_id, dnc_id, request_id};
use crate::model::time::format_time;
use crate::model::{Event, StoredEvent};
use serde_json::{Map, Value, json};

/// The webhook's body for `ev`, delivered as `ty`; `person` is the person the contact
/// belongs to now (`ext:<id>`), when it is linked.
pub fn body(ev: &StoredEvent, ty: EventType, person: Option<&str>) -> Vec<u8> {
    let mut data = Map::new();
    data.insert("seq".into(), json!(ev.seq));
    // Privacy events name no identifier: a receiver reads the request with its id.
    let names_contact = !matches!(ty.as_str().split_once('.'), Some(("privacy", _)));
    if let Some(c) = ev.event.contacts().first().filter(|_| names_contact) {
        data.insert("contact".into(), json!(c.to_string()));
        if let Some(p) = person {
            data.insert("person_id".into(), json!(p));
        }
    }
    data.insert("recorded_at".into(), json!(format_time(ev.recorded_at)));
    let mut put = |k: &str, v: Value| {
        data.insert(k.into(), v);
    };
    match &ev.event {
        Event::ConsentRecorded(c) => {
            put("consent_id", json!(consent_id(ev.seq)));
            put("status", json!(c.status));
            put("channels", json!(c.channels));
            put("purposes", json!(c.purposes));
            put("effective_at", json!(format_time(c.effective_at)));
            if let Some(x) = c.expires_at {
                put("expires_at", json!(format_time(x)));
            }
            if let Some(cat) = &c.category {
                put("category", json!(cat));
            }
            put("source", json!(c.source));
            put("campaign_id", json!(c.campaign_id));
        }
        Event::DncAdded(d) => {
            put("entry_id", json!(dnc_id(ev.seq)));
            put("dnc_type", json!(d.dnc_type));
            if let Some(l) = &d.list {
                put("list", json!(l));
            }
            if let Some(x) = d.expires_at {
                put("expires_at", json!(format_time(x)));
            }
            put("source", json!(d.source));
        }
        Event::DncRemoved(r) => {
            put("entry_id", json!(dnc_id(r.entry_seq)));
            if let Some(c) = &r.contact {
                put("contact", json!(c.to_string()));
            }
            put("reason", json!(r.reason));
        }
        Event::IdentityLinked(l) => {
            put("person_id", json!(format!("ext:{}", l.person)));
        }
        Event::IdentityUnlinked(_) => {}
        Event::InboundReceived(i) => {
            put("action", json!(i.action.as_str()));
            put("channels", json!([i.channel]));
            put("keyword", json!(i.keyword));
            put("message_id", json!(i.message_id));
            put("received_at", json!(format_time(i.received_at)));
        }
        Event::AttemptRecorded(a) => {
            put("attempt_id", json!(attempt_id(ev.seq)));
            put("channels", json!([a.channel]));
            put("purposes", json!([a.purpose]));
            put("outcome", json!(a.outcome));
            put("at", json!(format_time(a.at)));
            put("subject", json!(a.subject));
            put("campaign_id", json!(a.campaign_id));
        }
        Event::ConsumerRegistered(c) => {
            data.insert("consumer_id".into(), json!(consumer_id(ev.seq)));
            data.insert("identifiers".into(), json!(c.identifiers.len()));
        }
        Event::ConsumerIdentifiersAdded(c) => {
            data.insert("consumer_id".into(), json!(consumer_id(c.consumer_seq)));
            data.insert("identifiers".into(), json!(c.identifiers.len()));
        }
        Event::PrivacyRequestSubmitted(r) => {
            data.insert("request_id".into(), json!(request_id(ev.seq)));
            data.insert("consumer_id".into(), json!(consumer_id(r.consumer_seq)));
            data.insert("request_type".into(), json!(r.request_type));
            data.insert("jurisdiction".into(), json!(r.jurisdiction));
        }
        Event::PrivacyRequestUpdated(r) => {
            data.insert("request_id".into(), json!(request_id(r.request_seq)));
            data.insert("status".into(), json!(r.status));
        }
        Event::LegalHoldPlaced(h) | Event::LegalHoldReleased(h) => {
            data.insert("reason".into(), json!(h.reason));
        }
        Event::SubjectsErased(e) => {
            data.insert("request_id".into(), json!(request_id(e.request_seq)));
            data.insert("identifiers".into(), json!(e.tokens.len()));
        }
        Event::Redacted(_) => {}
    }
    let doc = json!({
        "type": ty.as_str(),
        "timestamp": format_time(ev.recorded_at),
        "data": Value::Object(data),
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// `webhook-id`: the same for every attempt of one event to one endpoint.
pub fn message_id(endpoint: &str, seq: u64) -> String {
    format!("msg_{endpoint}_{seq}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::{ConsentEvent, LegalHoldEvent};
    use crate::model::{ChannelSet, ConsentStatus, ContactKey, PurposeSet};

    fn stored(event: Event) -> StoredEvent {
        StoredEvent {
            seq: 7,
            recorded_at: 1_765_000_000_000,
            event,
        }
    }

    #[test]
    fn a_withdrawal_names_contact_person_channels_and_purposes() {
        let ev = stored(Event::ConsentRecorded(ConsentEvent {
            contact: ContactKey::Phone(12025550142),
            status: ConsentStatus::Withdrawn,
            channels: ChannelSet::all(),
            purposes: PurposeSet::all(),
            category: None,
            source: "sms-stop".into(),
            proof: "recording-123".into(),
            effective_at: 1_765_000_000_000,
            expires_at: None,
            campaign_id: String::new(),
        }));
        let ty = EventType::of(&ev.event).unwrap();
        let v: Value = serde_json::from_slice(&body(&ev, ty, Some("ext:cust-42"))).unwrap();
        assert_eq!(v["type"], "consent.withdrawn");
        assert_eq!(v["data"]["seq"], 7);
        assert_eq!(v["data"]["contact"], "+12025550142");
        assert_eq!(v["data"]["person_id"], "ext:cust-42");
        assert_eq!(v["data"]["consent_id"], "cn-7");
        assert!(v["data"]["channels"].as_array().unwrap().len() > 3);
        assert!(
            !v.to_string().contains("recording-123"),
            "proof stays in the store"
        );
    }

    #[test]
    fn privacy_events_name_no_identifier() {
        let ev = stored(Event::LegalHoldPlaced(LegalHoldEvent {
            contact: ContactKey::Email("jo@example.com".into()),
            reason: "litigation".into(),
        }));
        let ty = EventType::of(&ev.event).unwrap();
        let text = String::from_utf8(body(&ev, ty, Some("ext:cust-42"))).unwrap();
        assert!(
            !text.contains("jo@example.com") && !text.contains("cust-42"),
            "{text}"
        );
    }
}
