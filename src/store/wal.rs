//! Write-ahead log: every acknowledged batch is one checksummed record in the open segment.
//!
//! Segment `wal-<seq>.log` starts with [`MAGIC`], then records `[len: u32][crc32: u32][payload]`
//! (little endian). A payload is a kind byte, then for [`SAMPLES`] `[series: u32]` and per series
//! `[key_len: u32][key utf-8][samples: u32][(timestamp_ms: i64, value: f64)...]`, for [`DELETION`]
//! `[key_len: u32][key utf-8]`; a key is the canonical [`SeriesId`] text. Segments of the first
//! format ([`MAGIC_V1`], written before series could be deleted) have no kind byte and hold
//! sample records only; they are still replayed.
//!
//! A record is written with one `write` call before the batch is acknowledged, so it survives the
//! process being killed; with `fsync` it is also flushed to the device before acknowledgement. A
//! deletion is always flushed to the device before it is acknowledged.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::domain::{Sample, SeriesId};

use super::{OpenMode, SeriesSamples, StoreError};

/// First bytes of every segment written; bumped if the record format changes.
const MAGIC: &[u8; 8] = b"PSWAL002";
/// First bytes of a segment of the first format: sample records without a kind byte.
const MAGIC_V1: &[u8; 8] = b"PSWAL001";
/// Kind byte of a record holding a batch of samples.
const SAMPLES: u8 = 0;
/// Kind byte of a record deleting one series with every sample logged for it before.
const DELETION: u8 = 1;
/// Bytes of a record header (length and checksum).
const RECORD_HEADER: usize = 8;
/// Smallest payload a record may claim: a series count (and a kind byte, in the current format). A
/// run of zero bytes would otherwise pass as a record, since an empty payload's checksum is 0.
const MIN_RECORD_BYTES: usize = 4;
/// Largest payload a record may claim; anything larger is damage, not data (a batch is bounded upstream).
const MAX_RECORD_BYTES: usize = 1 << 30;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Path of segment `sequence` in `dir`.
pub(super) fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("wal-{sequence:016}.log"))
}

/// The segments in `dir`, oldest first.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(sequence) = name
            .to_str()
            .and_then(|name| name.strip_prefix("wal-"))
            .and_then(|rest| rest.strip_suffix(".log"))
            .and_then(|digits| digits.parse::<u64>().ok())
        else {
            continue;
        };
        segments.push((sequence, entry.path()));
    }
    segments.sort_unstable_by_key(|(sequence, _)| *sequence);
    Ok(segments)
}

/// Makes a directory entry durable (new or renamed files in it).
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    crate::atomic_file::sync_dir(dir).map_err(io_error(dir))
}

/// One record of the log.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Record {
    /// A batch of samples, acknowledged together.
    Samples(Vec<SeriesSamples>),
    /// A deleted series: every sample logged for it before this record is gone.
    Deletion(SeriesId),
}

/// The record layout of a segment, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// [`MAGIC_V1`]: sample records without a kind byte.
    SamplesOnly,
    /// [`MAGIC`]: records led by a kind byte.
    Kinded,
}

/// Starts a record of `kind` in `buffer`, leaving room for its header.
fn begin_record(buffer: &mut Vec<u8>, kind: u8) {
    buffer.clear();
    buffer.extend_from_slice(&[0; RECORD_HEADER]);
    buffer.push(kind);
}

/// Writes the length and checksum of the payload after the header.
fn finish_record(buffer: &mut [u8]) {
    let payload_len = (buffer.len() - RECORD_HEADER) as u32;
    let checksum = crc32fast::hash(&buffer[RECORD_HEADER..]);
    buffer[0..4].copy_from_slice(&payload_len.to_le_bytes());
    buffer[4..8].copy_from_slice(&checksum.to_le_bytes());
}

/// Appends a series key: its length, then its canonical text.
fn put_key(buffer: &mut Vec<u8>, series: &SeriesId) {
    let key = series.to_string();
    buffer.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buffer.extend_from_slice(key.as_bytes());
}

/// Encodes a batch as one record (header included) into `buffer`.
fn encode_batch(batch: &[SeriesSamples], buffer: &mut Vec<u8>) {
    begin_record(buffer, SAMPLES);
    buffer.extend_from_slice(&(batch.len() as u32).to_le_bytes());
    for entry in batch {
        put_key(buffer, &entry.series);
        buffer.extend_from_slice(&(entry.samples.len() as u32).to_le_bytes());
        buffer.reserve(entry.samples.len() * 16);
        for sample in &entry.samples {
            buffer.extend_from_slice(&sample.timestamp.as_millis().to_le_bytes());
            buffer.extend_from_slice(&sample.value.to_le_bytes());
        }
    }
    finish_record(buffer);
}

