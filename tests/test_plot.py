"""The t-SNE picture and its legend: colours for any number of types, seeded layout, valid SVG."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from gsrcl.plot import (
    MIN_TSNE_CELLS,
    UNASSIGNED,
    UNASSIGNED_COLOUR,
    legend_text,
    palette,
    plot_tsne,
    tsne_embedding,
    tsne_perplexity,
)

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("k", [1, 3, 14, 15, 50, 54, 55, 120])
def test_palette_gives_distinct_colours_for_any_k_and_grey_for_unassigned(k):
    types = [f"type {i}" for i in range(k)]
    colours = palette(types)
    assert list(colours) == types + [UNASSIGNED]
    assert colours[UNASSIGNED] == UNASSIGNED_COLOUR
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours.values())
    assert len(set(colours.values())) == k + 1  # no two types share a colour, none is the Unassigned grey
    for c in list(colours.values())[:-1]:
        r, g, b = (int(c[i : i + 2], 16) for i in (1, 3, 5))
        assert max(r, g, b) - min(r, g, b) > 8, f"{c} is a grey, which would read as Unassigned"


@pytest.mark.parametrize("k", [1, 10, 20, 39, 40, 100, 200])
def test_no_type_colour_is_close_to_the_unassigned_grey(k):
    from gsrcl.plot import MIN_CONTRAST, contrast

    colours = palette([f"type {i}" for i in range(k)])
    nearest = min(contrast(c, UNASSIGNED_COLOUR) for t, c in colours.items() if t != UNASSIGNED)
    assert nearest >= MIN_CONTRAST
    assert "#aec7e8" not in colours.values()  # tab20's light blue, once the 10th type's colour
    assert contrast("#aec7e8", UNASSIGNED_COLOUR) < MIN_CONTRAST  # the measure does tell it apart


def test_tsne_title_names_method_reference_and_p_and_the_subset():
    from gsrcl.plot import tsne_title

    assert tsne_title("gsrcl", "pbmc", 0.5, 100, 100) == "GsRCL, reference 'pbmc', p = 0.5"
    two = tsne_title("afrcl", "pbmc", 0.9, 80_000, 50_000).splitlines()
    assert two[0] == "AF-RCL, reference 'pbmc', p = 0.9" and "50,000 of the 80,000 cells" in two[1]


def test_palette_is_stable_for_a_type_whatever_the_query():
    assert palette(["B", "T", "NK"])["T"] == palette(["B", "T", "NK", "Mono"])["T"]


def test_perplexity_rule():
    assert tsne_perplexity(1000) == 30
    assert tsne_perplexity(10) == 3
    assert tsne_perplexity(61) == 20


def test_tsne_is_seeded_separates_groups_and_skips_tiny_inputs():
    rng = np.random.default_rng(1)
    E = rng.normal(size=(60, 80)).astype(np.float32)  # d > 50: PCA first
    E[:30] += 6.0
    a = tsne_embedding(E, seed=3)
    b = tsne_embedding(E, seed=3)
    assert a.shape == (60, 2)
    np.testing.assert_array_equal(a, b)
    # the two groups stay apart: every cell's nearest neighbour is in its own group
    d = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = d.argmin(axis=1)
    assert np.all((nearest < 30) == (np.arange(60) < 30))
    assert tsne_embedding(E[: MIN_TSNE_CELLS - 1]) is None
    assert tsne_embedding(E[:MIN_TSNE_CELLS]).shape == (MIN_TSNE_CELLS, 2)


def _texts(path):
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return root, ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def test_plot_writes_valid_svg_with_axis_labels_and_a_legend_entry_per_label(tmp_path):
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(40, 2))
    labels = np.array(["alpha"] * 20 + ["beta"] * 15 + [UNASSIGNED] * 5, dtype=object)
    colours = palette(["alpha", "beta", "gamma"])
    path = tmp_path / "tsne.svg"
    plot_tsne(coords, labels, colours, path)
    root, texts = _texts(path)
    assert "t-SNE 1" in texts and "t-SNE 2" in texts
    assert "alpha (20)" in texts and "beta (15)" in texts and f"{UNASSIGNED} (5)" in texts
    assert not any(t.startswith("gamma") for t in texts)  # no cells, no legend entry
    svg = path.read_text()
    for lab in ("alpha", "beta", UNASSIGNED):
        assert colours[lab] in svg


def test_plot_without_coordinates_writes_the_note(tmp_path):
    path = tmp_path / "tsne.svg"
    note = "t-SNE not drawn: 5 cells (at least 10 are needed)"
    plot_tsne(None, ["a"] * 5, palette(["a"]), path, note=note)
    _, texts = _texts(path)
    assert any(note in t for t in texts)
    assert "t-SNE 1" not in texts


def test_legend_lists_every_type_then_unassigned_with_colours_and_counts():
    colours = palette(["B", "T", "NK"])
    text = legend_text(["B", "T", "NK"], colours, ["T", "T", "B", UNASSIGNED, "T"])
    rows = [line.split("\t") for line in text.splitlines()]
    assert rows == [
        ["B", colours["B"], "1"],
        ["T", colours["T"], "3"],
        ["NK", colours["NK"], "0"],
        [UNASSIGNED, UNASSIGNED_COLOUR, "1"],
    ]
