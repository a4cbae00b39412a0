//! Store behaviour through the public API, on real files: ordering, durability, bad input.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::time::Duration;

use prescale::domain::{Aggregation, Sample, SeriesId, Step, TimeRange, Timestamp};
use prescale::store::{MetricStore, PolarsStore, SeriesSamples, StoreError, StoreOptions};
use proptest::prelude::*;

fn series(name: &str) -> SeriesId {
    SeriesId::new(name).unwrap()
}

fn range(from: i64, to: i64) -> TimeRange {
    TimeRange::new(Timestamp::from_millis(from), Timestamp::from_millis(to)).unwrap()
}

/// NaN-aware exact comparison: empty buckets must be NaN on both sides.
fn same_values(left: &[f64], right: &[f64]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .all(|(a, b)| (a.is_nan() && b.is_nan()) || a == b)
}

fn samples(pairs: &[(i64, f64)]) -> Vec<Sample> {
    pairs
        .iter()
        .map(|(time, value)| Sample::new(*time, *value))
        .collect()
}

/// The newest write-ahead-log segment of the store in `dir`.
fn newest_segment(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .max()
        .unwrap()
}

/// Batches of samples with clashing timestamps, and the order to append them in.
fn batches_strategy() -> impl Strategy<Value = Vec<Vec<(i64, f64)>>> {
    prop::collection::vec((0i64..2_000, -1e6f64..1e6), 1..300)
        .prop_flat_map(|all| {
            let len = all.len();
            (Just(all), prop::collection::vec(0..len, 0..8))
        })
        .prop_map(|(all, mut cuts)| {
            cuts.sort_unstable();
            cuts.dedup();
            let mut batches = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([all.len()]) {
                if cut > start {
                    batches.push(all[start..cut].to_vec());
                    start = cut;
                }
            }
            batches
        })
        .prop_shuffle()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any split and order of appends reads back like one sorted, de-duplicated append holding the
    /// last written value per timestamp; also after a checkpoint and a reopen.
    #[test]
    fn any_split_and_order_matches_one_sorted_append(
        batches in batches_strategy(),
        checkpoint_after in 0usize..8,
        step in 1i64..300,
    ) {
        let split_dir = tempfile::tempdir().unwrap();
        let split_store = PolarsStore::open(split_dir.path(), StoreOptions::default()).unwrap();
        let id = series("prop");
        let mut last_write = BTreeMap::new();
        for (index, batch) in batches.iter().enumerate() {
            split_store.append(&id, &samples(batch)).unwrap();
            for (time, value) in batch {
                last_write.insert(*time, *value);
            }
            if index == checkpoint_after {
                split_store.checkpoint().unwrap();
            }
        }
        let sorted: Vec<(i64, f64)> = last_write.into_iter().collect();
        let one_dir = tempfile::tempdir().unwrap();
        let one_store = PolarsStore::open(one_dir.path(), StoreOptions::default()).unwrap();
        one_store.append(&id, &samples(&sorted)).unwrap();

        let step = Step::try_from(step).unwrap();
        let window = range(-100, 2_100);
        for agg in [Aggregation::Mean, Aggregation::Max, Aggregation::Sum, Aggregation::Last] {
            let expected = one_store.window(&id, window, step, agg).unwrap();
            let got = split_store.window(&id, window, step, agg).unwrap();
            prop_assert!(same_values(got.values(), expected.values()), "{agg}: {:?} vs {:?}", got.values(), expected.values());
        }
        prop_assert_eq!(split_store.summary(&id).unwrap().samples, sorted.len());

        drop(split_store);
        let reopened = PolarsStore::open(split_dir.path(), StoreOptions::default()).unwrap();
        let expected = one_store.window(&id, window, step, Aggregation::Last).unwrap();
        let got = reopened.window(&id, window, step, Aggregation::Last).unwrap();
        prop_assert!(same_values(got.values(), expected.values()));
    }
}

#[test]
fn window_leaves_empty_buckets_nan() {
    let dir = tempfile::tempdir().unwrap();
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    let id = series("gappy");
    store
        .append(&id, &samples(&[(0, 1.0), (1_000, 3.0), (5_000, 9.0)]))
        .unwrap();
    let window = store
        .window(
            &id,
            range(0, 6_000),
            Step::try_from(2_000).unwrap(),
            Aggregation::Mean,
        )
        .unwrap();
    assert_eq!(window.values()[0], 2.0);
    assert!(window.values()[1].is_nan());
    assert_eq!(window.values()[2], 9.0);
    assert_eq!(window.start(), Timestamp::from_millis(0));
}

