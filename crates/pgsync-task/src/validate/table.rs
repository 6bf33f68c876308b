//! One table, start to end:
//!
//! ```text
//!  chunks (sampled key ranges) ─> count + checksum per chunk, both sides at once
//!    └─ differing chunks ─> again, the destination read after the lag has passed
//!         └─ still differing ─> keys + row checksums of those chunks, both sides
//!              └─ candidate keys ─> rounds (rows.rs) until each is equal, different
//!                   or still changing ─> report ─> --repair: rewrite, then check again
//! ```
//! A table without a key is compared whole: count and checksum, with the same
//! before/after reads of the source around the destination's read.

use std::collections::HashMap;

use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use std::time::{Duration, Instant};

use super::ValidateOptions;
use super::chunks::{self, Chunk, Sums};
use super::error::ValidateError;
use super::lag::{Direction, Settled};
use super::plan::TablePlan;
use super::repair::{self, Fix};
use super::report::{Outcome, RowDifference, TableReport};
use super::rows::{self, Key, Row, Verdict};
use super::session::Side;

/// Rounds of row comparisons before a row still changing is given up on.
const MAX_ROUNDS: usize = 10;
/// Rounds for a table without a key (each reads the whole table three times).
const WHOLE_ROUNDS: usize = 3;
/// Rows of differing chunks examined together (bounds memory).
const GROUP_ROWS: u64 = 200_000;

/// What a table comparison uses.
#[derive(Debug)]
pub(super) struct Ctx<'a> {
    pub(super) a: &'a Side,
    pub(super) b: &'a Side,
    /// A session of its own on the destination, for `--repair`.
    pub(super) writer: Option<&'a Side>,
    pub(super) forward: Direction<'a>,
    pub(super) reverse: Option<Direction<'a>>,
    pub(super) options: &'a ValidateOptions,
}

impl Ctx<'_> {
    /// Waits for the forward lag to pass the source's current position.
    async fn settle_forward(&self) -> Result<Settled, ValidateError> {
        let lsn = self.forward.mark().await?;
        self.forward.wait(lsn, self.options.lag_timeout).await
    }

    /// In a two-way task, waits for the reverse lag to pass the destination's position.
    async fn settle_reverse(&self) -> Result<Option<Settled>, ValidateError> {
        match &self.reverse {
            Some(r) => {
                let lsn = r.mark().await?;
                Ok(Some(r.wait(lsn, self.options.lag_timeout).await?))
            }
            None => Ok(None),
        }
    }
}

