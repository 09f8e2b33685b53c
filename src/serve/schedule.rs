//! The schedule: one cycle now, then one every `every` until shut down. A cycle that has begun
//! always finishes (its writes complete) before the schedule stops.
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// Run `cycle` at `first` and then every `every` (a cycle that overruns its slot delays the
/// next one rather than bunching them), until `shutdown` turns true or its sender is dropped.
/// `cycle` gets the run's number (0 first).
pub async fn run<F, Fut>(first: Instant, every: Duration, mut shutdown: watch::Receiver<bool>, mut cycle: F)
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval_at(first, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut run = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
            _ = ticks.tick() => {
                // not raced against the shutdown: a cycle that has begun finishes its writes
                cycle(run).await;
                run += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The cycle's start times, in whole seconds after the test began.
    type Starts = Arc<Mutex<Vec<u64>>>;

    fn recorder(
        began: Instant,
        starts: Starts,
        cost: Duration,
    ) -> impl FnMut(u64) -> futures::future::BoxFuture<'static, ()> {
        move |_| {
            let starts = starts.clone();
            Box::pin(async move {
                starts.lock().unwrap().push(began.elapsed().as_secs());
                tokio::time::sleep(cost).await;
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn runs_at_start_then_every_period_until_shut_down() {
        let began = Instant::now();
        let starts: Starts = Default::default();
        let (stop, shutdown) = watch::channel(false);
        let every = Duration::from_secs(3600);
        let task = tokio::spawn(run(began, every, shutdown, recorder(began, starts.clone(), Duration::from_secs(5))));
        tokio::time::sleep(Duration::from_secs(3 * 3600 + 10)).await;
        assert_eq!(*starts.lock().unwrap(), [0, 3600, 7200, 10800]);
        stop.send(true).unwrap();
        task.await.unwrap();
        tokio::time::sleep(Duration::from_secs(5 * 3600)).await;
        assert_eq!(starts.lock().unwrap().len(), 4, "no run after the shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cycle_that_has_begun_finishes_before_the_shutdown() {
        let began = Instant::now();
        let finished = Arc::new(Mutex::new(0));
        let (stop, shutdown) = watch::channel(false);
        let done = finished.clone();
        let task = tokio::spawn(run(began, Duration::from_secs(60), shutdown, move |_| {
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                *done.lock().unwrap() += 1;
            }
        }));
        tokio::time::sleep(Duration::from_secs(10)).await;
        stop.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(*finished.lock().unwrap(), 1, "the running cycle completed");
        assert_eq!(began.elapsed().as_secs(), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn an_overrunning_cycle_delays_the_next_rather_than_bunching() {
        let began = Instant::now();
        let starts: Starts = Default::default();
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn(run(
            began,
            Duration::from_secs(60),
            shutdown,
            recorder(began, starts.clone(), Duration::from_secs(150)),
        ));
        tokio::time::sleep(Duration::from_secs(400)).await;
        assert_eq!(*starts.lock().unwrap(), [0, 150, 300]);
    }
}
