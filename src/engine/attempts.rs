//! Contact attempts from every dialer and platform: recorded with a result per attempt, so
//! that frequency limits count them across campaigns, numbers and identifiers.
use super::consent::label;
use super::{Arg, Engine, EntryStatus, When};
use crate::error::{Error, Result};
use crate::model::event::attempt_id;
use crate::model::{AttemptEvent, AttemptOutcome, Channel, Event, Millis, Purpose};
use serde::{Deserialize, Serialize};

/// How far ahead of the server's clock an attempt may say it was made (clock skew between a
/// dialer and this service); later is a mistake, and would count against a limit too long.
pub const MAX_AHEAD_MS: Millis = 5 * 60_000;

#[derive(Debug, Clone, Default, Serialize)]
pub struct AttemptRequest {
    pub contact: String,
    pub channel: Arg<Channel>,
    /// Unset means MARKETING.
    pub purpose: Arg<Purpose>,
    pub subject: String,
    /// Unset means the server's time.
    pub at: Option<Millis>,
    /// Text form (REST), parsed like every other time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_text: Option<String>,
    pub outcome: Arg<AttemptOutcome>,
    pub campaign_id: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RecordAttemptsRequest {
    pub attempts: Vec<AttemptRequest>,
    #[serde(skip)]
    pub idempotency_key: String,
    pub default_region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptResult {
    pub index: u32,
    /// ACCEPTED or INVALID.
    pub status: EntryStatus,
    /// `at-<seq>` when accepted.
    pub attempt_id: String,
    pub normalized_contact: String,
    /// When invalid: the field and the value (`attempts[3].at`).
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptsOutcome {
    pub results: Vec<AttemptResult>,
    /// The seq after this call's last write (the index's when nothing was written).
    pub seq: u64,
    #[serde(skip)]
    pub duplicate: bool,
}

/// One attempt of the plan: its event's position among the call's events, or its error.
#[derive(Debug, Clone)]
enum Planned {
    Accepted { n: u64, contact: String },
    Invalid(String),
}

fn resolve(plan: &[Planned], n_events: u64, first_seq: u64, index_seq: u64) -> AttemptsOutcome {
    let results = plan
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            Planned::Accepted { n, contact } => AttemptResult {
                index: i as u32,
                status: EntryStatus::Accepted,
                attempt_id: attempt_id(first_seq + n),
                normalized_contact: contact.clone(),
                error: String::new(),
            },
            Planned::Invalid(e) => AttemptResult {
                index: i as u32,
                status: EntryStatus::Invalid,
                attempt_id: String::new(),
                normalized_contact: String::new(),
                error: e.clone(),
            },
        })
        .collect();
    AttemptsOutcome {
        results,
        seq: super::writes::seq_after(first_seq, n_events, index_seq),
        duplicate: false,
    }
}

impl Engine {
    /// Records up to MAX_BATCH attempts; a faulty one is INVALID naming its field and the
    /// others are recorded. A retry under the same idempotency key gets the first answer.
    #[tracing::instrument(name = "record_attempts", skip_all, fields(attempts = req.attempts.len(), actor = %caller.actor))]
    pub async fn record_attempts(
        &self,
        req: RecordAttemptsRequest,
        caller: &crate::audit::Caller,
    ) -> Result<AttemptsOutcome> {
        super::check_batch_len("attempts", req.attempts.len())?;
        let region = self.region("default_region", &req.default_region)?;
        let now = self.clock.now_ms();
        let mut events = Vec::with_capacity(req.attempts.len());
        let mut plan = Vec::with_capacity(req.attempts.len());
        for (i, a) in req.attempts.iter().enumerate() {
            match self.attempt_event(a, region, now) {
                Ok(ev) => {
                    plan.push(Planned::Accepted {
                        n: events.len() as u64,
                        contact: ev.contact.to_string(),
                    });
                    events.push(Event::AttemptRecorded(ev));
                }
                Err(e) => plan.push(Planned::Invalid(
                    e.within(&format!("attempts[{i}]")).to_string(),
                )),
            }
        }
        let n = events.len() as u64;
        let index_seq = self.index.seq();
        let (mut out, duplicate) = self
            .commit(
                "attempts.record",
                &req.idempotency_key,
                &req,
                events,
                caller,
                move |first| resolve(&plan, n, first, index_seq),
            )
            .await?;
        out.duplicate = duplicate;
        tracing::info!(
            attempts = req.attempts.len(),
            recorded = n,
            seq = out.seq,
            duplicate,
            "contact attempts recorded"
        );
        Ok(out)
    }

    fn attempt_event(
        &self,
        a: &AttemptRequest,
        region: Option<crate::normalize::Region>,
        now: Millis,
    ) -> Result<AttemptEvent> {
        let contact = self.contact("contact", &a.contact, region)?.to_key();
        let channel = a.channel.require("channel")?;
        let purpose = a.purpose.or("purpose", Purpose::Marketing)?;
        let outcome = a.outcome.require("outcome")?;
        let when = match (&a.at, &a.at_text) {
            (Some(ms), _) => When::Millis(*ms),
            (None, Some(t)) => When::Text(t),
            (None, None) => When::Unset,
        };
        let at = when.resolve("at")?.unwrap_or(now);
        if at > now + MAX_AHEAD_MS {
            return Err(Error::invalid(
                "at",
                format!(
                    "{} is {} s ahead of the server's clock (at most {} s)",
                    crate::model::time::format_time(at),
                    (at - now) / 1000,
                    MAX_AHEAD_MS / 1000
                ),
            ));
        }
        Ok(AttemptEvent {
            contact,
            channel,
            purpose,
            subject: label("subject", &a.subject)?,
            at,
            outcome,
            campaign_id: label("campaign_id", &a.campaign_id)?,
        })
    }

    /// Drops attempts that have left every policy's window (the sweep of `start_background`).
    pub fn prune_attempts(&self) -> usize {
        self.index.prune_attempts(self.clock.now_ms())
    }
}
