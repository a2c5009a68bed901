//! Each check, each level, each gradient style, on real candle variables.

mod common;

use candle_core::Tensor;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use common::{sgd, Toy};
use gradguard::{Check, Error, Guarded, Level};

#[test]
fn missing_zero_grad_is_accumulated_at_step_2() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    opt.backward(&toy.loss(true, true)).unwrap();
    assert!(opt.step().unwrap().is_clean());
    opt.backward(&toy.loss(true, true)).unwrap();
    let report = opt.step().unwrap();
    assert_eq!(report.step, 2);
    assert_eq!(report.generations, 2);
    let a = report
        .anomaly(Check::Accumulated)
        .expect("accumulated at step 2");
    assert_eq!(a.params, ["layer.a", "layer.b"]);
    assert_eq!((a.generations, a.expected, a.step), (2, 1, 2));
    assert_eq!(a.level, Level::Warn);
    assert_eq!(report.anomalies.len(), 1);
}

#[test]
fn backward_sums_into_the_guards_buffer_like_pytorch_grad() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    opt.backward(&toy.loss(true, false)).unwrap();
    opt.backward(&toy.loss(true, false)).unwrap();
    let g: Vec<f32> = opt.grad(&toy.a).unwrap().to_vec1().unwrap();
    assert_eq!(g, [2., 4., 6.]);
    opt.zero_grad();
    assert!(opt.grad(&toy.a).is_none());
}

#[test]
fn backward_keeps_only_parameter_gradients() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    // The input is a variable too: its gradient must not be kept.
    let input = candle_core::Var::from_tensor(&toy.x).unwrap();
    let loss = toy
        .a
        .as_tensor()
        .mul(input.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap();
    opt.backward(&loss).unwrap();
    assert!(opt.grad(&toy.a).is_some());
    assert!(opt.grad(&input).is_none());
}

#[test]
fn zero_grad_after_each_step_is_clean() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    for step in 1..=5 {
        opt.backward(&toy.loss(true, true)).unwrap();
        let r = opt.step().unwrap();
        assert!(r.is_clean(), "step {step}: {:?}", r.anomalies);
        assert_eq!(r.generations, 1);
        opt.zero_grad();
    }
    assert_eq!(opt.steps(), 5);
    assert_eq!(opt.generation(), 5);
}

#[test]
fn step_twice_without_backward_is_stale() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    opt.backward(&toy.loss(true, true)).unwrap();
    opt.step().unwrap();
    let r = opt.step().unwrap();
    let s = r.anomaly(Check::Stale).expect("stale");
    assert_eq!(s.params, ["layer.a", "layer.b"]);
    assert_eq!(s.generations, 0);
    assert!(r.anomaly(Check::Accumulated).is_none());
}

#[test]
fn an_unused_parameter_keeping_an_old_gradient_is_stale() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    opt.backward(&toy.loss(true, true)).unwrap();
    opt.step().unwrap();
    opt.backward(&toy.loss(true, false)).unwrap();
    let r = opt.step().unwrap();
    assert_eq!(r.anomaly(Check::Stale).unwrap().params, ["layer.b"]);
    assert_eq!(r.anomaly(Check::Accumulated).unwrap().params, ["layer.a"]);
}

#[test]
fn same_grad_store_twice_is_stale() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    let grads = toy.loss(true, true).backward().unwrap();
    assert!(opt.step_with(&grads).unwrap().is_clean());
    let r = opt.step_with(&grads).unwrap();
    assert_eq!(
        r.anomaly(Check::Stale).unwrap().params,
        ["layer.a", "layer.b"]
    );
    assert_eq!(r.step, 2);
}

#[test]
fn fresh_grad_stores_are_clean() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    for _ in 0..4 {
        let grads = toy.loss(true, true).backward().unwrap();
        let r = opt.step_with(&grads).unwrap();
        assert!(r.is_clean(), "{:?}", r.anomalies);
        assert_eq!(r.generations, 1);
    }
    assert_eq!(opt.generation(), 4);
}

#[test]
fn step_with_applies_exactly_the_store() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    let grads = toy.loss(true, false).backward().unwrap();
    opt.step_with(&grads).unwrap();
    // a -= 0.1 * x
    assert_eq!(toy.values().0, [0.9, 0.8, 0.7]);
}

#[test]
fn an_unused_parameter_is_missing_by_name() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    opt.backward(&toy.loss(true, false)).unwrap();
    let r = opt.step().unwrap();
    let m = r.anomaly(Check::Missing).expect("missing");
    assert_eq!(m.params, ["layer.b"]);
    let grads = toy.loss(false, true).backward().unwrap();
    let r = opt.step_with(&grads).unwrap();
    assert_eq!(r.anomaly(Check::Missing).unwrap().params, ["layer.a"]);
}

