//! Signature mismatches explained (DESIGN §13): when API Gateway rejects a
//! signature, its message carries the canonical request it computed
//! (`…verify aksk signature fail, canonicalRequest:GET|/v1/x/||host:…`, the
//! lines joined with `|`, or with newlines). Compared with the canonical
//! request the proxy signed, the first part that differs says what changed
//! the request between the proxy and the gateway: the method, the path, the
//! query, a header (with both values), the signed-header list, or the body.

/// The parts of a canonical request (SPEC §2.6).
#[derive(Debug, PartialEq, Eq)]
struct Parts<'a> {
    method: &'a str,
    uri: &'a str,
    query: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    signed: &'a str,
    payload: &'a str,
}

/// A header value as it may be shown: never a credential's.
fn shown<'a>(name: &str, value: &'a str) -> &'a str {
    if crate::headers::CREDENTIAL_HEADERS
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c))
    {
        "** redacted **"
    } else {
        value
    }
}

/// `message` with the values of credential headers in a canonical request
/// it quotes replaced (`x-security-token:** redacted **`): a gateway may
/// echo them, and the message goes to logs and the status page.
pub fn redact(message: &str) -> std::borrow::Cow<'_, str> {
    let lower = message.to_ascii_lowercase();
    if !crate::headers::CREDENTIAL_HEADERS
        .iter()
        .any(|h| lower.contains(&format!("{h}:")))
    {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while !rest.is_empty() {
        let cut = rest.find(['|', '\n']).map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(cut);
        let name = line.split(':').next().unwrap_or("");
        let bare = name.rsplit([',', ' ']).next().unwrap_or(name);
        match crate::headers::CREDENTIAL_HEADERS
            .iter()
            .find(|h| bare.eq_ignore_ascii_case(h))
        {
            Some(_) => {
                out.push_str(name);
                out.push_str(":** redacted **");
                if line.ends_with(['|', '\n']) {
                    out.push_str(&line[line.len() - 1..]);
                }
            }
            None => out.push_str(line),
        }
        rest = tail;
    }
    std::borrow::Cow::Owned(out)
}

/// Splits a canonical request: `METHOD`, `URI`, `QUERY`, the header lines
/// up to an empty line, the signed-header list, the payload hash.
fn parse(text: &str, separator: char) -> Option<Parts<'_>> {
    let mut lines = text.split(separator);
    let method = lines.next()?;
    let uri = lines.next()?;
    let query = lines.next()?;
    let mut headers = Vec::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name, value));
    }
    let signed = lines.next()?;
    let payload = lines.next().unwrap_or("");
    Some(Parts {
        method,
        uri,
        query,
        headers,
        signed,
        payload,
    })
}

/// The gateway's canonical request in its error message, if it has one.
pub fn gateways_canonical_request(message: &str) -> Option<&str> {
    let at = message.find("canonicalRequest")?;
    let rest = message[at + "canonicalRequest".len()..].trim_start_matches([':', '=', ' ']);
    // Quoted in some messages; cut at the closing quote.
    let rest = rest
        .strip_prefix('"')
        .map_or(rest, |r| r.split('"').next().unwrap_or(r));
    Some(rest.trim_end())
}

