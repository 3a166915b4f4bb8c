//! Conversions between proto messages and engine types.
use crate::engine::{Arg, EntriesOutcome, EntryStatus, EntryView};
use crate::index::ConsentView;
use crate::model::{
    AttemptOutcome, Channel, ConsentStatus, Direction, DncType, Event, EventKind, InboundAction,
    Millis, Purpose, Reason, StoredEvent,
};
use crate::proto as pb;
use prost_types::Timestamp;

pub fn ts_to_ms(t: &Timestamp) -> Millis {
    seconds_nanos_to_ms(t.seconds, t.nanos)
}

/// A Timestamp's two fields as milliseconds.
pub fn seconds_nanos_to_ms(seconds: i64, nanos: i32) -> Millis {
    // Saturates: the engine refuses what lies outside its time range, naming the field.
    seconds
        .saturating_mul(1000)
        .saturating_add(Millis::from(nanos) / 1_000_000)
}

pub fn ms_to_ts(ms: Millis) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

macro_rules! enum_arg {
    ($fn:ident, $pb:ty, $model:ty, { $($p:ident => $m:expr),+ $(,)? }) => {
        pub fn $fn(v: i32) -> Arg<$model> {
            match <$pb>::try_from(v) {
                $(Ok(<$pb>::$p) => Arg::Set($m),)+
                Ok(_) => Arg::Unset,
                Err(_) => Arg::Unknown(v.to_string()),
            }
        }
    };
}

enum_arg!(channel_arg, pb::Channel, Channel, {
    Voice => Channel::Voice, Sms => Channel::Sms, Whatsapp => Channel::Whatsapp,
    Email => Channel::Email, Chat => Channel::Chat, Social => Channel::Social,
});
enum_arg!(purpose_arg, pb::Purpose, Purpose, {
    Marketing => Purpose::Marketing, Service => Purpose::Service, Security => Purpose::Security,
});
enum_arg!(direction_arg, pb::Direction, Direction, {
    Outbound => Direction::Outbound, Inbound => Direction::Inbound,
});
enum_arg!(status_arg, pb::ConsentStatus, ConsentStatus, {
    Granted => ConsentStatus::Granted, Withdrawn => ConsentStatus::Withdrawn, Denied => ConsentStatus::Denied,
});
enum_arg!(request_type_arg, pb::PrivacyRequestType, crate::model::privacy::RequestType, {
    Access => crate::model::privacy::RequestType::Access,
    Delete => crate::model::privacy::RequestType::Delete,
});
enum_arg!(jurisdiction_arg, pb::Jurisdiction, crate::model::privacy::Jurisdiction, {
    Ccpa => crate::model::privacy::Jurisdiction::Ccpa, Gdpr => crate::model::privacy::Jurisdiction::Gdpr,
});
enum_arg!(import_mode_arg, pb::ImportMode, crate::registry::ImportMode, {
    Full => crate::registry::ImportMode::Full, Changes => crate::registry::ImportMode::Changes,
});
enum_arg!(outcome_arg, pb::AttemptOutcome, AttemptOutcome, {
    NoAnswer => AttemptOutcome::NoAnswer, Busy => AttemptOutcome::Busy,
    Voicemail => AttemptOutcome::Voicemail, Connected => AttemptOutcome::Connected,
    Conversation => AttemptOutcome::Conversation, Delivered => AttemptOutcome::Delivered,
    Failed => AttemptOutcome::Failed,
});
enum_arg!(dnc_type_arg, pb::DncType, DncType, {
    Federal => DncType::Federal, State => DncType::State, Corporate => DncType::Corporate,
    Personal => DncType::Personal, Litigator => DncType::Litigator,
});

pub fn channel_pb(c: Channel) -> pb::Channel {
    match c {
        Channel::Voice => pb::Channel::Voice,
        Channel::Sms => pb::Channel::Sms,
        Channel::Whatsapp => pb::Channel::Whatsapp,
        Channel::Email => pb::Channel::Email,
        Channel::Chat => pb::Channel::Chat,
        Channel::Social => pb::Channel::Social,
    }
}

