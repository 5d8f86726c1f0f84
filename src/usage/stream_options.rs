//! `stream_usage = true` on a route (DESIGN §13): a JSON request with
//! `"stream": true` gets `"stream_options":{"include_usage":true}` before
//! it is signed, so that an OpenAI-compatible service ends its streamed
//! answer with the usage the proxy counts.

use serde_json::Value;

/// The body with `include_usage` asked for, or `None` to send it as it is
/// (not JSON, not an object, not streaming, or already asking).
pub fn include_usage(body: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    if obj.get("stream") != Some(&Value::Bool(true)) {
        return None;
    }
    match obj.get("stream_options") {
        // The usual case: added before the closing brace, the rest byte for byte.
        None => {
            let end = body.iter().rposition(|&b| b == b'}')?;
            let head = &body[..end];
            let empty = head
                .iter()
                .rposition(|b| !b.is_ascii_whitespace())
                .is_some_and(|i| head[i] == b'{');
            let mut out = Vec::with_capacity(body.len() + 40);
            out.extend_from_slice(head);
            if !empty {
                out.push(b',');
            }
            out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
            out.extend_from_slice(&body[end..]);
            Some(out)
        }
        Some(Value::Object(o)) if o.get("include_usage") == Some(&Value::Bool(true)) => None,
        Some(Value::Object(_)) => {
            let mut v = v;
            v["stream_options"]["include_usage"] = Value::Bool(true);
            serde_json::to_vec(&v).ok()
        }
        // Not an object: the service would refuse it either way.
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: Option<Vec<u8>>) -> Option<String> {
        b.map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn a_streaming_request_asks_for_usage_and_keeps_its_bytes() {
        assert_eq!(
            text(include_usage(
                br#"{"model":"m","stream":true,"messages":[]}"#
            ))
            .as_deref(),
            Some(
                r#"{"model":"m","stream":true,"messages":[],"stream_options":{"include_usage":true}}"#
            )
        );
        assert_eq!(
            text(include_usage(b"{\"stream\": true }\n")).as_deref(),
            Some("{\"stream\": true ,\"stream_options\":{\"include_usage\":true}}\n")
        );
        let merged = text(include_usage(
            br#"{"stream":true,"stream_options":{"x":1}}"#,
        ))
        .unwrap();
        let v: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(
            v["stream_options"],
            serde_json::json!({"x":1,"include_usage":true})
        );
    }

    #[test]
    fn anything_else_is_left_alone() {
        for body in [
            &br#"{"stream":false}"#[..],
            br#"{"model":"m"}"#,
            br#"{"stream":true,"stream_options":{"include_usage":true}}"#,
            br#"[1,2]"#,
            b"not json",
        ] {
            assert_eq!(
                include_usage(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
