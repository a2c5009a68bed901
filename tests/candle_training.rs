//! A typical candle training program (the shape of candle's own MNIST
//! training example: a model behind `Module`, a loop generic over
//! `candle_nn::Optimizer` that calls `backward_step`), run with AdamW plain
//! and with gradguard's one-line change, `.guarded(&varmap)`: the same
//! weights, the same accuracy, no anomaly. Then the same program with a layer
//! left out of `forward`, flagged at the first step.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use gradguard::{Check, Error, GuardExt, Level};
use gradguard_mnist::Mnist;

const BATCH: usize = 100;
const EPOCHS: usize = 2;

fn data() -> Mnist {
    Mnist::load(&Mnist::bundled_dir(), Some(3000), Some(1000), &Device::Cpu).unwrap()
}

struct Mlp {
    ln1: candle_nn::Linear,
    ln2: candle_nn::Linear,
    ln3: candle_nn::Linear,
    /// The deliberate bug: `forward` skips `ln2`, which is still a parameter.
    skip_ln2: bool,
}

impl Mlp {
    fn new(vb: VarBuilder, skip_ln2: bool) -> Result<Self> {
        Ok(Self {
            ln1: candle_nn::linear(784, 64, vb.pp("ln1"))?,
            ln2: candle_nn::linear(64, 64, vb.pp("ln2"))?,
            ln3: candle_nn::linear(64, 10, vb.pp("ln3"))?,
            skip_ln2,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.ln1.forward(&xs.flatten_from(1)?)?.relu()?;
        let xs = if self.skip_ln2 {
            xs
        } else {
            self.ln2.forward(&xs)?.relu()?
        };
        self.ln3.forward(&xs)
    }
}

struct ConvNet {
    conv1: candle_nn::Conv2d,
    conv2: candle_nn::Conv2d,
    fc: candle_nn::Linear,
}

impl ConvNet {
    fn new(vb: VarBuilder) -> Result<Self> {
        let cfg = candle_nn::Conv2dConfig::default();
        Ok(Self {
            conv1: candle_nn::conv2d(1, 8, 5, cfg, vb.pp("c1"))?,
            conv2: candle_nn::conv2d(8, 16, 5, cfg, vb.pp("c2"))?,
            fc: candle_nn::linear(16 * 4 * 4, 10, vb.pp("fc"))?,
        })
    }
}

impl Module for ConvNet {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.apply(&self.conv1)?
            .max_pool2d(2)?
            .relu()?
            .apply(&self.conv2)?
            .max_pool2d(2)?
            .relu()?
            .flatten_from(1)?
            .apply(&self.fc)
    }
}

/// candle's training loop, for any model and any optimizer: test accuracy
/// after the last epoch.
fn train<M: Module, O: Optimizer>(model: &M, opt: &mut O, m: &Mnist) -> Result<f32> {
    let n_batches = m.train_len() / BATCH;
    let mut accuracy = 0f32;
    for _epoch in 0..EPOCHS {
        for batch_idx in 0..n_batches {
            let train_input = m.train_images.narrow(0, batch_idx * BATCH, BATCH)?;
            let train_labels = m.train_labels.narrow(0, batch_idx * BATCH, BATCH)?;
            let logits = model.forward(&train_input)?;
            let log_sm = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let loss = candle_nn::loss::nll(&log_sm, &train_labels)?;
            opt.backward_step(&loss)?;
        }
        let test_logits = model.forward(&m.test_images)?;
        let sum_ok = test_logits
            .argmax(D::Minus1)?
            .eq(&m.test_labels)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()?;
        accuracy = sum_ok / m.test_len() as f32;
    }
    Ok(accuracy)
}

fn params() -> ParamsAdamW {
    ParamsAdamW {
        lr: 0.004,
        ..Default::default()
    }
}

/// Copies every variable of `from` into `to` (the same initial weights).
fn copy_weights(from: &VarMap, to: &VarMap) {
    let src = from.data().lock().unwrap();
    for (name, var) in to.data().lock().unwrap().iter() {
        var.set(src[name].as_tensor()).unwrap();
    }
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

/// Trains `build`'s model twice from the same weights, plainly and guarded
/// (every check at `Deny`: any anomaly would stop the loop).
fn plain_and_guarded<M: Module>(build: impl Fn(VarBuilder) -> Result<M>, min_accuracy: f32) {
    let m = data();
    let (plain_vars, guarded_vars) = (VarMap::new(), VarMap::new());
    let vb = |vm: &VarMap| VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu);
    let plain_model = build(vb(&plain_vars)).unwrap();
    let guarded_model = build(vb(&guarded_vars)).unwrap();
    copy_weights(&plain_vars, &guarded_vars);

    let mut plain = AdamW::new(plain_vars.all_vars(), params()).unwrap();
    let plain_acc = train(&plain_model, &mut plain, &m).unwrap();

    let mut guarded = AdamW::new(guarded_vars.all_vars(), params())
        .unwrap()
        .guarded(&guarded_vars)
        .level_all(Level::Deny);
    let guarded_acc = train(&guarded_model, &mut guarded, &m).unwrap();

    assert_eq!(guarded.steps(), (EPOCHS * m.train_len() / BATCH) as u64);
    assert_eq!(plain_acc, guarded_acc);
    assert!(weights(&plain_vars) == weights(&guarded_vars));
    assert!(plain_acc > min_accuracy, "accuracy {plain_acc}");
}

#[test]
fn an_mlp_trains_the_same_plain_and_guarded_with_no_anomaly() {
    plain_and_guarded(|vb| Mlp::new(vb, false), 0.75);
}

#[test]
fn a_small_cnn_trains_the_same_plain_and_guarded_with_no_anomaly() {
    plain_and_guarded(ConvNet::new, 0.6);
}

#[test]
fn a_layer_left_out_of_forward_is_flagged_at_step_1() {
    let m = data();
    let varmap = VarMap::new();
    let model = Mlp::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        true,
    )
    .unwrap();
    let mut opt = AdamW::new(varmap.all_vars(), params())
        .unwrap()
        .guarded(&varmap)
        .level(Check::Missing, Level::Deny);
    let err = train(&model, &mut opt, &m).unwrap_err();
    let anomaly = Error::denied_in(&err).expect("a refused step");
    assert_eq!((anomaly.check, anomaly.step), (Check::Missing, 1));
    assert_eq!(anomaly.params, ["ln2.bias", "ln2.weight"]);
    assert_eq!(opt.steps(), 0, "the refused step applied nothing");
}
