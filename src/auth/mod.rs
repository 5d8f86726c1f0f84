//! Credentials at run time: one [`Provider`] per `[credentials.NAME]`, each
//! keeping its credential current: long-lived AK/SK and API keys re-read when
//! their files change, IAM tokens and ECS temporary AK/SK refreshed ahead of
//! expiry by [`refresh::Refreshing`].

pub mod aksk;
pub mod breaker;
pub mod iam;
pub mod inject;
pub mod metadata;
pub mod refresh;
pub mod watched;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderName, HeaderValue};

use crate::client::HttpClient;
use crate::clock::{Clock, Skew};
use crate::config::{self, AkSkSpec, ApiKeySpec, Credentials, MetadataSpec, TokenSpec};
use crate::credentials::{SecretSource, Sources};
use crate::metrics::Metrics;
pub use aksk::AkSkCredentials;
pub use breaker::Breaker;
use refresh::{FetchError, Observe, Policy, Refreshing};
pub use watched::{FILE_POLL_INTERVAL, Watched};

/// An API key as sent: the header and its (sensitive) value.
#[derive(Clone, Debug)]
pub struct ApiKey {
    pub header: HeaderName,
    pub value: HeaderValue,
}

/// A credential source at run time.
#[derive(Clone)]
pub enum Provider {
    AkSk {
        keys: Arc<Watched<AkSkCredentials>>,
        breaker: Arc<Breaker>,
    },
    Metadata {
        creds: Arc<Refreshing<Arc<AkSkCredentials>>>,
        max_wait: Duration,
        breaker: Arc<Breaker>,
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
    /// IAM's `Date` headers are measured against this machine's clock.
    pub skew: Arc<Skew>,
    /// This machine's clock, uncorrected.
    pub local_clock: Clock,
}

impl Provider {
    /// Starts the provider for `[credentials.{name}]` (needs a Tokio runtime).
    pub fn start(name: &str, spec: &Credentials, cx: &Context) -> Provider {
        let label = format!("credentials.{name}");
        match spec {
            Credentials::AkSk(a) => start_aksk(label, name, a, cx),
            Credentials::ApiKey(k) => start_api_key(label, k, cx),
            Credentials::Token(t) => start_token(label, name, t, cx),
            Credentials::Metadata(m) => start_metadata(label, name, m, cx),
        }
    }

    /// True for AK/SK (long-lived or temporary): requests are signed.
    pub fn signs(&self) -> bool {
        matches!(self, Provider::AkSk { .. } | Provider::Metadata { .. })
    }

    /// Which kind of credential this is, for hints.
    pub fn kind(&self) -> crate::gateway::Kind {
        use crate::gateway::Kind;
        match self {
            Provider::AkSk { .. } | Provider::Metadata { .. } => Kind::AkSk,
            Provider::Token { .. } => Kind::Token,
            Provider::ApiKey(_) => Kind::ApiKey,
        }
    }

    /// False while an expiring credential has not been fetched (or has expired).
    pub fn is_ready(&self) -> bool {
        match self {
            Provider::AkSk { .. } | Provider::ApiKey(_) => true,
            Provider::Metadata { creds, .. } => creds.is_ready(),
            Provider::Token { token, .. } => token.is_ready(),
        }
    }

    /// After a reload kept this provider: if it is failing, retry now (the
    /// operator may have fixed the password file or IAM); an open signature
    /// breaker closes.
    pub fn retry_if_failing(&self) {
        if let Provider::Metadata { breaker, .. } = self {
            breaker.reset("the configuration was reloaded");
        }
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
            Provider::AkSk { .. } | Provider::ApiKey(_) => None,
            Provider::Metadata { creds, .. } => {
                (!creds.is_ready()).then(|| last(creds.last_error()))
            }
            Provider::Token { token, .. } => (!token.is_ready()).then(|| last(token.last_error())),
        }
    }
}

/// A long-lived AK/SK, re-read when its files change (which also closes
/// its signature breaker: the operator fixed the key).
fn start_aksk(label: String, name: &str, a: &AkSkSpec, cx: &Context) -> Provider {
    let breaker = Arc::new(Breaker::new(name, a.breaker_cooldown, cx.metrics.clone()));
    let (source, project_id, sources, fixed) = (
        a.source.clone(),
        a.current.project_id.clone(),
        cx.sources.clone(),
        breaker.clone(),
    );
    let files = a.source.files(&*cx.sources);
    let reload = move || {
        let key = source
            .resolve(&*sources, project_id.clone())
            .map(|key| AkSkCredentials::from(&key))
            .map_err(|problems| {
                let each: Vec<String> = problems.iter().map(|(k, e)| format!("{k}: {e}")).collect();
                each.join("; ")
            })?;
        fixed.reset("the key files changed");
        Ok(key)
    };
    let initial = AkSkCredentials::from(&a.current);
    Provider::AkSk {
        keys: Watched::start(label, initial, files, reload),
        breaker,
    }
}

/// An API key, re-read when its file changes.
fn start_api_key(label: String, k: &ApiKeySpec, cx: &Context) -> Provider {
    let (src, prefix, header, sources) = (
        k.app_code.clone(),
        k.prefix.clone(),
        k.header.clone(),
        cx.sources.clone(),
    );
    let files = match &k.app_code {
        SecretSource::File(p) => vec![p.clone()],
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

/// An IAM token kept fresh; a `{ file = … }` password is watched so that a
/// fixed file retries at once.
fn start_token(label: String, name: &str, t: &TokenSpec, cx: &Context) -> Provider {
    let fetcher = iam::IamFetcher {
        request: t.request.clone(),
        client: cx.client.clone(),
        sources: cx.sources.clone(),
        skew: Some(iam::SkewProbe {
            skew: cx.skew.clone(),
            local: cx.local_clock.clone(),
        }),
    };
    let token = Refreshing::start(
        label.clone(),
        fetcher,
        Policy::with_margin(t.refresh_margin),
        cx.clock.clone(),
        CredentialMetrics::new(cx, name),
    );
    let password_watch = match &t.request.password {
        SecretSource::File(path) => {
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

/// Temporary AK/SK from the ECS metadata service, kept fresh; new keys
/// close the signature breaker.
fn start_metadata(label: String, name: &str, m: &MetadataSpec, cx: &Context) -> Provider {
    let breaker = Arc::new(Breaker::new(name, m.breaker_cooldown, cx.metrics.clone()));
    let fetcher = metadata::MetadataFetcher::new(
        m.endpoint.clone(),
        m.project_id.clone(),
        cx.client.clone(),
        cx.local_clock.clone(),
    );
    let mut observe = CredentialMetrics::new(cx, name);
    observe.breaker = Some(breaker.clone());
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
        breaker,
    }
}

/// Metrics for expiring credentials.
struct CredentialMetrics {
    metrics: Arc<Metrics>,
    credentials: String,
    /// New temporary keys close it.
    breaker: Option<Arc<Breaker>>,
}

impl CredentialMetrics {
    fn new(cx: &Context, name: &str) -> Self {
        CredentialMetrics {
            metrics: cx.metrics.clone(),
            credentials: name.to_owned(),
            breaker: None,
        }
    }
}
impl Observe for CredentialMetrics {
    fn fetched(&self, expires_at: DateTime<Utc>) {
        self.metrics
            .credential_fetched(&self.credentials, expires_at.timestamp());
        if let Some(b) = &self.breaker {
            b.reset("new temporary keys were fetched");
        }
    }

    fn failed(&self, _error: &FetchError) {
        self.metrics.credential_failed(&self.credentials);
    }
}
