//! The last stage of a fit: every member that carries weight in some bucket is refitted on the
//! whole history, and the weights renormalised over the members that could be.

use crate::forecast::ForecastError;
use crate::forecast::backtest::MemberStatus;
use crate::forecast::members::{FitInput, catch_member_panic};
use crate::forecast::preprocess;

use super::Folds;
use super::fitted::WeightedMember;
use super::gating::{Candidate, Gate};
use super::weights::renormalise;

/// Refits the eligible members of `gate` with a weight in some bucket of `weights[bucket][slot]`,
/// and marks in its reports who is used (with the mean weight) and who failed the refit.
///
/// Fails when no member could be refitted, with the first member's error.
pub(super) fn refit(
    folds: &Folds<'_>,
    candidates: &[Candidate],
    gate: &mut Gate,
    weights: &[Vec<f64>],
) -> Result<Vec<WeightedMember>, ForecastError> {
    let prepared = folds.prepared;
    let full_input = FitInput {
        values: &prepared.values,
        actual: &prepared.actual,
        start: prepared.start,
        step: prepared.step,
        seasonality: &prepared.seasonality,
        horizon: folds.horizon,
    };
    let mut members: Vec<WeightedMember> = Vec::new();
    let mut final_errors: Vec<(usize, ForecastError)> = Vec::new();
    for (slot, index) in gate.eligible.iter().enumerate() {
        let slot_weights: Vec<f64> = weights.iter().map(|bucket| bucket[slot]).collect();
        if slot_weights.iter().all(|weight| *weight <= 0.0) {
            continue;
        }
        let spec = &candidates[*index].spec;
        let fitted = catch_member_panic(spec.kind(), || {
            spec.fit_window(&full_input).map(|fitted| fitted.state())
        });
        match fitted {
            Ok(state) => members.push(WeightedMember {
                kind: spec.kind(),
                weights: slot_weights,
                member: state,
            }),
            Err(error) => final_errors.push((*index, error)),
        }
    }
    if members.is_empty() {
        return Err(final_errors.into_iter().next().map_or(
            ForecastError::NotEnoughHistory {
                needed: preprocess::MIN_OBSERVED,
                got: prepared.values.len(),
            },
            |(_, error)| error,
        ));
    }
    let mut member_weights: Vec<Vec<f64>> = members
        .iter()
        .map(|member| member.weights.clone())
        .collect();
    renormalise(&mut member_weights, folds.ends.len());
    for (member, weights) in members.iter_mut().zip(member_weights) {
        member.weights = weights;
    }
    for (index, error) in final_errors {
        gate.reports[index].status = MemberStatus::Skipped {
            reason: error.to_string(),
        };
    }
    for report in &mut gate.reports {
        if let Some(member) = members.iter().find(|member| member.kind == report.kind) {
            report.status = MemberStatus::Used {
                weight: member.mean_weight(&folds.ends),
            };
        }
    }
    Ok(members)
}
