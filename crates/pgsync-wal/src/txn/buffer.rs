//! The changes of one open transaction: in memory up to the budget, then in a spill file,
//! with the positions needed to discard an aborted subtransaction.
//!
//! ```text
//!   spill file: [c0 c1 c2 c3]   memory: [c4 c5]        order = file, then memory
//!                     ^ sub 905 starts at change 2 (file offset known once spilled)
//!   Stream Abort(900, 905)  =>  file truncated at c2, memory cleared
//! ```
//!
//! As in PostgreSQL's own apply worker, a subtransaction abort discards everything from the
//! subtransaction's first change on: changes are streamed in WAL order, and while a
//! subtransaction is open only it (or its children) can write, so every later change in the
//! buffer belongs to it or to a child that is aborted with it.

use std::collections::HashSet;
use std::path::Path;

use super::change::Change;
use super::error::TxnError;
use super::spill::{SpillFile, SpillReader};

/// Where a subtransaction's first change is.
struct SubxactMark {
    xid: u32,
    /// Index of the first change (counting spilled ones).
    index: usize,
    /// Offset of that change's record, once it is in the spill file.
    offset: Option<u64>,
}

/// Changes of one transaction, in order.
#[derive(Default)]
pub(crate) struct ChangeBuffer {
    mem: Vec<Change>,
    mem_bytes: usize,
    spill: Option<SpillFile>,
    /// Number of changes in the spill file.
    spilled: usize,
    /// Subtransactions in order of their first change.
    marks: Vec<SubxactMark>,
    marked: HashSet<u32>,
    last_xid: Option<u32>,
}

impl ChangeBuffer {
    pub(crate) fn len(&self) -> usize {
        self.spilled + self.mem.len()
    }

    pub(crate) fn mem_bytes(&self) -> usize {
        self.mem_bytes
    }

    pub(crate) fn spilled_bytes(&self) -> u64 {
        self.spill.as_ref().map_or(0, SpillFile::len)
    }

    pub(crate) fn memory(&self) -> &[Change] {
        &self.mem
    }

    pub(crate) fn reader(&self) -> Option<SpillReader<'_>> {
        self.spill.as_ref().map(SpillFile::reader)
    }

    /// Adds a change made by (sub)transaction `xid` (when known); returns the memory it
    /// takes.
    pub(crate) fn push(&mut self, change: Change, xid: Option<u32>) -> usize {
        if let Some(x) = xid
            && self.last_xid != Some(x)
        {
            if self.marked.insert(x) {
                self.marks.push(SubxactMark {
                    xid: x,
                    index: self.len(),
                    offset: None,
                });
            }
            self.last_xid = Some(x);
        }
        let size = change.mem_size();
        self.mem.push(change);
        self.mem_bytes += size;
        size
    }

    /// Moves the in-memory changes to the spill file (created in `dir` on first use);
    /// returns the memory freed.
    pub(crate) fn spill(&mut self, dir: &Path) -> Result<usize, TxnError> {
        if self.mem.is_empty() {
            return Ok(0);
        }
        let file = match &mut self.spill {
            Some(f) => f,
            None => self.spill.insert(SpillFile::create(dir)?),
        };
        let base = self.spilled;
        let marks = &mut self.marks;
        let mut next = marks.partition_point(|m| m.index < base);
        file.append(&self.mem, |i, offset| {
            while let Some(m) = marks.get_mut(next) {
                if m.index != base + i {
                    break;
                }
                m.offset = Some(offset);
                next += 1;
            }
        })?;
        self.spilled += self.mem.len();
        self.mem.clear();
        Ok(std::mem::take(&mut self.mem_bytes))
    }

    /// Discards the changes of subtransaction `xid` and everything after them; returns the
    /// memory freed. A subtransaction without changes here is a no-op.
    pub(crate) fn abort_subxact(&mut self, xid: u32) -> Result<usize, TxnError> {
        if !self.marked.contains(&xid) {
            return Ok(0);
        }
        let Some(pos) = self.marks.iter().position(|m| m.xid == xid) else {
            return Ok(0);
        };
        let (index, offset) = (self.marks[pos].index, self.marks[pos].offset);
        for m in self.marks.drain(pos..) {
            self.marked.remove(&m.xid);
        }
        self.last_xid = None;
        if index >= self.spilled {
            let keep = index - self.spilled;
            let freed: usize = self.mem[keep..].iter().map(Change::mem_size).sum();
            self.mem.truncate(keep);
            self.mem_bytes -= freed;
            Ok(freed)
        } else {
            let (Some(offset), Some(file)) = (offset, self.spill.as_mut()) else {
                return Err(TxnError::SpillCorrupt("subtransaction start not recorded"));
            };
            file.truncate(offset)?;
            self.spilled = index;
            self.mem.clear();
            Ok(std::mem::take(&mut self.mem_bytes))
        }
    }
}
