//! Prints the decoded changes of a logical replication slot as JSON lines, like
//! `pg_recvlogical` but readable.
//!
//! ```text
//! cargo run --example tail -- --dsn 'host=127.0.0.1 port=5432 user=postgres dbname=app' \
//!     --slot s --publication p [--create-slot]
//! ```
//!
//! One line per event: `begin`, `insert` / `update` / `delete` / `truncate` / `message`
//! (transactional messages at their place among the changes), `commit`; non-transactional
//! messages on their own. Column values are their text form (`null` for NULL); binary
//! values are `\x` hex; TOAST values the update left alone are listed under `unchanged`.
//! After each transaction is printed, its end LSN is confirmed, so the slot moves on.
//! Ctrl-C stops cleanly.

use std::io::Write as _;

use anyhow::{Context, Result};
use clap::Parser;
use pgsync_wal::pgoutput::{ColumnValue, OldTuple};
use pgsync_wal::txn::{Assembled, Assembler, AssemblerConfig};
use pgsync_wal::{
    Change, CreateSlot, Lsn, Relation, ReplicationConfig, ReplicationConnection, SlotSnapshot,
    StartOptions, Transaction, Tuple,
};
use serde_json::{Map, Value, json};

#[derive(Debug, Parser)]
#[command(about = "Print a slot's changes as JSON lines")]
struct Args {
    /// libpq connection string or postgres:// URL of the source database.
    #[arg(long, env = "PGSYNC_DSN")]
    dsn: String,
    /// Replication slot to read.
    #[arg(long)]
    slot: String,
    /// Publication(s) to read (repeat for several).
    #[arg(long = "publication", required = true)]
    publications: Vec<String>,
    /// Create the slot first (permanent, pgoutput).
    #[arg(long)]
    create_slot: bool,
    /// Start position (default: the slot's confirmed position).
    #[arg(long)]
    start: Option<Lsn>,
    /// Do not confirm what was printed (the slot keeps it; good for peeking).
    #[arg(long)]
    no_confirm: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let config = ReplicationConfig::parse(&args.dsn).context("reading --dsn")?;
    let mut conn = ReplicationConnection::connect(&config).await?;
    if args.create_slot {
        let created = conn
            .create_slot(&CreateSlot::new(&args.slot).snapshot(SlotSnapshot::Nothing))
            .await?;
        emit(&json!({"kind": "slot_created", "slot": created.name,
                     "consistent_point": created.consistent_point.to_string()}))?;
    }
    let mut options = StartOptions::new(&args.slot, &args.publications);
    options.start = args.start.unwrap_or(Lsn::INVALID);
    let mut stream = conn.start_replication(&options).await?;
    let mut asm = Assembler::new(AssemblerConfig::default());
    loop {
        let x = tokio::select! {
            // `recv` is cancel-safe: Ctrl-C loses nothing.
            x = stream.recv() => x?,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(x) = x else {
            emit(&json!({"kind": "end", "reason": "the server ended the stream"}))?;
            return Ok(());
        };
        match asm.push_payload(&x.data)? {
            Some(Assembled::Transaction(t)) => {
                print_transaction(&t)?;
                if !args.no_confirm {
                    stream.confirm(t.end_lsn);
                    if asm.is_idle() {
                        stream.mark_done();
                    }
                }
            }
            Some(Assembled::Message(m)) => emit(&json!({
                "kind": "message", "transactional": false, "lsn": m.lsn.to_string(),
                "prefix": m.prefix, "content": String::from_utf8_lossy(&m.content),
            }))?,
            Some(other) => emit(&json!({"kind": "other", "debug": format!("{other:?}")}))?,
            None => {}
        }
    }
    stream.stop().await?;
    Ok(())
}

fn print_transaction(t: &Transaction) -> Result<()> {
    emit(&json!({
        "kind": "begin", "xid": t.xid, "commit_lsn": t.commit_lsn.to_string(),
        "origin": t.origin.as_ref().map(|o| o.name.clone()), "streamed": t.streamed,
    }))?;
    for change in t.changes() {
        emit(&change_json(&change?))?;
    }
    emit(&json!({
        "kind": "commit", "xid": t.xid, "end_lsn": t.end_lsn.to_string(),
        "commit_time_unix_us": t.commit_time.unix_micros(),
    }))
}

fn change_json(change: &Change) -> Value {
    match change {
        Change::Insert { relation, new } => json!({
            "kind": "insert", "table": table(relation), "new": row(relation, new).0,
        }),
        Change::Update { relation, old, new } => {
            let (new_row, unchanged) = row(relation, new);
            json!({
                "kind": "update", "table": table(relation),
                "old": old.as_ref().map(|o| old_json(relation, o)),
                "new": new_row, "unchanged": unchanged,
            })
        }
        Change::Delete { relation, old } => json!({
            "kind": "delete", "table": table(relation), "old": old_json(relation, old),
        }),
        Change::Truncate { relations, options } => json!({
            "kind": "truncate",
            "tables": relations.iter().map(|r| table(r)).collect::<Vec<_>>(),
            "cascade": options.cascade, "restart_identity": options.restart_identity,
        }),
        Change::Message {
            lsn,
            prefix,
            content,
        } => json!({
            "kind": "message", "transactional": true, "lsn": lsn.to_string(),
            "prefix": prefix, "content": String::from_utf8_lossy(content),
        }),
        other => json!({"kind": "other", "debug": format!("{other:?}")}),
    }
}

fn table(r: &Relation) -> String {
    format!("{}.{}", r.name.schema, r.name.name)
}

fn old_json(relation: &Relation, old: &OldTuple) -> Value {
    let key_only = matches!(old, OldTuple::Key(_));
    let (mut values, _) = row(relation, old.tuple());
    if key_only {
        // Only the replica identity columns are meaningful in a key tuple.
        for (i, c) in relation.columns.iter().enumerate() {
            if !c.is_key && old.tuple().get(i) == Some(ColumnValue::Null) {
                values.remove(&c.name);
            }
        }
    }
    Value::Object(values)
}

/// Column name -> value, and the names of unchanged TOAST columns.
fn row(relation: &Relation, tuple: &Tuple) -> (Map<String, Value>, Vec<String>) {
    let mut values = Map::new();
    let mut unchanged = Vec::new();
    for (i, column) in relation.columns.iter().enumerate() {
        let value = match tuple.get(i) {
            Some(ColumnValue::Text(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
            Some(ColumnValue::Binary(b)) => Value::String(format!("\\x{}", hex(b))),
            Some(ColumnValue::Unchanged) => {
                unchanged.push(column.name.clone());
                continue;
            }
            Some(ColumnValue::Null) | None => Value::Null,
        };
        values.insert(column.name.clone(), value);
    }
    (values, unchanged)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn emit(v: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}
