//! The server's bounds, over real TCP against `warden_proxy::serve`: slow and half-open
//! clients, connection and in-flight caps, body deadlines, and the shutdown deadline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warden_ingest::{AuditEvent, EventReceiver, OnSpoolFull, event_channel};
use warden_proxy::{ProxyConfig, ProxyState, serve, serve_admin};
use warden_testkit::trail::drain;
use warden_testkit::{EmulatorOptions, TgiEmulator};

struct Server {
    address: SocketAddr,
    admin_address: SocketAddr,
    events: EventReceiver,
    shutdown: CancellationToken,
    served: JoinHandle<std::io::Result<()>>,
    _emulator: Option<TgiEmulator>,
}

/// `limits` is TOML for `[proxy]` keys; open mode, one `tgi-messages` target `llama`.
async fn start(limits: &str, emulator: EmulatorOptions) -> Server {
    let emulator = TgiEmulator::start(emulator).await.expect("emulator");
    let mut server = start_against(&emulator.base_url(), limits, "").await;
    server._emulator = Some(emulator);
    server
}

/// [`start`] against any upstream, with extra TOML for the target.
async fn start_against(base_url: &str, limits: &str, target: &str) -> Server {
    let config: ProxyConfig = toml::from_str(&format!(
        r#"
        listen = "127.0.0.1:0"
        {limits}
        [[targets]]
        id = "llama"
        kind = "tgi-messages"
        base_url = "{base_url}"
        {target}
        "#
    ))
    .expect("config");
    let settings = config.validate(&HashMap::new()).expect("valid");
    let (emitter, events) = event_channel(16_384, OnSpoolFull::Block);
    let state = ProxyState::new(settings, emitter).expect("state");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let shutdown = CancellationToken::new();
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin_address = admin_listener.local_addr().expect("address");
    tokio::spawn(serve_admin(admin_listener, state.clone(), shutdown.clone()));
    let served = tokio::spawn(serve(listener, state, shutdown.clone()));
    Server {
        address,
        admin_address,
        events,
        shutdown,
        served,
        _emulator: None,
    }
}

fn chat(stream: bool) -> Value {
    json!({"model": "llama", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// Whether the server closed `socket` (EOF or reset) within `within`.
async fn closed_within(socket: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 or similar before the close is fine; keep reading to the close.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_neither_delay_calls_nor_stay_open() {
    let server = start("header_read_timeout_s = 2.0", EmulatorOptions::default()).await;
    let mut half_open = Vec::new();
    for _ in 0..1_000 {
        let mut socket = TcpStream::connect(server.address).await.expect("connect");
        socket
            .write_all(b"POST /v1/chat/completions HTTP/1.1\r\n")
            .await
            .expect("request line");
        half_open.push(socket);
    }
    let started = Instant::now();
    let response = client()
        .post(format!("http://{}/v1/chat/completions", server.address))
        .json(&chat(false))
        .send()
        .await
        .expect("a normal call");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert!(body["choices"][0]["message"]["content"].is_string());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a normal call took {:?} beside 1,000 half-open connections",
        started.elapsed()
    );

    // Every half-open connection is closed once the header timeout has passed.
    let mut num_closed = 0;
    for socket in &mut half_open {
        if closed_within(socket, Duration::from_secs(4)).await {
            num_closed += 1;
        }
    }
    assert_eq!(
        num_closed,
        half_open.len(),
        "half-open connections still open"
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let server = start("keep_alive_timeout_s = 0.5", EmulatorOptions::default()).await;
    let mut socket = TcpStream::connect(server.address).await.expect("connect");
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("request");
    let mut buffer = [0u8; 512];
    let read = socket.read(&mut buffer).await.expect("response");
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut socket, Duration::from_secs(3)).await,
        "idle connection kept open"
    );
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_a_408() {
    let mut server = start("body_read_timeout_s = 0.5", EmulatorOptions::default()).await;
    let mut socket = TcpStream::connect(server.address).await.expect("connect");
    socket
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"model\":",
        )
        .await
        .expect("partial request");
    let mut response = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&response).contains("}}") {
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buffer))
            .await
            .expect("an answer before the test's own deadline")
            .expect("read");
        assert!(read > 0, "closed without an answer");
        response.extend_from_slice(&buffer[..read]);
    }
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("\"body_read_timeout\""), "{response}");
    let events = drain(&mut server.events);
    assert!(
        events
            .iter()
            .filter_map(|event| event.response.as_ref())
            .any(|r| r.error_type.as_deref() == Some("body_read_timeout")),
        "the refused call is audited"
    );
}