#[test]
fn batchnorm_running_statistics_are_never_missing() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    assert!(opt.param_names().contains(&"bn.running_mean".to_string()));
    opt.backward(&toy.loss(true, true)).unwrap();
    assert!(opt.step().unwrap().is_clean());
}

#[test]
fn declared_buffers_are_never_missing() {
    let toy = Toy::new();
    let mut opt = sgd(&toy).buffers(["layer.b"]);
    opt.backward(&toy.loss(true, false)).unwrap();
    assert!(opt.step().unwrap().is_clean());
}

#[test]
fn intentional_accumulation_of_four_passes_is_clean() {
    let toy = Toy::new();
    let mut opt = sgd(&toy).accumulation_steps(4);
    for _ in 0..3 {
        for _ in 0..4 {
            opt.backward(&toy.loss(true, true)).unwrap();
        }
        let r = opt.step().unwrap();
        assert!(r.is_clean(), "{:?}", r.anomalies);
        assert_eq!(r.generations, 4);
        opt.zero_grad();
    }
}

#[test]
fn five_passes_for_four_declared_is_accumulated_and_three_is_short() {
    let toy = Toy::new();
    let mut opt = sgd(&toy).accumulation_steps(4);
    for _ in 0..5 {
        opt.backward(&toy.loss(true, true)).unwrap();
    }
    let r = opt.step().unwrap();
    let a = r.anomaly(Check::Accumulated).unwrap();
    assert_eq!((a.generations, a.expected), (5, 4));
    assert!(a.to_string().contains("raise accumulation_steps"));
    opt.zero_grad();
    for _ in 0..3 {
        opt.backward(&toy.loss(true, true)).unwrap();
    }
    let r = opt.step().unwrap();
    let s = r.anomaly(Check::ShortAccumulation).unwrap();
    assert_eq!((s.generations, s.expected), (3, 4));
    assert_eq!(s.params, ["layer.a", "layer.b"]);
}

#[test]
fn denied_step_leaves_sgd_parameters_untouched() {
    let toy = Toy::new();
    let mut opt = sgd(&toy).level(Check::Accumulated, Level::Deny);
    opt.backward(&toy.loss(true, true)).unwrap();
    opt.step().unwrap();
    let after_step_1 = toy.values();
    opt.backward(&toy.loss(true, true)).unwrap();
    let err = opt.step().unwrap_err();
    let Error::Denied(a) = &err else {
        panic!("expected Denied, got {err:?}")
    };
    assert_eq!(a.check, Check::Accumulated);
    assert_eq!(a.step, 2);
    assert_eq!(a.level, Level::Deny);
    assert_eq!(toy.values(), after_step_1);
    assert_eq!(opt.steps(), 1);
    assert!(err
        .to_string()
        .starts_with("step 2 denied: accumulated gradients"));
    // Recover: reset and step again; this is step 2.
    opt.zero_grad();
    opt.backward(&toy.loss(true, true)).unwrap();
    assert_eq!(opt.step().unwrap().step, 2);
}

fn adamw(toy: &Toy) -> Guarded<AdamW> {
    let params = ParamsAdamW {
        lr: 0.05,
        ..Default::default()
    };
    Guarded::new(AdamW::new(toy.varmap.all_vars(), params).unwrap()).with_varmap(&toy.varmap)
}

#[test]
fn denied_step_leaves_adamw_moments_and_step_counter_untouched() {
    // Twin runs from the same start: one sees a denied step in the middle,
    // the other does not. If the denied step had touched AdamW's moments or
    // its step counter, the next real step would differ.
    let (denied, plain) = (Toy::new(), Toy::new());
    let mut d = adamw(&denied).level_all(Level::Deny);
    let mut p = adamw(&plain);
    for (toy, opt) in [(&denied, &mut d), (&plain, &mut p)] {
        opt.step_with(&toy.loss(true, true).backward().unwrap())
            .unwrap();
    }
    let grads = denied.loss(true, true).backward().unwrap();
    d.step_with(&grads).unwrap();
    p.step_with(&plain.loss(true, true).backward().unwrap())
        .unwrap();
    assert!(matches!(d.step_with(&grads), Err(Error::Denied(_))));
    for (toy, opt) in [(&denied, &mut d), (&plain, &mut p)] {
        opt.step_with(&toy.loss(true, true).backward().unwrap())
            .unwrap();
    }
    assert_eq!(denied.values(), plain.values());
    assert_eq!(d.steps(), p.steps());
}

