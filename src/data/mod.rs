//! Datasets: sources, splits, transforms and the batch loader, opened from one spec string.
//!
//! ```text
//! cifar10:DIR      data_batch_1..5.bin + test_batch.bin (+ batches.meta.txt)
//! cifar100:DIR     train.bin + test.bin (fine labels; + fine_label_names.txt)
//! idx:DIR          train-/t10k- images-idx3 / labels-idx1 -ubyte[.gz] (+ classes.txt)
//! mnist[:DIR]      idx with digit names; DIR defaults to /usr/share/datasets/mnist
//! fashion-mnist[:DIR]  idx with the Fashion-MNIST names; DIR defaults to /usr/share/datasets/fashion-mnist
//! folder:DIR[?test_fraction=0.2&seed=0]   DIR/<class>/*.jpg|png, or DIR/{train,val,test}/<class>/...
//! DIR              any of the above, recognised by its files
//! ```

pub mod cifar;
pub mod folder;
pub mod idx;
pub mod image;
pub mod loader;
pub mod source;
pub mod split;
pub mod text;
pub mod transform;

use std::path::Path;

pub use self::image::Image;
pub use cifar::{CIFAR10_CLASSES, CifarKind, CifarSource, open_cifar10, open_cifar100};
pub use folder::{FolderOptions, FolderSource, open_folder};
pub use idx::{FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, IdxNames, IdxSource, MNIST_DIR, open_idx};
pub use loader::{Batch, Loader, Sampler, class_weights_auto, epoch_order};
pub use source::{InMemory, Source};
pub use split::{
    Dataset, Subset, derive_seed, fold_datasets, stratified_kfold, stratified_split,
    stratified_subset,
};
pub use transform::{Augment, Pipeline, Resize, SHORTER_CROP_RATIO, Step};

use crate::error::{Error, Result};

const FORMS: &str = "cifar10:DIR, cifar100:DIR, idx:DIR, mnist[:DIR], fashion-mnist[:DIR], \
                     folder:DIR[?test_fraction=F&seed=S], or a directory in one of these layouts";

/// Opens a dataset from a spec (see the module docs for the forms).
pub fn open(spec: &str) -> Result<Dataset> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(Error::invalid(format!(
            "empty dataset spec; expected {FORMS}"
        )));
    }
    match spec {
        "mnist" => return open_mnist(Path::new(MNIST_DIR), spec),
        "fashion-mnist" => return open_fashion(Path::new(FASHION_MNIST_DIR), spec),
        _ => {}
    }
    if let Some((scheme, rest)) = spec.split_once(':') {
        let dir = Path::new(rest);
        match scheme {
            "cifar10" => return open_cifar10(dir),
            "cifar100" => return open_cifar100(dir),
            "idx" => return open_idx(dir, IdxNames::Auto, spec),
            "mnist" => return open_mnist(dir, spec),
            "fashion-mnist" => return open_fashion(dir, spec),
            "folder" => {
                let (dir, options) = folder_options(rest)?;
                return open_folder(Path::new(dir), options);
            }
            _ => {}
        }
    }
    let dir = Path::new(spec);
    if dir.is_dir() {
        return detect(dir, spec);
    }
    Err(Error::invalid(format!(
        "unknown dataset `{spec}`: expected {FORMS}"
    )))
}

fn open_mnist(dir: &Path, spec: &str) -> Result<Dataset> {
    let names = (0..10).map(|i| i.to_string()).collect();
    open_idx(dir, IdxNames::Given(names), spec)
}

fn open_fashion(dir: &Path, spec: &str) -> Result<Dataset> {
    let names = FASHION_MNIST_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect();
    open_idx(dir, IdxNames::Given(names), spec)
}

/// Splits `DIR?key=value&...` into the directory and its options.
fn folder_options(rest: &str) -> Result<(&str, FolderOptions)> {
    let mut options = FolderOptions::default();
    let Some((dir, query)) = rest.rsplit_once('?').filter(|(_, q)| q.contains('=')) else {
        return Ok((rest, options));
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("folder option `{pair}`: expected key=value")))?;
        let bad = |what: &str| Error::invalid(format!("folder option {key}={value}: {what}"));
        match key {
            "test_fraction" => {
                let f: f64 = value.parse().map_err(|_| bad("not a number"))?;
                if !(0.0..1.0).contains(&f) {
                    return Err(bad("must be in [0, 1)"));
                }
                options.test_fraction = f;
            }
            "seed" => options.seed = value.parse().map_err(|_| bad("not an unsigned integer"))?,
            _ => return Err(bad("unknown option (test_fraction, seed)")),
        }
    }
    Ok((dir, options))
}

/// Recognises a bare directory by the files in it.
fn detect(dir: &Path, spec: &str) -> Result<Dataset> {
    let has = |name: &str| dir.join(name).is_file();
    if has("data_batch_1.bin") || dir.join("cifar-10-batches-bin").is_dir() {
        return open_cifar10(dir);
    }
    if has("train.bin") || dir.join("cifar-100-binary").is_dir() {
        return open_cifar100(dir);
    }
    let idx = [
        "train-images-idx3-ubyte",
        "train-images-idx3-ubyte.gz",
        "train-images.idx3-ubyte",
    ];
    if idx.iter().any(|n| has(n)) {
        return open_idx(dir, IdxNames::Auto, spec);
    }
    open_folder(dir, FolderOptions::default())
}
