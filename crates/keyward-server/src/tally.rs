//! Counters and a latency histogram for the verify path that cost no
//! locked instruction: each thread adds to its own row, and a scrape of
//! `/metrics` sums the rows.
//!
//! The `metrics` facade's handles are shared atomics: one locked
//! read-modify-write per increment, and a histogram sample appended to a
//! shared bucket, all on cache lines that every worker thread writes. On a
//! path that takes a few hundred nanoseconds that was the largest single
//! cost after hashing (see docs/PERFORMANCE.md), so the verify path's own
//! series are kept here and appended to the exporter's text.

use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use thread_local::ThreadLocal;

/// `N` counters, one row per thread that ever added to them.
pub struct Tallies<const N: usize> {
    rows: ThreadLocal<[AtomicU64; N]>,
}

impl<const N: usize> Default for Tallies<N> {
    fn default() -> Self {
        Self {
            rows: ThreadLocal::new(),
        }
    }
}

impl<const N: usize> Tallies<N> {
    /// This thread's row: several additions for one event look it up once.
    pub fn row(&self) -> Row<'_> {
        let row = self
            .rows
            .get_or(|| std::array::from_fn(|_| AtomicU64::new(0)));
        Row(row, PhantomData)
    }

    /// Every counter, summed over the threads.
    pub fn totals(&self) -> [u64; N] {
        let mut totals = [0u64; N];
        for row in self.rows.iter() {
            for (total, counter) in totals.iter_mut().zip(row) {
                *total = total.wrapping_add(counter.load(Relaxed));
            }
        }
        totals
    }
}

/// The calling thread's counters. Not `Send`: another thread writing them
/// would break the single-writer rule that makes plain stores safe.
pub struct Row<'a>(&'a [AtomicU64], PhantomData<*const ()>);

impl Row<'_> {
    /// Adds `n` to counter `index` (out of range: ignored).
    pub fn add(&self, index: usize, n: u64) {
        if let Some(counter) = self.0.get(index) {
            // Only this thread writes its row (a row outlives its thread and
            // is handed to a later one only after it exited), so a plain load
            // and store cannot lose an update; readers see each value whole.
            counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
        }
    }
}

/// Upper bounds of the latency buckets, in nanoseconds: 5 µs to 2.5 s.
const LATENCY_BOUNDS_NS: [u64; 18] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
];

/// A Prometheus histogram of durations (in seconds) laid out in
/// [`LatencyHistogram::SLOTS`] consecutive counters of a [`Tallies`] row:
/// one per bucket (not cumulative), one for samples above every bound, and
/// the sum of every sample in nanoseconds.
pub struct LatencyHistogram;

impl LatencyHistogram {
    pub const SLOTS: usize = LATENCY_BOUNDS_NS.len() + 2;
    const OVERFLOW: usize = LATENCY_BOUNDS_NS.len();
    const SUM: usize = Self::OVERFLOW + 1;

    /// Counts one sample in the histogram starting at counter `first`.
    pub fn record(row: &Row<'_>, first: usize, nanos: u64) {
        let bucket = LATENCY_BOUNDS_NS.partition_point(|&bound| bound < nanos);
        row.add(first + bucket, 1);
        row.add(first + Self::SUM, nanos);
    }

    /// Appends the histogram `name`, from its [`Self::SLOTS`] totals, in the
    /// text exposition format.
    pub fn render(totals: &[u64], name: &str, help: &str, out: &mut String) {
        let total = |slot: usize| totals.get(slot).copied().unwrap_or(0);
        header(out, name, help, "histogram");
        let mut cumulative = 0u64;
        for (slot, bound) in LATENCY_BOUNDS_NS.iter().enumerate() {
            cumulative += total(slot);
            let seconds = *bound as f64 / 1e9;
            let _ = writeln!(out, "{name}_bucket{{le=\"{seconds}\"}} {cumulative}");
        }
        cumulative += total(Self::OVERFLOW);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", total(Self::SUM) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// The `# HELP` and `# TYPE` lines of a metric family.
pub fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample of a counter with labels (`labels` already formatted, e.g.
/// `code="valid"`).
pub fn sample(out: &mut String, name: &str, labels: &str, value: u64) {
    let _ = writeln!(out, "{name}{{{labels}}} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_every_thread_are_summed() {
        let tallies = std::sync::Arc::new(Tallies::<2>::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let tallies = tallies.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        tallies.row().add(0, 1);
                    }
                    tallies.row().add(1, 5);
                    tallies.row().add(2, 1);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(tallies.totals(), [4000, 20]);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_bounds_inclusive() {
        // After one other counter, as the verifier lays them out.
        let tallies = Tallies::<{ 1 + LatencyHistogram::SLOTS }>::default();
        for nanos in [1, 5_000, 5_001, 3_000_000_000] {
            LatencyHistogram::record(&tallies.row(), 1, nanos);
        }
        let mut text = String::new();
        LatencyHistogram::render(&tallies.totals()[1..], "t_seconds", "Test.", &mut text);
        let value = |prefix: &str| -> String {
            text.lines()
                .find_map(|line| line.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("{prefix} missing in\n{text}"))
                .trim()
                .to_owned()
        };
        assert_eq!(value("t_seconds_bucket{le=\"0.000005\"}"), "2");
        assert_eq!(value("t_seconds_bucket{le=\"0.00001\"}"), "3");
        assert_eq!(value("t_seconds_bucket{le=\"2.5\"}"), "3");
        assert_eq!(value("t_seconds_bucket{le=\"+Inf\"}"), "4");
        assert_eq!(value("t_seconds_count"), "4");
        assert_eq!(value("t_seconds_sum"), "3.000010002");
        assert!(text.starts_with("# HELP t_seconds Test.\n# TYPE t_seconds histogram\n"));
    }
}
