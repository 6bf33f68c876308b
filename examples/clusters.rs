//! Starts two throwaway PostgreSQL clusters configured for logical replication and keeps
//! them up until Ctrl-C (or `--seconds N`), printing how to connect to each.
//!
//! ```sh
//! cargo run --example clusters -- --seconds 30
//! ```
#![allow(clippy::print_stdout)]

use std::time::Duration;

use pgsync_testkit::Cluster;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: Option<u64> = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .map(|s| s.parse())
        .transpose()?;
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("shop").start(),
        Cluster::builder().database("shop").start()
    )?;
    for (name, c) in [("A", &a), ("B", &b)] {
        let version: String = c
            .client()
            .await?
            .query_one("SELECT version()", &[])
            .await?
            .get(0);
        println!("cluster {name}: psql \"{}\"\n           {version}", c.dsn());
    }
    match seconds {
        Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
        None => {
            println!("Ctrl-C stops both clusters and deletes them.");
            tokio::signal::ctrl_c().await?;
        }
    }
    Ok(())
}
