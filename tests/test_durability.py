"""A full disk, two runs into one folder, killed runs, and failures between the steps of a commit.

Every write path turns a full disk into `DiskFullError` (one line, its own exit code) and leaves nothing behind;
the outputs of one `predict` appear together or not at all, and a second run into the same folder fails instead
of replacing the first one's files; the temporaries of killed runs (named with their process id) are removed by
the next run; a failure raised between any two steps of the output commit or of the reference swap, or a process
killed there, leaves the old complete result or the new complete one. The disk is filled by monkeypatching the
writers (nothing to set up in CI); the references are the compat ones (copied), the query is synthetic.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gsrcl import atomic
from gsrcl.atomic import HOST, StagedFiles, is_disk_full
from gsrcl.cli import main
from gsrcl.errors import DiskFullError, OutputError
from gsrcl.outputs import OUTPUTS, predict_files
from gsrcl.reference import Reference, list_references

COMPAT = Path(__file__).parent / "data" / "compat" / "references"
SRC = Path(__file__).resolve().parents[1] / "src"
ENOSPC = OSError(errno.ENOSPC, "No space left on device")
H5PY_ENOSPC = RuntimeError(
    "Can't decrement id ref count (file write failed: time = Mon Dec  7 07:47:01 2026\n, filename = 'x.tmp', "
    "file descriptor = 3, errno = 28, error message = 'No space left on device', buf = 0x1, total write size = 8)"
)


# --- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture
def refdir(tmp_path) -> Path:
    """A copy of the compat AF-RCL reference as REFDIR/compat."""
    root = tmp_path / "refs"
    root.mkdir()
    shutil.copytree(COMPAT / "compat_afrcl", root / "compat")
    return root


@pytest.fixture
def query_file(tmp_path, refdir) -> Path:
    """200 cells of counts over the reference's genes."""
    genes = json.loads((refdir / "compat" / "manifest.json").read_text())["genes"]
    X = sp.random(200, len(genes), density=0.3, format="csr", random_state=0, dtype=np.float32)
    X.data = np.round(X.data * 20) + 1
    adata = ad.AnnData(X, obs=pd.DataFrame(index=[f"c{i}" for i in range(200)]), var=pd.DataFrame(index=genes))
    path = tmp_path / "query.h5ad"
    adata.write_h5ad(path)
    return path


