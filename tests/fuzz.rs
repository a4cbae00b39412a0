//! Fuzzing of the four places that take bytes from outside: the CSV importer, the write-ahead-log
//! replay, the registry's model loader and the gRPC proto-to-domain conversion.
//!
//! The engine is proptest, on stable Rust (`cargo fuzz` needs a nightly toolchain, which this
//! project's machines do not have). Each target first replays every file of its corpus in
//! `tests/fuzz/corpus/<target>/`, then, until its time box runs out, mutates corpus entries (bit
//! flips, byte edits, inserts, deletions, truncations, splices, special numbers written over
//! eight-byte fields) and tries wholly random bytes. A failing input is shrunk, printed in hex and
//! written to `target/fuzz-failures/`, from where it joins the corpus once fixed.
//!
//! The time box is `PRESCALE_FUZZ_SECONDS` per target (2 by default, so `cargo test` stays quick);
//! CI runs a longer box (`.ci/run`). What each target must hold is in its test's comment.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// One edit of an input.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Truncate(Index),
    /// Copies a run of another corpus entry over this one.
    Splice(Index, Index, Index, usize),
    /// Writes an extreme eight-byte value (a float or an integer) at a position.
    Special(Index, u64),
}

/// Eight-byte patterns that break arithmetic: NaN, the infinities, the largest and smallest
/// values, zero and a stale-marker-like NaN.
const SPECIAL: [u64; 9] = [
    0x7ff8_0000_0000_0000,
    0x7ff0_0000_0000_0002,
    0x7ff0_0000_0000_0000,
    0xfff0_0000_0000_0000,
    0x7fef_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0,
    u64::MAX,
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte(at, byte)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<Index>(), 1usize..64).prop_map(|(at, len)| Mutation::Remove(at, len)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<Index>(), any::<Index>(), 1usize..256)
            .prop_map(|(entry, from, to, len)| Mutation::Splice(entry, from, to, len)),
        (any::<Index>(), prop::sample::select(SPECIAL.to_vec()))
            .prop_map(|(at, bits)| Mutation::Special(at, bits)),
    ]
}

/// Applies `mutations` to a copy of `seed`; `corpus` feeds splices.
fn mutate(seed: &[u8], mutations: &[Mutation], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for mutation in mutations {
        if bytes.is_empty() {
            if let Mutation::Insert(_, insert) = mutation {
                bytes.extend_from_slice(insert);
            }
            continue;
        }
        let len = bytes.len();
        match mutation {
            Mutation::FlipBit(at, bit) => bytes[at.index(len)] ^= 1 << bit,
            Mutation::SetByte(at, byte) => bytes[at.index(len)] = *byte,
            Mutation::Insert(at, insert) => {
                let at = at.index(len + 1);
                bytes.splice(at..at, insert.iter().copied());
            }
            Mutation::Remove(at, count) => {
                let at = at.index(len);
                bytes.drain(at..(at + count).min(len));
            }
            Mutation::Truncate(at) => bytes.truncate(at.index(len)),
            Mutation::Splice(entry, from, to, count) => {
                let donor = &corpus[entry.index(corpus.len())];
                if donor.is_empty() {
                    continue;
                }
                let from = from.index(donor.len());
                let run = &donor[from..(from + count).min(donor.len())];
                let to = to.index(len);
                let end = (to + run.len()).min(len);
                bytes[to..end].copy_from_slice(&run[..end - to]);
            }
            Mutation::Special(at, bits) => {
                let at = at.index(len);
                let end = (at + 8).min(len);
                bytes[at..end].copy_from_slice(&bits.to_le_bytes()[..end - at]);
            }
        }
    }
    bytes
}

/// The files of `tests/fuzz/corpus/<target>/`, in name order.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("corpus {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    let files: Vec<_> = paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

/// Seconds each target fuzzes for.
fn time_box() -> Duration {
    let seconds = std::env::var("PRESCALE_FUZZ_SECONDS")
        .ok()
        .map(|text| {
            text.parse::<f64>()
                .expect("PRESCALE_FUZZ_SECONDS is a number")
        })
        .unwrap_or(2.0);
    Duration::from_secs_f64(seconds)
}

