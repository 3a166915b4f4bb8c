//! One endpoint's deliverer: reads the change log after its cursor, sends each event it
//! takes in seq order with retries on the endpoint's schedule, and moves the durable cursor
//! only past what a 2xx acknowledged. It holds no store handle across a delivery, never
//! waits on a writer or a check, and in a shared store runs on one replica at a time.
use super::client::{Answer, Client};
use super::cursor::{Cursor, DeliveryState};
use super::types::EventType;
use super::{Slot, payload, sign};
use crate::clock::SharedClock;
use crate::index::Index;
use crate::model::StoredEvent;
use crate::store::Store;
use hyper::body::Bytes;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

/// How long a replica's hold on an endpoint lasts without renewal, and how often it renews.
const LEASE_MS: u64 = 15_000;
const RENEW: Duration = Duration::from_secs(5);
/// How often the stored record is compared with this deliverer's (an operator's change on
/// another replica), and how often the cursor is saved while delivering.
const SYNC: Duration = Duration::from_millis(500);
const FLUSH: Duration = Duration::from_millis(200);
/// Events read from the log at a time.
const BATCH: usize = 500;
/// A receiver's `Retry-After` is honoured up to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How long an idle or waiting deliverer sleeps between looks.
const IDLE: Duration = Duration::from_secs(1);

/// Why a delivery stopped short of a 2xx.
enum Stop {
    /// 410 Gone, or the schedule ran out: the endpoint's new state and why.
    Halt(DeliveryState, String),
    /// An operator changed the record, or another replica took the lease: start over.
    Restart,
    /// The store is gone (the service is stopping).
    Exit,
}

pub(super) struct Deliverer {
    pub slot: Arc<Slot>,
    pub store: Weak<dyn Store>,
    pub index: Arc<Index>,
    pub clock: SharedClock,
    pub client: Client,
    /// This deliverer's record and its generation; None until read from the store.
    mine: Option<(u64, Cursor)>,
    dirty: bool,
    flushed: Instant,
    synced: Instant,
    renewed: Option<Instant>,
    /// Read the stored record before the next step (an operator poked this endpoint).
    resync: bool,
}

impl Deliverer {
    pub fn new(
        slot: Arc<Slot>,
        store: Weak<dyn Store>,
        index: Arc<Index>,
        clock: SharedClock,
        client: Client,
    ) -> Deliverer {
        let now = Instant::now();
        Deliverer {
            slot,
            store,
            index,
            clock,
            client,
            mine: None,
            dirty: false,
            flushed: now,
            synced: now,
            renewed: None,
            resync: false,
        }
    }

    fn name(&self) -> &str {
        &self.slot.ep.name
    }

