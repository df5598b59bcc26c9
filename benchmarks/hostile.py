"""A catalogue of hostile and broken requests, each with the answer the API documents.

Used by the test suite (in-process and against a real server) and by
`python -m benchmarks reliability`, which writes RELIABILITY.md.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

SENTIMENT, BATCH = "/api/predict/sentiment", "/api/predict/batch"
IMAGE, RECOMMEND = "/api/predict/image", "/api/predict/recommend"
JSON = {"content-type": "application/json"}
V2_SENTIMENT, V2_IMAGE = "/v2/models/sentiment/infer", "/v2/models/image/infer"
# the Open Inference Protocol's routes answer errors as {"error": "message"}: no code
PROTOCOL_ERROR = "(protocol error)"


@dataclass(frozen=True)
class Case:
    """One request and the documented answer: a status and, for errors, the error code."""

    name: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    status: int = 422
    code: str | None = "validation_error"
    method: str = "POST"
    chunked: bool = False  # send the body with Transfer-Encoding: chunked


@dataclass(frozen=True)
class Outcome:
    """What the server answered to one case."""

    case: Case
    status: int
    code: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == self.case.status and self.code == self.case.code


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _image(mode: str, size: tuple[int, int], fmt: str, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, **({"color": 0} if mode != "P" else {})).save(buffer, format=fmt,
                                                                      **kwargs)
    return buffer.getvalue()


def _b64(data: bytes) -> bytes:
    return _json({"image_base64": base64.b64encode(data).decode()})


def _photo_jpeg() -> bytes:
    from ml.samples import sample_photo

    buffer = io.BytesIO()
    sample_photo("coffee").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _multipart(files: list[tuple[str, str, bytes]], fields: dict[str, str] | None = None
               ) -> tuple[bytes, dict[str, str]]:
    boundary = "hostile-boundary-7f3a"
    parts = []
    for name, value in (fields or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f"{value}\r\n".encode())
    for name, filename, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                     .encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def cases(max_body_bytes: int = 12 * 1024 * 1024) -> list[Case]:
    """Every case. Bodies are built here, once (the bomb and the huge image are small
    files that claim enormous sizes)."""
    jpeg = _photo_jpeg()
    png = _image("RGB", (64, 48), "PNG")
    bomb = _image("1", (30_000, 30_000), "PNG")  # 900 Mpx, a few KB of file
    huge = _image("1", (20_000, 20_000), "PNG")  # 400 Mpx
    gif = io.BytesIO()
    frames = [Image.new("P", (32, 32), color=i) for i in range(3)]
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    cmyk = _image("CMYK", (40, 30), "JPEG")
    sixteen = io.BytesIO()
    Image.new("I;16", (40, 30), color=40000).save(sixteen, format="PNG")
    one_file, one_headers = _multipart([("image", "a.png", png)])
    two_files, two_headers = _multipart([("image", "a.png", png), ("image", "b.png", png)])
    no_file, no_file_headers = _multipart([], {"top_k": "3"})
    text_file, text_headers = _multipart([("image", "notes.txt", b"just some text")])
    deep = b"[" * 100_000 + b"]" * 100_000
    bad = "invalid_input"
    return [
        # -- malformed bodies (sentiment) --
        Case("malformed JSON", SENTIMENT, b'{"text": "hi"', status=400, code="malformed_json"),
        Case("truncated JSON", SENTIMENT, b'{"te', status=400, code="malformed_json"),
        Case("empty body", SENTIMENT, b"", status=400, code="malformed_json"),
        Case("JSON array, not object", SENTIMENT, b"[1, 2]"),
        Case("JSON string, not object", SENTIMENT, b'"hello"'),
        # decoding stops at the first wrong type: the nesting is never walked
        Case("100k-deep nesting", SENTIMENT, deep),
        Case("100k-deep nesting in a field", SENTIMENT, b'{"text": ' + deep + b"}"),
        Case("invalid UTF-8", SENTIMENT, b'{"text": "caf\xe9 \xff\xfe"}', status=400,
             code="malformed_json"),
        Case("number beyond float range", SENTIMENT, b'{"text": 1e999}'),
        Case("text is a number", SENTIMENT, _json({"text": 5})),
        Case("text is null", SENTIMENT, _json({"text": None})),
        Case("text is a list", SENTIMENT, _json({"text": ["a", "b"]})),
        Case("text missing", SENTIMENT, _json({})),
        Case("extra field", SENTIMENT, _json({"text": "hi", "admin": True})),
        Case("options.detailed is a string", SENTIMENT,
             _json({"text": "hi", "options": {"detailed": "yes"}})),
        Case("empty text", SENTIMENT, _json({"text": ""}), code=bad),
        Case("whitespace text", SENTIMENT, _json({"text": " \t\n "}), code=bad),
        Case("1 MB text", SENTIMENT, _json({"text": "a" * 1_000_000}), code=bad),
        Case("control characters and emoji", SENTIMENT,
             _json({"text": "ok \x00\x07\x1b[31m 😀🔥 \u202e done"}), status=200, code=None),
        Case("SQL injection text", SENTIMENT,
             _json({"text": "'; DROP TABLE users; --"}), status=200, code=None),
        Case("script injection text", SENTIMENT,
             _json({"text": "<script>alert(1)</script>"}), status=200, code=None),
        Case("wrong content type", SENTIMENT, _json({"text": "hi"}),
             headers={"content-type": "text/plain"}, status=415,
             code="unsupported_media_type"),
        Case("no content type", SENTIMENT, _json({"text": "hi"}), headers={},
             status=415, code="unsupported_media_type"),
        Case("form-encoded body", SENTIMENT, b"text=hi",
             headers={"content-type": "application/x-www-form-urlencoded"}, status=415,
             code="unsupported_media_type"),
        Case("GET on a POST endpoint", SENTIMENT, None, headers={}, method="GET",
             status=405, code="method_not_allowed"),
        Case("unknown endpoint", "/api/predict/everything", _json({}), status=404,
             code="not_found"),
        Case("unknown API version", "/api/v2/predict/sentiment", _json({"text": "hi"}),
             status=404, code="not_found"),
        Case("bad deadline header", SENTIMENT, _json({"text": "hi"}),
             headers={**JSON, "x-request-timeout-ms": "forever"}, status=400,
             code="invalid_timeout"),
        # -- batches --
        Case("batch of 0 texts", BATCH, _json({"texts": []})),
        Case("batch far over the maximum", BATCH, _json({"texts": ["hi"] * 50_000}),
             code=bad),
        Case("batch with a non-string", BATCH, _json({"texts": ["ok", 3]})),
        Case("batch with an empty text", BATCH, _json({"texts": ["ok", ""]}), code=bad),
        Case("batch texts not a list", BATCH, _json({"texts": "hello"})),
        Case("batch for an unknown model", BATCH, _json({"texts": ["hi"], "model": "gpt"})),
        # -- images --
        Case("non-image bytes as an image", IMAGE, _b64(b"%PDF-1.7 not an image"), code=bad),
        Case("garbage base64", IMAGE, _json({"image_base64": "!!!not base64***"}), code=bad),
        Case("empty base64", IMAGE, _json({"image_base64": ""}), code=bad),
        Case("truncated PNG", IMAGE, _b64(png[: len(png) // 2]), code=bad),
        Case("truncated JPEG", IMAGE, _b64(jpeg[: len(jpeg) // 3]), code=bad),
        Case("decompression bomb (900 Mpx)", IMAGE, _b64(bomb), code=bad),
        Case("20000x20000 image", IMAGE, _b64(huge), code=bad),
        Case("animated GIF (first frame)", IMAGE, _b64(gif.getvalue()), status=200, code=None),
        Case("CMYK JPEG", IMAGE, _b64(cmyk), status=200, code=None),
        Case("16-bit PNG", IMAGE, _b64(sixteen.getvalue()), status=200, code=None),
        Case("both base64 and URL", IMAGE, _json({
            "image_base64": base64.b64encode(png).decode(), "image_url": "https://x.test/a"})),
        Case("neither base64 nor URL", IMAGE, _json({"top_k": 3})),
        Case("top_k 0", IMAGE, _json({"image_base64": base64.b64encode(png).decode(),
                                      "top_k": 0})),
        Case("top_k negative", IMAGE, _json({"image_base64": base64.b64encode(png).decode(),
                                             "top_k": -3})),
        Case("top_k huge", IMAGE, _json({"image_base64": base64.b64encode(png).decode(),
                                         "top_k": 10**12})),
        Case("top_k as a string", IMAGE, _json({"image_base64": base64.b64encode(png).decode(),
                                                "top_k": "5"})),
        Case("multipart, one image", IMAGE, one_file, headers=one_headers, status=200,
             code=None),
        Case("multipart with no file", IMAGE, no_file, headers=no_file_headers, code=bad),
        Case("multipart with two files", IMAGE, two_files, headers=two_headers, status=400,
             code="bad_multipart"),
        Case("multipart with a text file", IMAGE, text_file, headers=text_headers, code=bad),
        Case("multipart with a broken boundary", IMAGE, b"--nope\r\n\r\ngarbage",
             headers={"content-type": "multipart/form-data; boundary=other"}, status=400,
             code="bad_multipart"),
        Case("image_url with file://", IMAGE, _json({"image_url": "file:///etc/passwd"}),
             code="url_not_allowed"),
        Case("image_url to loopback", IMAGE, _json({"image_url": "http://127.0.0.1:22/"}),
             code="url_not_allowed"),
        Case("image_url to cloud metadata", IMAGE,
             _json({"image_url": "http://169.254.169.254/latest/meta-data/"}),
             code="url_not_allowed"),
        # -- recommendations --
        Case("unknown household (popular fallback)", RECOMMEND,
             _json({"user_id": "no-such-household-42"}), status=200, code=None),
        Case("SQL injection household id", RECOMMEND,
             _json({"user_id": "1 OR 1=1; DROP TABLE households"}), status=200, code=None),
        Case("limit 0", RECOMMEND, _json({"user_id": "1", "limit": 0})),
        Case("limit negative", RECOMMEND, _json({"user_id": "1", "limit": -5})),
        Case("limit huge", RECOMMEND, _json({"user_id": "1", "limit": 10**9})),
        Case("user_id null", RECOMMEND, _json({"user_id": None})),
        Case("user_id an object", RECOMMEND, _json({"user_id": {"$ne": 1}})),
        Case("unknown category", RECOMMEND,
             _json({"user_id": "1", "context": {"category": "SPACESHIPS"}}), code=bad),
        Case("exclude_purchased a string", RECOMMEND,
             _json({"user_id": "1", "exclude_purchased": "no"})),
        # -- body size --
        Case("declared body over the limit", SENTIMENT, b"{}",
             headers={**JSON, "content-length": str(max_body_bytes + 1)}, status=413,
             code="payload_too_large"),
        Case("chunked body over the limit", SENTIMENT, b"x" * (max_body_bytes + 1024),
             chunked=True, status=413, code="payload_too_large"),
        *_inference_cases(max_body_bytes, png),
    ]


def _v2(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return _json({"inputs": list(inputs), **extra})


def _texts(*texts: Any, shape: list[int] | None = None, datatype: str = "BYTES"
           ) -> dict[str, Any]:
    return {"name": "text", "shape": shape if shape is not None else [len(texts)],
            "datatype": datatype, "data": list(texts)}


def _inference_cases(max_body_bytes: int, png: bytes) -> list[Case]:
    """The Open Inference Protocol (KServe V2) routes: the protocol's error shape."""
    def refused(name: str, path: str, body: bytes | None, status: int = 400,
                **kwargs: Any) -> Case:
        return Case(f"V2 {name}", path, body, status=status, code=PROTOCOL_ERROR, **kwargs)

    image = {"name": "image", "shape": [1], "datatype": "BYTES"}
    short_binary = _v2({**_texts(shape=[1]), "data": None,
                        "parameters": {"binary_data_size": 999}})
    return [
        Case("V2 texts answered", V2_SENTIMENT, _v2(_texts("great", "awful")), status=200,
             code=None),
        Case("V2 model metadata", "/v2/models/sentiment", None, method="GET", status=200,
             code=None),
        refused("wrong datatype", V2_SENTIMENT, _v2(_texts(1.5, datatype="FP32"))),
        refused("shape of the wrong rank", V2_SENTIMENT, _v2(_texts("a", shape=[1, 1]))),
        refused("negative shape", V2_SENTIMENT, _v2(_texts("a", shape=[-1]))),
        refused("data length not matching shape", V2_SENTIMENT,
                _v2(_texts("a", shape=[2]))),
        refused("empty batch", V2_SENTIMENT, _v2(_texts(shape=[0]))),
        refused("batch over the limit", V2_SENTIMENT, _v2(_texts(*["a"] * 2001))),
        refused("number in a BYTES tensor", V2_SENTIMENT, _v2(_texts(7))),
        refused("data nested too deep", V2_SENTIMENT,
                _v2({**_texts("a"), "data": json.loads("[" * 40 + '"a"' + "]" * 40)})),
        refused("missing input", V2_SENTIMENT, _v2()),
        refused("unknown input", V2_SENTIMENT, _v2(_texts("a"), {**_texts("b"),
                                                                 "name": "prompt"})),
        refused("input given twice", V2_SENTIMENT, _v2(_texts("a"), _texts("b"))),
        refused("inputs not a list", V2_SENTIMENT, _json({"inputs": {"text": "a"}})),
        refused("malformed JSON", V2_SENTIMENT, b'{"inputs": ['),
        refused("empty text", V2_SENTIMENT, _v2(_texts("   "))),
        refused("unknown parameter", V2_SENTIMENT, _v2(_texts("a"),
                                                       parameters={"temperature": 0.7})),
        refused("parameter of the wrong type", V2_SENTIMENT,
                _v2(_texts("a"), parameters={"detailed": "yes"})),
        refused("timeout parameter not microseconds", V2_SENTIMENT,
                _v2(_texts("a"), parameters={"timeout": "soon"})),
        refused("unknown output requested", V2_SENTIMENT,
                _v2(_texts("a"), outputs=[{"name": "logits"}])),
        refused("binary data past the body", V2_SENTIMENT, short_binary,
                headers={**JSON, "inference-header-content-length": str(len(short_binary))}),
        refused("JSON header length past the body", V2_SENTIMENT, _v2(_texts("a")),
                headers={**JSON, "inference-header-content-length": "99999"}),
        refused("unknown model", "/v2/models/no-such-model/infer", _v2(_texts("a")),
                status=404),
        refused("unknown version", "/v2/models/sentiment/versions/v999/infer",
                _v2(_texts("a")), status=404),
        refused("unknown route", "/v2/models/sentiment/explain", _v2(_texts("a")),
                status=404),
        refused("GET on infer", V2_SENTIMENT, None, status=405, method="GET"),
        refused("image not base64", V2_IMAGE, _v2({**image, "data": ["not base64!"]})),
        refused("image not an image", V2_IMAGE,
                _v2({**image, "data": [base64.b64encode(b"just some text").decode()]})),
        Case("V2 image answered", V2_IMAGE,
             _v2({**image, "data": [base64.b64encode(png).decode()]}), status=200,
             code=None),
        refused("declared body over the limit", V2_SENTIMENT, b"{}", status=413,
                headers={**JSON, "content-length": str(max_body_bytes + 1)}),
    ]


