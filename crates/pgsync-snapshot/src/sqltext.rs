//! Renaming inside SQL text the server printed (`pg_get_*def`, `pg_get_expr`).
//!
//! pgsync has no SQL parser here, so it works on tokens: a small lexer that knows
//! identifiers (plain and quoted), string literals (`'..'`, `E'..'`, dollar-quoted),
//! comments and punctuation, enough never to touch text inside a literal or a function
//! body. Two rewrites are built on it:
//!
//! * qualified names: `schema.name` pairs (the source session ran with `search_path = ''`,
//!   so every user object is printed qualified) and `'schema.name'::regclass` literals;
//! * column names: bare identifiers that are not a function name (`f(`), not qualified
//!   (`x.col`, `col.x`) and not a type after `::`, optionally only inside parentheses
//!   (index and constraint definitions, where the object's own name sits outside).
//!
//! Identity mappings never reach this module, so unmapped text stays byte for byte what
//! the server printed. Known limit: a column renamed to or from a word that also appears
//! unquoted as a keyword in the same text (`zone` in `time zone`) would be renamed there
//! too; views, rules and routine bodies that mention renamed tables or columns are refused
//! by the plan instead of rewritten.

use pgsync_names::QualifiedName;
use pgsync_names::sql::{Ident, Literal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Unquoted identifier or keyword.
    Word,
    /// Double-quoted identifier.
    Quoted,
    /// String literal of any form.
    Str,
    Space,
    Punct(u8),
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

fn lex(text: &str) -> Vec<Token> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = b[i];
        let kind = if c.is_ascii_whitespace() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            Kind::Space
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            Kind::Space
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0usize;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth = depth.saturating_sub(1);
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            Kind::Space
        } else if c == b'"' {
            i = skip_quoted(b, i, b'"', false);
            Kind::Quoted
        } else if c == b'\'' {
            i = skip_quoted(b, i, b'\'', false);
            Kind::Str
        } else if c == b'$' && dollar_tag(b, i).is_some() {
            let tag_len = dollar_tag(b, i).unwrap_or(1);
            let tag = &b[i..i + tag_len];
            i += tag_len;
            while i < b.len() && !b[i..].starts_with(tag) {
                i += 1;
            }
            i = (i + tag_len).min(b.len());
            Kind::Str
        } else if is_ident_start(c) {
            while i < b.len() && is_ident_char(b[i]) {
                i += 1;
            }
            let word = &text[start..i];
            if i < b.len() && b[i] == b'\'' && matches!(word, "E" | "e" | "B" | "b" | "X" | "x") {
                i = skip_quoted(b, i, b'\'', word.eq_ignore_ascii_case("e"));
                Kind::Str
            } else {
                Kind::Word
            }
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
            Kind::Other
        } else {
            i += 1;
            Kind::Punct(c)
        };
        out.push(Token {
            kind,
            start,
            end: i,
        });
    }
    out
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// Skips a quoted run starting at `i` (the opening quote); doubled quotes stay inside,
/// and with `backslash` so do `\x` escapes. Returns the index after the closing quote.
fn skip_quoted(b: &[u8], mut i: usize, q: u8, backslash: bool) -> usize {
    i += 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// The length of a `$tag$` opener at `i`, if there is one (`$1` is a parameter).
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1 - i)
}

/// The identifier a word or quoted token stands for (unquoted words fold to lower case).
fn ident_value(text: &str, t: &Token) -> Option<String> {
    let s = &text[t.start..t.end];
    match t.kind {
        Kind::Word => Some(s.to_lowercase()),
        Kind::Quoted => Some(s[1..s.len().saturating_sub(1)].replace("\"\"", "\"")),
        _ => None,
    }
}

fn is_ident(t: &Token) -> bool {
    matches!(t.kind, Kind::Word | Kind::Quoted)
}

/// Index of the next non-space token after `i`.
fn next(tokens: &[Token], i: usize) -> Option<usize> {
    (i + 1..tokens.len()).find(|&j| tokens[j].kind != Kind::Space)
}

/// Index of the previous non-space token before `i`.
fn prev(tokens: &[Token], i: usize) -> Option<usize> {
    (0..i).rev().find(|&j| tokens[j].kind != Kind::Space)
}

