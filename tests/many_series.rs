//! Operating a store of many series, on real servers on 127.0.0.1 and a real `prescale serve`
//! killed with `kill -9`.
//!
//! A deletion is durable (a restart, a `kill -9` right after it, or a checkpoint written before it
//! does not bring the series back), frees its slot under `store.max_series`, is NOT_FOUND for an
//! unknown series and needs the token; a workload on a deleted series keeps its last plan.
//! `ListSeries` pages come in series order, and a page token names a position, so series added or
//! deleted between pages neither repeat nor hide the others. Shutdown writes no checkpoint, and
//! every acknowledged sample is back after the restart.

mod common;
mod grpc_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use grpc_support::{START_MS, code_of, daily, series, settings, workload, write_request};
use prescale::app::{PlanState, SystemClock};
use prescale::domain::{Sample, SeriesId};
use prescale::service::ServerOptions;
use prescale::service::proto::{
    self, admin_service_client::AdminServiceClient, ingest_service_client::IngestServiceClient,
    plan_service_client::PlanServiceClient,
};
use prescale::store::{MetricStore, PolarsStore, StoreError, StoreOptions};
use rand::{Rng, SeedableRng};
use tonic::Code;
use tonic::transport::Channel;

async fn serve_in(directory: tempfile::TempDir, store: StoreOptions) -> TestServer {
    TestServer::start_with_store(
        directory,
        settings(),
        ServerOptions::default(),
        Arc::new(SystemClock),
        store,
    )
    .await
}

/// The series `name{service="api"}` the support module writes to.
fn series_id(name: &str) -> SeriesId {
    SeriesId::with_labels(name, [("service", "api")]).unwrap()
}

fn delete_request(name: &str) -> proto::DeleteSeriesRequest {
    proto::DeleteSeriesRequest {
        series: series(name),
    }
}

