//! Requests to a consumer's HTTP endpoint while it works, timed: how a reader fares while
//! the consumer writes. One request at a time, paced, each on a new connection (as a
//! client would open it); what happens before the server first answers is not counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// What the requests met.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    /// Time of each answered request, sorted once [`Probe::stop`] returns.
    pub times: Vec<Duration>,
    /// Answers that were not 200.
    pub not_ok: u64,
    /// Requests that failed (connection refused or reset) after the first answer.
    pub failed: u64,
}

impl Latencies {
    /// The `p`-quantile (0.5, 0.99…) of the answered requests' times.
    pub fn quantile(&self, p: f64) -> Option<Duration> {
        if self.times.is_empty() {
            return None;
        }
        let i = ((self.times.len() - 1) as f64 * p).round() as usize;
        self.times.get(i).copied()
    }
}

/// Requests running in the background.
pub struct Probe {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Latencies>,
}

pub use testkit::http::get;

impl Probe {
    /// Starts asking `addr` for `next(previous answer's body)`, one request every
    /// `interval` at most.
    pub fn start(
        addr: SocketAddr,
        interval: Duration,
        mut next: impl FnMut(Option<&str>) -> String + Send + 'static,
    ) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut out = Latencies::default();
            let mut last: Option<String> = None;
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !flag.load(Ordering::Relaxed) {
                ticker.tick().await;
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let path = next(last.as_deref());
                let t = Instant::now();
                match get(addr, &path).await {
                    Ok((code, body)) => {
                        out.times.push(t.elapsed());
                        if code != 200 {
                            out.not_ok += 1;
                        }
                        last = Some(body);
                    }
                    Err(_) if out.times.is_empty() => {} // not serving yet
                    Err(_) => out.failed += 1,
                }
            }
            out.times.sort();
            out
        });
        Probe { stop, task }
    }

    /// A function that stops the requests (no new one starts), e.g. before the server goes.
    pub fn stopper(&self) -> impl FnOnce() + use<> {
        let flag = self.stop.clone();
        move || flag.store(true, Ordering::Relaxed)
    }

    /// Stops the requests; what they met.
    pub async fn stop(self) -> Latencies {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}