/// What differs between the canonical request the proxy signed (`ours`,
/// lines joined with `\n`) and the gateway's (`theirs`, joined with `|` or
/// `\n`); `None` when they cannot be compared or do not differ.
pub fn explain(ours: &str, theirs: &str) -> Option<String> {
    let ours = parse(ours, '\n')?;
    let sep = if theirs.contains('\n') { '\n' } else { '|' };
    let theirs = parse(theirs, sep)?;
    let differs = |what: &str, a: &str, b: &str| {
        Some(format!(
            "the gateway saw a different {what}: the proxy signed {a:?}, the gateway computed {b:?}"
        ))
    };
    if ours.method != theirs.method {
        return differs("method", ours.method, theirs.method);
    }
    if ours.uri != theirs.uri {
        return differs("path", ours.uri, theirs.uri);
    }
    if ours.query != theirs.query {
        return differs("query", ours.query, theirs.query);
    }
    for (name, value) in &ours.headers {
        match theirs.headers.iter().find(|(n, _)| n == name) {
            None => {
                return Some(format!(
                    "the gateway did not receive the signed header {name} (the proxy signed {:?}): something between them removed it",
                    shown(name, value)
                ));
            }
            Some((_, theirs)) if theirs != value => {
                return Some(format!(
                    "header {name} differs: the proxy signed {:?}, the gateway saw {:?}; something between them rewrote it",
                    shown(name, value),
                    shown(name, theirs)
                ));
            }
            Some(_) => {}
        }
    }
    if let Some((name, value)) = theirs
        .headers
        .iter()
        .find(|(n, _)| !ours.headers.iter().any(|(o, _)| o == n))
    {
        return Some(format!(
            "the gateway signed header {name} ({:?}), which the proxy did not",
            shown(name, value)
        ));
    }
    if ours.signed != theirs.signed {
        return differs("signed-header list", ours.signed, theirs.signed);
    }
    if !theirs.payload.is_empty() && ours.payload != theirs.payload {
        return Some(format!(
            "the body differs: the proxy signed a body hashing to {}, the gateway hashed {}; something between them changed the body",
            ours.payload, theirs.payload
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "POST\n/v1/infers/svc/\na=1&b=2\ncontent-type:application/json\nhost:x.apig.example.com\nx-sdk-date:20261204T101010Z\n\ncontent-type;host;x-sdk-date\nabc123";

    fn theirs_with(f: impl Fn(&str) -> String) -> String {
        f(OURS).replace('\n', "|")
    }

    #[test]
    fn the_same_request_has_nothing_to_explain() {
        assert_eq!(explain(OURS, &OURS.replace('\n', "|")), None);
        assert_eq!(explain(OURS, OURS), None);
    }

    #[test]
    fn each_kind_of_difference_is_named_with_both_values() {
        type Change<'a> = &'a dyn Fn(&str) -> String;
        let cases: [(Change<'_>, &str); 7] = [
            (
                &|s| s.replacen("POST", "GET", 1),
                "different method: the proxy signed \"POST\", the gateway computed \"GET\"",
            ),
            (
                &|s| s.replace("/v1/infers/svc/", "/v1/infers/svc"),
                "different path: the proxy signed \"/v1/infers/svc/\", the gateway computed \"/v1/infers/svc\"",
            ),
            (&|s| s.replace("a=1&b=2", "a=1"), "different query"),
            (
                &|s| s.replace("host:x.apig.example.com", "host:internal:8080"),
                "header host differs: the proxy signed \"x.apig.example.com\", the gateway saw \"internal:8080\"",
            ),
            (
                &|s| s.replace("content-type:application/json\n", ""),
                "did not receive the signed header content-type",
            ),
            (
                &|s| {
                    s.replace(
                        "x-sdk-date:20261204T101010Z\n",
                        "x-sdk-date:20261204T101010Z\nx-extra:1\n",
                    )
                },
                "the gateway signed header x-extra",
            ),
            (&|s| s.replace("abc123", "def456"), "the body differs"),
        ];
        for (change, want) in cases {
            let got = explain(OURS, &theirs_with(change)).unwrap_or_default();
            assert!(got.contains(want), "{got}");
        }
    }

    #[test]
    fn a_credential_header_is_named_but_never_shown() {
        let ours = OURS.replace("x-sdk-date", "x-security-token:ST-secret-one\nx-sdk-date");
        let theirs = ours
            .replace("ST-secret-one", "ST-secret-two")
            .replace('\n', "|");
        let got = explain(&ours, &theirs).unwrap();
        assert!(got.contains("header x-security-token differs"), "{got}");
        assert!(!got.contains("ST-secret"), "{got}");
    }

    #[test]
    fn a_quoted_security_token_is_redacted_from_the_message() {
        let msg = "verify aksk signature fail, canonicalRequest:GET|/x/||host:h|x-security-token:ST-secret|x-sdk-date:1||host;x-security-token;x-sdk-date|e3b0";
        let red = redact(msg);
        assert!(!red.contains("ST-secret"), "{red}");
        assert!(
            red.contains("x-security-token:** redacted **|x-sdk-date:1"),
            "{red}"
        );
        assert_eq!(redact("plain message"), "plain message");
    }

    #[test]
    fn the_canonical_request_is_found_in_apigs_message() {
        let msg = "Incorrect IAM authentication information: verify aksk signature fail, canonicalRequest:GET|/x/||host:h||host|e3b0";
        assert_eq!(
            gateways_canonical_request(msg),
            Some("GET|/x/||host:h||host|e3b0")
        );
        assert_eq!(
            gateways_canonical_request("verify aksk signature fail"),
            None
        );
    }
}
