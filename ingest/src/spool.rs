//! The disk spool: where audit events wait, in order, while Kafka is unreachable or slow.
//!
//! A spool is a directory of append-only segment files (`{id:020}.seg`) and a `cursor` file.
//! Each record is framed as
//!
//! ```text
//! [body length: u32 LE] [CRC-32 of body: u32 LE] [key length: u16 LE] [key] [payload]
//! ```
//!
//! where the body is everything after the 8-byte header. Records are written with one `write`
//! each, so a process crash loses nothing that was appended; the [`FsyncPolicy`] decides what
//! an OS crash can lose. A write that fails part-way (a full disk) is cut back to the last
//! whole record before anything else is appended, so a later record never follows a torn one.
//! On open, a torn record at the tail of the newest segment (a crash in the middle of a write)
//! is cut off. A record whose checksum or length fails is skipped and counted, never replayed
//! as garbage, and costs only itself: reading resumes at the next offset where a whole,
//! checksummed record starts.
//!
//! The directory is created `0700` and its files `0600`: they hold audit events.
//!
//! Reading is separate from acknowledging: the replayer reads ahead, and only
//! [`Spool::acknowledge`] (called once Kafka has the records) moves the persisted cursor and
//! deletes segments. A restart replays from the cursor, so what was read but not acknowledged
//! is sent again (at least once). One process at a time: the directory is locked.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// Bytes of a record's frame header: body length and checksum.
const HEADER_BYTES: u64 = 8;
/// A body longer than this is a corrupt length field, not a record (events are far smaller).
const MAX_BODY_BYTES: u32 = 64 * 1024 * 1024;
const SEGMENT_SUFFIX: &str = ".seg";
const CURSOR_FILE: &str = "cursor";
const LOCK_FILE: &str = "LOCK";
/// Spool files hold audit events: readable by the owner only.
const PRIVATE_FILE_MODE: u32 = 0o600;
const PRIVATE_DIR_MODE: u32 = 0o700;

/// When appended records are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every batch of appends (group commit): an OS crash loses nothing acknowledged.
    Always,
    /// At most this long after an append.
    Interval(Duration),
    /// Left to the OS: survives a process crash, not necessarily an OS crash.
    Never,
}

/// Where the spool lives and how big it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolOptions {
    pub dir: PathBuf,
    /// Appends fail with [`SpoolError::Full`] past this many bytes on disk.
    pub max_bytes: u64,
    /// A new segment is started when the current one would grow past this.
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
}

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool is full ({max_bytes} bytes)")]
    Full { max_bytes: u64 },
    #[error("spool directory {dir} is in use by another process")]
    Locked { dir: String },
    #[error("spool {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl SpoolError {
    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// A place in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct SpoolPosition {
    pub segment: u64,
    pub offset: u64,
}

/// One record read back, with the position just after it (what to acknowledge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledRecord {
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub end: SpoolPosition,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    id: u64,
    len: u64,
}

/// An open spool directory. Not thread-safe by itself: one owner appends, reads and
/// acknowledges.
#[derive(Debug)]
pub struct Spool {
    options: SpoolOptions,
    /// Held open for the lock's lifetime.
    _lock: File,
    /// Every segment on disk, oldest first; the last one is appended to.
    segments: VecDeque<Segment>,
    active: File,
    /// The next record the reader hands out.
    read: SpoolPosition,
    /// The first record not yet acknowledged (persisted in the cursor file).
    acknowledged: SpoolPosition,
    reader: Option<(u64, BufReader<File>)>,
    unsynced_since: Option<Instant>,
    num_corrupt: u64,
    /// A write to the active segment failed part-way: its tail past the last whole record
    /// must be cut before the next append.
    torn_tail: bool,
}

