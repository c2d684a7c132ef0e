//! The data layer on small files generated here: every format's values land where expected,
//! bad files give errors naming them, splits are disjoint and stratified, transforms match
//! torchvision's arithmetic, and the loader is complete and reproducible.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use graft::data::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

// ---------------------------------------------------------------------------------------------
// helpers

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

// ---------------------------------------------------------------------------------------------
// CIFAR

#[test]
fn cifar10_labels_pixels_and_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c10");
    write_cifar10(&dir);
    let ds = open(&format!("cifar10:{}", dir.display())).unwrap();
    assert_eq!(ds.class_names, CIFAR10_CLASSES.map(String::from).to_vec());
    assert_eq!(ds.train.len(), 15);
    assert_eq!(ds.test.len(), 4);
    assert!(ds.val.is_none());
    for k in 0..15 {
        assert_eq!(ds.train.label(k), k % 10, "train label {k}");
    }
    for k in 0..4 {
        assert_eq!(ds.test.label(k), (100 + k) % 10);
    }
    assert_eq!(ds.train.describe(7), "cifar10 data_batch_3.bin record 1");
    assert_eq!(ds.test.describe(2), "cifar10 test_batch.bin record 2");

    let pipe = no_steps();
    for (subset, k, g) in [
        (&ds.train, 0, 0),
        (&ds.train, 7, 7),
        (&ds.train, 14, 14),
        (&ds.test, 3, 103),
    ] {
        let img = subset.load(k).unwrap();
        assert_eq!((img.width, img.height, img.channels), (32, 32, 3));
        let (chw, shape) = pipe.apply(&img, &mut rng(0)).unwrap();
        assert_eq!(shape, [3, 32, 32]);
        for &(x, y) in &[(0usize, 0usize), (31, 0), (0, 31), (5, 17), (31, 31)] {
            for c in 0..3 {
                let want = cifar_pixel(g, c, y, x);
                assert_eq!(
                    img.pixels[(y * 32 + x) * 3 + c],
                    want,
                    "HWC sample {g} ({x},{y},{c})"
                );
                assert_eq!(img.get(x as u32, y as u32, c as u8), Some(want));
                assert_eq!(
                    chw[c * 1024 + y * 32 + x],
                    want as f32 / 255.0,
                    "CHW sample {g}"
                );
            }
        }
    }

    // Names from batches.meta.txt, blank lines skipped.
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    std::fs::write(
        dir.join("batches.meta.txt"),
        format!("{}\n\n", names.join("\n\n")),
    )
    .unwrap();
    let ds = open(&format!("cifar10:{}", dir.display())).unwrap();
    assert_eq!(ds.class_names, names.map(String::from).to_vec());

    // A bare directory is recognised.
    let ds = open(&dir.display().to_string()).unwrap();
    assert_eq!(ds.train.len(), 15);
    let summary = ds.summary();
    assert!(
        summary.contains("train 15") && summary.contains("test 4"),
        "{summary}"
    );
}

#[test]
fn cifar10_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c10");
    write_cifar10(&dir);
    let spec = format!("cifar10:{}", dir.display());

    // Truncated: 10 records minus 5 bytes.
    let good = std::fs::read(dir.join("data_batch_2.bin")).unwrap();
    let bytes: Vec<u8> = (0..10)
        .flat_map(|i| cifar_record(i, &[0]))
        .take(30725)
        .collect();
    std::fs::write(dir.join("data_batch_2.bin"), bytes).unwrap();
    let e = err_text(open(&spec));
    assert!(e.contains("data_batch_2.bin"), "{e}");
    assert!(
        e.contains(
            "truncated batch: 30725 bytes is not a multiple of 3073 (record 10 is incomplete)"
        ),
        "{e}"
    );
    std::fs::write(dir.join("data_batch_2.bin"), good).unwrap();

    // Label beyond the class list.
    std::fs::write(dir.join("batches.meta.txt"), "red\ngreen\nblue\n").unwrap();
    let e = err_text(open(&spec));
    assert!(
        e.contains("data_batch_2.bin")
            && e.contains("record 0 has label 3")
            && e.contains("3 classes"),
        "{e}"
    );
    std::fs::remove_file(dir.join("batches.meta.txt")).unwrap();

    // Missing files are listed.
    std::fs::remove_file(dir.join("test_batch.bin")).unwrap();
    std::fs::remove_file(dir.join("data_batch_4.bin")).unwrap();
    let e = err_text(open(&spec));
    assert!(e.contains("data_batch_4.bin, test_batch.bin"), "{e}");

    let e = err_text(open(&format!(
        "cifar10:{}",
        tmp.path().join("nope").display()
    )));
    assert!(e.contains("nope") && e.contains("not a directory"), "{e}");
}

