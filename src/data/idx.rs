//! MNIST-style IDX files (`idx:DIR`, `mnist`, `fashion-mnist`), raw or gzipped.
//!
//! An IDX file is a 4-byte magic (0, 0, type 0x08 = u8, number of dims), one big-endian u32 per
//! dim, then the data row-major. Images are `[n, rows, cols]`, labels `[n]`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::cifar::read_names;
use crate::data::image::Image;
use crate::data::source::{ContentHash, Source};
use crate::data::split::{Dataset, Subset};
use crate::error::{Error, Result};
use crate::files::read_file;

/// Where the `fashion-mnist` shorthand looks.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Where the `mnist` shorthand looks.
pub const MNIST_DIR: &str = "/usr/share/datasets/mnist";

/// The Fashion-MNIST class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// How the class names of an IDX directory are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdxNames {
    /// `classes.txt` in the directory when present, else `"0"`..`"9"`.
    Auto,
    /// These names (their count is the class count).
    Given(Vec<String>),
}

/// Images and labels of one IDX pair, in memory (MNIST's train images are 47 MB).
pub struct IdxSource {
    /// The images file as read (decompressed); pixels start at `offset`.
    data: Vec<u8>,
    offset: usize,
    rows: u32,
    cols: u32,
    labels: Vec<u8>,
    file: String,
    /// `content_id`, computed once (hashing the bytes takes a while).
    content_id: std::sync::OnceLock<String>,
}

impl IdxSource {
    /// Reads an images file and a labels file and checks that they agree.
    pub fn open(images: &Path, labels: &Path, classes: usize) -> Result<IdxSource> {
        IdxSource::from_bytes(
            images,
            read_file(images)?,
            labels,
            read_file(labels)?,
            classes,
        )
    }

    /// [`IdxSource::open`] on the files' bytes (raw or gzipped; the paths name them in
    /// messages).
    pub fn from_bytes(
        images: &Path,
        images_raw: Vec<u8>,
        labels: &Path,
        labels_raw: Vec<u8>,
        classes: usize,
    ) -> Result<IdxSource> {
        let data = decode_idx(images, images_raw, IMAGES_MAGIC, 3, "images")?;
        let dims = header(images, &data, IMAGES_MAGIC, 3, "images")?;
        let (n, rows, cols) = (dims[0], dims[1], dims[2]);
        if rows == 0 || cols == 0 {
            return Err(Error::file(
                images,
                format!("images are {rows}x{cols}: no pixels"),
            ));
        }
        let offset = 4 + 4 * 3;
        let need = (n as usize)
            .checked_mul(rows as usize)
            .and_then(|x| x.checked_mul(cols as usize))
            .ok_or_else(|| Error::file(images, format!("dims {n}x{rows}x{cols} are too large")))?;
        check_len(
            images,
            &data,
            offset,
            need,
            &format!("{n} images of {rows}x{cols}"),
        )?;

        let lab = decode_idx(labels, labels_raw, LABELS_MAGIC, 1, "labels")?;
        let ldims = header(labels, &lab, LABELS_MAGIC, 1, "labels")?;
        let ln = ldims[0];
        check_len(labels, &lab, 8, ln as usize, &format!("{ln} labels"))?;
        if ln != n {
            return Err(Error::file(
                labels,
                format!("{ln} labels, but {} holds {n} images", images.display()),
            ));
        }
        let lab = lab[8..].to_vec();
        if let Some((i, &l)) = lab
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= classes)
        {
            return Err(Error::file(
                labels,
                format!(
                    "label {l} of image {i} is not below the number of classes ({classes}); \
                     for more classes put their names in classes.txt"
                ),
            ));
        }
        Ok(IdxSource {
            data,
            offset,
            rows,
            cols,
            labels: lab,
            file: images.display().to_string(),
            content_id: std::sync::OnceLock::new(),
        })
    }
}

impl Source for IdxSource {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn label(&self, i: usize) -> usize {
        self.labels[i] as usize
    }

    fn load(&self, i: usize) -> Result<Image> {
        let size = self.rows as usize * self.cols as usize;
        let start = self.offset + i * size;
        let pixels = self
            .data
            .get(start..start + size)
            .ok_or_else(|| Error::invalid(format!("{}: no image {i}", self.file)))?;
        Image::new(self.cols, self.rows, 1, pixels.to_vec())
    }

    fn describe(&self, i: usize) -> String {
        format!("{} image {i}", self.file)
    }

    fn content_id(&self) -> Result<String> {
        if let Some(id) = self.content_id.get() {
            return Ok(id.clone());
        }
        let mut h = ContentHash::new();
        h.add(&self.data);
        Ok(self.content_id.get_or_init(|| h.finish()).clone())
    }
}