/// Replays `target`'s corpus through `check`, then fuzzes it for the time box. Panics with the
/// shrunk failing input (also written to `target/fuzz-failures/`).
fn fuzz(target: &str, check: impl Fn(&[u8]) -> Result<(), TestCaseError>) {
    let files = corpus(target);
    for (path, bytes) in &files {
        if let Err(error) = check(bytes) {
            panic!("corpus file {} fails: {error}", path.display());
        }
    }
    let seeds: Vec<Vec<u8>> = files.into_iter().map(|(_, bytes)| bytes).collect();
    let mutated = {
        let seeds = seeds.clone();
        (any::<Index>(), prop::collection::vec(mutation(), 1..8)).prop_map(
            move |(seed, mutations)| mutate(&seeds[seed.index(seeds.len())], &mutations, &seeds),
        )
    };
    let inputs = prop_oneof![
        9 => mutated,
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ];
    let deadline = Instant::now() + time_box();
    let mut cases = 0u64;
    while Instant::now() < deadline {
        let mut runner = TestRunner::new(Config {
            cases: 16,
            failure_persistence: None,
            ..Config::default()
        });
        match runner.run(&inputs, |input| check(&input)) {
            Ok(()) => cases += 16,
            Err(TestError::Fail(reason, input)) => {
                let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
                std::fs::create_dir_all(&dir).unwrap();
                let file = dir.join(format!("{target}-{:08x}", crc32fast::hash(&input)));
                std::fs::write(&file, &input).unwrap();
                panic!(
                    "{target}: {reason}\ninput ({} bytes, saved as {}): {}",
                    input.len(),
                    file.display(),
                    input
                        .iter()
                        .map(|byte| format!("{byte:02x}"))
                        .collect::<String>()
                );
            }
            Err(TestError::Abort(reason)) => panic!("{target}: fuzzing aborted: {reason}"),
        }
    }
    eprintln!("fuzz {target}: {cases} inputs in {:?}", time_box());
}

// ---------------------------------------------------------------------------------------------
// The CSV importer.

