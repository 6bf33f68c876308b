//! `schema.name` as the catalog spells it (case-sensitive, unquoted), with a parser for
//! the forms users write in configs: `public.orders`, `"My Schema"."Orders"`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::NameError;
use crate::sql::Ident;

/// A schema-qualified object name, exactly as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QualifiedName {
    /// The schema (namespace).
    pub schema: String,
    /// The object's own name.
    pub name: String,
}

impl QualifiedName {
    /// A name from its two parts.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// Parses `schema.name`, each part either plain (folded to lower case, as PostgreSQL
    /// does) or double-quoted (kept as written, `""` for a quote).
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let parts = split_parts(text)?;
        match <[String; 2]>::try_from(parts) {
            Ok([schema, name]) => Ok(Self { schema, name }),
            Err(_) => Err(NameError::Malformed {
                text: text.into(),
                reason: "expected exactly two parts",
            }),
        }
    }

    /// The name quoted for SQL: `"schema"."name"`.
    pub fn quoted(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", Ident(&self.schema), Ident(&self.name))
    }
}

/// Splits a dotted name into parts, honouring double quotes. Plain parts are folded to
/// lower case; quoted parts are kept. Used by patterns too, which allow `*` and `?`.
pub(crate) fn split_parts(text: &str) -> Result<Vec<String>, NameError> {
    let bad = |reason| NameError::Malformed {
        text: text.to_owned(),
        reason,
    };
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(bad("unterminated double quote")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if c == '"' || c.is_whitespace() {
                    return Err(bad("unquoted parts cannot hold quotes or spaces"));
                }
                part.extend(c.to_lowercase());
                chars.next();
            }
        }
        if part.is_empty() {
            return Err(bad("empty part"));
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some('.') => continue,
            Some(_) => return Err(bad("a quoted part must be followed by '.' or the end")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_parts_fold_and_quoted_parts_keep_their_case() {
        assert_eq!(
            QualifiedName::parse("Public.Orders").unwrap(),
            QualifiedName::new("public", "orders")
        );
        assert_eq!(
            QualifiedName::parse(r#""My Schema"."Or""ders""#).unwrap(),
            QualifiedName::new("My Schema", "Or\"ders")
        );
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in ["orders", "a.b.c", "a.", "\"a.b", "a b.c", "\"a\"x.b", ""] {
            assert!(
                QualifiedName::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn display_quotes_both_parts() {
        assert_eq!(
            QualifiedName::new("app", "Order \"x\"").to_string(),
            r#""app"."Order ""x""""#
        );
    }
}
