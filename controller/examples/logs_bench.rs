//! The log store's ingestion rate: 100-byte lines in agent-sized batches through
//! `LogService::store_batch` (the agent link's path) into a logs.redb file, each batch one
//! durable transaction. `cargo run --release -p berth-controller --example logs_bench
//! [LINES] [BATCH] [STREAMS]`; prints lines per second.

use berth_controller::logs::store::RedbLogStore;
use berth_controller::logs::{system_clock, LogService};
use berth_proto::v1::{LogBatch, LogEvent};
use std::sync::Arc;
use std::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let lines = args.next().transpose()?.unwrap_or(1_000_000);
    let batch = args.next().transpose()?.unwrap_or(1_000).max(1);
    let streams = args.next().transpose()?.unwrap_or(1).max(1);
    let dir = std::env::temp_dir().join(format!("berth-logs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("logs.redb");
    let svc = Arc::new(LogService::new(
        Arc::new(RedbLogStore::open(&path)?),
        system_clock(),
    ));
    let line = "x".repeat(90);
    let start = Instant::now();
    let per_stream = lines / streams;
    let mut tasks = Vec::new();
    for s in 0..streams {
        let svc = svc.clone();
        let line = line.clone();
        tasks.push(tokio::spawn(async move {
            let mut next = 1u64;
            while next <= per_stream {
                let n = batch.min(per_stream - next + 1);
                let b = LogBatch {
                    log_group_name: "/bench".into(),
                    log_stream_name: format!("bench/c/{s}"),
                    create_group: true,
                    task_arn: String::new(),
                    container_name: String::new(),
                    first_sequence: next,
                    events: (next..next + n)
                        .map(|i| LogEvent {
                            timestamp: 1_800_000_000_000 + i as i64,
                            message: format!("{i:09} {line}"),
                        })
                        .collect(),
                };
                let ack = svc.store_batch(b).await;
                assert!(ack.error.is_empty(), "{}", ack.error);
                next += n;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = per_stream * streams;
    let size = std::fs::metadata(&path)?.len();
    println!(
        "{total} lines of 100 bytes in batches of {batch} from {streams} stream(s): {secs:.2} s, {:.0} lines/s, logs.redb {} MiB",
        total as f64 / secs,
        size / (1 << 20)
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
