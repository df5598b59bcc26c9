"""The Open Inference Protocol (KServe V2) over REST, beside the product spec's own routes:
what Triton, KServe and Seldon MLServer clients speak.

    GET  /v2                                   server metadata
    GET  /v2/health/live, /v2/health/ready     probes (open, like /health)
    GET  /v2/models/{name}[/versions/{v}]      model metadata: inputs, outputs, versions
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer

Every registered model is served, plugins included, with no per-model code: tensors map
onto queries and results in one place (`api.tensors`). A request of one row is one
`engine.apredict` (batched with its neighbours like any request); N rows are one
`engine.apredict_many`. The binary tensor data extension is supported both ways
(`binary_data_size`, `binary_data_output`, `binary_data`). Errors are the protocol's
`{"error": "..."}`; `ApiMiddleware` applies the API's request ids, keys, rate limits, body
limits, metrics and access log to these paths as to the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api import tensors, wire
from api.errors import ApiError, inference_error_body, status_of
from api.middleware import header, uint
from api.queries import LARGE_BODY, read_body, timeout_of
from api.service import Service
from ml.errors import DeadlineExceeded, InvalidInput, MLError, Overloaded, UnknownModel

logger = logging.getLogger("api")

PREFIX = "/v2"
SERVER_NAME = "realtime-ml"
SERVER_VERSION = "1.0.0"
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "realtime-ml"
HEADER_LENGTH = "inference-header-content-length"
# request parameters the protocol owns (the rest are the model's)
BINARY_OUTPUT, TIMEOUT_US = "binary_data_output", "timeout"


# -- documents (encoded through these types; /openapi.json documents the same) ----------------

class ServerMetadata(msgspec.Struct):
    """The server's name, version and protocol extensions."""

    name: str
    version: str
    extensions: list[str]


class TensorMetadata(msgspec.Struct):
    """An input or output: name, datatype and shape (-1: any size; the first is the batch)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(msgspec.Struct):
    """A model's versions, platform, inputs, outputs, and the request parameters it takes
    (by name: bool, int64, double or string)."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, str]


class LiveResponse(msgspec.Struct):
    """Liveness: the process answers."""

    live: bool


class ReadyResponse(msgspec.Struct):
    """Readiness: warmed up and not draining."""

    ready: bool


class ModelReadyResponse(msgspec.Struct):
    """Whether the model is loaded and serving."""

    name: str
    ready: bool


class ResponseTensor(msgspec.Struct, omit_defaults=True):
    """An output: its data in JSON (row-major), or its size in the binary part."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class InferenceResponse(msgspec.Struct, omit_defaults=True):
    """The outputs of an inference request, with the model's version and the request's id;
    `parameters.latency_ms` is the model time (queue wait plus compute)."""

    model_name: str
    model_version: str
    outputs: list[ResponseTensor]
    id: str | None = None
    parameters: dict[str, Any] | None = None


class InferenceError(msgspec.Struct):
    """The protocol's error: one message."""

    error: str


