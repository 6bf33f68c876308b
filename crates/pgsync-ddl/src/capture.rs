//! DDL capture on the source: event triggers that put each DDL statement into the WAL as
//! a transactional logical message, at its exact place among the rows.
//!
//! ```text
//!  DDL statement ─ sql_drop ───────────> pgsync.ddl_on_drop()  dropped objects, kept in a
//!        │                                                     transaction-local setting
//!        └────── ddl_command_end ──────> pgsync.ddl_on_end()   commands + dropped objects
//!                                          │  pgsync.ddl_track()  (SECURITY DEFINER)
//!                                          │     new selected tables join the tasks'
//!                                          │     publications; renames and dropped
//!                                          │     columns are written down (two-way)
//!                                          └─ pgsync.ddl_emit()   (SECURITY DEFINER)
//!                                                pg_logical_emit_message(true, 'pgsync.ddl', json)
//! ```
//! One trigger pair serves every task of the source database (a second pair would put
//! every statement into the WAL twice, and every task's stream receives every message);
//! tasks register in `pgsync.ddl_tasks` with their publication and selection, and the
//! triggers go with the last task.
//!
//! Privileges: the trigger functions are SECURITY DEFINER, as they must work whoever runs
//! the DDL (writing pgsync's history, altering the publication, emitting a message that
//! needs REPLICATION). They read the author's session first (`current_query()`,
//! `current_schemas`, `session_user`), then pin `search_path` to `pg_catalog` for their own
//! work (so nothing the author defines can stand in for a function or operator) and put
//! the author's back before returning. The helpers they call are not executable by
//! PUBLIC: a message they emit makes the destination run its text, so only the triggers
//! and the roles an administrator grants (`pgsync.replicate_ddl` is for superusers by
//! default) may emit one.
//!
//! Which statement of a multi-statement query fired: the trigger counts, per command tag,
//! the statements it saw for the same query text and `statement_timestamp()` (the same for
//! every statement of one simple-query message) in a transaction-local setting, and sends
//! that count as `seq`.
//!
//! Selections are evaluated in SQL as `LIKE` patterns made from the task's globs.

use pgsync_names::{QualifiedName, Selection};
use tokio_postgres::Client;

use crate::error::DdlError;

/// Command tags captured: the statements DDL sync covers, and those it must recognise to
/// refuse (`CREATE TABLE AS`, `SELECT INTO`: their rows are not replicated).
pub const CAPTURED_TAGS: &[&str] = &[
    "CREATE SCHEMA",
    "CREATE TABLE",
    "ALTER TABLE",
    "DROP TABLE",
    "CREATE INDEX",
    "ALTER INDEX",
    "DROP INDEX",
    "CREATE TABLE AS",
    "SELECT INTO",
];

/// A task's registration with the capture.
#[derive(Debug, Clone, Copy)]
pub struct CaptureTask<'a> {
    /// The task name.
    pub task: &'a str,
    /// Its publication on the source: new tables of the selection join it.
    pub publication: &'a str,
    /// Its selection.
    pub selection: &'a Selection,
}

