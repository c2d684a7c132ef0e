//! Optimizers with PyTorch's exact update rules, state keyed by checkpoint key so it can be
//! saved with a checkpoint and restored into a freshly loaded model.
//!
//! Gradients are collected into a [`Grads`] map (summed across calls, which is how `gd`
//! accumulates the whole training set into one step) and applied by [`Optimizer::step`].

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Gradients, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::model::params::{INTERNAL_HEAD, KeyPath};

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Full-batch gradient descent: one SGD step per epoch on the gradient of the whole
    /// training set (the trainer accumulates it).
    Gd,
    /// `torch.optim.SGD` (momentum, dampening 0, Nesterov, L2 weight decay).
    Sgd,
    /// `torch.optim.Adam` (weight decay as L2 added to the gradient).
    Adam,
    /// `torch.optim.AdamW` (decoupled weight decay).
    AdamW,
}

impl std::str::FromStr for OptimizerKind {
    type Err = Error;

    /// Parses `gd`, `sgd`, `adam`, `adamw`.
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "gd" => Ok(Self::Gd),
            "sgd" => Ok(Self::Sgd),
            "adam" => Ok(Self::Adam),
            "adamw" => Ok(Self::AdamW),
            other => Err(Error::invalid(format!(
                "unknown optimizer `{other}` (known: gd, sgd, adam, adamw)"
            ))),
        }
    }
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Gd => "gd",
            Self::Sgd => "sgd",
            Self::Adam => "adam",
            Self::AdamW => "adamw",
        })
    }
}

crate::text_setting!(OptimizerKind);

/// Adam's `(beta1, beta2)`: `B1,B2` as a flag, `[B1, B2]` in TOML.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Betas(pub [f64; 2]);

impl std::str::FromStr for Betas {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let bad = || {
            Error::invalid(format!(
                "--betas expects B1,B2 with both in [0, 1), got `{s}`"
            ))
        };
        let [b1, b2] = parts.as_slice() else {
            return Err(bad());
        };
        let parse = |b: &str| {
            b.parse::<f64>()
                .ok()
                .filter(|b| (0.0..1.0).contains(b))
                .ok_or_else(bad)
        };
        Ok(Betas([parse(b1)?, parse(b2)?]))
    }
}

impl std::fmt::Display for Betas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.0[0], self.0[1])
    }
}

/// Hyper-parameters of the update rule (the learning rate comes with each step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimizerConfig {
    /// The update rule.
    pub kind: OptimizerKind,
    /// SGD's momentum factor (0: none).
    pub momentum: f64,
    /// SGD: Nesterov momentum.
    pub nesterov: bool,
    /// Adam/AdamW's decay rates of the first and second moment estimates.
    pub betas: (f64, f64),
    /// Adam/AdamW: added to the square root of the second moment (PyTorch's default 1e-8).
    pub eps: f64,
    /// L2 penalty (SGD, Adam) or decoupled decay (AdamW); 0 for none.
    pub weight_decay: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Sgd,
            momentum: 0.0,
            nesterov: false,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Gradients by checkpoint key, flattened to 1-D, summed over [`Grads::accumulate`] calls.
#[derive(Default)]
pub struct Grads {
    map: BTreeMap<String, FlatGrad>,
}

/// One parameter's gradient, flat, in the order its producer stored it: HWIO for the dense
/// convolutions of channels-last training (flattened without a copy, and the parameter is then
/// updated and kept in that order: no reorder per step), logical otherwise.
struct FlatGrad {
    values: Tensor<1>,
    hwio: bool,
    shape: Vec<usize>,
}

/// A flat tensor of logical shape `shape` moved from one element order to the other (HWIO or
/// logical; only 4-D tensors have two).
fn reorder(flat: Tensor<1>, shape: &[usize], from_hwio: bool, to_hwio: bool) -> Tensor<1> {
    if from_hwio == to_hwio || shape.len() != 4 {
        return flat;
    }
    let dims = [shape[0], shape[1], shape[2], shape[3]];
    let logical: Tensor<4> = crate::kernels::unflatten(flat, dims, from_hwio);
    crate::kernels::flatten(logical, to_hwio)
}

