//! Shared helpers of the end-to-end tests: run the real `warden` binary with a config, talk to
//! it, stop it the way an operator does (SIGINT), and find the Python test clients.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_ingest::event::RouteInfo;
use warden_ingest::kafka::{KafkaCluster, KafkaConfig};
use warden_ingest::{AuditEvent, EventKind, RequestId};
use warden_testkit::TansuBroker;

/// The `warden` binary under test.
pub fn warden_binary() -> &'static str {
    env!("CARGO_BIN_EXE_warden")
}

/// The Python with the test clients installed (`scripts/test.sh` creates `.venv`).
pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("WARDEN_TEST_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.is_file(),
        "{} is missing: run scripts/test.sh (it creates the venv with the test clients)",
        venv.display()
    );
    venv
}

/// Runs a script of `tests/python/` and parses the JSON it prints.
pub fn run_python(script: &str, args: &[&str]) -> Value {
    run_python_with_env(script, args, &[])
}

/// [`run_python`] with extra environment variables.
pub fn run_python_with_env(script: &str, args: &[&str], env: &[(&str, &str)]) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = Command::new(python())
        .arg(&path)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{script} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "{script} printed no JSON ({err}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// A plain HTTP client for talking to Warden in tests.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A `warden` process started with a config file; interrupted and reaped on drop.
pub struct WardenProcess {
    child: Child,
    log: PathBuf,
}

impl WardenProcess {
    /// Starts `warden <role> --config <config>` in the config's directory (so default paths
    /// such as the spool land there); logs go to `<config dir>/<role>.log` (`<role>-2.log`... for
    /// later runs).
    pub fn start(role: &str, config: &Path) -> Self {
        Self::start_with_env(role, config, &[])
    }

