//! Audit records, their canonical encoding and hash chain, and the verification walk.
//!
//! A record's hash is SHA-256 over the previous record's hash and the record's canonical JSON
//! (its own `hash` left empty). The personal part (identifiers in clear, before and after
//! states) is stored apart and enters the chain only through its SHA-256, salted so the
//! digest reveals nothing once the personal part is erased.
use crate::model::Millis;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// What a writer asks to be audited; the store gives it a seq, time and place in the chain.
#[derive(Clone, Debug)]
pub struct AuditDraft {
    pub kind: String,
    pub actor: String,
    /// `erased:<hex>` subject tokens.
    pub subjects: Vec<String>,
    /// The index, within the same append, of the event this record is about.
    pub event: Option<usize>,
    /// Non-personal facts of the change (statuses, channels, list names, counts).
    pub summary: Value,
    pub metadata: BTreeMap<String, String>,
    /// The serialized `Personal` part, if any.
    pub personal: Option<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub time: Millis,
    pub actor: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_seq: Option<u64>,
    pub subjects: Vec<String>,
    pub summary: Value,
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_sha256: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The erasable part of a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Personal {
    /// Random, so the digest in the chain cannot be matched against guessed contents.
    pub salt: String,
    /// Subject token to the identifier in clear.
    pub identifiers: BTreeMap<String, String>,
    pub before: Value,
    pub after: Value,
}

impl Personal {
    /// The stored form of a personal part whose `after` is any serializable value (an
    /// event), written straight from it; it reads back as a `Personal`.
    pub fn encode(
        identifiers: &BTreeMap<String, String>,
        before: &Value,
        after: &impl Serialize,
    ) -> Vec<u8> {
        #[derive(Serialize)]
        struct Out<'a, A: Serialize> {
            salt: String,
            identifiers: &'a BTreeMap<String, String>,
            before: &'a Value,
            after: &'a A,
        }
        serde_json::to_vec(&Out {
            salt: crate::model::ids::hex_string(&rand::random::<[u8; 16]>()),
            identifiers,
            before,
            after,
        })
        .expect("personal parts serialize")
    }
}

/// A record as stored: bytes, so that verification sees exactly what is on disk.
#[derive(Clone, Debug)]
pub struct RawAudit {
    pub seq: u64,
    pub record: Vec<u8>,
    pub personal: Option<Vec<u8>>,
}

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of `record` (whose `hash` field is ignored) chained to `prev_hash`.
pub fn chain_hash(record: &AuditRecord) -> String {
    let mut canonical = record.clone();
    canonical.hash = String::new();
    let bytes = serde_json::to_vec(&canonical).expect("audit records serialize");
    let mut h = Sha256::new();
    h.update(record.prev_hash.as_bytes());
    h.update(b"\n");
    h.update(&bytes);
    hex::encode(h.finalize())
}

/// Where the next audit record goes in the chain: its seq and the hash it links to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub next: u64,
    pub prev: String,
}

impl ChainHead {
    pub fn genesis() -> ChainHead {
        ChainHead {
            next: 1,
            prev: GENESIS.to_string(),
        }
    }
}

/// A draft with everything that does not depend on its place in the chain already rendered
/// (its JSON fields, the digest of its personal part, its subject tokens), so that the
/// store's single writer only stamps, chains and hashes it.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// `"actor":..,"kind":..` as canonical JSON.
    head: Vec<u8>,
    /// `,"subjects":..,"summary":..,"metadata":..[,"personal_sha256":..]`.
    body: Vec<u8>,
    event: Option<usize>,
    personal: Option<Vec<u8>>,
    tokens: Vec<crate::model::Token>,
}

