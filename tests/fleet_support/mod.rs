//! `prescale serve` replicas of one fleet on 127.0.0.1 for the fleet tests: each with its own data
//! directory and gRPC listener (and, as its test asks, a KEDA scaler and `/metrics` listener, a
//! shared model store, a TSDB), joined through a real etcd, killed on drop; and the workloads they
//! share, each on its own series of a real Prometheus. A test that uses it also declares
//! `mod etcd_support;` and `mod prometheus_support;`.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use prescale::fleet::etcd::Etcd;
use prescale::fleet::{FleetView, Member, MemberInfo, MemberState};
use prescale::service::proto::{
    self, GetPlanRequest, GetWorkloadRequest, ListSeriesRequest, UpsertWorkloadRequest,
    admin_service_client::AdminServiceClient, plan_service_client::PlanServiceClient,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::prometheus_support::{free_port, http_get};

/// The membership lease of the replicas (`[fleet] lease_ttl` unless a test sets another).
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(3);

/// Days of 30-minute history each workload's series has.
pub(crate) const HISTORY_DAYS: usize = 10;

/// A replica's config: what every fleet test's replica has (gRPC on a free port, no registry
/// schedule, fast source polling, `[fleet]` on one etcd) and the extras a test asks for.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaConfig {
    id: String,
    etcd: String,
    lease_ttl: Duration,
    etcd_timeout: Duration,
    join_timeout: Option<Duration>,
    forward_timeout: Option<Duration>,
    metrics: bool,
    scaler: bool,
    model_store: Option<String>,
    prefix: Option<String>,
    keep_versions: Option<usize>,
    tsdb: Option<String>,
    max_concurrent_fits: Option<usize>,
    max_message_mib: Option<usize>,
    fsync: bool,
    env: Vec<(String, String)>,
    tls: Option<PeerTls>,
    etcd_tls: Option<PeerTls>,
    tokens: Vec<String>,
}

/// A replica's TLS files: its certificate and key, and the fleet's CA that signed them.
#[derive(Debug, Clone)]
pub(crate) struct PeerTls {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) ca: PathBuf,
}

/// A replica's config file and the listeners it names.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    /// The config file.
    pub(crate) config: PathBuf,
    /// The gRPC address.
    pub(crate) address: String,
    /// The KEDA scaler's address, when it has one.
    pub(crate) scaler: Option<String>,
    /// The `/metrics` address, when it has one.
    pub(crate) metrics: Option<String>,
}

impl ReplicaConfig {
    /// Member `id` of the fleet on etcd `etcd`: lease [`LEASE_TTL`], etcd timeout 2 s, no
    /// `/metrics`, no KEDA scaler, no model store, no TSDB.
    pub(crate) fn new(id: &str, etcd: &str) -> Self {
        Self {
            id: id.to_owned(),
            etcd: etcd.to_owned(),
            lease_ttl: LEASE_TTL,
            etcd_timeout: Duration::from_secs(2),
            join_timeout: None,
            forward_timeout: None,
            metrics: false,
            scaler: false,
            model_store: None,
            prefix: None,
            keep_versions: None,
            tsdb: None,
            max_concurrent_fits: None,
            max_message_mib: None,
            fsync: true,
            env: Vec::new(),
            tls: None,
            etcd_tls: None,
            tokens: Vec::new(),
        }
    }

    /// `[server.auth] tokens`: its API (and remote-write) accept only calls carrying one of them.
    #[must_use]
    pub(crate) fn tokens(mut self, tokens: &[&str]) -> Self {
        self.tokens = tokens.iter().map(|token| (*token).to_owned()).collect();
        self
    }

    /// `[fleet] etcd_ca_file`, `etcd_cert_file` and `etcd_key_file` from `tls` (for `https://`
    /// etcd endpoints).
    #[must_use]
    pub(crate) fn etcd_tls(mut self, tls: &PeerTls) -> Self {
        self.etcd_tls = Some(tls.clone());
        self
    }

    /// `[server.tls]` with `tls`'s certificate and key (and `[scaler.tls]`, asking clients for a
    /// certificate its CA signed, when the replica has a scaler), and `[fleet] peer_ca_file` its
    /// CA.
    #[must_use]
    pub(crate) fn tls(mut self, tls: &PeerTls) -> Self {
        self.tls = Some(tls.clone());
        self
    }

