//! Finding a state dict's tensors and their storages in a decoded pickle.

use std::path::Path;

use super::globals::storage_dtype;
use super::value::{Entry, Id, Pickle, StorageRef, Value, as_usize, key_string, kind};
use crate::error::{Error, Result};

impl Pickle {
    /// Every storage referenced anywhere in the pickle, in order of appearance, including those
    /// of tensors outside the state dict (the legacy format needs their element sizes to skip
    /// over their bytes).
    pub fn storages(&self, file: &Path) -> Result<Vec<StorageRef>> {
        let mut out = Vec::new();
        for (id, v) in self.values.iter().enumerate() {
            if let Value::PersistentId(_) = v {
                out.push(
                    self.storage_ref(id).map_err(|m| {
                        Error::file(file, format!("invalid storage reference: {m}"))
                    })?,
                );
            }
        }
        Ok(out)
    }

    /// Decodes `('storage', storage_type, key, location, numel[, view_metadata])`.
    pub fn storage_ref(&self, pid: Id) -> std::result::Result<StorageRef, String> {
        let Value::PersistentId(inner) = self.get(pid) else {
            return Err(format!(
                "expected a persistent storage id, found {}",
                kind(self.get(pid))
            ));
        };
        let Value::Tuple(items) = self.get(*inner) else {
            return Err(format!(
                "persistent id is {}, expected a tuple",
                kind(self.get(*inner))
            ));
        };
        let item = |i: usize| self.get(items.get(i).copied().unwrap_or(usize::MAX));
        let tag_ok = match item(0) {
            Value::Str(s) => s == "storage",
            Value::Bytes(b) => b == b"storage",
            _ => false,
        };
        if !tag_ok || !(items.len() == 5 || items.len() == 6) {
            return Err(format!(
                "persistent id is not ('storage', type, key, location, numel[, view]) \
                 ({} items, first is {})",
                items.len(),
                kind(item(0))
            ));
        }
        let dtype = match item(1) {
            Value::Global { module, name } => storage_dtype(module, name)
                .ok_or_else(|| format!("`{module}.{name}` is not a storage type"))?,
            other => {
                return Err(format!(
                    "storage type is {}, expected a global",
                    kind(other)
                ));
            }
        };
        let key = key_string(item(2)).ok_or("storage key is not a string")?;
        let numel = as_usize(item(4)).ok_or("storage size is not a non-negative integer")?;
        let view = match item(5) {
            Value::None => None,
            Value::Tuple(v) if v.len() == 3 => {
                let g = |i: usize| self.get(v.get(i).copied().unwrap_or(usize::MAX));
                match (key_string(g(0)), as_usize(g(1)), as_usize(g(2))) {
                    (Some(k), Some(o), Some(n)) => Some((k, o, n)),
                    _ => return Err("malformed storage view metadata".into()),
                }
            }
            other => {
                return Err(format!(
                    "storage view metadata is {}, expected None or a 3-tuple",
                    kind(other)
                ));
            }
        };
        Ok(StorageRef {
            dtype,
            key,
            numel,
            view,
        })
    }

    /// Finds the state dict and its tensors.
    ///
    /// The root must be a dict of name → tensor. `{"state_dict": {...}}`, `{"model": {...}}`
    /// and `{"model_state_dict": {...}}` training checkpoints are unwrapped; entries that are
    /// not tensors (`epoch`, optimizer state, ...) are skipped.
    pub fn state_dict(&self, file: &Path) -> Result<Vec<Entry>> {
        let mut dict = self.root;
        // A few levels cover `{"model": {"state_dict": ...}}`-style nesting; no loops possible.
        for _ in 0..4 {
            let Value::Dict(items) = self.get(dict) else {
                return Err(Error::file(
                    file,
                    format!(
                        "expected a state dict (a dict of name → tensor), found {}",
                        kind(self.get(dict))
                    ),
                ));
            };
            let wrapped = ["state_dict", "model", "model_state_dict"]
                .iter()
                .find_map(|w| {
                    items.iter().rev().find_map(|&(k, v)| {
                        let is_key = matches!(self.get(k), Value::Str(s) if s == w);
                        (is_key && matches!(self.get(v), Value::Dict(_))).then_some(v)
                    })
                });
            match wrapped {
                Some(inner) => dict = inner,
                None => break,
            }
        }
        let Value::Dict(items) = self.get(dict) else {
            return Err(Error::file(file, "expected a state dict"));
        };
        let mut out = Vec::new();
        for &(k, v) in items {
            let (Value::Str(name), Value::Tensor(t)) = (self.get(k), self.get(v)) else {
                continue;
            };
            let storage = self
                .storage_ref(t.storage)
                .map_err(|m| Error::file(file, format!("tensor `{name}`: {m}")))?;
            out.push(Entry {
                name: name.clone(),
                tensor: t.clone(),
                storage,
            });
        }
        if out.is_empty() && !items.is_empty() {
            let keys: Vec<String> = items
                .iter()
                .take(8)
                .map(|&(k, _)| match self.get(k) {
                    Value::Str(s) => format!("`{s}`"),
                    other => kind(other).to_string(),
                })
                .collect();
            return Err(Error::file(
                file,
                format!(
                    "no tensors found in the state dict (its keys: {}{})",
                    keys.join(", "),
                    if items.len() > 8 { ", ..." } else { "" }
                ),
            ));
        }
        Ok(out)
    }
}
