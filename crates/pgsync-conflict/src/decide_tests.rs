//! Every kind under every policy, the records they produce, and the finer cases
//! (several UNIQUE collisions, key changes, delta columns, ties, pruned tombstones).
//!
//! Convention: the destination is node `a`, the incoming change comes from node `b`,
//! committed at 10; "newer" local data is stamped 20, "older" 5.

use pgsync_names::QualifiedName;
use pgsync_wal::Lsn;
use serde_json::json;

use super::*;
use crate::policy::{ConflictKind, ConflictPolicies, Policy};
use crate::record::{ConflictCounters, ConflictRecord};
use crate::situation::{Collision, IncomingChange, LocalRow, Situation, Slot};
use crate::stamp::{CommitTime, LastWriter, NodeId, WriteStamp};
use crate::tombstone::Absence;

const POLICIES: [Policy; 4] = [
    Policy::Fail,
    Policy::Ignore,
    Policy::Overwrite,
    Policy::LastWriteWins,
];

fn stamp(t: i64, node: &str) -> WriteStamp {
    WriteStamp::new(CommitTime::from_pg_micros(t), NodeId::new(node))
}

fn change() -> IncomingChange {
    IncomingChange::new(
        QualifiedName::new("public", "accounts"),
        stamp(10, "b"),
        Lsn(0x1_0000_0A00),
    )
    .with_images(
        Some(json!({"id": 1})),
        Some(json!({"id": 1, "v": "remote"})),
    )
}

fn row(t: i64) -> Slot {
    Slot::Present(
        LocalRow::written(stamp(t, "a"))
            .with_images(Some(json!({"id": 1})), Some(json!({"id": 1, "v": "local"}))),
    )
}

fn tombstone(t: i64) -> Slot {
    Slot::Missing(Absence::Tombstone(stamp(t, "a")))
}

fn empty() -> Slot {
    Slot::Missing(Absence::NEVER_DELETED)
}

fn collision(constraint: &str, t: i64) -> Collision {
    Collision {
        constraint: constraint.into(),
        row: LocalRow::written(stamp(t, "a"))
            .with_images(Some(json!({"id": 2})), Some(json!({"id": 2, "email": "x"}))),
    }
}

fn decide_with(policy: Policy, s: &Situation) -> Resolution {
    decide(&ConflictPolicies::uniform(policy), s)
}

/// The canonical situation of each kind, and the decision each policy must reach.
fn matrix() -> Vec<(ConflictKind, Situation, [Decision; 3])> {
    use Decision::*;
    // Expected for [ignore, overwrite, last_write_wins]; fail always fails.
    vec![
        (
            ConflictKind::InsertExists,
            Situation::insert(change(), row(20)),
            [KeepLocal, ConvertToUpdate, KeepLocal],
        ),
        (
            ConflictKind::InsertDeleted,
            Situation::insert(change(), tombstone(20)),
            [Skip, ApplyRemote, Skip],
        ),
        (
            ConflictKind::UpdateMissing,
            Situation::update(change(), empty()),
            [Skip, ConvertToInsert, ConvertToInsert],
        ),
        (
            ConflictKind::UpdateKeyExists,
            Situation::update_moving_key(change(), row(5), row(20)),
            [ConvertToDelete, ApplyRemote, ConvertToDelete],
        ),
        (
            ConflictKind::UpdateNewerLocal,
            Situation::update(change(), row(20)),
            [KeepLocal, ApplyRemote, KeepLocal],
        ),
        (
            ConflictKind::DeleteMissing,
            Situation::delete(change(), empty()),
            [Skip, Skip, Skip],
        ),
        (
            ConflictKind::DeleteNewerLocal,
            Situation::delete(change(), row(20)),
            [KeepLocal, ApplyRemote, KeepLocal],
        ),
    ]
}