def dead_pid() -> int:
    """The id of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.exists() else {}


def fail_at(monkeypatch, owner, attr: str, k: int, exc: BaseException | None = None) -> list[int]:
    """Make the k-th call (1-based) of ``owner.attr`` raise; returns the call counter."""
    real = getattr(owner, attr)
    calls = [0]

    def patched(*args, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            raise exc if exc is not None else OSError(errno.EIO, f"injected failure at call {k} of {attr}")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, attr, patched)
    return calls


# --- a full disk -----------------------------------------------------------------------------------------------
def test_disk_full_is_recognised_by_errno_and_by_h5py_message():
    assert is_disk_full(ENOSPC)
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(H5PY_ENOSPC)
    wrapped = ValueError("write failed")
    wrapped.__cause__ = ENOSPC
    assert is_disk_full(wrapped)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("errno = 280"))


@pytest.mark.parametrize("error", [ENOSPC, H5PY_ENOSPC], ids=["oserror", "h5py-runtimeerror"])
def test_verify_on_a_full_disk_exits_with_its_code_and_leaves_nothing(monkeypatch, capsys, tmp_path, refdir,
                                                                      query_file, error):
    def full_disk(self, path, *args, **kwargs):
        Path(path).write_bytes(b"\0" * 1000)  # a part written, then the disk is full
        raise error

    monkeypatch.setattr(ad.AnnData, "write_h5ad", full_disk)
    out = tmp_path / "out"
    code = main(["verify", "-i", str(query_file), "-r", "compat", "-mp", str(refdir), "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == DiskFullError.exit_code == 84
    assert len(err) == 1 and "is full" in err[0] and "Traceback" not in err[0], err
    assert not out.exists(), "verify left its output folder or a temporary file"


def test_verify_on_a_full_disk_keeps_an_existing_folder_as_it_was(monkeypatch, tmp_path, refdir, query_file):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(ad.AnnData, "write_h5ad", lambda self, path, *a, **k: (_ for _ in ()).throw(ENOSPC))
    code = main(["verify", "-i", str(query_file), "-r", "compat", "-mp", str(refdir), "-o", str(out),
                 "--overwrite", "-q"])
    assert code == DiskFullError.exit_code
    assert contents(out) == {"notes.txt": b"mine"}


@pytest.mark.parametrize("step", ["add", "finish", "csv"])
def test_predict_on_a_full_disk_exits_with_its_code_and_leaves_out_as_it_was(monkeypatch, capsys, tmp_path, refdir,
                                                                            query_file, step):
    import gsrcl.outputs as outputs

    target = {"add": (outputs.H5adXWriter, "_add"), "finish": (outputs.H5adXWriter, "_finish"),
              "csv": (outputs, "_csv")}[step]
    fail_at(monkeypatch, *target, k=1, exc=H5PY_ENOSPC if step != "csv" else ENOSPC)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code = main(["predict", "-i", str(query_file), "-r", "compat", "-mp", str(refdir), "-o", str(out), "-q",
                 "--no-plot"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == DiskFullError.exit_code
    assert len(err) == 1 and "is full" in err[0], err
    assert listing(out) == ["notes.txt"], "a temporary or staged file was left"


def test_reference_save_on_a_full_disk_raises_disk_full_and_leaves_nothing(monkeypatch, tmp_path, refdir):
    ref = Reference.load(refdir / "compat")
    def full_disk(path, **arrays):
        Path(path).write_bytes(b"\0" * 1000)
        raise ENOSPC

    monkeypatch.setattr(np, "savez_compressed", full_disk)
    with pytest.raises(DiskFullError):
        ref.save(tmp_path / "new_refs", "pbmc")
    assert not (tmp_path / "new_refs").exists()
    with pytest.raises(DiskFullError):  # replacing one: the old one stays, whole
        ref.save(refdir, "compat", overwrite=True)
    assert listing(refdir) == ["compat"]
    Reference.load(refdir / "compat")


def test_checkpoint_spill_on_a_full_disk_raises_disk_full_and_removes_its_folder(monkeypatch, tmp_path):
    import torch

    from gsrcl.methods.checkpoints import CheckpointStore

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    module = torch.nn.Linear(4, 3)
    store = CheckpointStore(max_bytes=0)
    store.put("a", module)  # the first stays in memory
    store.put("b", module)  # spilled
    fail_at(monkeypatch, np, "save", k=2, exc=ENOSPC)
    with pytest.raises(DiskFullError):
        store.put("c", module)
    store.close()
    assert listing(tmp_path) == []


def test_weight_average_on_a_full_disk_raises_disk_full(monkeypatch):
    import torch

    from gsrcl.methods.checkpoints import WeightAverage

    avg = WeightAverage(on_disk=True)
    avg.add(torch.nn.Linear(4, 3))
    fail_at(monkeypatch, np, "fromfile", k=1, exc=ENOSPC)  # the second add reads the sum, adds, writes it back
    with pytest.raises(DiskFullError):
        avg.add(torch.nn.Linear(4, 3))
    assert avg._file is None, "the temporary file was not closed"


# --- what killed runs leave -----------------------------------------------------------------------------------
def test_temporaries_carry_the_process_id_and_host(tmp_path):
    for path, tag in ((atomic.temp_file(tmp_path, "annotated.h5ad"), "tmp"), (atomic.temp_dir(tmp_path, "pbmc", "old"),
                                                                           "old")):
        info = atomic.parse_temp_name(path.name)
        assert info is not None and info["tag"] == tag and info["pid"] == os.getpid() and info["host"] == HOST


def test_stale_temporaries_of_dead_runs_are_removed_by_the_next_verify(tmp_path, refdir, query_file):
    out = tmp_path / "out"
    out.mkdir()
    dead, alive = dead_pid(), os.getppid()
    stale = out / f".verified.h5ad.tmp-{dead}.{HOST}-abc123"
    live = out / f".verified.h5ad.tmp-{alive}.{HOST}-def456"
    other_host = out / f".verified.h5ad.tmp-{dead}.{'0' * 8 if HOST != '0' * 8 else '1' * 8}-ghi789"
    for p in (stale, live, other_host):
        p.write_bytes(b"\0" * 100)
    assert main(["verify", "-i", str(query_file), "-r", "compat", "-mp", str(refdir), "-o", str(out), "-q"]) == 0
    assert listing(out) == sorted([live.name, other_host.name, "verified.h5ad"])


def test_stale_staging_folders_and_temporaries_are_removed_by_the_next_predict(tmp_path, refdir, query_file):
    out = tmp_path / "out"
    out.mkdir()
    dead = dead_pid()
    (out / f".annotated.h5ad.tmp-{dead}.{HOST}-abc123").write_bytes(b"\0" * 100)
    staged = out / f".gsrcl.stage-{dead}.{HOST}-def456"
    staged.mkdir()
    (staged / "annotated.h5ad").write_bytes(b"\0" * 100)  # killed while writing: no commit begun
    predict_files(query_file, refdir / "compat", out, plot=False, quiet=True)
    assert listing(out) == sorted(set(OUTPUTS) - {"tsne.svg"})


def test_checkpoint_folders_of_dead_runs_are_removed_by_the_next_spill(monkeypatch, tmp_path):
    import torch

    from gsrcl.methods.checkpoints import CheckpointStore

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = dead_pid()
    stale = tmp_path / f"gsrcl-checkpoints-{dead}.{HOST}-abc123"
    stale.mkdir()
    (stale / "0-1-0.npy").write_bytes(b"\0" * 100)
    live = tmp_path / f"gsrcl-checkpoints-{os.getppid()}.{HOST}-def456"
    live.mkdir()
    with CheckpointStore(max_bytes=0) as store:
        store.put("a", torch.nn.Linear(4, 3))
        store.put("b", torch.nn.Linear(4, 3))
        spill = store._tmp.name
        assert Path(spill).name.startswith(f"gsrcl-checkpoints-{os.getpid()}.{HOST}-")
        assert listing(tmp_path) == sorted([live.name, Path(spill).name])
    assert listing(tmp_path) == [live.name]


def test_an_old_reference_left_aside_by_a_killed_swap_is_put_back(tmp_path, refdir):
    dead = dead_pid()
    aside = refdir / f".compat.old-{dead}.{HOST}-abc123"
    aside.mkdir()
    os.rename(refdir / "compat", aside / "ref")  # killed between the two renames: NAME is missing
    unfinished = refdir / f".compat.tmp-{dead}.{HOST}-def456"
    unfinished.mkdir()
    (unfinished / "arrays.npz").write_bytes(b"\0" * 10)
    assert [row["name"] for row in list_references(refdir)] == ["compat"]
    assert listing(refdir) == ["compat"]
    Reference.load(refdir / "compat")


def test_load_puts_back_a_reference_left_aside(tmp_path, refdir):
    aside = refdir / f".compat.old-{dead_pid()}.{HOST}-abc123"
    aside.mkdir()
    os.rename(refdir / "compat", aside / "ref")
    Reference.load(refdir / "compat")
    assert listing(refdir) == ["compat"]


# --- two runs into one output folder -------------------------------------------------------------------------
def test_a_second_run_into_the_same_out_fails_instead_of_replacing_the_first(monkeypatch, tmp_path, refdir,
                                                                             query_file):
    import gsrcl.outputs as outputs

    out = tmp_path / "out"
    real_csv = outputs._csv
    other = {}

    def csv_then_other_run(path, pred):  # run B finishes while run A is between prediction and its commit
        real_csv(path, pred)
        if not other:
            monkeypatch.setattr(outputs, "_csv", real_csv)
            other.update(predict_files(query_file, refdir / "compat", out, plot=False, quiet=True, p=0.2)["paths"])

    monkeypatch.setattr(outputs, "_csv", csv_then_other_run)
    with pytest.raises(OutputError, match="another run"):
        predict_files(query_file, refdir / "compat", out, plot=False, quiet=True)
    assert sorted(other) == listing(out)
    h5 = ad.read_h5ad(out / "annotated.h5ad")
    assert h5.uns["gsrcl"]["params"]["p"] == pytest.approx(0.2), "the first run's files were replaced"


def test_commit_waits_for_the_lock_of_out(tmp_path):
    import threading
    import time

    out = tmp_path / "out"
    out.mkdir()
    staged = StagedFiles(out, ["a.txt"]).open()
    staged["a.txt"].write_text("new")
    held, done = threading.Event(), []

    def hold():
        with atomic.locked(out):
            held.set()
            time.sleep(0.5)
            done.append(listing(out))

    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    staged.commit(["a.txt"])
    t.join()
    assert "a.txt" not in done[0], "the commit did not wait for the lock"
    assert listing(out) == ["a.txt"]


# --- a failure between any two steps ---------------------------------------------------------------------------
def _old_and_new(out: Path, names, written) -> tuple[dict, dict]:
    old = {n: f"old {n}".encode() for n in names}
    new = {n: f"new {n}".encode() for n in written}
    return old, new


def _stage(out: Path, names, written, new) -> StagedFiles:
    staged = StagedFiles(out, names).open()
    for n in written:
        staged[n].write_bytes(new[n])
    return staged


COMMIT_STEPS = [("os", "replace"), ("os", "mkdir"), ("pathlib.Path", "touch"), ("shutil", "rmtree")]


@pytest.mark.parametrize("owner,attr", COMMIT_STEPS)
def test_a_failure_at_any_step_of_the_commit_leaves_the_old_or_the_new_outputs(monkeypatch, tmp_path, owner, attr):
    import importlib

    names = ["annotated.h5ad", "legend.txt", "probabilities.csv", "tsne.svg"]
    written = ["annotated.h5ad", "legend.txt", "probabilities.csv"]  # no t-SNE this time: the old one must go
    module, _, cls = owner.partition(".")
    target = getattr(importlib.import_module(module), cls) if cls else importlib.import_module(owner)
    k = 1
    outcomes = set()
    while True:
        out = tmp_path / f"{attr}-{k}"
        out.mkdir()
        old, new = _old_and_new(out, names, written)
        for n, b in old.items():
            (out / n).write_bytes(b)
        staged = _stage(out, names, written, new)
        with monkeypatch.context() as m:
            calls = fail_at(m, target, attr, k)
            try:
                staged.commit(written)
                failed = False
            except OSError:
                failed = True
        if not failed and calls[0] < k:
            break  # the k-th call never came: every step was tried
        assert contents(out) in (old, new), (attr, k, contents(out))
        left = [n for n in listing(out) if n not in contents(out)]
        if attr == "rmtree":  # a folder this process could not remove: the next run removes it (tested above)
            left = [n for n in left if atomic.parse_temp_name(n)["pid"] != os.getpid()]
        assert left == [], "a staging folder was left"
        outcomes.add("new" if contents(out) == new else "old")
        k += 1
    assert "old" in outcomes or attr == "rmtree"


KILL_SCRIPT = """
import os, sys
from pathlib import Path
sys.path.insert(0, {src!r})
from gsrcl.atomic import StagedFiles
out, k = Path(sys.argv[1]), int(sys.argv[2])
names = ["annotated.h5ad", "legend.txt", "probabilities.csv", "tsne.svg"]
staged = StagedFiles(out, names).open()
for n in names[:3]:
    staged[n].write_bytes(("new " + n).encode())
