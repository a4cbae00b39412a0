//! A real Prometheus (Debian's `/usr/bin/prometheus`) on 127.0.0.1 for the tests and the backfill
//! benchmark: a temporary TSDB seeded from OpenMetrics text with `promtool`, no scrape jobs, the
//! remote-write receiver on, killed when dropped.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Prometheus binary the tests start.
pub(crate) const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Its `promtool`, which writes TSDB blocks from OpenMetrics text.
pub(crate) const PROMTOOL: &str = "/usr/bin/promtool";

/// A running Prometheus; killed (and its TSDB removed) on drop.
pub(crate) struct LocalPrometheus {
    /// Base URL of its HTTP API, `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    /// The process.
    child: Child,
    /// Its configuration and TSDB.
    _directory: tempfile::TempDir,
}

/// One series to seed: its name with any labels (`load` or `many{i="7"}`; series of one metric
/// family next to each other) and `(epoch milliseconds, value)` samples, oldest first.
pub(crate) struct Seed<'a> {
    pub(crate) name: String,
    pub(crate) samples: &'a [(i64, f64)],
}

/// Whether Prometheus is installed here.
pub(crate) fn available() -> bool {
    Path::new(PROMETHEUS).exists() && Path::new(PROMTOOL).exists()
}

/// OpenMetrics text of `seeds`: gauges, timestamps in seconds, ending with `# EOF`.
pub(crate) fn openmetrics(seeds: &[Seed<'_>]) -> String {
    let mut text = String::new();
    let mut family = "";
    for seed in seeds {
        let name = seed.name.split('{').next().unwrap_or_default();
        if name != family {
            let _ = writeln!(text, "# TYPE {name} gauge");
            family = name;
        }
        for (millis, value) in seed.samples {
            let _ = writeln!(
                text,
                "{} {value} {}.{:03}",
                seed.name,
                millis.div_euclid(1000),
                millis.rem_euclid(1000)
            );
        }
    }
    text.push_str("# EOF\n");
    text
}

/// Whether Prometheus is missing; says so, for the test or benchmark to skip.
pub(crate) fn missing() -> bool {
    if available() {
        return false;
    }
    eprintln!("skipped: {PROMETHEUS} is not installed");
    true
}

/// The last `days` of `notebooks-data/nyc_taxi.csv` (30-minute taxi demand) moved in time so that
/// its newest sample is at `last_ms`: `(epoch ms, value)`, oldest first.
pub(crate) fn nyc_taxi_ending_at(last_ms: i64, days: usize) -> Vec<(i64, f64)> {
    const HALF_HOUR_MS: i64 = 30 * 60_000;
    let values = nyc_taxi_values();
    let count = days * 48;
    values[values.len() - count..]
        .iter()
        .enumerate()
        .map(|(index, value)| (last_ms - (count - 1 - index) as i64 * HALF_HOUR_MS, *value))
        .collect()
}

/// The `nyc_taxi` series of `notebooks-data` (30-minute taxi demand): its values, oldest first.
fn nyc_taxi_values() -> Vec<f64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("notebooks-data/nyc_taxi.csv");
    std::fs::read_to_string(path)
        .expect("notebooks-data/nyc_taxi.csv is in the repository")
        .lines()
        .skip(1)
        .map(|line| {
            line.split(',')
                .nth(1)
                .and_then(|value| value.trim().parse().ok())
                .expect("nyc_taxi.csv rows are timestamp,value")
        })
        .collect()
}

