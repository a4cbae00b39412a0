//! prescale's own telemetry (request, sample, plan and model counters and latency histograms),
//! rendered in the Prometheus text exposition format (version 0.0.4) for `/metrics`.
//!
//! One [`Telemetry`] value per server (no global registry), shared by the use cases (samples, plans,
//! models) and the gRPC layer (requests and latencies).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds of the latency histogram buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `count`.
    pub fn inc_by(&self, count: u64) {
        self.0.fetch_add(count, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A latency histogram with [`LATENCY_BUCKETS`].
#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Non-cumulative counts per bucket, plus one for `+Inf`.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of every observed latency, in seconds.
    sum: f64,
    /// Observations.
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let index = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[index] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// Counters of one server.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Samples stored through ingest.
    pub samples_ingested: Counter,
    /// Plans computed and published.
    pub plan_refreshes: Counter,
    /// Plan computations that failed.
    pub plan_failures: Counter,
    /// Models fitted (forecast requests and retraining).
    pub model_fits: Counter,
    /// Fits or forecasts that failed.
    pub model_errors: Counter,
    /// Live models read from the registry: at start, and when the manifest names another version.
    pub models_loaded: Counter,
    /// Live model files that failed their check when read (an earlier version, the current model,
    /// or a first-use fit serves instead).
    pub model_load_failures: Counter,
    /// Models promoted to live (retraining, or a first-use fit of a series without one).
    pub models_promoted: Counter,
    /// Background refits of a series whose live model could not be re-anchored on its newest data.
    pub model_refits: Counter,
    /// Registry manifests that did not decode at start and were moved aside (the server started
    /// with an empty registry; see `ServingState::open`).
    pub manifest_resets: Counter,
    /// Requests by method: counts by status code, and latencies. The service records only the
    /// methods it serves (and one label for every other path), so the map stays small; it is
    /// locked only to record one request or to copy it for rendering.
    methods: Mutex<BTreeMap<String, MethodStats>>,
    /// Failed pulls from history sources by (workload, reason); reasons are the short names of
    /// `SourceError::reason`, so the labels stay few.
    source_errors: Mutex<BTreeMap<(String, String), u64>>,
}

/// What is recorded of one gRPC method.
#[derive(Debug, Default, Clone)]
struct MethodStats {
    /// Finished requests by gRPC status code name.
    codes: BTreeMap<&'static str, u64>,
    /// Latency of every finished request.
    latency: Histogram,
}

impl Telemetry {
    /// Records one finished request: its gRPC method path (or the one label the service gives every
    /// path it does not serve, so the callers bound the labels), status code name and latency.
    pub fn record_request(&self, method: &str, code: &'static str, latency: Duration) {
        let mut methods = self.methods.lock();
        // Allocates the method's name only the first time it is seen.
        let stats = match methods.get_mut(method) {
            Some(stats) => stats,
            None => methods.entry(method.to_owned()).or_default(),
        };
        *stats.codes.entry(code).or_default() += 1;
        stats.latency.observe(latency.as_secs_f64());
    }

    /// Requests recorded for `method` with status `code`.
    pub fn requests(&self, method: &str, code: &'static str) -> u64 {
        self.methods
            .lock()
            .get(method)
            .and_then(|stats| stats.codes.get(code).copied())
            .unwrap_or(0)
    }

    /// Records one failed pull from the history source of `workload`, as
    /// `prescale_source_errors_total{workload,reason}`.
    pub fn record_source_error(&self, workload: &str, reason: &str) {
        *self
            .source_errors
            .lock()
            .entry((workload.to_owned(), reason.to_owned()))
            .or_default() += 1;
    }

    /// Failed pulls recorded for `workload` with `reason`.
    pub fn source_errors(&self, workload: &str, reason: &str) -> u64 {
        self.source_errors
            .lock()
            .get(&(workload.to_owned(), reason.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = [
            (
                "prescale_samples_ingested_total",
                "Samples stored through ingest.",
                &self.samples_ingested,
            ),
            (
                "prescale_plan_refreshes_total",
                "Plans computed and published.",
                &self.plan_refreshes,
            ),
            (
                "prescale_plan_refresh_failures_total",
                "Plan computations that failed.",
                &self.plan_failures,
            ),
            (
                "prescale_model_fits_total",
                "Models fitted for forecasts and retraining.",
                &self.model_fits,
            ),
            (
                "prescale_model_errors_total",
                "Model fits or forecasts that failed.",
                &self.model_errors,
            ),
            (
                "prescale_models_loaded_total",
                "Live models read from the registry: at start, and when its manifest names another version.",
                &self.models_loaded,
            ),
            (
                "prescale_model_load_failures_total",
                "Live model files that failed their check when read from the registry.",
                &self.model_load_failures,
            ),
            (
                "prescale_models_promoted_total",
                "Models promoted to live by retraining or a first-use fit.",
                &self.models_promoted,
            ),
            (
                "prescale_model_refits_total",
                "Background refits of a series whose live model could not be re-anchored on its newest data.",
                &self.model_refits,
            ),
            (
                "prescale_registry_manifest_resets_total",
                "Registry manifests found corrupt at start and moved aside.",
                &self.manifest_resets,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", counter.get());
        }
        let _ = writeln!(
            out,
            "# HELP prescale_grpc_requests_total gRPC requests by method and status code.\n\
             # TYPE prescale_grpc_requests_total counter"
        );
        // A copy, so the text is written without holding the lock calls record under.
        let methods = self.methods.lock().clone();
        for (method, stats) in methods.iter() {
            for (code, count) in &stats.codes {
                let _ = writeln!(
                    out,
                    "prescale_grpc_requests_total{{method=\"{}\",code=\"{code}\"}} {count}",
                    escape(method)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP prescale_source_errors_total Failed pulls from workloads' history sources, by reason.\n\
             # TYPE prescale_source_errors_total counter"
        );
        let source_errors = self.source_errors.lock().clone();
        for ((workload, reason), count) in &source_errors {
            let _ = writeln!(
                out,
                "prescale_source_errors_total{{workload=\"{}\",reason=\"{}\"}} {count}",
                escape(workload),
                escape(reason)
            );
        }
        let name = "prescale_grpc_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} gRPC request latency until the response headers (whole call for unary).\n\
             # TYPE {name} histogram"
        );
        for (method, stats) in methods.iter() {
            let histogram = &stats.latency;
            let method = escape(method);
            let mut cumulative = 0;
            for (bound, count) in LATENCY_BUCKETS.iter().zip(histogram.buckets) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "{name}_bucket{{method=\"{method}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{method=\"{method}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(out, "{name}_sum{{method=\"{method}\"}} {}", histogram.sum);
            let _ = writeln!(
                out,
                "{name}_count{{method=\"{method}\"}} {}",
                histogram.count
            );
        }
        out
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_requests_and_cumulative_buckets() {
        let metrics = Telemetry::default();
        metrics.samples_ingested.inc_by(42);
        metrics.record_request("/a/B", "OK", Duration::from_micros(300));
        metrics.record_request("/a/B", "OK", Duration::from_millis(3));
        metrics.record_request("/a/B", "NotFound", Duration::from_secs(20));
        let text = metrics.render();
        assert!(
            text.contains("prescale_samples_ingested_total 42\n"),
            "{text}"
        );
        assert!(text.contains("prescale_grpc_requests_total{method=\"/a/B\",code=\"OK\"} 2\n"));
        assert!(
            text.contains("{method=\"/a/B\",le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("{method=\"/a/B\",le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("{method=\"/a/B\",le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("{method=\"/a/B\",le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("prescale_grpc_request_duration_seconds_count{method=\"/a/B\"} 3\n"));
        assert_eq!(metrics.requests("/a/B", "NotFound"), 1);
        metrics.record_source_error("check\"out", "connect");
        metrics.record_source_error("check\"out", "connect");
        assert!(
            metrics.render().contains(
                "prescale_source_errors_total{workload=\"check\\\"out\",reason=\"connect\"} 2\n"
            ),
            "{}",
            metrics.render()
        );
        assert_eq!(metrics.source_errors("check\"out", "connect"), 2);
    }
}
