//! PyTorch `.pth` containers: finds the pickle and the raw storages in a zip (torch ≥ 1.6) or
//! legacy (`_use_new_zipfile_serialization=False`) file and turns the state dict into f32 tensors.

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};
use std::path::Path;

use zip::ZipArchive;

use super::pickle::{self, Entry, Value};
use super::tensors::{DType, RawTensor};
use crate::error::{Error, Result};

/// Cap on `data.pkl` once decompressed. torch stores it uncompressed, and even models with a
/// million tensors have pickles far below this; the cap only matters for hostile archives.
const MAX_PICKLE_BYTES: u64 = 512 << 20;

/// A view may repeat storage elements (stride 0 from `expand`), but expanding a tiny storage into
/// billions of elements is how a small hostile file would exhaust memory. Allow up to this many
/// output elements per storage element, or up to `MIN_EXPANSION_CAP` elements, whichever is more.
const MAX_EXPANSION: usize = 64;
const MIN_EXPANSION_CAP: usize = 1 << 24;

/// The legacy format's first pickle (`torch.serialization.MAGIC_NUMBER`).
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
/// The legacy format's second pickle (`torch.serialization.PROTOCOL_VERSION`).
const LEGACY_PROTOCOL: i128 = 1001;

/// Loads a `torch.save` zip archive: `<prefix>/data.pkl` plus one `<prefix>/data/<key>` file per
/// storage.
pub(crate) fn load_zip(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, RawTensor>> {
    let mut zip = ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
        Error::file(
            path,
            format!("not a valid zip archive (truncated or corrupt): {e}"),
        )
    })?;
    // torch names the top folder after the file it first saved to, so find it by its pickle.
    let pkl_name = zip
        .file_names()
        .filter(|n| *n == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1))
        .min_by_key(|n| n.len())
        .map(str::to_string)
        .ok_or_else(|| {
            let names: Vec<&str> = zip.file_names().take(5).collect();
            Error::file(
                path,
                format!(
                    "zip archive has no data.pkl, so it is not a torch.save file (entries: {})",
                    names.join(", ")
                ),
            )
        })?;
    let prefix = pkl_name
        .strip_suffix("data.pkl")
        .unwrap_or_default()
        .to_string();

    let byteorder_name = format!("{prefix}byteorder");
    if zip.index_for_name(&byteorder_name).is_some() {
        let order = read_entry(&mut zip, path, &byteorder_name, None, 64)?;
        if order.trim_ascii() == b"big" {
            return Err(Error::file(
                path,
                "saved on a big-endian machine; graft reads little-endian files only",
            ));
        }
    }

    let pkl = read_entry(&mut zip, path, &pkl_name, None, MAX_PICKLE_BYTES)?;
    let (pickle, _) = pickle::unpickle(path, &pkl_name, &pkl, 0)?;
    let entries = pickle.state_dict(path)?;

    build(path, budget(bytes), entries, |e, dtype| {
        let name = format!("{prefix}data/{}", e.storage.key);
        let expected = storage_bytes(path, e)?;
        let raw = read_entry(&mut zip, path, &name, Some(expected), expected)?;
        decode(path, e, dtype, &raw)
    })
}

/// Bytes the storage of `e` must have: numel × the storage type's element size.
fn storage_bytes(path: &Path, e: &Entry) -> Result<u64> {
    (e.storage.numel as u64)
        .checked_mul(e.storage.dtype.size() as u64)
        .ok_or_else(|| {
            Error::file(
                path,
                format!("storage `{}` declares an impossible size", e.storage.key),
            )
        })
}

