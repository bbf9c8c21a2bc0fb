//! A weighted choice table: items drawn in proportion to their weights.

use rand::Rng;

/// Items with positive weights, drawn by binary search over the cumulative weights.
#[derive(Debug, Clone)]
pub(super) struct Table<T> {
    cumulative: Vec<f64>,
    items: Vec<T>,
}

impl<T: Copy> Table<T> {
    /// The table of the items with a positive weight; `None` if there is none.
    pub(super) fn new(weights: impl IntoIterator<Item = (f64, T)>) -> Option<Self> {
        let mut cumulative = Vec::new();
        let mut items = Vec::new();
        let mut total = 0.0;
        for (w, item) in weights {
            if w > 0.0 {
                total += w;
                cumulative.push(total);
                items.push(item);
            }
        }
        (total > 0.0).then_some(Table { cumulative, items })
    }

    /// One item, with probability its weight over the total.
    pub(super) fn pick(&self, rng: &mut impl Rng) -> T {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|&c| c <= x);
        self.items[i.min(self.items.len() - 1)]
    }
}
