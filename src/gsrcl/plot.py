"""The t-SNE picture of an annotated query and its legend.

The t-SNE runs on the encoder's representation of the query (not on the 20k-gene matrix as the original did),
with a fixed seed so that the same query gives the same picture:

- embeddings wider than 50 dimensions are first reduced to their first 50 principal components;
- perplexity = min(30, (n - 1) / 3), so that small queries work (the original crashed below 31 cells);
- openTSNE with Barnes-Hut gradients below 10,000 cells and FFT-interpolated gradients above;
- below ``MIN_TSNE_CELLS`` (10) cells no t-SNE is computed: ``tsne.svg`` then holds only a one-line note saying
  why, so that a stale picture from an earlier run can never be mistaken for this one.

The picture's title names the method, the reference and the cut-off p (and the subset, when one is drawn).

Colours: one per reference cell type in the reference's order, taken from matplotlib's tab20, tab20b and tab20c
(ordered so that neighbouring types differ in hue), keeping only the colours at least ``MIN_CONTRAST`` (CIE76
colour difference) from ``Unassigned``'s neutral light grey, so that no type can be mistaken for it: 39 colours,
and for more types an evenly spaced hue wheel with alternating lightness. ``legend.txt`` lists
``label<TAB>colour<TAB>number of cells`` for every reference type and then ``Unassigned``, with the colours used in
the picture; a backslash, tab, line feed or carriage return in a label is written as ``\\\\``, ``\\t``, ``\\n`` or
``\\r`` (training refuses such labels, but an older reference may hold them), so each line has three fields.
"""

from __future__ import annotations

import colorsys
import logging
import os
import time
from typing import Any, Iterable, Sequence

import numpy as np

from .cutoff import UNASSIGNED

log = logging.getLogger("gsrcl.plot")

UNASSIGNED_COLOUR = "#d3d3d3"
MIN_CONTRAST = 35.0  # the least CIE76 difference between a type's colour and UNASSIGNED_COLOUR
METHOD_NAMES = {"gsrcl": "GsRCL", "afrcl": "AF-RCL"}
MIN_TSNE_CELLS = 10
PCA_DIMS = 50
FFT_FROM = 10_000
# Beyond this many points the scatter layer of the SVG is stored as an embedded image (the axes, labels and legend
# stay vector), which keeps a 50,000-cell picture at a few MB instead of tens.
RASTERIZE_FROM = 20_000


def lab(colour: str) -> np.ndarray:
    """CIE L*a*b* (D65) of an sRGB colour such as ``"#d3d3d3"``."""
    from matplotlib.colors import to_rgb

    c = np.asarray(to_rgb(colour), dtype=np.float64)
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def contrast(a: str, b: str) -> float:
    """The CIE76 colour difference of two colours (about 2.3 is just noticeable)."""
    return float(np.linalg.norm(lab(a) - lab(b)))


def _base_colours() -> list[str]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    # tab20 dark shades first, then its light ones, then tab20b and tab20c shade by shade: neighbouring types
    # get different hues (tab10-like for the first 9); greys and colours close to Unassigned's grey are left out
    orders = {
        "tab20": list(range(0, 20, 2)) + list(range(1, 20, 2)),
        "tab20b": [i + s for s in range(4) for i in range(0, 20, 4)],
        "tab20c": [i + s for s in range(4) for i in range(0, 20, 4)],
    }
    base: list[str] = []
    for name, order in orders.items():
        cmap = colormaps[name]
        for i in order:
            colour = to_hex(cmap(i))
            chroma = float(np.hypot(*lab(colour)[1:]))
            if chroma >= 10.0 and contrast(colour, UNASSIGNED_COLOUR) >= MIN_CONTRAST:
                base.append(colour)
    return base


