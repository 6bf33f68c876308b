//! The figures of a running task, in memory: written by the streaming loop (one group at
//! a time, lock-free), by the copy's progress events, by the heartbeat probe and by the
//! retry loop; read by the monitor (which stores them on the destination for
//! `pgsync status`), by the alerts and by the Prometheus endpoint.
//!
//! Stable Prometheus names (all labelled `task`, per-direction ones `direction` too):
//!
//! | name                                   | type    | meaning                                        |
//! |----------------------------------------|---------|------------------------------------------------|
//! | `pgsync_up`                            | gauge   | 1 while the runner runs                        |
//! | `pgsync_state`                         | gauge   | 1 for the current `state` label                |
//! | `pgsync_lag_seconds`                   | gauge   | now − source commit time of the newest applied |
//! | `pgsync_apply_delay_seconds`           | gauge   | apply time − commit time, at the last apply    |
//! | `pgsync_lag_bytes`                     | gauge   | source WAL − the slot's confirmed position     |
//! | `pgsync_slot_retained_bytes`           | gauge   | WAL the slot keeps on its server               |
//! | `pgsync_applied_transactions_total`    | counter | source transactions applied                    |
//! | `pgsync_applied_changes_total`         | counter | rows changed (inserts, updates, deletes, ...)  |
//! | `pgsync_applied_bytes_total`           | counter | bytes of changes applied                       |
//! | `pgsync_apply_changes_per_second`      | gauge   | rate over the last seconds                     |
//! | `pgsync_heartbeats_total`              | counter | heartbeats written on the reading side         |
//! | `pgsync_retries_total`                 | counter | transient errors retried                       |
//! | `pgsync_paused`                        | gauge   | 1 while paused                                 |
//! | `pgsync_copy_rows_total`               | counter | rows copied by the full sync, per `table`      |
//! | `pgsync_copy_bytes_total`              | counter | bytes copied by the full sync, per `table`     |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::names::Direction;

/// What a direction is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum RunState {
    /// Connecting, prechecking.
    Starting = 0,
    /// Schema and full copy.
    Copying = 1,
    /// Streaming changes.
    Streaming = 2,
    /// Paused by `pgsync pause`.
    Paused = 3,
    /// Waiting to retry after a transient error.
    Retrying = 4,
    /// Stopped on a definite error or after the retry window.
    Failed = 5,
    /// Stopped on request.
    Stopped = 6,
}

impl RunState {
    const ALL: [RunState; 7] = [
        Self::Starting,
        Self::Copying,
        Self::Streaming,
        Self::Paused,
        Self::Retrying,
        Self::Failed,
        Self::Stopped,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Copying => "copying",
            Self::Streaming => "streaming",
            Self::Paused => "paused",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }

    fn from_u8(v: u8) -> Self {
        Self::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or(Self::Starting)
    }
}

/// Microseconds since the Unix epoch, now.
pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// One direction's figures.
#[derive(Debug)]
pub struct DirectionMetrics {
    direction: Direction,
    active: AtomicBool,
    state: AtomicU8,
    pub(crate) applied_txns: AtomicU64,
    pub(crate) applied_changes: AtomicU64,
    pub(crate) applied_bytes: AtomicU64,
    /// Source commit time (Unix µs) of the newest applied transaction; 0: none yet.
    pub(crate) last_commit_micros: AtomicI64,
    /// When it was applied (Unix µs).
    pub(crate) last_apply_micros: AtomicI64,
    pub(crate) applied_lsn: AtomicU64,
    /// From the heartbeat probe; -1: unknown.
    pub(crate) lag_bytes: AtomicI64,
    pub(crate) retained_bytes: AtomicI64,
    pub(crate) heartbeats: AtomicU64,
    pub(crate) retries: AtomicU64,
    last_error: Mutex<Option<String>>,
    rate: Mutex<Rate>,
}

#[derive(Debug)]
struct Rate {
    at: Instant,
    changes: u64,
    bytes: u64,
    changes_per_sec: f64,
    bytes_per_sec: f64,
}

