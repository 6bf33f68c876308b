//! One copy job: `COPY .. TO STDOUT` on the source streamed into `COPY .. FROM STDIN` on
//! the destination, without decoding rows.
//!
//! ```text
//! source (snapshot txn)                          destination
//! COPY (SELECT cols FROM ONLY t WHERE ctid..)    BEGIN
//!   TO STDOUT (FORMAT binary)   --CopyData-->    COPY t' (cols') FROM STDIN (FORMAT binary)
//!                                                INSERT INTO pgsync.copy_state ..
//!                                                COMMIT
//! ```
//! A row filter (`[[objects.table]] row_filter`) becomes the `WHERE` of the source query,
//! next to the ctid range of a chunk.
//!
//! Binary when both servers run the same major version and the rows go straight into a
//! table this run created; text otherwise (a different major version may change a type's
//! binary form). Column renames only change the destination's column list. A table kept
//! in `ignore` mode gets the rows through a temporary table and
//! `INSERT .. ON CONFLICT DO NOTHING`, so its own rows win on a key clash.

use std::time::Instant;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, pin_mut};
use pgsync_names::sql::{Ident, ident_list};
use tokio_postgres::Client;

use super::chunk::Job;
use super::state;
use crate::ddl::TablePlan;
use crate::error::{Result, Side, SnapshotError};
use crate::progress::{Progress, REPORT_EVERY, Reporter};
use crate::throttle::Throttle;

/// Rows and bytes between throttle debits.
const THROTTLE_ROWS: u64 = 512;
const THROTTLE_BYTES: u64 = 256 * 1024;

/// Everything a job needs besides its two connections.
pub(crate) struct JobContext<'a> {
    pub(crate) task: &'a str,
    pub(crate) table: &'a TablePlan,
    pub(crate) job: &'a Job,
    pub(crate) binary: bool,
    pub(crate) snapshot_lsn: Option<String>,
    pub(crate) throttle: &'a Throttle,
    pub(crate) reporter: &'a Reporter,
}

/// Whether a CopyData message holds a row. The server sends one message per row; binary
/// COPY adds its 19-byte header to the first message and sends the `-1` trailer on its
/// own (or with the header, when there are no rows).
fn is_row(message: &[u8], binary: bool) -> bool {
    !(binary && message.ends_with(&[0xff, 0xff]) && matches!(message.len(), 2 | 21))
}

/// Source `COPY .. TO STDOUT` for the job.
pub(crate) fn source_sql(t: &TablePlan, job: &Job, binary: bool) -> String {
    let format = if binary { " (FORMAT binary)" } else { "" };
    let cols = ident_list(t.source_columns.iter().map(String::as_str));
    let row_filter = t.row_filter.as_ref().map(|w| format!("({w})"));
    let filter = match (row_filter, job.ctid_filter()) {
        (None, None) if t.source_columns.is_empty() => {
            return format!("COPY {} TO STDOUT{format}", t.source);
        }
        (None, None) => return format!("COPY {} ({cols}) TO STDOUT{format}", t.source),
        (Some(w), None) | (None, Some(w)) => w,
        (Some(w), Some(ctid)) => format!("{w} AND {ctid}"),
    };
    format!(
        "COPY (SELECT {cols} FROM ONLY {} WHERE {filter}) TO STDOUT{format}",
        t.source
    )
}

