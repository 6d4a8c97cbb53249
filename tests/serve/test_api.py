"""The JSON API of ``gsrcl serve`` against a real server (tests/serve/conftest.py): upload, verify, predict and
download for both methods, the key-path picker, the command line's messages for bad input, and the limits."""

from __future__ import annotations

import io
import zipfile

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gsrcl import errors
from gsrcl.cli import main
from gsrcl.outputs import OUTPUTS

from .conftest import upload, wait

METHODS = ("afrcl", "gsrcl")


def test_references_are_listed_by_name_with_method_types_and_genes(server, tiny_references):
    rows = {r["name"]: r for r in server.client.get("/api/references").json()}
    assert set(rows) == {"pbmc68k_afrcl", "pbmc68k_gsrcl"}
    for method in METHODS:
        row, ref = rows[f"pbmc68k_{method}"], tiny_references[method]
        assert row["method"] == method and row["cell_types"] == list(ref.cell_types)
        assert row["n_genes"] == len(ref.genes) and row["error"] is None


def test_the_page_and_its_files_are_served_with_a_content_policy(server):
    page = server.client.get("/")
    assert page.status_code == 200 and "<script src=\"/static/app.js\"" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: everything comes from this server
    for name in ("app.js", "style.css"):
        assert server.client.get(f"/static/{name}").status_code == 200


@pytest.mark.parametrize("method", METHODS)
def test_upload_verify_predict_and_download(server, method, pbmc68k_query_file, pbmc68k_query, tiny_refdir):
    from gsrcl.reference import read_manifest
    from gsrcl.verify import verify

    r = upload(server.client, pbmc68k_query_file, reference=f"pbmc68k_{method}", p=0.5, name="my query.h5ad")
    assert r.status_code == 201, r.text
    job = wait(server.client, r.json()["id"])
    assert job["state"] == "done", job["error"]
    expected = verify(pbmc68k_query_file, read_manifest(tiny_refdir / f"pbmc68k_{method}")).uns["gsrcl_verify"]
    report = job["verify"]
    assert report["n_cells"] == pbmc68k_query.n_obs and report["n_genes"] == pbmc68k_query.n_vars
    assert report["n_query_genes_matched"] == expected["n_query_genes_matched"]
    assert report["n_reference_genes_matched"] == expected["n_reference_genes_matched"] < report["n_reference_genes"]
    assert report["values"] == expected["values"] and job["upload_name"] == "my query.h5ad"
    result = job["result"]
    assert sorted(result["files"]) == sorted(OUTPUTS) and result["method"] == method
    assert sum(result["counts"].values()) == result["n_cells"] == pbmc68k_query.n_obs and "Unassigned" in result["counts"]

    probs = pd.read_csv(io.BytesIO(server.client.get(f"/api/jobs/{job['id']}/files/probabilities.csv").content),
                        index_col=0)
    assert list(probs.index) == list(pbmc68k_query.obs_names)
    assert probs["Identified as"].value_counts().to_dict() == {k: v for k, v in result["counts"].items() if v}
    svg = server.client.get(f"/api/jobs/{job['id']}/files/tsne.svg", params={"inline": "true"})
    assert svg.headers["content-type"].startswith("image/svg+xml") and svg.text.lstrip().startswith("<?xml")

    page = server.client.get(f"/api/jobs/{job['id']}/cells",
                             params={"sort": "conf_score", "order": "desc", "offset": 10, "limit": 25}).json()
    assert page["total"] == pbmc68k_query.n_obs and len(page["rows"]) == 25
    conf = probs.drop(columns="Identified as").max(axis=1).sort_values(ascending=False, kind="stable")
    np.testing.assert_allclose([row["conf_score"] for row in page["rows"]], conf.iloc[10:35].to_numpy(), rtol=1e-5)
    assert all(row["predicted_labels"] == probs.loc[row["barcode"], "Identified as"] for row in page["rows"])
    label = probs["Identified as"].iloc[0]
    only = server.client.get(f"/api/jobs/{job['id']}/cells", params={"label": label, "limit": 500}).json()
    assert only["total"] == result["counts"][label] and {r["predicted_labels"] for r in only["rows"]} == {label}


def _tenx_with_duplicated_names(path, query):
    from tests.io.conftest import write_10x_v3

    q = query[:60].copy()
    q.X = sp.csr_matrix(np.rint(np.expm1(q.X.toarray() if sp.issparse(q.X) else q.X)))
    q.var["gene_ids"] = list(q.var_names)
    names = list(q.var_names)
    names[1] = names[0]
    return write_10x_v3(path, q, names=names)