class _Refused(Exception):
    """A request answered with the protocol's error: status and message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None
                 ) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


_encode = msgspec.json.Encoder().encode
_decode_request = msgspec.json.Decoder(tensors.InferenceRequest).decode
_LIVE, _READY, _NOT_READY = (_encode(LiveResponse(True)), _encode(ReadyResponse(True)),
                             _encode(ReadyResponse(False)))


def status_for(exc: Exception) -> tuple[int, str, dict[str, str]]:
    """The V2 status, message and headers of an error (invalid input is a 400 here)."""
    if isinstance(exc, _Refused):
        return exc.status, exc.message, exc.headers
    if isinstance(exc, tensors.TensorError):
        return 400, str(exc), {}
    if isinstance(exc, ApiError):
        return exc.status, exc.message, exc.headers
    if isinstance(exc, InvalidInput):
        return 400, exc.message, {}
    if isinstance(exc, Overloaded):
        return 503, exc.message, {"retry-after": str(max(1, round(exc.retry_after_s)))}
    if isinstance(exc, MLError):
        status = status_of(exc)
        if status >= 500 and not isinstance(exc, DeadlineExceeded):
            logger.error("ml error %s: %s", exc.code, exc.message)
        return status, exc.message, {}
    if isinstance(exc, msgspec.ValidationError):
        return 400, f"the request does not fit the protocol: {exc}", {}
    if isinstance(exc, (msgspec.DecodeError, UnicodeDecodeError)):
        return 400, f"request body is not valid JSON: {exc}", {}
    raise exc


async def _send(send: Send, status: int, body: bytes, headers: dict[str, str] | None = None,
                media_type: bytes = b"application/json") -> None:
    raw = [(b"content-type", media_type), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Inference:
    """The V2 endpoints as one ASGI app over a service and the models' REST operations."""

    def __init__(self, service: Service, ops: Sequence[wire.Operation | str]) -> None:
        self.service = service
        self.ops = {path.rsplit("/", 1)[1]: op for op in ops
                    if isinstance(op, wire.Operation) for path in op.paths}

    def paths(self) -> list[str]:
        """Every concrete V2 path (for metrics' route names and the direct dispatch)."""
        found = [PREFIX, f"{PREFIX}/health/live", f"{PREFIX}/health/ready"]
        for name, op in self.ops.items():
            for base in (f"{PREFIX}/models/{name}",
                         f"{PREFIX}/models/{name}/versions/{op.model.version}"):
                found += [base, f"{base}/ready", f"{base}/infer"]
        return found

    def infer_paths(self, op: wire.Operation | None = None) -> list[str]:
        """The infer paths of every model (or of `op` alone)."""
        names = [n for n, o in self.ops.items() if op is None or o is op]
        return [path for path in self.paths() if path.endswith("/infer")
                and path.split("/")[3] in names]

    def routes(self) -> list[Route]:
        """Starlette routes that hand every /v2 path to this app (it routes them itself)."""
        return [Route(PREFIX, self), Route(PREFIX + "/{path:path}", self)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body, headers, media_type = await self._answer(scope, receive)
        except ClientDisconnect:
            return
        except Exception as exc:  # noqa: BLE001 - every error gets the protocol's shape
            status, message, headers = status_for(exc)
            body, media_type = inference_error_body(message), b"application/json"
        await _send(send, status, body, headers, media_type)

    async def _answer(self, scope: Scope, receive: Receive
                      ) -> tuple[int, bytes, dict[str, str], bytes]:
        path, method = str(scope["path"]), scope["method"]
        parts = path[len(PREFIX):].strip("/").split("/") if path != PREFIX else []
        json = b"application/json"
        if parts[:1] == ["models"] and len(parts) >= 2:
            name, rest = parts[1], parts[2:]
            if rest[:1] == ["versions"] and len(rest) >= 2:
                version, rest = rest[1], rest[2:]
            else:
                version = None
            op = self._operation(name, version)
            verb = rest[0] if len(rest) == 1 else None if not rest else "?"
            if verb == "infer":
                self._method(method, "POST", path)
                return await self._infer(scope, receive, op)
            if verb in (None, "ready"):
                self._method(method, "GET", path)
                return 200, (self._metadata(op) if verb is None else self._ready(op)), {}, json
        elif parts in ([], ["health", "live"], ["health", "ready"]):
            self._method(method, "GET", path)
            if not parts:
                return 200, _encode(ServerMetadata(SERVER_NAME, SERVER_VERSION,
                                                   EXTENSIONS)), {}, json
            if parts[1] == "live":
                return 200, _LIVE, {}, json
            ready = self.service.ready
            return (200 if ready else 503), (_READY if ready else _NOT_READY), {}, json
        raise _Refused(404, f"no endpoint at {path}")

    @staticmethod
    def _method(method: str, allowed: str, path: str) -> None:
        if method != allowed:
            raise _Refused(405, f"{method} is not allowed on {path}", {"allow": allowed})

    def _operation(self, name: str, version: str | None) -> wire.Operation:
        op = self.ops.get(name)
        if op is None:
            raise UnknownModel(name, self.service.registry.names())
        if version is not None and version != op.model.version:
            raise _Refused(404, f"model '{op.name}' has no version '{version}' (it serves "
                                f"'{op.model.version}')")
        return op

    def _metadata(self, op: wire.Operation) -> bytes:
        sig = tensors.signature(op.query, op.result)
        return _encode(ModelMetadata(
            op.name, [op.model.version], PLATFORM,
            [TensorMetadata(**t.metadata()) for t in sig.inputs],
            [TensorMetadata(**t.metadata()) for t in sig.outputs],
            {p.name: p.kind for p in sig.parameters}))

    def _ready(self, op: wire.Operation) -> bytes:
        ready = self.service.registry.loaded(op.name) is not None and \
            self.service.registry.status(op.name).state == "ready"
        if not ready:
            raise _Refused(503, f"model '{op.name}' is not ready "
                                f"({self.service.registry.status(op.name).state})")
        return _encode(ModelReadyResponse(op.name, True))

    async def _infer(self, scope: Scope, receive: Receive, op: wire.Operation
                     ) -> tuple[int, bytes, dict[str, str], bytes]:
        service = self.service
        timeout = timeout_of(scope, service)
        body = await read_body(receive)
        if len(body) > LARGE_BODY:
            async with service.large_bodies:
                await asyncio.sleep(0)  # whoever else is ready runs first
                request, binary = _parse(scope, body)
        else:
            request, binary = _parse(scope, body)
        sig = tensors.signature(op.query, op.result)
        parameters = dict(request.parameters)
        binary_output = parameters.pop(BINARY_OUTPUT, False)
        if TIMEOUT_US in parameters and sig.parameter(TIMEOUT_US) is None:
            timeout = min(timeout, _timeout_s(parameters.pop(TIMEOUT_US)))
        queries = self._queries(op, sig, request, binary, parameters)
        if len(queries) == 1:
            served = [await service.engine.apredict(op.name, queries[0], timeout_s=timeout)]
        else:
            served = await service.engine.apredict_many(op.name, queries, timeout_s=timeout)
        model = service.registry.loaded(op.name)
        results = [s.result for s in served]
        outputs, blobs = _outputs(sig, results, request.outputs, binary_output is True)
        response = InferenceResponse(
            op.name, model.version if model else op.model.version, outputs,
            request.id if request.id is not None else scope["state"].get("request_id"),
            {"latency_ms": round(max(s.queue_ms + s.compute_ms for s in served), 4)})
        head = _encode(response)
        if not blobs:
            return 200, head, {}, b"application/json"
        return (200, head + b"".join(blobs), {HEADER_LENGTH: str(len(head))},
                b"application/octet-stream")

    def _queries(self, op: wire.Operation, sig: tensors.Signature,
                 request: tensors.InferenceRequest, binary: dict[str, bytes],
                 parameters: dict[str, Any]) -> list[Any]:
        given = {t.name: t for t in request.inputs}
        if len(given) != len(request.inputs):
            raise tensors.TensorError("an input is given twice")
        unknown = [name for name in given if name not in {t.name for t in sig.inputs}]
        if unknown:
            raise tensors.TensorError(
                f"model '{op.name}' has no input '{unknown[0]}' (its inputs: "
                f"{', '.join(t.name for t in sig.inputs)})")
        missing = [t.name for t in sig.inputs if t.name not in given]
        if missing:
            raise tensors.TensorError(f"missing input '{missing[0]}' (model '{op.name}' "
                                      f"takes: {', '.join(t.name for t in sig.inputs)})")
        rows = {given[t.name].shape[0] if given[t.name].shape else 0 for t in sig.inputs}
        if len(rows) != 1:
            raise tensors.TensorError(f"inputs disagree on the batch size: {sorted(rows)}")
        count = rows.pop()
        limit = self.service.engine.settings.max_batch_texts
        if not 1 <= count <= limit:
            raise tensors.TensorError(f"the batch holds {count} rows; send 1 to {limit}")
        columns = {t.name: tensors.elements(t, given[t.name], binary.get(t.name))
                   for t in sig.inputs}
        return tensors.queries(op.query, sig, columns, parameters)


def _parse(scope: Scope, body: bytes) -> tuple[tensors.InferenceRequest, dict[str, bytes]]:
    """The request's JSON part, and each input's binary data (binary tensor extension)."""
    length = header(scope, HEADER_LENGTH.encode())
    if length is None:
        return _decode_request(body), {}
    size = uint(length)
    if size is None or size > len(body):
        raise _Refused(400, f"{HEADER_LENGTH} must be the length of the JSON part "
                            f"(at most {len(body)})")
    request = _decode_request(body[:size])
    binary, offset = {}, size
    for given in request.inputs:
        raw_size = given.parameters.get("binary_data_size")
        if raw_size is None:
            continue
        if not isinstance(raw_size, int) or isinstance(raw_size, bool) or raw_size < 0 \
                or offset + raw_size > len(body):
            raise _Refused(400, f"input '{given.name}': binary_data_size {raw_size!r} does "
                                "not fit the body")
        binary[given.name] = body[offset:offset + raw_size]
        offset += raw_size
    if offset != len(body):
        raise _Refused(400, f"{len(body) - offset} bytes after the last input's binary data")
    return request, binary


def _timeout_s(value: Any) -> float:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1000:
        raise _Refused(400, "parameter 'timeout' is the deadline in microseconds "
                            "(an integer, at least 1000)")
    return float(value) / 1e6


def _outputs(sig: tensors.Signature, results: list[Any],
             wanted: list[tensors.RequestedOutput] | None, binary_default: bool
             ) -> tuple[list[ResponseTensor], list[bytes]]:
    specs = {t.name: t for t in sig.outputs}
    chosen: list[tuple[tensors.Tensor, bool]]
    if wanted is None:
        chosen = [(t, binary_default) for t in sig.outputs]
    else:
        chosen = []
        for output in wanted:
            spec = specs.get(output.name)
            if spec is None:
                raise tensors.TensorError(f"no output '{output.name}' (outputs: "
                                          f"{', '.join(specs)})")
            chosen.append((spec, output.parameters.get("binary_data", binary_default) is True))
    made, blobs = [], []
    for spec, binary in chosen:
        values = tensors.output_values(spec, results)
        if values is None:
            continue
        shape = [len(results), *spec.shape[1:]]
        if binary:
            blob = tensors.to_binary(spec.datatype, values)
            blobs.append(blob)
            made.append(ResponseTensor(spec.name, spec.datatype, shape,
                                       parameters={"binary_data_size": len(blob)}))
        else:
            made.append(ResponseTensor(spec.name, spec.datatype, shape, values))
    return made, blobs
