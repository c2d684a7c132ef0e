//! Image folders: class subfolders, split subfolders, lazy decoding, errors.

use super::*;

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
