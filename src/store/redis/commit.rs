//! The write path: one task per replica turns queued appends into one Lua call each round
//! (group commit), optimistic on the store's seq, audit head and epoch.
//!
//! Seqs and audit hashes are computed here, since the chain is SHA-256 and Lua has only
//! SHA-1; the script commits only if the store is still where this replica last saw it,
//! else it writes nothing and the round is rebuilt from a fresh read. Everything a commit
//! writes happens inside the one script call, so a failure leaves nothing half-written.
use super::Shared;
use super::conn::unavailable;
use super::log::{LogEntry, Notice};
use crate::audit::chain::{ChainHead, seal};
use crate::model::{Event, StoredEvent};
use crate::store::{Append, AppendOutcome, Erasure, ErasureOutcome, StoreError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

pub type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;
pub type EraseReply = oneshot::Sender<Result<ErasureOutcome, StoreError>>;

pub enum Job {
    Append(Append, Reply),
    Erase(Erasure, EraseReply),
}

const MAX_GROUP: usize = 512;
/// Events one round carries at most (beyond one request's own): bounds the time Redis
/// spends in one script and the size of one notice.
const MAX_GROUP_EVENTS: usize = 20_000;
/// Rounds lost to other writers before a group is failed as unavailable.
const MAX_ATTEMPTS: usize = 64;

const COMMIT: &str = r#"
local seq = redis.call('GET', KEYS[1]) or '0'
local head = redis.call('GET', KEYS[2]) or ''
local epoch = redis.call('GET', KEYS[3]) or ''
if epoch ~= ARGV[3] then return {'epoch', epoch} end
if seq ~= ARGV[1] or head ~= ARGV[2] then return {'retry'} end
for i = 9, #ARGV, 4 do
  if ARGV[i] == 'C' and redis.call('EXISTS', ARGV[i + 1]) == 1 then return {'idem', ARGV[i + 1]} end
end
for i = 9, #ARGV, 4 do
  local op, a, b, c = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if op == 'X' then
    if c == '' then redis.call('XADD', KEYS[4], a, 'e', b)
    else redis.call('XADD', KEYS[4], a, 'e', b, 'r', c) end
  elseif op == 'A' then redis.call('HSET', KEYS[5], a, b)
  elseif op == 'P' then redis.call('HSET', KEYS[6], a, b)
  elseif op == 'D' then redis.call('HDEL', KEYS[6], a)
  elseif op == 'S' then redis.call('ZADD', a, b, b)
  elseif op == 'I' then
    redis.call('SET', a, b, 'PX', ARGV[8])
    local t = redis.call('TIME')
    local cut = tostring(tonumber(t[1]) * 1000 - tonumber(ARGV[8]))
    redis.call('XADD', KEYS[7], 'MINID', '~', cut, '*', 'k', a)
  end
end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('SET', KEYS[2], ARGV[5])
if ARGV[7] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[7]) end
return {'ok'}
"#;

/// Where the store was when this replica last committed or was told.
#[derive(Clone)]
struct Head {
    seq: u64,
    audit: ChainHead,
}

fn head_text(h: &ChainHead) -> String {
    if h.next == 1 {
        return String::new();
    }
    format!("{} {}", h.next, h.prev)
}

fn parse_head(seq: &str, audit: &str) -> Result<Head, StoreError> {
    let bad = || {
        StoreError::Corrupt(format!(
            "store head unreadable: seq `{seq}`, audit `{audit}`"
        ))
    };
    let seq: u64 = seq.parse().map_err(|_| bad())?;
    let audit = if audit.is_empty() {
        ChainHead::genesis()
    } else {
        let (n, h) = audit.split_once(' ').ok_or_else(bad)?;
        ChainHead {
            next: n.parse().map_err(|_| bad())?,
            prev: h.to_string(),
        }
    };
    Ok(Head { seq, audit })
}

/// One round's script arguments and what it will have written.
#[derive(Default)]
struct Round {
    ops: Vec<[Vec<u8>; 4]>,
    entries: Vec<LogEntry>,
}

