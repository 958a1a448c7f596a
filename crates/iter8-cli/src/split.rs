//! Routing by weights: which version a request goes to, given the current split.

/// A traffic split as cumulative integer weights, for picking a version per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    cumulative: Vec<u32>,
}

impl Split {
    /// The split for `weights` (one per version, in version order).
    pub fn new(weights: &[u32]) -> Self {
        let cumulative = weights
            .iter()
            .scan(0u32, |total, &w| {
                *total = total.saturating_add(w);
                Some(*total)
            })
            .collect();
        Self { cumulative }
    }

    /// The sum of the weights.
    pub fn total(&self) -> u32 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The version that a uniform draw `x` in `0..total()` lands on; `None` when every weight
    /// is zero.
    pub fn pick(&self, x: u32) -> Option<usize> {
        if self.total() == 0 {
            return None;
        }
        let x = x % self.total();
        Some(self.cumulative.partition_point(|&c| c <= x))
    }

    /// The weights this split was built from.
    pub fn weights(&self) -> Vec<u32> {
        let mut previous = 0;
        self.cumulative
            .iter()
            .map(|&c| {
                let w = c - previous;
                previous = c;
                w
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_draw_lands_on_a_version_in_proportion_to_its_weight() {
        let split = Split::new(&[20, 0, 50, 30]);
        let mut counts = [0; 4];
        for x in 0..100 {
            counts[split.pick(x).expect("non-zero split")] += 1;
        }
        assert_eq!(counts, [20, 0, 50, 30]);
    }

    #[test]
    fn a_version_with_all_the_weight_gets_every_request() {
        let split = Split::new(&[0, 100, 0]);
        assert!((0..100).all(|x| split.pick(x) == Some(1)));
    }

    #[test]
    fn an_all_zero_split_routes_nowhere() {
        assert_eq!(Split::new(&[0, 0]).pick(3), None);
        assert_eq!(Split::new(&[]).pick(0), None);
    }

    #[test]
    fn weights_round_trip() {
        assert_eq!(Split::new(&[10, 0, 90]).weights(), vec![10, 0, 90]);
    }
}
