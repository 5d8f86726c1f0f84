use super::*;
use http_body_util::Full;

#[test]
fn apig_and_apigw_bodies_parse_and_others_do_not() {
    let e = GatewayError::parse(br#"{"error_code":"APIG.0301","error_msg":"Incorrect IAM authentication information: verify aksk signature fail","request_id":"fd65"}"#).unwrap();
    assert_eq!(
        (e.code.as_str(), e.number(), e.request_id.as_deref()),
        ("APIG.0301", "0301", Some("fd65"))
    );
    assert!(e.is_signature_rejection());
    let w = GatewayError::parse(
        br#"{"error_code":"APIGW.0308","error_msg":"The throttling threshold has been reached."}"#,
    )
    .unwrap();
    assert_eq!(w.number(), "0308");
    assert!(!w.is_signature_rejection());
    for other in [
        &br#"{"error_code":"ModelArts.4302","error_msg":"Gateway forwarding error"}"#[..],
        br#"{"error":{"code":"x"}}"#,
        b"<html>502</html>",
        br#"{"error_code":"APIG.","error_msg":""}"#,
    ] {
        assert!(
            GatewayError::parse(other).is_none(),
            "{}",
            String::from_utf8_lossy(other)
        );
    }
}

#[test]
fn token_and_app_code_rejections_are_not_signature_rejections() {
    for msg in [
        "Incorrect IAM authentication information: decrypt token fail",
        "Incorrect IAM authentication information: x-auth-token not found",
    ] {
        let e = GatewayError {
            code: "APIG.0301".into(),
            message: msg.into(),
            request_id: None,
        };
        assert!(!e.is_signature_rejection(), "{msg}");
    }
    let app = GatewayError {
        code: "APIG.0303".into(),
        message: "Incorrect app authentication information.".into(),
        request_id: None,
    };
    assert!(!app.is_signature_rejection());
    let locked = GatewayError {
        code: "APIG.0301".into(),
        message: "Incorrect IAM authentication information: AK access failed to reach the limit,forbidden.".into(),
        request_id: None,
    };
    assert!(locked.is_signature_rejection());
}

#[test]
fn the_server_time_of_a_signature_expired_message_is_read() {
    let e = GatewayError {
        code: "APIG.0303".into(),
        message: "Incorrect app authentication information: signature expired, signature time:20230527T000431Z,server time:20230527T020608Z".into(),
        request_id: None,
    };
    assert_eq!(
        e.server_time().unwrap().to_rfc3339(),
        "2023-05-27T02:06:08+00:00"
    );
    let none = GatewayError {
        code: "APIG.0301".into(),
        message: "verify aksk signature fail".into(),
        request_id: None,
    };
    assert!(none.server_time().is_none());
}

#[test]
fn http_dates_parse() {
    let mut h = http::HeaderMap::new();
    h.insert(
        header::DATE,
        "Tue, 01 Dec 2026 10:45:10 GMT".parse().unwrap(),
    );
    assert_eq!(
        http_date(&h).unwrap().to_rfc3339(),
        "2026-12-01T10:45:10+00:00"
    );
}

fn response(status: u16, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r
}

#[tokio::test]
async fn an_apig_error_gets_a_hint_and_its_body_unchanged() {
    let body = r#"{"error_code":"APIG.0308","error_msg":"The throttling threshold has been reached.","request_id":"abc"}"#;
    let (resp, seen) = inspect(response(429, body), Duration::from_secs(1), |e, status| {
        Some(format!("{} at {status}", e.code))
    })
    .await;
    assert_eq!(resp.headers()[HINT_HEADER], "APIG.0308 at 429");
    assert_eq!(seen.error.unwrap().request_id.as_deref(), Some("abc"));
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got, body.as_bytes(), "passed through byte for byte");
}

#[tokio::test]
async fn successes_and_the_services_own_errors_are_not_touched() {
    let (ok, seen) = inspect(
        response(200, "{\"error_code\":\"APIG.0301\"}"),
        Duration::from_secs(1),
        |_, _| Some("x".into()),
    )
    .await;
    assert!(ok.headers().get(HINT_HEADER).is_none());
    assert!(seen.error.is_none(), "a 200 body is never read");
    let (svc, seen) = inspect(
        response(500, "{\"error\":\"model crashed\"}"),
        Duration::from_secs(1),
        |_, _| Some("x".into()),
    )
    .await;
    assert!(svc.headers().get(HINT_HEADER).is_none() && seen.error.is_none());
    assert_eq!(
        svc.into_body().collect().await.unwrap().to_bytes(),
        "{\"error\":\"model crashed\"}"
    );
}
