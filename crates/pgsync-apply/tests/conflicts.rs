//! Every conflict kind under every policy, on real servers: the same source changes from A
//! are applied to one destination database per policy on B, each prepared with the same
//! local rows and local writes, and the resulting rows and the conflict log are checked.
//!
//! ```text
//!  key  B before (local)             A (source, in order)         B after A (local)
//!   1   (1,'b1',11) early            insert (1,'a1',10)           -                insert_exists, A later
//!   2   -                            insert (2,'a2',20)           insert (2,'b2',21) insert_exists, B later
//!   3   -                            update 3 (A-only row)        -                update_missing
//!   4,5 (4,'c4') both, (5,'c5') B    update 4 set code = 'c5'     -                update_key_exists
//!   6   -                            delete 6 (A-only row)        -                delete_missing
//!   7   both                         update 7 v = 70              update 7 v = 71  update_newer_local
//!   8   both                         delete 8                     update 8 v = 81  delete_newer_local
//!   9   both                         update 9 v = 90              delete 9         update_missing, tombstone later
//!  10   (10,'b10') B only            insert (10,'a10',100)        delete 10        insert_deleted
//! ```

use std::time::Duration;

use pgsync_apply::{Applier, ApplierConfig, ApplyError, ConflictHandling};
use pgsync_conflict::{ConflictKind, ConflictPolicies, NodeId, Policy};
use pgsync_names::QualifiedName;
use pgsync_testkit::Cluster;
use pgsync_wal::txn::{Assembled, Assembler, AssemblerConfig};
use pgsync_wal::{
    CreateSlot, Lsn, ReplicationConfig, ReplicationConnection, SlotSnapshot, StartOptions,
};
use tokio_postgres::Client;

const SCHEMA: &str = "CREATE TABLE items (id int PRIMARY KEY, code text UNIQUE, v int);";

/// Rows both sides hold before the source's changes are captured.
const BOTH: &str =
    "INSERT INTO items VALUES (4, 'c4', 40), (7, 'c7', 7), (8, 'c8', 8), (9, 'c9', 9)";
/// Rows only A holds.
const A_ONLY: &str = "INSERT INTO items VALUES (3, 'c3', 3), (6, 'c6', 6)";
/// Rows only B holds, written before the source's changes.
const B_EARLY: &str = "INSERT INTO items VALUES (1, 'b1', 11), (5, 'c5', 50), (10, 'b10', 101)";

/// The source's changes, one transaction each.
const A_CHANGES: &[&str] = &[
    "INSERT INTO items VALUES (1, 'a1', 10)",
    "INSERT INTO items VALUES (2, 'a2', 20)",
    "UPDATE items SET v = 30 WHERE id = 3",
    "UPDATE items SET code = 'c5', v = 41 WHERE id = 4",
    "DELETE FROM items WHERE id = 6",
    "UPDATE items SET v = 70 WHERE id = 7",
    "DELETE FROM items WHERE id = 8",
    "UPDATE items SET v = 90 WHERE id = 9",
    "INSERT INTO items VALUES (10, 'a10', 100)",
];

/// B's local writes made after the source's changes (later commit times).
const B_LATER: &str = "INSERT INTO items VALUES (2, 'b2', 21);
UPDATE items SET v = 71 WHERE id = 7;
UPDATE items SET v = 81 WHERE id = 8;
DELETE FROM items WHERE id = 9;
DELETE FROM items WHERE id = 10;";

fn handling(policies: ConflictPolicies) -> ConflictHandling {
    let mut h = ConflictHandling::new(policies, NodeId::new("b"), NodeId::new("a"));
    h.compare_writers = true;
    h.tombstones = true;
    h
}

struct Setup {
    a: Cluster,
    b: Cluster,
    target: Lsn,
    /// End LSN of A's last change.
    target_txn_end: Lsn,
}

/// A with its changes captured by one slot per destination database; each database on B
/// prepared with the same local rows and local writes.
async fn setup(databases: &[&str]) -> Setup {
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("shop").start(),
        Cluster::builder().database("postgres").start()
    )
    .unwrap();
    let ca = a.client().await.unwrap();
    ca.batch_execute(SCHEMA).await.unwrap();
    ca.batch_execute(BOTH).await.unwrap();
    ca.batch_execute(A_ONLY).await.unwrap();
    ca.batch_execute("CREATE PUBLICATION pub FOR TABLE items")
        .await
        .unwrap();
    for db in databases {
        b.create_database(db).await.unwrap();
        let c = b.connect(db).await.unwrap();
        c.batch_execute(SCHEMA).await.unwrap();
        c.batch_execute(BOTH).await.unwrap();
        c.batch_execute(B_EARLY).await.unwrap();
        pgsync_apply::install_tombstone_triggers(&c, &[QualifiedName::new("public", "items")])
            .await
            .unwrap();
        let mut conn = ReplicationConnection::connect(&ReplicationConfig::parse(&a.dsn()).unwrap())
            .await
            .unwrap();
        conn.create_slot(&CreateSlot::new(format!("slot_{db}")).snapshot(SlotSnapshot::Nothing))
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    for change in A_CHANGES {
        ca.batch_execute(change).await.unwrap();
    }
    let target_txn_end = lsn(&ca).await;
    for db in databases {
        b.connect(db)
            .await
            .unwrap()
            .batch_execute(B_LATER)
            .await
            .unwrap();
    }
    let target = lsn(&ca).await;
    Setup {
        a,
        b,
        target,
        target_txn_end,
    }
}

