"""``gsrcl references``: list the references in a folder."""

from __future__ import annotations

from ..reference import list_references


def register(sub) -> None:
    p = sub.add_parser("references", help="list the references in a folder",
                       description="List the references under REFDIR with their method, cell types and genes.")
    p.add_argument("-mp", "--model-path", required=True, metavar="REFDIR", help="folder holding the references")
    p.add_argument("-q", "--quiet", action="store_true", help="names only")
    p.set_defaults(func=run)


def run(args) -> int:
    rows = list_references(args.model_path)
    if not rows:
        print(f"No references in {args.model_path}. Build one with 'gsrcl train'.")
        return 0
    for row in rows:
        if args.quiet:
            print(row["name"])
        elif "error" in row:
            print(f"{row['name']}: not usable ({row['error']})")
        else:
            types = ", ".join(row["cell_types"])
            print(f"{row['name']}: {row['method']} ({row['preset']}), {row['n_genes']} genes, "
                  f"{len(row['cell_types'])} cell types: {types}; created {row['created']} by gsrcl {row['gsrcl_version']}")
    return 0