pub fn purpose_pb(p: Purpose) -> pb::Purpose {
    match p {
        Purpose::Marketing => pb::Purpose::Marketing,
        Purpose::Service => pb::Purpose::Service,
        Purpose::Security => pb::Purpose::Security,
    }
}

pub fn dnc_type_pb(t: DncType) -> pb::DncType {
    match t {
        DncType::Federal => pb::DncType::Federal,
        DncType::State => pb::DncType::State,
        DncType::Corporate => pb::DncType::Corporate,
        DncType::Personal => pb::DncType::Personal,
        DncType::Litigator => pb::DncType::Litigator,
    }
}

pub fn status_pb(s: ConsentStatus) -> pb::ConsentStatus {
    match s {
        ConsentStatus::Granted => pb::ConsentStatus::Granted,
        ConsentStatus::Withdrawn => pb::ConsentStatus::Withdrawn,
        ConsentStatus::Denied => pb::ConsentStatus::Denied,
    }
}

pub fn reason_pb(r: Reason) -> pb::Reason {
    match r {
        Reason::InvalidContact => pb::Reason::InvalidContact,
        Reason::DncFederal => pb::Reason::DncFederal,
        Reason::DncState => pb::Reason::DncState,
        Reason::DncCorporate => pb::Reason::DncCorporate,
        Reason::DncPersonal => pb::Reason::DncPersonal,
        Reason::DncLitigator => pb::Reason::DncLitigator,
        Reason::ConsentWithdrawn => pb::Reason::ConsentWithdrawn,
        Reason::NoConsent => pb::Reason::NoConsent,
        Reason::ConsentExpired => pb::Reason::ConsentExpired,
        Reason::IndexStale => pb::Reason::IndexStale,
        Reason::ConsentDenied => pb::Reason::ConsentDenied,
        Reason::InvalidRequest => pb::Reason::InvalidRequest,
        Reason::OutsideCallingHours => pb::Reason::OutsideCallingHours,
        Reason::FrequencyLimit => pb::Reason::FrequencyLimit,
    }
}

/// An answer as prost's struct: the reference the wire path's writer is tested against
/// (the service writes answers with `wire`).
#[cfg(test)]
pub fn check_response(o: &crate::engine::CheckOutcome<'_>) -> pb::CheckResponse {
    let d = &o.decision;
    let matched_ids: Vec<String> = d.matched.as_slice().iter().map(|m| m.text()).collect();
    // Reasons speak for ordinary decisions; detail explains what was wrong with the request.
    let detail = o.problem.clone().unwrap_or_default();
    let place = crate::calling::PlaceFields::of(o.place);
    pb::CheckResponse {
        verdict: if d.allowed() {
            pb::Verdict::Allow
        } else {
            pb::Verdict::Block
        } as i32,
        reasons: d.reasons.iter().map(|r| reason_pb(r) as i32).collect(),
        normalized_contact: o.contact.as_ref().map(|c| c.text()).unwrap_or_default(),
        index_seq: d.index_seq,
        correlation_id: o.correlation_id.to_string(),
        matched_ids,
        detail,
        policy: o.policy.to_string(),
        index_age_ms: o.index_age_ms.map(|a| a.max(0) as u64).unwrap_or(u64::MAX),
        next_allowed_at: d.next_allowed_at.map(ms_to_ts),
        time_zones: place.time_zones,
        subdivision: place.subdivision,
        subdivisions: place.subdivisions,
    }
}

pub fn consent_record(c: &ConsentView) -> pb::ConsentRecord {
    let r = &c.record;
    pb::ConsentRecord {
        consent_id: crate::model::event::consent_id(c.seq),
        contact: r.contact.to_string(),
        status: status_pb(r.status) as i32,
        channels: r.channels.iter().map(|x| channel_pb(x) as i32).collect(),
        purposes: r.purposes.iter().map(|x| purpose_pb(x) as i32).collect(),
        category: r.category.clone().unwrap_or_default(),
        source: r.source.clone(),
        proof: r.proof.clone(),
        effective_at: Some(ms_to_ts(r.effective_at)),
        expires_at: r.expires_at.map(ms_to_ts),
        campaign_id: r.campaign_id.clone(),
        recorded_at: Some(ms_to_ts(c.recorded_at)),
        seq: c.seq,
    }
}

