//! A crashed worker's replacement takes over at once, with the default settings, against
//! the real broker: archivers killed (SIGKILL) one after another, 4 s apart, then a
//! replacement — the same worker started again, as a supervisor does — archives the backlog
//! within 15 s of starting. It has the same group identity (static membership: the host name
//! by default), so it takes the partitions back without waiting for the dead sessions.

use std::time::{Duration, Instant};

use chrono::Utc;

use crate::support::{
    ArchiveSetup, WardenProcess, archive_setup, archived_event_counts, chat_request, produce_events,
};

const EVENTS: u64 = 200;

/// How soon after starting a replacement must be archiving.
const TAKEOVER: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_archiver_takes_over_within_15_s_of_three_crashes() {
    let ArchiveSetup {
        broker: _broker,
        cluster,
        config,
        dir: _dir,
        ..
    } = archive_setup(2, "flush_interval_s = 0.3").await;
    let mut members: Vec<WardenProcess> = Vec::new();
    // Each crashes once it has its partitions, and is restarted, three times in a row.
    for _ in 0..3 {
        let mut member = WardenProcess::start("archive", &config);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !member.log().contains("partitions assigned") {
            assert!(Instant::now() < deadline, "the archiver never joined");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        member.kill();
        members.push(member);
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    let now = Utc::now();
    let events: Vec<_> = (0..EVENTS)
        .map(|i| chat_request(now, "takeover", &format!("198.51.100.{}", i % 50)))
        .collect();
    produce_events(&cluster, &events).await;

    let started = Instant::now();
    let replacement = WardenProcess::start("archive", &config);
    let (rows, distinct) = archived_event_counts(&config, EVENTS).await;
    let took = started.elapsed();
    assert_eq!((rows, distinct), (EVENTS, EVENTS), "{}", replacement.log());
    assert!(
        took <= TAKEOVER,
        "the replacement archived the backlog {took:?} after starting:\n{}",
        replacement.log()
    );
    assert!(replacement.log().contains("partitions assigned"));
}
