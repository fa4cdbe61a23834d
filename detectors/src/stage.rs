//! What a detect stage does with each record it reads, without Kafka: the [`DetectLoop`]
//! receives, commits and publishes; a [`StageCore`] decodes, counts, holds, passes on (keyed
//! stage) and moves the clock. Being IO-free, the whole two-stage path can be driven
//! in-process (the `pipeline` benchmark does: `cargo bench -p warden-detectors --bench
//! engine`).
//!
//! [`DetectLoop`]: crate::DetectLoop

use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use hashbrown::{HashMap, HashSet};
use tracing::warn;
use warden_ingest::alert::Alert;
use warden_ingest::event_row::EventRow;

use crate::engine::Engine;
use crate::frontier::PacedEngine;
use crate::relay::{Batch, BatchWriter};
use crate::{DetectReport, DetectStage};

/// A stream whose newest event came within this of its time is live (follows the clock).
const LIVE_STREAM_LAG: TimeDelta = TimeDelta::minutes(1);
/// An event stamped further than this ahead of this worker's clock is not fed to the
/// detectors: one proxy with a wrong clock would otherwise move the watermark into the
/// future, make every other event late and empty every window.
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);
/// A batch for the shared stage is full once it holds this many events.
pub const RELAY_BATCH_EVENTS: usize = 1_000;

/// The time, read once for a burst of records.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Instant,
    pub wall: DateTime<Utc>,
    /// Events stamped after this are not taken ([`MAX_CLOCK_SKEW`]).
    future: DateTime<Utc>,
}

impl Clock {
    pub fn read() -> Self {
        let wall = Utc::now();
        Self {
            now: Instant::now(),
            wall,
            future: wall + MAX_CLOCK_SKEW,
        }
    }
}

/// How the event time of a live stream relates to this worker's clock, as of the last event
/// that moved it forward: lets the watermark follow the clock while the stream is quiet.
#[derive(Debug, Clone, Copy)]
struct LastProgress {
    /// This worker's clock when the newest event came.
    wall: DateTime<Utc>,
    /// The newest event time then.
    newest: DateTime<Utc>,
}

/// The watermark a quiet stream has reached at wall time `now`: the clock minus the allowed
/// lateness, if the stream is live (its newest event was within [`LIVE_STREAM_LAG`] of the
/// clock when it came). An old stream being read (a backlog, a rehearsal of a past day) keeps
/// its event time: its next event may continue where the last one left off.
fn idle_watermark(
    last: Option<LastProgress>,
    now: DateTime<Utc>,
    lateness: TimeDelta,
) -> Option<DateTime<Utc>> {
    let last = last?;
    let live = (last.wall - last.newest).abs() <= LIVE_STREAM_LAG;
    (live && now > last.wall).then(|| now - lateness)
}

/// The keyed stage's side of passing events on: a [batch](crate::relay) being filled per
/// source partition, and which partitions the shared stage is to wait for.
#[derive(Debug, Default)]
pub struct RelayBatches {
    batches: HashMap<i32, BatchWriter>,
    /// Source partitions whose last batch cut did not say caught up: the shared stage waits
    /// for them until one does.
    catching_up: HashSet<i32>,
}

impl RelayBatches {
    /// Adds an event read at `offset` of `partition`. Returns whether its batch is now full,
    /// and the event's row as encoded.
    fn push(&mut self, partition: i32, offset: i64, event: &EventRow<'_>) -> (bool, &[u8]) {
        let batch = self
            .batches
            .entry(partition)
            .or_insert_with(|| BatchWriter::new(partition));
        let full = batch.len() + 1 >= RELAY_BATCH_EVENTS;
        (full, batch.push(offset, event))
    }

    /// Cuts `partition`'s batch, saying whether the partition was read to its end: the
    /// payload to send, if there is news (events, or that a partition the shared stage waits
    /// for has caught up).
    pub fn cut(&mut self, partition: i32, caught_up: bool) -> Option<Vec<u8>> {
        let batch = self
            .batches
            .entry(partition)
            .or_insert_with(|| BatchWriter::new(partition));
        let news = caught_up && self.catching_up.contains(&partition);
        if batch.is_empty() && !news {
            return None;
        }
        if caught_up {
            self.catching_up.remove(&partition);
        } else {
            self.catching_up.insert(partition);
        }
        Some(batch.finish(caught_up))
    }

    /// The source partitions with events waiting in their batch.
    pub fn filled(&self) -> Vec<i32> {
        self.batches
            .iter()
            .filter(|(_, batch)| !batch.is_empty())
            .map(|(&partition, _)| partition)
            .collect()
    }

