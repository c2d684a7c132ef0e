//! The inert value tree a pickle decodes to: values in an arena, tensors and storages as
//! references (what torch's rebuild functions would have built), and the finished [`Pickle`].

use super::super::tensors::DType;

/// Index of a value in the arena of a [`Pickle`].
pub(crate) type Id = usize;

/// A decoded pickle value. Containers refer to their items by arena [`Id`].
#[derive(Debug, Clone)]
#[allow(
    dead_code,
    reason = "the tree records everything the pickle said; the state-dict reader consults only part"
)]
pub(crate) enum Value {
    None,
    Bool(bool),
    /// Pickle ints are unbounded; i128 holds everything torch writes (the legacy magic number
    /// needs 80 bits) and longer ones are rejected.
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Set(Vec<Id>),
    /// An allow-listed global, e.g. `torch.FloatStorage`.
    Global {
        module: String,
        name: String,
    },
    /// `BINPERSID`/`PERSID`: the container's reference to a storage, resolved by `pth`.
    PersistentId(Id),
    /// The interpreted result of a `torch._utils._rebuild_tensor*` call.
    Tensor(TensorRef),
    /// `NEWOBJ` of an allow-listed class other than `OrderedDict`: kept inert, never built.
    Object {
        class: Id,
        args: Id,
        state: Option<Id>,
    },
}

/// A tensor as a view into a storage: what `_rebuild_tensor_v2` would have built.
#[derive(Debug, Clone)]
pub(crate) struct TensorRef {
    /// The `PersistentId` value naming the storage.
    pub storage: Id,
    /// Offset into the storage, in elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub stride: Vec<usize>,
    /// `_rebuild_tensor_v3` passes the dtype separately (with an untyped storage).
    pub dtype: Option<DType>,
}

/// A storage reference decoded from a persistent id:
/// `('storage', storage_type, key, location, numel[, view_metadata])`.
#[derive(Debug, Clone)]
pub(crate) struct StorageRef {
    pub dtype: DType,
    pub key: String,
    /// Elements of `dtype` in the storage (bytes for untyped storages).
    pub numel: usize,
    /// Legacy format only: `(view_key, offset, size)` of a view into the root storage, in
    /// elements.
    pub view: Option<(String, usize, usize)>,
}

/// One tensor of the state dict, with the storage it points into.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    pub tensor: TensorRef,
    pub storage: StorageRef,
}

/// A fully read pickle: the arena and the value `STOP` returned.
#[derive(Debug)]
pub(crate) struct Pickle {
    pub(super) values: Vec<Value>,
    pub root: Id,
}

pub(super) static NONE: Value = Value::None;

impl Pickle {
    /// The value behind an id. Ids only come from this arena, so the fallback is unreachable;
    /// it exists so that no code path can index out of bounds.
    pub fn get(&self, id: Id) -> &Value {
        self.values.get(id).unwrap_or(&NONE)
    }

    /// The root value.
    pub fn root(&self) -> &Value {
        self.get(self.root)
    }
}

/// A storage key, which torch writes as a str (ints in very old files).
pub(super) fn key_string(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Bytes(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

pub(super) fn as_usize(v: &Value) -> Option<usize> {
    match v {
        Value::Int(i) => usize::try_from(*i).ok(),
        _ => None,
    }
}

/// A short description of a value's type for error messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::Int(_) => "an int",
        Value::Float(_) => "a float",
        Value::Str(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Tuple(_) => "a tuple",
        Value::List(_) => "a list",
        Value::Dict(_) => "a dict",
        Value::Set(_) => "a set",
        Value::Global { .. } => "a global",
        Value::PersistentId(_) => "a storage reference",
        Value::Tensor(_) => "a tensor",
        Value::Object { .. } => "an object",
    }
}
