"""``gsrcl references`` (list, ``--names``, ``-q``), ``gsrcl references show NAME``, and a reference's short
``repr`` and ``summary()``, on copies of the small compatibility references under tests/data/compat."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gsrcl.cli import main
from gsrcl.errors import InvalidReferenceError
from gsrcl.reference import Reference, read_manifest
from gsrcl.reference_summary import GENES_SHOWN

COMPAT = Path(__file__).parent / "data" / "compat" / "references"
NAMES = ["compat_afrcl", "compat_gsrcl"]


@pytest.fixture
def refdir(tmp_path) -> Path:
    """A copy of the compatibility references (the originals are never handed to the code under test)."""
    root = tmp_path / "refs"
    for name in NAMES:
        shutil.copytree(COMPAT / name, root / name)
    return root


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_references_lists_each_with_method_types_and_genes(refdir, capsys):
    code, out, err = _run(capsys, "references", "-mp", str(refdir))
    lines = out.strip().splitlines()
    assert code == 0 and err == ""
    assert [line.split(":")[0] for line in lines] == NAMES
    assert lines[0].startswith("compat_afrcl: afrcl (default), 120 genes, 10 cell types: CD14+ Monocyte")


def test_names_prints_names_only(refdir, capsys):
    code, out, _ = _run(capsys, "references", "-mp", str(refdir), "--names")
    assert code == 0 and out.splitlines() == NAMES


def test_quiet_means_quiet_not_names_only(refdir, tmp_path, capsys):
    code, out, err = _run(capsys, "references", "-mp", str(refdir), "-q")
    assert code == 0 and err == ""
    assert out.splitlines()[0].startswith("compat_afrcl: afrcl (default), 120 genes")  # the listing itself
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(capsys, "references", "-mp", str(empty))[1].startswith("No references in")
    assert _run(capsys, "references", "-mp", str(empty), "--quiet")[1:] == ("", "")  # no hint when quiet


@pytest.mark.parametrize("name", NAMES)
def test_show_prints_cells_per_type_scores_and_genes(refdir, capsys, name):
    manifest = read_manifest(refdir / name)
    code, out, err = _run(capsys, "references", "show", name, "-mp", str(refdir))
    assert code == 0 and err == ""
    assert out.startswith(f"{name}: {manifest['method']} (default preset), created {manifest['created']}")
    assert "394 for training, 96 for validation" in out
    assert "genes (120, in model order): C1QA, CD52, CD53" in out and "(110 more)" in out
    assert "values: expects log1p" in out and "novelty score: calibrated held-out, 5-fold" in out
    # one row per cell type: training cells (all minus held out) and validation cells
    rows = {line.split("  ")[1]: line.split() for line in out.splitlines() if line.startswith("  CD14+ Monocyte")}
    assert rows["CD14+ Monocyte"][2:4] == ["72", "18"]
    assert "  Dendritic " in out and " 134 " in out
    assert f"validation MCC: {manifest['validation']['score']:.3f} on 96 held-out cells" in out


def test_show_gives_each_types_score_for_gsrcl_and_the_checkpoints_for_afrcl(refdir, capsys):
    out = _run(capsys, "references", "show", "compat_gsrcl", "-mp", str(refdir))[1]
    row = next(line for line in out.splitlines() if line.startswith("  CD14+ Monocyte"))
    assert row.split()[-4:] == ["18", "0.779", "encoder+genes", "5"]  # held out, MCC, input, encoder's epoch
    assert "  CD34+ " in out and "n/a" in out  # no cell of CD34+ was held out: no score
    out = _run(capsys, "references", "show", "compat_afrcl", "-mp", str(refdir))[1]
    assert "MCC by checkpoint (epoch: score): 1: 0.648, 6: 0.696, 10: 0.657, mean: 0.686" in out
    assert "kept: the mean of the checkpoints" in out


def test_show_all_genes_names_every_gene(refdir, capsys):
    genes = read_manifest(refdir / "compat_afrcl")["genes"]
    out = _run(capsys, "references", "show", "compat_afrcl", "-mp", str(refdir), "--all-genes")[1]
    assert ", ".join(genes) in out and "more)" not in out


def test_show_unknown_name_is_one_line_and_the_reference_code(refdir, capsys):
    code, out, err = _run(capsys, "references", "show", "nope", "-mp", str(refdir))
    assert code == InvalidReferenceError.exit_code and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "no reference 'nope'" in lines[0] and "compat_afrcl, compat_gsrcl" in lines[0]


def test_show_needs_a_name_and_names_needs_no_show(refdir, capsys):
    for argv in (["references", "show", "-mp", str(refdir)],
                 ["references", "show", "compat_afrcl", "-mp", str(refdir), "--names"],
                 ["references", "compat_afrcl", "-mp", str(refdir)]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "show needs the NAME" in capsys.readouterr().err


def test_repr_is_one_short_line_and_summary_is_the_show_page(refdir, capsys):
    ref = Reference.load(refdir / "compat_gsrcl")
    text = repr(ref)
    assert text == ("Reference('compat_gsrcl', method='gsrcl', preset='default', 10 cell types, 120 genes, "
                    f"created {ref.manifest['created']})")
    assert "\n" not in text and "C1QA" not in text and len(text) < 200
    assert str(ref) == text
    summary = ref.summary()
    assert len(summary.splitlines()) > 10 and "C1QA" in summary
    assert ", ".join(ref.genes[:GENES_SHOWN]) in summary and ref.genes[GENES_SHOWN] not in summary.split("(110")[0]
    assert ", ".join(ref.genes) in ref.summary(all_genes=True)
    out = _run(capsys, "references", "show", "compat_gsrcl", "-mp", str(refdir))[1]
    assert out.rstrip("\n") == summary


def test_describe_reads_a_bare_manifest_and_an_ensembles():
    from gsrcl.reference_summary import describe

    bare = {"name": "old", "method": "afrcl", "genes": ["A", "B", "C"], "cell_types": ["x", "y"]}
    text = describe(bare)
    assert text.startswith("old: afrcl") and "genes (3, in model order): A, B, C" in text
    assert "novelty score: none" in text
    ensemble = dict(bare, validation={"metric": "mcc", "score": 0.5, "members": [{"score": 0.5}, {"score": 0.25}]})
    assert "ensemble of 2 models, each on its own split: MCC 0.500, 0.250" in describe(ensemble)
