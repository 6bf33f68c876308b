//! Two nodes writing the same keys concurrently end equal under last-write-wins, and the
//! same model finds divergence under `overwrite` and `ignore` (so it can fail).
//!
//! See `model/mod.rs` for what is simulated. Every property runs thousands of random
//! interleavings of inserts, updates, key-changing updates and deletes on both nodes over
//! three keys, with each direction delivered in commit order after arbitrary delays.

mod model;

use std::collections::BTreeMap;
use std::time::Duration;

use model::{KEYS, Row, Side, Step, World, steps_strategy};
use pgsync_conflict::{
    Absence, CommitTime, ConflictCounters, ConflictKind, ConflictPolicies, NodeId, Policy,
    TombstoneRetention, WriteStamp,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

fn lww() -> ConflictPolicies {
    ConflictPolicies::uniform(Policy::LastWriteWins)
}

/// Rows loaded by the initial copy: present on both nodes with the same stamp.
fn preloaded() -> BTreeMap<u8, Row> {
    let stamp = WriteStamp::new(CommitTime::from_pg_micros(0), NodeId::new("a"));
    (0..KEYS)
        .map(|k| {
            (
                k,
                Row {
                    v: 0,
                    balance: 100,
                    stamp: stamp.clone(),
                },
            )
        })
        .collect()
}

/// Runs the steps; `Err` describes the divergence (or a failed decision).
fn converges(
    policies: ConflictPolicies,
    initial: &BTreeMap<u8, Row>,
    delta: bool,
    steps: &[Step],
) -> Result<World, String> {
    let mut world = World::new(policies, initial, delta);
    world.run(steps)?;
    if world.a.rows != world.b.rows {
        return Err(format!(
            "diverged:\n  a = {:?}\n  b = {:?}",
            world.a.rows, world.b.rows
        ));
    }
    Ok(world)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn last_write_wins_converges_from_empty_tables(steps in steps_strategy(false, 40)) {
        let result = converges(lww(), &BTreeMap::new(), false, &steps);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn last_write_wins_converges_with_tombstones_pruned_by_the_applied_watermark(
        steps in steps_strategy(false, 40),
    ) {
        let mut world = World::new(lww(), &preloaded(), false);
        world.retention = Some(TombstoneRetention { margin: Duration::ZERO, max_count: usize::MAX });
        if let Err(e) = world.run(&steps) {
            return Err(TestCaseError::fail(e));
        }
        prop_assert_eq!(&world.a.rows, &world.b.rows);
        // Pruning did happen: tombstones only remain for deletes the other node may not
        // have answered yet.
        for node in [&world.a, &world.b] {
            let released = node.applied_through.map_or(0, |t| t.pg_micros());
            for key in 0..KEYS {
                if let Absence::Tombstone(d) = node.tombstones.absence(&key) {
                    prop_assert!(d.commit_time.pg_micros() >= released);
                }
            }
        }
    }

    #[test]
    fn last_write_wins_converges_from_rows_both_nodes_already_hold(steps in steps_strategy(false, 40)) {
        let result = converges(lww(), &preloaded(), false, &steps);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn with_tombstones_pruned_at_once_the_nodes_only_ever_differ_by_missing_rows(
        steps in steps_strategy(false, 40),
    ) {
        let mut world = World::new(lww(), &preloaded(), false);
        world.retention = Some(TombstoneRetention { margin: Duration::ZERO, max_count: 0 });
        if let Err(e) = world.run(&steps) {
            return Err(TestCaseError::fail(e));
        }
        for (key, row) in &world.a.rows {
            if let Some(other) = world.b.rows.get(key) {
                prop_assert_eq!(row, other, "key {} holds different rows", key);
            }
        }
    }

    #[test]
    fn delta_columns_keep_every_increment_from_both_nodes(steps in steps_strategy(true, 40)) {
        let world = match converges(lww(), &preloaded(), true, &steps) {
            Ok(world) => world,
            Err(e) => return Err(TestCaseError::fail(e)),
        };
        for (key, row) in &world.a.rows {
            let made = world.a.increments.get(key).copied().unwrap_or(0)
                + world.b.increments.get(key).copied().unwrap_or(0);
            prop_assert_eq!(row.balance, 100 + made, "key {}", key);
        }
    }
}

/// Searches the model for a case where the two nodes end different; returns it, shrunk.
fn find_divergence(
    steps: impl Strategy<Value = Vec<Step>>,
    run: impl Fn(&[Step]) -> Result<World, String>,
) -> Option<(Vec<Step>, String)> {
    let config = Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let outcome = runner.run(&steps, |steps| {
        run(&steps).map(drop).map_err(TestCaseError::fail)
    });
    match outcome {
        Err(TestError::Fail(why, steps)) => Some((steps, why.to_string())),
        _ => None,
    }
}

fn find_divergence_under(policy: Policy) -> Option<(Vec<Step>, String)> {
    let policies = ConflictPolicies::uniform(policy);
    find_divergence(steps_strategy(false, 20), |steps| {
        converges(policies.clone(), &preloaded(), false, steps)
    })
}

#[test]
fn the_model_finds_divergence_when_the_source_always_wins() {
    let found = find_divergence_under(Policy::Overwrite);
    let (steps, why) = found.expect("overwrite never diverged: the model cannot detect divergence");
    assert!(why.contains("diverged"), "{why}");
    // Shrunk to the classic crossing: two concurrent writes of one row, delivered both ways.
    assert!(steps.len() <= 4, "{steps:?}");
}

#[test]
fn the_model_finds_divergence_when_the_destination_always_wins() {
    let found = find_divergence_under(Policy::Ignore);
    let (steps, why) = found.expect("ignore never diverged: the model cannot detect divergence");
    assert!(why.contains("diverged"), "{why}");
    assert!(steps.len() <= 4, "{steps:?}");
}

#[test]
fn delta_columns_diverge_when_a_kept_row_takes_the_applying_transactions_stamp() {
    let found = find_divergence(steps_strategy(true, 20), |steps| {
        let mut world = World::new(lww(), &preloaded(), true);
        world.honour_keep_writer = false;
        world.run(steps)?;
        if world.a.rows == world.b.rows {
            Ok(world)
        } else {
            Err(format!(
                "diverged:\n  a = {:?}\n  b = {:?}",
                world.a.rows, world.b.rows
            ))
        }
    });
    let (steps, why) = found.expect("ignoring keep_writer never diverged");
    assert!(why.contains("diverged"), "{why}");
    assert!(steps.len() <= 6, "{steps:?}");
}

#[test]
fn beyond_the_tombstone_bound_a_stale_write_is_dropped_so_the_delete_wins() {
    let found = find_divergence(steps_strategy(false, 20), |steps| {
        let mut world = World::new(lww(), &preloaded(), false);
        world.retention = Some(TombstoneRetention {
            margin: Duration::ZERO,
            max_count: 0,
        });
        world.run(steps)?;
        let only_on_one: Vec<_> = world
            .a
            .rows
            .keys()
            .filter(|k| !world.b.rows.contains_key(k))
            .collect();
        let only_on_other: Vec<_> = world
            .b
            .rows
            .keys()
            .filter(|k| !world.a.rows.contains_key(k))
            .collect();
        if only_on_one.is_empty() && only_on_other.is_empty() {
            Ok(world)
        } else {
            Err(format!(
                "diverged: rows only on a {only_on_one:?}, only on b {only_on_other:?}"
            ))
        }
    });
    let (steps, why) =
        found.expect("pruning tombstones never mattered: the bound is not exercised");
    assert!(why.contains("diverged"), "{why}");
    assert!(steps.len() <= 4, "{steps:?}");
}

#[test]
fn the_crossing_that_diverges_under_overwrite_converges_under_last_write_wins() {
    use model::Write::Update;
    let crossing = [
        Step::Write(Side::A, Update(0, 1)),
        Step::Write(Side::B, Update(0, 2)),
    ];
    let overwrite = converges(
        ConflictPolicies::uniform(Policy::Overwrite),
        &preloaded(),
        false,
        &crossing,
    );
    assert!(overwrite.unwrap_err().contains("diverged"));
    let world = converges(lww(), &preloaded(), false, &crossing).unwrap();
    assert_eq!(
        world.a.rows[&0].v, 2,
        "the later write (b's) wins on both nodes"
    );
}

#[test]
fn without_tombstones_an_update_racing_a_delete_diverges() {
    use model::Write::{Delete, Update};
    // A deletes key 0 after B updated it: B must apply the delete, A must skip B's update.
    let steps = [
        Step::Write(Side::B, Update(0, 7)),
        Step::Write(Side::A, Delete(0)),
    ];
    let world = converges(lww(), &preloaded(), false, &steps).unwrap();
    assert!(!world.a.rows.contains_key(&0));
    let mut forgetful = World::new(lww(), &preloaded(), false);
    forgetful.step(&steps[0]).unwrap();
    forgetful.step(&steps[1]).unwrap();
    forgetful.a.tombstones = pgsync_conflict::TombstoneSet::new();
    forgetful.run(&[]).unwrap();
    assert_ne!(
        forgetful.a.rows, forgetful.b.rows,
        "the tombstone is what makes it converge"
    );
}

#[test]
fn the_model_reaches_every_conflict_kind() {
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 500,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let mut seen = ConflictCounters::new();
    for initial in [BTreeMap::new(), preloaded()] {
        for _ in 0..500 {
            let tree = steps_strategy(false, 40).new_tree(&mut runner).unwrap();
            let world = converges(lww(), &initial, false, &tree.current()).unwrap();
            seen.merge(&world.a.counters);
            seen.merge(&world.b.counters);
        }
    }
    for kind in ConflictKind::ALL {
        assert!(
            seen.get(kind) > 0,
            "the model never produced {kind}: {seen:?}"
        );
    }
}
