"""``gsrcl references available`` / ``download`` and `gsrcl.original.download`, against an HTTP server on
127.0.0.1 that these tests run (with Range support of its own); nothing is fetched from the internet.

Most tests replace the import by a stand-in that records its call, so that they test the transfer alone; the
end-to-end ones serve an original reference folder built by `tests.original.fixtures` and import it for real.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import re
import shutil
import socket
import threading
import urllib.parse
import zipfile
from pathlib import Path

import pytest

from gsrcl.cli import main
from gsrcl.errors import DiskFullError, DownloadError, GsrclError, InvalidReferenceError, OutputError
from gsrcl.original import download as dl
from gsrcl.original.published import PUBLISHED, find, names, published, size_text

COMPAT = Path(__file__).parents[1] / "data" / "compat" / "references" / "compat_gsrcl"


# --- a loopback server -------------------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        srv = self.server
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        rng = self.headers.get("Range")
        srv.requests.append((path, rng))
        if path in srv.redirects:
            self.send_response(302)
            self.send_header("Location", srv.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = srv.files.get(path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng and srv.ranges:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if path in srv.drop_first:  # half the bytes, then the connection closes
            srv.drop_first.discard(path)
            payload = payload[: len(payload) // 2]
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


class Server:
    """A ``ThreadingHTTPServer`` on 127.0.0.1 serving ``files`` (path -> bytes); ``drop_first`` paths send half
    of their bytes the first time; ``ranges=False`` ignores Range; ``redirects`` maps a path to a Location."""

    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.files, self.httpd.requests = {}, []
        self.httpd.drop_first, self.httpd.ranges, self.httpd.redirects = set(), True, {}
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def __getattr__(self, name):
        return getattr(self.httpd, name)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Downloads go to a cache in tmp_path, no mirror comes from the environment, retries do not wait."""
    monkeypatch.setenv("GSRCL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GSRCL_REFERENCES_URL", raising=False)
    monkeypatch.setattr(dl, "BACKOFF", 0.0)


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _toy_archive(name: str = "Adam", size: int = 300_000) -> bytes:
    """A zip unpacking to ``name/`` (content the stand-in import does not read), large enough to arrive in
    several reads."""
    noise = hashlib.shake_256(name.encode()).digest(size)  # incompressible, so the archive keeps its size
    return _zip({f"{name}/{name}-reference-genes.csv": b"G1\nG2\n", f"{name}/blob.bin": noise})


@pytest.fixture
def imports(monkeypatch):
    """A stand-in for the import: records each call and saves a copy of a small compatibility reference as
    REFDIR/NAME."""
    calls = []

    def fake(source, refdir, name, **kw):
        source = Path(source)
        with zipfile.ZipFile(source) as zf:
            assert zf.testzip() is None
        calls.append({"source": source, "name": name, "bytes": source.read_bytes(), **kw})
        target = Path(refdir) / name
        if kw["overwrite"]:
            shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(COMPAT, target)
        return target

    monkeypatch.setattr(dl, "_import_original", fake)
    return calls


def _leftovers(tmp_path: Path) -> list[Path]:
    cache = tmp_path / "cache"
    return sorted(p for p in cache.rglob("*")) if cache.exists() else []


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- the table ---------------------------------------------------------------------------------------------
def test_table_holds_each_dataset_once_per_method_with_a_gsrcl_address():
    for method in ("gsrcl", "afrcl"):
        refs = published(method)
        assert len(refs) == len({r.name for r in refs}) == 19
    gsrcl = {r.name: r for r in published("gsrcl")}
    assert gsrcl["Adam"].record_url == "https://zenodo.org/api/records/10050548/files/Adam.zip/content"
    assert gsrcl["Baron_Human"].record_url.endswith("/Baron%20Human.zip/content")
    assert all(r.record_url is None for r in published("afrcl"))  # not known: no address invented
    assert all(r.sha256 is None and r.size is None for r in PUBLISHED)
    assert find("baron human") is find("Baron_Human") is gsrcl["Baron_Human"]
    assert find("Adam", "afrcl").method == "afrcl"
    with pytest.raises(InvalidReferenceError, match="Quake_10x_Bladder"):
        find("Adamm")
    assert names("gsrcl") == names("afrcl")
    assert [size_text(s) for s in (None, 999, 1500, 2_500_000_000)] == ["unknown", "999 B", "1.5 kB", "2.5 GB"]


