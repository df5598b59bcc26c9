"""Red-team cases against the real one-process server (`make run`, an API key configured).

Each case attacks one class of weakness a network attacker had: SSRF through the Host
header, unbounded request heads, image decode bombs, rejection amplification, UI uploads
and websocket floods, forged X-Forwarded-For, key guessing, what keyless callers see, and
odd input. While a case runs, the harness measures the server's peak RSS (VmHWM, reset
before each case), the worst latency of /health/live asked every 20 ms by a separate
process (the event loop's worst stall), and whether a canary listener on loopback, which
no request may ever reach, was reached.

Used by tests/reliability/test_redteam.py (which asserts the bounds) and by
`python -m benchmarks reliability` (which writes the table in RELIABILITY.md). All traffic
goes to 127.0.0.0/8; clients use distinct loopback source addresses so that each case has
rate-limit buckets of its own.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
KEY = "red-team-key-0123456789abcdef"
# Server settings for the run: small timeouts so that the idle and unread cases finish in
# seconds, a websocket total cap reachable from a handful of addresses, a rate limit the
# forged-address case can exhaust. Everything else is the default.
SERVER_ENV = {
    "ML_API_KEYS": KEY, "ML_DEVICE": "cpu", "ML_RATE_LIMIT_PER_SECOND": "20",
    "ML_RATE_LIMIT_BURST": "40", "ML_WRITE_TIMEOUT_S": "2", "ML_UI_IDLE_TIMEOUT_S": "3",
    "ML_UI_MAX_SESSIONS": "48", "STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL": "2",
}
BOUNDS = {"rss_mb": 100.0, "stall_ms": 250.0}  # what the test suite asserts per case


# -- the measured server ----------------------------------------------------------------------

@dataclass
class Target:
    """The server under attack."""

    host: str
    port: int
    pid: int
    canary: int  # a loopback port no request may reach
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def rss_mb(pid: int) -> float:
    return _status(pid, "VmRSS:")


def peak_rss_mb(pid: int) -> float:
    return _status(pid, "VmHWM:")


def reset_peak(pid: int) -> None:
    """Start VmHWM over from the current RSS (Linux: `5` to /proc/PID/clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _status(pid: int, field_name: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name):
            return int(line.split()[1]) / 1024
    raise KeyError(field_name)


class Canary:
    """A TCP listener on loopback that records every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.hits: list[bytes] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                try:
                    self.hits.append(conn.recv(4096))
                except OSError:
                    self.hits.append(b"")

    def close(self) -> None:
        self.sock.close()


class Probe:
    """`python -m benchmarks.probe` in a process of its own; its samples, by wall time."""

    def __init__(self, url: str, source: str = "127.0.0.250") -> None:
        self.samples: list[tuple[float, float, int]] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.probe", url, "--source", source,
             "--seconds", "1800"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            wall, latency, status = line.split()
            self.samples.append((float(wall), float(latency), int(status)))

    def worst_ms(self, since: float, until: float) -> float:
        """The longest /health/live answer that overlapped [since, until], in ms."""
        window = [lat for wall, lat, _ in list(self.samples) if wall >= since and
                  wall - lat <= until]
        return round(max(window, default=0.0) * 1e3, 1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self._thread.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


# -- raw clients ------------------------------------------------------------------------------

def connect(target: Target, source: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the server from loopback address `source`."""
    return socket.create_connection((target.host, target.port), timeout=timeout,
                                    source_address=(source, 0))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_answer(sock: socket.socket) -> Answer:
    """One HTTP/1.1 response (Content-Length framed, or until the connection closes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        return Answer(0, {}, b"")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(status, headers, body[:length] if length >= 0 else body)


def request(target: Target, method: str, path: str, body: bytes = b"", *,
            headers: dict[str, str] | None = None, source: str = "127.0.0.1",
            key: bool = True, host: str | None = None) -> Answer:
    """One request on a fresh connection, `Connection: close`."""
    fields = {"host": host or f"{target.host}:{target.port}", "connection": "close",
              "content-length": str(len(body)), **({"authorization": f"Bearer {KEY}"}
                                                    if key else {}), **(headers or {})}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    with connect(target, source) as sock:
        try:
            sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        except OSError:
            pass  # the server may answer and close before the body is all sent
        return read_answer(sock)


def post_json(target: Target, path: str, value: Any, **kwargs: Any) -> Answer:
    body = value if isinstance(value, bytes) else json.dumps(value).encode()
    return request(target, "POST", path, body,
                   headers={"content-type": "application/json"}, **kwargs)


def stream_head(target: Target, first: bytes, filler: bytes, limit: int,
                source: str) -> tuple[Answer, int]:
    """Send `first`, then `filler` over and over (up to `limit` bytes in all) until the
    server answers or closes; the answer and how many bytes went out."""
    sent = 0
    with connect(target, source) as sock:
        sock.settimeout(5)
        try:
            sock.sendall(first)
            sent = len(first)
            while sent < limit and not select.select([sock], [], [], 0)[0]:
                sock.sendall(filler)  # until the server has something to say
                sent += len(filler)
        except OSError:
            pass  # closed by the server: what we want
        try:
            return read_answer(sock), sent
        except OSError:
            return Answer(0, {}, b""), sent


class RawWebSocket:
    """A websocket client over a plain socket, so that every handshake header (Host
    included) is the attacker's to choose."""

    def __init__(self, target: Target, *, source: str = "127.0.0.1",
                 headers: dict[str, str] | None = None,
                 path: str = "/_stcore/stream") -> None:
        self.sock = connect(target, source)
        key = base64.b64encode(os.urandom(16)).decode()
        fields = {"host": f"{target.host}:{target.port}", "upgrade": "websocket",
                  "connection": "Upgrade", "sec-websocket-key": key,
                  "sec-websocket-version": "13", "sec-websocket-protocol": "streamlit",
                  **(headers or {})}
        self.sock.sendall((f"GET {path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n").encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, self._buffer = data.partition(b"\r\n\r\n")
        self.status = int(head.split()[1]) if head else 0

    def send(self, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytes([0x82])  # FIN, binary
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self._buffer += chunk
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def recv(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame; opcode 8 is a close."""
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read(8))[0]
        return first & 0x0F, self._read(length)

    def close(self) -> None:
        self.sock.close()


def run_page(ws: RawWebSocket, page: str, timeout: float = 30.0) -> list[bytes]:
    """Ask the session to run `page` and collect its messages until the run finishes."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    message = BackMsg()
    message.rerun_script.query_string = ""
    message.rerun_script.page_name = page
    ws.send(message.SerializeToString())
    ws.sock.settimeout(timeout)
    payloads = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        opcode, payload = ws.recv()
        if opcode == 8:
            break
        if opcode != 2:
            continue
        payloads.append(payload)
        forward = ForwardMsg()
        forward.ParseFromString(payload)
        if forward.WhichOneof("type") == "script_finished":
            break
    return payloads


def session_id(ws: RawWebSocket, timeout: float = 30.0) -> str:
    """The id the server gave this websocket's session (from its first messages)."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    ws.sock.settimeout(timeout)
    for payload in run_page(ws, "overview", timeout):
        forward = ForwardMsg()
        forward.ParseFromString(payload)
        if forward.WhichOneof("type") == "new_session":
            return str(forward.new_session.initialize.session_id)
    raise AssertionError("no new_session message")


# -- crafted files ----------------------------------------------------------------------------

def png(width: int, height: int, *, depth: int = 8, colour: int = 2) -> bytes:
    """A real, decodable PNG of zero pixels, written row by row (never in memory whole)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = b"\x00" + b"\x00" * ((width * channels * depth + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def as_json_image(data: bytes) -> dict[str, str]:
    return {"image_base64": base64.b64encode(data).decode()}


# -- cases ------------------------------------------------------------------------------------

@dataclass
class Seen:
    """What a case saw: status counts and a line of detail."""

    statuses: Counter[int] = field(default_factory=Counter)
    detail: str = ""

    def add(self, *statuses: int) -> None:
        self.statuses.update(statuses)


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    run: Callable[[Target], Seen]


CASES: list[Case] = []


def case(kind: str, name: str) -> Callable[[Callable[[Target], Seen]], Callable[[Target], Seen]]:
    def register(fn: Callable[[Target], Seen]) -> Callable[[Target], Seen]:
        CASES.append(Case(name, kind, fn))
        return fn
    return register


def expect(answer: Answer, status: int, code: str | None = None) -> int:
    """The answer's status, after checking it is `status` with error `code`."""
    assert answer.status == status, (answer.status, answer.body[:300])
    if code is not None:
        assert answer.json()["error"]["code"] == code, answer.body[:300]
    return answer.status


def parallel(count: int, work: Callable[[int], Any]) -> list[Any]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(work, range(count)))


SSRF, HEADS, BOMBS, REJECT = ("SSRF", "request heads", "image decode bombs",
                              "rejection amplification")
UPLOADS, SOCKETS, IDENTITY, INTERNALS, ODD = ("UI uploads", "UI websockets",
                                             "forged identity and keys",
                                             "what a keyless caller sees", "odd input")


# SSRF: the Benchmarks page must never build a URL from request headers ----------------------

def _benchmarks_page_with(target: Target, headers: dict[str, str], source: str) -> Seen:
    ws = RawWebSocket(target, source=source, headers=headers)
    try:
        assert ws.status == 101, ws.status
        payloads = run_page(ws, "benchmarks")
    finally:
        ws.close()
    assert any(b"Benchmarks" in p for p in payloads), "the page did not run"
    return Seen(Counter({101: 1}), f"page ran ({len(payloads)} messages)")


@case(SSRF, "Host aimed at another port, path smuggled (Benchmarks page)")
def ssrf_host_port(target: Target) -> Seen:
    return _benchmarks_page_with(
        target, {"host": f"x:{target.canary}/anything?q="}, "127.0.0.11")


@case(SSRF, "Host with userinfo aimed at another host (Benchmarks page)")
def ssrf_host_userinfo(target: Target) -> Seen:
    return _benchmarks_page_with(
        target, {"host": f"x@127.0.0.1:{target.canary}"}, "127.0.0.12")


@case(SSRF, "X-Forwarded-Host, Forwarded and X-Forwarded-Port aimed at another port")
def ssrf_forwarded(target: Target) -> Seen:
    return _benchmarks_page_with(target, {
        "x-forwarded-host": f"127.0.0.1:{target.canary}",
        "forwarded": f"host=127.0.0.1:{target.canary};proto=http",
        "x-forwarded-port": str(target.canary)}, "127.0.0.13")


@case(SSRF, "image_url to loopback in six spellings")
def ssrf_image_url(target: Target) -> Seen:
    seen = Seen()
    for host in ("127.0.0.1", "0x7f000001", "2130706433", "[::ffff:7f00:1]",
                 "[2002:7f00:1::1]", "[64:ff9b::7f00:1]"):
        seen.add(expect(post_json(target, "/api/predict/image",
                                  {"image_url": f"http://{host}:{target.canary}/cat.jpg"},
                                  source="127.0.0.14"), 422, "url_not_allowed"))
    return seen


@case(SSRF, "trailing slash with a foreign Host is not redirected")
def ssrf_slash_redirect(target: Target) -> Seen:
    seen = Seen()
    for path in ("/api/models/", "/health/", "/api/predict/sentiment/"):
        answer = request(target, "GET", path, host=f"127.0.0.1:{target.canary}",
                         source="127.0.0.15")
        assert "location" not in answer.headers, answer.headers
        seen.add(expect(answer, 404))
    return seen


# Request heads: bounded before they are buffered ---------------------------------------------

@case(HEADS, "10,000 tiny headers")
def heads_many(target: Target) -> Seen:
    head = b"GET /health/live HTTP/1.1\r\nhost: x\r\n" + b"x-a: 1\r\n" * 10_000 + b"\r\n"
    answer, _ = stream_head(target, head, b"", len(head), "127.0.0.21")
    return Seen(Counter({expect(answer, 431, "request_header_fields_too_large"): 1}))


@case(HEADS, "tiny headers streamed without end (up to 64 MB)")
def heads_endless(target: Target) -> Seen:
    answer, sent = stream_head(target, b"GET / HTTP/1.1\r\nhost: x\r\n", b"x-a: 1\r\n" * 8192,
                               64 << 20, "127.0.0.22")
    expect(answer, 431, "request_header_fields_too_large")
    assert sent < 16 << 20, f"the server read {sent} bytes before refusing"
    return Seen(Counter({431: 1}), f"refused after < {sent >> 20} MB sent")


@case(HEADS, "one header of 100 MB")
def heads_huge_value(target: Target) -> Seen:
    answer, sent = stream_head(target, b"GET /api/models HTTP/1.1\r\nhost: x\r\nx-big: ",
                               b"a" * 65536, 100 << 20, "127.0.0.23")
    expect(answer, 431, "request_header_fields_too_large")
    assert sent < 16 << 20, f"the server read {sent} bytes before refusing"
    return Seen(Counter({431: 1}), f"refused after < {sent >> 20} MB sent")


@case(HEADS, "request line of 1 MB, and of 9 KB")
def heads_long_url(target: Target) -> Seen:
    seen = Seen()
    for size in (1 << 20, 9 * 1024):
        head = b"GET /" + b"a" * size + b" HTTP/1.1\r\nhost: x\r\n\r\n"
        answer, _ = stream_head(target, head, b"", len(head), "127.0.0.24")
        seen.add(expect(answer, 414, "uri_too_long"))
    return seen


@case(HEADS, "90 headers are still served")
def heads_within_limits(target: Target) -> Seen:
    headers = {f"x-h{i}": "v" * 100 for i in range(88)}
    return Seen(Counter({expect(request(target, "GET", "/health/live", headers=headers,
                                        source="127.0.0.25"), 200): 1}))


# Image decode bombs: bounded by design -------------------------------------------------------

@case(BOMBS, "25x100,000 PNG (2.5 Mpx, a few KB): aspect ratio")
def bomb_aspect(target: Target) -> Seen:
    seen = Seen()
    for data in (png(25, 100_000), png(100_000, 25), png(1, 40_000_000 // 100)):
        seen.add(expect(post_json(target, "/api/predict/image", as_json_image(data),
                                  source="127.0.0.31"), 422, "invalid_input"))
    return seen


@case(BOMBS, "40 Mpx 16-bit and RGBA PNGs: decode memory")
def bomb_deep(target: Target) -> Seen:
    seen = Seen()
    for data in (png(6400, 6250, depth=16, colour=0), png(6400, 6250, colour=6),
                 png(4000, 4000, depth=1, colour=0)):
        seen.add(expect(post_json(target, "/api/predict/image", as_json_image(data),
                                  source="127.0.0.32"), 422, "invalid_input"))
    return seen


@case(BOMBS, "4000x4000 float TIFF: decode memory")
def bomb_float_tiff(target: Target) -> Seen:
    data = encoded(Image.new("F", (4000, 4000), 0.5), "TIFF", compression="tiff_deflate")
    return Seen(Counter({expect(post_json(target, "/api/predict/image", as_json_image(data),
                                          source="127.0.0.33"), 422, "invalid_input"): 1}))


@case(BOMBS, "four aspect-ratio bombs at once, JSON and multipart")
def bomb_parallel(target: Target) -> Seen:
    data = png(25, 100_000)
    boundary = "red-team-boundary"
    multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
                 f"filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + data + \
        f"\r\n--{boundary}--\r\n".encode()

    def one(i: int) -> int:
        if i % 2:
            return expect(request(target, "POST", "/api/predict/image", multipart, headers={
                "content-type": f"multipart/form-data; boundary={boundary}"},
                source="127.0.0.34"), 422)
        return expect(post_json(target, "/api/predict/image", as_json_image(data),
                                source="127.0.0.34"), 422)
    return Seen(Counter(parallel(4, one)))


@case(BOMBS, "four of the largest PNGs accepted (12 Mpx) at once")
def bomb_largest_accepted(target: Target) -> Seen:
    data = png(4000, 2900)  # 11.6 Mpx RGB: just under the 48 MiB decode limit

    def one(_: int) -> int:
        return expect(post_json(target, "/api/predict/image", as_json_image(data),
                                source="127.0.0.35"), 200)
    return Seen(Counter(parallel(4, one)), "decoded one at a time (decode budget)")


@case(BOMBS, "40 Mpx JPEG: decoded at a reduced scale")
def bomb_big_jpeg(target: Target) -> Seen:
    gradient = np.linspace(0, 255, 8000, dtype=np.uint8)
    image = Image.fromarray(np.repeat(np.tile(gradient, (5000, 1))[:, :, None], 3, axis=2))
    data = encoded(image, "JPEG", quality=70)
    return Seen(Counter({expect(post_json(target, "/api/predict/image", as_json_image(data),
                                          source="127.0.0.36"), 200): 1}))


# Rejection amplification: refusing costs little, says little ---------------------------------

def _ints(count: int) -> bytes:
    return b'{"texts": [' + b",".join([b"1"] * count) + b"]}"


@case(REJECT, "2M wrong-typed items (4 MB): one small error")
def reject_ints(target: Target) -> Seen:
    answer = post_json(target, "/api/predict/batch", _ints(1_990_000), source="127.0.0.41")
    expect(answer, 422, "validation_error")
    assert len(answer.body) < 2048, len(answer.body)
    return Seen(Counter({422: 1}), f"{len(answer.body)}-byte error body")


@case(REJECT, "12 MB body to a text route: refused by its size")
def reject_too_big(target: Target) -> Seen:
    answer = post_json(target, "/api/predict/batch", _ints(6_000_000), source="127.0.0.42")
    return Seen(Counter({expect(answer, 413, "payload_too_large"): 1}))


@case(REJECT, "300k unknown keys (in a query and in batch options) and a 1 MB key name")
def reject_keys(target: Target) -> Seen:
    seen = Seen()
    keys = b",".join(b'"k%d": 1' % i for i in range(300_000))
    many = b'{"text": "hi", ' + keys + b"}"
    long = b'{"text": "hi", "' + b"k" * (1 << 20) + b'": 1}'
    options = b'{"texts": ["hi"], "options": {' + keys + b"}}"
    for path, body in (("sentiment", many), ("sentiment", long), ("batch", options)):
        answer = post_json(target, f"/api/predict/{path}", body, source="127.0.0.43")
        seen.add(expect(answer, 422, "validation_error"))
        assert len(answer.body) < 2048, len(answer.body)
    return seen


@case(REJECT, "four batches of 1M valid texts (4 MB each) at once")
def reject_valid_many(target: Target) -> Seen:
    body = b'{"texts": [' + b",".join([b'"a"'] * 1_000_000) + b"]}"

    def one(_: int) -> int:
        answer = post_json(target, "/api/predict/batch", body, source="127.0.0.44")
        assert len(answer.body) < 2048
        return expect(answer, 422, "invalid_input")
    return Seen(Counter(parallel(4, one)), "decoded one at a time")


@case(REJECT, "a client that never reads its responses")
def reject_never_reads(target: Target) -> Seen:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind(("127.0.0.45", 0))
    sock.connect((target.host, target.port))
    one = (f"GET /openapi.json HTTP/1.1\r\nhost: {target.host}\r\n\r\n").encode()
    sock.settimeout(5)
    try:
        for _ in range(400):
            sock.sendall(one)
    except OSError:
        pass
    time.sleep(4.0)  # ML_WRITE_TIMEOUT_S is 2 s for this server
    received = 0
    sock.settimeout(2)
    try:
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    except OSError:
        pass  # reset by the server: what we want
    sock.close()
    assert received < 400 * 20_000, f"all {received} bytes were delivered"
    return Seen(Counter(), f"connection dropped after {received >> 10} KiB")


# UI uploads: bounded per session and per process ---------------------------------------------

def _xsrf(target: Target, source: str) -> str:
    answer = request(target, "GET", "/_stcore/health", key=False, source=source)
    cookie = next((v for k, v in answer.headers.items() if k == "set-cookie"), "")
    for part in cookie.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "_streamlit_xsrf":
            return value
    raise AssertionError(f"no XSRF cookie: {answer.headers}")


def _upload(target: Target, session: str, number: int, size: int, xsrf: str,
            source: str) -> int:
    boundary = "upload-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename="
            f"\"f{number}.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + \
        b"\x00" * size + f"\r\n--{boundary}--\r\n".encode()
    answer = request(target, "PUT", f"/_stcore/upload_file/{session}/file-{number}", body,
                     key=False, source=source, headers={
                         "content-type": f"multipart/form-data; boundary={boundary}",
                         "cookie": f"_streamlit_xsrf={xsrf}", "x-xsrftoken": xsrf})
    return answer.status


@case(UPLOADS, "20 uploads of 10 MB into one session")
def uploads_one_session(target: Target) -> Seen:
    source = "127.0.0.51"
    ws = RawWebSocket(target, source=source)
    try:
        session, xsrf = session_id(ws), _xsrf(target, source)
        statuses = [_upload(target, session, i, 9 << 20, xsrf, source) for i in range(20)]
    finally:
        ws.close()
    assert statuses[:2] == [204, 204] and set(statuses[2:]) == {413}, statuses
    return Seen(Counter(statuses), "2 held (24 MiB a session), the rest refused")


@case(UPLOADS, "uploads from six sessions at once")
def uploads_many_sessions(target: Target) -> Seen:
    done = threading.Barrier(6, timeout=60)

    def one(i: int) -> list[int]:
        source = f"127.0.0.{60 + i}"
        ws = RawWebSocket(target, source=source)
        try:
            session, xsrf = session_id(ws), _xsrf(target, source)
            return [_upload(target, session, n, 9 << 20, xsrf, source) for n in range(2)]
        finally:
            done.wait()  # every session holds its files until all have tried
            ws.close()
    statuses = [s for group in parallel(6, one) for s in group]
    held = statuses.count(204)
    assert held * 9 <= 64 and set(statuses) <= {204, 503}, statuses
    return Seen(Counter(statuses), f"{held} held (64 MiB in all), the rest 503")


@case(UPLOADS, "an upload without Content-Length, and one over 10 MB")
def uploads_unframed(target: Target) -> Seen:
    source = "127.0.0.52"
    ws = RawWebSocket(target, source=source)
    seen = Seen()
    try:
        session, xsrf = session_id(ws), _xsrf(target, source)
        with connect(target, source) as sock:
            sock.sendall((f"PUT /_stcore/upload_file/{session}/chunked HTTP/1.1\r\nhost: x\r\n"
                          "transfer-encoding: chunked\r\ncontent-type: multipart/form-data; "
                          f"boundary=b\r\ncookie: _streamlit_xsrf={xsrf}\r\nx-xsrftoken: {xsrf}"
                          "\r\n\r\n").encode())
            seen.add(read_answer(sock).status)
        seen.add(_upload(target, session, 99, 12 << 20, xsrf, source))
    finally:
        ws.close()
    assert seen.statuses == Counter({411: 1, 413: 1}), seen.statuses
    return seen


# UI websockets: capped and timed out ---------------------------------------------------------

@case(SOCKETS, "40 sessions from one address")
def sockets_one_client(target: Target) -> Seen:
    sockets = [RawWebSocket(target, source="127.0.0.71") for _ in range(40)]
    statuses = Counter(ws.status for ws in sockets)
    for ws in sockets:
        ws.close()
    assert statuses == Counter({101: 16, 403: 24}), statuses
    return Seen(statuses, "16 per client")


@case(SOCKETS, "20 sessions from each of 6 addresses")
def sockets_many_clients(target: Target) -> Seen:
    sockets = [RawWebSocket(target, source=f"127.0.0.{80 + i // 20}") for i in range(120)]
    statuses = Counter(ws.status for ws in sockets)
    for ws in sockets:
        ws.close()
    assert statuses[101] <= 48 and set(statuses) <= {101, 403}, statuses
    return Seen(statuses, "48 in all")


@case(SOCKETS, "an idle session is closed")
def sockets_idle(target: Target) -> Seen:
    ws = RawWebSocket(target, source="127.0.0.90")
    assert ws.status == 101
    started = time.monotonic()
    ws.sock.settimeout(10)
    opcode = 0
    try:
        while opcode != 8:
            opcode, _ = ws.recv()
    except (ConnectionError, OSError):
        pass
    waited = time.monotonic() - started
    ws.close()
    assert 2.0 < waited < 8.0, waited  # ML_UI_IDLE_TIMEOUT_S is 3 s for this server
    return Seen(Counter({101: 1}), f"closed after {waited:.1f} s idle")


# Forged identity and key guessing ------------------------------------------------------------

@case(IDENTITY, "X-Forwarded-For from an untrusted client buys no fresh bucket")
def identity_forwarded_for(target: Target) -> Seen:
    """Wrong keys under a new forged address each time: still one client, throttled."""
    statuses = [request(target, "GET", "/api/models", source="127.0.0.101", key=False,
                        headers={"authorization": f"Bearer wrong-{i}",
                                 "x-forwarded-for": f"203.0.113.{i % 250}"}).status
                for i in range(60)]
    assert statuses.count(401) <= 25 and statuses.count(429) >= 35, Counter(statuses)
    log = target.log.read_text(errors="replace")
    assert "203.0.113." not in log, "a forged address reached the log"
    return Seen(Counter(statuses), "one client for all forged addresses")


@case(IDENTITY, "3,000 wrong keys in 5 s")
def identity_key_guessing(target: Target) -> Seen:
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + 5.0
    with connect(target, "127.0.0.102") as sock:
        sent = 0
        while sent < 3000 and time.monotonic() < deadline:
            sock.sendall(f"GET /api/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
                         f"guess-{sent}\r\n\r\n".encode())
            statuses[read_answer(sock).status] += 1
            sent += 1
    assert statuses[401] <= 25 and statuses[429] >= sent - 25, statuses
    good = request(target, "GET", "/api/models", source="127.0.0.103")
    statuses[expect(good, 200)] += 1
    return Seen(statuses, "throttled after 20 wrong keys; others unaffected")


# What a keyless caller sees ------------------------------------------------------------------

@case(INTERNALS, "/health and Streamlit's metrics without a key")
def internals_keyless(target: Target) -> Seen:
    seen = Seen()
    open_health = request(target, "GET", "/health", key=False, source="127.0.0.111")
    seen.add(expect(open_health, 200))
    assert "memory" not in open_health.json(), open_health.body
    keyed = request(target, "GET", "/health", source="127.0.0.111")
    seen.add(expect(keyed, 200))
    assert "rss_mb" in keyed.json()["memory"]
    seen.add(expect(request(target, "GET", "/_stcore/metrics", key=False,
                            source="127.0.0.111"), 401))
    seen.add(expect(request(target, "GET", "/_stcore/metrics", source="127.0.0.111"), 200))
    return seen


@case(INTERNALS, "UI pages carry security headers")
def internals_headers(target: Target) -> Seen:
    answer = request(target, "GET", "/", key=False, source="127.0.0.112")
    assert answer.headers.get("x-content-type-options") == "nosniff", answer.headers
    assert answer.headers.get("x-frame-options") == "SAMEORIGIN", answer.headers
    assert "frame-ancestors 'self'" in answer.headers.get("content-security-policy", "")
    return Seen(Counter({expect(answer, 200): 1}))


# Odd input -----------------------------------------------------------------------------------

@case(ODD, "superscript digits in a deadline, a form field and Content-Length")
def odd_digits(target: Target) -> Seen:
    seen = Seen()
    seen.add(expect(request(target, "POST", "/api/predict/sentiment", b'{"text": "hi"}',
                            headers={"content-type": "application/json",
                                     "x-request-timeout-ms": "²"}, source="127.0.0.121"),
                    400, "invalid_timeout"))
    form = (b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
            + png(8, 8) + b"\r\n--b\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n"
            + "²".encode() + b"\r\n--b--\r\n")
    seen.add(expect(request(target, "POST", "/api/predict/image", form, headers={
        "content-type": "multipart/form-data; boundary=b"}, source="127.0.0.121"), 422,
        "validation_error"))  # not read as 2
    with connect(target, "127.0.0.121") as sock:
        sock.sendall("POST /api/predict/sentiment HTTP/1.1\r\nhost: x\r\ncontent-length: ²\r\n"
                     "\r\n".encode())
        seen.add(read_answer(sock).status)
    assert seen.statuses[400] == 2, seen.statuses
    return seen


@case(ODD, "clients that leave in the middle of their body")
def odd_disconnect(target: Target) -> Seen:
    before = target.log.read_text(errors="replace").count("ERROR")
    for _ in range(5):
        with connect(target, "127.0.0.122") as sock:
            sock.sendall(f"POST /api/predict/sentiment HTTP/1.1\r\nhost: x\r\nauthorization: "
                         f"Bearer {KEY}\r\ncontent-type: application/json\r\n"
                         "content-length: 1000\r\n\r\n{\"text\": ".encode())
    time.sleep(0.5)
    metrics = request(target, "GET", "/metrics", source="127.0.0.122").json()
    assert "500" not in metrics["requests"]["by_status"], metrics["requests"]
    after = target.log.read_text(errors="replace").count("ERROR")
    assert after == before, "a client that went away was logged as an error"
    return Seen(Counter(), "no 500, no ERROR in the log")


# -- running ----------------------------------------------------------------------------------

@dataclass
class Row:
    """One case's outcome."""

    name: str
    kind: str
    statuses: dict[str, int]
    detail: str
    rss_mb: float  # peak RSS during the case above RSS before it
    stall_ms: float  # worst /health/live latency during the case
    canary_hits: int
    failure: str | None

    @property
    def within_bounds(self) -> bool:
        return (self.failure is None and self.canary_hits == 0
                and self.rss_mb <= BOUNDS["rss_mb"] and self.stall_ms <= BOUNDS["stall_ms"]
                and not any(int(s) >= 500 and int(s) != 503 for s in self.statuses))


def run_case(target: Target, probe: Probe, canary: Canary, one: Case) -> Row:
    """Run `one`, measuring the server's memory and loop stall around it."""
    time.sleep(0.3)
    hits = len(canary.hits)
    before = rss_mb(target.pid)
    reset_peak(target.pid)
    started = time.time()
    failure = None
    seen = Seen()
    try:
        seen = one.run(target)
    except AssertionError as exc:
        failure = f"{exc}"[:300] or "assertion failed"
    ended = time.time()
    time.sleep(0.3)  # the probe samples what follows too
    return Row(one.name, one.kind, {str(k): v for k, v in sorted(seen.statuses.items())},
               seen.detail, round(peak_rss_mb(target.pid) - before, 1),
               probe.worst_ms(started, ended + 0.3), len(canary.hits) - hits, failure)


@contextmanager
def attacked_server(log_dir: Path, cache_dir: Path) -> Iterator[tuple[Target, Probe, Canary]]:
    """`make run`'s server with the red-team settings, a stall probe and a canary."""
    from benchmarks.services import running

    canary = Canary()
    env = {**SERVER_ENV, "ML_CACHE_DIR": str(cache_dir)}
    with running("one-process", env, log_dir) as server:
        parts = server.url.rsplit(":", 1)
        target = Target("127.0.0.1", int(parts[1]), server.process.pid, canary.port,
                        server.log)
        probe = Probe(server.url)
        try:
            time.sleep(1.0)
            yield target, probe, canary
        finally:
            probe.stop()
            canary.close()


def baseline(target: Target) -> float:
    """RSS after one round of ordinary traffic of every kind (pools and caches warm)."""
    photo = encoded(Image.new("RGB", (640, 480), (90, 120, 200)), "JPEG")
    for _ in range(3):
        post_json(target, "/api/predict/sentiment", {"text": "warm"}, source="127.0.0.2")
        post_json(target, "/api/predict/image", as_json_image(photo), source="127.0.0.2")
        post_json(target, "/api/predict/recommend", {"user_id": "1"}, source="127.0.0.2")
        request(target, "GET", "/", key=False, source="127.0.0.2")
    ws = RawWebSocket(target, source="127.0.0.2")
    run_page(ws, "benchmarks")
    ws.close()
    time.sleep(1.0)
    return rss_mb(target.pid)


def run_all(log_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """Every case against a fresh server; the rows and the memory before and after."""
    with attacked_server(log_dir, cache_dir) as (target, probe, canary):
        start = baseline(target)
        rows = [run_case(target, probe, canary, one) for one in CASES]
        time.sleep(3.0)
        end = rss_mb(target.pid)
    return {"baseline_rss_mb": round(start, 1), "final_rss_mb": round(end, 1),
            "bounds": BOUNDS, "rows": [row.__dict__ for row in rows]}