impl DirectionMetrics {
    fn new(direction: Direction) -> Self {
        Self {
            direction,
            active: AtomicBool::new(false),
            state: AtomicU8::new(RunState::Starting as u8),
            applied_txns: AtomicU64::new(0),
            applied_changes: AtomicU64::new(0),
            applied_bytes: AtomicU64::new(0),
            last_commit_micros: AtomicI64::new(0),
            last_apply_micros: AtomicI64::new(0),
            applied_lsn: AtomicU64::new(0),
            lag_bytes: AtomicI64::new(-1),
            retained_bytes: AtomicI64::new(-1),
            heartbeats: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            last_error: Mutex::new(None),
            rate: Mutex::new(Rate {
                at: Instant::now(),
                changes: 0,
                bytes: 0,
                changes_per_sec: 0.0,
                bytes_per_sec: 0.0,
            }),
        }
    }

    /// forward or reverse.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Whether this direction runs in this task.
    pub fn is_active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// The current state.
    pub fn state(&self) -> RunState {
        RunState::from_u8(self.state.load(Relaxed))
    }

    pub(crate) fn set_state(&self, s: RunState) {
        self.state.store(s as u8, Relaxed);
    }

    /// A group of source transactions was committed on the writer.
    pub(crate) fn applied(
        &self,
        txns: usize,
        changes: usize,
        bytes: usize,
        commit_micros: i64,
        end_lsn: u64,
    ) {
        let now = now_micros();
        self.applied_txns.fetch_add(txns as u64, Relaxed);
        self.applied_changes.fetch_add(changes as u64, Relaxed);
        self.applied_bytes.fetch_add(bytes as u64, Relaxed);
        self.last_commit_micros.fetch_max(commit_micros, Relaxed);
        self.last_apply_micros.store(now, Relaxed);
        self.applied_lsn.fetch_max(end_lsn, Relaxed);
    }

    /// Seconds since the newest applied source commit; `None` before the first apply.
    pub fn lag_seconds(&self) -> Option<f64> {
        let c = self.last_commit_micros.load(Relaxed);
        (c > 0).then(|| ((now_micros() - c).max(0)) as f64 / 1e6)
    }

    /// Apply time minus commit time at the last apply.
    pub fn apply_delay_seconds(&self) -> Option<f64> {
        let c = self.last_commit_micros.load(Relaxed);
        let a = self.last_apply_micros.load(Relaxed);
        (c > 0).then(|| ((a - c).max(0)) as f64 / 1e6)
    }

    /// Source WAL not yet confirmed by the slot, when probed.
    pub fn lag_bytes(&self) -> Option<i64> {
        Some(self.lag_bytes.load(Relaxed)).filter(|b| *b >= 0)
    }

    /// WAL the slot retains, when probed.
    pub fn retained_bytes(&self) -> Option<i64> {
        Some(self.retained_bytes.load(Relaxed)).filter(|b| *b >= 0)
    }

    /// Changes and bytes per second, as last sampled.
    pub fn rates(&self) -> (f64, f64) {
        let r = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        (r.changes_per_sec, r.bytes_per_sec)
    }

    /// Updates the rates from the counters (called about once a second).
    pub(crate) fn sample_rates(&self) {
        let mut r = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let secs = now.duration_since(r.at).as_secs_f64();
        if secs < 0.5 {
            return;
        }
        let (c, b) = (
            self.applied_changes.load(Relaxed),
            self.applied_bytes.load(Relaxed),
        );
        r.changes_per_sec = (c - r.changes.min(c)) as f64 / secs;
        r.bytes_per_sec = (b - r.bytes.min(b)) as f64 / secs;
        (r.at, r.changes, r.bytes) = (now, c, b);
    }

    /// The last error retried or failed on.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_last_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
    }
}