def test_available_prints_the_table_and_what_refdir_holds(tmp_path, capsys):
    code, out, err = _run(capsys, "references", "available")
    rows = [line for line in out.splitlines() if line.split()[:1] and line.split()[0] in names()]
    assert code == 0 and err == "" and len(rows) == 38
    assert out.splitlines()[0].split() == ["name", "method", "tissue", "platform", "cells", "types", "size"]
    assert re.search(r"^Adam\s+gsrcl\s+mouse kidney\s+Drop-seq\s+3660\s+8\s+unknown$", out, re.M)

    refs = tmp_path / "refs"
    shutil.copytree(COMPAT, refs / "Adam")
    code, out, _ = _run(capsys, "references", "available", "-mp", refs, "--method", "gsrcl")
    assert code == 0 and re.search(r"^Adam\s+gsrcl\b.*\byes$", out, re.M)
    assert not re.search(r"^Xin\s.*yes$", out, re.M) and "afrcl" not in out.split("\n\n")[0]
    out = _run(capsys, "references", "available", "-mp", refs, "--method", "afrcl")[1]
    assert re.search(r"^Adam\s+afrcl\b.*name taken \(gsrcl\)$", out, re.M)
    assert _run(capsys, "references", "available", "--names")[1].split() == names()
    code, out, _ = _run(capsys, "references", "available", "-mp", tmp_path / "not yet")
    assert code == 0 and out.splitlines()[0].split()[-2:] == ["in", "REFDIR"] and " yes" not in out


# --- downloading -------------------------------------------------------------------------------------------
def test_download_fetches_checks_imports_and_removes_the_archive(server, tmp_path, imports):
    body = _toy_archive()
    server.files["/Adam.zip"] = body
    refs = tmp_path / "refs"
    paths = dl.download(["Adam"], refs, url=server.url + "/", quiet=True)
    assert paths == [refs / "Adam"]
    (call,) = imports
    assert call["bytes"] == body and call["source"].name == "Adam.zip" and call["method"] == "gsrcl"
    origin = call["origin"]
    assert origin["url"] == f"{server.url}/Adam.zip" and origin["source"] == origin["url"]
    assert origin["archive_sha256"] == hashlib.sha256(body).hexdigest()
    assert origin["record"].endswith("zenodo.10050548")
    assert server.requests == [("/Adam.zip", None)]
    assert _leftovers(tmp_path) == []  # the download is removed after the import


def test_an_interrupted_transfer_resumes_with_a_range_request(server, tmp_path, imports):
    body = _toy_archive()
    server.files["/Adam.zip"] = body
    server.drop_first.add("/Adam.zip")
    dl.download(["Adam"], tmp_path / "refs", url=server.url, quiet=True)
    assert [r[1] for r in server.requests] == [None, f"bytes={len(body) // 2}-"]
    assert imports[0]["bytes"] == body and _leftovers(tmp_path) == []


def test_redirects_are_followed_with_the_range_and_only_to_http(server, tmp_path, imports):
    body = _toy_archive()
    server.files["/store/Adam.zip"] = body
    server.redirects["/Adam.zip"] = "/store/Adam.zip"  # as the record's /content address redirects
    server.drop_first.add("/store/Adam.zip")
    dl.download(["Adam"], tmp_path / "refs", url=server.url, quiet=True)
    assert server.requests[2:] == [("/Adam.zip", f"bytes={len(body) // 2}-"),
                                   ("/store/Adam.zip", f"bytes={len(body) // 2}-")]
    assert imports[0]["bytes"] == body
    server.redirects["/Xin.zip"] = "file:///etc/hostname"
    with pytest.raises(DownloadError, match="HTTP 302"):
        dl.download(["Xin"], tmp_path / "refs", url=server.url, quiet=True)
    server.redirects["/Xin.zip"] = "ftp://127.0.0.1/Xin.zip"
    with pytest.raises(DownloadError, match="cannot reach.*unknown url type"):
        dl.download(["Xin"], tmp_path / "refs", url=server.url, quiet=True)
    assert [p.name for p in (tmp_path / "refs").iterdir()] == ["Adam"]


