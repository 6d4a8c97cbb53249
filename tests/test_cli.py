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


@pytest.fixture(scope="module")
def guide(repo_root) -> str:
    return (repo_root / "docs" / "guide.md").read_text()


def exit_code_table(readme: str, guide: str) -> dict[int, tuple[str, str]]:
    """README's "Exit codes" table (code, meaning) with the guide's earlier codes: code -> (was, meaning)."""
    rows = re.findall(r"^\| (\d+) \| ([^|\d].*?) \|$", readme, flags=re.M)
    earlier = re.findall(r"^\| (\d+) \| (\d+|new) \|$", guide, flags=re.M)
    meanings = {int(code): meaning for code, meaning in rows}
    was = {int(code): old for code, old in earlier}
    assert len(meanings) == len(rows) and len(was) == len(earlier), "a code is listed twice"
    assert set(meanings) == set(was), "the README and the guide list other codes"
    return {code: (was[code], meaning) for code, meaning in meanings.items()}


def test_every_exit_code_is_documented_once_with_its_meaning_and_old_code(readme, guide):
    table = exit_code_table(readme, guide)
    codes = {cls.exit_code for cls in errors.ALL_ERRORS}
    assert codes <= set(table), sorted(codes - set(table))
    for cls in errors.ALL_ERRORS:
        was, meaning = table[cls.exit_code]
        assert meaning.startswith(cls.what), (cls.__name__, meaning)
        assert was == ("new" if cls.old_code is None else str(cls.old_code)), (cls.__name__, was)
    assert len(codes) == len(errors.ALL_ERRORS), "two error classes share an exit code"
    for code in (0, errors.EXIT_INTERNAL, errors.EXIT_USAGE, errors.EXIT_INTERRUPTED):
        assert code in table
    # every code of the table is one gsrcl can give
    assert set(table) == codes | {0, errors.EXIT_INTERNAL, errors.EXIT_USAGE, errors.EXIT_INTERRUPTED}


def test_documented_exit_codes_are_below_126_and_not_python_or_argparse_codes():
    """A code of 128 + N reads as "killed by signal N" to shells and workflow managers; 126/127 mean "not
    executable"/"not found"; 1 is Python's uncaught exception and 2 argparse's usage error."""
    for cls in errors.ALL_ERRORS:
        assert 3 <= cls.exit_code < 126, (cls.__name__, cls.exit_code)
    assert errors.GsrclError in errors.ALL_ERRORS  # raised as it is for a bad setting: its code is documented
    assert errors.OutOfMemoryError.exit_code not in (errors.EXIT_INTERNAL, errors.EXIT_USAGE)
    assert errors.EXIT_INTERRUPTED == 128 + 2  # Ctrl-C keeps the signal's own code (SIGINT)


def test_interrupt_keeps_130_and_out_of_memory_has_its_own_code(monkeypatch, capsys):
    import gsrcl.cli.references as references

    def raising(exc):
        def run(args):
            raise exc
        return run

    for exc, code in ((KeyboardInterrupt(), 130), (MemoryError(), errors.OutOfMemoryError.exit_code)):
        monkeypatch.setattr(references, "run", raising(exc))
        assert main(["references", "-mp", "."]) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("gsrcl references: "), err
    assert errors.OutOfMemoryError.exit_code != 1


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
        "genes": ["A", "B", "C"], "cell_types": ["T", "B"], "values": {"expected": "counts"}, "model": {}, "arrays": {},
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


def test_missing_refdir_is_one_line_and_the_reference_code(tmp_path, capsys):
    code = main(["references", "-mp", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == errors.InvalidReferenceError.exit_code == 81 and len(err) == 1 and "does not exist" in err[0]


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


def test_main_called_from_python_leaves_gsrcl_logging_as_it_found_it(tmp_path):
    import logging

    logger = logging.getLogger("gsrcl")
    before = (list(logger.handlers), logger.level, logger.propagate)
    main(["references", "-mp", str(tmp_path), "-q"])
    assert (list(logger.handlers), logger.level, logger.propagate) == before
