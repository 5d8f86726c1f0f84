//! One test per known code: the hint a user sees, in the context that matters.

use super::*;

fn err(code: &str, message: &str) -> GatewayError {
    GatewayError {
        code: code.to_owned(),
        message: message.to_owned(),
        request_id: Some("0123abcd".into()),
    }
}

fn cx(kind: Kind) -> HintContext<'static> {
    HintContext {
        credentials: Some("main"),
        kind,
        upstream: "https://x.apig.example.com/v1/infers/svc",
        skew_seconds: None,
        signed: None,
    }
}

/// `hint_test!(name, code, status, kind, message, [expected fragments])`
macro_rules! hint_test {
    ($name:ident, $code:expr, $status:expr, $kind:expr, $msg:expr, [$($want:expr),+]) => {
        #[test]
        fn $name() {
            let line = hint(&err($code, $msg), $status, &cx($kind)).expect("a hint");
            $(assert!(line.contains($want), "{:?} lacks {:?}", line, $want);)+
            assert!(!line.contains('\n'), "one line: {line:?}");
            assert!(HeaderValue::from_str(&line).is_ok(), "a valid header value");
        }
    };
}

use http::HeaderValue;

hint_test!(
    apig_0101_api_not_found_names_the_upstream_and_stage,
    "APIG.0101",
    404,
    Kind::AkSk,
    "The API does not exist or has not been published in the environment.",
    ["https://x.apig.example.com/v1/infers/svc", "x-stage"]
);
hint_test!(
    apig_0103_backend_missing,
    "APIG.0103",
    500,
    Kind::AkSk,
    "The backend does not exist.",
    ["backend"]
);
hint_test!(
    apig_0104_plugins_missing_points_at_url_and_stage,
    "APIG.0104",
    500,
    Kind::AkSk,
    "The plug-ins do not exist.",
    ["upstream URL", "stage"]
);
hint_test!(
    apig_0105_backend_config_missing,
    "APIG.0105",
    500,
    Kind::AkSk,
    "The backend configurations do not exist.",
    ["configuration"]
);
hint_test!(
    apig_0106_orchestration,
    "APIG.0106",
    400,
    Kind::AkSk,
    "Orchestration error.",
    ["parameters"]
);
hint_test!(
    apig_0201_413_is_the_12_mb_limit,
    "APIG.0201",
    413,
    Kind::AkSk,
    "Request entity too large.",
    ["12 MB"]
);
hint_test!(
    apig_0201_504_is_a_backend_timeout,
    "APIG.0201",
    504,
    Kind::AkSk,
    "Backend timeout.",
    ["did not answer in time", "40 s"]
);
hint_test!(
    apig_0201_502_is_the_backend_unreachable,
    "APIG.0201",
    502,
    Kind::AkSk,
    "Backend unavailable.",
    ["could not reach"]
);
hint_test!(
    apig_0201_400_is_a_malformed_request,
    "APIG.0201",
    400,
    Kind::AkSk,
    "API request error.",
    ["malformed"]
);
hint_test!(
    apig_0202_backend_protocol,
    "APIG.0202",
    502,
    Kind::AkSk,
    "Backend unavailable",
    ["protocol"]
);
hint_test!(
    apig_0203_backend_timeout,
    "APIG.0203",
    504,
    Kind::AkSk,
    "Backend timeout.",
    ["in time"]
);
hint_test!(
    apig_0204_tls_version,
    "APIG.0204",
    400,
    Kind::AkSk,
    "SSL protocol is not supported: TLSv1.1",
    ["TLS"]
);
hint_test!(
    apig_0301_for_aksk_says_the_signature_and_how_to_compare,
    "APIG.0301",
    401,
    Kind::AkSk,
    "Incorrect IAM authentication information: verify aksk signature fail, canonicalRequest:GET|/x/||",
    [
        "[credentials.main]",
        "SK does not match",
        "modelarts-proxy sign"
    ]
);
hint_test!(
    apig_0301_for_a_token_says_expired_or_wrong_region,
    "APIG.0301",
    401,
    Kind::Token,
    "Incorrect IAM authentication information: decrypt token fail",
    ["token of [credentials.main]", "region", "renews"]
);
hint_test!(
    apig_0301_locked_ak_says_five_minutes,
    "APIG.0301",
    401,
    Kind::AkSk,
    "Incorrect IAM authentication information: AK access failed to reach the limit,forbidden.",
    ["locked", "5 minutes"]
);
hint_test!(
    apig_0301_unknown_ak,
    "APIG.0301",
    401,
    Kind::AkSk,
    "Incorrect IAM authentication information: Get secretKey failed,ak:******,err:ak not exist",
    ["does not exist"]
);
hint_test!(
    apig_0301_expired_signature_is_clock_skew,
    "APIG.0301",
    401,
    Kind::AkSk,
    "Incorrect IAM authentication information: calc ak sk signature fail:signature expired",
    ["expired", "15 minutes", "clock_skew_correction"]
);
hint_test!(
    apig_0301_on_an_app_code_route_says_the_api_wants_iam,
    "APIG.0301",
    401,
    Kind::ApiKey,
    "Incorrect IAM authentication information: x-auth-token not found",
    ["IAM authentication", "app code"]
);
hint_test!(
    apig_0302_user_not_authorized,
    "APIG.0302",
    403,
    Kind::Token,
    "The IAM user is not authorized to access the API.",
    ["access control"]
);
hint_test!(
    apig_0303_app_code_rejected,
    "APIG.0303",
    401,
    Kind::ApiKey,
    "Incorrect app authentication information.",
    ["app code of [credentials.main]", "AppCode"]
);
hint_test!(
    apig_0303_on_an_aksk_route_says_the_api_wants_app_auth,
    "APIG.0303",
    401,
    Kind::AkSk,
    "Incorrect app authentication information: app not found, appkey 0117",
    ["app authentication", "apikey"]
);
hint_test!(
    apig_0303_signature_expired_is_clock_skew,
    "APIG.0303",
    401,
    Kind::AkSk,
    "Incorrect app authentication information: signature expired, signature time:20230527T000431Z,server time:20230527T020608Z",
    ["expired", "15 minutes"]
);
hint_test!(
    apig_0304_app_not_authorized,
    "APIG.0304",
    403,
    Kind::ApiKey,
    "The app is not authorized to access the API.",
    ["authorize"]
);
hint_test!(
    apig_0305_authentication,
    "APIG.0305",
    401,
    Kind::AkSk,
    "Incorrect authentication information.",
    ["authentication type"]
);
hint_test!(
    apig_0306_access_denied,
    "APIG.0306",
    403,
    Kind::AkSk,
    "API access denied.",
    ["denied"]
);
hint_test!(
    apig_0307_token_must_be_updated,
    "APIG.0307",
    401,
    Kind::Token,
    "The token must be updated.",
    ["renew"]
);
hint_test!(
    apig_0308_throttled_says_back_off,
    "APIG.0308",
    429,
    Kind::AkSk,
    "The throttling threshold has been reached: policy user over ratelimit,limit:10,time:1 minute",
    ["back off"]
);
hint_test!(
    apig_0310_project,
    "APIG.0310",
    403,
    Kind::Token,
    "The project is unavailable.",
    ["project_id"]
);
hint_test!(
    apig_0401_unknown_client_ip,
    "APIG.0401",
    403,
    Kind::AkSk,
    "Unknown client IP address.",
    ["egress IP"]
);
hint_test!(
    apig_0402_ip_not_authorized,
    "APIG.0402",
    403,
    Kind::AkSk,
    "The IP address is not authorized to access the API.",
    ["egress IP"]
);
hint_test!(
    apig_0404_backend_ip_denied,
    "APIG.0404",
    403,
    Kind::AkSk,
    "Access to the backend IP address has been denied.",
    ["backend"]
);
hint_test!(
    apig_0501_app_quota,
    "APIG.0501",
    405,
    Kind::ApiKey,
    "The app quota has been used up.",
    ["quota"]
);
hint_test!(
    apig_0502_app_frozen,
    "APIG.0502",
    405,
    Kind::ApiKey,
    "The app has been frozen.",
    ["balance"]
);
hint_test!(
    apig_0601_internal,
    "APIG.0601",
    500,
    Kind::AkSk,
    "Internal server error.",
    ["retry"]
);
hint_test!(
    apig_0602_bad_request,
    "APIG.0602",
    400,
    Kind::AkSk,
    "Bad request.",
    ["parameters"]
);
hint_test!(
    apig_0605_dns,
    "APIG.0605",
    500,
    Kind::AkSk,
    "Domain name resolution failed.",
    ["retry"]
);
hint_test!(
    apig_0606_config,
    "APIG.0606",
    500,
    Kind::AkSk,
    "Failed to load the API configurations.",
    ["configuration"]
);
hint_test!(
    apig_0613_iam_unavailable,
    "APIG.0613",
    503,
    Kind::Token,
    "The IAM service is currently unavailable.",
    ["retry"]
);
hint_test!(
    apig_1009_app_key,
    "APIG.1009",
    400,
    Kind::ApiKey,
    "AppKey or AppSecret is invalid",
    ["AppKey"]
);
hint_test!(
    apigw_codes_share_the_apig_numbers,
    "APIGW.0301",
    401,
    Kind::AkSk,
    "Incorrect IAM authentication information: verify aksk signature fail",
    ["SK does not match"]
);

#[test]
fn every_documented_code_has_a_hint_and_a_test() {
    let source = include_str!("tests.rs");
    for c in CODES {
        let e = err(&format!("APIG.{}", c.number), c.meaning);
        assert!(
            hint(&e, c.status, &cx(Kind::AkSk)).is_some(),
            "no hint for {}",
            c.number
        );
        assert!(
            source.contains(&format!("\"APIG.{}\"", c.number)),
            "no test for APIG.{}",
            c.number
        );
    }
}

#[test]
fn an_unknown_code_gets_no_hint() {
    assert!(hint(&err("APIG.9999", "new"), 400, &cx(Kind::AkSk)).is_none());
}

#[test]
fn a_measured_skew_is_in_the_expired_hint() {
    let mut c = cx(Kind::AkSk);
    c.skew_seconds = Some(1200);
    let e = err(
        "APIG.0303",
        "Incorrect app authentication information: signature expired, signature time:20230527T000431Z,server time:20230527T020608Z",
    );
    let line = hint(&e, 401, &c).unwrap();
    assert!(line.contains("1200s behind the gateway's"), "{line}");
}
