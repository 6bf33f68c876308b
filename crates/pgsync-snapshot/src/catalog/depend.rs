//! Dependencies between the objects pgsync creates, from `pg_depend`.
//!
//! `pg_depend` links catalog rows (a default expression, a constraint, a view's rewrite
//! rule, an array type). Each end is resolved to the object pgsync creates as a unit:
//!
//! ```text
//! pg_attrdef (default)        -> its table        pg_type (row type)   -> its table
//! pg_constraint (CHECK)       -> its table/domain  pg_type (array)      -> element type
//! pg_rewrite (_RETURN)        -> its view          pg_type (multirange) -> its range
//! extension member            -> the extension (marked as needed, no edge)
//! ```
//! Edges that belong to post-data objects (PK/UNIQUE/FK/EXCLUDE constraints, indexes,
//! triggers, other rules) are dropped, and so is a sequence's `OWNED BY` link (applied
//! after its table exists). The plan sorts pre-data objects topologically on the rest.

use std::collections::{BTreeSet, HashMap};

use tokio_postgres::Client;

use super::{Catalog, ch, oid, src};
use crate::error::Result;

/// An object pgsync creates as one statement (or one group of statements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKey {
    /// A schema.
    Schema(u32),
    /// An extension.
    Extension(u32),
    /// A user-defined type.
    Type(u32),
    /// A sequence.
    Sequence(u32),
    /// A table.
    Table(u32),
    /// A view or materialized view.
    View(u32),
    /// A function, procedure or aggregate.
    Function(u32),
}

impl ObjectKey {
    /// The synced relation with this oid.
    pub(crate) fn of_relation(cat: &Catalog, oid: u32) -> Option<Self> {
        if cat.tables.iter().any(|t| t.oid == oid) {
            Some(Self::Table(oid))
        } else if cat.views.iter().any(|v| v.oid == oid) {
            Some(Self::View(oid))
        } else if cat.sequences.iter().any(|s| s.oid == oid && !s.identity) {
            Some(Self::Sequence(oid))
        } else {
            None
        }
    }

    /// The synced type with this oid (not row types, which resolve separately).
    pub(crate) fn of_type(cat: &Catalog, oid: u32) -> Option<Self> {
        cat.types
            .iter()
            .any(|t| t.oid == oid)
            .then_some(Self::Type(oid))
    }
}

/// How a `pg_type` row maps to a synced object.
struct TypeInfo {
    relid: u32,
    elem: u32,
    range_of_multirange: u32,
}

struct Resolver<'a> {
    cat: &'a Catalog,
    types: HashMap<u32, TypeInfo>,
    attrdefs: HashMap<u32, u32>,
    /// Constraint oid -> (table or domain oid, is CHECK / domain constraint).
    constraints: HashMap<u32, (u32, bool)>,
    /// Rewrite rule oid -> view oid, for `_RETURN` rules only.
    view_rules: HashMap<u32, u32>,
    members: HashMap<(u32, u32), u32>,
    classes: Classes,
}

#[derive(Default)]
struct Classes {
    class: u32,
    type_: u32,
    proc_: u32,
    attrdef: u32,
    constraint: u32,
    rewrite: u32,
}

enum Resolved {
    Key(ObjectKey),
    Extension(u32),
    Nothing,
}

impl Resolver<'_> {
    fn resolve(&self, class: u32, obj: u32) -> Resolved {
        if let Some(ext) = self.members.get(&(class, obj)) {
            return Resolved::Extension(*ext);
        }
        let c = &self.classes;
        let key = if class == c.class {
            ObjectKey::of_relation(self.cat, obj).or_else(|| {
                // A composite type's own pg_class row.
                self.types
                    .iter()
                    .find(|(_, t)| t.relid == obj)
                    .and_then(|(oid, _)| ObjectKey::of_type(self.cat, *oid))
            })
        } else if class == c.type_ {
            return self.resolve_type(obj, 0);
        } else if class == c.proc_ {
            self.cat
                .functions
                .iter()
                .any(|f| f.oid == obj)
                .then_some(ObjectKey::Function(obj))
        } else if class == c.attrdef {
            self.attrdefs
                .get(&obj)
                .and_then(|t| ObjectKey::of_relation(self.cat, *t))
        } else if class == c.constraint {
            match self.constraints.get(&obj) {
                Some((owner, true)) => ObjectKey::of_relation(self.cat, *owner)
                    .or_else(|| ObjectKey::of_type(self.cat, *owner)),
                _ => None,
            }
        } else if class == c.rewrite {
            self.view_rules
                .get(&obj)
                .and_then(|v| ObjectKey::of_relation(self.cat, *v))
        } else {
            None
        };
        key.map_or(Resolved::Nothing, Resolved::Key)
    }

    fn resolve_type(&self, obj: u32, depth: u8) -> Resolved {
        if let Some(ext) = self.members.get(&(self.classes.type_, obj)) {
            return Resolved::Extension(*ext);
        }
        if let Some(k) = ObjectKey::of_type(self.cat, obj) {
            return Resolved::Key(k);
        }
        let Some(info) = self.types.get(&obj) else {
            return Resolved::Nothing;
        };
        if depth > 4 {
            return Resolved::Nothing;
        }
        if info.elem != 0 {
            return self.resolve_type(info.elem, depth + 1);
        }
        if info.range_of_multirange != 0 {
            return self.resolve_type(info.range_of_multirange, depth + 1);
        }
        if info.relid != 0 {
            return self.resolve(self.classes.class, info.relid);
        }
        Resolved::Nothing
    }
}

