//! Server-wide checks: replication origins left, how much WAL a slot may hold, how the
//! connection is secured, and (two-way) sequences that would hand out the same values
//! on both sides.

use pgsync_names::QualifiedName;
use tokio_postgres::Client;

use super::checks::list;
use super::report::{Report, Side};
use crate::endpoint::Endpoint;
use crate::names::{Direction, TaskNames};
use crate::spec::TaskSpec;

/// Replication origins: the applier's own, plus one per copy worker in two-way sync.
/// The limit is `max_active_replication_origins` on 18+, `max_replication_slots` before.
pub(super) async fn free_origins(
    report: &mut Report,
    side: Side,
    spec: &TaskSpec,
    c: &Client,
) -> Result<(), tokio_postgres::Error> {
    let direction = match side {
        Side::Destination => Direction::Forward,
        Side::Source => Direction::Reverse,
    };
    let origin = TaskNames::new(&spec.name, direction).origin;
    let mut wanted = vec![origin.clone()];
    if spec.sync.two_way && direction == Direction::Forward {
        wanted.extend((0..spec.sync.copy_workers).map(|i| format!("{origin}_{i}")));
    }
    let row = c
        .query_one(
            "SELECT CASE WHEN current_setting('server_version_num')::int >= 180000
                         THEN 'max_active_replication_origins' ELSE 'max_replication_slots' END,
                    (SELECT count(*)::int FROM unnest($1::text[]) n
                      WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = n)),
                    has_table_privilege('pg_replication_origin_status', 'SELECT')",
            &[&wanted],
        )
        .await?;
    let (setting, needed, can_see): (String, i32, bool) = (row.get(0), row.get(1), row.get(2));
    // The states in use; without the privilege to see them, every origin counts as one.
    let in_use: i32 = c
        .query_one(
            if can_see {
                "SELECT count(*)::int FROM pg_replication_origin_status"
            } else {
                "SELECT count(*)::int FROM pg_replication_origin"
            },
            &[],
        )
        .await?
        .get(0);
    let limit: i32 = c
        .query_one(&format!("SELECT current_setting('{setting}')::int"), &[])
        .await?
        .get(0);
    let free = limit - in_use;
    if free < needed {
        report.fail(
            side,
            "free_origins",
            format!(
                "{free} of {limit} replication origins free, the task needs {needed} more \
                 ({setting})"
            ),
            format!(
                "ALTER SYSTEM SET {setting} = {}; then restart the server (or drop unused \
                 origins: SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin \
                 WHERE ..)",
                in_use + needed + 4
            ),
        );
    } else {
        report.pass(
            side,
            "free_origins",
            format!("{free} of {limit} replication origins free ({needed} needed)"),
        );
    }
    Ok(())
}

/// `max_slot_wal_keep_size`: unlimited lets a stopped task's slot fill the disk; a small
/// limit may invalidate the slot during a long copy.
pub(super) async fn wal_keep(
    report: &mut Report,
    side: Side,
    c: &Client,
) -> Result<(), tokio_postgres::Error> {
    let row = c
        .query_one(
            "SELECT current_setting('max_slot_wal_keep_size'),
                    pg_size_bytes(current_setting('max_slot_wal_keep_size'))",
            &[],
        )
        .await?;
    let (text, bytes): (String, i64) = (row.get(0), row.get(1));
    let fix = "ALTER SYSTEM SET max_slot_wal_keep_size = '100GB'; SELECT pg_reload_conf(); \
               (the most WAL a stopped task may hold; past it the slot is invalidated and the \
               task must be released and started again)";
    if bytes < 0 {
        report.warn(
            side,
            "wal_keep",
            "max_slot_wal_keep_size = -1: a stopped task's slot keeps WAL until the disk is full",
            fix,
        );
    } else if bytes < 1 << 30 {
        report.warn(
            side,
            "wal_keep",
            format!(
                "max_slot_wal_keep_size = {text}: a busy server may invalidate the slot during \
                 the initial copy"
            ),
            fix,
        );
    } else {
        report.pass(
            side,
            "wal_keep",
            format!("max_slot_wal_keep_size = {text} bounds the WAL a slot holds"),
        );
    }
    Ok(())
}

