//! IDX (MNIST-style) files, raw and gzipped, and their errors.

use super::*;

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
