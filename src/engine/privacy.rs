//! Consumer privacy requests through the engine: registration, submission, the processing
//! that drives each request to its end (ACCESS bundles, DELETE erasures), legal holds.
use super::Engine;
use crate::audit::Caller;
use crate::error::{Error, Result};
use crate::model::event::{
    consent_id, consumer_id, dnc_id, parse_consumer_id, parse_request_id, request_id,
};
use crate::model::privacy::{Jurisdiction, RequestResult, RequestStatus, RequestType, Retained};
use crate::model::{
    ConsumerEvent, ConsumerIdentifiersEvent, ContactKey, ErasureEvent, Event, LegalHoldEvent,
    Millis, RequestSubmittedEvent, RequestUpdatedEvent, Token,
};
use crate::privacy::{Consumer, Request};
use crate::store::{Append, Erasure};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Most identifiers one registration takes.
const MAX_IDENTIFIERS: usize = 100;

#[derive(Debug, Clone)]
pub struct RegisterOutcome {
    pub consumer: Consumer,
    pub created: bool,
    /// Identifiers this call added (all of them for a new consumer).
    pub added: Vec<ContactKey>,
    pub seq: u64,
}

/// A privacy request as answers show it: the request, and whether it is past its deadline
/// now (on the injected clock).
#[derive(Debug, Clone)]
pub struct RequestView {
    pub request: Request,
    pub overdue: bool,
}

impl std::ops::Deref for RequestView {
    type Target = Request;
    fn deref(&self) -> &Request {
        &self.request
    }
}

#[derive(Debug, Clone, Default)]
pub struct SubmitRequest {
    pub consumer_id: String,
    pub request_type: super::Arg<RequestType>,
    pub jurisdiction: super::Arg<Jurisdiction>,
    pub received_at: Option<Millis>,
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

impl Engine {
    /// Sets the overdue-request gauge from the requests held now.
    pub fn privacy_metrics(&self) {
        metrics::gauge!("preflight_privacy_requests_overdue")
            .set(self.privacy.overdue(self.clock.now_ms()) as f64);
    }

    /// Registers a consumer, or returns the one any of `identifiers` already belongs to and
    /// adds the identifiers it did not have.
    pub async fn register_consumer(
        &self,
        identifiers: &[String],
        default_region: &str,
        caller: &Caller,
    ) -> Result<RegisterOutcome> {
        if identifiers.is_empty() {
            return Err(Error::invalid(
                "identifiers",
                "at least one phone, email or ext: id",
            ));
        }
        if identifiers.len() > MAX_IDENTIFIERS {
            return Err(Error::invalid(
                "identifiers",
                format!("{} given, at most {MAX_IDENTIFIERS}", identifiers.len()),
            ));
        }
        let region = self.region("default_region", default_region)?;
        let mut keys: Vec<ContactKey> = Vec::new();
        for (i, id) in identifiers.iter().enumerate() {
            let k = self
                .contact(&format!("identifiers[{i}]"), id, region)?
                .to_key();
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let _guard = self.privacy_lock.lock().await;
        let mut owners: BTreeMap<u64, usize> = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(c) = self.privacy.consumer_of(k) {
                owners.entry(c.seq).or_insert(i);
            }
        }
        if owners.len() > 1 {
            let names: Vec<String> = owners
                .iter()
                .map(|(seq, i)| format!("identifiers[{i}] belongs to {}", consumer_id(*seq)))
                .collect();
            return Err(Error::invalid(
                "identifiers",
                format!("name more than one known consumer: {}", names.join(", ")),
            ));
        }
        let (event, existing) = match owners.keys().next() {
            Some(&seq) => {
                let c = self
                    .privacy
                    .consumer(seq)
                    .ok_or_else(|| internal("consumer vanished"))?;
                let new: Vec<ContactKey> = keys
                    .into_iter()
                    .filter(|k| !c.identifiers.contains(k))
                    .collect();
                if new.is_empty() {
                    return Ok(RegisterOutcome {
                        consumer: c,
                        created: false,
                        added: Vec::new(),
                        seq: self.index.seq(),
                    });
                }
                (
                    Event::ConsumerIdentifiersAdded(ConsumerIdentifiersEvent {
                        consumer_seq: seq,
                        identifiers: new,
                    }),
                    Some(seq),
                )
            }
            None => (
                Event::ConsumerRegistered(ConsumerEvent { identifiers: keys }),
                None,
            ),
        };
        let added = event.contacts().into_iter().cloned().collect();
        let (seq, _) = self
            .commit("privacy.register", "", &(), vec![event], caller, |s| s)
            .await?;
        let consumer = self
            .privacy
            .consumer(existing.unwrap_or(seq))
            .ok_or_else(|| internal("consumer not applied"))?;
        Ok(RegisterOutcome {
            consumer,
            created: existing.is_none(),
            added,
            seq,
        })
    }

