//! Finding the shipped weights (`weights/TASK-WHAT.safetensors`) wherever
//! nadb runs from: the current folder, then `NADB_WEIGHTS`, then beside
//! the executable, then the crate's own folder (where a build from source
//! or `cargo install --path` came from). A miss lists every place tried.

use crate::bail;
use crate::error::Result;
use std::path::{Path, PathBuf};

/// The folders searched, in order, each with why it is searched.
pub fn search_folders() -> Vec<(PathBuf, &'static str)> {
    let mut dirs = vec![(PathBuf::from("weights"), "the current folder")];
    if let Some(d) = std::env::var_os("NADB_WEIGHTS").filter(|d| !d.is_empty()) {
        dirs.push((PathBuf::from(d), "NADB_WEIGHTS"));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push((exe_dir.join("weights"), "beside the executable"));
    }
    dirs.push((
        Path::new(env!("CARGO_MANIFEST_DIR")).join("weights"),
        "the crate's folder",
    ));
    dirs
}

/// The first `file` (a file name) in the search folders.
pub fn find(file: &str) -> Result<PathBuf> {
    let dirs = search_folders();
    if let Some(path) = dirs.iter().map(|(d, _)| d.join(file)).find(|p| p.is_file()) {
        return Ok(path);
    }
    let looked: Vec<String> = dirs
        .iter()
        .map(|(d, why)| format!("{} ({why})", d.display()))
        .collect();
    bail!(
        "no shipped weights {file}: looked in {}; pass --checkpoint, or set NADB_WEIGHTS to the folder that holds them",
        looked.join(", ")
    )
}

/// A mean network's path as a bridge checkpoint recorded it: as given if
/// it exists, else (a relative path from another folder, as the shipped
/// files record `weights/...`) the file of that name beside the bridge.
pub fn recorded_beside(recorded: &Path, bridge: &Path) -> PathBuf {
    if recorded.exists() || recorded.is_absolute() {
        return recorded.to_path_buf();
    }
    match (recorded.file_name(), bridge.parent()) {
        (Some(name), Some(dir)) if dir.join(name).is_file() => dir.join(name),
        _ => recorded.to_path_buf(),
    }
}