#[test]
fn cifar100_uses_fine_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c100");
    std::fs::create_dir_all(&dir).unwrap();
    let fine = |i: usize| (i * 37 % 100) as u8;
    let write = |name: &str, base: usize, n: usize| {
        let bytes: Vec<u8> = (0..n)
            .flat_map(|i| cifar_record(base + i, &[fine(base + i) / 5, fine(base + i)]))
            .collect();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    write("train.bin", 0, 6);
    write("test.bin", 50, 3);
    let ds = open(&format!("cifar100:{}", dir.display())).unwrap();
    assert_eq!(ds.class_names.len(), 100);
    assert_eq!(ds.class_names[42], "42");
    assert_eq!((ds.train.len(), ds.test.len()), (6, 3));
    for k in 0..6 {
        assert_eq!(ds.train.label(k), fine(k) as usize);
    }
    for k in 0..3 {
        assert_eq!(ds.test.label(k), fine(50 + k) as usize);
    }
    let img = ds.test.load(2).unwrap();
    assert_eq!(img.get(9, 4, 2), Some(cifar_pixel(52, 2, 4, 9)));
    assert_eq!(ds.test.describe(2), "cifar100 test.bin record 2");

    let names: Vec<String> = (0..100).map(|i| format!("class{i}")).collect();
    std::fs::write(dir.join("fine_label_names.txt"), names.join("\n")).unwrap();
    let ds = open(&format!("cifar100:{}", dir.display())).unwrap();
    assert_eq!(ds.class_names, names);

    let mut bytes = std::fs::read(dir.join("test.bin")).unwrap();
    bytes.pop();
    std::fs::write(dir.join("test.bin"), bytes).unwrap();
    let e = err_text(open(&format!("cifar100:{}", dir.display())));
    assert!(
        e.contains("test.bin") && e.contains("not a multiple of 3074 (record 3 is incomplete)"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// IDX

fn idx_images(n: usize, rows: usize, cols: usize) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        b.extend_from_slice(&(d as u32).to_be_bytes());
    }
    for i in 0..n {
        for y in 0..rows {
            for x in 0..cols {
                b.push(((i * 13 + y * cols + x) % 256) as u8);
            }
        }
    }
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Train: 12 images 3 rows x 4 cols, raw; test: 5 images, gzipped.
fn write_idx(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let tl: Vec<u8> = (0..12).map(|i| (i % 10) as u8).collect();
    std::fs::write(dir.join("train-images-idx3-ubyte"), idx_images(12, 3, 4)).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_labels(&tl)).unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte.gz"),
        gz(&idx_images(5, 3, 4)),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte.gz"),
        gz(&idx_labels(&[9, 8, 7, 6, 5])),
    )
    .unwrap();
}

#[test]
fn idx_raw_and_gzip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    write_idx(&dir);
    let ds = open(&format!("idx:{}", dir.display())).unwrap();
    assert_eq!(
        ds.class_names,
        (0..10).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert_eq!((ds.train.len(), ds.test.len()), (12, 5));
    for k in 0..12 {
        assert_eq!(ds.train.label(k), k % 10);
    }
    assert_eq!(ds.test.labels(), vec![9, 8, 7, 6, 5]);
    for (subset, k) in [(&ds.train, 11), (&ds.test, 4)] {
        let img = subset.load(k).unwrap();
        assert_eq!((img.width, img.height, img.channels), (4, 3, 1));
        for y in 0..3 {
            for x in 0..4 {
                assert_eq!(
                    img.get(x, y, 0),
                    Some(((k * 13 + y as usize * 4 + x as usize) % 256) as u8)
                );
            }
        }
    }
    assert!(
        ds.test
            .describe(4)
            .ends_with("t10k-images-idx3-ubyte.gz image 4")
    );

    let ds = open(&format!("fashion-mnist:{}", dir.display())).unwrap();
    assert_eq!(ds.class_names[0], "T-shirt/top");
    assert_eq!(ds.class_names[9], "Ankle boot");
    let ds = open(&format!("mnist:{}", dir.display())).unwrap();
    assert_eq!(ds.class_names[3], "3");

    std::fs::write(
        dir.join("classes.txt"),
        (0..10).map(|i| format!("c{i}\n")).collect::<String>(),
    )
    .unwrap();
    let ds = open(&format!("idx:{}", dir.display())).unwrap();
    assert_eq!(ds.class_names[7], "c7");
    // A classes.txt with too few names makes label 9 invalid.
    std::fs::write(dir.join("classes.txt"), "a\nb\n").unwrap();
    let e = err_text(open(&format!("idx:{}", dir.display())));
    assert!(
        e.contains("train-labels-idx1-ubyte") && e.contains("label 2"),
        "{e}"
    );

    // Gzip is recognised by its magic bytes, whatever the name says.
    std::fs::remove_file(dir.join("classes.txt")).unwrap();
    std::fs::write(
        dir.join("train-images-idx3-ubyte"),
        gz(&idx_images(12, 3, 4)),
    )
    .unwrap();
    let ds = open(&format!("idx:{}", dir.display())).unwrap();
    assert_eq!(
        ds.train.load(3).unwrap().get(1, 2, 0),
        Some((3 * 13 + 2 * 4 + 1) as u8)
    );
}