impl Spool {
    /// Opens (or creates) the spool at `options.dir`, repairing a torn tail.
    pub fn open(options: SpoolOptions) -> Result<Self, SpoolError> {
        let dir = options.dir.clone();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR_MODE)
            .create(&dir)
            .map_err(|err| SpoolError::io(&dir, err))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&lock_path)
            .map_err(|err| SpoolError::io(&lock_path, err))?;
        if lock.try_lock().is_err() {
            return Err(SpoolError::Locked {
                dir: dir.display().to_string(),
            });
        }

        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|err| SpoolError::io(&dir, err))? {
            let entry = entry.map_err(|err| SpoolError::io(&dir, err))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name
                .strip_suffix(SEGMENT_SUFFIX)
                .and_then(|id| id.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();

        let mut segments = VecDeque::new();
        for (index, &id) in ids.iter().enumerate() {
            let path = segment_path(&dir, id);
            let len = if index + 1 == ids.len() {
                repair_tail(&path)?
            } else {
                fs::metadata(&path)
                    .map_err(|err| SpoolError::io(&path, err))?
                    .len()
            };
            segments.push_back(Segment { id, len });
        }
        if segments.is_empty() {
            segments.push_back(Segment { id: 1, len: 0 });
        }

        let cursor = read_cursor(&dir)?;
        let first = segments.front().map(|s| s.id).unwrap_or(1);
        let acknowledged = match cursor {
            Some(cursor) if cursor.segment >= first => cursor,
            _ => SpoolPosition {
                segment: first,
                offset: 0,
            },
        };
        let last = *segments.back().unwrap_or(&Segment { id: 1, len: 0 });
        let active = open_for_append(&segment_path(&dir, last.id))?;
        let spool = Self {
            options,
            _lock: lock,
            segments,
            active,
            read: acknowledged,
            acknowledged,
            reader: None,
            unsynced_since: None,
            num_corrupt: 0,
            torn_tail: false,
        };
        if !spool.is_drained() {
            info!(
                dir = %dir.display(),
                bytes = spool.bytes(),
                "spool holds events from an earlier run; they will be replayed"
            );
        }
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.options.dir
    }

    /// Bytes on disk in segments.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Records whose checksum failed while reading (skipped).
    pub fn num_corrupt(&self) -> u64 {
        self.num_corrupt
    }

    /// True when every appended record has been acknowledged.
    pub fn is_drained(&self) -> bool {
        self.acknowledged >= self.end()
    }

    /// True when the reader has handed out every appended record.
    pub fn is_read_to_end(&self) -> bool {
        self.read >= self.end()
    }

    /// Appends one record. Durability follows the fsync policy; call [`Spool::sync_if_due`]
    /// after a batch.
    pub fn append(&mut self, key: &[u8], payload: &[u8]) -> Result<(), SpoolError> {
        let key = &key[..key.len().min(usize::from(u16::MAX))];
        let body_len = 2 + key.len() + payload.len();
        let record_len = HEADER_BYTES + body_len as u64;
        if self.bytes() + record_len > self.options.max_bytes {
            return Err(SpoolError::Full {
                max_bytes: self.options.max_bytes,
            });
        }
        if self.torn_tail {
            self.cut_torn_tail()?;
        }
        let active_len = self.segments.back().map_or(0, |s| s.len);
        if active_len > 0 && active_len + record_len > self.options.segment_bytes {
            self.rotate()?;
        }
        let mut frame = Vec::with_capacity(record_len as usize);
        frame.extend_from_slice(&(body_len as u32).to_le_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&(key.len() as u16).to_le_bytes());
        frame.extend_from_slice(key);
        frame.extend_from_slice(payload);
        let checksum = crc32fast::hash(&frame[HEADER_BYTES as usize..]);
        frame[4..8].copy_from_slice(&checksum.to_le_bytes());
        let path = self.active_path();
        if let Err(err) = self.active.write_all(&frame) {
            // Some of the frame may be on disk: cut it off now, or before the next append.
            self.torn_tail = true;
            let _ = self.cut_torn_tail();
            return Err(SpoolError::io(&path, err));
        }
        if let Some(active) = self.segments.back_mut() {
            active.len += record_len;
        }
        self.unsynced_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Truncates the active segment to its last whole record.
    fn cut_torn_tail(&mut self) -> Result<(), SpoolError> {
        let path = self.active_path();
        let whole = self.segments.back().map_or(0, |s| s.len);
        self.active
            .set_len(whole)
            .map_err(|err| SpoolError::io(&path, err))?;
        self.torn_tail = false;
        warn!(segment = %path.display(), kept = whole, "cut a partly written spool record");
        Ok(())
    }

    /// Forces appended records to disk if the fsync policy says it is time.
    pub fn sync_if_due(&mut self) -> Result<(), SpoolError> {
        let Some(since) = self.unsynced_since else {
            return Ok(());
        };
        let due = match self.options.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(interval) => since.elapsed() >= interval,
            FsyncPolicy::Never => false,
        };
        if due { self.sync() } else { Ok(()) }
    }

    /// Forces appended records to disk now.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.unsynced_since.take().is_some() {
            let path = self.active_path();
            self.active
                .sync_data()
                .map_err(|err| SpoolError::io(&path, err))?;
        }
        Ok(())
    }

    /// Reads up to `max_records` records after the last one read.
    pub fn read(&mut self, max_records: usize) -> Result<Vec<SpooledRecord>, SpoolError> {
        let mut records = Vec::new();
        while records.len() < max_records && !self.is_read_to_end() {
            let Some(segment) = self.segment(self.read.segment) else {
                // The segment was removed under us (cannot happen with one owner); move on.
                self.advance_to_next_segment();
                continue;
            };
            if self.read.offset >= segment.len {
                self.advance_to_next_segment();
                continue;
            }
            let record = self.read_one(segment)?;
            if let Some(record) = record {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Makes the reader start again at the first unacknowledged record.
    pub fn rewind(&mut self) {
        self.read = self.acknowledged;
        self.reader = None;
    }

    /// Marks everything before `through` as delivered: persists the cursor and deletes the
    /// segments it has passed. A fully drained spool starts a fresh segment.
    pub fn acknowledge(&mut self, through: SpoolPosition) -> Result<(), SpoolError> {
        if through <= self.acknowledged {
            return Ok(());
        }
        self.acknowledged = through;
        if self.read < through {
            self.read = through;
        }
        if self.is_drained() {
            return self.reset();
        }
        while self.segments.len() > 1
            && self
                .segments
                .front()
                .is_some_and(|s| s.id < through.segment)
        {
            if let Some(done) = self.segments.pop_front() {
                self.remove_segment(done.id)?;
            }
        }
        self.write_cursor()
    }

    fn reset(&mut self) -> Result<(), SpoolError> {
        let next_id = self.segments.back().map_or(1, |s| s.id + 1);
        let new_active = open_for_append(&segment_path(&self.options.dir, next_id))?;
        self.active = new_active;
        self.reader = None;
        while let Some(done) = self.segments.pop_front() {
            self.remove_segment(done.id)?;
        }
        self.segments.push_back(Segment {
            id: next_id,
            len: 0,
        });
        self.acknowledged = SpoolPosition {
            segment: next_id,
            offset: 0,
        };
        self.read = self.acknowledged;
        self.unsynced_since = None;
        self.write_cursor()
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        self.sync()?;
        let next_id = self.segments.back().map_or(1, |s| s.id + 1);
        self.active = open_for_append(&segment_path(&self.options.dir, next_id))?;
        self.segments.push_back(Segment {
            id: next_id,
            len: 0,
        });
        Ok(())
    }

    fn end(&self) -> SpoolPosition {
        let last = self
            .segments
            .back()
            .copied()
            .unwrap_or(Segment { id: 1, len: 0 });
        SpoolPosition {
            segment: last.id,
            offset: last.len,
        }
    }

    fn segment(&self, id: u64) -> Option<Segment> {
        self.segments.iter().find(|s| s.id == id).copied()
    }

    fn advance_to_next_segment(&mut self) {
        let next = self.segments.iter().find(|s| s.id > self.read.segment);
        self.read = match next {
            Some(next) => SpoolPosition {
                segment: next.id,
                offset: 0,
            },
            None => self.end(),
        };
        self.reader = None;
    }

    /// Reads the record at the read position, or skips a corrupt one (returns `None` then):
    /// reading resumes where the next whole record starts, or at the segment's end.
    fn read_one(&mut self, segment: Segment) -> Result<Option<SpooledRecord>, SpoolError> {
        let path = segment_path(&self.options.dir, segment.id);
        let reader = match &mut self.reader {
            Some((id, reader)) if *id == segment.id => reader,
            _ => {
                let mut file = File::open(&path).map_err(|err| SpoolError::io(&path, err))?;
                file.seek(SeekFrom::Start(self.read.offset))
                    .map_err(|err| SpoolError::io(&path, err))?;
                &mut self.reader.insert((segment.id, BufReader::new(file))).1
            }
        };
        let remaining = segment.len - self.read.offset;
        match read_frame(reader, remaining) {
            Ok(Some(frame)) => {
                self.read.offset += frame.len;
                Ok(Some(SpooledRecord {
                    key: frame.key,
                    payload: frame.payload,
                    end: self.read,
                }))
            }
            Ok(None) => {
                self.num_corrupt += 1;
                let corrupt_at = self.read.offset;
                let resume = next_whole_record(&path, corrupt_at + 1, segment.len)
                    .map_err(|err| SpoolError::io(&path, err))?
                    .unwrap_or(segment.len);
                warn!(
                    segment = %path.display(),
                    offset = corrupt_at,
                    skipped = resume - corrupt_at,
                    "corrupt spool record skipped"
                );
                self.read.offset = resume;
                self.reader = None;
                Ok(None)
            }
            Err(err) => Err(SpoolError::io(&path, err)),
        }
    }

    fn active_path(&self) -> PathBuf {
        segment_path(&self.options.dir, self.end().segment)
    }

    fn remove_segment(&self, id: u64) -> Result<(), SpoolError> {
        let path = segment_path(&self.options.dir, id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(SpoolError::io(&path, err)),
        }
    }

    /// Writes the cursor with write-then-rename, so it is always whole.
    fn write_cursor(&self) -> Result<(), SpoolError> {
        let path = self.options.dir.join(CURSOR_FILE);
        let temporary = self.options.dir.join(format!("{CURSOR_FILE}.tmp"));
        let text = format!(
            "{} {}\n",
            self.acknowledged.segment, self.acknowledged.offset
        );
        OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&temporary)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(|err| SpoolError::io(&temporary, err))?;
        fs::rename(&temporary, &path).map_err(|err| SpoolError::io(&path, err))
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
}

fn open_for_append(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
        .map_err(|err| SpoolError::io(path, err))
}

fn read_cursor(dir: &Path) -> Result<Option<SpoolPosition>, SpoolError> {
    let path = dir.join(CURSOR_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(SpoolError::io(&path, err)),
    };
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(segment)), Some(Ok(offset))) => Ok(Some(SpoolPosition { segment, offset })),
        _ => {
            warn!(path = %path.display(), "unreadable spool cursor; replaying from the start");
            Ok(None)
        }
    }
}

