"""The lab's S3 server (lab/s3.sh) for tests: its settings, a team's Pulumi environment, and a small S3
client (AWS Signature V4, standard library only) to look at the objects as Pulumi sees them."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from typing import Any
from xml.etree import ElementTree

from tests.lab import LAB_DIR, ROOT

S3_SH = os.path.join(ROOT, "lab", "s3.sh")


def info() -> dict[str, Any]:
    path = os.path.join(LAB_DIR, "s3", "s3.json")
    if not os.path.exists(path) or subprocess.run(["bash", S3_SH, "status"], capture_output=True).returncode:
        raise RuntimeError(f"the lab's S3 server is not up ({path}): run scripts/setup.sh or lab/s3.sh up")
    with open(path) as f:
        return json.load(f)


def backend_url(prefix: str = "") -> str:
    """The lab's Pulumi backend URL; `prefix`: a folder of the bucket (a team's own state)."""
    url = info()["backendUrl"]
    if not prefix:
        return url
    head, query = url.split("?", 1)
    return f"{head}/{prefix.strip('/')}?{query}"


def team_env(prefix: str = "") -> dict[str, str | None]:
    """What a team member exports to share state on the lab's server (as `lab/s3.sh env` prints)."""
    c = info()
    return {"PULUMI_BACKEND_URL": backend_url(prefix), "AWS_ACCESS_KEY_ID": c["accessKey"],
            "AWS_SECRET_ACCESS_KEY": c["secretKey"], "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PROFILE": None, "AWS_SESSION_TOKEN": None}


def server(cmd: str) -> subprocess.CompletedProcess[str]:
    """lab/s3.sh up | down | status."""
    return subprocess.run(["bash", S3_SH, cmd], capture_output=True, text=True, timeout=180)


def request(method: str, path: str, query: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One signed S3 request (path style) with the lab's key; returns (status, body)."""
    c = info()
    host = urllib.parse.urlsplit(c["endpoint"]).netloc
    now = datetime.datetime.now(datetime.UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    q = "&".join(f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}"
                 for k, v in sorted((query or {}).items()))
    upath = urllib.parse.quote(path)
    canonical = (f"{method}\n{upath}\n{q}\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{stamp}\n\n"
                 f"host;x-amz-content-sha256;x-amz-date\n{payload}")
    scope = f"{day}/{c['region']}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = ("AWS4" + c["secretKey"]).encode()
    for part in (day, c["region"], "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    url = f"{c['endpoint']}{upath}" + (f"?{q}" if q else "")
    assert url.startswith("http://127.0.0.1:"), url  # the lab's own loopback server, nothing else
    req = urllib.request.Request(url, method=method, headers={  # noqa: S310 - checked just above
        "x-amz-date": stamp, "x-amz-content-sha256": payload,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={c['accessKey']}/{scope}, "
                         f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - the lab's own loopback server
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def keys(prefix: str) -> list[str]:
    """The keys under `prefix` in the lab's bucket, as ListObjectsV2 (with delimiter "/") returns them."""
    status, body = request("GET", f"/{info()['bucket']}", {"list-type": "2", "prefix": prefix, "delimiter": "/"})
    assert status == 200, f"listing {prefix}: HTTP {status} {body[:300]!r}"
    ns = re.match(r"\{[^}]*\}", ElementTree.fromstring(body).tag)
    tag = ns.group(0) if ns else ""
    return [e.text or "" for e in ElementTree.fromstring(body).iter(f"{tag}Key")]


def locks(stack: str, prefix: str = "", project: str = "virtfleet") -> dict[str, dict[str, Any]]:
    """The stack's lock objects in the bucket (Pulumi's DIY backend: one JSON object per lock holder)."""
    where = f"{prefix.strip('/') + '/' if prefix else ''}.pulumi/locks/organization/{project}/{stack}/"
    out = {}
    for key in keys(where):
        status, body = request("GET", f"/{info()['bucket']}/{key}")
        if status == 200 and body:
            out[key] = json.loads(body)
    return out
