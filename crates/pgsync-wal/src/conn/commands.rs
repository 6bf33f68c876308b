//! Replication commands and how their text depends on the server version.
//!
//! | command                 | 14                            | 15+                           |
//! |-------------------------|-------------------------------|-------------------------------|
//! | CREATE_REPLICATION_SLOT | `LOGICAL pgoutput EXPORT_SNAPSHOT` | `LOGICAL pgoutput (SNAPSHOT 'export')` |
//! | pgoutput proto_version  | 2                             | 3 (15), 4 (16+)               |
//! | streaming 'parallel'    | -                             | 16+                           |
//! | origin 'none'           | -                             | 16+                           |
//!
//! Names are identifiers ([`Ident`]) and option values literals. The replication command
//! scanner only knows plain `'...'` literals with doubled quotes (no `E''` form, a backslash
//! is an ordinary character), so option values containing a backslash are refused rather
//! than quoted in a way the server would read differently.

use std::time::Duration;

use pgsync_names::sql::{Ident, Literal, ident_list};

use super::ReplicationConnection;
use crate::error::WalError;
use crate::lsn::Lsn;

/// What IDENTIFY_SYSTEM says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    /// The cluster's system identifier.
    pub system_id: String,
    /// The current timeline.
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database of this connection.
    pub dbname: Option<String>,
}

/// Whether CREATE_REPLICATION_SLOT exports a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlotSnapshot {
    /// Export one: its name can be used with `SET TRANSACTION SNAPSHOT` by other sessions
    /// until this connection runs its next command (or closes).
    #[default]
    Export,
    /// No snapshot.
    Nothing,
}

/// CREATE_REPLICATION_SLOT for a pgoutput slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSlot {
    /// Slot name.
    pub name: String,
    /// Dropped when the connection ends (or on error).
    pub temporary: bool,
    /// Export a snapshot.
    pub snapshot: SlotSnapshot,
}

impl CreateSlot {
    /// A permanent slot with an exported snapshot.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            temporary: false,
            snapshot: SlotSnapshot::Export,
        }
    }

    /// Makes the slot temporary.
    pub fn temporary(mut self, on: bool) -> Self {
        self.temporary = on;
        self
    }

    /// Chooses the snapshot behaviour.
    pub fn snapshot(mut self, snapshot: SlotSnapshot) -> Self {
        self.snapshot = snapshot;
        self
    }

    pub(crate) fn sql(&self, major: u32) -> String {
        let temp = if self.temporary { " TEMPORARY" } else { "" };
        let snapshot = match (major >= 15, self.snapshot) {
            (true, SlotSnapshot::Export) => " (SNAPSHOT 'export')",
            (true, SlotSnapshot::Nothing) => " (SNAPSHOT 'nothing')",
            (false, SlotSnapshot::Export) => " EXPORT_SNAPSHOT",
            (false, SlotSnapshot::Nothing) => " NOEXPORT_SNAPSHOT",
        };
        format!(
            "CREATE_REPLICATION_SLOT {}{temp} LOGICAL pgoutput{snapshot}",
            Ident(&self.name)
        )
    }
}

/// What CREATE_REPLICATION_SLOT returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    /// Slot name.
    pub name: String,
    /// Streaming from here gives exactly the changes committed after the snapshot.
    pub consistent_point: Lsn,
    /// The exported snapshot, valid until this connection's next command.
    pub snapshot_name: Option<String>,
}

/// pgoutput's `streaming` option: whether large in-progress transactions are sent before
/// they commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Streaming {
    /// Only at commit (the whole transaction is spilled server-side first).
    Off,
    /// Streamed in chunks once over `logical_decoding_work_mem`.
    #[default]
    On,
    /// As `On`, with the extra information for parallel apply (16+).
    Parallel,
}

