//! `graft predict` with a segmentation run (mask and overlay files, `--json`, errors), and the
//! report's test images with their true and predicted masks — on a run fitted for two epochs on
//! small generated scenes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::scenes::{CLASSES, SIDE, scene, write_scenes};
use common::{chromium, run_chromium, write_weights};
use graft::task::segmentation::data::read_mask;

fn graft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_graft"))
}

/// Test images of the generated dataset.
const TEST_IMAGES: usize = 10;

/// Runs `graft` and returns its output.
fn run(args: &mut Command) -> Output {
    args.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "graft failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn predict_writes_masks_and_overlays_and_the_report_shows_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let scenes = root.join("scenes");
    write_scenes(&scenes, 40, TEST_IMAGES);
    write_weights(&root.join("tiny.safetensors"));
    let run_dir = root.join("run");
    ok(&run(graft()
        .args(["fit", "--json", "--quiet", "--task", "segmentation"])
        .args(["--model", "resnet_tiny", "--data"])
        .arg(format!("seg:{}", scenes.display()))
        .arg("--weights")
        .arg(root.join("tiny.safetensors"))
        .arg("--out")
        .arg(&run_dir)
        .args(["--epochs", "2", "--image-size", "32", "--batch-size", "8"])
        .args(["--lr", "0.003", "--seed", "1"])));

    // Inputs of other sizes than the run's 32 px: a wide RGB image and a gray JPEG.
    let inputs = root.join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let wide = inputs.join("wide.png");
    let (rgb, _) = scene(77);
    image::imageops::resize(
        &image::RgbImage::from_raw(SIDE, SIDE, rgb).unwrap(),
        57,
        23,
        image::imageops::FilterType::Triangle,
    )
    .save(&wide)
    .unwrap();
    let gray = inputs.join("gray.jpg");
    image::GrayImage::from_fn(40, 48, |x, y| image::Luma([(x * 5 + y * 3) as u8]))
        .save(&gray)
        .unwrap();
    let first_test = scenes.join("test/images/0000.png");

    // --out with --json: the files and one line per image.
    let out_dir = root.join("masks");
    let stdout = ok(&run(graft()
        .args(["predict", "--json", "--run"])
        .arg(&run_dir)
        .args([&wide, &gray, &first_test])
        .arg("--out")
        .arg(&out_dir)));
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (line, (input, size)) in lines.iter().zip([
        (&wide, (57, 23)),
        (&gray, (40, 48)),
        (&first_test, (32, 32)),
    ]) {
        assert_eq!(line["image"], input.display().to_string(), "{line}");
        assert_eq!(line["size"], serde_json::json!([size.0, size.1]), "{line}");
        let stem = input.file_stem().unwrap().to_string_lossy();
        let mask_path = PathBuf::from(line["mask"].as_str().unwrap());
        assert_eq!(mask_path, out_dir.join(format!("{stem}.mask.png")));
        // A valid graft mask of the input's size, every value a class.
        let mask = read_mask(&mask_path).unwrap();
        assert_eq!((mask.width, mask.height), size, "{}", mask_path.display());
        assert!(mask.values.iter().all(|&v| (v as usize) < CLASSES.len()));
        // The counts are the mask's.
        let counts = line["class_pixels"].as_object().unwrap();
        assert_eq!(counts.len(), CLASSES.len(), "{line}");
        for (k, name) in CLASSES.iter().enumerate() {
            let n = mask.values.iter().filter(|&&v| v as usize == k).count() as u64;
            assert_eq!(counts[*name].as_u64(), Some(n), "{name} in {line}");
        }
        let overlay_path = PathBuf::from(line["overlay"].as_str().unwrap());
        assert_eq!(overlay_path, out_dir.join(format!("{stem}.overlay.png")));
        let overlay = image::open(&overlay_path).unwrap();
        assert_eq!((overlay.width(), overlay.height()), size);
    }
    // Background pixels keep the image's colour in the overlay; coloured classes change it.
    let test_mask = read_mask(&out_dir.join("0000.mask.png")).unwrap();
    let original = image::open(&first_test).unwrap().to_rgb8();
    let overlay = image::open(out_dir.join("0000.overlay.png"))
        .unwrap()
        .to_rgb8();
    for (i, (&class, (o, p))) in test_mask
        .values
        .iter()
        .zip(original.pixels().zip(overlay.pixels()))
        .enumerate()
    {
        if class == 0 {
            assert_eq!(o, p, "background pixel {i} recoloured");
        }
    }

    // Text output: files and class shares.
    let text = ok(&run(graft()
        .args(["predict", "--run"])
        .arg(&run_dir)
        .arg(&first_test)
        .arg("--out")
        .arg(root.join("text-out"))));
    assert!(
        text.contains("0000.mask.png") && text.contains('%'),
        "{text}"
    );

    // --json without --out: the counts only.
    let stdout = ok(&run(graft()
        .args(["predict", "--json", "--run"])
        .arg(&run_dir)
        .arg(&first_test)));
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        line["mask"].is_null() && line["overlay"].is_null(),
        "{line}"
    );
    let total: u64 = line["class_pixels"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, (SIDE * SIDE) as u64);

    // Neither --out nor --json: an error saying to give --out.
    let out = run(graft().args(["predict", "--run"]).arg(&run_dir).arg(&wide));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--out"), "{}", stderr(&out));

    // A missing image and an undecodable one: errors naming the file, nothing written.
    let missing = inputs.join("no-such-image.png");
    let err_dir = root.join("err-out");
    let out = run(graft()
        .args(["predict", "--run"])
        .arg(&run_dir)
        .args([&wide, &missing])
        .arg("--out")
        .arg(&err_dir));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no-such-image.png"),
        "{}",
        stderr(&out)
    );
    assert!(!err_dir.join("wide.mask.png").exists(), "checked up front");
    let garbage = inputs.join("garbage.png");
    std::fs::write(&garbage, b"not a png at all").unwrap();
    let out = run(graft()
        .args(["predict", "--run"])
        .arg(&run_dir)
        .arg(&garbage)
        .arg("--out")
        .arg(&err_dir));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("garbage.png"), "{}", stderr(&out));
    // Two inputs with one stem would overwrite each other's files.
    let twin = inputs.join("sub");
    std::fs::create_dir_all(&twin).unwrap();
    std::fs::copy(&wide, twin.join("wide.png")).unwrap();
    let out = run(graft()
        .args(["predict", "--run"])
        .arg(&run_dir)
        .args([&wide, &twin.join("wide.png")])
        .arg("--out")
        .arg(&err_dir));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("wide.mask.png"), "{}", stderr(&out));

    // The report: the masks section with the first 8 test images, three pictures each.
    let report = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(report.contains("id=\"per-class-iou\""));
    let masks = section(&report, "masks");
    assert!(
        masks.contains("Test images: truth and prediction"),
        "{masks}"
    );
    assert_eq!(
        masks.matches("<img src=\"data:image/png;base64,").count(),
        3 * 8,
        "{masks}"
    );
    assert!(masks.contains("0000.png") && masks.contains('%'));
    // 32 px images are shown at 128 px.
    assert!(masks.contains("width=\"128\" height=\"128\""));
    // The generic curves include the task's metrics, with values.
    let curve = section(&report, "miou-curve");
    assert!(curve.contains("<svg"), "no mIoU chart: {curve}");
    assert!(
        curve.contains("val miou"),
        "no validation mIoU line: {curve}"
    );

    if let Some(bin) = chromium() {
        let page = run_dir.join("report.html").canonicalize().unwrap();
        let dom = run_chromium(
            &bin,
            &root.join("profile"),
            &["--dump-dom".to_string()],
            &page,
        );
        assert!(dom.contains("id=\"masks\""), "rendered DOM lacks the masks");
        assert!(dom.matches("<img").count() >= 24);
        if std::env::var_os("GRAFT_REPORT_ARTIFACTS").is_some() {
            let shot = root.join("seg-shot.png");
            let args = [
                format!("--screenshot={}", shot.display()),
                "--window-size=1200,4000".to_string(),
                "--hide-scrollbars".to_string(),
            ];
            run_chromium(&bin, &root.join("profile"), &args, &page);
            keep(&shot, "seg-run-shot.png");
        }
    } else {
        println!("chromium not installed: the page is not rendered");
    }

    keep(&run_dir.join("report.html"), "seg-run.html");
    keep(&out_dir.join("wide.overlay.png"), "seg-wide.overlay.png");

    // The dataset gone: the report still renders and says why there are no images.
    std::fs::rename(&scenes, root.join("scenes-moved")).unwrap();
    ok(&run(graft().arg("report").arg(&run_dir)));
    let report = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    let masks = section(&report, "masks");
    assert!(masks.contains("Could not open the dataset"), "{masks}");
}

/// Copies `file` to `$GRAFT_REPORT_ARTIFACTS/name` when that is set (to look at the page).
fn keep(file: &Path, name: &str) {
    if let Some(dir) = std::env::var_os("GRAFT_REPORT_ARTIFACTS") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(file, dir.join(name)).unwrap();
    }
}

/// The HTML of the section `id` (up to the next section).
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no section {id}"));
    let rest = &html[start..];
    let end = rest.find("</section>").unwrap_or(rest.len());
    &rest[..end]
}