/// Reads one archive member, refusing more than `cap` bytes and, when given, any length other
/// than `expected`. Reading to the end also makes the zip crate verify the CRC.
fn read_entry(
    zip: &mut ZipArchive<Cursor<&[u8]>>,
    path: &Path,
    name: &str,
    expected: Option<u64>,
    cap: u64,
) -> Result<Vec<u8>> {
    let mut f = zip.by_name(name).map_err(|e| {
        Error::file(
            path,
            format!("cannot open `{name}` in the zip archive: {e}"),
        )
    })?;
    let declared = f.size();
    if let Some(want) = expected
        && declared != want
    {
        return Err(Error::file(
            path,
            format!("`{name}` holds {declared} bytes, expected {want} (corrupt or truncated file)"),
        ));
    }
    if declared > cap {
        return Err(Error::file(
            path,
            format!("`{name}` is {declared} bytes, more than the {cap} allowed"),
        ));
    }
    let mut buf = Vec::new();
    (&mut f)
        .take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| Error::file(path, format!("cannot read `{name}`: {e}")))?;
    if buf.len() as u64 != declared {
        return Err(Error::file(
            path,
            format!(
                "`{name}` decompressed to {} bytes, its header says {declared} (corrupt file)",
                buf.len()
            ),
        ));
    }
    Ok(buf)
}