#[test]
fn idx_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let spec = format!("idx:{}", dir.display());

    write_idx(&dir);
    let mut bad = idx_images(12, 3, 4);
    bad[3] = 1;
    std::fs::write(dir.join("train-images-idx3-ubyte"), &bad).unwrap();
    let e = err_text(open(&spec));
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("bad magic 0x00000801"),
        "{e}"
    );

    write_idx(&dir);
    let mut short = idx_images(5, 3, 4);
    short.pop();
    std::fs::write(dir.join("t10k-images-idx3-ubyte.gz"), gz(&short)).unwrap();
    let e = err_text(open(&spec));
    assert!(
        e.contains("t10k-images-idx3-ubyte.gz") && e.contains("truncated"),
        "{e}"
    );

    write_idx(&dir);
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte.gz"),
        gz(&idx_labels(&[1, 2, 3, 4])),
    )
    .unwrap();
    let e = err_text(open(&spec));
    assert!(
        e.contains("t10k-labels-idx1-ubyte.gz") && e.contains("4 labels") && e.contains("5 images"),
        "{e}"
    );

    write_idx(&dir);
    let mut labels: Vec<u8> = (0..12).map(|i| (i % 10) as u8).collect();
    labels[6] = 10;
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_labels(&labels)).unwrap();
    let e = err_text(open(&spec));
    assert!(
        e.contains("train-labels-idx1-ubyte") && e.contains("label 10 of image 6"),
        "{e}"
    );

    write_idx(&dir);
    std::fs::write(dir.join("train-labels-idx1-ubyte"), [0u8, 0, 8]).unwrap();
    let e = err_text(open(&spec));
    assert!(
        e.contains("train-labels-idx1-ubyte") && e.contains("too short"),
        "{e}"
    );

    write_idx(&dir);
    std::fs::write(dir.join("t10k-images-idx3-ubyte.gz"), [0x1f, 0x8b, 1, 2, 3]).unwrap();
    let e = err_text(open(&spec));
    assert!(
        e.contains("t10k-images-idx3-ubyte.gz") && e.contains("gzip"),
        "{e}"
    );

    write_idx(&dir);
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let e = err_text(open(&spec));
    assert!(
        e.contains("missing IDX files: t10k-labels-idx1-ubyte[.gz]"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// folders

fn png(path: &Path, w: u32, h: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = ::image::RgbImage::from_fn(w, h, |x, y| {
        ::image::Rgb([seed, (x * 10) as u8, (y * 10) as u8])
    });
    img.save_with_format(path, ::image::ImageFormat::Png)
        .unwrap();
}

#[test]
fn folder_pool_is_split_stratified_and_decoded_lazily() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("photos");
    for i in 0..5 {
        png(&dir.join(format!("cat/c{i}.png")), 6, 4, i);
    }
    for i in 0..10 {
        png(&dir.join(format!("dog/d{i:02}.PNG")), 6, 4, 100 + i);
    }
    png(&dir.join("dog/deeper/extra.png"), 6, 4, 200);
    std::fs::write(dir.join("cat/notes.txt"), "not an image").unwrap();
    std::fs::write(dir.join("cat/bad.jpg"), "not a jpeg either").unwrap();

    let ds = open(&format!("folder:{}", dir.display())).unwrap();
    assert_eq!(ds.class_names, vec!["cat", "dog"]);
    // 6 cats (incl. bad.jpg) and 11 dogs; 20% of each held out.
    assert_eq!(ds.class_counts(&ds.test), vec![1, 2]);
    assert_eq!(ds.class_counts(&ds.train), vec![5, 9]);
    assert!(Arc::ptr_eq(&ds.train.source, &ds.test.source));
    let mut all: Vec<usize> = ds
        .train
        .indices
        .iter()
        .chain(&ds.test.indices)
        .copied()
        .collect();
    all.sort();
    assert_eq!(all, (0..17).collect::<Vec<_>>());

    // The same spec gives the same split; another seed another one.
    let again = open(&format!("folder:{}", dir.display())).unwrap();
    assert_eq!(again.test.indices, ds.test.indices);
    let other = open(&format!(
        "folder:{}?test_fraction=0.5&seed=3",
        dir.display()
    ))
    .unwrap();
    assert_eq!(other.class_counts(&other.test), vec![3, 6]);

    // Decoding: values exactly as written (PNG is lossless); the corrupt file fails at load.
    let source = &ds.train.source;
    let mut decoded = 0;
    for i in 0..source.len() {
        let name = source.describe(i);
        if name.ends_with("bad.jpg") {
            let e = err_text(source.load(i));
            assert!(
                e.contains("cat/bad.jpg") && e.contains("not a decodable image"),
                "{e}"
            );
            assert_eq!(source.label(i), 0);
            continue;
        }
        let img = source.load(i).unwrap();
        assert_eq!((img.width, img.height, img.channels), (6, 4, 3));
        assert_eq!(img.get(5, 3, 1), Some(50));
        assert_eq!(img.get(5, 3, 2), Some(30));
        if name.ends_with("d03.PNG") {
            assert_eq!(img.get(0, 0, 0), Some(103));
            assert_eq!(source.label(i), 1);
        }
        decoded += 1;
    }
    assert_eq!(decoded, 16);

    // The loader reports the bad file too.
    let bad = (0..source.len())
        .find(|&i| source.describe(i).ends_with("bad.jpg"))
        .unwrap();
    let subset = Subset {
        source: source.clone(),
        indices: vec![0, bad, 2],
    };
    let pipe = Pipeline::eval(4, [0.5; 3], [0.5; 3], Resize::Exact).unwrap();
    let mut loader = Loader::new(subset, pipe, 8, Sampler::Sequential, 0, 0);
    let e = err_text(loader.next().unwrap());
    assert!(e.contains("bad.jpg"), "{e}");
    assert!(loader.next().is_none());
}

#[test]
fn folder_with_split_subfolders() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ds");
    for (split, n) in [("train", 3), ("test", 2), ("val", 1)] {
        for class in ["b_bird", "a_ant"] {
            for i in 0..n {
                png(&dir.join(format!("{split}/{class}/{i}.png")), 3, 3, i as u8);
            }
        }
    }
    let ds = open(&format!("folder:{}", dir.display())).unwrap();
    assert_eq!(ds.class_names, vec!["a_ant", "b_bird"]);
    assert_eq!(ds.class_counts(&ds.train), vec![3, 3]);
    assert_eq!(ds.class_counts(&ds.test), vec![2, 2]);
    let val = ds.val.as_ref().unwrap();
    assert_eq!(ds.class_counts(val), vec![1, 1]);
    assert!(!Arc::ptr_eq(&ds.train.source, &ds.test.source));
    assert!(
        ds.test.describe(0).contains("test/a_ant/0.png"),
        "{}",
        ds.test.describe(0)
    );
    assert_eq!(ds.test.label(3), 1);

    // Without test/, val/ is the held-out split.
    std::fs::remove_dir_all(dir.join("test")).unwrap();
    let ds = open(&format!("folder:{}", dir.display())).unwrap();
    assert!(ds.val.is_none());
    assert_eq!(ds.class_counts(&ds.test), vec![1, 1]);

    // A class that only the held-out split has cannot be learned.
    png(&dir.join("val/c_cat/0.png"), 3, 3, 0);
    let e = err_text(open(&format!("folder:{}", dir.display())));
    assert!(e.contains("c_cat") && e.contains("must agree"), "{e}");
}

