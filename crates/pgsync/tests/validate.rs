//! `pgsync validate` against real servers while the forward task runs: rows changed,
//! deleted and inserted by hand on B are reported exactly and repaired; a continuous
//! pgbench load on A reports no difference; a mapped table compares under its new names.

mod common;

use std::time::Duration;

use common::{PGBENCH_TABLES, Pgsync, TaskFile, checksum, pgbench_pair, wait_converged};
use pgsync_testkit::{Cluster, PgbenchLoad};
use serde_json::Value;

/// `pgsync validate --json --config <task> <args>`: exit code and the parsed report.
async fn validate(task: &TaskFile, args: &[&str]) -> (i32, Value, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgsync"))
        .args(["validate", "--json", "--config"])
        .arg(&task.path)
        .args(args)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

fn table<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tables"]
        .as_array()
        .unwrap_or_else(|| panic!("no tables in {report:#}"))
        .iter()
        .find(|t| t["source"]["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in {report:#}"))
}

async fn exec(c: &Cluster, sql: &str) {
    c.client().await.unwrap().batch_execute(sql).await.unwrap();
}

#[tokio::test]
async fn rows_changed_deleted_and_inserted_by_hand_on_b_are_reported_and_repaired() {
    let (a, b) = pgbench_pair(1).await;
    let task = TaskFile::new(&a, &b, "");
    let pgsync = Pgsync::run(&task);
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(90), || {
        pgsync.log_text()
    })
    .await;

    exec(
        &b,
        "UPDATE pgbench_accounts SET abalance = -999 WHERE aid = 17;
         DELETE FROM pgbench_accounts WHERE aid = 42;
         INSERT INTO pgbench_accounts VALUES (100001, 1, 0, 'only on b')",
    )
    .await;

    // WAL on A beyond the last change the task applied, none of it for the task: the
    // origin's progress stays behind it, and the wait must still end.
    exec(
        &a,
        "CREATE SCHEMA elsewhere; CREATE TABLE elsewhere.log AS SELECT generate_series(1, 1000) x",
    )
    .await;

    let (code, report, err) = validate(&task, &[]).await;
    assert_eq!(code, 4, "{report:#}\n{err}");
    let accounts = table(&report, "pgbench_accounts");
    assert_eq!(accounts["outcome"], "different", "{accounts:#}");
    assert_eq!(accounts["differences"], 3, "{accounts:#}");
    let mut rows: Vec<(String, String, Value)> = accounts["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"][0].as_str().unwrap().to_owned(),
                r["kind"].as_str().unwrap().to_owned(),
                r["columns"].clone(),
            )
        })
        .collect();
    rows.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    assert_eq!(
        rows,
        vec![
            (
                "100001".to_owned(),
                "extra_on_destination".to_owned(),
                Value::Null
            ),
            (
                "17".to_owned(),
                "different".to_owned(),
                serde_json::json!(["abalance"])
            ),
            (
                "42".to_owned(),
                "missing_on_destination".to_owned(),
                Value::Null
            ),
        ]
    );
    for other in ["pgbench_branches", "pgbench_tellers", "pgbench_history"] {
        assert_eq!(table(&report, other)["outcome"], "equal", "{report:#}");
    }
    assert_eq!(accounts["rows_source"], 100_000);
    assert_eq!(accounts["rows_destination"], 100_000);
    // The task runs and the source is quiet: the lag passed (it was not waited out).
    assert_eq!(accounts["lag"], "applied", "{accounts:#}");

    let (code, report, err) = validate(&task, &["--repair"]).await;
    assert_eq!(code, 0, "{report:#}\n{err}");
    assert_eq!(table(&report, "pgbench_accounts")["repaired"], 3);
    assert_eq!(
        checksum(&a, "pgbench_accounts").await,
        checksum(&b, "pgbench_accounts").await
    );
    let (code, report, err) = validate(&task, &[]).await;
    assert_eq!(code, 0, "{report:#}\n{err}");

    // The task still streams into the repaired rows.
    exec(
        &a,
        "UPDATE pgbench_accounts SET abalance = 7 WHERE aid IN (17, 42)",
    )
    .await;
    wait_converged(
        &a,
        &b,
        &["pgbench_accounts"],
        Duration::from_secs(60),
        || pgsync.log_text(),
    )
    .await;

    // A table without a key is compared whole: reported, not repaired.
    exec(
        &b,
        "INSERT INTO pgbench_history VALUES (1, 1, 1, 1, now(), 'only on b')",
    )
    .await;
    let (code, report, err) = validate(&task, &["--repair"]).await;
    assert_eq!(code, 4, "{report:#}\n{err}");
    let history = table(&report, "pgbench_history");
    assert_eq!(history["outcome"], "different", "{history:#}");
    assert_eq!(history["rows_destination"], 1);
    assert_eq!(history["repaired"], 0);
    assert!(pgsync.stop().await.success());
}

