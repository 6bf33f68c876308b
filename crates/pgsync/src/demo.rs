//! `pgsync demo`: two throwaway local clusters (the test kit), a small shop schema with
//! data on A, the task running both ways, orders written on A and reviews on B, and a live
//! view of rows flowing and of the lag, until Ctrl-C or `--duration`. Then it waits for B to catch up,
//! compares both sides table by table, and removes everything.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pgsync_task::TaskSpec;
use pgsync_task::forward::{self, Shutdown};
use pgsync_testkit::Cluster;
use tokio_postgres::Client;

use crate::Exit;
use crate::cli::DemoArgs;

const SCHEMA: &str = "
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE NOT NULL,
                        created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2) NOT NULL,
                       stock int NOT NULL CHECK (stock >= 0));
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
                     status text NOT NULL DEFAULT 'new', created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE order_items (order_id bigint REFERENCES orders ON DELETE CASCADE, product_id int REFERENCES products,
                          qty int NOT NULL, price numeric(10,2) NOT NULL, PRIMARY KEY (order_id, product_id));
CREATE TABLE reviews (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), product_id int NOT NULL REFERENCES products,
                      stars int NOT NULL CHECK (stars BETWEEN 1 AND 5), body text, created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON orders (customer_id);
INSERT INTO customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 200) g;
INSERT INTO products SELECT g, 'product ' || g, (g * 1.25)::numeric(10,2), 1000000 FROM generate_series(1, 50) g;
";

/// One order with one to three items, a stock update, and now and then a cancellation.
const ORDER: &str = "
WITH o AS (INSERT INTO orders (customer_id) VALUES (1 + floor(random() * 200)::int) RETURNING id),
     items AS (INSERT INTO order_items (order_id, product_id, qty, price)
               SELECT o.id, p.id, 1 + floor(random() * 3)::int, p.price
               FROM o, (SELECT id, price FROM products ORDER BY random() LIMIT 1 + floor(random() * 3)::int) p
               RETURNING product_id, qty)
UPDATE products SET stock = stock - items.qty FROM items WHERE products.id = items.product_id;
";
/// A review, written on B (keys are UUIDs, so both sides can insert without clashing).
const REVIEW: &str = "INSERT INTO reviews (product_id, stars, body)
                      VALUES (1 + floor(random() * 50)::int, 1 + floor(random() * 5)::int, 'written on B')";
const CANCEL: &str =
    "DELETE FROM orders WHERE id = (SELECT min(id) FROM orders WHERE status = 'new');";

