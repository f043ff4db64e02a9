//! Order statistics of a sample.

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    pub median: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
}

/// Nearest-rank percentile of a sorted slice, p in 0..=100.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let median = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    Some(Summary {
        median,
        p90: percentile(&s, 90.0),
        min: s[0],
        max: s[s.len() - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_p90_min_max() {
        let s = summarize(&[5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0]).unwrap();
        assert_eq!(s.median, 5.5);
        assert_eq!(s.p90, 9.0);
        assert_eq!((s.min, s.max), (1.0, 10.0));
        assert_eq!(summarize(&[3.0]).unwrap().median, 3.0);
        assert!(summarize(&[]).is_none());
    }
}
