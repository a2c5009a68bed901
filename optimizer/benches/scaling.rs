//! How the guard's cost grows with the model: the guard's own time per step
//! as the number of watched variables grows (20 to 10,000) and as backward
//! passes per step grow (1 to 64, declared with `accumulation_steps`), paired
//! in one run against plain candle doing the same work, plus what the guard
//! keeps in memory.
//!
//! `cargo bench -p gradguard --bench scaling --features prometheus [-- ROUNDS]`
//!
//! Every variant runs round-robin with its plain twin (one step each per
//! round) on identical fresh `GradStore`s, so machine noise hits both alike;
//! the figures are medians over the rounds. "Own time" is the guard's step
//! minus the plain step on the same stores, through an inner optimizer that
//! applies nothing (so the difference is the guard alone). "candle step" is a
//! real CPU training step of the same model (forward, backward, SGD), the
//! scale the guard's time is compared against.

use std::time::{Duration, Instant};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Init, Optimizer, VarMap, SGD};
use gradguard::exporter::PrometheusConfig;
use gradguard::Guarded;

/// An optimizer that applies nothing: what is left of a step is the guard.
struct Noop;

impl Optimizer for Noop {
    type Config = ();
    fn new(_: Vec<Var>, _: ()) -> candle_core::Result<Self> {
        Ok(Noop)
    }
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        std::hint::black_box(grads);
        Ok(())
    }
    fn learning_rate(&self) -> f64 {
        0.1
    }
    fn set_learning_rate(&mut self, _: f64) {}
}

/// `n` small variables (8 floats each) in a `VarMap`, as a model with many
/// layers has.
struct Model {
    varmap: VarMap,
    vars: Vec<Var>,
    x: Tensor,
}

impl Model {
    fn new(n: usize) -> candle_core::Result<Self> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        for i in 0..n {
            varmap.get(
                8,
                &format!("layer{i:05}.weight"),
                Init::Const(0.5),
                DType::F32,
                &dev,
            )?;
        }
        let vars = varmap.all_vars();
        let x = Tensor::arange(0f32, 8., &dev)?;
        Ok(Self { varmap, vars, x })
    }

    /// sum over variables of sum(v * x): one gradient per variable.
    fn loss(&self) -> candle_core::Result<Tensor> {
        let terms: Vec<Tensor> = self
            .vars
            .iter()
            .map(|v| v.as_tensor().mul(&self.x)?.sum_all())
            .collect::<candle_core::Result<_>>()?;
        Tensor::stack(&terms, 0)?.sum_all()
    }

    /// A store as `backward()` leaves it, made of fresh tensors (ids the
    /// guard never saw), without running a graph: the same work for both
    /// twins, outside the timed region.
    fn fresh_store(&self) -> candle_core::Result<GradStore> {
        let mut store = GradStore::default();
        for v in &self.vars {
            store.insert(v.as_tensor(), self.x.copy()?);
        }
        Ok(store)
    }
}

fn median(times: &mut [Duration]) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64()
}

/// One side of a pair: `Some(store)` is a backward pass's store reaching it,
/// `None` ends the step.
type Twin<'a> = &'a mut dyn FnMut(Option<&GradStore>) -> candle_core::Result<()>;

/// Times `plain` and `guarded` round-robin over `rounds` steps of `passes`
/// passes each. Every pass gets a fresh store made just before it, untimed,
/// as a backward pass leaves its gradients just before the optimizer reads
/// them. Returns the two medians in seconds.
fn paired<'a>(
    model: &Model,
    rounds: usize,
    passes: usize,
    plain: Twin<'a>,
    guarded: Twin<'a>,
) -> candle_core::Result<(f64, f64)> {
    let mut times = [Vec::new(), Vec::new()];
    let mut twins = [plain, guarded];
    for round in 0..rounds + 2 {
        for k in 0..2 {
            let side = (round + k) % 2;
            let twin = &mut twins[side];
            let mut took = Duration::ZERO;
            for _ in 0..passes {
                let store = model.fresh_store()?;
                let start = Instant::now();
                twin(Some(&store))?;
                took += start.elapsed();
            }
            let start = Instant::now();
            twin(None)?;
            took += start.elapsed();
            if round >= 2 {
                times[side].push(took);
            }
        }
    }
    let [a, b] = &mut times;
    Ok((median(a), median(b)))
}

fn wrap(e: gradguard::Error) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// A real CPU training step of the model: forward, backward, SGD.
fn candle_step(model: &Model, rounds: usize) -> candle_core::Result<f64> {
    let mut sgd = SGD::new(model.vars.clone(), 1e-3)?;
    let mut times = Vec::new();
    for _ in 0..rounds.clamp(3, 20) {
        let start = Instant::now();
        sgd.backward_step(&model.loss()?)?;
        times.push(start.elapsed());
    }
    Ok(median(&mut times))
}

