//! The operations sections of the task file: `[retry]`, `[throttle]`, `[heartbeat]` and
//! `[alerts]`. Each has defaults that suit a production task, so a file without them
//! behaves well; every range is checked before anything connects, and the message names
//! the key and what it accepts.
//!
//! The retry windows are long by design (hours for a lost connection), which makes them
//! slow to drill. `PGSYNC_RETRY_MINUTE_SECONDS` (default 60) says how many seconds one
//! "minute" of the retry windows lasts — for fault drills and tests only.

use std::time::Duration;

use serde::Deserialize;

/// The `[retry]` table: how long transient errors are retried before the task fails.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySpec {
    /// Connection errors (a server down or unreachable): minutes, 10..=1440.
    pub connection_minutes: u32,
    /// Other transient errors (deadlock, serialization, lock timeout, resources): minutes,
    /// 1..=1440, smaller than `connection_minutes`.
    pub other_minutes: u32,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            connection_minutes: 720,
            other_minutes: 10,
        }
    }
}

/// Environment variable: seconds per retry-window minute (drills and tests).
pub const MINUTE_SECONDS_ENV: &str = "PGSYNC_RETRY_MINUTE_SECONDS";

impl RetrySpec {
    fn validate(&self) -> Result<(), String> {
        if !(10..=1440).contains(&self.connection_minutes) {
            return Err(format!(
                "retry.connection_minutes = {} is out of range (10..=1440 minutes)",
                self.connection_minutes
            ));
        }
        if !(1..=1440).contains(&self.other_minutes) {
            return Err(format!(
                "retry.other_minutes = {} is out of range (1..=1440 minutes)",
                self.other_minutes
            ));
        }
        if self.other_minutes >= self.connection_minutes {
            return Err(format!(
                "retry.other_minutes = {} must be smaller than retry.connection_minutes = {}: \
                 errors other than lost connections rarely heal by waiting",
                self.other_minutes, self.connection_minutes
            ));
        }
        Ok(())
    }

    /// How long one window minute lasts (60 s unless [`MINUTE_SECONDS_ENV`] says otherwise).
    fn minute() -> Duration {
        std::env::var(MINUTE_SECONDS_ENV)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(Duration::from_secs(60), Duration::from_secs_f64)
    }

    /// The window for connection errors.
    pub fn connection_window(&self) -> Duration {
        Self::minute() * self.connection_minutes
    }

    /// The window for other transient errors.
    pub fn other_window(&self) -> Duration {
        Self::minute() * self.other_minutes
    }
}

/// The `[throttle]` table: limits for the full copy and for streaming; absent means
/// unlimited.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSpec {
    /// Rows per second copied by the full sync (all workers together).
    pub full_rows_per_second: Option<f64>,
    /// Megabytes (10^6 bytes) of COPY data per second for the full sync.
    pub full_mb_per_second: Option<f64>,
    /// Changes per second applied by the incremental sync (each direction).
    pub incremental_rows_per_second: Option<f64>,
    /// Megabytes of changes per second applied by the incremental sync (each direction).
    pub incremental_mb_per_second: Option<f64>,
}

impl ThrottleSpec {
    fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("full_rows_per_second", self.full_rows_per_second),
            ("full_mb_per_second", self.full_mb_per_second),
            (
                "incremental_rows_per_second",
                self.incremental_rows_per_second,
            ),
            ("incremental_mb_per_second", self.incremental_mb_per_second),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(format!(
                    "throttle.{key} = {v} must be a positive number (leave it out for no limit)"
                ));
            }
        }
        Ok(())
    }

    /// The full copy's limits.
    pub fn full(&self) -> pgsync_snapshot::Limits {
        pgsync_snapshot::Limits {
            rows_per_sec: self.full_rows_per_second,
            bytes_per_sec: self.full_mb_per_second.map(|m| m * 1e6),
        }
    }

    /// The incremental sync's limits.
    pub fn incremental(&self) -> pgsync_snapshot::Limits {
        pgsync_snapshot::Limits {
            rows_per_sec: self.incremental_rows_per_second,
            bytes_per_sec: self.incremental_mb_per_second.map(|m| m * 1e6),
        }
    }
}

/// The `[heartbeat]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatSpec {
    /// Write heartbeats on the reading side (default true).
    pub enabled: bool,
    /// Seconds between heartbeats, 1..=300 (default 2).
    pub interval_seconds: u32,
}

impl Default for HeartbeatSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_seconds: 2,
        }
    }
}

impl HeartbeatSpec {
    fn validate(&self) -> Result<(), String> {
        if !(1..=300).contains(&self.interval_seconds) {
            return Err(format!(
                "heartbeat.interval_seconds = {} is out of range (1..=300)",
                self.interval_seconds
            ));
        }
        Ok(())
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.interval_seconds))
    }
}