impl Grads {
    /// Moves the gradients of `model`'s trainable parameters out of `grads` and adds them.
    pub fn accumulate<M: Module>(&mut self, model: &M, grads: &mut Gradients) {
        struct Take<'a> {
            path: KeyPath,
            grads: &'a mut Gradients,
            map: &'a mut BTreeMap<String, FlatGrad>,
        }
        impl ModuleVisitor for Take<'_> {
            fn enter_module(&mut self, name: &str, container: &str) {
                self.path.enter(name, container);
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.path.exit();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let Some(g) = param.grad_remove(self.grads) else {
                    return;
                };
                let hwio = crate::kernels::is_hwio(&g);
                let shape = g.dims().to_vec();
                let g = crate::kernels::flatten(g, hwio);
                let key = self.path.key();
                let sum = match self.map.remove(&key) {
                    Some(prev) => FlatGrad {
                        values: prev.values + reorder(g, &shape, hwio, prev.hwio),
                        ..prev
                    },
                    None => FlatGrad {
                        values: g,
                        hwio,
                        shape,
                    },
                };
                self.map.insert(key, sum);
            }
        }
        model.visit(&mut Take {
            path: KeyPath::new(INTERNAL_HEAD),
            grads,
            map: &mut self.map,
        });
    }

    /// Whether no gradient was collected.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Per-parameter optimizer state.
#[derive(Clone, Default)]
struct State {
    /// Momentum buffer (SGD) or first moment (Adam).
    m: Option<Tensor<1>>,
    /// Second moment (Adam).
    v: Option<Tensor<1>>,
    /// Steps taken on this parameter (Adam's bias correction).
    steps: u64,
    /// Whether `m` and `v` are in HWIO order (see [`FlatGrad`]), and the parameter's shape.
    hwio: bool,
    shape: Vec<usize>,
}

impl State {
    /// `m` and `v` moved to the element order of this step's gradient (a resumed run loads
    /// them in logical order; channels-last training then updates in HWIO order).
    fn align(&mut self, hwio: bool, shape: &[usize]) {
        if self.hwio != hwio {
            let (from, shape) = (self.hwio, shape.to_vec());
            self.m = self.m.take().map(|t| reorder(t, &shape, from, hwio));
            self.v = self.v.take().map(|t| reorder(t, &shape, from, hwio));
            self.hwio = hwio;
        }
        self.shape = shape.to_vec();
    }
}

/// An optimizer: configuration plus state.
pub struct Optimizer {
    /// The update rule's hyper-parameters.
    pub config: OptimizerConfig,
    state: BTreeMap<String, State>,
}

impl Optimizer {
    /// A fresh optimizer.
    pub fn new(config: OptimizerConfig) -> Self {
        Self {
            config,
            state: BTreeMap::new(),
        }
    }

