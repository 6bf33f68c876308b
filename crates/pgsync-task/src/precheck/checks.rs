//! The checks themselves: catalog queries and settings, one function per concern.

use std::collections::BTreeSet;

use pgsync_names::QualifiedName;
use pgsync_names::sql::quote_literal;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::report::{Report, Side};
use super::{objects, server};
use crate::endpoint::Endpoint;
use crate::names::{Direction, TaskNames};
use crate::spec::{ExistingTables, TaskSpec};

/// Oldest supported server: pgoutput protocol 2 (streaming of large transactions).
const MIN_VERSION_NUM: i32 = 140000;

/// A selected source table as the checks need it.
#[derive(Debug)]
struct SourceTable {
    name: QualifiedName,
    partitioned: bool,
    /// A partition: its rows arrive through the root, which alone must exist on the
    /// destination (its partitions there may differ).
    partition: bool,
    replica_identity: u8,
    has_pk: bool,
}

/// Runs every check against both sides. Connection failures are items, not errors.
pub async fn run(spec: &TaskSpec) -> Report {
    let mut report = Report::default();
    let source = connect(&mut report, Side::Source, &spec.source).await;
    let destination = connect(&mut report, Side::Destination, &spec.destination).await;
    let mut selected = Vec::new();
    if let Some(a) = &source {
        selected = check_source(&mut report, spec, a)
            .await
            .unwrap_or_else(|e| {
                report.fail(
                    Side::Source,
                    "catalog",
                    describe(&e),
                    "see the server log of the source",
                );
                Vec::new()
            });
    }
    if let Some(b) = &destination
        && let Err(e) = check_destination(&mut report, spec, b, &selected).await
    {
        report.fail(
            Side::Destination,
            "catalog",
            describe(&e),
            "see the server log of the destination",
        );
    }
    if let (Some(a), Some(b)) = (&source, &destination)
        && let Err(e) = server::two_way_sequences(&mut report, spec, a, b).await
    {
        report.fail(
            Side::Destination,
            "catalog",
            describe(&e),
            "see the server logs",
        );
    }
    report
}

async fn connect(report: &mut Report, side: Side, ep: &Endpoint) -> Option<Client> {
    match ep.connect().await {
        Ok(c) => {
            report.pass(side, "connect", format!("connected to {}", ep.describe()));
            Some(c)
        }
        Err(e) => {
            let fix = match e.code() {
                Some(c) if *c == SqlState::INVALID_PASSWORD => {
                    "check the password: password= in the DSN, PGPASSWORD, or ~/.pgpass (mode 0600)"
                        .to_owned()
                }
                Some(c)
                    if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                        && describe(&e).contains("no encryption") =>
                {
                    format!(
                        "the server accepts only TLS connections from here (hostssl in \
                         pg_hba.conf) and the DSN has sslmode={}: set sslmode=verify-full with \
                         sslrootcert=<CA file> (or sslmode=require)",
                        ep.conninfo().get_ssl_mode()
                    )
                }
                Some(c) if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
                    "check the user name, and that pg_hba.conf allows it from this host".to_owned()
                }
                None if describe(&e).contains("TLS") => format!(
                    "the DSN asks for TLS (sslmode={}): turn ssl on in the server, or correct \
                     host, sslmode or sslrootcert as the message says",
                    ep.conninfo().get_ssl_mode()
                ),
                Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
                    format!("create database {} or fix dbname in the DSN", ep.dbname())
                }
                _ => format!(
                    "check that the server at {} is running and reachable (listen_addresses, port, pg_hba.conf)",
                    ep.describe()
                ),
            };
            report.fail(
                side,
                "connect",
                format!("cannot connect to {}: {}", ep.describe(), describe(&e)),
                fix,
            );
            None
        }
    }
}