/// Encodes the deletion of `series` as one record (header included) into `buffer`.
fn encode_deletion(series: &SeriesId, buffer: &mut Vec<u8>) {
    begin_record(buffer, DELETION);
    put_key(buffer, series);
    finish_record(buffer);
}

/// Reads a little-endian integer or float from the front of `input`.
fn take<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], String> {
    let (head, rest) = input
        .split_first_chunk::<N>()
        .ok_or_else(|| "record payload ends early".to_owned())?;
    *input = rest;
    Ok(*head)
}

/// Reads a series key from the front of `input`.
fn take_key(input: &mut &[u8]) -> Result<SeriesId, String> {
    let key_len = u32::from_le_bytes(take(input)?) as usize;
    if key_len > input.len() {
        return Err("series key runs past the record".to_owned());
    }
    let (key, rest) = input.split_at(key_len);
    *input = rest;
    let key = std::str::from_utf8(key).map_err(|error| format!("series key: {error}"))?;
    key.parse().map_err(|error| format!("series key: {error}"))
}

/// Decodes a checksum-verified payload of a segment in `format`.
fn decode_payload(format: Format, mut payload: &[u8]) -> Result<Record, String> {
    let kind = match format {
        Format::SamplesOnly => SAMPLES,
        Format::Kinded => take::<1>(&mut payload)?[0],
    };
    let record = match kind {
        SAMPLES => Record::Samples(decode_batch(&mut payload)?),
        DELETION => Record::Deletion(take_key(&mut payload)?),
        other => return Err(format!("unknown record kind {other}")),
    };
    if !payload.is_empty() {
        return Err(format!(
            "{} unexpected bytes after the record's content",
            payload.len()
        ));
    }
    Ok(record)
}

/// Decodes the series of a sample record from the front of `payload`.
fn decode_batch(payload: &mut &[u8]) -> Result<Vec<SeriesSamples>, String> {
    let series_count = u32::from_le_bytes(take(payload)?) as usize;
    let mut batch = Vec::with_capacity(series_count.min(1024));
    for _ in 0..series_count {
        let series = take_key(payload)?;
        let sample_count = u32::from_le_bytes(take(payload)?) as usize;
        if sample_count.saturating_mul(16) > payload.len() {
            return Err("samples run past the record".to_owned());
        }
        let mut samples = Vec::with_capacity(sample_count);
        for _ in 0..sample_count {
            let timestamp = i64::from_le_bytes(take(payload)?);
            let value = f64::from_le_bytes(take(payload)?);
            samples.push(Sample::new(timestamp, value));
        }
        batch.push(SeriesSamples { series, samples });
    }
    Ok(batch)
}

/// What replaying one segment found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReplayOutcome {
    /// Records applied.
    pub(super) records: u64,
    /// Bytes after the last complete record of the newest segment, a write torn by a crash or
    /// still under way: cut off the file by a read-write open, ignored by a read-only one.
    pub(super) torn_bytes: u64,
    /// Bytes of the records replayed.
    pub(super) record_bytes: u64,
}

/// The offset of the first record after `offset` that checks out (its length fits, its checksum
/// matches and its payload decodes), if any.
///
/// A crash can only tear the last write, so a bad record with such a record after it is damage to
/// acknowledged data, not a torn tail. Every byte position is tried, since the bad record's length
/// cannot be trusted; this runs only once a bad record was found.
fn next_valid_record(bytes: &[u8], offset: usize, format: Format) -> Option<usize> {
    (offset + 1..bytes.len().saturating_sub(RECORD_HEADER)).find(|&start| {
        let header = &bytes[start..start + RECORD_HEADER];
        let payload_len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let checksum = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let payload_start = start + RECORD_HEADER;
        payload_len >= MIN_RECORD_BYTES
            && payload_len <= bytes.len() - payload_start
            && crc32fast::hash(&bytes[payload_start..payload_start + payload_len]) == checksum
            && decode_payload(format, &bytes[payload_start..payload_start + payload_len]).is_ok()
    })
}

