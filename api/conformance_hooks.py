"""Schemathesis hooks for api/conformance.sh.

The API's contract says "one Idempotency-Key per distinct request": the same
key with a different body is answered 422 (SPEC §6). OpenAPI cannot express
a rule across requests, so schemathesis, left alone, reuses small generated
keys ("0") for different bodies and reads the 422 as a schema-valid request
rejected. This hook makes the test client keep the contract a real client
keeps: a valid generated key gets a digest of the body appended, so a
different body never shares a key while the same body (a replay) still does.
Invalid keys (empty, too long, not visible ASCII) are left untouched, so the
negative tests on the header still run.
"""

import hashlib
import json
import re

import schemathesis

VALID_KEY = re.compile(r"^[!-~]{1,255}$")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() != "idempotency-key":
            continue
        key = headers[name]
        if not isinstance(key, str) or not VALID_KEY.match(key):
            continue
        body = json.dumps(case.body, sort_keys=True, default=str)
        digest = hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        headers[name] = f"{key[:200]}-{digest}"
    return None
