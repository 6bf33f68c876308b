//! Large transactions that the source streams before they commit (more than
//! `logical_decoding_work_mem`), end to end: applied as they arrive when nothing else is
//! under way, applied whole at their commit when other transactions interleave or a
//! subtransaction aborts, and neither lost nor doubled when pgsync is killed in the middle.

mod common;

use std::time::Duration;

use common::{Pgsync, TaskFile, wait_converged};
use pgsync_testkit::Cluster;

const TABLES: [&str; 2] = ["big", "small"];

async fn pair() -> (Cluster, Cluster) {
    let (a, b) = tokio::try_join!(
        Cluster::builder()
            .database("bench")
            .setting("logical_decoding_work_mem", "64kB")
            .start(),
        Cluster::builder().database("bench").start()
    )
    .unwrap();
    a.client()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE big (id bigint PRIMARY KEY, v text NOT NULL, n int);
             CREATE TABLE small (id serial PRIMARY KEY, note text)",
        )
        .await
        .unwrap();
    (a, b)
}

#[tokio::test]
async fn a_streamed_transaction_is_applied_as_it_arrives_or_whole_when_others_interleave() {
    let (a, b) = pair().await;
    let task = TaskFile::new(&a, &b, "");
    let pgsync = Pgsync::run(&task);
    wait_converged(&a, &b, &TABLES, Duration::from_secs(90), || {
        pgsync.log_text()
    })
    .await;

    // Alone: rows inserted, updated and deleted in one streamed transaction.
    let ca = a.client().await.unwrap();
    ca.batch_execute(
        "BEGIN;
         INSERT INTO big SELECT g, md5(g::text), 0 FROM generate_series(1, 20000) g;
         UPDATE big SET n = 1, v = v || '!' WHERE id % 4 = 0;
         DELETE FROM big WHERE id % 10 = 0;
         COMMIT;",
    )
    .await
    .unwrap();
    wait_converged(&a, &b, &TABLES, Duration::from_secs(90), || {
        pgsync.log_text()
    })
    .await;
    assert!(
        pgsync
            .log_text()
            .contains("streamed transaction applied as it arrived"),
        "the transaction was not applied early:\n{}",
        pgsync.log_text()
    );

    // Interleaved: small transactions commit while the big one is open.
    let cb = a.client().await.unwrap();
    ca.batch_execute(
        "BEGIN; INSERT INTO big SELECT g, 'x', 2 FROM generate_series(100001, 110000) g",
    )
    .await
    .unwrap();
    for i in 0..20 {
        cb.execute("INSERT INTO small (note) VALUES ($1)", &[&format!("s{i}")])
            .await
            .unwrap();
    }
    ca.batch_execute(
        "UPDATE big SET n = 3 WHERE id BETWEEN 100001 AND 100500;
         INSERT INTO big SELECT g, 'y', 4 FROM generate_series(110001, 115000) g;
         COMMIT",
    )
    .await
    .unwrap();
    // A subtransaction rolled back inside a streamed transaction.
    ca.batch_execute(
        "BEGIN;
         INSERT INTO big SELECT g, 'keep', 5 FROM generate_series(200001, 206000) g;
         SAVEPOINT s;
         INSERT INTO big SELECT g, 'gone', 6 FROM generate_series(206001, 212000) g;
         DELETE FROM big WHERE id < 1000;
         ROLLBACK TO SAVEPOINT s;
         UPDATE big SET n = 7 WHERE id BETWEEN 200001 AND 200100;
         COMMIT",
    )
    .await
    .unwrap();
    wait_converged(&a, &b, &TABLES, Duration::from_secs(90), || {
        pgsync.log_text()
    })
    .await;
    let count: i64 = b
        .client()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM big WHERE v = 'gone'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
    assert!(pgsync.stop().await.success());
}

#[tokio::test]
async fn pgsync_killed_while_a_streamed_transaction_is_applied_early_loses_and_doubles_nothing() {
    let (a, b) = pair().await;
    let task = TaskFile::new(&a, &b, "");
    let mut logs = String::new();
    let p = Pgsync::run(&task);
    wait_converged(&a, &b, &TABLES, Duration::from_secs(90), || p.log_text()).await;
    let ca = a.client().await.unwrap();
    let mut p = Some(p);
    for (round, delay_ms) in [150u64, 400, 900].into_iter().enumerate() {
        let base = round as i64 * 1_000_000;
        ca.execute(
            "INSERT INTO big SELECT g, md5(g::text), 0 FROM generate_series($1::bigint + 1, $1::bigint + 60000) g",
            &[&base],
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let mut running = p.take().unwrap();
        running.kill9().await;
        logs.push_str(&running.log_text());
        p = Some(Pgsync::run(&task));
    }
    let p = p.unwrap();
    logs.push_str("--- final run ---\n");
    wait_converged(&a, &b, &TABLES, Duration::from_secs(120), || {
        logs.clone() + &p.log_text()
    })
    .await;
    assert!(p.stop().await.success());
}
