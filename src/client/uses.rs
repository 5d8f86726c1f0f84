//! Whether a pooled connection is being reused: an idempotent request sent
//! on a keep-alive connection that had answered before, and that closed
//! before any byte of this answer, is sent again (DESIGN §12). The count
//! travels as the connection's "extra" from the connector to every answer
//! (and every failed send) on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Response;

/// How many response heads a connection has delivered.
#[derive(Clone, Debug, Default)]
pub struct Uses(Arc<AtomicU64>);

/// Counts `response` against the connection that delivered it.
pub fn answered<B>(response: &Response<B>) {
    if let Some(uses) = response.extensions().get::<Uses>() {
        uses.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// True when the send failed on a connection that had answered before.
pub fn reused(err: &hyper_util::client::legacy::Error) -> bool {
    let Some(info) = err.connect_info() else {
        return false;
    };
    let mut extensions = http::Extensions::new();
    info.get_extras(&mut extensions);
    extensions
        .get::<Uses>()
        .is_some_and(|uses| uses.0.load(Ordering::Relaxed) > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::client::legacy::connect::Connected;

    #[test]
    fn a_connection_counts_as_reused_once_it_has_answered() {
        let uses = Uses::default();
        let connected = Connected::new().extra(uses.clone());
        let mut response = Response::new(());
        connected.get_extras(response.extensions_mut());
        assert_eq!(uses.0.load(Ordering::Relaxed), 0);
        answered(&response);
        assert_eq!(uses.0.load(Ordering::Relaxed), 1);
    }
}
