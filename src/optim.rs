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
    pub kind: OptimizerKind,
    pub momentum: f64,
    pub nesterov: bool,
    pub betas: (f64, f64),
    pub eps: f64,
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

/// The learning-rate schedule, evaluated per epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `every` epochs (`StepLR`).
    Step {
        every: usize,
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

impl Schedule {
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
