//! `warden-sql` over a real hive-partitioned Parquet archive, laid out as the archiver lays
//! it out (`warden_ingest::layout`).

use std::path::Path;

use chrono::{DateTime, Utc};
use warden_ingest::archive_store::S3Options;
use warden_ingest::columnar::events_to_batch;
use warden_ingest::event::ResponseInfo;
use warden_ingest::layout::{EVENTS_TABLE, hour_partition};
use warden_ingest::{AuditEvent, EventKind, RequestId};
use warden_sql::{ArchiveSession, OutputFormat, SqlError, write_result};

fn at(ts: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(ts)
        .expect("ts")
        .with_timezone(&Utc)
}

fn response(ts: &str, status: u16) -> AuditEvent {
    let mut event = AuditEvent::new(EventKind::Response, RequestId::new(), "p");
    event.ts = at(ts);
    event.response = Some(ResponseInfo {
        status,
        ..ResponseInfo::default()
    });
    event
}

/// Writes `events` as one Parquet file in their hour partition.
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

fn archive() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_partition(
        dir.path(),
        "a.parquet",
        &[
            response("2026-11-22T09:15:00Z", 200),
            response("2026-11-22T09:59:59Z", 401),
        ],
    );
    write_partition(
        dir.path(),
        "b.parquet",
        &[response("2026-11-22T10:00:00Z", 503)],
    );
    dir
}

fn render(session_result: &warden_sql::QueryResult, format: OutputFormat) -> String {
    let mut out = Vec::new();
    write_result(session_result, format, &mut out).expect("written");
    String::from_utf8(out).expect("utf-8")
}

async fn query(root: &Path, sql: &str) -> Result<warden_sql::QueryResult, SqlError> {
    ArchiveSession::open(root.to_str().expect("utf-8"), &S3Options::default())?
        .query(sql)
        .await
}

#[tokio::test]
async fn hive_partitions_filter_and_nested_fields_read_with_dots() {
    let dir = archive();
    let result = query(
        dir.path(),
        "SELECT response.status AS status, dt, hour FROM events WHERE dt = '2026-11-22' AND hour = 9 ORDER BY ts",
    )
    .await
    .expect("query");
    let csv = render(&result, OutputFormat::Csv);
    assert_eq!(
        csv,
        "status,dt,hour\n200,2026-11-22,09\n401,2026-11-22,09\n"
    );
}

#[tokio::test]
async fn every_natural_way_of_naming_an_hour_selects_it() {
    // `hour` is the zero-padded directory name; numeric and string comparisons both work.
    let dir = archive();
    for (filter, expected) in [
        ("hour = 9", 2),
        ("hour = '09'", 2),
        ("hour IN (9, 11)", 2),
        ("hour >= 9 AND hour < 10", 2),
        ("hour = 10", 1),
        ("hour > 9", 1),
        ("dt = '2026-11-22'", 3),
        ("dt < '2026-11-22'", 0),
    ] {
        let result = query(
            dir.path(),
            &format!("SELECT count(*) AS n FROM events WHERE {filter}"),
        )
        .await
        .expect("query");
        assert_eq!(
            render(&result, OutputFormat::Csv),
            format!("n\n{expected}\n"),
            "{filter}"
        );
    }
}

#[tokio::test]
async fn json_lines_and_table_formats() {
    let dir = archive();
    let result = query(
        dir.path(),
        "SELECT kind, count(*) AS n FROM events GROUP BY kind",
    )
    .await
    .expect("query");
    assert_eq!(
        render(&result, OutputFormat::Json),
        "{\"kind\":\"response\",\"n\":3}\n"
    );
    let table = render(&result, OutputFormat::Table);
    assert!(table.contains("| kind     | n |"), "{table}");
    assert!(table.contains("| response | 3 |"), "{table}");
}

#[tokio::test]
async fn an_empty_archive_is_an_empty_table_with_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let result = query(dir.path(), "SELECT request_id, kind FROM events")
        .await
        .expect("query");
    assert_eq!(result.num_rows(), 0);
    let table = render(&result, OutputFormat::Table);
    assert!(
        table.contains("request_id") && table.contains("kind"),
        "{table}"
    );
    assert_eq!(render(&result, OutputFormat::Csv), "request_id,kind\n");
}

#[tokio::test]
async fn csv_refuses_whole_struct_columns_with_advice() {
    let dir = archive();
    let result = query(dir.path(), "SELECT response FROM events")
        .await
        .expect("query");
    let mut out = Vec::new();
    let err = write_result(&result, OutputFormat::Csv, &mut out).expect_err("nested");
    assert!(err.to_string().contains("response.status"), "{err}");
}

#[tokio::test]
async fn sessions_are_read_only() {
    let dir = archive();
    for statement in [
        "CREATE TABLE copy AS SELECT * FROM events",
        "INSERT INTO events SELECT * FROM events",
        "DROP TABLE events",
    ] {
        assert!(query(dir.path(), statement).await.is_err(), "{statement}");
    }
    let result = query(dir.path(), "SELECT count(*) AS n FROM events")
        .await
        .expect("still there");
    assert_eq!(render(&result, OutputFormat::Csv), "n\n3\n");
}

#[tokio::test]
async fn sql_errors_are_reported_not_panicked() {
    let dir = archive();
    let err = query(dir.path(), "SELEC nonsense")
        .await
        .expect_err("syntax");
    assert!(!err.to_string().is_empty());
    let err = query(dir.path(), "SELECT no_such_column FROM events")
        .await
        .expect_err("unknown column");
    assert!(err.to_string().contains("no_such_column"), "{err}");
}
