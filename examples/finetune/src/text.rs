//! Text to train on, generated: two small "languages" of English-like
//! sentences, character by character. The base model learns the first; the
//! adapters learn the second, which shares the alphabet and some words.

use candle_core::{Device, Result, Tensor};

/// The characters of both texts: the token ids are their positions.
pub const ALPHABET: &str = " .abcdefghijklmnopqrstuvwxyz";

/// A small deterministic random source (xorshift64*): the texts and the
/// batches are the same on every run and every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value; 0 is mapped to 1).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len())]
    }
}

/// A text as token ids.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Token ids (positions in [`ALPHABET`]).
    pub tokens: Vec<u32>,
}

const NOUNS: [&str; 6] = ["cat", "dog", "bird", "fox", "horse", "fish"];
const VERBS: [&str; 5] = ["sees", "chases", "likes", "finds", "follows"];
const ADJECTIVES: [&str; 5] = ["small", "quick", "lazy", "brown", "quiet"];
const PLACES: [&str; 4] = ["river", "garden", "forest", "road"];

impl Corpus {
    /// The pretraining text, about `chars` characters: "the fox sees the
    /// cat." sentences.
    pub fn base(chars: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        Self::generate(chars, |out| {
            let (a, v, b) = (rng.pick(&NOUNS), rng.pick(&VERBS), rng.pick(&NOUNS));
            out.push_str(&format!("the {a} {v} the {b}. "));
        })
    }

    /// The fine-tuning text: "a quick fox runs by the river." sentences,
    /// a pattern the base never saw.
    pub fn finetune(chars: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        Self::generate(chars, |out| {
            let (j, n, p) = (rng.pick(&ADJECTIVES), rng.pick(&NOUNS), rng.pick(&PLACES));
            out.push_str(&format!("a {j} {n} runs by the {p}. "));
        })
    }

    fn generate(chars: usize, mut sentence: impl FnMut(&mut String)) -> Self {
        let mut text = String::new();
        while text.len() < chars {
            sentence(&mut text);
        }
        let tokens = text
            .bytes()
            .map(|b| ALPHABET.bytes().position(|a| a == b).expect("alphabet") as u32)
            .collect();
        Self { tokens }
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True for an empty text.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The first `share` of the text for training and the rest for
    /// validation.
    pub fn split(&self, share: f64) -> (Corpus, Corpus) {
        let at = (self.tokens.len() as f64 * share) as usize;
        (
            Corpus {
                tokens: self.tokens[..at].to_vec(),
            },
            Corpus {
                tokens: self.tokens[at..].to_vec(),
            },
        )
    }

    /// A batch of `rows` windows of `ctx` tokens at random places: the
    /// inputs and, one token later, the targets, each `(rows, ctx)`.
    pub fn batch(
        &self,
        rows: usize,
        ctx: usize,
        rng: &mut Rng,
        dev: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let mut xs = Vec::with_capacity(rows * ctx);
        let mut ys = Vec::with_capacity(rows * ctx);
        for _ in 0..rows {
            let at = rng.below(self.tokens.len() - ctx - 1);
            xs.extend_from_slice(&self.tokens[at..at + ctx]);
            ys.extend_from_slice(&self.tokens[at + 1..at + ctx + 1]);
        }
        Ok((
            Tensor::from_vec(xs, (rows, ctx), dev)?,
            Tensor::from_vec(ys, (rows, ctx), dev)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_deterministic_and_in_the_alphabet() {
        let a = Corpus::finetune(500, 7);
        assert_eq!(a.tokens, Corpus::finetune(500, 7).tokens);
        assert!(a.len() >= 500);
        assert!(a.tokens.iter().all(|&t| (t as usize) < ALPHABET.len()));
        assert_ne!(Corpus::base(500, 7).tokens[..20], a.tokens[..20]);
    }
}
