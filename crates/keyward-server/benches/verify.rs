//! The verify hot path in process, next to its floor measured in the same
//! run: SHA-256 of a 40-byte key plus a hash-map lookup among as many keys.
//! `cargo bench -p keyward-server --bench verify` (add `-- --quick` for a
//! fast pass). Numbers live here and in docs/PERFORMANCE.md, never in tests.
//!
//! The warm-cache benchmark builds a real `Server` over a SQLite file, makes
//! one key with every check on (environment, IP allowlist, permissions,
//! customer, rate limit) through the HTTP API, then fills the verification
//! cache directly: `VERIFIED` real secrets, each with its own key id (so
//! each has its own rate limiter), plus random hashes up to the target size
//! sharing one record (the lookup cost depends on the table, not on what
//! the entries hold).
//!
//! After each size's two criterion benchmarks, `paired_ratio` times the
//! two operations in alternating batches and prints their ratio: the
//! figure to compare against the ≤ 2× target on a machine whose speed
//! drifts between criterion's separate measurements.
//!
//! `embedded_layer` puts the embeddable tower layer (`keyward_server::embed`)
//! in front of an axum route over the same warm cache, next to the same
//! route without it: the difference is what the layer adds to a request of
//! the platform's own service, HTTP parsing aside.

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::routing::get;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use keyward_core::verify::PresentedCredential;
use keyward_core::{EnvTag, KeyFormat, KeyHash, PermissionName};
use keyward_server::cache::{CacheConfig, Lookup};
use keyward_server::embed::EmbedOptions;
use keyward_server::verifier::VerifyInput;
use keyward_server::{Server, ServerConfig};
use keyward_store::VerificationRecord;
use rand_core::{OsRng, RngCore, TryRngCore};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tower::ServiceExt;

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
/// Distinct real secrets verified in turn (each its own key and limiter).
const VERIFIED: usize = 1_000;
/// Verifications between two drains of the request-log buffer: under its
/// capacity, about a second's worth for one busy thread.
const DRAIN_EVERY: u64 = 50_000;

fn secrets(format: &KeyFormat, count: usize) -> Vec<String> {
    let tag = EnvTag::parse("live").unwrap();
    let mut rng = OsRng.unwrap_err();
    (0..count)
        .map(|_| format.generate(&tag, &mut rng).expose().to_owned())
        .collect()
}

fn random_hash(rng: &mut impl RngCore) -> [u8; 32] {
    let mut hash = [0u8; 32];
    rng.fill_bytes(&mut hash);
    hash
}

fn parse_and_hash(c: &mut Criterion) {
    let format = KeyFormat::default();
    let secret = secrets(&format, 1).remove(0);
    c.bench_function("key_parse", |b| {
        b.iter(|| format.parse(black_box(&secret)).is_ok())
    });
    let forty = &secret.as_bytes()[..40];
    let forty = std::str::from_utf8(forty).unwrap();
    c.bench_function("sha256_40_bytes", |b| {
        b.iter(|| KeyHash::of(black_box(forty)))
    });
}

