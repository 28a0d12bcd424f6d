"""``rnnkit serve``: one checkpoint behind HTTP, with a page to try it.

    app = create_app(Predictor("runs/demo/bigru/best"))      # a FastAPI app
    serve("runs/demo/bigru/best", host="127.0.0.1", port=8000)  # what `rnnkit serve` runs

Endpoints: ``POST /predict`` takes ``{"text": ...}``, ``{"texts": [...]}`` or ``{"tokens": [...]}``
(plus ``"left_context": true`` for a tagger, ``"probabilities": true`` for a classifier) and
answers ``{"predictions": [...]}``, the records ``rnnkit predict`` prints for the same inputs;
``GET /info`` describes the model, the limits and the batches run so far; ``GET /health``;
``GET /`` is the page (``rnnkit/static/index.html``). Every error is ``{"error": "..."}``.

Requests that arrive together are answered by one model call: each input joins a queue, and a
single worker takes what is pending (up to ``max_batch`` inputs, waiting at most ``max_wait_ms``
for more) and runs ``Predictor.batch`` in a thread of its own, so the event loop keeps accepting
requests while the model runs and the model never runs twice at once.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

__all__ = ["create_app", "serve", "listen"]

_log = logging.getLogger("rnnkit.serve")

FIELDS = ("text", "texts", "tokens", "left_context", "probabilities")
ROUTES = "GET /, GET /health, GET /info, POST /predict"


class _Refusal(Exception):
    """A request the service will not run: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(eq=False)
class _Job:
    """One request's inputs, answered all at once when the last of them has its record."""

    inputs: list[tuple[str, dict]]
    probabilities: bool
    left_context: bool
    future: asyncio.Future
    records: list   # one slot per input, filled as batches answer
    remaining: int  # inputs still without a record


class _Batcher:
    """The queue of pending inputs and the one worker that runs them through the predictor."""

    def __init__(self, predictor, stats: dict, *, max_batch: int, max_wait_ms: float, max_pending: int) -> None:
        self.predictor, self.stats, self.max_pending = predictor, stats, max_pending
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self._pending: deque[tuple[_Job, int]] = deque()
        self._arrived: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        # one thread: the model is called from the same thread every time, never concurrently
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnkit-serve-model")

    async def submit(self, inputs: list[tuple[str, dict]], *, probabilities: bool, left_context: bool) -> list[dict]:
        if self.task is None:  # started on first use: also runs where no lifespan is sent
            self._arrived = asyncio.Event()
            self.task = asyncio.get_running_loop().create_task(self._work())
        if len(self._pending) + len(inputs) > self.max_pending:
            raise _Refusal(503, f"busy: {len(self._pending)} inputs are waiting for the model and this request "
                                f"brings {len(inputs)}; at most max_pending = {self.max_pending} may wait: try again")
        job = _Job(inputs, probabilities, left_context, asyncio.get_running_loop().create_future(),
                   [None] * len(inputs), len(inputs))
        self._pending.extend((job, i) for i in range(len(inputs)))
        self._arrived.set()
        return await job.future

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        for job, _ in self._pending:
            if not job.future.done():
                job.future.set_exception(_Refusal(503, "the service is shutting down"))
        self._pending.clear()
        self.executor.shutdown(wait=True)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = loop.time() + self.max_wait
            while len(self._pending) < self.max_batch and (left := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
            taken = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            # a job is done early when another of its inputs failed, or its request was cancelled
            taken = [(job, i) for job, i in taken if not job.future.done()]
            if not taken:
                continue
            self.stats["batches"] += 1
            try:
                outcomes = await loop.run_in_executor(self.executor, self._compute, taken)
            except Exception as e:  # noqa: BLE001 -- a dead worker would leave every later request hanging
                _log.exception("a batch of %d inputs failed", len(taken))
                outcomes = [e] * len(taken)
            for (job, i), outcome in zip(taken, outcomes):
                if job.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                    continue
                job.records[i] = outcome
                job.remaining -= 1
                if job.remaining == 0:
                    job.future.set_result(job.records)

    def _compute(self, taken: list[tuple[_Job, int]]) -> list:
        """A record (or the exception) per taken input. Runs in the model's thread."""
        outcomes: dict[int, object] = {}
        for probabilities in (False, True):  # probabilities cost a second pass: only where asked
            group = [n for n, (job, _) in enumerate(taken) if job.probabilities == probabilities]
            if not group:
                continue
            try:
                records = self.predictor.batch([taken[n][0].inputs[taken[n][1]] for n in group],
                                               probabilities=probabilities)
                outcomes.update(zip(group, records))
            except Exception:
                # some input passed the checks and still broke the batch (e.g. longer than the
                # model's max_length): run each request alone, so that only its own one fails
                for job in dict.fromkeys(taken[n][0] for n in group):
                    mine = [n for n in group if taken[n][0] is job]
                    try:
                        records = self.predictor.batch([job.inputs[taken[n][1]] for n in mine],
                                                       probabilities=probabilities)
                    except Exception as e:  # noqa: BLE001 -- reported to that request
                        records = [e] * len(mine)
                    outcomes.update(zip(mine, records))
        for n, (job, _) in enumerate(taken):
            record = outcomes[n]
            if job.left_context and not isinstance(record, BaseException):
                try:
                    record["left_context_tags"] = self.predictor.left_context(record["tokens"])
                except Exception as e:  # noqa: BLE001 -- reported to that request
                    outcomes[n] = e
        return [outcomes[n] for n in range(len(taken))]


# ------------------------------------------------------------------------- checking a request

def _type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a bool", type(None): "null"}.get(
        type(value), type(value).__name__)


