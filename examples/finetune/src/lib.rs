//! A fine-tuning run in candle, watched by gradguard: a small transformer
//! language model ([`model`]) pretrained on one generated text and fine-tuned
//! on another ([`text`]) through low-rank adapters while its base stays
//! frozen, with gradient accumulation declared to the guard ([`train`]).

pub mod model;
pub mod text;
pub mod train;

pub use model::{Config, Kernels, Lm};
pub use text::Corpus;
pub use train::{Finetune, Outcome, Phase, Reset};

/// The code blocks of this example's README, run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