/// One key with every check on, made through the HTTP API; returns its
/// verification record, the account, and the permission it holds.
async fn real_record(
    server: &Server,
    store: &dyn keyward_store::Store,
) -> (VerificationRecord, String) {
    let created = keyward_server::accounts::create_account(
        store,
        &KeyFormat::default(),
        keyward_server::accounts::AccountSetup {
            account_name: "Bench".into(),
            owner_email: "bench@example.com".into(),
            owner_password: zeroize::Zeroizing::new("correct horse battery".into()),
            workspace_name: "Bench".into(),
        },
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = server
        .router()
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let token = created.management_token.expose().to_owned();
    let post = |path: String, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    post("/v1/permissions".into(), json!({"name": "customers:read"}))
        .await
        .unwrap();
    post(
        "/v1/ip-allowlist".into(),
        json!({"address": "203.0.113.0/24", "workspace_ids": [created.workspace_id]}),
    )
    .await
    .unwrap();
    let issued: Value = post(
        format!("/v1/workspaces/{}/keys", created.workspace_id),
        json!({"name": "bench", "environment": "production",
               "permissions": ["customers:read"], "customer_id": "cus_1",
               "allowed_ips": ["203.0.113.0/24"],
               "rate_limit": {"limit": 1_000_000, "window_seconds": 1}}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let secret = issued["secret"].as_str().expect("key issued");
    let parsed = KeyFormat::default().parse(secret).unwrap();
    let record = store
        .find_key_for_verification(&parsed.hash().to_hex())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !record.workspace_allowlist.is_empty() && !record.key.permissions.is_empty(),
        "every check must be on"
    );
    (record, created.account_id)
}

/// Runs a future that must not wait (a warm cache never does).
fn ready<T>(future: impl Future<Output = T>) -> T {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the warm path waited"),
    }
}

/// Times `iterations` calls of `one` in runs of `DRAIN_EVERY`, the
/// request-log buffer emptied (untimed) between them as the flusher would,
/// so appending is measured rather than a full buffer's drop path.
fn drained_runs(iterations: u64, server: &Server, mut one: impl FnMut()) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut left = iterations;
    while left > 0 {
        let run = left.min(DRAIN_EVERY);
        let started = Instant::now();
        for _ in 0..run {
            one();
        }
        elapsed += started.elapsed();
        server.verifier().request_logs().discard();
        left -= run;
    }
    elapsed
}

/// Rounds of the paired measurement, and operations of each kind per round.
const PAIRED_ROUNDS: usize = 31;
const PAIRED_BATCH: u64 = 20_000;

/// Whether the run asks for the paired ratio: no filter, a filter that is
/// part of its name (`verify_warm`), or one that names it (`paired`).
/// Options' values, such as `--profile-time 10`'s, count as filters.
fn wants_paired_ratio() -> bool {
    const NAME: &str = "verify_warm/paired_ratio";
    std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .all(|filter| NAME.contains(filter.as_str()) || filter.contains("paired"))
}