    /// Applies one update to every parameter that has a gradient in `grads`.
    /// `lr_of(key)` gives each parameter's learning rate (schedules and discriminative rates).
    pub fn step<M: Module>(&mut self, model: M, grads: &Grads, lr_of: &dyn Fn(&str) -> f64) -> M {
        struct Update<'a> {
            path: KeyPath,
            opt: &'a mut Optimizer,
            grads: &'a Grads,
            lr_of: &'a dyn Fn(&str) -> f64,
        }
        impl ModuleMapper for Update<'_> {
            fn enter_module(&mut self, name: &str, container: &str) {
                self.path.enter(name, container);
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.path.exit();
            }
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let key = self.path.key();
                let Some(grad) = self.grads.map.get(&key) else {
                    return param;
                };
                let lr = (self.lr_of)(&key);
                let (id, value, mapper) = param.consume();
                // Updated in the gradient's element order, and kept in it.
                let flat = crate::kernels::flatten(value.clone().inner(), grad.hwio);
                self.opt
                    .state
                    .entry(key.clone())
                    .or_default()
                    .align(grad.hwio, &grad.shape);
                let updated = self.opt.update(&key, flat, grad.values.clone(), lr);
                let updated = crate::kernels::unflatten(updated, value.dims(), grad.hwio);
                let new =
                    Tensor::<D>::from_inner(updated).set_require_grad(value.is_require_grad());
                Param::from_mapped_value(id, new, mapper)
            }
        }
        model.map(&mut Update {
            path: KeyPath::new(INTERNAL_HEAD),
            opt: self,
            grads,
            lr_of,
        })
    }

    /// The update rule for one flattened parameter `p` with gradient `g`.
    fn update(&mut self, key: &str, p: Tensor<1>, g: Tensor<1>, lr: f64) -> Tensor<1> {
        let c = self.config;
        let st = self.state.entry(key.to_string()).or_default();
        st.steps += 1;
        match c.kind {
            OptimizerKind::Gd | OptimizerKind::Sgd => {
                // torch.optim.SGD: g += wd p; buf = mu buf + g (buf = g at first);
                // g = g + mu buf (Nesterov) or buf; p -= lr g.
                let step = crate::kernels::SgdStep {
                    lr: lr as f32,
                    momentum: c.momentum as f32,
                    weight_decay: c.weight_decay as f32,
                    nesterov: c.nesterov,
                };
                // One fused pass where graft's kernels run (same rule, same order of operations).
                if let Some((p, buf)) = crate::kernels::sgd_step(&p, &g, st.m.as_ref(), step) {
                    st.m = buf;
                    return p;
                }
                let mut g = if c.weight_decay != 0.0 {
                    g + p.clone().mul_scalar(c.weight_decay)
                } else {
                    g
                };
                if c.momentum != 0.0 {
                    let buf = match st.m.take() {
                        Some(buf) => buf.mul_scalar(c.momentum) + g.clone(),
                        None => g.clone(),
                    };
                    g = if c.nesterov {
                        g + buf.clone().mul_scalar(c.momentum)
                    } else {
                        buf.clone()
                    };
                    st.m = Some(buf);
                }
                p - g.mul_scalar(lr)
            }
            OptimizerKind::Adam | OptimizerKind::AdamW => {
                let (b1, b2) = c.betas;
                let mut p = p;
                let g = if c.kind == OptimizerKind::AdamW {
                    // AdamW: p *= 1 - lr wd (decoupled), the gradient is left alone.
                    if c.weight_decay != 0.0 {
                        p = p.mul_scalar(1.0 - lr * c.weight_decay);
                    }
                    g
                } else if c.weight_decay != 0.0 {
                    g + p.clone().mul_scalar(c.weight_decay)
                } else {
                    g
                };
                // m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2
                let m = match st.m.take() {
                    Some(m) => m.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1),
                    None => g.clone().mul_scalar(1.0 - b1),
                };
                let g2 = g.powf_scalar(2.0);
                let v = match st.v.take() {
                    Some(v) => v.mul_scalar(b2) + g2.mul_scalar(1.0 - b2),
                    None => g2.mul_scalar(1.0 - b2),
                };
                // p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
                let t = st.steps as i32;
                let bc1 = 1.0 - b1.powi(t);
                let bc2 = 1.0 - b2.powi(t);
                let denom = v.clone().sqrt().div_scalar(bc2.sqrt()).add_scalar(c.eps);
                let p = p - (m.clone() / denom).mul_scalar(lr / bc1);
                st.m = Some(m);
                st.v = Some(v);
                p
            }
        }
    }

    /// The state as named flat tensors (`{key}.m`, `{key}.v`, `{key}.steps`) for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        for (key, st) in &self.state {
            for (suffix, t) in [("m", &st.m), ("v", &st.v)] {
                if let Some(t) = t {
                    // Saved in logical order, whatever order training kept it in.
                    let t = reorder(t.clone(), &st.shape, st.hwio, false);
                    let values = crate::tensor::to_vec(t);
                    out.push((format!("{key}.{suffix}"), vec![values.len()], values));
                }
            }
            out.push((format!("{key}.steps"), vec![1], vec![st.steps as f32]));
        }
        out
    }

    /// Restores the state written by [`Optimizer::state_tensors`].
    pub fn load_state(
        &mut self,
        tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
        device: &Device,
    ) -> Result<()> {
        self.state.clear();
        for (name, (_, values)) in tensors {
            let Some(key) = name.strip_suffix(".steps") else {
                continue;
            };
            let steps = values.first().copied().unwrap_or(0.0) as u64;
            let load = |suffix: &str| -> Option<Tensor<1>> {
                tensors
                    .get(&format!("{key}.{suffix}"))
                    .map(|(_, v)| Tensor::from_data(TensorData::new(v.clone(), [v.len()]), device))
            };
            self.state.insert(
                key.to_string(),
                State {
                    m: load("m"),
                    v: load("v"),
                    steps,
                    ..State::default()
                },
            );
        }
        Ok(())
    }
}