#[test]
fn folder_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = err_text(open(&format!("folder:{}", empty.display())));
    assert!(e.contains("empty") && e.contains("no class folders"), "{e}");

    let dir = tmp.path().join("x");
    png(&dir.join("cat/a.png"), 2, 2, 0);
    std::fs::create_dir_all(dir.join("dog")).unwrap();
    std::fs::write(dir.join("dog/readme.md"), "hi").unwrap();
    let e = err_text(open(&format!("folder:{}", dir.display())));
    assert!(e.contains("dog") && e.contains("no images"), "{e}");

    let e = err_text(open(&format!(
        "folder:{}",
        tmp.path().join("missing").display()
    )));
    assert!(
        e.contains("missing") && e.contains("not a directory"),
        "{e}"
    );
    let e = err_text(open(&format!("folder:{}?test_fraction=2", dir.display())));
    assert!(e.contains("test_fraction"), "{e}");
    let e = err_text(open("no-such-format:xyz"));
    assert!(e.contains("unknown dataset"), "{e}");
}

#[test]
fn gray_png_stays_one_channel_until_to_rgb() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("g.png");
    ::image::GrayImage::from_fn(3, 2, |x, y| ::image::Luma([(x + 3 * y) as u8 * 40]))
        .save(&path)
        .unwrap();
    let img = Image::decode(&path, &std::fs::read(&path).unwrap()).unwrap();
    assert_eq!((img.width, img.height, img.channels), (3, 2, 1));
    assert_eq!(img.get(2, 1, 0), Some(200));
    let pipe = Pipeline::new(vec![
        Step::ToRgb,
        Step::Normalize {
            mean: [0.0, 0.5, 1.0],
            std: [1.0, 0.5, 2.0],
        },
    ])
    .unwrap();
    let (v, shape) = pipe.apply(&img, &mut rng(0)).unwrap();
    assert_eq!(shape, [3, 2, 3]);
    let x = 200.0f32 / 255.0;
    assert_eq!(v[5], x);
    assert_eq!(v[6 + 5], (x - 0.5) / 0.5);
    assert_eq!(v[12 + 5], (x - 1.0) / 2.0);
}

// ---------------------------------------------------------------------------------------------
// splits

/// Class 0: 50, class 1: 30, class 2: 20, class 3: 1, class 4: 2, interleaved.
fn skewed_labels() -> Vec<usize> {
    let mut labels = Vec::new();
    for (c, n) in [(0, 50), (1, 30), (2, 20), (3, 1), (4, 2)] {
        labels.extend(std::iter::repeat_n(c, n));
    }
    // Interleave deterministically so classes are not contiguous.
    let mut out = vec![0; labels.len()];
    for (i, l) in labels.into_iter().enumerate() {
        out[(i * 37) % 103] = l;
    }
    out
}

fn per_class(labels: &[usize], idx: &[usize]) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for &i in idx {
        *m.entry(labels[i]).or_default() += 1;
    }
    m
}

#[test]
fn stratified_split_is_disjoint_complete_and_proportional() {
    let labels = skewed_labels();
    let (keep, held) = stratified_split(&labels, 0.2, 7);
    let k: BTreeSet<usize> = keep.iter().copied().collect();
    let h: BTreeSet<usize> = held.iter().copied().collect();
    assert!(k.is_disjoint(&h));
    assert_eq!(k.len() + h.len(), labels.len());
    assert_eq!(k.union(&h).count(), labels.len());
    assert!(keep.windows(2).all(|w| w[0] < w[1]) && held.windows(2).all(|w| w[0] < w[1]));
    // round(0.2 * n), at least 1 when n >= 2, never the whole class.
    assert_eq!(
        per_class(&labels, &held),
        BTreeMap::from([(0, 10), (1, 6), (2, 4), (4, 1)])
    );
    assert_eq!(per_class(&labels, &keep)[&3], 1);

    assert_eq!(
        stratified_split(&labels, 0.2, 7),
        (keep.clone(), held.clone())
    );
    assert_ne!(stratified_split(&labels, 0.2, 8).1, held);
    assert_eq!(stratified_split(&labels, 0.0, 7).1, Vec::<usize>::new());
}

