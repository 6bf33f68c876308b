//! Custom resolvers: the hook for library users who want their own rule for some tables.
//!
//! A [`Resolver`] sees each conflicting [`Situation`] together with what the configured
//! policies propose, and returns a [`Decision`]. It may be async (look something up,
//! ask a service); [`resolve`] calls it only when there is a conflict, and checks the
//! decision with [`Resolution::for_decision`] so that a resolver can choose but never
//! corrupt: a decision that cannot be carried out is an error, not a guess.
//!
//! Beware that a resolver decides on each node separately: unless its rule is symmetric
//! (both nodes reach the same final row whichever side applies which change), the two
//! databases can diverge. Last-write-wins is symmetric; "the destination always wins" is
//! not.

use async_trait::async_trait;

use crate::decide::{Decision, InvalidDecision, Resolution, decide};
use crate::policy::ConflictPolicies;
use crate::situation::Situation;

/// A user-supplied conflict rule.
#[async_trait]
pub trait Resolver: Send + Sync {
    /// Decides one conflicting situation. `proposed` is the configured policies' answer;
    /// returning `proposed.decision.clone()` defers to it.
    async fn resolve(
        &self,
        situation: &Situation,
        proposed: &Resolution,
    ) -> Result<Decision, ResolveError>;
}

/// Why a situation could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The resolver chose a decision that cannot be carried out.
    #[error("the conflict resolver's decision is not applicable: {0}")]
    Invalid(#[from] InvalidDecision),
    /// The resolver itself failed.
    #[error("the conflict resolver failed: {source}")]
    Resolver {
        /// Its error.
        source: Box<dyn std::error::Error + Send + Sync>,
        /// Whether trying the same situation again may succeed.
        retryable: bool,
    },
}

impl ResolveError {
    /// Wraps a resolver's own error.
    pub fn resolver(
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        retryable: bool,
    ) -> Self {
        ResolveError::Resolver {
            source: source.into(),
            retryable,
        }
    }

    /// Whether the applier may retry the transaction (an invalid decision never heals).
    pub fn is_retryable(&self) -> bool {
        match self {
            ResolveError::Invalid(_) => false,
            ResolveError::Resolver { retryable, .. } => *retryable,
        }
    }
}

/// Resolves a situation: the policies decide, then `resolver` (if any) may override them
/// for situations with conflicts.
pub async fn resolve(
    policies: &ConflictPolicies,
    resolver: Option<&dyn Resolver>,
    situation: &Situation,
) -> Result<Resolution, ResolveError> {
    let proposed = decide(policies, situation);
    let Some(resolver) = resolver.filter(|_| proposed.should_log()) else {
        return Ok(proposed);
    };
    let decision = resolver.resolve(situation, &proposed).await?;
    if decision == proposed.decision {
        return Ok(proposed);
    }
    Ok(Resolution::for_decision(situation, decision)?)
}

#[cfg(test)]
mod tests {
    use pgsync_names::QualifiedName;
    use pgsync_wal::Lsn;

    use super::*;
    use crate::policy::{ConflictKind, Policy};
    use crate::situation::{IncomingChange, LocalRow, Slot};
    use crate::stamp::{CommitTime, NodeId, WriteStamp};
    use crate::tombstone::Absence;

    fn stamp(t: i64, node: &str) -> WriteStamp {
        WriteStamp::new(CommitTime::from_pg_micros(t), NodeId::new(node))
    }

    fn change(table: &str, t: i64) -> IncomingChange {
        IncomingChange::new(
            QualifiedName::new("public", table),
            stamp(t, "b"),
            Lsn(0x10),
        )
    }

    /// Keeps the destination row for `public.ledger`, defers to the policies elsewhere.
    struct LedgerKeepsLocal;

    #[async_trait]
    impl Resolver for LedgerKeepsLocal {
        async fn resolve(
            &self,
            situation: &Situation,
            proposed: &Resolution,
        ) -> Result<Decision, ResolveError> {
            if situation.change.table.name == "ledger" {
                Ok(Decision::KeepLocal)
            } else {
                Ok(proposed.decision.clone())
            }
        }
    }

    struct Fixed(Decision);

    #[async_trait]
    impl Resolver for Fixed {
        async fn resolve(&self, _: &Situation, _: &Resolution) -> Result<Decision, ResolveError> {
            Ok(self.0.clone())
        }
    }

    struct Broken;

    #[async_trait]
    impl Resolver for Broken {
        async fn resolve(&self, _: &Situation, _: &Resolution) -> Result<Decision, ResolveError> {
            Err(ResolveError::resolver("lookup service unavailable", true))
        }
    }

    fn insert_over_older_row(table: &str) -> Situation {
        Situation::insert(
            change(table, 10),
            Slot::Present(LocalRow::written(stamp(5, "a"))),
        )
    }

    #[tokio::test]
    async fn a_custom_resolver_overrides_the_policy_for_its_table_only() {
        let policies = ConflictPolicies::uniform(Policy::LastWriteWins);
        let r: &dyn Resolver = &LedgerKeepsLocal;
        let ledger = resolve(&policies, Some(r), &insert_over_older_row("ledger"))
            .await
            .unwrap();
        assert_eq!(ledger.decision, Decision::KeepLocal);
        assert_eq!(ledger.conflicts[0].kind, ConflictKind::InsertExists);
        assert_eq!(ledger.conflicts[0].policy, None);
        let other = resolve(&policies, Some(r), &insert_over_older_row("orders"))
            .await
            .unwrap();
        assert_eq!(other.decision, Decision::ConvertToUpdate);
        assert_eq!(other.conflicts[0].policy, Some(Policy::LastWriteWins));
    }

    #[tokio::test]
    async fn a_resolver_is_not_consulted_without_a_conflict() {
        let s = Situation::insert(change("ledger", 10), Slot::Missing(Absence::NEVER_DELETED));
        let r: &dyn Resolver = &Broken;
        let res = resolve(&ConflictPolicies::default(), Some(r), &s)
            .await
            .unwrap();
        assert_eq!(res.decision, Decision::ApplyRemote);
    }

    #[tokio::test]
    async fn a_decision_that_cannot_be_carried_out_is_refused() {
        let r: &dyn Resolver = &Fixed(Decision::ConvertToDelete);
        let err = resolve(
            &ConflictPolicies::default(),
            Some(r),
            &insert_over_older_row("t"),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ResolveError::Invalid(_)), "{err}");
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn a_resolver_error_keeps_its_retry_classification() {
        let r: &dyn Resolver = &Broken;
        let err = resolve(
            &ConflictPolicies::default(),
            Some(r),
            &insert_over_older_row("t"),
        )
        .await
        .unwrap_err();
        assert!(err.is_retryable());
        assert!(err.to_string().contains("lookup service unavailable"));
    }
}
