"""``gsrcl verify``: check a query against a reference and write OUT/verified.h5ad for ``gsrcl predict``."""

from __future__ import annotations

import logging
from pathlib import Path

from ..reference import read_manifest, resolve
from .common import add_common_arguments, add_input_arguments, reader_kwargs

log = logging.getLogger("gsrcl.verify")


def register(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="check a query file against a reference and write OUT/verified.h5ad",
        description="Read a query, check its matrix, names and values, match its genes to the reference "
        "(exact, Ensembl id without version, id/symbol, case-insensitive) and write OUT/verified.h5ad: the "
        "query aligned to the reference genes. Fails when 50% or fewer of the query genes are in the reference "
        "and 50% or fewer of the reference genes are in the query.",
    )
    add_input_arguments(p)
    p.add_argument("-r", "--reference", required=True, metavar="NAME", help="reference name under -mp")
    p.add_argument("-mp", "--model-path", required=True, metavar="REFDIR", help="folder holding the references")
    p.add_argument("-o", "--outdir", default=".", metavar="OUT", help="output folder (default: .)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/verified.h5ad")
    add_common_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import OutputError
    from ..verify import VERIFIED, describe, verify, write_verified

    manifest = read_manifest(resolve(args.model_path, args.reference))
    target = Path(args.outdir) / VERIFIED
    if target.exists() and not args.overwrite:
        raise OutputError(f"{target} exists: pass --overwrite to replace it")
    adata = verify(args.input, manifest, **reader_kwargs(args))
    path = write_verified(adata, args.outdir, overwrite=True)
    record = adata.uns["gsrcl_verify"]
    print(f"The file verified successfully: {adata.n_obs} cells; {describe(record)}.")
    print(f"Values: {record['values_message']}")
    print(f"Wrote {path}")
    return 0
