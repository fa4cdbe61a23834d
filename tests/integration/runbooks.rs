//! The runbooks on a real broker (tansu), against the HF Inference Endpoints API emulator and
//! real proxies: `warden simulate runaway-cost --produce` → `cost_burn` → the runaway-cost
//! runbook. In dry run it changes nothing and the plan is notified; in auto mode the endpoint
//! is pinned and scaled to its floor, the top source is refused with 429 at the proxy, and
//! `warden incident undo` restores both. In approve mode the scaling waits for
//! `warden incident approve` (the limit does not), and engines that stop, crash and restart
//! around it act on nothing twice. A stolen token's alert gets the token refused on every
//! replica within 2 s, its owner told how to rotate, and its later retries join the incident
//! as `revoked_token` alerts.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use chrono::{TimeDelta, Utc};
use serde_json::Value;
use warden_ingest::action::{ActionKind, ControlAction};
use warden_ingest::alert::{Alert, Severity, Subject};
use warden_ingest::incident::{EntryKind, IncidentEntry, StepOutcome};
use warden_ingest::kafka::{AlertPublisher, KafkaCluster, TopicReader};
use warden_ingest::table_record::TableRecord;
use warden_testkit::hf_endpoints::{EmulatedEndpoint, HfEndpointsEmulator};
use warden_testkit::{EmulatorOptions, TgiEmulator};

use support::{
    ArchiveSetup, SHORT_KAFKA_SESSIONS, WardenProcess, archive_setup, chat_call,
    free_listen_address, fresh_client_key, run_warden,
};

const HF_TOKEN: &str = "hf_made_up_management_token_for_tests";
const NAMESPACE: &str = "my-org";
const ENDPOINT: &str = "llama-70b-prod";
const HF_ENV: &[(&str, &str)] = &[("HF_API_TOKEN", HF_TOKEN)];

/// Bodies posted to a webhook.
#[derive(Clone, Default)]
struct Hook(Arc<Mutex<Vec<String>>>);

