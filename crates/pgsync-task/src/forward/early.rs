//! When the stream hands a streamed transaction's changes to the applier before its
//! commit (see pgsync-apply's `eager.rs` for why and what keeps it safe).
//!
//! The applier has one destination connection, so early work is allowed only for a
//! streamed transaction that is the one thing under way from its first change on: no
//! completed transaction waiting to be applied, no other streamed transaction open. It
//! ends (rolled back; the transaction is then applied whole at its commit) as soon as
//! anything else happens: another transaction completes, another streamed transaction
//! sends a change, a (sub)transaction abort. A transaction whose early work ended never
//! starts again (its first changes are gone from the destination transaction).

use std::collections::HashSet;

use pgsync_apply::Applier;
use pgsync_wal::txn::Change;
use pgsync_wal::{Lsn, Transaction};

/// The stream side of early apply.
#[derive(Debug, Default)]
pub(super) struct Early {
    /// Whether early apply is used at all (loop prevention must not need the whole
    /// transaction, and the applier's configuration must allow it).
    enabled: bool,
    /// Streamed transactions whose first change was seen (early or not), until their
    /// commit or abort.
    seen: HashSet<u32>,
}

impl Early {
    pub(super) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            seen: HashSet::new(),
        }
    }

    /// A change of streamed transaction `xid` arrived; `alone`: nothing else is under way
    /// (no completed transaction waiting, no other open stream).
    pub(super) async fn change(
        &mut self,
        applier: &mut Applier,
        xid: u32,
        change: Change,
        lsn: Lsn,
        alone: bool,
    ) {
        let first = self.seen.insert(xid);
        match applier.eager_xid() {
            Some(x) if x == xid => {
                applier.eager_change(xid, change, lsn).await;
            }
            Some(_) => applier.eager_abandon().await,
            None if first && alone && self.enabled && applier.eager_possible() => {
                applier.eager_change(xid, change, lsn).await;
            }
            None => {}
        }
    }

    /// Streamed transaction `xid` (or a subtransaction of it) was aborted on the source.
    pub(super) async fn aborted(&mut self, applier: &mut Applier, xid: u32, subxid: u32) {
        if xid == subxid {
            self.seen.remove(&xid);
        }
        if applier.eager_xid() == Some(xid) {
            applier.eager_abandon().await;
        }
    }

    /// A transaction completed. True when it was the one applied early and is now
    /// committed; otherwise any early work is rolled back and the caller applies `txn`
    /// as usual (`waiting`: transactions completed before it are not applied yet).
    pub(super) async fn completed(
        &mut self,
        applier: &mut Applier,
        txn: &Transaction,
        waiting: bool,
    ) -> Result<bool, pgsync_apply::ApplyError> {
        if txn.streamed {
            self.seen.remove(&txn.xid);
        }
        match applier.eager_xid() {
            Some(x) if x == txn.xid && !waiting => applier.eager_commit(txn).await,
            Some(_) => {
                applier.eager_abandon().await;
                Ok(false)
            }
            None => Ok(false),
        }
    }
}
