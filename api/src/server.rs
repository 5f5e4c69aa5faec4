//! The HTTP/1.1 server under the router, instead of `axum::serve` (which sets no timeouts):
//!
//! - at most MAX_CONNECTIONS connections at once; one more is answered 503 and closed;
//! - a connection must send a request's headers within HEADER_READ_TIMEOUT_SECONDS, counted from
//!   its start or, on a kept-alive connection, from the first byte of the request;
//! - a kept-alive connection idle for KEEP_ALIVE_TIMEOUT_SECONDS is closed;
//! - on shutdown, idle connections close at once and requests in flight may finish within the
//!   grace period.
//!
//! hyper's own `header_read_timeout` is not used: it also runs while a kept-alive connection is
//! idle, which would make the idle timeout the header timeout.
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// What one connection may take.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Reading a request's head since `since` (the connection's start, or the request's first
    /// byte).
    ReadingHead { since: Instant },
    /// Kept alive with nothing to do since `since` (the last response byte written).
    Idle { since: Instant },
    /// Requests in the service.
    Busy { requests: usize },
}

/// The phase of one connection, shared by its I/O, its service and its watchdog (all in the
/// connection's task).
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            phase: Mutex::new(Phase::ReadingHead {
                since: Instant::now(),
            }),
            changed: Notify::new(),
        })
    }

    fn update(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().expect("connection phase");
        *phase = f(*phase);
        self.changed.notify_one();
    }

    /// Bytes arrived: on an idle connection, a request's head begins. (Called for every read, so
    /// it only wakes the watchdog when the phase changes.)
    fn read_some(&self) {
        let mut phase = self.phase.lock().expect("connection phase");
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::ReadingHead {
                since: Instant::now(),
            };
            self.changed.notify_one();
        }
    }

    fn wrote_some(&self) {
        let mut phase = self.phase.lock().expect("connection phase");
        if let Phase::Idle { since } = &mut *phase {
            *since = Instant::now();
        }
    }

    fn request_started(&self) {
        self.update(|phase| match phase {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            _ => Phase::Busy { requests: 1 },
        });
    }

    fn request_finished(&self) {
        self.update(|phase| match phase {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => Phase::Idle {
                since: Instant::now(),
            },
        });
    }

    /// When the connection is to be closed, if nothing happens meanwhile.
    fn deadline(&self, limits: &EdgeLimits) -> Option<(Instant, &'static str)> {
        match *self.phase.lock().expect("connection phase") {
            Phase::ReadingHead { since } => Some((since + limits.header_read_timeout, "header read timeout")),
            Phase::Idle { since } => Some((since + limits.keep_alive_timeout, "keep-alive timeout")),
            Phase::Busy { .. } => None,
        }
    }

    /// Resolves when the connection has been silent for too long in its phase.
    async fn expired(&self, limits: EdgeLimits) -> &'static str {
        loop {
            let changed = self.changed.notified();
            match self.deadline(&limits) {
                None => changed.await,
                Some((deadline, why)) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(deadline) => {
                            if self.deadline(&limits).is_some_and(|(d, _)| d <= Instant::now()) {
                                return why;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The socket, telling the connection's [`Activity`] when bytes come and go.
struct WatchedIo {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read_some();
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote_some();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote_some();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The answer to a connection over MAX_CONNECTIONS.
fn over_capacity() -> Vec<u8> {
    let body = r#"{"detail":"too many connections to this server (MAX_CONNECTIONS); try again shortly"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
/// Connections being turned away at once, at most (beyond, they are just closed).
const MAX_REFUSING: usize = 64;

/// Serve `router` on `listener` until `shutdown` resolves, then stop accepting, close idle
/// connections and give requests in flight `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: EdgeLimits,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment instead of spinning.
                warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    let mut stream = stream;
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        stream.write_all(&over_capacity()).await?;
                        stream.shutdown().await
                    })
                    .await;
                    drop(refusal);
                });
            }
            debug!(%peer, "connection refused: MAX_CONNECTIONS reached");
            continue;
        };
        let (router, stop) = (router.clone(), stop.clone());
        connections.spawn(async move {
            serve_connection(stream, peer, router, limits, stop).await;
            drop(slot);
        });
    }
    info!("stopped accepting connections");
    stop.cancel();
    connections.close();
    if tokio::time::timeout(grace, connections.wait()).await.is_err() {
        warn!(
            grace_secs = grace.as_secs(),
            "requests still in flight after the grace period; closing their connections"
        );
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    limits: EdgeLimits,
    stop: CancellationToken,
) {
    let activity = Activity::new();
    let io = TokioIo::new(WatchedIo {
        stream,
        activity: activity.clone(),
    });
    let service_activity = activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let (router, activity) = (router.clone(), service_activity.clone());
        activity.request_started();
        async move {
            let response = router.oneshot(request.map(axum::body::Body::new)).await;
            activity.request_finished();
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        why = activity.expired(limits) => {
            debug!(%peer, why, "closing a silent connection");
        }
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                _ = connection.as_mut() => {}
                why = activity.expired(limits) => debug!(%peer, why, "closing a silent connection"),
            }
        }
    }
}
