#!/usr/bin/env python3
"""Generates quirks.json: one SDK-HMAC-SHA256 case per quirk of SPEC.md §0,
signed by Huawei's official Python SDK.

Provenance only: CI never runs this; tests/signing_quirks.rs reads the JSON.

    python3 -m venv /tmp/sdkvenv
    /tmp/sdkvenv/bin/pip install huaweicloudsdkcore==3.1.219
    /tmp/sdkvenv/bin/python tests/data/signing/gen_quirks.py > tests/data/signing/quirks.json

Each case builds a `huaweicloudsdkcore.sdk_request.SdkRequest` as the SDK's
`Client` would (host = URL authority verbatim, resource_path = wire path,
query_params = decoded (key, value) tuples, header_params = a dict) and signs
it with `huaweicloudsdkcore.signer.signer.Signer(credentials).sign(request)`.
The X-Sdk-Date header is preset, so `Signer._process_header_time` parses it
with strptime instead of reading the clock: the output is deterministic.

The intermediate stages (canonical URI, query, payload line, canonical
request, string to sign) are captured by a subclass of `Signer` that calls
the SDK's own methods and records what they return; nothing is recomputed.
"""

import base64
import copy
import hashlib
import json
import platform
import sys
from importlib.metadata import version
from urllib.parse import unquote

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

SDK_VERSION = "3.1.219"
AK = "QUIRKAKEXAMPLE00001"
SK = "QuirkSkExample/00000000000000000000001+x="
DATE = "20240115T080910Z"
HOST = "apig.example.com"
UNSIGNED = "UNSIGNED-PAYLOAD"


class RecordingSigner(Signer):
    """`Signer` that records what its own stage methods return."""

    def __init__(self, credentials):
        super().__init__(credentials)
        self.stages = {}

    def _process_canonical_uri(self, request):
        out = super()._process_canonical_uri(request)
        self.stages["canonical_uri"] = out
        return out

    def _process_hash_payload(self, request):
        out = super()._process_hash_payload(request)
        self.stages["payload_hash"] = out
        return out

    def _process_canonical_request(self, request, signed_headers):
        # `_process_canonical_query_string` is a classmethod also called by
        # `process_request_uri`; call the SDK's own one here, on a copy of the
        # params, for the value that goes into the canonical request.
        probe = copy.copy(request)
        probe.query_params = copy.deepcopy(request.query_params)
        self.stages["canonical_query"] = Signer._process_canonical_query_string(probe)
        out = super()._process_canonical_request(request, signed_headers)
        self.stages["canonical_request"] = out
        self.stages["signed_headers"] = ";".join(signed_headers)
        return out

    def _process_string_to_sign(self, canonical_request, time):
        out = super()._process_string_to_sign(canonical_request, time)
        self.stages["string_to_sign"] = out
        return out

    def _sign_string_to_sign(self, string_to_sign, key):
        out = super()._sign_string_to_sign(string_to_sign, key)
        self.stages["signature"] = out
        return out


def parse_query(raw):
    """SPEC §2.6 parse rule (apig_sdk's): split '&', split on the first '=',
    unquote both sides (no '+' -> space), missing '=' -> '', empty key dropped."""
    if raw is None:
        return []
    pairs = []
    for part in raw.split("&"):
        key, sep, value = part.partition("=")
        if not key:
            continue
        pairs.append((unquote(key), unquote(value) if sep else ""))
    return pairs


def sdk_auto_unsigned(headers):
    """Whether the SDK's own `_process_content_header` adds
    X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD for these headers (ignoring any
    such header the case already sets)."""
    probe = SdkRequest(header_params={k: v for k, v in headers if k != Signer._HEADER_CONTENT})
    Signer._process_content_header(probe)
    return probe.header_params.get(Signer._HEADER_CONTENT) == UNSIGNED


