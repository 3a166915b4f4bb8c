//! Bulk consent import: chunks of rows, each checked row by row and committed whole (events
//! and audit records) under an idempotency key of the import and chunk, so that a re-run
//! resumes without writing anything twice; refused past its reject threshold.
use super::Engine;
use super::consent::{ConsentRequest, consent_event};
use crate::audit::Caller;
use crate::error::{Error, Result};
use crate::model::{ContactKey, ContactRef, Event, LinkEvent};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Rejects reported in full; past this only counted.
pub const MAX_REJECTS: usize = 100_000;

/// One row of an import: a consent record, and the person to link its contact to first.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportRow {
    /// Its line in the source file.
    pub line: u64,
    pub consent: ConsentRequest,
    pub external_id: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportChunk {
    pub import_id: String,
    pub chunk: u64,
    pub rows: Vec<ImportRow>,
    pub default_region: String,
    /// 0: the service default.
    #[serde(skip)]
    pub max_reject_fraction: f64,
    /// Rows of the source within this chunk that the client rejected before sending.
    pub rejected_by_client: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReject {
    pub line: u64,
    pub field: String,
    pub reason: String,
}

/// What a committed chunk answered, kept under its idempotency key for a re-run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChunkAnswer {
    first_seq: u64,
    /// Events written (links and consent records).
    written: u64,
    /// Rows imported.
    imported: u64,
    rejects: Vec<ImportReject>,
}

/// An import in progress over one call, and its totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConsentImport {
    pub import_id: String,
    pub rows: u64,
    pub imported: u64,
    pub resumed: u64,
    pub rejected: u64,
    pub rejects: Vec<ImportReject>,
    pub rejects_omitted: u64,
    pub chunks_committed: u64,
    pub chunks_resumed: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    #[serde(skip)]
    next_chunk: u64,
}

fn reject(line: u64, e: Error) -> ImportReject {
    match e {
        Error::InvalidArgument { field, message } => ImportReject {
            line,
            // `channels[2]` is the channels column.
            field: field.split('[').next().unwrap_or(&field).to_string(),
            reason: message,
        },
        other => ImportReject {
            line,
            field: String::new(),
            reason: other.to_string(),
        },
    }
}

impl ConsentImport {
    fn add_rejects(&mut self, rejects: &[ImportReject]) {
        self.rejected += rejects.len() as u64;
        let room = MAX_REJECTS.saturating_sub(self.rejects.len());
        self.rejects.extend(rejects.iter().take(room).cloned());
        self.rejects_omitted += rejects.len().saturating_sub(room) as u64;
    }

    /// Checks one chunk row by row and commits what is valid, or answers it from an
    /// earlier run's commit. Past the reject threshold nothing of the chunk is written.
    pub async fn chunk(&mut self, engine: &Engine, c: ImportChunk, caller: &Caller) -> Result<()> {
        let id = c.import_id.trim();
        if let Some(p) = crate::model::limits::key_problem(id, crate::model::limits::MAX_KEY - 32) {
            return Err(Error::invalid("import_id", p));
        }
        if id.is_empty() {
            return Err(Error::invalid(
                "import_id",
                "required: it names the import, so that a re-run resumes it",
            ));
        }
        if self.next_chunk == 0 {
            self.import_id = id.to_string();
        } else if id != self.import_id {
            return Err(Error::invalid(
                "import_id",
                format!(
                    "`{id}` after chunks of `{}`: one import a call",
                    self.import_id
                ),
            ));
        }
        if c.chunk != self.next_chunk {
            return Err(Error::invalid(
                "chunk",
                format!(
                    "{} where {} was next: chunks go 0, 1, 2, ... in order",
                    c.chunk, self.next_chunk
                ),
            ));
        }
        super::check_batch_len("rows", c.rows.len())?;
        let max = match c.max_reject_fraction {
            0.0 => engine.settings.max_reject_fraction,
            f if (0.0..=1.0).contains(&f) => f,
            f => {
                return Err(Error::invalid(
                    "max_reject_fraction",
                    format!("{f} is not between 0 and 1"),
                ));
            }
        };
        let region = engine.region("default_region", &c.default_region)?;
        let now = engine.clock.now_ms();
        let mut events = Vec::with_capacity(c.rows.len() + c.rows.len() / 4);
        let mut rejects = Vec::new();
        // Links made earlier in this chunk, as the index does not hold them yet.
        let mut linked: HashMap<ContactKey, String> = HashMap::new();
        for row in &c.rows {
            let parsed = (|| -> Result<(Option<Event>, Event)> {
                let contact = engine.contact("contact", &row.consent.contact, region)?;
                let link = if row.external_id.trim().is_empty() {
                    None
                } else {
                    if matches!(contact, ContactRef::External(_)) {
                        return Err(Error::invalid(
                            "external_id",
                            "the contact is itself an external id; link phones and emails",
                        ));
                    }
                    let person = super::identity::person_id("external_id", &row.external_id)?;
                    let key = contact.to_key();
                    let current = match linked.get(&key) {
                        Some(p) => Some(p.clone()),
                        None => engine.index.person_of(&contact).map(|(p, _)| p),
                    };
                    (current.as_deref() != Some(person.as_str())).then(|| {
                        linked.insert(key.clone(), person.clone());
                        Event::IdentityLinked(LinkEvent {
                            contact: key,
                            person,
                        })
                    })
                };
                let consent = consent_event(&row.consent, contact.to_key(), now)?;
                Ok((link, Event::ConsentRecorded(consent)))
            })();
            match parsed {
                Ok((link, consent)) => {
                    events.extend(link);
                    events.push(consent);
                }
                Err(e) => rejects.push(reject(row.line, e)),
            }
        }
        let rows = self.rows + c.rows.len() as u64 + c.rejected_by_client;
        let rejected = self.rejected + rejects.len() as u64 + c.rejected_by_client;
        if rows > 0 && rejected as f64 / rows as f64 > max {
            self.rows = rows;
            self.rejected += c.rejected_by_client;
            self.add_rejects(&rejects);
            return Err(Error::FailedPrecondition(format!(
                "import `{}` refused at chunk {}: {rejected} of {rows} rows rejected ({:.3}%, \
                 more than max_reject_fraction {max}); chunks 0 to {} are committed, \
                 nothing after them",
                self.import_id,
                c.chunk,
                rejected as f64 * 100.0 / rows as f64,
                c.chunk as i64 - 1
            )));
        }
        let written = events.len() as u64;
        let imported = (c.rows.len() - rejects.len()) as u64;
        let answer_rejects = rejects.clone();
        let key = format!("import:{}:{}", self.import_id, c.chunk);
        let (answer, replayed) = engine
            .commit(
                "consent.import",
                &key,
                &c,
                events,
                caller,
                move |first_seq| ChunkAnswer {
                    first_seq,
                    written,
                    imported,
                    rejects: answer_rejects.clone(),
                },
            )
            .await?;
        self.next_chunk += 1;
        self.rows = rows;
        self.rejected += c.rejected_by_client;
        self.add_rejects(&answer.rejects);
        if replayed {
            self.resumed += answer.imported;
            self.chunks_resumed += 1;
        } else {
            self.imported += answer.imported;
            self.chunks_committed += 1;
            if answer.written > 0 {
                if self.first_seq == 0 {
                    self.first_seq = answer.first_seq;
                }
                self.last_seq = answer.first_seq + answer.written - 1;
            }
        }
        Ok(())
    }
}

impl Engine {
    /// A new import, fed chunk by chunk.
    pub fn consent_import(&self) -> ConsentImport {
        ConsentImport::default()
    }
}
