"""GsRCL: Gaussian-noise contrastive learning (SimCLR / NT-Xent), one binary RBF SVM per cell type (METHODS §3).

Two views of every cell per step, each its log1p values plus fresh N(0, 1) noise on every gene; NT-Xent with
τ = 0.07 (the original's sum of the two directions' means). The loss uses no labels: labels only choose the
checkpoints. One-vs-rest: every ``val_every`` epochs the training and validation cells are encoded and, for
each cell type, a binary classifier on the representation is scored on the validation cells (MCC); each type
keeps the checkpoint that scored best for it and gets its own binary RBF SVC with Platt probabilities (C and
gamma by stratified CV over the paper grid, MCC) on that checkpoint's embeddings. ``predict_scores`` gives
each type's positive-class probability, un-normalised; ``predict_proba`` divides them by their row sum, as the
original. A type without validation cells (a rare class) takes the checkpoint chosen by most types.

The original trains one encoder per binary task, but the encoder never sees the labels, so those K runs differ
only by their random seeds. We train it ONCE and choose each task's checkpoint from that run, storing only the
distinct checkpoints (K times less training, typically 2-4 stored encoders for 5 types).
``independent_encoders=True`` trains one encoder per task (seed + task index), as the original. It did not
change accuracy in the benchmark: test macro-F1 0.983 against 0.985 for the shared run on fold 0 (2048/1024
width), 0.967 against 0.967 on fold 2 (4096/2048), for 3.2x and 2.5x the CPU time (567 s against 180 s,
1,294 s against 512 s) and one stored encoder per type.

Checkpoint ties: the original keeps the FIRST best checkpoint, which on easy data is the encoder after one
step. We keep the LATER one on ties (``ties="later"``, the default preset); the ``paper`` preset keeps the
published rule (pass ``ties="later"`` to fix it there too).

Presets
-------
``paper``: as published (§3.3, §3.6): encoder genes -> 4096 -> 4096 -> 4096 -> 2048, head 2048 -> 512 -> 128,
BatchNorm only when the training cells outnumber the batch size (§5.16: i.e. almost never), Adam lr 1e-4,
weight decay 1e-6, batch 8192 (full batch: one step per epoch), unshuffled, 3001 epochs (loop 0..3000),
validation after epochs 0, 50, 100, ... by the original's full grid search, no early stopping, first on ties;
each SVM on the training cells only.

``default`` (measured with ``benchmarks/train.py`` on mouse_immune_actinn_1k, 5-fold CV, 640 training + 160
validation cells per fold, 1 thread on a shared 2-core machine):

- the published encoder and head (genes -> 4096 -> 4096 -> 4096 -> 2048, 2048 -> 512 -> 128). Narrower
  encoders cost accuracy: at 20 epochs on fold 0 the validation MCC (mean of the 5 one-vs-rest tasks) was
  0.920 for the 1024/512 width of the AF-RCL paper's re-run, 0.973 for 2048/1024 and 0.985 for 4096/2048
  (test macro-F1 0.983 / 1.000 / 1.000), and over the 5 folds 2048/1024 gave macro-F1 0.982 against 0.989
  for 4096/2048. The width is the cost: 1.6 / 3.5 / 9.3 s per epoch of 640 cells with one thread;
- minibatches of 128, shuffled, at the published lr 1e-4, instead of one full-batch step per epoch: the
  same compute per epoch with 5x more Adam steps. By the published rule (BatchNorm when the training cells
  outnumber the batch) BatchNorm is then on. On fold 0 (1024/512 width) 60 full-batch epochs gave test
  macro-F1 0.969 and 40 minibatch epochs 0.992;
- checkpoints scored by ``gsrcl.svm.quick_score`` every 5 epochs; early stopping once the mean validation
  MCC has not improved for 3 validations, after at least 20 and at most 100 epochs. Both counts are capped in
  optimiser steps (``val_steps`` 35, ``min_steps`` 140: the 5 and 20 epochs of 800 training cells), so a large
  reference, which takes many more steps per epoch, validates every epoch and may stop after 3 (8,000 training
  cells: 63 steps per epoch); up to 800 training cells nothing changes (four folds stopped after
  21 epochs, one after 46; at 2048/1024, waiting 6 validations after at least 30 epochs left fold 2's test
  F1 unchanged);
- later checkpoint on ties; ties of an SVM's C/gamma grid on CV MCC broken towards the largest C, as AF-RCL's
  default (``svm_ties``; the five folds' test macro-F1 stayed 1.000, 1.000, 0.967, 0.984, 0.992). AF-RCL's
  averaged checkpoint (``average_checkpoints``) is available but off: on fold 2 it left the test macro-F1 at
  0.967, and the mean's running sum (kept on disk, as checkpoints) costs a write of the 485 MB weights per
  validation; each SVM on the training and validation cells (as AF-RCL's default, where that
  measured better); log1p CP10k input (``library_size`` 10,000, as AF-RCL's default): in the accuracy
  benchmark (1 thread) Xin -> Wang went from 0.963 to 1.000, the 5-line plates from 0.996 to 1.000,
  pbmc3k -> Kang from 0.896 to 0.949, Kang -> pbmc3k from 0.959 to 0.985 (unseen-type AUROC of conf_score
  0.651 -> 0.835), and CV fold 2 here from 0.967 to 0.976; for large references the scoring classifiers use a stratified 2,000 training cells and
  the SVMs' C/gamma grid a stratified 3,000 (then fitted on all cells); during training, checkpoints wait in
  a temporary folder instead of memory (485 MB each at this width; ~0.5 s to write one);
- the classifiers (checkpoint scoring, the per-type SVMs, every query) see each cell's encoder output scaled to
  unit length (``normalize_embedding``, as AF-RCL's default): NT-Xent compares projections only by their cosine,
  so the length of the output is left free by training and varies on a query from another study. Paired replay
  (the same encoders, only the SVMs refitted): pbmc3k -> Kang seed 1112 0.9125 -> 0.9298 (NK 0.837 -> 0.878,
  CD14 monocytes 0.893 -> 0.913), Kang donors seed 1111 0.9883 -> 0.9879. Accuracy benchmark (seed 1111, 1
  thread, this machine): pbmc3k -> Kang 0.9366 -> 0.9457, Kang donors 0.9877 -> 0.9873, Kang -> pbmc3k 0.9824
  (0.9845 recorded on another machine before), Xin -> Wang and CellBench 1.000 both;
- AF-RCL's averaged checkpoint as every task's model was tried on pbmc3k -> Kang seed 1112: 0.9125 -> 0.9057 on
  the plain output, 0.9298 -> 0.9284 on unit-length rows; not taken.
- tried on Kang donors (seed 1111, 1 thread; this run of the default gave 0.9879, NK cells F1 0.971, 12 of 244
  NK cells called CD4 T; ``benchmarks/seeds.py --set``), not taken: AF-RCL's gene scaling (``scale_genes``: each
  gene divided by its sd + 0.1 before the noise, so the noise is as strong against every gene) 0.9861, its
  validation MCC lower from the first epoch (NK-vs-rest 0.906 against 0.954); a longer minimum (``min_steps`` 370
  instead of 140: 10 epochs instead of 4 on Kang donors, 20 instead of 9 on pbmc3k) 0.9864 on Kang donors and
  0.9481 against 0.9457 on pbmc3k -> Kang. On the saved encoders of the default run (only the per-type SVMs
  refitted; scratch replay, not in git) the classifier stage moved Kang donors by at most 0.001 (balanced class
  weights 0.9885, C=10 or 100 without the grid 0.9890), while a 15-NN on the same embedding reached 0.953 (NK
  0.856): the representation, not the SVMs, holds NK cells back;
- each type's SVM may take the model input (log1p CP10k genes) instead of an encoder's output
  (``gene_svm``): after training, a classifier on the genes is scored on the validation cells as the
  checkpoints are (``gsrcl.svm.quick_score`` on the same training cells), and a type whose gene MCC is higher
  than its best checkpoint's gets its RBF SVM (same grid and Platt probabilities) on the genes. The original
  tool's references hold such types (an SVM without an encoder, applied to the log matrix; METHODS §2), and the
  papers' baseline SVM is this classifier; the manifest's validation record says which input each type took
  (``input``, ``encoder_score``, ``gene_score``). Kang donors (seed 1111): 0.9873 -> 0.9947, all four types on
  the genes (the gene SVMs alone, in a scratch run, gave the same 0.9947; NK-vs-rest validation MCC 0.975 on
  the genes); in the accuracy benchmark (seed 1111, 1 thread) also Kang -> pbmc3k 0.9824 -> 0.9897 (unseen-type
  AUROC of conf_score 0.787 -> 0.837, of unseen_score 0.880 -> 0.877), pbmc3k -> Kang 0.9457 -> 0.9506, mouse
  immune CV 0.9905 -> 0.9921, Xin -> Wang and CellBench 1.000 both. The encoder is still trained, and kept for
  the embedding (t-SNE) when every type is on the genes. A reference whose SVM cells x genes exceed 50M entries
  (``DENSE_GENES_MAX``: the dense copy the gene SVMs need, 400 MB) gets no gene SVMs (the manifest's
  ``gene_svm`` says false): on 10,000 cells x 19,371 genes the sparse path spent over 30 min in them;
- ``gene_svm="pool"`` (the default since 2026-12-06; ``True`` keeps the choice above) keeps both SVMs for every
  type and takes the mean of their probabilities. The choice above is a coin toss where the two validation MCCs
  tie, and on pbmc3k -> Kang seed 1114 it kept the encoder for CD14 monocytes and NK cells (MCC 0.975 and 0.948 on
  both inputs), whose encoder called 474 of Kang's CD14 monocytes FCGR3A monocytes (pooled 264). Paired comparison
  (``benchmarks/gene_svm_pool.py``: one model per task and seed, the rules are that model with some SVMs left
  out; ``benchmarks/results/gene_svm_pool.md``), macro-F1 encoder / genes / the choice / pool: pbmc3k -> Kang
  seeds 1111-1115 0.9473 / 0.9510 / 0.9504 / 0.9597, 0.9322 / 0.9502 / 0.9520 / 0.9505, 0.9387 / 0.9491 / 0.9495
  / 0.9498, 0.9052 / 0.9599 / 0.9052 / 0.9401, 0.9373 / 0.9580 / 0.9537 / 0.9531: pool 0.9506 on the mean (the
  choice 0.9422, the best baseline 0.9505); Kang -> pbmc3k 0.9824 / 0.9897 / 0.9897 / 0.9896; Kang donors
  0.9879 / 0.9947 / 0.9947 / 0.9920 (seeds 1111, 1112, 1114 and Kang donors are scratch replays of the same
  computation from 2026-12-04, before the script). It fits a gene SVM for every type (8 on PBMC) where the choice
  fits one only for the types it moves. Their C/gamma grid and their final fit (Platt probabilities: 6 libsvm fits)
  run on one matrix of squared distances between the cells (``gsrcl.svm.fit_svc(distances=True)``: the same CV
  scores and the same model, tested) instead of libsvm's kernel evaluations afresh in each of the 86 fits, which
  cost O(genes) each: on 800 mouse immune cells x 19,371 genes, 0.7-1.2 s per type against 241-423 s
  (``benchmarks/gene_svm_grid.py``, both in one run, ``benchmarks/results/gene_svm_grid.json``);
Result: 5-fold macro-F1 0.9903 (linear SVM on log1p counts 0.9909, ratio 0.999; per fold 1.000, 0.991,
0.976, 0.992, 0.992; 0.9886 on log1p counts: 1.000, 1.000, 0.967, 0.984, 0.992), 4-10 min per fold with one
thread beside other jobs (4-7 min of CPU); before that 6-20 min per fold with one thread on the busy machine (4-8.5 min of CPU), peak
memory 3.4-4.3 GB before checkpoints could wait on disk; all 1,000 cells with 2 threads: 51 epochs in
8.5 min, peak memory 3.4 GB. Prediction with 2 threads and 2 distinct checkpoints (each
4096-wide encoder costs ~84 MFLOP per cell): 1,789 / 2,837 / 3,598 cells/s on 10k / 100k / 1M cells
(``benchmarks/predict.py``). 10,000 resampled cells
(8,000 training, 63 steps per epoch), with the step-counted schedule: 7 epochs, 3 distinct checkpoints,
15 min wall alone (904 s) and 20 min (1,221 s, 1,736 s of CPU) beside another 2-thread job, peak 3.8 GiB
(``benchmarks/train.py --method gsrcl --cells 10000 --cv 0 --threads 2 --predict-cells 0``); counted in
epochs it was ~50 min. The ``paper`` schedule measures 7.0 s per full-batch epoch (2 threads) and 22 s per grid
validation: ~6 h per run, and ~31 h as published (one run per cell type), against ~4.7 h per cell type for
the original code on this kind of machine.

The noise makes the first layer's input dense: that product (cells x genes x width, for both views, forward
and for the weight gradient) is the cost centre, which is why the width matters most.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any

import numpy as np
import torch

from ..nn import Encoder, ProjectionHead, nt_xent
from ..svm import DISTANCE_CELLS_MAX, squared_distances
from ._training import (
    BLOCK,
    GENE_SCALE_KEY,
    CheckpointStore,
    EstimatorBase,
    Patience,
    WeightAverage,
    step_schedule,
    adam,
    as_csr,
    better,
    check_svc,
    encode,
    fit_final_svc,
    fit_inputs,
    jsonable,
    prefixed,
    refresh_batch_norm,
    resolve_device,
    split_arrays,
    stratified_subset,
    svc_params,
    torch_session,
    validation_score,
    vstack,
)

log = logging.getLogger("gsrcl.methods.gsrcl")

MEAN_EPOCH = 0  # the checkpoint key of the averaged weights (epochs count from 1)
GENES = -1  # task_encoder_ of a task whose SVM takes the model input itself (``gene_svm``)
# the gene SVMs' cells as a dense copy (libsvm's dense path fitted 3.5x faster than its sparse one on 3,000 Kang
# cells x 2,500 genes, 17% non-zero, with the same decision values); a larger reference gets no gene SVMs
DENSE_GENES_MAX = 50_000_000

_COMMON = {
    "ensemble": 1,  # models trained with different seeds whose scores are pooled (gsrcl.methods.ensemble)
    "pool": "mean",  # how the ensemble's scores are pooled: mean or geometric
    "input_dropout": 0.0,
    "temperature": 0.07,
    "noise_std": 1.0,
    "weight_decay": 1e-6,
    "svm_cv": 5,
    "checkpoint_memory_mb": 0,  # checkpoints beyond this wait in a temporary folder during training (GsRCL on
    # 10,000 cells peaked at 3.9 GiB with one 485 MB checkpoint in memory)
    "svm_grid_cells": None,  # grid-search each SVM's C and gamma on at most this many cells (None: all)
    "score_cells": None,  # training cells of the classifiers that score each checkpoint (None: all)
    "threads": None,
    "validation_size": 0.2,
    "block": BLOCK,
    "average_checkpoints": False,  # also score the mean of the checkpoints validated after the first
    # each cell scaled to this total before log1p (gsrcl.values.log1p_normalized; None: log1p of the counts,
    # as the papers); recorded in the reference's values and applied to every query
    "library_size": None,
    # the classifiers see each cell's encoder output scaled to unit length (checkpoint scoring, SVMs, queries)
    "normalize_embedding": False,
    # each gene divided by (its standard deviation over the reference cells + 0.1), values clipped at 10, before
    # the noise is added (as AF-RCL's scale_genes); stored with the model and applied to every query
    "scale_genes": False,
    # per cell type, an RBF SVM on the model input (the genes) too: True keeps it instead of the encoder's when it
    # scores higher on the validation cells (the original tool's references hold such types: an SVM without
    # encoder); "pool" keeps both for every type and takes the mean of their probabilities
    "gene_svm": False,
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        **_COMMON,
        "hidden": (4096, 4096, 4096),
        "out": 2048,
        "head": (512, 128),
        "batch_norm": "auto",  # on only if the training cells outnumber batch_size (METHODS §5.16)
        "lr": 1e-4,
        "batch_size": 8192,
        "shuffle": False,
        "epochs": 3001,
        "val_every": 50,
        "val_steps": None,
        "min_steps": None,
        "selection": "grid",
        "patience": None,
        "min_epochs": 0,
        "ties": "first",
        "svm_cells": "train",
        "svm_ties": "first",  # the original: GridSearchCV's first best setting (the smallest C on ties)
    },
    "default": {
        **_COMMON,
        "hidden": (4096, 4096, 4096),
        "out": 2048,
        "head": (512, 128),
        "batch_norm": "auto",
        "lr": 1e-4,
        "batch_size": 128,
        "shuffle": True,
        "epochs": 100,
        "val_every": 5,
        # in steps for large references: 35 / 140 steps are the 5 / 20 epochs of 800 training cells
        "val_steps": 35,
        "min_steps": 140,
        "selection": "quick",
        "patience": 3,
        "min_epochs": 20,
        "ties": "later",
        "svm_cells": "train+val",
        "svm_ties": "largest_c",  # settings tied on CV MCC: the largest C (gsrcl.svm.fit_svc)
        "library_size": 10_000,  # log1p CP10k: depth differences between batches taken out
        "normalize_embedding": True,  # the classifiers see unit-length embeddings (see the module docstring)
        "average_checkpoints": False,  # measured: no gain on fold 2 (see the module docstring)
        "svm_grid_cells": 3000,
        "score_cells": 2000,
        "gene_svm": "pool",  # measured: see the module docstring
    },
}


class GsRCL(EstimatorBase):
    """GsRCL as an estimator: ``fit(X, y, X_val, y_val)`` on log1p CSR input; ``predict_scores`` (n, K) raw
    one-vs-rest probabilities, ``predict_proba`` the same divided by the row sum."""

    scores_sum_to_one = False  # whether predict_scores rows are a distribution over the types
    method_name = "gsrcl"
    PRESETS = PRESETS

    def __init__(self, preset: str = "default", epochs: int | None = None, seed: int = 1111, device: str = "cpu",
                 quiet: bool = False, independent_encoders: bool = False, **overrides):
        super().__init__(preset=preset, epochs=epochs, seed=seed, device=device, quiet=quiet, **overrides)
        self.independent_encoders = bool(independent_encoders)
        if self.params["gene_svm"] not in (False, True, "pool"):
            raise ValueError(f"gene_svm is false, true or 'pool', not {self.params['gene_svm']!r}")

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters, "independent_encoders": self.independent_encoders}

    # --- training ------------------------------------------------------------------------------------
    def fit(self, X, y, X_val=None, y_val=None) -> "GsRCL":
        p = self.params
        device = resolve_device(self.device)
        X, y, X_val, y_val = fit_inputs(X, y, X_val, y_val, p["validation_size"], self.seed)
        X, X_val = self._fit_gene_scale(X, X_val)
        self.cell_types = sorted(map(str, np.unique(y)))
        K = len(self.cell_types)
        t0 = time.perf_counter()
        batch_norm = X.shape[0] > p["batch_size"] if p["batch_norm"] == "auto" else bool(p["batch_norm"])
        self.batch_norm_ = batch_norm
        runs = [list(range(K))] if not self.independent_encoders else [[k] for k in range(K)]
        choice: dict[int, tuple[int, int]] = {}
        scores: dict[int, float | None] = {}
        histories = []
        with CheckpointStore(p["checkpoint_memory_mb"] << 20) as store:
            for r, tasks in enumerate(runs):
                ch, sc, hist = self._train_run(X, y, X_val, y_val, tasks, r, batch_norm, device, store, choice)
                choice.update(ch)
                scores.update(sc)
                histories.append(hist)
            train_seconds = time.perf_counter() - t0
            n_svm = X.shape[0] + (X_val.shape[0] if p["svm_cells"] == "train+val" else 0)
            genes_fit = n_svm * X.shape[1] <= DENSE_GENES_MAX
            if p["gene_svm"] and not genes_fit:
                log.info("gsrcl: %d cells x %d genes is too large for the gene SVMs (gene_svm): every type keeps "
                         "its encoder", n_svm, X.shape[1])
            pool = p["gene_svm"] == "pool" and genes_fit
            use_genes = bool(p["gene_svm"]) and genes_fit and (pool or len(y_val))
            gene_scores = self._score_genes(X, y, X_val, y_val) if use_genes and len(y_val) else {}
            if pool:
                on_genes, pooled = set(), set(range(K))
            else:
                on_genes, pooled = {k for k, s in gene_scores.items() if scores[k] is None or s > scores[k]}, set()
            self._build(store, choice, on_genes, pooled, X, y, X_val, y_val, batch_norm, device)
        history = histories[0] if len(histories) == 1 else {"runs": histories}
        history["seconds"] = time.perf_counter() - t0
        history["seconds_encoder"] = train_seconds
        self.history_ = history
        self.validation_ = jsonable({
            "metric": "mcc",
            "selection": p["selection"],
            "cells": int(len(y_val)),
            "ties": p["ties"],
            "batch_norm": batch_norm,
            "independent_encoders": self.independent_encoders,
            "score": _mean([gene_scores[k] if k in on_genes else scores[k] for k in range(K)]),
            "tasks": {
                self.cell_types[k]: {
                    "score": gene_scores[k] if k in on_genes else scores[k],
                    "input": "genes" if k in on_genes else "encoder+genes" if k in pooled else "encoder",
                    "encoder_score": scores[k], "gene_score": gene_scores.get(k),
                    "epoch": None if k in on_genes else _epoch_name(choice[k][1]),
                    "run": None if k in on_genes else choice[k][0],
                    "encoder": None if k in on_genes else self.task_encoder_[k],
                    "svm": svc_params(self.svcs_[k])}
                for k in range(K)
            },
            "encoders": [{"run": r, "epoch": _epoch_name(e)} for r, e in self.checkpoints_],
            "epochs_run": [h["epochs_run"] for h in histories],
            "stopped_early": [h["stopped_early"] for h in histories],
            "svm_cells": p["svm_cells"] if len(y_val) else "train",
            "gene_svm": bool(use_genes),
        })
        score = self.validation_["score"]
        log.info("gsrcl: %d distinct checkpoint(s) for %d tasks (%d with their SVM on the genes, %d pooling both), "
                 "mean validation MCC %s, %.1f s", len(self.encoders_), K, len(on_genes), len(pooled),
                 "n/a" if score is None else f"{score:.3f}", history["seconds"])
        return self

    def _score_genes(self, X, y, X_val, y_val) -> dict[int, float]:
        """Each task's validation MCC for a classifier on the model input itself (``gene_svm``), scored as the
        checkpoints are (the same training cells, classifier and validation cells)."""
        p = self.params
        sub = stratified_subset(y, p["score_cells"], self.seed)
        X_score, y_score = (X, y) if sub is None else (X[sub], y[sub])
        X_score, X_val = X_score.toarray(), X_val.toarray()  # dense: see DENSE_GENES_MAX
        out = {}
        for k, t in enumerate(self.cell_types):
            target = (y_val == t).astype(np.int64)
            if target.any():
                out[k] = validation_score(p["selection"], X_score, (y_score == t).astype(np.int64), X_val, target,
                                          self.seed, p["svm_cv"])
        return out

    def _build(self, store, choice, on_genes, pooled, X, y, X_val, y_val, batch_norm, device) -> None:
        """One encoder per distinct chosen checkpoint; each task's binary SVM on its checkpoint's embeddings, or
        on the model input for the tasks ``on_genes``; the tasks ``pooled`` get both (``gene_svcs_``). The
        embedding (t-SNE) keeps an encoder even when every task is on the genes: the checkpoint chosen by most
        tasks."""
        p = self.params
        K = len(self.cell_types)
        used = [choice[k] for k in range(K) if k not in on_genes]
        if not used:
            votes = Counter(choice.values())
            used = [max(votes, key=lambda key: (votes[key], key))]
        keys = sorted(set(used))
        if p["svm_cells"] == "train+val" and len(y_val):
            X_svm, y_svm = vstack(X, X_val), np.concatenate([y, y_val])
        else:
            X_svm, y_svm = X, y
        self.encoders_, self.svcs_, self.gene_svcs_ = [], [None] * K, [None] * K

        def fit_task(k, inputs, distances=False):
            target = (y_svm == self.cell_types[k]).astype(np.int64)
            return fit_final_svc(inputs, target, p["svm_cv"], self.seed + k, p["svm_grid_cells"], p["svm_ties"],
                                 distances)

        with torch_session(self.seed, p["threads"], device):
            if on_genes or pooled:
                genes = X_svm.toarray()
                # one matrix of squared distances for every type's gene SVM (it does not depend on the labels)
                distances = squared_distances(genes) if len(genes) <= DISTANCE_CELLS_MAX else True
                for k in sorted(on_genes):
                    self.svcs_[k] = fit_task(k, genes, distances)
                for k in sorted(pooled):
                    self.gene_svcs_[k] = fit_task(k, genes, distances)
                del genes, distances
            for key in keys:
                enc = self._new_encoder(X.shape[1], batch_norm, device)
                enc.load_state_dict(store.get(key))
                enc.eval()
                emb = self._represent(encode(enc, X_svm, device, p["block"]))
                self.encoders_.append(enc.cpu())  # prediction runs on the CPU
                for k in range(K):
                    if k not in on_genes and choice[k] == key:
                        self.svcs_[k] = fit_task(k, emb)
                store.retain(set(used) - {key})
        self.task_encoder_ = [GENES if k in on_genes else keys.index(choice[k]) for k in range(K)]
        self.checkpoints_ = keys
        self._set_positive_columns()

    def _new_encoder(self, n_genes: int, batch_norm: bool, device) -> Encoder:
        p = self.params
        return Encoder(n_genes, p["hidden"], p["out"], batch_norm=batch_norm,
                       input_dropout=p["input_dropout"]).to(device)

    def _train_run(self, X, y, X_val, y_val, tasks, run, batch_norm, device, store, chosen):
        """Train one encoder; keep in ``store`` the checkpoints chosen by ``tasks``, keyed (run, epoch), next to
        those ``chosen`` by earlier runs; return each task's key and score, and the history."""
        p = self.params
        seed = self.seed + run
        n = X.shape[0]
        with torch_session(seed, p["threads"], device):
            rng = np.random.default_rng(seed)
            encoder = self._new_encoder(X.shape[1], batch_norm, device)
            head = ProjectionHead(p["out"], p["head"][:-1], p["head"][-1], batch_norm=batch_norm).to(device)
            opt = adam(list(encoder.parameters()) + list(head.parameters()), p["lr"], p["weight_decay"], device)
            bs = min(int(p["batch_size"]), n) if p["batch_size"] > 0 else n
            steps = math.ceil(n / bs)  # the original's loader keeps the last, partial batch
            sub = stratified_subset(y, p["score_cells"], seed)  # the validation classifiers' cells
            X_score, y_score = (X, y) if sub is None else (X[sub], y[sub])
            targets = {k: (y_score == self.cell_types[k]) for k in tasks}
            val_targets = {k: (y_val == self.cell_types[k]) for k in tasks}
            scorable = [k for k in tasks if val_targets[k].any()]
            best: dict[int, float | None] = {k: None for k in tasks}
            best_epoch: dict[int, int | None] = {k: None for k in tasks}
            val_every, min_epochs = step_schedule(p, steps)
            patience = Patience(p["patience"], min_epochs)
            stopped_early = False
            history = {"loss": [], "validation": [], "seconds_steps": 0.0, "seconds_validation": 0.0}
            last_mean = float("nan")
            # the running sum waits on disk when checkpoints do (485 MB at the published width)
            averaged = WeightAverage(on_disk=p["checkpoint_memory_mb"] == 0) if p["average_checkpoints"] else None

            def score_encoder() -> dict[int, float]:
                """Each scorable task's validation MCC for the encoder's current weights."""
                emb_tr = self._represent(encode(encoder, X_score, device, p["block"]))
                emb_val = self._represent(encode(encoder, X_val, device, p["block"]))
                return {k: validation_score(p["selection"], emb_tr, targets[k].astype(np.int64), emb_val,
                                            val_targets[k].astype(np.int64), seed, p["svm_cv"]) for k in scorable}

            bar = self._progress(p["epochs"])
            for epoch in range(p["epochs"]):
                encoder.train()
                head.train()
                t_epoch = time.perf_counter()
                order = rng.permutation(n) if p["shuffle"] else np.arange(n)
                total = 0.0
                for s in range(steps):
                    idx = order[s * bs : (s + 1) * bs]
                    if len(idx) < 2:  # a single cell has no negatives (and breaks BatchNorm)
                        continue
                    xb = torch.from_numpy(X[idx].toarray()).to(device)
                    v1 = xb + p["noise_std"] * torch.randn_like(xb)
                    v2 = xb + p["noise_std"] * torch.randn_like(xb)
                    loss = nt_xent(head(encoder(v1)), head(encoder(v2)), p["temperature"])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach())
                    del xb, v1, v2
                history["loss"].append(total / steps)
                last = epoch == p["epochs"] - 1
                t_val = time.perf_counter()
                history["seconds_steps"] += t_val - t_epoch
                if len(y_val) and (epoch % val_every == 0 or last):
                    now = score_encoder()
                    last_mean = _mean(list(now.values()))
                    last_mean = float("nan") if last_mean is None else last_mean
                    history["validation"].append([epoch + 1, jsonable(now), last_mean])
                    wanted = False
                    for k in scorable:
                        if better(now[k], best[k], p["ties"]):
                            best[k], best_epoch[k], wanted = now[k], epoch + 1, True
                    if wanted:
                        store.put((run, epoch + 1), encoder)
                    store.retain(set(chosen.values()) | {(run, e) for e in best_epoch.values()})
                    if averaged is not None and len(history["validation"]) > 1:
                        averaged.add(encoder)
                    # early stopping follows the mean over tasks (one task's MCC on a few cells is noisy)
                    stopped_early = patience.update(last_mean, epoch + 1) and bool(scorable)
                    history["seconds_validation"] += time.perf_counter() - t_val
                bar.set_postfix(loss=f"{history['loss'][-1]:.4g}", val_mcc=f"{last_mean:.3f}", refresh=False)
                bar.update()
                if stopped_early:
                    break
            bar.close()
            epochs_run = len(history["loss"])
            if averaged is not None and averaged.count and scorable:
                # the mean of the validated weights: one more candidate for every task (key epoch 0)
                del opt  # its state is the largest allocation of training, no longer needed
                averaged.load_into(encoder)
                averaged.close()
                refresh_batch_norm(encoder, X, bs, device, noise_std=p["noise_std"])
                now = score_encoder()
                mean_score = _mean(list(now.values()))
                history["validation"].append(["mean", jsonable(now), mean_score])
                wanted = False
                for k in scorable:
                    if better(now[k], best[k], "later"):
                        best[k], best_epoch[k], wanted = now[k], MEAN_EPOCH, True
                if wanted:
                    store.put((run, MEAN_EPOCH), encoder)
                store.retain(set(chosen.values()) | {(run, e) for e in best_epoch.values()})
            if not scorable:  # no validation cells at all: the last epoch for every task
                store.put((run, epochs_run), encoder)
                fallback = epochs_run
            else:  # a type without validation cells takes the checkpoint chosen by most tasks (later on ties)
                votes = Counter(best_epoch[k] for k in scorable)
                fallback = max(votes, key=lambda e: (votes[e], e))
            for k in tasks:
                if best_epoch[k] is None:
                    best_epoch[k] = fallback
            history.update(epochs_run=epochs_run, stopped_early=stopped_early)
        return {k: (run, best_epoch[k]) for k in tasks}, {k: best[k] for k in tasks}, history

    def _set_positive_columns(self) -> None:
        def positive(svc):
            return None if svc is None else [int(c) for c in svc.classes_].index(1)

        self._pos = [positive(svc) for svc in self.svcs_]
        self._gene_pos = [positive(svc) for svc in self.gene_svcs_]

    # --- prediction ----------------------------------------------------------------------------------
    @property
    def embed_encoder_(self) -> int:
        """The checkpoint used by most tasks (the earliest stored one on ties; the first when every task is on
        the genes)."""
        counts = Counter(j for j in self.task_encoder_ if j != GENES)
        return min(counts, key=lambda j: (-counts[j], j)) if counts else 0

    def embed(self, X) -> np.ndarray:
        self._check_fitted()
        return self._represent(encode(self.encoders_[self.embed_encoder_], self._scaled(X), torch.device("cpu"),
                                      self.params.get("block", BLOCK)))

    def predict_scores(self, X) -> np.ndarray:
        """Each type's positive-class probability (n, K), columns in ``cell_types`` order, not normalised."""
        self._check_fitted()
        X = as_csr(X)
        block = self.params.get("block", BLOCK)
        out = np.empty((X.shape[0], len(self.cell_types)), dtype=np.float64)
        cpu = torch.device("cpu")
        for start in range(0, X.shape[0], block):
            xb = self._scaled(X[start : start + block])
            for k, jj in enumerate(self.task_encoder_):
                if jj == GENES:
                    out[start : start + block, k] = np.asarray(self.svcs_[k].predict_proba(xb))[:, self._pos[k]]
            for j, enc in enumerate(self.encoders_):
                emb = self._represent(encode(enc, xb, cpu, block))
                for k, jj in enumerate(self.task_encoder_):
                    if jj == j:
                        out[start : start + block, k] = np.asarray(self.svcs_[k].predict_proba(emb))[:, self._pos[k]]
            for k, svc in enumerate(self.gene_svcs_):  # pooled tasks: the mean of the two SVMs' probabilities
                if svc is not None:
                    gene = np.asarray(svc.predict_proba(xb))[:, self._gene_pos[k]]
                    out[start : start + block, k] = (out[start : start + block, k] + gene) / 2
        return out

    # --- state ---------------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._check_fitted()
        arrays: dict[str, np.ndarray] = {}
        for j, enc in enumerate(self.encoders_):
            arrays.update(enc.to_arrays(f"encoder{j}."))
        tasks = []
        for k, svc in enumerate(self.svcs_):
            svc_config, svc_arrays = svc.state()
            arrays.update(prefixed(svc_arrays, f"svc{k}."))
            j = int(self.task_encoder_[k])
            task = {"cell_type": self.cell_types[k], "encoder": None if j == GENES else j, "svc": jsonable(svc_config)}
            if self.gene_svcs_[k] is not None:
                gene_config, gene_arrays = self.gene_svcs_[k].state()
                arrays.update(prefixed(gene_arrays, f"genesvc{k}."))
                task["gene_svc"] = jsonable(gene_config)
            tasks.append(task)
        arrays.update(self._gene_scale_arrays())
        config = {
            "method": self.method_name,
            "cell_types": list(self.cell_types),
            "n_genes": int(self.encoders_[0].n_inputs),
            "encoders": [enc.arch for enc in self.encoders_],
            "tasks": tasks,
            "hyperparameters": self.hyperparameters,
        }
        return config, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "GsRCL":
        from ..svm import PortableSVC

        model = cls._from_config(config, independent_encoders=False)
        types = [str(t) for t in config["cell_types"]]
        tasks = config["tasks"]
        n_enc = len(config["encoders"])
        if [t["cell_type"] for t in tasks] != types:
            raise ValueError("the tasks do not match the cell types")
        allowed = (tuple(f"encoder{j}." for j in range(n_enc)) + tuple(f"svc{k}." for k in range(len(tasks)))
                   + tuple(f"genesvc{k}." for k, t in enumerate(tasks) if "gene_svc" in t))
        stray = sorted(k for k in arrays if not k.startswith(allowed) and k != GENE_SCALE_KEY)
        if stray:
            raise ValueError(f"unexpected arrays {stray[:3]}")
        encoders = []
        for j, arch in enumerate(config["encoders"]):
            enc = Encoder.from_arrays(arrays, f"encoder{j}.", input_dropout=arch.get("input_dropout", 0.0))
            if enc.n_inputs != int(config["n_genes"]):
                raise ValueError(f"encoder {j} takes {enc.n_inputs} genes, the config says {config['n_genes']}")
            encoders.append(enc.eval())
        svcs, gene_svcs, task_encoder = [], [], []
        for k, task in enumerate(tasks):
            gene_svc = None
            if "gene_svc" in task:  # pooled with the task's encoder SVM (``gene_svm="pool"``)
                if task["encoder"] is None:
                    raise ValueError(f"task {task['cell_type']!r} pools a gene SVM but has no encoder")
                gene_svc = PortableSVC.from_state(task["gene_svc"], split_arrays(arrays, f"genesvc{k}."))
                check_svc(gene_svc, ["0", "1"], int(config["n_genes"]), f"the gene SVM of {task['cell_type']!r}")
            gene_svcs.append(gene_svc)
            svc = PortableSVC.from_state(task["svc"], split_arrays(arrays, f"svc{k}."))
            if task["encoder"] is None:  # an SVM on the model input (``gene_svm``)
                j = GENES
                check_svc(svc, ["0", "1"], int(config["n_genes"]), f"the gene SVM of {task['cell_type']!r}")
            else:
                j = int(task["encoder"])
                if not 0 <= j < n_enc:
                    raise ValueError(f"task {task['cell_type']!r} refers to encoder {j}, there are {n_enc}")
                check_svc(svc, ["0", "1"], encoders[j].out, f"the SVM of {task['cell_type']!r}")
            svcs.append(svc)
            task_encoder.append(j)
        model._load_gene_scale(arrays, int(config["n_genes"]))
        model.cell_types = types
        model.encoders_ = encoders
        model.svcs_ = svcs
        model.gene_svcs_ = gene_svcs
        model.task_encoder_ = task_encoder
        model._set_positive_columns()
        model.history_ = {}
        model.validation_ = {}
        return model


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


def _epoch_name(epoch: int):
    """A checkpoint's epoch as the manifest shows it ("mean" for the averaged weights)."""
    return "mean" if epoch == MEAN_EPOCH else epoch
