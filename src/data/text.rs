//! Labelled text datasets, opened from a spec:
//!
//! ```text
//! csv:PATH[?text=COL&label=COL&test_fraction=F&seed=S]
//!     PATH a .csv, .tsv or .jsonl file (split into train and test like `folder:`), or a folder
//!     holding train.* and test.* (and optionally val.*) in one of those formats; columns (keys)
//!     `text` and `label` unless named
//! textfolder:DIR[?test_fraction=F&seed=S]
//!     DIR/<class>/*.txt (one text a file), or DIR/{train,val,test}/<class>/*.txt
//! ```
//!
//! Class names are the labels' values, sorted. Every bad row is an error naming its file and
//! line (a missing column, an empty text, an unparsable line); sizes are bounded (texts of at
//! most 1 MiB, files as `crate::files` allows).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::source::ContentHash;
use super::split::{derive_seed, stratified_kfold, stratified_split, stratified_subset};
use crate::error::{Error, Result};
use crate::files::read_text;

/// The longest text a row may hold (tokenization cuts it to the model's length anyway).
const MAX_TEXT_BYTES: usize = 1 << 20;

/// Indices of `texts` from the longest to the shortest (in characters; ties keep their order):
/// batches of similar lengths pad little. sentence-transformers' `encode` sorts the same way;
/// each text's result does not depend on its batch (padding is masked).
pub fn longest_first<S: AsRef<str>>(texts: &[S]) -> Vec<usize> {
    let lengths: Vec<usize> = texts.iter().map(|t| t.as_ref().chars().count()).collect();
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    order
}

