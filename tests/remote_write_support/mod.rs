//! What the remote-write tests share: a prescale server with its HTTP listener (`/metrics` and
//! `/api/v1/write`), a real Prometheus (Debian's `/usr/bin/prometheus`) on 127.0.0.1 killed when
//! dropped, remote-write bodies built by hand, and polling. A test that uses it also declares
//! `mod prometheus_support;` (the port helper).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use prescale::app::Settings;
use prescale::ingest::remote_write_proto::{Label, Sample, TimeSeries, WriteRequest};
use prescale::service::proto::admin_service_client::AdminServiceClient;
use prescale::service::remote_write::{RemoteWrite, RemoteWriteLimits};
use prescale::service::{ServerOptions, proto};
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::common::TestServer;
use crate::grpc_support::settings;
use crate::prometheus_support::free_port;

/// A token of the `[server.auth]` kind (at least 16 characters).
pub(crate) const TOKEN: &str = "remote-write-token-0123456789";

/// A prescale server and its HTTP listener with remote-write.
pub(crate) struct Receiver {
    pub(crate) server: TestServer,
    /// Address of the HTTP listener (`/metrics`, `/api/v1/write`).
    pub(crate) http: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Receiver {
    /// A server requiring `tokens` (none: no auth) with the given limits.
    pub(crate) async fn start(tokens: &[&str], limits: RemoteWriteLimits) -> Self {
        Self::start_with(settings(), tokens, limits).await
    }

    /// [`Receiver::start`] with the server's `settings`.
    pub(crate) async fn start_with(
        settings: Settings,
        tokens: &[&str],
        limits: RemoteWriteLimits,
    ) -> Self {
        let options = ServerOptions {
            tokens: tokens.iter().map(|token| (*token).to_owned()).collect(),
            ..ServerOptions::default()
        };
        let server = TestServer::start(settings, options.clone()).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(prescale::service::serve_http(
            listener,
            Arc::clone(&server.metrics),
            Some(RemoteWrite::new(
                Arc::clone(&server.state),
                &options,
                limits,
            )),
            stop.clone().cancelled_owned(),
        ));
        Self {
            server,
            http,
            stop,
            task,
        }
    }

    pub(crate) fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.http)
    }

    /// Every stored series with its sample count, by canonical name, as gRPC `ListSeries` says.
    pub(crate) async fn stored(&self, token: Option<&str>) -> Vec<(String, u64)> {
        let mut request = tonic::Request::new(proto::ListSeriesRequest::default());
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let listed = AdminServiceClient::new(self.server.channel().await)
            .list_series(request)
            .await
            .unwrap()
            .into_inner();
        listed
            .series
            .into_iter()
            .map(|info| {
                let series = info.series.unwrap_or_default();
                let id =
                    prescale::domain::SeriesId::with_labels(&series.name, series.labels).unwrap();
                (id.to_string(), info.samples)
            })
            .collect()
    }

    pub(crate) async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        self.server.shutdown().await;
    }
}

/// A series with labels `labels` (`__name__` among them) and `samples` of `(time_ms, value)`.
pub(crate) fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(name, value)| Label {
                name: (*name).to_owned(),
                value: (*value).to_owned(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|(timestamp, value)| Sample {
                value: *value,
                timestamp: *timestamp,
            })
            .collect(),
    }
}

/// A snappy-compressed `WriteRequest` of `timeseries`.
pub(crate) fn body(timeseries: Vec<TimeSeries>) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&WriteRequest { timeseries }.encode_to_vec())
        .unwrap()
}

/// Posts `body` with the spec's headers (and `Bearer token` when given); the status code.
pub(crate) async fn post(url: &str, body: Vec<u8>, token: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

/// A Prometheus process with its own config and TSDB in a temporary directory; killed on drop.
pub(crate) struct Prometheus {
    pub(crate) address: SocketAddr,
    child: Child,
    directory: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `/usr/bin/prometheus` with `config` (YAML; `{dir}` replaced by its directory).
    pub(crate) fn start(config: &str, files: &[(&str, &str)]) -> Self {
        let directory = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(directory.path().join(name), text).unwrap();
        }
        let config_path = directory.path().join("prometheus.yml");
        let dir = directory.path().display().to_string();
        std::fs::write(&config_path, config.replace("{dir}", &dir)).unwrap();
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(directory.path().join("prometheus.log")).unwrap();
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                directory.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("/usr/bin/prometheus runs (Debian's prometheus package)");
        Self {
            address,
            child,
            directory,
        }
    }

    /// Prometheus' log so far, for failure messages.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.directory.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The sum of the samples of Prometheus' own metric `name` whose labels contain `labelled`
    /// (0 when there are none).
    pub(crate) async fn own_metric(&self, name: &str, labelled: &str) -> f64 {
        let Ok(response) = reqwest::get(format!("http://{}/metrics", self.address)).await else {
            return 0.0;
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') && rest.contains(labelled))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The JSON answer of its HTTP API at `path` (`/api/v1/rules`); `null` when it does not answer.
    pub(crate) async fn api(&self, path: &str) -> serde_json::Value {
        let Ok(response) = reqwest::get(format!("http://{}{path}", self.address)).await else {
            return serde_json::Value::Null;
        };
        let text = response.text().await.unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// The JSON answer of the instant query `query`; `null` when it does not answer.
    pub(crate) async fn instant(&self, query: &str) -> serde_json::Value {
        let Ok(response) = reqwest::Client::new()
            .get(format!("http://{}/api/v1/query", self.address))
            .query(&[("query", query)])
            .send()
            .await
        else {
            return serde_json::Value::Null;
        };
        let text = response.text().await.unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// The value of the instant query `query`'s only result, when it has one.
    pub(crate) async fn query(&self, query: &str) -> Option<f64> {
        let json = self.instant(query).await;
        let results = json["data"]["result"].as_array()?;
        if results.len() != 1 {
            return None;
        }
        results[0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 250 ms until it holds, for at most `seconds`; whether it held.
pub(crate) async fn eventually<F, Fut>(seconds: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// The `remote_write` block of a Prometheus config: a queue named `name` sending to `url` every
/// second, metadata included, with `Bearer` credentials from `{dir}/token` when `with_token`.
pub(crate) fn remote_write_block(url: &str, name: &str, with_token: bool) -> String {
    let auth = if with_token {
        "    authorization:\n      credentials_file: {dir}/token\n"
    } else {
        ""
    };
    format!(
        "remote_write:\n  - url: {url}\n    name: {name}\n{auth}    queue_config:\n      \
         batch_send_deadline: 1s\n      min_backoff: 100ms\n      max_backoff: 1s\n    \
         metadata_config:\n      send: true\n      send_interval: 1s\n"
    )
}
