//! The REST facade's JSON and form bodies, and their conversion to and from engine types.
use crate::engine::{
    Arg, AttemptRequest, CheckOutcome, CheckRequest, ConsentRequest, InboundRequest,
    RecordAttemptsRequest, When,
};
use crate::error::{Error, Result};
use crate::model::time::parse_time;
use crate::model::{AttemptOutcome, Channel, ConsentStatus, Direction, Millis, Purpose};
use serde::{Deserialize, Serialize};

/// An enum field as JSON clients write it (`"sms"`, `"SMS"`); empty or absent is unset.
fn arg<T>(v: &Option<String>, parse: fn(&str) -> Option<T>) -> Arg<T> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Arg::Unset,
        Some(s) => parse(s).map_or_else(|| Arg::Unknown(s.to_string()), Arg::Set),
    }
}

/// A time as RFC 3339 text, a plain date, or epoch milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TimeArg {
    Millis(i64),
    Text(String),
}

fn time(v: &Option<TimeArg>, field: &str) -> Result<Option<Millis>> {
    match v {
        None => Ok(None),
        Some(TimeArg::Millis(ms)) => Ok(Some(*ms)),
        Some(TimeArg::Text(s)) if s.trim().is_empty() => Ok(None),
        Some(TimeArg::Text(s)) => parse_time(s.trim())
            .map(Some)
            .map_err(|e| Error::invalid(field, e)),
    }
}

/// One check, as query parameters of GET /v1/check or an item of POST /v1/check/batch.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    #[serde(default)]
    pub contact: String,
    pub channel: Option<String>,
    pub purpose: Option<String>,
    #[serde(default)]
    pub category: String,
    pub direction: Option<String>,
    #[serde(default)]
    pub policy: String,
    #[serde(default)]
    pub default_region: String,
    pub at: Option<TimeArg>,
    #[serde(default)]
    pub correlation_id: String,
    /// US ZIP or Canadian postal code (`zip` is taken too).
    #[serde(default, alias = "zip")]
    pub postal_code: String,
    /// What the contact is about, for frequency limits counted by subject.
    #[serde(default)]
    pub subject: String,
}

impl CheckBody {
    /// The engine's request; the engine reads `at` and reports a bad one like any other
    /// field of the check.
    pub fn request(&self) -> CheckRequest<'_> {
        CheckRequest {
            contact: &self.contact,
            channel: arg(&self.channel, Channel::parse),
            purpose: arg(&self.purpose, Purpose::parse),
            category: &self.category,
            direction: arg(&self.direction, Direction::parse),
            policy: &self.policy,
            default_region: &self.default_region,
            at: match &self.at {
                None => When::Unset,
                Some(TimeArg::Millis(ms)) => When::Millis(*ms),
                Some(TimeArg::Text(s)) => When::Text(s),
            },
            correlation_id: &self.correlation_id,
            postal_code: &self.postal_code,
            subject: &self.subject,
        }
    }
}

/// A decision as flat JSON: every field a scalar or a list of strings, so a Genesys Data
/// Action translation map or a NICE Studio snippet can read it with one JSONPath each.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckResult {
    pub verdict: String,
    pub allowed: bool,
    /// The first reason (`""` for ALLOW): the one to branch on.
    pub reason: String,
    pub reasons: Vec<String>,
    pub normalized_contact: String,
    /// Records and registry list versions behind the decision.
    pub matched_ids: Vec<String>,
    pub policy: String,
    pub index_seq: u64,
    /// Milliseconds since the index last heard from its store; null while a replica has not
    /// finished its first load (every check then blocks with INDEX_STALE).
    pub index_age_ms: Option<u64>,
    /// What was wrong with the request (invalid contact, a bad batch item).
    pub detail: String,
    pub correlation_id: String,
    /// RFC 3339: when every time-based reason has lapsed; null when none applies.
    pub next_allowed_at: Option<String>,
    /// The IANA zones the calling hours were judged in.
    pub time_zones: Vec<String>,
    /// ISO 3166-2 (`US-FL`); empty when unknown.
    pub subdivision: String,
    pub subdivisions: Vec<String>,
}

