//! Reads and writes `.safetensors` files through the `safetensors` crate, converting to/from f32.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use ::safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::tensors::{DType, RawTensor};
use crate::error::{Error, Result};

/// Parses a whole safetensors file already in memory.
pub(crate) fn load(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, RawTensor>> {
    precheck(path, bytes)?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::file(path, format!("invalid safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            Dtype::F64 => DType::F64,
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::I64 => DType::I64,
            Dtype::I32 => DType::I32,
            Dtype::I16 => DType::I16,
            Dtype::I8 => DType::I8,
            Dtype::U8 => DType::U8,
            Dtype::BOOL => DType::Bool,
            other => {
                return Err(Error::file(
                    path,
                    format!(
                        "tensor `{name}` has dtype {other:?}, which graft does not read \
                         (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)"
                    ),
                ));
            }
        };
        // The crate already checked that the byte length matches shape × dtype size.
        let data = dtype.decode(view.data());
        let shape = view.shape().to_vec();
        out.insert(name, RawTensor { dtype, shape, data });
    }
    Ok(out)
}

/// Checks the header framing ourselves before handing the bytes to the crate.
///
/// Why: the crate adds the header length and the last data offset without overflow checks, so a
/// hostile header with offsets near `usize::MAX` could make it panic (debug) or slice out of
/// bounds (release). Checking every end offset against the bytes present rules that out, and
/// gives clearer messages for truncated files.
fn precheck(path: &Path, bytes: &[u8]) -> Result<()> {
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(Error::file(
            path,
            format!("truncated safetensors file ({} bytes)", bytes.len()),
        ));
    };
    let mut a = [0u8; 8];
    a.copy_from_slice(len_bytes);
    let header_len = u64::from_le_bytes(a);
    let rest = bytes.len() as u64 - 8;
    if header_len > rest {
        return Err(Error::file(
            path,
            format!(
                "truncated safetensors file: header claims {header_len} bytes but only {rest} follow"
            ),
        ));
    }
    // header_len <= rest < usize::MAX, so these conversions cannot truncate.
    let data_start = 8 + header_len as usize;
    let header = bytes.get(8..data_start).unwrap_or_default();
    let data_len = (bytes.len() - data_start) as u64;
    let json: serde_json::Value = serde_json::from_slice(header)
        .map_err(|e| Error::file(path, format!("invalid safetensors header JSON: {e}")))?;
    let Some(entries) = json.as_object() else {
        return Err(Error::file(
            path,
            "invalid safetensors header: not a JSON object",
        ));
    };
    for (name, info) in entries {
        if name == "__metadata__" {
            continue;
        }
        let offsets = info
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .map(|o| o.iter().map(|v| v.as_u64()).collect::<Vec<_>>());
        let (start, end) = match offsets.as_deref() {
            Some([Some(s), Some(e)]) => (*s, *e),
            _ => {
                return Err(Error::file(
                    path,
                    format!(
                        "invalid safetensors header: tensor `{name}` has no valid data_offsets"
                    ),
                ));
            }
        };
        if start > end || end > data_len {
            return Err(Error::file(
                path,
                format!(
                    "tensor `{name}` spans bytes {start}..{end} but the data section holds \
                     {data_len} bytes (truncated or corrupt file)"
                ),
            ));
        }
    }
    Ok(())
}

/// Serializes f32 tensors to safetensors bytes, checking shapes and names first.
pub(crate) fn serialize_f32(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<Vec<u8>> {
    let mut seen = HashSet::new();
    let mut raw: Vec<Vec<u8>> = Vec::with_capacity(tensors.len());
    for (name, shape, data) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(Error::tensor(name, "appears twice in the tensors to save"));
        }
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if numel != Some(data.len()) {
            return Err(Error::tensor(
                name,
                format!("shape {shape:?} does not match its {} values", data.len()),
            ));
        }
        raw.push(data.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), bytes) in tensors.iter().zip(&raw) {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
            .map_err(|e| Error::tensor(name, format!("cannot serialize: {e}")))?;
        views.push((name.as_str(), view));
    }
    ::safetensors::tensor::serialize(views, &None)
        .map_err(|e| Error::invalid(format!("cannot serialize safetensors: {e}")))
}
