//! The worker threads: one single-threaded Tokio runtime per CPU, each
//! serving whole client connections. The acceptor hands every new
//! connection to the worker with the fewest open; from then on the
//! connection, its requests, its upstream connections (the client pools
//! per worker, see [`crate::worker`]) and their timers live on that one
//! thread. A multi-threaded work-stealing runtime instead moves the tasks of
//! one request between threads, and pays a futex wake for each move
//! (BENCHMARKS.md, "Against nginx").

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Running worker threads; dropping this stops them (each cancels what is
/// left on it) and waits for them to end.
pub struct Workers {
    workers: Vec<Worker>,
    /// Where the search for the least loaded worker starts, so ties rotate.
    next: AtomicUsize,
}

struct Worker {
    handle: Handle,
    /// Client connections open on this worker.
    open: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` (at least 1) worker threads.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let workers = (0..n.max(1))
            .map(Worker::start)
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Workers {
            workers,
            next: AtomicUsize::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Client connections open on each worker.
    pub fn open(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.open.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs the connection task that `make` builds on the worker with the
    /// fewest open connections; `make` runs on that worker (a socket must be
    /// registered with the runtime that polls it).
    pub fn serve<F, Fut>(&self, make: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let worker = &self.workers[least_loaded(&self.open(), start)];
        let counted = Counted::new(worker.open.clone());
        worker.handle.spawn(async move {
            let _counted = counted;
            make().await;
        });
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
        for w in &mut self.workers {
            if let Some(thread) = w.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Worker {
    fn start(index: usize) -> std::io::Result<Worker> {
        let (ready, handle) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let runtime = match runtime {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                crate::worker::enter(index);
                let _ = ready.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let handle = handle
            .recv()
            .map_err(|_| std::io::Error::other("a worker thread died while starting"))??;
        Ok(Worker {
            handle,
            open: Arc::new(AtomicUsize::new(0)),
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// The index of the smallest count, searching from `start` round the
/// ring, so equal loads take turns.
fn least_loaded(open: &[usize], start: usize) -> usize {
    let n = open.len();
    (0..n)
        .map(|k| (start + k) % n)
        .min_by_key(|&i| open[i])
        .unwrap_or(0)
}

/// One open connection on a worker, counted while it lives.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Counted(open)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_loaded_worker_is_chosen_and_ties_take_turns() {
        assert_eq!(least_loaded(&[3, 1, 2], 0), 1);
        assert_eq!(least_loaded(&[3, 1, 2], 2), 1);
        assert_eq!(least_loaded(&[0, 0], 0), 0);
        assert_eq!(least_loaded(&[0, 0], 1), 1);
        assert_eq!(least_loaded(&[5], 7), 0);
    }

    #[test]
    fn connections_spread_evenly_and_each_runs_on_its_own_worker_thread() {
        let workers = Workers::start(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (hold, release) = tokio::sync::watch::channel(false);
        for _ in 0..6 {
            let (tx, mut release) = (tx.clone(), release.clone());
            workers.serve(move || async move {
                tx.send(crate::worker::current()).unwrap();
                let _ = release.wait_for(|go| *go).await;
            });
        }
        let mut seen: Vec<_> = (0..6).map(|_| rx.recv().unwrap()).collect();
        seen.sort();
        assert_eq!(seen, [Some(0), Some(0), Some(0), Some(1), Some(1), Some(1)]);
        assert_eq!(workers.open(), [3, 3]);
        hold.send_replace(true);
        drop(workers);
        drop(hold);
    }
}
