//! gradguard as a drop-in: `Guarded<O>` is a `candle_nn::Optimizer`, changes
//! nothing in the weights, and reports a refused step through candle's error.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap, SGD};
use gradguard::{Check, Error, GuardExt, Guarded, Level};

const STEPS: usize = 50;

/// A two-layer MLP (4 -> 8 -> 3) with fixed, non-trivial initial weights.
fn mlp() -> VarMap {
    let varmap = VarMap::new();
    let dev = Device::Cpu;
    let init = |shape: (usize, usize), phase: f64| {
        let n = shape.0 * shape.1;
        let t = Tensor::arange(0u32, n as u32, &dev)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        ((t * 0.7).unwrap() + phase)
            .unwrap()
            .sin()
            .unwrap()
            .affine(0.5, 0.0)
            .unwrap()
            .reshape(shape)
            .unwrap()
    };
    let mut data = varmap.data().lock().unwrap();
    for (name, t) in [
        ("fc1.weight", init((8, 4), 0.1)),
        ("fc1.bias", init((1, 8), 0.2)),
        ("fc2.weight", init((3, 8), 0.3)),
        ("fc2.bias", init((1, 3), 0.4)),
    ] {
        data.insert(name.to_string(), Var::from_tensor(&t).unwrap());
    }
    drop(data);
    varmap
}

fn var(varmap: &VarMap, name: &str) -> Tensor {
    varmap.data().lock().unwrap()[name].as_tensor().clone()
}

/// The loss of batch `step`: squared error of the MLP against fixed targets.
fn loss(varmap: &VarMap, step: usize) -> Tensor {
    let dev = Device::Cpu;
    let x = Tensor::arange(0u32, 16, &dev)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .affine(0.3, step as f64 * 0.01)
        .unwrap()
        .cos()
        .unwrap()
        .reshape((4, 4))
        .unwrap();
    let h = x
        .matmul(&var(varmap, "fc1.weight").t().unwrap())
        .unwrap()
        .broadcast_add(&var(varmap, "fc1.bias"))
        .unwrap()
        .relu()
        .unwrap();
    let y = h
        .matmul(&var(varmap, "fc2.weight").t().unwrap())
        .unwrap()
        .broadcast_add(&var(varmap, "fc2.bias"))
        .unwrap();
    let target = Tensor::ones((4, 3), DType::F32, &dev).unwrap();
    (y - target).unwrap().sqr().unwrap().mean_all().unwrap()
}

fn weights(varmap: &VarMap) -> Vec<(String, Vec<f32>)> {
    let mut out: Vec<_> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// candle's loop, generic over the optimizer.
fn train_generic<O: Optimizer>(opt: &mut O, varmap: &VarMap) {
    for step in 0..STEPS {
        opt.backward_step(&loss(varmap, step)).unwrap();
    }
}

#[derive(Clone, Copy, Debug)]
enum Style {
    BackwardStep,
    StepWith,
    BackwardStepZeroGrad,
}

fn train_guarded<O: Optimizer>(opt: &mut Guarded<O>, varmap: &VarMap, style: Style) {
    match style {
        Style::BackwardStep => train_generic(opt, varmap),
        Style::StepWith => {
            for step in 0..STEPS {
                let r = opt.step_with(&loss(varmap, step).backward().unwrap());
                assert!(r.unwrap().is_clean());
            }
        }
        Style::BackwardStepZeroGrad => {
            for step in 0..STEPS {
                opt.backward(&loss(varmap, step)).unwrap();
                assert!(opt.step().unwrap().is_clean());
                opt.zero_grad();
            }
        }
    }
    assert_eq!(opt.steps(), STEPS as u64);
}

fn transparent<O: Optimizer>(config: impl Fn() -> O::Config) {
    let plain = mlp();
    let mut opt = O::new(plain.all_vars(), config()).unwrap();
    train_generic(&mut opt, &plain);
    let expected = weights(&plain);
    assert_ne!(expected, weights(&mlp()), "training moved the weights");
    for style in [
        Style::BackwardStep,
        Style::StepWith,
        Style::BackwardStepZeroGrad,
    ] {
        let guarded = mlp();
        let mut opt = O::new(guarded.all_vars(), config())
            .unwrap()
            .guarded(&guarded);
        train_guarded(&mut opt, &guarded, style);
        assert!(
            weights(&guarded) == expected,
            "{style:?}: weights differ from the plain optimizer's"
        );
    }
}

#[test]
fn guarded_sgd_gives_bit_identical_weights_in_every_style() {
    transparent::<SGD>(|| 0.05);
}

#[test]
fn guarded_adamw_gives_bit_identical_weights_in_every_style() {
    transparent::<AdamW>(|| ParamsAdamW {
        lr: 0.01,
        ..Default::default()
    });
}

#[test]
fn code_generic_over_optimizer_takes_a_guard_built_by_the_trait() {
    let (plain, guarded) = (mlp(), mlp());
    let mut p = SGD::new(plain.all_vars(), 0.05).unwrap();
    train_generic(&mut p, &plain);
    let mut g = <Guarded<SGD> as Optimizer>::new(guarded.all_vars(), 0.05).unwrap();
    assert_eq!(g.param_names().len(), 4);
    train_generic(&mut g, &guarded);
    assert!(weights(&guarded) == weights(&plain));
    assert_eq!((g.steps(), g.generation()), (STEPS as u64, STEPS as u64));
}

#[test]
fn learning_rate_delegates_through_the_trait() {
    let varmap = mlp();
    let mut g = SGD::new(varmap.all_vars(), 0.05).unwrap().guarded(&varmap);
    Optimizer::set_learning_rate(&mut g, 0.2);
    assert_eq!(Optimizer::learning_rate(&g), 0.2);
    assert_eq!(g.inner().learning_rate(), 0.2);
}

#[test]
fn a_denied_trait_step_is_a_candle_error_holding_the_anomaly() {
    let varmap = mlp();
    let mut opt = SGD::new(varmap.all_vars(), 0.05)
        .unwrap()
        .guarded(&varmap)
        .name("drop-in")
        .level(Check::Stale, Level::Deny);
    let grads = loss(&varmap, 0).backward().unwrap();
    Optimizer::step(&mut opt, &grads).unwrap();
    let before = weights(&varmap);
    let err: candle_core::Error = Optimizer::step(&mut opt, &grads).unwrap_err();
    let anomaly = Error::denied_in(&err).expect("the anomaly inside the candle error");
    assert_eq!((anomaly.check, anomaly.step), (Check::Stale, 2));
    assert_eq!(anomaly.optimizer, "drop-in");
    assert_eq!(
        anomaly.params,
        ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    );
    // Plain downcasting works too.
    let candle_core::Error::WrappedContext { wrapped, .. } = &err else {
        panic!("not wrapped: {err:?}")
    };
    assert!(matches!(
        wrapped.downcast_ref::<Error>(),
        Some(Error::Denied(_))
    ));
    assert_eq!(weights(&varmap), before, "a refused step changes nothing");
}
