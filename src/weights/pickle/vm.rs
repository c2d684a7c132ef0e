//! The pickle virtual machine: reads opcodes into the value arena, with every size bounded
//! (values, stack, marks, memo) so a hostile file cannot make it allocate without limit.

use std::collections::HashMap;
use std::path::Path;

use super::globals::{dtype_global, is_allowed, refusal};
use super::value::{Id, NONE, Pickle, TensorRef, Value, as_usize, kind};
use crate::error::{Error, Result};

/// Arena capacity: ~20 values per tensor in a torch state dict, so this allows ~800k tensors
/// while bounding what a hostile pickle can make us allocate (~1 GiB).
const MAX_VALUES: usize = 1 << 24;
/// Stack depth. The pickler batches `SETITEMS`/`APPENDS` by 1000, so real files stay tiny.
const MAX_STACK: usize = 1 << 20;
/// Nested `MARK`s. Real state dicts nest a handful deep.
const MAX_MARKS: usize = 1 << 16;

/// Name of a pickle opcode, for error messages (including ones this VM refuses).
fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

/// Reads one pickle starting at `start` in `data`; returns it and the offset just past `STOP`.
///
/// `what` names the pickle in messages (`"archive/data.pkl"`, `"pickle 4"`); byte offsets in
/// messages are offsets into `data`.
pub(crate) fn unpickle(
    file: &Path,
    what: &str,
    data: &[u8],
    start: usize,
) -> Result<(Pickle, usize)> {
    let mut vm = Vm {
        file,
        what,
        data,
        pos: start,
        op_pos: start,
        op: 0,
        values: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        copy_budget: data
            .len()
            .saturating_mul(COPIES_PER_BYTE)
            .saturating_add(1 << 12),
    };
    let root = vm.run()?;
    Ok((
        Pickle {
            values: vm.values,
            root,
        },
        vm.pos,
    ))
}

struct Vm<'a> {
    file: &'a Path,
    what: &'a str,
    data: &'a [u8],
    pos: usize,
    /// Offset and byte of the opcode being executed, for messages.
    op_pos: usize,
    op: u8,
    values: Vec<Value>,
    stack: Vec<Id>,
    /// Stack heights at each open `MARK` (Python's metastack).
    marks: Vec<usize>,
    /// Memo slots. A map, not a vector: `LONG_BINPUT 4000000000` must not allocate 4G slots.
    memo: HashMap<u32, Id>,
    /// Items the interpreted calls may still copy (a call copies its argument tuple, `torch.Size`
    /// its dims...). Every other value costs at least one opcode byte, so with this budget the
    /// memory of a pickle is bounded by its length: re-applying `torch.Size` to a memoized
    /// million-item tuple cannot multiply it.
    copy_budget: usize,
}

/// Items that interpreted calls may copy per byte of pickle (real state dicts copy a handful of
/// small tuples per tensor, far below this).
const COPIES_PER_BYTE: usize = 4;