/// Rewrites `schema.name` pairs (and `'schema.name'::regclass` literals) for which `map`
/// returns a new name. The pair must not be part of a longer dotted name on the left.
pub(crate) fn rewrite_qualified(
    text: &str,
    map: &dyn Fn(&QualifiedName) -> Option<QualifiedName>,
) -> String {
    let tokens = lex(text);
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        if is_ident(&t)
            && !prev(&tokens, i).is_some_and(|p| tokens[p].kind == Kind::Punct(b'.'))
            && let Some(dot) = next(&tokens, i)
            && tokens[dot].kind == Kind::Punct(b'.')
            && let Some(n) = next(&tokens, dot)
            && is_ident(&tokens[n])
        {
            let name = QualifiedName::new(
                ident_value(text, &t).unwrap_or_default(),
                ident_value(text, &tokens[n]).unwrap_or_default(),
            );
            if let Some(new) = map(&name) {
                out.push_str(&text[copied..t.start]);
                out.push_str(&new.to_string());
                copied = tokens[n].end;
            }
            i = n + 1;
            continue;
        }
        if t.kind == Kind::Str
            && text[t.start..].starts_with('\'')
            && is_regclass_cast(text, &tokens, i)
        {
            let inner = &text[t.start + 1..t.end - 1].replace("''", "'");
            if let Ok(name) = QualifiedName::parse(inner)
                && let Some(new) = map(&name)
            {
                out.push_str(&text[copied..t.start]);
                out.push_str(&Literal(&new.to_string()).to_string());
                copied = t.end;
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

fn is_regclass_cast(text: &str, tokens: &[Token], i: usize) -> bool {
    let Some(c1) = next(tokens, i) else {
        return false;
    };
    let Some(c2) = next(tokens, c1) else {
        return false;
    };
    let Some(w) = next(tokens, c2) else {
        return false;
    };
    tokens[c1].kind == Kind::Punct(b':')
        && tokens[c2].kind == Kind::Punct(b':')
        && tokens[w].kind == Kind::Word
        && text[tokens[w].start..tokens[w].end].eq_ignore_ascii_case("regclass")
}

/// Rewrites bare column references for which `map` returns a new name. With
/// `inside_parens`, only identifiers inside parentheses are considered.
pub(crate) fn rewrite_columns(
    text: &str,
    inside_parens: bool,
    map: &dyn Fn(&str) -> Option<String>,
) -> String {
    let tokens = lex(text);
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate() {
        match t.kind {
            Kind::Punct(b'(') => depth += 1,
            Kind::Punct(b')') => depth = depth.saturating_sub(1),
            Kind::Word | Kind::Quoted if !inside_parens || depth > 0 => {
                let before = prev(&tokens, i).map(|p| tokens[p].kind);
                let after = next(&tokens, i).map(|n| tokens[n].kind);
                let is_ref = !matches!(before, Some(Kind::Punct(b'.') | Kind::Punct(b':')))
                    && !matches!(after, Some(Kind::Punct(b'.') | Kind::Punct(b'(')));
                if is_ref
                    && let Some(name) = ident_value(text, t)
                    && let Some(new) = map(&name)
                {
                    out.push_str(&text[copied..t.start]);
                    out.push_str(&Ident(&new).to_string());
                    copied = t.end;
                }
            }
            _ => {}
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// The text after the `n`-th top-level parenthesised group (empty when there is none).
pub(crate) fn after_paren_groups(text: &str, n: usize) -> &str {
    let mut depth = 0usize;
    let mut closed = 0usize;
    for t in lex(text) {
        match t.kind {
            Kind::Punct(b'(') => depth += 1,
            Kind::Punct(b')') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    closed += 1;
                    if closed == n {
                        return &text[t.end..];
                    }
                }
            }
            _ => {}
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str, n: &str) -> QualifiedName {
        QualifiedName::new(s, n)
    }

    #[test]
    fn qualified_names_are_renamed_but_literals_and_bodies_are_not() {
        let map = |n: &QualifiedName| (n == &q("app", "Orders")).then(|| q("sales", "orders"));
        let text = r#"SELECT app."Orders".x FROM app."Orders" WHERE s = 'app."Orders"' AND $f$ app."Orders" $f$"#;
        let out = rewrite_qualified(text, &map);
        assert_eq!(
            out,
            r#"SELECT "sales"."orders".x FROM "sales"."orders" WHERE s = 'app."Orders"' AND $f$ app."Orders" $f$"#
        );
    }

    #[test]
    fn regclass_literals_follow_the_sequence_rename() {
        let map = |n: &QualifiedName| (n.schema == "app").then(|| q("app2", &n.name));
        let out = rewrite_qualified("nextval('app.\"My seq\"'::regclass)", &map);
        assert_eq!(out, "nextval('\"app2\".\"My seq\"'::regclass)");
    }

    #[test]
    fn column_references_are_renamed_but_functions_types_and_fields_are_not() {
        let map = |c: &str| match c {
            "total" => Some("amount".to_owned()),
            "Qty" => Some("qty".to_owned()),
            "lower" => Some("nope".to_owned()),
            "text" => Some("nope".to_owned()),
            _ => None,
        };
        let text = r#"CHECK (((total > (0)::numeric) AND ("Qty" > 0) AND (lower(x) <> (y).total) AND (z)::text IS NOT NULL))"#;
        assert_eq!(
            rewrite_columns(text, true, &map),
            r#"CHECK ((("amount" > (0)::numeric) AND ("qty" > 0) AND (lower(x) <> (y).total) AND (z)::text IS NOT NULL))"#
        );
    }

    #[test]
    fn an_index_name_outside_parentheses_is_left_alone() {
        let map = |c: &str| (c == "total").then(|| "amount".to_owned());
        let text = "CREATE INDEX total ON app.t USING btree (total) WHERE (total > 0)";
        assert_eq!(
            rewrite_columns(text, true, &map),
            r#"CREATE INDEX total ON app.t USING btree ("amount") WHERE ("amount" > 0)"#
        );
    }

    #[test]
    fn escaped_and_unterminated_strings_do_not_break_the_lexer() {
        let map = |c: &str| (c == "a").then(|| "b".to_owned());
        assert_eq!(
            rewrite_columns(r"(E'it\'s a' || a)", true, &map),
            r#"(E'it\'s a' || "b")"#
        );
        assert_eq!(
            rewrite_columns("(a || 'open", true, &map),
            "(\"b\" || 'open"
        );
        assert_eq!(rewrite_columns("(a /* a", true, &map), "(\"b\" /* a");
    }
}