@pytest.mark.parametrize("kept", ["part", "all", "longer"])
def test_a_partial_file_of_an_earlier_run_is_resumed(server, tmp_path, imports, kept):
    body = _toy_archive()
    server.files["/Adam.zip"] = body
    url = f"{server.url}/Adam.zip"
    slot = dl._slot(dl.cache_dir(tmp_path / "refs"), find("Adam"), url)
    slot.mkdir()
    have = {"part": body[:100_000], "all": body, "longer": body + b"0123456789"}[kept]
    (slot / "Adam.zip.part").write_bytes(have)
    dl.download(["Adam"], tmp_path / "refs", url=server.url, quiet=True)
    expected = [("/Adam.zip", f"bytes={len(have)}-")]  # "all": 416, nothing after the last byte: complete
    if kept == "longer":  # 416 and another length: not this file, fetched again from the start
        expected.append(("/Adam.zip", None))
    assert server.requests == expected
    assert imports[0]["bytes"] == body and _leftovers(tmp_path) == []


def test_a_server_that_ignores_ranges_sends_the_whole_file_again(server, tmp_path, imports):
    body = _toy_archive()
    server.files["/Adam.zip"] = body
    server.drop_first.add("/Adam.zip")
    server.ranges = False
    dl.download(["Adam"], tmp_path / "refs", url=server.url, quiet=True)
    assert len(server.requests) == 2 and imports[0]["bytes"] == body


def test_a_transfer_that_keeps_breaking_gives_up_and_keeps_the_bytes(server, tmp_path, imports, monkeypatch):
    class Always(set):
        def discard(self, item):  # every answer is cut short
            pass

    body = _toy_archive()
    server.files["/Adam.zip"] = body
    server.httpd.drop_first = Always({"/Adam.zip"})
    monkeypatch.setattr(dl, "STALLS", 2)
    # halving the rest each time: progress, so it goes on until a connection brings nothing new
    with pytest.raises(DownloadError, match="kept breaking off"):
        dl.download(["Adam"], tmp_path / "refs", url=server.url, quiet=True)
    assert not (tmp_path / "refs").exists() and imports == []
    (part,) = [p for p in _leftovers(tmp_path) if p.is_file()]
    assert part.name == "Adam.zip.part" and body.startswith(part.read_bytes())


@pytest.mark.parametrize("case", ["404", "corrupt", "truncated", "refused", "timeout"])
def test_failures_are_one_download_error_and_leave_nothing(server, tmp_path, imports, case):
    body = _toy_archive()
    url = server.url
    if case == "corrupt":  # a byte of a member's data changed: the CRC check fails
        at = body.index(b"blob.bin") + 200
        server.files["/Adam.zip"] = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1:]
    elif case == "truncated":  # served whole, but only the first half of an archive
        server.files["/Adam.zip"] = body[: len(body) // 2]
    elif case == "refused":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}"
    refs = tmp_path / "refs"
    with socket.socket() as mute:  # "timeout": a port that takes the connection and never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen(1)
        if case == "timeout":
            url = f"http://127.0.0.1:{mute.getsockname()[1]}"
        with pytest.raises(DownloadError) as exc:
            dl.download(["Adam"], refs, url=url, quiet=True, timeout=0.5)
    message = exc.value.message
    assert "\n" not in message and f"{url}/Adam.zip" in message and "gsrcl import" in message
    assert {"404": "HTTP 404", "corrupt": "CRC", "truncated": "not a readable zip",
            "refused": "refused", "timeout": "did not answer in time"}[case] in message
    assert not refs.exists() and imports == []
    assert _leftovers(tmp_path) == []  # no partial file: nothing worth resuming


def test_a_sha256_or_size_the_table_knows_is_checked(server, tmp_path, imports):
    body = _toy_archive()
    server.files["/Adam.zip"] = body
    folder = dl.cache_dir(tmp_path / "refs")
    url = f"{server.url}/Adam.zip"
    wrong = dataclasses.replace(find("Adam"), sha256="0" * 64)
    with pytest.raises(DownloadError, match="not the published one"):
        dl.download_one(wrong, url, tmp_path / "refs", folder, quiet=True)
    other_size = dataclasses.replace(find("Adam"), size=len(body) + 1)
    with pytest.raises(DownloadError, match=f"serves {len(body)} bytes where the published archive has"):
        dl.download_one(other_size, url, tmp_path / "refs", folder, quiet=True)
    assert not (tmp_path / "refs").exists() and imports == []
    right = dataclasses.replace(find("Adam"), sha256=hashlib.sha256(body).hexdigest(), size=len(body))
    dl.download_one(right, url, tmp_path / "refs", folder, quiet=True)
    assert imports[0]["bytes"] == body


