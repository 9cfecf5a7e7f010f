"""The HTTP polling API: unacknowledged leads, acknowledgment, raw MIME, metrics.

The API runs in the ``leadparse serve`` process on its own port (127.0.0.1:8025
by default) and only when at least one token is configured. Every route
except ``GET /healthz`` and signed attachment downloads needs an
``Authorization: Bearer <token>`` header. Errors are JSON objects of the form
``{"error": {"code": ..., "message": ...}}``. ``docs/api.md`` describes the
endpoints and ``docs/openapi.json`` is their OpenAPI 3.1 document.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from leadparse.server import metrics
from leadparse.server.config import ApiSettings, Settings
from leadparse.server.crypto import DecryptionError
from leadparse.server.store import Store, StoredLead
from leadparse.store import URL_SCHEME, FileSystemStore, InvalidSignatureError

__all__ = [
    "ApiServer",
    "attachment_root",
    "create_app",
    "load_openapi_document",
    "run",
    "url_secret",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CURSOR_PREFIX = "v1:"
_MAX_ACK_IDS = 1000
_MAX_JSON_BYTES = 1024 * 1024
_STORE_URL_PREFIX = f"{URL_SCHEME}:///"
_SECRET_FILE = "api-url-secret"
_REJECTION_LOG_INTERVAL = 10.0

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

# Route scopes. None means any valid token; routes missing here need none.
_PUBLIC = "public"


@dataclass(frozen=True)
class _Token:
    name: str
    digest: bytes
    scopes: frozenset[str]


@dataclass(frozen=True)
class _Context:
    store: Store
    settings: ApiSettings
    tokens: tuple[_Token, ...]
    attachment_store: FileSystemStore | None
    executor: Executor | None
    base_url: str | None
    """Start of links in responses; ``None`` uses the request's scheme and host."""


