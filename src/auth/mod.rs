//! Credentials at run time: one [`Provider`] per `[credentials.NAME]`, each
//! keeping its credential current: long-lived AK/SK and API keys re-read when
//! their files change, IAM tokens and ECS temporary AK/SK refreshed ahead of
//! expiry by [`refresh::Refreshing`].

pub mod iam;
pub mod metadata;
pub mod refresh;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use http::{HeaderName, HeaderValue};
use tokio::task::AbortHandle;

use crate::client::HttpClient;
use crate::config::{self, AkSkCredentials, Credentials};
use crate::credentials::Sources;
use crate::metrics::Metrics;
use crate::proxy::Clock;
use refresh::{FetchError, Observe, Policy, Refreshing};

/// How often credential files are checked for changes. Kubernetes updates
/// mounted Secrets within about a minute; a few `stat` calls every 5 s cost
/// nothing and need no inotify (which symlink-swapped Secret volumes defeat).
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// An API key as sent: the header and its (sensitive) value.
#[derive(Clone, Debug)]
pub struct ApiKey {
    pub header: HeaderName,
    pub value: HeaderValue,
}

/// A credential source at run time.
#[derive(Clone)]
pub enum Provider {
    AkSk(Arc<Watched<AkSkCredentials>>),
    Metadata {
        creds: Arc<Refreshing<Arc<AkSkCredentials>>>,
        max_wait: Duration,
    },
    Token {
        token: Arc<Refreshing<iam::Token>>,
        max_wait: Duration,
        /// Watches a `{ file = … }` password: a fixed file retries at once.
        password_watch: Option<Arc<Watched<()>>>,
    },
    ApiKey(Arc<Watched<ApiKey>>),
}

/// What building providers needs from the daemon.
#[derive(Clone)]
pub struct Context {
    pub client: HttpClient,
    pub sources: Arc<dyn Sources>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
}

impl Provider {
    /// Starts the provider for `[credentials.{name}]` (needs a Tokio runtime).
    pub fn start(name: &str, spec: &Credentials, cx: &Context) -> Provider {
        let label = format!("credentials.{name}");
        let observe = CredentialMetrics {
            metrics: cx.metrics.clone(),
            credentials: name.to_owned(),
        };
        match spec {
            Credentials::AkSk(a) => {
                let (source, project_id, sources) = (
                    a.source.clone(),
                    a.current.project_id.clone(),
                    cx.sources.clone(),
                );
                let files = a.source.files(&*cx.sources);
                let reload = move || {
                    source
                        .resolve(&*sources, project_id.clone())
                        .map_err(|(key, e)| format!("{key}: {e}"))
                };
                Provider::AkSk(Watched::start(label, (*a.current).clone(), files, reload))
            }
            Credentials::ApiKey(k) => {
                let (src, prefix, header, sources) = (
                    k.app_code.clone(),
                    k.prefix.clone(),
                    k.header.clone(),
                    cx.sources.clone(),
                );
                let files = match &k.app_code {
                    crate::credentials::SecretSource::File(p) => vec![p.clone()],
                    _ => Vec::new(),
                };
                let reload = move || {
                    let code = src.resolve(&*sources)?;
                    Ok(ApiKey {
                        header: header.clone(),
                        value: config::api_key_value(&prefix, &code)?,
                    })
                };
                let initial = ApiKey {
                    header: k.header.clone(),
                    value: k.current.clone(),
                };
                Provider::ApiKey(Watched::start(label, initial, files, reload))
            }
            Credentials::Token(t) => {
                let fetcher = iam::IamFetcher {
                    request: t.request.clone(),
                    client: cx.client.clone(),
                    sources: cx.sources.clone(),
                };
                let token = Refreshing::start(
                    label.clone(),
                    fetcher,
                    Policy::with_margin(t.refresh_margin),
                    cx.clock.clone(),
                    observe,
                );
                let password_watch = match &t.request.password {
                    crate::credentials::SecretSource::File(path) => {
                        let weak = Arc::downgrade(&token);
                        let retry = move || {
                            if let Some(token) = weak.upgrade()
                                && token.last_error().is_some()
                            {
                                token.retry_now();
                            }
                            Ok(())
                        };
                        Some(Watched::start(
                            format!("{label}.password"),
                            (),
                            vec![path.clone()],
                            retry,
                        ))
                    }
                    _ => None,
                };
                Provider::Token {
                    token,
                    max_wait: t.max_wait,
                    password_watch,
                }
            }
            Credentials::Metadata(m) => {
                let fetcher = metadata::MetadataFetcher {
                    endpoint: m.endpoint.clone(),
                    project_id: m.project_id.clone(),
                    client: cx.client.clone(),
                };
                let creds = Refreshing::start(
                    label,
                    fetcher,
                    Policy::with_margin(m.refresh_margin),
                    cx.clock.clone(),
                    observe,
                );
                Provider::Metadata {
                    creds,
                    max_wait: m.max_wait,
                }
            }
        }
    }

    /// False while an expiring credential has not been fetched (or has expired).
    pub fn is_ready(&self) -> bool {
        match self {
            Provider::AkSk(_) | Provider::ApiKey(_) => true,
            Provider::Metadata { creds, .. } => creds.is_ready(),
            Provider::Token { token, .. } => token.is_ready(),
        }
    }

    /// After a reload kept this provider: if it is failing, retry now (the
    /// operator may have fixed the password file or IAM).
    pub fn retry_if_failing(&self) {
        match self {
            Provider::Token { token, .. } if token.last_error().is_some() || !token.is_ready() => {
                token.retry_now()
            }
            Provider::Metadata { creds, .. }
                if creds.last_error().is_some() || !creds.is_ready() =>
            {
                creds.retry_now()
            }
            _ => {}
        }
    }

    /// Why the provider is not ready, if it is not.
    pub fn not_ready_reason(&self) -> Option<String> {
        let last = |e: Option<FetchError>| {
            e.map(|e| e.message)
                .unwrap_or_else(|| "not fetched yet".to_owned())
        };
        match self {
            Provider::AkSk(_) | Provider::ApiKey(_) => None,
            Provider::Metadata { creds, .. } => {
                (!creds.is_ready()).then(|| last(creds.last_error()))
            }
            Provider::Token { token, .. } => (!token.is_ready()).then(|| last(token.last_error())),
        }
    }
}

/// Metrics for expiring credentials.
struct CredentialMetrics {
    metrics: Arc<Metrics>,
    credentials: String,
}

impl Observe for CredentialMetrics {
    fn fetched(&self, expires_at: DateTime<Utc>) {
        self.metrics
            .credential_fetched(&self.credentials, expires_at.timestamp());
    }

    fn failed(&self, _error: &FetchError) {
        self.metrics.credential_failed(&self.credentials);
    }
}

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
