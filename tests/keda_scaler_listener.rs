//! The KEDA external scaler's listener from outside: with a client CA it answers only clients
//! holding a certificate that CA signed, and `prescale serve --scaler-listen` opens it beside the
//! main listener and closes it on SIGTERM. What it serves is in `tests/keda_scaler.rs`.

mod common;

use std::sync::Arc;

use common::{ManualClock, TestServer, connect, scaled_object};
use prescale::app::Settings;
use prescale::service::externalscaler::external_scaler_client::ExternalScalerClient;
use prescale::service::{ScalerOptions, ScalerTls, ServerOptions, TlsFiles};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// PEM files of a CA, a server certificate for `localhost` and a client certificate, both signed
/// by the CA, written in `directory`.
struct Pki {
    ca: String,
    client_cert: String,
    client_key: String,
    tls: ScalerTls,
}

fn pki(directory: &std::path::Path) -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let signed = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = signed("localhost");
    let (client_cert, client_key) = signed("keda-operator");
    let write = |name: &str, text: &str| {
        let path = directory.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca: ca.pem(),
        tls: ScalerTls {
            identity: TlsFiles {
                cert: write("scaler.pem", &server_cert),
                key: write("scaler.key", &server_key),
            },
            client_ca: Some(write("ca.pem", &ca.pem())),
        },
        client_cert,
        client_key,
    }
}

/// A GetMetricSpec over TLS, with the client certificate when given: the status, or the
/// transport's refusal as `Unavailable`.
async fn spec_over_tls(
    address: std::net::SocketAddr,
    ca: &str,
    identity: Option<Identity>,
) -> Code {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    let endpoint = Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let Ok(channel) = endpoint.connect().await else {
        return Code::Unavailable;
    };
    match ExternalScalerClient::new(channel)
        .get_metric_spec(scaled_object("x", &[("workload", "nope")]))
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_the_scaler_answers_only_clients_with_a_certificate() {
    let directory = tempfile::tempdir().unwrap();
    let pki = pki(directory.path());
    let server = TestServer::start_with_scaler(
        tempfile::tempdir().unwrap(),
        Settings::default(),
        ServerOptions::default(),
        Arc::new(ManualClock::default()),
        Some(ScalerOptions {
            tls: Some(pki.tls.clone()),
            ..ScalerOptions::default()
        }),
    )
    .await;
    let address = server.scaler_address.unwrap();
    let keda = Identity::from_pem(&pki.client_cert, &pki.client_key);
    // Through the handshake to the handler, which knows no such workload.
    assert_eq!(
        spec_over_tls(address, &pki.ca, Some(keda)).await,
        Code::NotFound
    );
    let anonymous = spec_over_tls(address, &pki.ca, None).await;
    assert!(
        !matches!(anonymous, Code::Ok | Code::NotFound),
        "a client without a certificate is refused before any handler: {anonymous:?}"
    );
    let plaintext = connect_plaintext(address).await;
    assert!(plaintext.is_err(), "no plaintext on a TLS listener");
    server.shutdown().await;
}

/// A GetMetricSpec over plaintext; `Err` when the connection or the call fails.
async fn connect_plaintext(address: std::net::SocketAddr) -> Result<(), String> {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .map_err(|error| error.to_string())?;
    ExternalScalerClient::new(channel)
        .get_metric_spec(scaled_object("x", &[("workload", "nope")]))
        .await
        .map(drop)
        .map_err(|status| status.to_string())
}

#[test]
fn prescale_serve_opens_the_scaler_listener_and_stops_it_on_sigterm() {
    let root = tempfile::tempdir().unwrap();
    let (mut child, mut lines) = common::spawn_serve(
        root.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--scaler-listen",
            "127.0.0.1:0",
        ],
    );
    let scaler_line = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|line| line.starts_with("KEDA external scaler on "))
        .expect("serve says where the scaler listens");
    let scaler: std::net::SocketAddr = scaler_line
        .strip_prefix("KEDA external scaler on ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(scaler_line.contains("plaintext"), "{scaler_line}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let channel = connect(scaler).await;
        let status = tonic_health::pb::health_client::HealthClient::new(channel.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: "externalscaler.ExternalScaler".to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        let unknown = ExternalScalerClient::new(channel)
            .is_active(scaled_object("x", &[("workload", "checkout")]))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound, "no workload stored yet");
    });

    common::stop_with_sigterm(&mut child, lines);
    assert!(
        std::net::TcpStream::connect(scaler).is_err(),
        "the scaler listener is closed"
    );
}