    /// [`Self::start`] with extra environment variables (e.g. S3 credentials).
    pub fn start_with_env(role: &str, config: &Path, env: &[(&str, &str)]) -> Self {
        let mut log = config.with_file_name(format!("{role}.log"));
        for run in 2.. {
            if !log.exists() {
                break;
            }
            log = config.with_file_name(format!("{role}-{run}.log"));
        }
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(warden_binary())
            .args([role, "--config"])
            .arg(config)
            .current_dir(config.parent().expect("config has a directory"))
            .env("WARDEN_LOG", "info,warden=debug")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("warden starts");
        Self { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `GET http://{listen}/healthz` answers 200.
    pub async fn wait_healthy(&mut self, listen: &str) {
        let client = http_client();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("warden exited early ({status}):\n{}", self.log());
            }
            if let Ok(response) = client.get(format!("http://{listen}/healthz")).send().await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("warden did not become healthy:\n{}", self.log());
    }

    /// Sends SIGINT (Ctrl-C) and waits for the process to exit.
    pub async fn interrupt(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("warden did not stop after SIGINT:\n{}", self.log());
    }

    /// The process id, for reading `/proc/{pid}`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: a crash, no shutdown code runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one unlabelled counter or gauge from `GET http://{listen}/metrics` (the admin
/// listener's address).
pub async fn metric(listen: &str, name: &str) -> f64 {
    let text = http_client()
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

/// Polls `metric` until it reaches `expected` (or 60 s pass); returns the last value.
pub async fn metric_until(listen: &str, name: &str, expected: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = metric(listen, name).await;
        if value >= expected || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `warden sql` until the events table holds at least `expected` rows (or 90 s pass);
/// returns (rows, distinct event ids).
pub async fn archived_event_counts(config: &Path, expected: u64) -> (u64, u64) {
    archived_event_counts_with_env(config, expected, &[]).await
}

/// [`archived_event_counts`] with extra environment variables for `warden sql`.
pub async fn archived_event_counts_with_env(
    config: &Path,
    expected: u64,
    env: &[(&str, &str)],
) -> (u64, u64) {
    let query = "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events";
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let rows = try_sql_with_env(config, query, env).unwrap_or_default();
        let counts = rows
            .first()
            .map(|row| {
                (
                    row["n"].as_u64().unwrap_or(0),
                    row["d"].as_u64().unwrap_or(0),
                )
            })
            .unwrap_or((0, 0));
        if counts.0 >= expected || Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl Drop for WardenProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `warden <args> --config <config>` to completion: (succeeded, stdout then stderr).
pub fn run_warden(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(warden_binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .expect("warden runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

/// Runs `warden sql --format json` and returns one JSON object per row.
pub fn sql(config: &Path, query: &str) -> Vec<Value> {
    try_sql(config, query).unwrap_or_else(|err| panic!("warden sql failed: {err}"))
}

/// Runs `warden sql --format json`: the rows, or its error output.
pub fn try_sql(config: &Path, query: &str) -> Result<Vec<Value>, String> {
    try_sql_with_env(config, query, &[])
}

/// [`try_sql`] with extra environment variables (e.g. S3 credentials).
pub fn try_sql_with_env(
    config: &Path,
    query: &str,
    env: &[(&str, &str)],
) -> Result<Vec<Value>, String> {
    let output = Command::new(warden_binary())
        .args(["sql", "--format", "json", "--config"])
        .arg(config)
        .arg(query)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .expect("warden sql runs");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("json row"))
        .collect())
}

/// Polls `warden sql` until `query` returns `expected_rows` rows.
pub async fn sql_until(config: &Path, query: &str, expected_rows: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = sql(config, query);
        if rows.len() >= expected_rows || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Writes `warden.toml` into `dir` and returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("warden.toml");
    std::fs::write(&path, text).expect("config written");
    path
}

/// A loopback `host:port` that was free a moment ago, for `[proxy].listen`.
pub fn free_listen_address() -> String {
    format!(
        "127.0.0.1:{}",
        warden_testkit::free_port().expect("free port")
    )
}

/// A client API key made up for this test run (never a fixture), and its SHA-256 hex.
pub fn fresh_client_key() -> (String, String) {
    use sha2::{Digest, Sha256};
    let key = format!("sk-test-{}", uuid::Uuid::new_v4().simple());
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    (key, digest)
}

/// The `[proxy]` and `[kafka]` sections most archive tests share: one `tgi-messages` target
/// named `llama` (the model [`chat_calls`] asks for), one client, a broker with 2 partitions.
pub fn proxy_and_kafka_sections(
    listen: &str,
    upstream: &str,
    key_sha256: &str,
    brokers: &str,
) -> String {
    proxy_and_kafka_sections_with_admin(listen, "127.0.0.1:0", upstream, key_sha256, brokers)
}

/// [`proxy_and_kafka_sections`] with `/metrics` on `admin_listen`.
pub fn proxy_and_kafka_sections_with_admin(
    listen: &str,
    admin_listen: &str,
    upstream: &str,
    key_sha256: &str,
    brokers: &str,
) -> String {
    proxy_and_kafka_sections_with(listen, admin_listen, upstream, key_sha256, brokers, "")
}

/// [`proxy_and_kafka_sections_with_admin`] with more `[proxy]` keys (`proxy_keys`, TOML
/// lines).
pub fn proxy_and_kafka_sections_with(
    listen: &str,
    admin_listen: &str,
    upstream: &str,
    key_sha256: &str,
    brokers: &str,
    proxy_keys: &str,
) -> String {
    format!(
        r#"
        [proxy]
        listen = "{listen}"
        admin_listen = "{admin_listen}"
        {proxy_keys}
        [[proxy.targets]]
        id = "llama"
        kind = "tgi-messages"
        base_url = "{upstream}"
        [[proxy.clients]]
        name = "archive-test-app"
        key_sha256 = "{key_sha256}"
        [kafka]
        brokers = "{brokers}"
        partitions = 2
        replication_factor = 1
        "#
    )
}

/// Asserts that pyarrow and DuckDB (`tests/python/count_archive.py ARCHIVE [S3_ENDPOINT]`) both
/// find exactly `expected` events with `expected` distinct ids.
pub fn assert_readers_count(count_archive_args: &[&str], env: &[(&str, &str)], expected: u64) {
    let readers = run_python_with_env("count_archive.py", count_archive_args, env);
    for reader in ["pyarrow", "duckdb"] {
        assert_eq!(readers[reader]["rows"], expected, "{reader}: {readers}");
        assert_eq!(
            readers[reader]["distinct_event_ids"], expected,
            "{reader}: {readers}"
        );
    }
}

/// One chat call to `model`: its status and, when refused, OpenAI's error `code`.
pub async fn chat_call(listen: &str, api_key: &str, model: &str) -> (u16, Option<String>) {
    let response = http_client()
        .post(format!("http://{listen}/v1/chat/completions"))
        .bearer_auth(api_key)
        .json(&serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
        }))
        .send()
        .await
        .expect("call answered");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["error"]["code"].as_str().map(str::to_owned))
}

/// Makes `count` chat calls with `api_key`; each must succeed.
pub async fn chat_calls(listen: &str, api_key: &str, count: u64) {
    let client = http_client();
    for i in 0..count {
        let response = client
            .post(format!("http://{listen}/v1/chat/completions"))
            .bearer_auth(api_key)
            .json(&serde_json::json!({
                "model": "llama",
                "messages": [{"role": "user", "content": format!("call {i}")}],
            }))
            .send()
            .await
            .expect("call answered");
        assert_eq!(response.status(), 200, "calls never wait on kafka");
    }
}

/// A real S3-compatible server: moto's standalone server (`moto[server]` from PyPI, installed in
/// the test venv by `scripts/test.sh`), on a free loopback port. Killed on drop.
pub struct S3Server {
    child: Child,
    endpoint: String,
}

/// What a client of [`S3Server`] signs with: moto checks the signature's shape, not a real
/// account, so these are placeholders, not credentials.
pub const S3_TEST_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "warden-test-placeholder"),
    ("AWS_SECRET_ACCESS_KEY", "warden-test-placeholder"),
    ("AWS_REGION", "us-east-1"),
];

impl S3Server {
    /// Starts the server and creates `bucket` on it.
    pub async fn start(bucket: &str) -> Self {
        let port = warden_testkit::free_port().expect("free port");
        let moto = python().with_file_name("moto_server");
        assert!(
            moto.is_file(),
            "{} is missing: run scripts/test.sh (it installs moto[server] in the venv)",
            moto.display()
        );
        let child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let client = http_client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match client
                .put(format!("{}/{bucket}", server.endpoint))
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => return server,
                Ok(response) => panic!("creating bucket {bucket}: {}", response.status()),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("moto_server did not come up: {err}"),
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A client of `bucket` on this server, signing with [`S3_TEST_ENV`]'s placeholders.
    pub fn bucket(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        let env = |name: &str| {
            S3_TEST_ENV
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| *value)
                .expect("set in S3_TEST_ENV")
        };
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region(env("AWS_REGION"))
            .with_access_key_id(env("AWS_ACCESS_KEY_ID"))
            .with_secret_access_key(env("AWS_SECRET_ACCESS_KEY"))
            .build()
            .expect("s3 client")
    }

