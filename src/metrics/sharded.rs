//! Counters and histograms that worker threads update without sharing a
//! cache line or a lock: each has a slot per worker (see [`crate::worker`]),
//! and `/metrics` adds the slots up. prometheus-client's own `Histogram`
//! takes a mutex on every observation, and two workers observing the same
//! route's latency would take turns on it (BENCHMARKS.md, "Against nginx").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Slots per metric: workers share one only beyond this many; the last
/// slot is for every thread that is not a worker.
const SLOTS: usize = 16;

fn slot() -> usize {
    crate::worker::current().map_or(SLOTS - 1, |w| w % (SLOTS - 1))
}

/// One slot, alone on its cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

/// A monotonic counter.
#[derive(Clone, Default)]
pub struct Counter {
    slots: Arc<[Padded; SLOTS]>,
}

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.slots[slot()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counter({})", self.get())
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A histogram of durations over fixed bucket bounds (seconds).
#[derive(Clone)]
pub struct Histogram {
    inner: Arc<Shape>,
}

struct Shape {
    /// Upper bounds, ascending; +Inf is implied after the last.
    bounds: Vec<f64>,
    slots: Box<[Slot]>,
}

/// One worker's observations: a count per bucket (not cumulative), the
/// number and the sum in nanoseconds.
#[repr(align(128))]
struct Slot {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Vec<f64> = bounds.into_iter().collect();
        let slots = (0..SLOTS)
            .map(|_| Slot {
                buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                count: AtomicU64::new(0),
                sum_nanos: AtomicU64::new(0),
            })
            .collect();
        Histogram {
            inner: Arc::new(Shape { bounds, slots }),
        }
    }

    pub fn observe(&self, d: Duration) {
        let shape = &*self.inner;
        let seconds = d.as_secs_f64();
        let bucket = shape.bounds.partition_point(|&b| b < seconds);
        let slot = &shape.slots[slot()];
        slot.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        slot.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        slot.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// (sum in seconds, count, the count in each bucket by upper bound, +Inf last).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let shape = &*self.inner;
        let mut per_bucket = vec![0u64; shape.bounds.len() + 1];
        let (mut count, mut sum) = (0u64, 0u64);
        for slot in shape.slots.iter() {
            for (total, b) in per_bucket.iter_mut().zip(slot.buckets.iter()) {
                *total += b.load(Ordering::Relaxed);
            }
            count += slot.count.load(Ordering::Relaxed);
            sum = sum.saturating_add(slot.sum_nanos.load(Ordering::Relaxed));
        }
        // The encoder makes the counts cumulative itself.
        let buckets = shape
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(per_bucket)
            .collect();
        (sum as f64 / 1e9, count, buckets)
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (sum, count, _) = self.snapshot();
        write!(f, "Histogram(count {count}, sum {sum}s)")
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    fn text(register: impl FnOnce(&mut Registry)) -> String {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn a_counter_adds_up_every_threads_slot() {
        let c = Counter::default();
        c.inc();
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let c = c.clone();
                std::thread::spawn(move || {
                    crate::worker::enter(w);
                    c.inc_by(10);
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(c.get(), 31);
        let out = text(|r| r.register("hits", "Hits", c.clone()));
        assert!(out.contains("hits_total 31\n"), "{out}");
    }

    #[test]
    fn a_histogram_encodes_cumulative_buckets_its_count_and_sum_over_all_slots() {
        let h = Histogram::new([0.005, 0.01, 0.02]);
        h.observe(Duration::from_millis(3));
        let other = h.clone();
        std::thread::spawn(move || {
            crate::worker::enter(4);
            other.observe(Duration::from_millis(10));
            other.observe(Duration::from_millis(15));
            other.observe(Duration::from_secs(2));
        })
        .join()
        .unwrap();
        let out = text(|r| r.register("lat", "Latency", h.clone()));
        for line in [
            "lat_sum 2.028\n",
            "lat_count 4\n",
            "lat_bucket{le=\"0.005\"} 1\n",
            // A bound holds what equals it, as Prometheus's `le` says.
            "lat_bucket{le=\"0.01\"} 2\n",
            "lat_bucket{le=\"0.02\"} 3\n",
            "lat_bucket{le=\"+Inf\"} 4\n",
        ] {
            assert!(out.contains(line), "no {line:?} in\n{out}");
        }
    }
}
