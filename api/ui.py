"""Bounds in front of the Streamlit UI of the one process (`server.py`).

The UI is public wherever the server is: no key opens a websocket session or uploads a
file. Without bounds, idle websockets (4 file descriptors each) exhaust the process's fds,
and uploads sent into a session sit in memory for as long as it lives. `UiGuard` wraps the
st.App and enforces, per client address (X-Forwarded-For only from ML_TRUSTED_PROXIES) and
in total:

- websocket sessions: at most ML_UI_MAX_SESSIONS_PER_CLIENT and ML_UI_MAX_SESSIONS open at
  once (more are refused before the upgrade, 403), each closed after ML_UI_IDLE_TIMEOUT_S
  without a message from its browser;
- uploads: every PUT needs a Content-Length, and the files one session holds (with its
  uploads in flight) stay within ML_UI_UPLOAD_SESSION_BYTES, all sessions' within
  ML_UI_UPLOAD_TOTAL_BYTES (413 and 503 otherwise). A session's files are freed when its
  websocket closes, and a file when its widget lets go of it;
- `/_stcore/metrics` (Streamlit's cache statistics) needs an API key when keys are set;
- every UI response carries X-Content-Type-Options, X-Frame-Options and a CSP
  frame-ancestors (ML_UI_FRAME_ANCESTORS; 'self' by default, so Community Cloud's frame
  still works);
- UI traffic goes to the API's JSON access log (`api.access`), one log for the process:
  page loads, uploads, a line per websocket session when it ends (method WEBSOCKET, its
  duration) and every error; static assets, Streamlit's health pings and its base-path
  probes (a few hundred lines a minute per open page) only with ML_ACCESS_LOG_UI=all.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.access import AccessLog
from api.middleware import RequestIds
from api.ratelimit import client_address, networks

logger = logging.getLogger("api.ui")
STREAM = "/_stcore/stream"
UPLOAD = "/_stcore/upload_file/"
METRICS = "/_stcore/metrics"
# what a browser fetches by itself: quiet in the access log unless it fails
QUIET = ("/static/", "/_stcore/health", "/_stcore/host-config", "/_stcore/script-health",
         "/favicon", "/media/", "/component/", "/app/static/")
# Streamlit's base-path probes: on a deep link (/sentiment) the page first asks
# /sentiment/_stcore/health and host-config, gets 404s and falls back to the root's; the
# answers are right (there is no app under /sentiment), so they stay quiet too
PROBES = ("/_stcore/health", "/_stcore/host-config")


def quiet(path: str, status: int) -> bool:
    """Whether a UI request stays out of the access log at ML_ACCESS_LOG_UI=pages."""
    if status < 400:
        return path.startswith(QUIET)
    return status == 404 and path.endswith(PROBES)

# (session id) -> bytes of the files Streamlit holds for it
HeldBytes = Callable[[str], int]


def _manager() -> Any:
    from streamlit import runtime

    return runtime.get_instance().uploaded_file_mgr if runtime.exists() else None


def streamlit_forget(session_id: str) -> None:
    """Drop the files a session uploaded (when its websocket goes: a reconnect within
    Streamlit's disconnected-session TTL keeps the session, not its uploads)."""
    manager = _manager()
    if manager is not None:
        manager.remove_session_files(session_id)


def session_of(payload: bytes) -> str | None:
    """The session id in a ForwardMsg, if it is the new_session message."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    message = ForwardMsg()
    try:
        message.ParseFromString(payload)
    except Exception:  # noqa: BLE001 - not ours to judge; just not a new_session
        return None
    if message.WhichOneof("type") == "new_session":
        return str(message.new_session.initialize.session_id) or None
    return None


def streamlit_held_bytes() -> tuple[HeldBytes, Callable[[], int]]:
    """Per-session and total bytes of files held by the running Streamlit runtime's upload
    manager (its public `file_storage`), or zeros if there is none (tests without a UI)."""
    manager = _manager

    def per_session(session_id: str) -> int:
        storage = getattr(manager(), "file_storage", None)
        files = dict(storage.get(session_id, {})) if storage is not None else {}
        return sum(len(getattr(f, "data", b"")) for f in files.values())

    def total() -> int:
        storage = getattr(manager(), "file_storage", None)
        if storage is None:
            return 0
        return sum(len(getattr(f, "data", b"")) for files in list(storage.values())
                   for f in dict(files).values())

    return per_session, total


class UiGuard:
    """ASGI wrapper of the UI app: websocket caps and idle timeout, upload budgets,
    security headers, and a key on Streamlit's metrics (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, max_sessions: int = 200,
                 max_sessions_per_client: int = 16, idle_timeout_s: float = 1800.0,
                 upload_session_bytes: int = 24 << 20, upload_total_bytes: int = 64 << 20,
                 frame_ancestors: str = "'self'", api_keys: Iterable[str] = (),
                 trusted_proxies: Iterable[str] = (),
                 held: tuple[HeldBytes, Callable[[], int]] | None = None,
                 forget: Callable[[str], None] = streamlit_forget,
                 access: AccessLog | None = None, access_ui: str = "pages") -> None:
        self.app = app
        self.access = access if access is not None and access_ui != "off" else None
        self.log_everything = access_ui == "all"
        self.new_id = RequestIds()
        self.max_sessions = max_sessions
        self.max_per_client = max_sessions_per_client
        self.idle_timeout_s = idle_timeout_s
        self.upload_session_bytes = upload_session_bytes
        self.upload_total_bytes = upload_total_bytes
        self.keys = [k.encode() for k in api_keys if k]
        self.trusted = networks(trusted_proxies)
        self.held_by_session, self.held_total = held or streamlit_held_bytes()
        self.forget = forget
        self.sessions: Counter[str] = Counter()
        self.open_sessions = 0
        self.refused_sessions = 0
        self.idle_closed = 0
        self.uploading: Counter[str] = Counter()  # session id -> bytes in flight
        headers = [(b"x-content-type-options", b"nosniff"),
                   (b"referrer-policy", b"same-origin"),
                   (b"content-security-policy",
                    f"frame-ancestors {frame_ancestors}".encode())]
        if frame_ancestors.strip() in ("'none'", "'self'"):
            headers.append((b"x-frame-options",
                            b"DENY" if frame_ancestors.strip() == "'none'" else b"SAMEORIGIN"))
        self.security_headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.access is None or scope["type"] not in ("http", "websocket"):
            await self._guarded(scope, receive, send)
            return
        started, status = time.perf_counter(), [0]

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "websocket.accept":
                status[0] = 101
            elif message["type"] == "websocket.close" and not status[0]:
                status[0] = 403  # refused before the upgrade
            await send(message)
        try:
            await self._guarded(scope, receive, recording_send)
        finally:
            path = str(scope["path"])
            if (self.log_everything or scope["type"] == "websocket"
                    or not quiet(path, status[0])):
                method = "WEBSOCKET" if scope["type"] == "websocket" else scope["method"]
                self.access.add(self.new_id(), method, path, status[0] or 500,
                                time.perf_counter() - started,
                                client_address(scope, self.trusted))

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] != "http":
            await self.app(scope, receive, send)
        elif str(scope["path"]).startswith(UPLOAD) and scope["method"] == "PUT":
            await self._upload(scope, receive, send)
        elif scope["path"] == METRICS and self.keys and not self._has_key(scope):
            await _refuse(send, 401, "unauthorized",
                          "Streamlit's metrics need an API key when ML_API_KEYS is set",
                          self.security_headers)
        else:
            await self.app(scope, receive, self._with_headers(send))

    # -- websockets ---------------------------------------------------------------------------
    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = client_address(scope, self.trusted)
        if (self.open_sessions >= self.max_sessions
                or self.sessions[client] >= self.max_per_client):
            self.refused_sessions += 1
            if self.refused_sessions % 100 == 1:
                logger.warning("refusing UI session from %s: %d open from it, %d in all",
                               client, self.sessions[client], self.open_sessions)
            message = await receive()  # websocket.connect
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1013})
            return
        self.sessions[client] += 1
        self.open_sessions += 1
        idle = self.idle_timeout_s
        session: list[str] = []  # learnt from the server's first messages
        state = {"idle": False, "closed": False}

        async def idle_receive() -> Message:
            try:
                return await asyncio.wait_for(receive(), timeout=idle)
            except TimeoutError:
                state["idle"] = True
                self.idle_closed += 1
                logger.info("closing a UI session of %s: idle for %gs", client, idle)
                return {"type": "websocket.disconnect", "code": 1001}

        async def watching_send(message: Message) -> None:
            if message["type"] == "websocket.close":
                state["closed"] = True
            elif not session and message["type"] == "websocket.send" and message.get("bytes"):
                found = session_of(message["bytes"])
                if found:
                    session.append(found)
            await send(message)

        try:
            await self.app(scope, idle_receive, watching_send)
            if state["idle"] and not state["closed"]:  # tell the browser, not just the app
                await send({"type": "websocket.close", "code": 1001, "reason": "idle"})
        finally:
            self.open_sessions -= 1
            self.sessions[client] -= 1
            if self.sessions[client] <= 0:
                del self.sessions[client]
            if session:
                self.forget(session[0])

    # -- uploads ------------------------------------------------------------------------------
    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts = str(scope["path"])[len(UPLOAD):].split("/")
        session = parts[0] if parts else ""
        length = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit():
                length = int(value)
        if length is None:
            await _refuse(send, 411, "length_required",
                          "uploads must declare their Content-Length", self.security_headers)
            return
        session_held = self.held_by_session(session) + self.uploading[session]
        if session_held + length > self.upload_session_bytes:
            await _refuse(send, 413, "upload_budget_exceeded",
                          f"this session holds {session_held} bytes of uploads; the limit is "
                          f"{self.upload_session_bytes} (remove a file first)",
                          self.security_headers)
            return
        in_flight = sum(self.uploading.values())
        if self.held_total() + in_flight + length > self.upload_total_bytes:
            await _refuse(send, 503, "uploads_full",
                          "the server holds as many uploads as it may; try again shortly",
                          [*self.security_headers, (b"retry-after", b"5")])
            return
        self.uploading[session] += length
        try:
            await self.app(scope, receive, self._with_headers(send))
        finally:
            self.uploading[session] -= length
            if self.uploading[session] <= 0:
                del self.uploading[session]

    # -- helpers ------------------------------------------------------------------------------
    def _with_headers(self, send: Send) -> Send:
        extra = self.security_headers

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", ())}
                message["headers"] = [*message.get("headers", ()),
                                      *(h for h in extra if h[0] not in present)]
            await send(message)
        return wrapped

    def _has_key(self, scope: Scope) -> bool:
        candidate = b""
        for name, value in scope.get("headers", ()):
            if name == b"x-api-key":
                candidate = value
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                candidate = value[7:].strip()
        found = False
        for key in self.keys:
            found |= hmac.compare_digest(candidate, key)
        return bool(candidate) and found

    def stats(self) -> dict[str, int]:
        """Open and refused sessions, idle closes, upload bytes in flight."""
        return {"open_sessions": self.open_sessions, "refused_sessions": self.refused_sessions,
                "idle_closed": self.idle_closed,
                "uploads_in_flight_bytes": sum(self.uploading.values())}


async def _refuse(send: Send, status: int, code: str, message: str,
                  headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": {}}}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})
