//! The privacy service's bookkeeping, rebuilt from the change log: consumers, requests, holds.
use crate::model::privacy::{Deadlines, Jurisdiction, RequestResult, RequestStatus, RequestType};
use crate::model::{ContactKey, Event, Millis, StoredEvent};
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

#[derive(Clone, Debug, PartialEq)]
pub struct Consumer {
    pub seq: u64,
    pub registered_at: Millis,
    /// In clear, or as `Erased` tokens once a DELETE erased them.
    pub identifiers: Vec<ContactKey>,
    pub erased_at: Option<Millis>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub seq: u64,
    pub consumer_seq: u64,
    pub request_type: RequestType,
    pub jurisdiction: Jurisdiction,
    pub received_at: Millis,
    pub submitted_at: Millis,
    pub status: RequestStatus,
    pub updated_at: Millis,
    pub completed_at: Option<Millis>,
    pub extension_notice: Option<String>,
    pub result: Option<RequestResult>,
}

impl Request {
    pub fn deadlines(&self) -> Deadlines {
        self.jurisdiction.deadlines(self.received_at)
    }

    /// The response date in force: the extended one once notice of an extension was given.
    pub fn respond_by(&self) -> Millis {
        let d = self.deadlines();
        if self.extension_notice.is_some() {
            d.extended_respond_by
        } else {
            d.respond_by
        }
    }

    pub fn is_overdue(&self, now: Millis) -> bool {
        !self.status.is_answered() && now > self.respond_by()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Hold {
    pub reason: String,
    pub placed_at: Millis,
}

#[derive(Default)]
struct Inner {
    consumers: BTreeMap<u64, Consumer>,
    by_identifier: HashMap<ContactKey, u64>,
    requests: BTreeMap<u64, Request>,
    holds: HashMap<ContactKey, Hold>,
}

/// Small and rarely written, so one lock; never held across an await.
#[derive(Default)]
pub struct PrivacyState {
    inner: RwLock<Inner>,
}

impl PrivacyState {
    pub fn apply(&self, ev: &StoredEvent) {
        let mut s = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let at = ev.recorded_at;
        match &ev.event {
            Event::ConsumerRegistered(c) => {
                for k in &c.identifiers {
                    s.by_identifier.insert(k.clone(), ev.seq);
                }
                s.consumers.insert(
                    ev.seq,
                    Consumer {
                        seq: ev.seq,
                        registered_at: at,
                        identifiers: c.identifiers.clone(),
                        erased_at: None,
                    },
                );
            }
            Event::ConsumerIdentifiersAdded(c) => {
                for k in &c.identifiers {
                    s.by_identifier.insert(k.clone(), c.consumer_seq);
                }
                if let Some(consumer) = s.consumers.get_mut(&c.consumer_seq) {
                    for k in &c.identifiers {
                        if !consumer.identifiers.contains(k) {
                            consumer.identifiers.push(k.clone());
                        }
                    }
                }
            }
            Event::PrivacyRequestSubmitted(r) => {
                s.requests.insert(
                    ev.seq,
                    Request {
                        seq: ev.seq,
                        consumer_seq: r.consumer_seq,
                        request_type: r.request_type,
                        jurisdiction: r.jurisdiction,
                        received_at: r.received_at,
                        submitted_at: at,
                        status: RequestStatus::Pending,
                        updated_at: at,
                        completed_at: None,
                        extension_notice: None,
                        result: None,
                    },
                );
            }
            Event::PrivacyRequestUpdated(u) => {
                if let Some(r) = s.requests.get_mut(&u.request_seq) {
                    r.status = u.status;
                    r.updated_at = at;
                    if u.extension_notice.is_some() {
                        r.extension_notice = u.extension_notice.clone();
                    }
                    if u.result.is_some() {
                        r.result = u.result.clone();
                    }
                    if u.status.is_answered() {
                        r.completed_at = Some(at);
                    }
                }
            }
            Event::LegalHoldPlaced(h) => {
                s.holds.insert(
                    h.contact.clone(),
                    Hold {
                        reason: h.reason.clone(),
                        placed_at: at,
                    },
                );
            }
            Event::LegalHoldReleased(h) => {
                s.holds.remove(&h.contact);
            }
            Event::SubjectsErased(e) => {
                // Live only: a replay reads the registrations already rewritten to tokens.
                for (c, t) in e.contacts.iter().zip(&e.tokens) {
                    if let Some(seq) = s.by_identifier.remove(c) {
                        s.by_identifier.insert(t.clone(), seq);
                        if let Some(consumer) = s.consumers.get_mut(&seq) {
                            for k in consumer.identifiers.iter_mut() {
                                if k == c {
                                    *k = t.clone();
                                }
                            }
                        }
                    }
                    if let Some(h) = s.holds.remove(c) {
                        s.holds.insert(t.clone(), h);
                    }
                }
                if let Some(consumer) = s.consumers.get_mut(&e.consumer_seq) {
                    consumer.erased_at = Some(at);
                }
            }
            _ => {}
        }
    }

    /// The consumer `key` belongs to, if one does.
    pub fn consumer_of(&self, key: &ContactKey) -> Option<Consumer> {
        let s = self.inner.read().unwrap_or_else(|p| p.into_inner());
        s.by_identifier
            .get(key)
            .and_then(|seq| s.consumers.get(seq).cloned())
    }

    pub fn consumer(&self, seq: u64) -> Option<Consumer> {
        let s = self.inner.read().unwrap_or_else(|p| p.into_inner());
        s.consumers.get(&seq).cloned()
    }

    pub fn request(&self, seq: u64) -> Option<Request> {
        let s = self.inner.read().unwrap_or_else(|p| p.into_inner());
        s.requests.get(&seq).cloned()
    }

    pub fn requests(&self) -> Vec<Request> {
        let s = self.inner.read().unwrap_or_else(|p| p.into_inner());
        s.requests.values().cloned().collect()
    }

    pub fn hold(&self, key: &ContactKey) -> Option<Hold> {
        let s = self.inner.read().unwrap_or_else(|p| p.into_inner());
        s.holds.get(key).cloned()
    }

    pub fn overdue(&self, now: Millis) -> usize {
        let s = self.inner.read().unwrap_or_else(|p| p.into_inner());
        s.requests.values().filter(|r| r.is_overdue(now)).count()
    }
}
