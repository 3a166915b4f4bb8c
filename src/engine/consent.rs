//! Consent writes (grant, withdraw, deny) and the view of what is held about a contact.
use super::{Arg, Engine};
use crate::error::{Error, Result};
use crate::index::ConsentView;
use crate::model::{
    Channel, ChannelSet, ConsentEvent, ConsentStatus, ContactKey, Event, Millis, Purpose,
    PurposeSet, event::consent_id,
};
use serde::{Deserialize, Serialize};

use crate::model::limits::{MAX_LABEL, MAX_TEXT, text_problem};

#[derive(Debug, Clone, Default, Serialize)]
pub struct ConsentRequest {
    pub contact: String,
    pub status: Arg<ConsentStatus>,
    /// Empty: every channel for WITHDRAWN and DENIED; required for GRANTED.
    pub channels: Vec<Arg<Channel>>,
    /// Empty: every purpose but SECURITY for WITHDRAWN and DENIED; required for GRANTED.
    pub purposes: Vec<Arg<Purpose>>,
    pub category: String,
    pub source: String,
    pub proof: String,
    pub effective_at: Option<Millis>,
    pub expires_at: Option<Millis>,
    pub campaign_id: String,
    #[serde(skip)]
    pub idempotency_key: String,
    pub default_region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentOutcome {
    pub consent_id: String,
    pub seq: u64,
    pub normalized_contact: String,
    #[serde(skip)]
    pub duplicate: bool,
}

/// Everything the index holds about one identifier and, when it is linked to a person,
/// about every identifier of that person.
#[derive(Debug, Clone)]
pub struct ContactView {
    pub normalized_contact: String,
    /// `ext:<id>` of the person, when linked.
    pub person: Option<String>,
    /// The person's identifiers (empty when not linked).
    pub identifiers: Vec<String>,
    pub consents: Vec<ConsentView>,
    pub dnc: Vec<super::dnc::EntryView>,
    pub index_seq: u64,
}

/// Free text kept with a record (proof, note, reason), at most MAX_TEXT bytes.
pub(super) fn text(field: &str, v: &str) -> Result<String> {
    bounded(field, v, MAX_TEXT)
}

/// A short label (category, source, campaign_id), at most MAX_LABEL bytes.
pub(super) fn label(field: &str, v: &str) -> Result<String> {
    bounded(field, v, MAX_LABEL)
}

fn bounded(field: &str, v: &str, max: usize) -> Result<String> {
    match text_problem(v, max) {
        Some(p) => Err(Error::invalid(field, p)),
        None => Ok(v.trim().to_string()),
    }
}

/// A consent record from a request about `contact` (already normalized), checked as every
/// write path checks it: the scopes a status needs, times in order, text within bounds.
pub(super) fn consent_event(
    req: &ConsentRequest,
    contact: ContactKey,
    now: Millis,
) -> Result<ConsentEvent> {
    let status = req.status.require("status")?;
    let mut channels = ChannelSet::EMPTY;
    for (i, c) in req.channels.iter().enumerate() {
        channels.insert(c.require(&format!("channels[{i}]"))?);
    }
    let mut purposes = PurposeSet::EMPTY;
    for (i, p) in req.purposes.iter().enumerate() {
        purposes.insert(p.require(&format!("purposes[{i}]"))?);
    }
    // Fail-safe scopes: a missing scope never narrows an opt-out, and never widens a grant.
    if status == ConsentStatus::Granted {
        if channels.is_empty() {
            return Err(Error::invalid(
                "channels",
                "at least one channel is required to grant consent",
            ));
        }
        if purposes.is_empty() {
            return Err(Error::invalid(
                "purposes",
                "at least one purpose is required to grant consent",
            ));
        }
    } else {
        if channels.is_empty() {
            channels = ChannelSet::all();
        }
        if purposes.is_empty() {
            purposes = PurposeSet::of(&[Purpose::Marketing, Purpose::Service]);
        }
    }
    let effective_at = super::time_arg("effective_at", req.effective_at)?.unwrap_or(now);
    if let Some(exp) = super::time_arg("expires_at", req.expires_at)?
        && exp <= effective_at
    {
        return Err(Error::invalid(
            "expires_at",
            format!("{exp} ms is not after effective_at {effective_at} ms"),
        ));
    }
    let category = label("category", &req.category)?;
    Ok(ConsentEvent {
        contact,
        status,
        channels,
        purposes,
        category: (!category.is_empty()).then_some(category),
        source: label("source", &req.source)?,
        proof: text("proof", &req.proof)?,
        effective_at,
        expires_at: req.expires_at,
        campaign_id: label("campaign_id", &req.campaign_id)?,
    })
}

impl Engine {
    #[tracing::instrument(name = "record_consent", skip_all, fields(contact = tracing::field::Empty, actor = %caller.actor))]
    pub async fn record_consent(
        &self,
        req: ConsentRequest,
        caller: &crate::audit::Caller,
    ) -> Result<ConsentOutcome> {
        let region = self.region("default_region", &req.default_region)?;
        let contact = self
            .logged_contact("contact", &req.contact, region)?
            .to_key();
        let now = self.clock.now_ms();
        let event = consent_event(&req, contact.clone(), now)?;
        let status = event.status;
        let normalized = contact.to_string();
        let (mut out, duplicate) = self
            .commit(
                "consent",
                &req.idempotency_key,
                &req,
                vec![Event::ConsentRecorded(event)],
                caller,
                move |seq| ConsentOutcome {
                    consent_id: consent_id(seq),
                    seq,
                    normalized_contact: normalized.clone(),
                    duplicate: false,
                },
            )
            .await?;
        out.duplicate = duplicate;
        tracing::info!(contact = %contact.masked(), status = status.as_str(), seq = out.seq, duplicate, "consent recorded");
        Ok(out)
    }