/// Compares one planned table.
pub(super) async fn compare(ctx: &Ctx<'_>, plan: &TablePlan) -> Result<TableReport, ValidateError> {
    let started = Instant::now();
    let mut report = TableReport::new(plan.names[0].clone(), plan.names[1].clone());
    report.key = plan.key_names();
    report.columns_compared = plan.columns.len();
    report.only_source = plan.only_source.clone();
    report.only_destination = plan.only_destination.clone();
    if plan.key.is_empty() {
        whole(ctx, plan, &mut report).await?;
    } else {
        keyed(ctx, plan, &mut report).await?;
    }
    if report.lag == Some(Settled::NotStreaming) || report.lag == Some(Settled::TimedOut) {
        report.notes.push(
            "the task did not catch up with the source during the check: differences may be \
             changes it has not applied yet"
                .into(),
        );
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn keyed(
    ctx: &Ctx<'_>,
    plan: &TablePlan,
    report: &mut TableReport,
) -> Result<(), ValidateError> {
    let chunks = chunks::split(ctx.a, plan, ctx.options.chunk_rows).await?;
    let all: Vec<usize> = (0..chunks.len()).collect();
    let (sa, sb) = tokio::try_join!(
        chunks::sums(ctx.a, plan, &chunks, &all),
        chunks::sums(ctx.b, plan, &chunks, &all)
    )?;
    report.chunks = chunks.len();
    report.rows_source = sa.iter().map(|s| s.rows).sum();
    report.rows_destination = sb.iter().map(|s| s.rows).sum();
    let differing: Vec<usize> = all.into_iter().filter(|&i| sa[i] != sb[i]).collect();
    report.chunks_rechecked = differing.len();
    tracing::debug!(table = %plan.names[0], chunks = chunks.len(), differing = differing.len(), "first pass");
    let differing = recheck(ctx, plan, &chunks, &differing, report).await?;
    report.chunks_differing = differing.len();
    tracing::debug!(table = %plan.names[0], differing = differing.len(), lag = ?report.lag, "chunks rechecked");
    if differing.is_empty() {
        return Ok(());
    }
    let fixes = examine(ctx, plan, &chunks, &differing, report, true).await?;
    if fixes.is_empty() {
        return Ok(());
    }
    let Some(writer) = ctx.writer else {
        report.outcome = Outcome::Different;
        return Ok(());
    };
    for (_, chunk_fixes) in &fixes {
        report.repaired += repair::apply(writer, plan, chunk_fixes).await?;
    }
    // Check the repaired chunks again; what still differs is what the report shows.
    let repaired: Vec<usize> = fixes.iter().map(|(i, _)| *i).collect();
    let still = recheck(ctx, plan, &chunks, &repaired, report).await?;
    let mut after = TableReport::new(plan.names[0].clone(), plan.names[1].clone());
    if !still.is_empty() {
        examine(ctx, plan, &chunks, &still, &mut after, false).await?;
    }
    report.notes.push(format!(
        "{} row(s) differed before the repair",
        report.differences
    ));
    report.differences = after.differences;
    report.rows = after.rows;
    report.outcome = if after.differences > 0 {
        Outcome::Different
    } else {
        Outcome::Equal
    };
    Ok(())
}

/// Waits for the lag to pass the source's current position, then reads the chunks on
/// both sides at once; returns those that still differ. (Reading both at once after the
/// wait leaves only the task's apply delay between the two reads, the narrowest window
/// there is; the row rounds then tell a real difference from one in flight.)
async fn recheck(
    ctx: &Ctx<'_>,
    plan: &TablePlan,
    chunks: &[Chunk],
    which: &[usize],
    report: &mut TableReport,
) -> Result<Vec<usize>, ValidateError> {
    if which.is_empty() {
        return Ok(Vec::new());
    }
    report.lag = Some(ctx.settle_forward().await?);
    let (sa, sb) = tokio::try_join!(
        chunks::sums(ctx.a, plan, chunks, which),
        chunks::sums(ctx.b, plan, chunks, which)
    )?;
    Ok(which
        .iter()
        .zip(sa.iter().zip(&sb))
        .filter(|(_, (x, y))| x != y)
        .map(|(&i, _)| i)
        .collect())
}

/// Finds the differing rows of `differing` chunks and records them in `report`;
/// returns the rows to rewrite, by chunk (only when `want_fixes`).
async fn examine(
    ctx: &Ctx<'_>,
    plan: &TablePlan,
    chunks: &[Chunk],
    differing: &[usize],
    report: &mut TableReport,
    want_fixes: bool,
) -> Result<Vec<(usize, Vec<Fix>)>, ValidateError> {
    let per_group = usize::try_from(GROUP_ROWS / ctx.options.chunk_rows.max(1))
        .unwrap_or(1)
        .max(1);
    let mut fixes = Vec::new();
    for group in differing.chunks(per_group) {
        report.lag = Some(ctx.settle_forward().await?);
        let by_chunk: Vec<(usize, Vec<Key>)> = stream::iter(group.iter().enumerate())
            .map(|(n, &i)| async move {
                let (ka, kb) = tokio::try_join!(
                    rows::list(ctx.a, n, plan, &chunks[i]),
                    rows::list(ctx.b, n, plan, &chunks[i])
                )?;
                Ok::<_, ValidateError>((i, rows::candidates(&ka, &kb)))
            })
            .buffered(ctx.a.sessions())
            .try_collect()
            .await?;
        let all: Vec<Key> = by_chunk
            .iter()
            .flat_map(|(_, k)| k.iter().cloned())
            .collect();
        tracing::debug!(table = %plan.names[0], chunks = group.len(), candidates = all.len(), "keys listed");
        let verdicts = rounds(ctx, plan, all, report).await?;
        for (i, keys) in by_chunk {
            let mut chunk_fixes = Vec::new();
            for key in keys {
                let Some((verdict, a, b)) = verdicts.get(&key) else {
                    continue;
                };
                match verdict {
                    Verdict::Equal => {}
                    Verdict::Unstable => report.unsettled += 1,
                    Verdict::Differs(kind, cols) => {
                        report.differences += 1;
                        report.outcome = Outcome::Different;
                        if report.rows.len() < ctx.options.max_listed_rows {
                            report.rows.push(RowDifference {
                                key: key.clone(),
                                kind: *kind,
                                columns: cols
                                    .iter()
                                    .map(|&c| plan.columns[c].names[1].clone())
                                    .collect(),
                            });
                        }
                        if want_fixes {
                            chunk_fixes.push(Fix {
                                key: key.clone(),
                                kind: *kind,
                                source: a.clone(),
                                dest_hash: b.as_ref().map(|r| r.hash),
                            });
                        }
                    }
                }
            }
            if !chunk_fixes.is_empty() {
                fixes.push((i, chunk_fixes));
            }
        }
    }
    Ok(fixes)
}

type Verdicts = HashMap<Key, (Verdict, Option<Row>, Option<Row>)>;

/// Rounds of source / lag / destination / source reads over `pending` keys, until each
/// is settled or [`MAX_ROUNDS`] have passed. Each verdict comes with the source's row (as
/// read last) and the destination's.
async fn rounds(
    ctx: &Ctx<'_>,
    plan: &TablePlan,
    mut pending: Vec<Key>,
    report: &mut TableReport,
) -> Result<Verdicts, ValidateError> {
    let mut out = Verdicts::new();
    for round in 0..MAX_ROUNDS {
        if pending.is_empty() {
            break;
        }
        if round > 0 {
            // Give the changing rows a moment before looking again.
            tokio::time::sleep(Duration::from_millis(50 * round as u64)).await;
        }
        let a = rows::fetch(ctx.a, plan, &pending).await?;
        let lag = ctx.settle_forward().await?;
        report.lag = Some(lag);
        let mut b = rows::fetch(ctx.b, plan, &pending).await?;
        ctx.settle_reverse().await?;
        let mut a2 = rows::fetch(ctx.a, plan, &pending).await?;
        let mut next = Vec::new();
        for key in pending {
            match rows::classify(a.get(&key), b.get(&key), a2.get(&key)) {
                Verdict::Unstable => next.push(key),
                v => {
                    let (x, y) = (a2.remove(&key), b.remove(&key));
                    out.insert(key, (v, x, y));
                }
            }
        }
        tracing::debug!(table = %plan.names[0], round, ?lag, settled = out.len(), changing = next.len(), "round");
        pending = next;
        if matches!(lag, Settled::TimedOut | Settled::NotStreaming) {
            break;
        }
    }
    for key in pending {
        out.insert(key, (Verdict::Unstable, None, None));
    }
    Ok(out)
}

/// A table without a key: count and checksum of the whole table.
async fn whole(
    ctx: &Ctx<'_>,
    plan: &TablePlan,
    report: &mut TableReport,
) -> Result<(), ValidateError> {
    report.notes.push(
        "no primary key or replica identity index: compared as a whole (count and checksum); \
         differing rows cannot be listed or repaired"
            .into(),
    );
    let chunks = [Chunk::whole()];
    let one = [0usize];
    let sums = |side| chunks::sums(side, plan, &chunks, &one);
    let first = |v: Vec<Sums>| v.into_iter().next().unwrap_or_default();
    report.chunks = 1;
    let (sa, sb) = tokio::try_join!(sums(ctx.a), sums(ctx.b))?;
    let (sa, sb) = (first(sa), first(sb));
    report.rows_source = sa.rows;
    report.rows_destination = sb.rows;
    if sa == sb {
        return Ok(());
    }
    report.chunks_rechecked = 1;
    for _ in 0..WHOLE_ROUNDS {
        let a1 = first(sums(ctx.a).await?);
        let lag = ctx.settle_forward().await?;
        report.lag = Some(lag);
        let b = first(sums(ctx.b).await?);
        ctx.settle_reverse().await?;
        let a2 = first(sums(ctx.a).await?);
        report.rows_source = a2.rows;
        report.rows_destination = b.rows;
        if b == a2 {
            return Ok(());
        }
        if a1 == a2 || matches!(lag, Settled::TimedOut | Settled::NotStreaming) {
            report.outcome = Outcome::Different;
            report.chunks_differing = 1;
            return Ok(());
        }
    }
    report.outcome = Outcome::Unsettled;
    Ok(())
}