/// Names of every series, paging through `ListSeries` with `page_size`.
async fn list_all(admin: &mut AdminServiceClient<Channel>, page_size: u32) -> Vec<String> {
    let mut names = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_series(proto::ListSeriesRequest {
                page_size,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        names.extend(page.series.iter().map(name_of));
        if page.next_page_token.is_empty() {
            return names;
        }
        page_token = page.next_page_token;
    }
}

fn name_of(info: &proto::SeriesInfo) -> String {
    info.series.as_ref().unwrap().name.clone()
}

/// Waits until the workload's latest plan attempt failed, and returns why.
async fn failed_plan(server: &TestServer, workload: &str) -> String {
    for _ in 0..600 {
        if let PlanState::Failed { error, last } = server.state.plan(workload).unwrap() {
            assert!(last.is_some(), "the last good plan is kept");
            return error.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the workload's plan did not fail within a minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_series_frees_its_slot_stays_deleted_and_its_workload_keeps_its_last_plan() {
    let store = StoreOptions {
        max_series: 2,
        ..StoreOptions::default()
    };
    let server = serve_in(tempfile::tempdir().unwrap(), store.clone()).await;
    let channel = server.channel().await;
    let (mut ingest, mut admin) = (
        IngestServiceClient::new(channel.clone()),
        AdminServiceClient::new(channel.clone()),
    );
    let mut plans = PlanServiceClient::new(channel.clone());
    ingest.write(daily("load", 0, 3 * 288)).await.unwrap();
    ingest.write(daily("other", 0, 10)).await.unwrap();
    plans
        .upsert_workload(workload("shop", "load"))
        .await
        .unwrap();
    let mut stream = common::watch_plans(&channel, &["shop"]).await;
    let first = common::next_plan(&mut stream).await;
    let (code, _) = code_of(ingest.write(daily("third", 0, 10)).await);
    assert_eq!(code, Code::ResourceExhausted, "the store is full");

    let deleted = admin.delete_series(delete_request("load")).await.unwrap();
    assert_eq!(deleted.into_inner().samples, 3 * 288);
    let (code, message) = code_of(admin.delete_series(delete_request("load")).await);
    assert_eq!(code, Code::NotFound, "{message}");
    ingest.write(daily("third", 0, 10)).await.unwrap();

    // The workload is replanned at once; that fails and says why, and its last plan is served.
    let error = failed_plan(&server, "shop").await;
    assert!(error.contains("unknown series load"), "{error}");
    let served = plans
        .get_plan(proto::GetPlanRequest {
            workload: "shop".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (served.revision, served.generated_at_ms),
        (first.revision, first.generated_at_ms)
    );
    assert!(
        server.state.live_version(&series_id("load")).is_some(),
        "its model stays live"
    );

    let directory = server.shutdown().await;
    let server = serve_in(directory, store).await;
    let mut admin = AdminServiceClient::new(server.channel().await);
    assert_eq!(list_all(&mut admin, 0).await, ["other", "third"]);
    // Written again, the series holds only what was written after its deletion.
    admin.delete_series(delete_request("other")).await.unwrap();
    let mut ingest = IngestServiceClient::new(server.channel().await);
    ingest.write(daily("load", 3 * 288, 5)).await.unwrap();
    let summary = server
        .state
        .history()
        .store()
        .summary(&series_id("load"))
        .unwrap();
    assert_eq!(summary.samples, 5);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_series_needs_the_token() {
    const TOKEN: &str = "0123456789abcdef-test-token";
    let options = ServerOptions {
        tokens: vec![TOKEN.to_owned()],
        ..ServerOptions::default()
    };
    let server = TestServer::start(settings(), options).await;
    let mut admin = AdminServiceClient::new(server.channel().await);
    let (code, _) = code_of(admin.delete_series(delete_request("load")).await);
    assert_eq!(code, Code::Unauthenticated);
    let mut request = tonic::Request::new(delete_request("load"));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (code, _) = code_of(admin.delete_series(request).await);
    assert_eq!(
        code,
        Code::NotFound,
        "with the token, the series is looked for"
    );
    server.shutdown().await;
}

/// A crash between logging a deletion and updating the checkpoint manifest: the manifest and the
/// Parquet file of the series are put back as they were before the deletion. Opening replays the
/// deletion, takes the series out of the manifest, and later checkpoints keep it out.
#[test]
fn a_deletion_outlives_the_checkpoint_written_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (gone, kept) = (series_id("gone"), series_id("kept"));
    let samples: Vec<Sample> = (0..100).map(|i| Sample::new(START_MS + i, 1.0)).collect();
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    store.append(&gone, &samples).unwrap();
    store.append(&kept, &samples).unwrap();
    store.checkpoint().unwrap();
    let checkpointed = copy_dir(&dir.path().join("series"));
    assert_eq!(store.delete_series(&gone).unwrap(), 100);
    assert!(matches!(
        store.delete_series(&gone),
        Err(StoreError::UnknownSeries { .. })
    ));
    drop(store);
    restore_dir(&checkpointed, &dir.path().join("series"));

    for _ in 0..2 {
        let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.series(), std::slice::from_ref(&kept));
        let manifest = std::fs::read_to_string(dir.path().join("series/manifest.json")).unwrap();
        assert!(!manifest.contains("gone"), "{manifest}");
        store.checkpoint().unwrap();
    }
}

fn copy_dir(dir: &Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.file_name(), std::fs::read(entry.path()).unwrap())
        })
        .collect()
}