    fn consumer_by_id(&self, field: &str, id: &str) -> Result<Consumer> {
        let seq = parse_consumer_id(id.trim()).ok_or_else(|| {
            Error::invalid(field, format!("`{id}` is not a consumer id (cu-<n>)"))
        })?;
        self.privacy
            .consumer(seq)
            .ok_or_else(|| Error::NotFound(format!("{field}: no consumer `{id}`")))
    }

    pub fn get_request(&self, id: &str) -> Result<RequestView> {
        let seq = parse_request_id(id.trim()).ok_or_else(|| {
            Error::invalid("request_id", format!("`{id}` is not a request id (pr-<n>)"))
        })?;
        self.privacy
            .request(seq)
            .map(|r| self.request_view(r))
            .ok_or_else(|| Error::NotFound(format!("request_id: no request `{id}`")))
    }

    fn request_view(&self, request: Request) -> RequestView {
        let overdue = request.is_overdue(self.clock.now_ms());
        RequestView { request, overdue }
    }

    /// Requests, newest first, optionally only the overdue ones or one consumer's.
    pub fn list_requests(&self, overdue_only: bool, consumer: &str) -> Result<Vec<RequestView>> {
        let consumer_seq = if consumer.trim().is_empty() {
            None
        } else {
            Some(self.consumer_by_id("consumer_id", consumer)?.seq)
        };
        let mut out: Vec<RequestView> = self
            .privacy
            .requests()
            .into_iter()
            .map(|r| self.request_view(r))
            .filter(|r| !overdue_only || r.overdue)
            .filter(|r| consumer_seq.is_none_or(|c| r.consumer_seq == c))
            .collect();
        out.reverse();
        Ok(out)
    }

    /// Records a request and starts working on it; the service alone moves its status.
    pub async fn submit_request(
        self: &Arc<Self>,
        req: SubmitRequest,
        caller: &Caller,
    ) -> Result<RequestView> {
        let consumer = self.consumer_by_id("consumer_id", &req.consumer_id)?;
        let request_type = req.request_type.require("type")?;
        let jurisdiction = req.jurisdiction.require("jurisdiction")?;
        let now = self.clock.now_ms();
        let received_at = super::time_arg("received_at", req.received_at)?.unwrap_or(now);
        // A request cannot arrive in the future; allow for clocks a minute apart.
        if received_at > now + 60_000 {
            return Err(Error::invalid(
                "received_at",
                format!("{received_at} is in the future"),
            ));
        }
        if consumer.erased_at.is_some() {
            return Err(Error::invalid(
                "consumer_id",
                format!(
                    "{} was erased by an earlier DELETE",
                    consumer_id(consumer.seq)
                ),
            ));
        }
        let ev = Event::PrivacyRequestSubmitted(RequestSubmittedEvent {
            consumer_seq: consumer.seq,
            request_type,
            jurisdiction,
            received_at,
        });
        let (seq, _) = {
            let _guard = self.privacy_lock.lock().await;
            self.commit("privacy.submit", "", &(), vec![ev], caller, |s| s)
                .await?
        };
        self.privacy_metrics();
        let engine = self.clone();
        tokio::spawn(async move { engine.process_request(seq).await });
        self.privacy
            .request(seq)
            .map(|r| self.request_view(r))
            .ok_or_else(|| internal("request not applied"))
    }

