//! Schema sync + full copy from one database to another, timed: the runner behind
//! `bench/full_sync.sh`.
//!
//! ```sh
//! cargo run --release --example full_sync -- \
//!     --source "host=127.0.0.1 port=5432 user=postgres dbname=bench" \
//!     --destination "host=127.0.0.1 port=5433 user=postgres dbname=bench" \
//!     [--workers 4] [--chunk-mb 32] [--task bench] [--include 'public.*'] \
//!     [--rows-per-sec N] [--mb-per-sec N]
//! ```
//! The snapshot comes from a plain session on the source (`BEGIN ISOLATION LEVEL
//! REPEATABLE READ; SELECT pg_export_snapshot()`), held open until every worker has
//! imported it, as a replication slot's exported snapshot would be. The last line printed
//! is `full_sync total_s=.. catalog_s=.. pre_data_s=.. data_s=.. post_data_s=.. rows=..`.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use pgsync_names::Selection;
use pgsync_snapshot::{Endpoint, FullSync, Limits, SyncOptions, Throttle};
use tokio_postgres::NoTls;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let source = arg(&args, "--source").context("--source DSN is required")?;
    let destination = arg(&args, "--destination").context("--destination DSN is required")?;
    let mut options = SyncOptions::new(arg(&args, "--task").unwrap_or_else(|| "bench".into()));
    if let Some(w) = arg(&args, "--workers") {
        options.workers = w.parse().context("--workers")?;
    }
    if let Some(mb) = arg(&args, "--chunk-mb") {
        options.chunk_bytes = mb.parse::<u64>().context("--chunk-mb")? << 20;
    }
    if let Some(include) = arg(&args, "--include") {
        options.selection = Selection::parse(include.split(','), [])?;
    }
    let limits = Limits {
        rows_per_sec: arg(&args, "--rows-per-sec")
            .map(|v| v.parse())
            .transpose()?,
        bytes_per_sec: arg(&args, "--mb-per-sec")
            .map(|v| v.parse::<f64>().map(|mb| mb * 1e6))
            .transpose()?,
    };
    options.throttle = Arc::new(Throttle::new(limits));
    let workers = options.workers;

    let (exporter, conn) = tokio_postgres::connect(&source, NoTls).await?;
    tokio::spawn(conn);
    let started = Instant::now();
    exporter
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    let snapshot: String = exporter
        .query_one("SELECT pg_export_snapshot()", &[])
        .await?
        .get(0);
    let mut handle = FullSync::new(
        Endpoint::parse(&source)?,
        Endpoint::parse(&destination)?,
        options,
    )
    .start(snapshot);
    handle.snapshot_imported().await?;
    exporter.batch_execute("COMMIT").await?;
    let report = handle.finish().await?;
    let total = started.elapsed();
    let [catalog, pre, data, post] = report.timings;
    for s in &report.skipped {
        println!("skipped: {s}");
    }
    println!(
        "full_sync total_s={:.2} catalog_s={:.2} pre_data_s={:.2} data_s={:.2} post_data_s={:.2} \
         rows={} bytes={} jobs={} workers={workers}",
        total.as_secs_f64(),
        catalog.as_secs_f64(),
        pre.as_secs_f64(),
        data.as_secs_f64(),
        post.as_secs_f64(),
        report.copy.rows,
        report.copy.bytes,
        report.copy.jobs,
    );
    Ok(())
}
