//! Sequences keep moving on the destination during incremental sync (MISSION S5).
//!
//! Logical decoding carries no sequence changes, so after the full copy (whose schema
//! sync sets each sequence once, forward only as here) a destination sequence would stay
//! where the copy left it, and a switch-over to the destination would hand out values
//! the source already used. A one-way task therefore brings them forward itself:
//!
//! ```text
//!  every 5 s while streaming, and once when the stream stops cleanly:
//!   A: pg_sequence_last_value of each synced sequence (one catalog query)
//!   B: the same sequence under its destination name
//!      SELECT setval(seq, <A's value>, true) FROM seq
//!       WHERE <B's next value is not past A's>      (one statement: never backwards)
//! ```
//!
//! Which sequences: those the schema sync creates. A sequence owned by a column
//! (SERIAL, IDENTITY, `OWNED BY`) follows its table: synced when the table is selected,
//! found on the destination as the sequence owned by the mapped table's mapped column
//! (so existing tables with their own sequence names work too). A free-standing sequence
//! is synced when its schema is one the selection reaches (and no exclude pattern names
//! it), under its name in the mapped schema. A sequence the source has never handed a
//! value from, or that the destination lacks, is left alone.
//!
//! Two-way tasks do nothing here: both sides hand out values, and moving one side's
//! sequences to the other's would not stop them from overlapping (the precheck's
//! `two_way_sequences` warns and suggests odd/even or INCREMENT BY steps).
//!
//! Failures (a server restarting, a missing privilege) are logged and tried again at the
//! next tick; they never stop the task.

use std::collections::HashSet;
use std::time::Duration;

use pgsync_names::QualifiedName;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_postgres::Client;

use crate::endpoint::Endpoint;
use crate::spec::TaskSpec;

/// Time between two rounds.
pub(crate) const INTERVAL: Duration = Duration::from_secs(5);

/// How long one round may take before it is abandoned (a server may be down).
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);

/// A source sequence whose value a round found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SourceSequence {
    name: QualifiedName,
    /// The owning table and column, for a sequence owned by a column.
    owner: Option<(QualifiedName, String)>,
    last_value: i64,
}

/// Where a synced sequence lives on the destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    /// The sequence owned by this (destination) table's column.
    OwnedBy(QualifiedName, String),
    /// This sequence.
    Named(QualifiedName),
}

/// The background sequence follower of one streaming run; aborted when dropped.
#[derive(Debug)]
pub(crate) struct SequenceSync {
    task: JoinHandle<()>,
    last_round: Option<oneshot::Sender<()>>,
}

impl SequenceSync {
    /// Starts following `spec`'s sequences (`None` for a two-way task).
    pub(crate) fn start(spec: &TaskSpec) -> Option<Self> {
        if spec.sync.two_way {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let follower = Follower::new(spec);
        Some(Self {
            task: tokio::spawn(follower.run(rx)),
            last_round: Some(tx),
        })
    }

    /// Runs one last round (the stream stopped cleanly) and ends the follower.
    pub(crate) async fn finish(mut self) {
        if let Some(tx) = self.last_round.take() {
            let _ = tx.send(());
        }
        let _ = timeout(ROUND_TIMEOUT + Duration::from_secs(1), &mut self.task).await;
    }
}

impl Drop for SequenceSync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The state kept between rounds.
struct Follower {
    spec: TaskSpec,
    source: Option<Client>,
    destination: Option<Client>,
    /// Destination sequences already reported missing (said once, not every round).
    missing: HashSet<Target>,
}

impl Follower {
    fn new(spec: &TaskSpec) -> Self {
        Self {
            spec: spec.clone(),
            source: None,
            destination: None,
            missing: HashSet::new(),
        }
    }

