//! The `pgsync.ddl` logical message: what the capture trigger on the source writes into
//! the WAL (`pg_logical_emit_message(true, 'pgsync.ddl', <json>)`), once per DDL
//! statement, at the statement's place among the transaction's rows.
//!
//! ```json
//! {"v": 1, "tag": "ALTER TABLE", "seq": 0, "explicit": false,
//!  "query": "BEGIN; ALTER TABLE t ADD COLUMN c int; INSERT ...",
//!  "search_path": ["public"], "role": "app",
//!  "commands": [{"tag": "ALTER TABLE", "object_type": "table", "schema": "public",
//!                "identity": "public.t", "in_extension": false,
//!                "relation": {"schema": "public", "name": "t", "kind": "r",
//!                             "persistence": "p", "partition": false}}],
//!  "dropped": []}
//! ```
//! `query` is `current_query()`: the whole text the client sent, which may hold several
//! statements; `tag` and `seq` say which one fired ("the `seq`-th statement with this
//! command tag in this text"), and the planner picks it out with PostgreSQL's parser.
//! `search_path` is `current_schemas(false)`: the schemas that exist, `$user` resolved.
//! `explicit` messages come from `pgsync.replicate_ddl(text)`: every statement of
//! `query` is meant.

use serde::{Deserialize, Serialize};

use crate::error::DdlError;

/// The logical message prefix.
pub const PREFIX: &str = "pgsync.ddl";

/// One captured DDL statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DdlMessage {
    /// Format version (1).
    pub v: u32,
    /// The command tag of the statement (`TG_TAG`), e.g. `ALTER TABLE`.
    pub tag: String,
    /// How many statements with the same tag ran before it in the same query text.
    #[serde(default)]
    pub seq: u32,
    /// Sent by `pgsync.replicate_ddl`: every statement of `query` is meant.
    #[serde(default)]
    pub explicit: bool,
    /// `current_query()`.
    pub query: String,
    /// `current_schemas(false)` of the session that ran it.
    #[serde(default)]
    pub search_path: Vec<String>,
    /// `current_user`.
    #[serde(default)]
    pub role: String,
    /// `pg_event_trigger_ddl_commands()`.
    #[serde(default)]
    pub commands: Vec<Command>,
    /// `pg_event_trigger_dropped_objects()` of the same statement.
    #[serde(default)]
    pub dropped: Vec<Dropped>,
}

/// One object a DDL command created or altered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The (sub)command's tag: `CREATE TABLE` also reports `CREATE INDEX` for its key.
    pub tag: String,
    /// `table`, `index`, `sequence`, `table column`, ...
    pub object_type: String,
    /// The object's schema, if it has one.
    #[serde(default)]
    pub schema: Option<String>,
    /// The object's identity (`public.t`, quoted where needed).
    #[serde(default)]
    pub identity: Option<String>,
    /// Part of an extension's script.
    #[serde(default)]
    pub in_extension: bool,
    /// For relations: the table it belongs to (an index's table, or itself).
    #[serde(default)]
    pub relation: Option<RelationInfo>,
}

/// The table behind a command's object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationInfo {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// `relkind`: `r` table, `p` partitioned table, ...
    #[serde(default)]
    pub kind: String,
    /// `relpersistence`: `p` permanent, `u` unlogged, `t` temporary.
    #[serde(default)]
    pub persistence: String,
    /// A partition of another table.
    #[serde(default)]
    pub partition: bool,
    /// For ALTER TABLE: whether the table held no rows right after the statement.
    #[serde(default)]
    pub empty: Option<bool>,
}

/// One object a DDL statement dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// `table`, `index`, `table column`, `table constraint`, ...
    pub object_type: String,
    /// Its schema.
    #[serde(default)]
    pub schema: Option<String>,
    /// Its identity.
    #[serde(default)]
    pub identity: Option<String>,
    /// `address_names`: e.g. `[schema, table, column]` for a column.
    #[serde(default)]
    pub names: Vec<String>,
    /// A temporary object.
    #[serde(default)]
    pub temporary: bool,
    /// Named in the statement itself (not dropped through a dependency).
    #[serde(default)]
    pub original: bool,
}

impl DdlMessage {
    /// Decodes a message's content.
    pub fn decode(content: &[u8]) -> Result<Self, DdlError> {
        let msg: DdlMessage =
            serde_json::from_slice(content).map_err(|e| DdlError::Message(e.to_string()))?;
        if msg.v != 1 {
            return Err(DdlError::Message(format!(
                "format version {} is not known (this pgsync reads 1)",
                msg.v
            )));
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_written_by_the_trigger_decodes() {
        let json = br#"{"v": 1, "tag": "ALTER TABLE", "seq": 0, "explicit": false,
            "query": "alter table t add column c int", "search_path": ["public"],
            "role": "app", "commands": [{"tag": "ALTER TABLE", "object_type": "table",
            "schema": "public", "identity": "public.t", "in_extension": false,
            "relation": {"schema": "public", "name": "t", "kind": "r",
            "persistence": "p", "partition": false}}], "dropped": []}"#;
        let m = DdlMessage::decode(json).unwrap();
        assert_eq!(m.tag, "ALTER TABLE");
        assert_eq!(m.commands[0].relation.as_ref().unwrap().name, "t");
    }

    #[test]
    fn malformed_and_future_messages_are_errors() {
        assert!(DdlMessage::decode(b"{").is_err());
        let err = DdlMessage::decode(br#"{"v": 2, "tag": "X", "query": ""}"#).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
    }
}
