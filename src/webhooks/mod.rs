//! Webhooks: change events delivered to HTTP endpoints per the Standard Webhooks spec (at
//! least once, in seq order, a durable cursor per endpoint, paused rather than skipped), the
//! operator's view and controls of them, and the signature checks on webhooks coming in.
pub mod client;
pub mod config;
pub mod cursor;
mod deliver;
pub mod payload;
pub mod sign;
pub mod types;

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::model::Millis;
use crate::model::time::format_time;
use crate::store::Store;
pub use config::{Endpoint, InboundSignatures};
use cursor::{Cursor, DeliveryState};
use serde::Serialize;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// The configured endpoints and what this process knows of each.
#[derive(Default)]
pub struct Webhooks {
    slots: Vec<Arc<Slot>>,
}

pub(crate) struct Slot {
    ep: Endpoint,
    live: Mutex<Live>,
    /// Wakes the deliverer: an operator changed the endpoint's record.
    poke: Notify,
}

#[derive(Clone, Default)]
struct Live {
    cursor: Option<(u64, Cursor)>,
    holding: bool,
    retry: Option<Retry>,
    last_error: Option<String>,
    delivered: u64,
}

#[derive(Clone)]
struct Retry {
    seq: u64,
    /// Attempts already made at it.
    attempts: u32,
    at: Millis,
}

impl Slot {
    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_cursor(&self, generation: u64, c: &Cursor) {
        let mut l = self.live();
        if l.retry.as_ref().is_some_and(|r| r.seq <= c.acked_seq) {
            l.retry = None;
        }
        l.cursor = Some((generation, c.clone()));
    }

    fn set_holding(&self, yes: bool) {
        self.live().holding = yes;
    }

    fn set_retry(&self, seq: u64, attempts: u32, now: Millis, wait: Duration) {
        self.live().retry = Some(Retry {
            seq,
            attempts,
            at: now + wait.as_millis() as Millis,
        });
    }

    fn note_error(&self, e: String) {
        self.live().last_error = Some(e);
    }

    fn delivered(&self) {
        let mut l = self.live();
        l.delivered += 1;
        l.retry = None;
    }
}

/// One endpoint as the admin API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WebhookView {
    pub name: String,
    pub url: String,
    pub kinds: Vec<&'static str>,
    /// ACTIVE, PAUSED or DISABLED; UNKNOWN before its record was first read.
    pub state: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub acked_seq: u64,
    /// Events in the log past the cursor.
    pub backlog: u64,
    /// Whether this replica is the one delivering (always, with the embedded store).
    pub delivering_here: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrying_seq: Option<u64>,
    pub failed_attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    #[serde(skip)]
    pub next_attempt_ms: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Events this process delivered since it started.
    pub delivered: u64,
    /// The change log's last seq when this was read.
    pub log_seq: u64,
}