def test_an_archive_the_import_refuses_is_removed_one_it_could_not_write_is_kept(server, tmp_path, monkeypatch):
    server.files["/Adam.zip"] = _toy_archive()
    refs = tmp_path / "refs"

    def refuse(*args, **kw):
        raise InvalidReferenceError("not an original reference")

    monkeypatch.setattr(dl, "_import_original", refuse)
    with pytest.raises(InvalidReferenceError):
        dl.download(["Adam"], refs, url=server.url, quiet=True)
    assert _leftovers(tmp_path) == [] and not refs.exists()

    def full(*args, **kw):
        raise DiskFullError("the disk is full")

    monkeypatch.setattr(dl, "_import_original", full)
    with pytest.raises(DiskFullError) as exc:
        dl.download(["Adam"], refs, url=server.url, quiet=True)
    assert "kept in" in exc.value.detail
    kept = [p for p in _leftovers(tmp_path) if p.is_file()]
    assert [p.name for p in kept] == ["Adam.zip"]
    monkeypatch.setattr(dl, "_import_original", lambda source, refdir, name, **kw: Path(refdir) / name)
    n = len(server.requests)
    dl.download(["Adam"], refs, url=server.url, quiet=True)
    assert len(server.requests) == n and _leftovers(tmp_path) == []  # imported without fetching it again


def test_settings_are_checked_before_anything_is_fetched(server, tmp_path, imports, monkeypatch):
    refs = tmp_path / "refs"
    (refs / "Xin").mkdir(parents=True)
    server.files["/Adam.zip"] = _toy_archive()
    with pytest.raises(OutputError, match="already exists"):
        dl.download(["Adam", "Xin"], refs, url=server.url, quiet=True)
    with pytest.raises(InvalidReferenceError, match="published ones are: PbmcBench_10Xv2"):
        dl.download(["Adam", "Nope"], refs, url=server.url, quiet=True)
    with pytest.raises(GsrclError, match="not an http"):
        dl.download(["Adam"], refs, url="file:///etc", quiet=True)
    with pytest.raises(DownloadError, match="not known to gsrcl"):  # AF-RCL: no published address without --url
        dl.download(["Adam"], refs, method="afrcl", quiet=True)
    monkeypatch.setenv("GSRCL_CACHE", str(refs / "cache"))
    with pytest.raises(GsrclError, match="inside the reference folder"):
        dl.download(["Adam"], refs, url=server.url, quiet=True)
    assert server.requests == [] and imports == [] and sorted(p.name for p in refs.iterdir()) == ["Xin"]


def test_several_names_are_imported_in_turn_and_a_failure_says_which_were(server, tmp_path, imports):
    server.files["/Adam.zip"] = _toy_archive("Adam")
    server.files["/Baron Human.zip"] = _toy_archive("Baron Human")
    refs = tmp_path / "refs"
    paths = dl.download(["Adam", "baron human"], refs, url=server.url, quiet=True)
    assert paths == [refs / "Adam", refs / "Baron_Human"]
    assert [r[0] for r in server.requests] == ["/Adam.zip", "/Baron Human.zip"]
    with pytest.raises(DownloadError) as exc:
        dl.download(["Muraro", "Xin", "Klein"], refs, url=server.url, quiet=True)  # none is served
    assert "Imported before this failure: none; failed: Muraro; not tried: Xin, Klein." in exc.value.detail
    server.files["/Muraro.zip"] = _toy_archive("Muraro")
    with pytest.raises(DownloadError) as exc:
        dl.download(["Muraro", "Xin"], refs, url=server.url, quiet=True)
    assert "Imported before this failure: Muraro; failed: Xin; not tried: none." in exc.value.detail
    assert sorted(p.name for p in refs.iterdir()) == ["Adam", "Baron_Human", "Muraro"]


