//! The parameters a guard watches: their variables, names, and which are buffers.

use std::collections::{HashMap, HashSet};

use candle_core::{TensorId, Var};
use candle_nn::VarMap;

/// Last name segments that mark a buffer rather than a trainable parameter:
/// BatchNorm's running statistics, which live in a `VarMap` but never get a
/// gradient.
pub const DEFAULT_BUFFER_NAMES: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// How a guard learned the parameters it watches, which decides what a
/// `missing` gradient most likely means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watched {
    /// Every variable of a `VarMap` (`.guarded(&varmap)`,
    /// `Guarded::new(opt).with_varmap(&varmap)`): the optimizer may train
    /// fewer (a target network, frozen layers), which then look `missing`.
    VarMap,
    /// A list, the optimizer's own (`Guarded::from_vars`,
    /// `GuardExt::guarded_over`, `Optimizer::new`, `with_vars`): a missing
    /// gradient is one the optimizer trains.
    List,
}

/// The variables of `varmap` under `prefix` (named `prefix` or
/// `prefix.<...>`, as `VarBuilder::pp(prefix)` names them; a trailing `.` is
/// ignored, and an empty prefix takes every variable), sorted by name:
/// the list to build an optimizer over part of a `VarMap`.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::{VarBuilder, VarMap};
///
/// # fn main() -> candle_core::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// candle_nn::linear(2, 2, vb.pp("critic"))?;
/// candle_nn::linear(2, 2, vb.pp("critic_target"))?;
/// assert_eq!(gradguard::vars_under(&varmap, "critic").len(), 2); // not the target's
/// # Ok(()) }
/// ```
pub fn vars_under(varmap: &VarMap, prefix: &str) -> Vec<Var> {
    let prefix = prefix.trim_end_matches('.');
    if prefix.is_empty() {
        return vars_matching(varmap, |_| true);
    }
    vars_matching(varmap, |name| {
        name.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    })
}

/// The variables of `varmap` whose name passes `keep`, sorted by name: the
/// list for an optimizer over adapters spread through a model.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::{Init, VarBuilder, VarMap};
///
/// # fn main() -> candle_core::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// for layer in ["block0.q", "block1.q"] {
///     vb.pp(layer).get_with_hints((4, 4), "weight", Init::Const(0.0))?;
///     vb.pp(layer).get_with_hints((2, 4), "lora_a", Init::Const(0.0))?;
/// }
/// let adapters = gradguard::vars_matching(&varmap, |name| name.ends_with(".lora_a"));
/// assert_eq!(adapters.len(), 2);
/// # Ok(()) }
/// ```
pub fn vars_matching(varmap: &VarMap, keep: impl Fn(&str) -> bool) -> Vec<Var> {
    let Ok(data) = varmap.data().lock() else {
        return Vec::new();
    };
    let mut named: Vec<(&String, &Var)> = data.iter().filter(|(name, _)| keep(name)).collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    named.into_iter().map(|(_, v)| v.clone()).collect()
}

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

    /// Names the watched variable `id` (a no-op for one not watched), and
    /// decides again whether it is a buffer.
    pub fn rename(&mut self, id: TensorId, name: String) {
        if let Some(&i) = self.index.get(&id) {
            self.trainable[i] = self.is_trainable(&name, &self.vars[i]);
            self.names[i] = name;
        }
    }

    /// Bytes held: the lists, the index and the names.
    pub fn bytes(&self) -> usize {
        use std::mem::size_of;
        self.vars.capacity() * size_of::<Var>()
            + self.trainable.capacity()
            + self.index.capacity() * (size_of::<TensorId>() + size_of::<usize>())
            + self
                .names
                .iter()
                .map(|n| size_of::<String>() + n.capacity())
                .sum::<usize>()
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
