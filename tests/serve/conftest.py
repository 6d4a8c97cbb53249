"""A real ``gsrcl serve`` server (uvicorn on 127.0.0.1, a free port, two workers) over the tiny references of
`tests/conftest.py`, shared by the tests of this folder, and helpers to upload and wait."""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi", reason="gsrcl serve needs the serve extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

MAX_UPLOAD_MB = 2
ENDED = ("verified", "done", "failed", "interrupted")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(app, port: int):
    """uvicorn serving ``app`` in a thread; returns (server, thread) once it accepts connections."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    return server, thread


@pytest.fixture(scope="package")
def server(tiny_refdir, tmp_path_factory):
    """The shared server: ``url``, ``config``, ``api`` (the app's `Api`), ``client`` (httpx)."""
    from gsrcl.serve import ServeConfig, create_app

    config = ServeConfig.checked(tiny_refdir, data=tmp_path_factory.mktemp("serve_data"), workers=2,
                                 max_upload_mb=MAX_UPLOAD_MB)
    app = create_app(config)
    port = free_port()
    srv, thread = start_server(app, port)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=60) as client:
        yield SimpleNamespace(url=url, config=config, api=app.state.api, client=client)
    srv.should_exit = True
    thread.join(30)


def upload(client, path, *, reference="pbmc68k_afrcl", name=None, **fields):
    """POST /api/jobs with the file at ``path`` (sent as ``name``); the response."""
    data = {"reference": reference, **{k: str(v) for k, v in fields.items()}}
    with open(path, "rb") as fh:
        return client.post("/api/jobs", data=data, files={"file": (name or path.name, fh)})


def wait(client, job_id: str, timeout: float = 180) -> dict:
    """The job once it has ended (verified, done, failed or interrupted)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ENDED:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']} ({job['stage']}) after {timeout} s")
        time.sleep(0.1)
