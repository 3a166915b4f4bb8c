//! `preflight webhooks list|resume|replay`: the webhook endpoints' state and an operator's
//! controls, through WebhookService.
use super::ServerArg;
use super::client::{connect, refused};
use anyhow::Result;
use clap::Subcommand;
use preflight::proto as pb;

#[derive(Subcommand, Debug)]
pub enum WebhooksCmd {
    /// Every endpoint: state, cursor, backlog, the event being retried and the last error.
    List {
        #[command(flatten)]
        server: ServerArg,
    },
    /// Deliver again from where a paused or disabled endpoint stopped.
    Resume {
        name: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Deliver every event the endpoint takes from this seq on again, then carry on.
    Replay {
        name: String,
        #[arg(long)]
        from_seq: u64,
        #[command(flatten)]
        server: ServerArg,
    },
}

pub async fn webhooks(cmd: WebhooksCmd) -> Result<()> {
    let server = match &cmd {
        WebhooksCmd::List { server }
        | WebhooksCmd::Resume { server, .. }
        | WebhooksCmd::Replay { server, .. } => server.clone(),
    };
    let mut c = pb::webhook_service_client::WebhookServiceClient::new(connect(&server).await?);
    match cmd {
        WebhooksCmd::List { .. } => {
            let r = c
                .list_webhooks(pb::ListWebhooksRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            if r.webhooks.is_empty() {
                println!("no webhook endpoints configured");
            }
            for w in &r.webhooks {
                print(w);
            }
            println!("log seq: {}", r.log_seq);
        }
        WebhooksCmd::Resume { name, .. } => {
            let w = c
                .resume_webhook(pb::ResumeWebhookRequest { name })
                .await
                .map_err(refused)?
                .into_inner();
            print(&w);
        }
        WebhooksCmd::Replay { name, from_seq, .. } => {
            let w = c
                .replay_webhook(pb::ReplayWebhookRequest { name, from_seq })
                .await
                .map_err(refused)?
                .into_inner();
            print(&w);
        }
    }
    Ok(())
}

fn print(w: &pb::Webhook) {
    let state = pb::WebhookState::try_from(w.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("WEBHOOK_STATE_")
                .to_string()
        })
        .unwrap_or_else(|_| w.state.to_string());
    println!(
        "{}\t{}\t{}\tacked_seq {}\tbacklog {}{}",
        w.name,
        state,
        w.url,
        w.acked_seq,
        w.backlog,
        if w.delivering_here {
            "\tdelivering here"
        } else {
            ""
        }
    );
    if !w.reason.is_empty() {
        println!("  reason: {}", w.reason);
    }
    if w.retrying_seq > 0 {
        println!(
            "  retrying seq {} after {} failed attempts",
            w.retrying_seq, w.failed_attempts
        );
    }
    if !w.last_error.is_empty() {
        println!("  last error: {}", w.last_error);
    }
}