impl LocalPrometheus {
    /// Seeds a TSDB with `seeds` (through `promtool tsdb create-blocks-from openmetrics`), then starts
    /// Prometheus on it with a 60-day retention and a 31-minute lookback (so a 30-minute series has a
    /// value at every evaluation time), and waits until `/-/ready` answers.
    pub(crate) fn start(seeds: &[Seed<'_>]) -> Self {
        Self::start_with_web_config(seeds, None)
    }

    /// As [`Self::start`], with Prometheus' web configuration (TLS, basic auth) from the YAML text
    /// `web_config` when given; then it only waits for an answer on the port, since a plain GET of
    /// `/-/ready` cannot pass TLS and auth (clients retry until it is ready).
    pub(crate) fn start_with_web_config(seeds: &[Seed<'_>], web_config: Option<&str>) -> Self {
        Self::launch(seeds, web_config, "")
    }

    /// An empty Prometheus (remote-write receiver on) that also takes remote-written samples up to
    /// 30 days older than its newest (`out_of_order_time_window`), as a fleet's TSDB must for
    /// pushed history.
    pub(crate) fn start_accepting_history() -> Self {
        Self::launch(
            &[],
            None,
            "storage:\n  tsdb:\n    out_of_order_time_window: 30d\n",
        )
    }

    /// Starts Prometheus over `seeds`, with `web_config` and `extra_config` (YAML appended to its
    /// configuration file).
    fn launch(seeds: &[Seed<'_>], web_config: Option<&str>, extra_config: &str) -> Self {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let tsdb = directory.path().join("tsdb");
        std::fs::create_dir_all(&tsdb).expect("the TSDB directory");
        if seeds.iter().any(|seed| !seed.samples.is_empty()) {
            let input = directory.path().join("seed.om");
            std::fs::write(&input, openmetrics(seeds)).expect("the seed file");
            let output = Command::new(PROMTOOL)
                .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
                .arg(&input)
                .arg(&tsdb)
                .output()
                .expect("promtool runs");
            assert!(
                output.status.success(),
                "promtool failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let config = directory.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1m\nscrape_configs: []\n{extra_config}"),
        )
        .expect("the config file");
        let port = free_port();
        let mut command = Command::new(PROMETHEUS);
        if let Some(web_config) = web_config {
            let path = directory.path().join("web.yml");
            std::fs::write(&path, web_config).expect("the web config file");
            command.arg(format!("--web.config.file={}", path.display()));
        }
        let child = command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg("--storage.tsdb.retention.time=60d")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--query.lookback-delta=31m")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        let prometheus = Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
            _directory: directory,
        };
        prometheus.wait_ready(web_config.is_none());
        prometheus
    }

    fn wait_ready(&self, plain: bool) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if http_get(&self.url, "/-/ready").is_some_and(|(status, _)| status == 200 || !plain) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("prometheus at {} not ready within 60 s", self.url);
    }

    /// Range queries Prometheus has answered (its own `prometheus_http_requests_total`).
    pub(crate) fn range_queries(&self) -> u64 {
        let (_, body) = http_get(&self.url, "/metrics").expect("prometheus serves /metrics");
        body.lines()
            .filter(|line| {
                line.starts_with("prometheus_http_requests_total{")
                    && line.contains("handler=\"/api/v1/query_range\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|count| count as u64)
            .sum()
    }
}

impl Drop for LocalPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 for a child process to bind later (Prometheus, etcd and `prescale
/// serve` are given ports, not port 0): bound, then released.
///
/// Never one from the kernel's ephemeral range (`ip_local_port_range`, 32768-60999 on Linux): a
/// port from there can be taken by any outgoing connection (a replica's to etcd, a client's)
/// between this check and the child's bind, and the child then fails to start. Below that range
/// only listeners take ports, and this process hands each out once: a counter walks the range
/// from an offset of its own process id, so two test binaries running at once start apart.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Ports below this are left to well-known services.
    const LOWEST: u32 = 10_000;
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);

    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(LOWEST);
    if span < 1_000 {
        // No room below the ephemeral range: let the kernel pick (the race above is possible).
        return std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
    }
    let offset = std::process::id() % span;
    loop {
        let handed_out = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        assert!(handed_out < span, "no free port left below {ephemeral}");
        let port = u16::try_from(LOWEST + (offset + handed_out) % span).expect("a port");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A plain HTTP/1.0 GET: the status and body, or `None` when nothing answers.
pub(crate) fn http_get(base: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};

    let address = base.strip_prefix("http://")?;
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Samples the Prometheus at `url` holds of series `name` over the last `range` (e.g. `30d`).
pub(crate) fn samples_over(url: &str, name: &str, range: &str) -> u64 {
    let path = format!("/api/v1/query?query=count_over_time%28{name}%5B{range}%5D%29");
    let (status, body) = http_get(url, &path).expect("prometheus answers");
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    answer["data"]["result"][0]["value"][1]
        .as_str()
        .map_or(0, |count| count.parse().unwrap())
}

/// Sends `samples` of `name` to Prometheus' remote-write receiver (snappy-compressed protobuf).
pub(crate) async fn remote_write(url: &str, name: &str, samples: &[(i64, f64)]) {
    use prescale::ingest::remote_write_proto as remote;
    use prost::Message;

    let request = remote::WriteRequest {
        timeseries: vec![remote::TimeSeries {
            labels: vec![remote::Label {
                name: "__name__".to_owned(),
                value: name.to_owned(),
            }],
            samples: samples
                .iter()
                .map(|(timestamp, value)| remote::Sample {
                    value: *value,
                    timestamp: *timestamp,
                })
                .collect(),
        }],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("{url}/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "remote write: {}",
        response.status()
    );
}
