//! `warden respond` on a real broker (tansu), delivering to HTTP receivers that answer as
//! Slack and an Alertmanager webhook bridge do: alerts of one group make one notification
//! after `group_wait`, Slack's 429 is waited out per its `Retry-After`, a SIGKILLed and
//! restarted responder repeats nothing, a resolve reaches the receivers that want it, and
//! every delivery is an audit record on `warden.notifications`; a silence made with
//! `warden silence add` holds an alert back (recorded) until `warden silence expire`. Email
//! (aiosmtpd with STARTTLS and AUTH), syslog (Debian's rsyslog over UDP and TCP; a TLS
//! server over RFC 5425), Splunk HEC (busy, then acknowledged late) and OCSF files each get
//! what their services document.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{TimeDelta, Utc};
use serde_json::Value;
use warden_ingest::alert::{Alert, AlertStatus, Severity, Subject};
use warden_ingest::kafka::{AlertPublisher, TopicReader};
use warden_ingest::notification::{NotificationOutcome, NotificationRecord};
use warden_ingest::table_record::TableRecord;

use support::{SHORT_KAFKA_SESSIONS, WardenProcess, archive_setup, run_warden};

/// Serves `app` on a free loopback port; returns its address.
async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// Every record on `warden.notifications` now.
async fn notification_records(
    cluster: &warden_ingest::kafka::KafkaCluster,
) -> Vec<NotificationRecord> {
    let reader = TopicReader::from_beginning(cluster, "warden.notifications")
        .await
        .expect("reader");
    reader
        .read_to_end(Duration::from_secs(10))
        .await
        .expect("read")
        .iter()
        .map(|record| NotificationRecord::decode(&record.payload).expect("decodes"))
        .collect()
}

/// One request a fake service received.
struct Request {
    path: String,
    idempotency_key: Option<String>,
    body: Value,
}

/// What the fake services received.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Request>>>);

impl Received {
    fn at(&self, path: &str) -> Vec<Value> {
        let all = self.0.lock().expect("lock");
        all.iter()
            .filter(|request| request.path == path)
            .map(|request| request.body.clone())
            .collect()
    }

    fn idempotency_keys(&self, path: &str) -> Vec<Option<String>> {
        let all = self.0.lock().expect("lock");
        all.iter()
            .filter(|request| request.path == path)
            .map(|request| request.idempotency_key.clone())
            .collect()
    }