#[tokio::test]
async fn under_continuous_pgbench_load_no_difference_is_reported_once_the_lag_has_passed() {
    let (a, b) = pgbench_pair(2).await;
    let task = TaskFile::new(&a, &b, "");
    let pgsync = Pgsync::run(&task);
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(90), || {
        pgsync.log_text()
    })
    .await;

    let load = a
        .pgbench()
        .spawn(
            &PgbenchLoad::simple_update()
                .clients(2)
                .duration(Duration::from_secs(30)),
        )
        .unwrap();
    // Validate while the load runs (twice: the second with smaller chunks, so that more
    // of them see changes in flight).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut in_flight = 0;
    for args in [&[][..], &["--chunk-rows", "5000"][..]] {
        let (code, report, err) = validate(&task, args).await;
        assert_eq!(code, 0, "{report:#}\n{err}\n{}", pgsync.log_text());
        let accounts = table(&report, "pgbench_accounts");
        assert_eq!(accounts["outcome"], "equal", "{accounts:#}");
        assert_eq!(accounts["differences"], 0, "{accounts:#}");
        assert_eq!(accounts["rows_source"], 200_000);
        in_flight += accounts["chunks_rechecked"].as_u64().unwrap();
        // pgbench_history only grows (no key): equal, or still changing; never different.
        assert_ne!(table(&report, "pgbench_history")["outcome"], "different");
    }
    assert!(
        in_flight > 0,
        "the load put no change in flight during either validation"
    );
    let done = load.finish().await.unwrap();
    assert!(done.transactions > 1000, "the load ran: {done:?}");
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(90), || {
        pgsync.log_text()
    })
    .await;
    let (code, report, err) = validate(&task, &[]).await;
    assert_eq!(code, 0, "{report:#}\n{err}");
    assert!(pgsync.stop().await.success());
}

/// Values whose text depends on session settings (dates, intervals, floats, bytea) and
/// NULLs, under a renamed column.
const ITEMS: &str = "
CREATE TABLE public.items (
    id bigint PRIMARY KEY,
    name text,
    price numeric(10, 2),
    weight float8,
    made timestamptz,
    keep interval,
    blob bytea,
    doc jsonb,
    tags text[],
    ok boolean
);
INSERT INTO public.items
SELECT i, 'item ' || i, i * 1.25, i / 3.0, '2024-01-01 12:00+02'::timestamptz + i * interval '1 hour',
       i * interval '90 minutes', decode(md5(i::text), 'hex'), jsonb_build_object('n', i),
       ARRAY['a', i::text], i % 2 = 0
FROM generate_series(1, 3000) i;
UPDATE public.items SET name = NULL, doc = NULL WHERE id % 7 = 0;";

