//! Alerts (MISSION L6): when a task fails, when its lag stays above a threshold for a
//! while, or when a slot retains too much WAL, pgsync runs the configured command and/or
//! POSTs to the configured webhook — at most once per condition (kind and direction) per
//! `alerts.repeat_minutes`.
//!
//! ```text
//! monitor tick ─ lag > lag_seconds since t0, now − t0 ≥ lag_for_seconds ─┐
//!              ─ retained > retained_wal_mb ────────────────────────────┼─> due? ─> deliver
//! runner stops on an error ─────────────────────────────────────────────┘   (once per interval)
//! ```
//! The alert is one JSON object: `{"task", "kind", "direction", "message", "value",
//! "threshold", "at"}`. The command gets it on stdin and as `PGSYNC_ALERT_KIND`,
//! `PGSYNC_ALERT_TASK`, `PGSYNC_ALERT_DIRECTION`, `PGSYNC_ALERT_MESSAGE`; a failing or slow
//! receiver is logged, never fatal to the task.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use super::config::AlertsSpec;
use super::metrics::{Metrics, direction_str, now_micros};

/// Longest a receiver may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// One alert.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Alert {
    /// The task.
    pub task: String,
    /// `failure`, `lag` or `retained_wal`.
    pub kind: &'static str,
    /// forward or reverse; empty for the whole task.
    pub direction: &'static str,
    /// What happened, for people.
    pub message: String,
    /// The measured value (seconds, bytes), if any.
    pub value: Option<f64>,
    /// The threshold crossed, if any.
    pub threshold: Option<f64>,
    /// Unix time in seconds.
    pub at: f64,
}

/// The alert state of a task.
#[derive(Debug)]
pub(crate) struct Alerts {
    spec: AlertsSpec,
    task: String,
    last_sent: HashMap<(&'static str, &'static str), Instant>,
    lag_since: HashMap<&'static str, Instant>,
}

impl Alerts {
    pub(crate) fn new(spec: AlertsSpec, task: &str) -> Self {
        Self {
            spec,
            task: task.to_owned(),
            last_sent: HashMap::new(),
            lag_since: HashMap::new(),
        }
    }

    fn alert(&self, kind: &'static str, direction: &'static str, message: String) -> Alert {
        Alert {
            task: self.task.clone(),
            kind,
            direction,
            message,
            value: None,
            threshold: None,
            at: now_micros() as f64 / 1e6,
        }
    }

    /// Whether `(kind, direction)` may alert now; if so, records it as sent.
    fn due(&mut self, kind: &'static str, direction: &'static str) -> bool {
        let repeat = Duration::from_secs_f64(self.spec.repeat_minutes * 60.0);
        let now = Instant::now();
        match self.last_sent.get(&(kind, direction)) {
            Some(t) if now.duration_since(*t) < repeat => false,
            _ => {
                self.last_sent.insert((kind, direction), now);
                true
            }
        }
    }

    /// Checks lag and retained WAL; sends what is due in the background.
    pub(crate) fn evaluate(&mut self, m: &Metrics) {
        if !self.spec.has_receiver() {
            return;
        }
        let mut fire = Vec::new();
        for d in m.active() {
            let dir = direction_str(d.direction());
            if let (Some(limit), Some(lag)) = (self.spec.lag_seconds, d.lag_seconds()) {
                if lag > limit {
                    let since = *self.lag_since.entry(dir).or_insert_with(Instant::now);
                    let held = since.elapsed().as_secs_f64();
                    if held >= self.spec.lag_for_seconds && self.due("lag", dir) {
                        let mut a = self.alert(
                            "lag",
                            dir,
                            format!(
                                "task {} ({dir}) has lagged more than {limit} s for {held:.0} s: {lag:.1} s behind",
                                self.task
                            ),
                        );
                        (a.value, a.threshold) = (Some(lag), Some(limit));
                        fire.push(a);
                    }
                } else {
                    self.lag_since.remove(dir);
                }
            }
            if let (Some(mb), Some(bytes)) = (self.spec.retained_wal_mb, d.retained_bytes()) {
                let limit = mb * 1e6;
                if bytes as f64 > limit && self.due("retained_wal", dir) {
                    let mut a = self.alert(
                        "retained_wal",
                        dir,
                        format!(
                            "the slot of task {} ({dir}) retains {:.1} MB of WAL (limit {mb} MB): \
                             its server's disk fills while the task is behind or stopped",
                            self.task,
                            bytes as f64 / 1e6
                        ),
                    );
                    (a.value, a.threshold) = (Some(bytes as f64), Some(limit));
                    fire.push(a);
                }
            }
        }
        for a in fire {
            let spec = self.spec.clone();
            tokio::spawn(async move { deliver(&spec, &a).await });
        }
    }

