//! An answer is used only if it is an assessment of the request asked: the controller applies
//! its split to live traffic by version name, so a short, reordered or foreign split must never
//! reach the router.

use iter8_api::{Action, AssessmentRequest, AssessmentResponse};

use crate::AnalyticsError;

/// Checks `answer` against `request`: the same iteration; one split entry per version, with the
/// request's names in the request's order, summing to 100; one assessment per version, in the
/// same order; a promoted version or a winner that is one of the versions.
pub fn check_answer(
    request: &AssessmentRequest,
    answer: &AssessmentResponse,
) -> Result<(), AnalyticsError> {
    let garbage = |why: String| Err(AnalyticsError::Garbage(why));
    if answer.iteration != request.iteration {
        return garbage(format!(
            "iteration: the answer is for iteration {}, the request for {}",
            answer.iteration, request.iteration
        ));
    }
    let names: Vec<&str> = request.versions.iter().map(|v| v.name.as_str()).collect();
    let split: Vec<&str> = answer.split.iter().map(|w| w.version.as_str()).collect();
    if split != names {
        return garbage(format!(
            "split: names {split:?} differ from the request's versions {names:?}"
        ));
    }
    let sum: u64 = answer.split.iter().map(|w| u64::from(w.weight)).sum();
    if sum != 100 {
        return garbage(format!("split: weights sum to {sum}, not 100"));
    }
    let assessed: Vec<&str> = answer.versions.iter().map(|v| v.name.as_str()).collect();
    if assessed != names {
        return garbage(format!(
            "versions: names {assessed:?} differ from the request's versions {names:?}"
        ));
    }
    let unknown = |name: &str| !names.contains(&name);
    match answer.decision.version.as_deref() {
        Some(v) if unknown(v) => {
            return garbage(format!("decision.version: {v:?} is not a version"));
        }
        None if answer.decision.action == Action::Promote => {
            return garbage("decision.version: a promotion names no version".into());
        }
        _ => {}
    }
    if let Some(w) = &answer.winner
        && unknown(&w.version)
    {
        return garbage(format!("winner.version: {:?} is not a version", w.version));
    }
    Ok(())
}