    /// `[fleet] lease_ttl`.
    #[must_use]
    pub(crate) fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// `[fleet] etcd_timeout`.
    #[must_use]
    pub(crate) fn etcd_timeout(mut self, timeout: Duration) -> Self {
        self.etcd_timeout = timeout;
        self
    }

    /// `[fleet] join_timeout` (the default when not set).
    #[must_use]
    pub(crate) fn join_timeout(mut self, timeout: Duration) -> Self {
        self.join_timeout = Some(timeout);
        self
    }

    /// `[fleet] forward_timeout` (the default when not set).
    #[must_use]
    pub(crate) fn forward_timeout(mut self, timeout: Duration) -> Self {
        self.forward_timeout = Some(timeout);
        self
    }

    /// A `/metrics` listener on a free port.
    #[must_use]
    pub(crate) fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// A KEDA scaler listener on a free port, advertised to the fleet.
    #[must_use]
    pub(crate) fn scaler(mut self) -> Self {
        self.scaler = true;
        self
    }

    /// `[fleet] model_store` in directory `store`.
    #[must_use]
    pub(crate) fn model_store(mut self, store: &Path) -> Self {
        self.model_store = Some(format!("model_store = \"file://{}\"\n", store.display()));
        self
    }

    /// `[fleet] model_store = "<url>"` (`s3://` or `az://`) at `model_store_endpoint =
    /// "<endpoint>"`, the process given `credentials` (`AWS_*` or `AZURE_*` variables).
    #[must_use]
    pub(crate) fn cloud_model_store(
        mut self,
        url: &str,
        endpoint: &str,
        credentials: Vec<(String, String)>,
    ) -> Self {
        self.model_store = Some(format!(
            "model_store = \"{url}\"\nmodel_store_endpoint = \"{endpoint}\"\n"
        ));
        self.env.extend(credentials);
        self
    }

