//! A tiny real model for the tests: parameters `a` and `b` (shape 3) and a
//! BatchNorm-like buffer `bn.running_mean`, in a `VarMap`.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Init, VarMap};

pub struct Toy {
    pub varmap: VarMap,
    pub a: Var,
    pub b: Var,
    pub x: Tensor,
}

pub fn var(varmap: &VarMap, name: &str) -> Var {
    varmap.data().lock().unwrap()[name].clone()
}

impl Toy {
    pub fn new() -> Self {
        let varmap = VarMap::new();
        let dev = Device::Cpu;
        varmap
            .get(3, "layer.a", Init::Const(1.0), DType::F32, &dev)
            .unwrap();
        varmap
            .get(3, "layer.b", Init::Const(2.0), DType::F32, &dev)
            .unwrap();
        varmap
            .get(3, "bn.running_mean", Init::Const(0.0), DType::F32, &dev)
            .unwrap();
        let a = var(&varmap, "layer.a");
        let b = var(&varmap, "layer.b");
        let x = Tensor::new(&[1f32, 2., 3.], &dev).unwrap();
        Self { varmap, a, b, x }
    }

    /// sum(a * x) (+ sum(b^2 * x) when `use_b`): d/da = x, d/db = 2 b x.
    pub fn loss(&self, use_a: bool, use_b: bool) -> Tensor {
        let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
        if use_a {
            loss = (loss + self.a.as_tensor().mul(&self.x).unwrap().sum_all().unwrap()).unwrap();
        }
        if use_b {
            let bb = self.b.as_tensor().sqr().unwrap();
            loss = (loss + bb.mul(&self.x).unwrap().sum_all().unwrap()).unwrap();
        }
        loss
    }

    pub fn values(&self) -> (Vec<f32>, Vec<f32>) {
        (
            self.a.as_tensor().to_vec1().unwrap(),
            self.b.as_tensor().to_vec1().unwrap(),
        )
    }
}

pub fn sgd(toy: &Toy) -> gradguard::Guarded<candle_nn::SGD> {
    use candle_nn::Optimizer;
    gradguard::Guarded::new(candle_nn::SGD::new(toy.varmap.all_vars(), 0.1).unwrap())
        .with_varmap(&toy.varmap)
        .name("toy")
}
