"""The routes of ``gsrcl serve``: the page (``/``, ``/static``) and the JSON API (``/api``).

Every input is checked here, once: job ids by their form (`gsrcl.serve.jobs.valid_id`), reference names by
`gsrcl.reference.resolve` (no paths), p by `gsrcl.cutoff.check_p`, key paths as 1-3 keys, file names against
`gsrcl.outputs.OUTPUTS`. Errors are JSON ``{"error": one line, "exit_code": code}``.
"""

from __future__ import annotations

import hmac
import logging
import shutil
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import GsrclError
from ..outputs import OUTPUTS
from .config import ServeConfig
from .jobs import JobStore, new_id, valid_id
from .pool import WorkerPool
from .uploads import MultipartUpload, UploadRefused

log = logging.getLogger("gsrcl.serve")

COOKIE = "gsrcl_token"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
MEDIA = {".csv": "text/csv", ".svg": "image/svg+xml", ".txt": "text/plain", ".h5ad": "application/x-hdf5"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.status, self.message, self.exit_code = status, message, exit_code


def _error(status: int, message: str, exit_code: int | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "exit_code": exit_code}, status_code=status)


def _flag(value) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _key_path(value, what: str) -> list[str] | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    keys = value.split() if isinstance(value, str) else [str(k) for k in value]
    if not 1 <= len(keys) <= 3 or any(len(k) > 200 for k in keys):
        raise ApiError(400, f"{what} must be 1 to 3 keys separated by spaces, e.g. 'matrix features id'")
    return keys


class Api:
    """The checks and answers behind the routes, for one configuration."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.store = JobStore(config.db_path)
        self.pool = WorkerPool(config, self.store)

    # --- checks ----------------------------------------------------------------------------------------------
    def reference(self, name) -> str:
        from ..reference import MANIFEST, resolve

        if not name:
            raise ApiError(400, "choose a reference (GET /api/references lists them)")
        try:
            path = resolve(self.config.refdir, str(name))
        except GsrclError as exc:
            raise ApiError(400, exc.message, exc.exit_code) from None
        if not (path / MANIFEST).is_file():
            raise ApiError(400, f"no reference named {name!r}: GET /api/references lists them", 81)
        return str(name)

    def params(self, fields: dict, base: dict | None = None) -> dict:
        """A job's parameters from form or JSON fields (missing ones from ``base``), each checked."""
        from ..cutoff import check_p

        base = dict(base or {})
        out = {"reference": self.reference(fields.get("reference", base.get("reference")))}
        p = fields.get("p", base.get("p", 0.5))
        try:
            out["p"] = check_p(float(p if p not in ("", None) else 0.5))
        except (TypeError, ValueError) as exc:
            raise ApiError(400, f"p: {exc}" if str(exc) else f"p must be a number in [0, 1], not {p!r}") from None
        for key, what in (("mat", "the matrix key path (-mat)"), ("obs", "the obs key path (-obs)"),
                          ("var", "the var key path (-var)")):
            out[key] = _key_path(fields[key], what) if key in fields else base.get(key)
        out["transpose"] = _flag(fields["transpose"]) if "transpose" in fields else bool(base.get("transpose"))
        return out

    def job(self, job_id: str) -> dict:
        if not valid_id(job_id):
            raise ApiError(404, "no such job: a job id is 32 hexadecimal digits")
        job = self.store.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id} (removed, or never made)")
        return job

    def public(self, job: dict, messages: bool = True) -> dict:
        """What the API shows of a job (no server paths); ``messages``: the last lines of its log."""
        keys = ("id", "created", "updated", "state", "phase", "stage", "progress", "upload_name", "size", "params",
                "verify", "result", "error", "exit_code", "detail", "run")
        out = {k: job[k] for k in keys}
        out["messages"] = self.messages(job["id"]) if messages else []
        return out

    def messages(self, job_id: str, n: int = 20) -> list[str]:
        """The last ``n`` distinct lines of a job's log."""
        from .worker import LOG

        path = self.config.jobs_dir / job_id / LOG
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        return list(dict.fromkeys(line for line in lines if line.strip()))[-n:]  # verify and predict repeat some

    def authorised(self, request: Request) -> bool:
        token = self.config.token
        if not token:
            return True
        given = request.headers.get("authorization", "")
        given = given[7:] if given.lower().startswith("bearer ") else request.cookies.get(COOKIE, "")
        return hmac.compare_digest(given.encode(), token.encode())


