//! The full copy's progress: one bar per table (indicatif) when standard error is a
//! terminal, otherwise a plain log line every few seconds and one per finished table, so
//! that logs collected by a service manager stay readable.

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pgsync_snapshot::Progress;
use tokio::sync::mpsc::UnboundedReceiver;

/// How often the plain log line is written.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Shows `events` until the sender goes away.
pub(crate) async fn show(events: UnboundedReceiver<Progress>, terminal: bool) {
    if terminal {
        bars(events).await;
    } else {
        lines(events).await;
    }
}

async fn bars(mut events: UnboundedReceiver<Progress>) {
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{msg:32!} [{bar:30}] {human_pos}/{human_len} rows {per_sec:>12} {eta:>4}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut tables: HashMap<String, ProgressBar> = HashMap::new();
    while let Some(event) = events.recv().await {
        match event {
            Progress::TableQueued {
                table,
                estimated_rows,
                ..
            } => {
                let bar = multi.add(ProgressBar::new(estimated_rows.max(1)));
                bar.set_style(style.clone());
                bar.set_message(table.to_string());
                tables.insert(table.to_string(), bar);
            }
            Progress::Copied { table, rows, .. } => {
                if let Some(bar) = tables.get(&table.to_string()) {
                    if bar.position() + rows > bar.length().unwrap_or(0) {
                        bar.set_length(bar.position() + rows);
                    }
                    bar.inc(rows);
                }
            }
            Progress::TableDone { table, .. } => {
                if let Some(bar) = tables.get(&table.to_string()) {
                    bar.set_length(bar.position());
                    bar.finish();
                }
            }
            _ => {}
        }
    }
}

#[derive(Default)]
struct Totals {
    rows: u64,
    bytes: u64,
    estimated: u64,
    tables: u64,
    done: u64,
}

async fn lines(mut events: UnboundedReceiver<Progress>) {
    let mut t = Totals::default();
    let mut per_table: HashMap<String, u64> = HashMap::new();
    let mut tick = tokio::time::interval(LOG_EVERY);
    tick.tick().await;
    let mut moved = false;
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                match event {
                    Progress::TableQueued { table, estimated_rows, .. } => {
                        t.tables += 1;
                        t.estimated += estimated_rows;
                        per_table.insert(table.to_string(), 0);
                    }
                    Progress::Copied { table, rows, bytes } => {
                        t.rows += rows;
                        t.bytes += bytes;
                        *per_table.entry(table.to_string()).or_default() += rows;
                        moved = true;
                    }
                    Progress::TableDone { table, rows } => {
                        t.done += 1;
                        tracing::info!(table = %table, rows, done = t.done, tables = t.tables, "table copied");
                    }
                    _ => {}
                }
            }
            _ = tick.tick() => {
                if moved {
                    moved = false;
                    tracing::info!(
                        rows = t.rows,
                        estimated_rows = t.estimated,
                        mb = t.bytes / 1_000_000,
                        tables_done = t.done,
                        tables = t.tables,
                        "copying"
                    );
                }
            }
        }
    }
}