    /// Extends the response deadline once, recording the notice sent to the consumer.
    pub async fn extend_request(
        &self,
        id: &str,
        notice: &str,
        caller: &Caller,
    ) -> Result<RequestView> {
        let r = self.get_request(id)?;
        let notice = notice.trim();
        if notice.is_empty() {
            return Err(Error::invalid(
                "notice",
                "required: the notice given to the consumer, with the reason for the delay",
            ));
        }
        if r.extension_notice.is_some() {
            return Err(Error::FailedPrecondition(format!(
                "request_id: {} was already extended",
                request_id(r.seq)
            )));
        }
        if r.status.is_answered() {
            return Err(Error::FailedPrecondition(format!(
                "request_id: {} is already answered",
                request_id(r.seq)
            )));
        }
        let ev = Event::PrivacyRequestUpdated(RequestUpdatedEvent {
            request_seq: r.seq,
            status: r.status,
            extension_notice: Some(notice.to_string()),
            result: None,
        });
        {
            let _guard = self.privacy_lock.lock().await;
            self.commit("privacy.extend", "", &(), vec![ev], caller, |s| s)
                .await?;
        }
        self.privacy_metrics();
        self.get_request(id)
    }

    pub async fn set_legal_hold(
        &self,
        contact: &str,
        reason: &str,
        place: bool,
        default_region: &str,
        caller: &Caller,
    ) -> Result<(String, u64)> {
        let region = self.region("default_region", default_region)?;
        let key = self.contact("contact", contact, region)?.to_key();
        let reason = super::consent::text("reason", reason)?;
        if reason.is_empty() {
            return Err(Error::invalid(
                "reason",
                "required: why the hold is placed or released",
            ));
        }
        let held = self.privacy.hold(&key).is_some();
        if !place && !held {
            return Err(Error::NotFound(format!(
                "contact: `{contact}` has no legal hold"
            )));
        }
        let normalized = key.to_string();
        let h = LegalHoldEvent {
            contact: key,
            reason,
        };
        let ev = if place {
            Event::LegalHoldPlaced(h)
        } else {
            Event::LegalHoldReleased(h)
        };
        let _guard = self.privacy_lock.lock().await;
        let (seq, _) = self
            .commit("privacy.hold", "", &(), vec![ev], caller, |s| s)
            .await?;
        Ok((normalized, seq))
    }

    /// Removes ACCESS bundles older than the export time to live (by the request's
    /// completion time, on the injected clock). Returns how many files went.
    pub fn expire_bundles(&self) -> usize {
        let now = self.clock.now_ms();
        let ttl = self.settings.export_ttl_ms;
        let due: Vec<Request> = self
            .privacy
            .requests()
            .into_iter()
            .filter(|r| r.completed_at.is_some_and(|t| now.saturating_sub(t) >= ttl))
            .collect();
        due.iter().filter(|r| remove_bundle(r)).count()
    }

    /// Picks up requests left unfinished by an earlier run.
    pub fn resume_requests(self: &Arc<Self>) {
        for r in self.privacy.requests() {
            if matches!(r.status, RequestStatus::Pending | RequestStatus::InProgress) {
                let engine = self.clone();
                tokio::spawn(async move { engine.process_request(r.seq).await });
            }
        }
        self.privacy_metrics();
    }

    async fn set_status(
        &self,
        request_seq: u64,
        status: RequestStatus,
        result: Option<RequestResult>,
    ) -> Result<()> {
        let ev = Event::PrivacyRequestUpdated(RequestUpdatedEvent {
            request_seq,
            status,
            extension_notice: None,
            result,
        });
        let caller = Caller::system("privacy");
        self.commit("privacy.status", "", &(), vec![ev], &caller, |s| s)
            .await?;
        self.privacy_metrics();
        Ok(())
    }

    /// Drives one request to COMPLETED, PARTIAL or ERROR. Safe to run again after a crash:
    /// an ACCESS bundle is rewritten, a DELETE finds nothing left in clear.
    pub async fn process_request(self: Arc<Self>, seq: u64) {
        let outcome = self.clone().process_request_inner(seq).await;
        if let Err(e) = outcome {
            tracing::error!(request = %request_id(seq), error = %e, "privacy request failed");
            let result = RequestResult {
                error: e.to_string(),
                ..Default::default()
            };
            if let Err(e) = self
                .set_status(seq, RequestStatus::Error, Some(result))
                .await
            {
                tracing::error!(request = %request_id(seq), error = %e, "cannot record the failure");
            }
        }
    }

