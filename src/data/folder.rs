//! Class-per-subfolder image trees (`folder:DIR`), decoded lazily one file at a time.
//!
//! `DIR/<class>/**/*.{jpg,jpeg,png}`; or, when DIR has `train/` and `test/` (or `val/`),
//! `DIR/<split>/<class>/...`. Only paths are collected when opening, so a folder of any size
//! costs a few bytes per file until the loader decodes it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::image::Image;
use crate::data::source::{ContentHash, Source};
use crate::data::split::{Dataset, Subset, derive_seed, stratified_split};
use crate::error::{Error, Result};
use crate::files::read_file;

/// Extensions that are decoded (compared case-insensitively).
const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];
/// Symlink loops or absurdly deep trees stop here instead of recursing forever.
const MAX_DEPTH: usize = 16;

/// How a folder without split subfolders is divided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FolderOptions {
    /// Share of each class held out as the test split.
    pub test_fraction: f64,
    /// Seed of that split. Fixed by default so the test set is the same in every run.
    pub seed: u64,
}

impl Default for FolderOptions {
    fn default() -> Self {
        FolderOptions {
            test_fraction: 0.2,
            seed: 0,
        }
    }
}

/// Image files with their labels; decoding happens in `load`.
pub struct FolderSource {
    files: Vec<PathBuf>,
    labels: Vec<usize>,
}

impl FolderSource {
    /// The files, in sample order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl Source for FolderSource {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn label(&self, i: usize) -> usize {
        self.labels[i]
    }

    fn load(&self, i: usize) -> Result<Image> {
        let path = self
            .files
            .get(i)
            .ok_or_else(|| Error::invalid(format!("folder source: no sample {i}")))?;
        let bytes = read_file(path)?;
        Image::decode(path, &bytes)
    }

    fn describe(&self, i: usize) -> String {
        self.files.get(i).map_or_else(
            || format!("folder sample {i} (out of range)"),
            |p| p.display().to_string(),
        )
    }

    /// Each file's path, size and modification time: a file rewritten in place (new pixels,
    /// same name) changes the id without reading every image.
    fn content_id(&self) -> Result<String> {
        let mut h = ContentHash::new();
        for path in &self.files {
            let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            h.add(path.to_string_lossy().as_bytes());
            h.add(&meta.len().to_le_bytes());
            h.add(&mtime.to_le_bytes());
        }
        Ok(h.finish())
    }
}

