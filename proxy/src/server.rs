//! The proxy's listener: accepts TCP connections and serves HTTP/1.1 on each, with every
//! duration and count a client controls bounded ([`ServerLimits`], `[proxy]` in the config):
//!
//! - a new connection must deliver its first request's headers within
//!   `header_read_timeout_s`, or it is closed (slowloris: a request line and no more);
//! - a kept-alive connection may sit idle, up to the next request's complete headers, for
//!   `keep_alive_timeout_s` (hyper's header-read timer, which restarts once a response is
//!   written);
//! - at most `max_connections` are open; one more is answered `503` with `Retry-After` and
//!   closed, without reading from it; at most `max_in_flight_calls` calls (a stream counts
//!   until its body ends) are served at once, one more gets the same `503` in OpenAI's shape
//!   (both counted in `warden_proxy_refused_overloaded_total`);
//! - on shutdown the listener closes, connections finish the call they are serving, and after
//!   `shutdown_timeout_s` whatever is still open is closed. A call cut off that way still
//!   emits its `response` event (`client_aborted`), from its audit's `Drop`.
//!
//! The request body's deadline (`body_read_timeout_s`) is kept where the body is read
//! ([`crate::call::read_body`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::app::{admin_router, router};
use crate::config::ServerLimits;
use crate::metrics::OverloadedResource;
use crate::state::ProxyState;

/// How long an over-the-cap connection is given to take its 503.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// After an accept error (out of file descriptors, most likely), wait this long before the
/// next accept instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves the proxy's routes until `shutdown` fires, then lets in-flight calls finish
/// (within the shutdown deadline) and returns.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ProxyState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    info!(
        listen = %listener.local_addr()?,
        max_connections = state.settings.server.max_connections,
        max_in_flight_calls = state.settings.server.max_in_flight_calls,
        "proxy listening"
    );
    serve_router(listener, router(state.clone()), state, shutdown).await
}

/// Serves the admin routes (`/metrics`, and the operator's routes to come) on
/// `[proxy].admin_listen`, with the same bounds, until `shutdown` fires.
pub async fn serve_admin(
    listener: TcpListener,
    state: Arc<ProxyState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    info!(listen = %listener.local_addr()?, "admin listening");
    serve_router(listener, admin_router(state.clone()), state, shutdown).await
}

async fn serve_router(
    listener: TcpListener,
    app: Router,
    state: Arc<ProxyState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = state.settings.server;
    let connection_slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    // Cancelled once the shutdown deadline has passed: connections still open close.
    let force_close = CancellationToken::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(slot) = connection_slots.clone().try_acquire_owned() else {
            state
                .metrics()
                .refused_overloaded(OverloadedResource::Connections);
            connections.spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            app: app.clone(),
            peer,
            limits,
            state: state.clone(),
            shutdown: shutdown.clone(),
            force_close: force_close.clone(),
            _slot: slot,
        };
        connections.spawn(connection.serve(stream));
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(limits.shutdown_timeout, connections.wait())
        .await
        .is_err()
    {
        warn!(
            open = connections.len(),
            deadline_s = limits.shutdown_timeout.as_secs_f64(),
            "shutdown deadline passed; closing the connections still open"
        );
        force_close.cancel();
        connections.wait().await;
    }
    Ok(())
}

/// One accepted connection and what it needs to be served.
struct Connection {
    app: Router,
    peer: SocketAddr,
    limits: ServerLimits,
    state: Arc<ProxyState>,
    shutdown: CancellationToken,
    force_close: CancellationToken,
    /// Held for the connection's life: its place under `max_connections`.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(self, stream: TcpStream) {
        let open = self.state.metrics().connections_open().clone();
        open.inc();
        let first_request_seen = Arc::new(AtomicBool::new(false));
        let service = {
            let (app, peer, seen) = (self.app.clone(), self.peer, first_request_seen.clone());
            hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                seen.store(true, Ordering::Relaxed);
                request.extensions_mut().insert(ConnectInfo(peer));
                let app = app.clone();
                async move {
                    let response = app.oneshot(request.map(Body::new)).await;
                    Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
                }
            })
        };
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.keep_alive_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let first_headers_deadline = tokio::time::sleep(self.limits.header_read_timeout);
        tokio::pin!(first_headers_deadline);
        let (mut first_checked, mut draining) = (false, false);
        loop {
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(err) = served {
                        debug!(peer = %self.peer, error = %err, "connection ended with an error");
                    }
                    break;
                }
                () = &mut first_headers_deadline, if !first_checked => {
                    first_checked = true;
                    if !first_request_seen.load(Ordering::Relaxed) {
                        debug!(peer = %self.peer, "no request headers in time; closing");
                        break;
                    }
                }
                () = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = self.force_close.cancelled() => break,
            }
        }
        open.dec();
    }
}

/// Answers a connection over `max_connections` with a 503 and closes it, reading nothing.
async fn refuse(mut stream: TcpStream) {
    let body = crate::error::ProxyError::Overloaded
        .openai_body()
        .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        crate::error::OVERLOADED_RETRY_AFTER_S,
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, write).await;
}