async fn check_source(
    report: &mut Report,
    spec: &TaskSpec,
    a: &Client,
) -> Result<Vec<SourceTable>, tokio_postgres::Error> {
    let side = Side::Source;
    check_version(report, side, a).await?;
    check_wal_level(report, side, a).await?;
    check_replication_role(report, side, a).await?;
    check_ddl_capture(report, spec, a).await?;
    check_slot(
        report,
        side,
        a,
        &TaskNames::new(&spec.name, Direction::Forward).slot,
    )
    .await?;
    check_capacity(report, side, a).await?;
    server::wal_keep(report, side, a).await?;
    server::transport(report, side, &spec.source, a).await?;
    if spec.sync.two_way {
        server::free_origins(report, side, spec, a).await?;
    }

    let tables = selected_tables(spec, a).await?;
    let names: BTreeSet<&QualifiedName> = tables.iter().map(|t| &t.name).collect();
    let missing: Vec<String> = spec
        .objects
        .include
        .iter()
        .filter_map(|p| p.literal())
        .filter(|t| !names.contains(t))
        .map(|t| t.to_string())
        .collect();
    if !missing.is_empty() {
        report.fail(
            side,
            "tables_exist",
            format!(
                "objects.include names tables that do not exist: {}",
                missing.join(", ")
            ),
            "fix the names in objects.include (schema.table, case-sensitive when quoted)",
        );
    } else if tables.is_empty() {
        report.fail(
            side,
            "tables_exist",
            "objects.include selects no table",
            "include at least one table, e.g. \"public.*\"",
        );
    } else {
        report.pass(
            side,
            "tables_exist",
            format!("{} tables selected", tables.len()),
        );
    }

    let no_identity: Vec<String> = tables
        .iter()
        .filter(|t| {
            !(t.partitioned || t.has_pk || t.replica_identity == b'f' || t.replica_identity == b'i')
        })
        .map(|t| t.name.to_string())
        .collect();
    if no_identity.is_empty() {
        report.pass(
            side,
            "replica_identity",
            "every selected table has a primary key or replica identity",
        );
    } else {
        report.fail(
            side,
            "replica_identity",
            format!("tables without primary key or replica identity (their UPDATEs and DELETEs cannot be replicated): {}", list(&no_identity)),
            format!(
                "add a primary key, or run pgsync precheck --fix (it sets REPLICA IDENTITY FULL:                  ALTER TABLE {} REPLICA IDENTITY FULL, and so on)",
                no_identity[0]
            ),
        );
    }
    objects::run(report, spec, a).await?;
    Ok(tables)
}

async fn check_destination(
    report: &mut Report,
    spec: &TaskSpec,
    b: &Client,
    selected: &[SourceTable],
) -> Result<(), tokio_postgres::Error> {
    let side = Side::Destination;
    check_version(report, side, b).await?;
    if spec.sync.two_way {
        check_reverse_bootstrap(report, b).await?;
        check_wal_level(report, side, b).await?;
        check_replication_role(report, side, b).await?;
        check_slot(
            report,
            side,
            b,
            &TaskNames::new(&spec.name, Direction::Reverse).slot,
        )
        .await?;
        check_capacity(report, side, b).await?;
        server::wal_keep(report, side, b).await?;
    }
    server::transport(report, side, &spec.destination, b).await?;
    server::free_origins(report, side, spec, b).await?;
    check_apply_privileges(report, b).await?;
    if spec
        .sync
        .conflict_policies()
        .is_ok_and(|p| p.uses_last_write_wins())
    {
        check_commit_timestamps(report, side, b).await?;
    }

    // A task that already started made (or kept) its tables itself: it resumes.
    let has_state: bool = b
        .query_one("SELECT to_regclass('pgsync.tasks') IS NOT NULL", &[])
        .await?
        .get(0);
    let started: Option<String> = if has_state {
        b.query_one(
            "SELECT max(phase) FROM pgsync.tasks WHERE task = $1",
            &[&spec.name],
        )
        .await?
        .get(0)
    } else {
        None
    };
    if let Some(phase) = started {
        report.pass(
            side,
            "existing_tables",
            format!(
                "task {} already started here (phase {phase}); it resumes",
                spec.name
            ),
        );
        return Ok(());
    }
    let rows = b
        .query(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p')",
            &[],
        )
        .await?;
    let existing: BTreeSet<QualifiedName> = rows
        .iter()
        .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    let mapped: Vec<QualifiedName> = selected
        .iter()
        .filter(|t| !t.partition)
        .map(|t| spec.mapping.table(&t.name))
        .collect();
    let clashing: Vec<String> = mapped
        .iter()
        .filter(|t| existing.contains(t))
        .map(|t| t.to_string())
        .collect();
    let absent: Vec<String> = mapped
        .iter()
        .filter(|t| !existing.contains(t))
        .map(|t| t.to_string())
        .collect();
    match (spec.sync.schema, spec.sync.existing_tables) {
        (true, _) if clashing.is_empty() => {
            report.pass(side, "existing_tables", "none of the selected tables exists yet");
        }
        (true, ExistingTables::Error) => report.fail(
            side,
            "existing_tables",
            format!("selected tables already exist on the destination: {}", list(&clashing)),
            "drop them, exclude them, or set sync.existing_tables = \"ignore\" to keep them and their rows",
        ),
        (true, ExistingTables::Ignore) => report.warn(
            side,
            "existing_tables",
            format!("these tables exist and will be kept as they are: {}", list(&clashing)),
            "make sure their columns match the source; on a key clash the destination row is kept",
        ),
        (false, _) if absent.is_empty() => {
            report.pass(side, "existing_tables", "every selected table exists (schema sync is off)");
        }
        (false, _) => report.fail(
            side,
            "existing_tables",
            format!("schema sync is off, but these tables are missing: {}", list(&absent)),
            "create them, or set sync.schema = true",
        ),
    }
    Ok(())
}