def palette(cell_types: Sequence[str]) -> dict[str, str]:
    """A colour per cell type, and Unassigned's grey.

    Parameters
    ----------
    cell_types : sequence of str
        The reference's types, in its order.

    Returns
    -------
    dict
        ``{type: "#rrggbb"}`` in the order of ``cell_types``, then ``"Unassigned": UNASSIGNED_COLOUR``. Every
        type's colour differs from Unassigned's by at least ``MIN_CONTRAST``.
    """
    from matplotlib.colors import to_hex

    base = _base_colours()
    k = len(cell_types)
    if k <= len(base):
        colours = base[:k]
    else:
        # a hue wheel with three alternating lightness/saturation rings so that neighbours stay distinguishable
        rings = [(0.45, 0.75), (0.65, 0.85), (0.30, 0.60)]
        colours = [
            to_hex(colorsys.hls_to_rgb(i / k, *rings[i % 3]))
            for i in range(k)
        ]
    out = dict(zip(map(str, cell_types), colours))
    out[UNASSIGNED] = UNASSIGNED_COLOUR
    return out


def tsne_perplexity(n: int) -> float:
    """The t-SNE perplexity for ``n`` cells: 30, or (n - 1) / 3 for small queries."""
    return float(min(30.0, (n - 1) / 3.0))


def tsne_of(embedding: np.ndarray, n_cells: int, *, seed: int = 0) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The t-SNE of the cells whose embedding was kept, and a record of it for ``uns['gsrcl']['tsne']``.

    Parameters
    ----------
    embedding : ndarray of shape (m, d)
        The encoder embedding of the m cells drawn.
    n_cells : int
        The number of cells in the query (m < n_cells: a subset is drawn).
    seed : int

    Returns
    -------
    coords : ndarray of shape (m, 2) or None
        None below ``MIN_TSNE_CELLS`` cells.
    record : dict
        ``drawn``, ``n_cells`` and, when drawn, ``subsampled``, ``perplexity``, ``on``, ``seed``, ``seconds``; else
        a ``note`` saying why not.
    """
    n = len(embedding)
    if n < MIN_TSNE_CELLS:
        msg = f"t-SNE not drawn: {n} cell{'s' if n != 1 else ''} (at least {MIN_TSNE_CELLS} are needed)"
        log.info(msg)
        return None, {"drawn": False, "note": msg, "n_cells": int(n)}
    log.info("t-SNE of %d cells%s", n, "" if n == n_cells else f" (a seeded random subset of {n_cells})")
    t0 = time.perf_counter()
    coords = tsne_embedding(embedding, seed=seed)
    dims = embedding.shape[1]
    return coords, {
        "drawn": True,
        "n_cells": int(n),
        "subsampled": bool(n < n_cells),
        "perplexity": tsne_perplexity(n),
        "on": f"encoder embedding ({dims} dims{', PCA to 50' if dims > PCA_DIMS else ''})",
        "seed": int(seed),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def tsne_title(method: str, reference: str, p: float, n_cells: int, n_drawn: int) -> str:
    """The picture's title: method, reference and cut-off; a second line when only a subset is drawn."""
    title = f"{METHOD_NAMES.get(method, method)}, reference {reference!r}, p = {p:g}"
    if n_drawn < n_cells:
        title += f"\na seeded random {n_drawn:,} of the {n_cells:,} cells (legend: cells shown)"
    return title


def tsne_embedding(embedding: np.ndarray, *, seed: int = 0, n_jobs: int | None = None) -> np.ndarray | None:
    """2-D t-SNE coordinates of ``embedding`` (n x d), or ``None`` when n < ``MIN_TSNE_CELLS``. ``n_jobs``
    defaults to 1 below ``FFT_FROM`` cells (threads only cost there) and to the CPU count (at most 8) above."""
    from openTSNE import TSNE

    E = np.asarray(embedding, dtype=np.float32)
    n = E.shape[0]
    if n < MIN_TSNE_CELLS:
        return None
    E = np.nan_to_num(E, copy=False)
    if E.shape[1] > PCA_DIMS:
        from sklearn.decomposition import PCA

        k = min(PCA_DIMS, n - 1)
        E = PCA(n_components=k, random_state=seed, svd_solver="randomized" if n > 2000 else "full").fit_transform(E)
    E = np.ascontiguousarray(E, dtype=np.float64)
    if n_jobs is None:
        n_jobs = 1 if n < FFT_FROM else max(1, min(os.cpu_count() or 1, 8))
    tsne = TSNE(
        n_components=2,
        perplexity=tsne_perplexity(n),
        negative_gradient_method="fft" if n >= FFT_FROM else "bh",
        neighbors="annoy" if n >= FFT_FROM else "exact",
        random_state=seed,
        n_jobs=n_jobs,
        verbose=False,
    )
    return np.asarray(tsne.fit(E), dtype=np.float64)


