"""`c360 serve`: the lookup API (JSON under /v1, OpenAPI at /docs) and the Customer 360 page (HTML).

The API authenticates every request by `Authorization: Bearer <key>`, with keys from `api.keys` in c360.yaml
or `C360_API_KEY`. The page signs a person in once with the same key and keeps a signed session cookie (valid 12 hours, checkable
by every server process).
Errors are JSON `{"error": {"status": ..., "message": ...}}`; nothing internal (no stack trace, no key) ever
reaches a client or the log.
"""


import hashlib
import hmac
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from c360_pipelines.config import C360Config, ConfigError
from c360_pipelines.lookup import BadRequest, Customer360, NotFound

SESSION_COOKIE = "c360_session"
SESSION_SECONDS = 12 * 3600
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "web" / "templates"))


def _display(value: Any) -> str:
    """A value as a person reads it: 1,234.5 for numbers, 2024-02-28 15:15 for times."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if not value.is_integer() else f"{int(value):,}"
    if isinstance(value, int):
        return f"{value:,}"
    text = str(value)
    if len(text) >= 16 and text[4] == "-" and text[10] in "T ":
        return text[:16].replace("T", " ").removesuffix(" 00:00")
    return text


TEMPLATES.env.filters["display"] = _display
log = logging.getLogger("c360.api")


class Unauthorized(Exception):
    """No key, or a key that is not one of the configured ones."""


def create_app(config: C360Config) -> FastAPI:
    """The API and page for one project. Refuses to start without at least one API key."""
    keys = config.api.resolved_keys()
    if not keys:
        raise ConfigError(f"{config.config_path}: no API key: set C360_API_KEY or add 'api: {{keys: [...]}}' "
                          "(each key a string or {env: NAME})")
    reader = Customer360(config)
    bearer = HTTPBearer(auto_error=False, description="An API key from c360.yaml `api.keys` or C360_API_KEY.")
    app = FastAPI(title="c360 lookup API", version="1",
                  description="Find a customer by anything any system knows about them, and see the whole person.")

    def known(key: str | None) -> bool:
        return bool(key) and any(hmac.compare_digest(key.encode(), k.encode()) for k in keys)  # type: ignore[union-attr]

    def api_key(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if credentials is None or credentials.scheme.lower() != "bearer" or not known(credentials.credentials):
            raise Unauthorized()

    def session_for(key: str) -> str:
        """`<issued>.<nonce>.<HMAC by the key>`: any server process holding the keys can check it, none stores it."""
        claim = f"{int(time.time())}.{secrets.token_urlsafe(16)}"
        return f"{claim}.{hmac.new(key.encode(), claim.encode(), hashlib.sha256).hexdigest()}"

    def signed_in(request: Request) -> bool:
        issued, _, rest = request.cookies.get(SESSION_COOKIE, "").partition(".")
        nonce, _, signature = rest.partition(".")
        if not issued.isdigit() or time.time() - int(issued) > SESSION_SECONDS:
            return False
        claim = f"{issued}.{nonce}".encode()
        return any(hmac.compare_digest(hmac.new(k.encode(), claim, hashlib.sha256).hexdigest(), signature) for k in keys)

    _install_error_handlers(app)
    authorised = [Depends(api_key)]

    # ------------------------------------------------------------------------------------- the API

    @app.get("/v1/profiles/{c360_id}", dependencies=authorised, tags=["profiles"],
             summary="A golden profile, its contact points, provenance and insights")
    def get_profile(c360_id: str) -> Response:
        """A retired (merged) ID answers with the survivor's profile, with `redirected: true`."""
        return _json(reader.profile(c360_id))

    @app.get("/v1/lookup/{source}/{source_record_id}", dependencies=authorised, tags=["profiles"],
             summary="Universal ID lookup: any source key to its 360 ID and profile")
    def lookup(source: str, source_record_id: str) -> Response:
        return _json(reader.lookup(source, source_record_id))

    @app.get("/v1/search", dependencies=authorised, tags=["profiles"], summary="Find people, ranked")
    def search(email: Annotated[str | None, Query(max_length=320)] = None,
               phone: Annotated[str | None, Query(max_length=64)] = None,
               name: Annotated[str | None, Query(max_length=200)] = None,
               postal_code: Annotated[str | None, Query(max_length=20)] = None) -> Response:
        """The query is standardised like source data: a phone in any format, an email in any case."""
        return _json(reader.search(email, phone, name, postal_code))

    @app.get("/v1/profiles/{c360_id}/records", dependencies=authorised, tags=["profiles"],
             summary="Every linked source record, with the link evidence")
    def records(c360_id: str) -> Response:
        return _json(reader.records(c360_id))

    @app.get("/v1/profiles/{c360_id}/timeline", dependencies=authorised, tags=["profiles"],
             summary="Engagement and profile events, newest first, paged")
    def timeline(c360_id: str, page: Annotated[int, Query(ge=1, le=10_000)] = 1,
                 page_size: Annotated[int, Query(ge=1, le=100)] = 25) -> Response:
        return _json(reader.timeline(c360_id, page, page_size))

    # ------------------------------------------------------------------------------------ the page

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request, error: str | None = None) -> Response:
        return TEMPLATES.TemplateResponse(request, "login.html", {"error": error})

    @app.post("/login", include_in_schema=False)
    def login(key: Annotated[str, Form(max_length=500)]) -> Response:
        if not known(key):
            return RedirectResponse("/login?error=That+key+is+not+valid", status_code=303)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, session_for(key), httponly=True, samesite="strict", max_age=SESSION_SECONDS)
        return response

    @app.get("/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request, email: str | None = None, phone: str | None = None, name: str | None = None,
             postal_code: str | None = None) -> Response:
        if not signed_in(request):
            return RedirectResponse("/login", status_code=303)
        query = {"email": email, "phone": phone, "name": name, "postal_code": postal_code}
        results, error = None, None
        if any(query.values()):
            try:
                results = reader.search(**{k: (v[:320] if v else None) for k, v in query.items()})
            except BadRequest as problem:
                error = str(problem)
        return TEMPLATES.TemplateResponse(request, "search.html", {"query": query, "results": results, "error": error})

    @app.get("/people/{c360_id}", response_class=HTMLResponse, include_in_schema=False)
    def person(request: Request, c360_id: str, page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> Response:
        if not signed_in(request):
            return RedirectResponse("/login", status_code=303)
        try:
            profile = reader.profile(c360_id)
        except (NotFound, BadRequest) as problem:
            return TEMPLATES.TemplateResponse(request, "missing.html", {"message": str(problem)}, status_code=404)
        if profile["redirected"]:
            return RedirectResponse(f"/people/{profile['c360_id']}?{urlencode({'from': c360_id})}", status_code=303)
        linked = reader.records(profile["c360_id"])["records"]
        by_system: dict[str, list[dict[str, Any]]] = {}
        for record in linked:
            by_system.setdefault(record["source"], []).append(record)
        return TEMPLATES.TemplateResponse(request, "person.html", {
            "p": profile, "by_system": by_system, "timeline": reader.timeline(profile["c360_id"], page, 20),
            "history": reader.merge_history(profile["c360_id"]), "came_from": request.query_params.get("from")})

    return app


def _json(body: dict[str, Any]) -> Response:
    """Serialise with json directly: the readers return plain JSON types, so FastAPI's generic encoder (a
    recursive walk of every value) is work for nothing (measured: about 0.6 ms of 8 ms per profile)."""
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), media_type="application/json")


def app_from_environment() -> FastAPI:
    """The app for the c360.yaml in `C360_CONFIG`: the factory each `c360 serve --workers N` process calls."""
    from c360_pipelines.config import load_config

    return create_app(load_config())


def _install_error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)

    @app.exception_handler(Unauthorized)
    def unauthorized(_: Request, __: Unauthorized) -> JSONResponse:
        response = error(401, "missing or unknown API key: send 'Authorization: Bearer <key>'")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(NotFound)
    def not_found(_: Request, problem: NotFound) -> JSONResponse:
        return error(404, str(problem))

    @app.exception_handler(BadRequest)
    def bad_request(_: Request, problem: BadRequest) -> JSONResponse:
        return error(400, str(problem))

    @app.exception_handler(RequestValidationError)
    def invalid(_: Request, problem: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in problem.errors())
        return error(400, details or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    def http_error(_: Request, problem: StarletteHTTPException) -> JSONResponse:
        return error(problem.status_code, str(problem.detail))

    @app.exception_handler(Exception)
    def unexpected(request: Request, problem: Exception) -> JSONResponse:
        log.error("unexpected %s on %s %s", type(problem).__name__, request.method, request.url.path)
        return error(500, "internal error; the server log has the details")
