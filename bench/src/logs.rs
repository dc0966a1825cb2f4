//! Row 6, logs: the sink's documents per second into nx-27017 (the
//! MongoDB-wire server the tests use) against raw `insert_many` of the same
//! documents with the mongodb driver to the same server; and write →
//! visible: a line a shell job prints, until a client following the run's
//! output through the master API receives it, against one raw insert and
//! read back on the same server.

use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use jiff::Timestamp;
use mongodb::bson::{Document, doc};
use sandcron::ids::RunId;
use sandcron::logstore::mongo::{MongoConfig, MongoLogStore};
use sandcron::logstore::{LogStore, Sink, SinkConfig};
use sandcron::run::{OutputChunk, RunRecord, RunStatus, StreamKind};
use sandcron_tests::Api;
use sandcron_tests::mongo::MongoServer;
use serde_json::json;

use crate::Ctx;
use crate::inproc::{job_name, run_record};
use crate::report::{Stats, rate, ratio, spread};
use crate::servers::Cluster;

/// Bytes of text per output chunk: a typical log line.
const LINE: &str = "2026-11-22T10:00:00Z INFO processed batch 42: 1000 rows in 12 ms, 0 errors, queue depth 17\n";

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let chunks = ctx.pick(20_000, 60_000);
    let records = ctx.pick(2_000, 6_000);
    let repeats = ctx.pick(2, 3);
    let mongo = tokio::task::spawn_blocking(MongoServer::start_in_memory).await?;
    let uri = mongo.uri();

    let mut sink_chunks = Vec::new();
    let mut raw_chunks = Vec::new();
    let mut sink_records = Vec::new();
    let mut sink_ended = Vec::new();
    for round in 0..repeats {
        sink_chunks.push(sink_rate(&uri, &format!("sink-chunks-{round}"), chunks, Records::None).await?);
        raw_chunks.push(raw_rate(&uri, &format!("raw-chunks-{round}"), chunks).await?);
        let distinct = Records::OnePerRun(2 * records);
        sink_records.push(sink_rate(&uri, &format!("sink-records-{round}"), 0, distinct).await?);
        let ended = Records::RunningThenEnded(records);
        sink_ended.push(sink_rate(&uri, &format!("sink-ended-{round}"), 0, ended).await?);
    }
    let sink_chunks = Stats::of(&sink_chunks);
    let raw_chunks = Stats::of(&raw_chunks);
    let sink_records = Stats::of(&sink_records);
    let sink_ended = Stats::of(&sink_ended);
    let raw_roundtrip = raw_visible(&uri, ctx.pick(50, 200)).await?;
    drop(mongo);

    let visible = write_to_visible(ctx.pick(30, 100)).await?;
    let med = |s: Option<Stats>| s.map_or(f64::NAN, |s| s.median);
    let span = |s: Option<Stats>| s.map_or("–".into(), |s| format!("{}–{}", rate(s.min), rate(s.max)));

    let report = &mut ctx.report;
    report.heading("6. Logs: sink throughput and write → visible");
    report.note(format!(
        "nx-27017 0.8.1 (`--data-dir memory`) on loopback. Sink: `Sink` over `MongoLogStore`, default batching \
         (500 events / 100 ms), {chunks} output chunks of {} bytes from 10 runs, or {} run records: one \
         (`succeeded`) for each of as many runs, or `running` then `succeeded` for each of {records} runs (a \
         record that a later outcome of its run supersedes within a batch is not written, so those runs \
         cost one write each; the row counts records handed to the sink); timed until `flush()` returns. Raw: the same chunk documents \
         with the mongodb driver's `insert_many` (unordered, 500 per call) into another collection of the \
         same server. Median of {repeats} rounds, min–max shown.",
        LINE.len(),
        2 * records
    ));
    report.table(
        &["writer", "documents/s (median)", "min–max", "vs raw insert_many"],
        &[
            vec![
                "sink: output chunks".into(),
                rate(med(sink_chunks)),
                span(sink_chunks),
                ratio(med(sink_chunks), med(raw_chunks)),
            ],
            vec![
                "sink: run records, one per run (conditional replaces, one `update` command per batch)".into(),
                rate(med(sink_records)),
                span(sink_records),
                ratio(med(sink_records), med(raw_chunks)),
            ],
            vec![
                "sink: run records, `running` + `succeeded` of each run in one batch".into(),
                rate(med(sink_ended)),
                span(sink_ended),
                ratio(med(sink_ended), med(raw_chunks)),
            ],
            vec![
                "raw `insert_many`, same documents as the chunks".into(),
                rate(med(raw_chunks)),
                span(raw_chunks),
                "1.00×".into(),
            ],
        ],
    );
    report.note(
        "Write → visible: 1 master + 1 worker on etcd and nx-27017; a shell job prints `date +%s%N` every \
         100 ms; the harness follows the run's output through the master API (`follow=true` long-poll) and \
         takes, for each line, the instant it arrived minus the instant printed in it. Comparison: one \
         document inserted and read back with the driver on the same server.",
    );
    report.table(
        &["path", "median (p99; min–max)", "ratio"],
        &[
            vec![
                "guest line → visible through the master API".into(),
                spread(visible),
                ratio(med(visible), med(raw_roundtrip)),
            ],
            vec![
                "raw insert_one + find_one".into(),
                spread(raw_roundtrip),
                "1.00×".into(),
            ],
        ],
    );
    Ok(())
}

/// Which run records [`sink_rate`] sends.
#[derive(Clone, Copy)]
enum Records {
    None,
    /// This many runs, one final record each.
    OnePerRun(usize),
    /// This many runs, `running` and then `succeeded` each.
    RunningThenEnded(usize),
}