    async fn until(&self, path: &str, count: usize, limit: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let got = self.at(path);
            if got.len() >= count {
                return got;
            }
            assert!(
                started.elapsed() < limit,
                "{path}: {} of {count} requests after {limit:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn record(received: &Received, path: &str, headers: &HeaderMap, body: &str) -> usize {
    let idempotency = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    let mut all = received.0.lock().expect("lock");
    all.push(Request {
        path: path.to_owned(),
        idempotency_key: idempotency,
        body,
    });
    all.iter().filter(|request| request.path == path).count()
}

/// Slack's incoming webhook: the first message is rate-limited (429, Retry-After: 1).
async fn slack(
    State(received): State<Received>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, HeaderMap, &'static str) {
    let seen = record(&received, "/slack", &headers, &body).await;
    let mut answer = HeaderMap::new();
    if seen == 1 {
        answer.insert("retry-after", "1".parse().expect("header"));
        return (StatusCode::TOO_MANY_REQUESTS, answer, "rate_limited");
    }
    (StatusCode::OK, answer, "ok")
}

async fn hook(State(received): State<Received>, headers: HeaderMap, body: String) -> StatusCode {
    record(&received, "/hook", &headers, &body).await;
    StatusCode::OK
}

fn alert(suffix: &str) -> Alert {
    let end = Utc::now();
    let mut alert = Alert::firing(
        "cost_burn",
        Severity::Critical,
        Subject::Client("app-prod".into()),
        (end - TimeDelta::hours(1), end),
    );
    alert.dedup_key = format!("{}/{suffix}", alert.dedup_key);
    alert.observed = 412.5;
    alert.threshold = 50.0;
    alert.unit = "usd_per_hour".into();
    alert.summary = format!("hourly burn {suffix} over budget");
    alert.runbook = Some("runaway_cost".into());
    alert.with_derived_id()
}

/// The fake services on loopback, and a tansu broker with a responder config for them.
struct Fixture {
    received: Received,
    setup: support::ArchiveSetup,
    slack_url: String,
}

impl Fixture {
    async fn start() -> Self {
        let received = Received::default();
        let address = serve(
            axum::Router::new()
                .route("/slack", post(slack))
                .route("/hook", post(hook))
                .with_state(received.clone()),
        )
        .await;
        let setup = archive_setup(
            1,
            &format!(
                r#"
                # The responder alone: no runbook announcements among the notifications counted.
                [runbooks]
                enabled = false
                [respond]
                group_wait_s = 1
                group_interval_s = 2
                repeat_interval_s = 3600
                default_receivers = ["bridge"]
                [[respond.receivers]]
                name = "sec-slack"
                kind = "slack"
                url = "env:SLACK_WEBHOOK_URL"
                [[respond.receivers]]
                name = "bridge"
                kind = "webhook"
                url = "http://{address}/hook"
                [[respond.routes]]
                match = {{ severity = "critical" }}
                receivers = ["sec-slack", "bridge"]
                group_by = ["detector", "subject"]
                {SHORT_KAFKA_SESSIONS}
                "#
            ),
        )
        .await;
        Self {
            received,
            setup,
            slack_url: format!("http://{address}/slack"),
        }
    }

    fn responder(&self) -> WardenProcess {
        let env = [("SLACK_WEBHOOK_URL", self.slack_url.as_str())];
        WardenProcess::start_with_env("respond", &self.setup.config, &env)
    }

    async fn notifications(&self) -> Vec<NotificationRecord> {
        notification_records(&self.setup.cluster).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_reach_slack_and_a_webhook_once_across_a_crash_and_resolves_follow() {
    let fixture = Fixture::start().await;
    let (received, setup) = (&fixture.received, &fixture.setup);
    let mut responder = fixture.responder();

    let publisher = AlertPublisher::new(&setup.cluster).expect("publisher");
    let (actual, projected) = (alert("actual"), alert("projected"));
    publisher.publish(&actual).await.expect("published");
    publisher.publish(&projected).await.expect("published");

    let limit = Duration::from_secs(30);
    let hook = received.until("/hook", 1, limit).await;
    assert_eq!(hook[0]["version"], "4", "{}", responder.log());
    assert_eq!(hook[0]["status"], "firing");
    assert_eq!(
        hook[0]["alerts"].as_array().map(Vec::len),
        Some(2),
        "one notification, the whole group"
    );
    assert_eq!(hook[0]["commonLabels"]["detector"], "cost_burn");
    assert!(
        received.idempotency_keys("/hook")[0].is_some(),
        "webhooks carry an idempotency key"
    );
    let slack = received.until("/slack", 2, limit).await;
    assert_eq!(
        slack[0], slack[1],
        "the rate-limited message is sent again as it was"
    );
    let text = slack[1].to_string();
    assert!(
        text.contains("[FIRING:2] cost_burn client:app-prod (critical)"),
        "{text}"
    );
    assert!(text.contains("warden sql"), "{text}");

    // Nothing changes: no more notifications over a few group intervals, nor after a crash
    // and a restart (the notification log is kept on the broker).
    tokio::time::sleep(Duration::from_secs(5)).await;
    responder.kill();
    let mut responder = fixture.responder();
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(received.at("/hook").len(), 1, "{}", responder.log());
    assert_eq!(received.at("/slack").len(), 2, "{}", responder.log());

    // A resolve: the webhook (send_resolved by default) hears of it, Slack (false by
    // default, as in Alertmanager) does not.
    let mut resolved = actual.clone();
    resolved.status = AlertStatus::Resolved;
    resolved.ts = Utc::now();
    publisher
        .publish(&resolved.with_derived_id())
        .await
        .expect("published");
    let hook = received.until("/hook", 2, limit).await;
    assert_eq!(
        hook[1]["notification_reason"],
        "resolved",
        "{}",
        responder.log()
    );
    let statuses: Vec<&str> = hook[1]["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|alert| alert["status"].as_str())
        .collect();
    assert_eq!(statuses, ["firing", "resolved"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(received.at("/slack").len(), 2);

    // Every delivery is an audit record.
    let records = fixture.notifications().await;
    let delivered = |receiver: &str| {
        records
            .iter()
            .filter(|r| r.receiver == receiver && r.outcome == NotificationOutcome::Delivered)
            .count()
    };
    assert_eq!(delivered("bridge"), 2, "{records:#?}");
    assert_eq!(delivered("sec-slack"), 1, "{records:#?}");
    let slack_record = records
        .iter()
        .find(|r| r.receiver == "sec-slack")
        .expect("slack");
    assert_eq!(slack_record.attempts, 2, "the 429 and the retry");
    assert!(
        !format!("{records:?}").contains("/slack"),
        "the webhook URL is a secret"
    );
    responder.interrupt().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silence_holds_an_alert_back_until_it_is_expired() {
    let fixture = Fixture::start().await;
    let mut responder = fixture.responder();
    let config = &fixture.setup.config;
    // Every subcommand validates the whole config, the receivers' secrets included.
    let env = [("SLACK_WEBHOOK_URL", fixture.slack_url.as_str())];
    let (added, output) = run_warden(
        &[
            "silence",
            "add",
            "--match",
            "detector=traffic_spike",
            "--match",
            "subject=client:batch",
            "--for",
            "2h",
            "--comment",
            "nightly backfill",
            "--by",
            "alice",
        ],
        config,
        &env,
    );
    assert!(added, "{output}");
    let id = output
        .split_whitespace()
        .nth(1)
        .expect("the silence's id")
        .to_owned();
    let (_, listed) = run_warden(&["silence", "list"], config, &env);
    assert!(
        listed.contains(&id) && listed.contains("nightly backfill"),
        "{listed}"
    );

    let end = Utc::now();
    let spike = Alert::firing(
        "traffic_spike",
        Severity::Warning,
        Subject::Client("batch".into()),
        (end - TimeDelta::minutes(5), end),
    )
    .with_derived_id();
    let publisher = AlertPublisher::new(&fixture.setup.cluster).expect("publisher");
    publisher.publish(&spike).await.expect("published");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        fixture.received.at("/hook").is_empty(),
        "{}",
        responder.log()
    );
    let records = fixture.notifications().await;
    let silenced: Vec<_> = records
        .iter()
        .filter(|r| r.outcome == NotificationOutcome::Silenced)
        .collect();
    assert_eq!(silenced.len(), 1, "recorded once: {records:#?}");
    assert_eq!(silenced[0].held_by.as_deref(), Some(id.as_str()));

    let (expired, output) = run_warden(&["silence", "expire", &id], config, &env);
    assert!(expired, "{output}");
    let hook = fixture
        .received
        .until("/hook", 1, Duration::from_secs(20))
        .await;
    assert_eq!(hook[0]["alerts"][0]["labels"]["subject"], "client:batch");
    responder.interrupt().await;
}

/// A server of `tests/python/` on a free loopback port, started with `args` after the port,
/// ready once it prints "ready"; killed on drop.
struct PythonServer {
    child: std::process::Child,
    port: u16,
}

impl PythonServer {
    fn start(script: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        use std::io::BufRead as _;
        let port: u16 = support::free_listen_address()
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .expect("a port");
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/python")
            .join(script);
        let mut child = std::process::Command::new(support::python())
            .arg(script)
            .arg(port.to_string())
            .args(args)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the server starts");
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut ready)
            .expect("ready line");
        assert_eq!(ready.trim(), "ready");
        Self { child, port }
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real SMTP server (aiosmtpd, `tests/python/smtp_server.py`): STARTTLS required, then
/// AUTH.
struct SmtpServer {
    /// Runs for as long as this is held.
    _server: PythonServer,
    port: u16,
    out: std::path::PathBuf,
}

impl SmtpServer {
    fn start(dir: &std::path::Path, user: &str, password: &str) -> Self {
        let out = dir.join("mail.jsonl");
        let server = PythonServer::start(
            "smtp_server.py",
            &[&dir.display().to_string(), &out.display().to_string(), user],
            &[("SMTP_TEST_PASSWORD", password)],
        );
        let port = server.port;
        Self {
            _server: server,
            port,
            out,
        }
    }

    fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("json"))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn email_goes_out_over_starttls_with_auth_in_plain_text_and_html() {
    let certificates = tempfile::tempdir().expect("tempdir");
    let password = format!("pw-{}", uuid::Uuid::new_v4());
    let smtp = SmtpServer::start(certificates.path(), "warden", &password);
    let setup = archive_setup(
        1,
        &format!(
            r#"
            # The responder alone: no runbook announcements among the notifications counted.
            [runbooks]
            enabled = false
            [respond]
            group_wait_s = 1
            group_interval_s = 2
            default_receivers = ["oncall-mail"]
            [[respond.receivers]]
            name = "oncall-mail"
            kind = "email"
            smtp = "smtp://127.0.0.1:{port}?starttls=required"
            ca_file = "{ca}"
            from = "warden@example.com"
            to = ["oncall@example.com", "sec@example.com"]
            username = "warden"
            password = "env:SMTP_PASSWORD"
            "#,
            port = smtp.port,
            ca = certificates.path().join("ca.pem").display(),
        ),
    )
    .await;
    let mut responder =
        WardenProcess::start_with_env("respond", &setup.config, &[("SMTP_PASSWORD", &password)]);
    let publisher = AlertPublisher::new(&setup.cluster).expect("publisher");
    publisher
        .publish(&alert("actual"))
        .await
        .expect("published");

    let started = Instant::now();
    while smtp.messages().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no mail: {}",
            responder.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mail = &smtp.messages()[0];
    assert_eq!(mail["tls"], true, "STARTTLS before anything else");
    assert_eq!(mail["authenticated_as"], "warden");
    assert_eq!(mail["mail_from"], "warden@example.com");
    assert_eq!(mail["rcpt_tos"].as_array().map(Vec::len), Some(2));
    let data = mail["data"].as_str().expect("data");
    assert!(
        data.contains("Subject: [warden] CRITICAL FIRING cost_burn client:app-prod (1 alert)"),
        "{data}"
    );
    assert!(data.contains("multipart/alternative"), "{data}");
    assert!(data.contains("text/html"), "{data}");
    assert!(data.contains("Message-ID: <"), "{data}");
    assert!(
        !responder.log().contains(&password),
        "no secret in a log line"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.messages().len(), 1, "once");
    responder.interrupt().await;
}

/// A real rsyslog (Debian's), listening on UDP and TCP on loopback, writing what each input
/// parsed to a file of its own; stopped on drop.
struct Rsyslog {
    child: std::process::Child,
    udp: u16,
    tcp: u16,
    dir: tempfile::TempDir,
}

impl Rsyslog {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = || -> u16 {
            support::free_listen_address()
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse().ok())
                .expect("a port")
        };
        let (udp, tcp) = (port(), port());
        let path = dir.path();
        let config = format!(
            r#"
global(workDirectory="{dir}")
module(load="imudp")
module(load="imtcp")
template(name="parsed" type="string" string="%pri%|%app-name%|%procid%|%msgid%|%msg%\n")
ruleset(name="udp") {{ action(type="omfile" file="{dir}/udp.log" template="parsed") }}
ruleset(name="tcp") {{ action(type="omfile" file="{dir}/tcp.log" template="parsed") }}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
"#,
            dir = path.display()
        );
        let config_path = path.join("rsyslog.conf");
        std::fs::write(&config_path, config).expect("rsyslog config");
        let binary = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .unwrap_or("rsyslogd");
        let child = std::process::Command::new(binary)
            .arg("-n")
            .arg("-f")
            .arg(&config_path)
            .arg("-i")
            .arg(path.join("rsyslog.pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("rsyslogd starts (scripts/test.sh installs Debian's rsyslog)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", tcp)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "rsyslogd does not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            udp,
            tcp,
            dir,
        }
    }

    fn lines(&self, input: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join(format!("{input}.log")))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_siem_gets_one_cef_event_per_alert_over_syslog_udp_and_tcp() {
    let rsyslog = Rsyslog::start();
    let setup = archive_setup(
        1,
        &format!(
            r#"
            # The responder alone: no runbook announcements among the notifications counted.
            [runbooks]
            enabled = false
            [respond]
            group_wait_s = 1
            group_interval_s = 2
            default_receivers = ["siem-udp", "siem-tcp"]
            [[respond.receivers]]
            name = "siem-udp"
            kind = "syslog"
            address = "udp://127.0.0.1:{udp}"
            format = "cef"
            [[respond.receivers]]
            name = "siem-tcp"
            kind = "syslog"
            address = "tcp://127.0.0.1:{tcp}"
            "#,
            udp = rsyslog.udp,
            tcp = rsyslog.tcp,
        ),
    )
    .await;
    let mut responder = WardenProcess::start("respond", &setup.config);
    let publisher = AlertPublisher::new(&setup.cluster).expect("publisher");
    let mut tricky = alert("actual");
    tricky.summary = "burn | 10x = over\nbudget".into();
    publisher
        .publish(&tricky.with_derived_id())
        .await
        .expect("published");
    publisher
        .publish(&alert("projected"))
        .await
        .expect("published");

    for input in ["udp", "tcp"] {
        let started = Instant::now();
        while rsyslog.lines(input).len() < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{input}: {:?}\n{}",
                rsyslog.lines(input),
                responder.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let lines = rsyslog.lines(input);
        for line in &lines {
            // Facility auth (4) × 8 + severity crit (2); app-name, msgid parsed as RFC 5424.
            assert!(line.starts_with("34|warden|"), "{input}: {line}");
            assert!(
                line.contains("|alert|CEF:0|Warden|Warden|"),
                "{input}: {line}"
            );
            assert!(line.contains("cs1=client:app-prod"), "{input}: {line}");
        }
        assert!(
            lines
                .iter()
                .any(|line| line.contains(r"msg=burn | 10x \= over\nbudget")),
            "{input}: escaped per CEF, one line: {lines:?}"
        );
    }
    responder.interrupt().await;
}

/// Splunk's HEC as documented: the first event POST is refused busy (503, code 9), the
/// next accepted with an ackId, which the first ack poll reports not yet indexed.
#[derive(Clone, Default)]
struct Hec {
    events: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    ack_polls: Arc<Mutex<u32>>,
}

async fn hec_event(
    State(hec): State<Hec>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let mut events = hec.events.lock().expect("lock");
    events.push((headers, body));
    if events.len() == 1 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"text":"Server is busy","code":9}"#.into(),
        );
    }
    (
        StatusCode::OK,
        r#"{"text":"Success","code":0,"ackId":0}"#.into(),
    )
}

async fn hec_ack(State(hec): State<Hec>) -> String {
    let mut polls = hec.ack_polls.lock().expect("lock");
    *polls += 1;
    format!(r#"{{"acks":{{"0":{}}}}}"#, *polls > 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn splunk_hec_gets_concatenated_events_acknowledged_and_ocsf_findings_land_in_a_file() {
    let hec = Hec::default();
    let address = serve(
        axum::Router::new()
            .route("/services/collector/event", post(hec_event))
            .route("/services/collector/ack", post(hec_ack))
            .with_state(hec.clone()),
    )
    .await;
    let findings_dir = tempfile::tempdir().expect("tempdir");
    let findings = findings_dir.path().join("findings.jsonl");
    let token = format!("hec-{}", uuid::Uuid::new_v4());
    let setup = archive_setup(
        1,
        &format!(
            r#"
            # The responder alone: no runbook announcements among the notifications counted.
            [runbooks]
            enabled = false
            [respond]
            group_wait_s = 1
            group_interval_s = 2
            max_backoff_s = 1
            default_receivers = ["splunk", "findings"]
            [[respond.receivers]]
            name = "splunk"
            kind = "splunk_hec"
            url = "http://{address}"
            token = "env:HEC_TOKEN"
            index = "security"
            ack = true
            format = "ocsf"
            [[respond.receivers]]
            name = "findings"
            kind = "ocsf"
            url = "file://{findings}"
            "#,
            findings = findings.display(),
        ),
    )
    .await;
    let mut responder =
        WardenProcess::start_with_env("respond", &setup.config, &[("HEC_TOKEN", &token)]);
    let publisher = AlertPublisher::new(&setup.cluster).expect("publisher");
    publisher
        .publish(&alert("actual"))
        .await
        .expect("published");
    publisher
        .publish(&alert("projected"))
        .await
        .expect("published");

    let started = Instant::now();
    loop {
        let polls = *hec.ack_polls.lock().expect("lock");
        let lines = std::fs::read_to_string(&findings)
            .unwrap_or_default()
            .lines()
            .count();
        if polls >= 2 && lines >= 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{}",
            responder.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = hec.events.lock().expect("lock").clone();
    assert_eq!(events.len(), 2, "refused busy once, then accepted");
    let (headers, body) = &events[1];
    assert_eq!(headers["authorization"], format!("Splunk {token}").as_str());
    assert!(headers.contains_key("x-splunk-request-channel"));
    let objects: Vec<Value> = serde_json::Deserializer::from_str(body)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("concatenated JSON objects");
    assert_eq!(objects.len(), 2, "{body}");
    assert!(!body.trim_start().starts_with('['), "no array");
    assert_eq!(objects[0]["index"], "security");
    assert_eq!(objects[0]["event"]["class_uid"], 2004);
    assert_eq!(objects[0]["event"]["type_uid"], 200401);

    let lines: Vec<Value> = std::fs::read_to_string(&findings)
        .expect("findings")
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines
            .iter()
            .all(|finding| finding["type_uid"] == 200401 && finding["severity_id"] == 5)
    );

    // The HEC delivery is recorded once, after its acknowledgement, with both attempts.
    let started = Instant::now();
    let record = loop {
        let records = notification_records(&setup.cluster).await;
        if let Some(record) = records.into_iter().find(|r| r.receiver == "splunk") {
            break record;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no record");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (record.outcome, record.attempts),
        (NotificationOutcome::Delivered, 2)
    );
    assert!(!responder.log().contains(&token), "no secret in a log line");
    responder.interrupt().await;
}

/// One webhook receiver, `bridge`, served by `handler` at `path`, on a tansu broker: every
/// alert its own group (`group_by = ["..."]`), short timers; `extra` adds config lines.
async fn bridge_setup(
    path: &str,
    handler: axum::routing::MethodRouter<Received>,
    extra: &str,
) -> (Received, support::ArchiveSetup) {
    let received = Received::default();
    let address = serve(
        axum::Router::new()
            .route(path, handler)
            .with_state(received.clone()),
    )
    .await;
    let setup = archive_setup(
        1,
        &format!(
            r#"
            # The responder alone: no runbook announcements among the notifications counted.
            [runbooks]
            enabled = false
            [respond]
            group_wait_s = 1
            group_interval_s = 2
            group_by = ["..."]
            default_receivers = ["bridge"]
            [[respond.receivers]]
            name = "bridge"
            kind = "webhook"
            url = "http://{address}{path}"
            {extra}
            "#
        ),
    )
    .await;
    (received, setup)
}

async fn slow_hook(
    State(received): State<Received>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    tokio::time::sleep(Duration::from_millis(100)).await;
    record(&received, "/slow-hook", &headers, &body).await;
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread")]
async fn a_responder_killed_mid_burst_loses_nothing_and_its_repeats_carry_the_same_idempotency_key()
{
    let (received, setup) = bridge_setup("/slow-hook", post(slow_hook), SHORT_KAFKA_SESSIONS).await;
    let mut responder = WardenProcess::start("respond", &setup.config);
    let publisher = AlertPublisher::new(&setup.cluster).expect("publisher");
    const ALERTS: usize = 40;
    for index in 0..ALERTS {
        publisher
            .publish(&alert(&format!("burst-{index}")))
            .await
            .expect("published");
    }
    received
        .until("/slow-hook", 8, Duration::from_secs(30))
        .await;
    responder.kill();
    let mut responder = WardenProcess::start("respond", &setup.config);

    // Every condition is told, each under one idempotency key however often it was sent.
    let started = Instant::now();
    let keys_by_alert = loop {
        let mut keys: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            Default::default();
        for (body, key) in received
            .at("/slow-hook")
            .iter()
            .zip(received.idempotency_keys("/slow-hook"))
        {
            let dedup_key = body["alerts"][0]["labels"]["dedup_key"]
                .as_str()
                .expect("dedup key");
            keys.entry(dedup_key.to_owned())
                .or_default()
                .insert(key.expect("idempotency key"));
        }
        if keys.len() == ALERTS {
            break keys;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {ALERTS} told:\n{}",
            keys.len(),
            responder.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (dedup_key, keys) in &keys_by_alert {
        assert_eq!(
            keys.len(),
            1,
            "{dedup_key}: a receiver could not drop the copy: {keys:?}"
        );
    }
    let sent = received.at("/slow-hook").len();
    eprintln!(
        "{ALERTS} conditions, {sent} webhook posts ({} sent again after the kill)",
        sent - ALERTS
    );
    assert!(
        sent <= ALERTS + 2,
        "at most what was in flight is sent again: {sent}"
    );
    responder.interrupt().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_simulated_runaway_reaches_slack_and_email_once() {
    let received = Received::default();
    let address = serve(
        axum::Router::new()
            .route("/hook", post(hook))
            .with_state(received.clone()),
    )
    .await;
    let certificates = tempfile::tempdir().expect("tempdir");
    let password = format!("pw-{}", uuid::Uuid::new_v4());
    let smtp = SmtpServer::start(certificates.path(), "warden", &password);
    let setup = archive_setup(
        2,
        &format!(
            r#"
            flush_interval_s = 1
            # The responder alone: no runbook announcements among the notifications counted.
            [runbooks]
            enabled = false
            [respond]
            group_wait_s = 5
            group_interval_s = 600
            [[respond.receivers]]
            name = "sec-slack"
            kind = "slack"
            url = "env:SLACK_WEBHOOK_URL"
            [[respond.receivers]]
            name = "oncall-mail"
            kind = "email"
            smtp = "smtp://127.0.0.1:{port}?starttls=required"
            ca_file = "{ca}"
            from = "warden@example.com"
            to = ["oncall@example.com"]
            username = "warden"
            password = "env:SMTP_PASSWORD"
            [[respond.routes]]
            match = {{ runbook = "runaway_cost" }}
            receivers = ["sec-slack", "oncall-mail"]
            group_by = ["runbook"]
            "#,
            port = smtp.port,
            ca = certificates.path().join("ca.pem").display(),
        ),
    )
    .await;
    let slack_url = format!("http://{address}/hook");
    let env = [
        ("SLACK_WEBHOOK_URL", slack_url.as_str()),
        ("SMTP_PASSWORD", password.as_str()),
    ];
    let (ok, output) = run_warden(
        &["simulate", "runaway-cost", "--produce"],
        &setup.config,
        &env,
    );
    assert!(ok, "{output}");
    let mut detector = WardenProcess::start_with_env("detect", &setup.config, &env);
    let mut responder = WardenProcess::start_with_env("respond", &setup.config, &env);
    let slack = received.until("/hook", 1, Duration::from_secs(120)).await;
    let started = Instant::now();
    while smtp.messages().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no mail: {}",
            responder.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The incident's later alerts join its group: told at the next group interval, not now.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(received.at("/hook").len(), 1, "{}", responder.log());
    assert_eq!(smtp.messages().len(), 1, "{}", responder.log());
    let text = slack[0].to_string();
    assert!(text.contains("runaway_cost"), "{text}");
    let mail = smtp.messages()[0]["data"]
        .as_str()
        .expect("data")
        .to_owned();
    assert!(mail.contains("Subject: [warden]"), "{mail}");
    assert!(mail.contains("FIRING runaway_cost"), "{mail}");
    detector.interrupt().await;
    responder.interrupt().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn syslog_over_tls_sends_octet_counted_frames_to_a_server_it_trusts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("frames.log");
    let server = PythonServer::start(
        "syslog_tls_server.py",
        &[
            &dir.path().display().to_string(),
            &out.display().to_string(),
        ],
        &[],
    );
    let setup = archive_setup(
        1,
        &format!(
            r#"
            # The responder alone: no runbook announcements among the notifications counted.
            [runbooks]
            enabled = false
            [respond]
            group_wait_s = 1
            default_receivers = ["siem-tls"]
            [[respond.receivers]]
            name = "siem-tls"
            kind = "syslog"
            address = "tls://127.0.0.1:{port}"
            ca_file = "{ca}"
            "#,
            port = server.port,
            ca = dir.path().join("ca.pem").display(),
        ),
    )
    .await;
    let mut responder = WardenProcess::start("respond", &setup.config);
    let publisher = AlertPublisher::new(&setup.cluster).expect("publisher");
    publisher
        .publish(&alert("actual"))
        .await
        .expect("published");
    publisher
        .publish(&alert("projected"))
        .await
        .expect("published");
    let started = Instant::now();
    let frames = loop {
        let frames: Vec<String> = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if frames.len() >= 2 {
            break frames;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            responder.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for frame in &frames {
        assert!(frame.starts_with("<34>1 "), "{frame}");
        assert!(
            frame.contains(" warden ") && frame.contains(" alert - CEF:0|Warden|"),
            "{frame}"
        );
    }
    responder.interrupt().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_firing_critical_inhibits_the_warning_about_the_same_thing() {
    let (received, setup) = bridge_setup(
        "/hook",
        post(hook),
        r#"
        [[respond.inhibit_rules]]
        source_match = { severity = "critical" }
        target_match = { severity = "warning" }
        equal = ["detector", "subject"]
        "#,
    )
    .await;
    let mut responder = WardenProcess::start("respond", &setup.config);
    let publisher = AlertPublisher::new(&setup.cluster).expect("publisher");
    let actual = alert("actual");
    let mut projected = alert("projected");
    projected.severity = Severity::Warning;
    let projected = projected.with_derived_id();
    publisher.publish(&actual).await.expect("published");
    publisher.publish(&projected).await.expect("published");

    received.until("/hook", 1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let told: Vec<String> = received
        .at("/hook")
        .iter()
        .map(|body| {
            body["alerts"][0]["labels"]["dedup_key"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(told, [actual.dedup_key.as_str()], "{}", responder.log());
    let records = notification_records(&setup.cluster).await;
    let inhibited: Vec<_> = records
        .iter()
        .filter(|r| r.outcome == NotificationOutcome::Inhibited)
        .collect();
    assert_eq!(inhibited.len(), 1, "{records:#?}");
    assert_eq!(inhibited[0].dedup_keys, [projected.dedup_key.as_str()]);
    assert_eq!(
        inhibited[0].held_by.as_deref(),
        Some(actual.dedup_key.as_str())
    );
    responder.interrupt().await;
}
