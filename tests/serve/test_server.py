"""The server's settings and state, without running jobs: the token, loopback, restarts, old jobs, zip members."""

from __future__ import annotations

import logging
import shutil
import time
import zipfile

import pytest

from gsrcl import errors
from gsrcl.cli import main

from .conftest import upload, wait


def test_binding_off_loopback_needs_a_token_and_warns(tmp_path, caplog, monkeypatch):
    from gsrcl.serve import ServeConfig

    (tmp_path / "refs").mkdir()
    with pytest.raises(errors.GsrclError, match="--token"):
        ServeConfig.checked(tmp_path / "refs", data=tmp_path / "d", host="0.0.0.0")
    monkeypatch.setattr(logging.getLogger("gsrcl"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="gsrcl"):
        config = ServeConfig.checked(tmp_path / "refs", data=tmp_path / "d", host="0.0.0.0", token="s3cret-token")
    assert config.token == "s3cret-token" and "reachable from other machines" in caplog.text
    assert ServeConfig.checked(tmp_path / "refs", data=tmp_path / "d").host == "127.0.0.1"


def test_the_command_refuses_a_public_host_without_a_token_in_one_line(tmp_path, capsys):
    (tmp_path / "refs").mkdir()
    code = main(["serve", "-mp", str(tmp_path / "refs"), "--data", str(tmp_path / "d"), "--host", "0.0.0.0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == errors.GsrclError.exit_code and len(err) == 1 and err[0].startswith("gsrcl serve: error:")
    code = main(["serve", "-mp", str(tmp_path / "nope"), "--data", str(tmp_path / "d")])
    assert code == errors.InvalidReferenceError.exit_code


def test_the_token_can_come_from_the_environment(tmp_path, monkeypatch):
    import uvicorn

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    monkeypatch.setenv("GSRCL_SERVE_TOKEN", "from-the-environment")
    (tmp_path / "refs").mkdir()
    assert main(["serve", "-mp", str(tmp_path / "refs"), "--data", str(tmp_path / "d"), "--host", "0.0.0.0",
                 "--port", "8123", "-q"]) == 0
    assert served["host"] == "0.0.0.0" and served["port"] == 8123
    assert served["app"].state.api.config.token == "from-the-environment"


def test_a_token_is_required_by_every_api_route(tiny_refdir, tmp_path):
    from fastapi.testclient import TestClient

    from gsrcl.serve import ServeConfig, create_app

    config = ServeConfig.checked(tiny_refdir, data=tmp_path, token="s3cret-token")
    with TestClient(create_app(config, start_workers=False)) as c:
        assert c.get("/").status_code == 200 and c.get("/api/config").json()["token_required"]
        for path in ("/api/references", "/api/jobs", "/api/jobs/" + "0" * 32):
            assert c.get(path).status_code == 401, path
        assert c.post("/api/jobs", files={"file": ("q.csv", b"a,b\n")}).status_code == 401
        assert c.get("/api/references", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        assert c.get("/api/references", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert c.post("/api/login", json={"token": "wrong"}).status_code == 401
        assert c.post("/api/login", json={"token": "s3cret-token"}).status_code == 200  # sets the cookie
        assert c.get("/api/references").status_code == 200


def test_a_restart_keeps_finished_jobs_and_marks_running_ones_interrupted(server, pbmc68k_query_file, tmp_path):
    from fastapi.testclient import TestClient

    from gsrcl.serve import ServeConfig, create_app
    from gsrcl.serve.jobs import JobStore

    done = wait(server.client, upload(server.client, pbmc68k_query_file, p=0.9).json()["id"])
    assert done["state"] == "done", done["error"]
    running = wait(server.client, upload(server.client, pbmc68k_query_file, run=0).json()["id"])["id"]
    data = tmp_path / "copy"
    shutil.copytree(server.config.data, data)  # the shared server keeps running: restart a copy of its data
    store = JobStore(data / "jobs.sqlite")
    store.update(running, state="running", worker_pid=123456)
    config = ServeConfig.checked(server.config.refdir, data=data)
    with TestClient(create_app(config, start_workers=False)) as c:
        again = c.get(f"/api/jobs/{done['id']}").json()
        assert again["state"] == "done" and again["result"] == done["result"]
        csv = c.get(f"/api/jobs/{done['id']}/files/probabilities.csv")
        assert csv.status_code == 200 and csv.content == server.client.get(
            f"/api/jobs/{done['id']}/files/probabilities.csv").content
        interrupted = c.get(f"/api/jobs/{running}").json()
        assert interrupted["state"] == "interrupted" and "start it again" in interrupted["error"]
        assert len(c.get("/api/jobs").json()) == len(server.client.get("/api/jobs").json())


def test_old_jobs_are_removed_after_keep_days(tmp_path):
    from gsrcl.serve import ServeConfig
    from gsrcl.serve.jobs import JobStore, new_id
    from gsrcl.serve.pool import WorkerPool

    (tmp_path / "refs").mkdir()
    config = ServeConfig.checked(tmp_path / "refs", data=tmp_path / "d", keep_days=1)
    store = JobStore(config.db_path)
    ids = []
    for state in ("done", "failed", "queued"):
        job_id = new_id()
        (config.jobs_dir / job_id).mkdir()
        store.create(job_id, upload_name="q.csv", input_path="input/query.csv", size=1, params={}, run=True)
        store.update(job_id, state=state)
        ids.append(job_id)
    fresh = new_id()
    store.create(fresh, upload_name="q.csv", input_path="input/query.csv", size=1, params={}, run=True)
    store.update(fresh, state="done")
    with store._connect() as con:
        con.execute("UPDATE jobs SET updated = ? WHERE id != ?", (time.time() - 2 * 86400, fresh))
    removed = WorkerPool(config, store).remove_old()
    assert sorted(removed) == sorted(ids[:2])  # finished and old; a queued job is never removed
    assert store.get(ids[2]) is not None and store.get(fresh) is not None
    assert not (config.jobs_dir / ids[0]).exists() and (config.jobs_dir / ids[2]).exists()


@pytest.mark.parametrize("member", ["../x/matrix.mtx", "/abs/matrix.mtx", "a/../../matrix.mtx", "C:/matrix.mtx"])
def test_zip_members_that_escape_are_refused_and_nothing_written(tmp_path, member):
    from gsrcl.serve.uploads import unpack_10x_zip

    archive = tmp_path / "q.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("m/barcodes.tsv", "c1\n")
        zf.writestr(member, "%%MatrixMarket matrix coordinate integer general\n1 1 0\n")
    with pytest.raises(errors.UnsafeFileError, match="outside the folder"):
        unpack_10x_zip(archive, tmp_path / "out", "q.zip")
    assert not (tmp_path / "out").exists() and not (tmp_path / "x").exists()


def test_upload_names_are_for_display_only():
    from gsrcl.serve.uploads import display_name, stored_name

    assert stored_name("../../etc/passwd") == "query"
    assert stored_name("x/../../evil.h5ad") == "query.h5ad" and stored_name("A.CSV.GZ") == "query.csv.gz"
    assert display_name("..\\..\\dir/sample\x00.h5ad") == "sample.h5ad"


def test_prediction_reports_its_passes_to_a_progress_callback(tiny_references, pbmc68k_query):
    import gsrcl
    from gsrcl.predict import reporting_progress

    seen: dict[str, list] = {}

    class Bar:
        def __init__(self, name, total):
            self.name = name
            seen[name] = [total, 0, False]

        def update(self, n):
            seen[self.name][1] += n

        def close(self):
            seen[self.name][2] = True

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    with reporting_progress(Bar):
        gsrcl.annotate(pbmc68k_query, tiny_references["afrcl"], plot=False, quiet=True)
    n = pbmc68k_query.n_obs
    assert seen["predict"] == [n, n, True]
    assert all(closed and done <= total for total, done, closed in seen.values())
    seen.clear()
    gsrcl.annotate(pbmc68k_query, tiny_references["afrcl"], plot=False, quiet=True)
    assert not seen  # outside the block: tqdm again
