//! Crash-safe file replacement: write a temporary file in the same directory, flush it to
//! disk, then rename it over the target. A reader (or a resumed run) sees either the old file
//! or the new one, never a torn one, whenever the process is killed.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

const TEMPORARY: &str = ".tmp-";

/// Replaces `path` with `bytes` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| io::Error::other("not a file path"))?.to_string_lossy();
    let tmp = dir.join(format!(".{name}{TEMPORARY}{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The process id of the writer whose temporary file is named `name` (`.NAME.tmp-PID`), or
/// `None` for any other file.
pub fn temporary_owner(name: &str) -> Option<u32> {
    let (stem, pid) = name.strip_prefix('.')?.rsplit_once(TEMPORARY)?;
    if stem.is_empty() {
        return None;
    }
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["run.json"]);
    }

    #[test]
    fn temporaries_name_their_writer() {
        assert_eq!(temporary_owner(".training.png.tmp-4242"), Some(4242));
        assert_eq!(temporary_owner(&format!(".run.json{TEMPORARY}{}", std::process::id())), Some(std::process::id()));
        for other in ["training.png", ".training.png.tmp-", ".tmp-12", ".x.tmp-12a", "x.tmp-12"] {
            assert_eq!(temporary_owner(other), None, "{other}");
        }
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        write_atomic(&path, b"old").unwrap();
        // The target's directory disappears: the write fails, nothing else is touched.
        assert!(write_atomic(&dir.path().join("missing").join("x"), b"new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }
}