/// One decoded frame: key, payload, and its length on disk.
struct Frame {
    key: Vec<u8>,
    payload: Vec<u8>,
    len: u64,
}

/// Reads one frame of at most `remaining` bytes: `Ok(None)` if it is torn or corrupt.
fn read_frame(reader: &mut impl Read, remaining: u64) -> io::Result<Option<Frame>> {
    if remaining < HEADER_BYTES {
        return Ok(None);
    }
    let mut header = [0u8; HEADER_BYTES as usize];
    reader.read_exact(&mut header)?;
    let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(2..=MAX_BODY_BYTES).contains(&body_len) || u64::from(body_len) > remaining - HEADER_BYTES {
        return Ok(None);
    }
    let mut body = vec![0u8; body_len as usize];
    reader.read_exact(&mut body)?;
    if crc32fast::hash(&body) != checksum {
        return Ok(None);
    }
    let key_len = usize::from(u16::from_le_bytes([body[0], body[1]]));
    if 2 + key_len > body.len() {
        return Ok(None);
    }
    let payload = body.split_off(2 + key_len);
    let key = body.split_off(2);
    Ok(Some(Frame {
        key,
        payload,
        len: HEADER_BYTES + u64::from(body_len),
    }))
}

/// Bytes of candidate records one resynchronisation may checksum before it gives up on the
/// rest of the segment: bounds the scan of a segment full of garbage (where many offsets
/// look like a plausible header) to well under a second.
const RESYNC_CHECKSUM_BUDGET: u64 = 512 * 1024 * 1024;

