//! The yearly cycle as a few Fourier harmonics, for MSTL on daily data.
//!
//! STL smooths each phase of a cycle across cycles and the trend across about one and a half
//! cycles; for a 365-step year on eight years of daily data that made MSTL the costliest member,
//! fitted eleven times per ensemble fit (ten backtest folds and the final fit). A year's shape is
//! smooth, and Prophet models it with ten Fourier harmonics (Taylor & Letham, "Forecasting at
//! scale", The American Statistician 72(1), 2018, section 3.2). Here the harmonics are fitted to
//! the whole cycles of the window beside a line, where discrete sinusoids of the period are
//! orthogonal, so each coefficient is a projection and no system is solved. MSTL then decomposes
//! the shorter cycles of what is left (see `docs/decisions.md`, "MSTL: the yearly cycle as
//! Fourier terms").

use std::f64::consts::TAU;

use crate::forecast::stats;

/// Harmonics of the yearly cycle (Prophet's default yearly order).
const ORDER: usize = 10;

/// Alternations between the line and the harmonics: over a few cycles a line absorbs part of the
/// first harmonic (their correlation is about 0.8 / cycles), so each is refitted to what the
/// other leaves.
const PASSES: usize = 3;

/// The fitted yearly shape: one cycle of the sum of the harmonics, phase 0 at `origin`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct YearlyTerms {
    /// The shape at each phase of the cycle.
    profile: Vec<f64>,
    /// Index (in the fitted window) of the first point of the whole cycles fitted: phase 0.
    origin: usize,
}

impl YearlyTerms {
    /// Fits the harmonics of `period` and a line to the newest whole cycles of `values` (at least
    /// two); `None` when fewer than two cycles fit.
    pub(crate) fn fit(values: &[f64], period: usize) -> Option<Self> {
        let cycles = values.len() / period.max(1);
        if period < 4 || cycles < 2 {
            return None;
        }
        let origin = values.len() - cycles * period;
        let window = &values[origin..];
        let order = ORDER.min((period - 1) / 2);
        // sin and cos of 2 pi j / period: every harmonic's angle is one of these.
        let (sines, cosines): (Vec<f64>, Vec<f64>) = (0..period)
            .map(|j| (TAU * j as f64 / period as f64).sin_cos())
            .unzip();
        let mut profile = vec![0.0; period];
        for _ in 0..PASSES {
            let deseasoned: Vec<f64> = window
                .iter()
                .enumerate()
                .map(|(index, value)| value - profile[index % period])
                .collect();
            let (intercept, slope) = stats::fit_line(&deseasoned);
            // The mean of each phase over the cycles: harmonics of the period only see these.
            let mut phase_means = vec![0.0; period];
            for (index, value) in window.iter().enumerate() {
                let line = intercept + slope * index as f64;
                phase_means[index % period] += (value - line) / cycles as f64;
            }
            let norm = 2.0 / period as f64;
            let coefficients: Vec<(f64, f64)> = (1..=order)
                .map(|harmonic| {
                    phase_means.iter().enumerate().fold(
                        (0.0, 0.0),
                        |(sine, cosine), (phase, mean)| {
                            let angle = harmonic * phase % period;
                            (sine + mean * sines[angle], cosine + mean * cosines[angle])
                        },
                    )
                })
                .map(|(sine, cosine)| (sine * norm, cosine * norm))
                .collect();
            for (phase, value) in profile.iter_mut().enumerate() {
                *value = coefficients
                    .iter()
                    .enumerate()
                    .map(|(slot, (sine, cosine))| {
                        let angle = (slot + 1) * phase % period;
                        sine * sines[angle] + cosine * cosines[angle]
                    })
                    .sum();
            }
        }
        Some(Self { profile, origin })
    }

    /// The yearly term at `index` of the fitted window (beyond its end for a forecast).
    pub(crate) fn at(&self, index: usize) -> f64 {
        let period = self.profile.len();
        self.profile[(index + period - self.origin % period) % period]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_smooth_yearly_shape_on_a_trend_is_recovered_and_continued() {
        let period = 365;
        let shape = |t: usize| {
            let angle = TAU * t as f64 / period as f64;
            3.0 * angle.sin() + 1.5 * (2.0 * angle).cos()
        };
        // 5.5 cycles on a slope: the half cycle at the start is left out of the fit.
        let values: Vec<f64> = (0..2008).map(|t| 0.01 * t as f64 + shape(t)).collect();
        let terms = YearlyTerms::fit(&values, period).expect("five whole cycles fit");
        for t in [0, 100, 2007, 2008, 2100, 2400] {
            assert!((terms.at(t) - shape(t)).abs() < 0.02, "{t}");
        }
        assert!(YearlyTerms::fit(&values[..700], period).is_none());
    }
}
