//! Metrics through the `metrics` facade. The library only emits; an
//! application installs a recorder (see the `prometheus` feature). With no
//! recorder installed every call here is a no-op.

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};

use crate::check::Check;

/// Counter: backward passes seen (`optimizer`).
pub const BACKWARD_PASSES_TOTAL: &str = "gradguard_backward_passes_total";
/// Counter: steps applied (`optimizer`).
pub const STEPS_TOTAL: &str = "gradguard_steps_total";
/// Counter: `zero_grad` calls (`optimizer`).
pub const ZERO_GRAD_TOTAL: &str = "gradguard_zero_grad_total";
/// Counter: checks that fired, every one counted (`optimizer`, `check`).
pub const ANOMALIES_TOTAL: &str = "gradguard_anomalies_total";
/// Histogram: backward passes applied by each step (`optimizer`).
pub const STEP_GENERATIONS: &str = "gradguard_step_generations";
/// Histogram: seconds per step, checks included (`optimizer`).
pub const STEP_DURATION_SECONDS: &str = "gradguard_step_duration_seconds";
/// Gauge: the inner optimizer's learning rate (`optimizer`).
pub const LEARNING_RATE: &str = "gradguard_learning_rate";
/// Gauge: global L2 norm of the applied gradients, when sampled (`optimizer`).
pub const GRAD_NORM: &str = "gradguard_grad_norm";

/// Every metric name gradguard exports.
pub const METRIC_NAMES: [&str; 8] = [
    BACKWARD_PASSES_TOTAL,
    STEPS_TOTAL,
    ZERO_GRAD_TOTAL,
    ANOMALIES_TOTAL,
    STEP_GENERATIONS,
    STEP_DURATION_SECONDS,
    LEARNING_RATE,
    GRAD_NORM,
];

