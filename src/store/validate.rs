//! Checks of an append batch, made before anything is logged so a bad sample rejects all of it.

use crate::domain::{SeriesId, Timestamp};

use super::{
    MAX_FUTURE, MAX_LABEL_VALUE_BYTES, MAX_LABELS, SeriesSamples, StoreError, latest_accepted,
};

/// Checks a whole batch before anything is logged, so a bad sample rejects all of it: values must be
/// finite, timestamps between [`Timestamp::EARLIEST`] and `now` + [`MAX_FUTURE`]. Returns the
/// samples it holds.
pub fn validate(batch: &[SeriesSamples], now: Timestamp) -> Result<usize, StoreError> {
    let mut accepted = 0;
    for entry in batch {
        check_labels(&entry.series)?;
        for (index, sample) in entry.samples.iter().enumerate() {
            if !sample.value.is_finite() {
                return Err(StoreError::NonFiniteValue {
                    series: entry.series.clone(),
                    index,
                    timestamp: sample.timestamp,
                    value: sample.value,
                });
            }
            if let Some(reason) = timestamp_refusal(sample.timestamp, now) {
                return Err(StoreError::TimestampOutOfRange {
                    series: entry.series.clone(),
                    index,
                    timestamp: sample.timestamp,
                    reason,
                });
            }
        }
        accepted += entry.samples.len();
    }
    Ok(accepted)
}

/// Why the store refuses a sample at `timestamp` when its clock reads `now`: more than
/// [`MAX_FUTURE`] ahead of it, or outside the years [`Timestamp::outside_accepted_years`] allows;
/// `None` when it accepts it. Importers check rows against it, to name a refused row.
pub fn timestamp_refusal(timestamp: Timestamp, now: Timestamp) -> Option<String> {
    let latest = latest_accepted(now);
    if timestamp > latest {
        return Some(format!(
            "more than {} ahead of the store's clock (accepted up to {latest})",
            humantime::format_duration(MAX_FUTURE)
        ));
    }
    // `latest` is at most `Timestamp::LATEST`: of the accepted years, only the earliest bound can
    // still refuse the sample here.
    timestamp.outside_accepted_years()
}

/// Refuses a series with more than [`MAX_LABELS`] labels or a label value over
/// [`MAX_LABEL_VALUE_BYTES`].
fn check_labels(series: &SeriesId) -> Result<(), StoreError> {
    let labels = series.labels();
    let reason = if labels.len() > MAX_LABELS {
        format!(
            "{} labels, more than the {MAX_LABELS} allowed",
            labels.len()
        )
    } else if let Some((name, value)) = labels
        .iter()
        .find(|(_, value)| value.len() > MAX_LABEL_VALUE_BYTES)
    {
        format!(
            "label {name} has a value of {} bytes, more than the {MAX_LABEL_VALUE_BYTES} allowed",
            value.len()
        )
    } else {
        return Ok(());
    };
    Err(StoreError::LabelLimit {
        series: series.abbreviated(),
        reason,
    })
}