/// Batches of similar lengths for training, as transformers' `LengthGroupedSampler`
/// (`group_by_length`): the epoch's `order` is cut into mega-batches of 50 batches, each sorted
/// longest first, so batches stay random but pad little.
pub fn group_by_length<S: AsRef<str>>(
    order: &[usize],
    texts: &[S],
    batch_size: usize,
) -> Vec<usize> {
    const BATCHES_PER_GROUP: usize = 50;
    order
        .chunks((BATCHES_PER_GROUP * batch_size).max(1))
        .flat_map(|group| {
            let group_texts: Vec<&str> = group.iter().map(|&i| texts[i].as_ref()).collect();
            longest_first(&group_texts)
                .into_iter()
                .map(|k| group[k])
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Texts with labels and their splits (positions into `texts`).
#[derive(Debug, Clone)]
pub struct TextDataset {
    /// The spec, for messages.
    pub name: String,
    /// Class names in label order (the labels' values, sorted).
    pub class_names: Vec<String>,
    /// Every text of every split, in file order.
    pub texts: Arc<Vec<String>>,
    /// The class of each text (`labels[i]` is `texts[i]`'s).
    pub labels: Arc<Vec<usize>>,
    /// Where each text comes from (`file:line`), for messages and reports.
    pub origins: Arc<Vec<String>>,
    /// The training split: positions into `texts`.
    pub train: Vec<usize>,
    /// The validation split (positions into `texts`), when the dataset has one or one was held
    /// out (see [`TextDataset::with_val_split`]).
    pub val: Option<Vec<usize>>,
    /// The test split: positions into `texts`.
    pub test: Vec<usize>,
}

impl TextDataset {
    /// Labels of the samples at `positions`.
    pub fn labels_of(&self, positions: &[usize]) -> Vec<usize> {
        positions.iter().map(|&i| self.labels[i]).collect()
    }

    /// Texts of the samples at `positions`.
    pub fn texts_of(&self, positions: &[usize]) -> Vec<&str> {
        positions.iter().map(|&i| self.texts[i].as_str()).collect()
    }

    /// A hash of every text (the identity of a cache of per-text results).
    pub fn content_id(&self) -> String {
        let mut h = ContentHash::new();
        for t in self.texts.iter() {
            h.add(t.as_bytes());
        }
        h.finish()
    }

    /// Samples per class among `positions`.
    pub fn class_counts(&self, positions: &[usize]) -> Vec<usize> {
        let mut counts = vec![0; self.class_names.len()];
        for &i in positions {
            counts[self.labels[i]] += 1;
        }
        counts
    }

    fn select(&self, set: &[usize], positions: &[usize]) -> Vec<usize> {
        positions.iter().map(|&k| set[k]).collect()
    }

    /// Holds out a stratified `fraction` of the training split as validation (as
    /// `Dataset::with_val_split`, same seed stream); a dataset with its own validation split
    /// keeps it.
    pub fn with_val_split(mut self, fraction: f64, seed: u64) -> TextDataset {
        if !(fraction > 0.0 && fraction < 1.0) || self.val.is_some() {
            return self;
        }
        let (keep, held) = stratified_split(
            &self.labels_of(&self.train),
            fraction,
            derive_seed(&[seed, 0x0076_616c]),
        );
        self.val = Some(self.select(&self.train, &held));
        self.train = self.select(&self.train, &keep);
        self
    }

    /// Keeps a stratified subset of `n` training samples.
    pub fn limit_train(mut self, n: usize, seed: u64) -> TextDataset {
        let keep = stratified_subset(
            &self.labels_of(&self.train),
            n,
            derive_seed(&[seed, 0x0074_726e]),
        );
        self.train = self.select(&self.train, &keep);
        self
    }

    /// Keeps a stratified subset of `n` test samples.
    pub fn limit_test(mut self, n: usize, seed: u64) -> TextDataset {
        let keep = stratified_subset(
            &self.labels_of(&self.test),
            n,
            derive_seed(&[seed, 0x0074_7374]),
        );
        self.test = self.select(&self.test, &keep);
        self
    }

    /// The `k` folds of the training split (cv): fold `i` tests, the others train.
    pub fn folds(&self, k: usize, seed: u64) -> Result<Vec<TextDataset>> {
        if k < 2 {
            return Err(Error::invalid(format!(
                "--folds must be at least 2, got {k}"
            )));
        }
        if self.train.len() < k {
            return Err(Error::invalid(format!(
                "{} training samples cannot make {k} folds",
                self.train.len()
            )));
        }
        let folds = stratified_kfold(&self.labels_of(&self.train), k, seed);
        Ok((0..k)
            .map(|i| {
                let train: Vec<usize> = folds
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .flat_map(|(_, f)| f.iter().copied())
                    .collect();
                TextDataset {
                    name: format!("{} fold {}/{k}", self.name, i + 1),
                    train: self.select(&self.train, &train),
                    val: None,
                    test: self.select(&self.train, &folds[i]),
                    ..self.clone()
                }
            })
            .collect())
    }
}

/// Whether `spec` names a text dataset.
pub fn is_text_spec(spec: &str) -> bool {
    spec.starts_with("csv:") || spec.starts_with("textfolder:")
}

/// Options after `?` in a spec.
#[derive(Debug, Clone)]
struct Options {
    text: String,
    label: String,
    test_fraction: f64,
    seed: u64,
}

fn parse_options(rest: &str, columns: bool) -> Result<(&str, Options)> {
    let mut o = Options {
        text: "text".into(),
        label: "label".into(),
        test_fraction: 0.2,
        seed: 0,
    };
    let Some((path, query)) = rest.rsplit_once('?').filter(|(_, q)| q.contains('=')) else {
        return Ok((rest, o));
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("option `{pair}`: expected key=value")))?;
        let bad = |what: &str| Error::invalid(format!("option {key}={value}: {what}"));
        match key {
            "text" if columns => o.text = value.to_string(),
            "label" if columns => o.label = value.to_string(),
            "test_fraction" => {
                let f: f64 = value.parse().map_err(|_| bad("not a number"))?;
                if !(0.0..1.0).contains(&f) {
                    return Err(bad("must be in [0, 1)"));
                }
                o.test_fraction = f;
            }
            "seed" => o.seed = value.parse().map_err(|_| bad("not an unsigned integer"))?,
            _ => {
                let known = if columns {
                    "text, label, test_fraction, seed"
                } else {
                    "test_fraction, seed"
                };
                return Err(bad(&format!("unknown option (known: {known})")));
            }
        }
    }
    Ok((path, o))
}

/// One read split: texts, label names, origins.
#[derive(Default)]
struct Rows {
    texts: Vec<String>,
    labels: Vec<String>,
    origins: Vec<String>,
}

impl Rows {
    fn push(&mut self, path: &Path, line: usize, text: String, label: String) -> Result<()> {
        let at = |msg: String| Error::file(path, format!("line {line}: {msg}"));
        if text.trim().is_empty() {
            return Err(at("empty text".into()));
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(at(format!(
                "a text of {} bytes (at most {MAX_TEXT_BYTES})",
                text.len()
            )));
        }
        let label = label.trim().to_string();
        if label.is_empty() {
            return Err(at("empty label".into()));
        }
        self.texts.push(text);
        self.labels.push(label);
        self.origins.push(format!("{}:{line}", path.display()));
        Ok(())
    }
}

/// Opens a text dataset spec (see the module docs).
pub fn open_text(spec: &str) -> Result<TextDataset> {
    if let Some(rest) = spec.strip_prefix("csv:") {
        let (path, o) = parse_options(rest, true)?;
        let path = Path::new(path);
        if path.is_dir() {
            let find = |stem: &str| -> Option<PathBuf> {
                ["csv", "tsv", "jsonl"]
                    .iter()
                    .map(|e| path.join(format!("{stem}.{e}")))
                    .find(|p| p.is_file())
            };
            let (Some(train), Some(test)) = (find("train"), find("test")) else {
                return Err(Error::file(
                    path,
                    "a text dataset folder holds train.csv and test.csv (or .tsv, .jsonl)",
                ));
            };
            let val = find("val");
            let mut splits = vec![read_table(&train, &o)?, read_table(&test, &o)?];
            if let Some(v) = &val {
                splits.push(read_table(v, &o)?);
            }
            return assemble(spec, splits, val.is_some());
        }
        let rows = read_table(path, &o)?;
        return split_pool(spec, rows, &o);
    }
    if let Some(rest) = spec.strip_prefix("textfolder:") {
        let (dir, o) = parse_options(rest, false)?;
        let dir = Path::new(dir);
        let split_dirs: Vec<PathBuf> = ["train", "test", "val"]
            .iter()
            .map(|s| dir.join(s))
            .collect();
        if split_dirs[0].is_dir() && split_dirs[1].is_dir() {
            let has_val = split_dirs[2].is_dir();
            let mut splits = vec![
                read_text_tree(&split_dirs[0])?,
                read_text_tree(&split_dirs[1])?,
            ];
            if has_val {
                splits.push(read_text_tree(&split_dirs[2])?);
            }
            return assemble(spec, splits, has_val);
        }
        let rows = read_text_tree(dir)?;
        return split_pool(spec, rows, &o);
    }
    Err(Error::invalid(format!(
        "`{spec}` is not a text dataset spec (csv:PATH or textfolder:DIR)"
    )))
}

/// Train, test (and val) read separately: concatenated, class names from all of them.
fn assemble(spec: &str, splits: Vec<Rows>, has_val: bool) -> Result<TextDataset> {
    let names: BTreeSet<String> = splits
        .iter()
        .flat_map(|r| r.labels.iter().cloned())
        .collect();
    let class_names: Vec<String> = names.into_iter().collect();
    let index: BTreeMap<&str, usize> = class_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    let mut origins = Vec::new();
    let mut ranges = Vec::new();
    for rows in splits {
        let start = texts.len();
        labels.extend(rows.labels.iter().map(|l| index[l.as_str()]));
        texts.extend(rows.texts);
        origins.extend(rows.origins);
        ranges.push((start..texts.len()).collect::<Vec<usize>>());
    }
    let mut ranges = ranges.into_iter();
    let train = ranges.next().unwrap_or_default();
    let test = ranges.next().unwrap_or_default();
    let val = if has_val { ranges.next() } else { None };
    Ok(TextDataset {
        name: spec.to_string(),
        class_names,
        texts: Arc::new(texts),
        labels: Arc::new(labels),
        origins: Arc::new(origins),
        train,
        val,
        test,
    })
}

/// One pool of rows, split into train and test by a fixed-seed stratified hold-out.
fn split_pool(spec: &str, rows: Rows, o: &Options) -> Result<TextDataset> {
    let mut ds = assemble(spec, vec![rows], false)?;
    let all: Vec<usize> = (0..ds.texts.len()).collect();
    let (train, test) = stratified_split(
        &ds.labels_of(&all),
        o.test_fraction,
        derive_seed(&[o.seed, 0x7465_7874]),
    );
    ds.train = train;
    ds.test = test;
    Ok(ds)
}

/// A `.csv`, `.tsv` or `.jsonl` file of rows with a text and a label.
fn read_table(path: &Path, o: &Options) -> Result<Rows> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "jsonl" => read_jsonl(path, o),
        "csv" | "tsv" => read_delimited(path, o, if ext == "tsv" { b'\t' } else { b',' }),
        other => Err(Error::file(
            path,
            format!("`.{other}`: a text table is .csv, .tsv or .jsonl"),
        )),
    }
}