def sign_case(case):
    ak = case.get("ak", AK)
    sk = case.get("sk", SK)
    method = case.get("method", "GET")
    host = case.get("host", HOST)
    path = case["path"]
    query = case.get("query")
    headers = case.get("headers", [])
    sdk_date = case.get("sdk_date", DATE)
    token = case.get("security_token")
    if "body_b64" in case:
        body = base64.b64decode(case["body_b64"])
    else:
        body = case.get("body", "").encode("utf-8")
    query_params = parse_query(query)

    header_params = {}
    for name, value in headers:
        assert name not in header_params, "duplicate header in case"
        header_params[name] = value
    header_params["X-Sdk-Date"] = sdk_date

    request = SdkRequest(
        method=method,
        schema="https",
        host=host,
        resource_path=path,
        query_params=list(query_params),
        header_params=header_params,
        body=body,
    )
    credentials = BasicCredentials(ak, sk)
    signer = RecordingSigner(credentials)
    if token is not None:
        # What Credentials.sign_request does before it picks the signer.
        # Cross-checked below against the real Credentials.sign_request.
        credentials.with_security_token(token)
        request.header_params["X-Security-Token"] = token
        reference = SdkRequest(
            method=method, schema="https", host=host, resource_path=path,
            query_params=list(query_params),
            header_params={k: v for k, v in header_params.items() if k != "X-Security-Token"},
            body=body,
        )
        credentials.sign_request(reference)
    signer.sign(request)
    st = signer.stages
    auth = request.header_params["Authorization"]
    if token is not None:
        assert reference.header_params["Authorization"] == auth, "token path differs"

    out = {
        "id": case["id"],
        "quirks": case["quirks"],
        "notes": case["notes"],
        "ak": ak,
        "sk": sk,
        "method": method,
        "host": host,
        "path": path,
        "query": query,
        "query_params": [list(p) for p in query_params],
        "headers": [list(h) for h in headers],
        "security_token": token,
    }
    if "body_b64" in case:
        out["body_b64"] = case["body_b64"]
    else:
        out["body"] = case.get("body", "")
    out.update({
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "sdk_auto_unsigned": sdk_auto_unsigned(headers),
        "sdk_date": sdk_date,
        "canonical_uri": st["canonical_uri"],
        "canonical_query": st["canonical_query"],
        "payload_hash": st["payload_hash"],
        "canonical_request": st["canonical_request"],
        "signed_headers": st["signed_headers"],
        "string_to_sign": st["string_to_sign"],
        "signature": st["signature"],
        "authorization": auth,
        "final_headers": [[k, v] for k, v in request.header_params.items()],
        "wire_uri": request.uri,
    })
    assert auth.endswith("Signature=" + out["signature"])
    return out


JSON_BODY_1K = json.dumps(
    {
        "instances": [
            {"id": i, "text": "The quick brown fox jumps over the lazy dog " + str(i), "score": i / 7}
            for i in range(24)
        ],
        "meta": {"model": "demo", "unicode": "对象 ✓", "escape": "a\"b\\c"},
    },
    ensure_ascii=False,
    separators=(",", ":"),
)
assert len(JSON_BODY_1K.encode("utf-8")) > 1024

BINARY = bytes(range(256)) + b"\x00\xff\xfe\r\n"
JSON = [["Content-Type", "application/json"]]
SMALL_JSON = '{"prompt":"hi"}'