fn main() -> candle_core::Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let recorder = PrometheusConfig::new().label("run", "bench").recorder();
    println!("the guard's own time per step, paired against plain candle on the same fresh GradStores ({rounds} rounds, medians)");
    println!(
        "{:>7}  {:>11}  {:>11}  {:>11}  {:>11}  {:>11}  {:>9}  {:>11}",
        "vars",
        "step_with",
        "bwd/step/zg",
        "+recorder",
        "ns/var",
        "candle step",
        "% of step",
        "memory"
    );
    for n in [20usize, 200, 2_000, 10_000] {
        let model = Model::new(n)?;
        let r = if n >= 10_000 { rounds / 4 } else { rounds }.max(10);

        let mut plain = Noop;
        let mut guard = Guarded::<Noop>::from_varmap(&model.varmap, ())?;
        let (p, g) = paired(
            &model,
            r,
            1,
            &mut |s| s.map_or(Ok(()), |s| plain.step(s)),
            &mut |s| s.map_or(Ok(()), |s| guard.step_with(s).map(drop).map_err(wrap)),
        )?;
        let own_with = g - p;

        // PyTorch style against the same accumulation written by hand.
        let mut hand = HandAccumulation::new(&model);
        let mut torch = Guarded::<Noop>::from_varmap(&model.varmap, ())?;
        let (p, g) = paired(&model, r, 1, &mut |s| hand.run(s), &mut |s| {
            torch_style(&mut torch, s)
        })?;
        let own_torch = g - p;

        let mut plain = Noop;
        let mut recorded = metrics::with_local_recorder(&recorder, || {
            Guarded::<Noop>::from_varmap(&model.varmap, ()).map(|g| g.name("bench"))
        })?;
        let (p, g) = paired(
            &model,
            r,
            1,
            &mut |s| s.map_or(Ok(()), |s| plain.step(s)),
            &mut |s| {
                metrics::with_local_recorder(&recorder, || {
                    s.map_or(Ok(()), |s| recorded.step_with(s).map(drop))
                })
                .map_err(wrap)
            },
        )?;
        let own_rec = g - p;

        let step = candle_step(&model, r)?;
        let worst = own_with.max(own_torch).max(own_rec);
        println!(
            "{n:>7}  {:>11}  {:>11}  {:>11}  {:>11.0}  {:>11}  {:>8.2}%  {:>11}",
            fmt_time(own_with),
            fmt_time(own_torch),
            fmt_time(own_rec),
            worst * 1e9 / n as f64,
            fmt_time(step),
            100.0 * worst / step,
            fmt_bytes(guard.bookkeeping_bytes()),
        );
    }

    println!("\npasses per step (accumulation_steps(k): k accumulate, step, zero_grad), 2,000 variables, against the same accumulation by hand");
    println!(
        "{:>7}  {:>11}  {:>11}  {:>11}",
        "passes", "own time", "per pass", "ns/var/pass"
    );
    let n = 2_000;
    let model = Model::new(n)?;
    for k in [1usize, 4, 16, 64] {
        let mut hand = HandAccumulation::new(&model);
        let mut torch =
            Guarded::<Noop>::from_varmap(&model.varmap, ())?.accumulation_steps(k as u32);
        let r = (rounds / k).max(10);
        let (p, g) = paired(&model, r, k, &mut |s| hand.run(s), &mut |s| {
            torch_style(&mut torch, s)
        })?;
        let own = g - p;
        println!(
            "{k:>7}  {:>11}  {:>11}  {:>11.0}",
            fmt_time(own),
            fmt_time(own / k as f64),
            own * 1e9 / (n * k) as f64
        );
    }
    Ok(())
}

/// A pass is `accumulate`; the end of a step is `step` then `zero_grad`.
fn torch_style(guard: &mut Guarded<Noop>, store: Option<&GradStore>) -> candle_core::Result<()> {
    match store {
        Some(s) => guard.accumulate(s).map(drop).map_err(wrap),
        None => {
            guard.step().map_err(wrap)?;
            guard.zero_grad();
            Ok(())
        }
    }
}

/// What a candle user writes without the guard to accumulate passes: sum each
/// variable's gradients; at the step, build a store, step, start again.
struct HandAccumulation {
    vars: Vec<Var>,
    sums: Vec<Option<Tensor>>,
    inner: Noop,
}

impl HandAccumulation {
    fn new(model: &Model) -> Self {
        Self {
            vars: model.vars.clone(),
            sums: vec![None; model.vars.len()],
            inner: Noop,
        }
    }

    fn run(&mut self, store: Option<&GradStore>) -> candle_core::Result<()> {
        if let Some(s) = store {
            for (v, sum) in self.vars.iter().zip(&mut self.sums) {
                if let Some(g) = s.get(v) {
                    *sum = Some(match sum.take() {
                        Some(old) => old.add(g)?,
                        None => g.clone(),
                    });
                }
            }
            return Ok(());
        }
        let mut store = GradStore::default();
        for (v, sum) in self.vars.iter().zip(&mut self.sums) {
            if let Some(g) = sum.take() {
                store.insert(v.as_tensor(), g);
            }
        }
        self.inner.step(&store)
    }
}

fn fmt_time(s: f64) -> String {
    if s.abs() < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else {
        format!("{:.2} ms", s * 1e3)
    }
}

fn fmt_bytes(b: usize) -> String {
    if b < 1 << 20 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    }
}