    /// The shared stage is to wait for `partition` until this member says it is caught up
    /// (a new assignment: its next end is news, even with nothing passed on).
    pub fn announce_end_of(&mut self, partition: i32) {
        self.catching_up.insert(partition);
    }
}

/// What taking one record of `warden.events` left to do.
#[derive(Debug, Default)]
pub struct Taken {
    /// Alerts to publish, in order.
    pub alerts: Vec<Alert>,
    /// A source partition whose batch for the shared stage is full.
    pub full_batch: Option<i32>,
}

/// The IO-free part of one detect stage: the engine on its inputs' clock, and (keyed stage)
/// the batches passed on.
#[derive(Debug)]
pub struct StageCore {
    stage: DetectStage,
    /// The engine, its clock the frontier of this stage's inputs.
    paced: PacedEngine,
    lateness: TimeDelta,
    /// Keyed stage: every event fed to the engine is passed on to the shared stage.
    relay: Option<RelayBatches>,
    /// Shared stage: per source partition, the highest offset counted (an event passed on
    /// twice, by a worker that died before committing, is counted once).
    counted_up_to: HashMap<i32, i64>,
    last_progress: Option<LastProgress>,
    report: DetectReport,
}

impl StageCore {
    /// `engine` (reporting on `stage`'s subjects) as the stage's detectors.
    pub fn new(stage: DetectStage, engine: Engine, lateness: TimeDelta) -> Self {
        Self {
            stage,
            paced: PacedEngine::new(engine),
            lateness,
            relay: (stage == DetectStage::Keyed).then(RelayBatches::default),
            counted_up_to: HashMap::new(),
            last_progress: None,
            report: DetectReport::default(),
        }
    }

    /// Tells the detectors of a control action (see [`Engine::control`]).
    pub fn control(&mut self, action: &warden_ingest::action::ControlAction) {
        self.paced.engine_mut().control(action);
    }

    /// Starts again from `engine`, knowing nothing of any input (a new assignment). The
    /// batches being filled are kept: what is in them was read and is still to be passed on.
    pub fn restart(&mut self, engine: Engine) {
        self.paced = PacedEngine::new(engine);
        self.last_progress = None;
        self.counted_up_to.clear();
        self.report.num_rebuilds += 1;
    }

    pub fn stage(&self) -> DetectStage {
        self.stage
    }

    pub fn paced(&self) -> &PacedEngine {
        &self.paced
    }

    /// Keyed stage: the batches for the shared stage.
    pub fn relay(&mut self) -> Option<&mut RelayBatches> {
        self.relay.as_mut()
    }

    pub fn report_mut(&mut self) -> &mut DetectReport {
        &mut self.report
    }

    /// What the stage saw, with the engine's counts.
    pub fn report(&self) -> DetectReport {
        let stats = self.paced.engine().stats();
        DetectReport {
            num_late: stats.late,
            num_held: self.paced.held(),
            num_undecodable: self.report.num_undecodable + self.paced.undecodable(),
            ..self.report.clone()
        }
    }

    /// `input` is to be read: the clock waits for it (see [`PacedEngine::expect`]).
    pub fn expect(&mut self, input: i32, now: Instant) {
        self.paced.expect(input, now);
    }

    /// `input` was read to its end.
    pub fn reached_end(&mut self, input: i32, clock: Clock) {
        self.paced.reached_end(input, clock.now, clock.wall);
    }

    /// Keyed stage: takes the record at `offset` of `partition` of `warden.events`, counted
    /// (or held) and passed on, unless `replaying`: then it is counted only, and its alerts
    /// are still returned (the caller holds them back).
    pub fn take_event(
        &mut self,
        partition: i32,
        offset: i64,
        payload: &[u8],
        replaying: bool,
        clock: Clock,
    ) -> Taken {
        let mut full_batch = None;
        match EventRow::from_json(payload) {
            Ok(event) => {
                if self.admit(event.ts, replaying, clock.future) {
                    // Passed on (not when replayed), and counted or held with the row encoded
                    // once for both.
                    let mut encoded = None;
                    if !replaying && let Some(relay) = self.relay.as_mut() {
                        let (full, row) = relay.push(partition, offset, &event);
                        full_batch = full.then_some(partition);
                        encoded = Some(row);
                    }
                    self.paced.offer(&event, encoded, partition, clock.now);
                }
            }
            Err(_) => self.report.num_undecodable += u64::from(!replaying),
        }
        Taken {
            alerts: self.advance(clock),
            full_batch,
        }
    }