CASES = [
    # Quirk 1
    dict(id="canonical-uri-gets-a-trailing-slash", quirks=[1],
         notes="path without a trailing '/': the canonical URI gets one, the wire path keeps its form",
         path="/v1/infers/items"),
    # Quirk 2: path decoding and re-encoding
    dict(id="unicode-path-segment-literal", quirks=[2],
         notes="literal non-ASCII path segment is percent-encoded as UTF-8, upper-case hex",
         path="/v1/对象/子"),
    dict(id="unicode-path-segment-percent-encoded", quirks=[2],
         notes="the same segment already percent-encoded signs identically",
         path="/v1/%E5%AF%B9%E8%B1%A1/%E5%AD%90"),
    dict(id="lowercase-percent-escapes-in-path-are-uppercased", quirks=[2],
         notes="%e5%af%b9 is decoded and re-encoded with upper-case hex",
         path="/v1/%e5%af%b9%e8%b1%a1/x%7euser"),
    dict(id="percent-2f-in-path-becomes-a-separator", quirks=[2],
         notes="the path is decoded before the split on '/', so %2F is a real separator",
         path="/v1/a%2Fb/c"),
    dict(id="double-slashes-and-dot-segments-are-kept", quirks=[2],
         notes="no merging of '//' and no removal of '.' or '..' segments",
         path="/v1//a/./b/../c"),
    dict(id="plus-in-path-is-encoded", quirks=[2],
         notes="'+' in a path is a literal plus, signed as %2B (not a space)",
         path="/v1/a+b"),
    dict(id="reserved-characters-in-path-are-encoded", quirks=[2],
         notes="only A-Z a-z 0-9 - _ . ~ stay as they are; %20 and %25 stay encoded",
         path="/v1/a:b@c!$'()*,;=/sp%20ace/100%25/~t"),
    # Quirk 3: query sort order
    dict(id="repeated-keys-sort-by-value-as-strings", quirks=[3],
         notes="repeated keys are kept and sorted by value as strings: 1 < 10 < 2",
         path="/v1/q", query="n=2&n=10&n=1"),
    dict(id="query-sorts-on-decoded-keys", quirks=[3],
         notes="a/b sorts after a-b although %2F sorts before -",
         path="/v1/q", query="a%2Fb=1&a-b=2"),
    dict(id="upper-case-keys-sort-before-lower-case", quirks=[3],
         notes="code point order: A < B < a < b",
         path="/v1/q", query="b=1&a=2&B=3&A=4"),
    dict(id="key-sorts-before-longer-keys-it-prefixes", quirks=[3],
         notes="a < a- < a= (tuple order on decoded keys, not on joined k=v strings)",
         path="/v1/q", query="a%3D=1&a-=2&a=3"),
    # Quirk 4 and encoding of query values
    dict(id="literal-plus-in-query-is-signed-as-2b", quirks=[4],
         notes="'+' in a raw query is a literal plus, never a space",
         path="/v1/q", query="q=a+b&r=%2B"),
    dict(id="percent-20-space-in-query", quirks=[4],
         notes="a space (%20) stays %20, in keys and values",
         path="/v1/q", query="my%20key=a%20b"),
    dict(id="reserved-characters-in-query-values-percent-encoded", quirks=[4],
         notes="+ = & * / ! ' ( ) : @ , ; sent percent-encoded are signed upper-case %XX",
         path="/v1/q", query="v=%2B%3D%26%2A%2F%21%27%28%29%3A%40%2C%3B"),
    dict(id="reserved-characters-in-query-values-raw", quirks=[4],
         notes="the same characters raw where legal in a query (no '&'); '=' after the first is part of the value",
         path="/v1/q", query="v=+=*/!'():@,;"),
    dict(id="unicode-and-tilde-in-query", quirks=[4],
         notes="non-ASCII is UTF-8 %XX; %7E decodes to '~', which stays as it is",
         path="/v1/q", query="name=%E5%AF%B9%E8%B1%A1&%7Et=a~b&k=中"),
    # Quirk 5
    dict(id="key-without-equals-is-signed-with-empty-value", quirks=[5],
         notes="?flag is signed as flag=",
         path="/v1/q", query="flag&a=1"),
    dict(id="empty-value-keeps-its-equals", quirks=[5],
         notes="?k= is signed as k=",
         path="/v1/q", query="k=&j=1"),
    dict(id="empty-key-parts-are-dropped", quirks=[5],
         notes="parse rule: parts with an empty key (=x, and the empty part of &&) are dropped",
         path="/v1/q", query="=x&&a=1"),
    # Quirk 6
    dict(id="empty-body-with-unsigned-payload-hashes-the-empty-string", quirks=[6],
         notes="X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD is signed, but an empty body gives the empty-string hash",
         method="POST", path="/v1/jobs", headers=[["X-Sdk-Content-Sha256", UNSIGNED]]),
    dict(id="empty-body-with-auto-unsigned-hashes-the-empty-string", quirks=[6, 8],
         notes="text/plain adds UNSIGNED-PAYLOAD automatically; the empty body still gives the empty-string hash",
         method="GET", path="/v1/jobs", headers=[["Content-Type", "text/plain"]]),
    # Quirk 7
    dict(id="content-sha256-header-is-used-verbatim", quirks=[7],
         notes="non-empty JSON body with UNSIGNED-PAYLOAD given: the header value is the payload line",
         method="POST", path="/v1/infers", headers=JSON + [["X-Sdk-Content-Sha256", UNSIGNED]],
         body=SMALL_JSON),
    dict(id="content-sha256-mixed-case-hex-is-kept", quirks=[7],
         notes="the body's real digest in mixed-case hex is used as given, not lower-cased",
         method="POST", path="/v1/infers",
         headers=JSON + [["X-Sdk-Content-Sha256",
                          "".join(c.upper() if i % 2 else c
                                  for i, c in enumerate(hashlib.sha256(SMALL_JSON.encode()).hexdigest()))]],
         body=SMALL_JSON),
    dict(id="content-sha256-value-is-not-checked", quirks=[7],
         notes="a lower-case hex value that is not the body's digest is still used verbatim",
         method="PUT", path="/v1/infers",
         headers=JSON + [["x-sdk-content-sha256", hashlib.sha256(b"something else").hexdigest()]],
         body=SMALL_JSON),
    # Quirk 8: the automatic UNSIGNED-PAYLOAD rule
    dict(id="auto-unsigned-for-text-json", quirks=[8],
         notes="text/json does not start with application/json",
         method="POST", path="/v1/infers", headers=[["Content-Type", "text/json"]], body=SMALL_JSON),
    dict(id="auto-unsigned-for-multipart-form-data", quirks=[8],
         notes="multipart/form-data is never hashed",
         method="POST", path="/v1/upload",
         headers=[["Content-Type", "multipart/form-data; boundary=XyZ"]],
         body="--XyZ\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n--XyZ--\r\n"),
    dict(id="auto-unsigned-for-octet-stream", quirks=[8],
         notes="application/octet-stream with a binary body",
         method="PUT", path="/v1/objects/blob.bin",
         headers=[["Content-Type", "application/octet-stream"]],
         body_b64=base64.b64encode(BINARY[:64]).decode()),
    dict(id="auto-unsigned-for-form-urlencoded", quirks=[8],
         notes="application/x-www-form-urlencoded is never hashed",
         method="POST", path="/v1/form",
         headers=[["Content-Type", "application/x-www-form-urlencoded"]], body="a=1&b=2"),
    dict(id="auto-unsigned-for-upper-case-application-json", quirks=[8],
         notes="the prefix match is case-sensitive: Application/JSON is unsigned",
         method="POST", path="/v1/infers", headers=[["Content-Type", "Application/JSON"]],
         body=SMALL_JSON),
    dict(id="json-patch-content-type-is-hashed", quirks=[8],
         notes="application/json-patch+json starts with application/json, so the body is hashed",
         method="PATCH", path="/v1/items/1",
         headers=[["Content-Type", "application/json-patch+json"]],
         body='[{"op":"replace","path":"/a","value":1}]'),
    dict(id="bson-content-type-is-hashed", quirks=[8],
         notes="application/bson is the other hashed prefix",
         method="POST", path="/v1/items", headers=[["Content-Type", "application/bson"]],
         body_b64=base64.b64encode(b"\x16\x00\x00\x00\x02hello\x00\x06\x00\x00\x00world\x00\x00").decode()),
    # Quirk 9
    dict(id="header-names-with-underscore-are-not-signed", quirks=[9],
         notes="headers whose name contains '_' are sent but left out of SignedHeaders",
         path="/v1/q",
         headers=[["X_Custom_Header", "v"], ["x_lower", "w"], ["X-Kept", "k"]]),
    dict(id="every-other-header-is-signed", quirks=[9],
         notes="User-Agent, Content-Type, X-Project-Id and custom headers are all signed",
         method="POST", path="/v1/infers",
         headers=JSON + [["User-Agent", "huaweicloud-usdk-python/3.0"],
                         ["X-Project-Id", "0123456789abcdef0123456789abcdef"],
                         ["X-Stage", "RELEASE"]],
         body=SMALL_JSON),
    dict(id="security-token-header-is-signed", quirks=[9],
         notes="temporary credentials: Credentials.sign_request adds X-Security-Token, which is signed",
         method="POST", path="/v1/infers", headers=JSON, body=SMALL_JSON,
         security_token="gQpjbi1ub3J0aC00EXAMPLETOKEN+/=="),
    # Quirk 10
    dict(id="header-values-trimmed-at-both-ends-only", quirks=[10],
         notes="leading/trailing spaces and tabs removed; inner runs of spaces and tabs kept",
         path="/v1/q",
         headers=[["X-Spaces", "  a  b  "], ["X-Tabs", "\ta\t\tb\t"], ["X-Mixed", " \t a \t b \t "]]),
    dict(id="non-ascii-whitespace-trimmed-like-python-strip", quirks=[10],
         notes="str.strip() removes NBSP (U+00A0) and U+3000 at the ends; an inner NBSP is kept",
         path="/v1/q",
         headers=[["X-Nbsp", "\u00a0value\u00a0"], ["X-Ideographic", "\u3000v\u00a0w\u3000"]]),
    dict(id="header-value-case-and-non-ascii-kept", quirks=[10],
         notes="names are lower-cased, values keep their case; a non-ASCII value is hashed as UTF-8",
         path="/v1/q",
         headers=[["X-MiXeD-Name", "MiXeD Value"], ["X-Object", "对象"]]),
    # Quirk 11
    dict(id="canonical-headers-end-with-a-blank-line", quirks=[11],
         notes="the canonical headers block ends with '\\n' and is then joined with '\\n'",
         method="DELETE", path="/v1/items/1", headers=[["X-A", "1"]]),
    # Quirk 12
    dict(id="host-with-explicit-port", quirks=[12],
         notes="Host is the authority verbatim, port included",
         host="apig.example.com:8443", path="/v1/q"),
    dict(id="host-with-default-port-is-kept", quirks=[12],
         notes="even a default port (:443) is kept",
         host="apig.example.com:443", path="/v1/q"),
    dict(id="explicit-host-header-wins-and-keeps-its-case", quirks=[12],
         notes="an explicit Host header replaces the authority; its value keeps its case",
         host="10.0.0.1:8080", path="/v1/q", headers=[["Host", "APIG.Example.COM"]]),
    # Quirk 13
    dict(id="access-key-is-not-covered-by-the-signature", quirks=[13],
         notes="same request as canonical-uri-gets-a-trailing-slash with another AK: same signature",
         ak="ANOTHERAKEXAMPLE999", path="/v1/infers/items"),
    dict(id="string-to-sign-has-no-credential-scope", quirks=[13],
         notes="three lines: algorithm, date, hash; the raw SK is the HMAC key",
         sk="short", sdk_date="20251231T235959Z", path="/"),
    # Quirk 14
    dict(id="wire-query-signs-like-the-raw-query", quirks=[14],
         notes="the SDK sends the canonical query (wire_uri); signing that query gives the same signature",
         path="/v1/q", query="z=1&b=x+y&flag&a=%7e&c=%e4%b8%ad"),
    # Method, bodies
    dict(id="lowercase-method-is-upper-cased", quirks=[],
         notes="a request sent as 'post' is signed as POST",
         method="post", path="/v1/infers", headers=JSON, body=SMALL_JSON),
    dict(id="binary-body-is-hashed-as-bytes", quirks=[],
         notes="no Content-Type: a binary body (not UTF-8) is hashed byte for byte",
         method="PUT", path="/v1/objects/raw", body_b64=base64.b64encode(BINARY).decode()),
    dict(id="json-body-over-1kib-is-hashed", quirks=[],
         notes="a JSON body over 1 KiB with non-ASCII text",
         method="POST", path="/v1/infers", headers=JSON, body=JSON_BODY_1K),
]


