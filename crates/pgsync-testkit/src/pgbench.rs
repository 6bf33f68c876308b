//! Bounded pgbench loads against a cluster (pgbench ships with the server).
//!
//! Every run has a limit (a duration or a number of transactions per client), so a test
//! can never leave a load running; a spawned run is killed if its handle is dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::cluster::{Cluster, SUPERUSER};
use crate::error::{Result, TestkitError};

/// pgbench bound to one database of a cluster.
#[derive(Debug)]
pub struct Pgbench<'a> {
    cluster: &'a Cluster,
    database: String,
}

/// What to run and for how long.
#[derive(Debug, Clone)]
pub struct PgbenchLoad {
    clients: u32,
    jobs: u32,
    limit: Limit,
    script: Script,
    defines: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
enum Limit {
    Duration(Duration),
    Transactions(u64),
}

#[derive(Debug, Clone)]
enum Script {
    Builtin(&'static str),
    File(PathBuf),
}

impl PgbenchLoad {
    /// `-N` (simple-update: UPDATE accounts, SELECT, INSERT history), 10 s, 2 clients.
    pub fn simple_update() -> Self {
        Self::builtin("simple-update")
    }

    /// The default TPC-B-like script, 10 s, 2 clients.
    pub fn tpcb_like() -> Self {
        Self::builtin("tpcb-like")
    }

    fn builtin(name: &'static str) -> Self {
        Self {
            clients: 2,
            jobs: 1,
            limit: Limit::Duration(Duration::from_secs(10)),
            script: Script::Builtin(name),
            defines: Vec::new(),
        }
    }

    /// A custom script file (`-f`).
    pub fn script(path: impl Into<PathBuf>) -> Self {
        Self {
            script: Script::File(path.into()),
            ..Self::simple_update()
        }
    }

    /// Number of client sessions (`-c`).
    pub fn clients(mut self, n: u32) -> Self {
        self.clients = n.max(1);
        self
    }

    /// Number of pgbench threads (`-j`).
    pub fn jobs(mut self, n: u32) -> Self {
        self.jobs = n.max(1);
        self
    }

    /// Runs for this long (`-T`, whole seconds, at least 1).
    pub fn duration(mut self, d: Duration) -> Self {
        self.limit = Limit::Duration(d.max(Duration::from_secs(1)));
        self
    }

    /// Runs this many transactions per client (`-t`).
    pub fn transactions_per_client(mut self, n: u64) -> Self {
        self.limit = Limit::Transactions(n.max(1));
        self
    }

    /// Sets a script variable (`-D name=value`).
    pub fn define(mut self, name: impl Into<String>, value: impl std::fmt::Display) -> Self {
        self.defines.push((name.into(), value.to_string()));
        self
    }
}

/// What a finished run reported.
#[derive(Debug, Clone, PartialEq)]
pub struct PgbenchReport {
    /// "number of transactions actually processed".
    pub transactions: u64,
    /// "number of failed transactions" (0 when pgbench does not print it).
    pub failed: u64,
    /// Transactions per second, without the initial connection time.
    pub tps: f64,
}

/// A run in the background; killed if dropped before [`finish`](Self::finish).
#[derive(Debug)]
pub struct RunningPgbench {
    child: tokio::process::Child,
}

impl RunningPgbench {
    /// Waits for the run to end and parses its report.
    pub async fn finish(self) -> Result<PgbenchReport> {
        let out = self
            .child
            .wait_with_output()
            .await
            .map_err(TestkitError::io("waiting for pgbench"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(TestkitError::Command {
                program: "pgbench".into(),
                status: out.status.to_string(),
                output: format!("{stdout}{stderr}"),
            });
        }
        parse_report(&stdout).ok_or_else(|| TestkitError::Command {
            program: "pgbench".into(),
            status: out.status.to_string(),
            output: format!("no report in its output: {stdout}"),
        })
    }
}

impl<'a> Pgbench<'a> {
    pub(crate) fn new(cluster: &'a Cluster, database: &str) -> Self {
        Self {
            cluster,
            database: database.to_owned(),
        }
    }

    /// The same, against another database of the cluster.
    pub fn database(mut self, name: &str) -> Self {
        self.database = name.to_owned();
        self
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.cluster.binaries().program("pgbench"));
        cmd.args(["-h", "127.0.0.1", "-U", SUPERUSER, "-p"])
            .arg(self.cluster.port().to_string())
            .env_remove("PGPASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(p) = self.cluster.password() {
            cmd.env("PGPASSWORD", p);
        }
        cmd
    }

    /// `pgbench -i -q -s <scale>`: creates and fills the four pgbench tables
    /// (`scale` × 100,000 accounts).
    pub async fn init(&self, scale: u32) -> Result<()> {
        let out = self
            .command()
            .args(["-i", "-q", "-s"])
            .arg(scale.to_string())
            .arg(&self.database)
            .output()
            .await
            .map_err(TestkitError::io("running pgbench -i"))?;
        if out.status.success() {
            return Ok(());
        }
        Err(TestkitError::Command {
            program: "pgbench -i".into(),
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Starts a bounded run in the background (`-n`: no vacuum, so the tables are only
    /// changed by the load itself).
    pub fn spawn(&self, load: &PgbenchLoad) -> Result<RunningPgbench> {
        let mut cmd = self.command();
        cmd.arg("-n").args([
            "-c",
            &load.clients.to_string(),
            "-j",
            &load.jobs.to_string(),
        ]);
        match load.limit {
            Limit::Duration(d) => cmd.args(["-T", &d.as_secs().to_string()]),
            Limit::Transactions(n) => cmd.args(["-t", &n.to_string()]),
        };
        match &load.script {
            Script::Builtin(name) => cmd.args(["-b", name]),
            Script::File(path) => cmd.arg("-f").arg(path),
        };
        for (name, value) in &load.defines {
            cmd.arg("-D").arg(format!("{name}={value}"));
        }
        cmd.arg(&self.database);
        let child = cmd.spawn().map_err(TestkitError::io("starting pgbench"))?;
        Ok(RunningPgbench { child })
    }

    /// Runs a bounded load to the end.
    pub async fn run(&self, load: &PgbenchLoad) -> Result<PgbenchReport> {
        self.spawn(load)?.finish().await
    }
}

fn parse_report(out: &str) -> Option<PgbenchReport> {
    let after = |prefix: &str| -> Option<&str> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let first_number = |s: &str| -> Option<f64> { s.split_whitespace().next()?.parse().ok() };
    let transactions = after("number of transactions actually processed:")
        .and_then(|s| s.split(['/', ' ']).next()?.parse().ok())?;
    let failed = after("number of failed transactions:")
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let tps = after("tps =").and_then(first_number)?;
    Some(PgbenchReport {
        transactions,
        failed,
        tps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_of_pgbench_15_and_18_parse() {
        let pg15 = "transaction type: <builtin: simple update>\n\
            number of transactions actually processed: 2345\n\
            number of failed transactions: 0 (0.000%)\n\
            latency average = 1.7 ms\n\
            tps = 1171.912 (without initial connection time)\n";
        assert_eq!(
            parse_report(pg15),
            Some(PgbenchReport {
                transactions: 2345,
                failed: 0,
                tps: 1171.912
            })
        );
        let with_limit = "number of transactions actually processed: 100/100\ntps = 50.0 (without initial connection time)\n";
        assert_eq!(parse_report(with_limit).map(|r| r.transactions), Some(100));
        assert_eq!(parse_report("pgbench: error: connection refused"), None);
    }
}