#[test]
fn every_kind_under_every_policy_reaches_the_documented_decision() {
    for (kind, s, expected) in matrix() {
        for policy in POLICIES {
            let res = decide_with(policy, &s);
            let want = match policy {
                Policy::Fail if kind == ConflictKind::DeleteMissing => Decision::Skip,
                Policy::Fail => {
                    let Decision::Fail { reason } = &res.decision else {
                        panic!("{kind} under fail decided {:?}", res.decision);
                    };
                    assert!(reason.contains(kind.as_str()), "{reason}");
                    assert!(reason.contains("\"public\".\"accounts\""), "{reason}");
                    assert!(reason.contains("1/A00"), "{reason}");
                    continue;
                }
                Policy::Ignore => expected[0].clone(),
                Policy::Overwrite => expected[1].clone(),
                Policy::LastWriteWins => expected[2].clone(),
            };
            assert_eq!(res.decision, want, "{kind} under {policy}");
            assert_eq!(
                res.conflicts.len(),
                1,
                "{kind} under {policy}: {:?}",
                res.conflicts
            );
            assert_eq!(res.conflicts[0].kind, kind);
            assert!(res.should_log());
        }
    }
}

#[test]
fn every_kind_under_every_policy_produces_a_complete_record() {
    for (kind, s, _) in matrix() {
        for policy in POLICIES {
            let res = decide_with(policy, &s);
            let records = res.records(&s);
            assert_eq!(records.len(), 1, "{kind} under {policy}");
            let r: &ConflictRecord = &records[0];
            assert_eq!(r.kind, kind);
            assert_eq!(r.table, QualifiedName::new("public", "accounts"));
            assert_eq!(r.key, Some(json!({"id": 1})));
            assert_eq!(r.remote_row, Some(json!({"id": 1, "v": "remote"})));
            assert_eq!(r.remote_commit_time, CommitTime::from_pg_micros(10));
            assert_eq!(r.remote_origin, NodeId::new("b"));
            assert_eq!(r.source_lsn, Lsn(0x1_0000_0A00));
            assert_eq!(r.decision, res.decision);
            let effective = if kind == ConflictKind::DeleteMissing {
                Policy::Ignore
            } else {
                policy
            };
            assert_eq!(r.policy, Some(effective));
            let (local_row, local_time, deleted) = match kind {
                ConflictKind::UpdateMissing | ConflictKind::DeleteMissing => (None, None, false),
                ConflictKind::InsertDeleted => (None, Some(20), true),
                _ => (Some(json!({"id": 1, "v": "local"})), Some(20), false),
            };
            assert_eq!(r.local_row, local_row, "{kind}");
            assert_eq!(
                r.local_commit_time,
                local_time.map(CommitTime::from_pg_micros),
                "{kind}"
            );
            assert_eq!(r.local_origin.is_some(), local_time.is_some(), "{kind}");
            assert_eq!(r.local_deleted, deleted, "{kind}");
            let json = serde_json::to_value(r).unwrap();
            assert_eq!(json["kind"], kind.as_str());
            assert_eq!(json["source_lsn"], "1/A00");
            let back: ConflictRecord = serde_json::from_value(json).unwrap();
            assert_eq!(&back, r);
        }
    }
}

#[test]
fn last_write_wins_lets_a_later_change_through_at_every_kind_that_compares_times() {
    use Decision::*;
    let lww = |s: Situation| decide_with(Policy::LastWriteWins, &s).decision;
    assert_eq!(lww(Situation::insert(change(), row(5))), ConvertToUpdate);
    assert_eq!(lww(Situation::insert(change(), tombstone(5))), ApplyRemote);
    assert_eq!(
        lww(Situation::update(change(), tombstone(5))),
        ConvertToInsert
    );
    assert_eq!(lww(Situation::update(change(), tombstone(20))), Skip);
    assert_eq!(
        lww(Situation::update_moving_key(change(), row(5), row(5))),
        ApplyRemote
    );
    assert_eq!(lww(Situation::update(change(), row(5))), ApplyRemote);
    assert_eq!(lww(Situation::delete(change(), row(5))), ApplyRemote);
}

