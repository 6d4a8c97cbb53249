"""The original tool's published references: the one table of what can be downloaded by name.

GsRCL's references are the files of Zenodo record 10050548, one zip per reference named ``<reference>.zip`` that
unpacks to a folder ``<reference>/`` (as the original ``code/identify.py`` of ibrahimsaggaf/GsRCL builds its
download address: ``https://zenodo.org/api/records/10050548/files/<reference>.zip/content``). AF-RCL's encoders
are on Zenodo (record 15109736, the paper's data availability; 13737590 in the AF-RCL README), but the names of
the files there are not known to gsrcl, so they have no download address here: they are fetched from a mirror
(``--url``), or downloaded by hand and converted with ``gsrcl import``.

What each row says of a reference comes from the training dataset (the GsRCL README's table of references and
the cell-type annotations of the AF-RCL repository): the cells, genes and cell types of the dataset, which a
published reference was trained on; the archive itself may hold fewer types or another gene count. The size and
sha256 of the archives are not known (`None`, shown as "unknown"): an archive is then checked as a zip (every
member's CRC) and by the import's own checks only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from ..errors import InvalidReferenceError

Method = Literal["gsrcl", "afrcl"]

METHODS: tuple[str, ...] = ("gsrcl", "afrcl")

RECORDS: dict[str, str] = {
    "gsrcl": "https://doi.org/10.5281/zenodo.10050548",
    "afrcl": "https://doi.org/10.5281/zenodo.15109736",
}
"""The published record of each method's references, as a person opens it."""

GSRCL_FILES = "https://zenodo.org/api/records/10050548/files"
"""Where Zenodo serves the files of GsRCL's record: ``GSRCL_FILES/<archive>/content``."""

UNKNOWN = "unknown"


@dataclass(frozen=True)
class PublishedReference:
    """One published reference.

    Attributes
    ----------
    name : str
        Its name in gsrcl: the name ``download`` takes and the reference's name under REFDIR (a plain name:
        letters, digits, ``_``, ``-``).
    method : {"gsrcl", "afrcl"}
        The method that trained it.
    record_name : str
        Its name in the original tool and the published record (``"Baron Human"`` where gsrcl says
        ``Baron_Human``).
    species, tissue, platform : str
        What the training dataset is (``"unknown"`` where the original does not say).
    cells, genes, cell_types : int
        The training dataset's cells, genes and cell types.
    archive : str
        The archive's file name: a mirror serves it as ``BASE/<archive>``; for GsRCL it is also the file's name in
        the record.
    record_url : str or None
        The archive's address in the published record; None where it is not known.
    size : int or None
        The archive's size in bytes; None where it is not known.
    sha256 : str or None
        The archive's sha256 (64 lower-case hex digits); None where it is not known.
    """

    name: str
    method: Method
    record_name: str
    species: str
    tissue: str
    platform: str
    cells: int
    genes: int
    cell_types: int
    archive: str
    record_url: str | None = None
    size: int | None = None
    sha256: str | None = None

    @property
    def where(self) -> str:
        """Species and tissue in a few words, e.g. ``"mouse kidney"``."""
        return f"{self.species} {self.tissue}" if self.species != UNKNOWN else self.tissue

    @property
    def record(self) -> str:
        """The published record of its method (a DOI address)."""
        return RECORDS[self.method]


