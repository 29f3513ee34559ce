//! The cost of writing request logs, and of reading a page of them:
//! `Store::insert_request_logs` with batches of 10,000 entries (a busy
//! node's flush of one second), into a fresh
//! SQLite file and, when it answers, a fresh PostgreSQL schema (see
//! `keyward_store::testing`; `KEYWARD_TEST_POSTGRES_URL` names the server).
//!
//! `cargo bench -p keyward-store --features testing --bench request_logs -- --quick`
//!
//! Two workloads, because they cost differently: `one_key` (one account,
//! key and workspace, like the HTTP load tests) and `1000_keys` (3
//! accounts, 10 workspaces, 1,000 keys: each batch then lands on ~1,000
//! places of the by-key index). Criterion reports the wall time per batch
//! (divide by 10,000 for ns per row) and rows per second; after each
//! benchmark a line gives this process's CPU time per row (on SQLite that
//! includes the database's work, on PostgreSQL not the server's), read
//! from /proc where there is one.
//!
//! Only the insert is timed: each batch is built beforehand. Each table
//! starts with `PREFILLED` entries that stay (dated a year ahead), and the
//! benchmark's own entries are purged, untimed, whenever they pass
//! `OWN_ROWS_CAP`, so that a faster build, which runs more batches, does
//! not also write into a bigger table. After each workload's inserts,
//! `list_100/…` times reading a page of 100 from the table they left: the
//! account's newest, one key's newest, and the page after 200 (a cursor in
//! the middle of the newest batch, where an export spends its time).
//!
//! Since migration 0013 logs are stored in blocks (`sql/request_logs.rs`).
//! The two builds' benchmark binaries alternated twice on the 2-core
//! development machine (2026-12-01, 13:24–13:28 UTC, then the final build
//! twice; ns of this process's CPU per entry, and wall time per page):
//!
//! | workload | one row per log | blocks |
//! |---|---|---|
//! | insert, sqlite, one key | 3,173–3,525 ns | 476–540 ns |
//! | insert, sqlite, 1,000 keys | 12,886–13,701 ns | 2,185–2,562 ns |
//! | insert, postgres, one key (wall per 10,000) | 609 ns (83–112 ms) | 344–350 ns (6.4–6.9 ms) |
//! | insert, postgres, 1,000 keys (wall per 10,000) | 606 ns (152 ms) | 488–553 ns (15–16 ms) |
//! | page, sqlite, one key: newest / one key's / after 200 | 0.52–1.20 / 0.50–1.18 / 0.50–1.35 ms | 0.47–0.48 / 0.38–0.44 / 0.49–0.53 ms |
//! | page, sqlite, 1,000 keys: newest / one key's / after 200 | 0.48–0.50 / 0.49–0.50 / 0.49 ms | 1.24–1.28 / 0.15–0.20 / 2.1–2.3 ms |
//! | page, postgres, 1,000 keys: newest / one key's / after 200 | 0.36–0.37 / 0.36–0.38 / 0.38–0.39 ms | 1.24–1.36 / 0.31–0.32 / 2.1 ms |
//!
//! Writing costs a sixth to a fifth of what it did. Reading an account's
//! pages while a thousand keys interleave costs 2.5–5× more: every key's
//! block of the cursor's batch holds entries on both sides of it and is
//! decoded whole.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyward_store::testing::{Backend, DEFAULT_POSTGRES_URL, POSTGRES_URL_VAR, TestDatabase};
use keyward_store::{NewRequestLog, PageRequest, RequestLogBatch, RequestLogFilter, Store};
use sqlx::Connection;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 10_000;
const PREFILLED: usize = 100_000;
const OWN_ROWS_CAP: usize = 200_000;
const YEAR_MS: i64 = 365 * 24 * 3600 * 1000;

#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    accounts: u64,
    workspaces: u64,
    keys: u64,
}

const WORKLOADS: [Workload; 2] = [
    Workload {
        name: "one_key",
        accounts: 1,
        workspaces: 1,
        keys: 1,
    },
    Workload {
        name: "1000_keys",
        accounts: 3,
        workspaces: 10,
        keys: 1_000,
    },
];

/// A batch of verifications made in the second before `now_ms`: most
/// `valid`, one in fifty an unknown key (no key, no workspace).
fn batch(workload: Workload, now_ms: i64, seed: &mut u64) -> Vec<NewRequestLog> {
    (0..BATCH)
        .map(|n| {
            // xorshift64: cheap, deterministic, spread enough.
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            let key = *seed % workload.keys;
            let found = !seed.is_multiple_of(50);
            NewRequestLog {
                account_id: format!("acct_01jabcdefghjkmnpqrstvwxy{}", key % workload.accounts),
                at: now_ms - 1_000 + (n * 1_000 / BATCH) as i64,
                key_id: found.then(|| format!("key_01jabcdefghjkmnpqrst{key:04}")),
                workspace_id: found
                    .then(|| format!("ws_01jabcdefghjkmnpqrstvwx{:02}", key % workload.workspaces)),
                environment: Some("production".into()),
                client_ip: "203.0.113.7".parse().ok(),
                permissions: vec!["customers:read".into()],
                code: if found { "valid" } else { "unknown_key" }.into(),
                latency_us: 20 + (*seed % 200) as i64,
                method: None,
                path: None,
            }
        })
        .collect()
}

fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since_epoch.as_millis()).unwrap()
}

/// CPU time used so far by this process's live threads (the runtime's and
/// sqlx's SQLite workers included), in ns; `None` without /proc.
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Whether the PostgreSQL test server answers; the benchmark skips it
/// (saying so) when it does not.
async fn postgres_reachable() -> bool {
    let url = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    match tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(&url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            true
        }
        Ok(Err(e)) => {
            eprintln!("request_logs/*/postgres skipped: {e}");
            false
        }
        Err(_) => {
            eprintln!("request_logs/*/postgres skipped: no answer within 3 s");
            false
        }
    }
}

fn insert_batches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("request_logs");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    for (backend_name, backend) in [("sqlite", Backend::Sqlite), ("postgres", Backend::Postgres)] {
        if backend == Backend::Postgres && !runtime.block_on(postgres_reachable()) {
            continue;
        }
        for workload in WORKLOADS {
            let db = runtime.block_on(TestDatabase::create(backend));
            let store: Arc<dyn Store> = runtime.block_on(db.open_store());
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
            for _ in 0..PREFILLED / BATCH {
                let rows = batch(workload, now_ms() + YEAR_MS, &mut seed);
                let encoded: RequestLogBatch = rows.iter().collect();
                runtime
                    .block_on(store.insert_request_logs(&encoded))
                    .unwrap();
            }
            let (mut own_rows, mut timed_rows, mut cpu_ns) = (0, 0u64, Some(0u64));
            let name = format!("insert_10k/{backend_name}/{}", workload.name);
            group.bench_function(&name, |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        if own_rows >= OWN_ROWS_CAP {
                            // Only the prefilled rows are dated later.
                            runtime
                                .block_on(store.purge_request_logs(now_ms() + 1))
                                .unwrap();
                            own_rows = 0;
                        }
                        let rows = batch(workload, now_ms(), &mut seed);
                        let cpu_before = process_cpu_ns();
                        let started = Instant::now();
                        // Encoding the entries into blocks is part of the cost.
                        let encoded: RequestLogBatch = rows.iter().collect();
                        runtime
                            .block_on(store.insert_request_logs(&encoded))
                            .unwrap();
                        spent += started.elapsed();
                        cpu_ns = match (cpu_ns, cpu_before, process_cpu_ns()) {
                            (Some(sum), Some(before), Some(after)) => Some(sum + after - before),
                            _ => None,
                        };
                        own_rows += rows.len();
                        timed_rows += rows.len() as u64;
                    }
                    spent
                })
            });
            if let Some(cpu_ns) = cpu_ns.filter(|_| timed_rows > 0) {
                println!(
                    "request_logs/{name}: this process's CPU: {} ns/row over {timed_rows} rows",
                    cpu_ns / timed_rows
                );
            }
            list_pages(&mut group, &runtime, &store, backend_name, workload);
            // The store (and its pool) goes before its database.
            drop(store);
            drop(db);
        }
    }
    group.finish();
}

/// What reading costs, on the table the insert benchmark left: the
/// account's newest page of 100, one key's, and the page after a cursor in
/// the middle of the newest batch (where an export walking every page
/// spends its time).
fn list_pages(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn Store>,
    backend_name: &str,
    workload: Workload,
) {
    let account = "acct_01jabcdefghjkmnpqrstvwxy0";
    let page = |after: Option<String>| PageRequest { limit: 100, after };
    let newest = runtime
        .block_on(store.list_request_logs(account, &RequestLogFilter::default(), &page(None)))
        .unwrap();
    let Some(a_key) = newest.items.iter().find_map(|log| log.entry.key_id.clone()) else {
        return;
    };
    let one_key = RequestLogFilter {
        key_id: Some(a_key),
        ..RequestLogFilter::default()
    };
    let middle = runtime
        .block_on(store.list_request_logs(
            account,
            &RequestLogFilter::default(),
            &PageRequest {
                limit: 100,
                after: newest.items.get(99).map(|log| log.id.clone()),
            },
        ))
        .unwrap();
    let deep = middle.items.last().map(|log| log.id.clone());
    let cases = [
        ("newest", RequestLogFilter::default(), None),
        ("one_key", one_key, None),
        ("after_200", RequestLogFilter::default(), deep),
    ];
    group.throughput(Throughput::Elements(100));
    for (case, filter, after) in cases {
        let name = format!("list_100/{backend_name}/{}/{case}", workload.name);
        group.bench_function(&name, |b| {
            b.iter(|| {
                let listed = runtime
                    .block_on(store.list_request_logs(account, &filter, &page(after.clone())))
                    .unwrap();
                assert_eq!(listed.items.len(), 100);
            })
        });
    }
    group.throughput(Throughput::Elements(BATCH as u64));
}

criterion_group!(benches, insert_batches);
criterion_main!(benches);
