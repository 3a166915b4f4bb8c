//! Company and registry DNC entries: bulk add with a result per entry, soft removal, lookup.
use super::consent::text;
use super::{Arg, Engine};
use crate::error::{Error, Result};
use crate::index::DncView;
use crate::model::{
    ContactKey, DncAddEvent, DncRemoveEvent, DncType, Event, Millis, event::dnc_id,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, Default, Serialize)]
pub struct DncEntryRequest {
    pub contact: String,
    pub dnc_type: Arg<DncType>,
    /// Required for STATE (e.g. `TX`); optional label otherwise.
    pub list: String,
    pub expires_at: Option<Millis>,
    pub source: String,
    pub note: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AddEntriesRequest {
    pub entries: Vec<DncEntryRequest>,
    #[serde(skip)]
    pub idempotency_key: String,
    pub default_region: String,
    pub actor: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RemoveEntryRequest {
    pub contact: String,
    /// Unset: every active CORPORATE and PERSONAL entry of the contact.
    pub dnc_type: Arg<DncType>,
    pub list: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RemoveEntriesRequest {
    pub entries: Vec<RemoveEntryRequest>,
    pub actor: String,
    pub reason: String,
    pub retain_until: Option<Millis>,
    #[serde(skip)]
    pub idempotency_key: String,
    pub default_region: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryStatus {
    Accepted,
    Duplicate,
    Invalid,
    NotFound,
}

impl EntryStatus {
    /// The name the REST facade and the CLI write (the proto's without its prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Accepted => "ACCEPTED",
            EntryStatus::Duplicate => "DUPLICATE",
            EntryStatus::Invalid => "INVALID",
            EntryStatus::NotFound => "NOT_FOUND",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryResult {
    pub index: u32,
    pub status: EntryStatus,
    pub entry_ids: Vec<String>,
    pub normalized_contact: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntriesOutcome {
    pub results: Vec<EntryResult>,
    /// The seq after this call's last write.
    pub seq: u64,
    #[serde(skip)]
    pub duplicate: bool,
}

/// An entry id known before commit: an existing seq, or the n-th event of this call.
#[derive(Debug, Clone, Copy)]
enum Ref {
    Existing(u64),
    New(u64),
}

#[derive(Clone)]
struct Planned {
    status: EntryStatus,
    refs: Vec<Ref>,
    contact: String,
    error: String,
}

impl Planned {
    fn invalid(e: Error) -> Planned {
        Planned {
            status: EntryStatus::Invalid,
            refs: vec![],
            contact: String::new(),
            error: e.to_string(),
        }
    }
}

fn resolve(plan: Vec<Planned>, n_events: u64, first_seq: u64, index_seq: u64) -> EntriesOutcome {
    let results = plan
        .into_iter()
        .enumerate()
        .map(|(i, p)| EntryResult {
            index: i as u32,
            status: p.status,
            entry_ids: p
                .refs
                .iter()
                .map(|r| match r {
                    Ref::Existing(s) => dnc_id(*s),
                    Ref::New(n) => dnc_id(first_seq + n),
                })
                .collect(),
            normalized_contact: p.contact,
            error: p.error,
        })
        .collect();
    EntriesOutcome {
        results,
        seq: super::writes::seq_after(first_seq, n_events, index_seq),
        duplicate: false,
    }
}

fn check_size(n: usize) -> Result<()> {
    super::check_batch_len("entries", n)
}

fn list_name(t: DncType, list: &str) -> Result<Option<String>> {
    let list = list.trim();
    if t == DncType::State && list.is_empty() {
        return Err(Error::invalid(
            "list",
            "required for STATE entries (e.g. `TX`)",
        ));
    }
    if list.len() > 64 {
        return Err(Error::invalid(
            "list",
            format!("`{list}` is longer than 64 bytes"),
        ));
    }
    Ok((!list.is_empty()).then(|| list.to_ascii_uppercase()))
}

impl Engine {
    #[tracing::instrument(name = "add_dnc_entries", skip_all, fields(entries = req.entries.len(), actor = %caller.actor))]
    pub async fn add_entries(
        &self,
        req: AddEntriesRequest,
        caller: &crate::audit::Caller,
    ) -> Result<EntriesOutcome> {
        check_size(req.entries.len())?;
        let region = self.region("default_region", &req.default_region)?;
        let actor = text("actor", &req.actor)?;
        let now = self.clock.now_ms();
        let mut events = Vec::new();
        let mut plan = Vec::with_capacity(req.entries.len());
        let mut in_call: HashMap<(ContactKey, DncType, Option<String>), u64> = HashMap::new();
        for (i, e) in req.entries.iter().enumerate() {
            let parsed = (|| -> Result<DncAddEvent> {
                let contact = self.contact("contact", &e.contact, region)?.to_key();
                let dnc_type = e.dnc_type.require("type")?;
                let list = list_name(dnc_type, &e.list)?;
                if let Some(exp) = super::time_arg("expires_at", e.expires_at)?
                    && exp <= now
                {
                    return Err(Error::invalid(
                        "expires_at",
                        format!("{exp} ms is already past"),
                    ));
                }
                Ok(DncAddEvent {
                    contact,
                    dnc_type,
                    list,
                    expires_at: e.expires_at,
                    source: super::consent::label("source", &e.source)?,
                    note: text("note", &e.note)?,
                    actor: actor.clone(),
                })
            })();
            let ev = match parsed {
                Ok(ev) => ev,
                Err(err) => {
                    plan.push(Planned::invalid(err.within(&format!("entries[{i}]"))));
                    continue;
                }
            };
            let contact = ev.contact.to_string();
            let same = (ev.contact.clone(), ev.dnc_type, ev.list.clone());
            let existing = self.index.with_facts(&ev.contact.as_ref(), |f, _| {
                f[0].dnc
                    .iter()
                    .find(|x| {
                        x.is_active(now)
                            && x.dnc_type == ev.dnc_type
                            && x.list == ev.list.as_deref()
                    })
                    .map(|x| x.seq)
            });
            let (status, r) = if let Some(seq) = existing {
                (EntryStatus::Duplicate, Ref::Existing(seq))
            } else if let Some(n) = in_call.get(&same) {
                (EntryStatus::Duplicate, Ref::New(*n))
            } else {
                let n = events.len() as u64;
                in_call.insert(same, n);
                events.push(Event::DncAdded(ev));
                (EntryStatus::Accepted, Ref::New(n))
            };
            plan.push(Planned {
                status,
                refs: vec![r],
                contact,
                error: String::new(),
            });
        }
        let n = events.len();
        let out = self
            .commit_plan("dnc.add", &req.idempotency_key, &req, events, plan, caller)
            .await?;
        tracing::info!(
            entries = req.entries.len(),
            written = n,
            seq = out.seq,
            duplicate = out.duplicate,
            "dnc entries added"
        );
        Ok(out)
    }

    #[tracing::instrument(name = "remove_dnc_entries", skip_all, fields(entries = req.entries.len(), actor = %caller.actor))]
    pub async fn remove_entries(
        &self,
        req: RemoveEntriesRequest,
        caller: &crate::audit::Caller,
    ) -> Result<EntriesOutcome> {
        check_size(req.entries.len())?;
        let region = self.region("default_region", &req.default_region)?;
        let now = self.clock.now_ms();
        let (actor, reason, retain_until) = self.removal_terms(&req, now)?;
        let mut events = Vec::new();
        let mut plan = Vec::with_capacity(req.entries.len());
        let mut taken = std::collections::HashSet::new();
        for (i, e) in req.entries.iter().enumerate() {
            let (contact, t, list) = match self.removal_target(e, region) {
                Ok(p) => p,
                Err(err) => {
                    plan.push(Planned::invalid(err.within(&format!("entries[{i}]"))));
                    continue;
                }
            };
            let mut refs = Vec::new();
            for seq in self.active_entries(&contact, t, list.as_deref(), now) {
                if taken.insert(seq) {
                    events.push(Event::DncRemoved(DncRemoveEvent {
                        entry_seq: seq,
                        contact: self.index.entry_owner(seq, &contact.to_key()),
                        actor: actor.clone(),
                        reason: reason.clone(),
                        retain_until,
                    }));
                    refs.push(Ref::Existing(seq));
                }
            }
            let status = if refs.is_empty() {
                EntryStatus::NotFound
            } else {
                EntryStatus::Accepted
            };
            plan.push(Planned {
                status,
                refs,
                contact: contact.to_string(),
                error: String::new(),
            });
        }
        let n = events.len();
        let out = self
            .commit_plan(
                "dnc.remove",
                &req.idempotency_key,
                &req,
                events,
                plan,
                caller,
            )
            .await?;
        tracing::info!(
            entries = req.entries.len(),
            removed = n,
            seq = out.seq,
            duplicate = out.duplicate,
            "dnc entries removed"
        );
        Ok(out)
    }

    /// Who removes, why, and until when the archive keeps the entries: all required.
    fn removal_terms(
        &self,
        req: &RemoveEntriesRequest,
        now: Millis,
    ) -> Result<(String, String, Millis)> {
        let actor = text("actor", &req.actor)?;
        if actor.is_empty() {
            return Err(Error::invalid("actor", "required: who removes the entries"));
        }
        let reason = text("reason", &req.reason)?;
        if reason.is_empty() {
            return Err(Error::invalid(
                "reason",
                "required: why the entries are removed",
            ));
        }
        let retain_until = super::time_arg("retain_until", req.retain_until)?
            .unwrap_or(now.saturating_add(self.settings.archive_retention_ms));
        if retain_until <= now {
            return Err(Error::invalid(
                "retain_until",
                format!("{retain_until} ms is already past"),
            ));
        }
        Ok((actor, reason, retain_until))
    }

    /// The contact, type and list one removal names (a type alone: every list of it).
    fn removal_target<'r>(
        &self,
        e: &'r RemoveEntryRequest,
        region: Option<crate::normalize::Region>,
    ) -> Result<(
        crate::model::ContactRef<'r>,
        Option<DncType>,
        Option<String>,
    )> {
        let contact = self.contact("contact", &e.contact, region)?;
        let t = e.dnc_type.optional("type")?;
        let list = match t {
            Some(t) if !e.list.trim().is_empty() || t == DncType::State => list_name(t, &e.list)?,
            _ => None,
        };
        Ok((contact, t, list))
    }

    /// Seqs of the contact's entries in force that a removal of (type, list) takes away;
    /// no type means the company's own entries (CORPORATE and PERSONAL).
    fn active_entries(
        &self,
        contact: &crate::model::ContactRef<'_>,
        t: Option<DncType>,
        list: Option<&str>,
        now: Millis,
    ) -> Vec<u64> {
        self.index.with_facts(contact, |f, _| {
            f[0].dnc
                .iter()
                .filter(|x| x.is_active(now))
                .filter(|x| match t {
                    Some(t) => x.dnc_type == t && (list.is_none() || x.list == list),
                    None => matches!(x.dnc_type, DncType::Corporate | DncType::Personal),
                })
                .map(|x| x.seq)
                .collect()
        })
    }

    /// Commits a batch's events and answers with a result per planned entry.
    async fn commit_plan<Q: Serialize>(
        &self,
        namespace: &'static str,
        idempotency_key: &str,
        req: &Q,
        events: Vec<Event>,
        plan: Vec<Planned>,
        caller: &crate::audit::Caller,
    ) -> Result<EntriesOutcome> {
        let n = events.len() as u64;
        let index_seq = self.index.seq();
        let (mut out, duplicate) = self
            .commit(
                namespace,
                idempotency_key,
                req,
                events,
                caller,
                move |first| resolve(plan.clone(), n, first, index_seq),
            )
            .await?;
        out.duplicate = duplicate;
        Ok(out)
    }

    /// The identifier's own entries: active ones, and archived ones still within retention when asked.
    pub fn get_entries(
        &self,
        contact: &str,
        default_region: &str,
        include_archived: bool,
    ) -> Result<(String, Vec<EntryView>, u64)> {
        let region = self.region("default_region", default_region)?;
        let key = self.contact("contact", contact, region)?;
        let now = self.clock.now_ms();
        let (report, seq) = self.report(&key)?;
        let entries = report
            .dnc
            .into_iter()
            .filter(|e| e.removal.as_ref().is_none_or(|r| r.retain_until > now))
            .filter(|e| include_archived || e.is_active(now))
            .map(|e| EntryView::at(e, now))
            .collect();
        Ok((key.to_string(), entries, seq))
    }
}

/// A DNC entry as answers show it: the record, and whether it is in force now.
#[derive(Debug, Clone)]
pub struct EntryView {
    pub entry: DncView,
    pub active: bool,
}

impl EntryView {
    pub fn at(entry: DncView, now: Millis) -> EntryView {
        let active = entry.is_active(now);
        EntryView { entry, active }
    }
}