    async fn run(mut self, mut last_round: oneshot::Receiver<()>) {
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    self.round().await;
                }
                _ = &mut last_round => {
                    if let Some(moved) = self.round().await {
                        tracing::info!(moved, "last sequence round before the stop");
                    }
                    return;
                }
            }
        }
    }

    /// One round; failures are logged and the connections made again next time. The
    /// number of sequences moved, when the round completed.
    async fn round(&mut self) -> Option<usize> {
        match timeout(ROUND_TIMEOUT, self.round_inner()).await {
            Ok(Ok(moved)) => {
                if moved > 0 {
                    tracing::debug!(moved, "destination sequences brought forward");
                }
                return Some(moved);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %describe(&e), "sequence sync failed; trying again at the next round");
            }
            Err(_) => {
                tracing::warn!("sequence sync timed out; trying again at the next round");
            }
        }
        self.source = None;
        self.destination = None;
        None
    }

    async fn round_inner(&mut self) -> Result<usize, tokio_postgres::Error> {
        let a = connected(&mut self.source, &self.spec.source).await?;
        let sequences = read_source(a).await?;
        let b = connected(&mut self.destination, &self.spec.destination).await?;
        let mut moved = 0;
        for s in sequences {
            let Some(target) = target(&self.spec, &s) else {
                continue;
            };
            match bring_forward(b, &target, s.last_value).await {
                Ok(Outcome::Moved) => moved += 1,
                Ok(Outcome::Ahead) => {}
                Ok(Outcome::Missing) => {
                    if self.missing.insert(target.clone()) {
                        tracing::info!(source = %s.name, destination = ?target, "the destination has no such sequence; it is not synced");
                    }
                }
                // One sequence's failure (privilege, MAXVALUE) does not hold up the
                // others; a broken connection ends the round.
                Err(e) if !b.is_closed() => {
                    tracing::warn!(sequence = %s.name, error = %describe(&e), "could not bring the sequence forward");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }
}

async fn connected<'c>(
    slot: &'c mut Option<Client>,
    endpoint: &Endpoint,
) -> Result<&'c Client, tokio_postgres::Error> {
    if slot.as_ref().is_some_and(Client::is_closed) {
        *slot = None;
    }
    Ok(match slot {
        Some(c) => c,
        None => slot.insert(endpoint.connect().await?),
    })
}

/// The server's message and SQLSTATE of a database error (`Display` says only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Every sequence of the source that has handed out a value and that the task's user
/// may read (others come back with no value and are dropped), with its owning column if any. Extension members and pgsync's own are left
/// out.
async fn read_source(a: &Client) -> Result<Vec<SourceSequence>, tokio_postgres::Error> {
    let rows = a
        .query(
            "SELECT n.nspname::text, c.relname::text, tn.nspname::text, t.relname::text,
                    att.attname::text,
                    -- In the output list, so that only sequences get here (a WHERE could be
                    -- evaluated for other relations first).
                    CASE WHEN c.relkind = 'S'
                          AND pg_catalog.has_sequence_privilege(c.oid, 'SELECT,USAGE')
                         THEN pg_catalog.pg_sequence_last_value(c.oid) END
             FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_catalog.pg_depend d
                    ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
                   AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                   AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
             LEFT JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
             LEFT JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
             LEFT JOIN pg_catalog.pg_attribute att
                    ON att.attrelid = d.refobjid AND att.attnum = d.refobjsubid
             WHERE c.relkind = 'S'
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgsync')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend e
                               WHERE e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                 AND e.objid = c.oid AND e.deptype = 'e')
             ORDER BY 1, 2",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let last_value: Option<i64> = r.get(5);
            let owner = match (
                r.get::<_, Option<String>>(2),
                r.get::<_, Option<String>>(3),
                r.get::<_, Option<String>>(4),
            ) {
                (Some(s), Some(t), Some(c)) => Some((QualifiedName::new(s, t), c)),
                _ => None,
            };
            Some(SourceSequence {
                name: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                owner,
                last_value: last_value?,
            })
        })
        .collect())
}

