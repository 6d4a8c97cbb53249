"""``gsrcl serve``: the web page for the two steps (`gsrcl.serve`), on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import logging

from .common import positive_int

log = logging.getLogger("gsrcl.serve")


def _positive_number(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be above 0")
    return value


def register(sub) -> None:
    from ..serve.config import DEFAULT_MAX_UPLOAD_MB

    p = sub.add_parser(
        "serve",
        help="serve a web page to verify and annotate queries with the references of a folder",
        description="Serve a web page (and a JSON API under /api) where a query is uploaded, verified against a "
        "reference of REFDIR and annotated, as 'gsrcl verify' and 'gsrcl predict' do. Jobs run in worker "
        "processes; their state and files are kept under --data, so a restart keeps them.",
        epilog="Binding to an address other than 127.0.0.1 makes the page reachable from other machines, and anyone "
        "who reaches it could run jobs: --token is then required.",
    )
    p.add_argument("-mp", "--model-path", required=True, metavar="REFDIR", help="folder holding the references")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--data", metavar="DIR",
                   help="where jobs are kept (default: $XDG_DATA_HOME/gsrcl/serve or ~/.local/share/gsrcl/serve)")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N", help="jobs run at once (default 1)")
    p.add_argument("--max-upload-mb", type=_positive_number, default=DEFAULT_MAX_UPLOAD_MB, metavar="N",
                   help=f"largest upload accepted, in MB (default {DEFAULT_MAX_UPLOAD_MB})")
    p.add_argument("--token", metavar="T", help="a shared secret every request must carry; required with a --host "
                   "other than loopback (the page asks for it once). The environment variable GSRCL_SERVE_TOKEN "
                   "gives it without showing it in the process list")
    p.add_argument("--keep-days", type=_positive_number, metavar="N",
                   help="remove finished jobs N days after their last change (default: keep them)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.add_argument("-v", "--verbose", action="store_true", help="more messages")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import GsrclError
    from ..serve.config import ServeConfig

    try:
        import uvicorn

        from ..serve import create_app
    except ImportError as exc:
        raise GsrclError(f"gsrcl serve needs {exc.name}: install it with pip install 'gsrcl[serve]'") from None
    import os

    token = args.token if args.token is not None else os.environ.get("GSRCL_SERVE_TOKEN") or None
    config = ServeConfig.checked(args.model_path, data=args.data, workers=args.workers,
                                 max_upload_mb=args.max_upload_mb, token=token, keep_days=args.keep_days,
                                 host=args.host, port=args.port)
    app = create_app(config)
    host = f"[{config.host}]" if ":" in config.host else config.host
    log.warning("gsrcl serve: http://%s:%d/ (references from %s, jobs in %s; Ctrl-C stops)", host, config.port,
                config.refdir, config.data)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning" if not args.verbose else "info",
                server_header=False)
    return 0
