//! The first stage of a fit: every member's rolling-origin backtest, scored per bucket of lead
//! times and gated against the seasonal naive baseline.
//!
//! A member that beats the baseline in no bucket is dropped; one that beats it in some bucket may
//! carry weight in every bucket; in a bucket no member beats, the baseline leads and every
//! eligible member may join it (the held-out choice of the blend size
//! in `selection` then keeps it alone when blending did not help on the backtest). See
//! `docs/decisions.md`, "Gating and weights per lead-time bucket".

use crate::forecast::ForecastError;
use crate::forecast::backtest::{self, MemberReport, MemberStatus};
use crate::forecast::members::{MemberKind, MemberSpec};

use super::{Folds, ModelParams};

/// A member's backtest outcome while fitting.
pub(super) struct Candidate {
    /// The member.
    pub(super) spec: MemberSpec,
    /// Fold forecasts, or why the member was not backtested (too little history, it failed, or
    /// another member tried covers it).
    pub(super) folds: Result<backtest::FoldForecasts, String>,
}

/// Which candidates may carry weight, and where.
pub(super) struct Gate {
    /// Every candidate's report, in the order tried; the refit marks who is used in the end.
    pub(super) reports: Vec<MemberReport>,
    /// Indices into the candidates of the members that may carry weight (the slots of the
    /// weights), the baseline last when it leads some bucket.
    pub(super) eligible: Vec<usize>,
    /// `allowed[bucket][slot]`: whether eligible member `slot` may carry weight in the bucket.
    pub(super) allowed: Vec<Vec<bool>>,
}

impl Gate {
    /// Fold forecasts of each eligible member (none for one that could not be backtested).
    pub(super) fn fold_matrix<'c>(&self, candidates: &'c [Candidate]) -> Vec<&'c [Vec<f64>]> {
        self.eligible
            .iter()
            .map(|index| {
                candidates[*index]
                    .folds
                    .as_ref()
                    .map(|f| f.forecasts.as_slice())
                    .unwrap_or(&[])
            })
            .collect()
    }
}

impl ModelParams {
    /// Backtests every member tried, baseline included, at the origins of `folds`.
    pub(super) fn backtest_candidates(&self, folds: &Folds<'_>) -> Vec<Candidate> {
        let prepared = folds.prepared;
        let len = prepared.values.len();
        let seasonality = &prepared.seasonality;
        let tried = self.tried_members();
        tried
            .iter()
            .map(|spec| {
                let needed = spec.min_history(seasonality, folds.horizon);
                let earliest = folds.origins.last().copied().unwrap_or(0);
                let redundant = if self.single {
                    None
                } else {
                    spec.redundant_beside(&tried, seasonality, len)
                };
                let outcome = if let Some(reason) = redundant {
                    Err(reason)
                } else if earliest < needed {
                    Err(ForecastError::NotEnoughHistory {
                        needed: needed + (len - earliest),
                        got: len,
                    }
                    .to_string())
                } else {
                    backtest::run_member(spec, prepared, &folds.origins, folds.horizon)
                        .map_err(|error| error.to_string())
                };
                Candidate {
                    spec: spec.clone(),
                    folds: outcome,
                }
            })
            .collect()
    }

    /// Scores the candidates and decides who may carry weight in which bucket of lead times.
    pub(super) fn gate(
        &self,
        folds: &Folds<'_>,
        candidates: &[Candidate],
        naive_scale: Option<f64>,
    ) -> Gate {
        let beats = beats_baseline(candidates, &bucket_mae(candidates, folds));
        let (reports, mut eligible, baseline_index) =
            self.member_reports(folds, candidates, &beats, naive_scale);
        // allowed[bucket][slot]: every eligible member may carry weight in every bucket; the
        // baseline joins them in the buckets no member beats it in (see `admit`).
        let eligible_beats: Vec<&[bool]> =
            eligible.iter().map(|index| &beats[*index][..]).collect();
        let mut allowed = admit(
            &eligible_beats,
            folds.ranges.len(),
            baseline_index.is_some(),
        );
        if let Some(baseline) = baseline_index
            && allowed
                .first()
                .is_some_and(|slots| slots.len() > eligible.len())
        {
            eligible.push(baseline);
        }
        if eligible.is_empty() {
            // Only possible for a single member that could not be backtested: fit it anyway and
            // calibrate on in-sample differences.
            let index = candidates
                .iter()
                .position(|c| self.members[0].kind() == c.spec.kind())
                .unwrap_or(0);
            eligible.push(index);
            allowed = vec![vec![true]; folds.ranges.len()];
        }
        Gate {
            reports,
            eligible,
            allowed,
        }
    }