/// The importer never panics under either bad-row policy; what it accepts is finite, and skipping
/// bad rows keeps exactly what rejecting them would have kept when there are none.
#[test]
fn fuzz_csv_importer() {
    use prescale::ingest::{BadRowPolicy, parse_csv};
    let path = Path::new("fuzz.csv");
    fuzz("csv", |bytes| {
        let strict = parse_csv(bytes, path, BadRowPolicy::Reject, &|_| None);
        let lenient = parse_csv(bytes, path, BadRowPolicy::Skip, &|_| None);
        if let Ok(parsed) = &lenient {
            prop_assert!(parsed.samples.iter().all(|sample| sample.value.is_finite()));
        }
        if let Ok(strict) = &strict {
            prop_assert!(strict.skipped.is_empty());
            let lenient = lenient.as_ref().expect("what Reject accepts, Skip accepts");
            prop_assert_eq!(&strict.samples, &lenient.samples);
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// The write-ahead-log replay.

/// Name of the segment a fuzzed WAL is written to.
const SEGMENT: &str = "wal/wal-0000000000000001.log";

/// What a store holds, comparably: every series' summary.
fn store_contents(store: &prescale::store::PolarsStore) -> Vec<String> {
    use prescale::store::MetricStore;
    store
        .series()
        .iter()
        .map(|series| format!("{:?}", store.summary(series).unwrap()))
        .collect()
}

/// Opening a store on any segment never panics: it replays, truncates a torn tail, or refuses
/// with an error. What it opens survives a checkpoint and a reopen unchanged (a deletion replayed
/// stays deleted). The corpus holds segments of both formats: `v1-*` from before deletions were
/// logged, and the current one with a deletion record.
#[test]
fn fuzz_wal_replay() {
    use prescale::store::{MetricStore, PolarsStore, StoreOptions};
    let seed = |name: &str| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fuzz/corpus/wal")
                .join(name),
        )
        .unwrap()
    };
    // Seeds and the series they hold: the harness reaches the replay, deletions included.
    let seeds = [
        (seed("three-records.log"), 2),
        (seed("v1-three-records.log"), 2),
        (seed("deletion.log"), 1),
    ];
    fuzz("wal", |bytes| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("wal")).unwrap();
        std::fs::write(dir.path().join(SEGMENT), bytes).unwrap();
        let Ok(store) = PolarsStore::open(dir.path(), StoreOptions::default()) else {
            return Ok(());
        };
        let opened = store_contents(&store);
        if let Some((_, series)) = seeds.iter().find(|(seed, _)| seed.as_slice() == bytes) {
            prop_assert_eq!(opened.len(), *series);
        }
        drop(store);
        let store = PolarsStore::open(dir.path(), StoreOptions::default())
            .map_err(|error| TestCaseError::fail(format!("second open fails: {error}")))?;
        prop_assert_eq!(&store_contents(&store), &opened);
        store
            .checkpoint()
            .map_err(|error| TestCaseError::fail(format!("checkpoint fails: {error}")))?;
        drop(store);
        let store = PolarsStore::open(dir.path(), StoreOptions::default()).map_err(|error| {
            TestCaseError::fail(format!("open after checkpoint fails: {error}"))
        })?;
        prop_assert_eq!(&store_contents(&store), &opened);
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// The registry's model loader.

/// The series of the model corpus (`tests/fuzz/corpus/model/`: files of the committed
/// `models/nyc_taxi-*/`).
const MODEL_SERIES: &str = "nyc_taxi";
const MODEL_MAGIC: &[u8] = b"PSMODEL1";

/// Loading any model file never panics: it is refused as corrupt, or it loads and forecasts (or
/// refuses to forecast with an error). The file's checksum is made to match, in the file and in
/// the manifest, so that the decoder sees the damage rather than the checksum test.
#[test]
fn fuzz_model_loader() {
    use prescale::domain::SeriesId;
    use prescale::forecast::{Horizon, Predict};
    use prescale::registry::Registry;
    let committed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/manifest.json")).unwrap(),
    )
    .unwrap();
    let entry = committed["series"][MODEL_SERIES].clone();
    let series = SeriesId::new(MODEL_SERIES).unwrap();
    // Writes `bytes` as the live version of a registry of its own, loads it and forecasts with it.
    let load_and_forecast = |bytes: &[u8]| {
        let mut bytes = bytes.to_vec();
        let header = MODEL_MAGIC.len() + 4;
        if bytes.len() >= header && bytes.starts_with(MODEL_MAGIC) {
            let crc = crc32fast::hash(&bytes[header..]);
            bytes[MODEL_MAGIC.len()..header].copy_from_slice(&crc.to_le_bytes());
        }
        let crc = bytes
            .get(MODEL_MAGIC.len()..header)
            .map_or(0, |field| u32::from_le_bytes(field.try_into().unwrap()));
        let mut entry = entry.clone();
        let version = &mut entry["versions"][0];
        version["crc32"] = crc.into();
        version["bytes"] = bytes.len().into();
        let dir = tempfile::tempdir().unwrap();
        let model_dir = dir.path().join(entry["dir"].as_str().unwrap());
        std::fs::create_dir_all(&model_dir).unwrap();
        let file = model_dir.join(entry["versions"][0]["file"].as_str().unwrap());
        std::fs::write(file, &bytes).unwrap();
        let manifest = serde_json::json!({ "series": { MODEL_SERIES: entry } });
        std::fs::write(dir.path().join("manifest.json"), manifest.to_string()).unwrap();
        let registry = Registry::open(dir.path()).ok()?;
        let loaded = registry.load_live(&series).ok()??;
        Some(loaded.model.predict_default(Horizon::try_from(48).unwrap()))
    };
    // The harness reaches the forecast: the committed model loads and forecasts through it.
    let seed = &corpus("model")[0].1;
    let forecast = load_and_forecast(seed).expect("the seed loads").unwrap();
    assert!(forecast.point().iter().all(|value| value.is_finite()));
    fuzz("model", |bytes| {
        let _ = load_and_forecast(bytes);
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// The proto-to-domain conversion, at the real boundary: raw message bytes sent to a server on
// 127.0.0.1, which decodes them and converts them to domain values.

/// Unary methods fuzzed (not `Retrain`, whose jobs would pile up behind the fuzzer); an input's first byte picks one (modulo their count), the rest is the
/// encoded request.
const METHODS: [&str; 6] = [
    "/prescale.v1.IngestService/Write",
    "/prescale.v1.ForecastService/Forecast",
    "/prescale.v1.PlanService/UpsertWorkload",
    "/prescale.v1.PlanService/GetPlan",
    "/prescale.v1.PlanService/ReportApplied",
    "/prescale.v1.EventService/AddEvent",
];

/// Sends and receives message bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let len = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, len).to_vec()))
    }
}

/// Any request bytes get an answer, never INTERNAL (but for bytes that are no protobuf message) or
/// UNKNOWN (a panic or an unmapped error), and
/// error messages stay short whatever the input's size; the server serves on afterwards.
#[test]
fn fuzz_proto_conversion() {
    use prescale::service::proto::ingest_service_client::IngestServiceClient;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (server, channel) = runtime.block_on(async {
        let server = common::TestServer::start(Default::default(), Default::default()).await;
        let channel = server.channel().await;
        IngestServiceClient::new(channel.clone())
            .write(seed_series())
            .await
            .unwrap();
        (server, channel)
    });
    let grpc = tonic::client::Grpc::new(channel);
    fuzz("proto", |bytes| {
        let Some((&selector, message)) = bytes.split_first() else {
            return Ok(());
        };
        let method = METHODS[usize::from(selector) % METHODS.len()];
        let mut grpc = grpc.clone();
        let answer = runtime.block_on(async {
            grpc.ready()
                .await
                .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
            grpc.unary(
                tonic::Request::new(message.to_vec()),
                tonic::codegen::http::uri::PathAndQuery::from_static(method),
                RawCodec,
            )
            .await
        });
        if let Err(status) = answer {
            // gRPC's status code table makes a request that does not parse INTERNAL, and tonic
            // follows it; every other INTERNAL or UNKNOWN is ours.
            let undecodable = status.code() == tonic::Code::Internal
                && status
                    .message()
                    .starts_with("failed to decode Protobuf message");
            prop_assert!(
                undecodable
                    || !matches!(status.code(), tonic::Code::Internal | tonic::Code::Unknown),
                "{method}: {status:?}"
            );
            prop_assert!(
                status.message().len() <= 1024,
                "{method}: a {}-byte error message",
                status.message().len()
            );
        }
        Ok(())
    });
    runtime.block_on(async {
        IngestServiceClient::new(server.channel().await)
            .write(seed_series())
            .await
            .expect("the server serves on after fuzzing");
        server.shutdown().await;
    });
}

/// Three days of a daily 5-minute cycle in series `load{service="api"}`, for requests to find.
fn seed_series() -> prescale::service::proto::WriteRequest {
    use prescale::service::proto;
    let (timestamps_ms, values) = (0..864i64)
        .map(|index| {
            let phase = (index % 288) as f64 / 288.0 * std::f64::consts::TAU;
            (
                1_420_070_400_000 + index * 300_000,
                500.0 + 300.0 * phase.sin(),
            )
        })
        .unzip();
    proto::WriteRequest {
        series: vec![proto::SeriesSamples {
            series: Some(proto::SeriesRef {
                name: "load".to_owned(),
                labels: [("service".to_owned(), "api".to_owned())].into(),
            }),
            timestamps_ms,
            values,
        }],
    }
}

// ---------------------------------------------------------------------------------------------
// The seed corpus.

/// Rewrites the generated seeds of `tests/fuzz/corpus/` (the WAL segments and the encoded
/// requests; the CSV and model seeds are files copied as they are). Not a check: run it by name
/// with `--ignored` after changing a format.
#[test]
#[ignore = "regenerates the seed corpus"]
fn write_seed_corpus() {
    use prescale::domain::{Sample, SeriesId};
    use prescale::service::proto;
    use prescale::store::{MetricStore, PolarsStore, SeriesSamples, StoreOptions};
    use prost::Message;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus");

    let dir = tempfile::tempdir().unwrap();
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    let load = SeriesId::new("load").unwrap();
    let labelled: SeriesId = r#"http_requests{zone="eu",service="api"}"#.parse().unwrap();
    for batch in 0..3i64 {
        let samples: Vec<Sample> = (0..5)
            .map(|index| {
                Sample::new(
                    1_420_070_400_000 + (batch * 5 + index) * 300_000,
                    1.5 * index as f64,
                )
            })
            .collect();
        store
            .append_batch(&[
                SeriesSamples {
                    series: load.clone(),
                    samples: samples.clone(),
                },
                SeriesSamples {
                    series: labelled.clone(),
                    samples,
                },
            ])
            .unwrap();
    }
    let segment = std::fs::read(dir.path().join(SEGMENT)).unwrap();
    std::fs::write(root.join("wal/three-records.log"), &segment).unwrap();
    std::fs::write(
        root.join("wal/torn-tail.log"),
        &segment[..segment.len() - 7],
    )
    .unwrap();
    // The same, then the labelled series deleted and written again, then deleted for good.
    store.delete_series(&labelled).unwrap();
    store
        .append(&labelled, &[Sample::new(1_420_070_400_000, 2.0)])
        .unwrap();
    store.delete_series(&labelled).unwrap();
    store
        .append(&load, &[Sample::new(1_420_074_000_000, 3.0)])
        .unwrap();
    drop(store);
    let segment = std::fs::read(dir.path().join(SEGMENT)).unwrap();
    std::fs::write(root.join("wal/deletion.log"), &segment).unwrap();

    let requests: [(usize, Vec<u8>); 6] = [
        (0, seed_series().encode_to_vec()),
        (
            1,
            proto::ForecastRequest {
                series: seed_series().series[0].series.clone(),
                horizon: "1d".to_owned(),
                levels: vec![80.0, 95.0],
                model: "seasonal_naive".to_owned(),
            }
            .encode_to_vec(),
        ),
        (
            2,
            proto::UpsertWorkloadRequest {
                workload: Some(proto::Workload {
                    name: "checkout".to_owned(),
                    series: seed_series().series[0].series.clone(),
                    capacity_per_replica: 50.0,
                    target_utilisation: Some(70.0),
                    min_replicas: Some(2),
                    max_replicas: 40,
                    warm_up: "10m".to_owned(),
                    planning_level: Some(95.0),
                    mode: "forecast-and-scale".to_owned(),
                    scale_in: Some(proto::ScaleIn {
                        max_step_down: 2,
                        stabilisation_window: "5m".to_owned(),
                    }),
                    max_capacity: Some(proto::MaxCapacity {
                        breach: "increase".to_owned(),
                        buffer_percent: Some(10.0),
                    }),
                    ..Default::default()
                }),
            }
            .encode_to_vec(),
        ),
        (
            3,
            proto::GetPlanRequest {
                workload: "checkout".to_owned(),
            }
            .encode_to_vec(),
        ),
        (
            4,
            proto::ReportAppliedRequest {
                workload: "checkout".to_owned(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            5,
            proto::Event {
                name: "launch".to_owned(),
                start_ms: 1_420_300_000_000,
                end_ms: 1_420_310_000_000,
                multiplier: Some(2.0),
                like: String::new(),
            }
            .encode_to_vec(),
        ),
    ];
    for (method, message) in requests {
        let name = METHODS[method].rsplit('/').next().unwrap();
        let mut bytes = vec![method as u8];
        bytes.extend_from_slice(&message);
        std::fs::write(root.join(format!("proto/{name}.bin")), bytes).unwrap();
    }
}
