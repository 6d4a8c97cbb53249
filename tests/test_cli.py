"""The command frame: documented exit codes, sub-commands in the README, reference names and listing."""

from __future__ import annotations

import json
import re

import pytest

from gsrcl import errors
from gsrcl.cli import COMMANDS, build_parser, main
from gsrcl.reference import list_references, resolve


@pytest.fixture(scope="module")
def readme(repo_root) -> str:
    return (repo_root / "README.md").read_text()


def test_every_exit_code_is_documented_once_with_its_meaning(readme):
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", readme, flags=re.M))
    codes = {cls.exit_code for cls in errors.ALL_ERRORS}
    assert codes <= {int(c) for c in table}, sorted(codes - {int(c) for c in table})
    for cls in errors.ALL_ERRORS:
        assert table[str(cls.exit_code)].startswith(cls.what), (cls.__name__, table[str(cls.exit_code)])
    assert len(codes) == len(errors.ALL_ERRORS), "two error classes share an exit code"


def test_every_registered_command_is_documented(readme):
    parser = build_parser()
    registered = set(parser._subparsers._group_actions[0].choices)
    assert {"verify", "references"} <= registered
    for name in registered:
        assert f"### `gsrcl {name}`" in readme, name
        assert name in COMMANDS


@pytest.mark.parametrize("name", ["../x", "/abs/path", "a/b", "..", ".hidden", ""])
def test_reference_names_that_leave_refdir_are_refused(tmp_path, name):
    with pytest.raises(errors.InvalidReferenceError):
        resolve(tmp_path, name)


def test_plain_reference_name_resolves_inside(tmp_path):
    assert resolve(tmp_path, "pbmc") == (tmp_path / "pbmc").resolve()


def test_references_lists_manifests_and_flags_broken_ones(tmp_path, capsys):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    good = {
        "format": "gsrcl-reference", "format_version": 1, "name": "good", "method": "afrcl", "preset": "default",
        "genes": ["A", "B", "C"], "cell_types": ["T", "B"], "values": {}, "model": {}, "arrays": {},
        "created": "2026-12-01T00:00:00+00:00", "versions": {"gsrcl": "0.1.0"},
    }
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "manifest.json").write_text(json.dumps(good))
    newer = dict(good, format_version=99)
    (tmp_path / "newer").mkdir()
    (tmp_path / "newer" / "manifest.json").write_text(json.dumps(newer))
    rows = {r["name"]: r for r in list_references(tmp_path)}
    assert rows["good"]["method"] == "afrcl" and rows["good"]["n_genes"] == 3
    assert "not valid JSON" in rows["broken"]["error"]
    assert "newer gsrcl" in rows["newer"]["error"]
    assert main(["references", "-mp", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "good: afrcl" in out and "broken: not usable" in out


def test_missing_refdir_is_one_line_and_code_145(tmp_path, capsys):
    code = main(["references", "-mp", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 145 and len(err) == 1 and "does not exist" in err[0]


def test_usage_error_exits_2():
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def test_package_functions_stay_callable_after_their_modules_are_imported():
    import importlib

    import gsrcl

    importlib.import_module("gsrcl.training")
    importlib.import_module("gsrcl.annotation")
    assert callable(gsrcl.train) and callable(gsrcl.annotate)
    assert gsrcl.train.__module__ == "gsrcl.training" and gsrcl.annotate.__module__ == "gsrcl.annotation"
