//! Latency histograms that cross process boundaries: a load process sends
//! its histogram as a JSON list of `[value, count]` buckets, the parent
//! merges them exactly (same bounds and precision on both sides).

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Microseconds, 1 µs .. 60 s, 3 significant digits.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant, valid bounds")
}

/// The non-empty buckets as `[[highest_equivalent_value, count], ...]`.
pub fn to_buckets(h: &Histogram<u64>) -> Value {
    Value::Array(
        h.iter_recorded()
            .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
            .collect(),
    )
}

/// Adds buckets produced by [`to_buckets`] to `h`.
pub fn merge_buckets(h: &mut Histogram<u64>, buckets: &Value) -> anyhow::Result<()> {
    let list = buckets
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("histogram buckets are not a list"))?;
    for b in list {
        let (Some(v), Some(n)) = (b[0].as_u64(), b[1].as_u64()) else {
            anyhow::bail!("bad histogram bucket {b}");
        };
        h.saturating_record_n(v, n);
    }
    Ok(())
}

/// p50, p99, p99.9 and max in µs (nulls when empty).
pub fn summary(h: &Histogram<u64>) -> Value {
    let q = |p: f64| (!h.is_empty()).then(|| h.value_at_quantile(p));
    json!({
        "count": h.len(),
        "p50_us": q(0.5),
        "p99_us": q(0.99),
        "p999_us": q(0.999),
        "max_us": (!h.is_empty()).then(|| h.max()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_merge_exactly() {
        let mut a = new_latency_histogram();
        for v in [1u64, 7, 150, 151, 9_999, 123_456, 59_000_000] {
            a.record_n(v, v % 5 + 1).unwrap();
        }
        let mut b = new_latency_histogram();
        merge_buckets(&mut b, &to_buckets(&a)).unwrap();
        assert_eq!(a.len(), b.len());
        for p in [0.1, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(a.value_at_quantile(p), b.value_at_quantile(p));
        }
        assert_eq!(a.max(), b.max());
    }
}