def create_app(config: ServeConfig, *, start_workers: bool = True) -> FastAPI:
    """The application: the page, the API, and (with ``start_workers``) the worker pool, started with it."""
    api = Api(config)

    @asynccontextmanager
    async def lifespan(app):
        interrupted = api.store.interrupt_running()
        if interrupted:
            log.warning("gsrcl serve: %d jobs were running when the server stopped: marked interrupted",
                        len(interrupted))
        if start_workers:
            api.pool.start()
            if config.keep_days is not None:
                api.pool.remove_old()
        try:
            yield
        finally:
            if start_workers:
                api.pool.stop()

    app = FastAPI(title="gsrcl serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.api = api

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return _error(exc.status, exc.message, exc.exit_code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        return _error(exc.status_code, "no such page or API route" if exc.status_code == 404 else str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        where = ", ".join(str(e.get("loc", ["?"])[-1]) for e in exc.errors())
        return _error(400, f"bad value of {where}")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for k, v in HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    def require_token(request: Request) -> None:
        if not api.authorised(request):
            raise ApiError(401, "this server needs its token: send 'Authorization: Bearer TOKEN' (the page asks "
                                "for it once)")

    static = resources.files("gsrcl.serve") / "static"

    page = (static / "index.html").read_bytes()

    @app.get("/", include_in_schema=False)
    async def index():
        return Response(page, media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/api/config")
    def server_config():
        return {"version": __version__, "token_required": bool(config.token),
                "max_upload_bytes": config.max_upload_bytes, "workers": config.workers, "outputs": list(OUTPUTS)}

    @app.post("/api/login")
    async def login(request: Request):
        try:
            body = await request.json()
        except ValueError:
            body = {}
        token = str(body.get("token", "")) if isinstance(body, dict) else ""
        if config.token and not hmac.compare_digest(token.encode(), config.token.encode()):
            raise ApiError(401, "wrong token")
        response = JSONResponse({"ok": True})
        if config.token:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    r = APIRouter(prefix="/api", dependencies=[Depends(require_token)])

    @r.get("/references")
    def references():
        from ..reference import list_references

        try:
            rows = list_references(config.refdir)
        except GsrclError as exc:
            raise ApiError(500, exc.message, exc.exit_code) from None
        return [{"name": row["name"], "method": row.get("method"), "preset": row.get("preset"),
                 "n_genes": row.get("n_genes"), "cell_types": row.get("cell_types"), "created": row.get("created"),
                 "error": row.get("error")} for row in rows]

    @r.post("/jobs", status_code=201)
    async def create_job(request: Request):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > config.max_upload_bytes + (1 << 16):
            raise ApiError(413, f"the upload is larger than this server's limit of "
                                f"{config.max_upload_bytes / (1 << 20):g} MB (gsrcl serve --max-upload-mb)")
        job_id = new_id()
        folder = config.jobs_dir / job_id
        (folder / "input").mkdir(parents=True, mode=0o700)
        try:
            upload = MultipartUpload(request.headers.get("content-type", ""), folder / "input",
                                     config.max_upload_bytes)
            async for chunk in request.stream():
                upload.feed(chunk)
            upload.finish()
            params = api.params(upload.fields)
            run = _flag(upload.fields.get("run", "1"))
        except UploadRefused as exc:
            shutil.rmtree(folder, ignore_errors=True)
            response = _error(exc.status, exc.message)
            response.headers["Connection"] = "close"  # the rest of a refused body is not read
            return response
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        job = api.store.create(job_id, upload_name=upload.file_name, size=upload.size, params=params, run=run,
                               input_path=str(upload.file_path.relative_to(folder)))
        return api.public(job)

    @r.get("/jobs")
    def jobs():
        return [api.public(j, messages=False) for j in api.store.list()]

    @r.get("/jobs/{job_id}")
    def job(job_id: str):
        return api.public(api.job(job_id))

    async def _body(request: Request) -> dict:
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "send the settings as a JSON object") from None
        if not isinstance(body, dict):
            raise ApiError(400, "send the settings as a JSON object")
        return body

    @r.post("/jobs/{job_id}/verify")
    async def reverify(job_id: str, request: Request):
        job = api.job(job_id)
        params = api.params(await _body(request), base=job["params"])
        if not api.store.requeue(job_id, "verify", params=params, run=False):
            raise ApiError(409, f"job {job_id} is {job['state']}: it can be verified again once it has stopped, "
                                "and not after it is done")
        return api.public(api.store.get(job_id))

    @r.post("/jobs/{job_id}/start")
    async def start(job_id: str, request: Request):
        job = api.job(job_id)
        params = api.params(await _body(request), base=job["params"])
        keys = ("reference", "mat", "obs", "var", "transpose")
        phase = "predict" if job["verify"] and all(params[k] == job["params"].get(k) for k in keys) else "verify"
        if not api.store.requeue(job_id, phase, params=params, run=True):
            raise ApiError(409, f"job {job_id} is {job['state']}: only a verified, failed or interrupted job starts")
        return api.public(api.store.get(job_id))

    @r.get("/jobs/{job_id}/cells")
    def cells(job_id: str, offset: int = 0, limit: int = 50, sort: str = "barcode", order: str = "asc",
              label: str | None = None):
        from . import results
        from ..outputs import ANNOTATED
        from .worker import OUT

        job = api.job(job_id)
        if job["state"] != "done":
            raise ApiError(409, f"job {job_id} is {job['state']}: its cells are shown once it is done")
        if sort not in results.SORTABLE:
            raise ApiError(400, f"sort must be one of {', '.join(results.SORTABLE)}")
        if order not in ("asc", "desc") or offset < 0 or not 1 <= limit <= results.MAX_PAGE:
            raise ApiError(400, f"order is asc or desc, offset at least 0, limit 1 to {results.MAX_PAGE}")
        df = results.table(config.jobs_dir / job_id / OUT / ANNOTATED)
        return results.page(df, offset=offset, limit=limit, sort=sort, descending=order == "desc", label=label)

    @r.get("/jobs/{job_id}/files/{name}")
    def file(job_id: str, name: str, inline: bool = False):
        from .worker import OUT

        job = api.job(job_id)
        if name not in OUTPUTS:
            raise ApiError(404, f"no file {name!r}: the files are {', '.join(OUTPUTS)}")
        path = config.jobs_dir / job_id / OUT / name
        if job["state"] != "done" or not path.is_file():
            raise ApiError(404, f"job {job_id} has no {name} (it is {job['state']})")
        media = MEDIA[Path(name).suffix]
        if inline and name.endswith(".svg"):
            return FileResponse(path, media_type=media, headers={"Content-Security-Policy": "sandbox"})
        return FileResponse(path, media_type=media, filename=name)

    @r.delete("/jobs/{job_id}")
    def delete(job_id: str):
        api.job(job_id)
        api.pool.cancel(job_id)
        api.store.delete(job_id)
        shutil.rmtree(config.jobs_dir / job_id, ignore_errors=True)
        return {"deleted": job_id}

    app.include_router(r)
    return app
