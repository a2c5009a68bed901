//! The seed's `Model(5)`, in candle, with a seeded initialisation so that two
//! copies start from identical weights (the seed's `deepcopy`).

use candle_core::{DType, Device, Module, ModuleT, Result, Tensor};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};

/// conv 1->d k3 s3 p1; conv d->2d k3 + BatchNorm + ReLU; conv 2d->4d k4 s2 p1 +
/// BatchNorm + ReLU + flatten; linear 4d*16->10. Names follow PyTorch's
/// `nn.Sequential` numbering (`conv2.0.weight`, `conv2.1.running_mean`, ...).
#[derive(Debug)]
pub struct Model {
    conv1: Conv2d,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Conv2d,
    bn3: BatchNorm,
    fc: Linear,
}

impl Model {
    /// Builds the model's layers in `vb` (candle's default initialisation).
    pub fn new(out_dims: usize, vb: VarBuilder) -> Result<Self> {
        let d = out_dims;
        let strided = |stride, padding| Conv2dConfig {
            stride,
            padding,
            ..Default::default()
        };
        Ok(Self {
            conv1: candle_nn::conv2d(1, d, 3, strided(3, 1), vb.pp("conv1"))?,
            conv2: candle_nn::conv2d(d, 2 * d, 3, Default::default(), vb.pp("conv2.0"))?,
            bn2: candle_nn::batch_norm(2 * d, 1e-5, vb.pp("conv2.1"))?,
            conv3: candle_nn::conv2d(2 * d, 4 * d, 4, strided(2, 1), vb.pp("conv3.0"))?,
            bn3: candle_nn::batch_norm(4 * d, 1e-5, vb.pp("conv3.1"))?,
            fc: candle_nn::linear(4 * d * 16, 10, vb.pp("fc"))?,
        })
    }

    /// Builds the model in a fresh `VarMap` on `device`, with weights drawn
    /// from `seed`: the same seed gives bit-identical weights.
    pub fn seeded(out_dims: usize, seed: u64, device: &Device) -> Result<(Self, VarMap)> {
        let varmap = VarMap::new();
        let model = Self::new(
            out_dims,
            VarBuilder::from_varmap(&varmap, DType::F32, device),
        )?;
        reseed(&varmap, seed)?;
        Ok((model, varmap))
    }

    /// Logits for a batch of images `(batch, 1, 28, 28)`. `train` selects
    /// batch statistics (and updates the running ones) or the running ones.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.conv1.forward(x)?;
        let x = self
            .bn2
            .forward_t(&self.conv2.forward(&x)?, train)?
            .relu()?;
        let x = self
            .bn3
            .forward_t(&self.conv3.forward(&x)?, train)?
            .relu()?;
        self.fc.forward(&x.flatten_from(1)?)
    }
}

/// Redraws every weight and bias of conv and linear layers from `seed`, with
/// candle's distributions (Kaiming normal weights, uniform biases), in name
/// order. candle's CPU generator cannot be seeded, hence this.
fn reseed(varmap: &VarMap, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let fan_in_of = |layer: &str| -> Option<usize> {
        let w = data.get(&format!("{layer}.weight"))?;
        Some(w.dims().iter().skip(1).product::<usize>().max(1))
    };
    for name in names {
        let var = &data[name];
        let (layer, leaf) = name.rsplit_once('.').unwrap_or(("", name));
        let is_norm = var.rank() == 1 && data.contains_key(&format!("{layer}.running_mean"));
        if is_norm || !(leaf == "weight" || leaf == "bias") {
            continue;
        }
        let Some(fan_in) = fan_in_of(layer) else {
            continue;
        };
        let n = var.elem_count();
        let values: Vec<f32> = if leaf == "weight" {
            let std = (2.0 / fan_in as f64).sqrt();
            let normal = Normal::new(0.0, std).map_err(candle_core::Error::wrap)?;
            (0..n).map(|_| normal.sample(&mut rng) as f32).collect()
        } else {
            let bound = 1.0 / (fan_in as f64).sqrt();
            let uniform = Uniform::new(-bound, bound).map_err(candle_core::Error::wrap)?;
            (0..n).map(|_| uniform.sample(&mut rng) as f32).collect()
        };
        var.set(&Tensor::from_vec(values, var.shape(), var.device())?)?;
    }
    Ok(())
}
