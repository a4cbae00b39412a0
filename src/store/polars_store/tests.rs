//! The background checkpoint, held mid-way by a handshake in the checkpoint itself: appends do not
//! wait for it, requests coalesce, and closing the store stops it cleanly.

use std::fs;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, ThreadId};
use std::time::Duration;

use super::*;
use crate::domain::Sample;

/// Longest a held checkpoint waits for the test to let it go; reached only when the test is
/// failing (the checkpoint ran inside the test's own append).
const HOLD_AT_MOST: Duration = Duration::from_secs(60);

/// A store whose every append asks for a checkpoint.
fn store_checkpointing_each_append(dir: &Path) -> PolarsStore {
    let options = StoreOptions {
        checkpoint_after_bytes: 1,
        ..StoreOptions::default()
    };
    PolarsStore::open(dir, options).unwrap()
}

fn series(name: &str) -> SeriesId {
    SeriesId::new(name).unwrap()
}

fn samples(from: i64, count: i64) -> Vec<Sample> {
    (from..from + count)
        .map(|time| Sample::new(time, time as f64))
        .collect()
}

fn parquet_files(dir: &Path) -> usize {
    fs::read_dir(dir.join("series"))
        .unwrap()
        .filter(|entry| {
            let path = entry.as_ref().unwrap().path();
            path.extension().is_some_and(|ext| ext == "parquet")
        })
        .count()
}

/// Holds each checkpoint after its snapshot until the test lets it go, reporting the thread it
/// runs on and counting the checkpoints.
struct Gate {
    /// The thread of each checkpoint that reached the hold.
    started: Receiver<ThreadId>,
    /// One message lets one held checkpoint go on.
    proceed: Sender<()>,
    /// Checkpoints that reached the hold.
    runs: Arc<AtomicUsize>,
}

impl Gate {
    fn install(store: &PolarsStore) -> Self {
        let (started_sender, started) = mpsc::channel();
        let (proceed, proceed_receiver) = mpsc::channel::<()>();
        let proceed_receiver = Mutex::new(proceed_receiver);
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        store.core.pause.set(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            started_sender.send(thread::current().id()).unwrap();
            proceed_receiver
                .lock()
                .recv_timeout(HOLD_AT_MOST)
                .expect("the test lets the checkpoint go on");
        });
        Self {
            started,
            proceed,
            runs,
        }
    }

    /// Lets the held checkpoint go on, then the one more that the requests made meanwhile ask
    /// for, waits until the store is idle and checks that no other checkpoint ran.
    fn release_held_and_one_more(&self, store: &PolarsStore) {
        self.proceed.send(()).unwrap();
        self.started.recv().unwrap();
        self.proceed.send(()).unwrap();
        store.wait_for_background_checkpoint();
        assert_eq!(self.runs.load(Ordering::SeqCst), 2);
    }
}

#[test]
fn an_append_crossing_the_threshold_returns_while_the_checkpoint_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_checkpointing_each_append(dir.path());
    let gate = Gate::install(&store);

    store.append(&series("first"), &samples(0, 100)).unwrap();
    // The checkpoint this append asked for is now held after its snapshot, on another thread.
    let checkpoint_thread = gate.started.recv().unwrap();
    assert_ne!(checkpoint_thread, thread::current().id());
    // Appends go on meanwhile, and are readable; nothing is compacted yet.
    store.append(&series("second"), &samples(0, 10)).unwrap();
    assert_eq!(store.summary(&series("second")).unwrap().samples, 10);
    assert_eq!(parquet_files(dir.path()), 0);

    // The second append's request: exactly one more checkpoint, which writes the second series.
    gate.release_held_and_one_more(&store);
    assert_eq!(parquet_files(dir.path()), 2);
}

#[test]
fn requests_made_while_a_checkpoint_runs_make_exactly_one_more() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_checkpointing_each_append(dir.path());
    let gate = Gate::install(&store);

    store.append(&series("held"), &samples(0, 10)).unwrap();
    gate.started.recv().unwrap();
    for index in 0..5 {
        store
            .append(&series(&format!("later{index}")), &samples(0, 10))
            .unwrap();
    }
    gate.release_held_and_one_more(&store);
    assert_eq!(parquet_files(dir.path()), 6);
}

#[test]
fn closing_the_store_stops_a_running_checkpoint_and_keeps_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_checkpointing_each_append(dir.path());
    let (started_sender, started) = mpsc::channel();
    let until_closing = store
        .checkpointer
        .as_ref()
        .expect("a writable store has a checkpoint thread")
        .until_closing();
    store.core.pause.set(move || {
        started_sender.send(()).unwrap();
        until_closing();
    });
    store.append(&series("kept"), &samples(0, 100)).unwrap();
    started.recv().unwrap();

    // The checkpoint is held until the store closes; closing joins its thread, which lets go of
    // the data directory, so it opens again at once.
    drop(store);
    assert_eq!(parquet_files(dir.path()), 0, "the checkpoint was stopped");
    assert!(!dir.path().join("series/manifest.json").exists());
    let reopened = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(reopened.summary(&series("kept")).unwrap().samples, 100);
    reopened.checkpoint().unwrap();
    assert_eq!(parquet_files(dir.path()), 1);
}

/// A read-only open beside a writer whose checkpoint completes while the reader is between the
/// Parquet files and the log: the log segments the reader would have replayed are gone by then,
/// and it sees the changed manifest and reads again, finding every sample.
#[test]
fn a_read_only_open_reads_again_when_the_writer_checkpoints_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let writer = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    writer.append(&series("early"), &samples(0, 10)).unwrap();
    writer.checkpoint().unwrap();
    writer.append(&series("late"), &samples(0, 20)).unwrap();

    let mut attempts = 0;
    let core = StoreCore::open_read_only(dir.path(), StoreOptions::default(), &mut || {
        attempts += 1;
        if attempts == 1 {
            writer.checkpoint().unwrap();
        }
    })
    .unwrap();
    let reader = PolarsStore {
        checkpointer: None,
        core: Arc::new(core),
    };
    assert_eq!(attempts, 2, "the changed manifest made it read again");
    assert_eq!(reader.summary(&series("early")).unwrap().samples, 10);
    assert_eq!(reader.summary(&series("late")).unwrap().samples, 20);
}

/// A read-only store refuses every change, and leaves its directory as it found it.
#[test]
fn a_read_only_store_refuses_changes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let writer = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
        writer.append(&series("kept"), &samples(0, 10)).unwrap();
    }
    let reader = PolarsStore::open_read_only(dir.path(), StoreOptions::default()).unwrap();
    let refused = |result: Result<usize, StoreError>, operation: &str| {
        let error = result.unwrap_err();
        assert!(
            matches!(&error, StoreError::ReadOnly { operation: refused, .. } if *refused == operation),
            "{error}"
        );
    };
    refused(reader.append(&series("kept"), &samples(10, 1)), "append");
    refused(reader.delete_series(&series("kept")), "delete");
    refused(
        reader.enforce_retention(Timestamp::now(), Duration::ZERO),
        "retention",
    );
    refused(reader.checkpoint().map(|()| 0), "checkpoint");
    reader.sync().unwrap();
    assert_eq!(reader.summary(&series("kept")).unwrap().samples, 10);
    assert_eq!(parquet_files(dir.path()), 0);
    assert_eq!(fs::read_dir(dir.path().join("wal")).unwrap().count(), 1);
}