class ApiError(Exception):
    """An error returned to the client as a JSON error object."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


_CONTEXT = web.AppKey("context", _Context)
# Name of the token that authenticated the current request; the middleware
# sets it in the request's task before the handler runs.
_TOKEN_NAME: contextvars.ContextVar[str] = contextvars.ContextVar("api_token_name")
_REJECTIONS = web.AppKey("rejections", dict)


def _requires(scope: str | None) -> Callable[[_Handler], _Handler]:
    """Mark a handler with the scope it needs; ``_PUBLIC`` needs no token."""

    def mark(handler: _Handler) -> _Handler:
        handler.required_scope = scope  # type: ignore[attr-defined]
        return handler

    return mark


def _error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status
    )


# -- secrets, cursors and documents ---------------------------------------------


def url_secret(settings: ApiSettings, data_dir: Path) -> bytes:
    """Return the HMAC key of signed attachment URLs.

    The configured ``api.url_secret`` when set; otherwise a random 32-byte key
    kept in ``data_dir/api-url-secret`` (mode 0600), created on first use, so
    URLs stay valid across restarts.
    """
    if settings.url_secret is not None:
        return settings.url_secret.get_secret_value().encode()
    path = data_dir / _SECRET_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    import os
    import secrets

    key = secrets.token_bytes(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key)
    return key


def encode_cursor(lead_id: int) -> str:
    """Return the opaque cursor that continues after lead row *lead_id*."""
    text = f"{_CURSOR_PREFIX}{lead_id}".encode()
    return base64.urlsafe_b64encode(text).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> int:
    """Return the lead row id inside a cursor made by :func:`encode_cursor`.

    Raises:
        ApiError: the cursor is not one this API returned.
    """
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError(text)
        lead_id = int(text[len(_CURSOR_PREFIX) :])
    except (ValueError, UnicodeError, binascii.Error):
        raise ApiError(
            400,
            "invalid_cursor",
            "cursor is not valid; pass a next_cursor value from a previous "
            "response, or no cursor to start at the oldest lead",
        ) from None
    # Row ids are SQLite and PostgreSQL 64-bit integers.
    if not 0 <= lead_id < 2**63:
        raise ApiError(400, "invalid_cursor", "cursor is not valid")
    return lead_id


def load_openapi_document() -> dict[str, Any]:
    """Return the OpenAPI document, from the package or from the source tree."""
    packaged = resources.files("leadparse.server").joinpath("openapi.json")
    if packaged.is_file():
        text = packaged.read_text(encoding="utf-8")
    else:
        # An editable install runs from the source tree, where docs/ is the
        # only copy; wheels carry the file inside the package.
        source = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"
        text = source.read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


# -- middleware -------------------------------------------------------------------


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def _errors_middleware(
    request: web.Request, handler: _Handler
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ApiError as exc:
        response = _error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _STATUS_CODES.get(exc.status, "http_error")
        response = _error_response(exc.status, code, exc.reason)
    except Exception:
        logger.exception(
            "API request failed: method=%s route=%s",
            request.method,
            _route_label(request),
        )
        response = _error_response(500, "internal_error", "internal server error")
    metrics.API_REQUESTS.inc(route=_route_label(request), status=str(response.status))
    return response


@web.middleware
async def _auth_middleware(
    request: web.Request, handler: _Handler
) -> web.StreamResponse:
    route_handler = request.match_info.handler
    scope = getattr(route_handler, "required_scope", _PUBLIC)
    if request.match_info.http_exception is not None or scope == _PUBLIC:
        return await handler(request)
    context = request.app[_CONTEXT]
    token = _authenticate(request, context)
    if token is None:
        _log_rejection(request, "missing or invalid bearer token")
        raise ApiError(
            401,
            "unauthorized",
            "missing or invalid bearer token; send 'Authorization: Bearer <token>'",
        )
    if scope is not None and scope not in token.scopes:
        _log_rejection(request, f"token {token.name!r} lacks scope {scope}")
        raise ApiError(
            403, "forbidden", f"this token lacks the {scope!r} scope for this route"
        )
    _TOKEN_NAME.set(token.name)
    return await handler(request)


def _authenticate(request: web.Request, context: _Context) -> _Token | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    digest = hashlib.sha256(value.strip().encode()).digest()
    found = None
    # Every token is compared, so the time taken does not tell which matched.
    for token in context.tokens:
        if hmac.compare_digest(token.digest, digest):
            found = token
    return found


def _log_rejection(request: web.Request, reason: str) -> None:
    # The token itself is never logged. Repeated rejections are counted and
    # logged at most once per interval, so a client in a loop cannot fill the log.
    state = request.app[_REJECTIONS]
    state["count"] = state.get("count", 0) + 1
    now = time.monotonic()
    if now - state.get("logged_at", -_REJECTION_LOG_INTERVAL) < _REJECTION_LOG_INTERVAL:
        return
    logger.warning(
        "API request rejected: %s; method=%s route=%s remote=%s "
        "rejections_since_last_log=%d",
        reason,
        request.method,
        _route_label(request),
        request.remote,
        state["count"],
    )
    state["count"] = 0
    state["logged_at"] = now


# -- helpers ------------------------------------------------------------------


async def _run(request: web.Request, func: Callable[..., _T], *args: Any) -> _T:
    context = request.app[_CONTEXT]
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(context.executor, func, *args)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"expected Content-Type application/json, got {request.content_type!r}",
        )
    if request.content_length is not None and request.content_length > _MAX_JSON_BYTES:
        raise ApiError(
            413, "payload_too_large", f"request body exceeds {_MAX_JSON_BYTES} bytes"
        )
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    return body


def _query_int(
    request: web.Request, name: str, default: int, minimum: int, maximum: int
) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_parameter", f"{name} must be an integer, got {raw[:40]!r}"
        ) from None
    if not minimum <= value <= maximum:
        raise ApiError(
            400,
            "invalid_parameter",
            f"{name} must be between {minimum} and {maximum}, got {value}",
        )
    return value


def _base_url(request: web.Request) -> str:
    configured = request.app[_CONTEXT].base_url
    return configured or f"{request.scheme}://{request.host}"


def _present(request: web.Request, lead: StoredLead) -> dict[str, Any]:
    """Return the API form of a stored lead, with store URLs made reachable."""
    context = request.app[_CONTEXT]
    base_url = _base_url(request)
    payload = json.loads(json.dumps(lead.payload))
    for attachment in payload.get("attachments") or []:
        attachment["url"] = _attachment_url(context, base_url, attachment.get("url"))
    provenance = payload.get("provenance")
    if isinstance(provenance, dict) and provenance.get("raw_mime_url"):
        # The raw message is served to tokens with raw:read only, never by
        # signed URL, so the link points at the authenticated endpoint.
        provenance["raw_mime_url"] = f"{base_url}/v1/leads/{lead.public_id}/raw"
    return {
        "id": lead.public_id,
        "kind": lead.kind,
        "created_at": lead.created_at.isoformat(),
        "updated_at": lead.updated_at.isoformat(),
        "acknowledged_at": lead.acked_at.isoformat() if lead.acked_at else None,
        "lead": payload,
    }


def _attachment_url(context: _Context, base_url: str, url: Any) -> str | None:
    if (
        not isinstance(url, str)
        or not url.startswith(_STORE_URL_PREFIX)
        or context.attachment_store is None
    ):
        return None
    signed = context.attachment_store.sign(url, expires_in=context.settings.url_ttl)
    sha256 = url[len(_STORE_URL_PREFIX) :]
    query = signed.partition("?")[2]
    return f"{base_url}/v1/attachments/{sha256}?{query}"


async def _lead_or_404(request: web.Request) -> StoredLead:
    public_id = request.match_info["id"]
    lead = await _run(request, request.app[_CONTEXT].store.get_lead, public_id)
    if lead is None:
        raise ApiError(404, "lead_not_found", f"no lead with id {public_id[:80]!r}")
    return lead


# -- handlers -----------------------------------------------------------------


@_requires(_PUBLIC)
async def healthz(request: web.Request) -> web.Response:
    """Report that the process serves requests."""
    return web.json_response({"status": "ok"})


@_requires(None)
async def openapi(request: web.Request) -> web.Response:
    """Return the OpenAPI document."""
    document = await _run(request, load_openapi_document)
    return web.json_response(document)


@_requires(None)
async def metrics_text(request: web.Request) -> web.Response:
    """Return the metrics in the Prometheus text format."""
    store = request.app[_CONTEXT].store
    unacked = await _run(request, store.count_unacked_leads)
    stats = await _run(request, store.stats)
    metrics.LEADS_UNACKNOWLEDGED.set(unacked)
    for state, count in stats.jobs_by_state.items():
        metrics.JOBS.set(count, state=state)
    return web.Response(
        body=metrics.REGISTRY.render().encode(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


@_requires("leads:read")
async def list_leads(request: web.Request) -> web.Response:
    """Return a page of unacknowledged leads, oldest first."""
    context = request.app[_CONTEXT]
    settings = context.settings
    limit = _query_int(request, "limit", settings.page_size, 1, settings.max_page_size)
    cursor = request.query.get("cursor") or None
    after_id = decode_cursor(cursor) if cursor else 0
    # One extra row shows whether another page follows.
    rows = await _run(
        request,
        lambda: context.store.unacked_leads(after_id=after_id, limit=limit + 1),
    )
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].id) if page else cursor
    return web.json_response(
        {
            "leads": [_present(request, lead) for lead in page],
            "next_cursor": next_cursor,
            "has_more": len(rows) > limit,
        }
    )


@_requires("leads:read")
async def ack_leads(request: web.Request) -> web.Response:
    """Acknowledge leads by id, so they leave the unacknowledged list."""
    body = await _json_body(request)
    ids = body.get("ids")
    if (
        not isinstance(ids, list)
        or not ids
        or not all(isinstance(item, str) for item in ids)
    ):
        raise ApiError(
            400, "invalid_ids", "ids must be a non-empty array of lead id strings"
        )
    if len(ids) > _MAX_ACK_IDS:
        raise ApiError(
            400,
            "too_many_ids",
            f"at most {_MAX_ACK_IDS} ids per request, got {len(ids)}; split them",
        )
    store = request.app[_CONTEXT].store
    token_name = _TOKEN_NAME.get()
    result = await _run(request, lambda: store.ack_leads(ids, token_name=token_name))
    logger.info(
        "leads acknowledged: token=%s acknowledged=%d already=%d unknown=%d",
        token_name,
        len(result.acknowledged),
        len(result.already_acknowledged),
        len(result.unknown),
    )
    return web.json_response(
        {
            "acknowledged": result.acknowledged,
            "already_acknowledged": result.already_acknowledged,
            "unknown": result.unknown,
        }
    )


@_requires("leads:read")
async def get_lead(request: web.Request) -> web.Response:
    """Return one lead, acknowledged or not."""
    lead = await _lead_or_404(request)
    return web.json_response(_present(request, lead))


@_requires("raw:read")
async def get_raw(request: web.Request) -> web.Response:
    """Return the stored raw MIME of a lead's message, decrypted."""
    lead = await _lead_or_404(request)
    store = request.app[_CONTEXT].store
    try:
        message = await _run(request, store.get_message, lead.message_id)
    except KeyError:
        raise ApiError(
            404, "lead_not_found", f"no message for lead {lead.public_id}"
        ) from None
    except DecryptionError as exc:
        logger.error(
            "raw message cannot be decrypted: lead=%s error=%s", lead.public_id, exc
        )
        raise ApiError(
            500,
            "decryption_failed",
            "the stored message cannot be decrypted with the configured keys",
        ) from None
    return web.Response(
        body=message.raw,
        headers={
            "Content-Type": "message/rfc822",
            "Content-Disposition": f'attachment; filename="{lead.public_id}.eml"',
            "X-Content-Type-Options": "nosniff",
        },
    )


