//! pgoutput decoding throughput, on one core.
//!
//! * `pgbench_updates`: the stream of pgbench's simple-update load on `pgbench_accounts`
//!   (Begin, Update with the four columns, Commit), many small messages.
//! * `wide_inserts`: inserts of ten text columns of 2 to 8 kB each (TOAST-sized values),
//!   few large messages.
//!
//! Payloads are split off one buffer, as the replication stream splits XLogData frames off
//! its read buffer, so each is a shared `Bytes` and decoding slices it without copying.
//! Each workload is reported twice, as bytes/s and as messages/s.
//!
//! ```sh
//! cargo bench --bench decode
//! ```

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgsync_wal::Lsn;
use pgsync_wal::pgoutput::{
    Begin, ColumnValue, Commit, Decoder, Insert, Message, PgTimestamp, Tuple, Update, encode,
};

/// Encodes `msgs` into one buffer and splits it into one payload per message.
fn payloads(msgs: &[Message]) -> Vec<Bytes> {
    let mut buf = BytesMut::new();
    let mut lens = Vec::with_capacity(msgs.len());
    for m in msgs {
        let before = buf.len();
        encode(m, &mut buf).expect("encodable");
        lens.push(buf.len() - before);
    }
    lens.into_iter().map(|n| buf.split_to(n).freeze()).collect()
}

fn begin(xid: u32) -> Message {
    Message::Begin(Begin {
        final_lsn: Lsn(0x1_0000_0000 + u64::from(xid) * 200),
        commit_time: PgTimestamp(800_000_000_000_000 + i64::from(xid)),
        xid,
    })
}

fn commit(xid: u32) -> Message {
    let lsn = 0x1_0000_0000 + u64::from(xid) * 200;
    Message::Commit(Commit {
        commit_lsn: Lsn(lsn),
        end_lsn: Lsn(lsn + 48),
        commit_time: PgTimestamp(800_000_000_000_000 + i64::from(xid)),
    })
}

/// `UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid`, as
/// pgoutput sends it: aid, bid, abalance, and the char(84) filler.
fn pgbench_stream(txns: u32) -> Vec<Message> {
    let filler = " ".repeat(84);
    let mut msgs = Vec::new();
    for xid in 1000..1000 + txns {
        let aid = (xid * 7919 % 100_000).to_string();
        let bid = (xid % 10 + 1).to_string();
        let balance = (i64::from(xid) * 31 % 10_000 - 5000).to_string();
        let new = Tuple::from_values([
            ColumnValue::Text(aid.as_bytes()),
            ColumnValue::Text(bid.as_bytes()),
            ColumnValue::Text(balance.as_bytes()),
            ColumnValue::Text(filler.as_bytes()),
        ])
        .expect("tuple");
        msgs.push(begin(xid));
        msgs.push(Message::Update(Update {
            xid: None,
            relation: 16_396,
            old: None,
            new,
        }));
        msgs.push(commit(xid));
    }
    msgs
}

/// Transactions of ten inserts each, ten text columns of 2–8 kB.
fn wide_stream(rows: u32) -> Vec<Message> {
    let mut msgs = Vec::new();
    let mut xid = 5000;
    for r in 0..rows {
        if r % 10 == 0 {
            msgs.push(begin(xid));
        }
        let values: Vec<Vec<u8>> = (0..10u32)
            .map(|c| {
                let len = 2048 + ((r * 10 + c) * 613 % 6144) as usize;
                (0..len)
                    .map(|i| b'a' + ((i + c as usize) % 26) as u8)
                    .collect()
            })
            .collect();
        let new = Tuple::from_values(values.iter().map(|v| ColumnValue::Text(v))).expect("tuple");
        msgs.push(Message::Insert(Insert {
            xid: None,
            relation: 16_500,
            new,
        }));
        if r % 10 == 9 {
            msgs.push(commit(xid));
            xid += 1;
        }
    }
    msgs
}

fn decode_all(payloads: &[Bytes]) {
    let mut decoder = Decoder::new();
    for p in payloads {
        black_box(decoder.decode(black_box(p)).expect("valid"));
    }
}

/// Decodes and also walks every column of every tuple (what an applier does next).
fn decode_and_read_all(payloads: &[Bytes]) {
    let mut decoder = Decoder::new();
    for p in payloads {
        if let Message::Insert(Insert { new, .. }) | Message::Update(Update { new, .. }) =
            decoder.decode(black_box(p)).expect("valid")
        {
            for c in &new {
                black_box(c);
            }
        }
    }
}

fn bench(c: &mut Criterion, name: &str, msgs: &[Message]) {
    let payloads = payloads(msgs);
    let bytes: usize = payloads.iter().map(Bytes::len).sum();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("decode/bytes", |b| b.iter(|| decode_all(&payloads)));
    g.throughput(Throughput::Elements(payloads.len() as u64));
    g.bench_function("decode/messages", |b| b.iter(|| decode_all(&payloads)));
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("decode_and_read_columns/bytes", |b| {
        b.iter(|| decode_and_read_all(&payloads));
    });
    g.finish();
}

fn decoding(c: &mut Criterion) {
    bench(c, "pgbench_updates", &pgbench_stream(10_000));
    bench(c, "wide_inserts", &wide_stream(200));
}

criterion_group!(benches, decoding);
criterion_main!(benches);
