//! Access to the gRPC service: health without a token, every other call with one, reflection for
//! stock gRPC tools, the Prometheus `/metrics` listener, and TLS. A real server on 127.0.0.1:0.

mod common;
mod grpc_support;

use std::sync::Arc;

use common::TestServer;
use grpc_support::{code_of, settings};
use prescale::service::proto::{self, admin_service_client::AdminServiceClient};
use prescale::service::{ServerOptions, TlsFiles};
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

const TOKEN: &str = "0123456789abcdef-test-token";

/// A server that asks every call but health for [`TOKEN`].
async fn serve_with_token() -> (TestServer, Channel) {
    let options = ServerOptions {
        tokens: vec![TOKEN.to_owned()],
        ..ServerOptions::default()
    };
    let server = TestServer::start(settings(), options).await;
    let channel = server.channel().await;
    (server, channel)
}

/// `request` carrying `Bearer <token>`.
fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Health of the plan service, asked without a token.
async fn check_health(channel: &Channel) -> i32 {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "prescale.v1.PlanService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

/// `ListSeries` without a token, then with a wrong one: both refused.
async fn list_series_without_the_token(admin: &mut AdminServiceClient<Channel>) {
    let (code, _) = code_of(admin.list_series(proto::ListSeriesRequest::default()).await);
    assert_eq!(code, Code::Unauthenticated);
    let wrong = with_token(
        proto::ListSeriesRequest::default(),
        "0123456789abcdef-test-tokem",
    );
    assert_eq!(
        code_of(admin.list_series(wrong).await).0,
        Code::Unauthenticated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_needs_no_token() {
    let (server, channel) = serve_with_token().await;
    assert_eq!(check_health(&channel).await, ServingStatus::Serving as i32);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_call_needs_the_token() {
    let (server, channel) = serve_with_token().await;
    let mut admin = AdminServiceClient::new(channel);
    list_series_without_the_token(&mut admin).await;
    admin
        .list_series(with_token(proto::ListSeriesRequest::default(), TOKEN))
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_lists_the_prescale_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let (server, channel) = serve_with_token().await;
    let request = with_token(
        tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]),
        TOKEN,
    );
    let mut replies = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(request)
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    let names: Vec<_> = list
        .service
        .iter()
        .map(|service| service.name.as_str())
        .collect();
    for name in prescale::service::SERVICE_NAMES {
        assert!(names.contains(&name), "{names:?}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1alpha_finds_the_file_of_a_service() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let (server, channel) = serve_with_token().await;
    let request = with_token(
        tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "prescale.v1.PlanService".to_owned(),
            )),
        }]),
        TOKEN,
    );
    let mut replies = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(request)
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    assert!(
        matches!(reply.message_response, Some(MessageResponse::FileDescriptorResponse(ref files)) if !files.file_descriptor_proto.is_empty()),
        "{reply:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_over_http_count_requests_by_method_and_code() {
    let (server, channel) = serve_with_token().await;
    assert_eq!(check_health(&channel).await, ServingStatus::Serving as i32);
    let mut admin = AdminServiceClient::new(channel);
    list_series_without_the_token(&mut admin).await;

    // /metrics over HTTP shows the requests just made.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_address = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let metrics_task = tokio::spawn(prescale::service::serve_metrics(
        listener,
        Arc::clone(&server.metrics),
        stop.clone().cancelled_owned(),
    ));
    let body = http_get(metrics_address, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("text/plain; version=0.0.4"), "{body}");
    assert!(
        body.contains(
            "prescale_grpc_requests_total{method=\"/prescale.v1.AdminService/ListSeries\",code=\"UNAUTHENTICATED\"} 2"
        ),
        "{body}"
    );
    assert!(body.contains("prescale_grpc_request_duration_seconds_bucket{method=\"/grpc.health.v1.Health/Check\",le=\"+Inf\"} 1"), "{body}");
    stop.cancel();
    metrics_task.await.unwrap().unwrap();
    server.shutdown().await;
}

/// A minimal HTTP/1.1 GET over a raw socket; returns the whole response.
async fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    socket
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_tls() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let directory = tempfile::tempdir().unwrap();
    let cert = directory.path().join("server.pem");
    let key = directory.path().join("server.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let options = ServerOptions {
        tls: Some(TlsFiles { cert, key }),
        ..ServerOptions::default()
    };
    let server = TestServer::start(settings(), options).await;
    let channel = Endpoint::from_shared(format!("https://{}", server.address))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(certified.cert.pem()))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let listed = AdminServiceClient::new(channel)
        .list_series(proto::ListSeriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.series.is_empty());
    // A plaintext client cannot talk to it.
    let plaintext = Endpoint::from_shared(format!("http://{}", server.address))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        assert!(
            AdminServiceClient::new(channel)
                .list_series(proto::ListSeriesRequest::default())
                .await
                .is_err()
        );
    }
    server.shutdown().await;
}
