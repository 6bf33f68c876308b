//! The two spellings of a connection string, reduced to the same list of `(key, value)`.
//!
//! ```text
//! host=db port=5432 user='app user' password='it\'s'      key/value (libpq conninfo)
//! postgres://app%20user:secret@db:5432/shop?sslmode=require   URI
//!             └user┘   └pass┘ └host┘└port┘└dbname┘└─ more keys ─┘
//! ```
//!
//! Key/value: `key = value` pairs separated by white space; a value may be in single
//! quotes (then it may hold spaces), and `\` escapes the next character in either form.
//! URI: `postgres://` or `postgresql://`, every part percent-decoded, `[...]` around an
//! IPv6 address, a comma list of hosts, query parameters as further keys. Later keys win,
//! as in libpq. Nothing here knows what a key means ([`super::ConnInfo`] does); errors
//! never quote a password.

use super::DsnError;

/// The pairs of `dsn`, in order.
pub(super) fn pairs(dsn: &str) -> Result<Vec<(String, String)>, DsnError> {
    let trimmed = dsn.trim();
    for scheme in ["postgresql://", "postgres://"] {
        if let Some(rest) = trimmed.strip_prefix(scheme) {
            return uri(rest);
        }
    }
    key_values(trimmed)
}

fn syntax(reason: impl Into<String>) -> DsnError {
    DsnError::new(
        None,
        format!(
            "{} (write e.g. \"host=127.0.0.1 port=5432 user=postgres dbname=shop\" or \
             \"postgres://user@host:5432/shop\")",
            reason.into()
        ),
    )
}

/// libpq key/value syntax.
fn key_values(s: &str) -> Result<Vec<(String, String)>, DsnError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(syntax(format!("missing \"=\" after \"{key}\"")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(syntax(format!(
                            "the quoted value of {key} has no closing quote"
                        )));
                    }
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// `[user[:password]@][host[:port][,...]][/dbname][?key=value&...]` (after the scheme).
fn uri(rest: &str) -> Result<Vec<(String, String)>, DsnError> {
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = main.split_once('/').unwrap_or((main, ""));
    let mut out = Vec::new();
    let hosts = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                out.push(("user".to_owned(), decode(user, "the user name")?));
            }
            if let Some(p) = password {
                out.push(("password".to_owned(), decode_secret(p)?));
            }
            hosts
        }
        None => authority,
    };
    let mut host_list = Vec::new();
    let mut port_list = Vec::new();
    for spec in hosts.split(',').filter(|h| !h.is_empty()) {
        let (host, port) = if let Some(v6) = spec.strip_prefix('[') {
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| syntax(format!("\"[{v6}\" has no closing \"]\"")))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| syntax(format!("unexpected \"{p}\" after \"[{addr}]\"")))?,
                ),
            };
            (addr.to_owned(), port)
        } else {
            match spec.split_once(':') {
                Some((h, p)) => (decode(h, "the host")?, Some(p)),
                None => (decode(spec, "the host")?, None),
            }
        };
        host_list.push(host);
        port_list.extend(port.map(str::to_owned));
    }
    if !host_list.is_empty() {
        out.push(("host".to_owned(), host_list.join(",")));
    }
    if !port_list.is_empty() {
        out.push(("port".to_owned(), port_list.join(",")));
    }
    if !path.is_empty() {
        out.push(("dbname".to_owned(), decode(path, "the database name")?));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| syntax(format!("the URL parameter \"{pair}\" has no \"=value\"")))?;
        let key = decode(k, "a parameter name")?;
        let value = if key == "password" {
            decode_secret(v)?
        } else {
            decode(v, &format!("the value of {key}"))?
        };
        out.push((key, value));
    }
    Ok(out)
}

fn decode(s: &str, what: &str) -> Result<String, DsnError> {
    percent_decode(s).ok_or_else(|| {
        syntax(format!(
            "{what} \"{s}\" in the URL has a bad percent-escape or is not UTF-8"
        ))
    })
}

/// As [`decode`], without echoing the text.
fn decode_secret(s: &str) -> Result<String, DsnError> {
    percent_decode(s)
        .ok_or_else(|| syntax("the password in the URL has a bad percent-escape or is not UTF-8"))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