#[test]
fn changes_without_a_conflict_apply_and_log_nothing() {
    for s in [
        Situation::insert(change(), empty()),
        Situation::update(change(), row(5)),
        Situation::delete(change(), row(5)),
        Situation::update_moving_key(change(), row(5), empty()),
    ] {
        for policy in POLICIES {
            let res = decide_with(policy, &s);
            assert_eq!(res.decision, Decision::ApplyRemote, "{policy}: {s:?}");
            assert!(!res.should_log());
            assert!(res.records(&s).is_empty());
        }
    }
}

#[test]
fn a_row_last_written_by_the_incoming_node_is_never_a_conflict_whatever_the_times() {
    let own = Slot::Present(LocalRow::written(stamp(99, "b")));
    let res = decide_with(Policy::Fail, &Situation::update(change(), own.clone()));
    assert_eq!(res.decision, Decision::ApplyRemote);
    assert!(res.conflicts.is_empty());
    let res = decide_with(Policy::Fail, &Situation::delete(change(), own));
    assert_eq!(res.decision, Decision::ApplyRemote);
}

#[test]
fn a_row_with_an_unknown_last_writer_counts_as_older() {
    let unknown = Slot::Present(LocalRow::with_writer(LastWriter::Unknown));
    let res = decide_with(
        Policy::LastWriteWins,
        &Situation::update(change(), unknown.clone()),
    );
    assert_eq!(res.decision, Decision::ApplyRemote);
    assert!(res.conflicts.is_empty());
    let s = Situation::insert(change(), unknown);
    let res = decide_with(Policy::LastWriteWins, &s);
    assert_eq!(res.decision, Decision::ConvertToUpdate);
    assert_eq!(res.records(&s)[0].local_commit_time, None);
}

#[test]
fn equal_commit_times_are_won_by_the_higher_node_id_on_both_nodes() {
    // The same pair of writes, seen from each side: b's wins on both.
    let at_a = Situation::update(change(), Slot::Present(LocalRow::written(stamp(10, "a"))));
    assert_eq!(
        decide_with(Policy::LastWriteWins, &at_a).decision,
        Decision::ApplyRemote
    );
    let from_a = IncomingChange::new(
        QualifiedName::new("public", "accounts"),
        stamp(10, "a"),
        Lsn(1),
    );
    let at_b = Situation::update(from_a, Slot::Present(LocalRow::written(stamp(10, "b"))));
    let res = decide_with(Policy::LastWriteWins, &at_b);
    assert_eq!(res.decision, Decision::KeepLocal);
    assert_eq!(res.conflicts[0].kind, ConflictKind::UpdateNewerLocal);
}

#[test]
fn an_insert_colliding_on_several_unique_constraints_must_beat_every_row() {
    let s = Situation::insert(change(), row(5))
        .with_collision(collision("accounts_email_key", 7))
        .with_collision(collision("accounts_phone_key", 8));
    let res = decide_with(Policy::LastWriteWins, &s);
    assert_eq!(res.decision, Decision::ConvertToUpdate);
    assert_eq!(
        res.evict,
        vec![Eviction::Collision(0), Eviction::Collision(1)]
    );
    let records = res.records(&s);
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.kind == ConflictKind::InsertExists));
    assert_eq!(records[1].key, Some(json!({"id": 2})));
    assert_eq!(
        records[2].local_commit_time,
        Some(CommitTime::from_pg_micros(8))
    );

    let one_newer = Situation::insert(change(), empty())
        .with_collision(collision("accounts_email_key", 7))
        .with_collision(collision("accounts_phone_key", 20));
    let res = decide_with(Policy::LastWriteWins, &one_newer);
    assert_eq!(res.decision, Decision::KeepLocal);
    assert!(res.evict.is_empty());
    let res = decide_with(Policy::Overwrite, &one_newer);
    assert_eq!(res.decision, Decision::ApplyRemote);
    assert_eq!(
        res.evict,
        vec![Eviction::Collision(0), Eviction::Collision(1)]
    );
}