/// Two-way: the reverse publication can cover tables from their creation on only when it
/// is `FOR ALL TABLES`, which needs a superuser on B.
async fn check_reverse_bootstrap(
    report: &mut Report,
    b: &Client,
) -> Result<(), tokio_postgres::Error> {
    let side = Side::Destination;
    let superuser: bool = b
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?
        .get(0);
    if superuser {
        report.pass(
            side,
            "reverse_bootstrap",
            "the reverse publication covers every table from the start",
        );
    } else {
        report.warn(
            side,
            "reverse_bootstrap",
            "not a superuser on the destination: rows written there to tables the schema sync creates,              before the initial copy ends, will not reach the source",
            "connect to the destination as a superuser, or keep applications off it until the task streams",
        );
    }
    Ok(())
}

async fn check_commit_timestamps(
    report: &mut Report,
    side: Side,
    c: &Client,
) -> Result<(), tokio_postgres::Error> {
    let on: String = c
        .query_one("SHOW track_commit_timestamp", &[])
        .await?
        .get(0);
    if on == "on" {
        report.pass(
            side,
            "commit_timestamps",
            "track_commit_timestamp = on (last_write_wins can compare commit times)",
        );
    } else {
        report.fail(
            side,
            "commit_timestamps",
            "last_write_wins needs the commit time of local rows, but track_commit_timestamp = off",
            "ALTER SYSTEM SET track_commit_timestamp = on; then restart the server",
        );
    }
    Ok(())
}

async fn check_version(
    report: &mut Report,
    side: Side,
    c: &Client,
) -> Result<(), tokio_postgres::Error> {
    let row = c
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version')",
            &[],
        )
        .await?;
    let (num, text): (i32, String) = (row.get(0), row.get(1));
    if num >= MIN_VERSION_NUM {
        report.pass(side, "version", format!("PostgreSQL {text}"));
    } else {
        report.fail(
            side,
            "version",
            format!("PostgreSQL {text} is too old"),
            "upgrade to PostgreSQL 14 or newer",
        );
    }
    Ok(())
}

async fn check_wal_level(
    report: &mut Report,
    side: Side,
    c: &Client,
) -> Result<(), tokio_postgres::Error> {
    let level: String = c.query_one("SHOW wal_level", &[]).await?.get(0);
    if level == "logical" {
        report.pass(side, "wal_level", "wal_level = logical");
    } else {
        report.fail(
            side,
            "wal_level",
            format!("wal_level = {level}: changes cannot be decoded"),
            "ALTER SYSTEM SET wal_level = logical; then restart the server",
        );
    }
    Ok(())
}

/// DDL sync installs event triggers on the source, which only a superuser may create.
async fn check_ddl_capture(
    report: &mut Report,
    spec: &TaskSpec,
    a: &Client,
) -> Result<(), tokio_postgres::Error> {
    if !spec.sync.ddl {
        return Ok(());
    }
    let superuser: bool = a
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?
        .get(0);
    if superuser {
        report.pass(
            Side::Source,
            "ddl_capture",
            "DDL capture (event triggers) can be installed",
        );
    } else {
        report.fail(
            Side::Source,
            "ddl_capture",
            "sync.ddl = true installs event triggers on the source, which needs a superuser",
            "connect to the source as a superuser, or set sync.ddl = false",
        );
    }
    Ok(())
}

async fn check_replication_role(
    report: &mut Report,
    side: Side,
    c: &Client,
) -> Result<(), tokio_postgres::Error> {
    let row = c.query_one("SELECT current_user::text, rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user", &[]).await?;
    let (user, superuser, replication): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
    if superuser {
        report.pass(side, "privileges", format!("{user} is a superuser"));
    } else if replication {
        report.warn(
            side,
            "privileges",
            format!("{user} has REPLICATION but is not a superuser: DDL capture (event triggers) needs a superuser"),
            "use a superuser, or set sync.ddl = false",
        );
    } else {
        report.fail(
            side,
            "privileges",
            format!("{user} may not read the replication stream"),
            format!(
                "ALTER ROLE {} REPLICATION (or use a superuser)",
                pgsync_names::sql::quote_ident(&user)
            ),
        );
    }
    Ok(())
}

