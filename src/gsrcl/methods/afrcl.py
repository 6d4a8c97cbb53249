"""AF-RCL: augmentation-free supervised contrastive learning, then one multi-class RBF SVM (docs/methods.md §3).

`AFRCL` is a scikit-learn style estimator: ``fit(X, y, X_val, y_val)`` on the model input (cells x genes,
log1p values, CSR), ``predict_scores`` / ``predict_proba`` (n, K) probabilities over ``classes_`` (rows sum to
1), ``embed`` the representation its SVM sees, and ``state()`` / ``from_state()`` to and from plain arrays.

Training: one view per cell, no augmentation; the positives of an anchor are the other cells of its type in the
batch. An encoder (genes -> hidden widths -> ``out``, BatchNorm + ReLU) and a projection head are trained with
AF-RCL's loss (`gsrcl.nn.afrcl_loss`: each positive pair has its own denominator; anchors without a positive are
left out of the mean, docs/methods.md §5.13). Every ``val_every`` epochs the training and validation cells are
encoded and a classifier on the representation is scored on the validation cells (MCC,
`gsrcl.methods.classifiers.validation_score`); the best checkpoint is kept, the later one on ties, as the
original. The final classifier is an RBF SVC with Platt probabilities, C and gamma by stratified CV over the
paper grid (MCC), on the embeddings of the chosen encoder.

The ``paper`` preset follows the publication (docs/methods.md §3.6); the ``default`` preset keeps its network,
loss, optimiser and batch and adds what measured better or cheaper at the same accuracy: early stopping, quick
checkpoint scoring, the final SVM on the training and validation cells, ties broken towards the largest C, the
averaged weights as the model, unit-length embeddings and unexpressed genes left out of training;
around the estimator, ``gsrcl.train`` adds log1p CP10k input and an ensemble of five (`gsrcl.methods.presets`;
the measurements are in docs/decisions.md). The same seed and thread count give a bitwise-identical model on
the same CPU.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from ..nn import Encoder, ProjectionHead, afrcl_loss
from .base import EstimatorBase
from .checkpoints import WeightAverage, better, refresh_batch_norm, snapshot
from .classifiers import check_svc, column_order, final_svm_cells, fit_final_svc, svc_params, validation_score
from .encoding import BLOCK, Rows, as_csr, encode, keep_columns_of, rows_of, sparse_tensor
from .gene_scale import GENE_SCALE_KEY
from .labels import fit_inputs, stratified_subset
from .presets import AFRCLParams
from .progress import EpochBar, svm_bar
from .schedule import Patience
from .session import adam, resolve_device, torch_session
from .state import jsonable, prefixed, split_arrays

log = logging.getLogger("gsrcl.methods.afrcl")

def expressed_genes(X, X_val) -> np.ndarray | None:
    """Sorted indices of the genes with a non-zero value in a cell of ``X`` or ``X_val`` (CSR or `Rows`); None
    when every gene has one."""
    seen = np.zeros(X.shape[1], dtype=bool)
    for M in (X, X_val):
        if isinstance(M, Rows):  # its rows a block at a time
            for block in M.blocks():
                seen[block.indices[block.data != 0]] = True
            continue
        for lo in range(0, M.nnz, SEEN_CHUNK):  # in chunks: no array the size of all the values
            seen[M.indices[lo:lo + SEEN_CHUNK][M.data[lo:lo + SEEN_CHUNK] != 0]] = True
    return None if seen.all() else np.flatnonzero(seen)


SEEN_CHUNK = 1 << 24  # stored values checked at a time by `expressed_genes`


class AFRCL(EstimatorBase):
    """AF-RCL as an estimator: ``fit(X, y, X_val, y_val)`` on log1p CSR input, ``predict_proba`` (n, K).

    Parameters
    ----------
    preset : str
        The preset whose value each hyperparameter left at None takes (`gsrcl.methods.presets`).
    **params
        The fields of `AFRCLParams` (their meaning: its docstring), ``seed`` and the runtime settings
        (``device``, ``threads``, ``block``, ``quiet``), as `EstimatorBase` describes them. Stored as given;
        ``fit`` checks them.
    """

    scores_sum_to_one = True  # whether predict_scores rows are a distribution over the types
    method_name = "afrcl"
    Params = AFRCLParams

    # --- training ------------------------------------------------------------------------------------
    def fit(self, X, y, X_val=None, y_val=None) -> "AFRCL":
        p = self._check_params()
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
                X, X_val = keep_columns_of((X, X_val), expressed)  # values shared
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

            bar = EpochBar(f"{self.method_name} training", p["epochs"], patience, self.quiet,
                           validates=bool(len(y_val)))
            for epoch in range(p["epochs"]):
                encoder.train()
                head.train()
                t_epoch = time.perf_counter()
                validated = False
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
                    last_score, validated = score_encoder(), True
                    history["validation"].append([epoch + 1, last_score])
                    if better(last_score, best, "later"):
                        best, best_state, best_epoch = last_score, snapshot(encoder), epoch + 1
                    stopped_early = patience.update(last_score, epoch + 1)
                    if averaged is not None and len(history["validation"]) > 1:
                        averaged.add(encoder)
                    history["seconds_validation"] += time.perf_counter() - t_val
                bar.update(history["loss"][-1], last_score if validated else None)
                if stopped_early:
                    break
            bar.close()
            if stopped_early:
                log.info("afrcl: stopped early after %d of at most %d epochs (%d validations without a better "
                         "score)", epoch + 1, p["epochs"], patience.since)
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
                X_svm, y_svm = (X, X_val), np.concatenate([y, y_val])  # encoded in turn, never stacked
            else:
                X_svm, y_svm = X, y
            cap = final_svm_cells(y_svm, self.seed)
            if cap is not None:  # only the cells the final SVM fits on are encoded
                X_svm, y_svm = rows_of(X_svm, cap), y_svm[cap]
            emb = self._represent(encode(encoder, X_svm, device, p["block"]))
            with svm_bar(f"{self.method_name} final SVM (C and gamma by CV)", 1, self.quiet) as svms:
                self.svc_ = fit_final_svc(emb, y_svm, p["svm_cv"], self.seed, p["svm_grid_cells"],
                                          p["svm_ties"], distances=True, capped=True)
                svms.update()
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
        return self.predict_scores_and_embed(X, ())[0]

    def predict_scores_and_embed(self, X, rows) -> tuple[np.ndarray, np.ndarray]:
        """``predict_scores(X)`` and ``embed`` of the cells at the sorted positions ``rows`` of X, from one
        encoder pass."""
        self._check_fitted()
        X = as_csr(X)
        rows = np.asarray(rows, dtype=np.int64)
        block = self.params.get("block", BLOCK)
        out = np.empty((X.shape[0], len(self.cell_types)), dtype=np.float64)
        kept = []
        for start in range(0, X.shape[0], block):
            emb = self._represent(encode(self.encoder_, self._scaled(X[start : start + block]), torch.device("cpu"),
                                         block))
            out[start : start + block] = np.asarray(self.svc_.predict_proba(emb))[:, self._order]
            lo, hi = np.searchsorted(rows, [start, start + block])
            kept.append(emb[rows[lo:hi] - start])
        return out, (np.concatenate(kept) if kept else np.empty((0, 0), dtype=np.float32))

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
