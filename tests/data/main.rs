//! The data layer on small files generated here: every format's values land where expected,
//! bad files give errors naming them, splits are disjoint and stratified, transforms match
//! torchvision's arithmetic, and the loader is complete and reproducible. One test binary, one
//! module per part of `graft::data`; the helpers they share are here.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use graft::data::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

mod cifar;
mod folder;
mod idx;
mod loader;
mod split;
mod transform;

fn cifar_pixel(index: usize, c: usize, y: usize, x: usize) -> u8 {
    ((index * 7 + c * 3 + y * 32 + x) % 256) as u8
}

/// One CIFAR record: label bytes, then R, G, B planes.
fn cifar_record(index: usize, labels: &[u8]) -> Vec<u8> {
    let mut r = labels.to_vec();
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                r.push(cifar_pixel(index, c, y, x));
            }
        }
    }
    r
}

/// Five train batches of 3 records (global index 3*file + r) and a test batch of 4 (index 100 + r);
/// label = index % 10.
fn write_cifar10(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..5 {
        let bytes: Vec<u8> = (0..3)
            .flat_map(|r| {
                let g = f * 3 + r;
                cifar_record(g, &[(g % 10) as u8])
            })
            .collect();
        std::fs::write(dir.join(format!("data_batch_{}.bin", f + 1)), bytes).unwrap();
    }
    let bytes: Vec<u8> = (0..4)
        .flat_map(|r| cifar_record(100 + r, &[((100 + r) % 10) as u8]))
        .collect();
    std::fs::write(dir.join("test_batch.bin"), bytes).unwrap();
}

fn err_text<T>(r: graft::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn gray(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Image {
    let pixels = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| f(x, y))
        .collect();
    Image::new(w, h, 1, pixels).unwrap()
}

fn rgb(w: u32, h: u32, f: impl Fn(u32, u32, u32) -> u8) -> Image {
    let mut pixels = Vec::new();
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                pixels.push(f(x, y, c));
            }
        }
    }
    Image::new(w, h, 3, pixels).unwrap()
}

fn no_steps() -> Pipeline {
    Pipeline::new(vec![]).unwrap()
}

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "lengths differ: {a:?} vs {b:?}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol,
            "element {i}: {x} vs {y}\n{a:?}\n{b:?}"
        );
    }
}
