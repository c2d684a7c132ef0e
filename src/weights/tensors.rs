//! Tensors as read from a weight file: element types (with the f16/bf16 conversions), formats,
//! raw tensors and the by-name map every reader returns.

use std::collections::BTreeMap;
use std::fmt;

/// Element type of a tensor as stored in the file (the loaded data is always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 64-bit IEEE float (`torch.float64`).
    F64,
    /// 32-bit IEEE float (`torch.float32`).
    F32,
    /// 16-bit IEEE half float (`torch.float16`).
    F16,
    /// bfloat16: the top 16 bits of an f32 (`torch.bfloat16`).
    BF16,
    /// 64-bit signed integer (`torch.int64`, e.g. BatchNorm's `num_batches_tracked`).
    I64,
    /// 32-bit signed integer.
    I32,
    /// 16-bit signed integer.
    I16,
    /// 8-bit signed integer.
    I8,
    /// 8-bit unsigned integer.
    U8,
    /// Boolean, one byte per element (0 or 1).
    Bool,
}

impl DType {
    /// Bytes per element in the file.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Whether this is a floating-point type (what [`TensorMap::param_count`] counts).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }

    /// Decodes little-endian elements to f32. A trailing partial element is ignored: callers
    /// check lengths first and report the mismatch with the file name.
    pub(crate) fn decode(self, bytes: &[u8]) -> Vec<f32> {
        fn conv<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
            bytes
                .chunks_exact(N)
                .map(|c| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(c);
                    f(a)
                })
                .collect()
        }
        match self {
            DType::F64 => conv(bytes, |a| f64::from_le_bytes(a) as f32),
            DType::F32 => conv(bytes, f32::from_le_bytes),
            DType::F16 => conv(bytes, |a| f16_to_f32(u16::from_le_bytes(a))),
            DType::BF16 => conv(bytes, |a| bf16_to_f32(u16::from_le_bytes(a))),
            DType::I64 => conv(bytes, |a| i64::from_le_bytes(a) as f32),
            DType::I32 => conv(bytes, |a| i32::from_le_bytes(a) as f32),
            DType::I16 => conv(bytes, |a| f32::from(i16::from_le_bytes(a))),
            DType::I8 => bytes.iter().map(|&b| f32::from(b as i8)).collect(),
            DType::U8 => bytes.iter().map(|&b| f32::from(b)).collect(),
            // torch and safetensors both store bools as one byte; anything non-zero is true.
            DType::Bool => bytes
                .iter()
                .map(|&b| if b != 0 { 1.0 } else { 0.0 })
                .collect(),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
        })
    }
}

/// IEEE half precision → f32, exactly (every f16 is representable as f32).
///
/// Written by hand rather than pulling in the `half` crate for one function.
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exp = u32::from((bits >> 10) & 0x1f);
    let mant = u32::from(bits & 0x3ff);
    let out = match (exp, mant) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = mant · 2^-24. Shift the mantissa up until its leading one
            // reaches the implicit-bit position, lowering the exponent once per shift.
            let mut m = mant;
            let mut e: u32 = 127 - 15 + 1;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        // Inf and NaN (NaN payload kept, so NaN stays NaN).
        (0x1f, _) => sign | (0xff << 23) | (mant << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (mant << 13),
    };
    f32::from_bits(out)
}

/// bfloat16 → f32, exactly: bf16 is the top half of an f32.
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Which container a weight file was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A `.safetensors` file: JSON header, then raw little-endian data.
    Safetensors,
    /// PyTorch's zip checkpoint (`torch.save` since 1.6): a pickle plus one file per storage.
    PthZip,
    /// PyTorch's legacy checkpoint (`_use_new_zipfile_serialization=False`): pickles, then
    /// the raw storages.
    PthLegacy,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Safetensors => "safetensors",
            Format::PthZip => "pth (zip)",
            Format::PthLegacy => "pth (legacy)",
        })
    }
}

/// One tensor, converted to f32 and laid out contiguously in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// The element type in the file (ints and bools are converted to f32 too).
    pub dtype: DType,
    /// Dimensions, outermost first (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// The values in row-major order (`shape`'s product of them).
    pub data: Vec<f32>,
}

