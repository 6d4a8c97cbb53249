"""GsRCL: Gaussian-noise contrastive learning (NT-Xent), then one binary RBF SVM per cell type (docs/methods.md §3).

`GsRCL` is a scikit-learn style estimator: ``fit(X, y, X_val, y_val)`` on the model input (cells x genes,
log1p values, CSR); ``predict_scores`` (n, K) each type's one-vs-rest probability, not normalised;
``predict_proba`` the same divided by the row sum, as the original; ``embed`` the representation of the
checkpoint most types use; ``state()`` / ``from_state()`` to and from plain arrays.

Training: two views of every cell per step, each its values plus fresh N(0, ``noise_std``²) noise on every gene;
NT-Xent (`gsrcl.nn.nt_xent`, the original's sum of the two directions' means). The loss uses no labels: labels
only choose the checkpoints. Every validation, the training and validation cells are encoded and, for each cell
type, a binary classifier on the representation is scored on the validation cells (MCC); each type keeps the
checkpoint that scored best for it (``ties``) and gets its own binary RBF SVC with Platt probabilities (C and
gamma by stratified CV over the paper grid, MCC) on that checkpoint's embeddings. A type without validation cells
takes the checkpoint chosen by most types. Early stopping follows the mean of the types' scores.

The original trains one encoder per cell type, but the encoder never sees the labels, so those runs differ only
by their seeds: the encoder is trained once and each type's checkpoint chosen from that run, storing only the
distinct checkpoints. ``independent_encoders=True`` trains one encoder per type (seed + type index), as the
original. With ``gene_svm``, each type also gets an RBF SVM on the model input itself, as the original tool's
references hold for some types (docs/methods.md §2): ``True`` keeps it instead of the encoder's where it scores
higher on the validation cells, ``"pool"`` keeps both and averages their probabilities. A reference too large
for the dense copy those SVMs need (``DENSE_GENES_MAX`` cells x genes) gets none.

The ``paper`` preset follows the publication (docs/methods.md §3.3, §3.6); the ``default`` preset keeps its
network and adds what measured better or cheaper (`gsrcl.methods.presets`; the measurements are in
docs/decisions.md). The noise makes the first layer's input dense, so the encoder's width sets the cost.
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
from ..svm import DISTANCE_CELLS_MAX, PooledSVCs, PortableSVC, squared_distances
from .base import EstimatorBase
from .checkpoints import CheckpointStore, WeightAverage, better, refresh_batch_norm
from .classifiers import check_svc, fit_final_svc, svc_params, validation_score
from .encoding import BLOCK, as_csr, encode
from .gene_scale import GENE_SCALE_KEY
from .labels import fit_inputs, stratified_subset
from .presets import GsRCLParams
from .progress import EpochBar, svm_bar
from .schedule import Patience, step_schedule
from .session import adam, resolve_device, torch_session
from .state import jsonable, prefixed, split_arrays

log = logging.getLogger("gsrcl.methods.gsrcl")

MEAN_EPOCH = 0  # the checkpoint key of the averaged weights (epochs count from 1)
GENES = -1  # task_encoder_ of a task whose SVM takes the model input itself (``gene_svm``)
# the most cells x genes of the gene SVMs' dense copy of their cells (libsvm's dense path is faster than its
# sparse one, with the same decision values); a larger reference gets no gene SVMs
DENSE_GENES_MAX = 50_000_000


class GsRCL(EstimatorBase):
    """GsRCL as an estimator: ``fit(X, y, X_val, y_val)`` on log1p CSR input; ``predict_scores`` (n, K) raw
    one-vs-rest probabilities, ``predict_proba`` the same divided by the row sum.

    Parameters
    ----------
    preset : str
        The preset whose value each hyperparameter left at None takes (`gsrcl.methods.presets`).
    **params
        The fields of `GsRCLParams` (their meaning: its docstring), ``seed`` and the runtime settings
        (``device``, ``threads``, ``block``, ``quiet``, ``checkpoint_memory_mb``), as `EstimatorBase` describes
        them. Stored as given; ``fit`` checks them.
    """

    scores_sum_to_one = False  # whether predict_scores rows are a distribution over the types
    method_name = "gsrcl"
    Params = GsRCLParams
    extra_runtime = {"checkpoint_memory_mb": 0}  # see EstimatorBase

    # --- training ------------------------------------------------------------------------------------
    def fit(self, X, y, X_val=None, y_val=None) -> "GsRCL":
        p = self._check_params()
        device = resolve_device(self.device)
        X, y, X_val, y_val = fit_inputs(X, y, X_val, y_val, p["validation_size"], self.seed)
        X, X_val = self._fit_gene_scale(X, X_val)
        self.cell_types = sorted(map(str, np.unique(y)))
        K = len(self.cell_types)
        t0 = time.perf_counter()
        batch_norm = X.shape[0] > p["batch_size"] if p["batch_norm"] == "auto" else bool(p["batch_norm"])
        self.batch_norm_ = batch_norm
        runs = [list(range(K))] if not p["independent_encoders"] else [[k] for k in range(K)]
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
            "independent_encoders": p["independent_encoders"],
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
        tasks = [k for k, t in enumerate(self.cell_types) if (y_val == t).any()]
        with svm_bar(f"{self.method_name} scoring SVMs on the genes", len(tasks), self.quiet) as bar:
            for k in tasks:
                t = self.cell_types[k]
                bar.set_postfix_str(t)
                out[k] = validation_score(p["selection"], X_score, (y_score == t).astype(np.int64), X_val,
                                          (y_val == t).astype(np.int64), self.seed, p["svm_cv"])
                bar.update()
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
            X_svm, y_svm = (X, X_val), np.concatenate([y, y_val])  # encoded in turn, never stacked
        else:
            X_svm, y_svm = (X,), y
        self.encoders_, self.svcs_, self.gene_svcs_ = [], [None] * K, [None] * K

        def fit_task(k, inputs, on, distances=False):
            bar.set_postfix_str(f"{self.cell_types[k]} on the {on}")
            target = (y_svm == self.cell_types[k]).astype(np.int64)
            svc = fit_final_svc(inputs, target, p["svm_cv"], self.seed + k, p["svm_grid_cells"], p["svm_ties"],
                                distances)
            bar.update()
            return svc

        # the bar counts K + len(pooled) fits: each type's SVM (on the genes or its checkpoint's embeddings), and
        # the pooled types' gene SVMs
        with torch_session(self.seed, p["threads"], device), \
                svm_bar(f"{self.method_name} SVMs (C and gamma by CV)", K + len(pooled),
                        self.quiet) as bar:
            if on_genes or pooled:
                bar.set_postfix_str("distances between the cells")
                genes = np.zeros((len(y_svm), X.shape[1]), dtype=X.dtype)  # one dense copy, filled part by part
                start = 0
                for part in X_svm:
                    part.toarray(out=genes[start : start + part.shape[0]])
                    start += part.shape[0]
                # one matrix of squared distances for every type's gene SVM (it does not depend on the labels)
                distances = squared_distances(genes) if len(genes) <= DISTANCE_CELLS_MAX else True
                for k in sorted(on_genes):
                    self.svcs_[k] = fit_task(k, genes, "genes", distances)
                for k in sorted(pooled):
                    self.gene_svcs_[k] = fit_task(k, genes, "genes", distances)
                del genes, distances
            for key in keys:
                enc = self._new_encoder(X.shape[1], batch_norm, device)
                enc.load_state_dict(store.get(key))
                enc.eval()
                emb = self._represent(encode(enc, X_svm, device, p["block"])).astype(np.float64)
                self.encoders_.append(enc.cpu())  # prediction runs on the CPU
                # the types sharing this checkpoint share the matrix of squared distances between the cells
                distances = squared_distances(emb) if len(emb) <= DISTANCE_CELLS_MAX else True
                for k in range(K):
                    if k not in on_genes and choice[k] == key:
                        self.svcs_[k] = fit_task(k, emb, "embedding", distances)
                del distances
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
            # the running sum waits on disk when checkpoints do (hundreds of MB at the published width)
            averaged = WeightAverage(on_disk=p["checkpoint_memory_mb"] == 0) if p["average_checkpoints"] else None

            def score_encoder() -> dict[int, float]:
                """Each scorable task's validation MCC for the encoder's current weights."""
                emb_tr = self._represent(encode(encoder, X_score, device, p["block"]))
                emb_val = self._represent(encode(encoder, X_val, device, p["block"]))
                return {k: validation_score(p["selection"], emb_tr, targets[k].astype(np.int64), emb_val,
                                            val_targets[k].astype(np.int64), seed, p["svm_cv"]) for k in scorable}

            desc = f"{self.method_name} training" + (f" ({self.cell_types[tasks[0]]})" if len(tasks) == 1 else "")
            bar = EpochBar(desc, p["epochs"], patience, self.quiet, validates=bool(scorable),
                           score_name="val MCC" if len(scorable) == 1 else f"mean val MCC of {len(scorable)} types")
            for epoch in range(p["epochs"]):
                encoder.train()
                head.train()
                t_epoch = time.perf_counter()
                validated = False
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
                    validated = bool(scorable)
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
                bar.update(history["loss"][-1], last_mean if validated else None)
                if stopped_early:
                    break
            bar.close()
            if stopped_early:
                log.info("gsrcl: stopped early after %d of at most %d epochs (%d validations without a better "
                         "mean score)", epoch + 1, p["epochs"], patience.since)
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
        return self.predict_scores_and_embed(X, ())[0]

    def predict_scores_and_embed(self, X, rows) -> tuple[np.ndarray, np.ndarray]:
        """``predict_scores(X)`` and ``embed`` of the cells at the sorted positions ``rows`` of X, from one
        encoder pass."""
        self._check_fitted()
        X = as_csr(X)
        rows = np.asarray(rows, dtype=np.int64)
        block = self.params.get("block", BLOCK)
        out = np.empty((X.shape[0], len(self.cell_types)), dtype=np.float64)
        cpu = torch.device("cpu")
        shown = self.embed_encoder_
        kept = []
        groups = self._svm_groups()
        for start in range(0, X.shape[0], block):
            xb = self._scaled(X[start : start + block])
            part = out[start : start + block]
            gene = {}
            if GENES in groups:  # every SVM on the genes in one pass
                pooled, members = groups[GENES]
                for (k, pooled_task), p in zip(members, pooled.predict_proba(xb)):
                    if pooled_task:
                        gene[k] = p[:, self._gene_pos[k]]
                    else:
                        part[:, k] = p[:, self._pos[k]]
            for j, enc in enumerate(self.encoders_):
                emb = self._represent(encode(enc, xb, cpu, block))
                if j in groups:
                    pooled, members = groups[j]
                    for (k, _), p in zip(members, pooled.predict_proba(emb)):
                        part[:, k] = p[:, self._pos[k]]
                if j == shown:
                    lo, hi = np.searchsorted(rows, [start, start + block])
                    kept.append(emb[rows[lo:hi] - start])
            for k, g in gene.items():  # pooled tasks: the mean of the two SVMs' probabilities
                part[:, k] = (part[:, k] + g) / 2
        return out, (np.concatenate(kept) if kept else np.empty((0, 0), dtype=np.float32))

    def _svm_groups(self) -> dict[int, tuple[PooledSVCs, list[tuple[int, bool]]]]:
        """The SVMs that see the same input, pooled (`gsrcl.svm.PooledSVCs`): under `GENES` those on the genes
        (a type's own and the gene half of a pooled type), under ``j`` those on checkpoint ``j``'s embedding;
        with each SVM its type and whether it is the gene half of a pooled type. Built once per fitted model."""
        key = tuple(map(id, [*self.svcs_, *self.gene_svcs_]))
        cached = self.__dict__.get("_groups_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        members: dict[int, list[tuple[int, bool, PortableSVC]]] = {}
        for k, j in enumerate(self.task_encoder_):
            members.setdefault(j, []).append((k, False, self.svcs_[k]))
        for k, svc in enumerate(self.gene_svcs_):
            if svc is not None:
                members.setdefault(GENES, []).append((k, True, svc))
        groups = {j: (PooledSVCs([m[2] for m in ms]), [(k, gene) for k, gene, _ in ms]) for j, ms in members.items()}
        self._groups_cache = (key, groups)
        return groups

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

        model = cls._from_config(config)
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