#[test]
fn an_update_of_a_missing_row_becomes_an_insert_that_may_itself_conflict() {
    let s = Situation::update(change(), empty()).with_collision(collision("accounts_email_key", 7));
    let res = decide_with(Policy::LastWriteWins, &s);
    assert_eq!(res.decision, Decision::ConvertToInsert);
    assert_eq!(res.evict, vec![Eviction::Collision(0)]);
    let kinds: Vec<_> = res.conflicts.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [ConflictKind::UpdateMissing, ConflictKind::InsertExists]
    );

    let per_kind = ConflictPolicies::uniform(Policy::Overwrite)
        .with(ConflictKind::InsertExists, Policy::Ignore)
        .unwrap();
    let res = decide(&per_kind, &s);
    assert_eq!(res.decision, Decision::KeepLocal);
    assert_eq!(res.conflicts[0].policy, Some(Policy::Overwrite));
    assert_eq!(res.conflicts[1].policy, Some(Policy::Ignore));
}

#[test]
fn a_key_change_is_decided_per_key() {
    use Decision::*;
    let lww = |old, new| {
        decide_with(
            Policy::LastWriteWins,
            &Situation::update_moving_key(change(), old, new),
        )
    };
    // Old half loses (newer local row), new key free: the new row appears, the old stays.
    let res = lww(row(20), empty());
    assert_eq!(res.decision, ConvertToInsert);
    assert_eq!(res.conflicts[0].kind, ConflictKind::UpdateNewerLocal);
    assert_eq!(lww(row(20), row(5)).decision, ConvertToUpdate);
    assert_eq!(lww(row(20), row(20)).decision, KeepLocal);
    // Old half wins, new key deleted here later: only the delete half happens.
    let res = lww(row(5), tombstone(20));
    assert_eq!(res.decision, ConvertToDelete);
    assert_eq!(res.conflicts[0].kind, ConflictKind::InsertDeleted);
    // Old row missing, even behind a newer tombstone: the new key alone decides.
    assert_eq!(lww(tombstone(20), empty()).decision, ConvertToInsert);
    assert_eq!(lww(tombstone(20), tombstone(20)).decision, Skip);
    // Both win, onto an existing row: that row is evicted and the row moves.
    let res = lww(row(5), row(5));
    assert_eq!(res.decision, ApplyRemote);
    assert_eq!(res.evict, vec![Eviction::NewKeyRow]);
}

#[test]
fn delta_columns_apply_whether_the_row_is_kept_or_overwritten() {
    let newer = Situation::update(change(), row(20)).with_delta_columns(["balance"]);
    let res = decide_with(Policy::LastWriteWins, &newer);
    assert_eq!(res.decision, Decision::KeepLocal);
    assert_eq!(res.delta_columns, ["balance"]);
    assert_eq!(res.keep_writer, Some(LastWriter::Known(stamp(20, "a"))));

    let older = Situation::update(change(), row(5)).with_delta_columns(["balance"]);
    let res = decide_with(Policy::LastWriteWins, &older);
    assert_eq!(res.decision, Decision::ApplyRemote);
    assert_eq!(res.delta_columns, ["balance"]);
    assert_eq!(res.keep_writer, None);

    let kept_without_delta =
        decide_with(Policy::LastWriteWins, &Situation::update(change(), row(20)));
    assert_eq!(kept_without_delta.keep_writer, None);
    let moved =
        Situation::update_moving_key(change(), row(5), empty()).with_delta_columns(["balance"]);
    assert!(
        decide_with(Policy::LastWriteWins, &moved)
            .delta_columns
            .is_empty()
    );
    let missing = Situation::update(change(), empty()).with_delta_columns(["balance"]);
    assert!(
        decide_with(Policy::LastWriteWins, &missing)
            .delta_columns
            .is_empty()
    );
}

#[test]
fn an_update_without_its_toast_values_cannot_become_a_whole_row() {
    let partial = change().with_incomplete_image();
    let s = Situation::update(partial.clone(), empty());
    let Decision::Fail { reason } = decide_with(Policy::LastWriteWins, &s).decision else {
        panic!("an incomplete image was converted to an insert");
    };
    assert!(reason.contains("REPLICA IDENTITY FULL"), "{reason}");
    let in_place = Situation::update(partial, row(5));
    assert_eq!(
        decide_with(Policy::LastWriteWins, &in_place).decision,
        Decision::ApplyRemote
    );
}

