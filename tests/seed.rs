//! The seed question as a test: two copies of Model(5) with identical weights,
//! M1 with fresh gradients, M2 with backward + step and no zero_grad.

use candle_core::{Device, Tensor};
use gradguard::{Check, Error, Level};
use gradguard_mnist::{GradStyle, Mnist, Model, Run};

const TRAINABLE: [&str; 12] = [
    "conv1.bias",
    "conv1.weight",
    "conv2.0.bias",
    "conv2.0.weight",
    "conv2.1.bias",
    "conv2.1.weight",
    "conv3.0.bias",
    "conv3.0.weight",
    "conv3.1.bias",
    "conv3.1.weight",
    "fc.bias",
    "fc.weight",
];

fn run(name: &str, style: GradStyle, level: Level) -> Run {
    let (model, varmap) = Model::seeded(5, 0, &Device::Cpu).unwrap();
    Run::new(name, style, model, varmap, 0.1, |g| {
        g.level(Check::Accumulated, level)
    })
    .unwrap()
}

fn weights(run: &Run) -> Vec<(String, Vec<f32>)> {
    let data = run.varmap.data().lock().unwrap();
    let mut out: Vec<_> = data
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn batches(data: &Mnist) -> Vec<(Tensor, Tensor)> {
    (0..4)
        .map(|i| {
            (
                data.train_images.narrow(0, i * 300, 300).unwrap(),
                data.train_labels.narrow(0, i * 300, 300).unwrap(),
            )
        })
        .collect()
}

#[test]
fn copies_start_from_identical_weights() {
    let m1 = run("m1", GradStyle::Fresh, Level::Warn);
    let m2 = run("m2", GradStyle::NoZeroGrad, Level::Warn);
    assert_eq!(weights(&m1), weights(&m2));
}

#[test]
fn m1_is_never_flagged_and_m2_is_flagged_accumulated_at_step_2() {
    let data = Mnist::synthetic(1200, 10, 7, &Device::Cpu).unwrap();
    let mut m1 = run("m1", GradStyle::Fresh, Level::Warn);
    let mut m2 = run("m2", GradStyle::NoZeroGrad, Level::Warn);
    for (step, (x, y)) in batches(&data).iter().enumerate() {
        let step = step as u64 + 1;
        let r1 = m1.train_step(x, y).unwrap();
        assert!(r1.is_clean(), "M1 step {step}: {:?}", r1.anomalies);
        let r2 = m2.train_step(x, y).unwrap();
        if step == 1 {
            assert!(r2.is_clean(), "M2 step 1: {:?}", r2.anomalies);
            continue;
        }
        let a = r2.anomaly(Check::Accumulated).expect("M2 accumulated");
        assert_eq!(a.params, TRAINABLE);
        assert_eq!((a.generations as u64, a.expected), (step, 1));
        assert_eq!(
            r2.anomalies.len(),
            1,
            "only accumulated: {:?}",
            r2.anomalies
        );
    }
    assert_eq!(m2.first_flagged, Some((2, Check::Accumulated)));
    assert_eq!(m1.first_flagged, None);
    // BatchNorm's running statistics are watched, yet never flagged.
    assert!(m2
        .opt
        .param_names()
        .iter()
        .any(|n| n == "conv2.1.running_mean"));
}

#[test]
fn deny_refuses_m2_step_2_and_keeps_the_weights_of_step_1() {
    let data = Mnist::synthetic(1200, 10, 7, &Device::Cpu).unwrap();
    let mut m2 = run("m2", GradStyle::NoZeroGrad, Level::Deny);
    let b = batches(&data);
    m2.train_step(&b[0].0, &b[0].1).unwrap();
    let after_step_1 = weights(&m2);
    let err = m2.train_step(&b[1].0, &b[1].1).unwrap_err();
    let Error::Denied(a) = err else {
        panic!("expected Denied")
    };
    assert_eq!((a.check, a.step), (Check::Accumulated, 2));
    assert_eq!(a.params, TRAINABLE);
    // BatchNorm's running statistics moved in the forward pass (as in
    // PyTorch); every trainable parameter is exactly as after step 1.
    let now = weights(&m2);
    for ((name, before), (_, after)) in after_step_1.iter().zip(&now) {
        if TRAINABLE.contains(&name.as_str()) {
            assert_eq!(before, after, "{name} changed");
        }
    }
}
