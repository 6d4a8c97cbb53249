"""AF-RCL: augmentation-free supervised contrastive learning, then one multi-class RBF SVM (METHODS §3.3-3.7).

One view per cell, no augmentation; positives are the other cells of the same type in the batch. The encoder
(genes -> 1024 -> 1024 -> 1024 -> 512, BN + ReLU) and a projection head (512 -> 256 -> 128) are trained with
AF-RCL's loss (each positive pair has its own denominator: itself plus the anchor's negatives; τ = 0.1), with
the NaN of anchors without a positive fixed (METHODS §5.13: they are left out of the mean). Every
``val_every`` epochs the training and validation cells are encoded and a classifier on the representation is
scored on the validation cells (MCC); the best checkpoint is kept (the later one on ties, as the original).
The final classifier is a multi-class RBF SVC with Platt probabilities, C and gamma chosen by stratified CV
over the paper grid (MCC) on the embeddings of the chosen encoder (``gsrcl.svm``; in the ``default`` preset
each cell's embedding scaled to unit length, ``normalize_embedding``).

Presets
-------
``paper``: the published settings (§3.6): Adam lr 1e-3, weight decay 1e-6, batch 64 shuffled with
drop_last, 501 epochs (the original loop runs epochs 0..500), validation after epochs 0, 5, 10, ... by the
original's full grid search (16 settings x 5 folds, then the MCC of the best SVC on the validation cells), no
early stopping; the final SVM on the training cells only.

``default``: the same network, loss, optimiser and batch, with what measurably saves time at the same
accuracy (``benchmarks/train.py``; mouse_immune_actinn_1k, 5-fold CV, 640 training + 160 validation cells
per fold, 1 thread on a shared 2-core machine):

- checkpoints scored by ``gsrcl.svm.quick_score`` (one SVC, C=1, gamma='scale') instead of the grid:
  0.15-0.26 s per validation (1 thread) against 1.3 s for the grid (paper preset, 2 threads);
- early stopping: at most 200 epochs, stop once the validation MCC has not improved for 6 validations
  (30 epochs), after at least 30 epochs. The five folds stopped after 31-46 epochs (loss ~1e-4 by then);
  the paper schedule (501 epochs, 101 grid validations) measures 1.8 s per epoch and extrapolates to
  17 min per fold here, against ~38 min for the original code on this kind of machine;
- the final SVM on the training AND validation cells (``svm_cells="train+val"``; the validation cells were
  only used to choose the checkpoint, and the encoder never trained on them): 5-fold macro-F1 0.9895 against
  0.9862 with the training cells only (two folds better, three equal);
- settings of the final SVM's grid that tie on CV MCC: the largest C (``svm_ties="largest_c"``), where the
  original takes the first in grid order, the smallest C. On contrastive embeddings the CV score often
  saturates (11 of 16 settings tied at MCC 1.0 on the 5-line plates): the grid order then picked C=0.1, whose
  held-out macro-F1 was 0.896 on the 5-line plates against 0.955 for C=100 at the same CV score, and 0.9879
  against 0.9915 over the five mouse immune folds (the saved embeddings of one run each; ``gsrcl.svm.fit_svc``);
- one more candidate checkpoint: the mean of the weights at every validation after the first (BatchNorm
  statistics recomputed over the training cells), scored like the others and kept if it scores at least the
  best (``average_checkpoints``; averaged weights, as stochastic weight averaging, Izmailov et al. 2018). The
  validation MCC saturates on easy references, and then which checkpoint is "best" is chance: over the five
  mouse immune folds the test macro-F1 went from 0.9897 to 0.9931 (fold 0 0.992 -> 1.000, fold 1
  0.982 -> 0.991, the others equal), on pbmc3k -> Kang (seed 1111) from 0.863 to 0.909; on the 5-line plates
  (seed 1112) 0.991 -> 0.988; where the mean scores lower on validation (two of three pbmc3k -> Kang seeds)
  nothing changes. It costs one validation, one pass over the training cells and a copy of the weights.
  Since then the mean is the model kept whatever the single checkpoints score (``average_checkpoints="always"``,
  as stochastic weight averaging itself does): on a reference that is not easy the validation MCC is noise
  around a plateau reached after the first epoch (pbmc3k, 527 validation cells: 0.90-0.95 from epoch 1 on,
  no trend, over 31-141 epochs), and the best of ~10 noisy scores beats the one mean by chance (winner's curse), while which
  single checkpoint is kept decides the cross-study result: pbmc3k -> Kang per checkpoint (one model, one
  SVC at C=1 on the embedding, no rejection) ranged 0.87-0.96 within one run. The mean did better than the
  checkpoint chosen in all four seeds traced (1111-1114: 0.915 / 0.913 / 0.936 / 0.958 against 0.909 / 0.909 /
  0.922 / 0.940; ``benchmarks/results/checkpoint_trace.md``). The five-model ensemble on pbmc3k -> Kang (accuracy benchmark, 1 thread): seeds 1111 /
  1112 / 1113 0.9389 / 0.9390 / 0.9462 against 0.9386 / 0.9296 / 0.9387 when the mean was a candidate;
- log1p CP10k input (``library_size`` 10,000; applied by ``gsrcl.train`` and by prediction, recorded in the
  reference's values): each cell scaled to 10,000 before log1p, where the papers take log1p of the counts.
  Depth differs between batches and studies; in the accuracy benchmark (seed 1111, 1 thread) the 5-line
  plates went from 0.956 to 1.000 (seeds 1112 and 1113 from 0.988 and 0.989 to 1.000), Xin -> Wang 0.999 ->
  1.000, pbmc3k -> Kang 0.909 -> 0.945, Kang donors 0.992 -> 0.990, Kang -> pbmc3k 0.992 both, mouse CV
  0.992 -> 0.990; the five ``benchmarks/train.py`` folds 0.9931 -> 0.9921;
- genes scaled by their spread over the reference cells (``scale_genes``): each gene divided by its standard
  deviation + 0.1, values clipped at 10, no centring (the input stays sparse; the first layer's BatchNorm takes
  out any shift), the scale stored with the model and applied to every query. Without it a few highly
  expressed genes dominate the first layer, and which of them the encoder leans on varies with the seed. On
  pbmc3k -> Kang (accuracy benchmark, 1 thread, ``benchmarks/seeds.py``) macro-F1 over seeds 1111-1115 went
  from 0.874 +- 0.060 (worst 0.795) to 0.917 +- 0.016 (worst 0.897); seed 1111 alone from 0.945 to 0.942.
  Seed 1111 on the other tasks: Kang donors 0.990 -> 0.990, Kang -> pbmc3k 0.992 both, mouse CV
  0.990 -> 0.992, the CellBench and Xin -> Wang tasks 1.000 both; the unseen-type AUROC of conf_score
  0.697 -> 0.743 on Kang -> pbmc3k, 0.998 -> 0.996 on Xin -> Wang;
- an ensemble of five models (``ensemble``; `gsrcl.methods.ensemble`): trained with five seeds (the first the
  given seed, so a one-model ensemble is the single model; the others drawn from it), each with its own
  validation split, and their probabilities averaged (``pool="mean"``). On a small reference the encoder puts
  the boundaries between close types (NK against cytotoxic CD8 T cells, CD14 against FCGR3A monocytes)
  somewhere new for each seed, and a query from another study falls on either side by chance. Accuracy
  benchmark (1 thread, ``benchmarks/seeds.py``): pbmc3k -> Kang over seeds 1111-1115 0.917 +- 0.016 (worst
  0.897) with one model, 0.933 +- 0.006 (worst 0.925) with five; without rejection 0.926 +- 0.014 and
  0.949 +- 0.005. The averaged probabilities are less sure on cells between two types, so more known cells
  come out Unassigned at p = 0.5 (3.0% against 0.7% at seed 1111). Seed 1111 on the other tasks: Kang donors
  0.990 -> 0.993, Kang -> pbmc3k 0.992 -> 0.994, mouse CV 0.992 -> 0.994, the CellBench and Xin -> Wang tasks
  1.000 both; unseen-type AUROC of conf_score 0.743 -> 0.763 and of unseen_score 0.870 -> 0.876 on
  Kang -> pbmc3k, 0.996 -> 0.996 and 0.999 -> 0.9998 on Xin -> Wang. Five times the training time (pbmc3k ->
  Kang 82 -> 414 s), prediction 2-3 times slower (1.8 -> 5.2 s for its 8,684 cells), training peak memory
  0.9-1.2 GB -> 1.1-1.9 GB. ``pool="geometric"`` (the members' log-probabilities averaged), scored on the same
  members' saved scores, gave 0.940 over seeds 1111-1114 on pbmc3k -> Kang (fewer Unassigned) but a lower
  unseen-type AUROC on Kang -> pbmc3k (conf_score 0.721, unseen_score 0.858), so the mean is the default;
- genes that no reference cell expresses are left out of training (``skip_unexpressed_genes``) and stored with
  zero first-layer weights. They get no gradient from the data, only the weight decay, which pulls their random
  initial weights towards zero anyway; leaving them out spares their share of the first layer's gradient and
  Adam update. The initial weights are drawn for every gene first, so the rest of training is the same
  arithmetic, bit for bit (tested). A query's values of those genes are then ignored. Where every gene is
  expressed (all the accuracy tasks but the mouse immune CV) nothing changes; 27% of mouse_immune_actinn_1k's
  19,371 genes are in no cell;
- the classifiers see each cell's encoder output scaled to unit length (``normalize_embedding``): the SVC that
  scores checkpoints, the final SVM (same grid, same CV) and every query. AF-RCL's loss compares cells only by
  the cosine similarity of their projections, so training leaves the length of the encoder output free, and on
  a query from another study that length varies in ways training never constrained. The RBF SVM on the plain
  output took it as signal: on pbmc3k -> Kang, Kang's NK cells (fewer of which detect FCGR3A, PRF1 or TYROBP
  than pbmc3k's) fell on pbmc3k's CD8 T side or between the two. Exploratory replay on saved default ensembles
  (seeds 1111 / 1112 / 1113, only the five final SVMs refitted): 0.958 / 0.963 / 0.962 on unit-length rows
  against 0.939 / 0.939 / 0.946 as trained; on the plain output, the SVMs with gamma fixed to 'scale' gave
  0.944 / 0.940 / 0.951 and a logistic regression 0.953 / 0.944 / 0.968. Accuracy benchmark (1 thread) with the
  setting in training too, seed 1111: pbmc3k -> Kang 0.939 -> 0.958 (seeds 1111-1115: 0.958 / 0.964 / 0.965 /
  0.947 / 0.954, 0.957 +- 0.008 against 0.939 +- 0.005; best baseline 0.951), Kang -> pbmc3k 0.992 -> 0.994
  (unseen-type AUROC of conf_score 0.716 -> 0.780, unseen_score 0.873 -> 0.864), mouse CV 0.994 -> 0.996,
  Kang donors 0.992 -> 0.993, the CellBench tasks 1.000 both; Xin -> Wang 1.000 -> 0.994: one
  alpha cell with a high PPY value called gamma. That cell flips with the seed either way (seeds 1111-1115:
  0.994 / 1.000 / 1.000 / 0.994 / 1.000 on unit-length rows, 1.000 / 1.000 / 1.000 / 0.994 / 1.000 on the plain output);
- for large references (not reached by 1,000 cells), checkpoints are scored with a classifier fitted on a
  stratified 2,000 of the training cells (``score_cells``) and the final SVM's C and gamma are searched on a
  stratified 3,000 (``svm_grid_cells``), then that setting is fitted on all cells: the SVM's cost grows with
  the square of the cells, 80 fits for the grid.
Result: 5-fold macro-F1 0.9922 (linear SVM on log1p counts 0.9909, ratio 1.001; per fold 1.000, 1.000, 0.985,
0.984, 0.992; 0.9921 before the gene scaling, 0.9931 on log1p counts, 0.9895 before the tie rule and the
averaged checkpoint), 31-48 s per fold with one thread (54-90 s beside two other jobs); all 1,000 cells with
2 threads: 53 s, peak memory 1.0 GB; 10,000 resampled cells with the averaged checkpoint: 31 epochs, 195 s
wall alone with 2 threads (386 s of CPU), peak 1.6 GB; with the CP10k input, the novelty score and the gene
scaling 371 s with one thread beside two other jobs (366 s of CPU), peak 1.6 GB
(``benchmarks/train.py --method afrcl --cells 10000 --cv 0 --threads 2 --predict-cells 0``, ``--threads 1``).
Prediction: ~8,500 cells/s with 2 threads.

Both presets use the fused Adam kernel (the same update; 4 ms instead of 72 ms per step on the 19,371 x 1,024
first layer on 2 cores), the sparse first layer (the input is multiplied without densifying), flushed
denormals, and large freed blocks kept for reuse (``gsrcl.nn.allocator``: the first layer's 80 MB gradient
no longer page-faults in every step; 67.9 -> 55.8 ms per step, ``benchmarks/train_step.py``). The default
ensemble of five models, alone with 2 threads: 1,000 cells 135 s, 10,000 resampled cells 1,034 s (6.2 s per
epoch; 9.8 s before the allocator setting and the unexpressed genes left out, 7.0 s with the first), peak
1.6 / 2.2 GB. The same seed gives a bitwise-identical model on the same CPU and thread count (tested).

Threads: on a busy machine, ``threads=1`` can be several times faster than 2 threads (OpenMP threads wait
for each other in every small operation): on the shared test machine a GsRCL step took 0.32 s with one
thread and 1.95 s with two.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from ..nn import Encoder, ProjectionHead, afrcl_loss
from ._training import (
    BLOCK,
    GENE_SCALE_KEY,
    EstimatorBase,
    Patience,
    WeightAverage,
    adam,
    as_csr,
    better,
    check_svc,
    column_order,
    encode,
    fit_final_svc,
    fit_inputs,
    jsonable,
    prefixed,
    refresh_batch_norm,
    resolve_device,
    snapshot,
    sparse_tensor,
    split_arrays,
    stratified_subset,
    svc_params,
    torch_session,
    validation_score,
    vstack,
)

log = logging.getLogger("gsrcl.methods.afrcl")

_COMMON = {
    "ensemble": 1,  # models trained with different seeds whose scores are pooled (gsrcl.methods.ensemble)
    "pool": "mean",  # how the ensemble's scores are pooled: mean or geometric
    "hidden": (1024, 1024, 1024),
    "out": 512,
    "head": (256, 128),  # projection head: hidden widths..., output width
    "batch_norm": True,
    "input_dropout": 0.0,
    "temperature": 0.1,
    "lr": 1e-3,
    "weight_decay": 1e-6,
    "svm_cv": 5,
    "svm_grid_cells": None,  # grid-search the final SVM's C and gamma on at most this many cells (None: all)
    "score_cells": None,  # training cells of the classifier that scores each checkpoint (None: all)
    "threads": None,  # torch threads during fit (None: leave torch's setting)
    "validation_size": 0.2,  # only used when fit() is called without X_val
    "block": BLOCK,
    # the mean of the checkpoints validated after the first: True, one more candidate (kept if it scores at least
    # the best); "always", the model kept (stochastic weight averaging); False, not made
    "average_checkpoints": False,
    # each cell scaled to this total before log1p (gsrcl.values.log1p_normalized; None: log1p of the counts,
    # as the papers); recorded in the reference's values and applied to every query
    "library_size": None,
    # each gene divided by (its standard deviation over the reference cells + 0.1), values clipped at SCALE_CLIP;
    # no centring, so the input stays sparse (the first layer's BatchNorm takes out any shift)
    "scale_genes": False,
    # genes that no reference cell expresses get no gradient from the data, only the weight decay: with this on
    # they are left out of training (their first-layer weights stored as zeros), which spares their share of
    # the first layer's gradient and Adam update; the rest of training is the same arithmetic
    "skip_unexpressed_genes": False,
    # the classifiers (checkpoint scoring, the final SVM) see each cell's encoder output divided by its L2 norm:
    # the loss compares cells by cosine similarity only, so the length of the output is not what was trained
    "normalize_embedding": False,
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        **_COMMON,
        "batch_size": 64,
        "epochs": 501,
        "val_every": 5,
        "selection": "grid",
        "patience": None,
        "min_epochs": 0,
        "svm_cells": "train",
        "svm_ties": "first",  # the original: GridSearchCV's first best setting (the smallest C on ties)
    },
    "default": {
        **_COMMON,
        "batch_size": 64,
        "epochs": 200,
        "val_every": 5,
        "selection": "quick",
        "patience": 6,  # validations without a strict improvement before stopping
        "min_epochs": 30,
        "svm_cells": "train+val",
        "svm_ties": "largest_c",  # settings tied on CV MCC: the largest C (gsrcl.svm.fit_svc)
        "average_checkpoints": "always",
        "library_size": 10_000,  # log1p CP10k: depth differences between batches taken out
        "scale_genes": True,
        "skip_unexpressed_genes": True,
        "normalize_embedding": True,
        "ensemble": 5,
        "svm_grid_cells": 3000,
        "score_cells": 2000,
    },
}


def expressed_genes(X, X_val) -> np.ndarray | None:
    """Sorted indices of the genes with a non-zero value in a cell of CSR ``X`` or ``X_val``; None when every
    gene has one."""
    seen = np.zeros(X.shape[1], dtype=bool)
    for M in (X, X_val):
        seen[M.indices[M.data != 0]] = True
    return None if seen.all() else np.flatnonzero(seen)


class AFRCL(EstimatorBase):
    """AF-RCL as an estimator: ``fit(X, y, X_val, y_val)`` on log1p CSR input, ``predict_proba`` (n, K)."""

    scores_sum_to_one = True  # whether predict_scores rows are a distribution over the types
    method_name = "afrcl"
    PRESETS = PRESETS

    # --- training ------------------------------------------------------------------------------------
    def fit(self, X, y, X_val=None, y_val=None) -> "AFRCL":
        p = self.params
        device = resolve_device(self.device)
        X, y, X_val, y_val = fit_inputs(X, y, X_val, y_val, p["validation_size"], self.seed)
        X, X_val = self._fit_gene_scale(X, X_val)
        n_genes = X.shape[1]
        self.cell_types = sorted(map(str, np.unique(y)))
        codes = np.searchsorted(self.cell_types, y)
        t0 = time.perf_counter()
        with torch_session(self.seed, p["threads"], device):
            rng = np.random.default_rng(self.seed)
            encoder = Encoder(n_genes, p["hidden"], p["out"], batch_norm=p["batch_norm"],
                              input_dropout=p["input_dropout"]).to(device)
            expressed = expressed_genes(X, X_val) if p["skip_unexpressed_genes"] else None
            if expressed is not None:  # after the encoder's random draws: the same initial weights either way
                log.info("afrcl: %d of %d genes are in no reference cell: left out of training (zero weights)",
                         n_genes - len(expressed), n_genes)
                encoder.restrict_inputs(expressed)
                X, X_val = X[:, expressed], X_val[:, expressed]
            head = ProjectionHead(p["out"], p["head"][:-1], p["head"][-1], batch_norm=p["batch_norm"]).to(device)
            opt = adam(list(encoder.parameters()) + list(head.parameters()), p["lr"], p["weight_decay"], device)
            n = X.shape[0]
            bs = min(int(p["batch_size"]), n) if p["batch_size"] > 0 else n
            steps = n // bs  # drop_last, as the original
            labels = torch.from_numpy(codes.astype(np.int64)).to(device)
            sub = stratified_subset(y, p["score_cells"], self.seed)  # the validation classifier's cells
            X_score, y_score = (X, y) if sub is None else (X[sub], y[sub])
            history = {"loss": [], "validation": [], "skipped_steps": 0, "seconds_steps": 0.0,
                       "seconds_validation": 0.0,
                       "genes_unexpressed": 0 if expressed is None else int(n_genes - len(expressed))}
            best, best_state, best_epoch = None, None, None
            patience = Patience(p["patience"], p["min_epochs"])
            stopped_early = False
            last_score = float("nan")
            averaged = WeightAverage() if p["average_checkpoints"] and len(y_val) else None

            def score_encoder() -> float:
                """The validation MCC of the encoder's current weights."""
                emb_tr = self._represent(encode(encoder, X_score, device, p["block"]))
                emb_val = self._represent(encode(encoder, X_val, device, p["block"]))
                return validation_score(p["selection"], emb_tr, y_score, emb_val, y_val, self.seed, p["svm_cv"])

            bar = self._progress(p["epochs"])
            for epoch in range(p["epochs"]):
                encoder.train()
                head.train()
                t_epoch = time.perf_counter()
                perm = rng.permutation(n)
                total, done = 0.0, 0
                for s in range(steps):
                    idx = perm[s * bs : (s + 1) * bs]
                    z = head(encoder(sparse_tensor(X[idx], device)))
                    loss = afrcl_loss(z, labels[idx], p["temperature"])
                    if not torch.isfinite(loss):
                        history["skipped_steps"] += 1
                        continue
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach())
                    done += 1
                history["loss"].append(total / max(done, 1))
                last = epoch == p["epochs"] - 1
                t_val = time.perf_counter()
                history["seconds_steps"] += t_val - t_epoch
                if len(y_val) and (epoch % p["val_every"] == 0 or last):
                    last_score = score_encoder()
                    history["validation"].append([epoch + 1, last_score])
                    if better(last_score, best, "later"):
                        best, best_state, best_epoch = last_score, snapshot(encoder), epoch + 1
                    stopped_early = patience.update(last_score, epoch + 1)
                    if averaged is not None and len(history["validation"]) > 1:
                        averaged.add(encoder)
                    history["seconds_validation"] += time.perf_counter() - t_val
                bar.set_postfix(loss=f"{history['loss'][-1]:.4g}", val_mcc=f"{last_score:.3f}", refresh=False)
                bar.update()
                if stopped_early:
                    break
            bar.close()
            if averaged is not None and averaged.count:
                averaged.load_into(encoder)
                refresh_batch_norm(encoder, X, bs, device)
                score = score_encoder()
                history["validation"].append(["mean", score])
                history["averaged_checkpoints"] = averaged.count
                if p["average_checkpoints"] == "always" or better(score, best, "later"):
                    best, best_state, best_epoch = score, snapshot(encoder), "mean"
            epochs_run = len(history["loss"])
            if best_state is not None:
                encoder.load_state_dict(best_state)
            else:
                best_epoch = epochs_run  # no validation cells: the last epoch is kept
            encoder.eval()
            train_seconds = time.perf_counter() - t0
            if p["svm_cells"] == "train+val" and len(y_val):
                X_svm, y_svm = vstack(X, X_val), np.concatenate([y, y_val])
            else:
                X_svm, y_svm = X, y
            emb = self._represent(encode(encoder, X_svm, device, p["block"]))
            self.svc_ = fit_final_svc(emb, y_svm, p["svm_cv"], self.seed, p["svm_grid_cells"],
                                      p["svm_ties"])
            if expressed is not None:
                encoder.expand_inputs(expressed, n_genes)
            self.encoder_ = encoder.cpu()  # prediction runs on the CPU, as after from_state
        self._order = column_order(self.svc_, self.cell_types)
        history["seconds"] = time.perf_counter() - t0
        history["seconds_encoder"] = train_seconds
        self.history_ = history
        self.validation_ = jsonable({
            "metric": "mcc",
            "selection": p["selection"],
            "cells": int(len(y_val)),
            "score": best,
            "best_epoch": best_epoch,
            "epochs_run": epochs_run,
            "stopped_early": stopped_early,
            "svm_cells": p["svm_cells"] if len(y_val) else "train",
            "svm": svc_params(self.svc_),
        })
        log.info("afrcl: %d epochs, checkpoint of epoch %s (validation MCC %s), %.1f s",
                 epochs_run, best_epoch, "n/a" if best is None else f"{best:.3f}", history["seconds"])
        return self

    # --- prediction ----------------------------------------------------------------------------------
    def embed(self, X) -> np.ndarray:
        """The representation the classifier sees (the encoder output, unit length with ``normalize_embedding``)."""
        self._check_fitted()
        return self._represent(encode(self.encoder_, self._scaled(X), torch.device("cpu"),
                                      self.params.get("block", BLOCK)))

    def predict_scores(self, X) -> np.ndarray:
        """Multi-class probabilities (n, K), columns in ``cell_types`` order; rows sum to 1."""
        self._check_fitted()
        X = as_csr(X)
        block = self.params.get("block", BLOCK)
        out = np.empty((X.shape[0], len(self.cell_types)), dtype=np.float64)
        for start in range(0, X.shape[0], block):
            emb = self._represent(encode(self.encoder_, self._scaled(X[start : start + block]), torch.device("cpu"),
                                         block))
            out[start : start + block] = np.asarray(self.svc_.predict_proba(emb))[:, self._order]
        return out

    # --- state ---------------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._check_fitted()
        svc_config, svc_arrays = self.svc_.state()
        config = {
            "method": self.method_name,
            "cell_types": list(self.cell_types),
            "n_genes": int(self.encoder_.n_inputs),
            "encoder": self.encoder_.arch,
            "svc": jsonable(svc_config),
            "hyperparameters": self.hyperparameters,
        }
        arrays = {**self.encoder_.to_arrays("encoder."), **prefixed(svc_arrays, "svc."), **self._gene_scale_arrays()}
        return config, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> "AFRCL":
        from ..svm import PortableSVC

        model = cls._from_config(config)
        stray = sorted(k for k in arrays if not k.startswith(("encoder.", "svc.")) and k != GENE_SCALE_KEY)
        if stray:
            raise ValueError(f"unexpected arrays {stray[:3]}")
        encoder = Encoder.from_arrays(arrays, "encoder.", input_dropout=config["encoder"].get("input_dropout", 0.0))
        if encoder.n_inputs != int(config["n_genes"]):
            raise ValueError(f"the encoder takes {encoder.n_inputs} genes, the config says {config['n_genes']}")
        svc = PortableSVC.from_state(config["svc"], split_arrays(arrays, "svc."))
        types = [str(t) for t in config["cell_types"]]
        check_svc(svc, types, encoder.out, "the SVM")
        model._load_gene_scale(arrays, encoder.n_inputs)
        model.cell_types = types
        model.encoder_ = encoder.eval()
        model.svc_ = svc
        model._order = column_order(svc, types)
        model.history_ = {}
        model.validation_ = {}
        return model
