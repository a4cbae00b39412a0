//! The limits of the README's "Limits" table that `tests/grpc_errors.rs` does not already cover,
//! each on a real server on 127.0.0.1: series held, labels per series and label value size, streams
//! per client, a `Push` left idle, a call not answered in time, and the size of an error message
//! whatever the size of the input it is about.

mod common;
mod grpc_support;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use grpc_support::{code_of, daily, forecast_request, settings, workload, write_request};
use prescale::app::SystemClock;
use prescale::service::ServerOptions;
use prescale::service::proto::{
    self, forecast_service_client::ForecastServiceClient,
    ingest_service_client::IngestServiceClient, plan_service_client::PlanServiceClient,
};
use prescale::store::{MAX_LABEL_VALUE_BYTES, MAX_LABELS, StoreOptions};
use tonic::Code;

/// Longest error message a limit may answer with.
const SHORT: usize = 300;

async fn serve(options: ServerOptions, store: StoreOptions) -> TestServer {
    TestServer::start_with_store(
        tempfile::tempdir().unwrap(),
        settings(),
        options,
        Arc::new(SystemClock),
        store,
    )
    .await
}

fn labelled(labels: Vec<(String, String)>) -> proto::WriteRequest {
    let mut request = write_request("load", vec![1_420_070_400_000], vec![1.0]);
    request.series[0].series.as_mut().unwrap().labels = labels.into_iter().collect();
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_beyond_store_max_series_exhaust_resources_and_store_nothing() {
    let store = StoreOptions {
        max_series: 3,
        ..StoreOptions::default()
    };
    let server = serve(ServerOptions::default(), store).await;
    let mut ingest = IngestServiceClient::new(server.channel().await);
    for name in ["a", "b"] {
        ingest.write(daily(name, 0, 10)).await.unwrap();
    }
    let mut two_new = daily("c", 0, 10);
    two_new.series.extend(daily("d", 0, 10).series);
    let (code, message) = code_of(ingest.write(two_new).await);
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(
        message.contains("store.max_series") && message.len() < SHORT,
        "{message}"
    );
    // Nothing of the refused batch was stored; series already held still take samples.
    assert_eq!(server.state.list_series().unwrap().len(), 2);
    ingest.write(daily("a", 10, 10)).await.unwrap();
    ingest.write(daily("c", 0, 10)).await.unwrap();
    let (code, _) = code_of(ingest.write(daily("d", 0, 10)).await);
    assert_eq!(code, Code::ResourceExhausted);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_labels_or_too_long_a_label_value_is_invalid_with_a_short_message() {
    let server = serve(ServerOptions::default(), StoreOptions::default()).await;
    let mut ingest = IngestServiceClient::new(server.channel().await);

    let many = (0..=MAX_LABELS)
        .map(|index| (format!("l{index}"), "v".to_owned()))
        .collect();
    let (code, message) = code_of(ingest.write(labelled(many)).await);
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.len() < SHORT, "{} bytes", message.len());

    let huge = vec![("zone".to_owned(), "x".repeat(10 << 20))];
    let (code, message) = code_of(ingest.write(labelled(huge)).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.len() < SHORT,
        "{} bytes: {}",
        message.len(),
        &message[..SHORT]
    );
    assert!(message.contains("10485760 bytes"), "{message}");

    let longest = vec![("zone".to_owned(), "x".repeat(MAX_LABEL_VALUE_BYTES))];
    ingest.write(labelled(longest)).await.unwrap();
    assert_eq!(server.state.list_series().unwrap().len(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_name_is_echoed_abbreviated() {
    let server = serve(ServerOptions::default(), StoreOptions::default()).await;
    let channel = server.channel().await;
    let name = "n".repeat(1 << 20);
    let (code, message) = code_of(
        IngestServiceClient::new(channel.clone())
            .write(write_request(&name, vec![1_420_070_400_000], vec![1.0]))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.len() < SHORT, "{} bytes", message.len());
    assert!(message.contains("(1048576 bytes)"), "{message}");
    let (code, message) = code_of(
        ForecastServiceClient::new(channel)
            .forecast(forecast_request(&name, "1h"))
            .await,
    );
    assert_eq!(
        code,
        Code::NotFound,
        "{}",
        &message[..message.len().min(SHORT)]
    );
    assert!(message.len() < SHORT, "{} bytes", message.len());
    assert!(message.ends_with(" bytes)"), "{message}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_may_not_hold_more_than_its_streams() {
    let options = ServerOptions {
        max_streams_per_client: 2,
        ..ServerOptions::default()
    };
    let server = serve(options, StoreOptions::default()).await;
    let channel = server.channel().await;
    IngestServiceClient::new(channel.clone())
        .write(daily("load", 0, 3 * 288))
        .await
        .unwrap();
    let mut plans = PlanServiceClient::new(channel.clone());
    plans
        .upsert_workload(workload("api", "load"))
        .await
        .unwrap();
    let watch = || proto::WatchPlansRequest {
        workloads: vec!["api".to_owned()],
    };
    let first = plans.watch_plans(watch()).await.unwrap();
    let _second = plans.watch_plans(watch()).await.unwrap();
    let (code, message) = code_of(plans.watch_plans(watch()).await);
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(
        message.contains("server.max_streams_per_client"),
        "{message}"
    );
    // A Push is a stream too.
    let (code, _) = code_of(
        IngestServiceClient::new(channel.clone())
            .push(tokio_stream::iter(vec![daily("load", 3 * 288, 1)]))
            .await,
    );
    assert_eq!(code, Code::ResourceExhausted);
    // Closing one gives its slot back.
    drop(first);
    let mut reopened = None;
    for _ in 0..100 {
        if let Ok(stream) = plans.watch_plans(watch()).await {
            reopened = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened.is_some(), "the closed stream's slot came back");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_push_is_closed_and_what_it_sent_stays_stored() {
    let options = ServerOptions {
        stream_idle_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let server = serve(options, StoreOptions::default()).await;
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender.send(daily("load", 0, 10)).await.unwrap();
    let mut ingest = IngestServiceClient::new(server.channel().await);
    let push = ingest.push(tokio_stream::wrappers::ReceiverStream::new(receiver));
    let (code, message) = code_of(
        tokio::time::timeout(Duration::from_secs(10), push)
            .await
            .expect("the server ends the idle stream"),
    );
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(message.contains("server.stream_idle_timeout"), "{message}");
    drop(sender);
    assert_eq!(server.state.list_series().unwrap().len(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_not_answered_in_time_exceeds_its_deadline() {
    let options = ServerOptions {
        request_timeout: Duration::from_millis(1),
        ..ServerOptions::default()
    };
    let server = serve(options, StoreOptions::default()).await;
    let channel = server.channel().await;
    // A Push is exempt: it lasts as long as its client sends.
    IngestServiceClient::new(channel.clone())
        .push(tokio_stream::iter(vec![daily("load", 0, 3 * 288)]))
        .await
        .unwrap();
    // The first forecast of a series fits its ensemble: far longer than a millisecond.
    let (code, message) = code_of(
        ForecastServiceClient::new(channel)
            .forecast(forecast_request("load", "1h"))
            .await,
    );
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(message.contains("server.request_timeout"), "{message}");
    server.shutdown().await;
}
