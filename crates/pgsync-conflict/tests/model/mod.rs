//! A model of two-way sync between two nodes, with the decision logic of this crate in the
//! applier's place.
//!
//! Each node holds a table as `key -> (v, balance, last writer)` plus the tombstones of its
//! local deletes. Applications write locally; every local commit is appended to the node's
//! outgoing stream (commit order). The other node applies that stream in order, at any pace:
//! a step delivers the next few changes of one direction, and whatever is left is delivered
//! at the end, as logical replication would. Applying a change does what pgsync's applier
//! does: look at the local map (row and last writer at the keys the change touches, or the
//! tombstone), build a [`Situation`], [`decide`], carry out the [`Resolution`]. Applied
//! changes are not sent back (loop prevention).
//!
//! Clocks: one global clock, advanced by every local commit (synchronised clocks, so a
//! local write always commits after anything the node has seen); a `Together` step lets
//! both nodes commit in the same microsecond to exercise the node-id tie-break.

use std::collections::BTreeMap;

use pgsync_conflict::{
    CommitTime, ConflictCounters, ConflictPolicies, Decision, Eviction, IncomingChange, LastWriter,
    LocalRow, Situation, Slot, TombstoneRetention, TombstoneSet, WriteStamp, decide,
};
use pgsync_names::QualifiedName;
use pgsync_wal::Lsn;
use proptest::prelude::*;

pub(crate) const KEYS: u8 = 3;

/// One node's copy of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) v: i64,
    pub(crate) balance: i64,
    pub(crate) stamp: WriteStamp,
}

/// A change as the stream carries it (new values; the old balance, as REPLICA IDENTITY FULL
/// would provide it, for delta columns).
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Insert {
        key: u8,
        v: i64,
        balance: i64,
    },
    Update {
        key: u8,
        to: Option<u8>,
        v: i64,
        balance: i64,
        old_balance: i64,
    },
    Delete {
        key: u8,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) op: Op,
    pub(crate) stamp: WriteStamp,
}

/// What an application does on one node. Ops that do not fit the node's current data
/// (insert of a present key, update of a missing one) are turned into ones that do, so
/// every generated step writes something.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    Insert(u8, i64),
    Update(u8, i64),
    Increment(u8, i64),
    Move(u8, u8),
    Delete(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    A,
    B,
}

#[derive(Debug, Clone)]
pub(crate) enum Step {
    Write(Side, Write),
    /// Both nodes commit at the same instant.
    Together(Write, Write),
    /// The node applies up to `n` more changes from the other's stream.
    Deliver(Side, usize),
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) id: &'static str,
    pub(crate) rows: BTreeMap<u8, Row>,
    pub(crate) tombstones: TombstoneSet<u8>,
    pub(crate) outbox: Vec<Change>,
    /// How many of the other node's changes this node has applied.
    pub(crate) applied: usize,
    /// Commit time of the last change applied from the other node (the watermark).
    pub(crate) applied_through: Option<CommitTime>,
    pub(crate) counters: ConflictCounters,
    /// Sum of the increments this node's applications made, per key.
    pub(crate) increments: BTreeMap<u8, i64>,
}

impl Node {
    pub(crate) fn new(id: &'static str, initial: &BTreeMap<u8, Row>) -> Self {
        Self {
            id,
            rows: initial.clone(),
            tombstones: TombstoneSet::new(),
            outbox: Vec::new(),
            applied: 0,
            applied_through: None,
            counters: ConflictCounters::new(),
            increments: BTreeMap::new(),
        }
    }

    fn stamp(&self, now: i64) -> WriteStamp {
        WriteStamp::new(
            CommitTime::from_pg_micros(now),
            pgsync_conflict::NodeId::new(self.id),
        )
    }

    /// A local commit by an application.
    pub(crate) fn write(&mut self, w: &Write, now: i64) {
        let stamp = self.stamp(now);
        let op = self.op_for(w);
        match &op {
            Op::Insert { key, balance, .. } => {
                *self.increments.entry(*key).or_default() += balance;
            }
            Op::Update {
                key,
                balance,
                old_balance,
                ..
            } => {
                *self.increments.entry(*key).or_default() += balance - old_balance;
            }
            Op::Delete { .. } => {}
        }
        match &op {
            Op::Insert { key, v, balance } => {
                let row = Row {
                    v: *v,
                    balance: *balance,
                    stamp: stamp.clone(),
                };
                self.rows.insert(*key, row);
            }
            Op::Update {
                key,
                to,
                v,
                balance,
                ..
            } => {
                let row = Row {
                    v: *v,
                    balance: *balance,
                    stamp: stamp.clone(),
                };
                match to {
                    Some(to) => {
                        self.rows.remove(key);
                        self.tombstones.record(*key, stamp.clone());
                        self.rows.insert(*to, row);
                    }
                    None => {
                        self.rows.insert(*key, row);
                    }
                }
            }
            Op::Delete { key } => {
                self.rows.remove(key);
                self.tombstones.record(*key, stamp.clone());
            }
        }
        self.outbox.push(Change { op, stamp });
    }