@_requires(_PUBLIC)
async def get_attachment(request: web.Request) -> web.Response:
    """Return attachment bytes for a URL signed by this server; no token needed."""
    context = request.app[_CONTEXT]
    if context.attachment_store is None:
        raise ApiError(404, "attachments_disabled", "attachment storage is off")
    sha256 = request.match_info["sha256"]
    store = context.attachment_store
    try:
        store.path_for(sha256)
        store.verify(f"{store.url_for(sha256)}?{request.query_string}")
    except InvalidSignatureError as exc:
        raise ApiError(403, "invalid_signature", str(exc)) from None
    except ValueError:
        raise ApiError(
            404, "attachment_not_found", "no attachment with this digest"
        ) from None
    try:
        data = await _run(request, store.open, store.url_for(sha256))
    except ValueError:
        raise ApiError(
            404, "attachment_not_found", "no attachment with this digest"
        ) from None
    return web.Response(
        body=data,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": "attachment",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=300",
        },
    )


@_requires("admin")
async def replay_dead_letters(request: web.Request) -> web.Response:
    """Return dead-lettered webhook deliveries to the delivery queue."""
    body = await _json_body(request)
    endpoint = body.get("endpoint")
    if endpoint is not None and not isinstance(endpoint, str):
        raise ApiError(400, "invalid_endpoint", "endpoint must be a string or absent")
    ids = body.get("ids")
    if ids is not None and (
        not isinstance(ids, list)
        or not all(isinstance(item, int) and not isinstance(item, bool) for item in ids)
    ):
        raise ApiError(400, "invalid_ids", "ids must be an array of delivery ids")
    store = request.app[_CONTEXT].store
    actor = f"api:{_TOKEN_NAME.get()}"

    def replay() -> list[int]:
        # Listed ids are limited to dead letters, so this route never resends
        # a delivery that succeeded.
        dead = [record.id for record in store.dead_letters(endpoint=endpoint)]
        chosen = dead if ids is None else [item for item in dead if item in set(ids)]
        if not chosen:
            return []
        return store.replay_deliveries(chosen, at=datetime.now(UTC), actor=actor)

    replayed = await _run(request, replay)
    logger.info(
        "dead letters replayed: token=%s count=%d", _TOKEN_NAME.get(), len(replayed)
    )
    return web.json_response({"replayed": replayed})