/// The whole file, gunzipped when it starts with the gzip magic (1f 8b) whatever its name.
/// The most data an IDX file may declare (4 GiB: MNIST's training images are 47 MB).
const MAX_IDX_DATA: u64 = 1 << 32;
/// Deflate cannot expand data by more than about 1032:1; a gzip file declaring more is lying.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// An IDX file's bytes, gunzipped if they are gzip: the header first, then the data bytes the
/// header declares (and one more, to notice trailing bytes). The declared size is bounded
/// before anything is inflated, so a small `.gz` cannot make graft inflate gigabytes.
fn decode_idx(path: &Path, raw: Vec<u8>, magic: u32, ndims: usize, what: &str) -> Result<Vec<u8>> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let corrupt = |e: std::io::Error| Error::file(path, format!("corrupt gzip data: {e}"));
    let mut stream = flate2::read::MultiGzDecoder::new(raw.as_slice());
    let header_len = 4 + 4 * ndims;
    let mut out = Vec::new();
    (&mut stream)
        .take(header_len as u64)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    let dims = header(path, &out, magic, ndims, what)?;
    let need = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(u64::from(d)));
    let limit = MAX_IDX_DATA.min((raw.len() as u64).saturating_mul(MAX_DEFLATE_RATIO));
    let need = match need {
        Some(n) if n <= limit => n,
        _ => {
            return Err(Error::file(
                path,
                format!(
                    "header declares {what} of dims {dims:?}, more than this {}-byte gzip file \
                     can hold (at most {limit} bytes); corrupt or hostile file",
                    raw.len()
                ),
            ));
        }
    };
    stream
        .take(need + 1)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() as u64 > header_len as u64 + need {
        return Err(Error::file(
            path,
            format!(
                "trailing bytes: the header declares {need} bytes of {what} data, the gzip \
                 stream holds more (not read further)"
            ),
        ));
    }
    Ok(out)
}

/// Checks the magic and returns the dims.
fn header(path: &Path, data: &[u8], magic: u32, ndims: usize, what: &str) -> Result<Vec<u32>> {
    let be = |at: usize| -> Option<u32> {
        data.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let found = be(0).ok_or_else(|| {
        Error::file(
            path,
            format!("too short for an IDX header ({} bytes)", data.len()),
        )
    })?;
    if found != magic {
        return Err(Error::file(
            path,
            format!(
                "bad magic 0x{found:08x}: expected 0x{magic:08x} (IDX {what}, u8, {ndims} dims)"
            ),
        ));
    }
    (0..ndims)
        .map(|d| {
            be(4 + 4 * d).ok_or_else(|| {
                Error::file(
                    path,
                    format!(
                        "truncated header: {} bytes, need {}",
                        data.len(),
                        4 + 4 * ndims
                    ),
                )
            })
        })
        .collect()
}

fn check_len(path: &Path, data: &[u8], offset: usize, need: usize, what: &str) -> Result<()> {
    let have = data.len().saturating_sub(offset);
    if have != need {
        let problem = if have < need {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(Error::file(
            path,
            format!("{problem}: header says {what} = {need} bytes of data, the file has {have}"),
        ));
    }
    Ok(())
}

/// Finds `stem` in `dir`: as is, gzipped, or with the `.idx` spelling some mirrors use.
fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    [
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
    .into_iter()
    .map(|n| dir.join(n))
    .find(|p| p.is_file())
}

/// Opens an IDX directory: `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
/// `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`.
pub fn open_idx(dir: &Path, names: IdxNames, name: &str) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::file(
            dir,
            "not a directory (expected IDX files in it)",
        ));
    }
    let stems = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ];
    let found: Vec<Option<PathBuf>> = stems.iter().map(|s| find(dir, s)).collect();
    let missing: Vec<String> = stems
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(s, _)| format!("{s}[.gz]"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::file(
            dir,
            format!("missing IDX files: {}", missing.join(", ")),
        ));
    }
    let paths: Vec<PathBuf> = found.into_iter().flatten().collect();
    let class_names = match names {
        IdxNames::Given(n) => n,
        IdxNames::Auto => match read_names(&dir.join("classes.txt"))? {
            Some(n) => n,
            None => (0..10).map(|i| i.to_string()).collect(),
        },
    };
    let classes = class_names.len();
    let train = IdxSource::open(&paths[0], &paths[1], classes)?;
    let test = IdxSource::open(&paths[2], &paths[3], classes)?;
    Ok(Dataset {
        name: name.to_string(),
        class_names,
        train: Subset::all(Arc::new(train)),
        val: None,
        test: Subset::all(Arc::new(test)),
    })
}
