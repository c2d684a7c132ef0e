//! The allow-list: the only globals a pickle may name (tensor rebuild functions, storage and
//! dtype names, `OrderedDict`), and the message for everything else.

use super::super::tensors::DType;

/// `torch.<X>Storage` → element type. Untyped storages are bytes.
pub(super) fn storage_dtype(module: &str, name: &str) -> Option<DType> {
    Some(match (module, name) {
        ("torch", "FloatStorage") => DType::F32,
        ("torch", "DoubleStorage") => DType::F64,
        ("torch", "HalfStorage") => DType::F16,
        ("torch", "BFloat16Storage") => DType::BF16,
        ("torch", "LongStorage") => DType::I64,
        ("torch", "IntStorage") => DType::I32,
        ("torch", "ShortStorage") => DType::I16,
        ("torch", "CharStorage") => DType::I8,
        ("torch", "ByteStorage") => DType::U8,
        ("torch", "BoolStorage") => DType::Bool,
        ("torch" | "torch.storage", "UntypedStorage") => DType::U8,
        _ => return None,
    })
}

/// `torch.float32` etc. (what `_rebuild_tensor_v3` receives) → element type.
pub(super) fn dtype_global(module: &str, name: &str) -> Option<DType> {
    if module != "torch" {
        return None;
    }
    Some(match name {
        "float32" | "float" => DType::F32,
        "float64" | "double" => DType::F64,
        "float16" | "half" => DType::F16,
        "bfloat16" => DType::BF16,
        "int64" | "long" => DType::I64,
        "int32" | "int" => DType::I32,
        "int16" | "short" => DType::I16,
        "int8" => DType::I8,
        "uint8" => DType::U8,
        "bool" => DType::Bool,
        _ => return None,
    })
}

/// The allow-list. Everything else is refused before it can be used.
pub(super) fn is_allowed(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        ("collections", "OrderedDict")
            | (
                "torch._utils",
                "_rebuild_tensor"
                    | "_rebuild_tensor_v2"
                    | "_rebuild_tensor_v3"
                    | "_rebuild_parameter"
                    | "_rebuild_parameter_with_state"
            )
            | ("torch", "Size")
            | ("_codecs", "encode")
    ) || storage_dtype(module, name).is_some()
        || dtype_global(module, name).is_some()
}

/// The message for a refused global, with a hint when it is a recognisable mistake rather than
/// an attack (a whole pickled model, a TorchScript archive, an exotic dtype).
pub(super) fn refusal(module: &str, name: &str) -> String {
    let full = format!("{module}.{name}");
    if module == "torch"
        && (name.ends_with("Storage")
            || [
                "complex", "cfloat", "cdouble", "uint", "float8", "qint", "quint",
            ]
            .iter()
            .any(|p| name.starts_with(p)))
    {
        return format!(
            "unsupported tensor type `{full}` (graft reads f64, f32, f16, bf16, i64, i32, i16, \
             i8, u8 and bool tensors)"
        );
    }
    let hint = if module.starts_with("__torch__") {
        "; this looks like a TorchScript archive: save `model.state_dict()` with torch.save instead"
    } else if module.starts_with("torch.nn")
        || module.starts_with("torchvision")
        || module.starts_with("timm")
        || module == "__main__"
    {
        "; the file seems to pickle a whole model object: save `model.state_dict()` instead"
    } else {
        ""
    };
    format!(
        "refusing to load: pickle references `{full}`, which is not part of a state dict \
         (graft only accepts tensors and OrderedDicts){hint}"
    )
}