@_requires("admin")
async def forget(request: web.Request) -> web.Response:
    """Delete every message and lead of one email address."""
    body = await _json_body(request)
    email = body.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise ApiError(400, "invalid_email", "email must be an email address string")
    store = request.app[_CONTEXT].store
    actor = f"api:{_TOKEN_NAME.get()}"
    count = await _run(request, lambda: store.forget(email, actor=actor))
    return web.json_response({"deleted_messages": count})


# -- application and server ---------------------------------------------------


def create_app(
    store: Store,
    settings: ApiSettings,
    *,
    attachment_store: FileSystemStore | None = None,
    executor: Executor | None = None,
    base_url: str | None = None,
) -> web.Application:
    """Build the aiohttp application of the API.

    Args:
        store: where leads and messages are read.
        settings: the ``[api]`` settings, with the tokens.
        attachment_store: a store with a secret, whose objects are served by
            signed URL; ``None`` turns attachment URLs off.
        executor: threads for blocking store calls; the loop's default when
            ``None``.
        base_url: scheme, host and port that links in responses start with.
            When ``None``, ``api.public_url`` is used, or else the request's
            own scheme and Host header.
    """
    tokens = tuple(
        _Token(
            name=name,
            digest=hashlib.sha256(token.token.get_secret_value().encode()).digest(),
            scopes=frozenset(token.scopes),
        )
        for name, token in settings.all_tokens().items()
    )
    base = base_url or settings.public_url
    app = web.Application(
        middlewares=[_errors_middleware, _auth_middleware],
        client_max_size=_MAX_JSON_BYTES,
    )
    app[_CONTEXT] = _Context(
        store=store,
        settings=settings,
        tokens=tokens,
        attachment_store=attachment_store,
        executor=executor,
        base_url=base.rstrip("/") if base else None,
    )
    app[_REJECTIONS] = {}
    routes = [
        web.get("/healthz", healthz, allow_head=False),
        web.get("/openapi.json", openapi, allow_head=False),
        web.get("/metrics", metrics_text, allow_head=False),
        web.get("/v1/leads", list_leads, allow_head=False),
        web.post("/v1/leads/ack", ack_leads),
        web.get("/v1/leads/{id}", get_lead, allow_head=False),
        web.get("/v1/leads/{id}/raw", get_raw, allow_head=False),
        web.get("/v1/attachments/{sha256}", get_attachment, allow_head=False),
        web.post("/v1/admin/dlq/replay", replay_dead_letters),
        web.post("/v1/admin/forget", forget),
    ]
    app.add_routes(routes)
    return app


