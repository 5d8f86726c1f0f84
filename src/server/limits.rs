//! Fitting the connection cap to the process's open-file limit, and
//! accept failures reported once per burst rather than once per attempt.

/// File descriptors kept for everything but client connections: the
/// listeners, the admin listener's connections, IAM and metadata calls,
/// credential files, DNS, logs.
pub const RESERVED_FDS: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as Go and nginx do)
/// and returns the soft limit now in force (the current one if raising is
/// not allowed, e.g. under a seccomp filter).
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::increase_nofile_limit(u64::MAX).ok().or_else(|| {
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        })
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// How many client connections fit in `fd_limit` descriptors: each may
/// need a second one for its upstream connection.
pub fn fit_connections(configured: usize, fd_limit: Option<u64>) -> usize {
    match fd_limit {
        None => configured,
        Some(limit) => {
            let fits = (limit.saturating_sub(RESERVED_FDS) / 2).max(1);
            configured.min(usize::try_from(fits).unwrap_or(usize::MAX))
        }
    }
}

/// Counts failed accepts so that a burst (e.g. EMFILE under a flood) logs
/// one line when it starts and one when it ends.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    failed: u64,
}

impl AcceptErrors {
    /// A failed accept: the line to log, for the first of a burst only.
    pub fn failed(&mut self, error: &std::io::Error) -> Option<String> {
        self.failed += 1;
        (self.failed == 1).then(|| {
            format!(
                "accept failed: {error}; retrying, and counting further failures \
                 (modelarts_proxy_accept_errors_total) until an accept succeeds"
            )
        })
    }

    /// A successful accept: the line to log if it ends a burst.
    pub fn succeeded(&mut self) -> Option<String> {
        let failed = std::mem::take(&mut self.failed);
        (failed > 0).then(|| format!("accepting again after {failed} failed accepts"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_half_of_the_descriptors_left_after_the_reserve() {
        assert_eq!(fit_connections(4096, Some(1024)), 480);
        assert_eq!(fit_connections(100, Some(1024)), 100);
        assert_eq!(fit_connections(4096, Some(1_048_576)), 4096);
        assert_eq!(fit_connections(4096, Some(10)), 1, "never zero");
        assert_eq!(fit_connections(4096, None), 4096);
    }

    #[test]
    fn a_burst_of_accept_errors_logs_once_when_it_starts_and_once_when_it_ends() {
        let mut e = AcceptErrors::default();
        let emfile = std::io::Error::from_raw_os_error(24);
        let first = e.failed(&emfile).unwrap();
        assert!(first.contains("accept failed"), "{first}");
        for _ in 0..779 {
            assert_eq!(e.failed(&emfile), None);
        }
        assert_eq!(
            e.succeeded().unwrap(),
            "accepting again after 780 failed accepts"
        );
        assert_eq!(e.succeeded(), None);
        assert!(e.failed(&emfile).is_some(), "a new burst logs again");
    }
}
