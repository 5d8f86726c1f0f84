//! Values read from files and read again when the files change (rotated
//! Kubernetes Secrets, edited key files), and the background task that does it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::task::AbortHandle;

/// How often credential files are checked for changes. Kubernetes updates
/// mounted Secrets within about a minute; a few `stat` calls every 5 s cost
/// nothing and need no inotify (which symlink-swapped Secret volumes defeat).
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The task that keeps a credential current; aborted when its owner is
/// dropped (a reload replaced it). Set once, after the owner exists, because
/// the task holds only a `Weak` to it.
#[derive(Default)]
pub(crate) struct BackgroundTask(OnceLock<AbortHandle>);

impl BackgroundTask {
    pub(crate) fn set(&self, task: AbortHandle) {
        let _ = self.0.set(task);
    }
}

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        if let Some(task) = self.0.get() {
            task.abort();
        }
    }
}

/// (modified, length) of a file, or `None` if it cannot be read.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

/// A value read from files, read again when they change. A broken new file
/// keeps the old value (and says why).
pub struct Watched<T> {
    label: String,
    current: ArcSwap<T>,
    files: Vec<PathBuf>,
    stamps: Mutex<Vec<Stamp>>,
    reload: Box<dyn Fn() -> Result<T, String> + Send + Sync>,
    task: BackgroundTask,
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Holds `initial`; if `files` is not empty, checks them every [`FILE_POLL_INTERVAL`].
    pub fn start(
        label: String,
        initial: T,
        files: Vec<PathBuf>,
        reload: impl Fn() -> Result<T, String> + Send + Sync + 'static,
    ) -> Arc<Self> {
        let stamps = files.iter().map(stamp).collect();
        let this = Arc::new(Watched {
            label,
            current: ArcSwap::from_pointee(initial),
            files,
            stamps: Mutex::new(stamps),
            reload: Box::new(reload),
            task: BackgroundTask::default(),
        });
        if !this.files.is_empty() {
            let weak = Arc::downgrade(&this);
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(FILE_POLL_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(this) = weak.upgrade() else { return };
                    this.check_now();
                }
            });
            this.task.set(task.abort_handle());
        }
        this
    }

    /// The current value. Lock-free.
    pub fn current(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Reads the files again if any changed; true if the value was replaced.
    pub fn check_now(&self) -> bool {
        let now: Vec<Stamp> = self.files.iter().map(stamp).collect();
        {
            let mut stamps = self.stamps.lock().expect("not poisoned");
            if *stamps == now {
                return false;
            }
            *stamps = now;
        }
        self.reload_now()
    }

    /// Reads the files again now; true if the value was replaced.
    pub fn reload_now(&self) -> bool {
        match (self.reload)() {
            Ok(value) => {
                self.current.store(Arc::new(value));
                tracing::info!(credentials = %self.label, "credential files changed; re-read them");
                true
            }
            Err(e) => {
                tracing::error!(credentials = %self.label, "credential files changed but cannot be used; keeping the previous credential: {e}");
                false
            }
        }
    }
}
