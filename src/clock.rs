//! The wall clock, injected so that signing and expiry can be tested "at" a
//! given time (STYLE guideline 7).

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// A clock: the current UTC time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system() -> Clock {
    Arc::new(Utc::now)
}