/// The first offset in `from..len` of `path` where a whole, checksummed record starts.
/// Reads the rest of the segment (segments are bounded by `spool_segment_mb`); ASCII event
/// bytes never look like a frame header, so almost every offset is rejected at once.
fn next_whole_record(path: &Path, from: u64, len: u64) -> io::Result<Option<u64>> {
    if from >= len {
        return Ok(None);
    }
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut rest = Vec::new();
    file.take(len - from).read_to_end(&mut rest)?;
    let mut budget = RESYNC_CHECKSUM_BUDGET;
    for start in 0..rest.len() {
        match is_whole_frame(&rest[start..], &mut budget) {
            Some(true) => return Ok(Some(from + start as u64)),
            Some(false) => {}
            None => {
                warn!(segment = %path.display(), offset = from + start as u64, "spool resync gave up: the rest of the segment is skipped");
                return Ok(None);
            }
        }
    }
    Ok(None)
}

/// Whether `bytes` starts with a whole frame whose checksum holds; `None` once `budget`
/// (bytes left to checksum) cannot cover the candidate.
fn is_whole_frame(bytes: &[u8], budget: &mut u64) -> Option<bool> {
    let Some(header) = bytes.get(..HEADER_BYTES as usize) else {
        return Some(false);
    };
    let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(2..=MAX_BODY_BYTES).contains(&body_len) {
        return Some(false);
    }
    let Some(body) = bytes.get(HEADER_BYTES as usize..HEADER_BYTES as usize + body_len as usize)
    else {
        return Some(false);
    };
    let key_len = usize::from(u16::from_le_bytes([body[0], body[1]]));
    if 2 + key_len > body.len() {
        return Some(false);
    }
    *budget = budget.checked_sub(u64::from(body_len))?;
    Some(crc32fast::hash(body) == checksum)
}

