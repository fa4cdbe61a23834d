//! Saved investigations and the `calls` view over a real Parquet archive: a call's events
//! joined in one row, top sources by spend within a time range that prunes partitions, and
//! money printed as people read it.

use std::path::Path;

use chrono::{DateTime, Utc};
use warden_ingest::archive_store::S3Options;
use warden_ingest::columnar::events_to_batch;
use warden_ingest::event::{ClientInfo, DecisionInfo, RequestInfo, ResponseInfo, RouteInfo};
use warden_ingest::layout::{EVENTS_TABLE, hour_partition};
use warden_ingest::{AuditEvent, EventKind, RequestId, TokenId};
use warden_sql::saved::{TimeRange, find};
use warden_sql::{ArchiveSession, OutputFormat, write_result};

fn at(ts: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(ts)
        .expect("ts")
        .with_timezone(&Utc)
}

/// A call's three events: its request, the auth decision, its response.
fn call(ts: &str, client: &str, ip: &str, cost_usd: f64) -> Vec<AuditEvent> {
    let request_id = RequestId::new();
    let client_info = ClientInfo {
        ip: Some(ip.to_owned()),
        country: Some("DE".to_owned()),
        token_id: Some(TokenId(format!("tok_{client}"))),
        name: Some(client.to_owned()),
        user_agent: None,
    };
    let route = RouteInfo {
        endpoint: "/v1/chat/completions".to_owned(),
        target_id: Some("llama".to_owned()),
        model: Some("llama".to_owned()),
        stream: false,
    };
    let event = |kind| {
        let mut event = AuditEvent::new(kind, request_id.clone(), "p");
        event.ts = at(ts);
        event.client = client_info.clone();
        event.route = Some(route.clone());
        event
    };
    let mut request = event(EventKind::Request);
    request.request = Some(RequestInfo {
        bytes: 100,
        prompt_hash: Some("h".to_owned()),
        input_tokens: Some(12),
        content: None,
    });
    let mut decision = event(EventKind::PolicyDecision);
    decision.decision = Some(DecisionInfo {
        policy: "auth".to_owned(),
        outcome: "allow".to_owned(),
        reason: None,
    });
    let mut response = event(EventKind::Response);
    response.response = Some(ResponseInfo {
        status: 200,
        cost_usd: Some(cost_usd),
        output_tokens: Some(30),
        ..ResponseInfo::default()
    });
    vec![request, decision, response]
}

fn write_partition(root: &Path, name: &str, events: &[AuditEvent]) {
    let directory = root.join(hour_partition(EVENTS_TABLE, events[0].ts));
    std::fs::create_dir_all(&directory).expect("dir");
    let batch = events_to_batch(events).expect("batch");
    let file = std::fs::File::create(directory.join(name)).expect("file");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

async fn session(root: &Path) -> ArchiveSession {
    ArchiveSession::open(root.to_str().expect("utf-8"), &S3Options::default())
        .expect("session")
        .with_views()
        .await
        .expect("views")
}

fn table(result: &warden_sql::QueryResult) -> String {
    let mut out = Vec::new();
    write_result(result, OutputFormat::Table, &mut out).expect("written");
    String::from_utf8(out).expect("utf-8")
}

#[tokio::test]
async fn the_calls_view_joins_a_calls_events_and_top_sources_ranks_by_spend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yesterday = call("2026-11-30T09:00:00Z", "old-app", "198.51.100.1", 99.0);
    write_partition(dir.path(), "old.parquet", &yesterday);
    let mut today = call("2026-12-01T10:05:00Z", "batch", "203.0.113.7", 0.0000074);
    today.extend(call(
        "2026-12-01T10:06:00Z",
        "app-prod",
        "203.0.113.8",
        1.25,
    ));
    today.extend(call("2026-12-01T10:07:00Z", "app-prod", "203.0.113.8", 0.5));
    write_partition(dir.path(), "today.parquet", &today);
    let session = session(dir.path()).await;

    let calls = session
        .query("SELECT client, status, cost_usd, decisions FROM calls WHERE dt = '2026-12-01' ORDER BY ts")
        .await
        .expect("calls");
    assert_eq!(calls.num_rows(), 3, "one row per call");
    let rendered = table(&calls);
    assert!(rendered.contains("auth:allow"), "{rendered}");
    assert!(
        rendered.contains("0.0000074"),
        "money as people read it: {rendered}"
    );
    assert!(!rendered.contains("e-6"), "{rendered}");

    let range = TimeRange {
        since: at("2026-12-01T00:00:00Z"),
        until: None,
    };
    let sql = find("top-sources")
        .expect("saved")
        .render(&range, &Default::default())
        .expect("rendered");
    let top = session.query(&sql).await.expect("top sources");
    let rendered = table(&top);
    let lines: Vec<&str> = rendered
        .lines()
        .filter(|line| line.contains("| "))
        .collect();
    assert!(
        lines[1].contains("app-prod") && lines[1].contains("1.75"),
        "{rendered}"
    );
    assert!(lines[2].contains("batch"), "{rendered}");
    assert!(
        !rendered.contains("old-app"),
        "outside the range: {rendered}"
    );
}

#[tokio::test]
async fn every_saved_query_runs_over_the_archive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut events = Vec::new();
    for minute in 0..6 {
        events.extend(call(
            &format!("2026-12-01T10:0{minute}:00Z"),
            "app-prod",
            "203.0.113.8",
            0.25,
        ));
    }
    write_partition(dir.path(), "calls.parquet", &events);
    let session = session(dir.path()).await;
    let range = TimeRange {
        since: at("2026-12-01T10:00:00Z"),
        until: Some(at("2026-12-01T11:00:00Z")),
    };
    for saved in warden_sql::saved::SAVED_QUERIES {
        let params = match saved.name {
            "token-activity" => [("token".to_owned(), "tok_app-prod".to_owned())].into(),
            "incident-timeline" => [("incident".to_owned(), "inc-0123456789ab".to_owned())].into(),
            _ => Default::default(),
        };
        let sql = saved.render(&range, &params).expect("rendered");
        let result = session
            .query(&sql)
            .await
            .unwrap_or_else(|err| panic!("{}: {err}\n{sql}", saved.name));
        let expected_rows = match saved.name {
            // Every call allowed: no failures.
            "auth-failures-by-ip" => 0,
            // No incident in this archive.
            "incident-timeline" => 0,
            _ => 1,
        };
        assert_eq!(
            result.num_rows(),
            expected_rows,
            "{}: {}",
            saved.name,
            table(&result)
        );
    }
}