const SCHEMA_SQL: &str = r#"
CREATE SCHEMA IF NOT EXISTS pgsync;
CREATE TABLE IF NOT EXISTS pgsync.ddl_tasks (
    task text PRIMARY KEY,
    publication text NOT NULL,
    include_schemas text[] NOT NULL,
    include_tables text[] NOT NULL,
    exclude_schemas text[] NOT NULL,
    exclude_tables text[] NOT NULL
);
CREATE TABLE IF NOT EXISTS pgsync.ddl_relnames (
    relid oid PRIMARY KEY,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    columns jsonb NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS pgsync.ddl_column_renames (
    id bigserial PRIMARY KEY,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    old_name text NOT NULL,
    new_name text NOT NULL
);
CREATE TABLE IF NOT EXISTS pgsync.ddl_renames (
    id bigserial PRIMARY KEY,
    old_schema text NOT NULL,
    old_name text NOT NULL,
    new_schema text NOT NULL,
    new_name text NOT NULL
);
CREATE TABLE IF NOT EXISTS pgsync.ddl_dropped_tables (
    schema_name text NOT NULL,
    table_name text NOT NULL,
    PRIMARY KEY (schema_name, table_name)
);
CREATE TABLE IF NOT EXISTS pgsync.ddl_dropped_columns (
    schema_name text NOT NULL,
    table_name text NOT NULL,
    column_name text NOT NULL,
    PRIMARY KEY (schema_name, table_name, column_name)
);

CREATE OR REPLACE FUNCTION pgsync.ddl_selected(t pgsync.ddl_tasks, s text, n text)
RETURNS boolean LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $f$
    SELECT EXISTS (SELECT 1 FROM unnest(t.include_schemas, t.include_tables) p(ps, pt)
                   WHERE s LIKE ps AND n LIKE pt)
       AND NOT EXISTS (SELECT 1 FROM unnest(t.exclude_schemas, t.exclude_tables) p(ps, pt)
                       WHERE s LIKE ps AND n LIKE pt)
$f$;

CREATE OR REPLACE FUNCTION pgsync.ddl_emit(message jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    PERFORM pg_logical_emit_message(true, 'pgsync.ddl', message::text);
END
$f$;

CREATE OR REPLACE FUNCTION pgsync.ddl_track(cmds jsonb, dropped jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    c jsonb;
    d jsonb;
    rel jsonb;
    t pgsync.ddl_tasks;
    v_old_schema text;
    v_old_name text;
    v_old_cols jsonb;
    v_cols jsonb;
    v_relid oid;
BEGIN
    FOR c IN SELECT * FROM jsonb_array_elements(cmds) LOOP
        rel := c->'relation';
        CONTINUE WHEN rel IS NULL OR jsonb_typeof(rel) <> 'object'
            OR rel->>'kind' NOT IN ('r', 'p') OR rel->>'persistence' = 't';
        v_relid := (rel->>'oid')::oid;
        v_cols := COALESCE((SELECT jsonb_object_agg(a.attnum::text, a.attname)
                            FROM pg_attribute a
                            WHERE a.attrelid = v_relid AND a.attnum > 0 AND NOT a.attisdropped),
                           '{}');
        SELECT r.schema_name, r.table_name, r.columns INTO v_old_schema, v_old_name, v_old_cols
            FROM pgsync.ddl_relnames r WHERE r.relid = v_relid;
        IF FOUND AND (v_old_schema, v_old_name) IS DISTINCT FROM (rel->>'schema', rel->>'name') THEN
            INSERT INTO pgsync.ddl_renames (old_schema, old_name, new_schema, new_name)
                VALUES (v_old_schema, v_old_name, rel->>'schema', rel->>'name');
        END IF;
        IF FOUND THEN
            -- The same column number under another name: a renamed column.
            INSERT INTO pgsync.ddl_column_renames (schema_name, table_name, old_name, new_name)
                SELECT rel->>'schema', rel->>'name', o.value #>> '{}', n.value #>> '{}'
                FROM jsonb_each(v_old_cols) o JOIN jsonb_each(v_cols) n ON n.key = o.key
                WHERE o.value <> n.value;
        END IF;
        INSERT INTO pgsync.ddl_relnames VALUES (v_relid, rel->>'schema', rel->>'name', v_cols)
            ON CONFLICT ON CONSTRAINT ddl_relnames_pkey DO UPDATE
            SET schema_name = EXCLUDED.schema_name, table_name = EXCLUDED.table_name,
                columns = EXCLUDED.columns
            WHERE (ddl_relnames.schema_name, ddl_relnames.table_name, ddl_relnames.columns)
                  IS DISTINCT FROM (EXCLUDED.schema_name, EXCLUDED.table_name, EXCLUDED.columns);
        DELETE FROM pgsync.ddl_dropped_tables dt
            WHERE dt.schema_name = rel->>'schema' AND dt.table_name = rel->>'name';
        IF c->>'tag' = 'CREATE TABLE' AND c->>'object_type' = 'table'
            AND rel->>'persistence' = 'p' AND NOT (rel->>'partition')::boolean THEN
            FOR t IN SELECT * FROM pgsync.ddl_tasks LOOP
                IF pgsync.ddl_selected(t, rel->>'schema', rel->>'name')
                    AND EXISTS (SELECT 1 FROM pg_publication p
                                WHERE p.pubname = t.publication AND NOT p.puballtables)
                    AND NOT EXISTS (SELECT 1 FROM pg_publication_rel pr
                                    JOIN pg_publication p ON p.oid = pr.prpubid
                                    WHERE p.pubname = t.publication AND pr.prrelid = v_relid)
                THEN
                    EXECUTE format('ALTER PUBLICATION %I ADD TABLE %I.%I',
                                   t.publication, rel->>'schema', rel->>'name');
                END IF;
            END LOOP;
        END IF;
    END LOOP;
    FOR d IN SELECT * FROM jsonb_array_elements(dropped) LOOP
        IF d->>'object_type' = 'table column' AND NOT (d->>'temporary')::boolean THEN
            INSERT INTO pgsync.ddl_dropped_columns
                VALUES (d->'names'->>0, d->'names'->>1, d->'names'->>2)
                ON CONFLICT DO NOTHING;
        ELSIF d->>'object_type' = 'table' AND NOT (d->>'temporary')::boolean THEN
            DELETE FROM pgsync.ddl_relnames r WHERE r.relid = (d->>'oid')::oid;
            INSERT INTO pgsync.ddl_dropped_tables VALUES (d->'names'->>0, d->'names'->>1)
                ON CONFLICT DO NOTHING;
        END IF;
    END LOOP;
END
$f$;

CREATE OR REPLACE FUNCTION pgsync.ddl_on_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER AS $f$
DECLARE
    d jsonb;
    prev text := pg_catalog.current_setting('pgsync.ddl_dropped', true);
    v_path text := pg_catalog.current_setting('search_path');
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF pg_catalog.current_setting('pgsync.ddl_capture_off', true) = 'on' THEN
        PERFORM pg_catalog.set_config('search_path', v_path, true);
        RETURN;
    END IF;
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'object_type', o.object_type, 'schema', o.schema_name,
               'identity', o.object_identity, 'names', pg_catalog.to_jsonb(o.address_names),
               'temporary', o.is_temporary, 'original', o.original, 'oid', o.objid)),
           '[]'::jsonb)
      INTO d FROM pg_catalog.pg_event_trigger_dropped_objects() o;
    IF prev IS NOT NULL AND prev <> '' THEN
        d := prev::jsonb OPERATOR(pg_catalog.||) d;
    END IF;
    PERFORM pg_catalog.set_config('pgsync.ddl_dropped', d::text, true);
    PERFORM pg_catalog.set_config('search_path', v_path, true);
