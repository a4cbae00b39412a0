//! What a long cycle (a year of daily data) is tested on: the series without its shorter cycles
//! and without a trend that follows the series' own curve.
//!
//! Over years of daily data, a trend that is not a line (growth that levels off) and a weekly
//! cycle dominate the variance of the series detrended by a line: the phases of the year then
//! differ in mean by less than the trend moves the series within each phase, and the yearly
//! cycle fails the stable-seasonality test although it is plain to see. X-11 removes the trend
//! first with a centred moving average over one cycle, which passes the trend and cancels the
//! cycle (Shiskin, Young & Musgrave, "The X-11 variant of the Census Method II seasonal
//! adjustment program", 1967; Ladiray & Quenneville, "Seasonal Adjustment with the X-11 Method",
//! 2001, chapter 2); the shorter cycles are removed as their phase means.

/// `ranks` (NaN for missing points) minus the mean of each phase of every period in `shorter`,
/// minus a centred moving mean over `period` points (fewer at the ends, where the window is cut
/// short): the variation left for a cycle of `period` steps to explain.
pub(super) fn residual(ranks: &[f64], shorter: &[usize], period: usize) -> Vec<f64> {
    let mut values = ranks.to_vec();
    for &cycle in shorter.iter().filter(|cycle| **cycle >= 2) {
        let mut sums = vec![0.0; cycle];
        let mut counts = vec![0_usize; cycle];
        for (index, value) in values.iter().enumerate() {
            if value.is_finite() {
                sums[index % cycle] += value;
                counts[index % cycle] += 1;
            }
        }
        for (index, value) in values.iter_mut().enumerate() {
            let count = counts[index % cycle];
            if count > 0 {
                *value -= sums[index % cycle] / count as f64;
            }
        }
    }
    let trend = centred_mean(&values, period / 2);
    values
        .iter()
        .zip(&trend)
        .map(|(value, trend)| value - trend)
        .collect()
}

/// Mean of the finite values within `reach` points either side of each point (NaN where none).
fn centred_mean(values: &[f64], reach: usize) -> Vec<f64> {
    // Prefix sums of the finite values and of their count.
    let mut sums = vec![0.0; values.len() + 1];
    let mut counts = vec![0_usize; values.len() + 1];
    for (index, value) in values.iter().enumerate() {
        let finite = value.is_finite();
        sums[index + 1] = sums[index] + if finite { *value } else { 0.0 };
        counts[index + 1] = counts[index] + usize::from(finite);
    }
    (0..values.len())
        .map(|index| {
            let from = index.saturating_sub(reach);
            let to = (index + reach + 1).min(values.len());
            let count = counts[to] - counts[from];
            if count == 0 {
                f64::NAN
            } else {
                (sums[to] - sums[from]) / count as f64
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::f64::consts::TAU;

    use super::*;

    #[test]
    fn the_cycle_is_kept_and_the_shorter_cycle_and_the_curved_trend_go() {
        let period = 365;
        let cycle = |t: usize| (TAU * t as f64 / period as f64).sin();
        let week = |t: usize| [0.0, 0.0, 0.0, 0.0, 0.0, -2.0, -2.0][t % 7];
        let trend = |t: usize| 3.0 * (t as f64 / 1000.0).sqrt();
        let mut values: Vec<f64> = (0..8 * period)
            .map(|t| trend(t) + week(t) + cycle(t))
            .collect();
        values[1000..1040].fill(f64::NAN);
        let left = residual(&values, &[7], period);
        // Where the moving mean's window is whole (away from the ends and the gap), the cycle is
        // all that is left (the phase means of the week also hold a little of the cycle and the
        // trend).
        for t in (period..7 * period).filter(|t| !(1000 - period..1040 + period).contains(t)) {
            assert!((left[t] - cycle(t)).abs() < 0.1, "{t}: {}", left[t]);
        }
        assert!(left[1010].is_nan());
        assert!(centred_mean(&[f64::NAN, f64::NAN], 0)[0].is_nan());
    }
}