#[test]
fn stratified_kfold_covers_everything_evenly() {
    let labels = skewed_labels();
    let folds = stratified_kfold(&labels, 5, 3);
    assert_eq!(folds.len(), 5);
    let mut seen = vec![0; labels.len()];
    for f in &folds {
        for &i in f {
            seen[i] += 1;
        }
    }
    assert!(
        seen.iter().all(|&s| s == 1),
        "every index in exactly one fold"
    );
    let sizes: Vec<usize> = folds.iter().map(Vec::len).collect();
    assert!(
        sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
        "{sizes:?}"
    );
    for (c, n) in [(0, 50), (1, 30), (2, 20), (3, 1), (4, 2)] {
        for f in &folds {
            let got = per_class(&labels, f).get(&c).copied().unwrap_or(0);
            assert!(
                got == n / 5 || got == n / 5 + 1,
                "class {c}: {got} in a fold"
            );
        }
    }
    assert_eq!(stratified_kfold(&labels, 5, 3), folds);
    assert_ne!(stratified_kfold(&labels, 5, 4), folds);
}

#[test]
fn stratified_subset_is_proportional_and_deterministic() {
    let labels = skewed_labels();
    let sub = stratified_subset(&labels, 20, 1);
    assert_eq!(sub.len(), 20);
    assert_eq!(sub.iter().collect::<BTreeSet<_>>().len(), 20);
    let counts = per_class(&labels, &sub);
    // Quotas 9.7, 5.8, 3.9, 0.2, 0.4: every class present, the big ones within one of theirs.
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(
        (8..=10).contains(&counts[&0])
            && (5..=6).contains(&counts[&1])
            && (3..=4).contains(&counts[&2])
    );
    assert_eq!(stratified_subset(&labels, 20, 1), sub);
    assert_ne!(stratified_subset(&labels, 20, 2), sub);
    assert_eq!(stratified_subset(&labels, 500, 1).len(), labels.len());
}

fn in_memory(labels: &[usize]) -> Arc<dyn Source> {
    // Each image is 2x2 gray with every pixel = sample index.
    let images = (0..labels.len())
        .map(|i| gray(2, 2, |_, _| i as u8))
        .collect();
    Arc::new(InMemory::new("mem", images, labels.to_vec()).unwrap())
}

#[test]
fn dataset_limits_and_val_split() {
    let labels = skewed_labels();
    let test_labels: Vec<usize> = (0..40).map(|i| i % 5).collect();
    let ds = Dataset {
        name: "mem".into(),
        class_names: (0..5).map(|c| format!("class{c}")).collect(),
        train: Subset::all(in_memory(&labels)),
        val: None,
        test: Subset::all(in_memory(&test_labels)),
    };
    let d = ds.clone().with_val_split(0.2, 5);
    let val = d.val.as_ref().unwrap();
    assert_eq!(d.class_counts(val), vec![10, 6, 4, 0, 1]);
    assert_eq!(d.class_counts(&d.train), vec![40, 24, 16, 1, 1]);
    let t: BTreeSet<usize> = d.train.indices.iter().copied().collect();
    assert!(val.indices.iter().all(|i| !t.contains(i)));
    // A second request keeps the existing validation split.
    let again = d.clone().with_val_split(0.5, 1);
    assert_eq!(again.val.as_ref().unwrap().indices, val.indices);

    let d = ds.clone().limit_train(20, 0).limit_test(10, 0);
    assert_eq!(d.train.len(), 20);
    assert_eq!(d.class_counts(&d.test), vec![2, 2, 2, 2, 2]);
    assert!(d.class_counts(&d.train).iter().all(|&c| c >= 1));
    assert_eq!(ds.clone().limit_train(20, 0).train.indices, d.train.indices);

    let s = d.summary();
    assert!(
        s.contains("class4") && s.contains("train 20") && s.contains("test 10"),
        "{s}"
    );
    close(
        &class_weights_auto(&[10, 30, 0]),
        &[40.0 / 30.0, 40.0 / 90.0, 0.0],
        1e-6,
    );
}

// ---------------------------------------------------------------------------------------------
// transforms

