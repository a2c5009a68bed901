//! Each check, each level, each gradient style, on real candle variables.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap, SGD};
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
    assert_eq!(report.passes, 2);
    let a = report
        .anomaly(Check::Accumulated)
        .expect("accumulated at step 2");
    assert_eq!(a.params, ["layer.a", "layer.b"]);
    assert_eq!((a.passes, a.reapplied, a.declared, a.step), (2, 1, None, 2));
    assert!(a
        .to_string()
        .contains("2 backward passes, 1 of which an earlier step already applied"));
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
        assert_eq!(r.passes, 1);
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
    assert_eq!((s.passes, s.reapplied), (1, 1));
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
        assert_eq!(r.passes, 1);
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
        assert_eq!(r.passes, 4);
        opt.zero_grad();
    }
}

#[test]
fn five_passes_for_four_declared_is_excess_and_three_is_short() {
    let toy = Toy::new();
    let mut opt = sgd(&toy).accumulation_steps(4);
    for _ in 0..5 {
        opt.backward(&toy.loss(true, true)).unwrap();
    }
    let r = opt.step().unwrap();
    assert_eq!(r.anomalies.len(), 1, "{:?}", r.anomalies);
    let a = r.anomaly(Check::ExcessAccumulation).unwrap();
    assert_eq!((a.passes, a.declared), (5, Some(4)));
    assert_eq!(a.params, ["layer.a", "layer.b"]);
    assert!(a.to_string().contains("raise accumulation_steps"));
    opt.zero_grad();
    for _ in 0..3 {
        opt.backward(&toy.loss(true, true)).unwrap();
    }
    let r = opt.step().unwrap();
    let s = r.anomaly(Check::ShortAccumulation).unwrap();
    assert_eq!((s.passes, s.declared), (3, Some(4)));
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

#[test]
fn two_losses_before_one_step_like_dcgan_are_clean() {
    // errD_real.backward(); errD_fake.backward(); optimizerD.step(); zero_grad
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    for _ in 0..3 {
        opt.backward(&toy.loss(true, true)).unwrap();
        opt.backward(&toy.loss(true, true)).unwrap();
        let r = opt.step().unwrap();
        assert!(r.is_clean(), "{:?}", r.anomalies);
        assert_eq!(r.passes, 2);
        opt.zero_grad();
    }
}

#[test]
fn an_auxiliary_head_with_declared_two_passes_is_clean() {
    // The main loss reaches a and b, the auxiliary loss only a: b gets one
    // pass of the two, and that is correct code.
    let toy = Toy::new();
    let mut opt = sgd(&toy).accumulation_steps(2);
    for _ in 0..3 {
        opt.backward(&toy.loss(true, true)).unwrap();
        opt.backward(&toy.loss(true, false)).unwrap();
        assert_eq!(opt.passes_since_reset(), 2);
        let r = opt.step().unwrap();
        assert!(r.is_clean(), "{:?}", r.anomalies);
        opt.zero_grad();
    }
}

#[test]
fn a_missing_zero_grad_with_two_losses_per_step_is_accumulated() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    opt.backward(&toy.loss(true, true)).unwrap();
    opt.backward(&toy.loss(true, false)).unwrap();
    assert!(opt.step().unwrap().is_clean());
    opt.backward(&toy.loss(true, true)).unwrap();
    let r = opt.step().unwrap();
    let a = r.anomaly(Check::Accumulated).unwrap();
    assert_eq!(a.params, ["layer.a", "layer.b"]);
    assert_eq!((a.passes, a.reapplied), (3, 2));
}

#[test]
fn store_a_then_b_then_a_again_is_stale() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    let a = toy.loss(true, true).backward().unwrap();
    let b = toy.loss(true, true).backward().unwrap();
    assert!(opt.step_with(&a).unwrap().is_clean());
    assert!(opt.step_with(&b).unwrap().is_clean());
    let r = opt.step_with(&a).unwrap();
    let s = r.anomaly(Check::Stale).expect("A applied again is stale");
    assert_eq!(s.params, ["layer.a", "layer.b"]);
    assert_eq!(r.anomalies.len(), 1);
    assert_eq!(opt.generation(), 2, "A again is no new pass");
}

#[test]
fn a_store_accumulated_again_after_its_step_is_stale() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    let a = toy.loss(true, true).backward().unwrap();
    opt.accumulate(&a).unwrap();
    assert!(opt.step().unwrap().is_clean());
    opt.zero_grad();
    opt.accumulate(&a).unwrap();
    let r = opt.step().unwrap();
    assert_eq!(
        r.anomaly(Check::Stale).unwrap().params,
        ["layer.a", "layer.b"]
    );
}

#[test]
fn one_backward_pass_feeds_two_guards() {
    let toy = Toy::new();
    let (mut g1, mut g2) = (sgd(&toy).name("g1"), sgd(&toy).name("g2"));
    let grads = toy.loss(true, false).backward().unwrap();
    g1.accumulate(&grads).unwrap();
    g2.accumulate(&grads).unwrap();
    let expected: Vec<f32> = grads.get(toy.a.as_tensor()).unwrap().to_vec1().unwrap();
    for g in [&g1, &g2] {
        let held: Vec<f32> = g.grad(&toy.a).unwrap().to_vec1().unwrap();
        assert_eq!(held, expected);
    }
}

