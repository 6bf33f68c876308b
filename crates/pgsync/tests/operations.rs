//! Operating a task on real servers: retries across a source outage (and giving up after
//! the window), the Prometheus endpoint, heartbeat lag, pause/resume, the copy throttle
//! and lag alerts.

mod common;

use std::collections::HashMap;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{PGBENCH_TABLES, Pgsync, TaskFile, pgbench_pair, wait_converged};
use pgsync_testkit::{Cluster, PgbenchLoad};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn pgsync(args: &[&str], task: &TaskFile) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pgsync"))
        .args(args)
        .arg("--config")
        .arg(&task.path)
        .output()
        .unwrap()
}

fn status(task: &TaskFile) -> Value {
    let out = pgsync(&["status", "--json"], task);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits until `f` holds of the status, or panics with the last status and the log.
async fn wait_status(
    task: &TaskFile,
    runner: &Pgsync,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = status(task);
        if f(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed {what}: {st:#}\n--- log ---\n{}",
            runner.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET /metrics, parsed into `name{labels}` -> value; `None` while nothing listens.
async fn scrape(port: u16) -> Option<HashMap<String, f64>> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let mut out = HashMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, value) = line.rsplit_once(' ').expect(line);
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        assert!(
            out.insert(key.to_owned(), v).is_none(),
            "duplicate sample {key}"
        );
    }
    Some(out)
}

fn sum(m: &HashMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

async fn exec(c: &Cluster, sql: &str) {
    c.client().await.unwrap().batch_execute(sql).await.unwrap();
}

#[tokio::test]
async fn a_source_stopped_for_30_seconds_mid_stream_is_waited_for_and_nothing_is_lost() {
    let (mut a, b) = pgbench_pair(1).await;
    let task = TaskFile::new(&a, &b, "");
    let mut runner = Pgsync::run(&task);
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        runner.log_text()
    })
    .await;
    let load = PgbenchLoad::simple_update()
        .clients(2)
        .duration(Duration::from_secs(4));
    a.pgbench().run(&load).await.unwrap();

    a.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        runner.child.try_wait().unwrap().is_none(),
        "the task stopped during the outage:\n{}",
        runner.log_text()
    );
    a.start().await.unwrap();
    a.pgbench().run(&load).await.unwrap();
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(90), || {
        runner.log_text()
    })
    .await;

    let log = runner.log_text();
    assert!(
        log.contains("transient error") && log.contains("connection"),
        "each retry is logged with its class and cause:\n{log}"
    );
    let st = wait_status(&task, &runner, "streaming again", |st| {
        st["directions"][0]["runtime"]["state"] == "streaming"
    })
    .await;
    assert!(
        st["directions"][0]["runtime"]["retries"].as_i64().unwrap() >= 1,
        "{st:#}"
    );
    assert!(runner.stop().await.success());
}

#[tokio::test]
async fn with_a_short_connection_window_a_longer_outage_fails_the_task_with_the_cause() {
    let (mut a, b) = pgbench_pair(1).await;
    // One window minute lasts one second: connection errors are retried for 10 s.
    let task = TaskFile::new(
        &a,
        &b,
        "[retry]\nconnection_minutes = 10\nother_minutes = 1\n",
    );
    let mut runner = Pgsync::run_with(&task, &[], &[("PGSYNC_RETRY_MINUTE_SECONDS", "1")]);
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        runner.log_text()
    })
    .await;
    a.stop().await.unwrap();
    let stopped = Instant::now();
    let code = tokio::time::timeout(Duration::from_secs(60), runner.child.wait())
        .await
        .unwrap_or_else(|_| panic!("the task did not give up:\n{}", runner.log_text()))
        .unwrap();
    let after = stopped.elapsed();
    assert_eq!(code.code(), Some(1), "{}", runner.log_text());
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(30)).contains(&after),
        "gave up after {after:?}"
    );
    let log = runner.log_text();
    assert!(log.contains("gave up after"), "{log}");
    // With the source still down, status reads what the destination knows.
    let st = status(&task);
    let err = st["directions"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        err.contains("gave up") && err.contains("connection"),
        "{st:#}"
    );
    assert!(st["source_error"].is_string(), "{st:#}");
    assert_eq!(st["directions"][0]["runtime"]["state"], "failed", "{st:#}");
    a.start().await.unwrap();
}