Sender = Callable[[Case], tuple[int, dict[str, Any] | None]]


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body as an iterator, so that the client sends it chunked."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def run(send: Sender, selected: list[Case]) -> list[Outcome]:
    """Send each case; record status and error code."""
    import time

    outcomes = []
    for case in selected:
        started = time.perf_counter()
        status, body = send(case)
        code = None
        if body is not None and isinstance(body.get("error"), dict):
            code = body["error"].get("code")
        elif body is not None and isinstance(body.get("error"), str) and body["error"]:
            code = PROTOCOL_ERROR
        outcomes.append(Outcome(case, status, code, time.perf_counter() - started))
    return outcomes


def raw_send(base_url: str, case: Case) -> tuple[int, dict[str, Any] | None]:
    """Send a request whose head says something its body does not (a Content-Length
    larger than what follows), which HTTP client libraries refuse to write."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    head = f"{case.method} {case.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in case.headers.items()) + "connection: close\r\n\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head.encode() + (case.body or b""))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data[9:12])
    body = data.partition(b"\r\n\r\n")[2]
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    return status, parsed if isinstance(parsed, dict) else None


def httpx_sender(client: Any) -> Sender:
    """A sender over an httpx (or Starlette TestClient) client."""

    def send(case: Case) -> tuple[int, dict[str, Any] | None]:
        declared = case.headers.get("content-length")
        if declared is not None and int(declared) != len(case.body or b"") and \
                str(client.base_url).startswith("http://127."):
            return raw_send(str(client.base_url), case)
        content: Any = case.body
        if case.chunked and case.body is not None:
            content = chunks(case.body)
        response = client.request(case.method, case.path, content=content,
                                  headers=case.headers)
        try:
            body = response.json()
        except ValueError:
            body = None
        return response.status_code, body if isinstance(body, dict) else None

    return send