#[test]
fn a_variable_added_to_the_varmap_later_is_watched_from_the_next_step() {
    let toy = Toy::new();
    let mut opt = sgd(&toy);
    opt.backward(&toy.loss(true, true)).unwrap();
    opt.step().unwrap();
    opt.zero_grad();
    toy.varmap
        .get(
            2,
            "head.w",
            candle_nn::Init::Const(1.0),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
    opt.backward(&toy.loss(true, true)).unwrap();
    assert!(opt.param_names().contains(&"head.w".to_string()));
    let r = opt.step().unwrap();
    assert_eq!(r.anomaly(Check::Missing).unwrap().params, ["head.w"]);
}

#[test]
fn gradients_of_unwatched_variables_are_not_applied_by_either_style() {
    let toy = Toy::new();
    // The inner optimizer holds a and b; the guard watches only a.
    let inner = SGD::new(toy.varmap.all_vars(), 0.1).unwrap();
    let mut opt = Guarded::new(inner).with_named_vars([("layer.a", toy.a.clone())]);
    let r = opt
        .step_with(&toy.loss(true, true).backward().unwrap())
        .unwrap();
    assert!(r.is_clean(), "{:?}", r.anomalies);
    opt.backward(&toy.loss(true, true)).unwrap();
    opt.step().unwrap();
    // a moved twice (-0.1 x each); b is frozen in both styles.
    assert_eq!(toy.values().0, [0.79999995, 0.6, 0.39999998]);
    assert_eq!(toy.values().1, [2., 2., 2.]);
}

#[test]
fn from_varmap_builds_the_inner_optimizer_from_the_watched_variables() {
    let toy = Toy::new();
    let mut opt = Guarded::<SGD>::from_varmap(&toy.varmap, 0.1).unwrap();
    assert_eq!(opt.param_names(), ["bn.running_mean", "layer.a", "layer.b"]);
    opt.step_with(&toy.loss(true, true).backward().unwrap())
        .unwrap();
    assert_eq!(toy.values().0, [0.9, 0.8, 0.7]);
}

#[test]
fn the_sampled_norm_is_of_the_averaged_gradient_that_is_applied() {
    let toy = Toy::new();
    let mut opt = sgd(&toy)
        .accumulation_steps(2)
        .average_accumulated(true)
        .sample_grad_norm(1);
    opt.backward(&toy.loss(true, false)).unwrap();
    opt.backward(&toy.loss(true, false)).unwrap();
    let r = opt.step().unwrap();
    // The mean of two passes of x: |x| = sqrt(14), not 2 sqrt(14).
    assert!((r.grad_norm.unwrap() - 14f64.sqrt()).abs() < 1e-5);
}

/// One variable `w` of `dtype` in a fresh VarMap, and a guard watching it.
fn one_var(dtype: DType) -> (VarMap, Var, Guarded<SGD>) {
    let varmap = VarMap::new();
    varmap
        .get(3, "w", candle_nn::Init::Const(1.0), dtype, &Device::Cpu)
        .unwrap();
    let w = common::var(&varmap, "w");
    let opt = Guarded::new(SGD::new(varmap.all_vars(), 0.0).unwrap())
        .with_varmap(&varmap)
        .check_nonfinite(1)
        .sample_grad_norm(1);
    (varmap, w, opt)
}

/// The loss sum(w * c): its gradient is `c`.
fn linear_loss(w: &Var, c: &[f64]) -> Tensor {
    let c = Tensor::new(c, &Device::Cpu)
        .unwrap()
        .to_dtype(w.dtype())
        .unwrap();
    w.as_tensor().mul(&c).unwrap().sum_all().unwrap()
}

#[test]
fn nonfinite_and_norm_in_every_float_dtype() {
    // 300 squared overflows F16 (max 65504); sums of squares are in F64.
    for dtype in [DType::F16, DType::BF16, DType::F32, DType::F64] {
        let (_vm, w, mut opt) = one_var(dtype);
        let r = opt
            .step_with(&linear_loss(&w, &[300., 400., 0.]).backward().unwrap())
            .unwrap();
        assert!(r.is_clean(), "{dtype:?}: {:?}", r.anomalies);
        let norm = r.grad_norm.unwrap();
        assert!((norm - 500.).abs() < 2.0, "{dtype:?}: norm {norm}");
        for bad in [f64::NAN, f64::INFINITY] {
            let r = opt
                .step_with(&linear_loss(&w, &[1., bad, 1.]).backward().unwrap())
                .unwrap();
            assert_eq!(
                r.anomaly(Check::NonFinite).map(|a| a.params.clone()),
                Some(vec!["w".to_string()]),
                "{dtype:?} with {bad}"
            );
        }
    }
}

#[test]
fn a_finite_f64_gradient_beyond_f32_range_is_finite() {
    let (_vm, w, mut opt) = one_var(DType::F64);
    let r = opt
        .step_with(&linear_loss(&w, &[1e39, 0., 0.]).backward().unwrap())
        .unwrap();
    assert!(r.is_clean(), "{:?}", r.anomalies);
    assert!((r.grad_norm.unwrap() / 1e39 - 1.).abs() < 1e-9);
}
