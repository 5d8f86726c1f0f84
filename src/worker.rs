//! Which worker thread the current code runs on. The daemon serves each
//! client connection, start to end, on one worker: a single-threaded Tokio
//! runtime of its own (`server::workers`). The upstream client keeps one
//! connection pool per worker, so a request, its upstream connection and
//! both their tasks stay on one thread: no cross-thread wake-ups, no
//! shared pool lock.

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The worker this thread is, or `None` off the workers (the control
/// thread, tests, the `dev` stand-ins).
pub fn current() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// Marks this thread as worker `index`; called once, as it starts.
pub(crate) fn enter(index: usize) {
    INDEX.with(|i| i.set(Some(index)));
}