impl Round {
    fn op(
        &mut self,
        op: &str,
        a: impl Into<Vec<u8>>,
        b: impl Into<Vec<u8>>,
        c: impl Into<Vec<u8>>,
    ) {
        self.ops.push([op.into(), a.into(), b.into(), c.into()]);
    }

    /// Stamps `events` from `head.seq + 1` and seals `drafts` after `head.audit`.
    fn stage(
        &mut self,
        shared: &Shared,
        head: &mut Head,
        events: Vec<Event>,
        drafts: Vec<crate::audit::Rendered>,
        rider: Vec<StoredEvent>,
        now: i64,
    ) -> (u64, u64) {
        let first = head.seq + 1;
        let n = events.len();
        for (i, event) in events.into_iter().enumerate() {
            head.seq += 1;
            let e = StoredEvent {
                seq: head.seq,
                recorded_at: now,
                event,
            };
            // The rider rides on the erasure event, the last of its append.
            let r = if i + 1 == n {
                rider.clone()
            } else {
                Vec::new()
            };
            let json = serde_json::to_vec(&e).expect("events serialize");
            let rj = if r.is_empty() {
                Vec::new()
            } else {
                serde_json::to_vec(&r).expect("events serialize")
            };
            self.op("X", format!("{}-0", e.seq), json, rj);
            self.entries.push(LogEntry { e, r });
        }
        for rec in seal(&mut head.audit, drafts, first, now) {
            let seq = rec.seq.to_string();
            self.op("A", seq.clone(), rec.json, "");
            if let Some(p) = rec.personal {
                self.op("P", seq.clone(), p, "");
            }
            for t in &rec.tokens {
                self.op("S", shared.keys.subject(t), seq.clone(), "");
            }
        }
        (first, head.seq)
    }
}

pub struct Committer {
    shared: Arc<Shared>,
    head: Option<Head>,
}

/// What became of one request in a round.
enum Fate {
    Done(Result<AppendOutcome, StoreError>),
    Staged {
        first: u64,
        last: u64,
        response: Option<Vec<u8>>,
    },
}

/// The script's answer.
enum Answer {
    Committed,
    /// Not written: the store moved on (another writer, or an earlier round of this one
    /// failed), or an idempotency key was taken since it was looked up. The round is
    /// rebuilt from a freshly read head.
    Lost,
}

/// A group sent to Redis whose answer has not come back yet.
struct InFlight {
    reqs: Vec<Append>,
    replies: Vec<Reply>,
    fates: Vec<Fate>,
    entries: Vec<LogEntry>,
    next: Head,
    answer: Pending,
    attempts: usize,
}

type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Answer, StoreError>> + Send>>;

/// Groups in flight at once: while Redis runs one script, the next is built and queued
/// behind it. A round built on a predecessor that then failed fails its own seq check and
/// is rebuilt, so the pipeline never commits out of order.
const PIPELINE: usize = 2;

impl Committer {
    pub fn new(shared: Arc<Shared>) -> Committer {
        Committer { shared, head: None }
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut inflight: std::collections::VecDeque<InFlight> = Default::default();
        let mut erasure: Option<(Erasure, EraseReply)> = None;
        let mut open = true;
        loop {
            // Take more work while the pipeline has room; an erasure waits for it to drain.
            if open && erasure.is_none() && inflight.len() < PIPELINE {
                let first = if inflight.is_empty() {
                    match rx.recv().await {
                        Some(j) => Some(j),
                        None => {
                            open = false;
                            None
                        }
                    }
                } else {
                    rx.try_recv().ok()
                };
                if let Some(first) = first {
                    let mut group = Vec::new();
                    let mut events = 0;
                    match first {
                        Job::Append(a, r) => {
                            events += a.events.len();
                            group.push((a, r))
                        }
                        Job::Erase(e, r) => erasure = Some((e, r)),
                    }
                    while erasure.is_none() && group.len() < MAX_GROUP && events < MAX_GROUP_EVENTS
                    {
                        match rx.try_recv() {
                            Ok(Job::Append(a, r)) => {
                                events += a.events.len();
                                group.push((a, r))
                            }
                            Ok(Job::Erase(e, r)) => erasure = Some((e, r)),
                            Err(_) => break,
                        }
                    }
                    if !group.is_empty() {
                        let (reqs, replies) = group.into_iter().unzip();
                        if let Some(f) = self.send(reqs, replies, 0).await {
                            inflight.push_back(f);
                        }
                    }
                    continue;
                }
            }
            if let Some(oldest) = inflight.pop_front() {
                self.settle(oldest, &mut inflight).await;
                continue;
            }
            if let Some((e, reply)) = erasure.take() {
                let out = self.erase(e).await;
                let _ = reply.send(out);
                continue;
            }
            if !open {
                return;
            }
        }
    }

