//! Parameters by checkpoint key: the one place where module paths become the names found in
//! PyTorch checkpoints, and where weights are copied into (or out of) a model by those names.
//!
//! The conventions are generic: enum variants (`Backbone::ResNet`) and a root `backbone` field
//! are not part of the keys, a root `head` field is written under the checkpoint's head name
//! (`fc`, `_fc`), and a family's [`KeyRename`](super::KeyRename)s apply (ResNet's
//! `downsample.conv` is torchvision's `downsample.0`). So the module path
//! `backbone.ResNet.layer1.0.downsample.conv.weight` is the key `layer1.0.downsample.0.weight`.
//! Every function here works on any module built that way.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::{Flag, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};
use crate::weights::TensorMap;

/// The head's name in keys that never leave graft (optimizer state, gradient maps).
pub const INTERNAL_HEAD: &str = "head";

/// Tracks the module path during a visit and turns it into a checkpoint key.
#[derive(Default)]
pub(crate) struct KeyPath {
    parts: Vec<String>,
    head_name: String,
}

impl KeyPath {
    pub(crate) fn new(head_name: &str) -> Self {
        Self {
            parts: Vec::new(),
            head_name: head_name.to_string(),
        }
    }

    pub(crate) fn enter(&mut self, name: &str, container: &str) {
        // Enum variants (`Backbone::ResNet`) are not part of the checkpoint's names; an empty
        // entry keeps enter/exit balanced.
        let part =
            if container.starts_with("Enum:") || (self.parts.is_empty() && name == "backbone") {
                String::new()
            } else if self.parts.is_empty() && name == "head" {
                self.head_name.clone()
            } else if let Some(key) = super::backbone::key_rename(container, name) {
                key.to_string()
            } else {
                name.to_string()
            };
        self.parts.push(part);
    }

    pub(crate) fn exit(&mut self) {
        self.parts.pop();
    }

    pub(crate) fn key(&self) -> String {
        let parts: Vec<&str> = self
            .parts
            .iter()
            .map(String::as_str)
            .filter(|p| !p.is_empty())
            .collect();
        parts.join(".")
    }

    pub(crate) fn is_head(&self) -> bool {
        self.parts.first().is_some_and(|p| *p == self.head_name)
    }
}

/// Every float tensor of `model` (parameters and BatchNorm running statistics) under its
/// checkpoint key, in module order: `(key, shape, values)`.
pub fn named_tensors<M: Module>(model: &M, head_name: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    struct Collect {
        path: KeyPath,
        out: Vec<(String, Vec<usize>, Vec<f32>)>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.path.enter(name, container);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            let shape = t.dims().to_vec();
            let values = crate::tensor::to_vec(t);
            self.out.push((self.path.key(), shape, values));
        }
    }
    let mut v = Collect {
        path: KeyPath::new(head_name),
        out: Vec::new(),
    };
    // BatchNorm running statistics (burn `RunningState`) can hold their last update pending;
    // `valid()` synchronises them, and the snapshot it returns shares the same values.
    model.valid().visit(&mut v);
    v.out
}

/// Keys whose absence or presence never matters: PyTorch BatchNorm bookkeeping, and BERT's
/// `position_ids` buffer (`0..max_positions`, rebuilt on every forward pass).
fn is_bookkeeping(key: &str) -> bool {
    key.ends_with("num_batches_tracked") || key.ends_with("embeddings.position_ids")
}

/// How strictly a checkpoint must match the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Every tensor of the model must be in the file with the same shape, and the file may hold
    /// nothing else.
    Strict,
    /// As strict for the backbone; the head is loaded only if the file has it with the same
    /// shape (a new head of another width, or a headless file, keeps its fresh init), and extra
    /// tensors are reported, not fatal.
    SkipHead,
}

/// What a load did, for the user.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Tensors copied from the file into the model.
    pub loaded: usize,
    /// Head tensors left at their fresh init because the file's head has another shape.
    pub head_skipped: Vec<String>,
    /// Tensors in the file that the model does not have.
    pub unused: Vec<String>,
}

