//! One error type for the library, carrying the file, tensor or setting it is about.
//!
//! The library never panics on user input: every reader returns `Result<T>` and the message names
//! what was wrong and where (`"data/x.bin: truncated record 17 (expected 3073 bytes, got 12)"`).

use std::path::{Path, PathBuf};

/// Everything that can go wrong in graft's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem with a specific file: its path and what is wrong with it.
    #[error("{}: {msg}", path.display())]
    File {
        /// The file the problem is about.
        path: PathBuf,
        /// What is wrong with it (without the path, which the message prefixes).
        msg: String,
    },
    /// An I/O failure while touching a file. The OS error is part of the message, not a
    /// `source` (a source is printed again after the message by `{:#}`: the OS text twice).
    #[error("{}: {}", path.display(), io_text(cause))]
    Io {
        /// The file being read, written, created or removed.
        path: PathBuf,
        /// The operating system's error.
        cause: std::io::Error,
    },
    /// A tensor that is missing, unexpected or of the wrong shape.
    #[error("tensor `{name}`: {msg}")]
    Tensor {
        /// The tensor's name (its checkpoint key or module path).
        name: String,
        /// What is wrong with it.
        msg: String,
    },
    /// An invalid setting (flag, config key, spec string).
    #[error("{0}")]
    Invalid(String),
}

/// What an I/O error means to a user, without the OS's error number.
fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory (check the path)".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Shorthand used across the library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A file-level error: `Error::file(path, "truncated header")`.
    pub fn file(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            cause: source,
        }
    }

    /// A tensor-level error: `Error::tensor("fc.weight", "expected [10, 512], got [1000, 512]")`.
    pub fn tensor(name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.into(),
            msg: msg.into(),
        }
    }

    /// An invalid setting.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}