def _strings(name: str, value) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _Refusal(422, f"{name} must be a non-empty list of strings; got {_type(value)}"
                            + (" (empty)" if value == [] else ""))
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _Refusal(422, f"{name}[{i}] must be a string; got {_type(item)}")
    return value


def _inputs(body, predictor, limits: dict) -> tuple[list[tuple[str, dict]], bool, bool]:
    """The (where, input) pairs of a parsed body, and its left_context and probabilities flags;
    a body the service will not run raises _Refusal (413 over a limit, 422 otherwise)."""
    if not isinstance(body, dict):
        raise _Refusal(422, 'the body must be a JSON object such as {"text": "Teddy bears are on sale"}; '
                            f"got {_type(body)}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise _Refusal(422, f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(FIELDS)}")
    given = [k for k in ("text", "texts", "tokens") if k in body]
    if len(given) != 1:
        raise _Refusal(422, 'give exactly one of "text" (a string), "texts" (a list of strings) or "tokens" '
                            f"(a list of strings); got {', '.join(given) if given else 'none of them'}")
    flags = {}
    for name in ("left_context", "probabilities"):
        flags[name] = body.get(name, False)
        if not isinstance(flags[name], bool):
            raise _Refusal(422, f"{name} must be true or false; got {json.dumps(flags[name])}")
    kind = predictor.kind
    if flags["left_context"] and kind != "SequenceTagger":
        raise _Refusal(422, f"left_context needs a SequenceTagger; this checkpoint holds a {kind}")
    if flags["probabilities"] and not (kind == "SequenceClassifier" and "labels" in predictor.vocabs):
        held = "regression SequenceClassifier" if kind == "SequenceClassifier" else kind
        raise _Refusal(422, f"probabilities need a SequenceClassifier with classes; this checkpoint holds a {held}")

    max_chars, max_texts = limits["max_chars"], limits["max_texts"]
    if "tokens" in body:
        tokens = _strings("tokens", body["tokens"])
        chars = sum(map(len, tokens))
        if chars > max_chars:
            raise _Refusal(413, f"tokens have {chars:,} characters; the limit (max_chars) is {max_chars:,}")
        named = [("tokens", {"tokens": tokens})]
    else:
        if "texts" in body:
            texts = _strings("texts", body["texts"])
            if len(texts) > max_texts:
                raise _Refusal(413, f"texts has {len(texts):,} texts; the limit (max_texts) is {max_texts:,}")
            named = [(f"texts[{i}]", t) for i, t in enumerate(texts)]
        elif isinstance(body["text"], str):
            named = [("text", body["text"])]
        else:
            raise _Refusal(422, f"text must be a string; got {_type(body['text'])}")
        for where, text in named:
            if not text:
                raise _Refusal(422, f"{where} is empty; give a sentence")
            if len(text) > max_chars:
                raise _Refusal(413, f"{where} has {len(text):,} characters; the limit (max_chars) is {max_chars:,}")
        named = [(where, {"text": text}) for where, text in named]
    for where, obj in named:
        try:
            predictor.tokens(obj, where)  # "no tokens" is this request's error, not its batch's
        except ValueError as e:
            raise _Refusal(422, str(e)) from None
    return named, flags["left_context"], flags["probabilities"]


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it is known to be over ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _Refusal(413, f"the body has {int(declared):,} bytes; the limit (max_body) is {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # no or a wrong Content-Length: stop reading here, not at the end
            raise _Refusal(413, f"the body has over {limit:,} bytes; the limit (max_body) is {limit:,}")
        chunks.append(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------------------------ the app

def _info(predictor, limits: dict) -> dict:
    config = predictor.model.config
    labels = predictor.vocabs.get("labels")
    sizes = {"vocab": {name: len(v) for name, v in predictor.vocabs.items() if name != "scaler"}}
    for part in ("encoder", "decoder"):
        if isinstance(config.get(part), dict):
            sizes[part] = {k: config[part].get(k) for k in ("cell", "hidden_sizes", "bidirectional")}
    bidi = sizes.get("encoder", {}).get("bidirectional")
    task = None
    if predictor.kind == "SequenceClassifier":
        task = "regression" if labels is None else "classification"
    return {"kind": predictor.kind, "task": task, "name": predictor.cfg.name,
            "labels": list(labels.itos_) if labels is not None else None,
            "bidirectional": bool(bidi is True or (isinstance(bidi, list) and any(bidi))),
            "sizes": sizes, "checkpoint": str(predictor.path),
            "sha256": predictor.loaded.manifest["files"]["model.safetensors"]["sha256"],
            "backend": predictor.backend, "limits": dict(limits)}


def create_app(predictor, *, max_batch: int = 64, max_wait_ms: float = 5, max_texts: int = 256,
               max_chars: int = 10_000, max_body: int = 1_000_000, max_pending: int = 4096) -> FastAPI:
    """The HTTP service of a loaded ``Predictor`` (see the module docstring).

    max_batch: most inputs in one model call. max_wait_ms: how long the first pending input
    waits for others to join its batch. max_texts, max_chars, max_body: the most texts in one
    request, characters in one text (or in one request's tokens) and bytes in one body; more is
    answered with HTTP 413. max_pending: the most inputs waiting for the model; a request that
    would queue more is answered with HTTP 503 (busy), not left to wait without end.
    """
    if predictor.series:
        raise ValueError(f"{predictor.path}: a series classifier reads .ts files, not text, so it cannot be "
                         f"served; run `rnnkit predict {predictor.path} FILE.ts` instead")
    if predictor.audio:  # audio (issue #17)
        raise ValueError(f"{predictor.path}: an audio model reads a manifest of utterances, not text, so it cannot "
                         f"be served (yet); run `rnnkit predict {predictor.path} MANIFEST.jsonl` instead")
    if predictor.forecast or predictor.kind == "Generator":
        what = "a forecaster reads a series file" if predictor.forecast else "a generator reads class names"
        raise ValueError(f"{predictor.path}: {what}, not text, so it cannot be served (yet); run "
                         f"`rnnkit predict {predictor.path} FILE` instead")
    for name, value in (("max_batch", max_batch), ("max_texts", max_texts), ("max_chars", max_chars),
                        ("max_body", max_body), ("max_pending", max_pending)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) or max_wait_ms < 0:
        raise ValueError(f"max_wait_ms must be a number >= 0; got {max_wait_ms!r}")
    limits = {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_texts": max_texts,
              "max_chars": max_chars, "max_body": max_body, "max_pending": max_pending}
    page = resources.files("rnnkit").joinpath("static/index.html").read_text(encoding="utf-8")
    stats = {"requests": 0, "inputs": 0, "batches": 0}
    batcher = _Batcher(predictor, stats, max_batch=max_batch, max_wait_ms=max_wait_ms, max_pending=max_pending)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.stop()

    app = FastAPI(title="rnnkit serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.predictor, app.state.stats, app.state.batcher = predictor, stats, batcher

    @app.exception_handler(_Refusal)
    async def _refused(request: Request, exc: _Refusal):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return JSONResponse({"error": f"{request.method} {request.url.path}: {exc.detail}; this service "
                                      f"answers {ROUTES}"}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _failed(request: Request, exc: Exception):  # starlette re-raises it after: uvicorn logs it
        return JSONResponse({"error": f"internal error ({type(exc).__name__}: {exc}); the server log has "
                                      "the traceback"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/info")
    async def info():
        return {**_info(predictor, limits), "stats": dict(stats)}

    @app.post("/predict")
    async def predict(request: Request):
        raw = await _body(request, max_body)
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as e:
            raise _Refusal(400, f"the body is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                                'send an object such as {"text": "Teddy bears are on sale"}') from None
        except ValueError as e:  # bytes that are not UTF-8 (or UTF-16/32) text
            raise _Refusal(400, f"the body is not JSON text ({e}); send UTF-8 JSON") from None
        except RecursionError:
            raise _Refusal(400, "the body nests arrays or objects too deeply to parse; send an object "
                                'such as {"text": "Teddy bears are on sale"}') from None
        inputs, left_context, probabilities = _inputs(body, predictor, limits)
        stats["requests"] += 1
        stats["inputs"] += len(inputs)
        try:
            records = await batcher.submit(inputs, probabilities=probabilities, left_context=left_context)
        except _Refusal:
            raise
        except ValueError as e:  # the model refused this request's input (e.g. longer than max_length)
            raise _Refusal(422, str(e)) from None
        except Exception as e:  # noqa: BLE001 -- answered here: an escaped exception costs the connection
            _log.error("POST /predict: the model failed", exc_info=e)
            raise _Refusal(500, f"internal error ({type(e).__name__}: {e}); the server log has the "
                                "traceback") from None
        return {"predictions": records}

    return app


# ------------------------------------------------------------------------------------ serving

def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port. Bound here rather than by uvicorn, so that a port already
    in use is one clear error, before anything is served; port 0 picks a free port."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ValueError(f"--host {host!r}: not an address of this machine ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: no wait after a restart
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ValueError(f"{host}:{port} is already in use (by another server, perhaps another rnnkit "
                             "serve); stop it or choose another --port") from None
        raise ValueError(f"cannot listen on {host}:{port} ({e.strerror})") from None
    return sock


def serve(path: str | Path, *, host: str = "127.0.0.1", port: int = 8000, backend: str = "torch",
          model_file: str | Path | None = None, **limits) -> None:
    """Load the checkpoint at ``path`` once and serve it until interrupted (Ctrl-C).
    ``backend``, ``model_file``: as ``Predictor``'s; ``limits``: ``create_app``'s keyword arguments."""
    from .run import Predictor

    sock = listen(host, port)
    try:
        predictor = Predictor(path, backend=backend, model_file=model_file)
        app = create_app(predictor, **limits)
    except BaseException:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    where = f"[{host}]" if ":" in host else host
    print(f"rnnkit serve: {predictor.kind} from {path} (backend {backend}) on http://{where}:{bound}/ "
          "-- Ctrl-C stops", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, host=host, port=bound, log_level="info")).run(sockets=[sock])
