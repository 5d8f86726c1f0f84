//! Credentials at run time: one [`Provider`] per `[credentials.NAME]`, each
//! keeping its credential current: long-lived AK/SK and API keys re-read when
//! their files change, IAM tokens and temporary AK/SK (ECS metadata, CCE Pod
//! Identity, OIDC federation, agencies) refreshed ahead of expiry by
//! [`refresh::Refreshing`].

pub mod aksk;
pub mod breaker;
pub mod iam;
pub mod inject;
pub mod metadata;
pub mod pod_identity;
pub mod refresh;
pub mod sts;
pub mod temporary;
pub mod watched;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderName, HeaderValue};

use crate::client::HttpClient;
use crate::clock::{Clock, Skew};
use crate::config::{
    self, AkSkSpec, ApiKeySpec, Base, Credentials, TemporarySource, TemporarySpec, TokenSource,
    TokenSpec,
};
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
    /// Temporary AK/SK, from whichever issuer.
    Temporary {
        creds: Arc<Refreshing<Arc<AkSkCredentials>>>,
        max_wait: Duration,
        breaker: Arc<Breaker>,
        /// Watches the file the issuer is shown: a fixed file retries at once.
        file_watch: Option<Arc<Watched<()>>>,
    },
    Token {
        token: Arc<Refreshing<iam::Token>>,
        max_wait: Duration,
        /// Watches a `{ file = … }` password or an id-token file: a fixed
        /// file retries at once.
        file_watch: Option<Arc<Watched<()>>>,
    },
    ApiKey(Arc<Watched<ApiKey>>),
}

/// What building providers needs from the daemon.
#[derive(Clone)]
pub struct Context {
    pub client: HttpClient,
    /// The same, never through an egress proxy (for Pod Identity).
    pub direct: HttpClient,
    pub sources: Arc<dyn Sources>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// IAM's `Date` headers are measured against this machine's clock.
    pub skew: Arc<Skew>,
    /// This machine's clock, uncorrected.
    pub local_clock: Clock,
}

impl Provider {
    /// Starts the provider for `[credentials.{name}]` (needs a Tokio
    /// runtime). An agency's base is found in `started`, so bases start
    /// first ([`Credentials::is_assumed`]).
    pub fn start(
        name: &str,
        spec: &Credentials,
        cx: &Context,
        started: &HashMap<String, Provider>,
    ) -> Provider {
        let label = format!("credentials.{name}");
        match spec {
            Credentials::AkSk(a) => start_aksk(label, name, a, cx),
            Credentials::ApiKey(k) => start_api_key(label, k, cx),
            Credentials::Token(t) => start_token(label, name, t, cx, started),
            Credentials::Temporary(t) => start_temporary(label, name, t, cx, started),
        }
    }

    /// True for AK/SK (long-lived or temporary): requests are signed.
    pub fn signs(&self) -> bool {
        matches!(self, Provider::AkSk { .. } | Provider::Temporary { .. })
    }

    /// Which kind of credential this is, for hints.
    pub fn kind(&self) -> crate::gateway::Kind {
        use crate::gateway::Kind;
        match self {
            Provider::AkSk { .. } | Provider::Temporary { .. } => Kind::AkSk,
            Provider::Token { .. } => Kind::Token,
            Provider::ApiKey(_) => Kind::ApiKey,
        }
    }

    /// False while an expiring credential has not been fetched (or has expired).
    pub fn is_ready(&self) -> bool {
        match self {
            Provider::AkSk { .. } | Provider::ApiKey(_) => true,
            Provider::Temporary { creds, .. } => creds.is_ready(),
            Provider::Token { token, .. } => token.is_ready(),
        }
    }