/// Replays the records of one segment through `apply`.
///
/// In the newest segment a record that is cut short or fails its checksum, with no valid record
/// after it, is a write torn by a crash (or, for a reader beside a running writer, one still under
/// way): it and everything after it were never acknowledged, so [`OpenMode::ReadWrite`] truncates
/// the file there and [`OpenMode::ReadOnly`] stops reading there. A bad record followed by a valid
/// one, or any bad record in an older segment, is corruption: an error, and the file is left as it
/// is.
pub(super) fn replay_segment(
    path: &Path,
    is_newest: bool,
    mode: OpenMode,
    mut apply: impl FnMut(Record),
) -> Result<ReplayOutcome, StoreError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(io_error(path))?;
    let mut outcome = ReplayOutcome::default();
    let format = if bytes.starts_with(MAGIC_V1) {
        Format::SamplesOnly
    } else {
        Format::Kinded
    };
    let damaged = |offset: usize, reason: String| -> Result<u64, StoreError> {
        if !is_newest {
            return Err(StoreError::CorruptLog {
                path: path.to_owned(),
                offset: offset as u64,
                reason,
            });
        }
        if let Some(next) = next_valid_record(&bytes, offset, format) {
            return Err(StoreError::CorruptLog {
                path: path.to_owned(),
                offset: offset as u64,
                reason: format!(
                    "{reason}, yet a valid record follows at byte {next}: damage, not a torn tail"
                ),
            });
        }
        let dropped = (bytes.len() - offset) as u64;
        if mode == OpenMode::ReadOnly {
            tracing::info!(
                path = %path.display(),
                offset,
                ignored_bytes = dropped,
                %reason,
                "reading the write-ahead log up to its last complete record"
            );
            return Ok(dropped);
        }
        tracing::warn!(
            path = %path.display(),
            offset,
            dropped_bytes = dropped,
            %reason,
            "truncating torn tail of write-ahead log"
        );
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|file| {
                file.set_len(offset as u64)?;
                file.sync_all()
            })
            .map_err(io_error(path))?;
        Ok(dropped)
    };
    if bytes.len() < MAGIC.len() || !(bytes.starts_with(MAGIC) || bytes.starts_with(MAGIC_V1)) {
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(&bytes) {
            // The segment was being created when the process died: it never held a record, so it
            // is removed wherever it is. Truncating it to nothing would leave an empty segment
            // that, once a newer one exists, reads as a damaged older segment at the next open.
            // A reader leaves it to the writer (which may be creating it right now).
            outcome.torn_bytes = bytes.len() as u64;
            if mode == OpenMode::ReadOnly {
                return Ok(outcome);
            }
            tracing::warn!(
                path = %path.display(),
                bytes = bytes.len(),
                "removing write-ahead log segment whose header was cut short"
            );
            std::fs::remove_file(path).map_err(io_error(path))?;
            return Ok(outcome);
        }
        return Err(StoreError::CorruptLog {
            path: path.to_owned(),
            offset: 0,
            reason: "not a prescale write-ahead log segment".to_owned(),
        });
    }
    let mut offset = MAGIC.len();
    while offset < bytes.len() {
        let remaining = &bytes[offset..];
        if remaining.len() < RECORD_HEADER {
            outcome.torn_bytes = damaged(offset, "record header cut short".to_owned())?;
            break;
        }
        let payload_len = u32::from_le_bytes(remaining[0..4].try_into().expect("4 bytes")) as usize;
        let checksum = u32::from_le_bytes(remaining[4..8].try_into().expect("4 bytes"));
        if payload_len > MAX_RECORD_BYTES || RECORD_HEADER + payload_len > remaining.len() {
            outcome.torn_bytes = damaged(offset, "record cut short".to_owned())?;
            break;
        }
        if payload_len < MIN_RECORD_BYTES {
            outcome.torn_bytes = damaged(offset, "record shorter than any batch".to_owned())?;
            break;
        }
        let payload = &remaining[RECORD_HEADER..RECORD_HEADER + payload_len];
        if crc32fast::hash(payload) != checksum {
            outcome.torn_bytes = damaged(offset, "checksum mismatch".to_owned())?;
            break;
        }
        let record = decode_payload(format, payload).map_err(|reason| StoreError::CorruptLog {
            path: path.to_owned(),
            offset: offset as u64,
            reason,
        })?;
        apply(record);
        outcome.records += 1;
        outcome.record_bytes += (RECORD_HEADER + payload_len) as u64;
        offset += RECORD_HEADER + payload_len;
    }
    Ok(outcome)
}