impl RawTensor {
    /// Number of elements (1 for a scalar, whose shape is `[]`).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// f32 tensors in a list: `(name, shape, values)`, in the order they are written.
pub type TensorList = Vec<(String, Vec<usize>, Vec<f32>)>;

/// f32 tensors by name: `name → (shape, values)`.
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Every tensor of a weight file, by name.
#[derive(Debug, Clone)]
pub struct TensorMap {
    /// The container the tensors were read from.
    pub format: Format,
    /// Every tensor, by its key in the file (`layer1.0.conv1.weight`).
    pub tensors: BTreeMap<String, RawTensor>,
}

/// Wrapper prefixes that training code adds around a model (`DataParallel` → `module.`, etc.).
const WRAPPER_PREFIXES: [&str; 4] = ["module.", "backbone.", "model.", "encoder."];

/// BatchNorm buffers: statistics and bookkeeping, not learned parameters.
const BN_BUFFERS: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

impl TensorMap {
    /// The tensor stored under `name`, if any.
    pub fn get(&self, name: &str) -> Option<&RawTensor> {
        self.tensors.get(name)
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the file held no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Tensor names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.tensors.keys().map(String::as_str)
    }

    /// Learnable parameter count: elements of float tensors, leaving out BatchNorm buffers
    /// (`running_mean`, `running_var`, `num_batches_tracked`), so the number matches what
    /// `sum(p.numel() for p in model.parameters())` reports in PyTorch (EfficientNet-Lite0: 4.65M).
    pub fn param_count(&self) -> usize {
        self.tensors
            .iter()
            .filter(|(name, t)| {
                let last = name.rsplit('.').next().unwrap_or(name);
                t.dtype.is_float() && !BN_BUFFERS.contains(&last)
            })
            .map(|(_, t)| t.numel())
            .sum()
    }

    /// f32 tensors as a map, as if read from a safetensors file.
    pub fn from_named(tensors: &NamedTensors) -> TensorMap {
        TensorMap {
            format: Format::Safetensors,
            tensors: tensors
                .iter()
                .map(|(k, (shape, data))| {
                    (
                        k.clone(),
                        RawTensor {
                            dtype: DType::F32,
                            shape: shape.clone(),
                            data: data.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// Strips wrapper prefixes (`module.`, `backbone.`, `model.`, `encoder.`, repeatedly, e.g.
    /// `module.backbone.`) when EVERY key carries them, and returns what was stripped.
    ///
    /// All-or-nothing on purpose: a prefix on only some keys is a real submodule name.
    pub fn strip_common_prefix(&mut self) -> Option<String> {
        let mut stripped = String::new();
        'outer: loop {
            if self.tensors.is_empty() {
                break;
            }
            for p in WRAPPER_PREFIXES {
                // `>` rather than `>=`: stripping must never leave an empty name.
                if self
                    .tensors
                    .keys()
                    .all(|k| k.starts_with(p) && k.len() > p.len())
                {
                    let old = std::mem::take(&mut self.tensors);
                    self.tensors = old
                        .into_iter()
                        .map(|(k, v)| (k[p.len()..].to_string(), v))
                        .collect();
                    stripped.push_str(p);
                    continue 'outer;
                }
            }
            break;
        }
        (!stripped.is_empty()).then_some(stripped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_special_values() {
        assert_eq!(f16_to_f32(0x0000).to_bits(), 0.0f32.to_bits());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert!(f16_to_f32(0x7c01).is_nan());
    }

    #[test]
    fn f16_is_monotonic_over_all_finite_positive_values() {
        // Every finite positive f16 bit pattern maps to a strictly larger f32 than the previous
        // one: catches off-by-one exponent errors at the subnormal/normal boundary.
        let mut prev = -1.0f32;
        for bits in 0u16..0x7c00 {
            let v = f16_to_f32(bits);
            assert!(v > prev, "{bits:#06x}: {v} <= {prev}");
            prev = v;
        }
    }

    #[test]
    fn bf16_values() {
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
        assert_eq!(bf16_to_f32(0x7f80), f32::INFINITY);
    }
}