/// Whether the session is encrypted (as the server sees it, `pg_stat_ssl`): clear text is
/// fine over a Unix socket or the loopback interface and worth a warning across a network,
/// as is TLS that does not check who the server is. Passwords stored as md5 are warned
/// about as well.
pub(super) async fn transport(
    report: &mut Report,
    side: Side,
    ep: &Endpoint,
    c: &Client,
) -> Result<(), tokio_postgres::Error> {
    let row = c
        .query_one(
            "SELECT coalesce((SELECT ssl FROM pg_catalog.pg_stat_ssl \
                              WHERE pid = pg_catalog.pg_backend_pid()), false), \
                    pg_catalog.current_setting('password_encryption')",
            &[],
        )
        .await?;
    let (tls, encryption): (bool, String) = (row.get(0), row.get(1));
    let info = ep.conninfo();
    let mode = info.get_ssl_mode();
    let fix_tls = "set sslmode=verify-full and sslrootcert=<file of the CA that signed the \
                   server certificate> in the DSN (the server needs ssl = on)";
    if info.is_remote() && !tls {
        report.warn(
            side,
            "transport",
            format!(
                "the connection to {} is not encrypted (sslmode={mode})",
                ep.describe()
            ),
            format!("{fix_tls}, or reach it through an encrypted tunnel"),
        );
    } else if info.is_remote() && !mode.verifies() {
        report.warn(
            side,
            "transport",
            format!(
                "the connection to {} is encrypted but the server is not verified \
                 (sslmode={mode})",
                ep.describe()
            ),
            fix_tls,
        );
    } else if encryption == "md5" {
        report.warn(
            side,
            "transport",
            "password_encryption = md5: new passwords are stored as MD5 hashes",
            "ALTER SYSTEM SET password_encryption = 'scram-sha-256'; SELECT pg_reload_conf(); \
             then set the task user's password again (and use scram-sha-256 in pg_hba.conf)",
        );
    } else {
        let how = if tls {
            format!("TLS (sslmode={mode})")
        } else {
            "local connection".to_owned()
        };
        report.pass(
            side,
            "transport",
            format!("{how}; password_encryption = {encryption}"),
        );
    }
    Ok(())
}

/// A sequence feeding keys of a selected table, with its step and position.
#[derive(Debug)]
struct Seq {
    name: QualifiedName,
    increment: i64,
    position: i64,
}

async fn owned_sequences(c: &Client) -> Result<Vec<(QualifiedName, Seq)>, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT tn.nspname::text, t.relname::text, s.schemaname::text, s.sequencename::text,
                    s.increment_by, COALESCE(s.last_value, s.start_value)
             FROM pg_depend d JOIN pg_class sc ON sc.oid = d.objid AND sc.relkind = 'S'
             JOIN pg_namespace sn ON sn.oid = sc.relnamespace
             JOIN pg_sequences s ON s.schemaname = sn.nspname AND s.sequencename = sc.relname
             JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
               AND d.deptype IN ('a', 'i')
             ORDER BY 3, 4",
            &[],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let name = QualifiedName::new(r.get::<_, String>(2), r.get::<_, String>(3));
        // The value it hands out next (a RESTART shows here, not in pg_sequences).
        let position: i64 = c
            .query_one(&format!("SELECT last_value FROM {name}"), &[])
            .await
            .map_or_else(|_| r.get(5), |row| row.get(0));
        out.push((
            QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            Seq {
                name,
                increment: r.get(4),
                position,
            },
        ));
    }
    Ok(out)
}

/// Two-way: both sides insert; sequence-fed keys collide unless each side hands out its
/// own values (same step above 1, different remainders: odd/even).
pub(super) async fn two_way_sequences(
    report: &mut Report,
    spec: &TaskSpec,
    a: &Client,
    b: &Client,
) -> Result<(), tokio_postgres::Error> {
    if !spec.sync.two_way {
        return Ok(());
    }
    let on_b = owned_sequences(b).await?;
    let mut same = Vec::new();
    let mut checked = 0;
    for (table, sa) in owned_sequences(a).await? {
        if !spec.objects.contains(&table) {
            continue;
        }
        checked += 1;
        let dest_table = spec.mapping.table(&table);
        let sb = on_b
            .iter()
            .find(|(t, s)| t == &dest_table && s.name.name == spec.mapping.table(&sa.name).name)
            .map(|(_, s)| s);
        let disjoint = sb.is_some_and(|sb| {
            sb.increment == sa.increment
                && sa.increment.abs() > 1
                && sa.position.rem_euclid(sa.increment) != sb.position.rem_euclid(sb.increment)
        });
        if !disjoint {
            same.push(sa.name.to_string());
        }
    }
    if same.is_empty() {
        report.pass(
            Side::Destination,
            "two_way_sequences",
            format!("{checked} sequences hand out different values on each side"),
        );
    } else {
        report.warn(
            Side::Destination,
            "two_way_sequences",
            format!(
                "both sides would hand out the same values from: {} (inserts on both sides \
                 then clash on their keys)",
                list(&same)
            ),
            format!(
                "give each side its own values: on the source ALTER SEQUENCE {0} INCREMENT BY 2 \
                 RESTART WITH <an odd value above the current one>, on the destination (after \
                 the initial copy) ALTER SEQUENCE {0} INCREMENT BY 2 RESTART WITH <an even \
                 one>; or use keys that cannot clash (UUIDs)",
                same[0]
            ),
        );
    }
    Ok(())
}