#[test]
fn bilinear_resize_matches_torch_align_corners_false() {
    // [[0,1],[2,3]] scaled by 0.2 (51/255).
    let img = gray(2, 2, |x, y| ((x + 2 * y) * 51) as u8);
    let pipe = Pipeline::new(vec![Step::Resize { w: 4, h: 4 }]).unwrap();
    let (v, shape) = pipe.apply(&img, &mut rng(0)).unwrap();
    assert_eq!(shape, [1, 4, 4]);
    #[rustfmt::skip]
    let torch = [
        0.0, 0.25, 0.75, 1.0,
        0.5, 0.75, 1.25, 1.5,
        1.5, 1.75, 2.25, 2.5,
        2.0, 2.25, 2.75, 3.0f32,
    ];
    let want: Vec<f32> = torch.iter().map(|t| t * (51.0 / 255.0)).collect();
    close(&v, &want, 1e-6);

    // Downscale 5 -> 2 along x (scale 2.5: src 0.75 and 3.25), 3 -> 3 along y (identity).
    let img = gray(5, 3, |x, y| (x * 10 + y * 100) as u8);
    let pipe = Pipeline::new(vec![Step::Resize { w: 2, h: 3 }]).unwrap();
    let (v, shape) = pipe.apply(&img, &mut rng(0)).unwrap();
    assert_eq!(shape, [1, 3, 2]);
    let want: Vec<f32> = (0..3)
        .flat_map(|y| {
            let p = |x: usize| (x * 10 + y * 100) as f32 / 255.0;
            [p(0) * 0.25 + p(1) * 0.75, p(3) * 0.75 + p(4) * 0.25]
        })
        .collect();
    close(&v, &want, 1e-6);

    // Shorter side: 4 wide x 8 high -> 2 x 4.
    let pipe = Pipeline::new(vec![Step::ResizeShorter(2)]).unwrap();
    let (_, shape) = pipe
        .apply(&gray(4, 8, |x, _| x as u8), &mut rng(0))
        .unwrap();
    assert_eq!(shape, [1, 4, 2]);
}

/// PyTorch's `upsample_bilinear2d` (align_corners=False) written out per output pixel, as in
/// `aten/src/ATen/native/UpSample.h`.
fn torch_bilinear(src: &[f32], ih: usize, iw: usize, oh: usize, ow: usize) -> Vec<f32> {
    let index = |input: usize, output: usize, d: usize| {
        let scale = input as f32 / output as f32;
        let real = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (real.floor() as usize).min(input - 1);
        let i1 = i0 + usize::from(i0 < input - 1);
        let l1 = (real - i0 as f32).clamp(0.0, 1.0);
        (i0, i1, 1.0 - l1, l1)
    };
    let mut out = Vec::with_capacity(oh * ow);
    for y in 0..oh {
        let (y0, y1, h0, h1) = index(ih, oh, y);
        for x in 0..ow {
            let (x0, x1, w0, w1) = index(iw, ow, x);
            let top = src[y0 * iw + x0] * w0 + src[y0 * iw + x1] * w1;
            let bottom = src[y1 * iw + x0] * w0 + src[y1 * iw + x1] * w1;
            out.push(top * h0 + bottom * h1);
        }
    }
    out
}

#[test]
fn separable_resize_equals_the_direct_formula() {
    let img = rgb(13, 7, |x, y, c| ((x * 37 + y * 91 + c * 17) % 256) as u8);
    let (planes, _) = no_steps().apply(&img, &mut rng(0)).unwrap();
    for (ow, oh) in [(29, 16), (5, 3), (13, 20), (40, 7), (1, 1), (6, 11)] {
        let pipe = Pipeline::new(vec![Step::Resize { w: ow, h: oh }]).unwrap();
        let (v, shape) = pipe.apply(&img, &mut rng(0)).unwrap();
        assert_eq!(shape, [3, oh, ow]);
        for c in 0..3 {
            let want = torch_bilinear(&planes[c * 91..(c + 1) * 91], 7, 13, oh, ow);
            close(&v[c * oh * ow..(c + 1) * oh * ow], &want, 1e-6);
        }
    }
}

#[test]
fn center_crop_rounds_like_torchvision_and_pads() {
    let img = gray(5, 5, |x, y| (x + 5 * y) as u8);
    // (5 - 2) / 2 = 1.5 rounds to 2 (half to even).
    let (v, _) = Pipeline::new(vec![Step::CenterCrop(2)])
        .unwrap()
        .apply(&img, &mut rng(0))
        .unwrap();
    let want: Vec<f32> = [12u8, 13, 17, 18]
        .iter()
        .map(|&p| p as f32 / 255.0)
        .collect();
    assert_eq!(v, want);
    // Smaller than the crop: zero padding, (4 - 2) / 2 = 1 on each side.
    let img = gray(2, 2, |_, _| 255);
    let (v, shape) = Pipeline::new(vec![Step::CenterCrop(4)])
        .unwrap()
        .apply(&img, &mut rng(0))
        .unwrap();
    assert_eq!(shape, [1, 4, 4]);
    #[rustfmt::skip]
    let want = vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0f32];
    assert_eq!(v, want);
}

#[test]
fn random_crop_pads_with_zeros_and_keeps_size() {
    let img = gray(4, 4, |_, _| 255);
    let pipe = Pipeline::new(vec![Step::RandomCrop {
        size: 4,
        padding: 2,
    }])
    .unwrap();
    let mut offsets = BTreeSet::new();
    for seed in 0..400 {
        let (v, shape) = pipe.apply(&img, &mut rng(seed)).unwrap();
        assert_eq!(shape, [1, 4, 4]);
        // The ones form a rectangle; its position gives the offset (pad 2: offset in 0..=4).
        let ones: Vec<(usize, usize)> = (0..16)
            .filter(|&i| v[i] == 1.0)
            .map(|i| (i / 4, i % 4))
            .collect();
        assert!(v.iter().all(|&x| x == 0.0 || x == 1.0));
        let (y0, x0) = (
            ones.iter().map(|p| p.0).min().unwrap(),
            ones.iter().map(|p| p.1).min().unwrap(),
        );
        let (y1, x1) = (
            ones.iter().map(|p| p.0).max().unwrap(),
            ones.iter().map(|p| p.1).max().unwrap(),
        );
        assert_eq!(
            ones.len(),
            (y1 - y0 + 1) * (x1 - x0 + 1),
            "ones form a rectangle"
        );
        // Offset (top, left) in the padded image: rows above the image are zeros.
        let top = if y0 > 0 {
            2 - y0 as i64
        } else {
            2 + (3 - y1 as i64)
        };
        let left = if x0 > 0 {
            2 - x0 as i64
        } else {
            2 + (3 - x1 as i64)
        };
        offsets.insert((top, left));
    }
    assert_eq!(
        offsets.len(),
        25,
        "every offset in [0, 4]^2 occurs: {offsets:?}"
    );
}

