//! What the applier knows when it has to decide: the incoming change and what it found on
//! the destination at the keys the change touches.
//!
//! A change touches at most two *identity-key slots* plus any number of UNIQUE values:
//!
//! ```text
//!   insert k           -> slot k (new key)                      + UNIQUE collisions
//!   update k           -> slot k (old key)                      + UNIQUE collisions
//!   update k1 -> k2    -> slot k1 (old key), slot k2 (new key)  + UNIQUE collisions
//!   delete k           -> slot k (old key)
//! ```
//!
//! A slot is either a present row (with its last writer) or missing (with what the tombstone
//! store knows about the key). Collisions are rows *other than* those in the slots that hold
//! one of the new image's values on a UNIQUE constraint. The constructors make only the four
//! shapes above possible, so the decision code never meets an impossible combination.
//!
//! Row images and keys are carried as JSON (`row_to_json` on the destination, the decoded
//! tuple on the source side) only for the conflict log; no decision reads them.

use pgsync_names::QualifiedName;
use pgsync_wal::Lsn;
use serde_json::Value;

use crate::stamp::{LastWriter, WriteStamp};
use crate::tombstone::Absence;

/// The kind of row change that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// INSERT.
    Insert,
    /// UPDATE (possibly changing the identity key).
    Update,
    /// DELETE.
    Delete,
}

/// One incoming row change and the source transaction it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingChange {
    /// Destination table (after name mapping).
    pub table: QualifiedName,
    /// Commit time and origin node of the source transaction.
    pub stamp: WriteStamp,
    /// Commit LSN of the source transaction.
    pub source_lsn: Lsn,
    /// The identity key the change addresses (old key of an update/delete), for the log.
    pub key: Option<Value>,
    /// The new row (insert, update) or the old row (delete), for the log.
    pub image: Option<Value>,
    /// Whether the new image has every column. An UPDATE may leave unchanged TOAST values
    /// out; such an image can update a row in place but cannot become a whole new row.
    pub complete_image: bool,
}

impl IncomingChange {
    /// A change with no images and a complete new image.
    pub fn new(table: QualifiedName, stamp: WriteStamp, source_lsn: Lsn) -> Self {
        Self {
            table,
            stamp,
            source_lsn,
            key: None,
            image: None,
            complete_image: true,
        }
    }

    /// Adds the key and the row image, for the conflict log.
    pub fn with_images(mut self, key: Option<Value>, image: Option<Value>) -> Self {
        self.key = key;
        self.image = image;
        self
    }

    /// Marks the new image as lacking columns (unchanged TOAST values).
    pub fn with_incomplete_image(mut self) -> Self {
        self.complete_image = false;
        self
    }
}

/// A destination row the change meets.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRow {
    /// Its last writer (`pg_xact_commit_timestamp_origin(xmin)`, origin mapped to a node).
    pub writer: LastWriter,
    /// Its identity key, for the log.
    pub key: Option<Value>,
    /// The whole row, for the log.
    pub image: Option<Value>,
}

impl LocalRow {
    /// A row last written as stamped.
    pub fn written(stamp: WriteStamp) -> Self {
        Self::with_writer(LastWriter::Known(stamp))
    }

    /// A row with the given last-writer information.
    pub fn with_writer(writer: LastWriter) -> Self {
        Self {
            writer,
            key: None,
            image: None,
        }
    }

    /// Adds the key and the image, for the log.
    pub fn with_images(mut self, key: Option<Value>, image: Option<Value>) -> Self {
        self.key = key;
        self.image = image;
        self
    }
}

/// What is at one identity key on the destination.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// A row is there.
    Present(LocalRow),
    /// No row; what the tombstone store knows about the key.
    Missing(Absence),
}

impl Slot {
    /// The row, when present.
    pub fn row(&self) -> Option<&LocalRow> {
        match self {
            Slot::Present(r) => Some(r),
            Slot::Missing(_) => None,
        }
    }

    /// Whether a row is there.
    pub fn is_present(&self) -> bool {
        matches!(self, Slot::Present(_))
    }
}

/// A row, outside the change's identity slots, holding one of the new image's UNIQUE values.
#[derive(Debug, Clone, PartialEq)]
pub struct Collision {
    /// The UNIQUE constraint (or unique index) it collides on.
    pub constraint: String,
    /// The colliding row.
    pub row: LocalRow,
}

/// Which slots the change touches, by operation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    Insert { at: Slot },
    Update { old: Slot, new: Option<Slot> },
    Delete { old: Slot },
}

/// An incoming change together with what the destination holds where it lands.
#[derive(Debug, Clone, PartialEq)]
pub struct Situation {
    /// The change.
    pub change: IncomingChange,
    pub(crate) target: Target,
    collisions: Vec<Collision>,
    delta_columns: Vec<String>,
}

impl Situation {
    fn new(change: IncomingChange, target: Target) -> Self {
        Self {
            change,
            target,
            collisions: Vec::new(),
            delta_columns: Vec::new(),
        }
    }

    /// An insert; `at` is the slot of its key.
    pub fn insert(change: IncomingChange, at: Slot) -> Self {
        Self::new(change, Target::Insert { at })
    }

    /// An update that keeps its identity key; `old` is the slot of that key.
    pub fn update(change: IncomingChange, old: Slot) -> Self {
        Self::new(change, Target::Update { old, new: None })
    }

    /// An update that changes its identity key from the `old` slot's to the `new` slot's.
    pub fn update_moving_key(change: IncomingChange, old: Slot, new: Slot) -> Self {
        Self::new(
            change,
            Target::Update {
                old,
                new: Some(new),
            },
        )
    }

    /// A delete; `old` is the slot of its key.
    pub fn delete(change: IncomingChange, old: Slot) -> Self {
        Self::new(change, Target::Delete { old })
    }

    /// Adds a row that collides with the new image on a UNIQUE constraint (ignored for a
    /// delete, which has no new image).
    pub fn with_collision(mut self, collision: Collision) -> Self {
        if !matches!(self.target, Target::Delete { .. }) {
            self.collisions.push(collision);
        }
        self
    }

    /// Declares the table's delta columns (numeric columns applied as `col + (new - old)`).
    pub fn with_delta_columns<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.delta_columns = columns.into_iter().map(Into::into).collect();
        self
    }

    /// The operation.
    pub fn operation(&self) -> Operation {
        match self.target {
            Target::Insert { .. } => Operation::Insert,
            Target::Update { .. } => Operation::Update,
            Target::Delete { .. } => Operation::Delete,
        }
    }

    /// The slot at the old identity key (updates and deletes).
    pub fn old_key(&self) -> Option<&Slot> {
        match &self.target {
            Target::Insert { .. } => None,
            Target::Update { old, .. } | Target::Delete { old } => Some(old),
        }
    }

    /// The slot at the new identity key (inserts, and updates that change the key).
    pub fn new_key(&self) -> Option<&Slot> {
        match &self.target {
            Target::Insert { at } => Some(at),
            Target::Update { new, .. } => new.as_ref(),
            Target::Delete { .. } => None,
        }
    }

    /// Whether this is an update that changes the identity key.
    pub fn moves_key(&self) -> bool {
        matches!(self.target, Target::Update { new: Some(_), .. })
    }

    /// Rows colliding with the new image on UNIQUE constraints.
    pub fn collisions(&self) -> &[Collision] {
        &self.collisions
    }

    /// The table's delta columns.
    pub fn delta_columns(&self) -> &[String] {
        &self.delta_columns
    }
}
