"""Accuracy benchmark: GsRCL and AF-RCL against the tools users would pick instead, on the same data.

Protocol (Abdelaal et al. 2019, Genome Biol 20:194, and their ``evaluate.R``):

- for a ``cross`` task with ``genes: "shared"`` (the config's default in ``benchmarks/tasks.json``), every
  method is trained on the reference genes the query has (matched by ``gsrcl.genes``), as Abdelaal et al. used
  the genes common to both datasets in their inter-dataset experiments (and as ``gsrcl train --genes-from``);
  with ``genes: "reference"``, on all the reference's genes. The query is aligned to the training genes
  (genes it lacks are zero columns; CellTypist instead leaves them out of its decision, as its own
  ``annotate``);
- ``macro_f1`` and ``accuracy`` are over the query cells whose type the reference has ("known" cells); an
  ``Unassigned`` known cell counts as wrong; cells of types the reference lacks ("unseen") are left out of them;
- ``median_f1`` / ``pct_unassigned`` as Abdelaal et al.: per-class F1 on the confusion table of the known cells
  without the ones predicted Unassigned (or any other rejection name their evaluator knows), the median over the
  known types present in the query, and the share of known cells left unassigned;
- tasks with unseen types also get ``unseen_auroc``, the AUROC of each method's confidence score for telling known
  cells (positive class) from unseen ones, and ``unseen_unassigned``, the share of unseen cells called Unassigned
  at the method's default cut-off;
- cross-validation tasks pool the predictions of the folds (every cell is predicted once) before scoring;
  per-fold macro-F1 values are kept too.

Methods: ``gsrcl`` / ``afrcl`` (``gsrcl.train`` default preset, ``gsrcl.annotate`` at p = 0.5, confidence
``conf_score``; also scored: GsRCL's ``max_raw_score``, ``novelty_score``, ``unseen_score_cell`` = novelty_score /
conf_score and ``unseen_score``, its mean over each cell's 15 nearest query cells), ``svm`` and ``svm_rejection``
(Abdelaal's LinearSVC on log1p counts, and LinearSVC in ``CalibratedClassifierCV(cv=3)`` rejecting below 0.7),
``celltypist`` (CellTypist's logistic regression, rebuilt with scikit-learn; see `harness.baselines`); on tasks with
unseen types the baselines' confidence is also scored averaged over the same query neighbourhoods
(``conf_neighbourhood``).

Each task x method runs in a fresh worker process, so that its timings and peak memory are its own (see
`harness.measure`).

This package is developer tooling beside the installed ``gsrcl`` package, which it uses through its public API.
The scripts of ``benchmarks/`` import it as ``harness``: run as ``python benchmarks/<script>.py``, their folder is
the first entry of ``sys.path``. Its modules, one idea each:

- `harness.tasks`: the task config (``benchmarks/tasks.json``) and the (reference, query) pairs of a task;
- `harness.inputs`: the matrices the baselines are given (log1p, log1p CP10k, aligned to the training genes);
- `harness.metrics`: macro-F1, accuracy, Abdelaal et al.'s median F1, unseen-type AUROC, confusion table;
- `harness.prediction`: what every method's ``predict`` returns;
- `harness.baselines`: linear SVM, SVMrejection and CellTypist-style logistic regression;
- `harness.ours`: GsRCL and AF-RCL through ``gsrcl.train`` and ``gsrcl.annotate``;
- `harness.methods`: the method names and `harness.methods.make_method`;
- `harness.measure`: wall time and peak memory of one step; the software and machine of a run;
- `harness.runner`: one method on one task (in its own process), its scores, and the whole run;
- `harness.report`: ``accuracy.json``, ``accuracy.md``, ``accuracy.png`` and the confusion pictures;
- `harness.files`: atomic writes of text and JSON.
"""

#: The protocol above, recorded in every ``accuracy.json``.
PROTOCOL = __doc__.split("Methods:")[0].strip()