real, calls = os.replace, [0]
def replace(a, b):
    calls[0] += 1
    if calls[0] == k:
        os._exit(9)  # killed: nothing is undone
    real(a, b)
os.replace = replace
staged.commit(names[:3])
os._exit(0)
"""


def test_a_run_killed_at_any_step_of_the_commit_is_finished_or_undone_by_the_next(tmp_path):
    names = ["annotated.h5ad", "legend.txt", "probabilities.csv", "tsne.svg"]
    written = names[:3]
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.format(src=str(SRC)))
    for k in range(1, 9):
        out = tmp_path / f"out{k}"
        out.mkdir()
        old, new = _old_and_new(out, names, written)
        for n, b in old.items():
            (out / n).write_bytes(b)
        rc = subprocess.run([sys.executable, str(script), str(out), str(k)]).returncode
        StagedFiles(out, names).open().discard()  # the next run into OUT
        assert contents(out) in (old, new), (k, contents(out))
        assert listing(out) == sorted(contents(out)), "a staging folder was left"
        if rc == 0:
            assert contents(out) == new
            break
    else:
        pytest.fail("the commit never finished")


def test_predict_finishes_a_commit_a_killed_run_began_before_checking_out(tmp_path, refdir, query_file):
    out = tmp_path / "out"
    predict_files(query_file, refdir / "compat", out, plot=False, quiet=True)
    done = contents(out)
    staged = out / f".gsrcl.stage-{dead_pid()}.{HOST}-abc123"  # killed after moving one new file in
    (staged / ".old").mkdir(parents=True)
    (staged / ".committing").touch()
    os.replace(out / "legend.txt", staged / "legend.txt")
    with pytest.raises(OutputError, match="already holds"):  # the outputs are complete again, so: no overwrite
        predict_files(query_file, refdir / "compat", out, plot=False, quiet=True)
    assert contents(out) == done and listing(out) == sorted(done)


def test_a_failure_in_the_commit_of_predict_leaves_the_old_outputs(monkeypatch, tmp_path, refdir, query_file):
    out = tmp_path / "out"
    predict_files(query_file, refdir / "compat", out, plot=True, quiet=True, p=0.2)
    before = contents(out)
    for k in (2, 6):  # the second rename; the second new file moving in (after the 4 old ones moved aside)
        with monkeypatch.context() as m:
            fail_at(m, os, "replace", k=k)
            with pytest.raises(OSError, match="injected"):
                predict_files(query_file, refdir / "compat", out, plot=False, quiet=True, overwrite=True)
        assert contents(out) == before, k
        assert listing(out) == sorted(before), k


def _reference_state(refdir: Path, own_leftovers: bool = False) -> str:
    """The ``created`` of the complete reference under NAME; fails on anything else in REFDIR (but temporaries of
    this process with ``own_leftovers``: a folder it failed to remove, which the next run removes)."""
    left = [n for n in listing(refdir) if n != "compat"]
    if own_leftovers:
        left = [n for n in left if atomic.parse_temp_name(n)["pid"] != os.getpid()]
    assert "compat" in listing(refdir) and left == [], listing(refdir)
    ref = Reference.load(refdir / "compat")
    return ref.manifest["created"]


SWAP_STEPS = [(False, os, "rename"), (False, shutil, "rmtree"), (True, os, "rename"), (True, shutil, "rmtree"),
              (True, atomic, "_exchange")]


@pytest.mark.parametrize("exchange,owner,attr", SWAP_STEPS,
                         ids=[f"{'exchange' if e else 'two-renames'}-{a}" for e, _, a in SWAP_STEPS])
def test_a_failure_at_any_step_of_the_overwrite_leaves_the_old_or_the_new_reference(monkeypatch, tmp_path, refdir,
                                                                                     exchange, owner, attr):
    if exchange and not atomic._exchange(refdir / "compat", refdir / "compat"):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    old_created = Reference.load(refdir / "compat").manifest["created"]
    new = Reference.load(refdir / "compat")
    new.manifest = dict(new.manifest, created="2099-01-01T00:00:00+00:00")
    k = 1
    while True:
        with monkeypatch.context() as m:
            if not exchange:
                m.setattr(atomic, "_exchange", lambda a, b: False)
            calls = fail_at(m, owner, attr, k)
            try:
                new.save(refdir, "compat", overwrite=True)
                failed = False
            except OSError:
                failed = True
        if not failed and calls[0] < k:
            break
        assert _reference_state(refdir, attr == "rmtree") in (old_created, new.manifest["created"]), (attr, k)
        shutil.rmtree(refdir)
        refdir.mkdir()
        shutil.copytree(COMPAT / "compat_afrcl", refdir / "compat")
        k += 1


SWAP_KILL_SCRIPT = """
import json, os, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, {src!r})
from gsrcl import atomic
from gsrcl.reference import Reference
refdir, k = Path(sys.argv[1]), int(sys.argv[2])
manifest = json.loads((refdir / "compat" / "manifest.json").read_text())
with np.load(refdir / "compat" / "arrays.npz") as npz:
    arrays = {{key: npz[key] for key in npz.files}}