/// The `[alerts]` table: what to run or call, and when.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSpec {
    /// A shell command (`sh -c`), given the alert as JSON on stdin and in
    /// `PGSYNC_ALERT_*` environment variables.
    pub command: Option<String>,
    /// An `http://` URL the alert is POSTed to as JSON.
    pub webhook: Option<String>,
    /// Alert on a task failure (default true).
    pub on_failure: bool,
    /// Alert when the lag stays above this many seconds ...
    pub lag_seconds: Option<f64>,
    /// ... for this many seconds (default 60).
    pub lag_for_seconds: f64,
    /// Alert when a slot retains more than this many megabytes of WAL on its server.
    pub retained_wal_mb: Option<f64>,
    /// At most one alert per condition per this many minutes (default 60).
    pub repeat_minutes: f64,
}

impl Default for AlertsSpec {
    fn default() -> Self {
        Self {
            command: None,
            webhook: None,
            on_failure: true,
            lag_seconds: None,
            lag_for_seconds: 60.0,
            retained_wal_mb: None,
            repeat_minutes: 60.0,
        }
    }
}

impl AlertsSpec {
    fn validate(&self, heartbeat: &HeartbeatSpec) -> Result<(), String> {
        if let Some(url) = &self.webhook
            && !url.starts_with("http://")
        {
            return Err(format!(
                "alerts.webhook = {url:?} must be an http:// URL (for https, post from \
                 alerts.command, e.g. with curl)"
            ));
        }
        if let Some(cmd) = &self.command
            && cmd.trim().is_empty()
        {
            return Err("alerts.command is empty".into());
        }
        for (key, v) in [
            ("lag_seconds", self.lag_seconds),
            ("retained_wal_mb", self.retained_wal_mb),
            ("lag_for_seconds", Some(self.lag_for_seconds)),
            ("repeat_minutes", Some(self.repeat_minutes)),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!("alerts.{key} = {v} must be a number >= 0"));
            }
        }
        if let Some(lag) = self.lag_seconds
            && heartbeat.enabled
            && lag <= f64::from(heartbeat.interval_seconds)
        {
            return Err(format!(
                "alerts.lag_seconds = {lag} must be above heartbeat.interval_seconds = {}: an \
                 idle task's lag reaches the heartbeat interval between two heartbeats",
                heartbeat.interval_seconds
            ));
        }
        Ok(())
    }

    /// Whether anything is configured to receive alerts.
    pub fn has_receiver(&self) -> bool {
        self.command.is_some() || self.webhook.is_some()
    }
}

/// Checks every operations section.
pub(crate) fn validate(
    retry: &RetrySpec,
    throttle: &ThrottleSpec,
    heartbeat: &HeartbeatSpec,
    alerts: &AlertsSpec,
) -> Result<(), String> {
    retry.validate()?;
    throttle.validate()?;
    heartbeat.validate()?;
    alerts.validate(heartbeat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_documented_windows() {
        let r = RetrySpec::default();
        assert_eq!((r.connection_minutes, r.other_minutes), (720, 10));
        validate(
            &r,
            &ThrottleSpec::default(),
            &HeartbeatSpec::default(),
            &AlertsSpec::default(),
        )
        .unwrap();
    }

    #[test]
    fn retry_windows_out_of_range_or_inverted_are_refused_with_the_key() {
        let bad = |c, o| {
            RetrySpec {
                connection_minutes: c,
                other_minutes: o,
            }
            .validate()
            .unwrap_err()
        };
        assert!(bad(5, 1).contains("retry.connection_minutes"));
        assert!(bad(1441, 1).contains("10..=1440"));
        assert!(bad(20, 0).contains("retry.other_minutes"));
        assert!(bad(20, 20).contains("must be smaller"));
    }

    #[test]
    fn throttle_limits_must_be_positive_and_convert_megabytes() {
        let t = ThrottleSpec {
            full_mb_per_second: Some(2.5),
            ..ThrottleSpec::default()
        };
        assert_eq!(t.full().bytes_per_sec, Some(2_500_000.0));
        let bad = ThrottleSpec {
            incremental_rows_per_second: Some(0.0),
            ..ThrottleSpec::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("throttle.incremental_rows_per_second")
        );
    }

    #[test]
    fn a_lag_threshold_below_the_heartbeat_interval_is_refused() {
        let a = AlertsSpec {
            lag_seconds: Some(1.0),
            command: Some("true".into()),
            ..AlertsSpec::default()
        };
        assert!(
            a.validate(&HeartbeatSpec::default())
                .unwrap_err()
                .contains("heartbeat")
        );
        let https = AlertsSpec {
            webhook: Some("https://example.org/hook".into()),
            ..AlertsSpec::default()
        };
        assert!(
            https
                .validate(&HeartbeatSpec::default())
                .unwrap_err()
                .contains("http://")
        );
    }
}