impl Webhooks {
    pub fn new(endpoints: Vec<Endpoint>) -> Webhooks {
        Webhooks {
            slots: endpoints
                .into_iter()
                .map(|ep| {
                    Arc::new(Slot {
                        ep,
                        live: Mutex::new(Live::default()),
                        poke: Notify::new(),
                    })
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Starts a deliverer per endpoint on the current runtime. They stop once the store is
    /// dropped.
    pub fn start(&self, store: Weak<dyn Store>, index: Arc<Index>, clock: SharedClock) {
        let client = client::Client::new();
        for slot in &self.slots {
            tracing::info!(endpoint = %slot.ep.name, url = %slot.ep.shown_url, kinds = slot.ep.types.names().len(), "webhook endpoint configured");
            let d = deliver::Deliverer::new(
                slot.clone(),
                store.clone(),
                index.clone(),
                clock.clone(),
                client.clone(),
            );
            tokio::spawn(d.run());
        }
    }

    fn slot(&self, name: &str) -> Result<&Arc<Slot>> {
        self.slots
            .iter()
            .find(|s| s.ep.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.slots.iter().map(|s| s.ep.name.as_str()).collect();
                Error::NotFound(format!(
                    "no webhook endpoint named `{}`; configured: {}",
                    crate::model::ids::quote(name),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            })
    }

    /// Every endpoint: its stored record (the deliverer may be on another replica) or this
    /// deliverer's newer one.
    pub async fn list(&self, store: &dyn Store) -> Result<Vec<WebhookView>> {
        let last = store.last_seq()?;
        let mut out = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let stored = match store.load_cursor(&s.ep.name).await? {
                Some(st) => Some((st.generation, Cursor::read(&st)?)),
                None => None,
            };
            out.push(view(s, stored, last));
        }
        Ok(out)
    }

    /// Sets the gauges of the endpoints this replica delivers for.
    pub fn refresh_gauges(&self, last_seq: u64) {
        for s in &self.slots {
            let l = s.live();
            if let (true, Some((_, c))) = (l.holding, &l.cursor) {
                crate::telemetry::webhook_state(
                    &s.ep.name,
                    last_seq.saturating_sub(c.acked_seq),
                    c.state != DeliveryState::Active,
                );
            }
        }
    }

    /// Delivers again from where the endpoint stopped.
    pub async fn resume(&self, store: &dyn Store, name: &str, now: Millis) -> Result<WebhookView> {
        self.change(store, name, now, |c| {
            c.state = DeliveryState::Active;
            c.reason.clear();
            Ok(())
        })
        .await
    }

    /// Delivers again from `from_seq` on (events the endpoint takes), and resumes it.
    pub async fn replay(
        &self,
        store: &dyn Store,
        name: &str,
        from_seq: u64,
        now: Millis,
    ) -> Result<WebhookView> {
        let last = store.last_seq()?;
        if from_seq == 0 || from_seq > last + 1 {
            return Err(Error::invalid(
                "from_seq",
                format!(
                    "{from_seq} is not in the change log; give 1 to {}",
                    last + 1
                ),
            ));
        }
        self.change(store, name, now, |c| {
            c.acked_seq = from_seq - 1;
            c.state = DeliveryState::Active;
            c.reason.clear();
            Ok(())
        })
        .await
    }

    /// Rewrites the endpoint's stored record with a higher generation, so the deliverer
    /// (here or on another replica) takes it over its own.
    async fn change(
        &self,
        store: &dyn Store,
        name: &str,
        now: Millis,
        edit: impl Fn(&mut Cursor) -> Result<()>,
    ) -> Result<WebhookView> {
        let slot = self.slot(name)?;
        for _ in 0..16 {
            let (generation, mut c) = match store.load_cursor(name).await? {
                Some(s) => (s.generation, Cursor::read(&s)?),
                None => (
                    0,
                    Cursor {
                        acked_seq: store.last_seq()?,
                        state: DeliveryState::Active,
                        reason: String::new(),
                        changed_at: now,
                    },
                ),
            };
            edit(&mut c)?;
            c.changed_at = now;
            if store
                .save_cursor(name, generation, c.stamp(generation + 1))
                .await?
                .is_none()
            {
                slot.set_cursor(generation + 1, &c);
                {
                    let mut l = slot.live();
                    l.retry = None;
                    l.last_error = None;
                }
                slot.poke.notify_one();
                tracing::info!(endpoint = %name, acked_seq = c.acked_seq, state = c.state.as_str(), "webhook endpoint changed by an operator");
                return Ok(view(slot, Some((generation + 1, c)), store.last_seq()?));
            }
        }
        Err(Error::Aborted(format!(
            "webhook endpoint `{name}` kept changing under this request; try again"
        )))
    }
}

fn view(s: &Slot, stored: Option<(u64, Cursor)>, last_seq: u64) -> WebhookView {
    let l = s.live().clone();
    // The newer of the stored record and this deliverer's (saved a moment later).
    let newest = match (stored, l.cursor.clone()) {
        (Some(a), Some(b)) => Some(if (b.0, b.1.acked_seq) > (a.0, a.1.acked_seq) {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    };
    let (state, reason, acked) = match &newest {
        Some((_, c)) => (c.state.as_str(), c.reason.clone(), c.acked_seq),
        None => ("UNKNOWN", String::new(), 0),
    };
    WebhookView {
        name: s.ep.name.clone(),
        url: s.ep.shown_url.clone(),
        kinds: s.ep.types.names(),
        state,
        reason,
        acked_seq: acked,
        backlog: last_seq.saturating_sub(acked),
        delivering_here: l.holding,
        retrying_seq: l.retry.as_ref().map(|r| r.seq),
        failed_attempts: l.retry.as_ref().map_or(0, |r| r.attempts),
        next_attempt_at: l.retry.as_ref().map(|r| format_time(r.at)),
        next_attempt_ms: l.retry.as_ref().map(|r| r.at),
        last_error: l.last_error,
        delivered: l.delivered,
        log_seq: last_seq,
    }
}