    /// Shared stage: counts the events of one batch passed on by the keyed stage, each once,
    /// moving the clock after each (a batch of a backlog spans minutes of event time: an
    /// alert comes with the event that crossed its threshold, as with one event per record).
    pub fn take_batch(&mut self, payload: &[u8], replaying: bool, clock: Clock) -> Vec<Alert> {
        let (now, future) = (clock.now, clock.future);
        let batch = match Batch::parse(payload) {
            Ok(batch) => batch,
            Err(err) => {
                warn!(error = %err, "skipping a record of the shared stage's topic");
                self.report.num_undecodable += u64::from(!replaying);
                return Vec::new();
            }
        };
        let (source, caught_up) = (batch.partition, batch.caught_up);
        let mut alerts = Vec::new();
        for event in batch {
            match event {
                Ok(event) => {
                    if self.counted_before(source, event.offset) {
                        self.report.num_duplicates += u64::from(!replaying);
                    } else if self.admit(event.ts, replaying, future) {
                        if let Err(err) =
                            self.paced
                                .offer_encoded(event.ts, event.encoded, source, now)
                        {
                            warn!(error = %err, "skipping an event of a batch of the shared stage");
                            self.report.num_undecodable += u64::from(!replaying);
                        }
                        alerts.extend(self.advance(clock));
                    }
                }
                Err(err) => {
                    warn!(error = %err, "skipping the rest of a batch of the shared stage");
                    self.report.num_undecodable += u64::from(!replaying);
                }
            }
        }
        if caught_up {
            self.paced.reached_end(source, now, clock.wall);
            alerts.extend(self.advance(clock));
        }
        alerts
    }

    /// Whether an event is to be taken: false, counting it, if it is stamped after `future`.
    fn admit(&mut self, ts: DateTime<Utc>, replaying: bool, future: DateTime<Utc>) -> bool {
        if ts > future {
            self.report.num_future += u64::from(!replaying);
            return false;
        }
        self.report.num_events += 1;
        self.report.num_replayed += u64::from(replaying);
        true
    }

    /// Whether the event at `offset` of source partition `source` was counted already,
    /// noting it as counted if not.
    fn counted_before(&mut self, source: i32, offset: i64) -> bool {
        let counted = self.counted_up_to.entry(source).or_insert(-1);
        if offset <= *counted {
            return true;
        }
        *counted = offset;
        false
    }

    /// Moves the engine's clock to the inputs' frontier ([`PacedEngine::advance`]); returns
    /// the alerts that follow.
    pub fn advance(&mut self, clock: Clock) -> Vec<Alert> {
        let before = self.paced.engine().watermark();
        let alerts = self.paced.advance(clock.now);
        if self.paced.engine().watermark() != before
            && let Some(newest) = self.paced.engine().newest()
        {
            self.last_progress = Some(LastProgress {
                wall: clock.wall,
                newest,
            });
        }
        alerts
    }

    /// The input is quiet: catches up with a frontier that moved without a record (an input
    /// stopped holding it); then, if it is a live stream with no input catching up, moves the
    /// watermark on with the clock so windows close and cleared conditions resolve. Returns
    /// the alerts to publish.
    pub fn idle(&mut self, clock: Clock) -> Vec<Alert> {
        let mut alerts = self.advance(clock);
        if !self.paced.is_settled(clock.now) {
            return alerts;
        }
        let Some(watermark) = idle_watermark(self.last_progress, clock.wall, self.lateness) else {
            return alerts;
        };
        if self
            .paced
            .engine()
            .watermark()
            .is_none_or(|current| current < watermark)
        {
            alerts.extend(self.paced.engine_mut().advance_to(watermark));
        }
        alerts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::at;

    #[test]
    fn a_quiet_live_stream_follows_the_clock() {
        let lateness = TimeDelta::seconds(5);
        let last = LastProgress {
            wall: at(0),
            newest: at(-2),
        };
        assert_eq!(idle_watermark(Some(last), at(30), lateness), Some(at(25)));
        // Nothing has passed since the last event.
        assert_eq!(idle_watermark(Some(last), at(0), lateness), None);
        // No event yet: no time to follow.
        assert_eq!(idle_watermark(None, at(30), lateness), None);
    }

    #[test]
    fn a_quiet_old_stream_keeps_its_event_time() {
        let behind = LastProgress {
            wall: at(0),
            newest: at(-3_600),
        };
        assert_eq!(
            idle_watermark(Some(behind), at(30), TimeDelta::seconds(5)),
            None
        );
    }
}