#[tokio::test]
async fn the_metrics_endpoint_is_scraped_and_parsed_and_heartbeats_keep_an_idle_lag_small() {
    let (a, b) = pgbench_pair(1).await;
    let task = TaskFile::new(&a, &b, "[heartbeat]\ninterval_seconds = 1\n");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let runner = Pgsync::run_with(&task, &["--metrics-addr", &addr], &[]);
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        runner.log_text()
    })
    .await;
    let load = PgbenchLoad::simple_update()
        .clients(2)
        .duration(Duration::from_secs(3));
    a.pgbench().run(&load).await.unwrap();
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        runner.log_text()
    })
    .await;

    // Idle now: heartbeats keep the lag within a few seconds, and the slot moving.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let m = scrape(port)
        .await
        .expect("nothing listens on --metrics-addr");
    let fwd = "task=\"e2e\",direction=\"forward\"";
    assert_eq!(m["pgsync_up{task=\"e2e\"}"], 1.0);
    assert_eq!(
        m[&format!("pgsync_state{{{fwd},state=\"streaming\"}}")],
        1.0
    );
    assert!(
        m[&format!("pgsync_applied_changes_total{{{fwd}}}")] > 100.0,
        "{m:?}"
    );
    assert!(
        m[&format!("pgsync_heartbeats_total{{{fwd}}}")] >= 2.0,
        "{m:?}"
    );
    let lag = m[&format!("pgsync_lag_seconds{{{fwd}}}")];
    assert!((0.0..4.0).contains(&lag), "idle lag {lag}");
    assert!(
        m.contains_key(&format!("pgsync_slot_retained_bytes{{{fwd}}}")),
        "{m:?}"
    );
    assert!(m[&format!("pgsync_lag_bytes{{{fwd}}}")] < 1e6, "{m:?}");
    assert_eq!(
        m.get("pgsync_copy_rows_total{task=\"e2e\",table=\"public.pgbench_accounts\"}"),
        Some(&100_000.0),
        "{:?}",
        m.keys().filter(|k| k.contains("copy")).collect::<Vec<_>>()
    );
    assert!(!m.keys().any(|k| k.contains("reverse")), "one-way task");

    let st = wait_status(&task, &runner, "stored figures", |st| {
        st["directions"][0]["runtime"]["applied_changes"].as_i64() > Some(100)
    })
    .await;
    let rt = &st["directions"][0]["runtime"];
    assert!(rt["lag_seconds"].as_f64().unwrap() < 5.0, "{st:#}");
    let copied = st["copied"].as_array().unwrap();
    assert!(
        copied
            .iter()
            .any(|t| t["table"] == "public.pgbench_accounts" && t["rows"] == 100_000),
        "{st:#}"
    );
    assert!(runner.stop().await.success());
}

#[tokio::test]
async fn pausing_holds_changes_at_a_transaction_boundary_while_the_lag_grows_until_resume() {
    let (a, b) = pgbench_pair(1).await;
    let task = TaskFile::new(&a, &b, "[heartbeat]\ninterval_seconds = 1\n");
    let runner = Pgsync::run(&task);
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        runner.log_text()
    })
    .await;

    let out = pgsync(&["pause"], &task);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_status(&task, &runner, "paused", |st| {
        st["paused"] == true && st["directions"][0]["runtime"]["state"] == "paused"
    })
    .await;
    exec(
        &a,
        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 5000",
    )
    .await;
    let first = wait_status(&task, &runner, "the lag in bytes", |st| {
        st["directions"][0]["slot"]["lag_bytes"].as_i64() > Some(100_000)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = status(&task);
    let lag = |st: &Value| {
        st["directions"][0]["runtime"]["lag_seconds"]
            .as_f64()
            .unwrap()
    };
    assert!(
        lag(&second) >= lag(&first) + 2.5,
        "lag must grow while paused: {} then {}",
        lag(&first),
        lag(&second)
    );
    let on_b: i64 = b
        .client()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pgbench_accounts WHERE abalance <> 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_b, 0, "nothing is applied while paused");

    let out = pgsync(&["resume"], &task);
    assert!(out.status.success());
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        runner.log_text()
    })
    .await;
    wait_status(&task, &runner, "a small lag again", |st| {
        st["paused"] == false
            && st["directions"][0]["runtime"]["state"] == "streaming"
            && st["directions"][0]["runtime"]["lag_seconds"].as_f64() < Some(3.0)
    })
    .await;
    assert!(runner.stop().await.success());
}

