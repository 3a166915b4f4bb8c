//! ACCESS bundles: everything held about a consumer, gathered from the index, the privacy
//! state and the audit trail, written owner-only to the export directory.
use super::Engine;
use crate::audit::{AuditEntry, entry_of};
use crate::error::{Error, Result};
use crate::model::event::{attempt_id, consent_id, consumer_id, dnc_id, request_id};
use crate::model::privacy::RequestResult;
use crate::model::{ContactKey, Event, StoredEvent};
use crate::privacy::{Consumer, Request};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

impl Engine {
    /// The consumer's identifiers in clear, with every identifier linked to the same person.
    pub(super) fn identifiers_of(&self, consumer: &Consumer) -> Vec<ContactKey> {
        let mut out: Vec<ContactKey> = Vec::new();
        let push = |k: ContactKey, out: &mut Vec<ContactKey>| {
            if !matches!(k, ContactKey::Erased(_)) && !out.contains(&k) {
                out.push(k);
            }
        };
        for k in &consumer.identifiers {
            push(k.clone(), &mut out);
            if let Some((person, members)) = self.index.person_of(&k.as_ref()) {
                push(ContactKey::External(person.as_str().into()), &mut out);
                for m in members {
                    push(m, &mut out);
                }
            }
        }
        out
    }

    /// Audit records about `keys` with the events they describe, in audit order.
    fn history_of(&self, keys: &[ContactKey]) -> Result<Vec<(AuditEntry, Option<StoredEvent>)>> {
        let mut seqs = BTreeSet::new();
        for k in keys {
            seqs.extend(self.store.audit_seqs_for(&self.tokenizer.token_of(k))?);
        }
        let seqs: Vec<u64> = seqs.into_iter().collect();
        let mut out = Vec::new();
        for raw in self.store.read_audit_at(&seqs)? {
            let entry = entry_of(&raw).map_err(Error::Internal)?;
            let event = match entry.record.event_seq {
                Some(s) => self.store.read_event(s)?,
                None => None,
            };
            out.push((entry, event));
        }
        Ok(out)
    }

    pub(super) fn write_access_bundle(
        &self,
        r: &Request,
        consumer: &Consumer,
    ) -> Result<RequestResult> {
        let keys = self.identifiers_of(consumer);
        let history = self.history_of(&keys)?;
        let mut consents = Vec::new();
        let mut inbound = Vec::new();
        let mut links = Vec::new();
        let mut attempts = Vec::new();
        for (_, ev) in &history {
            let Some(ev) = ev else { continue };
            match &ev.event {
                Event::ConsentRecorded(c) => consents.push(json!({
                    "consent_id": consent_id(ev.seq), "recorded_at": ev.recorded_at,
                    "contact": c.contact.to_string(), "status": c.status,
                    "channels": c.channels, "purposes": c.purposes, "category": c.category,
                    "source": c.source, "proof": c.proof, "effective_at": c.effective_at,
                    "expires_at": c.expires_at, "campaign_id": c.campaign_id,
                })),
                Event::InboundReceived(i) => inbound.push(json!({
                    "seq": ev.seq, "contact": i.contact.to_string(), "channel": i.channel,
                    "received_at": i.received_at, "action": i.action.as_str(),
                    "keyword": i.keyword, "message_id": i.message_id, "to": i.to,
                })),
                Event::AttemptRecorded(a) => attempts.push(json!({
                    "attempt_id": attempt_id(ev.seq), "contact": a.contact.to_string(),
                    "channel": a.channel, "purpose": a.purpose, "subject": a.subject,
                    "at": a.at, "outcome": a.outcome, "campaign_id": a.campaign_id,
                })),
                Event::IdentityLinked(_) | Event::IdentityUnlinked(_) => {
                    links.push(serde_json::to_value(ev).unwrap_or(Value::Null))
                }
                _ => {}
            }
        }
        let mut dnc = Vec::new();
        let mut seen = BTreeSet::new();
        for k in &keys {
            let (report, _) = self.report(&k.as_ref())?;
            // An entry mirrored to the person shows once.
            for v in report.dnc.into_iter().filter(|v| seen.insert(v.seq)) {
                dnc.push(json!({
                    "entry_id": dnc_id(v.seq), "contact": v.entry.contact.to_string(),
                    "type": v.entry.dnc_type, "list": v.entry.list, "added_at": v.added_at,
                    "expires_at": v.entry.expires_at, "source": v.entry.source,
                    "note": v.entry.note, "active": v.is_active(self.clock.now_ms()),
                    "removal": v.removal.as_ref().map(|x| json!({
                        "at": x.at, "actor": x.actor, "reason": x.reason,
                        "retain_until": x.retain_until,
                    })),
                }));
            }
        }
        let holds: Vec<Value> = keys
            .iter()
            .filter_map(|k| {
                self.privacy.hold(k).map(|h| {
                    json!({"contact": k.to_string(), "reason": h.reason, "placed_at": h.placed_at})
                })
            })
            .collect();
        let audit: Vec<&AuditEntry> = history.iter().map(|(a, _)| a).collect();
        let bundle = json!({
            "request_id": request_id(r.seq),
            "consumer_id": consumer_id(consumer.seq),
            "jurisdiction": r.jurisdiction,
            "received_at": r.received_at,
            "generated_at": self.clock.now_ms(),
            "identifiers": keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            "consent_history": consents,
            "dnc_entries": dnc,
            "inbound_actions": inbound,
            "contact_attempts": attempts,
            "identity_links": links,
            "legal_holds": holds,
            "audit_records": audit,
        });
        let bytes = serde_json::to_vec_pretty(&bundle).map_err(internal)?;
        let dir = &self.settings.export_dir;
        create_private_dir(dir)
            .map_err(|e| internal(format!("export directory {}: {e}", dir.display())))?;
        let path = dir.join(format!("{}-access.json", request_id(r.seq)));
        write_private(&path, &bytes)
            .map_err(|e| internal(format!("writing {}: {e}", path.display())))?;
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        Ok(RequestResult {
            bundle_path: path.display().to_string(),
            bundle_size: bytes.len() as u64,
            bundle_sha256: hex::encode(Sha256::digest(&bytes)),
            ..Default::default()
        })
    }
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
