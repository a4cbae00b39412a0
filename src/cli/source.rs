//! `prescale import --prometheus URL --query EXPR`: a one-shot backfill of a series from a
//! Prometheus-compatible API, with the client the server's followers use.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use prescale::domain::{PrometheusSource, SeriesId, SourceAuth, Step, Timestamp};
use prescale::ingest::prometheus::{PrometheusClient, SourceError};
use prescale::store::MetricStore;

/// Where `import` pulls from instead of a file.
#[derive(Debug, Args)]
pub(super) struct PrometheusImportArgs {
    /// Base URL of a Prometheus-compatible API (http:// or https://) to pull the series from,
    /// instead of a file.
    #[arg(long, value_name = "URL")]
    prometheus: Option<String>,
    /// PromQL returning exactly one series (with --prometheus).
    #[arg(long, requires = "prometheus", value_name = "EXPR")]
    query: Option<String>,
    /// How far back to pull, ending now (with --prometheus).
    #[arg(long, default_value = "28d", requires = "prometheus", value_parser = humantime::parse_duration)]
    since: Duration,
    /// Resolution to pull at (with --prometheus).
    #[arg(long, default_value = "5m", requires = "prometheus")]
    step: Step,
    /// File whose contents are sent as a bearer token.
    #[arg(long, requires = "prometheus", conflicts_with = "basic_auth_user")]
    bearer_token_file: Option<PathBuf>,
    /// Basic auth user (the password is read from --basic-auth-password-file).
    #[arg(long, requires_all = ["prometheus", "basic_auth_password_file"])]
    basic_auth_user: Option<String>,
    /// File holding the basic auth password.
    #[arg(long, requires = "basic_auth_user")]
    basic_auth_password_file: Option<PathBuf>,
    /// PEM certificates trusted for https, besides the system's roots.
    #[arg(long, requires = "prometheus")]
    ca_file: Option<PathBuf>,
    /// Timeout of one request.
    #[arg(long, default_value = "30s", requires = "prometheus", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

impl PrometheusImportArgs {
    /// The validated source the flags describe.
    fn source(&self) -> Result<PrometheusSource> {
        let (Some(url), Some(query)) = (&self.prometheus, &self.query) else {
            bail!("--prometheus needs --query");
        };
        let auth = SourceAuth::from_parts(
            "--basic-auth-user",
            self.bearer_token_file.clone(),
            self.basic_auth_user.clone(),
            self.basic_auth_password_file.clone(),
        )?;
        Ok(PrometheusSource::new(url, query, self.step)?
            .with_auth(auth)
            .with_ca_file(self.ca_file.clone())
            .with_timeout(self.timeout)?)
    }
}

/// Pulls `--since` up to now into `series`, chunk by chunk (each chunk checked whole, then stored);
/// returns the number of samples stored.
pub(super) fn import_prometheus(
    store: &dyn MetricStore,
    series: &SeriesId,
    args: &PrometheusImportArgs,
) -> Result<usize> {
    let source = args.source()?;
    let client = PrometheusClient::new(&source)?;
    let step = source.step();
    let to = Timestamp::now().floor_to(step);
    let since = i64::try_from(args.since.as_millis()).context("--since is too long")?;
    let from = to.saturating_add_millis(-since).floor_to(step);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut stored = 0;
    for chunk in client.chunks(from, to) {
        let samples = runtime.block_on(client.query_chunk(chunk))?;
        if !samples.is_empty() {
            stored += store.append(series, &samples)?;
        }
    }
    if stored == 0 {
        return Err(SourceError::NoSeries { from, to }.into());
    }
    Ok(stored)
}