    /// The change an application's write makes here.
    fn op_for(&self, w: &Write) -> Op {
        let present = |k: &u8| self.rows.contains_key(k);
        match *w {
            Write::Insert(k, v) | Write::Update(k, v) if !present(&k) => Op::Insert {
                key: k,
                v,
                balance: 0,
            },
            Write::Increment(k, d) if !present(&k) => Op::Insert {
                key: k,
                v: 0,
                balance: d,
            },
            Write::Move(k, _) | Write::Delete(k) if !present(&k) => Op::Insert {
                key: k,
                v: 0,
                balance: 0,
            },
            Write::Insert(k, v) | Write::Update(k, v) => self.update(k, None, Some(v), 0),
            Write::Increment(k, d) => self.update(k, None, None, d),
            Write::Move(k, to) if k == to || present(&to) => {
                self.update(k, None, Some(i64::from(to)), 0)
            }
            Write::Move(k, to) => self.update(k, Some(to), None, 0),
            Write::Delete(k) => Op::Delete { key: k },
        }
    }

    fn update(&self, key: u8, to: Option<u8>, v: Option<i64>, delta: i64) -> Op {
        let old = &self.rows[&key];
        Op::Update {
            key,
            to,
            v: v.unwrap_or(old.v),
            balance: old.balance + delta,
            old_balance: old.balance,
        }
    }

    fn slot(&self, key: u8) -> Slot {
        match self.rows.get(&key) {
            Some(row) => Slot::Present(LocalRow::written(row.stamp.clone())),
            None => Slot::Missing(self.tombstones.absence(&key)),
        }
    }

    /// Applies one change from the other node, as the applier does.
    pub(crate) fn apply(
        &mut self,
        c: &Change,
        policies: &ConflictPolicies,
        delta: bool,
        honour_keep_writer: bool,
    ) -> Result<(), String> {
        let incoming =
            IncomingChange::new(QualifiedName::new("public", "t"), c.stamp.clone(), Lsn(1));
        let s = match c.op {
            Op::Insert { key, .. } => Situation::insert(incoming, self.slot(key)),
            Op::Update { key, to: None, .. } => Situation::update(incoming, self.slot(key)),
            Op::Update {
                key, to: Some(to), ..
            } => Situation::update_moving_key(incoming, self.slot(key), self.slot(to)),
            Op::Delete { key } => Situation::delete(incoming, self.slot(key)),
        };
        let s = if delta {
            s.with_delta_columns(["balance"])
        } else {
            s
        };
        let res = decide(policies, &s);
        self.counters.add_resolution(&res);
        let (old_key, new_key) = match c.op {
            Op::Insert { key, .. } => (None, Some(key)),
            Op::Update { key, to, .. } => (Some(key), Some(to.unwrap_or(key))),
            Op::Delete { key } => (Some(key), None),
        };
        for e in &res.evict {
            match e {
                Eviction::NewKeyRow => {
                    self.rows
                        .remove(&new_key.ok_or("evicting a row at no new key")?);
                }
                Eviction::Collision(_) => return Err("no UNIQUE collisions in this model".into()),
            }
        }
        let new_row = |balance| match c.op {
            Op::Insert { v, .. } | Op::Update { v, .. } => Ok(Row {
                v,
                balance,
                stamp: c.stamp.clone(),
            }),
            Op::Delete { .. } => Err(format!("{:?} wants a new row from a delete", res.decision)),
        };
        let image_balance = match c.op {
            Op::Insert { balance, .. } | Op::Update { balance, .. } => balance,
            Op::Delete { .. } => 0,
        };
        let diff = match c.op {
            Op::Update {
                balance,
                old_balance,
                ..
            } => balance - old_balance,
            _ => 0,
        };
        let with_delta = !res.delta_columns.is_empty();
        match &res.decision {
            Decision::ApplyRemote => match c.op {
                Op::Delete { key } => {
                    self.rows.remove(&key);
                }
                Op::Insert { key, .. } => {
                    self.rows.insert(key, new_row(image_balance)?);
                }
                Op::Update { key, to, .. } => {
                    let local = self
                        .rows
                        .remove(&key)
                        .ok_or("apply_remote of a missing row")?;
                    let balance = if with_delta {
                        local.balance + diff
                    } else {
                        image_balance
                    };
                    self.rows.insert(to.unwrap_or(key), new_row(balance)?);
                }
            },
            Decision::ConvertToInsert | Decision::ConvertToUpdate => {
                let key = new_key.ok_or("conversion without a new key")?;
                let exists = self.rows.contains_key(&key);
                if exists != (res.decision == Decision::ConvertToUpdate) {
                    return Err(format!("{:?} but row present = {exists}", res.decision));
                }
                self.rows.insert(key, new_row(image_balance)?);
            }
            Decision::ConvertToDelete => {
                self.rows
                    .remove(&old_key.ok_or("convert_to_delete without an old key")?);
            }
            Decision::KeepLocal => {
                if with_delta {
                    let key = old_key.ok_or("delta without an old key")?;
                    let row = self.rows.get_mut(&key).ok_or("delta on a missing row")?;
                    row.balance += diff;
                    match &res.keep_writer {
                        Some(LastWriter::Known(_)) if !honour_keep_writer => {
                            row.stamp = c.stamp.clone();
                        }
                        Some(LastWriter::Known(stamp)) => row.stamp = stamp.clone(),
                        other => return Err(format!("keep_local with delta kept {other:?}")),
                    }
                }
            }
            Decision::Skip => {}
            Decision::Fail { reason } => return Err(reason.clone()),
        }
        Ok(())
    }
}

