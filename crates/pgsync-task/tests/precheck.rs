//! Precheck against real servers: each item is made to fail, its fix text is checked, the
//! fix is applied, and the item passes.

use pgsync_task::TaskSpec;
use pgsync_task::precheck::{self, Report, Side, Status};
use pgsync_testkit::{Cluster, HostAuth};

fn spec(a: &Cluster, b: &Cluster, extra: &str) -> TaskSpec {
    let text = format!(
        "name = \"shop\"\n{extra}\n[source]\ndsn = \"{}\"\n[destination]\ndsn = \"{}\"\n",
        a.dsn(),
        b.dsn()
    );
    TaskSpec::from_toml(&text, "test.toml").unwrap()
}

fn status(report: &Report, side: Side, id: &str) -> Status {
    report
        .get(side, id)
        .unwrap_or_else(|| panic!("no {id} item in:\n{report}"))
        .status
}

fn fix<'a>(report: &'a Report, side: Side, id: &str) -> &'a str {
    report
        .get(side, id)
        .and_then(|c| c.fix.as_deref())
        .unwrap_or("")
}

async fn pair() -> (Cluster, Cluster) {
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("shop").start(),
        Cluster::builder().database("shop").start()
    )
    .unwrap();
    a.client()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, total numeric); CREATE TABLE log (line text)",
        )
        .await
        .unwrap();
    (a, b)
}

