//! `prescale retrain --server URL`: asks a running server to retrain through its `Retrain` RPC and
//! follows the job with `GetJob` until it ends.
//!
//! A server holds its data directory's `LOCK`, so a second process (a Kubernetes CronJob beside a
//! StatefulSet, a cron job on the same host) cannot open the store to retrain from it; the server
//! runs the same retraining code (`app::retrain_series`) for the RPC, so this is the way to start a
//! retrain from outside while it serves.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use prescale::domain::SeriesId;
use prescale::service::proto::{self, JobState, admin_service_client::AdminServiceClient};

use super::server_client::{
    ServerTarget, connect, read_token, series_ref, series_text, with_token,
};
use crate::output::outln;

/// How often the job's progress is asked for.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

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
        outln!("retrain job {} started: {} series", job.id, job.total)?;
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
                outln!("{}/{} series, {} failed", job.done, job.total, job.failed)?;
            }
        }
        report(&job)
    })
}

/// Prints the job's failures and outcome; an error unless every series was retrained.
fn report(job: &proto::Job) -> Result<()> {
    for failure in &job.failures {
        let series = failure
            .series
            .as_ref()
            .map_or_else(|| "?".to_owned(), series_text);
        outln!("{series}: failed: {}", failure.error)?;
    }
    let state = JobState::try_from(job.state).unwrap_or(JobState::Unspecified);
    let seconds = (job.finished_at_ms - job.started_at_ms).max(0) as f64 / 1000.0;
    outln!(
        "retrain job {} {}: {} of {} series done in {seconds:.1}s, {} failed",
        job.id,
        state.as_str_name(),
        job.done,
        job.total,
        job.failed
    )?;
    if state != JobState::Succeeded {
        bail!("retrain job {} ended {}", job.id, state.as_str_name());
    }
    Ok(())
}
