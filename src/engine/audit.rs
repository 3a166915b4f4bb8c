//! Audit records for every write (built from its events and the state they change), and
//! reading the trail back: export and verification.
use super::Engine;
use crate::audit::{
    AuditDraft, AuditEntry, Caller, Personal, Rendered, Verification, entry_of, verify,
};
use crate::error::{Error, Result};
use crate::model::event::{consumer_id, dnc_id, request_id};
use crate::model::{ContactKey, Event, Millis};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Most records one export page reads.
pub const AUDIT_PAGE: usize = 1024;

/// When an audit export's records were recorded: `[since, until)`, validated.
#[derive(Debug, Clone, Copy)]
pub struct AuditRange {
    since: Option<Millis>,
    until: Option<Millis>,
}

impl Engine {
    /// One audit record per event, about the identifiers it names, with the state before
    /// as this request saw it and the event as the after.
    pub(super) fn audit_drafts(&self, events: &[Event], caller: &Caller) -> Vec<Rendered> {
        events
            .iter()
            .enumerate()
            .map(|(i, ev)| {
                let mut contacts: Vec<ContactKey> = ev.contacts().into_iter().cloned().collect();
                let before = match ev {
                    Event::DncRemoved(r) => match self.dnc_view(r.entry_seq) {
                        Ok(Some(v)) => {
                            contacts.push(v.entry.contact.clone());
                            json!({ "entry": dnc_json(&v) })
                        }
                        other => {
                            if let Err(e) = other {
                                tracing::error!(error = %e, entry_seq = r.entry_seq, "cannot read the removed DNC entry for its audit record");
                            }
                            // Still about the identifier the removal names, so that an
                            // erasure finds and strips this record.
                            contacts.extend(r.contact.iter().cloned());
                            Value::Null
                        }
                    },
                    // An attempt changes no state of the person's: nothing stands before it.
                    Event::SubjectsErased(_) | Event::AttemptRecorded(_) => Value::Null,
                    _ => Value::Array(contacts.iter().map(|c| self.state_of(c, ev)).collect()),
                };
                let subjects: Vec<String> = match ev {
                    Event::SubjectsErased(e) => e.tokens.iter().map(|t| t.to_string()).collect(),
                    _ => contacts.iter().map(|c| self.tokenizer.subject(c)).collect(),
                };
                let personal = (!contacts.is_empty()).then(|| {
                    let identifiers: BTreeMap<String, String> = subjects
                        .iter()
                        .cloned()
                        .zip(contacts.iter().map(|c| c.to_string()))
                        .collect();
                    Personal::encode(&identifiers, &before, ev)
                });
                AuditDraft {
                    kind: ev.audit_kind().to_string(),
                    actor: caller.actor.clone(),
                    subjects,
                    event: Some(i),
                    summary: summary(ev),
                    metadata: caller.metadata.clone(),
                    personal,
                }
                .render()
            })
            .collect()
    }

    /// What `ev` changes about `c`, as the index holds it now: for a consent record, the
    /// latest record of the same scope it supersedes; for a DNC entry, the active entries
    /// of its type; always the person. Bounded, whatever the identifier's history.
    fn state_of(&self, c: &ContactKey, ev: &Event) -> Value {
        let person = self.index.person_of(&c.as_ref()).map(|(p, _)| p);
        let now = self.clock.now_ms();
        // Only the part of the identifier's state that this change replaces.
        let change = self.index.with_facts(&c.as_ref(), |f, _| {
            let own = f[0];
            match ev {
                Event::ConsentRecorded(new) => {
                    let superseded = own
                        .consents
                        .iter()
                        .filter(|x| {
                            x.channels.iter().any(|ch| new.channels.contains(ch))
                                && x.purposes.iter().any(|p| new.purposes.contains(p))
                                && x.category == new.category.as_deref()
                        })
                        .max_by_key(|x| (x.effective_at, x.seq))
                        .map_or(Value::Null, |x| {
                            json!({
                                "consent_id": crate::model::event::consent_id(x.seq),
                                "status": x.status,
                                "channels": x.channels,
                                "purposes": x.purposes,
                                "category": x.category,
                                "effective_at": x.effective_at,
                                "expires_at": x.expires_at,
                            })
                        });
                    Some(("consent", superseded))
                }
                Event::DncAdded(new) => {
                    let active: Vec<Value> = own
                        .dnc
                        .iter()
                        .filter(|x| x.dnc_type == new.dnc_type && x.is_active(now))
                        .map(|x| {
                            json!({
                                "entry_id": dnc_id(x.seq), "type": x.dnc_type,
                                "list": x.list, "expires_at": x.expires_at,
                            })
                        })
                        .collect();
                    Some(("dnc", Value::Array(active)))
                }
                _ => None,
            }
        });
        let mut out = serde_json::Map::new();
        out.insert("contact".into(), json!(c.to_string()));
        out.insert("person".into(), json!(person));
        if let Some((key, value)) = change {
            out.insert(key.into(), value);
        }
        Value::Object(out)
    }