/// Rows and bytes the full copy moved for one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableCopy {
    /// Rows.
    pub rows: u64,
    /// Bytes of COPY data.
    pub bytes: u64,
    /// Estimated rows at the start.
    pub estimated_rows: u64,
    /// Every chunk committed.
    pub done: bool,
}

/// Everything a task exposes.
#[derive(Debug)]
pub struct Metrics {
    task: String,
    dirs: [DirectionMetrics; 2],
    paused: AtomicBool,
    copy: Mutex<BTreeMap<String, TableCopy>>,
}

impl Metrics {
    /// Figures for `task`, forward active (and reverse when `two_way`).
    pub fn new(task: &str, two_way: bool) -> Self {
        let m = Self {
            task: task.to_owned(),
            dirs: [
                DirectionMetrics::new(Direction::Forward),
                DirectionMetrics::new(Direction::Reverse),
            ],
            paused: AtomicBool::new(false),
            copy: Mutex::new(BTreeMap::new()),
        };
        m.dirs[0].active.store(true, Relaxed);
        m.dirs[1].active.store(two_way, Relaxed);
        m
    }

    /// The task name.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// One direction.
    pub fn direction(&self, d: Direction) -> &DirectionMetrics {
        match d {
            Direction::Forward => &self.dirs[0],
            Direction::Reverse => &self.dirs[1],
        }
    }

    /// The directions this task runs.
    pub fn active(&self) -> impl Iterator<Item = &DirectionMetrics> {
        self.dirs.iter().filter(|d| d.is_active())
    }

    /// Sets the state of every active direction.
    pub(crate) fn set_state(&self, s: RunState) {
        self.active().for_each(|d| d.set_state(s));
    }

    /// Whether the task is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Relaxed)
    }

    pub(crate) fn set_paused(&self, p: bool) {
        self.paused.store(p, Relaxed);
    }

    /// Per-table copy figures.
    pub fn copy(&self) -> BTreeMap<String, TableCopy> {
        self.copy.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes in one progress event of the full copy.
    pub(crate) fn copy_progress(&self, event: &pgsync_snapshot::Progress) {
        use pgsync_snapshot::Progress as P;
        let mut copy = self.copy.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            P::TableQueued {
                table,
                estimated_rows,
                ..
            } => {
                copy.entry(plain(table)).or_default().estimated_rows = *estimated_rows;
            }
            P::Copied { table, rows, bytes } => {
                let t = copy.entry(plain(table)).or_default();
                t.rows += rows;
                t.bytes += bytes;
            }
            P::TableDone { table, .. } | P::TableSkipped { table } => {
                copy.entry(plain(table)).or_default().done = true;
            }
            _ => {}
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let task = escape(&self.task);
        let task = task.as_str();
        let mut family = |name: &str, kind: &str, help: &str, lines: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        };
        let per_dir = |f: &dyn Fn(&DirectionMetrics) -> Option<f64>| -> Vec<(String, f64)> {
            self.active()
                .filter_map(|d| {
                    f(d).map(|v| {
                        (
                            format!(
                                "task=\"{task}\",direction=\"{}\"",
                                direction_str(d.direction)
                            ),
                            v,
                        )
                    })
                })
                .collect()
        };
        family(
            "pgsync_up",
            "gauge",
            "1 while the runner runs.",
            vec![(format!("task=\"{task}\""), 1.0)],
        );
        let states = self
            .active()
            .flat_map(|d| {
                RunState::ALL.iter().map(move |s| {
                    (
                        format!(
                            "task=\"{task}\",direction=\"{}\",state=\"{}\"",
                            direction_str(d.direction),
                            s.as_str()
                        ),
                        f64::from(u8::from(d.state() == *s)),
                    )
                })
            })
            .collect();
        family("pgsync_state", "gauge", "1 for the current state.", states);
        family(
            "pgsync_paused",
            "gauge",
            "1 while paused by pgsync pause.",
            vec![(
                format!("task=\"{task}\""),
                f64::from(u8::from(self.is_paused())),
            )],
        );
        family(
            "pgsync_lag_seconds",
            "gauge",
            "Seconds since the source commit time of the newest applied transaction.",
            per_dir(&|d| d.lag_seconds()),
        );
        family(
            "pgsync_apply_delay_seconds",
            "gauge",
            "Apply time minus source commit time, at the last apply.",
            per_dir(&|d| d.apply_delay_seconds()),
        );
        family(
            "pgsync_lag_bytes",
            "gauge",
            "Source WAL not yet confirmed by the task's slot, in bytes.",
            per_dir(&|d| d.lag_bytes().map(|b| b as f64)),
        );
        family(
            "pgsync_slot_retained_bytes",
            "gauge",
            "WAL the task's slot retains on its server, in bytes.",
            per_dir(&|d| d.retained_bytes().map(|b| b as f64)),
        );
        for (name, help, get) in [
            (
                "pgsync_applied_transactions_total",
                "Source transactions applied.",
                &d_txns as &dyn Fn(&DirectionMetrics) -> u64,
            ),
            (
                "pgsync_applied_changes_total",
                "Row changes applied.",
                &d_changes,
            ),
            (
                "pgsync_applied_bytes_total",
                "Bytes of changes applied.",
                &d_bytes,
            ),
            (
                "pgsync_heartbeats_total",
                "Heartbeats written.",
                &d_heartbeats,
            ),
            (
                "pgsync_retries_total",
                "Transient errors retried.",
                &d_retries,
            ),
        ] {
            family(name, "counter", help, per_dir(&|d| Some(get(d) as f64)));
        }
        family(
            "pgsync_apply_changes_per_second",
            "gauge",
            "Row changes applied per second, recently.",
            per_dir(&|d| Some(d.rates().0)),
        );
        let copy = self.copy();
        let tables = |f: fn(&TableCopy) -> u64| {
            copy.iter()
                .map(|(t, c)| {
                    (
                        format!("task=\"{task}\",table=\"{}\"", escape(t)),
                        f(c) as f64,
                    )
                })
                .collect()
        };
        family(
            "pgsync_copy_rows_total",
            "counter",
            "Rows copied by the full sync.",
            tables(|c| c.rows),
        );
        family(
            "pgsync_copy_bytes_total",
            "counter",
            "Bytes copied by the full sync.",
            tables(|c| c.bytes),
        );
        out
    }
}

