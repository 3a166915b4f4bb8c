//! Inbound messages: classify, record the change and the message, answer with the reply.
use super::consent::text;
use super::{Arg, Engine};
use crate::error::{Error, Result};
use crate::model::{
    Channel, ChannelSet, ConsentEvent, ConsentStatus, Event, InboundAction, InboundEvent, Millis,
    event::consent_id,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize)]
pub struct InboundRequest {
    /// Who sent the message.
    pub from: String,
    /// The number or short code that received it; picks the program.
    pub to: String,
    pub channel: Arg<Channel>,
    pub text: String,
    /// The provider's id; the same id twice changes nothing twice.
    pub message_id: String,
    /// Unset means now.
    pub received_at: Option<Millis>,
    pub default_region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundOutcome {
    pub action: InboundAction,
    pub reply_text: String,
    pub matched_keyword: String,
    pub seq: u64,
    /// The consent record written (OPT_OUT, OPT_IN), if any.
    pub consent_id: String,
    pub normalized_contact: String,
    #[serde(skip)]
    pub duplicate: bool,
}

impl Engine {
    #[tracing::instrument(name = "process_inbound", skip_all, fields(from = tracing::field::Empty, actor = %caller.actor))]
    pub async fn process_inbound(
        &self,
        req: InboundRequest,
        caller: &crate::audit::Caller,
    ) -> Result<InboundOutcome> {
        let region = self.region("default_region", &req.default_region)?;
        let contact = self.logged_contact("from", &req.from, region)?.to_key();
        let channel = req.channel.require("channel")?;
        let body = text("text", &req.text)?;
        let message_id = req.message_id.trim().to_string();
        if let Some(p) =
            crate::model::limits::key_problem(&message_id, crate::model::limits::MAX_KEY)
        {
            return Err(Error::invalid("message_id", p));
        }
        let received_at =
            super::time_arg("received_at", req.received_at)?.unwrap_or_else(|| self.clock.now_ms());
        let inbound = &self.settings.inbound;
        let classified = inbound.keywords.classify(&body);
        let program = inbound.programs.for_number(&req.to);
        let reply = program.reply(classified.action).to_string();
        let proof = format!(
            "inbound {} message_id={} keyword={}",
            channel.as_str(),
            message_id,
            classified.keyword
        );
        let mut events = Vec::with_capacity(2);
        let consent = |status, channels, purposes| {
            Event::ConsentRecorded(ConsentEvent {
                contact: contact.clone(),
                status,
                channels,
                purposes,
                category: None,
                source: format!("inbound:{}", channel.as_str().to_ascii_lowercase()),
                proof: proof.clone(),
                effective_at: received_at,
                expires_at: None,
                campaign_id: program.name.clone(),
            })
        };
        match classified.action {
            InboundAction::OptOut => events.push(consent(
                ConsentStatus::Withdrawn,
                inbound.opt_out_channels,
                inbound.opt_out_purposes,
            )),
            // Re-subscribing restores the channel the person wrote on, for what an opt-out covers.
            InboundAction::OptIn => events.push(consent(
                ConsentStatus::Granted,
                ChannelSet::of(&[channel]),
                inbound.opt_out_purposes,
            )),
            InboundAction::Help | InboundAction::None => {}
        }
        let wrote_consent = !events.is_empty();
        events.push(Event::InboundReceived(InboundEvent {
            contact: contact.clone(),
            channel,
            received_at,
            action: classified.action,
            keyword: classified.keyword.clone(),
            message_id: message_id.clone(),
            to: req.to.trim().to_string(),
        }));
        let n = events.len() as u64;
        let normalized = contact.to_string();
        let action = classified.action;
        let keyword = classified.keyword;
        let key = if message_id.is_empty() {
            String::new()
        } else {
            format!("{}:{message_id}", channel.as_str())
        };
        let (mut out, duplicate) = self
            .commit("inbound", &key, &req, events, caller, move |first| {
                InboundOutcome {
                    action,
                    reply_text: reply.clone(),
                    matched_keyword: keyword.clone(),
                    seq: first + n - 1,
                    consent_id: if wrote_consent {
                        consent_id(first)
                    } else {
                        String::new()
                    },
                    normalized_contact: normalized.clone(),
                    duplicate: false,
                }
            })
            .await?;
        out.duplicate = duplicate;
        tracing::info!(
            contact = %contact.masked(),
            channel = channel.as_str(),
            action = out.action.as_str(),
            seq = out.seq,
            duplicate,
            "inbound message"
        );
        Ok(out)
    }
}