#[test]
fn non_finite_value_rejects_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    let good = SeriesSamples {
        series: series("good"),
        samples: samples(&[(1, 1.0)]),
    };
    let bad = SeriesSamples {
        series: series("bad"),
        samples: samples(&[(1, 1.0), (2, f64::NAN), (3, f64::INFINITY)]),
    };
    let error = store.append_batch(&[good, bad]).unwrap_err();
    match error {
        StoreError::NonFiniteValue {
            series: id,
            index,
            timestamp,
            ..
        } => {
            assert_eq!(id, series("bad"));
            assert_eq!(index, 1);
            assert_eq!(timestamp, Timestamp::from_millis(2));
        }
        other => panic!("expected NonFiniteValue, got {other}"),
    }
    assert!(
        store.series().is_empty(),
        "nothing of a rejected batch is stored"
    );
    drop(store);
    let reopened = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert!(
        reopened.series().is_empty(),
        "nothing of a rejected batch reached the log"
    );
}

#[test]
fn timestamps_out_of_range_reject_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    let now = Timestamp::now().as_millis();
    let hour = 3_600_000;
    let thousand_years = 1000 * 365 * 24 * hour;
    for (bad_time, bound) in [
        (i64::MIN, "earliest"),
        (Timestamp::EARLIEST.as_millis() - 1, "earliest"),
        (now + 48 * hour, "ahead"),
        (now + thousand_years, "ahead"),
        (i64::MAX, "ahead"),
    ] {
        let batch = [
            SeriesSamples {
                series: series("good"),
                samples: samples(&[(now, 1.0)]),
            },
            SeriesSamples {
                series: series("bad"),
                samples: samples(&[(now - hour, 1.0), (bad_time, 2.0)]),
            },
        ];
        let error = store.append_batch(&batch).unwrap_err();
        assert!(
            matches!(&error, StoreError::TimestampOutOfRange { series: id, index: 1, .. }
                if *id == series("bad")),
            "{error}"
        );
        assert!(error.to_string().contains(bound), "{error}");
        assert!(store.series().is_empty(), "nothing of the batch is stored");
    }
    // Within the bounds: the distant past, and clocks a little out of step.
    let accepted = samples(&[(Timestamp::EARLIEST.as_millis(), 1.0), (now + hour, 2.0)]);
    assert_eq!(store.append(&series("good"), &accepted).unwrap(), 2);
}

#[test]
fn retention_that_empties_a_series_removes_it_durably() {
    let dir = tempfile::tempdir().unwrap();
    let day = 86_400_000;
    let now = Timestamp::from_millis(100 * day);
    let (old, kept) = (series("old"), series("kept"));
    {
        let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
        store.append(&old, &samples(&[(10 * day, 1.0)])).unwrap();
        store.append(&kept, &samples(&[(99 * day, 1.0)])).unwrap();
        store.checkpoint().unwrap();
        store.append(&old, &samples(&[(11 * day, 2.0)])).unwrap();
        let dropped = store
            .enforce_retention(now, Duration::from_secs(30 * 86_400))
            .unwrap();
        assert_eq!(dropped, 2);
        assert_eq!(store.series(), vec![kept.clone()]);
        assert!(matches!(
            store.summary(&old),
            Err(StoreError::UnknownSeries { .. })
        ));
        store.checkpoint().unwrap();
    }
    // Reopened without retention: the emptied series' checkpoint file is gone, not served again.
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.series(), vec![kept.clone()]);
    // A series retention removed can be written again.
    store.append(&old, &samples(&[(99 * day, 3.0)])).unwrap();
    assert_eq!(store.summary(&old).unwrap().samples, 1);
}

#[test]
fn unknown_series_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    let missing = series("missing");
    let error = store
        .window(
            &missing,
            range(0, 10),
            Step::try_from(1).unwrap(),
            Aggregation::Mean,
        )
        .unwrap_err();
    assert!(matches!(error, StoreError::UnknownSeries { .. }));
    assert!(matches!(
        store.summary(&missing),
        Err(StoreError::UnknownSeries { .. })
    ));
}

#[test]
fn oversized_window_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    let id = series("cpu");
    store.append(&id, &samples(&[(0, 1.0)])).unwrap();
    let error = store
        .window(
            &id,
            range(0, i64::MAX / 2),
            Step::try_from(1).unwrap(),
            Aggregation::Mean,
        )
        .unwrap_err();
    assert!(matches!(error, StoreError::WindowTooLarge { .. }));
}

