//! Threads for model fits, at a lower CPU priority than the threads that serve.
//!
//! Fits are the server's only long CPU work: a retrain of every series keeps the cores busy for
//! minutes. On tokio's blocking pool they would compete as equals with the async threads answering
//! `GetPlan`, whose latency is what executors feel. Here they run on a fixed set of threads that
//! put themselves in the background once at start (Linux `SCHED_IDLE`): the kernel runs a serving
//! thread as soon as it wakes, and fits use the CPU time serving leaves.
//!
//! The pool is owned by its [`super::ServingState`] (no process-global state). Dropping it does not wait:
//! fits not yet started are dropped (their callers are gone with the state), a fit already running
//! finishes, and then its thread exits.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::AppError;

type Task = Box<dyn FnOnce() + Send>;

/// How fit threads are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitPriority {
    /// As the thread that starts the pool.
    Inherit,
    /// Below every normal thread: Linux `SCHED_IDLE` (no privilege needed), or `nice` 19 where that
    /// is refused; elsewhere as `Inherit`.
    Background,
}

/// A fixed pool of fit threads.
#[derive(Debug)]
pub struct FitPool {
    /// Queue of fits the threads take from; `None` once dropped, which closes the channel and ends
    /// each thread when the queue is empty.
    sender: Option<mpsc::Sender<Task>>,
    /// Set on drop: fits still queued are skipped rather than run for callers that are gone.
    closed: Arc<AtomicBool>,
    /// Number of threads started.
    threads: usize,
    /// Tasks the threads have started since the pool began: what shows which work went through it.
    started: Arc<AtomicU64>,
}

impl FitPool {
    /// Starts `threads` threads (at least one) scheduled as `priority` says.
    pub fn new(threads: usize, priority: FitPriority) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel::<Task>();
        let receiver = Arc::new(Mutex::new(receiver));
        let closed = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicU64::new(0));
        let threads = threads.max(1);
        for index in 0..threads {
            let receiver = Arc::clone(&receiver);
            let closed = Arc::clone(&closed);
            let started = Arc::clone(&started);
            std::thread::Builder::new()
                .name(format!("prescale-fit-{index}"))
                .spawn(move || {
                    if priority == FitPriority::Background {
                        to_background();
                    }
                    loop {
                        // The lock is held only while waiting for the next task.
                        let task = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match task {
                            Ok(task) if !closed.load(Ordering::Acquire) => {
                                started.fetch_add(1, Ordering::Relaxed);
                                task();
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self {
            sender: Some(sender),
            closed,
            threads,
            started,
        })
    }

    /// Runs `work` on a fit thread and waits for its result without blocking the async threads.
    /// A panic in `work` becomes [`AppError::Worker`].
    pub async fn run<T, F>(&self, work: F) -> Result<T, AppError>
    where
        F: FnOnce() -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, result) = tokio::sync::oneshot::channel();
        let task: Task = Box::new(move || {
            let outcome = catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
                Err(AppError::Worker {
                    reason: panic_message(panic.as_ref()),
                })
            });
            // The caller may have gone away (a cancelled request); nothing to tell then.
            let _ = reply.send(outcome);
        });
        self.sender
            .as_ref()
            .ok_or(AppError::ShuttingDown)?
            .send(task)
            .map_err(|_| AppError::ShuttingDown)?;
        result.await.map_err(|_| AppError::Worker {
            reason: "the fit thread stopped before answering".to_owned(),
        })?
    }

    /// Number of fit threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Tasks started on the fit threads so far.
    pub fn tasks_started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }
}

impl Drop for FitPool {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        // Closing the channel ends each thread once the queue is drained.
        drop(self.sender.take());
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(ToString::to_string)
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .map_or_else(
            || "a fit panicked".to_owned(),
            |message| format!("a fit panicked: {message}"),
        )
}

/// Moves the calling thread to `SCHED_IDLE`: it runs only when no normal thread wants the CPU, and a
/// waking normal thread preempts it at once. Where that is refused, `nice` 19. Linux only: both act
/// on the calling thread, and neither needs a privilege (only raising priority would).
fn to_background() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param for the call's duration; pid 0 is this thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
            return;
        }
        let refused = std::io::Error::last_os_error();
        // SAFETY: plain integers in and out; `who` 0 is the calling thread on Linux.
        let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } == 0;
        tracing::warn!(
            error = %refused,
            niced,
            "fit thread: SCHED_IDLE refused; running at nice 19 instead"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_and_reports_panics_and_errors() {
        let pool = FitPool::new(2, FitPriority::Background).unwrap();
        assert_eq!(pool.threads(), 2);
        assert_eq!(pool.run(|| Ok(6 * 7)).await.unwrap(), 42);
        let failed = pool
            .run(|| -> Result<(), AppError> { Err(AppError::ShuttingDown) })
            .await;
        assert!(matches!(failed, Err(AppError::ShuttingDown)));
        let panicked = pool
            .run(|| -> Result<(), AppError> { panic!("boom") })
            .await;
        match panicked {
            Err(AppError::Worker { reason }) => assert!(reason.contains("boom"), "{reason}"),
            other => panic!("expected a worker error, got {other:?}"),
        }
        // The pool survives a panicking task.
        assert_eq!(pool.run(|| Ok("still here")).await.unwrap(), "still here");
        assert_eq!(pool.tasks_started(), 4);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn background_fit_threads_run_under_sched_idle() {
        // SAFETY: pid 0 is the calling thread; plain integers in and out.
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let background = FitPool::new(1, FitPriority::Background).unwrap();
        assert_eq!(
            background.run(move || Ok(policy())).await.unwrap(),
            libc::SCHED_IDLE
        );
        let inherit = FitPool::new(1, FitPriority::Inherit).unwrap();
        assert_eq!(inherit.run(move || Ok(policy())).await.unwrap(), policy());
    }
}