/// Runs one job; returns the rows and bytes it committed.
pub(crate) async fn run(src: &Client, dst: &Client, cx: &JobContext<'_>) -> Result<(u64, u64)> {
    let t = cx.table;
    let format = if cx.binary { " (FORMAT binary)" } else { "" };
    let cols = ident_list(t.dest_columns.iter().map(String::as_str));
    let col_list = if t.dest_columns.is_empty() {
        String::new()
    } else {
        format!(" ({cols})")
    };
    let dest_err = |what: &str| SnapshotError::db(Side::Destination, format!("{what} {}", t.dest));
    dst.batch_execute("BEGIN")
        .await
        .map_err(dest_err("starting the copy into"))?;
    let merge = Ident("pgsync_merge");
    let target = if t.existed {
        dst.batch_execute(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS {merge} (LIKE {}) ON COMMIT DROP",
            t.dest
        ))
        .await
        .map_err(dest_err("creating the merge table for"))?;
        merge.to_string()
    } else {
        t.dest.to_string()
    };
    let copy_in = format!("COPY {target}{col_list} FROM STDIN{format}");
    let sink = dst
        .copy_in::<_, Bytes>(&copy_in)
        .await
        .map_err(dest_err("starting COPY FROM into"))?;
    let stream = src
        .copy_out(&source_sql(t, cx.job, cx.binary))
        .await
        .map_err(SnapshotError::db(
            Side::Source,
            format!("starting COPY TO of {}", t.source),
        ))?;
    pin_mut!(sink, stream);

    let (mut bytes, mut messages) = (0u64, 0u64);
    let (mut pending_rows, mut pending_bytes) = (0u64, 0u64);
    let (mut report_rows, mut report_bytes) = (0u64, 0u64);
    let (mut sent_rows, mut sent_bytes) = (0u64, 0u64);
    let mut last_report = Instant::now();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(SnapshotError::db(
            Side::Source,
            format!("reading rows of {}", t.source),
        ))?;
        let len = chunk.len() as u64;
        let row = u64::from(is_row(&chunk, cx.binary));
        bytes += len;
        messages += row;
        pending_rows += row;
        pending_bytes += len;
        sink.feed(chunk)
            .await
            .map_err(dest_err("writing rows into"))?;
        if pending_rows >= THROTTLE_ROWS || pending_bytes >= THROTTLE_BYTES {
            cx.throttle.acquire(pending_rows, pending_bytes).await;
            report_rows += pending_rows;
            report_bytes += pending_bytes;
            pending_rows = 0;
            pending_bytes = 0;
            if last_report.elapsed() >= REPORT_EVERY {
                cx.reporter.send(Progress::Copied {
                    table: t.source.clone(),
                    rows: report_rows,
                    bytes: report_bytes,
                });
                sent_rows += report_rows;
                sent_bytes += report_bytes;
                report_rows = 0;
                report_bytes = 0;
                last_report = Instant::now();
            }
        }
    }
    cx.throttle.acquire(pending_rows, pending_bytes).await;
    let rows = sink
        .as_mut()
        .finish()
        .await
        .map_err(dest_err("finishing COPY FROM into"))?;
    cx.reporter.send(Progress::Copied {
        table: t.source.clone(),
        rows: messages.min(rows).saturating_sub(sent_rows),
        bytes: bytes.saturating_sub(sent_bytes),
    });
    let committed = if t.existed {
        let c = dst
            .execute(
                &format!(
                    "INSERT INTO {}{col_list} OVERRIDING SYSTEM VALUE SELECT {cols} FROM {merge} \
                     ON CONFLICT DO NOTHING",
                    t.dest
                ),
                &[],
            )
            .await
            .map_err(dest_err("merging rows into"))?;
        dst.batch_execute(&format!("TRUNCATE {merge}"))
            .await
            .map_err(dest_err("emptying the merge table of"))?;
        c
    } else {
        rows
    };
    dst.execute(
        state::RECORD_CHUNK,
        &[
            &cx.task,
            &t.source.schema,
            &t.source.name,
            &i32::try_from(cx.job.chunk).unwrap_or(i32::MAX),
            &i32::try_from(cx.job.chunks).unwrap_or(i32::MAX),
            &i64::try_from(committed).unwrap_or(i64::MAX),
            &i64::try_from(bytes).unwrap_or(i64::MAX),
            &cx.snapshot_lsn,
        ],
    )
    .await
    .map_err(dest_err("recording the copy state of"))?;
    dst.batch_execute("COMMIT")
        .await
        .map_err(dest_err("committing the copy into"))?;
    Ok((committed, bytes))
}
