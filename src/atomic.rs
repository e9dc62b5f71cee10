//! Writing files so that nothing is ever half-written or lost: the bytes go
//! to a temporary name in the same folder, are flushed to disk, and only
//! then replace the destination in one rename. A crash leaves either the old
//! file or the new one, never a mix. Outputs the user did not allow to be
//! replaced are created with a hard link instead, which fails when the
//! destination exists: two processes writing the same new file cannot
//! silently replace each other's.

use crate::bail;
use crate::error::Result;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// Writes `path` atomically, replacing it if it exists.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, bytes, true)
}

/// Writes `path` atomically, replacing an existing file only if `replace`.
pub fn write_file(path: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    let tmp = temp_name(path);
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        bail!("{}: cannot write: {e}", path.display());
    }
    move_into(&tmp, path, replace)
}

/// Moves the finished file `tmp` (in `path`'s folder) to `path`, replacing
/// an existing file only if `replace`; `tmp` is gone afterwards either way.
pub fn move_into(tmp: &Path, path: &Path, replace: bool) -> Result<()> {
    let moved = (|| -> std::io::Result<()> {
        if replace {
            fs::rename(tmp, path)?;
        } else {
            fs::hard_link(tmp, path)?;
            fs::remove_file(tmp)?;
        }
        // Make the rename itself durable.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = moved {
        let _ = fs::remove_file(tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            bail!(
                "{}: already exists (made while this ran?); nothing was replaced",
                path.display()
            );
        }
        bail!("{}: cannot write: {e}", path.display());
    }
    Ok(())
}
