//! `warden up` on the embedded broker (the default): Ctrl-C right after the last call still
//! puts every accepted call's events in the archive. The flush interval is set to an hour so
//! only the shutdown drain can have written them.

use crate::support;

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use warden_testkit::{EmulatorOptions, TgiEmulator};

use support::{WardenProcess, free_listen_address, http_client, sql, write_config};

const NUM_CALLS: usize = 20;

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_archives_every_accepted_call_on_the_embedded_broker() {
    let emulator = TgiEmulator::start(EmulatorOptions::default())
        .await
        .expect("emulator");
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
            id = "llama-8b"
            kind = "tgi-messages"
            base_url = "{upstream}"
            [archive]
            url = "{archive}"
            flush_interval_s = 3600
            "#,
            upstream = emulator.base_url(),
            archive = dir.path().join("archive").display(),
        ),
    );

    let mut warden = WardenProcess::start("up", &config);
    warden.wait_healthy(&listen).await;
    assert!(warden.log().contains("OPEN MODE"), "open mode is announced");

    let client = http_client();
    let mut request_ids = Vec::new();
    for i in 0..NUM_CALLS {
        let response = client
            .post(format!("http://{listen}/v1/chat/completions"))
            .json(&json!({"model": "llama-8b", "messages": [{"role": "user", "content": format!("call {i}")}]}))
            .send()
            .await
            .expect("call");
        assert_eq!(response.status(), 200);
        let request_id = response.headers()["x-request-id"]
            .to_str()
            .expect("id")
            .to_owned();
        request_ids.push(request_id);
    }

    let status = warden.interrupt().await;
    assert!(status.success(), "exit {status}:\n{}", warden.log());

    let rows = sql(
        &config,
        "SELECT request_id, count(*) AS n, count(DISTINCT event_id) AS distinct_ids \
         FROM events GROUP BY request_id",
    );
    assert_eq!(rows.len(), NUM_CALLS, "{rows:?}\n{}", warden.log());
    for row in &rows {
        assert!(
            request_ids
                .iter()
                .any(|id| row["request_id"] == *id.as_str())
        );
        assert_eq!(row["n"], 3, "{row}");
        assert_eq!(row["distinct_ids"], 3, "{row}");
    }

    // What Warden wrote holds audit data: owner-only, whatever the umask it started with.
    let mut num_files = 0;
    let mut pending = vec![dir.path().join("archive")];
    while let Some(path) = pending.pop() {
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        if path.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            pending.extend(
                std::fs::read_dir(&path)
                    .expect("ls")
                    .map(|e| e.expect("entry").path()),
            );
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
            num_files += 1;
        }
    }
    assert!(num_files > 0, "the archive holds files");
}