    pub async fn run(mut self) {
        let mut live = self.index.subscribe();
        loop {
            let Some(store) = self.store.upgrade() else {
                return;
            };
            match self.prepare(&*store).await {
                Ok(true) => {}
                Ok(false) => {
                    drop(store);
                    self.pause(IDLE).await;
                    continue;
                }
                Err(e) => {
                    self.slot.note_error(format!("store: {e}"));
                    drop(store);
                    self.pause(IDLE).await;
                    continue;
                }
            }
            let Some((_, cur)) = self.mine.clone() else {
                continue;
            };
            if cur.state != DeliveryState::Active {
                drop(store);
                self.pause(IDLE).await;
                continue;
            }
            let after = cur.acked_seq;
            let read = {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.read_events(after, BATCH)).await
            };
            let events = match read {
                Ok(Ok(events)) => events,
                Ok(Err(e)) => {
                    self.slot.note_error(format!("reading the change log: {e}"));
                    drop(store);
                    self.pause(IDLE).await;
                    continue;
                }
                Err(_) => return,
            };
            if events.is_empty() {
                let flushed = self.flush(&*store).await;
                drop(store);
                if flushed.is_err() {
                    // The store is away or an operator's record replaced this one: look again
                    // in a moment rather than at once.
                    self.pause(IDLE).await;
                    continue;
                }
                tokio::select! {
                    r = live.recv() => if let Err(RecvError::Closed) = r { return },
                    _ = self.slot.poke.notified() => self.resync = true,
                    _ = tokio::time::sleep(IDLE) => {}
                }
                continue;
            }
            drop(store);
            for ev in &events {
                let takes = EventType::of(&ev.event).filter(|t| self.slot.ep.types.contains(*t));
                if let Some(ty) = takes {
                    // A batch of slow answers can outlast the lease: renew it as it falls due,
                    // and stop if another replica has taken the endpoint over.
                    let Some(store) = self.store.upgrade() else {
                        return;
                    };
                    if self.prepare_lease(&*store).await == Some(false) {
                        break;
                    }
                    drop(store);
                    match self.deliver(ev, ty).await {
                        Ok(()) => {}
                        Err(Stop::Halt(state, reason)) => {
                            self.halt(state, reason).await;
                            break;
                        }
                        Err(Stop::Restart) => break,
                        Err(Stop::Exit) => return,
                    }
                }
                self.advance(ev.seq);
                if self.flushed.elapsed() >= FLUSH {
                    let Some(store) = self.store.upgrade() else {
                        return;
                    };
                    if self.flush(&*store).await.is_err() {
                        break;
                    }
                }
            }
        }
    }

    /// Takes or renews the lease and reads an operator's change; false when another replica
    /// delivers for this endpoint.
    async fn prepare(&mut self, store: &dyn Store) -> Result<bool, crate::store::StoreError> {
        if self.renewed.is_none_or(|r| r.elapsed() >= RENEW) {
            let held = store.hold_lease(&self.lease_name(), LEASE_MS).await?;
            if !self.on_lease(held) {
                return Ok(false);
            }
        }
        if self.mine.is_none() || self.resync || self.synced.elapsed() >= SYNC {
            self.sync(store).await?;
        }
        Ok(true)
    }

    fn lease_name(&self) -> String {
        format!("webhook:{}", self.name())
    }

    /// Compares the stored record with this deliverer's: an operator's newer one wins; a
    /// missing one (a new endpoint, or a shared store that came back empty) is written.
    /// Returns whether this deliverer's record was replaced.
    async fn sync(&mut self, store: &dyn Store) -> Result<bool, crate::store::StoreError> {
        self.synced = Instant::now();
        self.resync = false;
        let stored = store.load_cursor(self.name()).await?;
        let replaced = match (stored, &self.mine) {
            (Some(s), Some((g, _))) if s.generation <= *g => false,
            (Some(s), _) => {
                self.adopt(s.generation, Cursor::read(&s)?);
                true
            }
            (None, Some((g, c))) => {
                let (g, c) = (*g, c.clone());
                self.save(store, g, c).await?;
                false
            }
            (None, None) => {
                // A new endpoint takes events from now on; `replay` sends older ones.
                let now = self.clock.now_ms();
                let last = store.last_seq()?;
                let c = Cursor {
                    acked_seq: last,
                    state: DeliveryState::Active,
                    reason: String::new(),
                    changed_at: now,
                };
                tracing::info!(endpoint = %self.name(), from_seq = last + 1, "webhook endpoint starts delivering");
                self.adopt(0, c.clone());
                self.save(store, 0, c).await?;
                false
            }
        };
        Ok(replaced)
    }

    fn adopt(&mut self, generation: u64, c: Cursor) {
        self.slot.set_cursor(generation, &c);
        self.mine = Some((generation, c));
        self.dirty = false;
    }

    /// Writes the record; an operator's newer one is adopted instead.
    async fn save(
        &mut self,
        store: &dyn Store,
        generation: u64,
        c: Cursor,
    ) -> Result<bool, crate::store::StoreError> {
        match store
            .save_cursor(self.name(), generation, c.stamp(generation))
            .await?
        {
            None => {
                self.dirty = false;
                self.flushed = Instant::now();
                Ok(false)
            }
            Some(newer) => {
                self.adopt(newer.generation, Cursor::read(&newer)?);
                Ok(true)
            }
        }
    }

    /// Saves the cursor if it moved. Err when it could not, or an operator's record replaced
    /// it: the caller starts over from the record now held.
    async fn flush(&mut self, store: &dyn Store) -> Result<(), ()> {
        if !self.dirty {
            return Ok(());
        }
        let Some((g, c)) = self.mine.clone() else {
            return Err(());
        };
        match self.save(store, g, c).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(()),
            Err(e) => {
                self.slot.note_error(format!("saving the cursor: {e}"));
                Err(())
            }
        }
    }

    fn advance(&mut self, seq: u64) {
        if let Some((g, c)) = &mut self.mine
            && seq > c.acked_seq
        {
            c.acked_seq = seq;
            self.dirty = true;
            self.slot.set_cursor(*g, c);
        }
    }

    /// Pauses or disables the endpoint and saves that at once.
    async fn halt(&mut self, state: DeliveryState, reason: String) {
        tracing::warn!(endpoint = %self.name(), state = state.as_str(), %reason, "webhook endpoint stopped delivering");
        let now = self.clock.now_ms();
        if let Some((_, c)) = &mut self.mine {
            c.state = state;
            c.reason = reason;
            c.changed_at = now;
            self.dirty = true;
        }
        if let Some(store) = self.store.upgrade() {
            let _ = self.flush(&*store).await;
        }
        if let Some((g, c)) = &self.mine {
            self.slot.set_cursor(*g, c);
        }
    }

    /// Sleeps up to `d`, waking early when an operator pokes this endpoint.
    async fn pause(&mut self, d: Duration) {
        tokio::select! {
            _ = self.slot.poke.notified() => self.resync = true,
            _ = tokio::time::sleep(d) => {}
        }
    }

    /// Waits out a retry delay, keeping the lease and looking for an operator's change.
    async fn wait(&mut self, d: Duration) -> Result<(), Stop> {
        let until = Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            let poked = tokio::select! {
                _ = self.slot.poke.notified() => true,
                _ = tokio::time::sleep(left.min(SYNC)) => false,
            };
            let Some(store) = self.store.upgrade() else {
                return Err(Stop::Exit);
            };
            self.resync |= poked;
            let held = self.prepare_lease(&*store).await;
            if held == Some(false) {
                return Err(Stop::Restart);
            }
            // Redis away: keep waiting; the attempt itself will say how it went.
            if (self.resync || self.synced.elapsed() >= SYNC)
                && self.sync(&*store).await.unwrap_or(false)
            {
                return Err(Stop::Restart);
            }
        }
    }

    /// Renews the lease when due: Some(false) when another replica holds it, None when
    /// the store could not be asked.
    async fn prepare_lease(&mut self, store: &dyn Store) -> Option<bool> {
        if self.renewed.is_some_and(|r| r.elapsed() < RENEW) {
            return Some(true);
        }
        let held = store.hold_lease(&self.lease_name(), LEASE_MS).await.ok()?;
        Some(self.on_lease(held))
    }

    fn on_lease(&mut self, held: bool) -> bool {
        self.slot.set_holding(held);
        if held {
            self.renewed = Some(Instant::now());
        } else {
            self.renewed = None;
            // Another replica delivers: what this one knew may be stale by the time it
            // takes over.
            self.mine = None;
        }
        held
    }

    /// Sends one event until a 2xx, a 410, or the end of the schedule.
    async fn deliver(&mut self, ev: &StoredEvent, ty: EventType) -> Result<(), Stop> {
        let person = ev
            .event
            .contacts()
            .first()
            .and_then(|c| self.index.person_of(&c.as_ref()))
            .map(|(p, _)| format!("ext:{p}"));
        let body = Bytes::from(payload::body(ev, ty, person.as_deref()));
        let id = payload::message_id(self.name(), ev.seq);
        let schedule = self.slot.ep.schedule.clone();
        let mut asked: Option<Duration> = None;
        let mut last = String::new();
        for (i, delay) in schedule.iter().enumerate() {
            let wait = asked.take().unwrap_or(*delay);
            if !wait.is_zero() {
                self.slot
                    .set_retry(ev.seq, i as u32, self.clock.now_ms(), wait);
                self.wait(wait).await?;
            }
            let now = self.clock.now_ms();
            let ts = now.div_euclid(1000);
            let headers = [
                ("webhook-id", id.clone()),
                ("webhook-timestamp", ts.to_string()),
                (
                    "webhook-signature",
                    sign::standard_signature(&self.slot.ep.secrets, &id, ts, &body),
                ),
            ];
            let answer = self
                .client
                .post(&self.slot.ep, &headers, body.clone(), now)
                .await;
            match &answer {
                Answer::Status { code, .. } if (200..300).contains(code) => {
                    let lag = (self.clock.now_ms() - ev.recorded_at).max(0) as f64 / 1000.0;
                    crate::telemetry::webhook_delivered(self.name(), lag);
                    self.slot.delivered();
                    return Ok(());
                }
                Answer::Status { code: 410, .. } => {
                    crate::telemetry::webhook_failure(self.name(), answer.label());
                    return Err(Stop::Halt(
                        DeliveryState::Disabled,
                        format!("the receiver answered 410 Gone for event {}", ev.seq),
                    ));
                }
                Answer::Status {
                    code: 429 | 503,
                    retry_after: Some(d),
                } => asked = Some((*d).min(MAX_RETRY_AFTER)),
                _ => {}
            }
            crate::telemetry::webhook_failure(self.name(), answer.label());
            last = answer.describe();
            tracing::warn!(endpoint = %self.name(), seq = ev.seq, attempt = i + 1, "webhook delivery failed: {last}");
            self.slot.note_error(format!("event {}: {last}", ev.seq));
        }
        Err(Stop::Halt(
            DeliveryState::Paused,
            format!(
                "event {}: all {} attempts failed, the last with {last}",
                ev.seq,
                schedule.len()
            ),
        ))
    }
}
