//! The cost of the guard: one training step of the seed's Model(5) at batch
//! 300 on the CPU, plain SGD against `Guarded` SGD in both gradient styles.
//!
//! The variants run round-robin (one step each per round) so that machine
//! noise hits them alike; the report is the median step time of each and its
//! ratio to the plain optimizer. `cargo bench --bench step_overhead -- ROUNDS`.

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candle_nn::{Optimizer, SGD};
use gradguard::exporter::PrometheusConfig;
use gradguard::Guarded;
use gradguard_mnist::{Mnist, Model};

type StepFn = Box<dyn FnMut(&Tensor, &Tensor) -> candle_core::Result<()>>;

struct Variant {
    name: &'static str,
    step: StepFn,
    times: Vec<Duration>,
}

fn loss(model: &Model, x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::loss::cross_entropy(&model.forward_t(x, true)?, y)
}

fn variants() -> candle_core::Result<Vec<Variant>> {
    let dev = Device::Cpu;
    let (plain_model, plain_vars) = Model::seeded(5, 0, &dev)?;
    let mut plain = SGD::new(plain_vars.all_vars(), 0.1)?;
    let (with_model, with_vars) = Model::seeded(5, 0, &dev)?;
    let mut with = Guarded::new(SGD::new(with_vars.all_vars(), 0.1)?).with_varmap(&with_vars);
    let (torch_model, torch_vars) = Model::seeded(5, 0, &dev)?;
    let mut torch = Guarded::new(SGD::new(torch_vars.all_vars(), 0.1)?).with_varmap(&torch_vars);
    // The same, with a Prometheus recorder collecting every metric.
    let recorder = PrometheusConfig::new().label("run", "bench").recorder();
    let (rec_model, rec_vars) = Model::seeded(5, 0, &dev)?;
    let mut rec = metrics::with_local_recorder(&recorder, || -> candle_core::Result<_> {
        Ok(Guarded::new(SGD::new(rec_vars.all_vars(), 0.1)?)
            .with_varmap(&rec_vars)
            .name("bench"))
    })?;
    let variant = |name, step| Variant {
        name,
        step,
        times: Vec::new(),
    };
    Ok(vec![
        variant(
            "plain SGD: backward_step",
            Box::new(move |x, y| plain.backward_step(&loss(&plain_model, x, y)?)),
        ),
        variant(
            "Guarded: step_with(&loss.backward())",
            Box::new(move |x, y| {
                let grads = loss(&with_model, x, y)?.backward()?;
                with.step_with(&grads).map_err(candle_core::Error::wrap)?;
                Ok(())
            }),
        ),
        variant(
            "Guarded: backward + step + zero_grad",
            Box::new(move |x, y| {
                torch
                    .backward(&loss(&torch_model, x, y)?)
                    .map_err(candle_core::Error::wrap)?;
                torch.step().map_err(candle_core::Error::wrap)?;
                torch.zero_grad();
                Ok(())
            }),
        ),
        variant(
            "Guarded + Prometheus recorder: step_with",
            Box::new(move |x, y| {
                let grads = loss(&rec_model, x, y)?.backward()?;
                metrics::with_local_recorder(&recorder, || rec.step_with(&grads))
                    .map_err(candle_core::Error::wrap)?;
                Ok(())
            }),
        ),
    ])
}

/// An optimizer that applies nothing: what is left of a step is the guard.
struct Noop;

impl Optimizer for Noop {
    type Config = ();
    fn new(_: Vec<candle_core::Var>, _: ()) -> candle_core::Result<Self> {
        Ok(Noop)
    }
    fn step(&mut self, _: &candle_core::backprop::GradStore) -> candle_core::Result<()> {
        Ok(())
    }
    fn learning_rate(&self) -> f64 {
        0.1
    }
    fn set_learning_rate(&mut self, _: f64) {}
}

/// The guard's own cost per step, in microseconds: a real GradStore of the
/// seed model (fresh tensor ids each time, as after a backward pass) through
/// a no-op inner optimizer, guarded or not, with or without a recorder.
fn guard_cost(x: &Tensor, y: &Tensor) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let (model, varmap) = Model::seeded(5, 0, &dev)?;
    let grads = loss(&model, x, y)?.backward()?;
    let vars = varmap.all_vars();
    let fresh = || -> candle_core::Result<candle_core::backprop::GradStore> {
        let mut store = candle_core::backprop::GradStore::default();
        for v in &vars {
            if let Some(g) = grads.get(v) {
                store.insert(v, g.copy()?);
            }
        }
        Ok(store)
    };
    let n = 2000;
    let time = |f: &mut dyn FnMut() -> candle_core::Result<()>| -> candle_core::Result<f64> {
        let start = Instant::now();
        for _ in 0..n {
            f()?;
        }
        Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
    };
    let wrap = candle_core::Error::wrap;
    let mut plain = Noop;
    let base = time(&mut || plain.step(&fresh()?))?;
    let mut guarded = Guarded::new(Noop).with_varmap(&varmap);
    let with = time(&mut || guarded.step_with(&fresh()?).map(drop).map_err(wrap))?;
    let mut torch = Guarded::new(Noop).with_varmap(&varmap);
    let torch_style = time(&mut || {
        torch.accumulate(fresh()?).map_err(wrap)?;
        torch.step().map_err(wrap)?;
        torch.zero_grad();
        Ok(())
    })?;
    let recorder = PrometheusConfig::new().label("run", "bench").recorder();
    let mut recorded = Guarded::new(Noop).with_varmap(&varmap);
    let rec = time(&mut || {
        metrics::with_local_recorder(&recorder, || recorded.step_with(&fresh()?).map(drop))
            .map_err(wrap)
    })?;
    println!(
        "\nthe guard's own cost per step ({n} steps, no-op inner optimizer, same GradStore work):"
    );
    for (name, us) in [
        ("step_with", with - base),
        ("accumulate + step + zero_grad", torch_style - base),
        ("step_with, Prometheus recorder", rec - base),
    ] {
        println!("{name:<40} {us:>7.1} µs per step");
    }
    Ok(())
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() -> candle_core::Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(60);
    let data = Mnist::synthetic(3000, 1, 0, &Device::Cpu)?;
    let batches: Vec<(Tensor, Tensor)> = (0..10)
        .map(|i| {
            Ok((
                data.train_images.narrow(0, i * 300, 300)?,
                data.train_labels.narrow(0, i * 300, 300)?,
            ))
        })
        .collect::<candle_core::Result<_>>()?;
    let mut variants = variants()?;
    for round in 0..rounds + 3 {
        let (x, y) = &batches[round % batches.len()];
        // Rotate the order each round so no variant always runs first.
        let n = variants.len();
        for k in 0..n {
            let v = &mut variants[(round + k) % n];
            let start = Instant::now();
            (v.step)(x, y)?;
            if round >= 3 {
                v.times.push(start.elapsed());
            }
        }
    }
    println!("one training step, seed Model(5), batch 300, CPU, {rounds} rounds round-robin");
    let mut base = None;
    for v in &mut variants {
        let m = median(&mut v.times);
        let base = *base.get_or_insert(m);
        println!(
            "{:<40} median {:>8.2} ms   ratio {:.4}",
            v.name,
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() / base.as_secs_f64()
        );
    }
    guard_cost(&batches[0].0, &batches[0].1)
}
