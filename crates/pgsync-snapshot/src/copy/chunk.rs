//! Splitting big tables into ctid ranges.
//!
//! A table above the chunk size is cut into block ranges of about that size:
//!
//! ```text
//! chunk 0: ctid >= '(0,0)'    AND ctid < '(b1,0)'
//! chunk 1: ctid >= '(b1,0)'   AND ctid < '(b2,0)'
//! ...
//! last:    ctid >= '(bk,0)'                        -- open-ended
//! ```
//! The block count comes from the heap size read when the plan was made; rows of the
//! snapshot that live in blocks added later still land in the open-ended last range, so
//! no row is missed. PostgreSQL 14+ runs these as TID range scans (no full scan per chunk).
//! Jobs are handed out biggest first so the workers finish together.

use crate::ddl::TablePlan;

/// One unit of copy work: a table or a block range of it.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// Index into the plan's tables.
    pub(crate) table: usize,
    /// Chunk number and chunk count.
    pub(crate) chunk: u32,
    pub(crate) chunks: u32,
    /// Block range `[from, to)`; `to = None` is open-ended; `None` overall is the table.
    pub(crate) blocks: Option<(u64, Option<u64>)>,
    /// For ordering.
    pub(crate) weight: u64,
}

impl Job {
    /// The WHERE clause of a ranged job.
    pub(crate) fn ctid_filter(&self) -> Option<String> {
        let (from, to) = self.blocks?;
        Some(match to {
            Some(to) => format!(
                "ctid >= '({from},0)'::pg_catalog.tid AND ctid < '({to},0)'::pg_catalog.tid"
            ),
            None => format!("ctid >= '({from},0)'::pg_catalog.tid"),
        })
    }
}

/// Chunk count for a table of `bytes`.
pub(crate) fn chunk_count(bytes: i64, chunk_bytes: u64) -> u32 {
    let bytes = u64::try_from(bytes).unwrap_or(0);
    if chunk_bytes == 0 || bytes <= chunk_bytes {
        return 1;
    }
    u32::try_from(bytes.div_ceil(chunk_bytes).min(1024)).unwrap_or(1024)
}

/// The jobs of one table.
pub(crate) fn jobs_for(index: usize, t: &TablePlan, chunk_bytes: u64, block_size: u64) -> Vec<Job> {
    let chunks = chunk_count(t.bytes, chunk_bytes);
    let bytes = u64::try_from(t.bytes).unwrap_or(0);
    if chunks == 1 {
        return vec![Job {
            table: index,
            chunk: 0,
            chunks: 1,
            blocks: None,
            weight: bytes,
        }];
    }
    let blocks = bytes.div_ceil(block_size.max(1));
    let n = u64::from(chunks);
    (0..n)
        .map(|i| {
            let from = blocks * i / n;
            let to = (i + 1 < n).then(|| blocks * (i + 1) / n);
            Job {
                table: index,
                chunk: u32::try_from(i).unwrap_or(0),
                chunks,
                blocks: Some((from, to)),
                weight: bytes / n,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgsync_names::QualifiedName;

    fn table(bytes: i64) -> TablePlan {
        TablePlan {
            oid: 1,
            source: QualifiedName::new("s", "t"),
            dest: QualifiedName::new("s", "t"),
            source_columns: vec![],
            dest_columns: vec![],
            bytes,
            estimated_rows: 0.0,
            existed: false,
            tree: None,
            row_filter: None,
        }
    }

    #[test]
    fn small_tables_are_one_job() {
        let jobs = jobs_for(0, &table(1000), 1 << 20, 8192);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].ctid_filter(), None);
    }

    #[test]
    fn ranges_cover_every_block_and_the_last_one_is_open_ended() {
        let jobs = jobs_for(0, &table(10 * 8192 + 1), 3 * 8192, 8192);
        assert_eq!(jobs.len(), 4);
        let mut expect_from = 0;
        for (i, j) in jobs.iter().enumerate() {
            let (from, to) = j.blocks.unwrap();
            assert_eq!(from, expect_from);
            if i + 1 == jobs.len() {
                assert_eq!(to, None);
            } else {
                expect_from = to.unwrap();
            }
        }
        assert_eq!(
            jobs[3].ctid_filter().unwrap(),
            "ctid >= '(8,0)'::pg_catalog.tid"
        );
    }
}
