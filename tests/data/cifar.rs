//! CIFAR-10/100 binary batches: values, labels, names, and errors naming the file.

use super::*;

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
