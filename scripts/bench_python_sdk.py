#!/usr/bin/env python3
"""Times Huawei's official Python SDK signer (huaweicloudsdkcore, Signer.sign)
on the same small JSON request as `cargo bench --bench signer` (sign/small_json),
so the two can be compared on one machine in one sitting.

    python3 -m venv /tmp/sdkvenv && /tmp/sdkvenv/bin/pip install huaweicloudsdkcore==3.1.219
    /tmp/sdkvenv/bin/python scripts/bench_python_sdk.py

It prints the SDK's Authorization for the request (so it can be checked against
the Rust signer's) and the median time per signature over several runs.
"""
import statistics
import sys
import timeit

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

# The constants of benches/signer.rs (sign/small_json).
AK = "HPUAEXAMPLEAKID12345"
SK = "wJalrXUtnFEMI0K7MDENGbPxRfiCYEXAMPLEKEY1"
HOST = "3f2b9c1e7a4d4e8b9c610d5e2f8a1b7c.apig.cn-north-4.huaweicloudapis.com"
PATH = "/v1/infers/3f2b9c1e-7a4d-4e8b-9c61-0d5e2f8a1b7c"
BODY = b'{"prompt":"Summarise this paragraph.","max_tokens":128}'
DATE = "20240115T080910Z"

signer = Signer(BasicCredentials(AK, SK))


def one():
    request = SdkRequest(
        method="POST",
        schema="https",
        host=HOST,
        resource_path=PATH,
        query_params=[("a", "1"), ("b", "2")],
        header_params={"Content-Type": "application/json", "X-Sdk-Date": DATE},
        body=BODY,
    )
    signer.sign(request)
    return request.header_params["Authorization"]


print("authorization:", one())
n = 20000
runs = [timeit.timeit(one, number=n) / n for _ in range(7)]
print(f"huaweicloudsdkcore Signer.sign: median {statistics.median(runs) * 1e6:.2f} us "
      f"(min {min(runs) * 1e6:.2f}, max {max(runs) * 1e6:.2f}) over 7 runs of {n}; "
      f"python {sys.version.split()[0]}")