/// Both nodes and the global clock.
#[derive(Debug, Clone)]
pub(crate) struct World {
    pub(crate) a: Node,
    pub(crate) b: Node,
    pub(crate) now: i64,
    pub(crate) policies: ConflictPolicies,
    pub(crate) delta: bool,
    /// Whether the applier keeps the row's last writer on `keep_local` with deltas (as
    /// [`Resolution::keep_writer`](pgsync_conflict::Resolution) asks) or lets the applying
    /// transaction's stamp replace it, as a plain UPDATE would.
    pub(crate) honour_keep_writer: bool,
    /// How tombstones are pruned (after every local commit and every applied change);
    /// `None` keeps them all.
    pub(crate) retention: Option<TombstoneRetention>,
}

impl World {
    pub(crate) fn new(
        policies: ConflictPolicies,
        initial: &BTreeMap<u8, Row>,
        delta: bool,
    ) -> Self {
        Self {
            a: Node::new("a", initial),
            b: Node::new("b", initial),
            now: 1,
            policies,
            delta,
            honour_keep_writer: true,
            retention: None,
        }
    }

    fn node(&mut self, side: Side) -> &mut Node {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// `side` applies up to `n` more changes from the other node's stream, in order.
    pub(crate) fn deliver(&mut self, side: Side, n: usize) -> Result<(), String> {
        let (to, from) = match side {
            Side::A => (&mut self.a, &self.b),
            Side::B => (&mut self.b, &self.a),
        };
        let end = from.outbox.len().min(to.applied.saturating_add(n));
        for c in &from.outbox[to.applied..end] {
            to.apply(c, &self.policies, self.delta, self.honour_keep_writer)?;
            to.applied_through = Some(c.stamp.commit_time);
            if let Some(retention) = &self.retention {
                to.tombstones.prune(retention, to.applied_through);
            }
        }
        to.applied = end;
        Ok(())
    }

    pub(crate) fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Write(side, w) => {
                self.now += 1;
                let now = self.now;
                self.node(*side).write(w, now);
                self.prune(*side);
            }
            Step::Together(wa, wb) => {
                self.now += 1;
                self.a.write(wa, self.now);
                self.b.write(wb, self.now);
                self.prune(Side::A);
                self.prune(Side::B);
            }
            Step::Deliver(side, n) => self.deliver(*side, *n)?,
        }
        Ok(())
    }

    fn prune(&mut self, side: Side) {
        if let Some(retention) = self.retention {
            let node = self.node(side);
            node.tombstones.prune(&retention, node.applied_through);
        }
    }

    /// Runs the steps, then delivers everything left in both directions.
    pub(crate) fn run(&mut self, steps: &[Step]) -> Result<(), String> {
        for s in steps {
            self.step(s)?;
        }
        self.deliver(Side::A, usize::MAX)?;
        self.deliver(Side::B, usize::MAX)
    }
}

pub(crate) fn write_strategy(delta_only: bool) -> BoxedStrategy<Write> {
    let key = 0..KEYS;
    if delta_only {
        return prop_oneof![
            (key.clone(), 1..100i64).prop_map(|(k, v)| Write::Update(k, v)),
            (key, -50..50i64).prop_map(|(k, d)| Write::Increment(k, d)),
        ]
        .boxed();
    }
    prop_oneof![
        (key.clone(), 1..100i64).prop_map(|(k, v)| Write::Insert(k, v)),
        (key.clone(), 1..100i64).prop_map(|(k, v)| Write::Update(k, v)),
        (key.clone(), 0..KEYS).prop_map(|(k, to)| Write::Move(k, to)),
        key.prop_map(Write::Delete),
    ]
    .boxed()
}

pub(crate) fn steps_strategy(delta_only: bool, max_len: usize) -> impl Strategy<Value = Vec<Step>> {
    let side = prop_oneof![Just(Side::A), Just(Side::B)];
    let step = prop_oneof![
        4 => (side.clone(), write_strategy(delta_only)).prop_map(|(s, w)| Step::Write(s, w)),
        1 => (write_strategy(delta_only), write_strategy(delta_only))
            .prop_map(|(a, b)| Step::Together(a, b)),
        3 => (side, 1..4usize).prop_map(|(s, n)| Step::Deliver(s, n)),
    ];
    proptest::collection::vec(step, 1..max_len)
}