    /// Keys of the objects in `bucket` under `prefix`.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        self.bucket(bucket)
            .list(Some(&prefix.into()))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .expect("list")
    }

    pub async fn delete(&self, bucket: &str, key: &str) {
        use object_store::ObjectStoreExt;
        self.bucket(bucket)
            .delete(&key.into())
            .await
            .unwrap_or_else(|err| panic!("delete {key}: {err}"));
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tansu broker with Warden's topics, and an archiver config for it in a fresh directory.
pub struct ArchiveSetup {
    /// Kept alive for the test's duration.
    pub broker: TansuBroker,
    pub cluster: KafkaCluster,
    pub dir: tempfile::TempDir,
    pub archive: std::path::PathBuf,
    pub config: std::path::PathBuf,
}

/// Config lines (after the `[archive]` keys) for tests that kill a consumer-group member: a
/// killed member holds its partitions until its session expires, so keep that short.
pub const SHORT_KAFKA_SESSIONS: &str = r#"
    [kafka.properties]
    "session.timeout.ms" = "6000"
    "heartbeat.interval.ms" = "1000"
    "max.poll.interval.ms" = "10000"
"#;

/// `extra` is appended to the config (its `[archive]` section is open, so archive keys first).
pub async fn archive_setup(partitions: i32, extra: &str) -> ArchiveSetup {
    let broker = TansuBroker::start().expect("tansu starts");
    let kafka = KafkaConfig {
        brokers: broker.bootstrap_servers(),
        partitions,
        replication_factor: 1,
        ..KafkaConfig::default()
    };
    let cluster = KafkaCluster::new(&kafka, None);
    cluster.ensure_topics().await.expect("topics");
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("archive");
    let config = write_config(
        dir.path(),
        &format!(
            r#"
            [kafka]
            brokers = "{brokers}"
            partitions = {partitions}
            replication_factor = 1
            [archive]
            url = "{archive}"
            {extra}
            "#,
            brokers = broker.bootstrap_servers(),
            archive = archive.display(),
        ),
    );
    ArchiveSetup {
        broker,
        cluster,
        dir,
        archive,
        config,
    }
}

/// Sends `(topic, payload)` records unkeyed, one at a time, each acknowledged before the next
/// (so their order in a partition is the order given).
pub async fn produce(cluster: &KafkaCluster, records: &[(&str, Vec<u8>)]) {
    let producer: rdkafka::producer::FutureProducer =
        cluster.producer_config().create().expect("producer");
    for (topic, payload) in records {
        producer
            .send(
                rdkafka::producer::FutureRecord::<[u8], [u8]>::to(topic).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
    }
}

/// Sends events to `warden.events` keyed as the proxy keys them, one at a time, in order.
/// Unlike `warden_ingest::kafka::produce_events` (pipelined, what `warden simulate` uses),
/// each record is its own produce request and so its own batch: tansu's memory storage
/// returns nothing to a fetch that starts inside a batch, and the restart tests resume at
/// arbitrary committed offsets.
pub async fn produce_events<'a>(
    cluster: &KafkaCluster,
    events: impl IntoIterator<Item = &'a warden_ingest::AuditEvent>,
) {
    let producer: rdkafka::producer::FutureProducer =
        cluster.producer_config().create().expect("producer");
    for event in events {
        producer
            .send(
                rdkafka::producer::FutureRecord::to("warden.events")
                    .key(event.partition_key())
                    .payload(&event.to_json()),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
    }
}

/// A chat-completions request event from `client` at `ip` to the target `llama-8b`, at `ts`.
pub fn chat_request(ts: chrono::DateTime<chrono::Utc>, client: &str, ip: &str) -> AuditEvent {
    let mut event = AuditEvent::new(EventKind::Request, RequestId::new(), "proxy-t");
    event.ts = ts;
    event.client.name = Some(client.into());
    event.client.ip = Some(ip.into());
    event.route = Some(RouteInfo {
        endpoint: "/v1/chat/completions".into(),
        target_id: Some("llama-8b".into()),
        ..RouteInfo::default()
    });
    event
}