pub fn dnc_entry(v: &EntryView) -> pb::DncEntry {
    let e = &v.entry;
    let d = &e.entry;
    pb::DncEntry {
        entry_id: crate::model::event::dnc_id(e.seq),
        contact: d.contact.to_string(),
        r#type: dnc_type_pb(d.dnc_type) as i32,
        list: d.list.clone().unwrap_or_default(),
        added_at: Some(ms_to_ts(e.added_at)),
        expires_at: d.expires_at.map(ms_to_ts),
        source: d.source.clone(),
        note: d.note.clone(),
        added_by: d.actor.clone(),
        removed_at: e.removal.as_ref().map(|r| ms_to_ts(r.at)),
        removed_by: e
            .removal
            .as_ref()
            .map(|r| r.actor.clone())
            .unwrap_or_default(),
        removal_reason: e
            .removal
            .as_ref()
            .map(|r| r.reason.clone())
            .unwrap_or_default(),
        retain_until: e.removal.as_ref().map(|r| ms_to_ts(r.retain_until)),
        active: v.active,
        seq: e.seq,
    }
}

pub fn entry_status_pb(s: EntryStatus) -> pb::EntryStatus {
    match s {
        EntryStatus::Accepted => pb::EntryStatus::Accepted,
        EntryStatus::Duplicate => pb::EntryStatus::Duplicate,
        EntryStatus::Invalid => pb::EntryStatus::Invalid,
        EntryStatus::NotFound => pb::EntryStatus::NotFound,
    }
}

pub fn entry_results(o: &EntriesOutcome) -> Vec<pb::EntryResult> {
    o.results
        .iter()
        .map(|r| pb::EntryResult {
            index: r.index,
            status: entry_status_pb(r.status) as i32,
            entry_id: r.entry_ids.first().cloned().unwrap_or_default(),
            normalized_contact: r.normalized_contact.clone(),
            error: r.error.clone(),
            entry_ids: r.entry_ids.clone(),
        })
        .collect()
}

pub fn outcome_pb(o: AttemptOutcome) -> pb::AttemptOutcome {
    match o {
        AttemptOutcome::NoAnswer => pb::AttemptOutcome::NoAnswer,
        AttemptOutcome::Busy => pb::AttemptOutcome::Busy,
        AttemptOutcome::Voicemail => pb::AttemptOutcome::Voicemail,
        AttemptOutcome::Connected => pb::AttemptOutcome::Connected,
        AttemptOutcome::Conversation => pb::AttemptOutcome::Conversation,
        AttemptOutcome::Delivered => pb::AttemptOutcome::Delivered,
        AttemptOutcome::Failed => pb::AttemptOutcome::Failed,
    }
}

/// An attempt as recorded (contact normalized, `at` resolved).
pub fn attempt_pb(a: &crate::model::AttemptEvent) -> pb::Attempt {
    pb::Attempt {
        contact: a.contact.to_string(),
        channel: channel_pb(a.channel) as i32,
        purpose: purpose_pb(a.purpose) as i32,
        subject: a.subject.clone(),
        at: Some(ms_to_ts(a.at)),
        outcome: outcome_pb(a.outcome) as i32,
        campaign_id: a.campaign_id.clone(),
    }
}

pub fn inbound_action_pb(a: InboundAction) -> pb::InboundAction {
    match a {
        InboundAction::OptOut => pb::InboundAction::OptOut,
        InboundAction::OptIn => pb::InboundAction::OptIn,
        InboundAction::Help => pb::InboundAction::Help,
        InboundAction::None => pb::InboundAction::None,
    }
}

pub fn event_kind_pb(k: EventKind) -> pb::EventKind {
    match k {
        EventKind::ConsentChanged => pb::EventKind::ConsentChanged,
        EventKind::DncAdded => pb::EventKind::DncAdded,
        EventKind::DncRemoved => pb::EventKind::DncRemoved,
        EventKind::IdentityLinked => pb::EventKind::IdentityLinked,
        EventKind::IdentityUnlinked => pb::EventKind::IdentityUnlinked,
        EventKind::InboundAction => pb::EventKind::InboundAction,
        EventKind::Privacy => pb::EventKind::Privacy,
        EventKind::Redacted => pb::EventKind::Redacted,
        EventKind::ContactAttempt => pb::EventKind::ContactAttempt,
    }
}

