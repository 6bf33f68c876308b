//! Task state and the runner lock on a real server.

use pgsync_task::Direction;
use pgsync_task::state::{self, Phase, RunnerLock, StateError};
use pgsync_testkit::Cluster;

#[tokio::test]
async fn phases_are_recorded_per_task_and_direction() {
    let b = Cluster::start_default().await.unwrap();
    let c = b.client().await.unwrap();
    state::ensure_schema(&c).await.unwrap();
    state::ensure_schema(&c).await.unwrap();
    assert_eq!(
        state::phase(&c, "shop", Direction::Forward).await.unwrap(),
        None
    );
    state::set_phase(&c, "shop", Direction::Forward, Phase::Full)
        .await
        .unwrap();
    state::set_phase(&c, "shop", Direction::Forward, Phase::Incremental)
        .await
        .unwrap();
    state::set_phase(&c, "shop", Direction::Reverse, Phase::Created)
        .await
        .unwrap();
    assert_eq!(
        state::phase(&c, "shop", Direction::Forward).await.unwrap(),
        Some(Phase::Incremental)
    );
    assert_eq!(
        state::phase(&c, "shop", Direction::Reverse).await.unwrap(),
        Some(Phase::Created)
    );
    assert_eq!(
        state::phase(&c, "other", Direction::Forward).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn a_second_runner_is_refused_naming_the_holder_until_the_first_ends() {
    let b = Cluster::start_default().await.unwrap();
    let first_session = b.client().await.unwrap();
    let first_pid: i32 = first_session
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let first = RunnerLock::try_acquire(first_session, "shop")
        .await
        .unwrap();

    let err = RunnerLock::try_acquire(b.client().await.unwrap(), "shop")
        .await
        .unwrap_err();
    match &err {
        StateError::Locked { task, pid } => {
            assert_eq!(task, "shop");
            assert_eq!(*pid, first_pid, "{err}");
        }
        other => panic!("expected Locked, got {other}"),
    }
    assert!(err.to_string().contains("already being run"), "{err}");
    // Another task is independent.
    let _other = RunnerLock::try_acquire(b.client().await.unwrap(), "billing")
        .await
        .unwrap();

    let standby = tokio::spawn({
        let session = b.client().await.unwrap();
        async move { RunnerLock::acquire(session, "shop").await }
    });
    drop(first);
    let taken = tokio::time::timeout(std::time::Duration::from_secs(30), standby).await;
    assert!(taken.expect("standby never got the lock").unwrap().is_ok());
}
