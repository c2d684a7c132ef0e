//! CIFAR-10 and CIFAR-100 in their binary formats (`cifar10:DIR`, `cifar100:DIR`).
//!
//! A record is the label byte(s) followed by a 32x32 image stored planar: 1024 red bytes, then
//! 1024 green, then 1024 blue, each plane row-major. Batch files are ~30 MB, so they are read
//! whole and records are sliced out on demand.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::image::Image;
use crate::data::source::{ContentHash, Source};
use crate::data::split::{Dataset, Subset};
use crate::error::{Error, Result};
use crate::files::read_file;

const SIDE: u32 = 32;
const PIXELS: usize = 3 * 32 * 32;

/// The standard CIFAR-10 class names (used when `batches.meta.txt` is absent).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Which of the two layouts a source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarKind {
    /// 1 label byte per record.
    Cifar10,
    /// 2 label bytes (coarse, fine); the fine label is used.
    Cifar100,
}

impl CifarKind {
    fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            CifarKind::Cifar100 => 2,
        }
    }

    fn record_size(self) -> usize {
        self.label_bytes() + PIXELS
    }

    fn name(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "cifar10",
            CifarKind::Cifar100 => "cifar100",
        }
    }
}

/// One batch file, held in memory.
struct BatchFile {
    name: String,
    bytes: Vec<u8>,
}

/// The records of one or more batch files of the same kind, numbered consecutively.
pub struct CifarSource {
    kind: CifarKind,
    files: Vec<BatchFile>,
    /// (file number, record number within the file) per sample.
    records: Vec<(u32, u32)>,
    labels: Vec<u8>,
    /// `content_id`, computed once (hashing the bytes takes a while).
    content_id: std::sync::OnceLock<String>,
}

impl CifarSource {
    /// Reads and validates batch files; labels must be below `classes`.
    pub fn open(kind: CifarKind, paths: &[PathBuf], classes: usize) -> Result<CifarSource> {
        let files = paths
            .iter()
            .map(|p| Ok((p.clone(), read_file(p)?)))
            .collect::<Result<Vec<_>>>()?;
        CifarSource::from_bytes(kind, files, classes)
    }

    /// [`CifarSource::open`] on the batch files' bytes (the paths name them in messages).
    pub fn from_bytes(
        kind: CifarKind,
        batches: Vec<(PathBuf, Vec<u8>)>,
        classes: usize,
    ) -> Result<CifarSource> {
        let size = kind.record_size();
        let mut files = Vec::with_capacity(batches.len());
        let mut records = Vec::new();
        let mut labels = Vec::new();
        for (f, (path, bytes)) in batches.into_iter().enumerate() {
            let path = path.as_path();
            if bytes.is_empty() {
                return Err(Error::file(path, "empty batch file (no records)"));
            }
            if bytes.len() % size != 0 {
                let complete = bytes.len() / size;
                return Err(Error::file(
                    path,
                    format!(
                        "truncated batch: {} bytes is not a multiple of {size} (record {} is incomplete)",
                        bytes.len(),
                        complete + 1
                    ),
                ));
            }
            let file_no =
                u32::try_from(f).map_err(|_| Error::invalid("too many CIFAR batch files"))?;
            for (r, rec) in bytes.chunks_exact(size).enumerate() {
                // The fine label is the last label byte in both layouts.
                let label = rec[kind.label_bytes() - 1];
                if label as usize >= classes {
                    return Err(Error::file(
                        path,
                        format!(
                            "record {r} has label {label}, but there are only {classes} classes"
                        ),
                    ));
                }
                let r = u32::try_from(r).map_err(|_| Error::file(path, "too many records"))?;
                records.push((file_no, r));
                labels.push(label);
            }
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            files.push(BatchFile { name, bytes });
        }
        Ok(CifarSource {
            kind,
            files,
            records,
            labels,
            content_id: std::sync::OnceLock::new(),
        })
    }
}

impl Source for CifarSource {
    fn len(&self) -> usize {
        self.records.len()
    }

    fn label(&self, i: usize) -> usize {
        self.labels[i] as usize
    }