impl<'a> Vm<'a> {
    fn err(&self, msg: impl std::fmt::Display) -> Error {
        let op = match opcode_name(self.op) {
            Some(n) => format!("{n} at byte {}", self.op_pos),
            None => format!("byte {}", self.op_pos),
        };
        Error::file(self.file, format!("{}: {msg} ({op})", self.what))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let data: &'a [u8] = self.data;
        let remain = data.len().saturating_sub(self.pos);
        if n > remain {
            return Err(self.err(format!(
                "truncated pickle: needs {n} more bytes, {remain} remain"
            )));
        }
        let s = data.get(self.pos..self.pos + n).unwrap_or_default();
        self.pos += n;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.arr::<1>()?[0])
    }

    /// A declared length, checked against the bytes that remain before anything is allocated.
    fn len(&mut self, n: u64) -> Result<usize> {
        let remain = self.data.len().saturating_sub(self.pos);
        match usize::try_from(n) {
            Ok(n) if n <= remain => Ok(n),
            _ => Err(self.err(format!(
                "declared length {n} exceeds the {remain} bytes that remain"
            ))),
        }
    }

    /// A newline-terminated text argument (`GLOBAL`, `PERSID`).
    fn line(&mut self) -> Result<String> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.err("truncated pickle: unterminated text argument"));
        };
        let s = self.take(n)?;
        self.pos += 1;
        String::from_utf8(s.to_vec()).map_err(|_| self.err("text argument is not UTF-8"))
    }

    fn new_value(&mut self, v: Value) -> Result<Id> {
        if self.values.len() >= MAX_VALUES {
            return Err(self.err(format!("more than {MAX_VALUES} values; refusing to go on")));
        }
        self.values.push(v);
        Ok(self.values.len() - 1)
    }

    /// Accounts for `n` items copied by an interpreted call.
    fn charge(&mut self, n: usize) -> Result<()> {
        self.copy_budget = self.copy_budget.checked_sub(n).ok_or_else(|| {
            self.err(
                "the pickle copies far more values than its size allows (a hostile file?); \
                 refusing to go on",
            )
        })?;
        Ok(())
    }

    fn push_id(&mut self, id: Id) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err(format!("stack deeper than {MAX_STACK}; refusing to go on")));
        }
        self.stack.push(id);
        Ok(())
    }

    fn push(&mut self, v: Value) -> Result<()> {
        let id = self.new_value(v)?;
        self.push_id(id)
    }

    /// Height below which the current opcode may not pop (the innermost `MARK`).
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Id> {
        if self.stack.len() <= self.floor() {
            return Err(self.err("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn top(&self) -> Result<Id> {
        if self.stack.len() <= self.floor() {
            return Err(self.err("stack underflow"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.err("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>> {
        let Some(m) = self.marks.pop() else {
            return Err(self.err("no MARK to pop to"));
        };
        // Pops never go below the innermost mark, so `m <= len` holds; `min` keeps it safe.
        let m = m.min(self.stack.len());
        Ok(self.stack.split_off(m))
    }

    fn get(&self, id: Id) -> &Value {
        self.values.get(id).unwrap_or(&NONE)
    }

    fn memo_put(&mut self, key: u32) -> Result<()> {
        let top = self.top()?;
        if self.memo.len() >= MAX_VALUES && !self.memo.contains_key(&key) {
            return Err(self.err("memo too large; refusing to go on"));
        }
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<()> {
        let Some(&id) = self.memo.get(&key) else {
            return Err(self.err(format!("memo slot {key} was never set")));
        };
        self.push_id(id)
    }

    fn str_value(&self, bytes: &[u8]) -> Result<Value> {
        String::from_utf8(bytes.to_vec())
            .map(Value::Str)
            .map_err(|_| self.err("string is not valid UTF-8"))
    }

    fn long(&self, bytes: &[u8]) -> Result<Value> {
        if bytes.len() > 16 {
            return Err(self.err(format!(
                "{}-byte integer is too large for a tensor file",
                bytes.len()
            )));
        }
        // Little-endian two's complement: start from the sign, then shift bytes in from the top.
        let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
        let mut v: i128 = if negative { -1 } else { 0 };
        for &b in bytes.iter().rev() {
            v = (v << 8) | i128::from(b);
        }
        Ok(Value::Int(v))
    }

    fn global(&mut self, module: String, name: String) -> Result<()> {
        if !is_allowed(&module, &name) {
            // No opcode position here: the message is the same wherever the reference appears.
            return Err(Error::file(self.file, refusal(&module, &name)));
        }
        self.push(Value::Global { module, name })
    }

    fn run(&mut self) -> Result<Id> {
        loop {
            self.op_pos = self.pos;
            self.op = 0;
            let op = self.u8().map_err(|_| {
                Error::file(
                    self.file,
                    format!(
                        "{}: truncated pickle: ended at byte {} without a STOP opcode",
                        self.what, self.pos
                    ),
                )
            })?;
            self.op = op;
            match op {
                0x80 => {
                    let v = self.u8()?;
                    if v > 5 {
                        return Err(self.err(format!("unsupported pickle protocol {v}")));
                    }
                }
                // FRAME only announces a length; we already hold all the bytes.
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(),
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return Err(self.err("MARKs nested too deeply"));
                    }
                    self.marks.push(self.stack.len());
                }
                b'}' => self.push(Value::Dict(Vec::new()))?,
                b']' => self.push(Value::List(Vec::new()))?,
                b')' => self.push(Value::Tuple(Vec::new()))?,
                0x8f => self.push(Value::Set(Vec::new()))?,
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = vec![0; n];
                    for slot in items.iter_mut().rev() {
                        *slot = self.pop()?;
                    }
                    self.push(Value::Tuple(items))?;
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items))?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items))?;
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Value::Set(items))?;
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(&items)?;
                    self.push(Value::Dict(pairs))?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(&[k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(&items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend(&[v], "APPEND")?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend(&items, "APPENDS")?;
                }
                0x90 => {
                    let items = self.pop_mark()?;
                    self.extend(&items, "ADDITEMS")?;
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.arr()?);
                    self.push(Value::Int(i128::from(v)))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(i128::from(v)))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.arr()?);
                    self.push(Value::Int(i128::from(v)))?;
                }
                0x8a => {
                    let n = u64::from(self.u8()?);
                    let n = self.len(n)?;
                    let bytes = self.take(n)?;
                    let v = self.long(bytes)?;
                    self.push(v)?;
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.arr()?);
                    let n = u64::try_from(n).map_err(|_| self.err("negative LONG4 length"))?;
                    let n = self.len(n)?;
                    let bytes = self.take(n)?;
                    let v = self.long(bytes)?;
                    self.push(v)?;
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.arr()?);
                    self.push(Value::Float(v))?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                0x8c | b'X' | 0x8d => {
                    let n = match op {
                        0x8c => u64::from(self.u8()?),
                        b'X' => u64::from(u32::from_le_bytes(self.arr()?)),
                        _ => u64::from_le_bytes(self.arr()?),
                    };
                    let n = self.len(n)?;
                    let bytes = self.take(n)?;
                    let v = self.str_value(bytes)?;
                    self.push(v)?;
                }
                // Python 2 `str`: torch.load decodes these as UTF-8; keep raw bytes otherwise.
                b'U' | b'T' => {
                    let n = if op == b'U' {
                        u64::from(self.u8()?)
                    } else {
                        let n = i32::from_le_bytes(self.arr()?);
                        u64::try_from(n).map_err(|_| self.err("negative BINSTRING length"))?
                    };
                    let n = self.len(n)?;
                    let bytes = self.take(n)?;
                    let v = match String::from_utf8(bytes.to_vec()) {
                        Ok(s) => Value::Str(s),
                        Err(e) => Value::Bytes(e.into_bytes()),
                    };
                    self.push(v)?;
                }
                b'C' | b'B' | 0x8e | 0x96 => {
                    let n = match op {
                        b'C' => u64::from(self.u8()?),
                        b'B' => u64::from(u32::from_le_bytes(self.arr()?)),
                        _ => u64::from_le_bytes(self.arr()?),
                    };
                    let n = self.len(n)?;
                    let bytes = self.take(n)?;
                    self.push(Value::Bytes(bytes.to_vec()))?;
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(u32::from(k))?;
                }
                b'r' => {
                    let k = u32::from_le_bytes(self.arr()?);
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = u32::try_from(self.memo.len()).map_err(|_| self.err("memo full"))?;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(u32::from(k))?;
                }
                b'j' => {
                    let k = u32::from_le_bytes(self.arr()?);
                    self.memo_get(k)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (self.get(module), self.get(name)) {
                        (Value::Str(m), Value::Str(n)) => {
                            let (m, n) = (m.clone(), n.clone());
                            self.global(m, n)?;
                        }
                        _ => return Err(self.err("STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let id = self.reduce(func, args)?;
                    self.push_id(id)?;
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    // Attributes set on an OrderedDict (torch's `_metadata`) or on a tensor do
                    // not matter for the weights; only inert objects keep their state.
                    if let Some(Value::Object { state: s, .. }) = self.values.get_mut(target) {
                        *s = Some(state);
                    }
                }
                0x81 | 0x92 => {
                    if op == 0x92 {
                        self.pop()?; // kwargs
                    }
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let v = match self.get(class) {
                        Value::Global { module, name }
                            if module == "collections" && name == "OrderedDict" =>
                        {
                            Value::Dict(Vec::new())
                        }
                        Value::Global { .. } => Value::Object {
                            class,
                            args,
                            state: None,
                        },
                        other => {
                            return Err(
                                self.err(format!("NEWOBJ on {}, expected a class", kind(other)))
                            );
                        }
                    };
                    self.push(v)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Value::PersistentId(pid))?;
                }
                b'P' => {
                    let s = self.line()?;
                    let pid = self.new_value(Value::Str(s))?;
                    self.push(Value::PersistentId(pid))?;
                }
                b'0' => {
                    // Like Python: POP on an empty (post-MARK) stack discards the mark.
                    if self.stack.len() > self.floor() {
                        self.pop()?;
                    } else if self.marks.pop().is_none() {
                        return Err(self.err("stack underflow"));
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?;
                    self.push_id(top)?;
                }
                other => {
                    let msg = match opcode_name(other) {
                        Some(n) => format!(
                            "unsupported pickle opcode {n} (0x{other:02x}) at byte {}",
                            self.op_pos
                        ),
                        None => format!(
                            "unknown pickle opcode 0x{other:02x} at byte {}",
                            self.op_pos
                        ),
                    };
                    return Err(Error::file(self.file, format!("{}: {msg}", self.what)));
                }
            }
        }
    }

    fn pairs(&self, items: &[Id]) -> Result<Vec<(Id, Id)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("odd number of items for a dict"));
        }
        Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
    }

    fn set_items(&mut self, items: &[Id]) -> Result<()> {
        let pairs = self.pairs(items)?;
        let target = self.top()?;
        match self.values.get_mut(target) {
            Some(Value::Dict(d)) => {
                d.extend(pairs);
                Ok(())
            }
            Some(other) => {
                let k = kind(other);
                Err(self.err(format!("SETITEM(S) on {k}, expected a dict")))
            }
            None => Err(self.err("stack underflow")),
        }
    }

    fn extend(&mut self, items: &[Id], op: &str) -> Result<()> {
        let target = self.top()?;
        match (op, self.values.get_mut(target)) {
            ("APPEND" | "APPENDS", Some(Value::List(l))) | ("ADDITEMS", Some(Value::Set(l))) => {
                l.extend_from_slice(items);
                Ok(())
            }
            (_, Some(other)) => {
                let k = kind(other);
                Err(self.err(format!("{op} on {k}")))
            }
            (_, None) => Err(self.err("stack underflow")),
        }
    }

    /// Interprets `func(*args)` for allow-listed functions. Nothing is called: each case builds
    /// the inert value the real function would have produced.
    fn reduce(&mut self, func: Id, args: Id) -> Result<Id> {
        let (module, name) = match self.get(func) {
            Value::Global { module, name } => (module.clone(), name.clone()),
            other => {
                return Err(self.err(format!(
                    "REDUCE on {}; only allow-listed functions can be called",
                    kind(other)
                )));
            }
        };
        let args: Vec<Id> = match self.get(args) {
            Value::Tuple(a) => {
                let a = a.clone();
                self.charge(a.len())?;
                a
            }
            other => {
                return Err(self.err(format!(
                    "arguments of `{module}.{name}` are {}, expected a tuple",
                    kind(other)
                )));
            }
        };
        let bad_args = |vm: &Self| {
            vm.err(format!(
                "unexpected arguments for `{module}.{name}` ({} given)",
                args.len()
            ))
        };
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") => {
                let pairs = match args.as_slice() {
                    [] => Vec::new(),
                    [items] => {
                        let list = match self.get(*items) {
                            Value::List(l) | Value::Tuple(l) => l.clone(),
                            _ => return Err(bad_args(self)),
                        };
                        self.charge(list.len())?;
                        let mut pairs = Vec::with_capacity(list.len());
                        for p in list {
                            match self.get(p) {
                                Value::Tuple(kv) | Value::List(kv) if kv.len() == 2 => {
                                    pairs.push((kv[0], kv[1]));
                                }
                                _ => return Err(bad_args(self)),
                            }
                        }
                        pairs
                    }
                    _ => return Err(bad_args(self)),
                };
                self.new_value(Value::Dict(pairs))
            }
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3") => {
                // _rebuild_tensor(storage, offset, size, stride)
                // _rebuild_tensor_v2(..., requires_grad, backward_hooks[, metadata])
                // _rebuild_tensor_v3(..., requires_grad, backward_hooks, dtype[, metadata])
                let ok = match name.as_str() {
                    "_rebuild_tensor" => args.len() == 4,
                    "_rebuild_tensor_v2" => args.len() == 6 || args.len() == 7,
                    _ => args.len() == 7 || args.len() == 8,
                };
                if !ok {
                    return Err(bad_args(self));
                }
                let dtype = if name == "_rebuild_tensor_v3" {
                    match args.get(6).map(|&a| self.get(a)) {
                        Some(Value::Global { module, name }) => {
                            Some(dtype_global(module, name).ok_or_else(|| {
                                self.err(format!("`{module}.{name}` is not a dtype"))
                            })?)
                        }
                        _ => return Err(self.err("_rebuild_tensor_v3 without a dtype")),
                    }
                } else {
                    None
                };
                let arg = |i: usize| args.get(i).copied().unwrap_or(usize::MAX);
                let storage = arg(0);
                if !matches!(self.get(storage), Value::PersistentId(_)) {
                    return Err(self.err(format!(
                        "tensor storage is {}, expected a storage reference",
                        kind(self.get(storage))
                    )));
                }
                let offset = as_usize(self.get(arg(1)))
                    .ok_or_else(|| self.err("tensor offset is not a non-negative integer"))?;
                let shape = self.usizes(arg(2), "size")?;
                let stride = self.usizes(arg(3), "stride")?;
                self.charge(shape.len() + stride.len())?;
                if shape.len() != stride.len() {
                    return Err(self.err(format!(
                        "tensor size {shape:?} and stride {stride:?} differ in length"
                    )));
                }
                self.new_value(Value::Tensor(TensorRef {
                    storage,
                    offset,
                    shape,
                    stride,
                    dtype,
                }))
            }
            // A Parameter is its data for our purposes; requires_grad, hooks and state are moot.
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                let want = if name == "_rebuild_parameter" { 3 } else { 4 };
                match args.first() {
                    Some(&data) if args.len() == want => Ok(data),
                    _ => Err(bad_args(self)),
                }
            }
            ("torch", "Size") => match args.as_slice() {
                [dims] => match self.get(*dims) {
                    Value::Tuple(d) | Value::List(d) => {
                        let d = d.clone();
                        self.charge(d.len())?;
                        self.new_value(Value::Tuple(d))
                    }
                    _ => Err(bad_args(self)),
                },
                _ => Err(bad_args(self)),
            },
            // Protocol-2 pickles spell `bytes` as `_codecs.encode(str, 'latin1')`.
            ("_codecs", "encode") => {
                let text = match args.first().map(|&a| self.get(a)) {
                    Some(Value::Str(s)) => s.clone(),
                    _ => return Err(bad_args(self)),
                };
                self.charge(text.len())?;
                let enc = match args.get(1).map(|&a| self.get(a)) {
                    None => "utf-8".to_string(),
                    Some(Value::Str(e)) => e.to_ascii_lowercase(),
                    Some(_) => return Err(bad_args(self)),
                };
                let bytes = match enc.as_str() {
                    "latin1" | "latin-1" | "iso-8859-1" => text
                        .chars()
                        .map(|c| u8::try_from(u32::from(c)).ok())
                        .collect::<Option<Vec<u8>>>()
                        .ok_or_else(|| self.err("string not encodable as latin-1"))?,
                    "utf-8" | "utf8" => text.into_bytes(),
                    _ => return Err(self.err(format!("unsupported encoding `{enc}`"))),
                };
                self.new_value(Value::Bytes(bytes))
            }
            _ => Err(self.err(format!("`{module}.{name}` cannot be called"))),
        }
    }

    /// A tuple/list of non-negative ints (tensor sizes and strides).
    fn usizes(&self, id: Id, what: &str) -> Result<Vec<usize>> {
        let items = match self.get(id) {
            Value::Tuple(v) | Value::List(v) => v,
            other => {
                return Err(self.err(format!(
                    "tensor {what} is {}, expected a tuple",
                    kind(other)
                )));
            }
        };
        items
            .iter()
            .map(|&i| {
                as_usize(self.get(i)).ok_or_else(|| {
                    self.err(format!(
                        "tensor {what} holds a value that is not a non-negative int"
                    ))
                })
            })
            .collect()
    }
}