/// The full verification's cost as a multiple of the floor's, measured in
/// pairs: each round times a batch of floor operations and a batch of full
/// verifications back to back (in alternating order), so that both see the
/// same machine. On a shared VM whose speed drifts by tens of per cent
/// between criterion's separate measurements, the ratio of each pair moves
/// far less than the ratio of two such measurements. Prints the median and
/// quartiles of the rounds' ratios.
fn paired_ratio(size: usize, server: &Server, floor: &mut impl FnMut(), full: &mut impl FnMut()) {
    // Warm both up (caches, branch predictors, the log buffer's vector).
    time(floor);
    time(full);
    server.verifier().request_logs().discard();
    let mut ratios: Vec<f64> = (0..PAIRED_ROUNDS)
        .map(|round| {
            let (floor_s, full_s) = if round % 2 == 0 {
                let floor_s = time(floor);
                (floor_s, time(full))
            } else {
                let full_s = time(full);
                (time(floor), full_s)
            };
            // Untimed, as the flusher would empty it.
            server.verifier().request_logs().discard();
            full_s / floor_s
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    println!(
        "verify_warm/paired_ratio/{size}: full verify = {:.2}x the floor (median; quartiles {:.2}x-{:.2}x; {PAIRED_ROUNDS} rounds of {PAIRED_BATCH} each)",
        at(0.5),
        at(0.25),
        at(0.75),
    );
}

/// Seconds `PAIRED_BATCH` calls of `op` take (a generic, not a `dyn`, so
/// that the calls cost what criterion's do).
fn time(op: &mut impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..PAIRED_BATCH {
        op();
    }
    started.elapsed().as_secs_f64()
}

fn warm_verify(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = runtime
        .block_on(keyward_store::open(&format!(
            "sqlite://{}",
            dir.path().join("bench.db").display()
        )))
        .unwrap();
    let format = KeyFormat::default();
    let real = secrets(&format, VERIFIED);
    let permissions = [PermissionName::parse("customers:read").unwrap()];
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    let mut rng = OsRng.unwrap_err();
    let mut group = c.benchmark_group("verify_warm");
    for size in SIZES {
        let config = ServerConfig {
            cache: CacheConfig {
                key_capacity: size * 2,
                ..CacheConfig::default()
            },
            ..ServerConfig::default()
        };
        let server = Server::with_config(store.clone(), format.clone(), config);
        let (record, account) = runtime.block_on(real_record(&server, store.as_ref()));
        let cache = server.verifier().cache();
        let now = record.key.created_at + 1;
        let insert = |hash: [u8; 32], record: Arc<VerificationRecord>| match cache.key(&hash, now) {
            Lookup::Miss(ticket, _) => cache.insert_key(ticket, hash, record, now),
            _ => unreachable!("fresh cache"),
        };
        let mut floor_map: HashMap<[u8; 32], usize> = HashMap::with_capacity(size);
        for (n, secret) in real.iter().enumerate() {
            let mut own = record.clone();
            own.key.id = format!("key_bench_{n}");
            let hash = *KeyHash::of(secret).as_bytes();
            insert(hash, Arc::new(own));
            floor_map.insert(hash, n);
        }
        let shared = Arc::new(record.clone());
        for n in VERIFIED..size {
            let hash = random_hash(&mut rng);
            insert(hash, shared.clone());
            floor_map.insert(hash, n);
        }

        let mut next_floor = 0;
        let mut floor = || {
            next_floor = (next_floor + 1) % VERIFIED;
            let hash = KeyHash::of(black_box(&real[next_floor]));
            black_box(floor_map.get(hash.as_bytes()).copied());
        };
        let mut next = 0;
        let verifier = server.verifier();
        let mut full_verify = || {
            next = (next + 1) % VERIFIED;
            let input = VerifyInput {
                account_id: &account,
                credential: Some(PresentedCredential::bare(black_box(&real[next]))),
                environment: Some("production"),
                permissions: &permissions,
                ip: Some(ip),
                customer_id: Some("cus_1"),
                origin: None,
                request_line: None,
                cost: 1,
            };
            let verdict = ready(verifier.verify(input, now)).unwrap();
            assert!(verdict.code.is_valid(), "{:?}", verdict.code);
        };
        group.bench_function(BenchmarkId::new("floor_sha256_plus_hashmap", size), |b| {
            b.iter(&mut floor)
        });
        group.bench_function(BenchmarkId::new("full_verify", size), |b| {
            b.iter_custom(|iterations| drained_runs(iterations, &server, &mut full_verify))
        });
        if wants_paired_ratio() {
            paired_ratio(size, &server, &mut floor, &mut full_verify);
        }
        if size == 100_000 {
            let keyward =
                server.embedded(EmbedOptions::for_account(&account).in_environment("production"));
            let route = || Router::new().route("/orders", get(|| async { "ok" }));
            let bare = route();
            let guarded = route().route_layer(keyward.require(["customers:read"]).unwrap());
            let peer = ConnectInfo(SocketAddr::new(ip, 40_000));
            let request = |secret: &str| {
                let mut request = Request::get("/orders")
                    .header("x-api-key", secret)
                    .body(Body::empty())
                    .unwrap();
                request.extensions_mut().insert(peer);
                request
            };
            let mut next = 0;
            group.bench_function("embedded_layer/bare_route", |b| {
                b.iter(|| {
                    next = (next + 1) % VERIFIED;
                    let response = ready(bare.clone().oneshot(request(&real[next]))).unwrap();
                    assert!(response.status().is_success());
                })
            });
            let mut next = 0;
            group.bench_function("embedded_layer/route_behind_layer", |b| {
                b.iter_custom(|iterations| {
                    drained_runs(iterations, &server, || {
                        next = (next + 1) % VERIFIED;
                        let response =
                            ready(guarded.clone().oneshot(request(&real[next]))).unwrap();
                        assert!(response.status().is_success(), "{}", response.status());
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, parse_and_hash, warm_verify);
criterion_main!(benches);
