//! The HTTP server under the API: HTTP/1.1 connections with limits a slow or idle client
//! cannot get round (a request head must arrive within `header_timeout`, a body within
//! `body_timeout`, an idle connection closes after `idle_timeout`, at most `max_connections`
//! are open at once), and a shutdown that waits for the requests in progress only.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::{Instant, Sleep};

/// What a client may take of the server.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// From a request's first byte to the end of its head.
    pub header_timeout: Duration,
    /// The time spent waiting for a request body's bytes, all in all (time the handler
    /// spends on what arrived does not count, so a large import is not cut short by its own
    /// processing, while a trickled body is).
    pub body_timeout: Duration,
    /// How long a connection may stay open with no request in progress (before its first
    /// request, or between two).
    pub idle_timeout: Duration,
    /// Connections open at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
}

/// Why a request body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyCut {
    /// Its [`ServerLimits::body_timeout`] is spent.
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
    /// The server is stopping: a body still arriving would hold the shutdown.
    #[error("the server is stopping")]
    ShuttingDown,
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, closes every connection with no request in progress at once and the others
/// once their answer is written, and returns when all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop, stopping) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        let Some((stream, slot)) = accepted else {
            continue;
        };
        let router = router.clone();
        let stopping = stopping.clone();
        connections.spawn(async move {
            serve_connection(stream, router, limits, stopping).await;
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

/// The next connection, once one of the `slots` is free; `None` after a failed accept (too
/// many open files, a connection reset before it was accepted), after a short pause so a
/// persistent failure does not spin.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    let slot = slots.clone().acquire_owned().await.expect("never closed");
    match listener.accept().await {
        Ok((stream, _)) => Some((stream, slot)),
        Err(error) => {
            tracing::warn!(%error, "accepting a connection failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ServerLimits,
    mut stopping: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        activity: activity.clone(),
    });
    let tower = TowerToHyperService::new(router);
    let service_activity = activity.clone();
    let stopping_for_bodies = stopping.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let request_done = service_activity.request_started();
        let stopping = stopping_for_bodies.clone();
        let request =
            request.map(|body| Body::new(TimedBody::new(body, limits.body_timeout, stopping)));
        let answer = hyper::service::Service::call(&tower, request);
        async move {
            let response: Response<Body> = answer.await?;
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(ResponseBody {
                    inner: body,
                    _done: request_done,
                })
            }))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut shutting_down = false;
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = sleep_until(deadline) => {
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("closing a connection that sent no request in time");
                    return;
                }
            }
            _ = stopping.wait_for(|stop| *stop), if !shutting_down => {
                shutting_down = true;
                if !activity.in_request() {
                    return;
                }
                // Answers the request in progress, then closes.
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Where one connection stands, for its limits: a request in progress (none applies), a
/// request's head arriving (`header_timeout` from its first byte), or idle (`idle_timeout`
/// from the end of the last answer, or from the connection's start).
struct Activity {
    state: Mutex<ConnectionState>,
    /// Woken at every change of state, so the connection's deadline is computed again.
    changed: Notify,
}

#[derive(Clone, Copy)]
enum ConnectionState {
    Idle { since: Instant },
    ReadingHead { since: Instant },
    InRequest { requests: usize },
}

impl Activity {
    fn new() -> Self {
        Activity {
            state: Mutex::new(ConnectionState::Idle {
                since: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    fn set(&self, change: impl FnOnce(ConnectionState) -> ConnectionState) {
        let mut state = self.state.lock().expect("never poisoned");
        *state = change(*state);
        self.changed.notify_one();
    }

    /// Bytes arrived: the start of a request's head if the connection was idle.
    fn bytes_read(&self) {
        let state = *self.state.lock().expect("never poisoned");
        if let ConnectionState::Idle { .. } = state {
            self.set(|_| ConnectionState::ReadingHead {
                since: Instant::now(),
            });
        }
    }

    /// A request's head was read; the answer marks its end when dropped.
    fn request_started(self: &Arc<Self>) -> RequestDone {
        self.set(|state| ConnectionState::InRequest {
            requests: match state {
                ConnectionState::InRequest { requests } => requests + 1,
                _ => 1,
            },
        });
        RequestDone(self.clone())
    }

    fn in_request(&self) -> bool {
        matches!(
            *self.state.lock().expect("never poisoned"),
            ConnectionState::InRequest { .. }
        )
    }

    /// When the connection is to be closed if nothing happens before.
    fn deadline(&self, limits: &ServerLimits) -> Option<Instant> {
        match *self.state.lock().expect("never poisoned") {
            ConnectionState::Idle { since } => Some(since + limits.idle_timeout),
            ConnectionState::ReadingHead { since } => Some(since + limits.header_timeout),
            ConnectionState::InRequest { .. } => None,
        }
    }
}

/// Ends a request's part of the connection's activity when its answer has been written (or
/// abandoned).
struct RequestDone(Arc<Activity>);

impl Drop for RequestDone {
    fn drop(&mut self) {
        self.0.set(|state| match state {
            ConnectionState::InRequest { requests } if requests > 1 => ConnectionState::InRequest {
                requests: requests - 1,
            },
            _ => ConnectionState::Idle {
                since: Instant::now(),
            },
        });
    }
}

/// The connection's socket, telling [`Activity`] when bytes arrive.
struct TrackedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body with a budget of time spent waiting for its bytes: once spent, or once the
/// server stops, it answers [`BodyCut`].
struct TimedBody {
    inner: Incoming,
    budget: Duration,
    /// Running while the body waits for bytes; set to the budget's end when waiting starts.
    timer: Pin<Box<Sleep>>,
    waiting_since: Option<Instant>,
    limit: Duration,
    /// Completes when the server stops.
    stopping: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
}

impl TimedBody {
    fn new(inner: Incoming, budget: Duration, mut stopping: watch::Receiver<bool>) -> Self {
        TimedBody {
            inner,
            budget,
            timer: Box::pin(tokio::time::sleep(budget)),
            waiting_since: None,
            limit: budget,
            stopping: Box::pin(async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            }),
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting_since.take() {
                    this.budget = this.budget.saturating_sub(since.elapsed());
                }
                Poll::Ready(frame.map(|frame| frame.map_err(axum::BoxError::from)))
            }
            Poll::Pending => {
                if this.waiting_since.is_none() {
                    let now = Instant::now();
                    this.waiting_since = Some(now);
                    this.timer.as_mut().reset(now + this.budget);
                }
                if this.stopping.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(BodyCut::ShuttingDown.into())));
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyCut::TimedOut(this.limit).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body, ending its request's part of the connection's activity when dropped.
struct ResponseBody {
    inner: Body,
    _done: RequestDone,
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::Instant;

    use super::*;
    use crate::http::body::read_body;

    /// Long enough that no limit set to it ends a test: a test that sees a connection
    /// closed or answered under this bound saw the limit it set short.
    const NEVER: Duration = Duration::from_secs(120);
    const SHORT: Duration = Duration::from_millis(300);

    fn limits() -> ServerLimits {
        ServerLimits {
            header_timeout: NEVER,
            body_timeout: NEVER,
            idle_timeout: NEVER,
            max_connections: 64,
        }
    }

    /// A server of two routes (`GET /ok`, and `POST /echo` answering its body's length) on
    /// loopback; answers its address, a trigger for its shutdown and its task.
    async fn start(
        limits: ServerLimits,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let router = Router::new().route("/ok", get(|| async { "ok" })).route(
            "/echo",
            post(|body: Body| async move {
                read_body(body, 1 << 20)
                    .await
                    .map(|bytes| bytes.len().to_string())
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(serve(listener, router, limits, async move {
            let _ = stopped.await;
        }));
        (addr, stop, server)
    }

    /// Reads until the server closes the connection (or resets it); answers what came.
    /// Bounded by [`NEVER`], which no test reaches unless its limit failed.
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut seen = Vec::new();
        let read = tokio::time::timeout(NEVER, async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the server never closed the connection");
        String::from_utf8_lossy(&seen).into_owned()
    }

    /// Reads one whole answer to `GET /ok` (its body is `ok`).
    async fn ok_answer(stream: &mut TcpStream) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).ends_with("\r\n\r\nok") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before the answer: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    #[tokio::test]
    async fn a_half_sent_head_is_closed_at_the_header_timeout() {
        let (addr, _stop, _server) = start(ServerLimits {
            header_timeout: SHORT,
            ..limits()
        })
        .await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        assert_eq!(until_closed(&mut client).await, "", "nothing is answered");
    }

    #[tokio::test]
    async fn a_connection_without_a_request_is_closed_at_the_idle_timeout() {
        let (addr, _stop, _server) = start(ServerLimits {
            idle_timeout: SHORT,
            ..limits()
        })
        .await;
        // Kept alive after an answer...
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(ok_answer(&mut kept).await.starts_with("HTTP/1.1 200"));
        // ...and never used.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert_eq!(until_closed(&mut kept).await, "");
        assert_eq!(until_closed(&mut silent).await, "");
    }

    #[tokio::test]
    async fn a_stalled_or_trickled_body_gets_408_and_the_connection_closes() {
        let (addr, _stop, _server) = start(ServerLimits {
            body_timeout: SHORT,
            ..limits()
        })
        .await;
        let head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled.write_all(head).await.unwrap();
        stalled.write_all(b"0123456789").await.unwrap();
        let answer = until_closed(&mut stalled).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");

        // A byte at a time, each well within the timeout: the body's total wait runs out.
        let trickled = TcpStream::connect(addr).await.unwrap();
        let (mut reader, mut writer) = trickled.into_split();
        writer.write_all(head).await.unwrap();
        let trickle = tokio::spawn(async move {
            while writer.write_all(b"x").await.is_ok() {
                tokio::time::sleep(SHORT / 10).await;
            }
        });
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(NEVER, reader.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        trickle.abort();
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_until_one_closes() {
        let (addr, _stop, _server) = start(ServerLimits {
            max_connections: 1,
            header_timeout: SHORT,
            ..limits()
        })
        .await;
        let mut holder = TcpStream::connect(addr).await.unwrap();
        // The holder's slot frees at the header timeout, which runs from this byte on.
        let held_from = Instant::now();
        holder.write_all(b"GET /ok HTTP/1.1\r\n").await.unwrap();
        let mut waiting = TcpStream::connect(addr).await.unwrap();
        waiting
            .write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = ok_answer(&mut waiting).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            held_from.elapsed() >= SHORT,
            "the second connection was served while the first held the only slot"
        );
        assert_eq!(until_closed(&mut holder).await, "");
    }

    #[tokio::test]
    async fn slow_clients_do_not_hold_the_shutdown() {
        let (addr, stop, server) = start(limits()).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let mut half_head = TcpStream::connect(addr).await.unwrap();
        half_head.write_all(b"GET /ok HTTP/1.1\r\n").await.unwrap();
        let mut half_body = TcpStream::connect(addr).await.unwrap();
        half_body
            .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123")
            .await
            .unwrap();
        // Wait until the server reads the body, so the request is in progress at the stop.
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        ok_answer(&mut kept).await;
        stop.send(()).unwrap();
        tokio::time::timeout(NEVER, server)
            .await
            .expect("the server stopped")
            .unwrap();
        assert_eq!(until_closed(&mut idle).await, "");
        assert_eq!(until_closed(&mut half_head).await, "");
        assert_eq!(until_closed(&mut kept).await, "");
        let answer = until_closed(&mut half_body).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("shutting_down"), "{answer}");
    }
}
