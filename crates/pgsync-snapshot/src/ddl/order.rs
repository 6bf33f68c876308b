//! Topological order of pre-data objects.
//!
//! Kahn's algorithm over the `pg_depend` edges, always taking the ready object with the
//! lowest oid: oids grow with creation time, so among independent objects the source's
//! own creation order is kept, and a cycle (which `pg_depend` can contain, e.g. a function
//! returning a table's row type used in that table's default) is broken at its oldest
//! object instead of failing.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::catalog::ObjectKey;

/// Orders `nodes` so that every object comes after the objects it depends on.
pub(crate) fn sort(nodes: &[ObjectKey], edges: &[(ObjectKey, ObjectKey)]) -> Vec<ObjectKey> {
    let present: HashSet<ObjectKey> = nodes.iter().copied().collect();
    let rank = |k: &ObjectKey| -> (u8, u32) {
        match *k {
            ObjectKey::Schema(o) => (0, o),
            ObjectKey::Extension(o) => (1, o),
            ObjectKey::Type(o)
            | ObjectKey::Sequence(o)
            | ObjectKey::Table(o)
            | ObjectKey::View(o)
            | ObjectKey::Function(o) => (2, o),
        }
    };
    let mut waiting_on: HashMap<ObjectKey, usize> = nodes.iter().map(|k| (*k, 0)).collect();
    let mut dependents: HashMap<ObjectKey, Vec<ObjectKey>> = HashMap::new();
    let mut seen = HashSet::new();
    for (from, to) in edges {
        if from != to && present.contains(from) && present.contains(to) && seen.insert((from, to)) {
            *waiting_on.entry(*from).or_default() += 1;
            dependents.entry(*to).or_default().push(*from);
        }
    }
    let mut ready: BTreeSet<((u8, u32), ObjectKey)> = nodes
        .iter()
        .filter(|k| waiting_on[k] == 0)
        .map(|k| (rank(k), *k))
        .collect();
    let mut left: BTreeSet<((u8, u32), ObjectKey)> = nodes.iter().map(|k| (rank(k), *k)).collect();
    let mut out = Vec::with_capacity(nodes.len());
    while !left.is_empty() {
        let next = match ready.pop_first() {
            Some(n) => n,
            // A cycle: take the oldest object left and let the server judge.
            None => *left.first().expect("non-empty"),
        };
        if !left.remove(&next) {
            continue;
        }
        out.push(next.1);
        for d in dependents.get(&next.1).into_iter().flatten() {
            if let Some(w) = waiting_on.get_mut(d) {
                *w = w.saturating_sub(1);
                if *w == 0 && left.contains(&(rank(d), *d)) {
                    ready.insert((rank(d), *d));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first_and_creation_order_breaks_ties() {
        use ObjectKey::*;
        let nodes = [Table(30), Type(40), Schema(1), View(50), Function(20)];
        let edges = [
            (Table(30), Type(40)),
            (View(50), Table(30)),
            (View(50), Function(20)),
        ];
        assert_eq!(
            sort(&nodes, &edges),
            vec![Schema(1), Function(20), Type(40), Table(30), View(50)]
        );
    }

    #[test]
    fn a_cycle_is_broken_at_its_oldest_object() {
        use ObjectKey::*;
        let nodes = [Table(10), Function(11)];
        let edges = [(Table(10), Function(11)), (Function(11), Table(10))];
        assert_eq!(sort(&nodes, &edges), vec![Table(10), Function(11)]);
    }
}