# --- the command -------------------------------------------------------------------------------------------
def test_download_command_exit_codes(server, tmp_path, imports, capsys, monkeypatch):
    refs = tmp_path / "refs"
    code, out, err = _run(capsys, "references", "download", "Nope", "-mp", refs)
    assert code == 81 and err.count("\n") == 1 and "Adam" in err
    assert _run(capsys, "references", "download", "Adam", "-mp", refs, "--url", server.url)[0] == 87  # 404
    assert _run(capsys, "references", "download", "Adam", "-mp", refs, "--url", "ftp://x")[0] == 85
    assert _run(capsys, "references", "download", "Adam", "-mp", refs, "--method", "afrcl")[0] == 87
    server.files["/Adam.zip"] = _toy_archive()
    monkeypatch.setenv("GSRCL_REFERENCES_URL", server.url)  # the mirror from the environment
    code, out, err = _run(capsys, "references", "download", "Adam", "-mp", refs, "-q")
    assert (code, out, err) == (0, "", "") and (refs / "Adam").is_dir()  # -q: no progress bar, no message
    code, _, err = _run(capsys, "references", "download", "Adam", "-mp", refs)
    assert code == 82 and "already exists" in err
    n = len(server.requests)
    code, out, err = _run(capsys, "references", "download", "Adam", "-mp", refs, "--overwrite")
    assert code == 0 and len(server.requests) == n + 1 and out.startswith("Reference('compat_gsrcl', method='gsrcl'")
    assert "Downloading Adam" in err and "300k" in err  # the message and the progress bar without -q
    for argv in (["download", "-mp", refs], ["download", "Adam"], ["available", "Adam"],
                 ["-mp", refs, "--url", server.url], ["show", "Adam", "-mp", refs, "--overwrite"]):
        with pytest.raises(SystemExit) as exc:
            main(["references", *map(str, argv)])
        assert exc.value.code == 2


# --- end to end: the real import ---------------------------------------------------------------------------
def _zip_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
    return buf.getvalue()


@pytest.mark.parametrize("method", ["gsrcl", "afrcl"])
def test_download_end_to_end_imports_a_usable_reference(server, tmp_path, capsys, method):
    from gsrcl.reference import Reference, read_manifest
    from tests.original import fixtures

    make = fixtures.make_gsrcl_folder if method == "gsrcl" else fixtures.make_afrcl_folder
    body = _zip_folder(make(tmp_path / "original", name="Xin"))
    server.files["/Xin.zip"] = body
    server.drop_first.add("/Xin.zip")  # and resumed
    refs = tmp_path / "refs"
    code, out, err = _run(capsys, "references", "download", "Xin", "-mp", refs, "--method", method,
                          "--url", server.url, "-q")
    assert (code, err) == (0, ""), err
    ref = Reference.load(refs / "Xin")
    assert ref.method == method and sorted(ref.cell_types) == sorted(fixtures.TYPES)
    record = read_manifest(refs / "Xin")["imported"]["from"]
    assert record["url"] == f"{server.url}/Xin.zip"
    assert record["archive_sha256"] == hashlib.sha256(body).hexdigest()
    assert len(server.requests) == 2 and server.requests[1][1] is not None
    assert _leftovers(tmp_path) == [] and [p.name for p in refs.iterdir()] == ["Xin"]


def test_an_archive_the_real_import_refuses_leaves_nothing(server, tmp_path, capsys):
    server.files["/Xin.zip"] = _zip({"Xin/Xin-reference-genes.csv": b"G1\nG2\n", "../escape.txt": b"x"})
    refs = tmp_path / "refs"
    code, out, err = _run(capsys, "references", "download", "Xin", "-mp", refs, "--url", server.url, "-q")
    assert code == 88 and "outside the folder" in err and err.count("\n") == 1
    assert not refs.exists() and not (tmp_path / "escape.txt").exists() and _leftovers(tmp_path) == []


def test_a_download_under_way_in_another_run_is_left_alone(server, tmp_path, imports):
    fcntl = pytest.importorskip("fcntl")
    server.files["/Adam.zip"] = _toy_archive()
    slot = dl._slot(dl.cache_dir(tmp_path / "refs"), find("Adam"), f"{server.url}/Adam.zip")
    slot.mkdir()
    part = slot / "Adam.zip.part"
    with open(part, "ab") as other:  # another process holds it (flock is per open file, so this stands in)
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        with pytest.raises(DownloadError, match="another gsrcl is downloading"):
            dl.download(["Adam"], tmp_path / "refs", url=server.url, quiet=True)
        assert part.exists() and server.requests == []
