"""Which files of an original reference folder (or its zip) make which part of the reference.

The two layouts (docs/methods.md §2):

- GsRCL: ``<R>-reference-genes.csv``; for each cell type with an encoder ``<type>--<tag>.pt`` and
  ``<type>--svm.joblib`` (the SVM on the encoder's output); for a type without one, a single
  ``<type>--<tag>.joblib`` (the SVM on the genes).
- AF-RCL: ``<R>-reference-genes.csv``, ``<R>_pretrained_encoder.pt``, ``<R>_svm.joblib`` and
  ``<R>_cell_type_dict.joblib``.

Files are paired by name, never by the order a directory lists them in (the original's defect): a type with two
encoders, an encoder without its ``--svm.joblib``, or a file that belongs to neither layout is refused with one
line naming what was found and what was expected. Hidden files and ``__MACOSX`` folders (left by archivers) are
ignored.

A zip is unpacked member by member into a folder of ours: members that would land outside it (absolute paths,
``..``) or that are links are refused before anything is written.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import CorruptFileError, InvalidReferenceError, MissingPathError, UnsafeFileError

__all__ = ["OriginalLayout", "GsRCLTask", "find_layout", "unpack_zip", "read_genes", "METHODS", "NA_NAMES"]

METHODS = ("gsrcl", "afrcl")
LABELS = {"gsrcl": "GsRCL", "afrcl": "AF-RCL"}
GENES_SUFFIX = "-reference-genes.csv"
# pandas' default missing-value strings: the original reads the genes file with pandas, which turns such a line
# into NaN, a gene no query gene ever matches; such a file is refused rather than kept with a gene that is silently
# always zero.
NA_NAMES = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                      "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
_EXPECTED = ("expected GsRCL's <R>-reference-genes.csv with <type>--<tag>.pt + <type>--svm.joblib (or a single "
             "<type>--<tag>.joblib) per cell type, or AF-RCL's <R>-reference-genes.csv, <R>_pretrained_encoder.pt, "
             "<R>_svm.joblib and <R>_cell_type_dict.joblib")


@dataclass(frozen=True)
class GsRCLTask:
    """One GsRCL cell type: its encoder checkpoint (None: the SVM takes the genes) and its SVM."""

    cell_type: str
    encoder: Path | None
    svm: Path


@dataclass(frozen=True)
class OriginalLayout:
    """The files of one original reference, paired by name.

    Attributes
    ----------
    method : {"gsrcl", "afrcl"}
    folder : pathlib.Path
    name : str
        The reference's own name, ``<R>`` of its genes file.
    genes : pathlib.Path
    tasks : list of GsRCLTask
        GsRCL's cell types, sorted by name (empty for AF-RCL).
    encoder, svm, cell_type_dict : pathlib.Path or None
        AF-RCL's three files (None for GsRCL).
    """

    method: str
    folder: Path
    name: str
    genes: Path
    tasks: list[GsRCLTask] = field(default_factory=list)
    encoder: Path | None = None
    svm: Path | None = None
    cell_type_dict: Path | None = None

    @property
    def files(self) -> list[Path]:
        """Every file the reference is made of, sorted by name."""
        paths = [self.genes, self.encoder, self.svm, self.cell_type_dict]
        paths += [p for t in self.tasks for p in (t.encoder, t.svm)]
        return sorted((p for p in paths if p is not None), key=lambda p: p.name)


def _ignored(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _reference_folder(folder: Path) -> Path:
    """``folder`` itself when it holds a genes file, else its only sub-folder that does (a zip's top folder, or
    the -mp folder of the original holding one reference)."""
    if any(p.name.endswith(GENES_SUFFIX) for p in folder.iterdir()):
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and not _ignored(p.name)]
    inner = [p for p in subs if any(q.name.endswith(GENES_SUFFIX) for q in p.iterdir())]
    if len(inner) == 1 and len(subs) == 1:
        return inner[0]
    if len(inner) > 1:
        raise InvalidReferenceError(f"{folder} holds several original references ({', '.join(p.name for p in inner[:4])}"
                                    "): import them one at a time, giving each one's folder")
    raise InvalidReferenceError(f"{folder} is not an original GsRCL/AF-RCL reference: no *{GENES_SUFFIX} file; "
                                f"{_EXPECTED}")


def find_layout(folder: str | Path, method: str | None = None) -> OriginalLayout:
    """The files of the original reference in ``folder``, recognised by their names and paired by name.

    Parameters
    ----------
    folder : str or pathlib.Path
        The reference's folder (``MP/REF``), or a folder whose only sub-folder it is.
    method : {"gsrcl", "afrcl"}, optional
        The layout expected; None: recognised from the names.

    Raises
    ------
    MissingPathError
        When ``folder`` does not exist.
    InvalidReferenceError
        For a folder in neither layout, in the other layout than ``method``, or whose files do not pair up.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingPathError(f"{folder} does not exist or is not a folder: give the original reference's folder "
                               "or its .zip")
    folder = _reference_folder(folder)
    entries = sorted(p for p in folder.iterdir() if not _ignored(p.name))
    found = ", ".join(p.name for p in entries[:8]) + (f", ... ({len(entries) - 8} more)" if len(entries) > 8 else "")
    genes = [p for p in entries if p.name.endswith(GENES_SUFFIX)]
    if len(genes) != 1:
        raise InvalidReferenceError(f"{folder} holds {len(genes)} *{GENES_SUFFIX} files ({found}): an original "
                                    "reference has exactly one")
    name = genes[0].name[: -len(GENES_SUFFIX)]
    others = [p for p in entries if p != genes[0]]
    dirs = [p.name for p in others if p.is_dir()]
    if dirs:
        raise InvalidReferenceError(f"{folder} holds folders ({', '.join(dirs[:3])}) besides the reference's files; "
                                    f"{_EXPECTED}")
    afrcl = {f"{name}_pretrained_encoder.pt", f"{name}_svm.joblib", f"{name}_cell_type_dict.joblib"}
    names = {p.name for p in others}
    detected = "afrcl" if afrcl & names else "gsrcl" if any("--" in n for n in names) else None
    if detected is None:
        raise InvalidReferenceError(f"{folder} is in neither original layout: found {found}; {_EXPECTED}")
    if method is not None and method != detected:
        raise InvalidReferenceError(f"{folder} holds an original {LABELS[detected]} reference, not {LABELS[method]}: "
                                    f"drop --method or give --method {detected}")
    if detected == "afrcl":
        missing, stray = sorted(afrcl - names), sorted(names - afrcl)
        if missing or stray:
            raise InvalidReferenceError(
                f"{folder}: an AF-RCL reference named {name!r} holds exactly {', '.join(sorted(afrcl))} beside its "
                f"genes file; " + "; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                                            + ([f"unexpected {', '.join(stray[:4])}"] if stray else [])))
        return OriginalLayout("afrcl", folder, name, genes[0], encoder=folder / f"{name}_pretrained_encoder.pt",
                              svm=folder / f"{name}_svm.joblib", cell_type_dict=folder / f"{name}_cell_type_dict.joblib")
    return OriginalLayout("gsrcl", folder, name, genes[0], tasks=_pair_gsrcl(folder, others))


def _pair_gsrcl(folder: Path, files: list[Path]) -> list[GsRCLTask]:
    stray = [p.name for p in files if "--" not in p.name or p.suffix not in (".pt", ".joblib")]
    if stray:
        raise InvalidReferenceError(f"{folder}: {', '.join(stray[:4])} belong(s) to no cell type of a GsRCL "
                                    "reference (<type>--<tag>.pt or <type>--<tag>.joblib): remove or move them")
    by_type: dict[str, list[Path]] = {}
    for p in files:
        by_type.setdefault(p.name.split("--", 1)[0], []).append(p)
    tasks = []
    for cell_type in sorted(by_type):
        group = by_type[cell_type]
        pts = [p for p in group if p.suffix == ".pt"]
        svms = [p for p in group if p.suffix == ".joblib"]
        if not cell_type:
            raise InvalidReferenceError(f"{folder}: {group[0].name} names no cell type before '--'")
        if len(pts) > 1:
            raise InvalidReferenceError(
                f"{folder}: cell type {cell_type!r} has {len(pts)} encoders ({', '.join(p.name for p in pts)}); the "
                "original would use whichever the file system lists first: keep one")
        if pts:
            svm = folder / f"{cell_type}--svm.joblib"
            if svm not in svms or len(svms) != 1:
                raise InvalidReferenceError(
                    f"{folder}: cell type {cell_type!r} has the encoder {pts[0].name}, so its SVM must be "
                    f"{svm.name} alone; found {', '.join(p.name for p in svms) or 'no .joblib'}")
            tasks.append(GsRCLTask(cell_type, pts[0], svm))
        elif len(svms) == 1:
            tasks.append(GsRCLTask(cell_type, None, svms[0]))
        else:
            raise InvalidReferenceError(
                f"{folder}: cell type {cell_type!r} has no encoder and {len(svms)} SVMs "
                f"({', '.join(p.name for p in svms)}): a type without an encoder has one <type>--<tag>.joblib")
    if len(tasks) < 2:
        raise InvalidReferenceError(f"{folder}: a GsRCL reference needs at least two cell types, found {len(tasks)}")
    return tasks


def read_genes(path: str | Path) -> list[str]:
    """The reference genes, one per line in model input order (blank lines skipped, ``\\r\\n`` endings
    accepted, surrounding quotes removed as a CSV reader does).

    Raises
    ------
    InvalidReferenceError
        For a file that is not text, holds a line of several fields, a name pandas reads as missing
        (`NA_NAMES`: the original never matches such a gene), or a name twice.
    """
    import csv

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as exc:
        raise InvalidReferenceError(f"{path.name} cannot be read as text ({exc}): it should list one gene per "
                                    "line") from None
    genes = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != 1:
            raise InvalidReferenceError(f"{path.name}, line {number}: {len(row)} fields; the genes file lists one "
                                        "gene per line")
        gene = row[0]
        if gene in NA_NAMES or gene.strip() in NA_NAMES:
            raise InvalidReferenceError(
                f"{path.name}, line {number}: {gene!r} is read as a missing value by the original (pandas), so that "
                "encoder input is always zero there; gsrcl refuses such a genes file: name the gene or rebuild the "
                "reference")
        genes.append(gene)
    seen: set[str] = set()
    twice = next((g for g in genes if g in seen or seen.add(g)), None)
    if twice is not None:
        raise InvalidReferenceError(f"{path.name} lists the gene {twice!r} twice: the original's alignment needs "
                                    "unique genes")
    if not genes:
        raise InvalidReferenceError(f"{path.name} lists no genes")
    return genes


def unpack_zip(archive: str | Path, into: str | Path) -> Path:
    """Unpack ``archive`` into the empty folder ``into``; return the folder of the reference inside it.

    Every member's path is checked before anything is written: absolute paths, ``..`` parts, drive letters and
    links are refused. The members' total size must fit the free space.

    Raises
    ------
    CorruptFileError
        For a file that is not a complete zip archive, or a member whose checksum fails.
    UnsafeFileError
        For a member that would land outside ``into`` or is a link.
    DiskFullError
        When the unpacked members would not fit.
    """
    from ..errors import DiskFullError

    archive, into = Path(archive), Path(into)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CorruptFileError(f"{archive.name} is not a complete zip archive ({exc}): the file is truncated or "
                               "damaged; download it again") from None
    with zf:
        members = []
        for info in zf.infolist():
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise UnsafeFileError(f"{archive.name} holds the member {info.filename!r}, which would be written "
                                      "outside the folder it is unpacked into: refused, nothing unpacked")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeFileError(f"{archive.name} holds the link {info.filename!r}: an original reference holds "
                                      "plain files only; refused, nothing unpacked")
            if info.is_dir() or any(_ignored(p) for p in parts):
                continue
            members.append((info, parts))
        needed = sum(info.file_size for info, _ in members)
        free = shutil.disk_usage(into).free
        if needed > free:
            raise DiskFullError(f"{archive.name} unpacks to {needed / 1e9:.1f} GB, more than the {free / 1e9:.1f} GB "
                                f"free where it is imported: free some space")
        for info, parts in members:
            target = into.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "xb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, EOFError, ValueError) as exc:
                raise CorruptFileError(f"{archive.name}: the member {info.filename!r} is damaged ({exc}): "
                                       "download the archive again") from None
    return into
