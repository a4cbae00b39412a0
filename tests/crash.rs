//! Durability under `kill -9`: a child process appends and prints each acknowledgement, is killed
//! mid-stream, and every acknowledged sample must be there when the store is reopened.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prescale::domain::{Aggregation, Sample, SeriesId, Step, TimeRange, Timestamp};
use prescale::store::{MetricStore, PolarsStore, StoreOptions};

/// Environment variable telling the child which directory to write to.
const CHILD_DIR: &str = "PRESCALE_CRASH_TEST_DIR";
/// Samples per acknowledged batch.
const BATCH: i64 = 50;
/// Series the child spreads its batches over.
const SERIES: i64 = 4;
/// Acknowledgements to wait for before killing the child.
const KILL_AFTER_ACKS: usize = 600;

/// Small checkpoints, so the kill may also land in the middle of one.
fn options() -> StoreOptions {
    StoreOptions {
        checkpoint_after_bytes: 64 * 1024,
        ..StoreOptions::default()
    }
}

fn series_of(batch: i64) -> SeriesId {
    SeriesId::with_labels("crash", [("shard", (batch % SERIES).to_string())]).unwrap()
}

/// The child: appends batches forever, printing `ack N` after each append returns.
#[test]
#[ignore = "run as the child process of acknowledged_samples_survive_sigkill"]
fn crash_child() {
    let dir = std::env::var(CHILD_DIR).expect("the parent sets the directory");
    let store = PolarsStore::open(dir, options()).unwrap();
    let stdout = std::io::stdout();
    for batch in 0i64.. {
        let samples: Vec<Sample> = (0..BATCH)
            .map(|i| Sample::new(batch * BATCH + i, batch as f64))
            .collect();
        store.append(&series_of(batch), &samples).unwrap();
        let mut out = stdout.lock();
        writeln!(out, "ack {batch}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_samples_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged.len() < KILL_AFTER_ACKS {
        assert!(Instant::now() < deadline, "child stopped acknowledging");
        let line = lines.next().expect("child ended early").unwrap();
        if let Some(number) = line.strip_prefix("ack ") {
            acknowledged.push(number.parse::<i64>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    // Acknowledgements already in the pipe count too: they were printed after the append returned.
    for line in lines {
        if let Some(number) = line.unwrap().strip_prefix("ack ") {
            acknowledged.push(number.parse::<i64>().unwrap());
        }
    }
    child.wait().unwrap();
    let last_acknowledged = *acknowledged.last().unwrap();

    let store = PolarsStore::open(dir.path(), options()).unwrap();
    let step = Step::try_from(BATCH).unwrap();
    for shard in 0..SERIES {
        let id = series_of(shard);
        let end = (last_acknowledged + 2) * BATCH;
        let window = store
            .window(
                &id,
                TimeRange::new(Timestamp::from_millis(0), Timestamp::from_millis(end)).unwrap(),
                Step::try_from(1).unwrap(),
                Aggregation::Last,
            )
            .unwrap();
        for batch in (shard..=last_acknowledged).step_by(SERIES as usize) {
            let start = (batch * BATCH) as usize;
            let stored = &window.values()[start..start + BATCH as usize];
            assert!(
                stored.iter().all(|value| *value == batch as f64),
                "acknowledged batch {batch} is incomplete after the crash"
            );
        }
        // A batch is all or nothing: per-batch bucket counts are 0 or BATCH.
        let counts = store
            .window(
                &id,
                TimeRange::new(Timestamp::from_millis(0), Timestamp::from_millis(end)).unwrap(),
                step,
                Aggregation::Sum,
            )
            .unwrap();
        for (batch, sum) in counts.values().iter().enumerate() {
            if !sum.is_nan() {
                assert_eq!(
                    *sum,
                    batch as f64 * BATCH as f64,
                    "batch {batch} partially stored"
                );
            }
        }
    }
}
