//! `prescale series list|delete --server URL`: the stored series of a running server, paged through
//! with `ListSeries`, and deleting one with `DeleteSeries`.

use anyhow::{Context, Result};
use prescale::domain::{SeriesId, Step, Timestamp};
use prescale::service::proto::{self, admin_service_client::AdminServiceClient};

use super::server_client::{
    ServerTarget, connect, read_token, series_ref, series_text, with_token,
};
use crate::output::outln;

/// Prints every series the server stores, one line each, asking for one page at a time.
pub(super) fn list_on_server(target: &ServerTarget<'_>) -> Result<()> {
    let token = target.token_file.map(read_token).transpose()?;
    crate::runtime::multi_threaded()?.block_on(async {
        let mut admin = AdminServiceClient::new(connect(target).await?);
        let mut page_token = String::new();
        let mut listed = 0usize;
        loop {
            let request = proto::ListSeriesRequest {
                page_size: 0,
                page_token,
            };
            let page = admin
                .list_series(with_token(request, token.as_ref()))
                .await
                .context("listing the stored series")?
                .into_inner();
            for info in &page.series {
                if listed == 0 {
                    outln!(
                        "{:<40}  {:>8}  {:<24}  {:<24}  {:>8}",
                        "SERIES",
                        "SAMPLES",
                        "FIRST",
                        "LAST",
                        "STEP"
                    )?;
                }
                print_row(info)?;
                listed += 1;
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        if listed == 0 {
            outln!("no series stored")?;
        }
        Ok(())
    })
}

/// Deletes `series` on the server and says how many samples went with it.
pub(super) fn delete_on_server(target: &ServerTarget<'_>, series: &SeriesId) -> Result<()> {
    let token = target.token_file.map(read_token).transpose()?;
    crate::runtime::multi_threaded()?.block_on(async {
        let mut admin = AdminServiceClient::new(connect(target).await?);
        let request = proto::DeleteSeriesRequest {
            series: Some(series_ref(series)),
        };
        let deleted = admin
            .delete_series(with_token(request, token.as_ref()))
            .await
            .with_context(|| format!("deleting {series}"))?
            .into_inner();
        outln!("deleted {series} ({} samples)", deleted.samples)?;
        Ok(())
    })
}

/// One line of the listing: series, samples, first and last sample, median step.
fn print_row(info: &proto::SeriesInfo) -> Result<()> {
    let name = info.series.as_ref().map_or_else(String::new, series_text);
    let time = |ms: i64| {
        if info.samples == 0 {
            "-".to_owned()
        } else {
            Timestamp::from_millis(ms).to_string()
        }
    };
    let step = Step::try_from(info.median_step_ms)
        .map_or_else(|_| "-".to_owned(), |step| step.to_string());
    outln!(
        "{name:<40}  {:>8}  {:<24}  {:<24}  {step:>8}",
        info.samples,
        time(info.first_ms),
        time(info.last_ms),
    )?;
    Ok(())
}
