//! Helpers shared by the real-server tests: a pair of clusters, an exported snapshot held
//! open by a session, table checksums and normalised schema dumps.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::time::Duration;

use pgsync_names::sql::Literal;
use pgsync_snapshot::Endpoint;
use pgsync_testkit::Cluster;
use tokio_postgres::Client;

/// Two fresh clusters with database `app`.
pub async fn pair() -> anyhow::Result<(Cluster, Cluster)> {
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("app").start(),
        Cluster::builder().database("app").start()
    )?;
    Ok((a, b))
}

pub fn endpoint(c: &Cluster) -> Endpoint {
    Endpoint::parse(&c.dsn()).expect("testkit DSN parses")
}

/// A session holding an exported snapshot open, as a replication connection would.
pub struct Exported {
    pub client: Client,
    pub name: String,
}

pub async fn export_snapshot(c: &Cluster) -> anyhow::Result<Exported> {
    let client = c.client().await?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    let name: String = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await?
        .get(0);
    Ok(Exported { client, name })
}

/// Per leaf table (regclass text): row count and md5 over the sorted row md5s; optionally
/// as of an exported snapshot.
pub async fn checksums(
    client: &Client,
    snapshot: Option<&str>,
) -> anyhow::Result<BTreeMap<String, (i64, String)>> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    if let Some(s) = snapshot {
        client
            .batch_execute(&format!("SET TRANSACTION SNAPSHOT {}", Literal(s)))
            .await?;
    }
    let tables: Vec<String> = client
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND n.nspname !~ '^pg_' AND n.nspname NOT IN ('information_schema', 'pgsync')
             ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = BTreeMap::new();
    for t in tables {
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(md5(x::text), '' ORDER BY md5(x::text))), '')
                     FROM ONLY {t} x"
                ),
                &[],
            )
            .await?;
        out.insert(t, (row.get(0), row.get(1)));
    }
    client.batch_execute("COMMIT").await?;
    Ok(out)
}

/// `pg_dump --schema-only` without owners, privileges, pgsync's own schema, comments,
/// SET lines and blank lines.
pub async fn schema_dump(c: &Cluster) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(c.binaries().program("pg_dump"))
        .args([
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--exclude-schema=pgsync",
        ])
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(c.port().to_string())
        .arg(c.database())
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .filter(|l| {
            !(l.is_empty()
                || l.starts_with("--")
                || l.starts_with("SET ")
                || l.starts_with("SELECT pg_catalog.set_config")
                || l.starts_with("\\restrict")
                || l.starts_with("\\unrestrict"))
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The first line where two texts differ, with context, for assertion messages.
pub fn first_difference(a: &str, b: &str) -> String {
    let (al, bl): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    for i in 0..al.len().max(bl.len()) {
        if al.get(i) != bl.get(i) {
            let from = i.saturating_sub(3);
            return format!(
                "line {i}:\nsource:\n{}\ndestination:\n{}",
                al[from..(i + 4).min(al.len())].join("\n"),
                bl[from..(i + 4).min(bl.len())].join("\n")
            );
        }
    }
    "no difference".into()
}

/// Polls `cond` until it holds or `deadline` passes.
pub async fn wait_until<F, Fut>(deadline: Duration, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if cond().await? {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < end,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