/// Files found under one class folder, plus those skipped for their extension.
struct Scan {
    images: Vec<PathBuf>,
    skipped: Vec<PathBuf>,
    /// Folders scanned already (resolved paths): a folder reached again through a symlink is
    /// not walked twice, so link fan-out cannot multiply the walk.
    visited: std::collections::HashSet<PathBuf>,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

pub(crate) fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Sorted entries of a directory (sorting makes sample numbering, and so every split and cache
/// key, independent of the file system's order).
pub(crate) fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        out.push(entry.map_err(|e| Error::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

fn scan(dir: &Path, depth: usize, acc: &mut Scan) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::file(
            dir,
            format!("more than {MAX_DEPTH} nested folders (a symlink loop?)"),
        ));
    }
    let real = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    if !acc.visited.insert(real) {
        return Ok(());
    }
    for path in entries(dir)? {
        if is_hidden(&path) {
            continue;
        }
        if path.is_dir() {
            scan(&path, depth + 1, acc)?;
        } else if is_image(&path) && path.is_file() {
            acc.images.push(path);
        } else {
            // Other files, and pipes or devices named like images (reading one would block).
            acc.skipped.push(path);
        }
    }
    Ok(())
}

/// Class name → its image files, for one split folder.
struct Tree {
    classes: Vec<(String, Vec<PathBuf>)>,
}

fn read_tree(dir: &Path, skipped: &mut Vec<PathBuf>) -> Result<Tree> {
    if !dir.is_dir() {
        return Err(Error::file(dir, "not a directory"));
    }
    let mut classes = Vec::new();
    for path in entries(dir)? {
        if is_hidden(&path) {
            continue;
        }
        if !path.is_dir() {
            // Files next to the class folders belong to no class.
            skipped.push(path);
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut acc = Scan {
            images: Vec::new(),
            skipped: Vec::new(),
            visited: Default::default(),
        };
        scan(&path, 0, &mut acc)?;
        if acc.images.is_empty() {
            return Err(Error::file(
                &path,
                format!(
                    "class folder `{name}` has no images (expected .jpg, .jpeg or .png files{})",
                    if acc.skipped.is_empty() {
                        String::new()
                    } else {
                        format!("; found {} other files", acc.skipped.len())
                    }
                ),
            ));
        }
        skipped.append(&mut acc.skipped);
        classes.push((name, acc.images));
    }
    if classes.is_empty() {
        return Err(Error::file(
            dir,
            "no class folders: expected one subfolder of images per class (DIR/<class>/*.jpg)",
        ));
    }
    classes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Tree { classes })
}

/// A source over `tree` with labels looked up in the shared class list.
fn source_of(tree: Tree, class_names: &[String]) -> FolderSource {
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (name, images) in tree.classes {
        // Every tree's classes are in `class_names` by construction.
        let label = class_names.binary_search(&name).unwrap_or(0);
        labels.extend(std::iter::repeat_n(label, images.len()));
        files.extend(images);
    }
    FolderSource { files, labels }
}

fn warn_skipped(dir: &Path, skipped: &[PathBuf]) {
    if skipped.is_empty() {
        return;
    }
    let shown: Vec<String> = skipped
        .iter()
        .take(5)
        .map(|p| p.display().to_string())
        .collect();
    let more = if skipped.len() > 5 {
        format!(" and {} more", skipped.len() - 5)
    } else {
        String::new()
    };
    eprintln!(
        "warning: {}: skipped {} file(s) that are not .jpg/.jpeg/.png: {}{more}",
        dir.display(),
        skipped.len(),
        shown.join(", ")
    );
}

/// Opens `folder:DIR`. With `train/` + `test/` (or `val/`) subfolders those are the splits
/// (`train/`, `val/` and `test/` together give a validation split as well); otherwise all images
/// form one pool and a stratified `options.test_fraction` of each class becomes the test split.
pub fn open_folder(dir: &Path, options: FolderOptions) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::file(
            dir,
            "not a directory (expected one subfolder per class)",
        ));
    }
    let name = format!("folder:{}", dir.display());
    let mut skipped = Vec::new();
    let train_dir = dir.join("train");
    let test_dir = dir.join("test");
    let val_dir = dir.join("val");
    let split_dataset = train_dir.is_dir() && (test_dir.is_dir() || val_dir.is_dir());
    let ds = if split_dataset {
        let train = read_tree(&train_dir, &mut skipped)?;
        // With only val/, it is the held-out split the run reports on.
        let (test, val) = if test_dir.is_dir() {
            let val = if val_dir.is_dir() {
                Some(read_tree(&val_dir, &mut skipped)?)
            } else {
                None
            };
            (read_tree(&test_dir, &mut skipped)?, val)
        } else {
            (read_tree(&val_dir, &mut skipped)?, None)
        };
        let train_set: BTreeSet<&String> = train.classes.iter().map(|c| &c.0).collect();
        let mut all: BTreeSet<String> = train_set.iter().map(|s| (*s).clone()).collect();
        for (split, tree, path) in [
            ("test", Some(&test), &test_dir),
            ("val", val.as_ref(), &val_dir),
        ] {
            let Some(tree) = tree else { continue };
            let here: BTreeSet<&String> = tree.classes.iter().map(|c| &c.0).collect();
            let extra: Vec<&str> = here.difference(&train_set).map(|s| s.as_str()).collect();
            if !extra.is_empty() {
                // A class with no training images cannot be learned; that is a broken layout.
                return Err(Error::file(
                    path,
                    format!(
                        "class folders {} are not in {} (the class lists of the splits must agree)",
                        extra.join(", "),
                        train_dir.display()
                    ),
                ));
            }
            let absent: Vec<&str> = train_set.difference(&here).map(|s| s.as_str()).collect();
            if !absent.is_empty() {
                eprintln!(
                    "warning: {}: no folder for class(es) {} (its {split} split has none of them)",
                    path.display(),
                    absent.join(", ")
                );
            }
            all.extend(here.into_iter().cloned());
        }
        let class_names: Vec<String> = all.into_iter().collect();
        let train = Subset::all(Arc::new(source_of(train, &class_names)));
        let test = Subset::all(Arc::new(source_of(test, &class_names)));
        let val = val.map(|v| Subset::all(Arc::new(source_of(v, &class_names))));
        Dataset {
            name,
            class_names,
            train,
            val,
            test,
        }
    } else {
        let f = options.test_fraction;
        if !(0.0..1.0).contains(&f) {
            return Err(Error::invalid(format!(
                "{name}: test_fraction must be in [0, 1), got {f}"
            )));
        }
        let tree = read_tree(dir, &mut skipped)?;
        let class_names: Vec<String> = tree.classes.iter().map(|c| c.0.clone()).collect();
        let source = source_of(tree, &class_names);
        let (keep, held) =
            stratified_split(&source.labels, f, derive_seed(&[options.seed, 0x7465_7374]));
        let source: Arc<dyn Source> = Arc::new(source);
        Dataset {
            name,
            class_names,
            train: Subset {
                source: source.clone(),
                indices: keep,
            },
            val: None,
            test: Subset {
                source,
                indices: held,
            },
        }
    };
    warn_skipped(dir, &skipped);
    Ok(ds)
}
