//! Detection and decision: from a [`Situation`] to a [`Resolution`], without I/O.
//!
//! Two steps, both pure:
//!
//! 1. [`detect`] lists the conflicts, independent of any policy. Each one concerns one
//!    *subject* (the row at the old key, the slot at the new key, or one UNIQUE collision)
//!    and records whether the incoming change is the later write there
//!    ([`WriteStamp::supersedes`], [`Absence::admits`]).
//! 2. [`decide`] resolves each conflict with the policy of its kind, into *win* (the
//!    incoming change prevails at that subject) or *lose*, and combines them per
//!    operation. An update that changes its key is a delete at the old key plus a write at
//!    the new key, and each half is decided on its own key:
//!
//! ```text
//!                         old key wins        old key loses        old key missing
//!   new key wins          apply_remote        convert_to_insert    convert_to_insert
//!                                             (or _to_update)      (or _to_update)
//!   new key loses         convert_to_delete   keep_local           keep_local / skip
//! ```
//!
//! [`Resolution::for_decision`] turns any [`Decision`] (a policy's or a custom
//! [`Resolver`](crate::Resolver)'s) into the effects the applier carries out: which
//! blocking rows to delete first, which columns to apply as deltas, which last writer the
//! row must keep. It refuses decisions that cannot be carried out (e.g. converting a delete
//! into an insert), so a resolver cannot corrupt the destination by mistake.

use serde::{Deserialize, Serialize};

use crate::policy::{ConflictKind, ConflictPolicies, Policy};
use crate::situation::{Operation, Situation, Slot, Target};
use crate::stamp::{LastWriter, WriteStamp};
use crate::tombstone::{Absence, Admission};

/// What the applier does with an incoming change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Apply the change as it came (after deleting the rows listed in
    /// [`Resolution::evict`]).
    ApplyRemote,
    /// Write the update's new image as a new row; a row at the old key stays as it is.
    ConvertToInsert,
    /// Write the new image over the row that holds the new key (an insert meeting an
    /// existing row, or an update moving onto one); a row at the old key stays.
    ConvertToUpdate,
    /// A key-changing update whose move away from the old key wins but whose new key loses:
    /// delete the row at the old key only.
    ConvertToDelete,
    /// The destination row(s) win; the change is dropped (delta columns still apply).
    KeepLocal,
    /// Nothing to do: the change addresses a row that is gone (or deleted later here).
    Skip,
    /// Stop the task before committing; resume after the data is fixed.
    Fail {
        /// What happened and what to do about it.
        reason: String,
    },
}

impl Decision {
    /// The log name, e.g. `apply_remote`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::ApplyRemote => "apply_remote",
            Decision::ConvertToInsert => "convert_to_insert",
            Decision::ConvertToUpdate => "convert_to_update",
            Decision::ConvertToDelete => "convert_to_delete",
            Decision::KeepLocal => "keep_local",
            Decision::Skip => "skip",
            Decision::Fail { .. } => "fail",
        }
    }
}

/// Which destination row a conflict concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// The slot at the old identity key (update, delete).
    OldKey,
    /// The slot at the new identity key (insert, key-changing update).
    NewKey,
    /// The n-th UNIQUE collision of the situation.
    Collision(usize),
}

/// One conflict found in a situation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectedConflict {
    /// Its kind.
    pub kind: ConflictKind,
    /// The row (or empty key) it concerns.
    pub subject: Subject,
    /// Whether the incoming change is the later write at the subject (last-write-wins's
    /// answer, whatever policy is in force). For `update_missing` of a key-changing update
    /// it is always true: the delete half has nothing to delete, the new key decides.
    pub incoming_is_later: bool,
    /// The policy that resolved it; `None` when a custom resolver decided.
    pub policy: Option<Policy>,
}

/// A row the applier deletes before writing the new image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Eviction {
    /// The row at the new key (an `apply_remote` key-changing update moves onto it).
    NewKeyRow,
    /// The n-th UNIQUE collision.
    Collision(usize),
}

/// A decision and what the applier must do to carry it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// What to do.
    pub decision: Decision,
    /// The conflicts found; empty when the change applies normally.
    pub conflicts: Vec<DetectedConflict>,
    /// Rows to delete first, so the new image fits its UNIQUE constraints.
    pub evict: Vec<Eviction>,
    /// Columns to write as `col = col + (new - old)` instead of `col = new`. Set for an
    /// update that keeps its key and meets its row, whether the rest of the row is applied
    /// (`apply_remote`) or kept (`keep_local`): concurrent increments on both nodes add up.
    pub delta_columns: Vec<String>,
    /// With `keep_local` and delta columns the row is written although it keeps its other
    /// values; its last writer must stay this one (the applier records it as the row's
    /// last writer, overriding the commit timestamp of the applying transaction).
    pub keep_writer: Option<LastWriter>,
}

