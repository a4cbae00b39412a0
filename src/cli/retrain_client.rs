//! `prescale retrain --server URL`: asks a running server to retrain through its `Retrain` RPC and
//! follows the job with `GetJob` until it ends.
//!
//! A server holds its data directory's `LOCK`, so a second process (a Kubernetes CronJob beside a
//! StatefulSet, a cron job on the same host) cannot open the store to retrain from it; the server
//! runs the same retraining code (`app::retrain_series`) for the RPC, so this is the way to start a
//! retrain from outside while it serves.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use prescale::domain::SeriesId;
use prescale::service::proto::{self, JobState, admin_service_client::AdminServiceClient};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// How often the job's progress is asked for.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Where the server is and how to reach it.
#[derive(Debug)]
pub(super) struct ServerTarget<'a> {
    /// `http://HOST:PORT` or `https://HOST:PORT`.
    pub(super) url: &'a str,
    /// File whose first line (not empty, not `#`) is the bearer token.
    pub(super) token_file: Option<&'a Path>,
    /// PEM file of the CA that signed an `https` server's certificate.
    pub(super) ca_file: Option<&'a Path>,
}

/// Starts a retrain of `series` (every stored series when empty) on the server and prints its
/// progress until it ends; an error when the job failed or was cancelled.
pub(super) fn retrain_on_server(target: &ServerTarget<'_>, series: &[SeriesId]) -> Result<()> {
    let token = target.token_file.map(read_token).transpose()?;
    let request = proto::RetrainRequest {
        series: series.iter().map(series_ref).collect(),
        all: series.is_empty(),
    };
    crate::runtime::multi_threaded()?.block_on(async {
        let channel = connect(target).await?;
        let mut admin = AdminServiceClient::new(channel);
        let mut job = admin
            .retrain(with_token(request, token.as_ref()))
            .await
            .context("starting the retrain job")?
            .into_inner();
        println!("retrain job {} started: {} series", job.id, job.total);
        let mut reported = job.done;
        while job.state == JobState::Running as i32 {
            tokio::time::sleep(POLL_INTERVAL).await;
            let request = proto::GetJobRequest { id: job.id.clone() };
            job = admin
                .get_job(with_token(request, token.as_ref()))
                .await
                .with_context(|| format!("following retrain job {}", job.id))?
                .into_inner();
            if job.done != reported {
                reported = job.done;
                println!("{}/{} series, {} failed", job.done, job.total, job.failed);
            }
        }
        report(&job)
    })
}

/// Prints the job's failures and outcome; an error unless every series was retrained.
fn report(job: &proto::Job) -> Result<()> {
    for failure in &job.failures {
        let name = failure.series.as_ref().map_or("?", |series| &series.name);
        println!("{name}: failed: {}", failure.error);
    }
    let state = JobState::try_from(job.state).unwrap_or(JobState::Unspecified);
    let seconds = (job.finished_at_ms - job.started_at_ms).max(0) as f64 / 1000.0;
    println!(
        "retrain job {} {}: {} of {} series done in {seconds:.1}s, {} failed",
        job.id,
        state.as_str_name(),
        job.done,
        job.total,
        job.failed
    );
    if state != JobState::Succeeded {
        bail!("retrain job {} ended {}", job.id, state.as_str_name());
    }
    Ok(())
}

/// A channel to the server, with TLS when the URL is `https`.
async fn connect(target: &ServerTarget<'_>) -> Result<Channel> {
    let mut endpoint = Endpoint::from_shared(target.url.to_owned())
        .with_context(|| format!("--server {:?} is not a URL", target.url))?
        .connect_timeout(Duration::from_secs(10));
    if target.url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(path) = target.ca_file {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {}", target.url))
}

/// The bearer token in `path`: its first line that is neither empty nor a `#` comment, as
/// `[server.auth] tokens_file` reads them.
fn read_token(path: &Path) -> Result<MetadataValue<Ascii>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let token = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .with_context(|| format!("{} holds no token", path.display()))?;
    format!("Bearer {token}")
        .parse()
        .with_context(|| format!("the token in {} is not printable ASCII", path.display()))
}

/// `message` as a request, with `authorization: Bearer TOKEN` when there is a token.
fn with_token<T>(message: T, token: Option<&MetadataValue<Ascii>>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", token.clone());
    }
    request
}

fn series_ref(series: &SeriesId) -> proto::SeriesRef {
    proto::SeriesRef {
        name: series.name().to_owned(),
        labels: series.labels().clone().into_iter().collect(),
    }
}
