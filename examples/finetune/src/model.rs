//! A small decoder-only transformer (GPT-style) on candle-nn, with low-rank
//! adapters (LoRA) on the attention's query and value projections. Base and
//! adapters live in one `VarMap`: adapter variables are named `...lora_a` and
//! `...lora_b`, everything else is the base.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{embedding, linear, linear_no_bias, Embedding, Init, Linear, VarBuilder, VarMap};

use crate::text::ALPHABET;

/// The model's sizes.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Tokens in the vocabulary.
    pub vocab: usize,
    /// Width of the residual stream.
    pub dim: usize,
    /// Attention heads.
    pub heads: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Context length (tokens per window).
    pub ctx: usize,
    /// Rank of the adapters.
    pub rank: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            vocab: ALPHABET.len(),
            dim: 64,
            heads: 4,
            layers: 2,
            ctx: 32,
            rank: 4,
        }
    }
}

/// Which kernels the model's norms and attention use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// RMS norm and softmax written from differentiable candle ops:
    /// gradients flow through both.
    Differentiable,
    /// candle-nn's fused `RmsNorm`: on contiguous input its forward has no
    /// backward pass in candle-nn 0.11, so nothing before a norm (and not
    /// the norm's own weight) gets a gradient.
    FusedRmsNorm,
    /// candle-nn's `ops::softmax_last_dim`: no backward pass in candle-nn
    /// 0.11, so the attention's query and key projections get no gradient.
    FusedSoftmax,
}

/// RMS normalisation with a learned scale.
#[derive(Debug, Clone)]
struct Norm {
    weight: Tensor,
    fused: Option<candle_nn::RmsNorm>,
}

const EPS: f64 = 1e-5;

impl Norm {
    fn new(dim: usize, kernels: Kernels, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let fused = (kernels == Kernels::FusedRmsNorm)
            .then(|| candle_nn::RmsNorm::new(weight.clone(), EPS));
        Ok(Self { weight, fused })
    }
}

impl Module for Norm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if let Some(fused) = &self.fused {
            return fused.forward(xs);
        }
        let mean_square = xs.sqr()?.mean_keepdim(D::Minus1)?;
        xs.broadcast_div(&(mean_square + EPS)?.sqrt()?)?
            .broadcast_mul(&self.weight)
    }
}

/// A linear layer plus a low-rank update: `W x + B (A x)`, with `B` starting
/// at zero so the adapted model starts as the base.
#[derive(Debug, Clone)]
struct LoraLinear {
    base: Linear,
    lora_a: Tensor,
    lora_b: Tensor,
}

impl LoraLinear {
    fn new(dim: usize, rank: usize, vb: VarBuilder) -> Result<Self> {
        let base = linear_no_bias(dim, dim, vb.clone())?;
        let bound = 1.0 / (dim as f64).sqrt();
        let lora_a = vb.get_with_hints(
            (rank, dim),
            "lora_a",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let lora_b = vb.get_with_hints((dim, rank), "lora_b", Init::Const(0.0))?;
        Ok(Self {
            base,
            lora_a,
            lora_b,
        })
    }
}

impl Module for LoraLinear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let low = xs.broadcast_matmul(&self.lora_a.t()?)?;
        self.base.forward(xs)? + low.broadcast_matmul(&self.lora_b.t()?)?
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: LoraLinear,
    k: Linear,
    v: LoraLinear,
    out: Linear,
    heads: usize,
    fused_softmax: bool,
}