impl Resolution {
    /// Whether the applier writes a conflict-log record (one per detected conflict).
    pub fn should_log(&self) -> bool {
        !self.conflicts.is_empty()
    }

    /// The effects of `decision` in `situation`, with the conflicts [`detect`] finds
    /// (no policy attached): what a custom resolver returns.
    pub fn for_decision(
        situation: &Situation,
        decision: Decision,
    ) -> Result<Resolution, InvalidDecision> {
        Self::assemble(situation, decision, detect(situation))
    }

    fn assemble(
        s: &Situation,
        decision: Decision,
        conflicts: Vec<DetectedConflict>,
    ) -> Result<Resolution, InvalidDecision> {
        applicable(s, &decision).map_err(|why| InvalidDecision {
            decision: decision.as_str(),
            operation: s.operation(),
            why,
        })?;
        let op = s.operation();
        let writes_new_image = match decision {
            Decision::ConvertToInsert | Decision::ConvertToUpdate => true,
            Decision::ApplyRemote => op != Operation::Delete,
            _ => false,
        };
        let mut evict = Vec::new();
        if decision == Decision::ApplyRemote && s.new_key().is_some_and(Slot::is_present) {
            evict.push(Eviction::NewKeyRow);
        }
        if writes_new_image {
            evict.extend((0..s.collisions().len()).map(Eviction::Collision));
        }
        let in_place_row = match &s.target {
            Target::Update {
                old: Slot::Present(row),
                new: None,
            } => Some(row),
            _ => None,
        };
        let mut delta_columns = Vec::new();
        let mut keep_writer = None;
        let in_place = matches!(decision, Decision::ApplyRemote | Decision::KeepLocal);
        if let Some(row) = in_place_row.filter(|_| in_place) {
            delta_columns = s.delta_columns().to_vec();
            if decision == Decision::KeepLocal && !delta_columns.is_empty() {
                keep_writer = Some(row.writer.clone());
            }
        }
        Ok(Resolution {
            decision,
            conflicts,
            evict,
            delta_columns,
            keep_writer,
        })
    }
}

/// A decision that cannot be carried out in its situation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("decision {decision} cannot be carried out for this {operation:?}: {why}")]
pub struct InvalidDecision {
    /// The decision's name.
    pub decision: &'static str,
    /// The change's operation.
    pub operation: Operation,
    /// Why not.
    pub why: &'static str,
}

fn applicable(s: &Situation, d: &Decision) -> Result<(), &'static str> {
    use Decision as D;
    let needs_whole_image = matches!(d, D::ConvertToInsert | D::ConvertToUpdate);
    if needs_whole_image && s.operation() == Operation::Update && !s.change.complete_image {
        return Err("the update lacks unchanged TOAST columns, so it cannot become a whole row");
    }
    match (&s.target, d) {
        (_, D::KeepLocal | D::Skip | D::Fail { .. }) => Ok(()),
        (Target::Insert { at }, D::ApplyRemote) => need(!at.is_present(), "its key is taken"),
        (Target::Insert { at }, D::ConvertToUpdate) => {
            need(at.is_present(), "no row holds its key")
        }
        (Target::Insert { .. }, _) => {
            Err("an insert can only be applied, converted to an update, kept or skipped")
        }
        (Target::Update { old, .. }, D::ApplyRemote) => {
            need(old.is_present(), "its row is missing")
        }
        (Target::Update { old, new }, D::ConvertToInsert) => need(
            !new.as_ref().unwrap_or(old).is_present(),
            "a row holds its new key",
        ),
        (Target::Update { new: Some(new), .. }, D::ConvertToUpdate) => {
            need(new.is_present(), "no row holds its new key")
        }
        (Target::Update { old, new: Some(_) }, D::ConvertToDelete) => {
            need(old.is_present(), "its row is missing")
        }
        (Target::Update { .. }, _) => {
            Err("only a key-changing update can become an update of another row or a delete")
        }
        (Target::Delete { old }, D::ApplyRemote) => need(old.is_present(), "its row is missing"),
        (Target::Delete { .. }, _) => Err("a delete can only be applied, kept or skipped"),
    }
}