async fn lsn(c: &Client) -> Lsn {
    c.query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get::<_, &str>(0)
        .parse()
        .unwrap()
}

/// Applies A's changes from `slot_<db>` to `db` on B, one transaction per group, until
/// the target or the first error.
async fn apply(s: &Setup, db: &str, handling: ConflictHandling) -> Result<(), ApplyError> {
    apply_grouped(s, db, handling, false).await
}

/// [`apply`], all of A's transactions as one group when `one_group`.
async fn apply_grouped(
    s: &Setup,
    db: &str,
    handling: ConflictHandling,
    one_group: bool,
) -> Result<(), ApplyError> {
    let mut config = ApplierConfig::new(format!("pgsync_test_{db}"));
    config.conflicts = Some(handling);
    let mut applier = Applier::new(s.b.connect(db).await.unwrap(), config).await?;
    let conn = ReplicationConnection::connect(&ReplicationConfig::parse(&s.a.dsn()).unwrap())
        .await
        .unwrap();
    let mut options = StartOptions::new(format!("slot_{db}"), ["pub"]);
    options.start = applier.progress();
    let mut stream = conn.start_replication(&options).await.unwrap();
    let mut assembler = Assembler::new(AssemblerConfig::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut result = Ok(());
    let mut group = Vec::new();
    while applier.progress() < s.target {
        let data = tokio::time::timeout_at(deadline, stream.recv())
            .await
            .expect("timed out")
            .unwrap()
            .unwrap();
        if let Some(Assembled::Transaction(txn)) = assembler.push_payload(&data.data).unwrap() {
            if one_group {
                let end = txn.end_lsn;
                group.push(txn);
                if end < s.target_txn_end {
                    continue;
                }
            } else {
                group = vec![txn];
            }
            if let Err(e) = applier.apply(&group).await {
                result = Err(e);
                break;
            }
            stream.confirm(applier.durable().await?);
        }
    }
    stream.stop().await.unwrap();
    result
}

/// `id:code:v` of every row, by id.
async fn rows(b: &Cluster, db: &str) -> Vec<String> {
    b.connect(db)
        .await
        .unwrap()
        .query(
            "SELECT format('%s:%s:%s', id, code, v) FROM items ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `kind key-id decision` of every conflict logged, in order.
async fn log(b: &Cluster, db: &str) -> Vec<String> {
    b.connect(db)
        .await
        .unwrap()
        .query(
            "SELECT format('%s %s %s', kind, coalesce(key->>'id', '?'), decision)
             FROM pgsync.conflicts ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn each_conflict_kind_is_resolved_by_each_policy_and_logged() {
    let dbs = ["p_ignore", "p_overwrite", "p_lww"];
    let s = setup(&dbs).await;
    for (db, policy) in dbs
        .iter()
        .zip([Policy::Ignore, Policy::Overwrite, Policy::LastWriteWins])
    {
        apply(&s, db, handling(ConflictPolicies::uniform(policy)))
            .await
            .unwrap_or_else(|e| panic!("{policy}: {e}"));
    }

    // ignore: the destination keeps every row it had; only conflict-free changes land.
    assert_eq!(
        rows(&s.b, "p_ignore").await,
        [
            "1:b1:11", "2:b2:21", "4:c4:40", "5:c5:50", "7:c7:71", "8:c8:81"
        ]
    );
    assert_eq!(
        log(&s.b, "p_ignore").await,
        [
            "insert_exists 1 keep_local",
            "insert_exists 2 keep_local",
            "update_missing 3 skip",
            "update_key_exists 5 keep_local",
            "delete_missing 6 skip",
            "update_newer_local 7 keep_local",
            "delete_newer_local 8 keep_local",
            "update_missing 9 skip",
            "insert_deleted 10 skip",
        ]
    );

    // overwrite: the source wins everywhere (the update of 3 becomes an insert, row 5 is
    // evicted for 4's new code, deleted keys come back).
    assert_eq!(
        rows(&s.b, "p_overwrite").await,
        [
            "1:a1:10",
            "2:a2:20",
            "3:c3:30",
            "4:c5:41",
            "7:c7:70",
            "9:c9:90",
            "10:a10:100"
        ]
    );
    assert_eq!(
        log(&s.b, "p_overwrite").await,
        [
            "insert_exists 1 convert_to_update",
            "insert_exists 2 convert_to_update",
            "update_missing 3 convert_to_insert",
            "update_key_exists 5 apply_remote",
            "delete_missing 6 skip",
            "update_missing 9 convert_to_insert",
            "insert_deleted 10 apply_remote",
        ],
        "update_newer_local and delete_newer_local are not looked for under overwrite"
    );

    // last_write_wins: the later write wins at each key; B's later writes (2, 7, 8) and
    // deletes (9, 10, remembered by tombstones) stand, A's later ones (1, 3, 4) land.
    assert_eq!(
        rows(&s.b, "p_lww").await,
        [
            "1:a1:10", "2:b2:21", "3:c3:30", "4:c5:41", "7:c7:71", "8:c8:81"
        ]
    );
    assert_eq!(
        log(&s.b, "p_lww").await,
        [
            "insert_exists 1 convert_to_update",
            "insert_exists 2 keep_local",
            "update_missing 3 convert_to_insert",
            "update_key_exists 5 apply_remote",
            "delete_missing 6 skip",
            "update_newer_local 7 keep_local",
            "delete_newer_local 8 keep_local",
            "update_missing 9 skip",
            "insert_deleted 10 skip",
        ]
    );
    let detail =
        s.b.connect("p_lww")
            .await
            .unwrap()
            .query_one(
                "SELECT local_row->>'v', remote_row->>'v', local_origin, remote_origin,
                    local_commit_time > remote_commit_time, source_lsn > '0/0', policy
             FROM pgsync.conflicts WHERE kind = 'update_newer_local'",
                &[],
            )
            .await
            .unwrap();
    assert_eq!(detail.get::<_, String>(0), "71");
    assert_eq!(detail.get::<_, String>(1), "70");
    assert_eq!(detail.get::<_, String>(2), "b");
    assert_eq!(detail.get::<_, String>(3), "a");
    assert!(detail.get::<_, bool>(4));
    assert!(detail.get::<_, bool>(5));
    assert_eq!(detail.get::<_, String>(6), "last_write_wins");
}

#[tokio::test]
async fn fail_stops_at_the_conflict_and_after_a_hand_fix_nothing_is_skipped() {
    let s = setup(&["p_fail"]).await;
    let policies = ConflictPolicies::uniform(Policy::Fail)
        .with(ConflictKind::UpdateNewerLocal, Policy::Overwrite)
        .unwrap()
        .with(ConflictKind::DeleteNewerLocal, Policy::Overwrite)
        .unwrap()
        .with(ConflictKind::InsertDeleted, Policy::Overwrite)
        .unwrap();
    let b = s.b.connect("p_fail").await.unwrap();
    // Each stop names the conflict; the fix a user would make lets the task go on.
    let fixes: &[(&str, &str, &str)] = &[
        (
            "insert_exists",
            r#""id":"1""#,
            "DELETE FROM items WHERE id = 1",
        ),
        (
            "insert_exists",
            r#""id":"2""#,
            "DELETE FROM items WHERE id = 2",
        ),
        (
            "update_missing",
            r#""id":"3""#,
            "INSERT INTO items VALUES (3, 'c3', 3)",
        ),
        (
            "update_key_exists",
            "items_code_key",
            "DELETE FROM items WHERE id = 5",
        ),
        (
            "update_missing",
            r#""id":"9""#,
            "INSERT INTO items VALUES (9, 'c9', 9)",
        ),
    ];
    for (kind, key, fix) in fixes {
        let err = apply(&s, "p_fail", handling(policies.clone()))
            .await
            .expect_err("the conflict must stop the task");
        match &err {
            ApplyError::Conflict {
                kind: k, detail, ..
            } => {
                assert_eq!(k, kind, "{err}");
                assert!(detail.contains(key), "{err}");
            }
            other => panic!("expected {kind}, got {other}"),
        }
        assert!(!err.is_retryable());
        let logged: i64 = b
            .query_one(
                "SELECT count(*) FROM pgsync.conflicts WHERE kind = $1 AND decision = 'fail'",
                &[kind],
            )
            .await
            .unwrap()
            .get(0);
        assert!(logged >= 1, "{kind} not logged");
        b.batch_execute(fix).await.unwrap();
    }
    apply(&s, "p_fail", handling(policies)).await.unwrap();
    // Every change of A arrived: nothing was skipped by the stops.
    assert_eq!(
        rows(&s.b, "p_fail").await,
        [
            "1:a1:10",
            "2:a2:20",
            "3:c3:30",
            "4:c5:41",
            "7:c7:70",
            "9:c9:90",
            "10:a10:100"
        ]
    );
}

#[tokio::test]
async fn conflicts_in_the_middle_of_one_group_are_each_decided_and_nothing_is_lost() {
    let s = setup(&["p_group"]).await;
    apply_grouped(
        &s,
        "p_group",
        handling(ConflictPolicies::uniform(Policy::LastWriteWins)),
        true,
    )
    .await
    .unwrap();
    assert_eq!(
        rows(&s.b, "p_group").await,
        [
            "1:a1:10", "2:b2:21", "3:c3:30", "4:c5:41", "7:c7:71", "8:c8:81"
        ]
    );
    assert_eq!(log(&s.b, "p_group").await.len(), 9);
}