/// The open segment that new records are appended to.
#[derive(Debug)]
pub(super) struct Wal {
    /// Directory holding the segments.
    dir: PathBuf,
    /// The open segment, written without user-space buffering so a returned write is in the kernel.
    file: File,
    /// Sequence number of the open segment.
    sequence: u64,
    /// Length of the open segment after the last complete record: where a failed write is rolled back to.
    len: u64,
    /// Bytes logged since the last checkpoint, to decide when the next is due.
    bytes_since_checkpoint: u64,
    /// Reused encoding buffer, so appends do not allocate per record.
    buffer: Vec<u8>,
    /// Flush every record to the device before acknowledging it (survives power loss, not only crashes).
    fsync: bool,
    /// Set when a failed write could not be rolled back; the log then refuses further writes.
    poisoned: Option<String>,
}

impl Wal {
    /// Creates segment `sequence` in `dir` and opens it for appending.
    pub(super) fn create(dir: &Path, sequence: u64, fsync: bool) -> Result<Self, StoreError> {
        let path = segment_path(dir, sequence);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        file.write_all(MAGIC).map_err(io_error(&path))?;
        file.sync_all().map_err(io_error(&path))?;
        sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            file,
            sequence,
            len: MAGIC.len() as u64,
            bytes_since_checkpoint: 0,
            buffer: Vec::new(),
            fsync,
            poisoned: None,
        })
    }

    /// Bytes logged since the last checkpoint.
    pub(super) fn bytes_since_checkpoint(&self) -> u64 {
        self.bytes_since_checkpoint
    }

    /// Appends one batch as one record; on return `Ok` the batch is acknowledged.
    pub(super) fn append(&mut self, batch: &[SeriesSamples]) -> Result<(), StoreError> {
        self.check_poisoned()?;
        encode_batch(batch, &mut self.buffer);
        self.write_buffer(self.fsync)
    }

    /// Appends the deletion of `series` and flushes it to the device whatever `fsync` says: a
    /// deleted series must not come back, even after a power loss.
    pub(super) fn append_deletion(&mut self, series: &SeriesId) -> Result<(), StoreError> {
        self.check_poisoned()?;
        encode_deletion(series, &mut self.buffer);
        self.write_buffer(true)
    }

    /// Flushes what was logged to the device, for a shutdown: with `fsync` off, acknowledged
    /// records are then safe from a power loss too.
    pub(super) fn sync(&mut self) -> Result<(), StoreError> {
        let path = segment_path(&self.dir, self.sequence);
        self.file.sync_data().map_err(io_error(&path))
    }

    /// Counts `bytes` logged by earlier processes and not yet checkpointed (the segments replayed
    /// at open), so the next checkpoint comes as soon as it would have without the restart.
    pub(super) fn add_replayed_bytes(&mut self, bytes: u64) {
        self.bytes_since_checkpoint += bytes;
    }

    /// The error to refuse writes with once a failed write could not be rolled back.
    fn check_poisoned(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(reason) => Err(StoreError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Writes the encoded record in `buffer`, flushed to the device when `sync`; rolls a partial
    /// write back.
    fn write_buffer(&mut self, sync: bool) -> Result<(), StoreError> {
        let path = segment_path(&self.dir, self.sequence);
        let written = self
            .file
            .write_all(&self.buffer)
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        if let Err(source) = written {
            // Cut the partial record off so later records do not follow garbage.
            if let Err(rollback) = self.file.set_len(self.len) {
                self.poisoned = Some(format!(
                    "write failed ({source}), rollback failed ({rollback})"
                ));
            }
            return Err(StoreError::Io { path, source });
        }
        self.len += self.buffer.len() as u64;
        self.bytes_since_checkpoint += self.buffer.len() as u64;
        Ok(())
    }

    /// Closes the open segment and starts the next; returns the sequence of the closed one.
    pub(super) fn rotate(&mut self) -> Result<u64, StoreError> {
        let closed = self.sequence;
        let path = segment_path(&self.dir, closed);
        self.file.sync_all().map_err(io_error(&path))?;
        let next = Self::create(&self.dir, closed + 1, self.fsync)?;
        *self = next;
        Ok(closed)
    }

    /// Deletes segments up to and including `sequence`, which a checkpoint now covers.
    pub(super) fn remove_through(dir: &Path, sequence: u64) -> Result<(), StoreError> {
        for (segment, path) in list_segments(dir)? {
            if segment <= sequence {
                fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(name: &str, samples: &[(i64, f64)]) -> Vec<SeriesSamples> {
        vec![SeriesSamples {
            series: SeriesId::with_labels(name, [("host", "a\"b")]).unwrap(),
            samples: samples.iter().map(|(t, v)| Sample::new(*t, *v)).collect(),
        }]
    }

    fn replay_all(
        path: &Path,
        is_newest: bool,
    ) -> Result<(Vec<SeriesSamples>, ReplayOutcome), StoreError> {
        replay_in(path, is_newest, OpenMode::ReadWrite)
    }

    /// The batches of the segment at `path` and what its replay found, opened in `mode`.
    fn replay_in(
        path: &Path,
        is_newest: bool,
        mode: OpenMode,
    ) -> Result<(Vec<SeriesSamples>, ReplayOutcome), StoreError> {
        let mut seen = Vec::new();
        let outcome = replay_segment(path, is_newest, mode, |record| match record {
            Record::Samples(batch) => seen.extend(batch),
            Record::Deletion(series) => panic!("unexpected deletion of {series}"),
        })?;
        Ok((seen, outcome))
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1, false).unwrap();
        wal.append(&batch("cpu", &[(1, 1.5), (2, -2.0)])).unwrap();
        wal.append(&batch("mem", &[(3, 3.0)])).unwrap();
        let (seen, outcome) = replay_all(&segment_path(dir.path(), 1), true).unwrap();
        assert_eq!(
            outcome,
            ReplayOutcome {
                records: 2,
                torn_bytes: 0,
                record_bytes: fs::metadata(segment_path(dir.path(), 1)).unwrap().len()
                    - MAGIC.len() as u64,
            }
        );
        assert_eq!(seen[0], batch("cpu", &[(1, 1.5), (2, -2.0)])[0]);
        assert_eq!(seen[1], batch("mem", &[(3, 3.0)])[0]);
    }

    #[test]
    fn deletions_replay_in_order_with_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1, false).unwrap();
        let first = batch("cpu", &[(1, 1.0)]);
        wal.append(&first).unwrap();
        wal.append_deletion(&first[0].series).unwrap();
        wal.append(&batch("cpu", &[(2, 2.0)])).unwrap();
        let mut records = Vec::new();
        replay_segment(
            &segment_path(dir.path(), 1),
            true,
            OpenMode::ReadWrite,
            |record| records.push(record),
        )
        .unwrap();
        assert_eq!(
            records,
            vec![
                Record::Samples(first.clone()),
                Record::Deletion(first[0].series.clone()),
                Record::Samples(batch("cpu", &[(2, 2.0)])),
            ]
        );
    }

    #[test]
    fn segments_of_the_first_format_still_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        let mut bytes = MAGIC_V1.to_vec();
        let mut record = Vec::new();
        encode_batch(&batch("cpu", &[(1, 1.0)]), &mut record);
        // The first format is the current sample record without its kind byte.
        record.remove(RECORD_HEADER);
        finish_record(&mut record);
        bytes.extend_from_slice(&record);
        fs::write(&path, &bytes).unwrap();
        let (seen, outcome) = replay_all(&path, false).unwrap();
        assert_eq!(outcome.records, 1);
        assert_eq!(seen, batch("cpu", &[(1, 1.0)]));
    }

    #[test]
    fn torn_tail_is_truncated_in_newest_segment_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1, false).unwrap();
        wal.append(&batch("cpu", &[(1, 1.0)])).unwrap();
        let good_len = fs::metadata(segment_path(dir.path(), 1)).unwrap().len();
        wal.append(&batch("cpu", &[(2, 2.0), (3, 3.0)])).unwrap();
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let full_len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full_len - 5)
            .unwrap();

        let error = replay_all(&path, false).unwrap_err();
        assert!(matches!(error, StoreError::CorruptLog { offset, .. } if offset == good_len));

        let (seen, outcome) = replay_all(&path, true).unwrap();
        assert_eq!(outcome.records, 1);
        assert_eq!(outcome.torn_bytes, full_len - 5 - good_len);
        assert_eq!(seen, batch("cpu", &[(1, 1.0)]));
        assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    }

    #[test]
    fn a_read_only_replay_stops_at_a_torn_tail_and_leaves_the_file_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = three_records(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        let torn = b"\x20\0\0\0half a record";
        bytes.extend_from_slice(torn);
        fs::write(&path, &bytes).unwrap();

        let (seen, outcome) = replay_in(&path, true, OpenMode::ReadOnly).unwrap();
        assert_eq!(outcome.records, 3, "every complete record is read");
        assert_eq!(seen.len(), 3);
        assert_eq!(outcome.torn_bytes, torn.len() as u64);
        assert_eq!(fs::read(&path).unwrap(), bytes, "nothing is truncated");
    }

    #[test]
    fn a_read_only_replay_leaves_a_segment_cut_in_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 2);
        fs::write(&path, &MAGIC[..3]).unwrap();

        let (seen, outcome) = replay_in(&path, true, OpenMode::ReadOnly).unwrap();
        assert!(seen.is_empty());
        assert_eq!(outcome.torn_bytes, 3);
        assert_eq!(fs::read(&path).unwrap(), &MAGIC[..3], "the segment is kept");
    }

    #[test]
    fn flipped_bit_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 7, false).unwrap();
        wal.append(&batch("cpu", &[(1, 1.0)])).unwrap();
        drop(wal);
        let path = segment_path(dir.path(), 7);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let (seen, outcome) = replay_all(&path, true).unwrap();
        assert!(seen.is_empty());
        assert_eq!(outcome.records, 0);
        assert!(outcome.torn_bytes > 0);
    }

    /// A segment of three records; returns its path and the offsets of the records.
    fn three_records(dir: &Path) -> (PathBuf, Vec<u64>) {
        let mut wal = Wal::create(dir, 1, false).unwrap();
        let path = segment_path(dir, 1);
        let mut offsets = Vec::new();
        for time in 1..=3 {
            offsets.push(fs::metadata(&path).unwrap().len());
            wal.append(&batch("cpu", &[(time, time as f64)])).unwrap();
        }
        (path, offsets)
    }

    #[test]
    fn damage_before_valid_records_in_the_newest_segment_is_corruption() {
        // A flipped bit in the first record's payload, then in its length field (which makes the
        // record seem to run past the end of the file, as a torn one does).
        for flipped in [RECORD_HEADER + 10, 1] {
            let dir = tempfile::tempdir().unwrap();
            let (path, offsets) = three_records(dir.path());
            let mut bytes = fs::read(&path).unwrap();
            bytes[offsets[0] as usize + flipped] ^= 0x10;
            fs::write(&path, &bytes).unwrap();

            let error = replay_all(&path, true).unwrap_err();
            assert!(
                matches!(&error, StoreError::CorruptLog { offset, reason, .. }
                    if *offset == offsets[0] && reason.contains("not a torn tail")),
                "{error}"
            );
            assert!(error.to_string().contains(&path.display().to_string()));
            assert_eq!(fs::read(&path).unwrap(), bytes, "nothing is truncated");
        }
    }

    #[test]
    fn garbage_after_the_last_record_is_a_torn_tail() {
        let garbage: [&[u8]; 3] = [&[0; 4096], &[0xa5; 13], b"\x20\0\0\0torn write of a record"];
        for tail in garbage {
            let dir = tempfile::tempdir().unwrap();
            let (path, _) = three_records(dir.path());
            let good_len = fs::metadata(&path).unwrap().len();
            let mut bytes = fs::read(&path).unwrap();
            bytes.extend_from_slice(tail);
            fs::write(&path, &bytes).unwrap();

            let (seen, outcome) = replay_all(&path, true).unwrap();
            assert_eq!(outcome.records, 3, "every earlier record is kept");
            assert_eq!(seen.len(), 3);
            assert_eq!(outcome.torn_bytes, tail.len() as u64);
            assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
        }
    }

    #[test]
    fn foreign_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        fs::write(&path, b"hello, this is not a log").unwrap();
        assert!(matches!(
            replay_all(&path, true),
            Err(StoreError::CorruptLog { offset: 0, .. })
        ));
    }

    #[test]
    fn rotation_lists_segments_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 9, false).unwrap();
        assert_eq!(wal.rotate().unwrap(), 9);
        assert_eq!(wal.rotate().unwrap(), 10);
        let sequences: Vec<u64> = list_segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(sequences, vec![9, 10, 11]);
        Wal::remove_through(dir.path(), 10).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
    }
}
