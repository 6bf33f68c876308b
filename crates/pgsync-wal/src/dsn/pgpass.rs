//! The libpq password file: `host:port:database:user:password` per line, `*` matching
//! anything, `\` escaping `:` and `\`, `#` starting a comment; the first matching line wins.
//!
//! libpq ignores a file that the group or others can read, and so does pgsync (with a
//! warning naming the fix), so that a password never comes from a file libpq would refuse.

use std::path::Path;

/// The password for the four fields, from `path`; None when the file is missing, not
/// private, or has no matching line.
pub(super) fn lookup(path: &Path, want: [&str; 4]) -> Option<String> {
    let text = read_private_file(path)?;
    find(&text, want)
}

fn read_private_file(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            "password file has group or world access; ignored (chmod 0600 it)"
        );
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// The first line whose four fields match.
pub(super) fn find(text: &str, want: [&str; 4]) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = split_line(line)?;
            let matches = fields[..4]
                .iter()
                .zip(want)
                .all(|(f, w)| f == "*" || f == w);
            matches.then(|| fields[4].clone())
        })
}

fn split_line(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.push(chars.next()?),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    (fields.len() == 5).then_some(fields)
}