impl AuditDraft {
    pub fn render(self) -> Rendered {
        let mut head = Vec::with_capacity(64);
        head.extend_from_slice(b"\"actor\":");
        put_json(&mut head, &self.actor);
        head.extend_from_slice(b",\"kind\":");
        put_json(&mut head, &self.kind);
        let mut body = Vec::with_capacity(256);
        body.extend_from_slice(b",\"subjects\":");
        put_json(&mut body, &self.subjects);
        body.extend_from_slice(b",\"summary\":");
        put_json(&mut body, &self.summary);
        body.extend_from_slice(b",\"metadata\":");
        put_json(&mut body, &self.metadata);
        if let Some(p) = &self.personal {
            body.extend_from_slice(b",\"personal_sha256\":");
            put_json(&mut body, &personal_digest(p));
        }
        let tokens = self
            .subjects
            .iter()
            .filter_map(|s| match crate::model::ContactKey::from_canonical(s) {
                Some(crate::model::ContactKey::Erased(t)) => Some(t),
                _ => None,
            })
            .collect();
        Rendered {
            head,
            body,
            event: self.event,
            personal: self.personal,
            tokens,
        }
    }
}

/// Appends `v` as JSON: the record's strings, string maps and JSON values.
fn put_json(out: &mut Vec<u8>, v: &(impl Serialize + ?Sized)) {
    // These types always serialize, and writing into a Vec cannot fail.
    serde_json::to_writer(out, v).expect("audit fields serialize");
}

/// A record ready to store: its JSON, its personal part and the erased subjects it names.
pub struct Sealed {
    pub seq: u64,
    pub json: Vec<u8>,
    pub personal: Option<Vec<u8>>,
    pub tokens: Vec<crate::model::Token>,
    pub hash: String,
}

/// Gives `drafts` their seqs and time and chains them after `head`, which moves past them.
/// `first_seq` is the seq of the first event of the append the drafts describe.
///
/// The JSON written is exactly `serde_json::to_vec(&AuditRecord)` of the record, built from
/// the rendered parts without going through the struct: the hash is computed over it with
/// `"hash":""` and then written into that slot.
pub fn seal(
    head: &mut ChainHead,
    drafts: Vec<Rendered>,
    first_seq: u64,
    now: Millis,
) -> Vec<Sealed> {
    let mut out = Vec::with_capacity(drafts.len());
    use std::io::Write;
    for d in drafts {
        let seq = head.next;
        let mut json = Vec::with_capacity(d.head.len() + d.body.len() + 220);
        // Writing into a Vec cannot fail.
        let _ = write!(json, "{{\"seq\":{seq},\"time\":{now},");
        json.extend_from_slice(&d.head);
        if let Some(i) = d.event {
            let _ = write!(json, ",\"event_seq\":{}", first_seq + i as u64);
        }
        json.extend_from_slice(&d.body);
        json.extend_from_slice(b",\"prev_hash\":");
        put_json(&mut json, &head.prev);
        json.extend_from_slice(b",\"hash\":\"\"}");
        let mut h = Sha256::new();
        h.update(head.prev.as_bytes());
        h.update(b"\n");
        h.update(&json);
        let hash = crate::model::ids::hex_string(&h.finalize());
        json.truncate(json.len() - 2);
        json.extend_from_slice(hash.as_bytes());
        json.extend_from_slice(b"\"}");
        head.prev = hash.clone();
        head.next = seq + 1;
        out.push(Sealed {
            seq,
            json,
            personal: d.personal,
            tokens: d.tokens,
            hash,
        });
    }
    out
}

pub fn personal_digest(bytes: &[u8]) -> String {
    crate::model::ids::hex_string(&Sha256::digest(bytes))
}

/// A record with its personal part, as exported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    #[serde(flatten)]
    pub record: AuditRecord,
    /// The personal part is gone: erased by a privacy request.
    pub erased: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub identifiers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub before: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub after: Value,
}

impl AuditEntry {
    /// Recorded in `[since, until)`; a missing bound is open.
    pub fn recorded_within(&self, since: Option<Millis>, until: Option<Millis>) -> bool {
        since.is_none_or(|s| self.record.time >= s) && until.is_none_or(|u| self.record.time < u)
    }
}