impl Hook {
    async fn serve(&self) -> String {
        async fn take(State(hook): State<Hook>, body: String) -> &'static str {
            hook.0.lock().expect("lock").push(body);
            "ok"
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let app = axum::Router::new()
            .route("/hook", post(take))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}/hook")
    }

    fn bodies(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }

    /// Waits until a body contains `needle`; returns it.
    async fn until(&self, needle: &str, limit: Duration) -> String {
        let started = Instant::now();
        loop {
            if let Some(body) = self.bodies().into_iter().find(|body| body.contains(needle)) {
                return body;
            }
            assert!(
                started.elapsed() < limit,
                "no notification with {needle:?}: {:?}",
                self.bodies()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn read_all(cluster: &KafkaCluster, topic: &str) -> Vec<Vec<u8>> {
    let reader = TopicReader::from_beginning(cluster, topic)
        .await
        .expect("reader");
    reader
        .read_to_end(Duration::from_secs(10))
        .await
        .expect("read")
        .into_iter()
        .map(|record| record.payload)
        .collect()
}

async fn incident_entries(cluster: &KafkaCluster) -> Vec<IncidentEntry> {
    read_all(cluster, "warden.incidents")
        .await
        .iter()
        .map(|payload| IncidentEntry::decode(payload).expect("an incident entry"))
        .collect()
}

async fn control_actions(cluster: &KafkaCluster) -> Vec<ControlAction> {
    read_all(cluster, "warden.control")
        .await
        .iter()
        .map(|payload| ControlAction::decode(payload).expect("an action"))
        .collect()
}

/// Waits until some entry satisfies `found`; returns every entry then.
async fn until_entry(
    cluster: &KafkaCluster,
    what: &str,
    limit: Duration,
    found: impl Fn(&IncidentEntry) -> bool,
) -> Vec<IncidentEntry> {
    let started = Instant::now();
    loop {
        let entries = incident_entries(cluster).await;
        if entries.iter().any(&found) {
            return entries;
        }
        assert!(
            started.elapsed() < limit,
            "no incident entry {what} after {limit:?}: {entries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn is_step(entry: &IncidentEntry, key: &str, outcome: StepOutcome) -> bool {
    entry.kind == EntryKind::Step
        && entry.step.as_deref() == Some(key)
        && entry.outcome == Some(outcome)
}

/// Calls until one is refused with `code`; returns how long that took.
async fn until_refused(listen: &str, api_key: &str, model: &str, code: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (status, got) = chat_call(listen, api_key, model).await;
        if got.as_deref() == Some(code) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{listen} still answers {status} {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn warden(args: &[&str], setup: &ArchiveSetup, env: &[(&str, &str)]) -> String {
    let (ok, output) = run_warden(args, &setup.config, env);
    assert!(ok, "warden {args:?}: {output}");
    output
}

/// The runaway rig: a TGI emulator behind target `llama-70b` (whose endpoint the HF API
/// emulator serves at 1..4 replicas, 3 running), client `app-batch` (the scenario's runaway),
/// a webhook receiver, and the runaway-cost runbook in `mode`.
struct RunawayRig {
    setup: ArchiveSetup,
    hf: HfEndpointsEmulator,
    _tgi: TgiEmulator,
    hook: Hook,
    listen: String,
    api_key: String,
}

impl RunawayRig {
    async fn start(mode: &str) -> Self {
        let tgi = TgiEmulator::start(EmulatorOptions::default())
            .await
            .expect("tgi emulator");
        let mut endpoint = EmulatedEndpoint::running(NAMESPACE, ENDPOINT, 1, 4);
        endpoint.replicas = 3;
        let hf = HfEndpointsEmulator::start(HF_TOKEN, vec![endpoint], Duration::from_millis(300))
            .await
            .expect("hf api emulator");
        let hook = Hook::default();
        let hook_url = hook.serve().await;
        let (api_key, key_sha256) = fresh_client_key();
        let listen = free_listen_address();
        let setup = archive_setup(
            2,
            &format!(
                r#"
                flush_interval_s = 1
                [proxy]
                listen = "{listen}"
                admin_listen = "{admin}"
                [[proxy.targets]]
                id = "llama-70b"
                kind = "tgi-messages"
                base_url = "{tgi}"
                endpoint = "{NAMESPACE}/{ENDPOINT}"
                min_replicas = 1
                [[proxy.clients]]
                name = "app-batch"
                key_sha256 = "{key_sha256}"
                [hf_api]
                base_url = "{hf}"
                token = "env:HF_API_TOKEN"
                [runbooks]
                settle_timeout_s = 20
                [runbooks.runaway_cost]
                mode = "{mode}"
                emergency_requests_per_minute = 3
                emergency_for = "10m"
                [respond]
                group_wait_s = 1
                group_interval_s = 2
                default_receivers = ["ops"]
                [[respond.receivers]]
                name = "ops"
                kind = "webhook"
                url = "{hook_url}"
                {SHORT_KAFKA_SESSIONS}
                "#,
                admin = free_listen_address(),
                tgi = tgi.base_url(),
                hf = hf.base_url(),
            ),
        )
        .await;
        Self {
            setup,
            hf,
            _tgi: tgi,
            hook,
            listen,
            api_key,
        }
    }

    fn start_role(&self, role: &str) -> WardenProcess {
        WardenProcess::start_with_env(role, &self.setup.config, &[("HF_API_TOKEN", HF_TOKEN)])
    }

    fn scaling(&self) -> (u32, u32) {
        let (min, max, _) = self.hf.endpoint(NAMESPACE, ENDPOINT).expect("endpoint");
        (min, max)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_plans_and_notifies_and_changes_nothing() {
    let rig = RunawayRig::start("dry_run").await;
    warden(
        &["simulate", "runaway-cost", "--produce"],
        &rig.setup,
        HF_ENV,
    );
    let mut archiver = rig.start_role("archive");
    let mut detector = rig.start_role("detect");
    let mut responder = rig.start_role("respond");
    let cluster = &rig.setup.cluster;
    let entries = until_entry(cluster, "planned", Duration::from_secs(120), |entry| {
        is_step(entry, "scale_down/target:llama-70b", StepOutcome::Planned)
    })
    .await;
    let opened = entries
        .iter()
        .find(|entry| entry.kind == EntryKind::Opened)
        .expect("opened");
    assert_eq!(opened.runbook, "runaway_cost");
    assert_eq!(opened.mode.as_deref(), Some("dry_run"));
    let id = opened.incident_id.clone();
    let body = rig.hook.until("dry run", Duration::from_secs(30)).await;
    assert!(body.contains(&id), "{body}");
    assert!(body.contains("would limit client:app-batch"), "{body}");
    assert!(body.contains("would pin my-org/llama-70b-prod"), "{body}");
    // Nothing changed: no call to the endpoints API, no action on the control topic.
    assert!(rig.hf.requests().is_empty(), "{:?}", rig.hf.requests());
    assert_eq!(rig.scaling(), (1, 4));
    let actions = control_actions(cluster).await;
    assert!(
        actions
            .iter()
            .all(|action| !action.actor.starts_with("runbook:")),
        "{actions:?}"
    );
    let listed = warden(&["incident", "list"], &rig.setup, HF_ENV);
    assert!(listed.lines().any(|line| line.starts_with(&id)), "{listed}");
    let shown = warden(&["incident", "show", &id], &rig.setup, HF_ENV);
    assert!(shown.contains("dry run"), "{shown}");
    assert!(shown.contains("[planned]"), "{shown}");
    // The repeats and escalation of the same condition joined it: one incident.
    let opened_count = incident_entries(cluster)
        .await
        .iter()
        .filter(|entry| entry.kind == EntryKind::Opened)
        .count();
    assert_eq!(opened_count, 1, "{}", responder.log());
    // The incident is archived as its own table, and its timeline is one saved query.
    let started = Instant::now();
    loop {
        let (ok, timeline) = run_warden(
            &[
                "sql",
                "--saved",
                "incident-timeline",
                "--param",
                &format!("incident={id}"),
                "--since",
                "1d",
            ],
            &rig.setup.config,
            HF_ENV,
        );
        if ok && timeline.contains("opened") && timeline.contains("planned") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{timeline}\n{}",
            archiver.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // With the embedded broker (nothing to read incidents from) the CLI reads the archive.
    std::fs::create_dir_all(rig.setup.dir.path().join("offline")).expect("dir");
    let offline = support::write_config(
        &rig.setup.dir.path().join("offline"),
        &format!("[archive]\nurl = \"{}\"\n", rig.setup.archive.display()),
    );
    let (ok, listed) = run_warden(&["incident", "list"], &offline, &[]);
    assert!(
        ok && listed.lines().any(|line| line.starts_with(&id)),
        "{listed}"
    );
    let (ok, shown) = run_warden(&["incident", "show", &id], &offline, &[]);
    assert!(ok && shown.contains("dry run"), "{shown}");
    archiver.interrupt().await;
    detector.interrupt().await;
    responder.interrupt().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enabled_runbook_scales_limits_and_undo_restores_both() {
    let rig = RunawayRig::start("auto").await;
    let mut proxy = rig.start_role("proxy");
    proxy.wait_healthy(&rig.listen).await;
    assert_eq!(
        chat_call(&rig.listen, &rig.api_key, "llama-70b").await.0,
        200
    );
    warden(
        &["simulate", "runaway-cost", "--produce"],
        &rig.setup,
        HF_ENV,
    );
    let mut detector = rig.start_role("detect");
    let mut responder = rig.start_role("respond");
    let cluster = &rig.setup.cluster;
    let entries = until_entry(cluster, "limit ok", Duration::from_secs(120), |entry| {
        is_step(
            entry,
            "emergency_rate_limit/client:app-batch",
            StepOutcome::Ok,
        )
    })
    .await;
    let id = entries[0].incident_id.clone();
    // Whichever of the runaway's alerts came first opened it (`burn_rate/global` for the
    // cost burn, `burn_rate/client:app-batch` for a single source): steps by name.
    for step in [
        "burn_rate/",
        "top_sources/",
        "disable_autoscaling/target:llama-70b",
        "scale_down/target:llama-70b",
    ] {
        assert!(
            entries.iter().any(|entry| entry.kind == EntryKind::Step
                && entry.outcome == Some(StepOutcome::Ok)
                && entry
                    .step
                    .as_deref()
                    .is_some_and(|key| key.starts_with(step))),
            "{step}: {entries:#?}\n{}",
            responder.log()
        );
    }
    // Pinned at the 3 running, then scaled to the floor of 1.
    let puts: Vec<Value> = rig
        .hf
        .requests()
        .into_iter()
        .filter(|request| request.method == "PUT")
        .filter_map(|request| request.body)
        .collect();
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert_eq!(puts[0]["compute"]["scaling"]["minReplica"], 3);
    assert_eq!(puts[0]["compute"]["scaling"]["maxReplica"], 3);
    assert_eq!(rig.scaling(), (1, 1));
    // The top source is refused at the proxy.
    let took = until_refused(
        &rig.listen,
        &rig.api_key,
        "llama-70b",
        "emergency_rate_limit",
    )
    .await;
    eprintln!("the top source was refused {took:?} after the limit was recorded");
    let actions = control_actions(cluster).await;
    let by_runbook: Vec<&str> = actions
        .iter()
        .filter(|action| action.actor == "runbook:runaway_cost")
        .map(|action| action.action.as_str())
        .collect();
    assert_eq!(
        by_runbook,
        ["freeze_autoscaling", "scale_down", "emergency_rate_limit"]
    );
    assert!(
        actions
            .iter()
            .filter(|action| action.actor == "runbook:runaway_cost")
            .all(|action| action.incident_id.as_deref() == Some(id.as_str())
                && action.alert_dedup_key.is_some())
    );

    let undone = warden(
        &["incident", "undo", &id, "--by", "alice"],
        &rig.setup,
        HF_ENV,
    );
    assert!(undone.contains("undo finished"), "{undone}");
    assert_eq!(rig.scaling(), (1, 4), "the bounds before the incident");
    let started = Instant::now();
    while chat_call(&rig.listen, &rig.api_key, "llama-70b").await.0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "still limited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kinds: Vec<ActionKind> = control_actions(cluster)
        .await
        .iter()
        .filter(|action| action.incident_id.as_deref() == Some(id.as_str()))
        .map(|action| action.action)
        .collect();
    assert!(kinds.contains(&ActionKind::LiftRateLimit), "{kinds:?}");
    assert!(kinds.contains(&ActionKind::RestoreScaling), "{kinds:?}");
    let shown = warden(&["incident", "show", &id], &rig.setup, HF_ENV);
    assert!(shown.contains("status:   undone"), "{shown}");
    assert!(shown.contains("undo_requested"), "{shown}");
    proxy.interrupt().await;
    detector.interrupt().await;
    responder.interrupt().await;
}

/// How many of each action the runbook took for incident `id`.
async fn runbook_actions(cluster: &KafkaCluster, id: &str) -> Vec<&'static str> {
    control_actions(cluster)
        .await
        .iter()
        .filter(|action| action.incident_id.as_deref() == Some(id))
        .map(|action| action.action.as_str())
        .collect()
}

fn puts(hf: &HfEndpointsEmulator) -> usize {
    hf.requests()
        .iter()
        .filter(|request| request.method == "PUT")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_gates_the_scaling_and_engines_that_stop_or_crash_never_act_twice() {
    let rig = RunawayRig::start("approve").await;
    warden(
        &["simulate", "runaway-cost", "--produce"],
        &rig.setup,
        HF_ENV,
    );
    let mut detector = rig.start_role("detect");
    let mut first = rig.start_role("respond");
    let mut second = rig.start_role("respond");
    let cluster = &rig.setup.cluster;
    let entries = until_entry(
        cluster,
        "awaiting approval",
        Duration::from_secs(120),
        |entry| {
            is_step(
                entry,
                "scale_down/target:llama-70b",
                StepOutcome::AwaitingApproval,
            )
        },
    )
    .await;
    let id = entries[0].incident_id.clone();
    // The emergency limit needs no approval; the endpoint is not touched before it.
    until_entry(cluster, "limit ok", Duration::from_secs(30), |entry| {
        is_step(
            entry,
            "emergency_rate_limit/client:app-batch",
            StepOutcome::Ok,
        )
    })
    .await;
    assert_eq!(puts(&rig.hf), 0, "{:?}", rig.hf.requests());
    let body = rig
        .hook
        .until("waits for approval", Duration::from_secs(30))
        .await;
    assert!(
        body.contains(&format!("warden incident approve {id}")),
        "{body}"
    );

    let approved = warden(
        &["incident", "approve", &id, "--by", "alice"],
        &rig.setup,
        HF_ENV,
    );
    assert!(approved.contains("pinned at 1 replica"), "{approved}");
    assert_eq!(rig.scaling(), (1, 1));
    assert_eq!(puts(&rig.hf), 2);
    let refused = run_warden(
        &["incident", "approve", &id, "--by", "bob"],
        &rig.setup.config,
        HF_ENV,
    );
    assert!(
        !refused.0 && refused.1.contains("approved already"),
        "{}",
        refused.1
    );

    // The engines hand over: one stops (whichever acted, the other goes on or takes over),
    // then the other is SIGKILLed and a fresh one starts; it reads the incident and carries
    // out the undo from the recorded scaling, acting on nothing twice.
    first.interrupt().await;
    second.kill();
    let mut third = rig.start_role("respond");
    let undone = warden(
        &["incident", "undo", &id, "--by", "alice"],
        &rig.setup,
        HF_ENV,
    );
    assert!(
        undone.contains("undo finished"),
        "{undone}\n{}",
        third.log()
    );
    assert_eq!(rig.scaling(), (1, 4));
    assert_eq!(puts(&rig.hf), 3, "{:?}", rig.hf.requests());
    let mut actions = runbook_actions(cluster, &id).await;
    actions.sort_unstable();
    assert_eq!(
        actions,
        [
            "emergency_rate_limit",
            "freeze_autoscaling",
            "lift_rate_limit",
            "restore_scaling",
            "scale_down"
        ]
    );
    let opened = incident_entries(cluster)
        .await
        .iter()
        .filter(|entry| entry.kind == EntryKind::Opened)
        .count();
    assert_eq!(opened, 1);
    let shown = warden(&["incident", "show", &id], &rig.setup, HF_ENV);
    assert!(shown.contains("approved by: operator:alice"), "{shown}");
    detector.interrupt().await;
    third.interrupt().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stolen_token_is_refused_everywhere_within_two_seconds_and_its_retries_join_the_incident()
{
    let tgi = TgiEmulator::start(EmulatorOptions::default())
        .await
        .expect("tgi emulator");
    let hook = Hook::default();
    let hook_url = hook.serve().await;
    let (api_key, key_sha256) = fresh_client_key();
    let listens = [free_listen_address(), free_listen_address()];
    let admins = [free_listen_address(), free_listen_address()];
    let fingerprint_key = format!("fp-{}", uuid::Uuid::new_v4().simple());
    let proxy_section = |listen: &str, admin: &str, dir: &str| {
        format!(
            r#"
            [proxy]
            listen = "{listen}"
            admin_listen = "{admin}"
            fingerprint_key = "env:WARDEN_FINGERPRINT_KEY"
            control_state_file = "{dir}/control-state.json"
            [[proxy.targets]]
            id = "llama"
            kind = "tgi-messages"
            base_url = "{tgi}"
            [[proxy.clients]]
            name = "app-web"
            key_sha256 = "{key_sha256}"
            owner_receiver = "web-team"
            "#,
            tgi = tgi.base_url(),
        )
    };
    let rest = format!(
        r#"
        [runbooks.token_compromise]
        mode = "auto"
        [respond]
        group_wait_s = 1
        [[respond.receivers]]
        name = "web-team"
        kind = "webhook"
        url = "{hook_url}"
        "#
    );
    let setup = archive_setup(
        2,
        &format!(
            "flush_interval_s = 1\n{}\n{rest}",
            proxy_section(&listens[0], &admins[0], "a")
        ),
    )
    .await;
    // The second replica: the same broker and keys, its own listener and state.
    let second = setup.dir.path().join("b");
    std::fs::create_dir_all(&second).expect("dir");
    let first_config = std::fs::read_to_string(&setup.config).expect("config");
    let second_config = support::write_config(
        &second,
        &first_config
            .replace(&listens[0], &listens[1])
            .replace(&admins[0], &admins[1])
            .replace("\"a/control-state.json\"", "\"b/control-state.json\""),
    );
    let env = [("WARDEN_FINGERPRINT_KEY", fingerprint_key.as_str())];
    let mut replicas = vec![
        WardenProcess::start_with_env("proxy", &setup.config, &env),
        WardenProcess::start_with_env("proxy", &second_config, &env),
    ];
    for (replica, listen) in replicas.iter_mut().zip(&listens) {
        replica.wait_healthy(listen).await;
        assert_eq!(chat_call(listen, &api_key, "llama").await.0, 200);
    }
    let mut archiver = WardenProcess::start_with_env("archive", &setup.config, &env);
    let mut detector = WardenProcess::start_with_env("detect", &setup.config, &env);
    let mut responder = WardenProcess::start_with_env("respond", &setup.config, &env);
    // The token's id, as the proxies record it; and the archive has its calls (the runbook
    // finds the client, and its owner, there).
    let token_id = {
        let started = Instant::now();
        loop {
            let (ok, output) = run_warden(
                &[
                    "sql",
                    "--format",
                    "csv",
                    "SELECT DISTINCT client.token_id AS token FROM events WHERE client.name = 'app-web'",
                ],
                &setup.config,
                &env,
            );
            if let Some(token) = output
                .lines()
                .find(|line| line.starts_with("tok_"))
                .filter(|_| ok)
            {
                break token.trim().to_owned();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "not archived: {output}\n{}",
                archiver.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    // Give the responder's engine its partition before the alert (it reads from the last
    // committed offset, so an alert published before would be taken anyway; this keeps the
    // measured 2 s about the runbook, not the group's first join).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = Utc::now();
    let mut alert = Alert::firing(
        "geo_new_country",
        Severity::Critical,
        Subject::Token(token_id.clone()),
        (now - TimeDelta::minutes(5), now),
    );
    alert.summary = format!("token {token_id} used from KP for the first time");
    alert.runbook = Some("token_compromise".to_owned());
    let alert = alert.with_derived_id();
    AlertPublisher::new(&setup.cluster)
        .expect("publisher")
        .publish(&alert)
        .await
        .expect("published");
    let published = Instant::now();
    for listen in &listens {
        let took = until_refused(listen, &api_key, "llama", "revoked_api_key").await;
        let since_alert = published.elapsed();
        eprintln!("{listen}: refused {since_alert:?} after the alert ({took:?} of calls)");
        assert!(
            since_alert <= Duration::from_secs(2),
            "{listen} took {since_alert:?}: {}",
            responder.log()
        );
    }
    // The owner is told how to rotate.
    let told = hook
        .until("warden keys new app-web", Duration::from_secs(30))
        .await;
    assert!(!told.contains(&api_key), "never the key itself");
    // The retries above, with the revoked key, raise revoked_token, which joins the incident.
    let entries = until_entry(
        &setup.cluster,
        "revoked_token joined",
        Duration::from_secs(90),
        |entry| {
            entry.kind == EntryKind::Alert
                && entry
                    .alert_dedup_key
                    .as_deref()
                    .is_some_and(|key| key.starts_with("revoked_token/"))
        },
    )
    .await;
    let id = entries[0].incident_id.clone();
    for step in ["revoke", "access_report", "notify_owner", "watch_retries"] {
        let key = format!("{step}/token:{token_id}");
        assert!(
            entries
                .iter()
                .any(|entry| is_step(entry, &key, StepOutcome::Ok)),
            "{key}: {entries:#?}"
        );
    }
    let opened_count = entries
        .iter()
        .filter(|entry| entry.kind == EntryKind::Opened)
        .count();
    assert_eq!(opened_count, 1, "the retries open no second incident");
    let shown = warden(&["incident", "show", &id], &setup, &env);
    assert!(shown.contains("revoked_token"), "{shown}");
    assert!(shown.contains("token-activity"), "{shown}");
    for replica in &mut replicas {
        replica.interrupt().await;
    }
    archiver.interrupt().await;
    detector.interrupt().await;
    responder.interrupt().await;
}