    /// Waits for the oldest round's answer: replies when committed, else rebuilds it and
    /// every round queued behind it (which cannot have committed).
    async fn settle(&mut self, f: InFlight, rest: &mut std::collections::VecDeque<InFlight>) {
        match f.answer.await {
            Ok(Answer::Committed) => {
                if rest.is_empty() {
                    self.head = Some(f.next.clone());
                }
                self.shared.applied_own(f.entries).await;
                reply_all(f.fates, f.replies);
            }
            Ok(Answer::Lost) => {
                let mut again = vec![(f.reqs, f.replies, f.attempts + 1)];
                // Rounds built on this one fail their seq check; wait them out, keeping
                // any that did commit (none can, but never drop an answer).
                while let Some(g) = rest.pop_front() {
                    match g.answer.await {
                        Ok(Answer::Committed) => {
                            self.shared.applied_own(g.entries).await;
                            reply_all(g.fates, g.replies);
                        }
                        _ => again.push((g.reqs, g.replies, g.attempts + 1)),
                    }
                }
                self.head = None;
                for (reqs, replies, attempts) in again {
                    if attempts >= MAX_ATTEMPTS {
                        fail_all(replies, &gave_up());
                        continue;
                    }
                    if let Some(g) = self.send(reqs, replies, attempts).await {
                        rest.push_back(g);
                    }
                }
            }
            Err(e) => {
                self.head = None;
                fail_all(f.replies, &e);
            }
        }
    }

    async fn fetch_head(&self) -> Result<Head, StoreError> {
        let k = &self.shared.keys;
        let (seq, audit): (Option<String>, Option<String>) = self
            .shared
            .redis
            .pipe(redis::pipe().get(k.seq()).get(k.head()))
            .await?;
        let head = parse_head(
            seq.as_deref().unwrap_or("0"),
            audit.as_deref().unwrap_or(""),
        )?;
        if self.shared.opts.min_replicas_ack > 0 {
            // Followers apply only up to the acknowledged seq; a store written before the
            // setting was on starts it at its head.
            let _: Option<String> = self
                .shared
                .redis
                .query(redis::cmd("SET").arg(k.acked()).arg(head.seq).arg("NX"))
                .await?;
        }
        Ok(head)
    }

    /// Builds a round for `reqs` on the head this replica expects and sends it; requests
    /// answered without a write (replays, conflicts) or a failure are replied to at once.
    async fn send(
        &mut self,
        reqs: Vec<Append>,
        replies: Vec<Reply>,
        attempts: usize,
    ) -> Option<InFlight> {
        match self.build(&reqs).await {
            Ok((head, next, round, fates)) => {
                if round.ops.is_empty() {
                    reply_all(fates, replies);
                    return None;
                }
                self.head = Some(next.clone());
                let mut call = self.invoke(&head, &next, &round);
                // One poll puts the script on the connection now, so rounds reach Redis in
                // the order they were built (a round overtaking its predecessor would only
                // fail its seq check and be rebuilt, but that costs a round trip).
                let answer: Pending = match futures::poll!(&mut call) {
                    std::task::Poll::Ready(out) => Box::pin(async move { out }),
                    std::task::Poll::Pending => call,
                };
                Some(InFlight {
                    reqs,
                    replies,
                    fates,
                    entries: round.entries,
                    next,
                    answer,
                    attempts,
                })
            }
            Err(e) => {
                self.head = None;
                fail_all(replies, &e);
                None
            }
        }
    }

