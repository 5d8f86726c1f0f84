//! Huawei API Gateway's error codes and what to do about each: the one
//! table behind `x-modelarts-proxy-hint` (DESIGN §9).
//!
//! Codes, statuses and messages are as Huawei documents them: the APIG user
//! guide's "Error Codes" appendix (`usermanual-apig/apig-ug-180530090`,
//! `apig_03_0048`), the API signing guide's table for `APIGW.` codes
//! (`devg-apisign/api-sign-errorcode`), and the FAQs on IAM and app
//! authentication errors (`devg-apisign/api-sign-0001`,
//! `apig_faq/apig-faq-0009`). `APIG.xxxx` and `APIGW.xxxx` share numbers
//! and meanings.

use super::GatewayError;

/// What the proxy knows about the credential the request carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No credential on this route.
    None,
    /// A long-lived or temporary AK/SK signature.
    AkSk,
    /// An IAM token.
    Token,
    /// An API key (app code).
    ApiKey,
}

/// The context a hint is written in.
#[derive(Clone, Copy, Debug)]
pub struct HintContext<'a> {
    /// `[credentials.NAME]` of the route, if any.
    pub credentials: Option<&'a str>,
    pub kind: Kind,
    /// The route's upstream URL.
    pub upstream: &'a str,
    /// The gateway's clock minus ours, in seconds, when measured.
    pub skew_seconds: Option<i64>,
    /// The canonical request the proxy signed, for an AK/SK request.
    pub signed: Option<&'a str>,
}

impl HintContext<'_> {
    fn creds(&self) -> String {
        match self.credentials {
            Some(name) => format!("[credentials.{name}]"),
            None => "this route (it has no credentials)".to_owned(),
        }
    }

    fn skew(&self) -> String {
        match self.skew_seconds {
            Some(s) if s.abs() >= 1 => format!(
                "this machine's clock is {}s {} the gateway's",
                s.abs(),
                if s > 0 { "behind" } else { "ahead of" }
            ),
            _ => "this machine's clock may be more than 15 minutes off".to_owned(),
        }
    }
}

/// The documented meaning of a code's number, and the HTTP status Huawei lists.
pub struct Code {
    pub number: &'static str,
    pub status: u16,
    pub meaning: &'static str,
}

/// Every code the proxy has a hint for, as documented.
pub const CODES: &[Code] = &[
    code(
        "0101",
        404,
        "The API does not exist or has not been published in the environment.",
    ),
    code("0103", 500, "The backend does not exist."),
    code("0104", 500, "The plug-ins do not exist."),
    code("0105", 500, "The backend configurations do not exist."),
    code("0106", 400, "Orchestration error."),
    code("0201", 400, "API request error."),
    code("0202", 502, "Backend unavailable"),
    code("0203", 504, "Backend timeout."),
    code("0204", 400, "SSL protocol is not supported"),
    code("0301", 401, "Incorrect IAM authentication information."),
    code(
        "0302",
        403,
        "The IAM user is not authorized to access the API.",
    ),
    code("0303", 401, "Incorrect app authentication information."),
    code("0304", 403, "The app is not authorized to access the API."),
    code("0305", 401, "Incorrect authentication information."),
    code("0306", 403, "API access denied."),
    code("0307", 401, "The token must be updated."),
    code("0308", 429, "The throttling threshold has been reached."),
    code("0310", 403, "The project is unavailable."),
    code("0401", 403, "Unknown client IP address."),
    code(
        "0402",
        403,
        "The IP address is not authorized to access the API.",
    ),
    code(
        "0404",
        403,
        "Access to the backend IP address has been denied.",
    ),
    code("0501", 405, "The app quota has been used up."),
    code("0502", 405, "The app has been frozen."),
    code("0601", 500, "Internal server error."),
    code("0602", 400, "Bad request."),
    code("0605", 500, "Domain name resolution failed."),
    code("0606", 500, "Failed to load the API configurations."),
    code("0613", 503, "The IAM service is currently unavailable."),
    code("1009", 400, "AppKey or AppSecret is invalid"),
];

const fn code(number: &'static str, status: u16, meaning: &'static str) -> Code {
    Code {
        number,
        status,
        meaning,
    }
}

/// The documented entry for `number` (`"0301"`), if the proxy knows it.
pub fn lookup(number: &str) -> Option<&'static Code> {
    CODES.iter().find(|c| c.number == number)
}

