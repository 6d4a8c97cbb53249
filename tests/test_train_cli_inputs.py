"""``gsrcl train``'s bad labels and gene lists (one line, the documented code, nothing written), what ``-q``
prints, and the threads a reference records. Synthetic cells: no data folder needed."""

from __future__ import annotations

import gzip
import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from gsrcl import errors
from gsrcl.cli import main

N_CELLS = 40


@pytest.fixture(scope="module")
def h5ad(tmp_path_factory):
    """40 cells x 30 genes of counts, obs['ct'] two types of 20 cells."""
    rng = np.random.default_rng(0)
    adata = ad.AnnData(
        rng.poisson(2, (N_CELLS, 30)).astype(np.float32),
        obs=pd.DataFrame({"ct": ["A"] * 20 + ["B"] * 20}, index=[f"c{i}" for i in range(N_CELLS)]),
        var=pd.DataFrame(index=[f"g{i}" for i in range(30)]),
    )
    path = tmp_path_factory.mktemp("train_inputs") / "cells.h5ad"
    adata.write_h5ad(path)
    return path


def train_cli(h5ad, refdir, *args):
    return main(["train", "-i", str(h5ad), "-r", "x", "-mp", str(refdir), "--preset", "demo", *map(str, args)])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gsrcl train: error: "), err
    return err[0]


def ids(n=N_CELLS):
    return [f"c{i}" for i in range(n)]


LABEL_FILES = {
    "empty.csv": b"",  # 0 bytes: was _csv.Error "Could not determine delimiter"
    "blank.csv": b"\n \n\n",
    "ids_only.csv": "\n".join(ids()).encode() + b"\n",  # was "lists 1 cell id(s) twice (e.g. )"
    "ids_only_header.csv": ("cell\n" + "\n".join(ids())).encode(),
    "no_ids.csv": "".join(",A\n" for _ in ids()).encode(),
    "bad.csv.gz": b"\x1f\x8b\x08 not really gzip",
    "binary.csv": bytes(range(128, 256)) * 3,
    "ragged.csv": ("c0,A,extra\n" + "".join(f"{c},B\n" for c in ids()[1:]) + "c99,A,x,y\n").encode(),
}


@pytest.mark.parametrize("name", sorted(LABEL_FILES))
def test_unusable_labels_file_is_one_line_and_the_labels_code(h5ad, tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(LABEL_FILES[name])
    assert train_cli(h5ad, tmp_path / "refs", "--labels", path) == errors.LabelsError.exit_code
    line = one_line_error(capsys)
    assert name in line and "(e.g. )" not in line
    assert not (tmp_path / "refs").exists()


def test_labels_folder_is_named_as_a_folder(h5ad, tmp_path, capsys):
    (tmp_path / "labels.csv").mkdir()
    assert train_cli(h5ad, tmp_path / "refs", "--labels", tmp_path / "labels.csv") == errors.LabelsError.exit_code
    assert "is a folder" in one_line_error(capsys)


def test_labels_file_separators_are_found(h5ad, tmp_path, capsys, monkeypatch):
    """A comma, tab or semicolon file, gzipped or not, with or without a header, reads the same labels."""
    seen = []
    monkeypatch.setattr("gsrcl.training.train", lambda adata, labels, *a, **k: seen.append(labels) or 1 / 0)
    cells = ids()
    types = ["A"] * 20 + ["B"] * 20
    for name, sep, header in (("l.csv", ",", False), ("l.tsv", "\t", True), ("l.txt", ";", False),
                              ("l.csv.gz", ",", True)):
        text = ("cell" + sep + "type\n" if header else "") + "".join(f"{c}{sep}{t}\n" for c, t in zip(cells, types))
        path = tmp_path / name
        path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
        with pytest.raises(ZeroDivisionError):
            train_cli(h5ad, tmp_path / "refs", "--labels", path)
        assert seen[-1].to_dict() == dict(zip(cells, types)), name


@pytest.mark.parametrize("text", [b"", b"\n\n  \n"], ids=["empty", "blank"])
def test_empty_genes_from_list_is_one_line_and_the_gene_names_code(h5ad, tmp_path, capsys, text):
    genes = tmp_path / "genes.txt"
    genes.write_bytes(text)  # was pandas' EmptyDataError "No columns to parse from file"
    code = train_cli(h5ad, tmp_path / "refs", "--labels", "ct", "--genes-from", genes)
    assert code == errors.GeneNamesError.exit_code
    assert "lists no gene" in one_line_error(capsys)
    assert not (tmp_path / "refs").exists()


def test_unreadable_genes_from_list_is_one_line(h5ad, tmp_path, capsys):
    genes = tmp_path / "genes.txt"
    genes.write_bytes(bytes(range(128, 256)))
    code = train_cli(h5ad, tmp_path / "refs", "--labels", "ct", "--genes-from", genes)
    assert code == errors.GeneNamesError.exit_code
    assert "genes.txt" in one_line_error(capsys)


# --- -q ---------------------------------------------------------------------------------------------------
@pytest.fixture
def warn_then_fail(h5ad, tmp_path):
    """Arguments that log a warning (a labels file naming a cell the input lacks) and then fail (one cell type)."""
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"{c},A\n" for c in ids()) + "not_a_cell,B\n")
    return ["train", "-i", str(h5ad), "--labels", str(labels), "-r", "x", "-mp", str(tmp_path / "refs")]