#[tokio::test]
async fn an_alert_command_fires_exactly_once_for_a_sustained_lag() {
    let (a, b) = pgbench_pair(1).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alerts.jsonl");
    let extra = format!(
        "[heartbeat]\ninterval_seconds = 1\n[alerts]\ncommand = \"cat >> {0}; echo >> {0}\"\nlag_seconds = 3\nlag_for_seconds = 2\n",
        file.display()
    );
    let task = TaskFile::new(&a, &b, &extra);
    let runner = Pgsync::run(&task);
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        runner.log_text()
    })
    .await;
    assert!(!file.exists(), "no alert while the task keeps up");

    // A paused task falls behind: 3 s over the threshold, held for 2 s, then 15 s more.
    assert!(pgsync(&["pause"], &task).status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&file)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "no alert:\n{}",
            runner.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    let text = std::fs::read_to_string(&file).unwrap();
    let alerts: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(alerts.len(), 1, "{text}");
    assert_eq!(alerts[0]["kind"], "lag");
    assert_eq!(alerts[0]["task"], "e2e");
    assert!(alerts[0]["value"].as_f64().unwrap() > 3.0);
    assert!(pgsync(&["resume"], &task).status.success());
    assert!(runner.stop().await.success());
}

/// The full copy's rate between `from` and `to` rows copied, read from the metrics.
async fn copy_rate(port: u16, from: f64, to: f64, runner: &Pgsync) -> f64 {
    let mut mark: Option<(Instant, f64)> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "copy too slow:\n{}",
            runner.log_text()
        );
        if let Some(m) = scrape(port).await {
            let rows = sum(&m, "pgsync_copy_rows_total{");
            match mark {
                None if rows >= from => mark = Some((Instant::now(), rows)),
                Some((t0, r0)) if rows >= to => {
                    return (rows - r0) / t0.elapsed().as_secs_f64();
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_throttled_full_copy_measures_within_15_percent_of_the_configured_rows_per_second() {
    let (a, b) = pgbench_pair(2).await;
    const RATE: f64 = 10_000.0;
    const FASTER: f64 = 25_000.0;
    let task = TaskFile::new(
        &a,
        &b,
        &format!("[throttle]\nfull_rows_per_second = {RATE}\n"),
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let runner = Pgsync::run_with(&task, &["--metrics-addr", &addr], &[]);
    // Measured away from the start's burst (one second of budget).
    let rate = copy_rate(port, 20_000.0, 50_000.0, &runner).await;
    assert!(
        (RATE * 0.85..=RATE * 1.15).contains(&rate),
        "measured {rate:.0} rows/s for a limit of {RATE}"
    );
    // A new limit in the task file applies to the running copy on SIGHUP.
    let text = std::fs::read_to_string(&task.path).unwrap();
    std::fs::write(
        &task.path,
        text.replace(&format!("= {RATE}"), &format!("= {FASTER}")),
    )
    .unwrap();
    let pid = runner.child.id().unwrap() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let faster = copy_rate(port, 80_000.0, 180_000.0, &runner).await;
    assert!(
        (FASTER * 0.85..=FASTER * 1.15).contains(&faster),
        "measured {faster:.0} rows/s after raising the limit to {FASTER}\n{}",
        runner.log_text()
    );
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(60), || {
        runner.log_text()
    })
    .await;
    assert!(runner.stop().await.success());
}
