//! Writing a file so that a reader never sees half of it.

use std::path::Path;

/// Writes `bytes` to `path` through a temporary file beside it (`<name>.tmp`), synced, then
/// renamed over `path`: a reader never sees half a file, and a failed write leaves the old file
/// and no temporary behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
