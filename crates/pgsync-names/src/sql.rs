//! Quoting for SQL text. Every identifier pgsync puts into SQL goes through [`Ident`] (or
//! [`quote_ident`]) and every string value through [`Literal`] (or [`quote_literal`]), so a
//! table called `Order Items"; DROP TABLE x; --` is just a table name.

use std::fmt;

/// An identifier that displays double-quoted, with embedded quotes doubled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ident<'a>(pub &'a str);

impl fmt::Display for Ident<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for (i, part) in self.0.split('"').enumerate() {
            if i > 0 {
                f.write_str("\"\"")?;
            }
            f.write_str(part)?;
        }
        f.write_str("\"")
    }
}

/// A string value that displays as a SQL literal. Text with a backslash uses the `E''`
/// form so the result means the same whatever `standard_conforming_strings` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Literal<'a>(pub &'a str);

impl fmt::Display for Literal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains('\\') {
            write!(f, "E'{}'", self.0.replace('\\', "\\\\").replace('\'', "''"))
        } else {
            write!(f, "'{}'", self.0.replace('\'', "''"))
        }
    }
}

/// `name` double-quoted.
pub fn quote_ident(name: &str) -> String {
    Ident(name).to_string()
}

/// `value` as a SQL string literal.
pub fn quote_literal(value: &str) -> String {
    Literal(value).to_string()
}

/// A comma-separated list of quoted identifiers: `"a", "b"`.
pub fn ident_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, n) in names.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&quote_ident(n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_their_quotes_doubled() {
        assert_eq!(quote_ident("orders"), "\"orders\"");
        assert_eq!(quote_ident("Order \"Items\""), "\"Order \"\"Items\"\"\"");
        assert_eq!(quote_ident(""), "\"\"");
        assert_eq!(ident_list(["a", "B c"]), "\"a\", \"B c\"");
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b'c"), r"E'a\\b''c'");
    }
}
