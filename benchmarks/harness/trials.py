"""What the paired-trial benchmarks share (``gene_svm_pool.py``, ``afrcl_shift.py``, ``majority_voting.py``): their
common flags, ``--set KEY=VALUE`` settings (also ``seeds.py``'s), and their entries accumulated in ``OUT/STEM.json`` and ``OUT/STEM.md`` (a rerun of an entry replaces
it)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from .files import write_json, write_text
from .measure import now

RESULTS = Path(__file__).resolve().parents[1] / "results"


def trial_parser(doc: str, stem: str) -> argparse.ArgumentParser:
    """The flags every trial script takes: ``--tasks``, ``--seeds``, ``--config``, ``--data``, ``--out``."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--tasks", required=True, help="comma-separated task names of the config")
    ap.add_argument("--seeds", default="1111", help="comma-separated seeds (default 1111)")
    ap.add_argument("--config", default=None, help="task config (default benchmarks/tasks.json)")
    ap.add_argument("--data", default=None, help="data folder (default: the config's)")
    ap.add_argument("--out", default=str(RESULTS), help=f"folder of {stem}.{{json,md}} (default benchmarks/results)")
    return ap


class TrialLog:
    """The entries of one trial script in ``out/stem.json``, with ``markdown(results)`` written beside them."""

    def __init__(self, out: str | Path, stem: str, markdown: Callable[[dict], str]):
        self.out, self.stem, self.markdown = Path(out), stem, markdown
        path = self.out / f"{stem}.json"
        self.results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"entries": {}}

    def add(self, key: str, entry: dict[str, Any]) -> None:
        """Record ``entry`` (with the time and the command) under ``key`` and rewrite both files."""
        self.results["entries"][key] = {**entry, "finished": now(), "command": " ".join(sys.argv)}
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / f"{self.stem}.json", self.results)
        write_text(self.out / f"{self.stem}.md", self.markdown(self.results))


def parse_settings(pairs) -> dict:
    """``KEY=VALUE`` pairs as a dict, each value read as JSON (true, 370, "x") or else kept as text."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, not {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