END
$f$;
"#;

/// The `ddl_command_end` function and `pgsync.replicate_ddl`; separate from
/// [`SCHEMA_SQL`] only for length.
const CAPTURE_SQL: &str = r#"
CREATE OR REPLACE FUNCTION pgsync.ddl_is_empty(rel oid) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    empty boolean;
BEGIN
    EXECUTE pg_catalog.format('SELECT NOT EXISTS (SELECT 1 FROM %s)', rel::pg_catalog.regclass)
        INTO empty;
    RETURN empty;
END
$f$;

CREATE OR REPLACE FUNCTION pgsync.ddl_on_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER AS $f$
DECLARE
    cmds jsonb;
    dropped jsonb;
    q text := pg_catalog.current_query();
    -- The session as the DDL's author has it, read before the search path is pinned.
    v_path text := pg_catalog.current_setting('search_path');
    v_schemas name[] := pg_catalog.current_schemas(false);
    v_role text := session_user;
    k text;
    prev text;
    seq integer := 0;
    guc text;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF pg_catalog.current_setting('pgsync.ddl_capture_off', true) = 'on' THEN
        PERFORM pg_catalog.set_config('search_path', v_path, true);
        RETURN;
    END IF;
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'tag', c.command_tag, 'object_type', c.object_type, 'schema', c.schema_name,
               'identity', c.object_identity, 'in_extension', c.in_extension,
               'relation', CASE WHEN r.oid IS NOT NULL THEN pg_catalog.jsonb_build_object(
                   'schema', rn.nspname, 'name', r.relname, 'oid', r.oid, 'kind', r.relkind,
                   'persistence', r.relpersistence, 'partition', r.relispartition) END)
               ORDER BY c.ord), '[]'::jsonb)
      INTO cmds
      FROM pg_catalog.pg_event_trigger_ddl_commands()
           WITH ORDINALITY c(classid, objid, objsubid, command_tag, object_type, schema_name,
                             object_identity, in_extension, command, ord)
      LEFT JOIN pg_catalog.pg_index i
             ON c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
            AND i.indexrelid OPERATOR(pg_catalog.=) c.objid
      LEFT JOIN pg_catalog.pg_class r
             ON c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
            AND r.oid OPERATOR(pg_catalog.=) COALESCE(i.indrelid, c.objid)
      LEFT JOIN pg_catalog.pg_namespace rn ON rn.oid OPERATOR(pg_catalog.=) r.relnamespace;
    IF tg_tag = 'ALTER TABLE' THEN
        -- Whether the altered table holds rows: a computed default added to an empty
        -- table fills nothing, so it replays faithfully.
        SELECT COALESCE(pg_catalog.jsonb_agg(CASE
                   WHEN pg_catalog.jsonb_typeof(c->'relation') = 'object'
                        AND c->'relation'->>'kind' IN ('r', 'p')
                   THEN pg_catalog.jsonb_set(c, '{relation,empty}', pg_catalog.to_jsonb(
                        pgsync.ddl_is_empty((c->'relation'->>'oid')::pg_catalog.oid)))
                   ELSE c END), '[]'::jsonb)
          INTO cmds FROM pg_catalog.jsonb_array_elements(cmds) c;
    END IF;
    dropped := COALESCE(
        NULLIF(pg_catalog.current_setting('pgsync.ddl_dropped', true), '')::jsonb,
        '[]'::jsonb);
    PERFORM pg_catalog.set_config('pgsync.ddl_dropped', '', true);
    PERFORM pgsync.ddl_track(cmds, dropped);
    IF pg_catalog.current_setting('pgsync.ddl_explicit', true) = 'on' THEN
        PERFORM pg_catalog.set_config('search_path', v_path, true);
        RETURN;
    END IF;
    k := pg_catalog.md5(q OPERATOR(pg_catalog.||) pg_catalog.statement_timestamp()::text);
    guc := 'pgsync.ddl_seq_' OPERATOR(pg_catalog.||) pg_catalog.md5(tg_tag);
    prev := pg_catalog.current_setting(guc, true);
    IF prev IS NOT NULL AND pg_catalog.split_part(prev, ':', 1) = k THEN
        seq := pg_catalog.split_part(prev, ':', 2)::integer + 1;
    END IF;
    PERFORM pg_catalog.set_config(guc, k OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) seq::text, true);
    PERFORM pgsync.ddl_emit(pg_catalog.jsonb_build_object(
        'v', 1, 'tag', tg_tag, 'seq', seq, 'explicit', false, 'query', q,
        'search_path', pg_catalog.to_jsonb(v_schemas),
        'role', v_role, 'commands', cmds, 'dropped', dropped));
    PERFORM pg_catalog.set_config('search_path', v_path, true);