def test_key_path_picker_on_a_10x_file_with_duplicated_gene_names(server, pbmc68k_query, tmp_path):
    path = _tenx_with_duplicated_names(tmp_path / "filtered.h5", pbmc68k_query)
    r = upload(server.client, path, run=0)
    job = wait(server.client, r.json()["id"])
    assert job["state"] == "failed" and job["exit_code"] == errors.DuplicateGenesError.exit_code
    assert job["error"].startswith("gsrcl verify: error: filtered.h5:") and str(tmp_path) not in job["error"]
    assert "features" in job["detail"] and "barcodes" in job["detail"]  # the file's tree, for the picker
    r = server.client.post(f"/api/jobs/{job['id']}/verify", json={"var": "matrix features id"})
    assert r.status_code == 200, r.text
    job = wait(server.client, job["id"])
    assert job["state"] == "verified", job["error"]
    assert job["params"]["var"] == ["matrix", "features", "id"] and job["verify"]["n_cells"] == 60
    assert job["verify"]["n_reference_genes_matched"] > 0


def _bad_inputs(tmp_path, query) -> dict[str, object]:
    """File name -> bytes or a writer, one per error of the command line's list that a file can cause."""
    genes = list(query.var_names[:200])
    table = pd.DataFrame(np.ones((5, 200)), index=[f"c{i}" for i in range(5)], columns=genes)
    dup = table.copy()
    dup.columns = genes[:-1] + genes[:1]
    neg = table.copy()
    neg.iloc[0, 0] = -1
    barcodes = table.copy()
    barcodes.index = ["c0"] * 5
    other = table.copy()
    other.columns = [f"NOTAGENE{i}" for i in range(200)]
    out = {"garbage.bin": bytes(range(256)) * 4, "empty.csv": b""}
    for name, frame in (("dup_genes.csv", dup), ("negative.csv", neg), ("dup_barcodes.csv", barcodes),
                        ("no_overlap.csv", other)):
        out[name] = frame.to_csv().encode()
    with h5py.File(tmp_path / "nokeys.h5", "w"):
        pass
    with h5py.File(tmp_path / "odd_layout.h5", "w") as f:
        f.create_dataset("a/b", data=np.ones((3, 3)))
    for name in ("nokeys.h5", "odd_layout.h5"):
        out[name] = (tmp_path / name).read_bytes()
    return out


def test_bad_input_gives_the_command_lines_message_and_code(server, pbmc68k_query, tiny_refdir, tmp_path, capsys):
    ids = {}
    for name, content in _bad_inputs(tmp_path, pbmc68k_query).items():
        path = tmp_path / "files" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
        r = upload(server.client, path, run=0)
        assert r.status_code == 201, (name, r.text)
        ids[name] = (path, r.json()["id"])
    codes = set()
    for name, (path, job_id) in ids.items():
        job = wait(server.client, job_id)
        code = main(["verify", "-i", str(path), "-r", "pbmc68k_afrcl", "-mp", str(tiny_refdir), "-o",
                     str(tmp_path / "out"), "-q"])
        line = capsys.readouterr().err.strip().splitlines()[0]
        assert job["state"] == "failed" and job["exit_code"] == code, (name, job)
        assert job["error"] == line.replace(str(path), name), name
        codes.add(code)
    assert codes >= {64, 65, 66, 74, 75, 79, 80}


@pytest.mark.parametrize("fields, status, words", [
    ({"reference": "../pbmc68k_afrcl"}, 400, "not allowed"),
    ({"reference": "a/b"}, 400, "not allowed"),
    ({"reference": "nope"}, 400, "no reference named"),
    ({"p": "2"}, 400, "p"),
    ({"p": "x"}, 400, "p"),
    ({"mat": "a b c d"}, 400, "1 to 3 keys"),
])
def test_bad_settings_are_refused_before_any_work(server, pbmc68k_query_file, fields, status, words):
    before = set(p.name for p in server.config.jobs_dir.iterdir())
    r = upload(server.client, pbmc68k_query_file, **{"reference": "pbmc68k_afrcl", **fields})
    assert r.status_code == status and words in r.json()["error"], r.text
    assert set(p.name for p in server.config.jobs_dir.iterdir()) == before  # nothing kept


@pytest.mark.parametrize("path", ["/api/jobs/nothex", "/api/jobs/" + "0" * 32, "/api/jobs/..%2F..%2Fjobs.sqlite",
                                  "/api/jobs/" + "0" * 32 + "/files/probabilities.csv",
                                  "/api/jobs/" + "0" * 32 + "/cells"])
def test_bad_job_ids_are_not_found(server, path):
    r = server.client.get(path)
    assert r.status_code == 404 and "error" in r.json()


def test_file_names_are_only_the_four_outputs(server, pbmc68k_query_file):
    job = upload(server.client, pbmc68k_query_file, run=0).json()
    for name in ("..%2Fjobs.sqlite", "log.txt", "input", "..%2F..%2Fjobs.sqlite"):
        r = server.client.get(f"/api/jobs/{job['id']}/files/{name}")
        assert r.status_code == 404, name