/// The learning-rate schedule, evaluated per epoch or per step ([`ScheduleUnit`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// The base rate throughout (after any warm-up).
    Constant,
    /// Multiply by `gamma` every `every` epochs (`StepLR`).
    Step {
        /// The interval, in epochs (in steps with the step unit).
        every: usize,
        /// The factor applied at each interval.
        gamma: f64,
    },
    /// Cosine annealing to 0 over the epochs after warm-up (`CosineAnnealingLR`, eta_min 0).
    Cosine,
    /// Linear decay towards 0 over the epochs after warm-up (transformers'
    /// `get_linear_schedule_with_warmup`, per epoch): epoch e of n runs at `base * (n - e) / n`.
    Linear,
}

impl std::str::FromStr for Schedule {
    type Err = Error;

    /// Parses `constant`, `step:EVERY:GAMMA`, `cosine`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "bad schedule `{s}` (use constant, step:EVERY:GAMMA, cosine or linear)"
            ))
        };
        match s.split(':').collect::<Vec<_>>().as_slice() {
            ["constant"] => Ok(Self::Constant),
            ["cosine"] => Ok(Self::Cosine),
            ["linear"] => Ok(Self::Linear),
            ["step", every, gamma] => {
                let every: usize = every.parse().map_err(|_| bad())?;
                let gamma: f64 = gamma.parse().map_err(|_| bad())?;
                if every == 0 {
                    return Err(bad());
                }
                // gamma <= 0 would make the rate zero or negative: gradient ascent.
                if !(gamma.is_finite() && gamma > 0.0) {
                    return Err(Error::invalid(format!(
                        "schedule `{s}`: GAMMA must be a positive number (the rate is multiplied by it)"
                    )));
                }
                Ok(Self::Step { every, gamma })
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Constant => f.write_str("constant"),
            Self::Step { every, gamma } => write!(f, "step:{every}:{gamma}"),
            Self::Cosine => f.write_str("cosine"),
            Self::Linear => f.write_str("linear"),
        }
    }
}

crate::text_setting!(Schedule);

/// Whether the schedule advances once an epoch or at every optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleUnit {
    /// PyTorch's `scheduler.step()` after each epoch (torchvision's recipes).
    Epoch,
    /// transformers' `get_*_schedule_with_warmup`, stepped after every optimizer step.
    Step,
}

impl std::str::FromStr for ScheduleUnit {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "epoch" => Ok(Self::Epoch),
            "step" => Ok(Self::Step),
            _ => Err(Error::invalid(format!(
                "bad schedule unit `{s}` (use epoch or step)"
            ))),
        }
    }
}

impl std::fmt::Display for ScheduleUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Epoch => "epoch",
            Self::Step => "step",
        })
    }
}

crate::text_setting!(ScheduleUnit);

/// The learning rate of every optimizer step of one epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochRates {
    /// The base learning rate (the `lr` setting).
    pub base: f64,
    /// How the rate changes over the run.
    pub schedule: Schedule,
    /// Whether the schedule advances per epoch or per optimizer step.
    pub unit: ScheduleUnit,
    /// 0-based.
    pub epoch: usize,
    /// Epochs in the whole run.
    pub epochs: usize,
    /// Optimizer steps in an epoch (1 for full-batch `gd`).
    pub steps_per_epoch: usize,
    /// Warm-up in epochs (either unit) ...
    pub warmup_epochs: usize,
    /// ... plus, with the step unit, this fraction of all steps (rounded up, as transformers'
    /// `warmup_ratio`).
    pub warmup_ratio: f64,
}

impl EpochRates {
    /// The rate of optimizer step `step` (0-based) of the epoch.
    pub fn at(&self, step: usize) -> f64 {
        match self.unit {
            ScheduleUnit::Epoch => {
                self.schedule
                    .lr(self.base, self.epoch, self.epochs, self.warmup_epochs)
            }
            ScheduleUnit::Step => {
                let total = self.epochs * self.steps_per_epoch;
                let warmup = self.warmup_epochs * self.steps_per_epoch
                    + (self.warmup_ratio * total as f64).ceil() as usize;
                let global = self.epoch * self.steps_per_epoch + step;
                self.schedule.lr_at_step(self.base, global, total, warmup)
            }
        }
    }