fn read_delimited(path: &Path, o: &Options, delimiter: u8) -> Result<Rows> {
    parse_delimited(path, &read_text(path)?, o, delimiter)
}

/// The rows of a CSV (`delimiter` b',') or TSV file's `text` (`path` names it in errors).
fn parse_delimited(path: &Path, text: &str, o: &Options, delimiter: u8) -> Result<Rows> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| Error::file(path, format!("line 1: cannot read the header: {e}")))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| {
                Error::file(
                    path,
                    format!(
                        "line 1: no column `{name}` (columns: {}); name the columns with \
                     ?text=COL&label=COL",
                        headers.iter().collect::<Vec<_>>().join(", ")
                    ),
                )
            })
    };
    let (ti, li) = (column(&o.text)?, column(&o.label)?);
    let mut rows = Rows::default();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            Error::file(path, format!("line {line}: {e}"))
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let get = |i: usize| record.get(i).unwrap_or_default().to_string();
        rows.push(path, line, get(ti), get(li))?;
    }
    Ok(rows)
}

fn read_jsonl(path: &Path, o: &Options) -> Result<Rows> {
    parse_jsonl(path, &read_text(path)?, o)
}

/// The rows of a JSON-lines file's `text` (`path` names it in errors).
fn parse_jsonl(path: &Path, text: &str, o: &Options) -> Result<Rows> {
    let mut rows = Rows::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::file(path, format!("line {n}: not JSON: {e}")))?;
        let field = |name: &str| -> Result<String> {
            match v.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(serde_json::Value::Number(x)) if name == o.label => Ok(x.to_string()),
                Some(serde_json::Value::Bool(b)) if name == o.label => Ok(b.to_string()),
                Some(other) => Err(Error::file(
                    path,
                    format!("line {n}: `{name}` is {other}, expected a string"),
                )),
                None => Err(Error::file(path, format!("line {n}: no `{name}` field"))),
            }
        };
        rows.push(path, n, field(&o.text)?, field(&o.label)?)?;
    }
    Ok(rows)
}

