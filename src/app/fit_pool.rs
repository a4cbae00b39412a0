//! Threads for model fits, at a lower CPU priority than the threads that serve.
//!
//! Fits are the server's only long CPU work: a retrain of every series keeps the cores busy for
//! minutes. On tokio's blocking pool they would compete as equals with the async threads answering
//! `GetPlan`, whose latency is what executors feel. Here they run on a fixed set of threads that
//! lower their own scheduling priority (`nice`) once at start, so the kernel runs serving threads
//! first whenever both are ready, and fits use what serving leaves.
//!
//! The pool is owned by its [`super::AppState`] (no process-global state). Dropping it does not wait:
//! fits not yet started are dropped (their callers are gone with the state), a fit already running
//! finishes, and then its thread exits.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::AppError;

type Task = Box<dyn FnOnce() + Send>;

/// A fixed pool of fit threads at a lowered priority.
#[derive(Debug)]
pub struct FitPool {
    sender: Option<mpsc::Sender<Task>>,
    closed: Arc<AtomicBool>,
    threads: usize,
}

impl FitPool {
    /// Starts `threads` threads (at least one) that lower their priority by `nice` (0 keeps it;
    /// Linux only, elsewhere ignored).
    pub fn new(threads: usize, nice: i32) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel::<Task>();
        let receiver = Arc::new(Mutex::new(receiver));
        let closed = Arc::new(AtomicBool::new(false));
        let threads = threads.max(1);
        for index in 0..threads {
            let receiver = Arc::clone(&receiver);
            let closed = Arc::clone(&closed);
            std::thread::Builder::new()
                .name(format!("prescale-fit-{index}"))
                .spawn(move || {
                    lower_priority(nice);
                    loop {
                        // The lock is held only while waiting for the next task.
                        let task = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match task {
                            Ok(task) if !closed.load(Ordering::Acquire) => task(),
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

/// Lowers the calling thread's scheduling priority by `nice` steps from what it inherited (Linux:
/// `setpriority` on the thread id; lowering needs no privilege, only raising would).
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid, getpriority and setpriority take and return plain integers and touch no
        // memory.
        let result = unsafe {
            let thread = libc::gettid() as libc::id_t;
            let inherited = libc::getpriority(libc::PRIO_PROCESS, thread);
            libc::setpriority(
                libc::PRIO_PROCESS,
                thread,
                inherited.saturating_add(nice).min(19),
            )
        };
        if result != 0 {
            tracing::warn!(
                nice,
                error = %std::io::Error::last_os_error(),
                "cannot lower the priority of a fit thread; fits compete with serving as equals"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_and_reports_panics_and_errors() {
        let pool = FitPool::new(2, 10).unwrap();
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
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn fit_threads_run_at_the_lowered_priority() {
        let pool = FitPool::new(1, 7).unwrap();
        let (base, fit) = pool
            .run(|| {
                // SAFETY: as in `lower_priority`.
                let fit =
                    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
                Ok(fit)
            })
            .await
            .map(|fit| {
                // SAFETY: as above; priority 0 of `who` means the calling thread.
                let base = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
                (base, fit)
            })
            .unwrap();
        assert_eq!(
            fit,
            (base + 7).min(19),
            "fit thread nice {fit}, process nice {base}"
        );
    }
}
