//! The parameters a guard watches: their variables, names, and which are buffers.

use std::collections::{HashMap, HashSet};

use candle_core::{TensorId, Var};

/// Last name segments that mark a buffer rather than a trainable parameter:
/// BatchNorm's running statistics, which live in a `VarMap` but never get a
/// gradient.
pub const DEFAULT_BUFFER_NAMES: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// The watched parameters, in a fixed order (the ledger's index).
#[derive(Debug, Clone, Default)]
pub struct Params {
    vars: Vec<Var>,
    names: Vec<String>,
    trainable: Vec<bool>,
    index: HashMap<TensorId, usize>,
    extra_buffers: HashSet<String>,
}

impl Params {
    /// Adds a variable under `name`; a variable already present is ignored.
    pub fn push(&mut self, name: String, var: Var) {
        if self.index.contains_key(&var.id()) {
            return;
        }
        self.index.insert(var.id(), self.vars.len());
        self.trainable.push(self.is_trainable(&name, &var));
        self.names.push(name);
        self.vars.push(var);
    }

    /// Declares more buffers by full name (e.g. `"encoder.ema_scale"`).
    pub fn add_buffers<I, S>(&mut self, names: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_buffers.extend(names.into_iter().map(Into::into));
        for i in 0..self.vars.len() {
            self.trainable[i] = self.is_trainable(&self.names[i], &self.vars[i]);
        }
    }

    fn is_trainable(&self, name: &str, var: &Var) -> bool {
        let last = name.rsplit('.').next().unwrap_or(name);
        var.dtype().is_float()
            && !DEFAULT_BUFFER_NAMES.contains(&last)
            && !self.extra_buffers.contains(name)
    }

    /// How many parameters (buffers included).
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The variables.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether each parameter is trainable (false for buffers).
    pub fn trainable(&self) -> &[bool] {
        &self.trainable
    }

    /// The index of a variable, if watched.
    pub fn index_of(&self, id: TensorId) -> Option<usize> {
        self.index.get(&id).copied()
    }

    /// Names of the parameters at `indices`.
    pub fn names_of(&self, indices: &[usize]) -> Vec<String> {
        indices.iter().map(|&i| self.names[i].clone()).collect()
    }
}
