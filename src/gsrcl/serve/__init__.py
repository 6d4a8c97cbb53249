"""``gsrcl serve``: a web page and a small JSON API for the two steps (verify, predict) on the user's machine.

The server process only accepts uploads, answers the page and reads results; every verify and prediction runs in
a worker process (`gsrcl.serve.pool`). Modules: `config` (the server's settings, checked once), `jobs` (job state
in SQLite), `uploads` (an upload streamed to disk under a size limit; zip archives of a 10x folder), `worker`
(one job: verify, then predict as ``gsrcl predict`` does), `pool` (the worker processes), `results` (the cells
table of a finished job), `app` (the routes) and ``static/`` (the page: plain HTML, JavaScript and CSS).
"""

from .config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def create_app(config: ServeConfig, *, start_workers: bool = True):
    """The FastAPI application serving ``config`` (`gsrcl.serve.app.create_app`)."""
    from .app import create_app as _create

    return _create(config, start_workers=start_workers)
