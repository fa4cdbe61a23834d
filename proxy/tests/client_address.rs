//! Callers' addresses and countries on their events: `X-Forwarded-For` is believed only from
//! `[proxy].trusted_proxies`, and the country comes from the GeoIP database (a real MaxMind DB
//! file, read by the same reader as GeoLite2's).

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use serde_json::json;
use tower::ServiceExt;
use warden_ingest::{EventKind, OnSpoolFull, event_channel};
use warden_proxy::{ProxyConfig, ProxyState, router};
use warden_testkit::trail::drain;
use warden_testkit::{EmulatorOptions, TgiEmulator};

#[tokio::test]
async fn forwarded_addresses_are_believed_from_trusted_proxies_and_located() {
    let emulator = TgiEmulator::start(EmulatorOptions::default())
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().expect("dir");
    let database = dir.path().join("countries.mmdb");
    std::fs::write(
        &database,
        warden_testkit::mmdb::country_database(&[
            ("203.0.113.0/24", "KP"),
            ("198.51.100.0/24", "DE"),
        ]),
    )
    .expect("database");
    let config: ProxyConfig = toml::from_str(&format!(
        r#"
        listen = "127.0.0.1:0"
        trusted_proxies = ["10.0.0.0/8"]
        geoip_database = "{}"
        [[targets]]
        id = "llama"
        kind = "tgi-messages"
        base_url = "{}"
        "#,
        database.display(),
        emulator.base_url()
    ))
    .expect("config");
    let settings = config.validate(&HashMap::new()).expect("valid");
    let (emitter, mut events) = event_channel(64, OnSpoolFull::Block);
    let app = router(ProxyState::new(settings, emitter).expect("state"));

    let call = |peer: &str, forwarded_for: &str| {
        let mut request = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("x-forwarded-for", forwarded_for)
            .body(Body::from(
                json!({"model": "llama", "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            ))
            .expect("request");
        let peer: SocketAddr = peer.parse().expect("peer");
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request)
    };
    // Through the load balancer at 10.0.0.2: the forwarded address is the caller's.
    call("10.0.0.2:40000", "203.0.113.7")
        .await
        .expect("response");
    // Straight from the internet, claiming to be someone else: the claim is ignored.
    call("198.51.100.4:40000", "203.0.113.8")
        .await
        .expect("response");

    let requests: Vec<_> = drain(&mut events)
        .into_iter()
        .filter(|event| event.kind == EventKind::Request)
        .map(|event| (event.client.ip, event.client.country))
        .collect();
    assert_eq!(
        requests,
        [
            (Some("203.0.113.7".to_owned()), Some("KP".to_owned())),
            (Some("198.51.100.4".to_owned()), Some("DE".to_owned())),
        ]
    );
}