fn need(ok: bool, why: &'static str) -> Result<(), &'static str> {
    if ok { Ok(()) } else { Err(why) }
}

/// The conflicts of a situation, with no policy attached.
pub fn detect(s: &Situation) -> Vec<DetectedConflict> {
    let incoming = &s.change.stamp;
    let mut found = Vec::new();
    let collision_kind = match &s.target {
        Target::Insert { at } => {
            judge_new_key(at, ConflictKind::InsertExists, incoming, &mut found);
            ConflictKind::InsertExists
        }
        Target::Delete { old } => {
            match old {
                Slot::Present(row) if row.writer.is_newer_foreign_write_than(incoming) => {
                    found.push(conflict(
                        ConflictKind::DeleteNewerLocal,
                        Subject::OldKey,
                        false,
                    ));
                }
                Slot::Present(_) => {}
                Slot::Missing(_) => {
                    found.push(conflict(
                        ConflictKind::DeleteMissing,
                        Subject::OldKey,
                        false,
                    ));
                }
            }
            return found;
        }
        Target::Update { old, new } => {
            match old {
                Slot::Present(row) if row.writer.is_newer_foreign_write_than(incoming) => {
                    found.push(conflict(
                        ConflictKind::UpdateNewerLocal,
                        Subject::OldKey,
                        false,
                    ));
                }
                Slot::Present(_) => {}
                Slot::Missing(absence) => {
                    // Keeping its key, the update is a write at an empty key; changing it,
                    // the old half is a delete of nothing and only the new key decides.
                    let later = new.is_some() || absence.admits(incoming).is_admitted();
                    found.push(conflict(
                        ConflictKind::UpdateMissing,
                        Subject::OldKey,
                        later,
                    ));
                }
            }
            let kind = if old.is_present() {
                ConflictKind::UpdateKeyExists
            } else {
                ConflictKind::InsertExists
            };
            if let Some(slot) = new {
                judge_new_key(slot, kind, incoming, &mut found);
            }
            kind
        }
    };
    for (i, c) in s.collisions().iter().enumerate() {
        let later = wins(incoming, &c.row.writer);
        found.push(conflict(collision_kind, Subject::Collision(i), later));
    }
    found
}

fn conflict(kind: ConflictKind, subject: Subject, incoming_is_later: bool) -> DetectedConflict {
    DetectedConflict {
        kind,
        subject,
        incoming_is_later,
        policy: None,
    }
}

fn judge_new_key(
    slot: &Slot,
    exists_kind: ConflictKind,
    incoming: &WriteStamp,
    found: &mut Vec<DetectedConflict>,
) {
    match slot {
        Slot::Present(row) => {
            found.push(conflict(
                exists_kind,
                Subject::NewKey,
                wins(incoming, &row.writer),
            ));
        }
        Slot::Missing(absence) => {
            if !absence.admits(incoming).is_admitted() {
                found.push(conflict(
                    ConflictKind::InsertDeleted,
                    Subject::NewKey,
                    false,
                ));
            }
        }
    }
}

fn wins(incoming: &WriteStamp, local: &LastWriter) -> bool {
    !local.is_newer_foreign_write_than(incoming)
}

/// The outcome at one subject under its kind's policy.
enum Verdict {
    Win,
    Lose,
}

/// Decides a situation with the configured policies. Never fails: a `fail` policy (or a
/// decision that cannot be carried out) comes back as [`Decision::Fail`] with its reason.
pub fn decide(policies: &ConflictPolicies, s: &Situation) -> Resolution {
    let mut conflicts = detect(s);
    let mut old_wins = true;
    let mut new_wins = true;
    let mut failure = None;
    for c in &mut conflicts {
        let policy = policies.for_kind(c.kind);
        c.policy = Some(policy);
        let verdict = match policy {
            Policy::Fail => {
                failure.get_or_insert_with(|| fail_reason(s, c));
                Verdict::Lose
            }
            Policy::Ignore => Verdict::Lose,
            Policy::Overwrite => Verdict::Win,
            Policy::LastWriteWins if c.incoming_is_later => Verdict::Win,
            Policy::LastWriteWins => Verdict::Lose,
        };
        let won = matches!(verdict, Verdict::Win);
        match c.subject {
            Subject::OldKey => old_wins = won,
            Subject::NewKey | Subject::Collision(_) => new_wins &= won,
        }
    }
    let decision = match failure {
        Some(reason) => Decision::Fail { reason },
        None => combine(s, old_wins, new_wins),
    };
    match Resolution::assemble(s, decision, conflicts.clone()) {
        Ok(resolution) => resolution,
        Err(invalid) => Resolution {
            decision: Decision::Fail {
                reason: if s.change.complete_image {
                    invalid.to_string()
                } else {
                    format!(
                        "{invalid}; set REPLICA IDENTITY FULL on the source table of {} so updates carry whole rows",
                        s.change.table
                    )
                },
            },
            conflicts,
            evict: Vec::new(),
            delta_columns: Vec::new(),
            keep_writer: None,
        },
    }
}

fn combine(s: &Situation, old_wins: bool, new_wins: bool) -> Decision {
    let blocked = !s.collisions().is_empty();
    match &s.target {
        Target::Insert { at } => match (new_wins, at.is_present()) {
            (true, true) => Decision::ConvertToUpdate,
            (true, false) => Decision::ApplyRemote,
            (false, present) if present || blocked => Decision::KeepLocal,
            (false, _) => Decision::Skip,
        },
        Target::Delete { old } => match (old, old_wins) {
            (Slot::Present(_), true) => Decision::ApplyRemote,
            (Slot::Present(_), false) => Decision::KeepLocal,
            (Slot::Missing(_), _) => Decision::Skip,
        },
        Target::Update {
            old: Slot::Missing(_),
            new,
        } => {
            let new_present = new.as_ref().is_some_and(Slot::is_present);
            match (old_wins, new_wins) {
                (false, _) => Decision::Skip,
                (true, true) if new_present => Decision::ConvertToUpdate,
                (true, true) => Decision::ConvertToInsert,
                (true, false) if new_present || blocked => Decision::KeepLocal,
                (true, false) => Decision::Skip,
            }
        }
        Target::Update { new: None, .. } if old_wins && new_wins => Decision::ApplyRemote,
        Target::Update { new: None, .. } => Decision::KeepLocal,
        Target::Update { new: Some(new), .. } => match (old_wins, new_wins) {
            (true, true) => Decision::ApplyRemote,
            (true, false) => Decision::ConvertToDelete,
            (false, true) if new.is_present() => Decision::ConvertToUpdate,
            (false, true) => Decision::ConvertToInsert,
            (false, false) => Decision::KeepLocal,
        },
    }
}

fn fail_reason(s: &Situation, c: &DetectedConflict) -> String {
    let what = match c.kind {
        ConflictKind::InsertExists => "the new row collides with an existing row",
        ConflictKind::InsertDeleted => "the new row's key was deleted here after the change",
        ConflictKind::UpdateMissing => "the updated row is not here",
        ConflictKind::UpdateKeyExists => "the updated row's new key or UNIQUE values are taken",
        ConflictKind::UpdateNewerLocal => "the row was changed here after the update",
        ConflictKind::DeleteMissing => "the deleted row is not here",
        ConflictKind::DeleteNewerLocal => "the row was changed here after the delete",
    };
    let key = match (&c.subject, s.change.key.as_ref()) {
        (Subject::Collision(i), _) => s
            .collisions()
            .get(*i)
            .map(|col| format!(" (constraint {})", col.constraint))
            .unwrap_or_default(),
        (_, Some(key)) => format!(" (key {key})"),
        (_, None) => String::new(),
    };
    format!(
        "{} on {}{key} at source LSN {}: {what}, and the policy for {} is fail; fix the destination data and resume the task",
        c.kind, s.change.table, s.change.source_lsn, c.kind
    )
}

impl DetectedConflict {
    /// The tombstone or row stamp the conflict was judged against, if any.
    pub fn local_stamp<'a>(&self, s: &'a Situation) -> Option<&'a WriteStamp> {
        let slot = match self.subject {
            Subject::OldKey => s.old_key(),
            Subject::NewKey => s.new_key(),
            Subject::Collision(i) => return s.collisions().get(i)?.row.writer.stamp(),
        }?;
        match slot {
            Slot::Present(row) => row.writer.stamp(),
            Slot::Missing(Absence::Tombstone(stamp)) => Some(stamp),
            Slot::Missing(Absence::NoTrace { .. }) => None,
        }
    }

    /// Whether the subject was an empty key whose tombstone had been pruned.
    pub fn tombstone_expired(&self, s: &Situation) -> bool {
        let slot = match self.subject {
            Subject::OldKey => s.old_key(),
            Subject::NewKey => s.new_key(),
            Subject::Collision(_) => None,
        };
        matches!(slot, Some(Slot::Missing(a)) if a.admits(&s.change.stamp) == Admission::TombstoneExpired)
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