/// Where `s` goes on the destination, or `None` when the task does not sync it (see the
/// module documentation).
fn target(spec: &TaskSpec, s: &SourceSequence) -> Option<Target> {
    let objects = &spec.objects;
    match &s.owner {
        Some((table, column)) => objects.contains(table).then(|| {
            Target::OwnedBy(
                spec.mapping.table(table),
                spec.mapping.column(table, column),
            )
        }),
        None => {
            let reached = objects
                .include
                .iter()
                .any(|p| p.matches_schema(&s.name.schema));
            let excluded = objects.exclude.iter().any(|p| p.matches(&s.name));
            (reached && !excluded).then(|| {
                Target::Named(QualifiedName::new(
                    spec.mapping.schema(&s.name.schema),
                    s.name.name.clone(),
                ))
            })
        }
    }
}

/// What a round did to one destination sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Moved,
    /// Already at or past the source's value.
    Ahead,
    Missing,
}

/// Sets the destination sequence to `value` (handed out) unless its next value is at or
/// past `value`'s successor already: the full copy's own statement
/// ([`pgsync_snapshot::ddl::setval_forward`]), comparison and `setval` in one.
async fn bring_forward(
    b: &Client,
    target: &Target,
    value: i64,
) -> Result<Outcome, tokio_postgres::Error> {
    let found = match target {
        Target::Named(n) => {
            b.query_opt(
                "SELECT n.nspname::text, c.relname::text
                 FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.oid = pg_catalog.to_regclass($1) AND c.relkind = 'S'",
                &[&n.to_string()],
            )
            .await?
        }
        Target::OwnedBy(table, column) => {
            b.query_opt(
                "SELECT n.nspname::text, s.relname::text
                 FROM pg_catalog.pg_depend d
                 JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                 JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace
                 JOIN pg_catalog.pg_attribute a
                   ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                 WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                   AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                   AND d.deptype IN ('a', 'i')
                   AND d.refobjid = pg_catalog.to_regclass($1) AND a.attname = $2
                 LIMIT 1",
                &[&table.to_string(), column],
            )
            .await?
        }
    };
    let Some(row) = found else {
        return Ok(Outcome::Missing);
    };
    let relation = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
    // `value` was handed out on the source (the start value is not needed).
    let sql = pgsync_snapshot::ddl::setval_forward(&relation, Some(value), 0);
    let moved = b.query(&sql, &[]).await?;
    Ok(if moved.is_empty() {
        Outcome::Ahead
    } else {
        Outcome::Moved
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> TaskSpec {
        TaskSpec::from_toml(
            &format!(
                "name = \"t\"\n[source]\ndsn = \"host=a dbname=x\"\n[destination]\ndsn = \"host=b dbname=x\"\n{extra}"
            ),
            "test",
        )
        .unwrap()
    }

    fn seq(schema: &str, name: &str, owner: Option<(&str, &str, &str)>) -> SourceSequence {
        SourceSequence {
            name: QualifiedName::new(schema, name),
            owner: owner.map(|(s, t, c)| (QualifiedName::new(s, t), c.to_owned())),
            last_value: 1,
        }
    }

    #[test]
    fn owned_sequences_follow_their_table_and_its_mapped_names() {
        let spec = spec(
            "[objects]\ninclude = [\"app.orders\"]\n\
             [mapping]\nschemas = { app = \"app_copy\" }\n",
        );
        let owned = seq("app", "orders_id_seq", Some(("app", "orders", "id")));
        assert_eq!(
            target(&spec, &owned),
            Some(Target::OwnedBy(
                QualifiedName::new("app_copy", "orders"),
                "id".into()
            ))
        );
        let other = seq("app", "items_id_seq", Some(("app", "items", "id")));
        assert_eq!(target(&spec, &other), None);
    }

    #[test]
    fn free_sequences_go_with_their_schema_unless_excluded() {
        let spec = spec(
            "[objects]\ninclude = [\"app.*\"]\nexclude = [\"app.tmp_*\"]\n\
             [mapping]\nschemas = { app = \"app_copy\" }\n",
        );
        assert_eq!(
            target(&spec, &seq("app", "invoice_no", None)),
            Some(Target::Named(QualifiedName::new("app_copy", "invoice_no")))
        );
        assert_eq!(target(&spec, &seq("app", "tmp_counter", None)), None);
        assert_eq!(target(&spec, &seq("other", "invoice_no", None)), None);
    }
}
