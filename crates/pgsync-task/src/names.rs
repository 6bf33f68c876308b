//! The names of the objects a task creates, all derived from the task name so that
//! `release` can find every one of them, and a second task never collides with the first.
//!
//! | object                       | where       | name                      |
//! |------------------------------|-------------|---------------------------|
//! | publication, slot (A -> B)   | source A    | `pgsync_<task>_fwd`       |
//! | publication per operation set| source A    | `pgsync_<task>_fwd_ops_iu`|
//! | replication origin (A -> B)  | destination | `pgsync_<task>_fwd`       |
//! | publication, slot (B -> A)   | B           | `pgsync_<task>_rev`       |
//! | replication origin (B -> A)  | A           | `pgsync_<task>_rev`       |
//! | state, conflict log          | both        | schema `pgsync`           |

/// Which way a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A -> B: schema, full copy, changes.
    Forward,
    /// B -> A: changes only.
    Reverse,
}

impl Direction {
    fn suffix(self) -> &'static str {
        match self {
            Self::Forward => "fwd",
            Self::Reverse => "rev",
        }
    }
}

/// Names of one direction's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskNames {
    /// Publication on the reading side.
    pub publication: String,
    /// Logical replication slot on the reading side.
    pub slot: String,
    /// Replication origin on the writing side.
    pub origin: String,
}

impl TaskNames {
    /// The names for `task` in `direction`.
    pub fn new(task: &str, direction: Direction) -> Self {
        let base = format!("pgsync_{task}_{}", direction.suffix());
        Self {
            publication: base.clone(),
            slot: base.clone(),
            origin: base,
        }
    }
}

impl TaskNames {
    /// The publication of tables that sync only `ops` (`[[objects.table]] operations`):
    /// the main one for all operations, else `<publication>_ops_<code>` (`_ops_iu` for
    /// insert and update), since `publish` is a property of the whole publication.
    pub fn publication_for(&self, ops: pgsync_names::Operations) -> String {
        if ops.is_all() {
            self.publication.clone()
        } else {
            format!("{}_ops_{}", self.publication, ops.code())
        }
    }
}

/// Schema holding pgsync's own state on each side.
pub const STATE_SCHEMA: &str = "pgsync";
