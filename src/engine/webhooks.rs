//! The webhook endpoints as the core offers them to transports: listing, resuming and
//! replaying, and starting their deliverers.
use super::Engine;
use crate::error::Result;
use crate::webhooks::WebhookView;
use std::sync::Arc;

impl Engine {
    /// Starts a deliverer per configured endpoint; they end when the engine's store does.
    pub fn start_webhooks(&self) {
        if self.webhooks.is_empty() {
            return;
        }
        self.webhooks.start(
            Arc::downgrade(&self.store),
            self.index.clone(),
            self.clock.clone(),
        );
    }

    pub async fn webhooks(&self) -> Result<Vec<WebhookView>> {
        self.webhooks.list(&*self.store).await
    }

    /// Delivers again from where the endpoint stopped (paused or disabled).
    pub async fn resume_webhook(&self, name: &str) -> Result<WebhookView> {
        self.webhooks.resume(&*self.store, name, self.now()).await
    }

    /// Delivers the events from `from_seq` on again, then carries on.
    pub async fn replay_webhook(&self, name: &str, from_seq: u64) -> Result<WebhookView> {
        self.webhooks
            .replay(&*self.store, name, from_seq, self.now())
            .await
    }
}