pub fn entry_of(raw: &RawAudit) -> Result<AuditEntry, String> {
    let record: AuditRecord = serde_json::from_slice(&raw.record)
        .map_err(|e| format!("audit record {} unreadable: {e}", raw.seq))?;
    let personal: Option<Personal> =
        match &raw.personal {
            Some(p) => Some(serde_json::from_slice(p).map_err(|e| {
                format!("personal part of audit record {} unreadable: {e}", raw.seq)
            })?),
            None => None,
        };
    let erased = record.personal_sha256.is_some() && personal.is_none();
    let (identifiers, before, after) = match personal {
        Some(p) => (p.identifiers, p.before, p.after),
        None => (BTreeMap::new(), Value::Null, Value::Null),
    };
    Ok(AuditEntry {
        record,
        erased,
        identifiers,
        before,
        after,
    })
}

/// The outcome of walking the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub records: u64,
    /// Records whose personal part was erased (not a break).
    pub erased: u64,
    pub last_seq: u64,
    pub last_hash: String,
    /// The first record that does not verify, and why.
    pub first_broken: Option<(u64, String)>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Walks records in seq order from the first; stops at the first broken one.
pub struct Verifier {
    prev_hash: String,
    expected_seq: u64,
    out: Verification,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            prev_hash: GENESIS.to_string(),
            expected_seq: 1,
            out: Verification::default(),
        }
    }
}

impl Verifier {
    /// Feeds the next stored record; false once a break was found.
    pub fn feed(&mut self, raw: &RawAudit) -> bool {
        if self.out.first_broken.is_some() {
            return false;
        }
        let broken = |why: String| Some((raw.seq, why));
        let problem = (|| {
            if raw.seq != self.expected_seq {
                return broken(format!(
                    "expected record {} next, found {}: a record is missing",
                    self.expected_seq, raw.seq
                ));
            }
            let record: AuditRecord = match serde_json::from_slice(&raw.record) {
                Ok(r) => r,
                Err(e) => return broken(format!("unreadable: {e}")),
            };
            if record.seq != raw.seq {
                return broken(format!(
                    "stored under {} but says seq {}",
                    raw.seq, record.seq
                ));
            }
            if record.prev_hash != self.prev_hash {
                return broken("prev_hash does not match the previous record's hash".into());
            }
            if chain_hash(&record) != record.hash {
                return broken("contents do not match its hash".into());
            }
            match (&record.personal_sha256, &raw.personal) {
                (Some(d), Some(p)) if personal_digest(p) != *d => {
                    return broken("personal part does not match its digest".into());
                }
                (None, Some(_)) => return broken("personal part not covered by the chain".into()),
                (Some(_), None) => self.out.erased += 1,
                _ => {}
            }
            self.prev_hash = record.hash;
            None
        })();
        if let Some(p) = problem {
            self.out.first_broken = Some(p);
            return false;
        }
        self.out.records += 1;
        self.out.last_seq = raw.seq;
        self.out.last_hash = self.prev_hash.clone();
        self.expected_seq += 1;
        true
    }

    pub fn finish(self) -> Verification {
        self.out
    }
}

