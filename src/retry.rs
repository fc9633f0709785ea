//! Pacing of every retry loop: exponential backoff with jitter, and a wait
//! that ends as soon as shutdown begins.
//!
//! Jitter keeps replicas that lost the same dependency at the same moment
//! from retrying in lockstep when it comes back. Each pause is drawn
//! uniformly from the upper half of its step (`[step / 2, step]`, "equal
//! jitter"): it grows with the step, never exceeds the ceiling, and still
//! varies once the ceiling is reached.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exponential backoff for one retry loop: the step doubles after each
/// failure, up to a ceiling; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    /// The step of the next pause, before jitter.
    step: Duration,
    /// Cancelled when the loop should stop retrying.
    token: CancellationToken,
}

impl Backoff {
    /// A backoff whose [`Backoff::wait`] returns early once `token` is
    /// cancelled.
    pub(crate) fn new(initial: Duration, max: Duration, token: CancellationToken) -> Self {
        Self {
            initial,
            max,
            step: initial.min(max),
            token,
        }
    }

    /// The pause before the next attempt, jittered; pass it to
    /// [`Backoff::wait`] (it is returned first so that it can be logged).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = self.step.saturating_mul(2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(random_fraction())
    }

    /// Starts again from the initial step.
    pub(crate) fn reset(&mut self) {
        self.step = self.initial.min(self.max);
    }

    /// Waits `delay`; returns `false` at once when the token is (or gets)
    /// cancelled, meaning: stop retrying.
    pub(crate) async fn wait(&self, delay: Duration) -> bool {
        tokio::select! {
            biased;
            () = self.token.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// A number in `[0, 1]`. The standard library's `RandomState` is seeded
/// from the operating system once per thread and changes with each
/// instance, which is all the randomness jitter needs.
fn random_fraction() -> f64 {
    let bits = RandomState::new().hash_one(0_u8);
    (bits >> 11) as f64 / ((1_u64 << 53) - 1) as f64
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tokio::time::Instant;

    use super::*;

    fn millis(delay: Duration) -> f64 {
        delay.as_secs_f64() * 1e3
    }

    #[test]
    fn delays_grow_within_their_jitter_bounds_up_to_the_ceiling() {
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(350),
            CancellationToken::new(),
        );
        for step in [100.0, 200.0, 350.0, 350.0, 350.0] {
            let delay = millis(backoff.next_delay());
            assert!(
                (step / 2.0..=step).contains(&delay),
                "{delay} ms is outside [{}, {step}] ms",
                step / 2.0
            );
        }
        backoff.reset();
        assert!(millis(backoff.next_delay()) <= 100.0);
    }

    #[test]
    fn delays_are_jittered() {
        let delays: HashSet<Duration> = (0..20)
            .map(|_| {
                Backoff::new(
                    Duration::from_secs(1),
                    Duration::from_secs(1),
                    CancellationToken::new(),
                )
                .next_delay()
            })
            .collect();
        assert!(delays.len() > 1, "twenty backoffs paused alike: {delays:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_lasts_the_delay_unless_cancelled() {
        let token = CancellationToken::new();
        let backoff = Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            token.clone(),
        );
        let started = Instant::now();
        assert!(backoff.wait(Duration::from_secs(5)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(5));

        let started = Instant::now();
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            token.cancel();
        };
        let (retry, ()) = tokio::join!(backoff.wait(Duration::from_secs(60)), cancel);
        assert!(!retry);
        assert_eq!(started.elapsed(), Duration::from_millis(30));

        let started = Instant::now();
        assert!(
            !backoff.wait(Duration::from_secs(60)).await,
            "already cancelled"
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