    pub fn get_contact(&self, contact: &str, default_region: &str) -> Result<ContactView> {
        let region = self.region("default_region", default_region)?;
        let key = self.contact("contact", contact, region)?;
        let now = self.clock.now_ms();
        let (mut facts, seq) = self.report(&key)?;
        // What a DELETE kept of this identifier and of the rest of its person (opt-outs,
        // DNC entries, under their tokens) explains why it is still blocked; none of it is
        // personal.
        for t in self.index.erased_tokens(&key) {
            let (kept, _) = self.report(&crate::model::ContactRef::Erased(t))?;
            facts.consents.extend(kept.consents);
            facts.dnc.extend(kept.dnc);
        }
        let mut person = None;
        let mut identifiers = Vec::new();
        if let Some((p, members)) = self.index.person_of(&key) {
            let person_key = ContactKey::External(p.as_str().into());
            for k in members.iter().chain(std::iter::once(&person_key)) {
                if k.as_ref() != key {
                    let (more, _) = self.report(&k.as_ref())?;
                    facts.consents.extend(more.consents);
                    facts.dnc.extend(more.dnc);
                }
            }
            identifiers = members.iter().map(|m| m.to_string()).collect();
            person = Some(person_key.to_string());
        }
        // A record mirrored to the person shows once.
        facts.consents.sort_by_key(|c| c.seq);
        facts.consents.dedup_by_key(|c| c.seq);
        facts.dnc.sort_by_key(|d| d.seq);
        facts.dnc.dedup_by_key(|d| d.seq);
        facts
            .dnc
            .retain(|e| e.removal.as_ref().is_none_or(|r| r.retain_until > now));
        Ok(ContactView {
            normalized_contact: key.to_string(),
            person,
            identifiers,
            consents: facts.consents,
            dnc: facts
                .dnc
                .into_iter()
                .map(|e| super::dnc::EntryView::at(e, now))
                .collect(),
            index_seq: seq,
        })
    }
}