    /// The task stopped on `error`: alerts (once per interval) and waits for delivery.
    pub(crate) async fn failure(&mut self, error: &str) {
        if !self.spec.on_failure || !self.spec.has_receiver() || !self.due("failure", "") {
            return;
        }
        let a = self.alert(
            "failure",
            "",
            format!("task {} stopped: {error}", self.task),
        );
        deliver(&self.spec, &a).await;
    }
}

/// Sends `a` to every configured receiver; failures are logged.
pub async fn deliver(spec: &AlertsSpec, a: &Alert) {
    tracing::warn!(kind = a.kind, direction = a.direction, message = %a.message, "alert");
    let body = serde_json::to_string(a).unwrap_or_default();
    if let Some(cmd) = &spec.command {
        match tokio::time::timeout(DELIVERY_TIMEOUT, run_command(cmd, a, &body)).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => tracing::warn!(%status, "the alert command failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the alert command could not run"),
            Err(_) => tracing::warn!("the alert command took longer than 30 s; left running"),
        }
    }
    if let Some(url) = &spec.webhook {
        match tokio::time::timeout(DELIVERY_TIMEOUT, post_json(url, &body)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the alert webhook failed"),
            Err(_) => tracing::warn!("the alert webhook took longer than 30 s"),
        }
    }
}

async fn run_command(
    cmd: &str,
    a: &Alert,
    body: &str,
) -> std::io::Result<std::process::ExitStatus> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("PGSYNC_ALERT_KIND", a.kind)
        .env("PGSYNC_ALERT_TASK", &a.task)
        .env("PGSYNC_ALERT_DIRECTION", a.direction)
        .env("PGSYNC_ALERT_MESSAGE", &a.message)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is fine.
        let _ = stdin.write_all(body.as_bytes()).await;
    }
    child.wait().await
}

/// POSTs `body` as JSON to an `http://host[:port]/path` URL; Ok on a 2xx answer.
pub async fn post_json(url: &str, body: &str) -> std::io::Result<()> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_owned());
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// webhooks are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host_port = if authority
        .rsplit(':')
        .next()
        .is_some_and(|p| p.parse::<u16>().is_ok())
        && authority.contains(':')
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut s = tokio::net::TcpStream::connect(&host_port).await?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\nUser-Agent: pgsync\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = vec![0u8; 64];
    let n = s.read(&mut head).await?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code = line.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "the webhook answered {:?}",
            line.lines().next().unwrap_or("")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Direction;

    #[tokio::test]
    async fn a_sustained_lag_alerts_once_per_interval_into_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("alerts");
        let spec = AlertsSpec {
            command: Some(format!(
                "cat >> {}; echo >> {}",
                file.display(),
                file.display()
            )),
            lag_seconds: Some(5.0),
            lag_for_seconds: 0.0,
            ..AlertsSpec::default()
        };
        let m = Metrics::new("shop", false);
        m.direction(Direction::Forward)
            .applied(1, 1, 10, now_micros() - 60_000_000, 1);
        let mut alerts = Alerts::new(spec, "shop");
        for _ in 0..3 {
            alerts.evaluate(&m);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            if !text.is_empty() || Instant::now() > deadline {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let text = std::fs::read_to_string(&file).unwrap_or(text);
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["kind"], "lag");
        assert_eq!(v["direction"], "forward");
        assert!(v["value"].as_f64().unwrap() >= 60.0);
    }
}