#[test]
fn flip_mirrors_and_randomness_is_seeded() {
    let img = rgb(3, 2, |x, y, c| (x * 50 + y * 7 + c) as u8);
    let flip = Pipeline::new(vec![Step::RandomHorizontalFlip]).unwrap();
    let (plain, _) = no_steps().apply(&img, &mut rng(0)).unwrap();
    let mirrored: Vec<f32> = plain
        .chunks(3)
        .flat_map(|row| row.iter().rev().copied())
        .collect();
    let mut seen = [false; 2];
    for seed in 0..40 {
        let (v, _) = flip.apply(&img, &mut rng(seed)).unwrap();
        if v == plain {
            seen[0] = true;
        } else {
            assert_eq!(v, mirrored);
            seen[1] = true;
        }
    }
    assert_eq!(seen, [true, true]);

    let img = rgb(16, 12, |x, y, c| ((x * 31 + y * 17 + c * 5) % 256) as u8);
    let pipe = Pipeline::train(
        16,
        [0.4; 3],
        [0.2; 3],
        Augment {
            crop: true,
            flip: true,
        },
        4,
    )
    .unwrap();
    let a = pipe.apply(&img, &mut rng(11)).unwrap();
    let b = pipe.apply(&img, &mut rng(11)).unwrap();
    let c = pipe.apply(&img, &mut rng(12)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
    assert_eq!(a.1, [3, 16, 16]);
}

#[test]
fn pipelines_describe_and_validate() {
    let mean = [0.485, 0.456, 0.406];
    let std = [0.229, 0.224, 0.225];
    let eval = Pipeline::eval(224, mean, std, Resize::ShorterCrop).unwrap();
    assert_eq!(
        eval.steps(),
        &[
            Step::ToRgb,
            Step::ResizeShorter(256),
            Step::CenterCrop(224),
            Step::Normalize { mean, std }
        ]
    );
    let exact = Pipeline::eval(224, mean, std, Resize::Exact).unwrap();
    assert_ne!(eval.describe(), exact.describe());
    assert!(eval.describe().contains("0.485"), "{}", eval.describe());
    let other_std = Pipeline::eval(224, mean, [0.229, 0.224, 0.2251], Resize::ShorterCrop).unwrap();
    assert_ne!(eval.describe(), other_std.describe());
    assert!(err_text("squash".parse::<Resize>()).contains("squash"));
    assert!(Pipeline::eval(224, mean, [0.0, 1.0, 1.0], Resize::Exact).is_err());

    // `none` insists on the size.
    let none = Pipeline::eval(4, mean, std, Resize::None).unwrap();
    assert!(none.apply(&gray(4, 4, |_, _| 0), &mut rng(0)).is_ok());
    let e = err_text(none.apply(&gray(5, 4, |_, _| 0), &mut rng(0)));
    assert!(e.contains("5x4"), "{e}");

    // Shorter-crop on a landscape image: 8x4 -> shorter side 4 / 0.875 = 4 -> 8x4 -> crop 4x4.
    let (v, shape) = Pipeline::eval(4, [0.0; 3], [1.0; 3], Resize::ShorterCrop)
        .unwrap()
        .apply(&rgb(8, 4, |x, _, _| x as u8), &mut rng(0))
        .unwrap();
    assert_eq!(shape, [3, 4, 4]);
    assert_eq!(
        &v[..4],
        &[2.0 / 255.0, 3.0 / 255.0, 4.0 / 255.0, 5.0 / 255.0]
    );

    // output_shape predicts apply's shape; apply_into writes the same values.
    let pipes = [
        Pipeline::eval(6, mean, std, Resize::ShorterCrop).unwrap(),
        Pipeline::eval(5, mean, std, Resize::Exact).unwrap(),
        Pipeline::train(
            7,
            mean,
            std,
            Augment {
                crop: true,
                flip: true,
            },
            2,
        )
        .unwrap(),
        Pipeline::new(vec![Step::ResizeShorter(3)]).unwrap(),
    ];
    for pipe in &pipes {
        for img in [
            gray(9, 4, |x, y| (x * y) as u8),
            rgb(3, 11, |x, y, c| (x + y + c) as u8),
        ] {
            let (v, shape) = pipe.apply(&img, &mut rng(5)).unwrap();
            let predicted = pipe.output_shape(
                img.width as usize,
                img.height as usize,
                img.channels as usize,
            );
            assert_eq!(predicted.unwrap(), shape, "{}", pipe.describe());
            let mut out = vec![f32::NAN; v.len()];
            assert_eq!(pipe.apply_into(&img, &mut rng(5), &mut out).unwrap(), shape);
            assert_eq!(out, v);
            assert!(
                pipe.apply_into(&img, &mut rng(5), &mut vec![0.0; v.len() + 1])
                    .is_err()
            );
        }
    }

    // Random crop that cannot fit is an error, not a panic.
    let p = Pipeline::new(vec![Step::RandomCrop {
        size: 10,
        padding: 1,
    }])
    .unwrap();
    assert!(p.apply(&gray(4, 4, |_, _| 0), &mut rng(0)).is_err());
}

// ---------------------------------------------------------------------------------------------
// loader

fn to_rgb_only() -> Pipeline {
    Pipeline::new(vec![Step::ToRgb]).unwrap()
}

#[test]
fn loader_visits_every_index_once() {
    let labels: Vec<usize> = (0..23).map(|i| usize::from(i >= 20)).collect();
    let subset = Subset::all(in_memory(&labels));
    for sampler in [Sampler::Sequential, Sampler::Shuffle] {
        let loader = Loader::new(subset.clone(), to_rgb_only(), 5, sampler, 9, 0);
        assert_eq!(loader.num_batches(), 5);
        let batches: Vec<Batch> = loader.map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 5);
        let mut all = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            let n = if i == 4 { 3 } else { 5 };
            assert_eq!(b.shape, [n, 3, 2, 2]);
            assert_eq!(b.images.len(), n * 12);
            for (j, &idx) in b.indices.iter().enumerate() {
                // Pixel value = index, on all three channels.
                assert!(
                    b.images[j * 12..(j + 1) * 12]
                        .iter()
                        .all(|&v| v == idx as f32 / 255.0)
                );
                assert_eq!(b.labels[j], labels[idx]);
            }
            all.extend_from_slice(&b.indices);
        }
        if sampler == Sampler::Sequential {
            assert_eq!(all, (0..23).collect::<Vec<_>>());
        } else {
            assert_ne!(all, (0..23).collect::<Vec<_>>());
            all.sort();
            assert_eq!(all, (0..23).collect::<Vec<_>>());
        }
    }

    // Same (seed, epoch) → same order; another epoch → another order.
    let order =
        |epoch| Loader::new(subset.clone(), to_rgb_only(), 5, Sampler::Shuffle, 9, epoch).order();
    assert_eq!(order(1), order(1));
    assert_ne!(order(1), order(2));

    // drop_last, and indices are source indices of a non-trivial subset.
    let sub = subset.select(&[3, 5, 7, 9, 11, 13, 15]);
    let batches: Vec<Batch> = Loader::new(sub, to_rgb_only(), 3, Sampler::Sequential, 0, 0)
        .drop_last(true)
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1].indices, vec![9, 11, 13]);

    assert!(
        Loader::new(subset, to_rgb_only(), 0, Sampler::Sequential, 0, 0)
            .next()
            .unwrap()
            .is_err()
    );
}