    /// `[fleet] prefix`: the etcd key prefix, which makes it a fleet of its own.
    #[must_use]
    pub(crate) fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Some(prefix.to_owned());
        self
    }

    /// `[registry] keep_versions`.
    #[must_use]
    pub(crate) fn keep_versions(mut self, keep: usize) -> Self {
        self.keep_versions = Some(keep);
        self
    }

    /// The Prometheus at `url` as the fleet's TSDB (queries and remote write, 2 s timeout).
    #[must_use]
    pub(crate) fn tsdb(mut self, url: &str) -> Self {
        self.tsdb = Some(url.to_owned());
        self
    }

    /// `[planning] max_concurrent_fits`.
    #[must_use]
    pub(crate) fn max_concurrent_fits(mut self, fits: usize) -> Self {
        self.max_concurrent_fits = Some(fits);
        self
    }

    /// `[server] max_message_mib`.
    #[must_use]
    pub(crate) fn max_message_mib(mut self, mib: usize) -> Self {
        self.max_message_mib = Some(mib);
        self
    }

    /// `[store] fsync = false`.
    #[must_use]
    pub(crate) fn no_fsync(mut self) -> Self {
        self.fsync = false;
        self
    }

    /// `RUST_LOG` of the process.
    #[must_use]
    pub(crate) fn log(mut self, filter: &str) -> Self {
        self.env.push(("RUST_LOG".to_owned(), filter.to_owned()));
        self
    }

    /// Writes `prescale.toml` into `directory` (also its data directory), on free ports.
    pub(crate) fn write(&self, directory: &Path) -> Written {
        let written = Written {
            config: directory.join("prescale.toml"),
            address: format!("127.0.0.1:{}", free_port()),
            scaler: self.scaler.then(|| format!("127.0.0.1:{}", free_port())),
            metrics: self.metrics.then(|| format!("127.0.0.1:{}", free_port())),
        };
        std::fs::write(&written.config, self.text(directory, &written)).unwrap();
        written
    }

    fn text(&self, data: &Path, written: &Written) -> String {
        let address = &written.address;
        let metrics = written.metrics.as_deref().unwrap_or("off");
        // Sections before `[server]`; keys under `[server]` and the sections after it, before
        // `[registry]`; keys under `[fleet]` after those every replica has.
        let mut sections = String::new();
        let mut server = String::new();
        let mut extras = String::new();
        if !self.fsync {
            sections += "[store]\nfsync = false\n";
        }
        if let Some(mib) = self.max_message_mib {
            server += &format!("max_message_mib = {mib}\n");
        }
        if let Some(fits) = self.max_concurrent_fits {
            server += &format!("[planning]\nmax_concurrent_fits = {fits}\n");
        }
        if let Some(scaler) = &written.scaler {
            server += &format!("[scaler]\nlisten = \"{scaler}\"\n");
            extras += &format!("scaler_advertise = \"{scaler}\"\n");
            if let Some(tls) = &self.tls {
                // KEDA must present a certificate the fleet's CA signed, as replicas do.
                server += &format!(
                    "[scaler.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
                    tls.cert.display(),
                    tls.key.display(),
                    tls.ca.display()
                );
            }
        }
        if let Some(store) = &self.model_store {
            extras += store;
        }
        if let Some(prefix) = &self.prefix {
            extras += &format!("prefix = \"{prefix}\"\n");
        }
        if let Some(url) = &self.tsdb {
            extras += &format!(
                "tsdb_url = \"{url}\"\ntsdb_remote_write_url = \"{url}/api/v1/write\"\n\
                 tsdb_timeout = \"2s\"\n"
            );
        }
        if let Some(tls) = &self.tls {
            server += &format!(
                "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                tls.cert.display(),
                tls.key.display()
            );
            extras += &format!("peer_ca_file = \"{}\"\n", tls.ca.display());
        }
        if !self.tokens.is_empty() {
            server += &format!("[server.auth]\ntokens = {:?}\n", self.tokens);
        }
        if let Some(tls) = &self.etcd_tls {
            extras += &format!(
                "etcd_ca_file = \"{}\"\netcd_cert_file = \"{}\"\netcd_key_file = \"{}\"\n",
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display()
            );
        }
        for (key, timeout) in [
            ("join_timeout", self.join_timeout),
            ("forward_timeout", self.forward_timeout),
        ] {
            if let Some(timeout) = timeout {
                extras += &format!("{key} = \"{}\"\n", humantime::format_duration(timeout));
            }
        }
        format!(
            r#"data_dir = "{data}"
{sections}[server]
listen = "{address}"
metrics_listen = "{metrics}"
{server}[registry]
schedule = "off"
{registry}[sources]
poll_interval = "1s"
retry_initial = "200ms"
retry_max = "1s"
[fleet]
etcd_endpoints = ["{etcd}"]
member_id = "{id}"
advertise = "{address}"
lease_ttl = "{ttl}"
etcd_timeout = "{timeout}"
{extras}"#,
            data = data.display(),
            registry = self
                .keep_versions
                .map(|keep| format!("keep_versions = {keep}\n"))
                .unwrap_or_default(),
            etcd = self.etcd,
            id = self.id,
            ttl = humantime::format_duration(self.lease_ttl),
            timeout = humantime::format_duration(self.etcd_timeout),
        )
    }

    /// Starts the replica and waits until its member key is in etcd.
    pub(crate) fn start(self) -> Replica {
        let directory = tempfile::tempdir().unwrap();
        let written = self.write(directory.path());
        let mut replica = Replica {
            id: self.id,
            address: written.address,
            scaler: written.scaler,
            metrics: written.metrics.map(|metrics| format!("http://{metrics}")),
            config: written.config,
            env: self.env,
            tls: self.tls.map(|tls| ClientPems {
                ca: std::fs::read(tls.ca).unwrap(),
                cert: std::fs::read(tls.cert).unwrap(),
                key: std::fs::read(tls.key).unwrap(),
            }),
            child: None,
            directory,
        };
        replica.restart();
        replica
    }
}

/// A `prescale serve` replica; killed on drop.
pub(crate) struct Replica {
    /// Its member id.
    pub(crate) id: String,
    /// Its gRPC address.
    pub(crate) address: String,
    /// Its KEDA scaler's address, when it has one.
    pub(crate) scaler: Option<String>,
    /// Its `/metrics` base URL, when it has one.
    pub(crate) metrics: Option<String>,
    /// Its config file.
    pub(crate) config: PathBuf,
    /// The environment variables its process is given.
    env: Vec<(String, String)>,
    /// The fleet's CA and this replica's certificate and key (PEM) when it serves TLS.
    tls: Option<ClientPems>,
    /// The running process, `None` after a kill.
    child: Option<Child>,
    /// Its data directory and config file; kept across restarts.
    directory: tempfile::TempDir,
}