END
$f$;

CREATE OR REPLACE FUNCTION pgsync.replicate_ddl(command text) RETURNS void
LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM pg_catalog.set_config('pgsync.ddl_explicit', 'on', true);
    EXECUTE command;
    PERFORM pg_catalog.set_config('pgsync.ddl_explicit', 'off', true);
    PERFORM pgsync.ddl_emit(pg_catalog.jsonb_build_object(
        'v', 1, 'tag', '', 'seq', 0, 'explicit', true, 'query', command,
        'search_path', pg_catalog.to_jsonb(pg_catalog.current_schemas(false)),
        'role', current_user, 'commands', '[]'::jsonb, 'dropped', '[]'::jsonb));
END
$f$;

-- Emitting a pgsync.ddl message makes the destination run its text: only the triggers
-- (running as their owner) and those an administrator grants may.
REVOKE EXECUTE ON FUNCTION pgsync.ddl_emit(jsonb), pgsync.ddl_track(jsonb, jsonb),
    pgsync.ddl_is_empty(oid), pgsync.replicate_ddl(text) FROM PUBLIC;
"#;

/// Opens the transaction of an install or uninstall: one at a time, and pgsync's own DDL
/// is not captured.
const LOCK: &str = "BEGIN; SELECT pg_advisory_xact_lock(hashtext('pgsync.ddl_capture'));
SET LOCAL pgsync.ddl_capture_off = on;";

