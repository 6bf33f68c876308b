//! Shared helpers for the replication tests: clusters, connections, waiting with deadlines.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pgsync_testkit::Cluster;
use pgsync_wal::{
    CreateSlot, ReplicationConfig, ReplicationConnection, ReplicationStream, StartOptions,
    WalError, XLogData,
};

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A cluster with database `app`.
pub async fn cluster() -> Result<Cluster> {
    Ok(Cluster::builder().database("app").start().await?)
}

/// Replication settings for the cluster's default database over TCP.
pub fn config(cluster: &Cluster) -> ReplicationConfig {
    ReplicationConfig::parse(&cluster.dsn()).expect("testkit DSNs parse")
}

pub async fn connect(cluster: &Cluster) -> Result<ReplicationConnection> {
    Ok(ReplicationConnection::connect(&config(cluster)).await?)
}

/// Creates a permanent slot (no exported snapshot) and returns its consistent point.
pub async fn create_slot(cluster: &Cluster, slot: &str) -> Result<pgsync_wal::Lsn> {
    let mut conn = connect(cluster).await?;
    let created = conn
        .create_slot(&CreateSlot::new(slot).snapshot(pgsync_wal::SlotSnapshot::Nothing))
        .await?;
    conn.close().await?;
    Ok(created.consistent_point)
}

/// Starts streaming `slot` with `publication`.
pub async fn start(cluster: &Cluster, options: &StartOptions) -> Result<ReplicationStream> {
    Ok(connect(cluster).await?.start_replication(options).await?)
}

/// The next XLogData, failing the test after [`DEADLINE`].
pub async fn next(stream: &mut ReplicationStream) -> Result<XLogData> {
    match tokio::time::timeout(DEADLINE, stream.recv()).await {
        Ok(Ok(Some(x))) => Ok(x),
        Ok(Ok(None)) => bail!("the stream ended"),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!("no message within {DEADLINE:?}"),
    }
}

/// Receives until `done` says so; returns everything received.
pub async fn recv_until(
    stream: &mut ReplicationStream,
    mut done: impl FnMut(&[XLogData]) -> bool,
) -> Result<Vec<XLogData>> {
    let mut got = Vec::new();
    while !done(&got) {
        got.push(
            next(stream)
                .await
                .with_context(|| format!("after {} messages", got.len()))?,
        );
    }
    Ok(got)
}

/// Waits until the stream fails or ends; returns the error (`None` for a clean end).
pub async fn recv_to_end(stream: &mut ReplicationStream) -> Result<Option<WalError>> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, stream.recv()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Ok(None),
            Ok(Err(e)) => return Ok(Some(e)),
            Err(_) => bail!("the stream did not end within {DEADLINE:?}"),
        }
    }
}

/// Polls `check` until it returns `Some`, every 100 ms, failing after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The slot's `confirmed_flush_lsn`.
pub async fn confirmed_flush(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<pgsync_wal::Lsn> {
    let row = client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.get::<_, String>(0).parse()?)
}

/// `pg_current_wal_lsn()`.
pub async fn current_lsn(client: &tokio_postgres::Client) -> Result<pgsync_wal::Lsn> {
    let row = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?;
    Ok(row.get::<_, String>(0).parse()?)
}

/// The pgoutput message tag of a payload.
pub fn tag(x: &XLogData) -> char {
    x.data.first().map(|b| char::from(*b)).unwrap_or('?')
}

/// A stream with a transaction assembler on top.
pub struct Reader {
    pub stream: ReplicationStream,
    pub asm: pgsync_wal::txn::Assembler,
    /// The most memory the assembler held after any message.
    pub peak_memory: usize,
}

impl Reader {
    pub fn new(stream: ReplicationStream, config: pgsync_wal::txn::AssemblerConfig) -> Self {
        Self {
            stream,
            asm: pgsync_wal::txn::Assembler::new(config),
            peak_memory: 0,
        }
    }

    /// The next transaction or non-transactional message, failing after [`DEADLINE`].
    pub async fn next(&mut self) -> Result<pgsync_wal::txn::Assembled> {
        loop {
            let x = next(&mut self.stream).await?;
            let done = self.asm.push_payload(&x.data)?;
            self.peak_memory = self.peak_memory.max(self.asm.memory_used());
            if let Some(done) = done {
                return Ok(done);
            }
        }
    }

    /// The next transaction (a non-transactional message here fails the test).
    pub async fn txn(&mut self) -> Result<pgsync_wal::Transaction> {
        match self.next().await? {
            pgsync_wal::txn::Assembled::Transaction(t) => Ok(t),
            other => bail!("expected a transaction, got {other:?}"),
        }
    }
}

/// Column `i` of a tuple as text (`None` for NULL, unchanged or binary).
pub fn text(t: &pgsync_wal::Tuple, i: usize) -> Option<String> {
    match t.get(i)? {
        pgsync_wal::pgoutput::ColumnValue::Text(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// The changes of a transaction, read from memory or spill file.
pub fn changes(t: &pgsync_wal::Transaction) -> Result<Vec<pgsync_wal::Change>> {
    Ok(t.changes().collect::<Result<Vec<_>, _>>()?)
}
