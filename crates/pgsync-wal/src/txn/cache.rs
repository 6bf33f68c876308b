//! The relation cache: what the latest Relation and Type messages said.
//!
//! Every Relation message replaces the entry for its OID with a new `Arc`, also in the
//! middle of a transaction; changes already assembled keep the `Arc` they were given, so a
//! change is always read with the layout that was current when it arrived.

use std::collections::HashMap;
use std::sync::Arc;

use pgsync_names::QualifiedName;

use crate::pgoutput::Relation;

/// Relations and types described by the stream so far, by OID.
#[derive(Debug, Default)]
pub struct RelationCache {
    relations: HashMap<u32, Arc<Relation>>,
    types: HashMap<u32, QualifiedName>,
}

impl RelationCache {
    /// The current description of relation `oid`.
    pub fn get(&self, oid: u32) -> Option<&Arc<Relation>> {
        self.relations.get(&oid)
    }

    /// The name of type `oid`, if a Type message described it (built-in types never are).
    pub fn type_name(&self, oid: u32) -> Option<&QualifiedName> {
        self.types.get(&oid)
    }

    /// All described relations.
    pub fn relations(&self) -> impl Iterator<Item = &Arc<Relation>> {
        self.relations.values()
    }

    /// Number of described relations.
    pub fn len(&self) -> usize {
        self.relations.len()
    }

    /// Whether no relation was described yet.
    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }

    pub(crate) fn insert(&mut self, rel: Relation) -> Arc<Relation> {
        let rel = Arc::new(rel);
        self.relations.insert(rel.oid, Arc::clone(&rel));
        rel
    }

    pub(crate) fn insert_type(&mut self, oid: u32, name: QualifiedName) {
        self.types.insert(oid, name);
    }
}