def main():
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate id"
    cases = [sign_case(c) for c in CASES]
    doc = {
        "algorithm": "SDK-HMAC-SHA256",
        "generator": "tests/data/signing/gen_quirks.py with Huawei's official Python SDK, "
                     "huaweicloudsdkcore %s (PyPI), Signer.sign()" % version("huaweicloudsdkcore"),
        "python": platform.python_version(),
        "semantics": {
            "expected_values": "canonical_uri, canonical_query, payload_hash, canonical_request, "
                               "signed_headers, string_to_sign, signature and authorization are what "
                               "huaweicloudsdkcore's Signer methods returned",
            "host": "the URL authority verbatim; the SDK adds Host: host unless headers has a host",
            "path": "resource_path, exactly as sent on the wire",
            "query": "the raw query string as sent (null: none)",
            "query_params": "the decoded (key, value) tuples given to the SDK, parsed from query with "
                            "SPEC §2.6: split '&', split first '=', unquote (no '+' to space), "
                            "missing '=' -> '', empty key dropped",
            "headers": "[name, value] pairs given to the SDK, plus X-Sdk-Date: sdk_date (preset so "
                       "the SDK parses it instead of reading the clock)",
            "sdk_auto_unsigned": "true when Signer._process_content_header adds X-Sdk-Content-Sha256: "
                                 "UNSIGNED-PAYLOAD for these headers (exact key Content-Type); the "
                                 "header then replaces any exact-key X-Sdk-Content-Sha256",
            "body": "exactly one of body (UTF-8 text) or body_b64 (base64)",
            "security_token": "null, or the credentials' token: Credentials.sign_request then adds "
                              "the header X-Security-Token: security_token before signing",
            "final_headers": "header_params after Signer.sign (informative; the SDK re-codes each "
                             "stripped value as UTF-8 bytes read as Latin-1, so non-ASCII looks garbled)",
            "wire_uri": "request.uri after signing: path + canonical query (informative)",
        },
        "count": len(cases),
        "cases": cases,
    }
    json.dump(doc, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    assert version("huaweicloudsdkcore") == SDK_VERSION, version("huaweicloudsdkcore")
    main()
