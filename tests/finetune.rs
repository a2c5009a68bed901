//! The fine-tuning example's loop (examples/finetune): a transformer with a
//! frozen base and adapters in one `VarMap`, each phase guarded over its own
//! list. Quiet where the loop is right, flagged where it is not, and the
//! fused RmsNorm that passes no gradient named at step 1.

use candle_core::Device;
use candle_nn::VarMap;
use gradguard::{Check, Error, Level};
use gradguard_finetune::train::{pretrain, snapshot};
use gradguard_finetune::{Config, Corpus, Finetune, Kernels, Lm, Phase, Reset};

fn small() -> Config {
    Config {
        dim: 32,
        ctx: 16,
        ..Config::default()
    }
}

fn values(varmap: &VarMap, phase: Phase) -> Vec<Vec<f32>> {
    phase
        .vars(varmap)
        .iter()
        .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
        .collect()
}

#[test]
fn pretraining_over_the_base_list_is_quiet_at_deny_and_leaves_the_adapters_alone() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = Lm::new(small(), Kernels::Differentiable, &varmap, &dev).unwrap();
    let adapters = values(&varmap, Phase::Finetune);
    let mut opt = Phase::Pretrain
        .optimizer(&varmap, 3e-3)
        .unwrap()
        .level_all(Level::Deny);
    // Adapters are in the VarMap, not in the list: never `missing`.
    assert!(opt.param_names().iter().all(|n| !n.contains("lora")));
    let outcome = pretrain(&model, &mut opt, &Corpus::base(2_000, 1), 3, 4, &dev).unwrap();
    assert_eq!((outcome.steps, outcome.anomalies.len()), (3, 0));
    assert_eq!(values(&varmap, Phase::Finetune), adapters);
}

#[test]
fn candle_nn_fused_rms_norm_passes_no_gradient_and_missing_names_what_it_starves_at_step_1() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = Lm::new(small(), Kernels::FusedRmsNorm, &varmap, &dev).unwrap();
    let before = snapshot(&varmap).unwrap();
    let mut opt = Phase::Pretrain
        .optimizer(&varmap, 3e-3)
        .unwrap()
        .level(Check::Missing, Level::Deny);
    let err = pretrain(&model, &mut opt, &Corpus::base(2_000, 1), 1, 4, &dev).unwrap_err();
    let Error::Denied(a) = err else {
        panic!("expected a denied step, got {err}")
    };
    assert_eq!((a.check, a.step), (Check::Missing, 1));
    // Everything before the last norm, and the norms' own weights; the
    // output head after it still learns.
    for name in ["norm.weight", "blocks.0.attn.q.weight", "tokens.weight"] {
        assert!(
            a.params.iter().any(|p| p == name),
            "{name} not in {:?}",
            a.params
        );
    }
    assert!(!a.params.iter().any(|p| p.starts_with("head.")));
    assert!(a
        .help()
        .starts_with("the optimizer trains these parameters"));
    // Refused: nothing moved.
    for (var, value) in before {
        let now: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(now, value.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
}

#[test]
fn candle_nn_softmax_last_dim_passes_no_gradient_to_query_and_key_named_at_step_1() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = Lm::new(small(), Kernels::FusedSoftmax, &varmap, &dev).unwrap();
    let mut opt = Phase::Pretrain
        .optimizer(&varmap, 3e-3)
        .unwrap()
        .level(Check::Missing, Level::Deny);
    let err = pretrain(&model, &mut opt, &Corpus::base(2_000, 1), 1, 4, &dev).unwrap_err();
    let a = err.anomaly().unwrap();
    assert_eq!((a.check, a.step), (Check::Missing, 1));
    assert_eq!(
        a.params,
        [
            "blocks.0.attn.k.weight",
            "blocks.0.attn.q.weight",
            "blocks.1.attn.k.weight",
            "blocks.1.attn.q.weight"
        ]
    );
}

fn finetune(reset: Reset, micro_batches: usize) -> (VarMap, Lm, Finetune) {
    let varmap = VarMap::new();
    let model = Lm::new(small(), Kernels::Differentiable, &varmap, &Device::Cpu).unwrap();
    let tune = Finetune {
        epochs: 1,
        micro_batches,
        accumulation: 4,
        rows: 2,
        reset,
    };
    (varmap, model, tune)
}

#[test]
fn adapters_with_a_reset_are_quiet_but_for_the_epochs_short_last_window() {
    let (varmap, model, tune) = finetune(Reset::AfterStep, 6);
    let base = values(&varmap, Phase::Pretrain);
    let adapters = values(&varmap, Phase::Finetune);
    let mut opt = Phase::Finetune
        .optimizer(&varmap, 1e-2)
        .unwrap()
        .accumulation_steps(4)
        .level_all(Level::Deny)
        .level(Check::ShortAccumulation, Level::Warn);
    let text = Corpus::finetune(2_000, 2);
    let outcome = tune
        .run(&model, &mut opt, &text, &text, &Device::Cpu, |_, _| {})
        .unwrap();
    // 6 micro-batches, a step every 4: the second step holds 2 of 4.
    assert_eq!(outcome.steps, 2);
    assert_eq!(outcome.first_flagged, Some((2, Check::ShortAccumulation)));
    assert_eq!(outcome.anomalies.len(), 1);
    assert_eq!(values(&varmap, Phase::Pretrain), base, "the base is frozen");
    assert_ne!(values(&varmap, Phase::Finetune), adapters);
}

#[test]
fn adapters_without_zero_grad_are_accumulated_at_step_2() {
    let (varmap, model, tune) = finetune(Reset::Never, 8);
    let mut opt = Phase::Finetune
        .optimizer(&varmap, 1e-2)
        .unwrap()
        .accumulation_steps(4)
        .level(Check::Accumulated, Level::Deny);
    let text = Corpus::finetune(2_000, 2);
    let err = tune
        .run(&model, &mut opt, &text, &text, &Device::Cpu, |_, _| {})
        .unwrap_err();
    let a = err.anomaly().unwrap();
    assert_eq!(
        (a.check, a.step, a.passes, a.reapplied),
        (Check::Accumulated, 2, 8, 4)
    );
    assert_eq!(a.params.len(), Phase::Finetune.vars(&varmap).len());
}