def test_quiet_prints_the_error_line_only_not_warnings(warn_then_fail, capsys):
    assert main(warn_then_fail) == errors.LabelsError.exit_code
    err = capsys.readouterr().err
    assert "warning: 1 cell id(s)" in err  # without -q: the warning, then the error

    assert main([*warn_then_fail, "-q"]) == errors.LabelsError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0], err

    assert main([*warn_then_fail, "-q", "-v"]) == errors.LabelsError.exit_code  # -v keeps them
    assert "warning: 1 cell id(s)" in capsys.readouterr().err


def test_quiet_hides_the_libraries_warnings_too(monkeypatch, capsys):
    import gsrcl.cli.references as references

    def run(args):
        warnings.warn("a library's warning", UserWarning, stacklevel=1)
        logging.getLogger("gsrcl.x").warning("warning: ours")
        return 0

    monkeypatch.setattr(references, "run", run)
    for flags, shown in (([], True), (["-q"], False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(["references", "-mp", ".", *flags]) == 0
        assert bool(caught) == shown and ("warning: ours" in capsys.readouterr().err) == shown, flags


# --- threads ------------------------------------------------------------------------------------------------
def test_manifest_records_the_threads_the_training_ran_with(h5ad):
    """The same seed gives the same reference only at the same thread count: the manifest records the count
    the fit used, not torch's setting after it (which the fit restores)."""
    import torch

    import gsrcl

    adata = ad.read_h5ad(h5ad)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ref = gsrcl.train(adata, "ct", "afrcl", preset="demo", epochs=2, hidden=[8], out=4, head=[4, 4], svm_cv=2,
                          ensemble=1, threads=1, quiet=True)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert ref.manifest["training"]["torch_threads"] == 1
    assert ref.manifest["training"]["seed"] == 1111


# --- similar cases: settings and gene counts that failed with a traceback after the data was read ------------
@pytest.mark.parametrize("config", ['{"hidden": [0]}', '{"hidden": "64"}', '{"hidden": 64}', '{"out": 0}',
                                    '{"head": [16, -1]}'])
def test_bad_layer_widths_are_one_line_and_the_settings_code(h5ad, tmp_path, capsys, monkeypatch, config):
    monkeypatch.setattr("gsrcl.io.read_query", lambda *a, **k: pytest.fail("read the data before the settings"))
    monkeypatch.setattr("gsrcl.io.open_query", lambda *a, **k: pytest.fail("opened the data before the settings"))
    assert train_cli(h5ad, tmp_path / "refs", "--labels", "ct", "--config", config) == errors.GsrclError.exit_code
    assert "layer widths" in one_line_error(capsys)


def test_too_few_genes_are_one_line(h5ad, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse: before anything is read
        train_cli(h5ad, tmp_path / "refs", "--labels", "ct", "--top-genes", 1)
    assert exc.value.code == errors.EXIT_USAGE and "at least 2 genes" in capsys.readouterr().err

    one = tmp_path / "one.txt"
    one.write_text("g1\n")
    code = train_cli(h5ad, tmp_path / "refs", "--labels", "ct", "--genes-from", one, "-q")
    assert code == errors.GeneOverlapError.exit_code and "at least 2" in one_line_error(capsys)

    adata = ad.read_h5ad(h5ad)
    adata[:, :1].copy().write_h5ad(tmp_path / "one_gene.h5ad")
    code = train_cli(tmp_path / "one_gene.h5ad", tmp_path / "refs", "--labels", "ct", "-q")
    assert code == errors.ValuesError.exit_code and "at least 2" in one_line_error(capsys)
    assert not (tmp_path / "refs").exists()

    import gsrcl

    for top in (1, 2.5, "5"):
        with pytest.raises(errors.GsrclError, match="top_genes"):
            gsrcl.train(adata, "ct", top_genes=top)