/// One actionable line for a gateway error, if its code is known.
pub fn hint(err: &GatewayError, status: u16, cx: &HintContext<'_>) -> Option<String> {
    let msg = err.message.to_ascii_lowercase();
    let creds = cx.creds();
    let line = match lookup(err.number())?.number {
        "0101" => format!(
            "no published API matches the request: check the route's upstream URL ({}) against \
             the API's URL in the console, and for an environment other than RELEASE set the \
             route header x-stage",
            cx.upstream
        ),
        "0103" | "0104" | "0105" | "0606" => format!(
            "the gateway has no complete configuration for this API (its backend or plug-ins); \
             check the route's upstream URL ({}) and stage, then ask the API's owner or Huawei support",
            cx.upstream
        ),
        "0106" | "0602" => {
            "the gateway refused the request's parameters (orchestration / validation): check the \
             path, query and headers the API requires"
                .to_owned()
        }
        "0201" => match status {
            413 => "the body is over the gateway's 12 MB limit".to_owned(),
            414 => "the URL is over the gateway's 32 KB limit".to_owned(),
            494 => "a header is over 32 KB, or all headers over 128 KB".to_owned(),
            502 => "the gateway could not reach the service behind it (backend unavailable): \
                    check the real-time service is running"
                .to_owned(),
            504 => "the service behind the gateway did not answer in time (backend timeout): \
                    predictions must finish within the API's timeout (40 s for ModelArts)"
                .to_owned(),
            _ => "the gateway refused the request as malformed (API request error)".to_owned(),
        },
        "0202" => "the gateway could not reach the service behind it: check it is running and \
                   that the API's backend protocol (HTTP/HTTPS) matches the service"
            .to_owned(),
        "0203" => {
            "the service behind the gateway did not answer in time (backend timeout)".to_owned()
        }
        "0204" => "the gateway refused the TLS version; the proxy offers TLS 1.2 and 1.3, so \
                   check any TLS-intercepting proxy in between"
            .to_owned(),
        "0301" => match mismatch(err, cx) {
            Some(diff) => format!("the gateway rejected the AK/SK signature of {creds}: {diff}"),
            None => iam_hint(&msg, &creds, cx),
        },
        "0302" => format!(
            "the IAM user of {creds} may not call this API: check the API's access control \
             (blacklist/whitelist) policies and the user's permissions"
        ),
        "0303" => app_hint(&msg, &creds, cx),
        "0304" => format!(
            "the app of {creds} is not authorized for this API: authorize it (the API's \
             credentials/app page) in the environment being called"
        ),
        "0305" | "0306" => format!(
            "the gateway denied the credential of {creds}: check the API's authentication type \
             matches the route's credential type"
        ),
        "0307" => format!(
            "the token of {creds} must be renewed: the proxy renews it on a 401; if this \
             persists, the token is from another region's IAM or the account was in arrears"
        ),
        "0308" => "throttled by the gateway: back off and retry after a pause (limits apply per \
                   API, user and app; the default is 200 requests/s)"
            .to_owned(),
        "0310" => format!(
            "the project of {creds} is unavailable: check its project / project_id and region"
        ),
        "0401" | "0402" => "the gateway refused this machine's source IP address: add the \
                            proxy's egress IP to the API's IP access control"
            .to_owned(),
        "0404" => "the gateway may not reach the API's backend address (backend IP denied); ask \
                   the API's owner"
            .to_owned(),
        "0501" => format!("the app of {creds} has used up its quota: raise the app quota"),
        "0502" => format!("the app of {creds} is frozen: check the account balance"),
        "0601" | "0605" | "0613" => "the gateway failed internally; retry, and ask Huawei \
                                     support if it persists"
            .to_owned(),
        "1009" => format!(
            "the AppKey or AppSecret of {creds} is invalid: check the app's credentials in the console"
        ),
        _ => return None,
    };
    Some(line)
}

/// What differs between the request the proxy signed and the one the
/// gateway checked, when its message carries its canonical request.
fn mismatch(err: &GatewayError, cx: &HintContext<'_>) -> Option<String> {
    let ours = cx.signed?;
    let theirs = super::mismatch::gateways_canonical_request(&err.message)?;
    super::mismatch::explain(ours, theirs)
}

/// `APIG.0301`: the token or AK/SK was rejected.
fn iam_hint(msg: &str, creds: &str, cx: &HintContext<'_>) -> String {
    if msg.contains("signature expired") {
        return format!(
            "the signature of {creds} expired: {}; X-Sdk-Date must be within 15 minutes of the \
             gateway's clock (with clock_skew_correction on, the proxy signs with the gateway's \
             time once it has seen it)",
            cx.skew()
        );
    }
    if msg.contains("reach the limit") {
        return format!(
            "the AK of {creds} is locked: APIG locks an AK for 5 minutes after 5 failed \
             signatures in a row, for every application using it; fix the SK, then wait"
        );
    }
    if msg.contains("ak not exist") {
        return format!(
            "the AK of {creds} does not exist: it was deleted, or belongs to another account"
        );
    }
    match cx.kind {
        Kind::Token => format!(
            "IAM rejected the token of {creds}: it expired, was issued by another region's IAM, \
             or the account is frozen; the proxy renews it and replays the request once on a 401"
        ),
        Kind::AkSk => format!(
            "the gateway rejected the AK/SK signature of {creds}: the SK does not match the AK \
             (check for stray spaces or a rotated key), or something changed the request after \
             signing; `modelarts-proxy sign` prints the canonical request to compare with the \
             gateway's canonicalRequest"
        ),
        Kind::ApiKey | Kind::None => format!(
            "the API wants IAM authentication (a token or an AK/SK signature), but {creds} \
             sends {}",
            if cx.kind == Kind::ApiKey {
                "an app code"
            } else {
                "nothing"
            }
        ),
    }
}

/// `APIG.0303`: app authentication (app code, or an app's AppKey/AppSecret signature).
fn app_hint(msg: &str, creds: &str, cx: &HintContext<'_>) -> String {
    if msg.contains("signature expired") {
        return format!(
            "the signature expired: {}; the gateway allows 15 minutes (with \
             clock_skew_correction on, the proxy signs with the gateway's time once it has seen it)",
            cx.skew()
        );
    }
    match cx.kind {
        Kind::ApiKey => format!(
            "the gateway rejected the app code of {creds}: check it is an AppCode of an app \
             authorized for this API (at most 5 per app), and that the API allows simple \
             (AppCode) authentication"
        ),
        _ => format!(
            "the API wants app authentication (an X-Apig-AppCode, or an app's AppKey/AppSecret \
             signature), which {creds} does not send: use a type = \"apikey\" credential with the \
             app's AppCode"
        ),
    }
}

#[cfg(test)]
mod tests;