#[tokio::test]
async fn a_prepared_pair_passes_and_a_table_without_key_fails_until_it_gets_replica_identity() {
    let (a, b) = pair().await;
    let report = precheck::run(&spec(&a, &b, "")).await;
    assert_eq!(
        status(&report, Side::Source, "replica_identity"),
        Status::Fail,
        "{report}"
    );
    assert!(
        report
            .get(Side::Source, "replica_identity")
            .unwrap()
            .detail
            .contains("\"public\".\"log\"")
    );
    assert!(fix(&report, Side::Source, "replica_identity").contains("REPLICA IDENTITY FULL"));

    a.client()
        .await
        .unwrap()
        .batch_execute("ALTER TABLE log REPLICA IDENTITY FULL")
        .await
        .unwrap();
    // A prepared source bounds the WAL a slot may hold (else wal_keep warns).
    for sql in [
        "ALTER SYSTEM SET max_slot_wal_keep_size = '10GB'",
        "SELECT pg_reload_conf()",
    ] {
        a.client().await.unwrap().batch_execute(sql).await.unwrap();
    }
    let report = precheck::run(&spec(&a, &b, "")).await;
    assert!(report.ok(), "{report}");
    assert_eq!(report.status(), Status::Pass, "{report}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["checks"][0]["status"], "pass");
}

#[tokio::test]
async fn wal_level_replica_fails_with_the_fix_and_passes_after_it() {
    let mut a = Cluster::builder()
        .database("shop")
        .setting("wal_level", "replica")
        .start()
        .await
        .unwrap();
    let b = Cluster::builder().database("shop").start().await.unwrap();
    let report = precheck::run(&spec(&a, &b, "")).await;
    assert_eq!(
        status(&report, Side::Source, "wal_level"),
        Status::Fail,
        "{report}"
    );
    let fix_text = fix(&report, Side::Source, "wal_level").to_owned();
    assert!(
        fix_text.contains("ALTER SYSTEM SET wal_level = logical"),
        "{fix_text}"
    );

    a.client()
        .await
        .unwrap()
        .batch_execute("ALTER SYSTEM SET wal_level = logical")
        .await
        .unwrap();
    a.restart().await.unwrap();
    let report = precheck::run(&spec(&a, &b, "")).await;
    assert_eq!(
        status(&report, Side::Source, "wal_level"),
        Status::Pass,
        "{report}"
    );
}

#[tokio::test]
async fn a_wrong_password_is_one_clear_failure_and_nothing_is_written() {
    let a = Cluster::builder()
        .database("shop")
        .password(HostAuth::ScramSha256, "right")
        .start()
        .await
        .unwrap();
    let b = Cluster::builder().database("shop").start().await.unwrap();
    let text = format!(
        "name = \"shop\"\n[source]\ndsn = \"{}\"\n[destination]\ndsn = \"{}\"\n",
        a.dsn().replace("password=right", "password=wrong"),
        b.dsn()
    );
    let report = precheck::run(&TaskSpec::from_toml(&text, "t").unwrap()).await;
    let item = report.get(Side::Source, "connect").unwrap();
    assert_eq!(item.status, Status::Fail);
    assert!(
        item.detail.contains("password authentication failed"),
        "{report}"
    );
    assert!(
        item.fix.as_deref().unwrap().contains("PGPASSWORD"),
        "{report}"
    );
    assert!(
        !report.to_string().contains("wrong"),
        "the password must not be printed:\n{report}"
    );
    assert!(
        report.get(Side::Source, "wal_level").is_none(),
        "nothing more is checked on that side"
    );
}

#[tokio::test]
async fn tables_that_exist_on_the_destination_fail_in_error_mode_and_warn_in_ignore_mode() {
    let (a, b) = pair().await;
    let only_orders = "[objects]\ninclude = [\"public.orders\"]";
    b.client()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE orders (id int PRIMARY KEY)")
        .await
        .unwrap();
    let report = precheck::run(&spec(&a, &b, only_orders)).await;
    assert_eq!(
        status(&report, Side::Destination, "existing_tables"),
        Status::Fail,
        "{report}"
    );
    assert!(
        fix(&report, Side::Destination, "existing_tables").contains("existing_tables = \"ignore\"")
    );

    let ignore = format!("[sync]\nexisting_tables = \"ignore\"\n{only_orders}");
    let report = precheck::run(&spec(&a, &b, &ignore)).await;
    assert_eq!(
        status(&report, Side::Destination, "existing_tables"),
        Status::Warn,
        "{report}"
    );

    b.client()
        .await
        .unwrap()
        .batch_execute("DROP TABLE orders")
        .await
        .unwrap();
    let report = precheck::run(&spec(&a, &b, only_orders)).await;
    assert_eq!(
        status(&report, Side::Destination, "existing_tables"),
        Status::Pass,
        "{report}"
    );
}

#[tokio::test]
async fn a_missing_table_is_named() {
    let (a, b) = pair().await;
    let report = precheck::run(&spec(
        &a,
        &b,
        "[objects]\ninclude = [\"public.orders\", \"public.nope\"]",
    ))
    .await;
    let item = report.get(Side::Source, "tables_exist").unwrap();
    assert_eq!(item.status, Status::Fail);
    assert!(item.detail.contains("\"public\".\"nope\""), "{report}");
}

#[tokio::test]
async fn a_slot_in_use_fails_and_passes_once_released() {
    let (a, b) = pair().await;
    let client = a.client().await.unwrap();
    client
        .batch_execute(
            "SELECT pg_create_logical_replication_slot('pgsync_shop_fwd', 'test_decoding')",
        )
        .await
        .unwrap();
    let mut consumer = tokio::process::Command::new(a.binaries().program("pg_recvlogical"))
        .args([
            "-d",
            &a.dsn(),
            "--slot",
            "pgsync_shop_fwd",
            "--start",
            "-f",
            "/dev/null",
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !client
        .query_one(
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'pgsync_shop_fwd'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pg_recvlogical never became active"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let only_orders = "[objects]\ninclude = [\"public.orders\"]";
    let report = precheck::run(&spec(&a, &b, only_orders)).await;
    assert_eq!(
        status(&report, Side::Source, "slot"),
        Status::Fail,
        "{report}"
    );
    assert!(
        report
            .get(Side::Source, "slot")
            .unwrap()
            .detail
            .contains("in use by process")
    );

    consumer.kill().await.unwrap();
    let _ = consumer.wait().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let report = precheck::run(&spec(&a, &b, only_orders)).await;
        if status(&report, Side::Source, "slot") == Status::Pass {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never released:\n{report}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_role_without_privileges_fails_on_both_sides_and_passes_with_them() {
    let (a, b) = pair().await;
    let setup = "CREATE ROLE app LOGIN; GRANT ALL ON SCHEMA public TO app";
    a.client()
        .await
        .unwrap()
        .batch_execute(setup)
        .await
        .unwrap();
    b.client()
        .await
        .unwrap()
        .batch_execute(setup)
        .await
        .unwrap();
    let as_app = |c: &Cluster| c.dsn().replace("user=postgres", "user=app");
    let text = format!(
        "name = \"shop\"\n[source]\ndsn = \"{}\"\n[destination]\ndsn = \"{}\"\n[objects]\ninclude = [\"public.orders\"]\n",
        as_app(&a),
        as_app(&b)
    );
    let report = precheck::run(&TaskSpec::from_toml(&text, "t").unwrap()).await;
    assert_eq!(
        status(&report, Side::Source, "privileges"),
        Status::Fail,
        "{report}"
    );
    assert!(fix(&report, Side::Source, "privileges").contains("REPLICATION"));
    assert_eq!(
        status(&report, Side::Destination, "privileges"),
        Status::Fail,
        "{report}"
    );

    a.client()
        .await
        .unwrap()
        .batch_execute("ALTER ROLE app SUPERUSER")
        .await
        .unwrap();
    b.client()
        .await
        .unwrap()
        .batch_execute("ALTER ROLE app SUPERUSER")
        .await
        .unwrap();
    let report = precheck::run(&TaskSpec::from_toml(&text, "t").unwrap()).await;
    assert_eq!(
        status(&report, Side::Source, "privileges"),
        Status::Pass,
        "{report}"
    );
    assert_eq!(
        status(&report, Side::Destination, "privileges"),
        Status::Pass,
        "{report}"
    );
}

#[tokio::test]
async fn last_write_wins_needs_commit_timestamps_on_the_destination() {
    let a = Cluster::builder().database("shop").start().await.unwrap();
    let mut b = Cluster::builder()
        .database("shop")
        .setting("track_commit_timestamp", "off")
        .start()
        .await
        .unwrap();
    a.client()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let lww = "[sync]\nconflict_policy = \"last_write_wins\"";
    let report = precheck::run(&spec(&a, &b, lww)).await;
    assert_eq!(
        status(&report, Side::Destination, "commit_timestamps"),
        Status::Fail,
        "{report}"
    );
    assert!(
        fix(&report, Side::Destination, "commit_timestamps")
            .contains("track_commit_timestamp = on")
    );
    // Not needed (not checked) under another policy.
    let report = precheck::run(&spec(&a, &b, "")).await;
    assert!(
        report.get(Side::Destination, "commit_timestamps").is_none(),
        "{report}"
    );

    b.client()
        .await
        .unwrap()
        .batch_execute("ALTER SYSTEM SET track_commit_timestamp = on")
        .await
        .unwrap();
    b.restart().await.unwrap();
    let report = precheck::run(&spec(&a, &b, lww)).await;
    assert_eq!(
        status(&report, Side::Destination, "commit_timestamps"),
        Status::Pass,
        "{report}"
    );
}

#[tokio::test]
async fn two_way_without_a_superuser_on_the_destination_warns_about_the_bootstrap_window() {
    let (a, b) = pair().await;
    b.client()
        .await
        .unwrap()
        .batch_execute("CREATE ROLE app LOGIN REPLICATION")
        .await
        .unwrap();
    let text = format!(
        "name = \"shop\"\n[sync]\ntwo_way = true\n[source]\ndsn = \"{}\"\n[destination]\ndsn = \"{}\"\n[objects]\ninclude = [\"public.orders\"]\n",
        a.dsn(),
        b.dsn().replace("user=postgres", "user=app")
    );
    let report = precheck::run(&TaskSpec::from_toml(&text, "t").unwrap()).await;
    assert_eq!(
        status(&report, Side::Destination, "reverse_bootstrap"),
        Status::Warn,
        "{report}"
    );
    assert!(fix(&report, Side::Destination, "reverse_bootstrap").contains("superuser"));

    b.client()
        .await
        .unwrap()
        .batch_execute("ALTER ROLE app SUPERUSER")
        .await
        .unwrap();
    let report = precheck::run(&TaskSpec::from_toml(&text, "t").unwrap()).await;
    assert_eq!(
        status(&report, Side::Destination, "reverse_bootstrap"),
        Status::Pass,
        "{report}"
    );
}

#[tokio::test]
async fn ddl_sync_needs_a_superuser_on_the_source_and_says_how_to_do_without() {
    let (a, b) = pair().await;
    a.client()
        .await
        .unwrap()
        .batch_execute("CREATE ROLE app LOGIN REPLICATION; GRANT ALL ON SCHEMA public TO app")
        .await
        .unwrap();
    let text = |ddl: bool| {
        format!(
            "name = \"shop\"\n[sync]\nddl = {ddl}\n[source]\ndsn = \"{}\"\n[destination]\ndsn = \"{}\"\n[objects]\ninclude = [\"public.orders\"]\n",
            a.dsn().replace("user=postgres", "user=app"),
            b.dsn()
        )
    };
    let report = precheck::run(&TaskSpec::from_toml(&text(true), "t").unwrap()).await;
    assert_eq!(
        status(&report, Side::Source, "ddl_capture"),
        Status::Fail,
        "{report}"
    );
    assert!(fix(&report, Side::Source, "ddl_capture").contains("sync.ddl = false"));
    let report = precheck::run(&TaskSpec::from_toml(&text(false), "t").unwrap()).await;
    assert!(
        report.get(Side::Source, "ddl_capture").is_none(),
        "{report}"
    );
}