/// Loads a legacy `torch.save` file: five pickles (magic number, protocol version, system info,
/// the object, the storage keys), then each storage as an 8-byte little-endian element count
/// followed by its raw bytes, in key order.
pub(crate) fn load_legacy(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, RawTensor>> {
    let (magic, pos) = pickle::unpickle(path, "pickle 1 (magic number)", bytes, 0)?;
    if !matches!(magic.root(), Value::Int(LEGACY_MAGIC)) {
        return Err(Error::file(
            path,
            format!(
                "not a PyTorch file: it is a pickle, but starts with {} instead of torch's \
                 magic number",
                pickle::kind(magic.root())
            ),
        ));
    }
    let (proto, pos) = pickle::unpickle(path, "pickle 2 (protocol version)", bytes, pos)?;
    match proto.root() {
        Value::Int(LEGACY_PROTOCOL) => {}
        Value::Int(v) => {
            return Err(Error::file(
                path,
                format!("unsupported legacy PyTorch protocol version {v} (expected 1001)"),
            ));
        }
        other => {
            return Err(Error::file(
                path,
                format!(
                    "legacy PyTorch protocol version is {}, expected an int",
                    pickle::kind(other)
                ),
            ));
        }
    }
    let (sys_info, pos) = pickle::unpickle(path, "pickle 3 (system info)", bytes, pos)?;
    if let Value::Dict(items) = sys_info.root() {
        for &(k, v) in items {
            if matches!(sys_info.get(k), Value::Str(s) if s == "little_endian")
                && matches!(sys_info.get(v), Value::Bool(false))
            {
                return Err(Error::file(
                    path,
                    "saved on a big-endian machine; graft reads little-endian files only",
                ));
            }
        }
    }
    let (main, pos) = pickle::unpickle(path, "pickle 4 (the state dict)", bytes, pos)?;
    let entries = main.state_dict(path)?;
    let (keys_pickle, mut pos) = pickle::unpickle(path, "pickle 5 (storage keys)", bytes, pos)?;
    let keys: Vec<String> = match keys_pickle.root() {
        Value::List(items) | Value::Tuple(items) => items
            .iter()
            .map(|&k| match keys_pickle.get(k) {
                Value::Str(s) => Ok(s.clone()),
                Value::Int(i) => Ok(i.to_string()),
                other => Err(Error::file(
                    path,
                    format!("storage key list holds {}", pickle::kind(other)),
                )),
            })
            .collect::<Result<_>>()?,
        other => {
            return Err(Error::file(
                path,
                format!(
                    "expected the list of storage keys after the state dict, found {}",
                    pickle::kind(other)
                ),
            ));
        }
    };

    // The element count in front of each storage is in units of the storage's element size,
    // which only the pickle knows — including for storages outside the state dict (optimizer
    // state, ...), whose bytes still have to be skipped.
    let mut elem_size: HashMap<String, DType> = HashMap::new();
    for s in main.storages(path)? {
        elem_size.entry(s.key).or_insert(s.dtype);
    }
    // key → (byte offset of its data, element count, storage dtype)
    let mut index: HashMap<String, (usize, usize, DType)> = HashMap::new();
    for key in keys {
        let Some(&dtype) = elem_size.get(&key) else {
            return Err(Error::file(
                path,
                format!("storage `{key}` is listed but never referenced, so its size is unknown"),
            ));
        };
        let remain = bytes.len().saturating_sub(pos);
        let Some(head) = bytes.get(pos..pos.saturating_add(8)) else {
            return Err(Error::file(
                path,
                format!(
                    "truncated storage `{key}` (expected an 8-byte size, {remain} bytes remain)"
                ),
            ));
        };
        let mut a = [0u8; 8];
        a.copy_from_slice(head);
        let count = u64::from_le_bytes(a);
        pos += 8;
        let remain = remain - 8;
        let nbytes = count.checked_mul(dtype.size() as u64);
        let (count, nbytes) = match (usize::try_from(count), nbytes.map(usize::try_from)) {
            (Ok(c), Some(Ok(n))) if n <= remain => (c, n),
            _ => {
                let want = nbytes.map_or_else(|| "more than 2^64".into(), |n| n.to_string());
                return Err(Error::file(
                    path,
                    format!("truncated storage `{key}` (expected {want} bytes, {remain} remain)"),
                ));
            }
        };
        index.insert(key, (pos, count, dtype));
        pos += nbytes;
    }

    build(path, budget(bytes), entries, |e, dtype| {
        let Some(&(start, count, stored)) = index.get(&e.storage.key) else {
            return Err(Error::file(
                path,
                format!(
                    "tensor `{}` uses storage `{}`, which is not in the file",
                    e.name, e.storage.key
                ),
            ));
        };
        // In range: checked against the file length while indexing.
        let raw = bytes
            .get(start..start + count * stored.size())
            .unwrap_or_default();
        decode(path, e, dtype, raw)
    })
}

/// How many f32 values a file of `bytes` may load, storages and tensors together: twice its
/// byte count (a byte-sized dtype decodes to one value; tied weights view one storage twice),
/// plus a floor for small files. Shared by every tensor of the file, so neither many expanding
/// views nor a compressed storage declaring gigabytes can take more.
fn budget(bytes: &[u8]) -> usize {
    bytes.len().saturating_mul(2).saturating_add(16 << 20)
}

/// Turns state-dict entries into tensors, decoding each storage (via `load`) once.
///
/// A decoded storage is kept only while tensors still need it, and the last tensor of a storage
/// that covers all of it takes the decoded vector as is. So the usual case (one contiguous
/// tensor per storage) costs one decode and no copy, and memory peaks at the output plus one
/// storage rather than holding every decoded storage until the end.
fn build(
    path: &Path,
    budget: usize,
    entries: Vec<Entry>,
    mut load: impl FnMut(&Entry, DType) -> Result<Vec<f32>>,
) -> Result<BTreeMap<String, RawTensor>> {
    let mut left = budget;
    // (A count that overflows is left to `materialize`, which names it.)
    let mut spend = |n: Option<usize>, what: &str| -> Result<()> {
        let Some(n) = n else { return Ok(()) };
        left = left.checked_sub(n).ok_or_else(|| {
            Error::file(
                path,
                format!(
                    "{what} expands the values loaded past {budget}, more than a file of this \
                     size can hold; refusing (corrupt or hostile file)"
                ),
            )
        })?;
        Ok(())
    };
    let key = |e: &Entry| {
        (
            e.storage.key.clone(),
            e.tensor.dtype.unwrap_or(e.storage.dtype),
        )
    };
    let mut uses: HashMap<(String, DType), usize> = HashMap::new();
    for e in &entries {
        *uses.entry(key(e)).or_default() += 1;
    }
    let mut decoded: HashMap<(String, DType), Vec<f32>> = HashMap::new();
    let mut out = BTreeMap::new();
    for e in entries {
        let k = key(&e);
        let dtype = k.1;
        spend(numel(&e.tensor.shape), &format!("tensor `{}`", e.name))?;
        if !decoded.contains_key(&k) {
            spend(
                Some(e.storage.numel),
                &format!("storage `{}`", e.storage.key),
            )?;
            let v = load(&e, dtype)?;
            decoded.insert(k.clone(), v);
        }
        let left = uses.get_mut(&k).map_or(0, |n| {
            *n = n.saturating_sub(1);
            *n
        });
        let t = if left == 0 {
            let elems = decoded.remove(&k).unwrap_or_default();
            if e.storage.view.is_none()
                && e.tensor.offset == 0
                && is_contiguous(&e.tensor.shape, &e.tensor.stride)
                && numel(&e.tensor.shape) == Some(elems.len())
            {
                RawTensor {
                    dtype,
                    shape: e.tensor.shape.clone(),
                    data: elems,
                }
            } else {
                materialize(path, &e, dtype, &elems)?
            }
        } else {
            let elems = decoded.get(&k).map(Vec::as_slice).unwrap_or_default();
            materialize(path, &e, dtype, elems)?
        };
        out.insert(e.name, t);
    }
    Ok(out)
}

fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Row-major contiguous strides (size-1 dims may carry any stride; torch leaves them arbitrary).
fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expect = 1usize;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect = expect.saturating_mul(d);
    }
    true
}