/// Copies the tensors of `weights` into `model` by checkpoint key.
///
/// Missing or mis-shaped tensors are all reported at once, by name with both shapes.
pub fn load_into<M: Module>(
    model: M,
    weights: &TensorMap,
    head_name: &str,
    strictness: Strictness,
) -> Result<(M, LoadReport)> {
    struct Load<'a> {
        path: KeyPath,
        weights: &'a TensorMap,
        strictness: Strictness,
        used: BTreeSet<String>,
        problems: Vec<String>,
        report: LoadReport,
    }
    impl ModuleMapper for Load<'_> {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.path.enter(name, container);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let key = self.path.key();
            let expected = param.dims().to_vec();
            let Some(raw) = self.weights.get(&key) else {
                if self.path.is_head() && self.strictness == Strictness::SkipHead {
                    // A headless checkpoint (an encoder, a feature extractor): the new head
                    // keeps its fresh init.
                    self.report.head_skipped.push(key);
                } else {
                    self.problems
                        .push(format!("missing `{key}` (model expects {expected:?})"));
                }
                return param;
            };
            self.used.insert(key.clone());
            if raw.shape != expected {
                if self.path.is_head() && self.strictness == Strictness::SkipHead {
                    self.report.head_skipped.push(key);
                } else {
                    self.problems.push(format!(
                        "`{key}` has shape {:?} in the file, the model expects {expected:?}",
                        raw.shape
                    ));
                }
                return param;
            }
            if !raw.dtype.is_float() {
                self.problems.push(format!(
                    "`{key}` holds {} values in the file; a float tensor is expected",
                    raw.dtype
                ));
                return param;
            }
            if let Some(bad) = invalid_value(&key, &raw.data) {
                self.problems.push(format!("`{key}` {bad}"));
                return param;
            }
            let (id, old, mapper) = param.consume();
            let data = TensorData::new(raw.data.clone(), raw.shape.clone());
            let value =
                Tensor::<D>::from_data(data, &old.device()).set_require_grad(old.is_require_grad());
            self.report.loaded += 1;
            Param::from_mapped_value(id, value, mapper)
        }
        fn map_flag(&mut self, flag: Param<Flag>) -> Param<Flag> {
            flag
        }
    }
    let mut loader = Load {
        path: KeyPath::new(head_name),
        weights,
        strictness,
        used: BTreeSet::new(),
        problems: Vec::new(),
        report: LoadReport::default(),
    };
    let model = model.map(&mut loader);
    let unused: Vec<String> = weights
        .names()
        .filter(|k| !loader.used.contains(*k) && !is_bookkeeping(k))
        .map(str::to_string)
        .collect();
    if strictness == Strictness::Strict && !unused.is_empty() {
        loader.problems.push(format!(
            "unexpected tensors in the file: {}",
            summarize(&unused)
        ));
    }
    if !loader.problems.is_empty() {
        const SHOW: usize = 12;
        let n = loader.problems.len();
        let mut lines = loader.problems[..n.min(SHOW)].join("\n  ");
        if n > SHOW {
            lines.push_str(&format!("\n  ... and {} more", n - SHOW));
        }
        return Err(Error::invalid(format!(
            "the weights cannot be loaded into the model ({n} problem(s)):\n  {lines}"
        )));
    }
    loader.report.unused = unused;
    Ok((model, loader.report))
}

/// Why the values of tensor `key` cannot be used: a NaN or infinity anywhere, or a negative
/// BatchNorm variance (the square root of it would be NaN in every prediction).
fn invalid_value(key: &str, values: &[f32]) -> Option<String> {
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Some(format!("holds {} at element {i}", values[i]));
    }
    if key.ends_with("running_var")
        && let Some(i) = values.iter().position(|&v| v < 0.0)
    {
        return Some(format!(
            "holds a negative variance ({}) at element {i}",
            values[i]
        ));
    }
    None
}

fn summarize(keys: &[String]) -> String {
    const SHOW: usize = 8;
    let mut s = keys
        .iter()
        .take(SHOW)
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOW {
        s.push_str(&format!(" and {} more", keys.len() - SHOW));
    }
    s
}

/// Which parts of a model train. Keys are checkpoint keys (`layer4.1.conv2.weight`).
pub struct Trainable<'a> {
    /// Whether the tensor with this key receives gradients.
    pub param: &'a dyn Fn(&str) -> bool,
    /// Whether the BatchNorm whose parameters live under this key prefix (e.g. `layer1.0.bn1`)
    /// normalises with batch statistics and updates its running statistics.
    pub batch_norm: &'a dyn Fn(&str) -> bool,
}

/// Applies a [`Trainable`] policy: sets `require_grad` per parameter and the BatchNorm flags.
pub fn set_trainable<M: Module>(model: M, head_name: &str, policy: &Trainable<'_>) -> M {
    struct Apply<'a, 'b> {
        path: KeyPath,
        policy: &'a Trainable<'b>,
    }
    impl ModuleMapper for Apply<'_, '_> {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.path.enter(name, container);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let key = self.path.key();
            if key.ends_with("running_mean") || key.ends_with("running_var") {
                return param;
            }
            param.set_require_grad((self.policy.param)(&key))
        }
        fn map_flag(&mut self, flag: Param<Flag>) -> Param<Flag> {
            // The flag's own path ends in `training`; its BatchNorm is the parent.
            let key = self.path.key();
            let owner = key.strip_suffix(".training").unwrap_or(&key);
            flag.with_value((self.policy.batch_norm)(owner))
        }
    }
    model.map(&mut Apply {
        path: KeyPath::new(head_name),
        policy,
    })
}

/// Parameter counts: (all float parameters excluding running statistics, trainable ones).
pub fn count_params<M: Module>(model: &M) -> (usize, usize) {
    struct Count {
        path: KeyPath,
        total: usize,
        trainable: usize,
    }
    impl ModuleVisitor for Count {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.path.enter(name, container);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let key = self.path.key();
            if key.ends_with("running_mean") || key.ends_with("running_var") {
                return;
            }
            let n: usize = param.dims().iter().product();
            self.total += n;
            if param.is_require_grad() {
                self.trainable += n;
            }
        }
    }
    let mut c = Count {
        path: KeyPath::new(INTERNAL_HEAD),
        total: 0,
        trainable: 0,
    };
    model.visit(&mut c);
    (c.total, c.trainable)
}

/// Tensors as a name → (shape, values) map, e.g. to compare two models.
pub fn tensor_map<M: Module>(
    model: &M,
    head_name: &str,
) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    named_tensors(model, head_name)
        .into_iter()
        .map(|(k, s, v)| (k, (s, v)))
        .collect()
}
