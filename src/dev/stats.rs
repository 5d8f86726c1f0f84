//! The stand-in's counters, switches and hooks, shared with tests, and the
//! state its roles keep (live tokens, temporary keys, sessions, lock-outs).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use chrono::{DateTime, Utc};

use super::lock;
use crate::secret::Secret;
use crate::signer::AkSk;

/// Counters, switches and hooks shared with a running stand-in; get them
/// with [`StandIn::stats`] before spawning.
#[derive(Default)]
pub struct StandInStats {
    /// Requests to `POST /v3/auth/tokens` (any outcome, also while down).
    pub iam_calls: AtomicUsize,
    /// Requests to `/openstack/latest/securitykey` (any outcome, also while down).
    pub metadata_calls: AtomicUsize,
    /// While true, IAM answers 503.
    pub iam_down: AtomicBool,
    /// While true, the metadata service answers 503.
    pub metadata_down: AtomicBool,
    /// `PUT /meta-data/latest/api/token` requests (any outcome).
    pub metadata_session_calls: AtomicUsize,
    /// While true, a credential request without a valid `X-Metadata-Token`
    /// is refused with 401 (a hardened server).
    pub metadata_session_required: AtomicBool,
    /// While true, the session-token path answers 404 (an older service).
    pub metadata_session_unsupported: AtomicBool,
    /// Live metadata session tokens → expiry.
    pub(super) sessions: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Service requests answered 200 (any credential).
    pub accepted: AtomicUsize,
    /// Service requests answered 401.
    pub rejected: AtomicUsize,
    /// Every token IAM issued, oldest first (also after expiry or revocation).
    pub issued_tokens: Mutex<Vec<Secret>>,
    /// Every temporary credential issued (by the metadata service, Pod
    /// Identity or IAM's security tokens), oldest first.
    pub issued_credentials: Mutex<Vec<AkSk>>,
    /// Requests to Pod Identity's path (any outcome, also while down).
    pub pod_identity_calls: AtomicUsize,
    /// While true, Pod Identity answers 503.
    pub pod_identity_down: AtomicBool,
    /// Requests to IAM's `POST /v3.0/OS-AUTH/id-token/tokens` (any outcome, also while down).
    pub id_token_calls: AtomicUsize,
    /// Requests to IAM's `POST /v3.0/OS-CREDENTIAL/securitytokens` (any outcome, also while down).
    pub security_token_calls: AtomicUsize,
    /// Requests with the `assume_role` method, on either IAM endpoint
    /// (counted once the method is read: not while IAM is down).
    pub assume_role_calls: AtomicUsize,
    /// The service-account tokens Pod Identity accepts now.
    pub(super) pod_identity_tokens: Mutex<Vec<Secret>>,
    /// The id tokens the identity provider trusts now.
    pub(super) id_tokens: Mutex<Vec<Secret>>,
    /// Live tokens: SHA-256 (hex) of the token → expiry and scope.
    pub(super) tokens: Mutex<HashMap<String, LiveToken>>,
    /// Temporary credentials: access key → (credentials, expiry).
    pub(super) temporary: Mutex<HashMap<String, (AkSk, DateTime<Utc>)>>,
    /// Failed signature checks in a row, and the lock they caused, per access key.
    pub(super) signature_failures: Mutex<HashMap<String, Failures>>,
}

impl StandInStats {
    /// Forgets every issued token: the service answers them with APIG.0301
    /// from now on (as after a password change).
    pub fn revoke_all_tokens(&self) {
        lock(&self.tokens).clear();
    }

    /// Forgets every metadata session token (their requests get 401).
    pub fn revoke_metadata_sessions(&self) {
        lock(&self.sessions).clear();
    }

    /// Forgets every temporary credential (as if the agency were removed).
    pub fn revoke_all_credentials(&self) {
        lock(&self.temporary).clear();
    }

    /// Failed signature checks in a row for `access_key`, and whether it is locked now.
    pub fn signature_failures(&self, access_key: &str) -> (u32, bool) {
        let failures = lock(&self.signature_failures);
        match failures.get(access_key) {
            Some((n, until)) => (*n, until.is_some_and(|u| u > Utc::now())),
            None => (0, false),
        }
    }

    /// Replaces the service-account tokens Pod Identity accepts (a projected
    /// token rotated by the kubelet: the old one is refused from now on).
    pub fn set_pod_identity_tokens(&self, tokens: Vec<Secret>) {
        *lock(&self.pod_identity_tokens) = tokens;
    }

    /// Replaces the id tokens the stand-in identity provider trusts.
    pub fn set_id_tokens(&self, tokens: Vec<Secret>) {
        *lock(&self.id_tokens) = tokens;
    }

    /// How many tokens IAM has issued.
    pub fn tokens_issued(&self) -> usize {
        lock(&self.issued_tokens).len()
    }

    /// The most recently issued token, if any.
    pub fn last_token(&self) -> Option<Secret> {
        lock(&self.issued_tokens).last().cloned()
    }
}

impl std::fmt::Debug for StandInStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandInStats")
            .field("iam_calls", &self.iam_calls)
            .field("metadata_calls", &self.metadata_calls)
            .field("iam_down", &self.iam_down)
            .field("metadata_down", &self.metadata_down)
            .field("pod_identity_calls", &self.pod_identity_calls)
            .field("pod_identity_down", &self.pod_identity_down)
            .field("id_token_calls", &self.id_token_calls)
            .field("security_token_calls", &self.security_token_calls)
            .field("assume_role_calls", &self.assume_role_calls)
            .field("accepted", &self.accepted)
            .field("rejected", &self.rejected)
            .field("tokens_issued", &self.tokens_issued())
            .field("credentials_issued", &lock(&self.issued_credentials).len())
            .finish()
    }
}

/// What the stand-in remembers of a token it issued.
#[derive(Clone, Copy, Debug)]
pub(super) struct LiveToken {
    pub(super) expires_at: DateTime<Utc>,
    /// Scoped to the project: the service accepts only these; IAM's own
    /// calls (security tokens, agencies) accept any live token.
    pub(super) scoped: bool,
}

/// Failed signature checks in a row, and until when they locked the AK.
pub(super) type Failures = (u32, Option<DateTime<Utc>>);
