//! Watching the change log: history still held, then live events, never slowing writers.
use super::Engine;
use crate::error::{Error, Result};
use crate::model::{EventKind, StoredEvent};
use futures::Stream;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError};

const HISTORY_CHUNK: usize = 1_000;

struct WatchState {
    engine: Arc<Engine>,
    live: broadcast::Receiver<Arc<StoredEvent>>,
    history: VecDeque<Arc<StoredEvent>>,
    /// Seq of the last event emitted (or skipped by the filter).
    last: u64,
    /// Still reading history from the store.
    replaying: bool,
    kinds: Vec<EventKind>,
    done: bool,
}

impl Engine {
    /// Events after `after_seq` (filtered by `kinds`, empty for all), then live ones.
    /// A watcher more than `index::WATCH_BUFFER` events behind ends with `Aborted`,
    /// naming the seq to resume after.
    pub fn watch(
        self: &Arc<Self>,
        after_seq: u64,
        kinds: Vec<EventKind>,
    ) -> impl Stream<Item = Result<Arc<StoredEvent>>> + Send + 'static {
        // Subscribe before reading history, so no event falls between the two.
        let state = WatchState {
            engine: self.clone(),
            live: self.index.subscribe(),
            history: VecDeque::new(),
            last: after_seq,
            replaying: true,
            kinds,
            done: false,
        };
        futures::stream::unfold(state, |mut s| async move {
            if s.done {
                return None;
            }
            loop {
                let next = match s.next().await {
                    Ok(ev) => ev,
                    Err(e) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                };
                s.last = next.seq;
                if s.kinds.is_empty() || s.kinds.contains(&next.event.kind()) {
                    return Some((Ok(next), s));
                }
            }
        })
    }
}

impl WatchState {
    async fn next(&mut self) -> Result<Arc<StoredEvent>> {
        loop {
            if let Some(ev) = self.history.pop_front() {
                return Ok(ev);
            }
            if self.replaying {
                let chunk = self.engine.store.read_events(self.last, HISTORY_CHUNK)?;
                if chunk.is_empty() {
                    self.replaying = false;
                } else {
                    self.history.extend(chunk.into_iter().map(Arc::new));
                }
                continue;
            }
            match self.live.recv().await {
                Ok(ev) if ev.seq <= self.last => continue,
                Ok(ev) if ev.seq == self.last + 1 => return Ok(ev),
                // Committed before this watcher subscribed but after its last read: fetch.
                Ok(_) => self.replaying = true,
                Err(RecvError::Lagged(_)) => {
                    return Err(Error::Aborted(format!(
                        "watcher fell too far behind the change log; resume with after_seq = {}",
                        self.last
                    )));
                }
                Err(RecvError::Closed) => {
                    return Err(Error::Unavailable("the index stopped".into()));
                }
            }
        }
    }
}
