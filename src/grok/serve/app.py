"""The HTTP API (FastAPI): OpenAI-compatible chat completions, GROK's native reports, the page at `/`.

Routes: `GET /` (the page), `GET /healthz`, and behind the optional bearer token `GET /v1/models`,
`GET /v1/schema` (the biomarker fields the page shows), `POST /v1/chat/completions`, `POST /v1/reports`. Every
refusal is an OpenAI-style error body naming the field; nothing a client sends produces a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from grok.knowledge.base import KnowledgeBase
from grok.serve.batching import Batcher, QueueFullError
from grok.serve.biomarkers import schema_fields
from grok.serve.engine import CaseError, Generated, PreparedCase, ReportEngine
from grok.serve.errors import RequestError, error_body
from grok.serve.reports import SOURCE_NAMES, ReportReader
from grok.serve.requests import ParsedRequest, parse_chat, parse_report
from grok.serve.settings import ServeSettings

STATIC_DIR = Path(__file__).with_name("static")
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class BodyTooLargeError(Exception):
    """The request body passed `limits.max_body_bytes`."""


class BodyLimit:
    """ASGI middleware: refuse bodies over `max_bytes` (by Content-Length, or while they stream in)."""

    def __init__(self, app: Callable, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def error(self) -> JSONResponse:
        message = f"body: over the limit of {self.max_bytes:,} bytes (limits.max_body_bytes)"
        return JSONResponse(error_body(413, message, "body"), status_code=413)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self.error()(scope, receive, send)
            return
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError
            return message

        await self.app(scope, limited, send)


def create_app(engine: ReportEngine, settings: ServeSettings, kb: KnowledgeBase | None = None) -> FastAPI:
    """The ASGI app serving `engine` (its batching queue starts and stops with the app)."""
    kb = kb or engine.record_factory.kb
    reader = ReportReader(kb)
    limits = settings.limits
    batching = settings.batching
    batcher = Batcher(engine.generate, batching.max_batch_size, batching.window_ms, batching.max_queue)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="GROK", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    app.state.engine = engine
    app.state.settings = settings
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(RequestError)
    async def request_error(_: Request, error: RequestError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(BodyTooLargeError)
    async def body_too_large(_: Request, __: BodyTooLargeError) -> JSONResponse:
        return BodyLimit(app, limits.max_body_bytes).error()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {error.detail}"
        return JSONResponse(error_body(error.status_code, message), status_code=error.status_code)

    def authorise(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise RequestError(
                401,
                None,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    guarded = [Depends(authorise)]

    async def prepare(parsed: ParsedRequest) -> PreparedCase:
        try:
            prepared = await run_in_threadpool(engine.prepare, parsed.case)
        except CaseError as error:
            raise RequestError(400, parsed.fields.get(error.part, error.part), str(error)) from error
        if prepared.text_tokens > limits.max_prompt_tokens:
            raise RequestError(
                400,
                parsed.fields.get("prompt"),
                f"the prompt is {prepared.text_tokens:,} tokens, over the limit of {limits.max_prompt_tokens:,} "
                "(limits.max_prompt_tokens)",
            )
        return prepared

    def submit(prepared: PreparedCase, parsed: ParsedRequest, sink: Callable[[str], None] | None) -> asyncio.Future:
        try:
            return batcher.submit(prepared, parsed.sampling, sink)
        except QueueFullError as error:
            raise RequestError(
                503,
                None,
                f"the server is busy: {error}; retry after {batching.retry_after_s} s",
                code="queue_full",
                headers={"Retry-After": str(batching.retry_after_s)},
            ) from error

    async def streamed(prepared: PreparedCase, parsed: ParsedRequest) -> tuple[asyncio.Future, AsyncIterator[str]]:
        """Submit with a text sink; returns the result future and an iterator of the text deltas."""
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str] = asyncio.Queue()
        future = submit(prepared, parsed, lambda text: loop.call_soon_threadsafe(deltas.put_nowait, text))

        async def iterate() -> AsyncIterator[str]:
            try:
                while True:
                    getter = asyncio.ensure_future(deltas.get())
                    done, _ = await asyncio.wait({getter, future}, return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        yield getter.result()
                        continue
                    getter.cancel()
                    while not deltas.empty():
                        yield deltas.get_nowait()
                    return
            finally:
                if not future.done():  # the client went away: drop its result
                    future.cancel()

        return future, iterate()

    def usage(result: Generated) -> dict[str, int]:
        return {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        }

    # ------------------------------------------------------------------------------------------------ routes
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        if not settings.page_enabled:
            raise HTTPException(404, "the page is disabled (page.enabled=false)")
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz")
    async def health() -> dict[str, Any]:
        batches = {str(size): count for size, count in sorted(batcher.batch_sizes.items())}
        return {"status": "ok", "model": settings.model_name, "waiting": batcher.waiting, "batches": batches}

    @app.get("/v1/models", dependencies=guarded)
    async def models() -> dict[str, Any]:
        card = {"id": settings.model_name, "object": "model", "created": created, "owned_by": "grok"}
        return {"object": "list", "data": [card]}

    @app.get("/v1/schema", dependencies=guarded)
    async def schema() -> dict[str, Any]:
        return {
            "model": settings.model_name,
            "modalities": list(engine.modalities),
            "fields": schema_fields(kb, settings.page_modalities),
            "limits": {"max_image_bytes": limits.max_image_bytes, "max_new_tokens": limits.max_new_tokens},
            "sources": dict(SOURCE_NAMES),
        }

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(request: Request) -> Any:
        body = await read_json(request)
        parsed = await run_in_threadpool(parse_chat, body, settings, engine.default_sampling(), engine.reserved_tokens)
        prepared = await prepare(parsed)
        ident, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not parsed.stream:
            result = await submit(prepared, parsed, None)
            return {
                "id": ident,
                "object": "chat.completion",
                "created": now,
                "model": settings.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.text},
                        "finish_reason": result.finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": usage(result),
                "grok": await run_in_threadpool(reader.read, result.text, result.grounding, None),
            }
        future, deltas = await streamed(prepared, parsed)

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            body = {"id": ident, "object": "chat.completion.chunk", "created": now, "model": settings.model_name}
            return sse({**body, "choices": [choice], **extra})

        async def events() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            async for text in deltas:
                yield chunk({"content": text})
            try:
                result = future.result()
            except Exception as error:  # generation failed after the stream began: say so in the stream
                yield sse(error_body(500, f"generation failed: {type(error).__name__}"))
                return
            yield chunk({}, result.finish_reason)
            if parsed.include_usage:
                body = {"id": ident, "object": "chat.completion.chunk", "created": now, "model": settings.model_name}
                yield sse({**body, "choices": [], "usage": usage(result)})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/reports", dependencies=guarded)
    async def reports(request: Request) -> Any:
        body = await read_json(request)
        parsed = await run_in_threadpool(parse_report, body, settings, engine.default_sampling(), kb.schema)
        prepared = await prepare(parsed)
        ident, now = f"report-{uuid.uuid4().hex}", int(time.time())

        def report(result: Generated) -> dict[str, Any]:
            return {
                "id": ident,
                "object": "grok.report",
                "created": now,
                "model": settings.model_name,
                "images": sorted(parsed.case.images),
                "report": result.text,
                **reader.read(result.text, result.grounding, parsed.case.biomarkers),
                "finish_reason": result.finish_reason,
                "usage": usage(result),
            }

        if not parsed.stream:
            return await run_in_threadpool(report, await submit(prepared, parsed, None))
        future, deltas = await streamed(prepared, parsed)

        async def events() -> AsyncIterator[str]:
            async for text in deltas:
                yield sse({"type": "delta", "text": text})
            try:
                result = future.result()
            except Exception as error:
                yield sse({"type": "error", **error_body(500, f"generation failed: {type(error).__name__}")})
                return
            yield sse({"type": "report", **(await run_in_threadpool(report, result))})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


async def read_json(request: Request) -> Any:
    """The request body as JSON, or a 400 saying why not."""
    body = await request.body()
    if not body.strip():
        raise RequestError(400, "body", "empty; expected a JSON object")
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise RequestError(400, "body", f"not valid JSON ({error.msg} at {where})") from error
    except (ValueError, RecursionError) as error:
        raise RequestError(400, "body", f"not valid JSON ({type(error).__name__})") from error


def sse(data: Any) -> str:
    """One server-sent event carrying `data` as JSON."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
