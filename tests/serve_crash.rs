//! Durability of `prescale serve` under `kill -9`: several clients push concurrently, the server
//! process is killed at a random moment, restarted on the same data directory, and killed again,
//! round after round; every sample whose `Push` was acknowledged must be in the store at the end.
//! (`tests/crash.rs` does the same for the store alone, without the server.)

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prescale::domain::{Aggregation, SeriesId, Step, TimeRange, Timestamp};
use prescale::service::proto::{self, WriteRequest, ingest_service_client::IngestServiceClient};
use prescale::store::{MetricStore, PolarsStore, StoreOptions};
use rand::{Rng, SeedableRng};

/// Server processes killed.
const ROUNDS: usize = 5;
/// Clients pushing at once, each to a series of its own.
const CLIENTS: u64 = 4;
/// Samples per message and messages per `Push` stream: a stream is acknowledged once its reply
/// arrives.
const SAMPLES_PER_MESSAGE: u64 = 25;
const MESSAGES_PER_STREAM: u64 = 4;
/// Spacing of a client's samples.
const STEP_MS: i64 = 1_000;

fn series_name(client: u64) -> (String, String) {
    ("pushed".to_owned(), client.to_string())
}

/// The value a client writes at sample `index`: unique, so a misplaced sample shows.
fn value(client: u64, index: u64) -> f64 {
    (client * 10_000_000 + index) as f64
}

/// A `prescale serve` child on an ephemeral loopback port.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(data: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_prescale"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "off",
            ])
            .arg("--data-dir")
            .arg(data)
            .env_remove("PRESCALE_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let line = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .next()
            .expect("the server prints its address")
            .unwrap();
        let address = line
            .strip_prefix("prescale serving gRPC on ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("{line}"))
            .to_owned();
        Self { child, address }
    }

    /// `kill -9`, and waits for the process to be gone.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Pushes streams of the client's next samples until a call fails (the server was killed);
/// `acknowledged` counts the samples of every stream whose reply arrived.
async fn push_until_killed(
    address: String,
    client: u64,
    acknowledged: Arc<AtomicU64>,
    start_ms: i64,
) {
    let Ok(mut ingest) = IngestServiceClient::connect(format!("http://{address}")).await else {
        return;
    };
    let (name, label) = series_name(client);
    loop {
        let first = acknowledged.load(Ordering::SeqCst);
        let messages: Vec<WriteRequest> = (0..MESSAGES_PER_STREAM)
            .map(|message| {
                let indexes = (first + message * SAMPLES_PER_MESSAGE)
                    ..(first + (message + 1) * SAMPLES_PER_MESSAGE);
                WriteRequest {
                    series: vec![proto::SeriesSamples {
                        series: Some(proto::SeriesRef {
                            name: name.clone(),
                            labels: [("client".to_owned(), label.clone())].into(),
                        }),
                        timestamps_ms: indexes
                            .clone()
                            .map(|index| start_ms + index as i64 * STEP_MS)
                            .collect(),
                        values: indexes.map(|index| value(client, index)).collect(),
                    }],
                }
            })
            .collect();
        match ingest.push(tokio_stream::iter(messages)).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                assert_eq!(reply.accepted, SAMPLES_PER_MESSAGE * MESSAGES_PER_STREAM);
                acknowledged.fetch_add(reply.accepted, Ordering::SeqCst);
            }
            Err(_) => return,
        }
    }
}

#[test]
fn acknowledged_pushes_survive_kill_9_of_the_server() {
    let data = tempfile::tempdir().unwrap();
    let seed: u64 = rand::random();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // Ten days ago on a whole second, so every sample is inside the store's accepted range.
    let start_ms = (Timestamp::now().as_millis() - 10 * 86_400_000) / 1_000 * 1_000;
    let acknowledged: Vec<Arc<AtomicU64>> =
        (0..CLIENTS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for round in 0..ROUNDS {
        let before: u64 = acknowledged
            .iter()
            .map(|count| count.load(Ordering::SeqCst))
            .sum();
        let server = Server::start(data.path());
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                runtime.spawn(push_until_killed(
                    server.address.clone(),
                    client,
                    Arc::clone(&acknowledged[client as usize]),
                    start_ms,
                ))
            })
            .collect();
        let delay = Duration::from_millis(rng.random_range(300..1_500));
        std::thread::sleep(delay);
        server.kill();
        runtime.block_on(async {
            for client in clients {
                tokio::time::timeout(Duration::from_secs(30), client)
                    .await
                    .expect("a client notices the kill")
                    .unwrap();
            }
        });
        let after: u64 = acknowledged
            .iter()
            .map(|count| count.load(Ordering::SeqCst))
            .sum();
        assert!(
            after > before,
            "round {round} (seed {seed}): no push was acknowledged in {delay:?}"
        );
    }

    let store = PolarsStore::open(data.path(), StoreOptions::default()).unwrap();
    let mut total = 0;
    for (client, count) in acknowledged.iter().enumerate() {
        let count = count.load(Ordering::SeqCst);
        let (name, label) = series_name(client as u64);
        let series = SeriesId::with_labels(&name, [("client", label)]).unwrap();
        let window = store
            .window(
                &series,
                TimeRange::new(
                    Timestamp::from_millis(start_ms),
                    Timestamp::from_millis(start_ms + count as i64 * STEP_MS),
                )
                .unwrap(),
                Step::try_from(STEP_MS).unwrap(),
                Aggregation::Last,
            )
            .unwrap();
        let stored = window.values();
        for index in 0..count {
            assert_eq!(
                stored[index as usize],
                value(client as u64, index),
                "seed {seed}: client {client}'s acknowledged sample {index} of {count}"
            );
        }
        total += count;
    }
    eprintln!("seed {seed}: {total} acknowledged samples over {ROUNDS} kills, all present");
}
