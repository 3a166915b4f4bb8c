//! Connection lanes: every accepted gRPC connection is served, start to finish, by one of N
//! single-threaded runtimes (one per worker thread), the way Envoy and nginx pin a
//! connection to a worker.
//!
//! Why: on tokio's work-stealing runtime, each unary call's response woke the connection's
//! task into the worker's LIFO slot, so the connection wrote every response with its own
//! syscall (one `writev` per call measured), and calls hopped between workers. On a lane, the
//! calls that arrived together run, then the connection writes all their responses at once:
//! 20 calls a `writev` and 30% less CPU a call at 16 in flight (docs/benchmarks.md). The
//! price: one connection's calls share one core, so a client that wants more cores opens more
//! connections (one stream already ran on one core).
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::StreamExt;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// A connection served by a lane; the lane's count of open connections falls when it closes.
pub struct LaneConn {
    io: TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for LaneConn {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connected for LaneConn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for LaneConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for LaneConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A lane's inbox and its count of open connections.
struct Lane {
    inbox: mpsc::UnboundedSender<std::net::TcpStream>,
    open: Arc<AtomicUsize>,
}

/// What a lane runs: given its incoming connections and its shutdown signal, serve them.
pub type Serve = Box<
    dyn FnOnce(
            Pin<Box<dyn tokio_stream::Stream<Item = io::Result<LaneConn>> + Send>>,
            Pin<Box<dyn Future<Output = ()> + Send>>,
        ) -> Pin<Box<dyn Future<Output = Result<(), String>>>>
        + Send,
>;

/// Accepts on `incoming` and hands each connection to the lane with the fewest open ones,
/// until `shutdown`; then every lane drains its connections and this returns. `serve(i)`
/// builds lane i's server.
pub async fn run(
    lanes: usize,
    incoming: TcpIncoming,
    serve: impl Fn(usize) -> Serve,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut handles = Vec::new();
    let mut done = Vec::new();
    for i in 0..lanes.max(1) {
        let (tx, rx) = mpsc::unbounded_channel::<std::net::TcpStream>();
        let open = Arc::new(AtomicUsize::new(0));
        let lane_open = open.clone();
        let mut stop = stop_rx.clone();
        let (result_tx, result_rx) = oneshot::channel();
        let serve = serve(i);
        std::thread::Builder::new()
            .name(format!("grpc-lane-{i}"))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("lane {i}: {e}"))
                    .and_then(|rt| {
                        let conns = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(
                            move |s| {
                                // Registered with this lane's reactor, so its readiness
                                // wakes this thread and no other.
                                match TcpStream::from_std(s) {
                                    Ok(io) => Ok(LaneConn {
                                        io,
                                        open: lane_open.clone(),
                                    }),
                                    Err(e) => {
                                        lane_open.fetch_sub(1, Ordering::Relaxed);
                                        Err(e)
                                    }
                                }
                            },
                        );
                        let signal = async move {
                            let _ = stop.wait_for(|s| *s).await;
                        };
                        rt.block_on(serve(Box::pin(conns), Box::pin(signal)))
                    });
                let _ = result_tx.send(result);
            })
            .map_err(|e| format!("cannot start gRPC lane {i}: {e}"))?;
        handles.push(Lane { inbox: tx, open });
        done.push(result_rx);
    }
    let accept = async {
        let mut incoming = std::pin::pin!(incoming);
        let mut next = 0usize;
        while let Some(conn) = incoming.next().await {
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let std = match conn.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand a connection to a lane");
                    continue;
                }
            };
            // Fewest open connections; ties go round-robin so short-lived ones spread too.
            let n = handles.len();
            let lane = (0..n)
                .map(|k| (next + k) % n)
                .min_by_key(|k| handles[*k].open.load(Ordering::Relaxed))
                .unwrap_or(0);
            next = (lane + 1) % n;
            handles[lane].open.fetch_add(1, Ordering::Relaxed);
            if handles[lane].inbox.send(std).is_err() {
                handles[lane].open.fetch_sub(1, Ordering::Relaxed);
                return Err(format!("gRPC lane {lane} stopped"));
            }
        }
        Ok(())
    };
    let outcome = tokio::select! {
        r = accept => r,
        _ = shutdown => Ok(()),
    };
    let _ = stop_tx.send(true);
    drop(handles);
    for d in done {
        match d.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a gRPC lane stopped without a result".into()),
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    /// A lane that tells each client its lane and thread, then holds the connection open
    /// until the client closes it.
    fn echo_lane(lane: usize) -> Serve {
        Box::new(move |mut conns, mut signal| {
            Box::pin(async move {
                loop {
                    tokio::select! {
                        c = conns.next() => match c {
                            Some(Ok(mut c)) => {
                                let thread = std::thread::current().name().unwrap_or("").to_string();
                                tokio::spawn(async move {
                                    let hello = format!("{lane} {thread}\n");
                                    let _ = c.write_all(hello.as_bytes()).await;
                                    let _ = c.read(&mut [0u8; 1]).await;
                                });
                            }
                            Some(Err(e)) => return Err(e.to_string()),
                            None => return Ok(()),
                        },
                        _ = &mut signal => return Ok(()),
                    }
                }
            })
        })
    }

    async fn hello(addr: std::net::SocketAddr) -> (BufReader<TcpStream>, String) {
        let mut s = BufReader::new(TcpStream::connect(addr).await.unwrap());
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        (s, line.trim().to_string())
    }

    #[tokio::test]
    async fn connections_go_to_the_lane_with_fewest_and_lanes_stop_on_shutdown() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(run(2, TcpIncoming::from(listener), echo_lane, async {
            let _ = stopped.await;
        }));

        let mut open = Vec::new();
        for expected in [
            "0 grpc-lane-0",
            "1 grpc-lane-1",
            "0 grpc-lane-0",
            "1 grpc-lane-1",
        ] {
            let (conn, said) = hello(addr).await;
            assert_eq!(said, expected);
            open.push(conn);
        }
        // Both of lane 0's connections close: the next two go there, not round-robin.
        drop(open.remove(2));
        drop(open.remove(0));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        for _ in 0..2 {
            let (conn, said) = hello(addr).await;
            assert_eq!(said, "0 grpc-lane-0");
            open.push(conn);
        }

        stop.send(()).unwrap();
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("lanes stop once told to")
            .unwrap();
        assert_eq!(outcome, Ok(()));
        // The listener is gone with the acceptor.
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