/// Parses a text table from memory as a file named `path` would be read (its extension picks
/// the format), with the default columns: the rows' count, or the error. For the fuzz target.
pub fn parse_table(path: &Path, text: &str) -> Result<usize> {
    let (_, o) = parse_options("", true)?;
    let rows = match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl") => parse_jsonl(path, text, &o)?,
        Some("tsv") => parse_delimited(path, text, &o, b'\t')?,
        _ => parse_delimited(path, text, &o, b',')?,
    };
    Ok(rows.texts.len())
}

/// `DIR/<class>/*.txt`, one text a file.
fn read_text_tree(dir: &Path) -> Result<Rows> {
    let mut rows = Rows::default();
    let mut classes: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(Error::file(
            dir,
            "no class folders (expected DIR/<class>/*.txt)",
        ));
    }
    for class in classes {
        let label = class
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&class)
            .map_err(|e| Error::io(&class, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "txt"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::file(&class, "class folder with no .txt files"));
        }
        for f in files {
            let text = read_text(&f)?;
            rows.push(&f, 1, text, label.clone())?;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_orders_keep_every_text_once() {
        let texts = ["ab", "abcd", "a", "abc", "", "abcd"];
        // Longest first, ties in their original order; characters, not bytes.
        assert_eq!(longest_first(&texts), vec![1, 5, 3, 0, 2, 4]);
        assert_eq!(longest_first(&["éé", "abc"]), vec![1, 0]);
        // group_by_length sorts within each mega-batch of 50 batches only.
        let many: Vec<String> = (0..230).map(|i| "x".repeat((i * 37) % 101)).collect();
        let order: Vec<usize> = (0..230).rev().collect();
        let grouped = group_by_length(&order, &many, 2);
        let mut sorted = grouped.clone();
        sorted.sort();
        assert_eq!(sorted, (0..230).collect::<Vec<_>>());
        for (group, original) in grouped.chunks(100).zip(order.chunks(100)) {
            let mut a = group.to_vec();
            let mut b = original.to_vec();
            a.sort();
            b.sort();
            assert_eq!(a, b, "a text moved to another mega-batch");
            assert!(
                group
                    .windows(2)
                    .all(|w| many[w[0]].len() >= many[w[1]].len())
            );
        }
    }

    #[test]
    fn csv_tsv_and_jsonl_rows_with_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("d.csv");
        std::fs::write(
            &csv,
            "text,label\n\"hello, world\",a\n\"multi\nline\",b\nthird,a\nfourth,b\nfifth,a\n",
        )
        .unwrap();
        let ds = open_text(&format!("csv:{}?test_fraction=0.4", csv.display())).unwrap();
        assert_eq!(ds.class_names, ["a", "b"]);
        assert_eq!(ds.texts.len(), 5);
        assert_eq!(ds.train.len() + ds.test.len(), 5);
        assert!(ds.texts.iter().any(|t| t == "multi\nline"));
        let tsv = dir.path().join("d.tsv");
        std::fs::write(&tsv, "label\tsentence\nx\tone\ny\ttwo\n").unwrap();
        let ds = open_text(&format!("csv:{}?text=sentence", tsv.display())).unwrap();
        assert_eq!(ds.class_names, ["x", "y"]);
        let jsonl = dir.path().join("d.jsonl");
        std::fs::write(&jsonl, "{\"text\": \"a\", \"label\": 1}\n\n{\"text\": \"b\", \"label\": 2}\n{\"text\": \"c\"}\n").unwrap();
        let err = open_text(&format!("csv:{}", jsonl.display()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("d.jsonl") && err.contains("line 4") && err.contains("`label`"),
            "{err}"
        );
        std::fs::write(&csv, "text,label\nok,a\n,b\n").unwrap();
        let err = open_text(&format!("csv:{}", csv.display()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("empty text"),
            "{err}"
        );
        std::fs::write(&csv, "words,label\nok,a\n").unwrap();
        let err = open_text(&format!("csv:{}", csv.display()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no column `text`") && err.contains("?text=COL"),
            "{err}"
        );
        std::fs::write(&csv, "text,label\nok,a,extra\n").unwrap();
        let err = open_text(&format!("csv:{}", csv.display()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("d.csv") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn text_folders_and_split_files() {
        let dir = tempfile::tempdir().unwrap();
        for (split, class, n) in [
            ("train", "pos", 3),
            ("train", "neg", 3),
            ("test", "pos", 1),
            ("test", "neg", 2),
        ] {
            let d = dir.path().join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..n {
                std::fs::write(d.join(format!("{i}.txt")), format!("{class} {i}")).unwrap();
            }
        }
        let ds = open_text(&format!("textfolder:{}", dir.path().display())).unwrap();
        assert_eq!(ds.class_names, ["neg", "pos"]);
        assert_eq!((ds.train.len(), ds.test.len()), (6, 3));
        let ds = ds.with_val_split(0.34, 0);
        assert_eq!(ds.val.as_ref().unwrap().len() + ds.train.len(), 6);
        let folds = ds.folds(2, 0).unwrap();
        assert_eq!(folds.len(), 2);
        assert_eq!(folds[0].test.len() + folds[1].test.len(), ds.train.len());
    }
}