#[test]
fn allow_counts_in_the_report_without_refusing() {
    let toy = Toy::new();
    let mut opt = sgd(&toy).level_all(Level::Allow);
    opt.backward(&toy.loss(true, true)).unwrap();
    opt.step().unwrap();
    opt.backward(&toy.loss(true, true)).unwrap();
    let r = opt.step().unwrap();
    assert_eq!(r.anomaly(Check::Accumulated).unwrap().level, Level::Allow);
}

#[test]
fn nonfinite_is_off_by_default_and_sampled_when_enabled() {
    let toy = Toy::new();
    let nan_loss = || {
        let nan = Tensor::new(&[f32::NAN, 1., 1.], &candle_core::Device::Cpu).unwrap();
        toy.a.as_tensor().mul(&nan).unwrap().sum_all().unwrap() + toy.loss(false, true)
    };
    let mut off = sgd(&toy).accumulation_steps(1);
    let r = off
        .step_with(&nan_loss().unwrap().backward().unwrap())
        .unwrap();
    assert!(r.is_clean(), "{:?}", r.anomalies);
    let mut on = sgd(&toy)
        .check_nonfinite(2)
        .level(Check::NonFinite, Level::Warn);
    let mut found = Vec::new();
    for _ in 0..4 {
        let r = on
            .step_with(&nan_loss().unwrap().backward().unwrap())
            .unwrap();
        if let Some(a) = r.anomaly(Check::NonFinite) {
            assert_eq!(a.params, ["layer.a"]);
            found.push(r.step);
        }
    }
    assert_eq!(found, [2, 4]);
}

#[test]
fn nonfinite_deny_refuses_the_step() {
    let toy = Toy::new();
    let mut opt = sgd(&toy)
        .check_nonfinite(1)
        .level(Check::NonFinite, Level::Deny);
    let before = toy.values();
    let inf = Tensor::new(&[f32::INFINITY, 1., 1.], &candle_core::Device::Cpu).unwrap();
    let loss =
        (toy.a.as_tensor().mul(&inf).unwrap().sum_all().unwrap() + toy.loss(false, true)).unwrap();
    let err = opt.step_with(&loss.backward().unwrap()).unwrap_err();
    assert_eq!(err.anomaly().unwrap().check, Check::NonFinite);
    assert_eq!(toy.values(), before);
}

#[test]
fn grad_norm_is_sampled_every_n_steps() {
    let toy = Toy::new();
    let mut opt = sgd(&toy).sample_grad_norm(2);
    let r1 = opt
        .step_with(&toy.loss(true, false).backward().unwrap())
        .unwrap();
    let r2 = opt
        .step_with(&toy.loss(true, false).backward().unwrap())
        .unwrap();
    assert_eq!(r1.grad_norm, None);
    // |x| = sqrt(1 + 4 + 9)
    assert!((r2.grad_norm.unwrap() - 14f64.sqrt()).abs() < 1e-5);
}

#[test]
fn averaging_divides_accumulated_gradients_by_the_pass_count() {
    let (summed, averaged) = (Toy::new(), Toy::new());
    let mut s = sgd(&summed).accumulation_steps(2);
    let mut m = sgd(&averaged)
        .accumulation_steps(2)
        .average_accumulated(true);
    for (toy, opt) in [(&summed, &mut s), (&averaged, &mut m)] {
        opt.backward(&toy.loss(true, false)).unwrap();
        opt.backward(&toy.loss(true, false)).unwrap();
        opt.step().unwrap();
    }
    // sum: a -= 0.1 * 2x; mean: a -= 0.1 * x
    assert_eq!(summed.values().0, [0.8, 0.6, 0.39999998]);
    assert_eq!(averaged.values().0, [0.9, 0.8, 0.7]);
}

#[test]
fn a_guard_without_parameters_says_how_to_register_them() {
    let toy = Toy::new();
    let mut opt = Guarded::new(candle_nn::SGD::new(toy.varmap.all_vars(), 0.1).unwrap());
    let err = opt.backward(&toy.loss(true, true)).unwrap_err();
    assert!(matches!(err, Error::NoParameters));
    assert!(err.to_string().contains("with_varmap"));
}

#[test]
fn with_vars_names_parameters_in_order() {
    let toy = Toy::new();
    let mut opt = Guarded::new(candle_nn::SGD::new(vec![], 0.1).unwrap())
        .with_vars([toy.a.clone(), toy.b.clone()]);
    opt.backward(&toy.loss(false, true)).unwrap();
    let r = opt.step().unwrap();
    assert_eq!(r.anomaly(Check::Missing).unwrap().params, ["param0"]);
}

#[test]
fn learning_rate_passes_through() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    assert_eq!(opt.learning_rate(), 0.1);
    opt.set_learning_rate(0.01);
    assert_eq!(opt.inner().learning_rate(), 0.01);
}