const TABLES: [&str; 5] = ["customers", "products", "orders", "order_items", "reviews"];

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<Exit> {
    let mut out = std::io::stdout();
    writeln!(out, "starting two throwaway PostgreSQL clusters ...")?;
    let (a, b) = tokio::try_join!(
        Cluster::builder().database("shop").start(),
        Cluster::builder().database("shop").start()
    )
    .context("starting the demo clusters (scripts/setup.sh installs PostgreSQL)")?;
    let ca = a.client().await?;
    ca.batch_execute(SCHEMA)
        .await
        .context("creating the shop schema on A")?;
    let cb = b.client().await?;
    writeln!(out, "A: {}\nB: {}\n", a.dsn(), b.dsn())?;

    let toml = format!(
        "name = \"demo\"\n[source]\ndsn = \"{}\"\n[destination]\ndsn = \"{}\"\n[sync]\ntwo_way = true\n[objects]\ninclude = [\"public.*\"]\n",
        a.dsn(),
        b.dsn()
    );
    writeln!(out, "task file:\n{toml}")?;
    let spec = TaskSpec::from_toml(&toml, "demo")?;
    let (stop_task, shutdown) = Shutdown::new();
    let task = tokio::spawn({
        let spec = spec.clone();
        async move { forward::run(&spec, shutdown).await }
    });

    let (stop_load, mut load_stopped) = Shutdown::new();
    let load = tokio::spawn(drive_load(
        a.client().await?,
        args.rate,
        ORDER,
        load_stopped.clone(),
    ));
    // B gets writes once the task has created its tables.
    wait_for_table(&cb, "reviews", Duration::from_secs(60)).await?;
    let load_b = tokio::spawn(drive_load(
        b.client().await?,
        args.rate.div_ceil(5),
        REVIEW,
        load_stopped.clone(),
    ));
    let started = Instant::now();
    let deadline = args.duration.map(|s| started + Duration::from_secs(s));
    writeln!(
        out,
        "A <-> B is running: orders are written on A, reviews on B. Ctrl-C stops the demo.\n"
    )?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {}
        }
        if task.is_finished() || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let line = live_line(&ca, &cb, &spec, started).await;
        writeln!(out, "{line}")?;
    }
    stop_load.trigger();
    load_stopped.wait().await;
    load.await.context("the load generator panicked")??;
    load_b.await.context("the load generator panicked")??;

    writeln!(out, "\nload stopped; waiting for B to catch up ...")?;
    let converged = wait_equal(&ca, &cb, Duration::from_secs(60)).await;
    stop_task.trigger();
    let outcome = task.await.context("the task panicked")?;
    for t in TABLES {
        let (x, y) = (checksum(&ca, t).await?, checksum(&cb, t).await?);
        writeln!(
            out,
            "  {t:<12} A {:>6} rows  B {:>6} rows  {}",
            x.0,
            y.0,
            if x == y { "equal" } else { "DIFFERENT" }
        )?;
    }
    outcome.context("the task failed")?;
    if !converged {
        anyhow::bail!("B did not catch up with A within 60 s");
    }
    writeln!(
        out,
        "\nboth sides are equal; stopping and removing the clusters."
    )?;
    Ok(Exit::Ok)
}

async fn drive_load(
    client: Client,
    rate: u32,
    sql: &'static str,
    mut stop: Shutdown,
) -> anyhow::Result<()> {
    let every = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tick = tokio::time::interval(every);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            () = stop.wait() => return Ok(()),
            _ = tick.tick() => {}
        }
        client
            .batch_execute(sql)
            .await
            .context("writing the demo load")?;
        n += 1;
        if sql == ORDER && n.is_multiple_of(10) {
            client
                .batch_execute(CANCEL)
                .await
                .context("cancelling an order on A")?;
        }
    }
}

async fn live_line(a: &Client, b: &Client, spec: &TaskSpec, started: Instant) -> String {
    let mut parts = Vec::new();
    for t in ["orders", "reviews"] {
        let x = rows(a, t).await.unwrap_or(-1);
        let y = rows(b, t).await.unwrap_or(-1);
        parts.push(format!("{t} A {x} B {y}"));
    }
    let lag = match pgsync_task::status::read(spec).await {
        Ok(st) => st
            .directions
            .first()
            .and_then(|d| d.slot.as_ref())
            .and_then(|s| s.lag_bytes)
            .map_or("-".to_owned(), |b| format!("{b} bytes")),
        Err(_) => "-".to_owned(),
    };
    format!(
        "{:>4}s  {}  lag {lag}",
        started.elapsed().as_secs(),
        parts.join(" | ")
    )
}

async fn wait_for_table(c: &Client, table: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while rows(c, table).await.is_err() {
        if Instant::now() > deadline {
            anyhow::bail!("the task did not create {table} on B within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn rows(c: &Client, table: &str) -> anyhow::Result<i64> {
    Ok(c.query_one(
        &format!("SELECT count(*) FROM {}", pgsync_names::sql::Ident(table)),
        &[],
    )
    .await?
    .get(0))
}

async fn checksum(c: &Client, table: &str) -> anyhow::Result<(i64, String)> {
    let sql = format!(
        "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {} t",
        pgsync_names::sql::Ident(table)
    );
    let row = c.query_one(&sql, &[]).await?;
    Ok((row.get(0), row.get(1)))
}

async fn wait_equal(a: &Client, b: &Client, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let mut equal = true;
        for t in TABLES {
            if checksum(a, t).await.ok() != checksum(b, t).await.ok() {
                equal = false;
                break;
            }
        }
        if equal {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