/// START_REPLICATION options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartOptions {
    /// Slot name.
    pub slot: String,
    /// Start position (`0/0`: the slot's confirmed position).
    pub start: Lsn,
    /// Publications to read.
    pub publications: Vec<String>,
    /// Include `pg_logical_emit_message` messages.
    pub messages: bool,
    /// Large-transaction streaming.
    pub streaming: Streaming,
    /// Ask the server to drop transactions that carry a replication origin (16+).
    pub origin_none: bool,
    /// Binary tuple data.
    pub binary: bool,
    /// Messages handed from the socket task to the consumer in one batch at most (the
    /// channel between them holds two batches).
    pub buffer_messages: usize,
    /// Bytes of XLogData the socket task may hold beyond the channel while the consumer is
    /// busy, before it stops reading the socket (keepalives keep being answered until then).
    pub buffer_bytes: usize,
    /// Status-update interval; `None`: a third of `wal_sender_timeout`, at most 10 s.
    pub status_interval: Option<Duration>,
}

impl StartOptions {
    /// Defaults: messages on, streaming on, text tuples, no origin filter.
    pub fn new(
        slot: impl Into<String>,
        publications: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            slot: slot.into(),
            start: Lsn::INVALID,
            publications: publications.into_iter().map(Into::into).collect(),
            messages: true,
            streaming: Streaming::On,
            origin_none: false,
            binary: false,
            buffer_messages: 1024,
            buffer_bytes: 8 << 20,
            status_interval: None,
        }
    }

    /// Sets the start position.
    pub fn start_at(mut self, lsn: Lsn) -> Self {
        self.start = lsn;
        self
    }

    /// The pgoutput protocol version for a server.
    pub fn proto_version(major: u32) -> u32 {
        match major {
            ..=14 => 2,
            15 => 3,
            _ => 4,
        }
    }

    /// The pgoutput options for a server, as START_REPLICATION and the SQL decoding
    /// functions take them, with `streaming` as given.
    pub(crate) fn plugin_options(
        &self,
        major: u32,
        streaming: Streaming,
    ) -> Result<Vec<(&'static str, String)>, WalError> {
        let unsupported = |what: &str, needs| WalError::Unsupported {
            what: what.to_owned(),
            server_major: major,
            needs,
        };
        if major < 14 {
            return Err(unsupported("stream with pgoutput protocol 2", 14));
        }
        if self.publications.is_empty() {
            return Err(WalError::Config(
                "streaming changes needs at least one publication".into(),
            ));
        }
        let mut opts = vec![
            ("proto_version", Self::proto_version(major).to_string()),
            (
                "publication_names",
                ident_list(self.publications.iter().map(String::as_str)),
            ),
        ];
        if self.messages {
            opts.push(("messages", "true".into()));
        }
        match streaming {
            Streaming::Off => {}
            Streaming::On => opts.push(("streaming", "on".into())),
            Streaming::Parallel if major >= 16 => opts.push(("streaming", "parallel".into())),
            Streaming::Parallel => return Err(unsupported("stream in parallel mode", 16)),
        }
        if self.origin_none {
            if major < 16 {
                return Err(unsupported("filter by origin ('none')", 16));
            }
            opts.push(("origin", "none".into()));
        }
        if self.binary {
            opts.push(("binary", "true".into()));
        }
        Ok(opts)
    }

    pub(crate) fn sql(&self, major: u32) -> Result<String, WalError> {
        let opts = self.plugin_options(major, self.streaming)?;
        let mut text = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (",
            Ident(&self.slot),
            self.start
        );
        for (i, (name, value)) in opts.iter().enumerate() {
            if value.contains('\\') {
                return Err(WalError::Config(format!(
                    "the value of pgoutput option {name} contains a backslash, which a \
                     replication command cannot carry: {value:?}"
                )));
            }
            if i > 0 {
                text.push_str(", ");
            }
            text.push_str(&format!("{} {}", Ident(name), Literal(value)));
        }
        text.push(')');
        Ok(text)
    }
}

