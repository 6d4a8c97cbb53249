"""Accuracy benchmark of GsRCL / AF-RCL against linear SVM, SVMrejection and CellTypist-style logistic regression.

Same code and flags as ``gsrcl benchmark`` (see ``gsrcl.benchmark``); tasks in ``benchmarks/tasks.json``, results in
``benchmarks/results/accuracy.{md,json,png}``. Examples::

    .venv/bin/python benchmarks/accuracy.py --list
    .venv/bin/python benchmarks/accuracy.py --methods svm,svm_rejection,celltypist
    .venv/bin/python benchmarks/accuracy.py --tasks xin_to_wang_all --methods gsrcl --merge
"""

import sys

from gsrcl.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