def _figure(n_legend: int):
    import matplotlib

    matplotlib.use("Agg", force=False)  # a no-op when the caller chose a backend already
    from matplotlib.figure import Figure

    ncol = 1 if n_legend <= 18 else (2 if n_legend <= 36 else 3)
    fig = Figure(figsize=(7, 6.5))  # the legend sits outside the axes; the tight bounding box makes room
    ax = fig.add_subplot(111)
    return fig, ax, ncol


def plot_tsne(
    coords: np.ndarray | None,
    labels: Sequence[str],
    colours: dict[str, str],
    path: str | os.PathLike,
    *,
    note: str | None = None,
    title: str | None = None,
) -> None:
    """Write an SVG scatter of ``coords`` coloured by ``labels``.

    Parameters
    ----------
    coords : ndarray of shape (m, 2) or None
        None: the picture holds ``note`` instead (so a stale picture is never left in place).
    labels : sequence of str
        The m cells' labels, each a key of ``colours``.
    colours : dict
        As `palette`; the legend lists the labels present in its order.
    path : path-like
        Written as SVG (a path ending in ``.tmp`` too).
    note, title : str, optional
    """
    import matplotlib

    # text stays text in the SVG (searchable, editable), not glyph outlines
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "gsrcl"}):
        _plot_tsne(coords, labels, colours, path, note=note, title=title)


def _plot_tsne(coords, labels, colours, path, *, note, title) -> None:
    labels = np.asarray(labels, dtype=object)
    order = [lab for lab in colours if np.any(labels == lab)]
    fig, ax, ncol = _figure(len(order))
    if coords is None:
        ax.axis("off")
        ax.text(0.5, 0.5, note or "t-SNE not drawn", ha="center", va="center", fontsize=13, wrap=True,
                transform=ax.transAxes)
    else:
        n = len(labels)
        size = 30 if n <= 1000 else (12 if n <= 10_000 else 4)
        edge = n <= 2000
        # Unassigned first, so that assigned cells are drawn on top of it
        for lab in sorted(order, key=lambda x: x != UNASSIGNED):
            sel = labels == lab
            ax.scatter(
                coords[sel, 0], coords[sel, 1], s=size, c=colours[lab], label=f"{lab} ({int(sel.sum())})",
                edgecolors="black" if edge else "none", linewidths=0.3, rasterized=n >= RASTERIZE_FROM,
            )
        ax.set_xlabel("t-SNE 1", fontsize=16)
        ax.set_ylabel("t-SNE 2", fontsize=16)
        ax.set_xticks([])
        ax.set_yticks([])
        handles, texts = ax.get_legend_handles_labels()
        rank = {f"{lab} ({int(np.sum(labels == lab))})": i for i, lab in enumerate(order)}
        pairs = sorted(zip(handles, texts), key=lambda ht: rank[ht[1]])
        ax.legend([h for h, _ in pairs], [t for _, t in pairs], loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  ncol=ncol, frameon=False, markerscale=max(1.0, 30 / size) ** 0.5, fontsize=9)
    if title:
        ax.set_title(title)
    fig.savefig(path, format="svg" if str(path).endswith(".tmp") else None, bbox_inches="tight", dpi=150)


def legend_text(cell_types: Iterable[str], colours: dict[str, str], labels: Sequence[str]) -> str:
    """The text of ``legend.txt``: ``label<TAB>colour<TAB>cells`` per reference type (in order), then
    ``Unassigned``; ``cells`` counts ``labels`` (all cells, not only those drawn); labels escaped as the module
    docstring says."""
    labels = np.asarray(labels, dtype=object)
    values, counts = np.unique(labels.astype(str), return_counts=True) if len(labels) else ([], [])
    count = dict(zip(values, counts))
    rows = [*map(str, cell_types), UNASSIGNED]
    return "".join(f"{_escape(lab)}\t{colours[lab]}\t{int(count.get(lab, 0))}\n" for lab in rows)


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _escape(label: str) -> str:
    """A label as one field of ``legend.txt``: backslash, tab, line feed and carriage return escaped."""
    return label.translate(_ESCAPES)
