//! The kit against real servers: several clusters at once, each really used for logical
//! decoding; restart and crash keep data; password auth; bounded pgbench.

use std::time::Duration;

use pgsync_testkit::{Cluster, HostAuth, PgbenchLoad};

/// Writes rows through a `test_decoding` slot and reads them back from the WAL.
async fn decode_roundtrip(cluster: &Cluster, tag: &str) -> Vec<String> {
    let client = cluster.client().await.unwrap();
    client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
        .await
        .unwrap();
    client
        .batch_execute("SELECT pg_create_logical_replication_slot('kit_slot', 'test_decoding')")
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO items SELECT g, $1 || g FROM generate_series(1, 3) g",
            &[&tag],
        )
        .await
        .unwrap();
    client
        .query(
            "SELECT data FROM pg_logical_slot_get_changes('kit_slot', NULL, NULL)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn three_clusters_run_at_once_and_each_decodes_its_own_changes() {
    let (a, b, c) = tokio::try_join!(
        Cluster::builder().database("alpha").start(),
        Cluster::builder().database("beta").start(),
        Cluster::builder().start(),
    )
    .unwrap();
    let ports = [a.port(), b.port(), c.port()];
    assert!(
        ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2],
        "{ports:?}"
    );

    let (da, db, dc) = tokio::join!(
        decode_roundtrip(&a, "a"),
        decode_roundtrip(&b, "b"),
        decode_roundtrip(&c, "c")
    );
    for (changes, tag) in [(da, "a"), (db, "b"), (dc, "c")] {
        let inserts: Vec<_> = changes.iter().filter(|l| l.contains("INSERT")).collect();
        assert_eq!(inserts.len(), 3, "{changes:#?}");
        assert!(
            inserts[0].contains(&format!("name[text]:'{tag}1'")),
            "{changes:#?}"
        );
        assert!(
            changes.first().unwrap().starts_with("BEGIN"),
            "{changes:#?}"
        );
        assert!(
            changes.last().unwrap().starts_with("COMMIT"),
            "{changes:#?}"
        );
    }
}

#[tokio::test]
async fn settings_are_the_ones_logical_replication_needs() {
    let cluster = Cluster::builder()
        .setting("work_mem", "7MB")
        .start()
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    for (name, want) in [
        ("wal_level", "logical"),
        ("track_commit_timestamp", "on"),
        ("fsync", "off"),
        ("work_mem", "7MB"),
        ("max_replication_slots", "32"),
        ("server_encoding", "UTF8"),
    ] {
        let got: String = client
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, want, "{name}");
    }
    let socket: String = client
        .query_one("SHOW unix_socket_directories", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(socket, cluster.socket_dir().display().to_string());
}

#[tokio::test]
async fn data_survives_a_fast_restart_and_a_crash() {
    let mut cluster = Cluster::builder().fsync(true).start().await.unwrap();
    let port = cluster.port();
    cluster
        .client()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    cluster.restart().await.unwrap();
    cluster
        .client()
        .await
        .unwrap()
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();

    cluster.crash().await.unwrap();
    assert!(!cluster.is_running());
    assert!(
        cluster.client().await.is_err(),
        "a crashed server must not answer"
    );
    cluster.start().await.unwrap();

    assert_eq!(cluster.port(), port, "a restarted cluster keeps its port");
    let sum: i64 = cluster
        .client()
        .await
        .unwrap()
        .query_one("SELECT sum(v) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 3);
}

#[tokio::test]
async fn tcp_needs_the_right_password_when_one_is_set() {
    for auth in [HostAuth::ScramSha256, HostAuth::Md5] {
        let cluster = Cluster::builder()
            .password(auth, "s3cr'et pass")
            .start()
            .await
            .unwrap();
        let dsn = cluster.dsn();
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);

        let wrong = dsn.replace("s3cr", "n0pe");
        let Err(err) = tokio_postgres::connect(&wrong, tokio_postgres::NoTls).await else {
            panic!("{auth:?}: a wrong password was accepted");
        };
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
            "{auth:?}: {err}"
        );
        assert!(
            !format!("{cluster:?}").contains("s3cr"),
            "Debug must not show the password"
        );
    }
}

#[tokio::test]
async fn pgbench_initialises_and_runs_a_bounded_load() {
    let cluster = Cluster::builder().database("bench").start().await.unwrap();
    let bench = cluster.pgbench();
    bench.init(1).await.unwrap();
    let report = bench
        .run(
            &PgbenchLoad::simple_update()
                .clients(2)
                .transactions_per_client(50),
        )
        .await
        .unwrap();
    assert_eq!(report.transactions, 100);
    assert!(report.tps > 0.0);

    let history: i64 = cluster
        .client()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(history, 100, "every -N transaction inserts one history row");

    let timed = bench
        .run(&PgbenchLoad::tpcb_like().duration(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(timed.transactions > 0);
}

#[tokio::test]
async fn a_dropped_cluster_leaves_no_server_and_no_directory() {
    let cluster = Cluster::start_default().await.unwrap();
    let dir = cluster.data_dir().parent().unwrap().to_owned();
    let port = cluster.port();
    drop(cluster);
    assert!(!dir.exists(), "{} should be gone", dir.display());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "nothing may listen on {port} any more"
    );
}