/// Documents (chunks and records) handed to the sink per second, until all
/// of them are stored: `chunks` output chunks, then the `records`.
async fn sink_rate(uri: &str, database: &str, chunks: usize, records: Records) -> anyhow::Result<f64> {
    let store = MongoLogStore::connect(&MongoConfig {
        uri: uri.to_owned(),
        database: database.to_owned(),
        ..MongoConfig::default()
    })
    .await?;
    let (sink, task) = Sink::new(store as std::sync::Arc<dyn LogStore>, SinkConfig::default());
    let handle = tokio::spawn(task.run());
    let runs: Vec<RunId> = (0..10).map(|_| RunId::generate()).collect();
    let started = Instant::now();
    for i in 0..chunks {
        sink.chunk(OutputChunk {
            run_id: runs[i % runs.len()],
            seq: (i / runs.len()) as u64,
            stream: StreamKind::Stdout,
            at: Timestamp::now(),
            data: LINE.to_owned(),
            expire_at: None,
        })
        .await;
    }
    let ended = |mut record: RunRecord| {
        record.status = RunStatus::Succeeded;
        record.ended_at = Some(Timestamp::now());
        record
    };
    let sent = match records {
        Records::None => 0,
        Records::OnePerRun(n) => {
            for i in 0..n {
                sink.record(ended(run_record(job_name(i % 100), Timestamp::now())))
                    .await;
            }
            n
        }
        Records::RunningThenEnded(n) => {
            for i in 0..n {
                let record = run_record(job_name(i % 100), Timestamp::now());
                sink.record(record.clone()).await;
                sink.record(ended(record)).await;
            }
            2 * n
        }
    };
    sink.flush().await;
    let elapsed = started.elapsed().as_secs_f64();
    drop(sink);
    handle.await??;
    Ok((chunks + sent) as f64 / elapsed)
}

async fn client(uri: &str) -> anyhow::Result<mongodb::Client> {
    Ok(mongodb::Client::with_uri_str(uri).await?)
}

/// Documents per second with `insert_many` (unordered, 500 a call), the
/// documents shaped as `MongoLogStore` stores chunks.
async fn raw_rate(uri: &str, database: &str, count: usize) -> anyhow::Result<f64> {
    let client = client(uri).await?;
    let collection = client.database(database).collection::<Document>("output");
    let run_id = RunId::generate().to_string();
    let docs: Vec<Document> = (0..count)
        .map(|seq| {
            doc! {
                "_id": format!("{run_id}:{seq}"),
                "run_id": &run_id,
                "seq": seq as i64,
                "stream": "stdout",
                "at": mongodb::bson::DateTime::now(),
                "data": LINE,
            }
        })
        .collect();
    let started = Instant::now();
    for batch in docs.chunks(500) {
        collection.insert_many(batch.to_vec()).ordered(false).await?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Milliseconds for one `insert_one` and `find_one` of it, `count` times.
async fn raw_visible(uri: &str, count: usize) -> anyhow::Result<Option<Stats>> {
    let client = client(uri).await?;
    let collection = client.database("raw-visible").collection::<Document>("output");
    let mut samples = Vec::new();
    for i in 0..count {
        let started = Instant::now();
        collection.insert_one(doc! { "_id": i as i64, "data": LINE }).await?;
        let found: Vec<Document> = collection.find(doc! { "_id": i as i64 }).await?.try_collect().await?;
        anyhow::ensure!(found.len() == 1, "document not read back");
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Stats::of(&samples))
}

/// Write → visible samples (ms) through a cluster's master API.
async fn write_to_visible(lines: usize) -> anyhow::Result<Option<Stats>> {
    let cluster = Cluster::start(1, "allow_native = true").await?;
    let api = Api::new(&cluster.base, None);
    let command = format!("for i in $(seq 1 {lines}); do date +%s%N; sleep 0.1; done");
    let reply = api
        .put(
            "/api/v1/jobs/visible",
            &json!({"schedule": "@yearly", "kind": {"shell": {"command": command}}}),
        )
        .await;
    anyhow::ensure!((200..300).contains(&reply.status), "job: {}", reply.body);
    // Until the worker has the job, a trigger could wait for a watch event.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reply = api.post("/api/v1/jobs/visible/run").await;
    anyhow::ensure!(reply.status == 202, "run now: {}", reply.body);
    let run_id = sandcron_tests::wait_for("the run to start", Duration::from_secs(30), || async {
        let page = api.get("/api/v1/runs?job=visible").await;
        page.body["runs"][0]["run_id"].as_str().map(str::to_owned)
    })
    .await;
    let mut after: Option<u64> = None;
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(lines as u64 / 5 + 60);
    while Instant::now() < deadline {
        let mut path = format!("/api/v1/runs/{run_id}/output?follow=true&wait_s=10");
        if let Some(after) = after {
            path.push_str(&format!("&after={after}"));
        }
        let page = api.get(&path).await;
        let arrived = Timestamp::now().as_nanosecond();
        anyhow::ensure!(page.status == 200, "output: {}", page.body);
        for chunk in page.body["chunks"].as_array().into_iter().flatten() {
            for line in chunk["data"].as_str().unwrap_or_default().lines() {
                if let Ok(printed) = line.trim().parse::<i128>() {
                    samples.push((arrived - printed) as f64 / 1e6);
                }
            }
        }
        after = page.body["next_after"].as_u64().or(after);
        if page.body["done"].as_bool() == Some(true) {
            break;
        }
    }
    drop(cluster);
    Ok(Stats::of(&samples))
}
