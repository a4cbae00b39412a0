//! prescale's own telemetry (request, sample, plan and model counters, latency histograms, each
//! workload's plan as gauges), kept in a `prometheus-client` [`Registry`] and rendered for
//! `/metrics` in the Prometheus text format (version 0.0.4) or in OpenMetrics, whichever the
//! scraper asks for (see "Metrics exposition" in docs/decisions.md).
//!
//! One [`Telemetry`] value per server (no global registry), shared by the use cases (samples, plans,
//! models) and the service layer (gRPC requests, remote-write).

mod fleet_gauges;
mod plan_gauges;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::{prometheus_text, text as openmetrics_text};
use prometheus_client::metrics::counter::Counter as ClientCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::app::PublishedPlan;
use crate::domain::SeriesId;

use fleet_gauges::FleetGauges;
use plan_gauges::PlanGauges;

/// Upper bounds of the latency histogram buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `Content-Type` of [`Telemetry::render`].
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The `Content-Type` of [`Telemetry::render_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A monotonically increasing count, registered in its server's [`Telemetry`].
#[derive(Debug, Default, Clone)]
pub struct Counter(ClientCounter);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }

    /// Adds `count`.
    pub fn inc_by(&self, count: u64) {
        self.0.inc_by(count);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// Label pairs of a metric family; every value is bounded by its caller (methods the service
/// serves, workloads, fixed reasons).
type Labels<const N: usize> = [(&'static str, String); N];

/// A latency histogram family, its histograms built with [`LATENCY_BUCKETS`].
type LatencyFamily = Family<Labels<1>, Histogram, fn() -> Histogram>;

/// Counters, histograms and gauges of one server.
#[derive(Debug)]
pub struct Telemetry {
    /// Samples stored through ingest (gRPC and remote-write).
    pub samples_ingested: Counter,
    /// Plans computed and published.
    pub plan_refreshes: Counter,
    /// Plan computations that failed.
    pub plan_failures: Counter,
    /// Planning rules chosen by workloads' SLOs: once per live model and workload definition.
    pub slo_rule_choices: Counter,
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
    /// Background refits started for a level shift the live model was not fitted with.
    pub level_shift_refits: Counter,
    /// Registry manifests that did not decode at start and were moved aside (the server started
    /// with an empty registry; see `ServingState::open`).
    pub manifest_resets: Counter,
    /// Calls to the fleet's model store that failed: a version not written or read back (the live
    /// model and its pointer stay as they were), or an old one not deleted.
    pub model_store_failures: Counter,
    /// Finished gRPC requests by method and status code name. The service records only the methods
    /// it serves (and one label for every other path), so the family stays small.
    requests: Family<Labels<2>, ClientCounter>,
    /// Latency of every finished gRPC request, by method.
    latency: LatencyFamily,
    /// Failures of a workload's history source, by workload and reason.
    source_errors: Family<Labels<2>, ClientCounter>,
    /// The reasons each workload has counters of in `source_errors`, so that all of them can be
    /// removed with the workload; held while either changes.
    source_error_reasons: Mutex<HashMap<String, BTreeSet<&'static str>>>,
    /// Remote-write requests by outcome: `accepted`, or why they were refused.
    remote_write_requests: Family<Labels<1>, ClientCounter>,
    /// Remote-write samples by outcome: `accepted`, or why they were dropped.
    remote_write_samples: Family<Labels<1>, ClientCounter>,
    /// Each workload's latest plan, rendered as gauges at every scrape.
    plans: Arc<PlanGauges>,
    /// This replica's fleet state (fleet mode only).
    fleet: Arc<FleetGauges>,
    /// Everything above, as `/metrics` renders it.
    registry: Registry,
}

impl Default for Telemetry {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut counter = |name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.0.clone());
            counter
        };
        let samples_ingested =
            counter("prescale_samples_ingested", "Samples stored through ingest");
        let plan_refreshes = counter("prescale_plan_refreshes", "Plans computed and published");
        let plan_failures = counter(
            "prescale_plan_refresh_failures",
            "Plan computations that failed",
        );
        let slo_rule_choices = counter(
            "prescale_slo_rule_choices",
            "Planning rules chosen by workload SLOs, once per live model version and workload",
        );
        let model_fits = counter(
            "prescale_model_fits",
            "Models fitted for forecasts and retraining",
        );
        let model_errors = counter(
            "prescale_model_errors",
            "Model fits or forecasts that failed",
        );
        let models_loaded = counter(
            "prescale_models_loaded",
            "Live models read from the registry: at start, and when its manifest names another version",
        );
        let model_load_failures = counter(
            "prescale_model_load_failures",
            "Live model files that failed their check when read from the registry",
        );
        let models_promoted = counter(
            "prescale_models_promoted",
            "Models promoted to live by retraining or a first-use fit",
        );
        let model_refits = counter(
            "prescale_model_refits",
            "Background refits of a series whose live model could not be re-anchored on its newest data or was not fitted with a level shift it shows",
        );
        let level_shift_refits = counter(
            "prescale_level_shift_refits",
            "Background refits started because a series' newest data shows a level shift its live model was not fitted with",
        );
        let manifest_resets = counter(
            "prescale_registry_manifest_resets",
            "Registry manifests found corrupt at start and moved aside",
        );
        let model_store_failures = counter(
            "prescale_model_store_failures",
            "Calls to the fleet's model store that failed: writing, reading back or deleting a version",
        );
        let requests = Family::default();
        registry.register(
            "prescale_grpc_requests",
            "gRPC requests by method and status code",
            requests.clone(),
        );
        let latency: LatencyFamily =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register(
            "prescale_grpc_request_duration_seconds",
            "gRPC request latency until the response headers (whole call for unary)",
            latency.clone(),
        );
        let source_errors = Family::default();
        registry.register(
            "prescale_source_errors",
            "Failures of a workload's history source, by workload and reason",
            source_errors.clone(),
        );
        let remote_write_requests = Family::default();
        registry.register(
            "prescale_remote_write_requests",
            "Prometheus remote-write requests: accepted, or the reason they were refused",
            remote_write_requests.clone(),
        );
        let remote_write_samples = Family::default();
        registry.register(
            "prescale_remote_write_samples",
            "Prometheus remote-write samples: accepted, or the reason they were dropped",
            remote_write_samples.clone(),
        );
        let plans = Arc::new(PlanGauges::default());
        registry.register_collector(Box::new(Arc::clone(&plans)));
        let fleet = Arc::new(FleetGauges::default());
        registry.register_collector(Box::new(Arc::clone(&fleet)));
        Self {
            samples_ingested,
            plan_refreshes,
            plan_failures,
            slo_rule_choices,
            model_fits,
            model_errors,
            models_loaded,
            model_load_failures,
            models_promoted,
            model_refits,
            level_shift_refits,
            manifest_resets,
            model_store_failures,
            requests,
            latency,
            source_errors,
            source_error_reasons: Mutex::default(),
            remote_write_requests,
            remote_write_samples,
            plans,
            fleet,
            registry,
        }
    }
}

impl Telemetry {
    /// Sets the fleet gauges: whether this replica holds its etcd lease, serves read-only after
    /// losing it, or is joining.
    pub fn set_fleet(&self, etcd_connected: bool, read_only: bool, joining: bool) {
        self.fleet.set(etcd_connected, read_only, joining);
    }

    /// Records one finished request: its gRPC method path (or the one label the service gives every
    /// path it does not serve, so the callers bound the labels), status code name and latency.
    pub fn record_request(&self, method: &str, code: &'static str, latency: Duration) {
        self.requests
            .get_or_create(&[("method", method.to_owned()), ("code", code.to_owned())])
            .inc();
        self.latency
            .get_or_create(&[("method", method.to_owned())])
            .observe(latency.as_secs_f64());
    }

    /// Requests recorded for `method` with status `code`.
    pub fn requests(&self, method: &str, code: &'static str) -> u64 {
        self.requests
            .get(&[("method", method.to_owned()), ("code", code.to_owned())])
            .map_or(0, |counter| counter.get())
    }

    /// Records one failure of `workload`'s history source; `reason` is one of a few fixed words
    /// the caller chooses, so the labels stay bounded.
    pub fn record_source_error(&self, workload: &str, reason: &'static str) {
        let mut reasons = self.source_error_reasons.lock();
        reasons
            .entry(workload.to_owned())
            .or_default()
            .insert(reason);
        self.source_errors
            .get_or_create(&source_error_labels(workload, reason))
            .inc();
    }

    /// Source failures recorded for `workload` with `reason`.
    pub fn source_errors(&self, workload: &str, reason: &str) -> u64 {
        self.source_errors
            .get(&source_error_labels(workload, reason))
            .map_or(0, |counter| counter.get())
    }

    /// Records one remote-write request: `accepted`, or the fixed reason it was refused.
    pub fn record_remote_write(&self, outcome: &'static str) {
        self.remote_write_requests
            .get_or_create(&[("outcome", outcome.to_owned())])
            .inc();
    }

    /// Records `count` remote-write samples with `outcome`: `accepted`, or the fixed reason they
    /// were dropped.
    pub fn record_remote_write_samples(&self, outcome: &'static str, count: u64) {
        if count > 0 {
            self.remote_write_samples
                .get_or_create(&[("outcome", outcome.to_owned())])
                .inc_by(count);
        }
    }

    /// Remote-write requests recorded with `outcome`.
    pub fn remote_write_requests(&self, outcome: &'static str) -> u64 {
        self.remote_write_requests
            .get(&[("outcome", outcome.to_owned())])
            .map_or(0, |counter| counter.get())
    }

    /// Remote-write samples recorded with `outcome`.
    pub fn remote_write_samples(&self, outcome: &'static str) -> u64 {
        self.remote_write_samples
            .get(&[("outcome", outcome.to_owned())])
            .map_or(0, |counter| counter.get())
    }

    /// Shows `plan`, the newest plan of `workload` (planning `series`), as gauges from now on;
    /// `backtest_mase` is the backtest MASE of the model it was planned with.
    pub fn record_plan(
        &self,
        workload: &str,
        series: &SeriesId,
        plan: Arc<PublishedPlan>,
        backtest_mase: Option<f64>,
    ) {
        self.plans.record(workload, series, plan, backtest_mase);
    }

    /// Shows `interval` (`[planning] replan_interval`), the longest time between two plans of a
    /// workload, beside every workload's plan gauges from now on.
    pub fn set_replan_interval(&self, interval: Duration) {
        self.plans.set_replan_interval(interval.as_secs_f64());
    }

    /// Removes the series of a workload deleted, or in a fleet planned by another replica now:
    /// its plan gauges and its source's error counters (which start again from zero should it
    /// come back).
    pub fn forget_workload(&self, workload: &str) {
        self.plans.forget(workload);
        let mut reasons = self.source_error_reasons.lock();
        for reason in reasons.remove(workload).unwrap_or_default() {
            self.source_errors
                .remove(&source_error_labels(workload, reason));
        }
    }

    /// Everything in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)
            .expect("invariant: writing to a String cannot fail, and no collector fails");
        out
    }

    /// Everything in the OpenMetrics text format (ends with `# EOF`).
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        openmetrics_text::encode(&mut out, &self.registry)
            .expect("invariant: writing to a String cannot fail, and no collector fails");
        out
    }
}