#[tokio::test]
async fn a_table_with_a_renamed_column_validates_under_its_destination_names() {
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("shop").start(),
        Cluster::builder().database("shop").start()
    )
    .unwrap();
    exec(&a, ITEMS).await;
    let task = TaskFile::new(
        &a,
        &b,
        "[objects]\ninclude = [\"public.items\"]\n[mapping.columns.\"public.items\"]\nname = \"title\"\n",
    );
    let pgsync = Pgsync::run(&task);
    wait_converged(&a, &b, &["public.items"], Duration::from_secs(90), || {
        pgsync.log_text()
    })
    .await;
    // The destination really has the renamed column.
    exec(&b, "SELECT title FROM public.items LIMIT 1").await;

    let (code, report, err) = validate(&task, &["--chunk-rows", "500"]).await;
    assert_eq!(code, 0, "{report:#}\n{err}\n{}", pgsync.log_text());
    let items = table(&report, "items");
    assert_eq!(items["columns_compared"], 10, "{items:#}");
    assert!(items["chunks"].as_u64().unwrap() > 1, "{items:#}");
    assert_eq!(items["rows_destination"], 3000);

    exec(
        &b,
        "UPDATE public.items SET title = 'changed on b' WHERE id = 700",
    )
    .await;
    let (code, report, err) = validate(&task, &["--table", "public.items"]).await;
    assert_eq!(code, 4, "{report:#}\n{err}");
    let items = table(&report, "items");
    assert_eq!(items["rows"][0]["key"][0], "700");
    assert_eq!(items["rows"][0]["columns"], serde_json::json!(["title"]));

    let (code, report, err) = validate(&task, &["--repair"]).await;
    assert_eq!(code, 0, "{report:#}\n{err}");
    let title: Option<String> = b
        .client()
        .await
        .unwrap()
        .query_one("SELECT title FROM public.items WHERE id = 700", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(title, None, "id 700 is a multiple of 7: NULL on the source");
    assert!(pgsync.stop().await.success());
}

#[tokio::test]
async fn a_table_the_task_does_not_select_exits_2() {
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("shop").start(),
        Cluster::builder().database("shop").start()
    )
    .unwrap();
    exec(&a, "CREATE TABLE public.t (id int PRIMARY KEY)").await;
    let task = TaskFile::new(&a, &b, "[objects]\ninclude = [\"public.t\"]\n");
    let (code, _, err) = validate(&task, &["--table", "public.other"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("public"), "{err}");
    let (code, _, err) = validate(&task, &["--table", "no_schema"]).await;
    assert_eq!(code, 2, "{err}");
    // Without the task ever running, a missing destination table is a difference.
    let (code, report, err) = validate(&task, &[]).await;
    assert_eq!(code, 4, "{err}");
    assert_eq!(table(&report, "t")["outcome"], "missing_on_destination");
}

#[tokio::test]
async fn a_composite_text_key_is_chunked_compared_and_repaired_without_a_task() {
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("shop").start(),
        Cluster::builder().database("shop").start()
    )
    .unwrap();
    let setup = "CREATE TABLE public.stock (region text, id int, qty int, note text,
                     PRIMARY KEY (region, id));
                 INSERT INTO public.stock
                 SELECT r, i, i % 13, CASE WHEN i % 5 = 0 THEN NULL ELSE 'n' || i END
                 FROM unnest(ARRAY['east', 'North', 'west', 'süd']) r, generate_series(1, 2500) i;";
    exec(&a, setup).await;
    exec(&b, setup).await;
    let task = TaskFile::new(&a, &b, "[objects]\ninclude = [\"public.stock\"]\n");
    let (code, report, err) = validate(&task, &["--chunk-rows", "700"]).await;
    assert_eq!(code, 0, "{report:#}\n{err}");
    let stock = table(&report, "stock");
    assert!(stock["chunks"].as_u64().unwrap() >= 10, "{stock:#}");
    assert_eq!(
        stock["lag"],
        Value::Null,
        "nothing differed, nothing waited for"
    );

    exec(
        &b,
        "UPDATE public.stock SET note = '' WHERE region = 'west' AND id = 5;
         DELETE FROM public.stock WHERE region = 'North' AND id = 2500;
         INSERT INTO public.stock VALUES ('zzz', 1, 1, 'only on b');",
    )
    .await;
    let (code, report, err) = validate(&task, &["--chunk-rows", "700", "--repair"]).await;
    assert_eq!(code, 0, "{report:#}\n{err}");
    let stock = table(&report, "stock");
    assert_eq!(stock["repaired"], 3, "{stock:#}");
    assert_eq!(stock["lag"], "no_task", "{stock:#}");
    assert_eq!(
        checksum(&a, "public.stock").await,
        checksum(&b, "public.stock").await
    );
}

