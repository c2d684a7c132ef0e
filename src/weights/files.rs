//! Reading and writing weight files: the format sniffed from the bytes, then the reader that
//! fits; graft's own checkpoints written as safetensors, atomically.

use std::path::Path;

use super::tensors::{Format, TensorMap};
use super::{pth, safetensors};
use crate::error::{Error, Result};
use crate::files::read_file;

/// Loads every tensor of a `.safetensors` or PyTorch `.pth`/`.pt`/`.bin` file.
///
/// The format is sniffed from the bytes, not the extension (people rename files): zip magic →
/// PyTorch zip (torch ≥ 1.6); a `{` after an 8-byte length → safetensors; pickle protocol byte
/// 0x80 → PyTorch legacy. PyTorch pickles are interpreted by a restricted unpickler that refuses
/// anything but tensors and (ordered) dicts.
pub fn load_weights(path: &Path) -> Result<TensorMap> {
    parse_weights(path, &read_file(path)?)
}

/// [`load_weights`] on bytes already read (`path` names them in messages).
pub fn parse_weights(path: &Path, bytes: &[u8]) -> Result<TensorMap> {
    let (format, tensors) = match sniff(bytes) {
        Some(Format::PthZip) => (Format::PthZip, pth::load_zip(path, bytes)?),
        Some(Format::PthLegacy) => (Format::PthLegacy, pth::load_legacy(path, bytes)?),
        Some(Format::Safetensors) => (Format::Safetensors, safetensors::load(path, bytes)?),
        None if bytes.is_empty() => {
            return Err(Error::file(
                path,
                "empty file (0 bytes); expected a safetensors or PyTorch weight file",
            ));
        }
        None => {
            let head: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
            return Err(Error::file(
                path,
                format!(
                    "not a safetensors or PyTorch file (first bytes: {})",
                    head.join(" ")
                ),
            ));
        }
    };
    Ok(TensorMap { format, tensors })
}

/// Decides the container from the first bytes.
///
/// safetensors is tested before the pickle byte on purpose: its first byte is the low byte of
/// the header length, which is 0x80 for lengths 128, 384, 640, ... A torch legacy file cannot
/// pass the safetensors test, because its first 15 bytes are the fixed magic-number pickle
/// (byte 8 is 0xf9, never `{`).
fn sniff(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Some(Format::PthZip);
    }
    // safetensors: u64 little-endian header length, then a JSON object. Only the `{` is required
    // here, so that a truncated safetensors file still gets a safetensors-specific error.
    if bytes.get(8) == Some(&b'{') {
        return Some(Format::Safetensors);
    }
    if bytes.first() == Some(&0x80) {
        return Some(Format::PthLegacy);
    }
    None
}

/// Reads a pretrained weights file and strips a wrapper prefix (`module.`) if every key has it.
pub fn load_pretrained(path: &Path) -> Result<TensorMap> {
    let mut weights = load_weights(path)?;
    weights.strip_common_prefix();
    Ok(weights)
}

/// Writes f32 tensors as a safetensors file, atomically: the bytes go to `<path>.tmp` in the same
/// folder, are fsynced, then renamed over `path`, so a crash never leaves a half-written file
/// under the real name.
pub fn save_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    crate::files::write_atomic(path, &safetensors_bytes(tensors)?)
}

/// f32 tensors as the bytes of a safetensors file.
pub fn safetensors_bytes(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<Vec<u8>> {
    safetensors::serialize_f32(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"PK\x03\x04rest"), Some(Format::PthZip));
        assert_eq!(sniff(b"\x80\x02\x8a"), Some(Format::PthLegacy));
        assert_eq!(sniff(b"\x02\0\0\0\0\0\0\0{}"), Some(Format::Safetensors));
        // A 384-byte safetensors header starts with 0x80, like a pickle.
        assert_eq!(sniff(b"\x80\x01\0\0\0\0\0\0{"), Some(Format::Safetensors));
        assert_eq!(sniff(b"hello world"), None);
        assert_eq!(sniff(b""), None);
    }
}