#[test]
fn torn_log_tail_is_truncated_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let id = series("torn");
    {
        let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
        store.append(&id, &samples(&[(1, 1.0), (2, 2.0)])).unwrap();
        store.append(&id, &samples(&[(3, 3.0)])).unwrap();
    }
    let newest = newest_segment(dir.path());
    // Cut the second record in half, as a crash in the middle of its write would.
    let file = OpenOptions::new().write(true).open(&newest).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - 10).unwrap();
    drop(file);

    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    let summary = store.summary(&id).unwrap();
    assert_eq!(summary.samples, 2);
    assert_eq!(summary.last, Some(Timestamp::from_millis(2)));
    // The store keeps working after recovery, and a second reopen sees the same.
    store.append(&id, &samples(&[(4, 4.0)])).unwrap();
    drop(store);
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.summary(&id).unwrap().samples, 3);
}

/// A read-only open reads a torn log tail up to its last complete record and leaves the file as
/// it is, creating nothing; the writer's next open still truncates it.
#[test]
fn a_read_only_open_reads_past_a_torn_tail_without_truncating_it() {
    let dir = tempfile::tempdir().unwrap();
    let id = series("torn");
    let complete_len = {
        let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
        store.append(&id, &samples(&[(1, 1.0), (2, 2.0)])).unwrap();
        let complete_len = std::fs::metadata(newest_segment(dir.path())).unwrap().len();
        store.append(&id, &samples(&[(3, 3.0)])).unwrap();
        complete_len
    };
    std::fs::remove_file(dir.path().join("LOCK")).unwrap();
    let newest = newest_segment(dir.path());
    let file = OpenOptions::new().write(true).open(&newest).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - 10).unwrap();
    drop(file);
    let torn = std::fs::read(&newest).unwrap();

    let reader = PolarsStore::open_read_only(dir.path(), StoreOptions::default()).unwrap();
    let summary = reader.summary(&id).unwrap();
    assert_eq!(summary.samples, 2);
    assert_eq!(summary.last, Some(Timestamp::from_millis(2)));
    drop(reader);
    assert_eq!(
        std::fs::read(&newest).unwrap(),
        torn,
        "the tail is left in place"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("wal")).unwrap().count(),
        1,
        "no segment was created"
    );
    assert!(!dir.path().join("LOCK").exists(), "no lock was taken");

    drop(PolarsStore::open(dir.path(), StoreOptions::default()).unwrap());
    assert_eq!(std::fs::metadata(&newest).unwrap().len(), complete_len);
}

/// A store open for writing, as a running server holds it, is read beside its writer, while a
/// second writer is refused.
#[test]
fn a_read_only_open_reads_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let id = series("served");
    let writer = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    writer.append(&id, &samples(&[(1, 1.0), (2, 2.0)])).unwrap();
    writer.checkpoint().unwrap();
    writer.append(&id, &samples(&[(3, 3.0)])).unwrap();

    let error = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(
        error.to_string().contains("in use by another process"),
        "{error}"
    );
    let reader = PolarsStore::open_read_only(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(reader.summary(&id).unwrap().samples, 3);
    let refused = reader.append(&id, &samples(&[(4, 4.0)])).unwrap_err();
    assert!(matches!(refused, StoreError::ReadOnly { .. }), "{refused}");
    assert!(refused.to_string().contains("read-only"), "{refused}");
}

/// A crash while a new segment was being created leaves a few bytes of its header (found by
/// `tests/fuzz.rs`): the store opens, and opens again once a newer segment exists, with nothing
/// lost.
#[test]
fn a_segment_cut_in_its_header_opens_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let id = series("created");
    {
        let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
        store.append(&id, &samples(&[(1, 1.0), (2, 2.0)])).unwrap();
    }
    let newest = newest_segment(dir.path());
    let header_cut = newest.with_file_name("wal-9999999999999999.log");
    std::fs::write(&header_cut, &std::fs::read(&newest).unwrap()[..6]).unwrap();

    for _ in 0..2 {
        let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.summary(&id).unwrap().samples, 2);
    }
    assert!(!header_cut.exists());
}

#[test]
fn a_flipped_bit_before_acknowledged_records_fails_the_open_and_truncates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let id = series("flipped");
    {
        let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
        for time in 1..=3 {
            store.append(&id, &samples(&[(time, 1.0)])).unwrap();
        }
    }
    let newest = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    // Past the segment header and the first record's header, inside its payload.
    bytes[8 + 8 + 6] ^= 0x01;
    std::fs::write(&newest, &bytes).unwrap();

    let error = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(
        matches!(&error, StoreError::CorruptLog { path, offset: 8, .. } if *path == newest),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&newest).unwrap(),
        bytes,
        "the log is untouched"
    );
}

