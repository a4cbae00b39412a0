//! The raw samples of one exact series, as a TSDB holds them: an instant query of a range
//! selector (`{__name__="load"}[604800000ms]`), which answers the stored samples with their own
//! timestamps rather than evaluations on a step. A fleet replica that gains a pushed series refills
//! its store this way (docs/decisions.md, "Fleet mode: pushed samples and events").

use std::collections::BTreeMap;

use super::{PrometheusClient, SourceError, response, seconds_text, selector};
use crate::domain::{Sample, Timestamp};

impl PrometheusClient {
    /// The samples of the series whose label set is exactly `labels` (`__name__` included) with
    /// timestamps in `(after, until]`, oldest first; none when the TSDB holds none there. Series
    /// with more labels that the selector also matches are left out.
    pub async fn exact_series(
        &self,
        labels: &[(String, String)],
        after: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<Sample>, SourceError> {
        let span = until.as_millis().saturating_sub(after.as_millis());
        if span <= 0 {
            return Ok(Vec::new());
        }
        let url = format!("{}/api/v1/query", self.source.url());
        let form = [
            ("query", format!("{}[{span}ms]", selector(labels))),
            ("time", seconds_text(until.as_millis())),
        ];
        let exact: BTreeMap<String, String> = labels.iter().cloned().collect();
        let mut samples = self
            .query(&url, &form, |body| {
                response::parse_exact_matrix(body, &exact)
            })
            .await?;
        // A range selector includes its start in Prometheus 2 and leaves it out in 3: the start is
        // the previous chunk's end, so it is dropped here either way.
        samples.retain(|sample| sample.timestamp > after);
        Ok(samples)
    }
}