async fn xmin(c: &Cluster, aid: i32) -> (String, i32) {
    let row = c
        .client()
        .await
        .unwrap()
        .query_one(
            "SELECT xmin::text, abalance FROM pgbench_accounts WHERE aid = $1",
            &[&aid],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn in_a_two_way_task_repaired_rows_do_not_travel_back_to_the_source() {
    let (a, b) = pgbench_pair(1).await;
    let task = TaskFile::new(&a, &b, "[sync]\ntwo_way = true");
    let pgsync = Pgsync::run(&task);
    wait_converged(&a, &b, &PGBENCH_TABLES, Duration::from_secs(90), || {
        pgsync.log_text()
    })
    .await;

    // A divergence the reverse direction does not carry: written under a pgsync origin.
    exec(
        &b,
        "SELECT pg_replication_origin_create('pgsync_e2e_fwd_test');
         SELECT pg_replication_origin_session_setup('pgsync_e2e_fwd_test');
         UPDATE pgbench_accounts SET abalance = -1 WHERE aid = 5;",
    )
    .await;
    let before = xmin(&a, 5).await;
    let (code, report, err) = validate(&task, &["--repair"]).await;
    assert_eq!(code, 0, "{report:#}\n{err}\n{}", pgsync.log_text());
    assert_eq!(table(&report, "pgbench_accounts")["repaired"], 1);
    assert_eq!(xmin(&b, 5).await.1, 0);

    // An ordinary write on B after the repair reaches A; by then the repair would have too.
    exec(
        &b,
        "UPDATE pgbench_accounts SET abalance = 123 WHERE aid = 6",
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while xmin(&a, 6).await.1 != 123 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            pgsync.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        xmin(&a, 5).await,
        before,
        "the repair was written to A again"
    );
    let (code, report, err) = validate(&task, &[]).await;
    assert_eq!(code, 0, "{report:#}\n{err}");
    assert!(pgsync.stop().await.success());
}

#[tokio::test]
async fn a_row_filtered_table_compares_the_rows_of_its_filter_and_an_operation_filtered_one_is_skipped()
 {
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("shop").start(),
        Cluster::builder().database("shop").start()
    )
    .unwrap();
    exec(
        &a,
        "CREATE TABLE orders (id int PRIMARY KEY, region text NOT NULL, qty int NOT NULL);
         ALTER TABLE orders REPLICA IDENTITY FULL;
         CREATE TABLE events (id int PRIMARY KEY, kind text NOT NULL);
         INSERT INTO orders SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, 0
           FROM generate_series(1, 100) g;
         INSERT INTO events SELECT g, 'new' FROM generate_series(1, 10) g;",
    )
    .await;
    let task = TaskFile::new(
        &a,
        &b,
        r#"
[objects]
include = ["public.*"]
[[objects.table]]
name = "public.orders"
row_filter = "region = 'eu'"
[[objects.table]]
name = "public.events"
operations = ["insert", "update"]
"#,
    );
    let pgsync = Pgsync::run(&task);
    let eu = "(SELECT * FROM orders WHERE region = 'eu')";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while checksum(&b, "events").await.0 != 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events were not copied\n{}",
            pgsync.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Deletes of events stay on A while the task streams: the sides are meant to differ.
    exec(
        &a,
        "DELETE FROM events WHERE id <= 3; INSERT INTO orders VALUES (1000, 'eu', 1)",
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while checksum(&b, "orders").await != checksum(&a, eu).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "orders did not converge\n{}",
            pgsync.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (code, report, err) = validate(&task, &[]).await;
    assert_eq!(code, 0, "{report:#}\n{err}");
    let orders = table(&report, "orders");
    assert_eq!(orders["outcome"], "equal", "{orders:#}");
    assert_eq!(orders["rows_source"], 51, "{orders:#}");
    assert_eq!(orders["rows_destination"], 51, "{orders:#}");
    let events = table(&report, "events");
    assert_eq!(events["outcome"], "skipped", "{events:#}");
    assert!(
        events["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("insert, update")),
        "{events:#}"
    );

    // On B: an EU order lost, a US order (outside the filter) that should not be there.
    exec(
        &b,
        "DELETE FROM orders WHERE id = 2; INSERT INTO orders VALUES (3000, 'us', 1)",
    )
    .await;
    let (code, report, err) = validate(&task, &[]).await;
    assert_eq!(code, 4, "{report:#}\n{err}");
    let orders = table(&report, "orders");
    assert_eq!(orders["outcome"], "different", "{orders:#}");
    let mut rows: Vec<(String, String)> = orders["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"][0].as_str().unwrap().to_owned(),
                r["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("2".to_owned(), "missing_on_destination".to_owned()),
            ("3000".to_owned(), "extra_on_destination".to_owned()),
        ]
    );

    // The repair restores the filtered set and leaves events alone.
    let (code, report, err) = validate(&task, &["--repair"]).await;
    assert_eq!(code, 0, "{report:#}\n{err}");
    assert_eq!(table(&report, "orders")["repaired"], 2);
    assert_eq!(checksum(&b, "orders").await, checksum(&a, eu).await);
    assert_eq!(checksum(&b, "events").await.0, 10);
    assert!(pgsync.stop().await.success());
}

#[tokio::test]
async fn in_a_two_way_task_a_row_filter_is_compared_on_both_sides() {
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("shop").start(),
        Cluster::builder().database("shop").start()
    )
    .unwrap();
    exec(
        &a,
        "CREATE TABLE orders (id int PRIMARY KEY, region text NOT NULL);
         ALTER TABLE orders REPLICA IDENTITY FULL;
         INSERT INTO orders SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END
           FROM generate_series(1, 40) g;",
    )
    .await;
    let task = TaskFile::new(
        &a,
        &b,
        r#"
[sync]
two_way = true
[objects]
include = ["public.*"]
[[objects.table]]
name = "public.orders"
row_filter = "region = 'eu'"
"#,
    );
    let pgsync = Pgsync::run(&task);
    // B's own US order travels to A (the reverse direction is not filtered): both sides
    // have it, and it lies outside the filter on both.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while checksum(&b, "orders").await.0 != 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            pgsync.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    exec(&b, "INSERT INTO orders VALUES (500, 'us')").await;
    while checksum(&a, "(SELECT * FROM orders WHERE id = 500)")
        .await
        .0
        != 1
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            pgsync.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (code, report, err) = validate(&task, &["--repair"]).await;
    assert_eq!(code, 0, "{report:#}\n{err}");
    let orders = table(&report, "orders");
    assert_eq!(orders["outcome"], "equal", "{orders:#}");
    assert_eq!(orders["rows_source"], 20, "{orders:#}");
    assert_eq!(orders["rows_destination"], 20, "{orders:#}");
    assert_eq!(orders["repaired"], 0, "{orders:#}");
    assert_eq!(checksum(&b, "orders").await.0, 21);
    assert!(pgsync.stop().await.success());
}
