//! [`Backoff`]: the one retry delay of the workspace, exponential with jitter.
//!
//! The relay reader reconnects with it, kit NAKs a failed batch with it; the publisher and
//! the gateway can adopt it (they still keep their own). Each delay is drawn between
//! `min / 2` and a ceiling that starts at `min` and doubles up to `max`; [`Backoff::reset`]
//! after a success. Seeded per process, so several processes do not retry in lockstep.

use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exponential backoff with jitter.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    rng: SmallRng,
}

impl Backoff {
    /// Delays from about `min` growing to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Backoff {
            min,
            max: max.max(min),
            current: min,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// Back to `min`, after a success.
    pub fn reset(&mut self) {
        self.current = self.min;
    }

    /// The ceiling of the next delay (`min` after a reset, at most `max`).
    pub fn ceiling(&self) -> Duration {
        self.current
    }

    /// The next delay, and the ceiling doubles.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        let span = ceiling.saturating_sub(self.min / 2).as_millis() as u64;
        self.min / 2 + Duration::from_millis(self.rng.random_range(0..=span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_millis(50) && *d <= Duration::from_millis(800)));
        assert!(delays[..3]
            .iter()
            .zip([100, 200, 400])
            .all(|(d, c)| *d <= Duration::from_millis(c)));
        assert_eq!(b.ceiling(), Duration::from_millis(800));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