impl ReplicationConnection {
    /// IDENTIFY_SYSTEM. Not cancel-safe.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, WalError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .first()
            .ok_or_else(|| WalError::protocol("IDENTIFY_SYSTEM returned no row"))?;
        Ok(SystemIdentity {
            system_id: field(row, "systemid")?.to_owned(),
            timeline: parse(row, "timeline")?,
            xlogpos: parse(row, "xlogpos")?,
            dbname: row.get("dbname").map(str::to_owned),
        })
    }

    /// `wal_sender_timeout` (`None` when disabled with 0). Not cancel-safe.
    pub async fn wal_sender_timeout(&mut self) -> Result<Option<Duration>, WalError> {
        let text = self.show("wal_sender_timeout").await?;
        parse_duration(&text)
            .map(|d| (!d.is_zero()).then_some(d))
            .ok_or_else(|| WalError::protocol(format!("wal_sender_timeout = {text:?}")))
    }

    /// CREATE_REPLICATION_SLOT ... LOGICAL pgoutput. Not cancel-safe.
    pub async fn create_slot(&mut self, slot: &CreateSlot) -> Result<CreatedSlot, WalError> {
        let rows = self.simple_query(&slot.sql(self.server_major())).await?;
        let row = rows
            .first()
            .ok_or_else(|| WalError::protocol("CREATE_REPLICATION_SLOT returned no row"))?;
        Ok(CreatedSlot {
            name: field(row, "slot_name")?.to_owned(),
            consistent_point: parse(row, "consistent_point")?,
            snapshot_name: row.get("snapshot_name").map(str::to_owned),
        })
    }

    /// DROP_REPLICATION_SLOT; with `wait`, waits for an active consumer to let go instead
    /// of failing with `55006`. Not cancel-safe.
    pub async fn drop_slot(&mut self, name: &str, wait: bool) -> Result<(), WalError> {
        let wait = if wait { " WAIT" } else { "" };
        self.simple_query(&format!("DROP_REPLICATION_SLOT {}{wait}", Ident(name)))
            .await
            .map(drop)
    }
}

fn field<'a>(row: &'a super::Row, name: &str) -> Result<&'a str, WalError> {
    row.get(name)
        .ok_or_else(|| WalError::protocol(format!("reply has no {name}")))
}

fn parse<T: std::str::FromStr>(row: &super::Row, name: &str) -> Result<T, WalError> {
    let text = field(row, name)?;
    text.parse()
        .map_err(|_| WalError::protocol(format!("{name} = {text:?} does not parse")))
}

/// A GUC duration as SHOW prints it: `60s`, `500ms`, `2min`, `1h`, `1d`, `0`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n.checked_mul(1000)?,
        "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_creation_uses_the_legacy_syntax_on_14_and_options_from_15() {
        let c = CreateSlot::new("my \"slot\"").temporary(true);
        assert_eq!(
            c.sql(14),
            r#"CREATE_REPLICATION_SLOT "my ""slot""" TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT"#
        );
        assert_eq!(
            c.sql(15),
            r#"CREATE_REPLICATION_SLOT "my ""slot""" TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')"#
        );
        let n = CreateSlot::new("s").snapshot(SlotSnapshot::Nothing);
        assert_eq!(
            n.sql(16),
            r#"CREATE_REPLICATION_SLOT "s" LOGICAL pgoutput (SNAPSHOT 'nothing')"#
        );
    }

    #[test]
    fn start_options_follow_the_server_version() {
        let mut o = StartOptions::new("s", ["p1", "P 2"]).start_at("0/16B3748".parse().unwrap());
        assert_eq!(
            o.sql(15).unwrap(),
            r#"START_REPLICATION SLOT "s" LOGICAL 0/16B3748 ("proto_version" '3', "publication_names" '"p1", "P 2"', "messages" 'true', "streaming" 'on')"#
        );
        o.origin_none = true;
        o.streaming = Streaming::Parallel;
        o.binary = true;
        let sql = o.sql(16).unwrap();
        assert!(sql.contains(r#""proto_version" '4'"#), "{sql}");
        assert!(sql.contains(r#""streaming" 'parallel'"#), "{sql}");
        assert!(sql.contains(r#""origin" 'none'"#), "{sql}");
        assert!(sql.contains(r#""binary" 'true'"#), "{sql}");
        assert!(matches!(
            o.sql(15),
            Err(WalError::Unsupported { needs: 16, .. })
        ));
        assert_eq!(StartOptions::proto_version(14), 2);
    }

    #[test]
    fn option_values_with_a_backslash_are_refused_and_quotes_are_doubled() {
        let o = StartOptions::new("s", ["a\\b"]);
        assert!(matches!(o.sql(15), Err(WalError::Config(_))));
        let o = StartOptions::new("s", ["it's"]);
        assert!(o.sql(15).unwrap().contains(r#"'"it''s"'"#));
    }

    #[test]
    fn guc_durations_parse_with_units() {
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2min"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("soon"), None);
    }
}