    /// The rate the epoch ends with (its last step's), for the metrics line.
    pub fn last(&self) -> f64 {
        self.at(self.steps_per_epoch.saturating_sub(1))
    }
}

impl Schedule {
    /// The learning rate of optimizer step `step` (0-based) of `total`, after `warmup` steps of
    /// linear warm-up from 0 — exactly transformers' `get_{constant,linear,cosine}_schedule_
    /// with_warmup` (step `s` runs at `base * s / warmup` while warming up; linear decays to 0 at
    /// `total`, cosine by half a period). `step:EVERY:GAMMA` counts `EVERY` in steps here.
    pub fn lr_at_step(&self, base: f64, step: usize, total: usize, warmup: usize) -> f64 {
        if step < warmup {
            return base * step as f64 / warmup.max(1) as f64;
        }
        let after = (step - warmup) as f64;
        let span = total.saturating_sub(warmup).max(1) as f64;
        match *self {
            Self::Constant => base,
            Self::Step { every, gamma } => base * gamma.powi(((step - warmup) / every) as i32),
            Self::Linear => base * ((total.saturating_sub(step)) as f64 / span).max(0.0),
            Self::Cosine => {
                base * (0.5 * (1.0 + (std::f64::consts::PI * after / span).cos())).max(0.0)
            }
        }
    }

    /// The learning rate of `epoch` (0-based) out of `epochs`, after `warmup` linear warm-up
    /// epochs (epoch e < warmup uses base * (e + 1) / (warmup + 1)).
    pub fn lr(&self, base: f64, epoch: usize, epochs: usize, warmup: usize) -> f64 {
        if epoch < warmup {
            return base * (epoch + 1) as f64 / (warmup + 1) as f64;
        }
        let e = epoch - warmup;
        let span = epochs.saturating_sub(warmup).max(1);
        match *self {
            Self::Constant => base,
            Self::Step { every, gamma } => base * gamma.powi((e / every) as i32),
            Self::Cosine => {
                base * 0.5 * (1.0 + (std::f64::consts::PI * e as f64 / span as f64).cos())
            }
            Self::Linear => base * span.saturating_sub(e) as f64 / span as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every optimizer step's rate equals transformers' `get_*_schedule_with_warmup`
    /// (tests/fixtures/goldens/step_schedules.json, from tools/text_goldens.py).
    #[test]
    fn step_schedules_match_transformers() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/goldens/step_schedules.json"
        );
        let golden: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let num = |k: &str| golden[k].as_f64().unwrap();
        let (epochs, steps) = (num("epochs") as usize, num("steps_per_epoch") as usize);
        for (name, schedule) in [
            ("constant", Schedule::Constant),
            ("linear", Schedule::Linear),
            ("cosine", Schedule::Cosine),
        ] {
            let want: Vec<f64> = golden["rates"][name]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(want.len(), epochs * steps);
            for epoch in 0..epochs {
                let rates = EpochRates {
                    base: num("base"),
                    schedule,
                    unit: ScheduleUnit::Step,
                    epoch,
                    epochs,
                    steps_per_epoch: steps,
                    warmup_epochs: 0,
                    warmup_ratio: num("warmup_ratio"),
                };
                for step in 0..steps {
                    let (got, want) = (rates.at(step), want[epoch * steps + step]);
                    assert!(
                        (got - want).abs() <= 1e-12 * want.abs().max(1e-30),
                        "{name} epoch {epoch} step {step}: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// The epoch unit keeps one rate for a whole epoch (PyTorch's per-epoch `scheduler.step()`).
    #[test]
    fn epoch_unit_is_constant_within_an_epoch() {
        let rates = EpochRates {
            base: 0.1,
            schedule: Schedule::Cosine,
            unit: ScheduleUnit::Epoch,
            epoch: 1,
            epochs: 4,
            steps_per_epoch: 5,
            warmup_epochs: 0,
            warmup_ratio: 0.0,
        };
        assert_eq!(rates.at(0), rates.at(4));
        assert_eq!(rates.last(), Schedule::Cosine.lr(0.1, 1, 4, 0));
    }
}
