//! Pointing PGSYNC_PG_BIN at a directory without a server gives an error that names the
//! variable and the missing program. (Its own test binary: it changes the environment.)

use pgsync_testkit::{Cluster, PG_BIN_ENV, TestkitError};

#[tokio::test]
async fn an_empty_pg_bin_dir_fails_with_a_message_that_says_how_to_fix_it() {
    let empty = tempfile::tempdir().unwrap();
    // SAFETY: this test binary has this single test, so no other thread reads the env.
    unsafe { std::env::set_var(PG_BIN_ENV, empty.path()) };
    let err = Cluster::start_default().await.unwrap_err();
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
    assert!(text.contains(&empty.path().display().to_string()), "{text}");
    assert!(text.contains("PGSYNC_PG_BIN"), "{text}");
    assert!(text.contains("initdb"), "{text}");
}
