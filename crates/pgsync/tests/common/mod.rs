//! Helpers for the end-to-end tests: a task file for two clusters, the `pgsync` binary as
//! a child process, table checksums, and waiting for convergence.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use pgsync_testkit::Cluster;
use tokio::process::{Child, Command};

/// A task file for A -> B in a temp dir.
pub struct TaskFile {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TaskFile {
    pub fn new(a: &Cluster, b: &Cluster, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task.toml");
        let text = format!(
            "name = \"e2e\"\n[source]\ndsn = \"{}\"\n[destination]\ndsn = \"{}\"\n{extra}\n",
            a.dsn(),
            b.dsn()
        );
        std::fs::write(&path, text).unwrap();
        Self { _dir: dir, path }
    }
}

/// `pgsync run --config <file>` in the background, its log in a file (shown on failure).
pub struct Pgsync {
    pub child: Child,
    pub log: PathBuf,
}

impl Pgsync {
    pub fn run(task: &TaskFile) -> Self {
        Self::run_with(task, &[], &[])
    }

    /// `run` with more arguments and environment variables (`RUST_LOG` among them
    /// replaces the default filter).
    pub fn run_with(task: &TaskFile, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = task
            .path
            .with_extension(format!("log.{}", std::process::id() ^ rand_u32()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pgsync"))
            .args(["run", "--config"])
            .arg(&task.path)
            .args(args)
            .env("RUST_LOG", "info,pgsync_apply=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// SIGKILL, as a crash would.
    pub async fn kill9(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap() as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("pgsync did not stop")
            .unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Pgsync {
    /// A failing test shows what pgsync logged (the log goes away with the task's temp
    /// dir); the test harness prints it with the failure.
    #[allow(clippy::print_stderr, reason = "captured by the test harness")]
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- pgsync log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// count and md5 of every row of `table`, in a stable order.
pub async fn checksum(c: &Cluster, table: &str) -> (i64, String) {
    let sql = format!(
        "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
    );
    match c.client().await {
        Ok(client) => match client.query_one(&sql, &[]).await {
            Ok(row) => (row.get(0), row.get(1)),
            Err(e) => (-1, e.to_string()),
        },
        Err(e) => (-1, e.to_string()),
    }
}

pub const PGBENCH_TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
];

/// Waits until every table has the same checksum on both sides; panics with the
/// differences (and the pgsync log as it is then: `log` is called only on failure)
/// after `timeout`.
pub async fn wait_converged(
    a: &Cluster,
    b: &Cluster,
    tables: &[&str],
    timeout: Duration,
    log: impl Fn() -> String,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut diffs = Vec::new();
        for t in tables {
            let (x, y) = (checksum(a, t).await, checksum(b, t).await);
            if x != y {
                diffs.push(format!("{t}: A {x:?} B {y:?}"));
            }
        }
        if diffs.is_empty() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            if tables.contains(&"pgbench_history") {
                let q = "SELECT string_agg(format('%s %s %s', aid, delta, mtime), ', ' ORDER BY mtime) FROM pgbench_history";
                let (x, y) = (a.client().await.unwrap(), b.client().await.unwrap());
                let ha: Option<String> = x
                    .query_one(q, &[])
                    .await
                    .map(|r| r.get(0))
                    .unwrap_or_default();
                let hb: Option<String> = y
                    .query_one(q, &[])
                    .await
                    .map(|r| r.get(0))
                    .unwrap_or_default();
                let (ha, hb) = (ha.unwrap_or_default(), hb.unwrap_or_default());
                let sb: std::collections::HashSet<&str> = hb.split(", ").collect();
                let missing: Vec<&str> =
                    ha.split(", ").filter(|r| !sb.contains(r)).take(5).collect();
                diffs.push(format!(
                    "missing history rows on B: {missing:?}; last on A: {:?}",
                    ha.rsplit(", ").next()
                ));
            }
            panic!(
                "not converged after {timeout:?}:\n{}\n--- pgsync log ---\n{}",
                diffs.join("\n"),
                log()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A with a pgbench database (history given REPLICA IDENTITY FULL: it has no key), B empty.
pub async fn pgbench_pair(scale: u32) -> (Cluster, Cluster) {
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("bench").start(),
        Cluster::builder().database("bench").start()
    )
    .unwrap();
    a.pgbench().init(scale).await.unwrap();
    a.client()
        .await
        .unwrap()
        .batch_execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        .await
        .unwrap();
    (a, b)
}

/// Nothing pgsync would create exists on the server (slots, publications, origins,
/// schema pgsync).
pub async fn untouched(c: &Cluster) {
    let row = c
        .client()
        .await
        .unwrap()
        .query_one(
            "SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_publication)
                  + (SELECT count(*) FROM pg_replication_origin)
                  + (SELECT count(*) FROM pg_namespace WHERE nspname = 'pgsync')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        0,
        "pgsync objects are left on port {}",
        c.port()
    );
}