# name in gsrcl, name in the record, species, tissue, platform, cells, genes, cell types
_DATASETS: tuple[tuple[str, str, str, str, str, int, int, int], ...] = (
    ("PbmcBench_10Xv2", "PbmcBench_10Xv2", "human", "PBMC", "10x Chromium v2", 6444, 22280, 9),
    ("PbmcBench_10Xv3", "PbmcBench_10Xv3", "human", "PBMC", "10x Chromium v3", 3222, 21905, 8),
    ("PbmcBench_Drop-Seq", "PbmcBench_Drop-Seq", "human", "PBMC", "Drop-seq", 3222, 19922, 9),
    ("PbmcBench_inDrop", "PbmcBench_inDrop", "human", "PBMC", "inDrop", 3222, 17159, 7),
    ("PbmcBench_Seq-Well", "PbmcBench_Seq-Well", "human", "PBMC", "Seq-Well", 3176, 21059, 7),
    ("Baron_Human", "Baron Human", "human", "pancreas", "inDrop", 8569, 17499, 14),
    ("Muraro", "Muraro", "human", "pancreas", "CEL-seq2", 2122, 18915, 9),
    ("Segerstolpe", "Segerstolpe", "human", "pancreas", "Smart-seq2", 2133, 22757, 13),
    ("Xin", "Xin", "human", "pancreas", "SMARTer", 1449, 33889, 4),
    ("Adam", "Adam", "mouse", "kidney", "Drop-seq", 3660, 23797, 8),
    ("Baron_Mouse", "Baron Mouse", "mouse", "pancreas", "inDrop", 1886, 14861, 13),
    ("Klein", "Klein", "mouse", "embryonic stem cells", "inDrop", 2717, 24047, 4),
    ("Romanov", "Romanov", "mouse", "hypothalamus", UNKNOWN, 2881, 21143, 7),
    ("Quake_10x_Bladder", "Quake_10x_Bladder", "mouse", "bladder", "10x", 2500, 16867, 4),
    ("Quake_10x_Limb_Muscle", "Quake_10x_Limb_Muscle", "mouse", "limb muscle", "10x", 3909, 16512, 6),
    ("Quake_Smart-seq2_Diaphragm", "Quake_Smart-seq2_Diaphragm", "mouse", "diaphragm", "Smart-seq2", 870, 17973, 5),
    ("Quake_Smart-seq2_Limb_Muscle", "Quake_Smart-seq2_Limb_Muscle", "mouse", "limb muscle", "Smart-seq2", 1090,
     18320, 6),
    ("Quake_Smart-seq2_Lung", "Quake_Smart-seq2_Lung", "mouse", "lung", "Smart-seq2", 1676, 19390, 11),
    ("Quake_Smart-seq2_Trachea", "Quake_Smart-seq2_Trachea", "mouse", "trachea", "Smart-seq2", 1350, 19992, 4),
)


def _gsrcl(row) -> PublishedReference:
    name, record_name, species, tissue, platform, cells, genes, types = row
    archive = f"{record_name}.zip"
    return PublishedReference(name, "gsrcl", record_name, species, tissue, platform, cells, genes, types,
                              archive=archive, record_url=f"{GSRCL_FILES}/{quote(archive)}/content")


def _afrcl(row) -> PublishedReference:
    name, record_name, species, tissue, platform, cells, genes, types = row
    return PublishedReference(name, "afrcl", record_name, species, tissue, platform, cells, genes, types,
                              archive=f"{name}.zip")


PUBLISHED: tuple[PublishedReference, ...] = tuple(_gsrcl(r) for r in _DATASETS) + tuple(_afrcl(r) for r in _DATASETS)
"""Every published reference, GsRCL's then AF-RCL's, each in the order of the original README's table."""


def _key(name: str) -> str:
    return name.strip().casefold().replace(" ", "_")


def published(method: str | None = None) -> tuple[PublishedReference, ...]:
    """The published references, of ``method`` only when it is given."""
    return tuple(r for r in PUBLISHED if method is None or r.method == method)


def names(method: str | None = None) -> list[str]:
    """The names ``find`` knows, once each, in table order."""
    return list(dict.fromkeys(r.name for r in published(method)))


def find(name: str, method: str = "gsrcl") -> PublishedReference:
    """The published reference ``name`` of ``method``.

    The name is matched without regard to case, and a space matches ``_`` (the record's ``Baron Human`` is
    gsrcl's ``Baron_Human``).

    Raises
    ------
    InvalidReferenceError
        For a name the table does not hold (the message lists the names it holds).
    """
    for ref in published(method):
        if _key(name) in {_key(ref.name), _key(ref.record_name)}:
            return ref
    raise InvalidReferenceError(
        f"{name!r} is not a published {method} reference; the published ones are: {', '.join(names(method))} "
        "(see 'gsrcl references available')"
    )


def size_text(size: int | None) -> str:
    """A byte count in words (``"1.2 GB"``), or ``"unknown"``."""
    if size is None:
        return UNKNOWN
    if size < 1000:
        return f"{size} B"
    value, unit = float(size) / 1000, "kB"
    for bigger in ("MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{value:.1f} {unit}"
