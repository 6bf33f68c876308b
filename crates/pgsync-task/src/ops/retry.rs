//! Retries (MISSION L3): every error a running task meets is sorted into one of three
//! classes, and each transient class has its own window.
//!
//! | class        | examples                                          | retried for              |
//! |--------------|---------------------------------------------------|--------------------------|
//! | `connection` | refused/reset/EOF, SQLSTATE 08*, 57P01-57P03       | `retry.connection_minutes` |
//! | `transient`  | deadlock, serialization, lock timeout, 53*, slot in use, spill disk | `retry.other_minutes` |
//! | `definite`   | bad password, missing table, conflict, bad config | not at all               |
//!
//! A window runs from the first failure of its class since the task last made progress
//! (a group applied, heartbeats included, or an attempt that ran for a long while), so a
//! task that heals and later fails again gets a whole new window. Between attempts the
//! wait doubles from 0.5 s to 30 s, and never runs past the window's end: the task fails
//! when the window closes, with the last cause. Retrying never skips or repeats a
//! transaction: every attempt resumes from the progress committed on the destination
//! together with the applied data.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::TaskError;

/// How a failure is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// A server is unreachable or went away: retried for `retry.connection_minutes`.
    Connection,
    /// Worth another try soon: retried for `retry.other_minutes`.
    Transient,
    /// Someone has to change something first: the task stops.
    Definite,
}

impl ErrorClass {
    /// Lower-case name, as logged and exported.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::Transient => "transient",
            Self::Definite => "definite",
        }
    }
}

/// SQLSTATEs (and the absence of one: an I/O error) that mean "the connection is gone or
/// the server cannot take one now".
fn is_connection_state(code: Option<&str>) -> bool {
    match code {
        None => true,
        Some(c) => c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03"),
    }
}

/// Sorts `e` into its class.
pub fn classify(e: &TaskError) -> ErrorClass {
    if !e.is_retryable() {
        return ErrorClass::Definite;
    }
    let connection = match e {
        TaskError::Sql { source, .. }
        | TaskError::State(crate::state::StateError::Postgres(source)) => {
            source.is_closed() || is_connection_state(source.code().map(|c| c.code()))
        }
        TaskError::Wal(w) => match w {
            pgsync_wal::WalError::Connect { .. }
            | pgsync_wal::WalError::ConnectionLost { .. }
            | pgsync_wal::WalError::Io { .. } => true,
            pgsync_wal::WalError::Server(s) => is_connection_state(Some(s.code.code())),
            _ => false,
        },
        TaskError::Snapshot(s) => match s {
            pgsync_snapshot::SnapshotError::Connect { .. } => true,
            other => other
                .code()
                .is_some_and(|c| is_connection_state(Some(c.code()))),
        },
        TaskError::Apply(a) => match a {
            pgsync_apply::ApplyError::Postgres { .. } => is_connection_state(a.sqlstate()),
            _ => false,
        },
        TaskError::StreamEnded => true,
        _ => false,
    };
    if connection {
        ErrorClass::Connection
    } else {
        ErrorClass::Transient
    }
}

/// The windows, from `[retry]`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// For [`ErrorClass::Connection`].
    pub connection: Duration,
    /// For [`ErrorClass::Transient`].
    pub other: Duration,
}

/// What to do about one failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this pause.
    RetryAfter(Duration),
    /// Stop: definite, or the class's window has closed after this long.
    GiveUp {
        /// The class of the failure.
        class: ErrorClass,
        /// How long the failures of this class lasted (zero for definite errors).
        failing_for: Duration,
    },
}

/// An attempt that ran this long counts as recovery even without visible progress.
const LONG_ATTEMPT: Duration = Duration::from_secs(300);
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// The retry state of one task run.
#[derive(Debug)]
pub struct Retrier {
    policy: RetryPolicy,
    pause: Duration,
    connection_since: Option<Instant>,
    other_since: Option<Instant>,
    attempt_started: Instant,
    /// Retries so far (for status and metrics).
    pub retries: u64,
}

impl Retrier {
    /// A fresh state.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            pause: FIRST_PAUSE,
            connection_since: None,
            other_since: None,
            attempt_started: Instant::now(),
            retries: 0,
        }
    }

    /// An attempt begins.
    pub fn attempt(&mut self) {
        self.attempt_started = Instant::now();
    }

    /// The task made progress: every window starts over.
    pub fn progressed(&mut self) {
        self.pause = FIRST_PAUSE;
        self.connection_since = None;
        self.other_since = None;
    }

    /// Decides about `class` failing now.
    pub fn decide(&mut self, class: ErrorClass) -> Decision {
        let now = Instant::now();
        if now.duration_since(self.attempt_started) >= LONG_ATTEMPT {
            self.progressed();
        }
        let (since, window) = match class {
            ErrorClass::Definite => {
                return Decision::GiveUp {
                    class,
                    failing_for: Duration::ZERO,
                };
            }
            ErrorClass::Connection => (&mut self.connection_since, self.policy.connection),
            ErrorClass::Transient => (&mut self.other_since, self.policy.other),
        };
        let since = *since.get_or_insert(now);
        let failing_for = now.duration_since(since);
        if failing_for >= window {
            return Decision::GiveUp { class, failing_for };
        }
        let pause = self.pause.min(window - failing_for);
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        self.retries += 1;
        Decision::RetryAfter(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(conn: u64, other: u64) -> RetryPolicy {
        RetryPolicy {
            connection: Duration::from_secs(conn),
            other: Duration::from_secs(other),
        }
    }

    #[test]
    fn definite_errors_are_not_retried() {
        let mut r = Retrier::new(policy(600, 60));
        assert!(matches!(
            r.decide(ErrorClass::Definite),
            Decision::GiveUp { failing_for, .. } if failing_for.is_zero()
        ));
        assert_eq!(classify(&TaskError::Released), ErrorClass::Definite);
        assert_eq!(classify(&TaskError::StreamEnded), ErrorClass::Connection);
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_double_up_to_the_window_then_the_task_gives_up() {
        let mut r = Retrier::new(policy(600, 10));
        let mut waited = Duration::ZERO;
        let mut pauses = Vec::new();
        loop {
            match r.decide(ErrorClass::Transient) {
                Decision::RetryAfter(p) => {
                    pauses.push(p);
                    waited += p;
                    tokio::time::advance(p).await;
                }
                Decision::GiveUp { class, failing_for } => {
                    assert_eq!(class, ErrorClass::Transient);
                    assert_eq!(failing_for, Duration::from_secs(10));
                    break;
                }
            }
        }
        assert_eq!(pauses[0], Duration::from_millis(500));
        assert_eq!(pauses[1], Duration::from_secs(1));
        assert_eq!(waited, Duration::from_secs(10), "{pauses:?}");
        assert_eq!(r.retries, pauses.len() as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_gives_a_new_window_and_classes_have_their_own() {
        let mut r = Retrier::new(policy(600, 10));
        assert!(matches!(
            r.decide(ErrorClass::Transient),
            Decision::RetryAfter(_)
        ));
        tokio::time::advance(Duration::from_secs(9)).await;
        // A connection outage does not use up the other window, nor the reverse.
        assert!(matches!(
            r.decide(ErrorClass::Connection),
            Decision::RetryAfter(_)
        ));
        r.progressed();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(matches!(
            r.decide(ErrorClass::Transient),
            Decision::RetryAfter(_)
        ));
    }
}
