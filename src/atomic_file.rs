//! Writing a file so that a reader never sees half of it.

use std::path::Path;

/// Writes `bytes` to `path` through a temporary file beside it (`<name>.tmp`), synced, then
/// renamed over `path` and the folder synced: a reader never sees half a file, a failed write
/// leaves the old file and no temporary behind, and a finished write survives a power loss.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        if crate::fault::armed() {
            let (first, rest) = bytes.split_at(bytes.len() / 2);
            f.write_all(first)?;
            f.sync_all()?;
            crate::fault::reached(&format!(
                "write:{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ));
            f.write_all(rest)?;
        } else {
            f.write_all(bytes)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself lives in the folder's entry list: sync that too, so a power loss
        // right after a save cannot take the save back. Folders cannot be opened as files on
        // every platform (Windows), where this is skipped.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