fn d_txns(d: &DirectionMetrics) -> u64 {
    d.applied_txns.load(Relaxed)
}
fn d_changes(d: &DirectionMetrics) -> u64 {
    d.applied_changes.load(Relaxed)
}
fn d_bytes(d: &DirectionMetrics) -> u64 {
    d.applied_bytes.load(Relaxed)
}
fn d_heartbeats(d: &DirectionMetrics) -> u64 {
    d.heartbeats.load(Relaxed)
}
fn d_retries(d: &DirectionMetrics) -> u64 {
    d.retries.load(Relaxed)
}

/// `schema.table` without quotes, as labels and status show tables.
fn plain(t: &pgsync_names::QualifiedName) -> String {
    format!("{}.{}", t.schema, t.name)
}

pub(crate) fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::Forward => "forward",
        Direction::Reverse => "reverse",
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_one_sample_per_active_direction_and_escapes_labels() {
        let m = Metrics::new("shop", false);
        m.direction(Direction::Forward)
            .applied(3, 10, 1000, now_micros() - 2_000_000, 42);
        let text = m.render();
        assert!(
            text.contains("pgsync_applied_changes_total{task=\"shop\",direction=\"forward\"} 10"),
            "{text}"
        );
        assert!(!text.contains("direction=\"reverse\""), "{text}");
        let lag: f64 = text
            .lines()
            .find(|l| l.starts_with("pgsync_lag_seconds{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!((2.0..3.0).contains(&lag), "{lag}");
        assert!(
            text.contains("pgsync_state{task=\"shop\",direction=\"forward\",state=\"starting\"} 1")
        );
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