    async fn process_request_inner(self: Arc<Self>, seq: u64) -> Result<()> {
        let r = self
            .privacy
            .request(seq)
            .ok_or_else(|| internal("request not found"))?;
        if r.status != RequestStatus::InProgress {
            self.set_status(seq, RequestStatus::InProgress, None)
                .await?;
        }
        let consumer = self
            .privacy
            .consumer(r.consumer_seq)
            .ok_or_else(|| internal("consumer not found"))?;
        let (status, result) = match r.request_type {
            RequestType::Access => {
                let engine = self.clone();
                let result =
                    tokio::task::spawn_blocking(move || engine.write_access_bundle(&r, &consumer))
                        .await
                        .map_err(internal)??;
                (RequestStatus::Completed, result)
            }
            RequestType::Delete => {
                let _guard = self.privacy_lock.lock().await;
                let out = self.erase_consumer(&r, &consumer).await?;
                // What an earlier ACCESS request exported of this consumer goes too.
                for earlier in self.privacy.requests() {
                    if earlier.consumer_seq == consumer.seq {
                        remove_bundle(&earlier);
                    }
                }
                out
            }
        };
        self.set_status(seq, status, Some(result)).await
    }

    /// Erases every identifier of the consumer not under a legal hold. Opt-outs and DNC
    /// entries stay, under keyed hashes, so the person stays suppressed.
    async fn erase_consumer(
        &self,
        r: &Request,
        consumer: &Consumer,
    ) -> Result<(RequestStatus, RequestResult)> {
        let keys = self.identifiers_of(consumer);
        // The person's identifiers, and the people their opt-outs were copied to when they
        // were linked elsewhere: the copies must keep suppressing once they name a token.
        let mut group: Vec<ContactKey> = keys
            .iter()
            .map(|k| ContactKey::Erased(self.tokenizer.token_of(k)))
            .collect();
        for p in self.index.mirrored_to(&keys) {
            let t = ContactKey::Erased(self.tokenizer.token_of(&ContactKey::External(p.into())));
            if !group.contains(&t) {
                group.push(t);
            }
        }
        let mut retained = Vec::new();
        let mut erase: Vec<ContactKey> = Vec::new();
        for k in keys {
            match self.privacy.hold(&k) {
                Some(h) => {
                    let reason = format!("legal hold: {}", h.reason);
                    let (records, _) = self.index.records(&k.as_ref());
                    let before = retained.len();
                    for seq in records.consents {
                        retained.push(Retained {
                            record_id: consent_id(seq),
                            reason: reason.clone(),
                        });
                    }
                    for (seq, _) in records.dnc {
                        retained.push(Retained {
                            record_id: dnc_id(seq),
                            reason: reason.clone(),
                        });
                    }
                    if retained.len() == before {
                        retained.push(Retained {
                            record_id: format!("identifier:{}", k.masked()),
                            reason,
                        });
                    }
                }
                None => erase.push(k),
            }
        }
        let tokens: Vec<Token> = erase.iter().map(|k| self.tokenizer.token_of(k)).collect();
        if !erase.is_empty() {
            let map: HashMap<ContactKey, Token> =
                erase.iter().cloned().zip(tokens.iter().copied()).collect();
            let ev = Event::SubjectsErased(ErasureEvent {
                request_seq: r.seq,
                consumer_seq: consumer.seq,
                tokens: tokens.iter().map(|t| ContactKey::Erased(*t)).collect(),
                group,
                contacts: erase.clone(),
            });
            let caller = Caller::system("privacy");
            let audit = self.audit_drafts(std::slice::from_ref(&ev), &caller);
            let out = self
                .store
                .erase(Erasure {
                    contacts: erase.clone(),
                    tokens,
                    redact: crate::store::redact::redactor(map),
                    append: Append {
                        events: vec![ev],
                        idempotency: None,
                        audit,
                    },
                })
                .await?;
            tracing::info!(
                request = %request_id(r.seq),
                identifiers = erase.len(),
                rewritten = out.rewritten,
                audit_stripped = out.audit_stripped,
                "personal data erased"
            );
        }
        let status = if retained.is_empty() {
            RequestStatus::Completed
        } else {
            RequestStatus::Partial
        };
        Ok((
            status,
            RequestResult {
                erased_identifiers: erase.len() as u64,
                retained,
                ..Default::default()
            },
        ))
    }
}

/// Deletes the ACCESS bundle a request wrote, if it is still there; true when a file went.
fn remove_bundle(r: &Request) -> bool {
    let Some(path) = r
        .result
        .as_ref()
        .map(|x| x.bundle_path.as_str())
        .filter(|p| !p.is_empty())
    else {
        return false;
    };
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(request = %request_id(r.seq), "ACCESS bundle removed");
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!(request = %request_id(r.seq), error = %e, "cannot remove an ACCESS bundle");
            false
        }
    }
}