#[test]
fn a_write_older_than_the_prune_horizon_loses_as_if_deleted_later() {
    let pruned = |h| {
        Slot::Missing(Absence::NoTrace {
            pruned_through: Some(CommitTime::from_pg_micros(h)),
        })
    };
    let s = Situation::update(change(), pruned(15));
    let res = decide_with(Policy::LastWriteWins, &s);
    assert_eq!(res.decision, Decision::Skip);
    assert!(res.conflicts[0].tombstone_expired(&s));
    let s = Situation::insert(change(), pruned(15));
    let res = decide_with(Policy::LastWriteWins, &s);
    assert_eq!(
        (res.decision, res.conflicts[0].kind),
        (Decision::Skip, ConflictKind::InsertDeleted)
    );
    let s = Situation::update(change(), pruned(9));
    assert_eq!(
        decide_with(Policy::LastWriteWins, &s).decision,
        Decision::ConvertToInsert
    );
}

#[test]
fn a_per_kind_policy_overrides_the_global_one_for_that_kind_only() {
    let policies = ConflictPolicies::uniform(Policy::LastWriteWins)
        .with(ConflictKind::UpdateNewerLocal, Policy::Overwrite)
        .unwrap();
    let s = Situation::update(change(), row(20));
    assert_eq!(decide(&policies, &s).decision, Decision::ApplyRemote);
    let s = Situation::delete(change(), row(20));
    assert_eq!(decide(&policies, &s).decision, Decision::KeepLocal);
}

#[test]
fn custom_decisions_are_checked_against_the_situation() {
    let insert = Situation::insert(change(), row(20));
    assert!(Resolution::for_decision(&insert, Decision::ApplyRemote).is_err());
    assert!(Resolution::for_decision(&insert, Decision::ConvertToInsert).is_err());
    let ok = Resolution::for_decision(&insert, Decision::ConvertToUpdate).unwrap();
    assert_eq!(ok.conflicts[0].policy, None);
    let delete = Situation::delete(change(), empty());
    assert!(Resolution::for_decision(&delete, Decision::ApplyRemote).is_err());
    assert!(Resolution::for_decision(&delete, Decision::ConvertToUpdate).is_err());
    let update = Situation::update(change(), row(5));
    assert!(Resolution::for_decision(&update, Decision::ConvertToDelete).is_err());
    assert!(Resolution::for_decision(&update, Decision::ConvertToInsert).is_err());
    let moving = Situation::update_moving_key(change(), row(5), empty());
    assert!(Resolution::for_decision(&moving, Decision::ConvertToUpdate).is_err());
    assert!(Resolution::for_decision(&moving, Decision::ConvertToDelete).is_ok());
    for d in [
        Decision::KeepLocal,
        Decision::Skip,
        Decision::Fail { reason: "x".into() },
    ] {
        assert!(Resolution::for_decision(&moving, d).is_ok());
    }
}

#[test]
fn counters_add_up_per_kind_and_serialise_as_a_map() {
    let mut counters = ConflictCounters::new();
    for (_, s, _) in matrix() {
        counters.add_resolution(&decide_with(Policy::LastWriteWins, &s));
    }
    let s = Situation::insert(change(), row(5)).with_collision(collision("u", 7));
    counters.add_resolution(&decide_with(Policy::LastWriteWins, &s));
    assert_eq!(counters.get(ConflictKind::InsertExists), 3);
    assert_eq!(counters.get(ConflictKind::DeleteMissing), 1);
    assert_eq!(counters.total(), 9);
    let mut both = counters;
    both.merge(&counters);
    assert_eq!(both.total(), 18);
    let json = serde_json::to_value(counters).unwrap();
    assert_eq!(json["insert_exists"], 3);
    assert_eq!(json.as_object().unwrap().len(), ConflictKind::ALL.len());
    let back: ConflictCounters = serde_json::from_value(json!({"update_missing": 4})).unwrap();
    assert_eq!(back.get(ConflictKind::UpdateMissing), 4);
    assert_eq!(back.total(), 4);
}
