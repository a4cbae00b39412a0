//! The spectral view of a series seasonality detection reads: its periodogram, proposing
//! candidate periods, and its autocorrelation, validating and refining them.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

use crate::forecast::stats;

/// Least rise of the ACF from its lowest point in `[lag / 2, lag)` to a period's lag.
const MIN_PROMINENCE: f64 = 0.15;

/// Periodogram and unbiased autocorrelation of a detrended series, both from one FFT.
pub(super) struct Spectrum {
    /// Power at frequency `k / padded_len` for `k` in `0..=padded_len / 2`.
    power: Vec<f64>,
    /// Length after zero padding (a power of two at least twice the data, so the circular
    /// autocorrelation equals the linear one).
    padded_len: usize,
    /// Autocorrelation by lag, corrected for the shrinking overlap at long lags.
    pub(super) acf: Vec<f64>,
}

impl Spectrum {
    /// `values` may hold NaN for missing points: sums then run over observed pairs only, so a
    /// long gap neither fakes nor hides a period.
    pub(super) fn new(values: &[f64]) -> Option<Self> {
        let len = values.len();
        if len == 0 {
            return None;
        }
        let detrended = stats::detrend(values);
        let scale = detrended
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0_f64, |acc, v| acc.max(v.abs()));
        if scale <= 0.0 || !scale.is_finite() {
            return None;
        }
        let padded_len = (2 * len).next_power_of_two();
        let zero = Complex::new(0.0, 0.0);
        let mut signal: Vec<Complex<f64>> = detrended
            .iter()
            .map(|value| {
                if value.is_finite() {
                    Complex::new(value / scale, 0.0)
                } else {
                    zero
                }
            })
            .chain(std::iter::repeat(zero))
            .take(padded_len)
            .collect();
        let mut mask: Vec<Complex<f64>> = detrended
            .iter()
            .map(|value| Complex::new(if value.is_finite() { 1.0 } else { 0.0 }, 0.0))
            .chain(std::iter::repeat(zero))
            .take(padded_len)
            .collect();
        let mut planner = FftPlanner::new();
        let forward = planner.plan_fft_forward(padded_len);
        let inverse = planner.plan_fft_inverse(padded_len);
        forward.process(&mut signal);
        forward.process(&mut mask);
        let power: Vec<f64> = signal[..=padded_len / 2]
            .iter()
            .map(|c| c.norm_sqr())
            .collect();
        for value in signal.iter_mut().chain(mask.iter_mut()) {
            *value = Complex::new(value.norm_sqr(), 0.0);
        }
        inverse.process(&mut signal);
        inverse.process(&mut mask);
        // Mean product per observed pair at each lag, relative to lag zero.
        let per_pair = |lag: usize| {
            let pairs = mask[lag].re / padded_len as f64;
            if pairs < 0.5 {
                0.0
            } else {
                signal[lag].re / padded_len as f64 / pairs.round()
            }
        };
        let zero_lag = per_pair(0);
        if zero_lag <= 0.0 {
            return None;
        }
        // Lags with few observed pairs are too noisy to validate anything.
        let min_pairs = (len / 4).max(8) as f64;
        let acf = (0..len)
            .map(|lag| {
                if mask[lag].re / (padded_len as f64) < min_pairs {
                    0.0
                } else {
                    per_pair(lag) / zero_lag
                }
            })
            .collect();
        Some(Self {
            power,
            padded_len,
            acf,
        })
    }

    /// Lag ranges `(low, high)` around the strongest periodogram peaks, strongest first.
    ///
    /// The range spans the periods of the neighbouring bins, which is the resolution of the estimate.
    pub(super) fn peak_ranges(
        &self,
        count: usize,
        min_lag: usize,
        max_lag: usize,
    ) -> Vec<(usize, usize)> {
        let mut peaks: Vec<(usize, f64)> = (2..self.power.len() - 1)
            .filter(|&bin| {
                self.power[bin] > self.power[bin - 1] && self.power[bin] >= self.power[bin + 1]
            })
            .map(|bin| (bin, self.power[bin]))
            .collect();
        peaks.sort_by(|left, right| right.1.total_cmp(&left.1));
        peaks
            .into_iter()
            .filter_map(|(bin, _)| {
                let period_at = |b: usize| self.padded_len as f64 / b as f64;
                let low = period_at(bin + 1).floor() as usize;
                let high = period_at(bin - 1).ceil() as usize;
                let low = low.max(min_lag);
                let high = high.min(max_lag);
                (low <= high).then_some((low, high))
            })
            .take(count)
            .collect()
    }

    /// The ACF's local maximum within 2% (at least one lag) of `lag`, if there is one: a hill,
    /// not a slope. The tolerance matters for calendar periods, whose ACF peak a trend-like
    /// component (a weekend dip seen from a daily lag) can shift by a lag or two.
    pub(super) fn hill_top(&self, lag: usize) -> Option<f64> {
        let reach = (lag / 50).max(1);
        let from = lag.checked_sub(reach)?;
        let to = lag + reach;
        if to >= self.acf.len() {
            return None;
        }
        let top = (from..=to).max_by(|a, b| self.acf[*a].total_cmp(&self.acf[*b]))?;
        if top == from || top == to {
            return None;
        }
        // A real period's ACF dips between lag zero and the period; a persistent, non-seasonal
        // series (a random walk, slow drifts) has a falling ACF with only small wiggles on it.
        let valley = self.acf[top / 2..top]
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        // The overlap correction can push a perfect correlation a hair above 1.
        (self.acf[top] - valley >= MIN_PROMINENCE).then_some(self.acf[top].min(1.0))
    }
}
