//! EventService: Watch, a server stream over the engine's change-log watcher.
use super::convert::{change_event, event_kinds};
use crate::engine::Engine;
use crate::proto as pb;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct EventApi {
    engine: Arc<Engine>,
}

impl EventApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        EventApi { engine }
    }
}

type WatchOut = Pin<Box<dyn Stream<Item = Result<pb::ChangeEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::event_service_server::EventService for EventApi {
    type WatchStream = WatchOut;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        let kinds = event_kinds(&r.kinds)?;
        let stream = self
            .engine
            .watch(r.after_seq, kinds)
            .map(|item| item.map(|ev| change_event(&ev)).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }
}
