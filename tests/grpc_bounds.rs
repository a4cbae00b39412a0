//! What no client can grow or break by calling often or at once: request metrics stay one series
//! per served method whatever paths are called, and concurrent `AddEvent`s are all stored.

mod common;
mod grpc_support;

use common::TestServer;
use grpc_support::{DAY_MS, START_MS, daily, settings};
use prescale::service::ServerOptions;
use prescale::service::proto::{
    self, event_service_client::EventServiceClient, ingest_service_client::IngestServiceClient,
};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// Calls `path` with an empty message and returns the status code.
async fn call_path(channel: &Channel, path: String) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = PathAndQuery::try_from(path).unwrap();
    match grpc.unary(tonic::Request::new(()), path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_unknown_paths_share_one_request_series() {
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let channel = server.channel().await;
    IngestServiceClient::new(channel.clone())
        .write(daily("load", 0, 10))
        .await
        .unwrap();
    // Paths of no service, and unknown methods of a served one.
    for index in 0..500 {
        let path = if index % 2 == 0 {
            format!("/scan{index}.Service/Method{index}")
        } else {
            format!("/prescale.v1.PlanService/Nope{index}")
        };
        assert_eq!(call_path(&channel, path).await, Code::Unimplemented);
    }

    let metrics = &server.metrics;
    assert_eq!(metrics.requests("unknown", "UNIMPLEMENTED"), 500);
    assert_eq!(
        metrics.requests("/prescale.v1.IngestService/Write", "OK"),
        1
    );
    let text = metrics.render();
    let series = text
        .lines()
        .filter(|line| line.starts_with("prescale_grpc_requests_total{"))
        .count();
    assert_eq!(series, 2, "{text}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_add_events_are_all_stored() {
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let channel = server.channel().await;
    let mut calls = tokio::task::JoinSet::new();
    for index in 0..200 {
        let mut events = EventServiceClient::new(channel.clone());
        calls.spawn(async move {
            let start_ms = START_MS + index * DAY_MS;
            events
                .add_event(proto::Event {
                    name: format!("sale-{index}"),
                    start_ms,
                    end_ms: start_ms + 3_600_000,
                    multiplier: Some(1.5),
                    like: String::new(),
                })
                .await
                .map(|_| ())
        });
    }
    while let Some(call) = calls.join_next().await {
        call.unwrap().unwrap();
    }
    let listed = EventServiceClient::new(channel)
        .list_events(proto::ListEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.events.len(), 200);
    server.shutdown().await;
}