/// Installs the capture (once per database) and registers `task` with it. Idempotent;
/// needs a superuser (event triggers).
pub async fn install(client: &Client, task: &CaptureTask<'_>) -> Result<(), DdlError> {
    let tags = CAPTURED_TAGS
        .iter()
        .map(|t| pgsync_names::sql::quote_literal(t))
        .collect::<Vec<_>>()
        .join(", ");
    let triggers = format!(
        "DROP EVENT TRIGGER IF EXISTS pgsync_ddl_end;
         DROP EVENT TRIGGER IF EXISTS pgsync_ddl_drop;
         CREATE EVENT TRIGGER pgsync_ddl_end ON ddl_command_end WHEN TAG IN ({tags})
           EXECUTE FUNCTION pgsync.ddl_on_end();
         CREATE EVENT TRIGGER pgsync_ddl_drop ON sql_drop WHEN TAG IN ({tags})
           EXECUTE FUNCTION pgsync.ddl_on_drop();"
    );
    let globs = |patterns: &[pgsync_names::Pattern]| {
        let schemas: Vec<String> = patterns.iter().map(|p| like(p.schema_glob())).collect();
        let tables: Vec<String> = patterns.iter().map(|p| like(p.table_glob())).collect();
        (schemas, tables)
    };
    let (inc_s, inc_t) = globs(&task.selection.include);
    let (exc_s, exc_t) = globs(&task.selection.exclude);
    client
        .batch_execute(LOCK)
        .await
        .map_err(DdlError::pg("locking the DDL capture"))?;
    let result = async {
        client
            .batch_execute(SCHEMA_SQL)
            .await
            .map_err(DdlError::pg("creating the DDL capture functions"))?;
        client
            .batch_execute(CAPTURE_SQL)
            .await
            .map_err(DdlError::pg("creating the DDL capture functions"))?;
        client
            .batch_execute(&triggers)
            .await
            .map_err(DdlError::pg("creating the DDL event triggers"))?;
        client
            .execute(
                "INSERT INTO pgsync.ddl_tasks VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (task) DO UPDATE SET publication = EXCLUDED.publication,
                    include_schemas = EXCLUDED.include_schemas,
                    include_tables = EXCLUDED.include_tables,
                    exclude_schemas = EXCLUDED.exclude_schemas,
                    exclude_tables = EXCLUDED.exclude_tables",
                &[
                    &task.task,
                    &task.publication,
                    &inc_s,
                    &inc_t,
                    &exc_s,
                    &exc_t,
                ],
            )
            .await
            .map_err(DdlError::pg("registering the task with the DDL capture"))?;
        client
            .batch_execute(
                "INSERT INTO pgsync.ddl_relnames
                 SELECT c.oid, n.nspname, c.relname,
                        COALESCE((SELECT jsonb_object_agg(a.attnum::text, a.attname)
                                  FROM pg_attribute a
                                  WHERE a.attrelid = c.oid AND a.attnum > 0
                                    AND NOT a.attisdropped), '{}')
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                   AND n.nspname NOT LIKE 'pg\\_%'
                 ON CONFLICT (relid) DO UPDATE SET schema_name = EXCLUDED.schema_name,
                    table_name = EXCLUDED.table_name, columns = EXCLUDED.columns",
            )
            .await
            .map_err(DdlError::pg("recording the source's table names"))?;
        client
            .batch_execute("COMMIT")
            .await
            .map_err(DdlError::pg("committing the DDL capture"))
    }
    .await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

/// Unregisters `task`; the last task takes the triggers, functions and tables with it.
/// Does nothing when the capture is not installed.
pub async fn uninstall(client: &Client, task: &str) -> Result<bool, DdlError> {
    let installed: bool = client
        .query_one("SELECT to_regclass('pgsync.ddl_tasks') IS NOT NULL", &[])
        .await
        .map_err(DdlError::pg("looking for the DDL capture"))?
        .get(0);
    if !installed {
        return Ok(false);
    }
    client
        .batch_execute(LOCK)
        .await
        .map_err(DdlError::pg("locking the DDL capture"))?;
    let result = async {
        client
            .execute("DELETE FROM pgsync.ddl_tasks WHERE task = $1", &[&task])
            .await
            .map_err(DdlError::pg("unregistering the task from the DDL capture"))?;
        let left: i64 = client
            .query_one("SELECT count(*) FROM pgsync.ddl_tasks", &[])
            .await
            .map_err(DdlError::pg("counting the DDL capture's tasks"))?
            .get(0);
        if left == 0 {
            client
                .batch_execute(
                    "DROP EVENT TRIGGER IF EXISTS pgsync_ddl_end;
                     DROP EVENT TRIGGER IF EXISTS pgsync_ddl_drop;
                     DROP FUNCTION IF EXISTS pgsync.replicate_ddl(text);
                     DROP FUNCTION IF EXISTS pgsync.ddl_on_end();
                     DROP FUNCTION IF EXISTS pgsync.ddl_on_drop();
                     DROP FUNCTION IF EXISTS pgsync.ddl_track(jsonb, jsonb);
                     DROP FUNCTION IF EXISTS pgsync.ddl_emit(jsonb);
                     DROP FUNCTION IF EXISTS pgsync.ddl_is_empty(oid);
                     DROP FUNCTION IF EXISTS pgsync.ddl_selected(pgsync.ddl_tasks, text, text);
                     DROP TABLE IF EXISTS pgsync.ddl_tasks, pgsync.ddl_relnames,
                         pgsync.ddl_renames, pgsync.ddl_dropped_columns,
                         pgsync.ddl_column_renames,
                         pgsync.ddl_dropped_tables;",
                )
                .await
                .map_err(DdlError::pg("removing the DDL capture"))?;
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(DdlError::pg("committing the DDL capture removal"))
    }
    .await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result.map(|()| true)
}

/// What the source's DDL did to table and column names, for the reverse direction of a
/// two-way task: rows written on B under an old name still find their table on A.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameHistory {
    /// Table renames (and moves to another schema), oldest first.
    pub renames: Vec<(QualifiedName, QualifiedName)>,
    /// Columns dropped on the source: (table as named when dropped, column).
    pub dropped_columns: Vec<(QualifiedName, String)>,
    /// Tables dropped on the source (and not created again under that name).
    pub dropped_tables: Vec<QualifiedName>,
    /// Column renames, oldest first: (table as named then, old column, new column).
    pub column_renames: Vec<(QualifiedName, String, String)>,
}

impl NameHistory {
    /// Reads it from the source (empty when the capture is not installed).
    pub async fn read(client: &Client) -> Result<Self, DdlError> {
        let installed: bool = client
            .query_one("SELECT to_regclass('pgsync.ddl_renames') IS NOT NULL", &[])
            .await
            .map_err(DdlError::pg("looking for pgsync.ddl_renames"))?
            .get(0);
        if !installed {
            return Ok(Self::default());
        }
        let renames = client
            .query(
                "SELECT old_schema, old_name, new_schema, new_name FROM pgsync.ddl_renames ORDER BY id",
                &[],
            )
            .await
            .map_err(DdlError::pg("reading pgsync.ddl_renames"))?
            .iter()
            .map(|r| {
                (
                    QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                    QualifiedName::new(r.get::<_, String>(2), r.get::<_, String>(3)),
                )
            })
            .collect();
        let dropped_columns = client
            .query(
                "SELECT schema_name, table_name, column_name FROM pgsync.ddl_dropped_columns",
                &[],
            )
            .await
            .map_err(DdlError::pg("reading pgsync.ddl_dropped_columns"))?
            .iter()
            .map(|r| {
                (
                    QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                    r.get::<_, String>(2),
                )
            })
            .collect();
        let dropped_tables = client
            .query(
                "SELECT schema_name, table_name FROM pgsync.ddl_dropped_tables",
                &[],
            )
            .await
            .map_err(DdlError::pg("reading pgsync.ddl_dropped_tables"))?
            .iter()
            .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        let column_renames = client
            .query(
                "SELECT schema_name, table_name, old_name, new_name
                 FROM pgsync.ddl_column_renames ORDER BY id",
                &[],
            )
            .await
            .map_err(DdlError::pg("reading pgsync.ddl_column_renames"))?
            .iter()
            .map(|r| {
                (
                    QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3),
                )
            })
            .collect();
        Ok(Self {
            renames,
            dropped_columns,
            dropped_tables,
            column_renames,
        })
    }

    /// The name `table` has now, following renames in order.
    pub fn current_name(&self, table: &QualifiedName) -> QualifiedName {
        let mut name = table.clone();
        for (old, new) in &self.renames {
            if *old == name {
                name = new.clone();
            }
        }
        name
    }

    /// The name `column` of the table now named `table` has now, following renames.
    pub fn current_column(&self, table: &QualifiedName, column: &str) -> String {
        let mut name = column.to_owned();
        for (t, old, new) in &self.column_renames {
            if *old == name && (t == table || self.current_name(t) == *table) {
                name = new.clone();
            }
        }
        name
    }

    /// Whether the table now named `table` was dropped.
    pub fn table_dropped(&self, table: &QualifiedName) -> bool {
        self.dropped_tables.contains(table)
    }

    /// Whether `column` of the table now named `table` was dropped (under any of its
    /// names).
    pub fn column_dropped(&self, table: &QualifiedName, column: &str) -> bool {
        self.dropped_columns
            .iter()
            .any(|(t, c)| c == column && (t == table || self.current_name(t) == *table))
    }
}

