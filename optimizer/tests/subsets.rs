//! An optimizer over part of a `VarMap`, as real candle programs build one:
//! an actor/critic pair with target networks in the same `VarMap` (DDPG), a
//! frozen base with trainable adapters (LoRA-style fine-tuning), a student
//! next to its teacher (distillation). Each runs plain and guarded over the
//! optimizer's own list with every check at `Deny`: the same weights bit for
//! bit, no anomaly. Then each with its classic bug, flagged.

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::{linear, AdamW, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap, SGD};
use gradguard::{vars_under, Check, Error, GuardExt, Guarded, Level, Watched};

const STEPS: usize = 12;

/// Overwrites every variable of `varmap` with fixed values (candle's own
/// initialisers are random), so two builds of a model start alike.
fn fix_values(varmap: &VarMap) {
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (k, name) in names.into_iter().enumerate() {
        let var = &data[name];
        let n = var.elem_count();
        let t = Tensor::arange(0u32, n as u32, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let t = ((t * 0.7).unwrap() + k as f64)
            .unwrap()
            .sin()
            .unwrap()
            .affine(0.3, 0.0)
            .unwrap()
            .reshape(var.shape())
            .unwrap();
        var.set(&t).unwrap();
    }
}

/// Every variable's values, by name.
fn snapshot(varmap: &VarMap) -> Vec<(String, Vec<f32>)> {
    let data = varmap.data().lock().unwrap();
    let mut all: Vec<(String, Vec<f32>)> = data
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

fn batch(rows: usize, cols: usize, phase: f64) -> Tensor {
    let t = Tensor::arange(0u32, (rows * cols) as u32, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    ((t * 0.37).unwrap() + phase)
        .unwrap()
        .cos()
        .unwrap()
        .reshape((rows, cols))
        .unwrap()
}

// ---------------------------------------------------------------- DDPG ---

struct Mlp {
    l1: Linear,
    l2: Linear,
}

impl Mlp {
    fn new(vb: VarBuilder, inputs: usize, outputs: usize) -> Result<Self> {
        Ok(Self {
            l1: linear(inputs, 16, vb.pp("l1"))?,
            l2: linear(16, outputs, vb.pp("l2"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.l2.forward(&self.l1.forward(xs)?.relu()?)
    }
}

/// Actor, critic and their targets, all in one `VarMap`.
struct Ddpg {
    varmap: VarMap,
    actor: Mlp,
    actor_target: Mlp,
    critic: Mlp,
    critic_target: Mlp,
}

const STATE: usize = 3;

impl Ddpg {
    fn new() -> Self {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let ddpg = Self {
            actor: Mlp::new(vb.pp("actor"), STATE, 1).unwrap(),
            actor_target: Mlp::new(vb.pp("actor_target"), STATE, 1).unwrap(),
            critic: Mlp::new(vb.pp("critic"), STATE + 1, 1).unwrap(),
            critic_target: Mlp::new(vb.pp("critic_target"), STATE + 1, 1).unwrap(),
            varmap,
        };
        fix_values(&ddpg.varmap);
        ddpg
    }

    fn act(actor: &Mlp, s: &Tensor) -> Result<Tensor> {
        actor.forward(s)?.tanh()
    }

    fn q(critic: &Mlp, s: &Tensor, a: &Tensor) -> Result<Tensor> {
        critic.forward(&Tensor::cat(&[s, a], 1)?)
    }

    /// The critic's TD loss against the target networks.
    fn critic_loss(&self, step: usize) -> Result<Tensor> {
        let (s, a, r, s2) = (
            batch(8, STATE, step as f64),
            batch(8, 1, 0.5 + step as f64),
            batch(8, 1, 1.5 * step as f64),
            batch(8, STATE, 2.0 + step as f64),
        );
        let next_q = Self::q(
            &self.critic_target,
            &s2,
            &Self::act(&self.actor_target, &s2)?,
        )?;
        let target = (r + (next_q * 0.99)?)?.detach();
        candle_nn::loss::mse(&Self::q(&self.critic, &s, &a)?, &target)
    }

    /// The actor's loss: minus the critic's value of its action. It
    /// backpropagates through the critic too; the actor's optimizer takes
    /// only the actor's part.
    fn actor_loss(&self, step: usize, detach_action: bool) -> Result<Tensor> {
        let s = batch(8, STATE, step as f64);
        let mut a = Self::act(&self.actor, &s)?;
        if detach_action {
            a = a.detach();
        }
        Self::q(&self.critic, &s, &a)?.mean_all()?.neg()
    }

    /// target = tau * net + (1 - tau) * target, variable by variable.
    fn soft_update(&self, net: &str, target: &str) -> Result<()> {
        let data = self.varmap.data().lock().unwrap();
        for (name, var) in data.iter() {
            if let Some(rest) = name.strip_prefix(&format!("{net}.")) {
                let t = &data[&format!("{target}.{rest}")];
                let mixed = ((var.as_tensor() * 0.05)? + (t.as_tensor() * 0.95)?)?;
                t.set(&mixed)?;
            }
        }
        Ok(())
    }
}

/// One DDPG update, generic over the optimizer as candle's own example is.
fn ddpg_update<O: Optimizer>(
    m: &Ddpg,
    actor_opt: &mut O,
    critic_opt: &mut O,
    step: usize,
    detach_action: bool,
) -> Result<()> {
    critic_opt.backward_step(&m.critic_loss(step)?)?;
    actor_opt.backward_step(&m.actor_loss(step, detach_action)?)?;
    m.soft_update("critic", "critic_target")?;
    m.soft_update("actor", "actor_target")
}

fn adamw() -> ParamsAdamW {
    ParamsAdamW {
        lr: 1e-2,
        ..ParamsAdamW::default()
    }
}

#[test]
fn ddpg_guarded_over_each_networks_own_list_is_quiet_and_identical() {
    let plain = Ddpg::new();
    let mut actor = AdamW::new(vars_under(&plain.varmap, "actor"), adamw()).unwrap();
    let mut critic = AdamW::new(vars_under(&plain.varmap, "critic"), adamw()).unwrap();

    let guarded = Ddpg::new();
    let mut g_actor = Guarded::<AdamW>::from_vars(
        vars_under(&guarded.varmap, "actor"),
        &guarded.varmap,
        adamw(),
    )
    .unwrap()
    .level_all(Level::Deny)
    .name("actor");
    // The one-line form over a list the code already built its optimizer on.
    let critic_vars = vars_under(&guarded.varmap, "critic");
    let mut g_critic = AdamW::new(critic_vars.clone(), adamw())
        .unwrap()
        .guarded_over(&critic_vars, &guarded.varmap)
        .level_all(Level::Deny)
        .name("critic");
    assert_eq!(g_actor.watched(), Watched::List);
    assert_eq!(
        g_actor.param_names(),
        [
            "actor.l1.bias",
            "actor.l1.weight",
            "actor.l2.bias",
            "actor.l2.weight"
        ]
    );

    for step in 0..STEPS {
        ddpg_update(&plain, &mut actor, &mut critic, step, false).unwrap();
        ddpg_update(&guarded, &mut g_actor, &mut g_critic, step, false).unwrap();
    }
    assert_eq!(g_actor.steps(), STEPS as u64);
    assert_eq!(snapshot(&plain.varmap), snapshot(&guarded.varmap));
    // The targets moved by the soft updates only, alike in both runs.
    assert_ne!(snapshot(&Ddpg::new().varmap), snapshot(&guarded.varmap));
}

#[test]
fn ddpg_guarded_over_the_whole_varmap_names_the_targets_and_says_how_to_adopt() {
    let m = Ddpg::new();
    let mut actor = AdamW::new(vars_under(&m.varmap, "actor"), adamw())
        .unwrap()
        .guarded(&m.varmap)
        .level(Check::Missing, Level::Deny);
    assert_eq!(actor.watched(), Watched::VarMap);
    let before = snapshot(&m.varmap);
    let err = actor
        .backward_step(&m.actor_loss(0, false).unwrap())
        .unwrap_err();
    let anomaly = Error::denied_in(&err).unwrap();
    assert_eq!(anomaly.check, Check::Missing);
    // Every variable the actor's optimizer does not train, nothing else.
    assert!(anomaly
        .params
        .iter()
        .all(|p| p.starts_with("actor_target.") || p.starts_with("critic_target.")));
    assert_eq!(anomaly.params.len(), 8);
    assert!(anomaly.help().contains("Guarded::from_vars"));
    assert_eq!(snapshot(&m.varmap), before, "a denied step changes nothing");
}

#[test]
fn ddpg_actor_trained_through_a_detached_action_is_missing_at_step_1() {
    let m = Ddpg::new();
    let mut actor = Guarded::<AdamW>::from_vars(vars_under(&m.varmap, "actor"), &m.varmap, adamw())
        .unwrap()
        .level_all(Level::Deny);
    let mut critic =
        Guarded::<AdamW>::from_vars(vars_under(&m.varmap, "critic"), &m.varmap, adamw())
            .unwrap()
            .level_all(Level::Deny);
    let err = ddpg_update(&m, &mut actor, &mut critic, 0, true).unwrap_err();
    let anomaly = Error::denied_in(&err).unwrap();
    assert_eq!((anomaly.check, anomaly.step), (Check::Missing, 1));
    assert_eq!(anomaly.params.len(), 4);
    assert!(anomaly.params.iter().all(|p| p.starts_with("actor.l")));
    // The optimizer trains these: the message is about the bug, not adoption.
    assert!(!anomaly.help().contains("from_vars"));
    assert_eq!(critic.steps(), 1, "the critic's step was clean");
}

// ------------------------------------------------- frozen base + adapters ---

/// A frozen linear layer with a trainable low-rank adapter: W x + B (A x).
struct Adapted {
    base: Linear,
    down: Linear,
    up: Linear,
}

impl Adapted {
    fn new(vb: VarBuilder, size: usize, rank: usize) -> Result<Self> {
        Ok(Self {
            base: linear(size, size, vb.pp("base"))?,
            down: candle_nn::linear_no_bias(size, rank, vb.pp("adapter.down"))?,
            up: candle_nn::linear_no_bias(rank, size, vb.pp("adapter.up"))?,
        })
    }
}

impl Module for Adapted {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.base.forward(xs)? + self.up.forward(&self.down.forward(xs)?)?
    }
}

struct Finetune {
    varmap: VarMap,
    layers: Vec<Adapted>,
}

impl Finetune {
    fn new() -> Self {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let layers = (0..3)
            .map(|i| Adapted::new(vb.pp(format!("layer{i}")), 6, 2).unwrap())
            .collect();
        fix_values(&varmap);
        Self { varmap, layers }
    }

    fn loss(&self, micro: usize) -> Tensor {
        let mut xs = batch(4, 6, micro as f64);
        for l in &self.layers {
            xs = l.forward(&xs).unwrap().tanh().unwrap();
        }
        candle_nn::loss::mse(&xs, &batch(4, 6, 0.3 * micro as f64)).unwrap()
    }

    /// The adapters' variables: what fine-tuning trains.
    fn adapters(&self) -> Vec<Var> {
        let data = self.varmap.data().lock().unwrap();
        let mut named: Vec<(&String, &Var)> = data
            .iter()
            .filter(|(n, _)| n.contains(".adapter."))
            .collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        named.into_iter().map(|(_, v)| v.clone()).collect()
    }
}

const MICRO: usize = 4;

#[test]
fn adapters_over_a_frozen_base_with_declared_accumulation_are_quiet_and_identical() {
    // Plain candle: sum the micro-batches' losses' gradients by hand.
    let plain = Finetune::new();
    let mut sgd = SGD::new(plain.adapters(), 0.05).unwrap();
    let guarded = Finetune::new();
    let mut opt = Guarded::<SGD>::from_vars(guarded.adapters(), &guarded.varmap, 0.05)
        .unwrap()
        .accumulation_steps(MICRO as u32)
        .level_all(Level::Deny);
    assert_eq!(opt.param_names().len(), 6);

    for step in 0..STEPS {
        let mut sum: Option<candle_core::backprop::GradStore> = None;
        for micro in 0..MICRO {
            let grads = plain.loss(step * MICRO + micro).backward().unwrap();
            sum = Some(match sum {
                None => grads,
                Some(mut acc) => {
                    for v in plain.adapters() {
                        let g = (acc.get(&v).unwrap() + grads.get(&v).unwrap()).unwrap();
                        acc.insert(&v, g);
                    }
                    acc
                }
            });
        }
        sgd.step(&sum.unwrap()).unwrap();

        for micro in 0..MICRO {
            opt.backward(&guarded.loss(step * MICRO + micro)).unwrap();
        }
        let report = opt.step().unwrap();
        assert_eq!(report.passes, MICRO as u32);
        opt.zero_grad();
    }
    assert_eq!(snapshot(&plain.varmap), snapshot(&guarded.varmap));
    let base: Vec<_> = snapshot(&guarded.varmap)
        .into_iter()
        .filter(|(n, _)| n.contains(".base."))
        .collect();
    let untouched: Vec<_> = snapshot(&Finetune::new().varmap)
        .into_iter()
        .filter(|(n, _)| n.contains(".base."))
        .collect();
    assert_eq!(base, untouched, "the frozen base never moves");
}

#[test]
fn adapters_without_zero_grad_are_accumulated_at_step_2() {
    let m = Finetune::new();
    let mut opt = Guarded::<SGD>::from_vars(m.adapters(), &m.varmap, 0.05)
        .unwrap()
        .accumulation_steps(MICRO as u32)
        .level(Check::Accumulated, Level::Deny);
    for step in 0..2 {
        for micro in 0..MICRO {
            opt.backward(&m.loss(step * MICRO + micro)).unwrap();
        }
        match opt.step() {
            Ok(report) => assert_eq!(step, 0, "{report:?}"),
            Err(err) => {
                let a = err.anomaly().unwrap();
                assert_eq!((step, a.check, a.step), (1, Check::Accumulated, 2));
                assert_eq!((a.passes, a.reapplied), (2 * MICRO as u32, MICRO as u32));
                assert_eq!(a.params.len(), 6);
                assert!(a.params.iter().all(|p| p.contains(".adapter.")));
            }
        }
        // no zero_grad(): the bug
    }
}

// ---------------------------------------------------- student / teacher ---

struct Distill {
    varmap: VarMap,
    teacher: Mlp,
    student: Mlp,
}

impl Distill {
    fn new() -> Self {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let d = Self {
            teacher: Mlp::new(vb.pp("teacher"), 5, 4).unwrap(),
            student: Mlp::new(vb.pp("student"), 5, 4).unwrap(),
            varmap,
        };
        fix_values(&d.varmap);
        d
    }

    /// The student matches the teacher's soft targets. The teacher is not
    /// detached: its gradients are computed and must not be applied.
    fn loss(&self, step: usize) -> Tensor {
        let x = batch(6, 5, step as f64);
        // A softmax with a backward pass: the teacher's gradients exist.
        let soft = candle_nn::ops::softmax(&self.teacher.forward(&x).unwrap(), 1).unwrap();
        let log_p = candle_nn::ops::log_softmax(&self.student.forward(&x).unwrap(), 1).unwrap();
        (soft * log_p).unwrap().sum_all().unwrap().neg().unwrap()
    }
}

#[test]
fn a_student_next_to_its_teacher_is_quiet_and_identical_in_pytorch_style() {
    let plain = Distill::new();
    let mut sgd = SGD::new(vars_under(&plain.varmap, "student"), 0.1).unwrap();
    let guarded = Distill::new();
    let mut opt =
        Guarded::<SGD>::from_vars(vars_under(&guarded.varmap, "student"), &guarded.varmap, 0.1)
            .unwrap()
            .level_all(Level::Deny);
    for step in 0..STEPS {
        sgd.backward_step(&plain.loss(step)).unwrap();
        opt.backward(&guarded.loss(step)).unwrap();
        assert!(opt.step().unwrap().is_clean());
        opt.zero_grad();
    }
    assert_eq!(snapshot(&plain.varmap), snapshot(&guarded.varmap));
    let teacher = |v: &VarMap| {
        snapshot(v)
            .into_iter()
            .filter(|(n, _)| n.starts_with("teacher."))
            .collect::<Vec<_>>()
    };
    assert_eq!(teacher(&guarded.varmap), teacher(&Distill::new().varmap));
}

#[test]
fn a_student_without_zero_grad_is_accumulated_at_step_2() {
    let m = Distill::new();
    let mut opt = Guarded::<SGD>::from_vars(vars_under(&m.varmap, "student"), &m.varmap, 0.1)
        .unwrap()
        .level(Check::Accumulated, Level::Deny);
    let before_step_2 = {
        opt.backward(&m.loss(0)).unwrap();
        opt.step().unwrap();
        snapshot(&m.varmap)
    };
    opt.backward(&m.loss(1)).unwrap();
    let a = opt.step().unwrap_err().anomaly().unwrap().clone();
    assert_eq!((a.check, a.step), (Check::Accumulated, 2));
    assert!(a.params.iter().all(|p| p.starts_with("student.")));
    assert_eq!(
        snapshot(&m.varmap),
        before_step_2,
        "a denied step changes nothing"
    );
}

#[test]
fn guarded_over_a_list_applies_only_that_list_whatever_the_optimizer_holds() {
    // The optimizer was built over the whole VarMap by mistake; the guard
    // over the student's list applies the student's gradients only, in both
    // styles, although the teacher's are in every store.
    let m = Distill::new();
    let student = vars_under(&m.varmap, "student");
    let teacher_before: Vec<_> = snapshot(&m.varmap)
        .into_iter()
        .filter(|(n, _)| n.starts_with("teacher."))
        .collect();
    let mut opt = SGD::new(m.varmap.all_vars(), 0.1)
        .unwrap()
        .guarded_over(&student, &m.varmap)
        .level_all(Level::Deny);
    let grads = m.loss(0).backward().unwrap();
    assert!(vars_under(&m.varmap, "teacher")
        .iter()
        .all(|v| grads.get(v).is_some()));
    opt.step_with(&grads).unwrap();
    opt.backward(&m.loss(1)).unwrap();
    opt.step().unwrap();
    let teacher_after: Vec<_> = snapshot(&m.varmap)
        .into_iter()
        .filter(|(n, _)| n.starts_with("teacher."))
        .collect();
    assert_eq!(teacher_after, teacher_before);
    assert_eq!(opt.steps(), 2);
}

#[test]
fn a_guard_over_a_varmap_with_extra_listed_vars_still_watches_the_varmap() {
    let m = Distill::new();
    let opt = Guarded::new(SGD::new(m.varmap.all_vars(), 0.1).unwrap())
        .with_varmap(&m.varmap)
        .with_vars(Vec::new());
    assert_eq!(opt.watched(), Watched::VarMap);
    assert_eq!(opt.param_names().len(), 8);
}

#[test]
fn vars_under_ignores_a_trailing_dot_and_takes_everything_for_no_prefix() {
    let m = Distill::new();
    assert_eq!(vars_under(&m.varmap, "student.").len(), 4);
    assert_eq!(vars_under(&m.varmap, "").len(), 8);
}

#[test]
fn with_varmap_names_a_listed_guard_without_widening_it() {
    let m = Distill::new();
    let vars = vars_under(&m.varmap, "student");
    let opt = Guarded::new(SGD::new(vars.clone(), 0.1).unwrap()).with_vars(vars);
    assert_eq!(opt.param_names()[0], "param0");
    let opt = opt.with_varmap(&m.varmap);
    assert_eq!(
        opt.param_names(),
        [
            "student.l1.bias",
            "student.l1.weight",
            "student.l2.bias",
            "student.l2.weight"
        ]
    );
    // candle's generic constructor builds a listed guard too.
    let opt = <Guarded<SGD> as Optimizer>::new(vars_under(&m.varmap, "teacher"), 0.1)
        .unwrap()
        .with_varmap(&m.varmap);
    assert_eq!(opt.param_names().len(), 4);
    assert!(opt.param_names().iter().all(|n| n.starts_with("teacher.")));
}