impl CheckResult {
    pub fn from_outcome(o: &CheckOutcome<'_>) -> CheckResult {
        let d = &o.decision;
        let reasons: Vec<String> = d.reasons.iter().map(|r| r.as_str().to_string()).collect();
        let place = crate::calling::PlaceFields::of(o.place);
        CheckResult {
            verdict: if d.allowed() { "ALLOW" } else { "BLOCK" }.into(),
            allowed: d.allowed(),
            reason: reasons.first().cloned().unwrap_or_default(),
            reasons,
            normalized_contact: o.contact.as_ref().map(|c| c.text()).unwrap_or_default(),
            matched_ids: d.matched.as_slice().iter().map(|m| m.text()).collect(),
            policy: o.policy.to_string(),
            index_seq: d.index_seq,
            index_age_ms: o.index_age_ms.map(|a| a.max(0) as u64),
            detail: o.problem.clone().unwrap_or_default(),
            correlation_id: o.correlation_id.to_string(),
            next_allowed_at: d.next_allowed_at.map(crate::model::time::format_time),
            time_zones: place.time_zones,
            subdivision: place.subdivision,
            subdivisions: place.subdivisions,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBatchBody {
    pub checks: Vec<CheckBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckBatchResult {
    pub results: Vec<CheckResult>,
    pub index_seq: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    #[serde(default)]
    pub contact: String,
    pub status: Option<String>,
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub purposes: Vec<String>,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub proof: String,
    pub effective_at: Option<TimeArg>,
    pub expires_at: Option<TimeArg>,
    #[serde(default)]
    pub campaign_id: String,
    #[serde(default)]
    pub idempotency_key: String,
    #[serde(default)]
    pub default_region: String,
}

impl ConsentBody {
    pub fn request(self, idempotency_header: Option<&str>) -> Result<ConsentRequest> {
        Ok(ConsentRequest {
            status: arg(&self.status, ConsentStatus::parse),
            channels: self
                .channels
                .iter()
                .map(|c| arg(&Some(c.clone()), Channel::parse))
                .collect(),
            purposes: self
                .purposes
                .iter()
                .map(|p| arg(&Some(p.clone()), Purpose::parse))
                .collect(),
            effective_at: time(&self.effective_at, "effective_at")?,
            expires_at: time(&self.expires_at, "expires_at")?,
            idempotency_key: idempotency(self.idempotency_key, idempotency_header)?,
            contact: self.contact,
            category: self.category,
            source: self.source,
            proof: self.proof,
            campaign_id: self.campaign_id,
            default_region: self.default_region,
        })
    }
}

/// The body field, or the conventional `Idempotency-Key` header; both must agree.
fn idempotency(body: String, header: Option<&str>) -> Result<String> {
    match header.map(str::trim).filter(|h| !h.is_empty()) {
        None => Ok(body),
        Some(h) if body.is_empty() || body == h => Ok(h.to_string()),
        Some(h) => Err(Error::invalid(
            "idempotency_key",
            format!("`{body}` differs from the Idempotency-Key header `{h}`"),
        )),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsentResult {
    pub consent_id: String,
    pub seq: u64,
    pub duplicate: bool,
    pub normalized_contact: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundBody {
    pub channel: Option<String>,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub message_id: String,
    pub received_at: Option<TimeArg>,
    #[serde(default)]
    pub default_region: String,
}

impl InboundBody {
    pub fn request(self) -> Result<InboundRequest> {
        Ok(InboundRequest {
            channel: arg(&self.channel, Channel::parse),
            received_at: time(&self.received_at, "received_at")?,
            from: self.from,
            to: self.to,
            text: self.text,
            message_id: self.message_id,
            default_region: self.default_region,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboundResult {
    pub action: String,
    pub reply_text: String,
    pub matched_keyword: String,
    pub seq: u64,
    pub duplicate: bool,
    pub consent_id: String,
    pub normalized_contact: String,
}

/// An SMS provider's webhook form (Twilio's field names; other fields are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SmsWebhookForm {
    #[serde(rename = "From", default)]
    pub from: String,
    #[serde(rename = "To", default)]
    pub to: String,
    #[serde(rename = "Body", default)]
    pub body: String,
    #[serde(rename = "MessageSid", default)]
    pub message_sid: String,
}

impl SmsWebhookForm {
    pub fn request(self) -> InboundRequest {
        InboundRequest {
            channel: Arg::Set(Channel::Sms),
            received_at: None,
            from: self.from,
            to: self.to,
            text: self.body,
            message_id: self.message_sid,
            default_region: String::new(),
        }
    }
}

/// Minimal TwiML answer: the reply as a message, or nothing to send.
pub fn twiml(reply: &str) -> String {
    if reply.is_empty() {
        return r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#.to_string();
    }
    let mut escaped = String::with_capacity(reply.len());
    for c in reply.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            c => escaped.push(c),
        }
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escaped}</Message></Response>"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_fields_parse_case_insensitively_and_keep_unknown_text() {
        assert_eq!(
            arg(&Some("sms".into()), Channel::parse),
            Arg::Set(Channel::Sms)
        );
        assert_eq!(arg(&Some(" ".into()), Channel::parse), Arg::Unset);
        assert_eq!(
            arg(&Some("fax".into()), Channel::parse),
            Arg::Unknown("fax".into())
        );
    }

    #[test]
    fn times_name_their_field() {
        let e = time(&Some(TimeArg::Text("soon".into())), "expires_at").unwrap_err();
        assert!(e.to_string().starts_with("expires_at: `soon`"), "{e}");
        assert_eq!(
            time(&Some(TimeArg::Text("1970-01-01T00:00:01Z".into())), "at").unwrap(),
            Some(1000)
        );
    }

    #[test]
    fn idempotency_header_and_body_must_agree() {
        assert_eq!(idempotency("".into(), Some("k1")).unwrap(), "k1");
        assert_eq!(idempotency("k1".into(), None).unwrap(), "k1");
        assert!(idempotency("k2".into(), Some("k1")).is_err());
    }

    #[test]
    fn twiml_escapes_the_reply() {
        assert_eq!(
            twiml("A&B <stop>"),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message>A&amp;B &lt;stop&gt;</Message></Response>"#
        );
        assert!(twiml("").ends_with("<Response/>"));
    }
}

/// One attempt of POST /v1/attempts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptBody {
    #[serde(default)]
    pub contact: String,
    pub channel: Option<String>,
    pub purpose: Option<String>,
    #[serde(default)]
    pub subject: String,
    pub at: Option<TimeArg>,
    pub outcome: Option<String>,
    #[serde(default)]
    pub campaign_id: String,
}

/// POST /v1/attempts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptsBody {
    #[serde(default)]
    pub attempts: Vec<AttemptBody>,
    #[serde(default)]
    pub idempotency_key: String,
    #[serde(default)]
    pub default_region: String,
}

impl AttemptsBody {
    /// The engine's request; a bad `at` is reported for its attempt alone, by the engine.
    pub fn request(self, idempotency_header: Option<&str>) -> Result<RecordAttemptsRequest> {
        Ok(RecordAttemptsRequest {
            idempotency_key: idempotency(self.idempotency_key, idempotency_header)?,
            default_region: self.default_region,
            attempts: self
                .attempts
                .into_iter()
                .map(|a| {
                    let (at, at_text) = match a.at {
                        None => (None, None),
                        Some(TimeArg::Millis(ms)) => (Some(ms), None),
                        Some(TimeArg::Text(t)) => (None, Some(t)),
                    };
                    AttemptRequest {
                        channel: arg(&a.channel, Channel::parse),
                        purpose: arg(&a.purpose, Purpose::parse),
                        outcome: arg(&a.outcome, AttemptOutcome::parse),
                        at,
                        at_text,
                        contact: a.contact,
                        subject: a.subject,
                        campaign_id: a.campaign_id,
                    }
                })
                .collect(),
        })
    }
}

/// One attempt's answer of POST /v1/attempts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptResultBody {
    pub index: u32,
    /// ACCEPTED or INVALID.
    pub status: String,
    pub attempt_id: String,
    pub normalized_contact: String,
    pub error: String,
}

/// POST /v1/attempts' answer: a result per attempt, in request order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptsResult {
    pub results: Vec<AttemptResultBody>,
    pub seq: u64,
    pub duplicate: bool,
}

impl AttemptsResult {
    pub fn of(out: crate::engine::AttemptsOutcome) -> AttemptsResult {
        AttemptsResult {
            results: out
                .results
                .into_iter()
                .map(|r| AttemptResultBody {
                    index: r.index,
                    status: r.status.as_str().to_string(),
                    attempt_id: r.attempt_id,
                    normalized_contact: r.normalized_contact,
                    error: r.error,
                })
                .collect(),
            seq: out.seq,
            duplicate: out.duplicate,
        }
    }
}