impl Replica {
    /// Starts the process (again, after a kill: on the same data directory, as a StatefulSet pod
    /// keeps its volume) and waits until its member key is in etcd.
    pub(crate) fn restart(&mut self) {
        self.child = Some(crate::etcd_support::start_member_with_env(
            &self.id,
            &self.config,
            &self.env,
        ));
    }

    /// The environment variables its process is given (an S3 model store's credentials), for a
    /// command run as in its pod.
    pub(crate) fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Its process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its data directory.
    pub(crate) fn data_dir(&self) -> &Path {
        self.directory.path()
    }

    /// A channel to its gRPC API (over TLS, trusting the fleet's CA, when it serves TLS).
    pub(crate) async fn channel(&self) -> Channel {
        match &self.tls {
            None => connect(&self.address).await,
            Some(pems) => {
                connect_tls(
                    &self.address,
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pems.ca)),
                )
                .await
            }
        }
    }

    /// A channel to its KEDA scaler (over TLS with a client certificate the fleet's CA signed,
    /// when it serves TLS).
    pub(crate) async fn scaler_channel(&self) -> Channel {
        let address = self
            .scaler
            .as_deref()
            .expect("a replica with a KEDA scaler");
        match &self.tls {
            None => connect(address).await,
            Some(pems) => {
                connect_tls(
                    address,
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(&pems.ca))
                        .identity(Identity::from_pem(&pems.cert, &pems.key)),
                )
                .await
            }
        }
    }

    /// The value of gauge `name` on its `/metrics`, when it shows it.
    pub(crate) fn gauge(&self, name: &str) -> Option<f64> {
        let metrics = self.metrics.as_deref().expect("a replica with /metrics");
        let (status, body) = http_get(metrics, "/metrics")?;
        assert_eq!(status, 200, "{body}");
        body.lines().find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// The value of counter `name` on its `/metrics`, which must show it.
    pub(crate) fn counter(&self, name: &str) -> f64 {
        self.gauge(name)
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    }

    /// Its gRPC health of `service` (`""`: the server as a whole, as Kubernetes probes ask).
    pub(crate) async fn health(&self, service: &str) -> ServingStatus {
        let status = HealthClient::new(self.channel().await)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        ServingStatus::try_from(status).unwrap()
    }

    /// Whether it follows workload `name`'s source (only its owner does). Asked with the call
    /// marked as forwarded, so it answers from its own follower, or refuses (`UNAVAILABLE`) when
    /// another member owns the workload, rather than forward it to the owner.
    pub(crate) async fn follows(&self, name: &str) -> Result<bool, tonic::Status> {
        let mut request = tonic::Request::new(GetWorkloadRequest {
            name: name.to_owned(),
        });
        request
            .metadata_mut()
            .insert("x-prescale-forwarded", "1".parse().unwrap());
        match PlanServiceClient::new(self.channel().await)
            .get_workload(request)
            .await
        {
            Ok(workload) => Ok(workload
                .into_inner()
                .source_status
                .is_some_and(|status| status.last_success_ms > 0)),
            Err(status) if status.code() == tonic::Code::Unavailable => Ok(false),
            Err(status) => Err(status),
        }
    }

    /// The workloads its `/metrics` shows plan gauges of (`prescale_plan_*`,
    /// `prescale_model_backtest_mase`).
    pub(crate) fn plan_gauges(&self) -> BTreeSet<String> {
        self.workloads_shown(&["prescale_plan_", "prescale_model_backtest_mase"])
    }

    /// The workloads its `/metrics` shows source error counters of (`prescale_source_errors`).
    pub(crate) fn source_errors(&self) -> BTreeSet<String> {
        self.workloads_shown(&["prescale_source_errors"])
    }

    /// The workloads its `/metrics` shows series of, among the metrics named with one of
    /// `prefixes`.
    fn workloads_shown(&self, prefixes: &[&str]) -> BTreeSet<String> {
        let metrics = self.metrics.as_deref().expect("a replica with /metrics");
        let (status, body) = http_get(metrics, "/metrics").expect("/metrics answers");
        assert_eq!(status, 200, "{body}");
        body.lines()
            .filter(|line| prefixes.iter().any(|prefix| line.starts_with(prefix)))
            .filter_map(|line| {
                let (_, labels) = line.split_once("workload=\"")?;
                Some(labels.split('"').next()?.to_owned())
            })
            .collect()
    }

    /// Samples of series `name` in its own store (0 when it holds none).
    pub(crate) async fn stored(&self, name: &str) -> u64 {
        let listed = AdminServiceClient::new(self.channel().await)
            .list_series(ListSeriesRequest {
                page_size: 1000,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        listed
            .series
            .iter()
            .find(|info| {
                info.series
                    .as_ref()
                    .is_some_and(|series| series.name == name)
            })
            .map_or(0, |info| info.samples)
    }

    /// `kill -9`, and the process reaped.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the running process.
    pub(crate) fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid().expect("a running replica")).unwrap();
        // SAFETY: kill(2) on a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }
}

impl Drop for Replica {
    /// Kills the process; when a test fails, first says whether it had already exited and shows the
    /// end of its log (a replica that cannot bind a listener exits with the reason there).
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if std::thread::panicking() {
                let state = match child.try_wait() {
                    Ok(Some(status)) => format!("had exited ({status})"),
                    _ => "was running".to_owned(),
                };
                eprintln!(
                    "replica {} {state}; the end of its log:\n{}",
                    self.id,
                    crate::etcd_support::log_tail(
                        &crate::etcd_support::member_log(&self.config),
                        20
                    )
                );
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn connect_tls(address: &str, tls: ClientTlsConfig) -> Channel {
    Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The PEM files a client of a TLS replica uses: the fleet's CA, and a certificate it signed.
#[derive(Debug)]
struct ClientPems {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

async fn connect(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The name of workload `index`.
pub(crate) fn workload_name(index: usize) -> String {
    format!("w{index}")
}

/// The series of workload `index`.
pub(crate) fn series_name(index: usize) -> String {
    format!("load_{index}")
}

/// The workloads (indexes below `count`) rendezvous hashing gives member `id` in a fleet of
/// `ids`, all active.
pub(crate) fn share_of(ids: &[&str], id: &str, count: usize) -> BTreeSet<usize> {
    let view = FleetView {
        members: ids
            .iter()
            .enumerate()
            .map(|(index, member)| Member {
                id: (*member).to_owned(),
                info: MemberInfo {
                    addr: String::new(),
                    scaler_addr: None,
                    state: MemberState::Active,
                },
                create_revision: index as i64 + 1,
            })
            .collect(),
        revision: ids.len() as i64,
        self_id: id.to_owned(),
        incarnation: Some(1),
    };
    (0..count)
        .filter(|index| view.owns(&series_name(*index)))
        .collect()
}

/// A reference to the series of workload `index`.
pub(crate) fn series_ref(index: usize) -> proto::SeriesRef {
    proto::SeriesRef {
        name: series_name(index),
        labels: Default::default(),
    }
}

/// Workload `w<index>` on series `load_<index>`, pulled from `prometheus` when given.
pub(crate) fn upsert(index: usize, prometheus: Option<&str>) -> UpsertWorkloadRequest {
    UpsertWorkloadRequest {
        workload: Some(proto::Workload {
            name: workload_name(index),
            series: Some(series_ref(index)),
            capacity_per_replica: 100.0,
            max_replicas: 100,
            // The plan starts at the step after the newest point (the last half hour); a 30-minute
            // warm-up makes it cover now, which the scaler answers for.
            warm_up: "30m".to_owned(),
            mode: "forecast-and-scale".to_owned(),
            source: prometheus.map(|url| proto::Source {
                kind: Some(proto::source::Kind::Prometheus(proto::PrometheusSource {
                    url: url.to_owned(),
                    query: format!("load{{w=\"{index}\"}}"),
                    step: "30m".to_owned(),
                    timeout: "5s".to_owned(),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }),
    }
}

/// `count` series of the taxi demand, scaled apart, ending at the last half hour: the Prometheus
/// query `load{w="<index>"}` of each workload.
pub(crate) fn seeds(count: usize) -> Vec<(String, Vec<(i64, f64)>)> {
    let now = prescale::domain::Timestamp::now().as_millis();
    let last = now.div_euclid(30 * 60_000) * 30 * 60_000;
    let taxi = crate::prometheus_support::nyc_taxi_ending_at(last, HISTORY_DAYS);
    (0..count)
        .map(|index| {
            let scale = 1.0 + index as f64 / 4.0;
            let samples = taxi
                .iter()
                .map(|(at, value)| (*at, value * scale))
                .collect();
            (format!("load{{w=\"{index}\"}}"), samples)
        })
        .collect()
}

/// A real Prometheus holding the histories of `count` workloads ([`seeds`]).
pub(crate) fn prometheus_with(count: usize) -> crate::prometheus_support::LocalPrometheus {
    let series = seeds(count);
    crate::prometheus_support::LocalPrometheus::start(
        &series
            .iter()
            .map(|(name, samples)| crate::prometheus_support::Seed {
                name: name.clone(),
                samples,
            })
            .collect::<Vec<_>>(),
    )
}

/// Gives `count` workloads, each on its `prometheus` series, to the fleet through `replica`;
/// returns their names.
pub(crate) async fn upsert_all(replica: &Replica, count: usize, prometheus: &str) -> Vec<String> {
    let mut plans = PlanServiceClient::new(replica.channel().await);
    for index in 0..count {
        plans
            .upsert_workload(upsert(index, Some(prometheus)))
            .await
            .unwrap();
    }
    (0..count).map(workload_name).collect()
}

/// GetPlan of `name` through `channel`.
pub(crate) async fn get_plan(channel: Channel, name: &str) -> Result<proto::Plan, tonic::Status> {
    Ok(PlanServiceClient::new(channel)
        .get_plan(GetPlanRequest {
            workload: name.to_owned(),
        })
        .await?
        .into_inner())
}

/// The plan's revision and generation time, which identify it (and so the replica that made it).
pub(crate) fn identity(plan: &proto::Plan) -> (u64, i64) {
    (plan.revision, plan.generated_at_ms)
}

/// Waits (up to `bound`) until every workload of `names` answers the same plan through every
/// replica; returns each one's plan as answered.
pub(crate) async fn answered_alike(
    replicas: &[&Replica],
    names: &[String],
    bound: Duration,
) -> Vec<proto::Plan> {
    let started = std::time::Instant::now();
    let mut plans = Vec::new();
    for name in names {
        loop {
            let mut answers = Vec::new();
            for replica in replicas {
                answers.push(get_plan(replica.channel().await, name).await);
            }
            let first = answers[0].as_ref().ok().map(identity);
            if first.is_some()
                && answers
                    .iter()
                    .all(|answer| answer.as_ref().ok().map(identity) == first)
            {
                plans.push(answers.swap_remove(0).unwrap());
                break;
            }
            assert!(
                started.elapsed() < bound,
                "{name} not answered alike through every replica within {bound:?}: {:?}",
                answers
                    .iter()
                    .map(|answer| answer.as_ref().map(identity))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    plans
}

/// The one replica (of those at `live` indexes) following workload `name`'s source, once exactly
/// one does (up to 60 s): its owner. One look just after replicas start or the members change may
/// see two followers, because a joining replica warms (follows) its future share before the
/// current owner, whose view of the members is a moment behind, hands it over; or none, while a
/// follower that has just taken the workload has not yet pulled. Two followers that never settle
/// to one fail the wait, naming them.
pub(crate) async fn settled_owner(replicas: &[Replica], live: &[usize], name: &str) -> usize {
    let started = std::time::Instant::now();
    loop {
        let mut followers = Vec::new();
        for index in live.iter().copied() {
            if replicas[index].follows(name).await.unwrap() {
                followers.push(index);
            }
        }
        if let [owner] = followers[..] {
            return owner;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name} followed by replicas {followers:?} after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fleet's members as etcd holds them once `expected` members are there and all are active
/// (a replica registers as joining and turns active after it has planned its share, so ownership
/// read earlier would change under the caller).
pub(crate) async fn fleet_view(etcd: &Etcd, expected: usize) -> FleetView {
    let prefix = "/prescale/members/";
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (entries, revision) = etcd.get_prefix(prefix).await.expect("etcd answers");
        let members: Vec<Member> = entries
            .into_iter()
            .map(|entry| Member {
                id: entry.key[prefix.len()..].to_owned(),
                info: serde_json::from_slice::<MemberInfo>(&entry.value).expect("a member record"),
                create_revision: entry.create_revision,
            })
            .collect();
        let active = members
            .iter()
            .filter(|member| member.info.state == MemberState::Active)
            .count();
        if members.len() == expected && active == expected {
            return FleetView {
                members,
                revision,
                ..FleetView::default()
            };
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{active} of {expected} members active after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits up to `within` for `child` to exit: its status, or `None` once it has been killed for
/// still running.
pub(crate) fn exit_status_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