/// Scans the newest segment and truncates it after its last whole record. Returns its length.
fn repair_tail(path: &Path) -> Result<u64, SpoolError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|err| SpoolError::io(path, err))?;
    let len = file
        .metadata()
        .map_err(|err| SpoolError::io(path, err))?
        .len();
    let mut reader = BufReader::new(&file);
    let mut valid = 0;
    while valid < len {
        match read_frame(&mut reader, len - valid) {
            Ok(Some(frame)) => valid += frame.len,
            Ok(None) | Err(_) => {
                // A bad record with a whole one after it is corruption in place, which the
                // reader skips; only a bad record with nothing whole after it is a torn tail.
                match next_whole_record(path, valid + 1, len) {
                    Ok(Some(next)) => {
                        valid = next;
                        reader = BufReader::new(&file);
                        reader
                            .seek(SeekFrom::Start(valid))
                            .map_err(|err| SpoolError::io(path, err))?;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
    if valid < len {
        warn!(
            segment = %path.display(),
            kept = valid,
            cut = len - valid,
            "spool segment ends in a torn record (crash while writing); cutting it off"
        );
        file.set_len(valid)
            .map_err(|err| SpoolError::io(path, err))?;
    }
    Ok(valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> SpoolOptions {
        SpoolOptions {
            dir: dir.to_path_buf(),
            max_bytes: 1 << 20,
            segment_bytes: 256,
            fsync: FsyncPolicy::Always,
        }
    }

    fn payloads(records: &[SpooledRecord]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect()
    }

    #[test]
    fn replays_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::open(options(dir.path())).expect("open");
        for i in 0..20 {
            spool
                .append(b"key", format!("event-{i:02}-padding-padding").as_bytes())
                .expect("append");
        }
        spool.sync().expect("sync");
        assert!(spool.segments.len() > 1, "rotated into several segments");
        let first = spool.read(5).expect("read");
        assert_eq!(payloads(&first)[0], "event-00-padding-padding");
        assert_eq!(first[0].key, b"key");
        spool.acknowledge(first[4].end).expect("ack");
        // Read further but do not acknowledge: a restart sends those again.
        let _unacknowledged = spool.read(3).expect("read");
        drop(spool);

        let mut spool = Spool::open(options(dir.path())).expect("reopen");
        let rest = spool.read(100).expect("read");
        let expected: Vec<String> = (5..20)
            .map(|i| format!("event-{i:02}-padding-padding"))
            .collect();
        assert_eq!(payloads(&rest), expected);
        spool.acknowledge(rest[rest.len() - 1].end).expect("ack");
        assert!(spool.is_drained());
        assert_eq!(spool.bytes(), 0);
        let segment_files = fs::read_dir(dir.path())
            .expect("ls")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(SEGMENT_SUFFIX))
            })
            .count();
        assert_eq!(segment_files, 1, "drained segments are deleted");
    }

    #[test]
    fn rewinding_resends_only_what_was_not_acknowledged() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::open(options(dir.path())).expect("open");
        for i in 0..6 {
            spool
                .append(b"k", format!("e{i}").as_bytes())
                .expect("append");
        }
        let batch = spool.read(4).expect("read");
        spool.acknowledge(batch[1].end).expect("ack");
        spool.rewind();
        assert_eq!(
            payloads(&spool.read(10).expect("read")),
            ["e2", "e3", "e4", "e5"]
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_corrupt_record_skipped() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::open(SpoolOptions {
            segment_bytes: 1 << 20,
            ..options(dir.path())
        })
        .expect("open");
        for i in 0..3 {
            spool
                .append(b"k", format!("e{i}").as_bytes())
                .expect("append");
        }
        drop(spool);
        let segment = segment_path(dir.path(), 1);
        // A crash in the middle of the fourth write.
        let mut file = OpenOptions::new()
            .append(true)
            .open(&segment)
            .expect("open");
        file.write_all(&[40, 0, 0, 0, 1, 2]).expect("torn write");
        drop(file);
        let mut spool = Spool::open(options(dir.path())).expect("reopen");
        assert_eq!(payloads(&spool.read(10).expect("read")), ["e0", "e1", "e2"]);
        drop(spool);

        // Flip a byte in the second record's payload: that record alone is skipped, and
        // counted; the one after it is still read (the tail repair keeps it too).
        let mut bytes = fs::read(&segment).expect("read");
        let second_payload = bytes.len() / 3 + 12;
        bytes[second_payload] ^= 0xff;
        fs::write(&segment, bytes).expect("write");
        let mut spool = Spool::open(SpoolOptions {
            segment_bytes: 1 << 20,
            ..options(dir.path())
        })
        .expect("reopen");
        spool.rewind();
        assert_eq!(payloads(&spool.read(10).expect("read")), ["e0", "e2"]);
        assert_eq!(spool.num_corrupt(), 1);
    }

    #[test]
    fn a_corrupt_length_costs_only_its_own_record() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::open(SpoolOptions {
            segment_bytes: 1 << 20,
            ..options(dir.path())
        })
        .expect("open");
        let events: Vec<String> = (0..50).map(|i| format!("{{\"event\":{i}}}")).collect();
        for event in &events {
            spool.append(b"key", event.as_bytes()).expect("append");
        }
        // Another record after, in a newer segment, so the damaged one is not the tail's.
        spool.rotate().expect("rotate");
        spool.append(b"key", b"after").expect("append");
        drop(spool);
        let segment = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&segment).expect("read");
        let record_len = bytes.len() / events.len();
        // The 11th record's length field now claims the whole segment and more.
        bytes[10 * record_len..10 * record_len + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        fs::write(&segment, bytes).expect("write");
        let mut spool = Spool::open(options(dir.path())).expect("reopen");
        let read = payloads(&spool.read(100).expect("read"));
        let mut expected: Vec<String> = events.clone();
        expected.remove(10);
        expected.push("after".to_owned());
        assert_eq!(read, expected);
        assert_eq!(spool.num_corrupt(), 1);
    }

    #[test]
    fn a_segment_of_garbage_is_skipped_in_bounded_time() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("garbage.seg");
        // Every offset looks like a header announcing a large body: the worst case.
        let mut garbage = Vec::new();
        while garbage.len() < 8 * 1024 * 1024 {
            garbage.extend_from_slice(&[0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00]);
        }
        fs::write(&path, &garbage).expect("write");
        let started = Instant::now();
        let found = next_whole_record(&path, 1, garbage.len() as u64).expect("read");
        assert_eq!(found, None);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn spool_files_are_private_to_their_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let spool_dir = dir.path().join("spool");
        let mut spool = Spool::open(options(&spool_dir)).expect("open");
        spool.append(b"k", b"payload").expect("append");
        let batch = spool.read(1).expect("read");
        spool.acknowledge(batch[0].end).expect("ack");
        spool.append(b"k", b"another").expect("append");
        let mode = |path: &Path| fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&spool_dir), 0o700);
        for entry in fs::read_dir(&spool_dir).expect("ls") {
            let path = entry.expect("entry").path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }

    /// A full disk: an append that fails part-way leaves no torn record behind for later
    /// appends to follow. Needs root (it mounts a 64 KiB tmpfs), as CI runs.
    #[test]
    fn a_full_disk_leaves_no_torn_record_before_later_ones() {
        if !running_as_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("dir");
        let mount_point = dir.path().join("small-disk");
        fs::create_dir(&mount_point).expect("mount point");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&mount_point)
            .status()
            .expect("mount runs");
        assert!(mounted.success(), "mounting a tmpfs failed");
        let unmount = Unmount(mount_point.clone());
        // Room to free once the disk is full.
        fs::write(mount_point.join("filler"), vec![0u8; 16 * 1024]).expect("filler");

        let spool_dir = mount_point.join("spool");
        let spool_options = SpoolOptions {
            dir: spool_dir,
            max_bytes: 1 << 30,
            segment_bytes: 1 << 30,
            fsync: FsyncPolicy::Never,
        };
        let mut spool = Spool::open(spool_options.clone()).expect("open");
        let payload = |i: usize| format!("{i:05}{}", "e".repeat(995));
        let mut accepted = Vec::new();
        let mut failures = 0;
        for i in 0..200 {
            match spool.append(b"k", payload(i).as_bytes()) {
                Ok(()) => accepted.push(payload(i)),
                Err(_) => failures += 1,
            }
            if failures == 3 {
                break;
            }
        }
        assert!(failures > 0, "the disk never filled");
        fs::remove_file(mount_point.join("filler")).expect("free space");
        for i in 1000..1005 {
            spool
                .append(b"k", payload(i).as_bytes())
                .expect("append after space is freed");
            accepted.push(payload(i));
        }
        drop(spool);

        let mut spool = Spool::open(spool_options).expect("reopen");
        let read = payloads(&spool.read(10_000).expect("read"));
        assert_eq!(read.len(), accepted.len());
        assert!(
            read == accepted,
            "records lost or reordered after a full disk"
        );
        assert_eq!(spool.num_corrupt(), 0);
        drop(spool);
        drop(unmount);
    }

    fn running_as_root() -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
    }

    /// Unmounts on drop, also when the test fails.
    struct Unmount(PathBuf);

    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    #[test]
    fn appends_past_the_limit_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::open(SpoolOptions {
            max_bytes: 64,
            ..options(dir.path())
        })
        .expect("open");
        spool.append(b"k", &[7; 40]).expect("fits");
        assert!(matches!(
            spool.append(b"k", &[7; 40]),
            Err(SpoolError::Full { max_bytes: 64 })
        ));
    }

    #[test]
    fn a_second_process_cannot_open_the_same_spool() {
        let dir = tempfile::tempdir().expect("dir");
        let _first = Spool::open(options(dir.path())).expect("open");
        assert!(matches!(
            Spool::open(options(dir.path())),
            Err(SpoolError::Locked { .. })
        ));
    }
}
