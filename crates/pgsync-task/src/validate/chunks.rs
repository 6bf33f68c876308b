//! Key-range chunks and their checksums.
//!
//! Boundaries come from a sample of about a thousand blocks (`TABLESAMPLE SYSTEM`, so a
//! 5 M-row table costs a few milliseconds, not a scan or a sort of the whole key): the
//! sampled keys are cut into equal parts (`ntile`) and the first key of each part is a
//! boundary. Chunks are then `[b(i), b(i+1))` with open ends, so every row of either side
//! falls into exactly one chunk whatever the sample missed. Each chunk's count and
//! checksum is one aggregate over an index range scan, run on several sessions per side
//! at once, on both sides at once.

use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use tokio_postgres::types::ToSql;

use super::error::ValidateError;
use super::plan::TablePlan;
use super::session::Side;
use super::sql::TableSql;

/// Blocks read to place the boundaries.
const SAMPLE_BLOCKS: f64 = 1000.0;

/// A key range: `lo` inclusive, `hi` exclusive, `None` = unbounded. Keys are text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chunk {
    pub(super) lo: Option<Vec<String>>,
    pub(super) hi: Option<Vec<String>>,
}

impl Chunk {
    pub(super) fn whole() -> Self {
        Self { lo: None, hi: None }
    }

    /// The range's bounds as statement parameters, lower first.
    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.lo
            .iter()
            .chain(self.hi.iter())
            .flatten()
            .map(|s| s as &(dyn ToSql + Sync))
            .collect()
    }
}

/// Row count and checksum of a chunk on one side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Sums {
    pub(super) rows: i64,
    pub(super) sum: String,
}

/// Chunks from consecutive boundaries.
pub(super) fn from_boundaries(bounds: Vec<Vec<String>>) -> Vec<Chunk> {
    let mut chunks = Vec::with_capacity(bounds.len() + 1);
    let mut lo = None;
    for b in bounds {
        if lo.as_ref() == Some(&b) {
            continue;
        }
        chunks.push(Chunk {
            lo: lo.take(),
            hi: Some(b.clone()),
        });
        lo = Some(b);
    }
    chunks.push(Chunk { lo, hi: None });
    chunks
}

/// Splits a keyed table of the source into chunks of about `chunk_rows` rows.
pub(super) async fn split(
    a: &Side,
    plan: &TablePlan,
    chunk_rows: u64,
) -> Result<Vec<Chunk>, ValidateError> {
    if plan.key.is_empty() {
        return Ok(vec![Chunk::whole()]);
    }
    let sql = TableSql::new(plan, a.which);
    let name = plan.name(a.which).to_string();
    let c = a.client(0);
    let blocks: i64 = c
        .query_one(TableSql::blocks(), &[&name])
        .await
        .map_err(a.err(format!("reading the size of {name}")))?
        .get(0);
    if blocks <= 0 {
        return Ok(vec![Chunk::whole()]);
    }
    let percent = (SAMPLE_BLOCKS / blocks as f64 * 100.0).min(100.0);
    let sampled: i64 = c
        .query_one(&sql.sample_count(percent), &[])
        .await
        .map_err(a.err(format!("sampling {name}")))?
        .get(0);
    let estimate = sampled as f64 * 100.0 / percent;
    let parts = (estimate / chunk_rows.max(1) as f64).ceil();
    if parts <= 1.0 {
        return Ok(vec![Chunk::whole()]);
    }
    let parts = parts.min(f64::from(i32::MAX)) as i32;
    let rows = c
        .query(&sql.boundaries(percent), &[&parts])
        .await
        .map_err(a.err(format!("placing the chunk boundaries of {name}")))?;
    let bounds = rows
        .iter()
        .skip(1)
        .map(|r| {
            (1..=plan.key.len())
                .map(|i| r.get::<_, String>(i))
                .collect()
        })
        .collect();
    Ok(from_boundaries(bounds))
}

/// Count and checksum of the chunks `which` (indexes into `chunks`) on one side, in the
/// order given; as many at once as the side has sessions.
pub(super) async fn sums(
    side: &Side,
    plan: &TablePlan,
    chunks: &[Chunk],
    which: &[usize],
) -> Result<Vec<Sums>, ValidateError> {
    let sql = TableSql::new(plan, side.which);
    let texts = [
        sql.sums(false, false),
        sql.sums(true, false),
        sql.sums(false, true),
        sql.sums(true, true),
    ];
    let texts = &texts;
    stream::iter(which.iter().enumerate())
        .map(|(n, &i)| async move {
            let chunk = &chunks[i];
            let text =
                &texts[usize::from(chunk.lo.is_some()) + 2 * usize::from(chunk.hi.is_some())];
            let row = side
                .client(n)
                .query_one(text.as_str(), &chunk.params())
                .await
                .map_err(side.err(format!("checksumming {}", plan.name(side.which))))?;
            Ok::<_, ValidateError>(Sums {
                rows: row.get(0),
                sum: row.get(1),
            })
        })
        .buffered(side.sessions())
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Vec<String> {
        vec![s.to_owned()]
    }

    #[test]
    fn boundaries_make_open_ended_adjacent_ranges() {
        let chunks = from_boundaries(vec![k("10"), k("20"), k("20"), k("30")]);
        assert_eq!(
            chunks,
            vec![
                Chunk {
                    lo: None,
                    hi: Some(k("10"))
                },
                Chunk {
                    lo: Some(k("10")),
                    hi: Some(k("20"))
                },
                Chunk {
                    lo: Some(k("20")),
                    hi: Some(k("30"))
                },
                Chunk {
                    lo: Some(k("30")),
                    hi: None
                },
            ]
        );
        assert_eq!(from_boundaries(vec![]), vec![Chunk::whole()]);
    }

    #[test]
    fn parameters_are_the_lower_bound_then_the_upper() {
        let c = Chunk {
            lo: Some(vec!["1".into(), "a".into()]),
            hi: Some(vec!["2".into(), "b".into()]),
        };
        assert_eq!(c.params().len(), 4);
        assert!(Chunk::whole().params().is_empty());
    }
}