#[test]
fn corruption_in_an_older_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let id = series("corrupt");
    {
        let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
        store.append(&id, &samples(&[(1, 1.0)])).unwrap();
    }
    {
        // A second run leaves a newer segment, so the first is no longer the tail.
        let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
        store.append(&id, &samples(&[(2, 2.0)])).unwrap();
    }
    let wal_dir = dir.path().join("wal");
    let oldest = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .min()
        .unwrap();
    let mut bytes = std::fs::read(&oldest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&oldest, bytes).unwrap();
    let error = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(matches!(error, StoreError::CorruptLog { .. }), "{error}");
}

#[test]
fn checkpoint_compacts_the_log_into_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let id = SeriesId::with_labels("cpu", [("host", "a")]).unwrap();
    {
        let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
        store.append(&id, &samples(&[(1, 1.0), (2, 2.0)])).unwrap();
        store.checkpoint().unwrap();
        store.append(&id, &samples(&[(2, 5.0)])).unwrap();
    }
    assert_eq!(parquet_files(dir.path()), 1);
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    let window = store
        .window(
            &id,
            range(0, 3),
            Step::try_from(1).unwrap(),
            Aggregation::Last,
        )
        .unwrap();
    assert!(same_values(window.values(), &[f64::NAN, 1.0, 5.0]));
}

#[test]
fn retention_drops_old_samples_durably() {
    let dir = tempfile::tempdir().unwrap();
    let id = series("old");
    let day = 86_400_000;
    let now = Timestamp::from_millis(100 * day);
    {
        let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
        store
            .append(
                &id,
                &samples(&[(10 * day, 1.0), (95 * day, 2.0), (99 * day, 3.0)]),
            )
            .unwrap();
        let dropped = store
            .enforce_retention(now, Duration::from_secs(30 * 86_400))
            .unwrap();
        assert_eq!(dropped, 1);
        store.checkpoint().unwrap();
    }
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    let summary = store.summary(&id).unwrap();
    assert_eq!(summary.samples, 2);
    assert_eq!(summary.first, Some(Timestamp::from_millis(95 * day)));
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    let second = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(second.to_string().contains("in use"), "{second}");
}

#[test]
fn summary_reports_median_step_and_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    let id = series("gaps");
    let mut pairs: Vec<(i64, f64)> = (0..10).map(|i| (i * 300_000, 1.0)).collect();
    pairs.push((10 * 300_000 + 3_600_000, 1.0));
    store.append(&id, &samples(&pairs)).unwrap();
    let summary = store.summary(&id).unwrap();
    assert_eq!(summary.median_step, Some(Step::FIVE_MINUTES));
    assert_eq!(summary.gaps.len(), 1);
    assert_eq!(summary.gaps[0].after, Timestamp::from_millis(9 * 300_000));
}

/// Parquet checkpoint files in the store in `dir`.
fn parquet_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("series"))
        .unwrap()
        .filter(|entry| {
            let path = entry.as_ref().unwrap().path();
            path.extension().is_some_and(|ext| ext == "parquet")
        })
        .count()
}

/// Options under which every append asks for a checkpoint.
fn checkpoint_each_append() -> StoreOptions {
    StoreOptions {
        checkpoint_after_bytes: 1,
        ..StoreOptions::default()
    }
}

#[test]
fn the_background_checkpoint_compacts_the_log_and_a_restart_loads_it() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let id = series("cpu");
    let pairs: Vec<(i64, f64)> = (0..1_000).map(|time| (time, time as f64)).collect();
    {
        let store = PolarsStore::open(dir.path(), checkpoint_each_append()).unwrap();
        store.append(&id, &samples(&pairs)).unwrap();
        store.wait_for_background_checkpoint();
        // One segment is left, as short as the segment of a store that never logged anything.
        let segments = std::fs::read_dir(dir.path().join("wal")).unwrap().count();
        assert_eq!(segments, 1);
        let _empty = PolarsStore::open(fresh.path(), StoreOptions::default()).unwrap();
        let length = |dir: &std::path::Path| newest_segment(dir).metadata().unwrap().len();
        assert_eq!(length(dir.path()), length(fresh.path()));
        assert_eq!(parquet_files(dir.path()), 1);
    }
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    let window = store
        .window(
            &id,
            range(0, 1_000),
            Step::try_from(1).unwrap(),
            Aggregation::Last,
        )
        .unwrap();
    let expected: Vec<f64> = pairs.iter().map(|(_, value)| *value).collect();
    assert!(same_values(window.values(), &expected));
}

