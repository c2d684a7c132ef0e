//! Where a classification run's evaluations are written.

use std::path::{Path, PathBuf};

/// Where `graft eval` writes: `eval.json` for the run's own test split, `eval-<spec>.json` for
/// another dataset's.
pub fn eval_file(run_dir: &Path, data_spec: Option<&str>) -> PathBuf {
    match data_spec {
        None => run_dir.join("eval.json"),
        Some(other) => run_dir.join(format!("eval-{}.json", file_stem_of(other))),
    }
}

/// A dataset spec as a file-name part: `cifar10:/data/x` → `cifar10-data-x`.
fn file_stem_of(spec: &str) -> String {
    let mut out = String::new();
    for c in spec.chars() {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_string();
    let out: String = out
        .chars()
        .rev()
        .take(80)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if out.is_empty() { "data".into() } else { out }
}

#[cfg(test)]
mod tests {
    #[test]
    fn specs_become_file_names() {
        assert_eq!(super::file_stem_of("cifar10:/data/x y"), "cifar10-data-x-y");
        assert_eq!(super::file_stem_of("::"), "data");
    }
}