async fn check_slot(
    report: &mut Report,
    side: Side,
    c: &Client,
    slot: &str,
) -> Result<(), tokio_postgres::Error> {
    let sql = format!(
        "SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = {}",
        quote_literal(slot)
    );
    match c.query_opt(&sql, &[]).await? {
        None => report.pass(side, "slot", format!("slot {slot} will be created")),
        Some(r) if r.get::<_, bool>(0) => report.fail(
            side,
            "slot",
            format!("slot {slot} is in use by process {}: is this task already running elsewhere?", r.get::<_, Option<i32>>(1).unwrap_or(0)),
            "stop the other pgsync, or wait for it; a stuck session can be ended with pg_terminate_backend(pid)",
        ),
        Some(_) => report.pass(side, "slot", format!("slot {slot} exists; the task resumes from it")),
    }
    Ok(())
}

async fn check_capacity(
    report: &mut Report,
    side: Side,
    c: &Client,
) -> Result<(), tokio_postgres::Error> {
    let row = c
        .query_one(
            "SELECT current_setting('max_replication_slots')::int,
                    (SELECT count(*) FROM pg_replication_slots)::int,
                    current_setting('max_wal_senders')::int,
                    (SELECT count(*) FROM pg_stat_replication)::int",
            &[],
        )
        .await?;
    let (max_slots, slots, max_senders, senders): (i32, i32, i32, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if slots >= max_slots {
        report.fail(
            side,
            "free_slots",
            format!("all {max_slots} replication slots are taken"),
            "drop unused slots (SELECT pg_drop_replication_slot(name) for inactive ones in pg_replication_slots) or raise max_replication_slots and restart",
        );
    } else {
        report.pass(
            side,
            "free_slots",
            format!(
                "{} of {max_slots} replication slots free",
                max_slots - slots
            ),
        );
    }
    if senders >= max_senders {
        report.fail(
            side,
            "free_senders",
            format!("all {max_senders} WAL senders are busy"),
            "raise max_wal_senders and restart",
        );
    } else {
        report.pass(
            side,
            "free_senders",
            format!(
                "{} of {max_senders} WAL senders free",
                max_senders - senders
            ),
        );
    }
    Ok(())
}

async fn check_apply_privileges(
    report: &mut Report,
    b: &Client,
) -> Result<(), tokio_postgres::Error> {
    let side = Side::Destination;
    let row = b
        .query_one(
            "SELECT current_user::text, rolsuper, has_database_privilege(current_database(), 'CREATE'),
                    has_function_privilege('pg_replication_origin_session_setup(text)', 'EXECUTE')
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?;
    let (user, superuser, create, origins): (String, bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if superuser {
        report.pass(side, "privileges", format!("{user} is a superuser"));
        return Ok(());
    }
    let mut missing = Vec::new();
    if !create {
        missing.push("CREATE on the database (for schema pgsync)");
    }
    if !origins {
        missing.push("EXECUTE on the pg_replication_origin_* functions");
    }
    let replica_role: bool = b
        .query_one(
            "SELECT CASE WHEN current_setting('server_version_num')::int >= 150000
                    THEN has_parameter_privilege('session_replication_role', 'SET') ELSE false END",
            &[],
        )
        .await?
        .get(0);
    if !replica_role {
        missing.push(
            "SET on session_replication_role (triggers and FK checks would fire on applied rows)",
        );
    }
    if missing.is_empty() {
        report.pass(
            side,
            "privileges",
            format!("{user} has the privileges applying needs"),
        );
    } else {
        report.fail(
            side,
            "privileges",
            format!("{user} lacks: {}", missing.join("; ")),
            "use a superuser, or GRANT the missing privileges (GRANT SET ON PARAMETER session_replication_role TO ...; GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) TO ...)",
        );
    }
    Ok(())
}

async fn selected_tables(
    spec: &TaskSpec,
    a: &Client,
) -> Result<Vec<SourceTable>, tokio_postgres::Error> {
    let rows = a
        .query(
            "SELECT n.nspname, c.relname, c.relkind = 'p', c.relreplident::text,
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                    c.relispartition
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgsync')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
             ORDER BY 1, 2",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| SourceTable {
            name: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            partitioned: r.get(2),
            replica_identity: r.get::<_, String>(3).bytes().next().unwrap_or(b'd'),
            has_pk: r.get(4),
            partition: r.get(5),
        })
        .filter(|t| spec.objects.contains(&t.name))
        .collect())
}

/// Up to ten names, then a count.
pub(super) fn list(names: &[String]) -> String {
    let mut out = names
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 10 {
        out.push_str(&format!(" and {} more", names.len() - 10));
    }
    out
}

/// The server's message and SQLSTATE, or the I/O cause: never the DSN.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