    /// Writes audit records that belong to no change-log event (registry imports, policy loads).
    pub async fn audit_only(&self, drafts: Vec<AuditDraft>) -> Result<()> {
        self.store
            .append(crate::store::Append {
                audit: drafts.into_iter().map(AuditDraft::render).collect(),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Records the policies this process enforces from now on.
    pub async fn audit_policy_load(&self, caller: &Caller) -> Result<()> {
        let mut policies = BTreeMap::new();
        for (name, p) in self.policies.all() {
            policies.insert(name.to_string(), format!("{p:?}"));
        }
        let draft = AuditDraft {
            kind: "policy_loaded".into(),
            actor: caller.actor.clone(),
            subjects: Vec::new(),
            event: None,
            summary: json!({ "default": self.policies.default_name(), "policies": policies }),
            metadata: caller.metadata.clone(),
            personal: None,
        };
        self.audit_only(vec![draft]).await
    }

    /// A validated `[since, until)` for an export (either bound optional).
    pub fn audit_range(&self, since: Option<Millis>, until: Option<Millis>) -> Result<AuditRange> {
        let since = super::time_arg("since", since)?;
        let until = super::time_arg("until", until)?;
        if let (Some(s), Some(u)) = (since, until)
            && u <= s
        {
            return Err(Error::invalid(
                "until",
                format!("{u} is not after since ({s})"),
            ));
        }
        Ok(AuditRange { since, until })
    }

    /// Every audit record with `after < seq` recorded within `range`, in seq order, handed
    /// to `each` page by page until it returns false (the reader went away). Blocking.
    pub fn export_audit(
        &self,
        range: &AuditRange,
        mut after: u64,
        mut each: impl FnMut(&AuditEntry) -> bool,
    ) -> Result<()> {
        loop {
            let (entries, last) = self.audit_page(after, range, AUDIT_PAGE)?;
            for e in &entries {
                if !each(e) {
                    return Ok(());
                }
            }
            match last {
                Some(l) => after = l,
                None => return Ok(()),
            }
        }
    }

    /// Audit records with `after < seq` within `range`, at most `limit`; also returns the
    /// last seq read, to continue from.
    fn audit_page(
        &self,
        after: u64,
        range: &AuditRange,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, Option<u64>)> {
        let (since, until) = (range.since, range.until);
        let raw = self.store.read_audit(after, limit.clamp(1, AUDIT_PAGE))?;
        let last = raw.last().map(|r| r.seq);
        let mut out = Vec::with_capacity(raw.len());
        for r in &raw {
            let e = entry_of(r).map_err(Error::Internal)?;
            if e.recorded_within(since, until) {
                out.push(e);
            }
        }
        Ok((out, last))
    }

    /// Recomputes the whole chain.
    pub fn audit_verify(&self) -> Result<Verification> {
        Ok(verify(|after, limit| self.store.read_audit(after, limit))?)
    }
}

fn dnc_json(v: &crate::index::DncView) -> Value {
    json!({
        "entry_id": dnc_id(v.seq),
        "type": v.entry.dnc_type,
        "list": v.entry.list,
        "expires_at": v.entry.expires_at,
        "removed": v.removal.as_ref().map(|r| json!({
            "at": r.at, "actor": r.actor, "reason": r.reason, "retain_until": r.retain_until,
        })),
    })
}

/// The non-personal facts of an event: what stays readable after an erasure.
fn summary(ev: &Event) -> Value {
    match ev {
        Event::ConsentRecorded(c) => json!({
            "status": c.status, "channels": c.channels, "purposes": c.purposes,
            "category": c.category, "effective_at": c.effective_at, "expires_at": c.expires_at,
        }),
        Event::DncAdded(d) => json!({
            "type": d.dnc_type, "list": d.list, "expires_at": d.expires_at,
        }),
        Event::DncRemoved(r) => json!({
            "entry_id": dnc_id(r.entry_seq), "retain_until": r.retain_until,
        }),
        Event::InboundReceived(i) => json!({
            "channel": i.channel, "action": i.action.as_str(),
        }),
        Event::ConsumerRegistered(c) => json!({ "identifiers": c.identifiers.len() }),
        Event::ConsumerIdentifiersAdded(c) => json!({
            "consumer_id": consumer_id(c.consumer_seq), "identifiers": c.identifiers.len(),
        }),
        Event::PrivacyRequestSubmitted(r) => json!({
            "consumer_id": consumer_id(r.consumer_seq), "type": r.request_type,
            "jurisdiction": r.jurisdiction, "received_at": r.received_at,
        }),
        Event::PrivacyRequestUpdated(u) => json!({
            "request_id": request_id(u.request_seq), "status": u.status,
            "extension_notice": u.extension_notice, "result": u.result,
        }),
        Event::SubjectsErased(e) => json!({
            "request_id": request_id(e.request_seq), "consumer_id": consumer_id(e.consumer_seq),
            "identifiers": e.tokens.len(),
        }),
        Event::AttemptRecorded(a) => json!({
            "channel": a.channel, "purpose": a.purpose, "at": a.at, "outcome": a.outcome,
        }),
        Event::IdentityLinked(_)
        | Event::IdentityUnlinked(_)
        | Event::LegalHoldPlaced(_)
        | Event::LegalHoldReleased(_)
        | Event::Redacted(_) => json!({}),
    }
}
