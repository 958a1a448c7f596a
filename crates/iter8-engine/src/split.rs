//! Turning shares into integer percentages, and the limits every moving split obeys.

/// Rounds non-negative shares to integer percentages summing to 100, by largest remainder;
/// ties go to the earlier version, so the result is deterministic. All-zero shares give the
/// baseline everything.
pub fn to_percentages(shares: &[f64]) -> Vec<u32> {
    let total: f64 = shares.iter().filter(|s| s.is_finite() && **s > 0.0).sum();
    let mut out = vec![0u32; shares.len()];
    if shares.is_empty() {
        return out;
    }
    if total <= 0.0 {
        out[0] = 100;
        return out;
    }
    let exact: Vec<f64> = shares
        .iter()
        .map(|&s| {
            if s.is_finite() && s > 0.0 {
                100.0 * s / total
            } else {
                0.0
            }
        })
        .collect();
    let mut assigned = 0u32;
    for (o, e) in out.iter_mut().zip(&exact) {
        // `e` is in [0, 100], so the cast cannot truncate anything but the fraction.
        *o = e.floor() as u32;
        assigned += *o;
    }
    let mut order: Vec<usize> = (0..shares.len()).collect();
    // Remainders are compared at 1e-9 so that float noise cannot break a true tie.
    let remainder = |i: usize| ((exact[i] - exact[i].floor()) * 1e9).round();
    order.sort_by(|&a, &b| remainder(b).total_cmp(&remainder(a)).then(a.cmp(&b)));
    for &i in order
        .iter()
        .cycle()
        .take(100usize.saturating_sub(assigned as usize))
    {
        out[i] += 1;
    }
    out
}

/// Limits a proposed split: no candidate above `max_weight`, none growing by more than
/// `max_increment` over its current weight. What a candidate gives up goes to the baseline
/// (index 0), the one version known to be safe.
pub fn apply_limits(
    proposed: &[u32],
    current: &[u32],
    max_weight: u32,
    max_increment: u32,
) -> Vec<u32> {
    let mut out = proposed.to_vec();
    let mut excess = 0;
    for (i, w) in out.iter_mut().enumerate().skip(1) {
        let now = current.get(i).copied().unwrap_or(0);
        let limit = max_weight.min(now.saturating_add(max_increment));
        if *w > limit {
            excess += *w - limit;
            *w = limit;
        }
    }
    if let Some(b) = out.first_mut() {
        *b += excess;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_sum_to_100_by_largest_remainder() {
        assert_eq!(to_percentages(&[1.0, 1.0, 1.0]), vec![34, 33, 33]);
        assert_eq!(to_percentages(&[0.905, 0.095]), vec![91, 9]);
        assert_eq!(to_percentages(&[0.2, 0.3, 0.5]), vec![20, 30, 50]);
        assert_eq!(to_percentages(&[0.0, 0.0]), vec![100, 0]);
        assert_eq!(to_percentages(&[0.0, 1.0]), vec![0, 100]);
    }

    #[test]
    fn limits_send_the_excess_to_the_baseline() {
        // iter8 v2's reference case: old [50, 50], cap 53, increment 2, proposed 5/95.
        assert_eq!(apply_limits(&[5, 95], &[50, 50], 53, 2), vec![48, 52]);
        assert_eq!(
            apply_limits(&[10, 45, 45], &[100, 0, 0], 100, 10),
            vec![80, 10, 10]
        );
        assert_eq!(apply_limits(&[90, 10], &[50, 50], 100, 10), vec![90, 10]);
    }
}
