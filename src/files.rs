//! Reading the files the configuration names, bounded: the configuration itself, password
//! and token files, CA bundles, the web config and its certificates, a resolv.conf.
//!
//! A leaf at the bottom of the crate (it imports nothing of it). Every such file is read
//! here, so that a FIFO, a device such as `/dev/zero` or a file grown huge is refused the
//! same way wherever it is named, and a secret file is trimmed by one rule, whether
//! `check` or the configuration asks for it. Errors are typed: a caller decides on the
//! cause (a missing file, a permission), never on an error's text.

use std::io::{self, Read as _};
use std::path::Path;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a regular file")]
    NotAFile,
    #[error("{len} bytes, more than the {limit} accepted")]
    TooLong { len: u64, limit: u64 },
    /// It grew past the limit while being read.
    #[error("more than the {limit} bytes accepted")]
    Grew { limit: u64 },
    #[error("not UTF-8")]
    NotUtf8,
}

impl ReadError {
    /// The OS's reason, when the read failed in the OS.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            ReadError::Io(e) => Some(e.kind()),
            _ => None,
        }
    }
}

/// Reads a file, refusing what is not a regular file and anything longer than `limit`
/// bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(ReadError::NotAFile);
    }
    if metadata.len() > limit {
        return Err(ReadError::TooLong { len: metadata.len(), limit });
    }
    // One byte to spare, so that reading to the end finds it there without growing the
    // buffer (a full buffer would be doubled just to learn that nothing follows).
    let mut bytes = Vec::with_capacity(metadata.len() as usize + 1);
    std::fs::File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::Grew { limit });
    }
    Ok(bytes)
}

/// The largest secret file read.
pub const MAX_SECRET_BYTES: u64 = 64 << 10;

/// Reads a secret kept in a file (a password): bounded to [`MAX_SECRET_BYTES`], UTF-8, and
/// without the line end that `echo secret > file` adds (one `\n` or `\r\n`; any other
/// whitespace is part of the secret).
pub fn read_secret(path: &Path) -> Result<String, ReadError> {
    let bytes = read_bounded(path, MAX_SECRET_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)?;
    Ok(text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, content: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("smtp-exporter-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn a_secret_loses_one_line_end_and_nothing_else() {
        assert_eq!(read_secret(&file("lf", b"s3cret\n")).unwrap(), "s3cret");
        assert_eq!(read_secret(&file("crlf", b"s3cret\r\n")).unwrap(), "s3cret");
        assert_eq!(read_secret(&file("two", b"s3cret\n\n")).unwrap(), "s3cret\n");
        assert_eq!(read_secret(&file("space", b" s3cret ")).unwrap(), " s3cret ");
    }

    #[test]
    fn what_is_not_a_small_regular_file_is_refused_by_its_cause() {
        assert!(matches!(read_bounded(Path::new("/dev/zero"), 10), Err(ReadError::NotAFile)));
        let long = file("long", &[b'x'; 11]);
        assert!(matches!(read_bounded(&long, 10), Err(ReadError::TooLong { len: 11, limit: 10 })));
        assert_eq!(read_bounded(&long, 11).unwrap().len(), 11);
        let missing = read_bounded(Path::new("/nonexistent/file"), 10).unwrap_err();
        assert_eq!(missing.io_kind(), Some(io::ErrorKind::NotFound));
        assert!(matches!(read_secret(&file("latin1", b"\xe9t\xe9")), Err(ReadError::NotUtf8)));
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        assert_eq!(read_bounded(Path::new("/dev/zero"), 1024).unwrap_err().to_string(), "not a regular file");
        let file = crate::test_support::temp_file("bounded", &"y".repeat(2000));
        assert_eq!(
            read_bounded(&file, 1000).unwrap_err().to_string(),
            "2000 bytes, more than the 1000 accepted"
        );
        assert_eq!(read_bounded(&file, 4000).unwrap().len(), 2000);
    }

    /// Issue 17: a file longer than its size said (one that grew after it was looked at,
    /// or a /proc file, which says 0) is refused, not cut at the limit.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_longer_than_its_size_said_is_refused_not_cut() {
        let status = Path::new("/proc/self/status");
        assert_eq!(std::fs::metadata(status).unwrap().len(), 0);
        assert_eq!(read_bounded(status, 100).unwrap_err().to_string(), "more than the 100 bytes accepted");
    }

    /// Issue 17: the bound is inclusive: a file of exactly the limit is read, an empty one too.
    #[test]
    fn the_bound_is_inclusive() {
        let file = crate::test_support::temp_file("bounded-exact", &"y".repeat(2000));
        assert_eq!(read_bounded(&file, 2000).unwrap().len(), 2000);
        let empty = crate::test_support::temp_file("bounded-empty", "");
        assert_eq!(read_bounded(&empty, 2000).unwrap(), Vec::<u8>::new());
    }
}
