//! A hostile upstream against the real `warden proxy` process: 300 MB without a newline,
//! streamed and not, leave the proxy's peak memory small, and the client gets an error in
//! OpenAI's shape (an error chunk for a stream) rather than a hang or a crash.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::support::{WardenProcess, free_listen_address, http_client, write_config};

/// What the hostile upstream sends after its headers: 300 MB of one byte, no line end.
const FLOOD_BYTES: usize = 300 * 1024 * 1024;

/// Peak resident memory allowed for the proxy through the flood.
const MAX_PEAK_RSS_BYTES: u64 = 150 * 1024 * 1024;

/// Answers every connection with `content_type` headers and then the flood, until the peer
/// stops reading.
async fn flooding_upstream(content_type: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\ndata: "
                );
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let block = vec![b'x'; 1024 * 1024];
                for _ in 0..FLOOD_BYTES / block.len() {
                    if socket.write_all(&block).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{address}")
}

/// `VmHWM` (peak resident set) of a process, in bytes.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_300_mb_answer_without_a_newline_leaves_the_proxy_small() {
    let stream_upstream = flooding_upstream("text/event-stream").await;
    let json_upstream = flooding_upstream("application/json").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = free_listen_address();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
            [proxy]
            listen = "{listen}"
            admin_listen = "127.0.0.1:0"
            [[proxy.targets]]
            id = "streams"
            kind = "tgi-messages"
            base_url = "{stream_upstream}"
            [[proxy.targets]]
            id = "answers"
            kind = "tgi-messages"
            base_url = "{json_upstream}"
            "#
        ),
    );
    let mut warden = WardenProcess::start("proxy", &config);
    warden.wait_healthy(&listen).await;
    let client = http_client();
    let url = format!("http://{listen}/v1/chat/completions");

    let streamed = client
        .post(&url)
        .json(&json!({"model": "streams", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("stream answered");
    assert_eq!(streamed.status(), 200);
    let body = streamed.text().await.expect("stream body");
    let error: Value = body
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .and_then(|data| serde_json::from_str(data).ok())
        .expect("an error chunk");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("larger than")),
        "{error}"
    );

    let complete = client
        .post(&url)
        .json(&json!({"model": "answers", "messages": [{"role": "user", "content": "hi"}]}))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("answered");
    assert_eq!(complete.status(), 502);
    let error: Value = complete.json().await.expect("OpenAI error JSON");
    assert_eq!(error["error"]["code"], "upstream_response_too_large");

    let peak = peak_rss_bytes(warden.pid());
    assert!(
        peak < MAX_PEAK_RSS_BYTES,
        "peak RSS {} MB through a 300 MB flood",
        peak / (1024 * 1024)
    );
    warden.interrupt().await;
}