    async fn build(
        &mut self,
        reqs: &[Append],
    ) -> Result<(Head, Head, Round, Vec<Fate>), StoreError> {
        let k = self.shared.keys.clone();
        let head = match self.head.take() {
            Some(h) => h,
            None => self.fetch_head().await?,
        };
        // Keys already taken answer without a write (or conflict); the script checks
        // again, since another replica may take one in between.
        let claimed: Vec<(usize, String)> = reqs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.idempotency.as_ref().map(|c| (i, k.idem(&c.key))))
            .collect();
        let mut seen: Vec<Option<Vec<u8>>> = vec![None; reqs.len()];
        if !claimed.is_empty() {
            let mut cmd = redis::cmd("MGET");
            for (_, key) in &claimed {
                cmd.arg(key);
            }
            let got: Vec<Option<Vec<u8>>> = self.shared.redis.query(&cmd).await?;
            for ((i, _), v) in claimed.iter().zip(got) {
                seen[*i] = v;
            }
        }
        let now = self.shared.clock.now_ms();
        let mut next = head.clone();
        let mut round = Round::default();
        let mut fates = Vec::with_capacity(reqs.len());
        for (req, seen) in reqs.iter().zip(seen) {
            if let (Some(claim), Some(v)) = (&req.idempotency, seen) {
                fates.push(Fate::Done(crate::store::idempotency::replay(&v, claim)));
                continue;
            }
            if let Some(claim) = &req.idempotency {
                round.op("C", k.idem(&claim.key), "", "");
            }
            let (first, last) = round.stage(
                &self.shared,
                &mut next,
                req.events.clone(),
                req.audit.clone(),
                Vec::new(),
                now,
            );
            let response = req.idempotency.as_ref().map(|claim| {
                let response = (claim.respond)(first);
                let v = crate::store::idempotency::encode(now, &claim.fingerprint, &response);
                round.op("I", k.idem(&claim.key), v, "");
                response
            });
            fates.push(Fate::Staged {
                first,
                last,
                response,
            });
        }
        Ok((head, next, round, fates))
    }

    /// The script call for `round` (built on `head`); nothing is sent until it is polled.
    fn invoke(&self, head: &Head, next: &Head, round: &Round) -> Pending {
        let shared = self.shared.clone();
        let k = &shared.keys;
        let Some(epoch) = shared.epoch() else {
            return Box::pin(async {
                Err(StoreError::Unavailable(
                    "this replica has not finished loading from Redis".into(),
                ))
            });
        };
        let notice = serde_json::to_vec(&Notice {
            epoch: epoch.clone(),
            entries: round.entries.clone(),
        })
        .expect("notices serialize");
        let waits = shared.opts.min_replicas_ack > 0;
        let last = next.seq;
        let has_entries = !round.entries.is_empty();
        // EVAL, not EVALSHA: a script missing from Redis's cache would be loaded and
        // retried, and the retry could overtake the next round.
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(COMMIT)
            .arg(7)
            .arg(k.seq())
            .arg(k.head())
            .arg(k.epoch())
            .arg(k.log())
            .arg(k.audit())
            .arg(k.personal())
            .arg(k.idem_log())
            .arg(head.seq.to_string())
            .arg(head_text(&head.audit))
            .arg(&epoch)
            .arg(next.seq.to_string())
            .arg(head_text(&next.audit))
            .arg(k.channel())
            // With replica acknowledgements the notice goes out only once they are in.
            .arg(if round.entries.is_empty() || waits {
                Vec::new()
            } else {
                notice.clone()
            })
            .arg(shared.opts.idempotency_ttl_ms.max(1).to_string());
        for op in &round.ops {
            for a in op {
                cmd.arg(a.as_slice());
            }
        }
        Box::pin(async move {
            let answer: Vec<String> = shared.redis.query(&cmd).await?;
            match answer.first().map(String::as_str) {
                Some("ok") if waits => {
                    replicated(&shared, last, has_entries.then_some(notice)).await?;
                    Ok(Answer::Committed)
                }
                Some("ok") => Ok(Answer::Committed),
                Some("retry" | "idem") => Ok(Answer::Lost),
                Some("epoch") => {
                    crate::telemetry::sync_error("store_reset");
                    Err(StoreError::Unavailable(format!(
                        "the Redis store was reset (epoch `{}`, this replica loaded `{epoch}`); \
                         writes are refused until it is restored",
                        answer.get(1).map(String::as_str).unwrap_or("")
                    )))
                }
                _ => Err(unavailable(format!("unexpected commit answer {answer:?}"))),
            }
        })
    }

    async fn erase(&mut self, req: Erasure) -> Result<ErasureOutcome, StoreError> {
        let shared = self.shared.clone();
        let k = &shared.keys;
        let mut audit_seqs = std::collections::BTreeSet::new();
        for t in &req.tokens {
            let seqs: Vec<u64> = shared
                .redis
                .query(redis::cmd("ZRANGE").arg(k.subject(t)).arg(0).arg(-1))
                .await?;
            audit_seqs.extend(seqs);
        }
        let stripped: usize = if audit_seqs.is_empty() {
            0
        } else {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(k.personal());
            for s in &audit_seqs {
                cmd.arg(*s);
            }
            let held: Vec<Option<Vec<u8>>> = shared.redis.query(&cmd).await?;
            held.iter().filter(|h| h.is_some()).count()
        };
        // Before the erasure commits: an answer left behind would name the person in clear.
        forget_answers_naming(&shared, &req.contacts).await?;
        for _ in 0..MAX_ATTEMPTS {
            // The rewritten history rides on the erasure: it must hold every event about the
            // subjects up to the erasure's own seq. So the index catches up first, and the
            // commit goes only at the head it caught up to (the script's check refuses it if
            // anyone wrote in between, and the round starts over).
            super::follow::catch_up(&shared).await?;
            let head = self.fetch_head().await?;
            if head.seq != shared.sink.seq() {
                continue;
            }
            let history = shared.events_at(&shared.sink.fact_seqs(&req.contacts))?;
            let rider: Vec<StoredEvent> = history
                .into_iter()
                .map(|ev| match (req.redact)(&ev.event) {
                    Some(event) => StoredEvent { event, ..ev },
                    None => ev,
                })
                .collect();
            let now = shared.clock.now_ms();
            let mut next = head.clone();
            let mut round = Round::default();
            for s in &audit_seqs {
                round.op("D", s.to_string(), "", "");
            }
            let (first, _) = round.stage(
                &shared,
                &mut next,
                req.append.events.clone(),
                req.append.audit.clone(),
                rider.clone(),
                now,
            );
            match self.invoke(&head, &next, &round).await {
                Ok(Answer::Committed) => {
                    self.head = Some(next);
                    shared.applied_own(round.entries).await;
                    // The stream and the last snapshot still hold the subjects in clear:
                    // ask for a snapshot that rewrites them and a trim past this seq.
                    shared.want_scrub(first).await;
                    return Ok(ErasureOutcome {
                        first_seq: first,
                        rewritten: rider.len(),
                        audit_stripped: stripped,
                    });
                }
                Ok(Answer::Lost) => {}
                Err(e) => {
                    self.head = None;
                    return Err(e);
                }
            }
        }
        Err(gave_up())
    }
}