impl Attention {
    fn new(cfg: &Config, kernels: Kernels, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fused_softmax: kernels == Kernels::FusedSoftmax,
            q: LoraLinear::new(cfg.dim, cfg.rank, vb.pp("q"))?,
            k: linear_no_bias(cfg.dim, cfg.dim, vb.pp("k"))?,
            v: LoraLinear::new(cfg.dim, cfg.rank, vb.pp("v"))?,
            out: linear(cfg.dim, cfg.dim, vb.pp("out"))?,
            heads: cfg.heads,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        let hd = d / self.heads;
        let split = |x: Tensor| {
            x.reshape((b, t, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward(xs)?)?;
        let k = split(self.k.forward(xs)?)?;
        let v = split(self.v.forward(xs)?)?;
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(mask)?;
        let weights = if self.fused_softmax {
            candle_nn::ops::softmax_last_dim(&scores)?
        } else {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        };
        let y = weights.matmul(&v)?;
        self.out
            .forward(&y.transpose(1, 2)?.contiguous()?.reshape((b, t, d))?)
    }
}

#[derive(Debug, Clone)]
struct Block {
    norm1: Norm,
    attn: Attention,
    norm2: Norm,
    up: Linear,
    down: Linear,
}

impl Block {
    fn new(cfg: &Config, kernels: Kernels, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: Norm::new(cfg.dim, kernels, vb.pp("norm1"))?,
            attn: Attention::new(cfg, kernels, vb.pp("attn"))?,
            norm2: Norm::new(cfg.dim, kernels, vb.pp("norm2"))?,
            up: linear(cfg.dim, 4 * cfg.dim, vb.pp("mlp.up"))?,
            down: linear(4 * cfg.dim, cfg.dim, vb.pp("mlp.down"))?,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let xs = (xs + self.attn.forward(&self.norm1.forward(xs)?, mask)?)?;
        let hidden = self.up.forward(&self.norm2.forward(&xs)?)?.gelu()?;
        xs + self.down.forward(&hidden)?
    }
}

/// The language model: token and position embeddings, blocks, a final norm
/// and the output head.
#[derive(Debug, Clone)]
pub struct Lm {
    cfg: Config,
    tokens: Embedding,
    positions: Embedding,
    blocks: Vec<Block>,
    norm: Norm,
    head: Linear,
    mask: Tensor,
}

impl Lm {
    /// Builds the model's variables in `varmap` on `dev`.
    pub fn new(cfg: Config, kernels: Kernels, varmap: &VarMap, dev: &Device) -> Result<Self> {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, dev);
        let blocks = (0..cfg.layers)
            .map(|i| Block::new(&cfg, kernels, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<_>>()?;
        let mask: Vec<f32> = (0..cfg.ctx * cfg.ctx)
            .map(|k| {
                if k % cfg.ctx > k / cfg.ctx {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Self {
            tokens: embedding(cfg.vocab, cfg.dim, vb.pp("tokens"))?,
            positions: embedding(cfg.ctx, cfg.dim, vb.pp("positions"))?,
            blocks,
            norm: Norm::new(cfg.dim, kernels, vb.pp("norm"))?,
            head: linear(cfg.dim, cfg.vocab, vb.pp("head"))?,
            mask: Tensor::from_vec(mask, (cfg.ctx, cfg.ctx), dev)?,
            cfg,
        })
    }

    /// The sizes.
    pub fn config(&self) -> Config {
        self.cfg
    }

    /// Logits `(batch, ctx, vocab)` for token ids `(batch, ctx)`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let pos = Tensor::arange(0u32, t as u32, ids.device())?;
        let mut xs = self
            .tokens
            .forward(ids)?
            .broadcast_add(&self.positions.forward(&pos)?)?;
        let mask = self.mask.narrow(0, 0, t)?.narrow(1, 0, t)?;
        for block in &self.blocks {
            xs = block.forward(&xs, &mask)?;
        }
        self.head.forward(&self.norm.forward(&xs)?)
    }

    /// Mean cross-entropy of predicting `targets` from `ids`.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logits = self.forward(ids)?;
        let (b, t, v) = logits.dims3()?;
        candle_nn::loss::cross_entropy(&logits.reshape((b * t, v))?, &targets.reshape(b * t)?)
    }
}

/// Whether a variable name is an adapter's.
pub fn is_adapter(name: &str) -> bool {
    name.ends_with(".lora_a") || name.ends_with(".lora_b")
}
