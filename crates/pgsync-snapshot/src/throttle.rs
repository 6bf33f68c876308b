//! A shared token bucket for rows/s and bytes/s (MISSION L4).
//!
//! All workers of a copy (and, later, the incremental applier) draw from one [`Throttle`]:
//! each asks for what it just moved, and waits when the bucket is in debt. The bucket
//! holds at most one second of budget, so a pause never turns into a burst above the
//! limit afterwards. Without limits [`Throttle::acquire`] returns at once without locking.
//! [`Throttle::set_limits`] changes the limits while workers use it (a reloaded config).
//!
//! ```text
//! tokens += rate * elapsed (capped at rate)      tokens -= taken
//! tokens < 0  ->  sleep(-tokens / rate)
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Limits for a [`Throttle`]; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Rows per second.
    pub rows_per_sec: Option<f64>,
    /// Bytes per second (MB/s × 1,000,000).
    pub bytes_per_sec: Option<f64>,
}

impl Limits {
    /// No limits.
    pub fn unlimited() -> Self {
        Self::default()
    }

    fn is_unlimited(&self) -> bool {
        self.rows_per_sec.is_none() && self.bytes_per_sec.is_none()
    }
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        Self { rate, tokens: rate }
    }

    /// Adds what `elapsed` earned, takes `n`, returns how long to wait to be out of debt.
    fn take(&mut self, elapsed: Duration, n: f64) -> Duration {
        self.tokens = (self.tokens + self.rate * elapsed.as_secs_f64()).min(self.rate);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[derive(Debug)]
struct State {
    rows: Option<Bucket>,
    bytes: Option<Bucket>,
    last: Instant,
}

/// A token bucket shared by all workers (put it in an `Arc`).
#[derive(Debug)]
pub struct Throttle {
    unlimited: AtomicBool,
    state: Mutex<State>,
}

impl Throttle {
    /// A throttle with these limits. Rates of zero or less count as unlimited.
    pub fn new(limits: Limits) -> Self {
        let limits = positive(limits);
        Self {
            unlimited: AtomicBool::new(limits.is_unlimited()),
            state: Mutex::new(State {
                rows: limits.rows_per_sec.map(Bucket::new),
                bytes: limits.bytes_per_sec.map(Bucket::new),
                last: Instant::now(),
            }),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Limits {
            rows_per_sec: s.rows.as_ref().map(|b| b.rate),
            bytes_per_sec: s.bytes.as_ref().map(|b| b.rate),
        }
    }

    /// Replaces the limits; callers waiting now finish their wait, later debits use the
    /// new rates (each bucket starts with at most one second of the new budget).
    pub fn set_limits(&self, limits: Limits) {
        let limits = positive(limits);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let update = |b: &mut Option<Bucket>, rate: Option<f64>| {
            *b = rate.map(|r| match b.take() {
                Some(old) => Bucket {
                    rate: r,
                    tokens: old.tokens.min(r),
                },
                None => Bucket::new(r),
            });
        };
        update(&mut s.rows, limits.rows_per_sec);
        update(&mut s.bytes, limits.bytes_per_sec);
        self.unlimited
            .store(limits.is_unlimited(), Ordering::Relaxed);
    }

    /// How long the caller must wait after moving `rows` and `bytes`.
    pub fn debit(&self, rows: u64, bytes: u64) -> Duration {
        if self.unlimited.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(s.last);
        s.last = now;
        let a = s
            .rows
            .as_mut()
            .map_or(Duration::ZERO, |b| b.take(elapsed, rows as f64));
        let b = s
            .bytes
            .as_mut()
            .map_or(Duration::ZERO, |b| b.take(elapsed, bytes as f64));
        a.max(b)
    }

    /// Records `rows` and `bytes` as moved and waits as long as the limits require.
    /// Cancel-safe: dropping the future only skips the wait.
    pub async fn acquire(&self, rows: u64, bytes: u64) {
        let wait = self.debit(rows, bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Rates of zero or less (or not finite) count as unlimited.
fn positive(limits: Limits) -> Limits {
    let positive = |r: Option<f64>| r.filter(|r| *r > 0.0 && r.is_finite());
    Limits {
        rows_per_sec: positive(limits.rows_per_sec),
        bytes_per_sec: positive(limits.bytes_per_sec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlimited_throttle_never_waits() {
        let t = Throttle::new(Limits::unlimited());
        assert_eq!(t.debit(1_000_000, 1 << 30), Duration::ZERO);
    }

    #[test]
    fn the_debt_beyond_one_second_of_budget_is_paid_in_time() {
        let t = Throttle::new(Limits {
            rows_per_sec: Some(1000.0),
            bytes_per_sec: None,
        });
        // The first second's budget is there at once.
        assert_eq!(t.debit(1000, 0), Duration::ZERO);
        // 500 more rows cost half a second (give or take the time the test took).
        let wait = t.debit(500, 0);
        assert!(
            wait > Duration::from_millis(450) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
    }

    #[test]
    fn the_stricter_of_the_two_limits_decides() {
        let t = Throttle::new(Limits {
            rows_per_sec: Some(1e9),
            bytes_per_sec: Some(1_000_000.0),
        });
        let wait = t.debit(10, 3_000_000);
        assert!(wait > Duration::from_millis(1900), "{wait:?}");
    }

    #[test]
    fn zero_or_negative_rates_mean_unlimited() {
        let t = Throttle::new(Limits {
            rows_per_sec: Some(0.0),
            bytes_per_sec: Some(-5.0),
        });
        assert_eq!(t.limits(), Limits::unlimited());
        assert_eq!(t.debit(u64::MAX, u64::MAX), Duration::ZERO);
    }

    #[test]
    fn new_limits_apply_to_the_next_debit() {
        let t = Throttle::new(Limits::unlimited());
        assert_eq!(t.debit(5000, 0), Duration::ZERO);
        t.set_limits(Limits {
            rows_per_sec: Some(1000.0),
            bytes_per_sec: None,
        });
        assert_eq!(t.limits().rows_per_sec, Some(1000.0));
        let wait = t.debit(2000, 0);
        assert!(wait > Duration::from_millis(900), "{wait:?}");
        t.set_limits(Limits::unlimited());
        assert_eq!(t.debit(u64::MAX, 0), Duration::ZERO);
    }
}
