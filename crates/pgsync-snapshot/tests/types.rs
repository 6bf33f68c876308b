//! Every built-in type with a text form arrives bit-exact, through the binary pipe (same
//! major version) and through the text pipe (PostgreSQL 15 to 18).

mod common;

use common::{checksums, endpoint, export_snapshot};
use pgsync_snapshot::{FullSync, SyncOptions};
use pgsync_testkit::{Cluster, PgBinaries};

const TYPES: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN short_text AS varchar(20) CHECK (VALUE <> '');
CREATE TYPE pair AS (x integer, label text, at timestamptz);
CREATE TABLE every_type (
    id integer PRIMARY KEY,
    i2 smallint, i4 integer, i8 bigint, num numeric, num_s numeric(20,6),
    f4 real, f8 double precision, money_v money, bool_v boolean,
    ch char(5), vc varchar(10), txt text, qchar "char", nm name, big text,
    by bytea, uid uuid, js json, jsb jsonb, x xml,
    d date, t time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
    ip inet, net cidr, mac macaddr, mac8 macaddr8,
    b bit(4), vb varbit,
    pt point, ln line, ls lseg, bx box, pth path, pg polygon, ci circle,
    tsv tsvector, tsq tsquery, lsn pg_lsn, o oid, rc regclass,
    ir int4range, nr numrange, tr tstzrange, dr daterange, mr int4multirange,
    ia integer[], ta text[], fa double precision[], na numeric[][], nested_null integer[],
    e mood, dom short_text, comp pair, comp_a pair[]
);
INSERT INTO every_type VALUES
 (1, -32768, -2147483648, -9223372036854775808, 'NaN', 123456.000001,
  'NaN', 'NaN', '-92233720368547758.08', true,
  'ab', 'x', E'tab\there "q" \\ back', 'q', 'name', repeat('toast me ', 200000),
  '\x00ff10', '00000000-0000-0000-0000-000000000000', '{"a": [1, 2.50, "x"], "b": null}', '{"z": 1, "a": [true, {"n": 1.0}]}', '<a x="1">t</a>',
  '-infinity', '00:00:00', '23:59:59.999999+14', '-infinity', '-infinity', '-178000000 years -1 microsecond',
  '::1', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',
  B'1010', B'',
  '(1.5,-2)', '{1,-1,0}', '[(0,0),(1,1)]', '(1,1),(0,0)', '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(1,0))', '<(0,0),2>',
  'a:1 fat:2B cat', 'fat & (rat | !cat)', '0/0', 0, 'pg_class',
  'empty', '(,)', '[-infinity,infinity)', '[2024-01-01,2024-02-01)', '{[1,3), [5,7)}',
  '{1,NULL,3}', '{"", "a,b", "{}", "NULL", null}', '{NaN,Infinity,-Infinity,-0,1e-300}', '{{1.5,2},{NaN,-0.0}}', NULL,
  'happy', 'short', ROW(1, 'it''s', 'infinity'), ARRAY[ROW(2, NULL, NULL)::pair, NULL]),
 (2, 32767, 2147483647, 9223372036854775807, '-0.000000000000000000000000000001', -0.5,
  '-0', '-0', '92233720368547758.07', false,
  '     ', '', '', E'\\001', '', 'small',
  '', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '[]', '"\u00e9 \\u0000 x"'::text::jsonb, '',
  'infinity', '24:00:00', '00:00:00-15:59', 'infinity', 'infinity', '1 day -1 second',
  'ffff::1/128', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', 'ff:ff:ff:ff:ff:ff:ff:ff',
  B'0000', B'1',
  '(1e-300,1e300)', '{0,1,-5}', '[(1e10,1),(2,2)]', '(0,0),(0,0)', '((0,0),(1,1))', '((0,0))', '<(1,1),0>',
  '', 'a:*', 'FFFFFFFF/FFFFFFFF', 4294967295, '-',
  '[1,2)', '[0.1,0.2]', 'empty', 'empty', '{}',
  '{}', '{}', '{-0}', '{}', '{NULL}',
  'sad', 'x', ROW(NULL, NULL, NULL), '{}'),
 (3, 0, 0, 0, 'Infinity', NULL,
  'Infinity', '-Infinity', 0, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, 'null', 'null', NULL,
  '2000-02-29', '12:34:56.789', NULL, '2000-02-29 12:34:56.123456', '1999-12-31 23:59:59.999999+01', '-1 mons +1 day',
  NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, '{1.7976931348623157e308,4.9e-324,3.14159265358979}', NULL, NULL,
  NULL, NULL, NULL, NULL);
"#;

/// Floats and numerics compared by their binary send form, which text equality alone
/// would not prove for -0 and NaN payloads.
const BITS: &str = "SELECT md5(string_agg(concat_ws('|', id, encode(float4send(f4), 'hex'),
    encode(float8send(f8), 'hex'), encode(numeric_send(num), 'hex'), encode(numeric_send(num_s), 'hex'),
    encode(array_send(fa), 'hex'), encode(byteasend(by), 'hex'), md5(big)), ',' ORDER BY id)) FROM every_type";

async fn sync_types(src: &Cluster, dst: &Cluster) -> anyhow::Result<()> {
    src.client().await?.batch_execute(TYPES).await?;
    let exported = export_snapshot(src).await?;
    let report = FullSync::new(endpoint(src), endpoint(dst), SyncOptions::new("types"))
        .start(&exported.name)
        .finish()
        .await?;
    assert_eq!(report.copy.rows, 3);
    let (a, b) = (src.client().await?, dst.client().await?);
    assert_eq!(checksums(&a, None).await?, checksums(&b, None).await?);
    let bits = |c: tokio_postgres::Client| async move {
        anyhow::Ok(c.query_one(BITS, &[]).await?.get::<_, String>(0))
    };
    assert_eq!(bits(a).await?, bits(b).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_type_arrives_bit_exact_through_binary_copy() -> anyhow::Result<()> {
    let (src, dst) = common::pair().await?;
    sync_types(&src, &dst).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_type_arrives_bit_exact_through_text_copy_across_major_versions()
-> anyhow::Result<()> {
    let pg15 = PgBinaries::from_dir("/usr/lib/postgresql/15/bin")?;
    let pg18 = PgBinaries::from_dir(
        "/var/cache/pgsync/pg18/server/postgresql-18.6.0-x86_64-unknown-linux-gnu/bin",
    )?;
    let (src, dst) = tokio::try_join!(
        Cluster::builder().binaries(pg15).database("app").start(),
        Cluster::builder().binaries(pg18).database("app").start()
    )?;
    assert_ne!(src.major(), dst.major());
    sync_types(&src, &dst).await
}