/// Reads the dependency edges among synced objects, and the extensions they need.
pub(super) async fn read(
    client: &Client,
    cat: &Catalog,
) -> Result<(Vec<(ObjectKey, ObjectKey)>, Vec<u32>)> {
    let row = client
        .query_one(
            "SELECT 'pg_catalog.pg_class'::pg_catalog.regclass::oid,
                    'pg_catalog.pg_type'::pg_catalog.regclass::oid,
                    'pg_catalog.pg_proc'::pg_catalog.regclass::oid,
                    'pg_catalog.pg_attrdef'::pg_catalog.regclass::oid,
                    'pg_catalog.pg_constraint'::pg_catalog.regclass::oid,
                    'pg_catalog.pg_rewrite'::pg_catalog.regclass::oid",
            &[],
        )
        .await
        .map_err(src("reading catalog oids"))?;
    let classes = Classes {
        class: oid(&row, 0),
        type_: oid(&row, 1),
        proc_: oid(&row, 2),
        attrdef: oid(&row, 3),
        constraint: oid(&row, 4),
        rewrite: oid(&row, 5),
    };
    let multirange = if cat.server_major >= 14 {
        "COALESCE((SELECT r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid = t.oid), 0)"
    } else {
        "0::oid"
    };
    let types = client
        .query(
            &format!(
                "SELECT t.oid, t.typrelid, t.typelem, {multirange} FROM pg_catalog.pg_type t
                 WHERE t.oid >= 16384"
            ),
            &[],
        )
        .await
        .map_err(src("reading types for dependencies"))?
        .iter()
        .map(|r| {
            (
                oid(r, 0),
                TypeInfo {
                    relid: oid(r, 1),
                    elem: oid(r, 2),
                    range_of_multirange: oid(r, 3),
                },
            )
        })
        .collect();
    let attrdefs = client
        .query("SELECT oid, adrelid FROM pg_catalog.pg_attrdef", &[])
        .await
        .map_err(src("reading defaults for dependencies"))?
        .iter()
        .map(|r| (oid(r, 0), oid(r, 1)))
        .collect();
    let constraints = client
        .query(
            "SELECT oid, CASE WHEN conrelid <> 0 THEN conrelid ELSE contypid END, contype::text
             FROM pg_catalog.pg_constraint WHERE oid >= 16384",
            &[],
        )
        .await
        .map_err(src("reading constraints for dependencies"))?
        .iter()
        .map(|r| (oid(r, 0), (oid(r, 1), ch(r, 2) == 'c')))
        .collect();
    let view_rules = client
        .query(
            "SELECT oid, ev_class FROM pg_catalog.pg_rewrite WHERE rulename = '_RETURN' AND oid >= 16384",
            &[],
        )
        .await
        .map_err(src("reading view rules for dependencies"))?
        .iter()
        .map(|r| (oid(r, 0), oid(r, 1)))
        .collect();
    let members = client
        .query(
            "SELECT classid, objid, refobjid FROM pg_catalog.pg_depend WHERE deptype = 'e'",
            &[],
        )
        .await
        .map_err(src("reading extension members"))?
        .iter()
        .map(|r| ((oid(r, 0), oid(r, 1)), oid(r, 2)))
        .collect();
    let edges = client
        .query(
            "SELECT classid, objid, refclassid, refobjid, deptype::text FROM pg_catalog.pg_depend
             WHERE deptype IN ('n', 'a') AND objid >= 16384 AND refobjid >= 16384",
            &[],
        )
        .await
        .map_err(src("reading dependencies"))?;
    let resolver = Resolver {
        cat,
        types,
        attrdefs,
        constraints,
        view_rules,
        members,
        classes,
    };
    let mut out = BTreeSet::new();
    let mut needed = BTreeSet::new();
    for r in &edges {
        let (class, obj, refclass, refobj) = (oid(r, 0), oid(r, 1), oid(r, 2), oid(r, 3));
        let from = match resolver.resolve(class, obj) {
            Resolved::Key(k) => k,
            _ => continue,
        };
        // A sequence's link to the column that owns it is applied after the table exists.
        if matches!(from, ObjectKey::Sequence(_)) && ch(r, 4) == 'a' {
            continue;
        }
        match resolver.resolve(refclass, refobj) {
            Resolved::Key(to) if to != from => {
                out.insert((from, to));
            }
            Resolved::Extension(e) => {
                needed.insert(e);
            }
            _ => {}
        }
    }
    Ok((out.into_iter().collect(), needed.into_iter().collect()))
}
