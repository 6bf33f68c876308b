//! Finding the PostgreSQL server programs.
//!
//! Order: `PGSYNC_PG_BIN` (explicit, and an error when it is wrong rather than a silent
//! fallback), then `pg_config --bindir` (whatever build is on PATH), then the newest
//! `/usr/lib/postgresql/<major>/bin` (Debian/Ubuntu layout, where `pg_config` on PATH is
//! often only the client's).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Result, TestkitError};

/// The environment variable that selects a server build.
pub const PG_BIN_ENV: &str = "PGSYNC_PG_BIN";

const REQUIRED: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// A directory of PostgreSQL server programs and the major version they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    dir: PathBuf,
    major: u32,
    version: String,
}

impl PgBinaries {
    /// Finds the server binaries from the process environment (see the module doc).
    pub fn discover() -> Result<Self> {
        Self::discover_with(|key| std::env::var_os(key).map(PathBuf::from))
    }

    /// Like [`discover`](Self::discover), reading variables through `env` (for tests).
    pub fn discover_with(env: impl Fn(&str) -> Option<PathBuf>) -> Result<Self> {
        if let Some(dir) = env(PG_BIN_ENV).filter(|d| !d.as_os_str().is_empty()) {
            return Self::from_dir(dir);
        }
        let mut searched = Vec::new();
        match pg_config_bindir() {
            Some(dir) => match Self::from_dir(&dir) {
                Ok(found) => return Ok(found),
                Err(_) => searched.push(format!(
                    "`pg_config --bindir` = {} (no server)",
                    dir.display()
                )),
            },
            None => searched.push("`pg_config --bindir` (no pg_config on PATH)".to_owned()),
        }
        for dir in debian_bindirs(Path::new("/usr/lib/postgresql")) {
            if let Ok(found) = Self::from_dir(&dir) {
                return Ok(found);
            }
        }
        searched.push("/usr/lib/postgresql/*/bin (none with a server)".to_owned());
        searched.insert(0, format!("${PG_BIN_ENV} (unset)"));
        Err(TestkitError::NoBinaries {
            searched: searched.join("; "),
        })
    }

    /// Uses `dir`, which must hold `initdb`, `pg_ctl` and `postgres`.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        for program in REQUIRED {
            if !dir.join(program).is_file() {
                return Err(TestkitError::BadBinDir {
                    dir,
                    missing: program,
                });
            }
        }
        let out = Command::new(dir.join("postgres"))
            .arg("--version")
            .output()
            .map_err(TestkitError::io(format!(
                "running {}/postgres --version",
                dir.display()
            )))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let major = parse_major(&text).ok_or_else(|| TestkitError::Command {
            program: "postgres --version".into(),
            status: out.status.to_string(),
            output: format!("unrecognised version line {text:?}"),
        })?;
        let version = text.rsplit(") ").next().unwrap_or(&text).to_owned();
        Ok(Self {
            dir,
            major,
            version,
        })
    }

    /// The `bin/` directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of one program in it (`pgbench`, `pg_dump`, `psql`, ...).
    pub fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The major version, e.g. 15 or 18.
    pub fn major(&self) -> u32 {
        self.major
    }

    /// The full version as `postgres --version` prints it, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub fn version(&self) -> &str {
        &self.version
    }
}

fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// `/usr/lib/postgresql/<major>/bin`, newest major first.
fn debian_bindirs(root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    found.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    found.into_iter().map(|(_, p)| p).collect()
}

/// `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` -> 15; `... 9.6.24` -> 9.
fn parse_major(line: &str) -> Option<u32> {
    let version = line.split_whitespace().nth(2)?;
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_versions_parse_from_version_lines() {
        assert_eq!(
            parse_major("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("postgres (PostgreSQL) 18.6"), Some(18));
        assert_eq!(parse_major("postgres (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(parse_major("garbage"), None);
    }

    #[test]
    fn an_empty_bin_dir_is_refused_naming_the_missing_program() {
        let empty = tempfile::tempdir().unwrap();
        let err = PgBinaries::discover_with(|_| Some(empty.path().to_owned())).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                TestkitError::BadBinDir {
                    missing: "initdb",
                    ..
                }
            ),
            "{text}"
        );
        assert!(text.contains("PGSYNC_PG_BIN"), "{text}");
    }

    #[test]
    fn debian_layout_is_searched_newest_first() {
        let root = tempfile::tempdir().unwrap();
        for v in ["13", "15", "9", "notaversion"] {
            std::fs::create_dir_all(root.path().join(v).join("bin")).unwrap();
        }
        let dirs = debian_bindirs(root.path());
        let majors: Vec<_> = dirs
            .iter()
            .map(|d| {
                d.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(majors, ["15", "13", "9"]);
    }
}
