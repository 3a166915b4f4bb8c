//! Connections to Redis that fail fast while it is down and reconnect on the next call.
//!
//! The redis crate's connection manager retries inside a call, so a write would hang while
//! Redis is away; here a call fails with `Unavailable` after the timeout and the broken
//! connection is dropped, so the next call dials again.
use super::super::StoreError;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, FromRedisValue};
use std::time::Duration;

pub struct Redis {
    client: Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    sync: std::sync::Mutex<Option<redis::Connection>>,
    timeout: Duration,
}

pub fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// The URL without its password, for logs and errors.
pub fn masked_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl Redis {
    pub fn open(url: &str, timeout: Duration) -> Result<Redis, StoreError> {
        let client = Client::open(url).map_err(|e| {
            StoreError::Unavailable(format!("redis url `{}`: {e}", masked_url(url)))
        })?;
        Ok(Redis {
            client,
            conn: tokio::sync::Mutex::new(None),
            sync: std::sync::Mutex::new(None),
            timeout,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The shared multiplexed connection, dialled if there is none.
    pub async fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(unavailable)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// A call's answer; a connection that failed is forgotten, so the next call dials anew.
    async fn checked<T>(&self, answer: redis::RedisResult<T>) -> Result<T, StoreError> {
        let e = match answer {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_unrecoverable_error()
        {
            *self.conn.lock().await = None;
        }
        Err(unavailable(e))
    }

    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut c = self.conn().await?;
        let answer = cmd.query_async(&mut c).await;
        self.checked(answer).await
    }

    pub async fn pipe<T: FromRedisValue>(&self, p: &redis::Pipeline) -> Result<T, StoreError> {
        let mut c = self.conn().await?;
        let answer = p.query_async(&mut c).await;
        self.checked(answer).await
    }

    pub async fn invoke<T: FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut c = self.conn().await?;
        let answer = inv.invoke_async(&mut c).await;
        self.checked(answer).await
    }

    /// A blocking query for the store's synchronous readers (audit and history reads);
    /// on a multi-threaded runtime the worker is handed back while it waits.
    pub fn query_sync<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let run = || {
            let mut slot = self.sync.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                let c = self
                    .client
                    .get_connection_with_timeout(self.timeout)
                    .map_err(unavailable)?;
                c.set_read_timeout(Some(self.timeout))
                    .map_err(unavailable)?;
                c.set_write_timeout(Some(self.timeout))
                    .map_err(unavailable)?;
                *slot = Some(c);
            }
            let c = slot.as_mut().expect("dialled above");
            match cmd.query(c) {
                Ok(v) => Ok(v),
                Err(e) => {
                    *slot = None;
                    Err(unavailable(e))
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            _ => run(),
        }
    }
}
