//! A deadline around blocking distributed work. MLX's ring backend has no timeout: when a
//! neighbour dies its socket thread gives up silently and the collective waits forever, and a
//! rank whose neighbour never starts waits in `accept` forever. A thread blocked inside MLX
//! cannot be interrupted, so when a deadline passes the watchdog prints the error and ends the
//! process with exit code 2 (`_exit`: no destructor may wait on the blocked threads).
use super::{DEFAULT_TIMEOUT, DistributedError, TIMEOUT_ENV};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Deadlines of the work being guarded, watched by one thread per process.
#[derive(Debug, Clone, Copy)]
pub struct Watchdog {
    timeout: Duration,
}

/// One guarded piece of work.
struct Armed {
    id: u64,
    deadline: Instant,
    what: String,
    timeout: Duration,
}

#[derive(Default)]
struct Shared {
    armed: Mutex<(u64, Vec<Armed>)>,
    changed: Condvar,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<&'static Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let shared: &'static Shared = Box::leak(Box::default());
        std::thread::Builder::new()
            .name("energy-watchdog".into())
            .spawn(move || watch(shared))
            .unwrap_or_else(|e| panic!("cannot start the watchdog thread: {e}"));
        shared
    })
}

fn watch(shared: &'static Shared) {
    let mut armed = shared.armed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let now = Instant::now();
        if let Some(expired) = armed.1.iter().find(|entry| entry.deadline <= now) {
            let error = DistributedError::Timeout { what: expired.what.clone(), timeout: expired.timeout };
            eprintln!("error: {error}");
            // SAFETY: `_exit` takes no pointer and never returns; it skips destructors and
            // atexit handlers on purpose, since MLX threads are blocked on a dead peer.
            unsafe { libc::_exit(2) };
        }
        armed = match armed.1.iter().map(|entry| entry.deadline).min() {
            None => shared.changed.wait(armed).unwrap_or_else(|poisoned| poisoned.into_inner()),
            Some(deadline) => {
                shared
                    .changed
                    .wait_timeout(armed, deadline.saturating_duration_since(now))
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0
            }
        };
    }
}

impl Watchdog {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// The timeout of [`TIMEOUT_ENV`] (seconds), or [`DEFAULT_TIMEOUT`].
    pub fn from_env() -> Result<Self, DistributedError> {
        Ok(Self::new(timeout_from_env()?))
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Run `f`; if it has not returned within the timeout, print that `what` got no answer and
    /// end the process with exit code 2.
    pub fn guard<T>(&self, what: &str, f: impl FnOnce() -> T) -> T {
        let shared = shared();
        let id = {
            let mut armed = shared.armed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            armed.0 += 1;
            let id = armed.0;
            armed.1.push(Armed {
                id,
                deadline: Instant::now() + self.timeout,
                what: what.to_string(),
                timeout: self.timeout,
            });
            id
        };
        shared.changed.notify_all();
        let result = f();
        shared.armed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).1.retain(|entry| entry.id != id);
        shared.changed.notify_all();
        result
    }
}

/// Seconds in [`TIMEOUT_ENV`], or [`DEFAULT_TIMEOUT`] when it is unset.
pub fn timeout_from_env() -> Result<Duration, DistributedError> {
    match std::env::var(TIMEOUT_ENV) {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|seconds| seconds.is_finite() && *seconds > 0.0 && *seconds < 1e7)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                DistributedError::Setup(format!("{TIMEOUT_ENV} must be a positive number of seconds, got `{text}`"))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_that_finishes_in_time_is_returned_and_disarmed() {
        let watchdog = Watchdog::new(Duration::from_secs(30));
        for i in 0..100 {
            assert_eq!(watchdog.guard("test", || i * 2), i * 2);
        }
        // Nested guards are independent.
        assert_eq!(watchdog.guard("outer", || watchdog.guard("inner", || 7)), 7);
        assert!(shared().armed.lock().unwrap().1.is_empty());
    }
}
