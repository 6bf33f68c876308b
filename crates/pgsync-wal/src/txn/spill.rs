//! Spill files: the changes of one transaction that did not fit in the memory budget.
//!
//! ```text
//! file := record*          record := u32 length (big-endian), pgoutput message
//! ```
//!
//! Changes are written as the pgoutput messages they came from (without stream xids), and
//! the layout of each relation is written as a Relation message before the first change
//! that needs it and again whenever the layout changes, so reading back needs nothing but
//! the decoder and gives every change the layout it was assembled with, even when another
//! transaction altered the table meanwhile.
//!
//! Files are anonymous (`tempfile::tempfile_in`): the operating system removes them when
//! they are closed, also after a crash. A subtransaction abort truncates the file; reading
//! uses positional reads, so a transaction can be read any number of times.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::change::{Change, Classified, classify};
use super::error::TxnError;
use crate::pgoutput::{self, Message, Relation};

/// Pending writes are flushed to the file past this size.
const FLUSH_AT: usize = 1 << 20;
/// Read buffer size.
const READ_BUFFER: usize = 64 << 10;

/// The write side of a spill file.
pub(crate) struct SpillFile {
    file: File,
    /// Bytes of whole records in the file.
    len: u64,
    /// The last layout written per relation OID (compared by pointer).
    written: HashMap<u32, Arc<Relation>>,
    pending: BytesMut,
}

impl SpillFile {
    pub(crate) fn create(dir: &Path) -> Result<Self, TxnError> {
        Ok(Self {
            file: tempfile::tempfile_in(dir).map_err(TxnError::spill("create"))?,
            len: 0,
            written: HashMap::new(),
            pending: BytesMut::new(),
        })
    }

    /// Bytes written.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends `changes`; `at(i, offset)` is told where the record of `changes[i]` starts.
    pub(crate) fn append(
        &mut self,
        changes: &[Change],
        mut at: impl FnMut(usize, u64),
    ) -> Result<(), TxnError> {
        for (i, change) in changes.iter().enumerate() {
            for rel in change.relations() {
                let fresh = self
                    .written
                    .get(&rel.oid)
                    .is_some_and(|w| Arc::ptr_eq(w, rel));
                if !fresh {
                    let start = self.pending.len();
                    self.pending.put_u32(0);
                    pgoutput::encode_relation(rel, &mut self.pending)?;
                    let len = u32::try_from(self.pending.len() - start - 4)
                        .map_err(|_| TxnError::SpillCorrupt("relation larger than 4 GiB"))?;
                    self.pending[start..start + 4].copy_from_slice(&len.to_be_bytes());
                    self.written.insert(rel.oid, Arc::clone(rel));
                }
            }
            at(i, self.len + self.pending.len() as u64);
            change.encode(&mut self.pending)?;
            if self.pending.len() >= FLUSH_AT {
                self.flush()?;
            }
        }
        self.flush()
    }

    fn flush(&mut self) -> Result<(), TxnError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file
            .seek(SeekFrom::Start(self.len))
            .map_err(TxnError::spill("seek"))?;
        self.file
            .write_all(&self.pending)
            .map_err(TxnError::spill("write"))?;
        self.len += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Drops everything from byte `len` on.
    pub(crate) fn truncate(&mut self, len: u64) -> Result<(), TxnError> {
        self.pending.clear();
        self.file
            .set_len(len)
            .map_err(TxnError::spill("truncate"))?;
        self.len = len;
        // Layout records past `len` are gone; write layouts again as needed.
        self.written.clear();
        Ok(())
    }

    pub(crate) fn reader(&self) -> SpillReader<'_> {
        SpillReader {
            input: BufReader::with_capacity(
                READ_BUFFER,
                PosReader {
                    file: &self.file,
                    pos: 0,
                },
            ),
            left: self.len,
            relations: HashMap::new(),
        }
    }
}

/// Reads a file at an explicit position, leaving the file's own cursor alone.
struct PosReader<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for PosReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = read_at(self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

/// The read side: one change at a time.
pub(crate) struct SpillReader<'a> {
    input: BufReader<PosReader<'a>>,
    /// Bytes of records not read yet.
    left: u64,
    relations: HashMap<u32, Arc<Relation>>,
}

impl SpillReader<'_> {
    pub(crate) fn next_change(&mut self) -> Result<Option<Change>, TxnError> {
        loop {
            if self.left == 0 {
                return Ok(None);
            }
            let mut len = [0u8; 4];
            if self.left < 4 {
                return Err(TxnError::SpillCorrupt("partial record length"));
            }
            self.input
                .read_exact(&mut len)
                .map_err(TxnError::spill("read"))?;
            self.left -= 4;
            let len = u64::from(u32::from_be_bytes(len));
            if len > self.left {
                return Err(TxnError::SpillCorrupt("record runs past the end"));
            }
            // `len` is bounded by what this process wrote to the file.
            let mut record = vec![0u8; len as usize];
            self.input
                .read_exact(&mut record)
                .map_err(TxnError::spill("read"))?;
            self.left -= len;
            let msg = pgoutput::decode_message(&Bytes::from(record), false)
                .map_err(|_| TxnError::SpillCorrupt("undecodable record"))?;
            if let Message::Relation(r) = msg {
                self.relations.insert(r.relation.oid, Arc::new(r.relation));
                continue;
            }
            let rels = &self.relations;
            return match classify(msg, |oid| rels.get(&oid).cloned())? {
                Classified::Change { change, .. } => Ok(Some(change)),
                Classified::Other(_) => Err(TxnError::SpillCorrupt("record is not a change")),
            };
        }
    }
}
