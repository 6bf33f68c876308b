//! Who runs the server processes.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (as CI does) the kit runs
//! `initdb`, `pg_ctl` and `postgres` as an unprivileged system user, created once, and hands
//! it the cluster directory; clients stay root and connect over loopback or the socket.
//! As a normal user everything runs as that user.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{Result, TestkitError};

/// The environment variable that names the OS user servers run as when we are root.
pub const OS_USER_ENV: &str = "PGSYNC_TEST_OS_USER";
const DEFAULT_USER: &str = "pgsynctest";

/// The identity server programs run under.
#[derive(Debug, Clone)]
pub(crate) enum RunAs {
    /// The current user (not root).
    Me,
    /// An unprivileged user, reached with `runuser`.
    User { name: String, uid: u32, gid: u32 },
}

impl RunAs {
    /// Decides once per process; creates the system user if needed.
    pub(crate) fn get() -> Result<Self> {
        static RUN_AS: OnceLock<Result<RunAs, String>> = OnceLock::new();
        RUN_AS
            .get_or_init(|| Self::decide().map_err(|e| e.to_string()))
            .clone()
            .map_err(|reason| TestkitError::OsUser {
                user: user_name(),
                reason,
            })
    }

    fn decide() -> Result<Self> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(Self::Me);
        }
        let name = user_name();
        if lookup(&name).is_none() {
            let out = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(&name)
                .output()
                .map_err(TestkitError::io("running useradd"))?;
            // Another test process may have created it at the same moment (exit 9).
            if !out.status.success() && lookup(&name).is_none() {
                return Err(TestkitError::OsUser {
                    user: name,
                    reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
        }
        let (uid, gid) = lookup(&name).ok_or_else(|| TestkitError::OsUser {
            user: name.clone(),
            reason: "user not found after useradd".into(),
        })?;
        Ok(Self::User { name, uid, gid })
    }

    /// A command for `program` that runs under this identity.
    pub(crate) fn command(&self, program: impl AsRef<OsStr>) -> Command {
        match self {
            Self::Me => Command::new(program),
            Self::User { name, .. } => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", name, "--"]).arg(program);
                cmd
            }
        }
    }

    /// Gives `path` to this identity (a no-op when we are not root).
    pub(crate) fn own(&self, path: &Path) -> Result<()> {
        if let Self::User { uid, gid, .. } = self {
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                .map_err(TestkitError::io(format!("chown {}", path.display())))?;
        }
        Ok(())
    }
}

fn user_name() -> String {
    std::env::var(OS_USER_ENV).unwrap_or_else(|_| DEFAULT_USER.to_owned())
}

/// uid and gid of `name`, through `id` so that NSS is honoured without unsafe FFI.
fn lookup(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(name).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())?
    };
    Some((id("-u")?, id("-g")?))
}
