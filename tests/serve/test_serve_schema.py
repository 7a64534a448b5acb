"""The OpenAPI schema tells the truth: schemathesis, with every check, generates requests
from /openapi.json against a real `lenet serve` process and finds 0 failures and 0 server
errors (statuses, bodies, content types, Allow on 405, the token, schema-valid requests
taken and schema-violating ones refused).

One check is narrowed, for the POST routes only, in tests/serve/schemathesis.toml (why:
there). The run is bounded (examples per operation, a fixed seed) to about half a minute.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require
from serving import Server

CONFIG = Path(__file__).with_name("schemathesis.toml")
TOKEN = "schema-test-token"
ST = "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"


def schemathesis(url: str, examples: int, where: Path, *headers: str) -> str:
    """`st run URL/openapi.json --checks all`: its output; fails unless it found nothing."""
    require("schemathesis")
    command = [sys.executable, "-c", ST, "--config-file", str(CONFIG), "--no-color", "run",
               f"{url}/openapi.json", "--checks", "all", "--max-examples", str(examples),
               "--seed", "1", "--generation-database", "none", "--workers", "1"]
    for header in headers:
        command += ["--header", header]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=where)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "No issues found" in out, out[-6000:]
    assert re.search(r"Selected: 8/8\s+Tested: 8", out), out[-3000:]
    return out


@pytest.mark.slow
def test_schemathesis_finds_nothing_with_a_token(served_run, tmp_path):
    server = Server(served_run, "--quiet", "--token", TOKEN)
    try:
        out = schemathesis(server.url, 100, tmp_path, f"Authorization: Bearer {TOKEN}")
        assert server.alive()
    finally:
        log = server.stop()
    print(out[-1500:])  # the summary: cases generated, passed
    assert "Traceback" not in log, log


@pytest.mark.slow
def test_schemathesis_finds_nothing_without_a_token(served_run, tmp_path):
    server = Server(served_run, "--quiet")
    try:
        schemathesis(server.url, 25, tmp_path)
        assert server.alive()
    finally:
        log = server.stop()
    assert "Traceback" not in log, log


def test_the_schema_names_statuses_choices_and_content_types(served_run):
    from test_serve_api import client

    from lenet.serve.limits import Limits
    from lenet.serve.metrics import Metrics
    from lenet.serve.service import Options, Service

    service = Service(Options(str(served_run)), Limits(), Metrics())  # not loaded: schema only
    open_schema = client(service).get("/openapi.json").json()
    secured = client(service, token="t").get("/openapi.json").json()
    predict = open_schema["paths"]["/v1/predict"]["post"]
    assert set(predict["responses"]) == {"200", "400", "408", "413", "415", "503"}
    assert set(secured["paths"]["/v1/predict"]["post"]["responses"]) >= {"401"}
    assert secured["paths"]["/v1/model"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in secured["paths"]["/healthz"]["get"]
    params = {p["name"]: p["schema"] for p in predict["parameters"]}
    assert params["input"]["enum"] == ["png", "list", "none"]
    assert params["prepare"]["enum"] == ["auto", "full", "none"]
    assert (params["top_k"]["minimum"], params["top_k"]["maximum"]) == (1, 1000)
    assert "422" not in str(open_schema)  # FastAPI's own validation answer: never sent
    assert list(open_schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == [
        "text/plain"]
    error = open_schema["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "detail"]
    r = client(service).post("/healthz")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    service.close()
