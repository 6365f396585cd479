//! One writer per run folder. A run holds an operating-system lock on `<run folder>/run.lock`
//! for as long as it may write there; a second process that would write into the folder
//! (`--resume` included) is refused, naming the holder. The lock belongs to the open file, so it
//! goes when the holder's process ends, however it ends: a `kill -9` leaves a lock file behind,
//! but no lock, and the next run takes it. The file's text (process id, start time, command)
//! is only for the refusal's message.
//!
//! Within one process the lock is shared: the main job holds both stages' folders from its
//! start, and each stage takes its own folder's lock again when it starts. An OS lock taken twice
//! through two open files would refuse its own process, so this process's held locks are kept
//! in a table and a second [`RunLock::acquire`] of a held folder shares the first.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::TrainError;

/// The lock file's name inside a run folder.
pub const LOCK_FILE: &str = "run.lock";

/// A held run-folder lock; the folder is free again when the last clone is dropped.
#[derive(Clone, Debug)]
#[must_use = "the run folder is unlocked as soon as its RunLock is dropped"]
pub struct RunLock {
    _held: Arc<Held>,
}

#[derive(Debug)]
struct Held {
    key: PathBuf,
    file: Option<File>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // The file is closed (the OS lock released) while the table is locked, so that an
        // acquire never finds the entry gone but the lock still held.
        let mut table = table().lock().unwrap_or_else(|p| p.into_inner());
        drop(self.file.take());
        if table.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
            table.remove(&self.key);
        }
    }
}

fn table() -> &'static Mutex<HashMap<PathBuf, Weak<Held>>> {
    static TABLE: OnceLock<Mutex<HashMap<PathBuf, Weak<Held>>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

impl RunLock {
    /// Locks run folder `dir` for this process, creating it where it is missing. Refused with
    /// [`TrainError::RunLocked`] while another process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, TrainError> {
        Self::acquire_if(dir, || Ok(()))
    }

    /// [`Self::acquire`], refused too where `check` fails once the lock is held; then the lock
    /// file is left as it was (a refused run changes nothing in the folder).
    pub fn acquire_if(
        dir: &Path,
        check: impl FnOnce() -> Result<(), TrainError>,
    ) -> Result<Self, TrainError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key = dir.canonicalize().map_err(io(dir))?;
        // A holder of this process whose last clone is being dropped on another thread still
        // holds the OS lock for a moment: wait for it instead of refusing this process.
        for _ in 0..1000 {
            let mut table = table().lock().unwrap_or_else(|p| p.into_inner());
            match table.get(&key) {
                Some(w) => match w.upgrade() {
                    Some(held) => {
                        check()?;
                        return Ok(Self { _held: held });
                    }
                    None => {
                        drop(table);
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                },
                None => return Self::lock_new(dir, key, &mut table, check),
            }
        }
        Err(TrainError::Invalid(format!(
            "run folder {}: this process's own lock on it was not released",
            dir.display()
        )))
    }

    fn lock_new(
        dir: &Path,
        key: PathBuf,
        table: &mut HashMap<PathBuf, Weak<Held>>,
        check: impl FnOnce() -> Result<(), TrainError>,
    ) -> Result<Self, TrainError> {
        let path = dir.join(LOCK_FILE);
        // Not truncated on open: until the lock is ours, the holder's text stays readable.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(TrainError::RunLocked {
                    dir: dir.to_path_buf(),
                    holder: describe_holder(&holder),
                });
            }
            Err(TryLockError::Error(source)) => return Err(TrainError::Io { path, source }),
        }
        // Refused here, the file closes and the lock goes, its text untouched.
        check()?;
        let text = holder_text();
        file.set_len(0)
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.flush())
            .map_err(io(&path))?;
        let held = Arc::new(Held {
            key: key.clone(),
            file: Some(file),
        });
        table.insert(key, Arc::downgrade(&held));
        Ok(Self { _held: held })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.to_path_buf();
    move |source| TrainError::Io { path, source }
}

/// What the lock file says of its holder: `pid`, `started` (RFC 3339, UTC) and `command` lines.
fn holder_text() -> String {
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let command: Vec<String> = std::env::args().collect();
    format!(
        "pid {}\nstarted {started}\ncommand {}\n",
        std::process::id(),
        command.join(" ")
    )
}

/// The holder for the refusal's message, from the lock file's text (which the holder may not
/// have written yet in the moment after it took the lock).
fn describe_holder(text: &str) -> String {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    match (field("pid"), field("started")) {
        (Some(pid), Some(started)) => {
            let command = field("command").map_or(String::new(), |c| format!(": {c}"));
            format!("process {pid}, started {started}{command}")
        }
        _ => "a process that has not yet written its id".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_described_from_the_lock_files_lines() {
        let text = "pid 4242\nstarted 2026-12-07T14:03:11Z\ncommand cnn-wgpu train --out r\n";
        assert_eq!(
            describe_holder(text),
            "process 4242, started 2026-12-07T14:03:11Z: cnn-wgpu train --out r"
        );
        assert_eq!(
            describe_holder(""),
            "a process that has not yet written its id"
        );
    }

    #[test]
    fn one_process_shares_its_lock_and_frees_it_with_the_last_holder() {
        let dir = std::env::temp_dir().join(format!("cnn-wgpu-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = RunLock::acquire(&dir).unwrap();
        let again = RunLock::acquire(&dir.join(".")).unwrap();
        assert!(Arc::ptr_eq(&first._held, &again._held));
        let text = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert!(
            text.starts_with(&format!("pid {}\n", std::process::id())),
            "{text}"
        );
        drop(first);
        drop(again);
        let key = dir.canonicalize().unwrap();
        assert!(table().lock().unwrap().get(&key).is_none());
        // Free again: a new file description takes the OS lock.
        let f = File::open(dir.join(LOCK_FILE)).unwrap();
        f.try_lock()
            .expect("the lock is released with the last holder");
        drop(f);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
