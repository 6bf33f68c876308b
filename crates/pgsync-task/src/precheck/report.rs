//! The precheck report: a list of items, printable for people and as JSON for automation.

use std::fmt;

use serde::Serialize;

/// The outcome of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Pass,
    /// Works, but the user should know (and probably act).
    Warn,
    /// The task cannot run until this is fixed.
    Fail,
}

/// Which server an item is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Cluster A.
    Source,
    /// Cluster B.
    Destination,
}

/// One precheck item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier, e.g. `wal_level`.
    pub id: &'static str,
    /// The server it is about.
    pub side: Side,
    /// Pass, warn or fail.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (for warn and fail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// All items, in the order they were checked.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The items.
    pub checks: Vec<Check>,
}

impl Report {
    pub(crate) fn pass(&mut self, side: Side, id: &'static str, detail: impl Into<String>) {
        self.push(side, id, Status::Pass, detail.into(), None);
    }

    pub(crate) fn warn(
        &mut self,
        side: Side,
        id: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(side, id, Status::Warn, detail.into(), Some(fix.into()));
    }

    pub(crate) fn fail(
        &mut self,
        side: Side,
        id: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(side, id, Status::Fail, detail.into(), Some(fix.into()));
    }

    fn push(
        &mut self,
        side: Side,
        id: &'static str,
        status: Status,
        detail: String,
        fix: Option<String>,
    ) {
        self.checks.push(Check {
            id,
            side,
            status,
            detail,
            fix,
        });
    }

    /// The worst status (Pass when empty).
    pub fn status(&self) -> Status {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Pass)
    }

    /// Whether nothing failed.
    pub fn ok(&self) -> bool {
        self.status() != Status::Fail
    }

    /// The item with this id on this side, if it was checked.
    pub fn get(&self, side: Side, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.side == side && c.id == id)
    }

    /// The failed items.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let mark = match c.status {
                Status::Pass => "pass",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            let side = match c.side {
                Side::Source => "source",
                Side::Destination => "destination",
            };
            writeln!(f, "{mark}  {side:<11} {:<22} {}", c.id, c.detail)?;
            if let Some(fix) = &c.fix {
                writeln!(f, "      fix: {fix}")?;
            }
        }
        Ok(())
    }
}