#[test]
fn a_failed_background_checkpoint_leaves_the_append_acknowledged_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let store = PolarsStore::open(dir.path(), checkpoint_each_append()).unwrap();
    // A file where the checkpoint directory was: every Parquet write fails.
    let series_dir = dir.path().join("series");
    std::fs::remove_dir_all(&series_dir).unwrap();
    std::fs::write(&series_dir, b"not a directory").unwrap();
    store
        .append(&series("first"), &samples(&[(1, 1.0)]))
        .unwrap();
    store.wait_for_background_checkpoint();
    std::fs::remove_file(&series_dir).unwrap();
    std::fs::create_dir(&series_dir).unwrap();
    assert_eq!(parquet_files(dir.path()), 0);

    // The next trigger writes the series the failed checkpoint left dirty, with the new one.
    store
        .append(&series("second"), &samples(&[(1, 2.0)]))
        .unwrap();
    store.wait_for_background_checkpoint();
    assert_eq!(parquet_files(dir.path()), 2);
    drop(store);
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.series(), vec![series("first"), series("second")]);
}

/// Writes log segment `sequence` of the store in `dir` holding one sample record of the series
/// keyed `key`, in the log's format (`PSWAL002`, see `store::wal`): the key is written as given, so
/// it can be one the current `SeriesId` no longer prints.
fn write_segment(dir: &std::path::Path, sequence: u64, key: &str, pairs: &[(i64, f64)]) {
    const SAMPLES_RECORD: u8 = 0;
    let mut payload = vec![SAMPLES_RECORD];
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend_from_slice(&(key.len() as u32).to_le_bytes());
    payload.extend_from_slice(key.as_bytes());
    payload.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (time, value) in pairs {
        payload.extend_from_slice(&time.to_le_bytes());
        payload.extend_from_slice(&value.to_le_bytes());
    }
    let mut bytes = b"PSWAL002".to_vec();
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let path = dir.join("wal").join(format!("wal-{sequence:016}.log"));
    std::fs::write(path, bytes).unwrap();
}

/// A store written when a label with an empty value was still part of a series' key: `x{a=""}`
/// is `x` now. On open its checkpoint and its log are read under `x`, merged with what `x` holds
/// (on a shared timestamp the log's newer write wins over both checkpoints, and `x`'s own
/// checkpoint over the old key's), and the old key is gone from the manifest for good: a
/// checkpoint and another open keep the merged series alone.
#[test]
fn a_series_stored_under_an_empty_label_value_is_read_and_kept_under_its_canonical_key() {
    let dir = tempfile::tempdir().unwrap();
    let canonical = series("x");
    let old_key = r#"x{a=""}"#;
    let stand_in = SeriesId::with_labels("x", [("a", "stand-in")]).unwrap();
    {
        let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
        store
            .append(&canonical, &samples(&[(0, 0.5), (1, 1.0), (2, 2.0)]))
            .unwrap();
        store
            .append(&stand_in, &samples(&[(2, 20.0), (3, 30.0)]))
            .unwrap();
        store.checkpoint().unwrap();
    }
    // The stand-in's checkpoint file under the old key, as the manifest named it then.
    let manifest_path = dir.path().join("series").join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let files = manifest["files"].as_object_mut().unwrap();
    let file = files.remove(&stand_in.to_string()).unwrap();
    files.insert(old_key.to_owned(), file);
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    // And samples logged under the old key after that checkpoint.
    let newest = newest_segment(dir.path());
    let sequence: u64 = newest.file_name().unwrap().to_str().unwrap()[4..20]
        .parse()
        .unwrap();
    write_segment(dir.path(), sequence + 1, old_key, &[(1, 10.0), (4, 40.0)]);

    let expected = [0.5, 10.0, 2.0, 30.0, 40.0];
    let read = |store: &PolarsStore| {
        store
            .window(
                &canonical,
                range(0, 5),
                Step::try_from(1).unwrap(),
                Aggregation::Last,
            )
            .unwrap()
    };
    {
        let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.series(), vec![canonical.clone()]);
        let merged = read(&store);
        assert!(same_values(merged.values(), &expected), "{merged:?}");
        store.checkpoint().unwrap();
    }
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    assert!(
        !manifest.contains("a="),
        "the old key is still named: {manifest}"
    );
    assert_eq!(parquet_files(dir.path()), 1, "the old key's file is left");
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.series(), vec![canonical.clone()]);
    let reopened = read(&store);
    assert!(same_values(reopened.values(), &expected), "{reopened:?}");
}