fn restore_dir(files: &[(std::ffi::OsString, Vec<u8>)], dir: &Path) {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Runs the `prescale` binary with `args`; its standard output.
fn prescale(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(args)
        .env_remove("PRESCALE_CONFIG")
        .output()
        .unwrap();
    assert!(output.status.success(), "{args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// `prescale import` checkpoints a series, a `prescale serve` logs more of it, deletes it and is
/// killed with `kill -9` as soon as the deletion is acknowledged: neither the store nor a restarted
/// server has it. The CLI lists and deletes through `--server`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_survives_kill_9_right_after_it_is_acknowledged() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let csv = root.path().join("gone.csv");
    let rows: String = (0..50)
        .map(|i| format!("{},{i}\n", START_MS + i * 300_000))
        .collect();
    std::fs::write(&csv, format!("timestamp,value\n{rows}")).unwrap();
    let data_arg = data.to_str().unwrap();
    prescale(&[
        "import",
        "--series",
        r#"gone{service="api"}"#,
        csv.to_str().unwrap(),
        "--data-dir",
        data_arg,
    ]);
    let serve_args = ["--listen", "127.0.0.1:0", "--metrics-listen", "off"];
    let (mut child, mut lines) = common::spawn_serve(root.path(), &serve_args);
    let url = server_url(&lines.next().unwrap().unwrap());
    let channel = Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Samples of both in the log too, besides the checkpoint of the imported one.
    let mut ingest = IngestServiceClient::new(channel.clone());
    ingest.write(daily("kept", 0, 10)).await.unwrap();
    ingest.write(daily("gone", 100, 10)).await.unwrap();
    AdminServiceClient::new(channel)
        .delete_series(delete_request("gone"))
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    let listed = prescale(&["series", "list", "--data-dir", data_arg]);
    assert!(
        listed.contains("kept") && !listed.contains("gone"),
        "{listed}"
    );
    let (mut child, mut lines) = common::spawn_serve(root.path(), &serve_args);
    let url = server_url(&lines.next().unwrap().unwrap());
    let listed = prescale(&["series", "list", "--server", &url]);
    assert!(
        listed.contains("kept") && !listed.contains("gone"),
        "{listed}"
    );
    let deleted = prescale(&[
        "series",
        "delete",
        "kept",
        "--label",
        "service=api",
        "--server",
        &url,
    ]);
    assert!(
        deleted.contains("deleted kept") && deleted.contains("(10 samples)"),
        "{deleted}"
    );
    assert!(prescale(&["series", "list", "--server", &url]).contains("no series stored"));
    common::stop_with_sigterm(&mut child, lines);
}

/// The `http://` URL in the line `prescale serve` prints first.
fn server_url(line: &str) -> String {
    let address = line
        .strip_prefix("prescale serving gRPC on ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{line}"));
    format!("http://{address}")
}

/// A write of one sample to each of `names`.
fn one_sample_each(names: &[String]) -> proto::WriteRequest {
    proto::WriteRequest {
        series: names
            .iter()
            .flat_map(|name| write_request(name, vec![START_MS], vec![1.0]).series)
            .collect(),
    }
}

fn numbered(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("s{i:05}")).collect()
}