/// A selection glob as a `LIKE` pattern: `*` -> `%`, `?` -> `_`, the rest literal.
fn like(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 4);
    for ch in glob.chars() {
        match ch {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_like_patterns_with_literals_escaped() {
        assert_eq!(like("public"), "public");
        assert_eq!(like("*"), "%");
        assert_eq!(like("order_?*"), "order\\__%");
        assert_eq!(like("100%"), "100\\%");
    }

    #[test]
    fn renames_are_followed_in_order_and_dropped_columns_follow_them() {
        let q = |n: &str| QualifiedName::new("public", n);
        let h = NameHistory {
            renames: vec![(q("a"), q("b")), (q("x"), q("y")), (q("b"), q("c"))],
            dropped_columns: vec![(q("a"), "gone".into())],
            dropped_tables: vec![q("c")],
            column_renames: vec![
                (q("b"), "x".into(), "y".into()),
                (q("c"), "y".into(), "z".into()),
            ],
        };
        assert_eq!(h.current_column(&q("c"), "x"), "z");
        assert_eq!(h.current_column(&q("c"), "w"), "w");
        assert!(h.table_dropped(&q("c")));
        assert_eq!(h.current_name(&q("a")), q("c"));
        assert_eq!(h.current_name(&q("b")), q("c"));
        assert_eq!(h.current_name(&q("z")), q("z"));
        assert!(h.column_dropped(&q("c"), "gone"));
        assert!(!h.column_dropped(&q("c"), "kept"));
    }
}
