//! The result of a validation, per table, as JSON (`serde`) and as text for people.

use std::fmt;

use pgsync_names::QualifiedName;
use serde::Serialize;

use super::lag::Settled;

/// The whole validation.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationReport {
    /// Task name.
    pub task: String,
    /// Every compared table, in name order.
    pub tables: Vec<TableReport>,
    /// Wall-clock time of the whole validation.
    pub seconds: f64,
}

impl ValidationReport {
    /// Whether a table differs or is missing (after the repair, if one was asked for).
    pub fn has_differences(&self) -> bool {
        self.tables.iter().any(|t| {
            matches!(
                t.outcome,
                Outcome::Different | Outcome::MissingOnDestination
            )
        })
    }
}

/// What a table's comparison concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Same rows on both sides (rows still changing on the source were not counted: see
    /// [`TableReport::unsettled`]).
    Equal,
    /// Rows differ (or, without a key, the table's checksums do).
    Different,
    /// The destination has no table of the mapped name.
    MissingOnDestination,
    /// A table without a key kept changing on the source throughout the check, so its
    /// checksums could not be taken at matching points: neither equal nor different.
    Unsettled,
    /// Not compared: the task's operation filter (`[[objects.table]]` `operations`) leaves
    /// out INSERT, UPDATE or DELETE, so the sides are meant to differ (see the notes).
    Skipped,
}

/// How a row differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowDiffKind {
    /// The source has the row, the destination does not.
    MissingOnDestination,
    /// The destination has a row the source does not.
    ExtraOnDestination,
    /// Both have the key, with different values.
    Different,
}

/// One differing row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowDifference {
    /// The key's values (text), in key order.
    pub key: Vec<String>,
    /// How it differs.
    pub kind: RowDiffKind,
    /// The differing columns (destination names), for [`RowDiffKind::Different`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
}

/// One table.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// The source table.
    pub source: QualifiedName,
    /// The destination table (after `[mapping]`).
    pub destination: QualifiedName,
    /// The conclusion.
    pub outcome: Outcome,
    /// The key's columns (source names); empty for a table compared as a whole.
    pub key: Vec<String>,
    /// Rows counted on the source (first pass).
    pub rows_source: i64,
    /// Rows counted on the destination (first pass).
    pub rows_destination: i64,
    /// Key-range chunks compared.
    pub chunks: usize,
    /// Chunks whose checksums differed in the first pass (changes in flight included).
    pub chunks_rechecked: usize,
    /// Chunks whose checksums still differed after the lag had passed.
    pub chunks_differing: usize,
    /// Differing rows found (all of them, even beyond those listed in `rows`).
    pub differences: u64,
    /// The first differing rows.
    pub rows: Vec<RowDifference>,
    /// Rows that kept changing on the source for the whole check: neither proven equal
    /// nor different.
    pub unsettled: u64,
    /// Rows written on the destination by `--repair`.
    pub repaired: u64,
    /// Columns compared, and those only one side has (not compared).
    pub columns_compared: usize,
    /// Source columns the destination lacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub only_source: Vec<String>,
    /// Destination columns the source lacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub only_destination: Vec<String>,
    /// How the last wait for the lag ended, when one was needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<Settled>,
    /// Anything else worth knowing (no key, not repairable, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Time spent on this table.
    pub seconds: f64,
}