#[test]
fn loader_is_reproducible_with_augmentation() {
    let images: Vec<Image> = (0..40)
        .map(|i| {
            rgb(8, 8, |x, y, c| {
                ((i * 11 + x * 29 + y * 3 + c * 50) % 256) as u8
            })
        })
        .collect();
    let labels: Vec<usize> = (0..40).map(|i| i % 4).collect();
    let source: Arc<dyn Source> = Arc::new(InMemory::new("aug", images, labels).unwrap());
    let pipe = Pipeline::train(
        8,
        [0.5; 3],
        [0.25; 3],
        Augment {
            crop: true,
            flip: true,
        },
        2,
    )
    .unwrap();
    let run = |epoch| -> Vec<Batch> {
        Loader::new(
            Subset::all(source.clone()),
            pipe.clone(),
            6,
            Sampler::Shuffle,
            42,
            epoch,
        )
        .prefetch(1)
        .map(|b| b.unwrap())
        .collect()
    };
    let a = run(3);
    assert_eq!(a, run(3));
    assert_ne!(a, run(4));
    assert_eq!(a[0].shape, [6, 3, 8, 8]);

    // Stopping early is fine (the worker is shut down on drop).
    let mut l = Loader::new(Subset::all(source), pipe, 2, Sampler::Shuffle, 0, 0);
    assert!(l.next().unwrap().is_ok());
    drop(l);
}

#[test]
fn balanced_sampler_equalises_classes() {
    let labels: Vec<usize> = (0..400).map(|i| usize::from(i % 20 == 0)).collect(); // 380 vs 20
    let subset = Subset::all(in_memory(&labels));
    let mut counts = [0usize; 2];
    let mut total = 0;
    for batch in Loader::new(subset.clone(), to_rgb_only(), 64, Sampler::Balanced, 1, 0) {
        let batch = batch.unwrap();
        for &l in &batch.labels {
            counts[l] += 1;
        }
        total += batch.len();
    }
    assert_eq!(total, 400, "the epoch keeps its length");
    assert!((150..=250).contains(&counts[1]), "{counts:?}");
    let o = epoch_order(&labels, Sampler::Balanced, 1, 0);
    assert_eq!(o, epoch_order(&labels, Sampler::Balanced, 1, 0));
    assert_ne!(o, epoch_order(&labels, Sampler::Balanced, 1, 1));
}
