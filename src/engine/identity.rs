//! The identity graph: joining phones and emails to one person, and leaving it.
use super::Engine;
use crate::error::{Error, Result};
use crate::model::{ContactKey, ContactRef, Event, LinkEvent, UnlinkEvent};
use serde::{Deserialize, Serialize};

const MAX_LINKS: usize = 100;

#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkRequest {
    /// The person's id in the caller's system (`crm-42` or `ext:crm-42`).
    pub external_id: String,
    pub contacts: Vec<String>,
    pub default_region: String,
    #[serde(skip)]
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkOutcome {
    pub external_id: String,
    /// The identifiers now linked, normalized.
    pub contacts: Vec<String>,
    pub seq: u64,
    #[serde(skip)]
    pub duplicate: bool,
}

pub(super) fn person_id(field: &str, s: &str) -> Result<String> {
    let id = s.trim();
    let id = id.strip_prefix("ext:").unwrap_or(id);
    use crate::model::limits::MAX_EXTERNAL_ID;
    if id.len() > MAX_EXTERNAL_ID {
        return Err(Error::invalid(
            field,
            format!("{} bytes, at most {MAX_EXTERNAL_ID}", id.len()),
        ));
    }
    if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            field,
            format!(
                "`{}` is not an external id (1 to {MAX_EXTERNAL_ID} visible characters)",
                crate::model::ids::quote(s)
            ),
        ));
    }
    Ok(id.to_string())
}

impl Engine {
    #[tracing::instrument(name = "link_identifiers", skip_all, fields(external_id = tracing::field::Empty, contacts = req.contacts.len(), actor = %caller.actor))]
    pub async fn link_identifiers(
        &self,
        req: LinkRequest,
        caller: &crate::audit::Caller,
    ) -> Result<LinkOutcome> {
        let person = person_id("external_id", &req.external_id)?;
        tracing::Span::current().record(
            "external_id",
            tracing::field::display(crate::model::mask(&person)),
        );
        if req.contacts.is_empty() {
            return Err(Error::invalid(
                "contacts",
                "at least one phone or email is required",
            ));
        }
        if req.contacts.len() > MAX_LINKS {
            return Err(Error::ResourceExhausted(format!(
                "contacts: {} identifiers, at most {MAX_LINKS} per call",
                req.contacts.len()
            )));
        }
        let region = self.region("default_region", &req.default_region)?;
        let mut keys: Vec<ContactKey> = Vec::new();
        for (i, c) in req.contacts.iter().enumerate() {
            let field = format!("contacts[{i}]");
            let key = self.contact(&field, c, region)?;
            if matches!(key, ContactRef::External(_)) {
                return Err(Error::invalid(
                    field,
                    format!(
                        "`{c}`: an external id cannot be linked to a person; link phones and emails"
                    ),
                ));
            }
            let key = key.to_key();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let events = keys
            .iter()
            .map(|k| {
                Event::IdentityLinked(LinkEvent {
                    person: person.clone(),
                    contact: k.clone(),
                })
            })
            .collect::<Vec<_>>();
        let n = events.len() as u64;
        let contacts: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let external_id = format!("ext:{person}");
        let (mut out, duplicate) = self
            .commit(
                "link",
                &req.idempotency_key,
                &req,
                events,
                caller,
                move |first| LinkOutcome {
                    external_id: external_id.clone(),
                    contacts: contacts.clone(),
                    seq: first + n - 1,
                    duplicate: false,
                },
            )
            .await?;
        out.duplicate = duplicate;
        tracing::info!(identifiers = n, seq = out.seq, "identifiers linked");
        Ok(out)
    }

    /// Takes one identifier out of its person. It keeps the records made against it;
    /// the person keeps theirs.
    #[tracing::instrument(name = "unlink_identifier", skip_all, fields(contact = tracing::field::Empty, actor = %caller.actor))]
    pub async fn unlink_identifier(
        &self,
        contact: &str,
        default_region: &str,
        caller: &crate::audit::Caller,
    ) -> Result<(String, u64)> {
        let region = self.region("default_region", default_region)?;
        let key = self.logged_contact("contact", contact, region)?;
        let Some((person, _)) = self
            .index
            .person_of(&key)
            .filter(|_| !matches!(key, ContactRef::External(_)))
        else {
            return Err(Error::NotFound(format!(
                "contact: `{}` is not linked to anyone",
                key.to_key()
            )));
        };
        let ev = Event::IdentityUnlinked(UnlinkEvent {
            contact: key.to_key(),
        });
        let (seq, _) = self
            .commit("unlink", "", &(), vec![ev], caller, |first| first)
            .await?;
        tracing::info!(contact = %key.to_key().masked(), seq, "identifier unlinked");
        Ok((format!("ext:{person}"), seq))
    }
}
