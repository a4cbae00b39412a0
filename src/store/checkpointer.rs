//! The store's background checkpoint worker: one thread per store that runs a checkpoint when an
//! append asks for one, so no append waits for the Parquet writes (see "Checkpoints: one Parquet
//! file per series plus a manifest" in docs/decisions.md).
//!
//! Requests coalesce: one checkpoint runs at a time, and any number of requests made while it runs
//! make exactly one more. Dropping the worker tells the running checkpoint to stop at its next series
//! and joins the thread, so nothing outlives the store that owns it.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

/// What the worker has been asked to do, and what it is doing.
#[derive(Debug, Default)]
struct Signal {
    /// A checkpoint was asked for and has not started yet.
    requested: bool,
    /// A checkpoint is running.
    running: bool,
}

/// State shared between the store's handle and its worker thread.
#[derive(Debug, Default)]
struct Shared {
    /// Requests and progress; taken alone, never with a lock of the store.
    signal: Mutex<Signal>,
    /// Woken when `signal` or `stopping` changes.
    changed: Condvar,
    /// Set once, when the store closes: the worker starts no further checkpoint, and the running
    /// one stops at its next series.
    stopping: AtomicBool,
}

/// The background checkpoint thread of one store.
#[derive(Debug)]
pub(super) struct Checkpointer {
    /// Shared with the thread.
    shared: Arc<Shared>,
    /// The thread, joined on drop.
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread; `run` performs one checkpoint and is handed the flag that asks it to stop
    /// early because the store is closing. It logs its own outcome.
    pub(super) fn spawn(
        mut run: impl FnMut(&AtomicBool) + Send + 'static,
    ) -> Result<Self, std::io::Error> {
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".to_owned())
            .spawn(move || {
                while worker.next_request() {
                    // A panicking checkpoint must not leave the store without checkpoints.
                    if panic::catch_unwind(AssertUnwindSafe(|| run(&worker.stopping))).is_err() {
                        tracing::error!(
                            "background checkpoint panicked; retried at the next trigger"
                        );
                    }
                    worker.finished();
                }
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint; returns at once.
    pub(super) fn request(&self) {
        self.shared.signal.lock().requested = true;
        self.shared.changed.notify_all();
    }

    /// Blocks until every checkpoint asked for so far has finished (or was abandoned because the
    /// store is closing).
    pub(super) fn wait_idle(&self) {
        let mut signal = self.shared.signal.lock();
        while (signal.requested || signal.running) && !self.shared.stopping.load(Ordering::Acquire)
        {
            self.shared.changed.wait(&mut signal);
        }
    }

    /// A function that blocks until the store has started closing, for tests that hold a
    /// checkpoint until then.
    #[cfg(test)]
    pub(super) fn until_closing(&self) -> impl Fn() + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || {
            let mut signal = shared.signal.lock();
            while !shared.stopping.load(Ordering::Acquire) {
                shared.changed.wait(&mut signal);
            }
        }
    }
}

impl Shared {
    /// Waits for a request and marks it running; `false` once the store is closing.
    fn next_request(&self) -> bool {
        let mut signal = self.signal.lock();
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return false;
            }
            if signal.requested {
                signal.requested = false;
                signal.running = true;
                return true;
            }
            self.changed.wait(&mut signal);
        }
    }

    /// Marks the running checkpoint finished.
    fn finished(&self) {
        self.signal.lock().running = false;
        self.changed.notify_all();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        {
            // Under the signal lock, so a waiter cannot miss the wake-up between its check and its wait.
            let _signal = self.shared.signal.lock();
            self.shared.stopping.store(true, Ordering::Release);
        }
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("background checkpoint thread panicked");
        }
    }
}

/// Code a test runs inside each checkpoint, after its snapshot and before its Parquet writes: the
/// handshake that holds a checkpoint in progress.
#[cfg(test)]
#[derive(Default)]
pub(super) struct PauseHook(Mutex<Option<Arc<dyn Fn() + Send + Sync>>>);

#[cfg(test)]
impl PauseHook {
    /// Runs `hook` in every checkpoint from now on.
    pub(super) fn set(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self.0.lock() = Some(Arc::new(hook));
    }

    /// Runs the hook, if one is set.
    pub(super) fn run(&self) {
        let hook = self.0.lock().clone();
        if let Some(hook) = hook {
            hook();
        }
    }
}

#[cfg(test)]
impl std::fmt::Debug for PauseHook {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PauseHook")
    }
}
