//! PostgreSQL timestamps as pgoutput sends them: microseconds since 2000-01-01 UTC.
//!
//! Commit times travel from the source to the destination's replication origin
//! (`pg_replication_origin_xact_setup`) unchanged, so they stay in PostgreSQL's own unit and
//! epoch; conversions to Unix time are there for logs and lag figures only.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` as sent on the wire: microseconds since 2000-01-01 00:00:00 UTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// From microseconds since the Unix epoch (saturating at the ends of the range).
    pub fn from_unix_micros(micros: i64) -> Self {
        Self(micros.saturating_sub(PG_EPOCH_UNIX_MICROS))
    }

    /// Microseconds since the Unix epoch (saturating at the ends of the range).
    pub fn unix_micros(self) -> i64 {
        self.0.saturating_add(PG_EPOCH_UNIX_MICROS)
    }

    /// The same instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        let micros = self.unix_micros();
        let magnitude = Duration::from_micros(micros.unsigned_abs());
        if micros >= 0 {
            UNIX_EPOCH + magnitude
        } else {
            UNIX_EPOCH - magnitude
        }
    }

    /// The instant `t` (saturating outside PostgreSQL's range).
    pub fn from_system_time(t: SystemTime) -> Self {
        let micros = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
        };
        Self::from_unix_micros(micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_epoch_is_the_year_2000() {
        assert_eq!(PgTimestamp(0).unix_micros(), 946_684_800_000_000);
        let t = UNIX_EPOCH + Duration::from_secs(946_684_800);
        assert_eq!(PgTimestamp::from_system_time(t), PgTimestamp(0));
        assert_eq!(
            PgTimestamp(1_500_000).to_system_time(),
            t + Duration::from_millis(1500)
        );
        assert_eq!(
            PgTimestamp(-PG_EPOCH_UNIX_MICROS - 5).to_system_time(),
            UNIX_EPOCH - Duration::from_micros(5)
        );
    }

    #[test]
    fn conversions_saturate_instead_of_overflowing() {
        assert_eq!(PgTimestamp(i64::MAX).unix_micros(), i64::MAX);
        assert_eq!(
            PgTimestamp::from_unix_micros(i64::MIN),
            PgTimestamp(i64::MIN)
        );
    }
}