    /// Each candidate's report and status, the candidates eligible for weight (before the
    /// baseline joins), and the baseline's index when it was backtested in an ensemble.
    fn member_reports(
        &self,
        folds: &Folds<'_>,
        candidates: &[Candidate],
        beats: &[Vec<bool>],
        naive_scale: Option<f64>,
    ) -> (Vec<MemberReport>, Vec<usize>, Option<usize>) {
        let mut reports = Vec::with_capacity(candidates.len());
        let mut eligible: Vec<usize> = Vec::new();
        let mut baseline_index: Option<usize> = None;
        for (index, candidate) in candidates.iter().enumerate() {
            let kind = candidate.spec.kind();
            let configured = self.members.iter().any(|m| m.kind() == kind);
            let (status, scores) = match &candidate.folds {
                Err(reason) => (
                    MemberStatus::Skipped {
                        reason: reason.clone(),
                    },
                    None,
                ),
                Ok(member_folds) => {
                    let scores = backtest::score(
                        &member_folds.forecasts,
                        folds.prepared,
                        &folds.origins,
                        naive_scale,
                    );
                    let status = if self.single && !configured {
                        MemberStatus::Reference
                    } else if self.single {
                        eligible.push(index);
                        MemberStatus::ZeroWeight
                    } else if kind == MemberKind::SeasonalNaive {
                        // The baseline only forecasts where no member beats it.
                        baseline_index = Some(index);
                        MemberStatus::ZeroWeight
                    } else if beats[index].iter().any(|beats| *beats) {
                        eligible.push(index);
                        MemberStatus::ZeroWeight
                    } else {
                        MemberStatus::LostToBaseline
                    };
                    (status, scores)
                }
            };
            reports.push(MemberReport {
                kind,
                status,
                scores,
            });
        }
        (reports, eligible, baseline_index)
    }
}

/// `mae[candidate][bucket]`: the model-scale MAE of each candidate over each bucket's lead steps,
/// where it could be scored.
fn bucket_mae(candidates: &[Candidate], folds: &Folds<'_>) -> Vec<Vec<Option<f64>>> {
    candidates
        .iter()
        .map(|candidate| {
            folds
                .ranges
                .iter()
                .map(|range| {
                    let member_folds = candidate.folds.as_ref().ok()?;
                    let sliced: Vec<Vec<f64>> = member_folds
                        .forecasts
                        .iter()
                        .map(|f| f[range.clone()].to_vec())
                        .collect();
                    let shifted: Vec<usize> = folds
                        .origins
                        .iter()
                        .map(|origin| origin + range.start)
                        .collect();
                    backtest::score(&sliced, folds.prepared, &shifted, None)
                        .map(|scores| scores.model_scale_mae)
                })
                .collect()
        })
        .collect()
}

/// `allowed[bucket][slot]` for the members eligible for weight, `beats[slot][bucket]` telling where
/// each beat the baseline: every eligible member may carry weight in every one of the `buckets`,
/// and which of them to blend where is left to the per-bucket weights and the held-out choice of
/// the blend size. When `with_baseline` and some bucket has no member beating the baseline, the
/// baseline joins as the last slot, allowed in those buckets only: there it leads, and the
/// held-out choice of how many to blend keeps it alone when blending did not help on the backtest.
/// A member that beat the baseline somewhere is not shut out of the other buckets: a bucket's
/// comparison rests on few points (a fraction of each fold), too few to exclude a member that
/// the whole backtest admitted (see `docs/decisions.md`, "Gating and weights per lead-time
/// bucket").
fn admit(beats: &[&[bool]], buckets: usize, with_baseline: bool) -> Vec<Vec<bool>> {
    let mut allowed = vec![vec![true; beats.len()]; buckets];
    let unbeaten: Vec<bool> = (0..buckets)
        .map(|bucket| !beats.iter().any(|member| member[bucket]))
        .collect();
    if with_baseline && unbeaten.contains(&true) {
        for (slots, alone) in allowed.iter_mut().zip(unbeaten) {
            slots.push(alone);
        }
    }
    allowed
}

/// `beats[candidate][bucket]`: below the baseline's error in that bucket (or nothing to compare:
/// trust the member over the baseline).
fn beats_baseline(candidates: &[Candidate], bucket_mae: &[Vec<Option<f64>>]) -> Vec<Vec<bool>> {
    let baseline_position = candidates
        .iter()
        .position(|c| c.spec.kind() == MemberKind::SeasonalNaive);
    bucket_mae
        .iter()
        .map(|maes| {
            maes.iter()
                .enumerate()
                .map(|(bucket, mae)| {
                    let baseline = baseline_position.and_then(|b| bucket_mae[b][bucket]);
                    match (mae, baseline) {
                        (Some(mae), Some(baseline)) => *mae < baseline,
                        _ => true,
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_that_beat_the_baseline_somewhere_may_carry_weight_in_every_bucket() {
        // `early` beat the baseline in the first bucket only, `late` in the second only.
        let early = [true, false, false];
        let late = [false, true, false];
        let allowed = admit(&[&early, &late], 3, true);
        // Both may carry weight in both buckets; the baseline, beaten there, is left out.
        assert_eq!(allowed[0], vec![true, true, false]);
        assert_eq!(allowed[1], vec![true, true, false]);
        // No member beat it in the last bucket: it leads there, and the members may join it.
        assert_eq!(allowed[2], vec![true, true, true]);
        // Beaten everywhere, the baseline takes no slot.
        let everywhere = [true, true, true];
        assert_eq!(
            admit(&[&everywhere, &late], 3, true),
            vec![vec![true; 2]; 3]
        );
        // With no member eligible, the baseline forecasts alone.
        assert_eq!(admit(&[], 2, true), vec![vec![true]; 2]);
    }
}