class ApiServer:
    """The API application on a TCP listener, started and stopped by the server.

    Args:
        app: the application from :func:`create_app`.
        host: address to listen on.
        port: TCP port; 0 picks a free one, readable from :attr:`port`.
    """

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self.port = port

    async def start(self) -> None:
        """Bind the listener and begin serving requests."""
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        logger.info("API listening: host=%s port=%d", self._host, self.port)

    async def stop(self) -> None:
        """Close the listener and finish open requests."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            logger.info("API stopped")


def attachment_root(settings: Settings) -> Path | None:
    """Return the folder where parses store attachments, or ``None`` when off.

    Off when the API has no token, when ``api.attachments`` is false, and
    when encryption at rest is configured, because attachment files would
    be written in clear.
    """
    if not settings.api.attachments or not settings.api.all_tokens():
        return None
    if settings.encryption.keys:
        return None
    return settings.storage.data_dir / "attachments"


async def run(
    settings: Settings,
    store: Store,
    stop: asyncio.Event,
    *,
    on_started: Callable[[int], None] | None = None,
) -> None:
    """Serve the API until *stop* is set; return at once when no token is set.

    Args:
        settings: the complete configuration; ``[api]`` and the data folder
            are read.
        store: where leads and messages are read.
        stop: ends the run when set.
        on_started: called with the bound port once requests are served.
    """
    if not settings.api.all_tokens():
        logger.info(
            "API off: no token configured; set api.token, [api.tokens.NAME] "
            "or --api-token to serve the polling API"
        )
        return
    root = attachment_root(settings)
    if settings.api.attachments and root is None:
        logger.warning(
            "attachment URLs off: encryption at rest is on and attachment "
            "files would be stored in clear"
        )
    attachments = None
    if root is not None:
        secret = url_secret(settings.api, settings.storage.data_dir)
        attachments = FileSystemStore(root, secret=secret)
    app = create_app(store, settings.api, attachment_store=attachments)
    server = ApiServer(app, settings.api.host, settings.api.port)
    try:
        await server.start()
    except OSError as exc:
        # A configured API that cannot listen is a deployment error, so the
        # whole server stops instead of running without it.
        logger.error(
            "API cannot listen on %s:%d: %s; stopping the server",
            settings.api.host,
            settings.api.port,
            exc,
        )
        await server.stop()
        stop.set()
        return
    try:
        if on_started is not None:
            on_started(server.port)
        await stop.wait()
    finally:
        await server.stop()