/// Decodes a whole storage as `dtype`.
fn decode(path: &Path, e: &Entry, dtype: DType, raw: &[u8]) -> Result<Vec<f32>> {
    if !raw.len().is_multiple_of(dtype.size()) {
        return Err(Error::file(
            path,
            format!(
                "storage `{}` holds {} bytes, not a whole number of {dtype} elements",
                e.storage.key,
                raw.len()
            ),
        ));
    }
    Ok(dtype.decode(raw))
}

/// Copies the (possibly strided, offset) view `e` out of its decoded storage, row-major.
fn materialize(path: &Path, e: &Entry, dtype: DType, storage: &[f32]) -> Result<RawTensor> {
    let fail = |msg: String| Error::file(path, format!("tensor `{}`: {msg}", e.name));
    // Legacy storage views: the tensor's storage is a window into the root storage.
    let storage = match &e.storage.view {
        None => storage,
        Some((_, off, len)) => off
            .checked_add(*len)
            .and_then(|end| storage.get(*off..end))
            .ok_or_else(|| {
                fail(format!(
                    "storage view {off}..{off}+{len} lies outside storage `{}` ({} elements)",
                    e.storage.key,
                    storage.len()
                ))
            })?,
    };
    let t = &e.tensor;
    let shape = t.shape.clone();
    let numel =
        numel(&shape).ok_or_else(|| fail(format!("shape {shape:?} has too many elements")))?;
    if numel == 0 {
        return Ok(RawTensor {
            dtype,
            shape,
            data: Vec::new(),
        });
    }
    // Highest element the view touches; checked once so the copy below cannot go out of bounds.
    let mut last = Some(t.offset);
    for (&d, &s) in shape.iter().zip(&t.stride) {
        last = last.and_then(|l| l.checked_add((d - 1).checked_mul(s)?));
    }
    let view = || {
        format!(
            "view (offset {}, shape {:?}, stride {:?})",
            t.offset, shape, t.stride
        )
    };
    match last {
        Some(l) if l < storage.len() => {}
        _ => {
            return Err(fail(format!(
                "{} reaches past the end of storage `{}` ({} elements)",
                view(),
                e.storage.key,
                storage.len()
            )));
        }
    }
    if numel
        > storage
            .len()
            .saturating_mul(MAX_EXPANSION)
            .max(MIN_EXPANSION_CAP)
    {
        return Err(fail(format!(
            "{} expands {} stored elements to {numel}; refusing",
            view(),
            storage.len()
        )));
    }

    // Contiguous: one slice copy.
    let data = if is_contiguous(&shape, &t.stride) {
        storage
            .get(t.offset..t.offset + numel)
            .ok_or_else(|| fail(format!("{} is out of range", view())))?
            .to_vec()
    } else {
        // Odometer over the multi-index; `at` never leaves [offset, last].
        let mut idx = vec![0usize; shape.len()];
        let mut at = t.offset;
        let mut data = Vec::with_capacity(numel);
        for _ in 0..numel {
            data.push(storage.get(at).copied().unwrap_or(0.0));
            for d in (0..shape.len()).rev() {
                if idx[d] + 1 < shape[d] {
                    idx[d] += 1;
                    at += t.stride[d];
                    break;
                }
                at -= t.stride[d] * (shape[d] - 1);
                idx[d] = 0;
            }
        }
        data
    };
    Ok(RawTensor { dtype, shape, data })
}