    /// After a reload kept this provider: if it is failing, retry now (the
    /// operator may have fixed the password file or IAM); an open signature
    /// breaker closes.
    pub fn retry_if_failing(&self) {
        if let Provider::Temporary { breaker, .. } = self {
            breaker.reset("the configuration was reloaded");
        }
        match self {
            Provider::Token { token, .. } if token.last_error().is_some() || !token.is_ready() => {
                token.retry_now()
            }
            Provider::Temporary { creds, .. }
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
            Provider::Temporary { creds, .. } => {
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

/// An IAM token kept fresh; the file it is fetched with (a `{ file = … }`
/// password, an id-token file) is watched so that a fixed file retries at once.
fn start_token(
    label: String,
    name: &str,
    t: &TokenSpec,
    cx: &Context,
    started: &HashMap<String, Provider>,
) -> Provider {
    let policy = Policy::with_margin(t.refresh_margin);
    let observe = CredentialMetrics::new(cx, name);
    let clock = cx.clock.clone();
    let (token, file) = match &t.source {
        TokenSource::Password(request) => {
            let fetcher = iam::IamFetcher {
                request: request.clone(),
                client: cx.client.clone(),
                sources: cx.sources.clone(),
                skew: Some(cx.skew_probe()),
            };
            let file = match &request.password {
                crate::credentials::SecretSource::File(path) => Some(path.clone()),
                _ => None,
            };
            (
                Refreshing::start(label.clone(), fetcher, policy, clock, observe),
                file,
            )
        }
        TokenSource::Oidc { oidc, project } => {
            let fetcher = iam::oidc::OidcToken {
                exchange: cx.oidc(oidc),
                project: project.clone(),
            };
            let file = Some(oidc.id_token_file.clone());
            (
                Refreshing::start(label.clone(), fetcher, policy, clock, observe),
                file,
            )
        }
        TokenSource::Agency { agency, project } => {
            let fetcher = iam::agency::AgencyToken {
                fetcher: cx.agency(agency, started),
                project: project.clone(),
            };
            (
                Refreshing::start(label.clone(), fetcher, policy, clock, observe),
                None,
            )
        }
    };
    let file_watch = file.map(|path| retry_on_change(&label, &token, path));
    Provider::Token {
        token,
        max_wait: t.max_wait,
        file_watch,
    }
}

/// Watches `path`: when it changes while `refreshing` is failing, it retries at once.
fn retry_on_change<T: Send + Sync + 'static>(
    label: &str,
    refreshing: &Arc<Refreshing<T>>,
    path: std::path::PathBuf,
) -> Arc<Watched<()>> {
    let weak = Arc::downgrade(refreshing);
    let retry = move || {
        if let Some(r) = weak.upgrade()
            && r.last_error().is_some()
        {
            r.retry_now();
        }
        Ok(())
    };
    Watched::start(format!("{label}.file"), (), vec![path], retry)
}

/// Temporary AK/SK kept fresh; new keys close the signature breaker.
fn start_temporary(
    label: String,
    name: &str,
    t: &TemporarySpec,
    cx: &Context,
    started: &HashMap<String, Provider>,
) -> Provider {
    let breaker = Arc::new(Breaker::new(name, t.breaker_cooldown, cx.metrics.clone()));
    let mut observe = CredentialMetrics::new(cx, name);
    observe.breaker = Some(breaker.clone());
    let (policy, clock) = (Policy::with_margin(t.refresh_margin), cx.clock.clone());
    let project_id = t.project_id.clone();
    let (creds, file) = match &t.source {
        TemporarySource::Metadata { endpoint } => {
            let fetcher = metadata::MetadataFetcher::new(
                endpoint.clone(),
                project_id,
                cx.client.clone(),
                cx.local_clock.clone(),
            );
            (
                Refreshing::start(label.clone(), fetcher, policy, clock, observe),
                None,
            )
        }
        TemporarySource::PodIdentity(spec) => {
            let fetcher = pod_identity::PodIdentityFetcher {
                spec: spec.clone(),
                project_id,
                client: cx.direct.clone(),
                sources: cx.sources.clone(),
            };
            let file = Some(spec.token_file.clone());
            (
                Refreshing::start(label.clone(), fetcher, policy, clock, observe),
                file,
            )
        }
        TemporarySource::Oidc { oidc, duration } => {
            let fetcher = iam::oidc::OidcKey {
                exchange: cx.oidc(oidc),
                duration: *duration,
                project_id,
            };
            let file = Some(oidc.id_token_file.clone());
            (
                Refreshing::start(label.clone(), fetcher, policy, clock, observe),
                file,
            )
        }
        TemporarySource::Agency { agency, duration } => {
            let fetcher = iam::agency::AgencyKey {
                fetcher: cx.agency(agency, started),
                duration: *duration,
                project_id,
            };
            (
                Refreshing::start(label.clone(), fetcher, policy, clock, observe),
                None,
            )
        }
        TemporarySource::StsOidc { sts, duration } => {
            let fetcher = sts::StsOidcFetcher {
                spec: sts.clone(),
                duration: *duration,
                project_id,
                client: cx.client.clone(),
                sources: cx.sources.clone(),
            };
            let file = Some(sts.id_token_file.clone());
            (
                Refreshing::start(label.clone(), fetcher, policy, clock, observe),
                file,
            )
        }
    };
    let file_watch = file.map(|path| retry_on_change(&label, &creds, path));
    Provider::Temporary {
        creds,
        max_wait: t.max_wait,
        breaker,
        file_watch,
    }
}

impl Context {
    fn skew_probe(&self) -> iam::SkewProbe {
        iam::SkewProbe {
            skew: self.skew.clone(),
            local: self.local_clock.clone(),
        }
    }

    fn oidc(&self, spec: &config::OidcSpec) -> iam::oidc::OidcExchange {
        iam::oidc::OidcExchange {
            spec: spec.clone(),
            client: self.client.clone(),
            sources: self.sources.clone(),
            skew: Some(self.skew_probe()),
        }
    }

    /// Assumes `agency` with its base, which `started` holds unless the base is an id token.
    fn agency(
        &self,
        agency: &config::AgencySpec,
        started: &HashMap<String, Provider>,
    ) -> iam::agency::AgencyFetcher {
        use iam::agency::BaseCredential;
        let base = match (&agency.by, started.get(&agency.base)) {
            (Base::Oidc(oidc), _) => BaseCredential::Oidc(self.oidc(oidc)),
            (
                _,
                Some(Provider::Token {
                    token, max_wait, ..
                }),
            ) => BaseCredential::Token {
                token: token.clone(),
                max_wait: *max_wait,
            },
            (_, Some(Provider::AkSk { keys, .. })) => BaseCredential::Keys(keys.clone()),
            (
                _,
                Some(Provider::Temporary {
                    creds, max_wait, ..
                }),
            ) => BaseCredential::Temporary {
                creds: creds.clone(),
                max_wait: *max_wait,
            },
            // Validation guarantees a base; an absent one can only fail.
            (_, Some(Provider::ApiKey(_)) | None) => BaseCredential::Missing,
        };
        iam::agency::AgencyFetcher {
            spec: agency.clone(),
            base,
            client: self.client.clone(),
            skew: Some(self.skew_probe()),
        }
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