impl TableReport {
    pub(super) fn new(source: QualifiedName, destination: QualifiedName) -> Self {
        Self {
            source,
            destination,
            outcome: Outcome::Equal,
            key: Vec::new(),
            rows_source: 0,
            rows_destination: 0,
            chunks: 0,
            chunks_rechecked: 0,
            chunks_differing: 0,
            differences: 0,
            rows: Vec::new(),
            unsettled: 0,
            repaired: 0,
            columns_compared: 0,
            only_source: Vec::new(),
            only_destination: Vec::new(),
            lag: None,
            notes: Vec::new(),
            seconds: 0.0,
        }
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let differing = self
            .tables
            .iter()
            .filter(|t| {
                matches!(
                    t.outcome,
                    Outcome::Different | Outcome::MissingOnDestination
                )
            })
            .count();
        let skipped = self
            .tables
            .iter()
            .filter(|t| t.outcome == Outcome::Skipped)
            .count();
        writeln!(
            f,
            "task {}: {} table(s) compared{} in {:.1} s: {}",
            self.task,
            self.tables.len() - skipped,
            if skipped == 0 {
                String::new()
            } else {
                format!(" ({skipped} skipped)")
            },
            self.seconds,
            if differing == 0 {
                "all equal".to_owned()
            } else {
                format!("{differing} differ")
            }
        )?;
        for t in &self.tables {
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

impl fmt::Display for TableReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.source == self.destination {
            self.source.to_string()
        } else {
            format!("{} -> {}", self.source, self.destination)
        };
        let verdict = match self.outcome {
            Outcome::Equal => "equal",
            Outcome::Different => "DIFFERENT",
            Outcome::MissingOnDestination => "MISSING on the destination",
            Outcome::Unsettled => "not settled (it kept changing on the source throughout)",
            Outcome::Skipped => "skipped",
        };
        writeln!(f, "  {name}: {verdict}")?;
        if self.outcome == Outcome::Skipped {
            for n in &self.notes {
                writeln!(f, "    note: {n}")?;
            }
            return Ok(());
        }
        if self.outcome == Outcome::MissingOnDestination {
            return Ok(());
        }
        writeln!(
            f,
            "    rows: {} on the source, {} on the destination; {} chunk(s), {} rechecked after \
             the lag, {} still differing; {:.1} s",
            self.rows_source,
            self.rows_destination,
            self.chunks,
            self.chunks_rechecked,
            self.chunks_differing,
            self.seconds
        )?;
        if self.differences > 0 {
            writeln!(f, "    {} row(s) differ:", self.differences)?;
            for r in &self.rows {
                let key = self
                    .key
                    .iter()
                    .zip(&r.key)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                match r.kind {
                    RowDiffKind::MissingOnDestination => {
                        writeln!(f, "      {key}: missing on the destination")?;
                    }
                    RowDiffKind::ExtraOnDestination => {
                        writeln!(f, "      {key}: extra on the destination")?;
                    }
                    RowDiffKind::Different => {
                        writeln!(f, "      {key}: different ({})", r.columns.join(", "))?;
                    }
                }
            }
            if (self.rows.len() as u64) < self.differences {
                writeln!(
                    f,
                    "      ... and {} more",
                    self.differences - self.rows.len() as u64
                )?;
            }
        }
        if self.repaired > 0 {
            writeln!(
                f,
                "    repaired {} row(s) on the destination",
                self.repaired
            )?;
        }
        if self.unsettled > 0 {
            writeln!(
                f,
                "    {} row(s) kept changing on the source throughout and were not compared",
                self.unsettled
            )?;
        }
        if !self.only_source.is_empty() {
            writeln!(
                f,
                "    not compared, only on the source: {}",
                self.only_source.join(", ")
            )?;
        }
        if !self.only_destination.is_empty() {
            writeln!(
                f,
                "    not compared, only on the destination: {}",
                self.only_destination.join(", ")
            )?;
        }
        for n in &self.notes {
            writeln!(f, "    note: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_lists_each_differing_row_by_key() {
        let mut t = TableReport::new(
            QualifiedName::new("public", "t"),
            QualifiedName::new("public", "t"),
        );
        t.outcome = Outcome::Different;
        t.key = vec!["id".into()];
        t.differences = 3;
        t.rows = vec![
            RowDifference {
                key: vec!["1".into()],
                kind: RowDiffKind::Different,
                columns: vec!["v".into()],
            },
            RowDifference {
                key: vec!["2".into()],
                kind: RowDiffKind::MissingOnDestination,
                columns: vec![],
            },
        ];
        let r = ValidationReport {
            task: "shop".into(),
            tables: vec![t],
            seconds: 1.0,
        };
        assert!(r.has_differences());
        let text = r.to_string();
        assert!(text.contains("1 differ"), "{text}");
        assert!(text.contains("id=1: different (v)"), "{text}");
        assert!(text.contains("id=2: missing on the destination"), "{text}");
        assert!(text.contains("... and 1 more"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["tables"][0]["rows"][1]["kind"],
            "missing_on_destination"
        );
        assert_eq!(json["tables"][0]["outcome"], "different");
        assert_eq!(json["tables"][0]["source"]["name"], "t");
    }
}