/// A server storing one sample of each of `count` series, and their names in order.
async fn serve_numbered(count: usize) -> (TestServer, Vec<String>) {
    let server = serve_in(tempfile::tempdir().unwrap(), StoreOptions::default()).await;
    let mut ingest = IngestServiceClient::new(server.channel().await);
    let names = numbered(count);
    for chunk in names.chunks(500) {
        ingest.write(one_sample_each(chunk)).await.unwrap();
    }
    (server, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_list_every_series_once_in_order() {
    let (server, names) = serve_numbered(2_500).await;
    let channel = server.channel().await;
    let mut admin = AdminServiceClient::new(channel);
    let first = admin
        .list_series(proto::ListSeriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.series.len(), 1_000, "the default page size");
    assert_eq!(list_all(&mut admin, 0).await, names);
    assert_eq!(list_all(&mut admin, 999).await, names);
    let clamped = admin
        .list_series(proto::ListSeriesRequest {
            page_size: 1_000_000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(clamped.series.len(), 2_500);
    assert!(clamped.next_page_token.is_empty());
    for token in ["zz", "6c6f6", "ff00"] {
        let (code, message) = code_of(
            admin
                .list_series(proto::ListSeriesRequest {
                    page_size: 0,
                    page_token: token.to_owned(),
                })
                .await,
        );
        assert_eq!(code, Code::InvalidArgument, "{token}: {message}");
    }
    server.shutdown().await;
}

/// While one client pages through 2,500 series 100 at a time, another deletes some of them and
/// adds others. Every series stored throughout is listed exactly once, in order, and nothing is
/// listed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_stay_whole_while_series_are_added_and_deleted() {
    let (server, names) = serve_numbered(2_500).await;
    let channel = server.channel().await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(18);
    let victims: BTreeSet<String> = (0..200)
        .map(|_| names[rng.random_range(0..names.len())].clone())
        .collect();
    // Added names sort between the stored ones (`s00123a` after `s00123`).
    let added: Vec<String> = (0..200)
        .map(|_| format!("{}a", names[rng.random_range(0..names.len())]))
        .collect();
    let churn = {
        let (victims, added) = (victims.clone(), added.clone());
        let channel = channel.clone();
        tokio::spawn(async move {
            let mut admin = AdminServiceClient::new(channel.clone());
            let mut ingest = IngestServiceClient::new(channel);
            for (victim, new) in victims.iter().zip(&added) {
                admin.delete_series(delete_request(victim)).await.unwrap();
                ingest
                    .write(one_sample_each(std::slice::from_ref(new)))
                    .await
                    .unwrap();
            }
        })
    };
    let mut admin = AdminServiceClient::new(channel);
    let listed = list_all(&mut admin, 100).await;
    churn.await.unwrap();

    let ids: Vec<SeriesId> = listed.iter().map(|name| series_id(name)).collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "in order, none twice"
    );
    let listed: BTreeSet<&String> = listed.iter().collect();
    for name in names.iter().filter(|name| !victims.contains(*name)) {
        assert!(listed.contains(name), "{name} was stored throughout");
    }
    assert!(
        listed
            .iter()
            .all(|name| names.contains(name) || added.contains(name))
    );
    server.shutdown().await;
}

/// Shutting down leaves checkpointing to the store's schedule: no Parquet file is written, and
/// every acknowledged sample of every series is back after the restart, read from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_no_checkpoint_and_a_restart_has_every_sample() {
    let server = serve_in(tempfile::tempdir().unwrap(), StoreOptions::default()).await;
    let mut ingest = IngestServiceClient::new(server.channel().await);
    let names = numbered(300);
    for (round, chunk) in names.chunks(50).enumerate() {
        let mut request = proto::WriteRequest::default();
        for name in chunk {
            request
                .series
                .extend(daily(name, round as i64 * 20, 20).series);
        }
        ingest.write(request).await.unwrap();
    }
    let before = server.state.list_series().unwrap();
    let directory = server.shutdown().await;
    let parquet = std::fs::read_dir(directory.path().join("series"))
        .unwrap()
        .filter(|entry| {
            let path = entry.as_ref().unwrap().path();
            path.extension()
                .is_some_and(|extension| extension == "parquet")
        })
        .count();
    assert_eq!(parquet, 0, "shutdown wrote no checkpoint");

    let server = serve_in(directory, StoreOptions::default()).await;
    assert_eq!(server.state.list_series().unwrap(), before);
    assert_eq!(before.len(), 300);
    assert!(before.iter().all(|summary| summary.samples == 20));
    server.shutdown().await;
}

/// The log a previous process wrote counts towards the next checkpoint, so restarts that each
/// log less than `checkpoint_after_bytes` do not let the log grow without a checkpoint.
#[test]
fn the_log_replayed_at_open_counts_towards_the_next_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        checkpoint_after_bytes: 16 * 1024,
        ..StoreOptions::default()
    };
    let series = series_id("load");
    // 12 KiB of samples: under the threshold.
    let samples: Vec<Sample> = (0..768).map(|i| Sample::new(START_MS + i, 1.0)).collect();
    let store = PolarsStore::open(dir.path(), options.clone()).unwrap();
    store.append(&series, &samples).unwrap();
    drop(store);
    let manifest = dir.path().join("series/manifest.json");
    assert!(!manifest.exists());
    let store = PolarsStore::open(dir.path(), options).unwrap();
    // Another 6 KiB: under the threshold alone, over it with what the first process logged.
    store.append(&series, &samples[..384]).unwrap();
    store.wait_for_background_checkpoint();
    assert!(manifest.exists(), "the checkpoint was written");
    drop(store);
}