/// Histogram buckets for `gradguard_step_generations` (passes per step).
pub const GENERATION_BUCKETS: [f64; 10] = [1.0, 2.0, 3.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Histogram buckets for `gradguard_step_duration_seconds`, 100 µs to 10 s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// Describes every metric (unit and help text, the `# HELP` line) to the
/// installed recorder. [`crate::Guarded::new`] calls it; call it again if the
/// recorder is installed later.
pub fn describe_metrics() {
    describe_counter!(
        BACKWARD_PASSES_TOTAL,
        Unit::Count,
        "Backward passes seen by the guard."
    );
    describe_counter!(
        STEPS_TOTAL,
        Unit::Count,
        "Optimizer steps applied by the guard."
    );
    describe_counter!(ZERO_GRAD_TOTAL, Unit::Count, "zero_grad() calls.");
    describe_counter!(
        ANOMALIES_TOTAL,
        Unit::Count,
        "Gradient anomalies found at a step, by check (accumulated, short_accumulation, excess_accumulation, stale, missing, nonfinite)."
    );
    describe_histogram!(
        STEP_GENERATIONS,
        Unit::Count,
        "Backward passes applied by each step (the most summed into one gradient with something new)."
    );
    describe_histogram!(
        STEP_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of each step, checks included."
    );
    describe_gauge!(LEARNING_RATE, "Learning rate of the wrapped optimizer.");
    describe_gauge!(
        GRAD_NORM,
        "Global L2 norm of the applied gradients (sampled)."
    );
}

/// Registers, at 0, every counter series a guard named `optimizer` can emit:
/// `gradguard_anomalies_total` for each check of [`Check::ALL`],
/// `gradguard_steps_total`, `gradguard_backward_passes_total` and
/// `gradguard_zero_grad_total`; and the two histograms, empty. Sets
/// `gradguard_learning_rate` to `lr`. (`gradguard_grad_norm` appears with
/// its first sample: 0 would be a false norm.)
///
/// A counter that is born with its first increment is invisible to
/// Prometheus's `increase()` and `rate()` (they need a sample before the
/// increment), and a panel over a series that does not exist shows "no data"
/// rather than 0. Registering is idempotent: values already counted are kept.
/// The recorder adds the exporter's global labels.
pub fn register_series(optimizer: &str, lr: f64) {
    for check in Check::ALL {
        counter!(ANOMALIES_TOTAL, "optimizer" => optimizer.to_owned(), "check" => check.as_str())
            .increment(0);
    }
    for name in [STEPS_TOTAL, BACKWARD_PASSES_TOTAL, ZERO_GRAD_TOTAL] {
        counter!(name, "optimizer" => optimizer.to_owned()).increment(0);
    }
    for name in [STEP_GENERATIONS, STEP_DURATION_SECONDS] {
        // Registering a histogram makes it exist, with no observation.
        drop(histogram!(name, "optimizer" => optimizer.to_owned()));
    }
    gauge!(LEARNING_RATE, "optimizer" => optimizer.to_owned()).set(lr);
}

/// A guard's series, as handles: emitting through a handle does no string
/// work and no look-up, so a step costs the recorder a few atomic adds.
#[derive(Debug, Clone)]
struct Handles {
    backward_passes: Counter,
    steps: Counter,
    zero_grad: Counter,
    anomalies: [Counter; Check::ALL.len()],
    generations: Histogram,
    duration: Histogram,
    learning_rate: Gauge,
    /// Taken at the first sample: a registered gauge reads 0, a false norm.
    grad_norm: Option<Gauge>,
    optimizer: String,
}

impl Handles {
    /// Registers every series of guard `optimizer` with the recorder in
    /// place now (see [`register_series`]) and keeps the handles.
    fn register(optimizer: &str, lr: f64) -> Self {
        register_series(optimizer, lr);
        let o = optimizer.to_owned();
        Self {
            backward_passes: counter!(BACKWARD_PASSES_TOTAL, "optimizer" => o.clone()),
            steps: counter!(STEPS_TOTAL, "optimizer" => o.clone()),
            zero_grad: counter!(ZERO_GRAD_TOTAL, "optimizer" => o.clone()),
            anomalies: Check::ALL.map(|check| {
                counter!(ANOMALIES_TOTAL, "optimizer" => o.clone(), "check" => check.as_str())
            }),
            generations: histogram!(STEP_GENERATIONS, "optimizer" => o.clone()),
            duration: histogram!(STEP_DURATION_SECONDS, "optimizer" => o.clone()),
            learning_rate: gauge!(LEARNING_RATE, "optimizer" => o.clone()),
            grad_norm: None,
            optimizer: o,
        }
    }
}

/// A guard's metrics. Its series are registered, and their handles taken,
/// eagerly when the guard is named and again at its first use (which also
/// covers an unnamed guard, and a recorder installed after the guard was
/// built); never at construction, where the name is still `default`: a later
/// [`crate::Guarded::name`] would leave a stray `default` series behind.
/// From the first use on, the guard emits to the recorder that was in place
/// then: install the recorder before training.
#[derive(Debug, Default)]
pub(crate) struct Series {
    handles: Option<Handles>,
    used: bool,
}

impl Series {
    /// The guard was named `optimizer`.
    pub(crate) fn named(&mut self, optimizer: &str, lr: f64) {
        self.handles = Some(Handles::register(optimizer, lr));
    }

    /// The guard is used (a backward pass, a step, a `zero_grad`): registers
    /// its series the first time.
    pub(crate) fn used(&mut self, optimizer: &str, lr: f64) {
        if !self.used {
            self.used = true;
            self.handles = Some(Handles::register(optimizer, lr));
        }
    }

    pub(crate) fn backward_pass(&self) {
        if let Some(h) = &self.handles {
            h.backward_passes.increment(1);
        }
    }

    pub(crate) fn zero_grad(&self) {
        if let Some(h) = &self.handles {
            h.zero_grad.increment(1);
        }
    }

    pub(crate) fn anomaly(&self, check: Check) {
        if let Some(h) = &self.handles {
            h.anomalies[check as usize].increment(1);
        }
    }

    pub(crate) fn step(&self, passes: u32, elapsed: Duration, lr: f64) {
        if let Some(h) = &self.handles {
            h.steps.increment(1);
            h.generations.record(f64::from(passes));
            h.duration.record(elapsed.as_secs_f64());
            h.learning_rate.set(lr);
        }
    }

    pub(crate) fn grad_norm(&mut self, norm: f64) {
        if let Some(h) = &mut self.handles {
            let optimizer = &h.optimizer;
            h.grad_norm
                .get_or_insert_with(|| gauge!(GRAD_NORM, "optimizer" => optimizer.clone()))
                .set(norm);
        }
    }
}