#[tokio::test]
async fn connections_over_the_cap_get_a_503_with_retry_after() {
    let server = start("max_connections = 2", EmulatorOptions::default()).await;
    let _held: Vec<TcpStream> = vec![
        TcpStream::connect(server.address).await.expect("first"),
        TcpStream::connect(server.address).await.expect("second"),
    ];
    // Let the server accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(server.address).await.expect("third");
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(3), third.read_to_string(&mut response))
        .await
        .expect("answered in time")
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("retry-after: 1"), "{response}");
    assert!(response.contains("\"code\":\"overloaded\""), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_the_in_flight_cap_get_a_503_until_a_stream_ends() {
    let server = start(
        "max_in_flight_calls = 1",
        EmulatorOptions {
            token_delay: Duration::from_millis(50),
            ..EmulatorOptions::default()
        },
    )
    .await;
    let url = format!("http://{}/v1/chat/completions", server.address);
    let stream = client()
        .post(&url)
        .json(&chat(true))
        .send()
        .await
        .expect("stream starts");
    assert_eq!(stream.status(), 200);
    let refused = client()
        .post(&url)
        .json(&chat(false))
        .send()
        .await
        .expect("answered");
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "overloaded");
    // The stream held its place until its end; then calls pass again.
    let streamed = stream.text().await.expect("stream body");
    assert!(streamed.contains("[DONE]"));
    let metrics = client()
        .get(format!("http://{}/metrics", server.admin_address))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("warden_proxy_refused_overloaded_total{resource=\"calls\"} 1"),
        "{metrics}"
    );
    let passed = client()
        .post(&url)
        .json(&chat(false))
        .send()
        .await
        .expect("answered");
    assert_eq!(passed.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_what_is_still_open_after_its_deadline_and_audits_it() {
    let mut server = start(
        "shutdown_timeout_s = 0.5",
        EmulatorOptions {
            token_delay: Duration::from_secs(1),
            ..EmulatorOptions::default()
        },
    )
    .await;
    let stream = client()
        .post(format!("http://{}/v1/chat/completions", server.address))
        .json(&chat(true))
        .send()
        .await
        .expect("stream starts");
    assert_eq!(stream.status(), 200);
    let started = Instant::now();
    server.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), &mut server.served)
        .await
        .expect("serve returns after its shutdown deadline")
        .expect("task")
        .expect("serve");
    let stopped_after = started.elapsed();
    assert!(
        stopped_after >= Duration::from_millis(450) && stopped_after < Duration::from_secs(3),
        "stopped after {stopped_after:?}"
    );
    let events: Vec<AuditEvent> = drain(&mut server.events);
    let response = events
        .iter()
        .filter_map(|event| event.response.as_ref())
        .next_back()
        .expect("the cut-off stream's response event");
    assert_eq!(response.error_type.as_deref(), Some("client_aborted"));
    drop(stream);
}

/// An upstream that answers one stream with `body` after SSE headers, then closes.
async fn raw_stream_upstream(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn an_upstream_event_past_the_bound_fails_the_stream_with_its_own_error_type() {
    let mut flood = b"data: ".to_vec();
    flood.extend(std::iter::repeat_n(b'x', 64 * 1024));
    let upstream = raw_stream_upstream(flood).await;
    let mut server = start_against(&upstream, "", "max_stream_event_bytes = 4096").await;
    let body = client()
        .post(format!("http://{}/v1/chat/completions", server.address))
        .json(&chat(true))
        .send()
        .await
        .expect("answered")
        .text()
        .await
        .expect("body");
    assert!(body.contains("larger than 4096 bytes"), "{body}");
    let events = drain(&mut server.events);
    let response = events
        .iter()
        .find_map(|event| event.response.as_ref())
        .expect("a response event");
    assert_eq!(
        response.error_type.as_deref(),
        Some("upstream_event_too_large")
    );
}