/// Deletes remembered idempotency answers whose key or response names one of `contacts`.
async fn forget_answers_naming(
    shared: &Shared,
    contacts: &[crate::model::ContactKey],
) -> Result<usize, StoreError> {
    let naming = crate::store::idempotency::Naming::new(contacts);
    let named = |hay: &[u8]| naming.found_in(hay);
    let mut pattern = String::new();
    for ch in shared.keys.idem("").chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('*');
    let mut cursor: u64 = 0;
    let mut gone = 0;
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000);
        // In a cluster, SCAN walks one node: the one holding the store's slot.
        let (next, keys): (u64, Vec<String>) =
            shared.redis.query_at(scan, &shared.keys.seq()).await?;
        if !keys.is_empty() {
            let mut get = redis::cmd("MGET");
            for k in &keys {
                get.arg(k);
            }
            let values: Vec<Option<Vec<u8>>> = shared.redis.query(&get).await?;
            let doomed: Vec<&String> = keys
                .iter()
                .zip(&values)
                .filter(|(k, v)| named(k.as_bytes()) || v.as_deref().is_some_and(named))
                .map(|(k, _)| k)
                .collect();
            if !doomed.is_empty() {
                let mut del = redis::cmd("DEL");
                for k in &doomed {
                    del.arg(*k);
                }
                let _: u64 = shared.redis.query(&del).await?;
                // Replicas drop their copies by the key's hash; the log never names it.
                let mut tell = redis::pipe();
                for k in &doomed {
                    tell.cmd("XADD")
                        .arg(shared.keys.idem_log())
                        .arg("*")
                        .arg("h")
                        .arg(super::copy::key_hash(k))
                        .ignore();
                }
                let () = shared.redis.pipe(&tell).await?;
                gone += doomed.len();
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    // The idempotency log names the keys it saw set: those naming the person go too.
    let mut from = "-".to_string();
    loop {
        type Entry = (String, Vec<(String, String)>);
        let page: Vec<Entry> = shared
            .redis
            .query(
                redis::cmd("XRANGE")
                    .arg(shared.keys.idem_log())
                    .arg(&from)
                    .arg("+")
                    .arg("COUNT")
                    .arg(1000),
            )
            .await?;
        let naming_ids: Vec<&String> = page
            .iter()
            .filter(|(_, f)| f.iter().any(|(_, v)| named(v.as_bytes())))
            .map(|(id, _)| id)
            .collect();
        if !naming_ids.is_empty() {
            let mut xdel = redis::cmd("XDEL");
            xdel.arg(shared.keys.idem_log());
            for id in naming_ids {
                xdel.arg(id);
            }
            let _: u64 = shared.redis.query(&xdel).await?;
        }
        match page.last() {
            Some((id, _)) if page.len() == 1000 => from = format!("({id}"),
            _ => return Ok(gone),
        }
    }
}

fn gave_up() -> StoreError {
    StoreError::Unavailable(format!(
        "gave up after {MAX_ATTEMPTS} rounds lost to other writers"
    ))
}

fn fail_all(replies: Vec<Reply>, e: &StoreError) {
    for r in replies {
        let _ = r.send(Err(e.clone()));
    }
}

fn reply_all(fates: Vec<Fate>, replies: Vec<Reply>) {
    for (fate, reply) in fates.into_iter().zip(replies) {
        let out = match fate {
            Fate::Done(o) => o,
            Fate::Staged {
                first,
                last,
                response,
            } => Ok(AppendOutcome::Committed {
                first_seq: first,
                last_seq: last,
                response,
            }),
        };
        let _ = reply.send(out);
    }
}

/// Marks `seq` acknowledged and sends the round's notice, once it is on the Redis replicas.
const ACKED: &str = r#"
local a = tonumber(redis.call('GET', KEYS[1]) or '0')
if a < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 1
"#;

/// Waits until `redis.min_replicas_ack` Redis replicas hold everything this connection
/// wrote (the round just committed included), then lets followers see it. Short of them,
/// the round fails UNAVAILABLE: it may still be on the master, so a caller's retry with
/// its idempotency key gets the first answer if it did land, and followers do not apply it
/// until a later round is acknowledged (a failover that loses it loses nothing answered).
async fn replicated(shared: &Shared, seq: u64, notice: Option<Vec<u8>>) -> Result<(), StoreError> {
    let n = shared.opts.min_replicas_ack;
    let ms = shared.opts.replica_ack_timeout.as_millis() as u64;
    let got = shared.redis.wait(n, ms, &shared.keys.seq()).await?;
    if got < u64::from(n) {
        crate::telemetry::sync_error("replica_ack");
        return Err(StoreError::Unavailable(format!(
            "the commit reached {got} of the {n} Redis replicas redis.min_replicas_ack asks for within {ms} ms; \
             nothing was acknowledged: retry with the same idempotency key"
        )));
    }
    let k = &shared.keys;
    let script = redis::Script::new(ACKED);
    let mut inv = script.prepare_invoke();
    inv.key(k.acked())
        .arg(seq)
        .arg(k.channel())
        .arg(notice.unwrap_or_default());
    shared.redis.invoke::<i64>(&inv).await?;
    Ok(())
}
