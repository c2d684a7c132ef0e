//! Files, read and written so that nothing is lost and nothing hangs.
//!
//! - Only regular files are read: a FIFO or a device given as a data or weights file would block
//!   forever or never end (`/dev/zero`). A file is read up to the size it has when opened, so it
//!   cannot make graft allocate more than it declares.
//! - Every write goes to a temporary file in the same folder, is fsynced, renamed over the target
//!   and the folder is fsynced: a crash or a power cut leaves the old file or the new one, never
//!   a mix, and a finished write survives.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Opens `path` for reading after checking that it is a regular file (symlinks followed).
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a pipe, socket or device)"
        };
        return Err(Error::file(path, format!("{kind}: expected a file")));
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    Ok((file, meta.len()))
}

/// Reads a whole regular file (its size when opened; a file that grows meanwhile is cut there).
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// Reads a whole regular file of at most `max` bytes (`what` names it in the message).
pub fn read_file_at_most(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    let (_, len) = open_regular(path)?;
    if len > max {
        return Err(Error::file(
            path,
            format!("{len} bytes is too large for {what} (at most {max})"),
        ));
    }
    read_file(path)
}

/// The SHA-256 of a regular file's bytes as lowercase hex, read in blocks (weights files are
/// large).
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let (mut f, _) = open_regular(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// graft's cache folder (features, downloaded weights): `setting` (`--cache-dir`), else
/// `$GRAFT_CACHE_DIR`, else `~/.cache/graft`.
pub fn cache_root(setting: Option<&Path>) -> PathBuf {
    if let Some(d) = setting {
        return d.to_path_buf();
    }
    if let Some(d) = std::env::var_os("GRAFT_CACHE_DIR") {
        return PathBuf::from(d);
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/graft"),
        None => PathBuf::from(".cache/graft"),
    }
}

/// The most a text file graft reads (configs, JSON, metrics lines) may hold.
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// Reads a regular text file of at most [`MAX_TEXT_BYTES`] as UTF-8, naming it in errors.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = read_file_at_most(path, MAX_TEXT_BYTES, "a text file")?;
    String::from_utf8(bytes).map_err(|e| {
        Error::file(
            path,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

/// A temporary name beside `path`, unique to this process: `.NAME.tmp-PID`.
fn temporary_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically and durably: temporary file, fsync, rename, fsync of the
/// folder. On failure the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_beside(path);
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_parent(path);
    Ok(())
}

/// Makes the entries of `dir` (a rename, a new file) durable. Best effort: not every platform
/// lets a folder be fsynced, and the data itself was synced already.
pub fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
}

/// A test hook: when `GRAFT_TEST_CRASH_AT` is `NAME:N`, the process aborts at the `N`th time
/// (1-based) it reaches the point `name`, as `kill -9` would stop it there. The crash tests use it
/// to stop a run inside a checkpoint write; it does nothing otherwise.
pub fn crash_point(name: &str) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    static ARMED: AtomicBool = AtomicBool::new(true);
    static SEEN: Mutex<Vec<(String, usize)>> = Mutex::new(Vec::new());
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let Ok(spec) = std::env::var("GRAFT_TEST_CRASH_AT") else {
        ARMED.store(false, Ordering::Relaxed);
        return;
    };
    let Some((point, n)) = spec.rsplit_once(':') else {
        return;
    };
    if point != name {
        return;
    }
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let count = match seen.iter_mut().find(|(p, _)| p == name) {
        Some((_, c)) => {
            *c += 1;
            *c
        }
        None => {
            seen.push((name.to_string(), 1));
            1
        }
    };
    if n.parse() == Ok(count) {
        eprintln!("GRAFT_TEST_CRASH_AT: aborting at {name} #{count}");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_file(dir.path()).unwrap_err().to_string();
        assert!(err.contains("a directory"), "{err}");
        #[cfg(unix)]
        {
            let err = read_file(Path::new("/dev/zero")).unwrap_err().to_string();
            assert!(err.contains("not a regular file"), "{err}");
        }
        let f = dir.path().join("x.bin");
        write_atomic(&f, b"hello").unwrap();
        assert_eq!(read_file(&f).unwrap(), b"hello");
        let err = read_file_at_most(&f, 3, "a test").unwrap_err().to_string();
        assert!(err.contains("too large for a test"), "{err}");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