/// Proto event kinds to the model's; unknown or unspecified values are named in the error.
pub fn event_kinds(kinds: &[i32]) -> Result<Vec<EventKind>, crate::error::Error> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, k)| match pb::EventKind::try_from(*k) {
            Ok(pb::EventKind::ConsentChanged) => Ok(EventKind::ConsentChanged),
            Ok(pb::EventKind::DncAdded) => Ok(EventKind::DncAdded),
            Ok(pb::EventKind::DncRemoved) => Ok(EventKind::DncRemoved),
            Ok(pb::EventKind::IdentityLinked) => Ok(EventKind::IdentityLinked),
            Ok(pb::EventKind::IdentityUnlinked) => Ok(EventKind::IdentityUnlinked),
            Ok(pb::EventKind::InboundAction) => Ok(EventKind::InboundAction),
            Ok(pb::EventKind::Privacy) => Ok(EventKind::Privacy),
            Ok(pb::EventKind::Redacted) => Ok(EventKind::Redacted),
            Ok(pb::EventKind::ContactAttempt) => Ok(EventKind::ContactAttempt),
            _ => Err(crate::error::Error::invalid(
                format!("kinds[{i}]"),
                format!("unknown event kind `{k}`"),
            )),
        })
        .collect()
}

pub fn change_event(ev: &StoredEvent) -> pb::ChangeEvent {
    let mut out = pb::ChangeEvent {
        seq: ev.seq,
        kind: event_kind_pb(ev.event.kind()) as i32,
        recorded_at: Some(ms_to_ts(ev.recorded_at)),
        ..Default::default()
    };
    match &ev.event {
        Event::ConsentRecorded(c) => {
            out.contact = c.contact.to_string();
            out.consent = Some(consent_record(&ConsentView {
                seq: ev.seq,
                recorded_at: ev.recorded_at,
                record: c.clone(),
            }));
        }
        Event::DncAdded(d) => {
            out.contact = d.contact.to_string();
            out.dnc_entry_id = crate::model::event::dnc_id(ev.seq);
            out.dnc_type = dnc_type_pb(d.dnc_type) as i32;
        }
        Event::DncRemoved(r) => out.dnc_entry_id = crate::model::event::dnc_id(r.entry_seq),
        Event::IdentityLinked(l) => {
            out.contact = l.contact.to_string();
            out.person_id = format!("ext:{}", l.person);
        }
        Event::IdentityUnlinked(u) => out.contact = u.contact.to_string(),
        Event::InboundReceived(i) => {
            out.contact = i.contact.to_string();
            out.inbound_action = inbound_action_pb(i.action) as i32;
            out.channel = channel_pb(i.channel) as i32;
            out.message_id = i.message_id.clone();
        }
        Event::LegalHoldPlaced(h) | Event::LegalHoldReleased(h) => {
            out.contact = h.contact.to_string()
        }
        Event::AttemptRecorded(a) => {
            out.contact = a.contact.to_string();
            out.channel = channel_pb(a.channel) as i32;
            out.attempt = Some(attempt_pb(a));
        }
        // Registrations name identifiers in clear; watchers get the kind, not the data.
        Event::Redacted(_)
        | Event::ConsumerRegistered(_)
        | Event::ConsumerIdentifiersAdded(_)
        | Event::PrivacyRequestSubmitted(_)
        | Event::PrivacyRequestUpdated(_)
        | Event::SubjectsErased(_) => {}
    }
    out
}

pub fn registry_info(i: &crate::registry::ListInfo) -> pb::RegistryInfo {
    pb::RegistryInfo {
        name: i.name.clone(),
        r#type: dnc_type_pb(i.dnc_type) as i32,
        version: i.version,
        count: i.count,
        imported_at: Some(ms_to_ts(i.imported_at)),
        mode: i.mode.clone(),
        sources: i
            .sources
            .iter()
            .map(|s| pb::RegistrySource {
                name: s.name.clone(),
                sha256: s.sha256.clone(),
                bytes: s.bytes,
                lines: s.lines,
                rejected: s.rejected,
            })
            .collect(),
        added: i.added,
        removed: i.removed,
    }
}
