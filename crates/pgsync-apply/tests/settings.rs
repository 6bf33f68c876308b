//! Values arrive exactly even when the source prints dates, intervals and floats its own
//! way: the replication session fixes those settings, and the apply session reads the
//! values back with the same ones.

use std::time::Duration;

use pgsync_apply::{Applier, ApplierConfig};
use pgsync_testkit::Cluster;
use pgsync_wal::txn::{Assembled, Assembler, AssemblerConfig};
use pgsync_wal::{
    CreateSlot, Lsn, ReplicationConfig, ReplicationConnection, SlotSnapshot, StartOptions,
};

const TABLE: &str =
    "CREATE TABLE v (id int PRIMARY KEY, d date, ts timestamp, tz timestamptz, iv interval,
                     f4 real, f8 float8, b bytea, t time, m money)";

#[tokio::test]
async fn unusual_source_settings_do_not_change_any_value() {
    let (a, b) = tokio::try_join!(
        Cluster::builder()
            .database("db")
            .setting("datestyle", "SQL, DMY")
            .setting("intervalstyle", "iso_8601")
            .setting("extra_float_digits", "-3")
            .setting("bytea_output", "escape")
            .setting("timezone", "Asia/Kolkata")
            .start(),
        Cluster::builder()
            .database("db")
            .setting("timezone", "America/Caracas")
            .start()
    )
    .unwrap();
    let (ca, cb) = (a.client().await.unwrap(), b.client().await.unwrap());
    ca.batch_execute(TABLE).await.unwrap();
    cb.batch_execute(TABLE).await.unwrap();
    ca.batch_execute("CREATE PUBLICATION p FOR TABLE v")
        .await
        .unwrap();
    let cfg = ReplicationConfig::parse(&a.dsn()).unwrap();
    let mut conn = ReplicationConnection::connect(&cfg).await.unwrap();
    conn.create_slot(&CreateSlot::new("s").snapshot(SlotSnapshot::Nothing))
        .await
        .unwrap();
    conn.close().await.unwrap();
    ca.batch_execute(
        "INSERT INTO v VALUES
           (1, '2026-02-03', '2026-02-03 04:05:06.789012', '2026-02-03 04:05:06.789012+05:30', '1 year 2 mons -3 days 04:05:06.5',
            3.4028235e38, 0.1, '\\x00ff5c27', '23:59:59.999999', 12.34),
           (2, '0044-03-15 BC', '-infinity', 'infinity', '-178000000 years', '-0', 1.7976931348623157e308, '', '00:00', -0.01),
           (3, NULL, NULL, NULL, NULL, 'NaN', 4.9e-324, NULL, NULL, NULL)",
    )
    .await
    .unwrap();
    let target: Lsn = ca
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get::<_, &str>(0)
        .parse()
        .unwrap();

    let mut applier = Applier::new(b.client().await.unwrap(), ApplierConfig::new("o"))
        .await
        .unwrap();
    let mut stream = ReplicationConnection::connect(&cfg)
        .await
        .unwrap()
        .start_replication(&StartOptions::new("s", ["p"]))
        .await
        .unwrap();
    let mut assembler = Assembler::new(AssemblerConfig::default());
    while applier.progress() < target {
        let data = tokio::time::timeout(Duration::from_secs(30), stream.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(Assembled::Transaction(t)) = assembler.push_payload(&data.data).unwrap() {
            applier.apply(std::slice::from_ref(&t)).await.unwrap();
        }
    }
    stream.stop().await.unwrap();

    // Compared in a neutral format on both sides (bit patterns for floats).
    let q = "SET datestyle = 'ISO'; SET intervalstyle = 'postgres'; SET timezone = 'UTC'; SET extra_float_digits = 3; SET bytea_output = 'hex';";
    ca.batch_execute(q).await.unwrap();
    cb.batch_execute(q).await.unwrap();
    let dump = "SELECT string_agg(concat_ws('|', id, d, ts, tz, iv, float4send(f4), float8send(f8), b, t, m::numeric), E'\\n' ORDER BY id) FROM v";
    let x: String = ca.query_one(dump, &[]).await.unwrap().get(0);
    let y: String = cb.query_one(dump, &[]).await.unwrap().get(0);
    assert_eq!(x, y);
}
