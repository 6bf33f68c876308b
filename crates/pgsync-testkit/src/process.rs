//! Postmaster process control by signal, and clean-up of clusters whose test died.
//!
//! Signals rather than `pg_ctl stop`: they work the same for root and for the server's own
//! user, need no fork, and can run inside `Drop`. A test process killed mid-run cannot stop
//! its servers, so every cluster directory records its owner's pid, and the first cluster
//! a later process starts reaps the directories of owners that are gone.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::error::{Result, TestkitError};

/// Prefix of every cluster directory under the temp dir.
pub(crate) const DIR_PREFIX: &str = "pgsync-cluster-";
/// File in the cluster directory holding the pid of the process that owns it.
pub(crate) const OWNER_FILE: &str = "owner.pid";

/// How a running server is asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shutdown {
    /// SIGINT: roll back sessions, checkpoint, exit.
    Fast,
    /// SIGQUIT: exit at once; the next start runs crash recovery.
    Immediate,
}

/// The postmaster's pid from `postmaster.pid`, if the file exists and parses.
pub(crate) fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines()
        .next()?
        .trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 0)
}

/// True while `pid` exists and is not a zombie.
pub(crate) fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold spaces.
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|s| s.trim_start().chars().next())
                != Some('Z')
        }
        // SAFETY: kill with signal 0 only checks for existence.
        Err(_) => unsafe { libc::kill(pid, 0) == 0 },
    }
}

/// Signals the postmaster of `data_dir` and waits until it has exited.
pub(crate) fn shutdown(data_dir: &Path, how: Shutdown, timeout: Duration) -> Result<()> {
    let Some(pid) = postmaster_pid(data_dir) else {
        return Ok(());
    };
    let signal = match how {
        Shutdown::Fast => libc::SIGINT,
        Shutdown::Immediate => libc::SIGQUIT,
    };
    // SAFETY: sending a signal to a pid read from the server's own lock file.
    unsafe { libc::kill(pid, signal) };
    let deadline = Instant::now() + timeout;
    while alive(pid) && data_dir.join("postmaster.pid").exists() {
        if Instant::now() > deadline {
            // SAFETY: as above; last resort so that no server outlives its test.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(TestkitError::Stop {
                pid,
                seconds: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // An immediate shutdown can leave the lock file; the process is what matters.
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Once per process: stops and removes clusters whose owning process is gone.
pub(crate) fn reap_orphans_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for dir in orphan_dirs(&std::env::temp_dir()) {
            let data = dir.join("data");
            let _ = shutdown(&data, Shutdown::Immediate, Duration::from_secs(10));
            tracing::info!(dir = %dir.display(), "removed a cluster left behind by a dead test");
            let _ = std::fs::remove_dir_all(&dir);
        }
    });
}

fn orphan_dirs(tmp: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(DIR_PREFIX))
        .map(|e| e.path())
        .filter(|dir| {
            std::fs::read_to_string(dir.join(OWNER_FILE))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .is_some_and(|owner| !alive(owner))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_pid_is_not() {
        assert!(alive(std::process::id() as i32));
        assert!(!alive(i32::MAX - 7));
    }

    #[test]
    fn only_directories_of_dead_owners_are_orphans() {
        let tmp = tempfile::tempdir().unwrap();
        let mine = tmp.path().join(format!("{DIR_PREFIX}mine"));
        let dead = tmp.path().join(format!("{DIR_PREFIX}dead"));
        let other = tmp.path().join("unrelated");
        for (dir, owner) in [
            (&mine, std::process::id() as i32),
            (&dead, i32::MAX - 7),
            (&other, i32::MAX - 7),
        ] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join(OWNER_FILE), owner.to_string()).unwrap();
        }
        assert_eq!(orphan_dirs(tmp.path()), vec![dead]);
    }
}
