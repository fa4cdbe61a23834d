//! What the chain's benchmark (`cargo bench -p warden-proxy --bench chain`) drives: one
//! call's admission — `auth`, then the rest of the configured chain — on a proxy built from
//! a config, without HTTP or an upstream. Not an API.

use std::sync::Arc;

use axum::http::HeaderMap;
use serde_json::{Map, Value};
use warden_ingest::{EventReceiver, OnSpoolFull, event_channel};

use crate::audit::CallAudit;
use crate::client_address::ClientAddress;
use crate::config::ProxySettings;
use crate::policy::Requested;
use crate::policy::limits::TokenEstimate;
use crate::state::ProxyState;

/// A proxy and one call's request, admitted again and again.
#[derive(Debug)]
pub struct ChainBench {
    state: Arc<ProxyState>,
    events: std::sync::Mutex<EventReceiver>,
    headers: HeaderMap,
    key: String,
    request: Map<String, Value>,
}

impl ChainBench {
    /// A proxy from `settings`, and a chat call naming `model` with client key `key`.
    pub fn new(settings: ProxySettings, key: &str, model: &str) -> Self {
        let (emitter, events) = event_channel(1 << 20, OnSpoolFull::Drop);
        let state = ProxyState::new(settings, emitter).expect("proxy state");
        let request = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "Say hello to the benchmark"}],
            "max_tokens": 16,
        });
        Self {
            state,
            events: std::sync::Mutex::new(events),
            headers: HeaderMap::new(),
            key: key.to_owned(),
            request: request.as_object().cloned().unwrap_or_default(),
        }
    }

    /// A fresh call (as a handler starts one), for [`admit`](Self::admit).
    pub fn call(&self) -> BenchCall {
        BenchCall(CallAudit::start(
            self.state.emitter().clone(),
            self.state.shared_metrics(),
            "bench",
            None,
            "/v1/chat/completions",
            ClientAddress {
                ip: Some(std::net::Ipv4Addr::new(203, 0, 113, 7).into()),
                country: None,
            },
            &self.headers,
        ))
    }

    /// The chain on `call`: `auth`, then every other member; true when admitted.
    pub fn admit(&self, call: &mut BenchCall) -> bool {
        let call = &mut call.0;
        let Ok(caller) = self.state.policies.authenticate(call, Some(&self.key)) else {
            return false;
        };
        let model = self
            .request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let estimate = TokenEstimate::of_request(&self.request, true);
        let requested = Requested::Model {
            model,
            headers: &self.headers,
        };
        self.state
            .admit(call, &caller, requested, &estimate, None)
            .is_ok()
    }

    /// Drops the events the calls emitted (so the queue never fills and sheds).
    pub fn drain(&self) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        while events.try_recv().is_some() {}
    }
}

/// One call, as the chain sees it.
#[derive(Debug)]
pub struct BenchCall(CallAudit);