    fn load(&self, i: usize) -> Result<Image> {
        let &(f, r) = self
            .records
            .get(i)
            .ok_or_else(|| Error::invalid(format!("{}: no sample {i}", self.kind.name())))?;
        let file = &self.files[f as usize];
        let size = self.kind.record_size();
        let start = r as usize * size + self.kind.label_bytes();
        // Lengths were validated in `open`; `get` keeps a logic error from becoming a panic.
        let chw = file.bytes.get(start..start + PIXELS).ok_or_else(|| {
            Error::invalid(format!("{}: record {r} out of range", self.describe(i)))
        })?;
        Image::from_chw(SIDE, SIDE, 3, chw)
    }

    fn describe(&self, i: usize) -> String {
        match self.records.get(i) {
            Some(&(f, r)) => format!(
                "{} {} record {r}",
                self.kind.name(),
                self.files[f as usize].name
            ),
            None => format!("{} sample {i} (out of range)", self.kind.name()),
        }
    }

    fn content_id(&self) -> Result<String> {
        if let Some(id) = self.content_id.get() {
            return Ok(id.clone());
        }
        let mut h = ContentHash::new();
        for f in &self.files {
            h.add(&f.bytes);
        }
        Ok(self.content_id.get_or_init(|| h.finish()).clone())
    }
}

/// Class names from a text file, one per line, blank lines skipped; `None` when the file is absent.
pub(crate) fn read_names(path: &Path) -> Result<Option<Vec<String>>> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = read_file(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::file(path, "class names are not UTF-8 text"))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(Error::file(path, "no class names (the file is blank)"));
    }
    Ok(Some(names))
}

/// The folder holding the batch files: `dir` itself, or the folder the official archives unpack to.
fn batch_dir(dir: &Path, first: &str, nested: &str) -> PathBuf {
    if !dir.join(first).is_file() && dir.join(nested).join(first).is_file() {
        dir.join(nested)
    } else {
        dir.to_path_buf()
    }
}

fn require(dir: &Path, kind: &str, names: &[&str]) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::file(
            dir,
            format!("not a directory (expected {kind} batch files in it)"),
        ));
    }
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !dir.join(n).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(Error::file(
            dir,
            format!(
                "missing {kind} files: {} (expected {})",
                missing.join(", "),
                names.join(", ")
            ),
        ));
    }
    Ok(names.iter().map(|n| dir.join(n)).collect())
}

/// `cifar10:DIR`: `data_batch_1.bin`..`data_batch_5.bin` (train) and `test_batch.bin` (test),
/// in DIR or in DIR/cifar-10-batches-bin. Class names from `batches.meta.txt` when present.
pub fn open_cifar10(dir: &Path) -> Result<Dataset> {
    let dir = batch_dir(dir, "data_batch_1.bin", "cifar-10-batches-bin");
    let train_names = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
    ];
    let mut all: Vec<&str> = train_names.to_vec();
    all.push("test_batch.bin");
    let paths = require(&dir, "CIFAR-10", &all)?;
    let class_names = match read_names(&dir.join("batches.meta.txt"))? {
        Some(n) => n,
        None => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
    };
    let classes = class_names.len();
    let train = CifarSource::open(CifarKind::Cifar10, &paths[..5], classes)?;
    let test = CifarSource::open(CifarKind::Cifar10, &paths[5..], classes)?;
    Ok(dataset(
        format!("cifar10:{}", dir.display()),
        class_names,
        train,
        test,
    ))
}

/// `cifar100:DIR`: `train.bin` and `test.bin` (fine labels), in DIR or DIR/cifar-100-binary.
/// Class names from `fine_label_names.txt` when present, else `"0"`..`"99"`.
pub fn open_cifar100(dir: &Path) -> Result<Dataset> {
    let dir = batch_dir(dir, "train.bin", "cifar-100-binary");
    let paths = require(&dir, "CIFAR-100", &["train.bin", "test.bin"])?;
    let class_names = match read_names(&dir.join("fine_label_names.txt"))? {
        Some(n) => n,
        None => (0..100).map(|i| i.to_string()).collect(),
    };
    let classes = class_names.len();
    let train = CifarSource::open(CifarKind::Cifar100, &paths[..1], classes)?;
    let test = CifarSource::open(CifarKind::Cifar100, &paths[1..], classes)?;
    Ok(dataset(
        format!("cifar100:{}", dir.display()),
        class_names,
        train,
        test,
    ))
}

fn dataset(
    name: String,
    class_names: Vec<String>,
    train: CifarSource,
    test: CifarSource,
) -> Dataset {
    Dataset {
        name,
        class_names,
        train: Subset::all(Arc::new(train)),
        val: None,
        test: Subset::all(Arc::new(test)),
    }
}