manifest["created"] = "2099-01-01T00:00:00+00:00"
atomic._exchange = lambda a, b: False
real, calls = os.rename, [0]
def rename(a, b):
    calls[0] += 1
    if calls[0] == k:
        os._exit(9)
    real(a, b)
os.rename = rename
Reference(manifest=manifest, arrays=arrays).save(refdir, "compat", overwrite=True)
os._exit(0)
"""


def test_a_run_killed_at_any_step_of_the_overwrite_leaves_a_reference_under_name(tmp_path, refdir):
    script = tmp_path / "kill.py"
    script.write_text(SWAP_KILL_SCRIPT.format(src=str(SRC)))
    old_created = json.loads((refdir / "compat" / "manifest.json").read_text())["created"]
    for k in range(1, 6):
        rc = subprocess.run([sys.executable, str(script), str(refdir), str(k)]).returncode
        list_references(refdir)  # the next run
        assert _reference_state(refdir) in (old_created, "2099-01-01T00:00:00+00:00"), k
        if rc == 0:
            assert _reference_state(refdir) == "2099-01-01T00:00:00+00:00"
            break
        shutil.rmtree(refdir / "compat")
        shutil.copytree(COMPAT / "compat_afrcl", refdir / "compat")
    else:
        pytest.fail("the save never finished")
