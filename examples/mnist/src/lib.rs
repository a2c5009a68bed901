//! The seed experiment of gradguard, shared by the `mnist` example and the
//! end-to-end tests: the seed's model, an MNIST reader, and the three training
//! styles (fresh gradients, the missing `zero_grad`, and its fix).

pub mod data;
pub mod model;
pub mod plot;
pub mod train;

pub use data::{DataError, Mnist, Split};
pub use model::Model;
pub use train::{GradStyle, Run};