def test_an_oversized_upload_is_refused_while_it_streams(server):
    import http.client
    import select

    limit = server.config.max_upload_bytes
    before = set(p.name for p in server.config.jobs_dir.iterdir())
    conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=30)
    boundary = "b0undary"
    conn.putrequest("POST", "/api/jobs")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Transfer-Encoding", "chunked")  # no length declared: the server must count as it reads
    conn.endheaders()

    def chunk(data: bytes) -> None:
        conn.send(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    chunk(f'--{boundary}\r\nContent-Disposition: form-data; name="reference"\r\n\r\npbmc68k_afrcl\r\n'.encode())
    chunk(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'.encode())
    sent, answered = 0, False
    piece = b"x" * (1 << 16)
    try:
        while sent < 50 * limit and not answered:  # far more than the limit, unless the server answers first
            chunk(piece)
            sent += len(piece)
            answered = bool(select.select([conn.sock], [], [], 0)[0])
    except (BrokenPipeError, ConnectionResetError):
        answered = True
    assert answered and sent < 10 * limit  # refused while it streamed (the rest is socket buffers)
    response = conn.getresponse()
    assert response.status == 413 and b"limit" in response.read()
    conn.close()
    assert set(p.name for p in server.config.jobs_dir.iterdir()) == before  # nothing kept


def test_a_declared_oversized_upload_is_refused_at_once(server):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=30)
    conn.putrequest("POST", "/api/jobs")
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", str(server.config.max_upload_bytes * 2))
    conn.endheaders()
    conn.send(b"--x\r\n")  # the body is never sent: the declared length is enough to refuse it
    response = conn.getresponse()
    assert response.status == 413 and b"limit" in response.read()
    conn.close()


def test_a_zip_of_a_10x_folder_is_read_and_a_zip_slip_refused(server, pbmc68k_query, tmp_path):
    from tests.io.conftest import write_10x_folder

    q = pbmc68k_query[:40].copy()
    q.X = sp.csr_matrix(np.rint(np.expm1(q.X.toarray() if sp.issparse(q.X) else q.X)))
    q.var["gene_ids"] = list(q.var_names)
    folder = write_10x_folder(tmp_path / "sample" / "filtered_feature_bc_matrix", q)
    good = tmp_path / "sample.zip"
    with zipfile.ZipFile(good, "w") as zf:
        for p in folder.iterdir():
            zf.write(p, f"filtered_feature_bc_matrix/{p.name}")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        for p in folder.iterdir():
            zf.write(p, f"../../escaped/{p.name}")
    ok = wait(server.client, upload(server.client, good, run=0).json()["id"])
    assert ok["state"] == "verified", ok["error"]
    assert ok["verify"]["n_cells"] == 40 and ok["verify"]["format"] == "10x-mtx"
    bad = wait(server.client, upload(server.client, evil, run=0).json()["id"])
    assert bad["state"] == "failed" and bad["exit_code"] == errors.UnsafeFileError.exit_code
    assert "outside the folder" in bad["error"] and "evil.zip" in bad["error"]
    assert not (server.config.jobs_dir / bad["id"] / "escaped").exists()
    assert not any(p.name == "escaped" for p in server.config.data.parent.rglob("escaped"))


def test_a_job_is_deleted_with_its_folder(server, pbmc68k_query_file):
    job_id = upload(server.client, pbmc68k_query_file, run=0).json()["id"]
    wait(server.client, job_id)
    assert server.client.delete(f"/api/jobs/{job_id}").status_code == 200
    assert server.client.get(f"/api/jobs/{job_id}").status_code == 404
    assert not (server.config.jobs_dir / job_id).exists()


def test_a_killed_worker_marks_its_job_failed_and_is_replaced(server, pbmc68k_query_file):
    import os
    import signal
    import time

    job_id = upload(server.client, pbmc68k_query_file).json()["id"]
    deadline = time.monotonic() + 120
    while True:
        job = server.api.store.get(job_id)
        if job["state"] == "running" and job["worker_pid"]:
            break
        assert time.monotonic() < deadline and job["state"] == "queued", job
        time.sleep(0.02)
    killed = job["worker_pid"]
    os.kill(killed, signal.SIGKILL)
    job = wait(server.client, job_id)
    assert job["state"] == "failed" and "killed (SIGKILL)" in job["error"]
    assert job["error"].startswith("gsrcl ") and job["exit_code"] == errors.PredictionError.exit_code
    assert server.api.store.get(job_id)["worker_pid"] is None
    deadline = time.monotonic() + 60
    while len([p for p in server.api.pool.pids() if p != killed]) < 2:  # a new worker took its place
        assert time.monotonic() < deadline
        time.sleep(0.1)
    again = server.client.post(f"/api/jobs/{job_id}/start", json={})  # a failed job can be started again
    assert again.status_code == 200 and again.json()["state"] == "queued"