/// Verifies a whole trail read page by page through `read(after, limit)`.
pub fn verify<E>(
    mut read: impl FnMut(u64, usize) -> Result<Vec<RawAudit>, E>,
) -> Result<Verification, E> {
    let mut v = Verifier::default();
    let mut after = 0;
    loop {
        let page = read(after, 4096)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for raw in &page {
            if !v.feed(raw) {
                return Ok(v.finish());
            }
        }
    }
    Ok(v.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<RawAudit> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let personal = Personal::encode(
                    &BTreeMap::from([("erased:00".into(), "+12025550100".into())]),
                    &Value::Null,
                    &serde_json::json!({"status": "WITHDRAWN"}),
                );
                let mut r = AuditRecord {
                    seq,
                    time: 1_000 + seq as i64,
                    actor: "test".into(),
                    kind: "consent_recorded".into(),
                    event_seq: Some(seq),
                    subjects: vec!["erased:00".into()],
                    summary: serde_json::json!({"n": seq}),
                    metadata: BTreeMap::new(),
                    personal_sha256: Some(personal_digest(&personal)),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                r.hash = chain_hash(&r);
                prev = r.hash.clone();
                RawAudit {
                    seq,
                    record: serde_json::to_vec(&r).unwrap(),
                    personal: Some(personal),
                }
            })
            .collect()
    }

    fn run(records: &[RawAudit]) -> Verification {
        verify(|after, limit| {
            Ok::<_, ()>(
                records
                    .iter()
                    .filter(|r| r.seq > after)
                    .take(limit)
                    .cloned()
                    .collect(),
            )
        })
        .unwrap()
    }

    fn draft(actor: String, meta: String, event: Option<usize>, personal: bool) -> AuditDraft {
        AuditDraft {
            kind: "consent_recorded".into(),
            actor,
            subjects: vec![format!("erased:{}", "ab".repeat(16)), "+12025550100".into()],
            event,
            summary: serde_json::json!({"status": "GRANTED", "channels": ["SMS"], "n": 1.5}),
            metadata: BTreeMap::from([("ticket".into(), meta)]),
            personal: personal.then(|| b"{\"salt\":\"00\"}".to_vec()),
        }
    }

    proptest::proptest! {
        /// The record the store writes is byte for byte what serializing it as an
        /// `AuditRecord` gives, its hash is the one verification recomputes, and the
        /// chain verifies: the fast path in `seal` cannot drift from the canonical form.
        #[test]
        fn sealed_records_are_canonical_and_verify(
            actors in proptest::collection::vec(".{0,12}", 1..6),
            meta in "\\PC{0,16}",
            first_seq in 1u64..1_000_000,
            now in -1_000i64..2_000_000_000_000,
        ) {
            let mut head = ChainHead::genesis();
            let drafts: Vec<Rendered> = actors
                .iter()
                .enumerate()
                .map(|(i, a)| draft(a.clone(), meta.clone(), (i % 2 == 0).then_some(i), i % 3 != 1).render())
                .collect();
            let sealed = seal(&mut head, drafts, first_seq, now);
            let mut raws = Vec::new();
            for (i, s) in sealed.iter().enumerate() {
                let rec: AuditRecord = serde_json::from_slice(&s.json).unwrap();
                proptest::prop_assert_eq!(&serde_json::to_vec(&rec).unwrap(), &s.json);
                proptest::prop_assert_eq!(&chain_hash(&rec), &rec.hash);
                proptest::prop_assert_eq!(&rec.hash, &s.hash);
                proptest::prop_assert_eq!(rec.event_seq, (i % 2 == 0).then_some(first_seq + i as u64));
                proptest::prop_assert_eq!(rec.time, now);
                proptest::prop_assert_eq!(s.tokens.len(), 1);
                raws.push(RawAudit { seq: s.seq, record: s.json.clone(), personal: s.personal.clone() });
            }
            let v = run(&raws);
            proptest::prop_assert!(v.ok(), "{:?}", v);
            proptest::prop_assert_eq!(v.records, actors.len() as u64);
            proptest::prop_assert_eq!(head.next, actors.len() as u64 + 1);
        }
    }

    #[test]
    fn intact_chain_verifies_and_erasure_is_not_a_break() {
        let mut c = chain(5);
        let v = run(&c);
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.records, 5);
        c[2].personal = None;
        let v = run(&c);
        assert!(v.ok());
        assert_eq!(v.erased, 1);
    }

    #[test]
    fn each_kind_of_tampering_names_the_record() {
        let c = chain(5);
        let mut edited = c.clone();
        let text = String::from_utf8(edited[2].record.clone()).unwrap();
        edited[2].record = text
            .replace("\"actor\":\"test\"", "\"actor\":\"mallory\"")
            .into_bytes();
        assert_eq!(run(&edited).first_broken.unwrap().0, 3);

        let mut personal = c.clone();
        let text = String::from_utf8(personal[1].personal.clone().unwrap()).unwrap();
        personal[1].personal = Some(text.replace("WITHDRAWN", "GRANTED").into_bytes());
        assert_eq!(run(&personal).first_broken.unwrap().0, 2);

        let mut removed = c.clone();
        removed.remove(3);
        assert_eq!(run(&removed).first_broken.unwrap().0, 5);

        let mut garbage = c;
        garbage[0].record = b"{".to_vec();
        assert_eq!(run(&garbage).first_broken.unwrap().0, 1);
    }
}