/// The labels of `workload`'s source errors for `reason`.
fn source_error_labels(workload: &str, reason: &str) -> Labels<2> {
    [
        ("workload", workload.to_owned()),
        ("reason", reason.to_owned()),
    ]
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
        assert_eq!(metrics.requests("/a/B", "Unknown"), 0);
    }

    #[test]
    fn openmetrics_ends_with_eof_and_counts_source_errors() {
        let metrics = Telemetry::default();
        metrics.record_source_error("checkout", "http");
        metrics.record_source_error("checkout", "http");
        let text = metrics.render_openmetrics();
        assert!(
            text.contains(
                "prescale_source_errors_total{workload=\"checkout\",reason=\"http\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(metrics.source_errors("checkout", "http"), 2);
    }

    #[test]
    fn a_forgotten_workload_leaves_no_source_errors() {
        let metrics = Telemetry::default();
        metrics.record_source_error("checkout", "connect");
        metrics.record_source_error("checkout", "timeout");
        metrics.record_source_error("search", "connect");
        metrics.forget_workload("checkout");
        let text = metrics.render();
        assert!(!text.contains("workload=\"checkout\""), "{text}");
        assert!(
            text.contains(
                "prescale_source_errors_total{workload=\"search\",reason=\"connect\"} 1\n"
            ),
            "{text}"
        );
        metrics.record_source_error("checkout", "connect");
        assert_eq!(metrics.source_errors("checkout", "connect"), 1);
        assert_eq!(metrics.source_errors("checkout", "timeout"), 0);
    }
}
