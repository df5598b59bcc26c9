"""UiGuard, the bounds in front of the Streamlit UI, over a small real ASGI app standing in
for st.App (the red-team suite runs the same bounds against the real server)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.access import AccessLog
from api.ui import UiGuard, session_of


class Uploads:
    """What the guard asks Streamlit's upload manager, as a small real store."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, int]] = {}
        self.forgotten: list[str] = []

    def held(self) -> tuple[Callable[[str], int], Callable[[], int]]:
        return (lambda s: sum(self.files.get(s, {}).values()),
                lambda: sum(sum(f.values()) for f in self.files.values()))

    def forget(self, session: str) -> None:
        self.forgotten.append(session)
        self.files.pop(session, None)


def new_session_message(session: str) -> bytes:
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    message = ForwardMsg()
    message.new_session.initialize.session_id = session
    return message.SerializeToString()


def ui_app(uploads: Uploads) -> Starlette:
    async def page(request: Any) -> Response:
        return PlainTextResponse("<html>page</html>")

    async def upload(request: Any) -> Response:
        body = await request.body()
        session, file_id = request.path_params["session"], request.path_params["file"]
        uploads.files.setdefault(session, {})[file_id] = len(body)
        return Response(status_code=204)

    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_bytes(new_session_message(websocket.query_params.get("s", "s1")))
        try:
            while True:
                data = await websocket.receive_bytes()
                await websocket.send_bytes(data)
        except WebSocketDisconnect:
            return

    return Starlette(routes=[
        Route("/", page), Route("/_stcore/metrics", page),
        Route("/_stcore/upload_file/{session}/{file}", upload, methods=["PUT"]),
        WebSocketRoute("/_stcore/stream", stream)])


def guarded(uploads: Uploads, **options: Any) -> TestClient:
    guard = UiGuard(ui_app(uploads), held=uploads.held(), forget=uploads.forget, **options)
    return TestClient(guard)


def test_pages_carry_security_headers() -> None:
    client = guarded(Uploads())
    answer = client.get("/")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "SAMEORIGIN"
    assert answer.headers["content-security-policy"] == "frame-ancestors 'self'"
    framed_nowhere = guarded(Uploads(), frame_ancestors="'none'").get("/")
    assert framed_nowhere.headers["x-frame-options"] == "DENY"


def test_streamlit_metrics_need_a_key_when_keys_are_set() -> None:
    client = guarded(Uploads(), api_keys=("k-1",))
    refused = client.get("/_stcore/metrics")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert client.get("/_stcore/metrics", headers={"x-api-key": "k-2"}).status_code == 401
    assert client.get("/_stcore/metrics", headers={"x-api-key": "k-1"}).status_code == 200
    assert guarded(Uploads()).get("/_stcore/metrics").status_code == 200  # no keys: open


def test_sessions_are_capped_per_client_and_in_total() -> None:
    client = guarded(Uploads(), max_sessions=3, max_sessions_per_client=2)
    first, second = (client.websocket_connect("/_stcore/stream") for _ in range(2))
    with first, second:
        with pytest.raises(WebSocketDisconnect) as refused, \
                client.websocket_connect("/_stcore/stream"):
            pass
        assert refused.value.code == 1013
    with client.websocket_connect("/_stcore/stream"):  # room again once they closed
        pass


def test_an_idle_session_is_disconnected_and_its_uploads_forgotten() -> None:
    uploads = Uploads()
    client = guarded(uploads, idle_timeout_s=0.2)
    with client.websocket_connect("/_stcore/stream?s=abc") as ws:
        ws.receive_bytes()  # new_session
        ws.send_bytes(b"ping")
        assert ws.receive_bytes() == b"ping"  # a message resets the idle clock
        with pytest.raises(WebSocketDisconnect):
            ws.receive_bytes()  # nothing sent for 0.2 s: closed
    assert uploads.forgotten == ["abc"]


def test_uploads_are_budgeted_per_session_and_per_process() -> None:
    uploads = Uploads()
    client = guarded(uploads, upload_session_bytes=250, upload_total_bytes=400)
    put = lambda session, name, size: client.put(  # noqa: E731
        f"/_stcore/upload_file/{session}/{name}", content=b"x" * size)
    assert put("a", "1", 200).status_code == 204
    over_session = put("a", "2", 100)
    assert over_session.status_code == 413
    assert over_session.json()["error"]["code"] == "upload_budget_exceeded"
    assert put("b", "1", 200).status_code == 204
    full = put("c", "1", 100)
    assert full.status_code == 503 and full.headers["retry-after"] == "5"
    uploads.forget("a")
    assert put("c", "1", 100).status_code == 204  # a session gone frees its share


def test_an_upload_must_declare_its_length() -> None:
    client = guarded(Uploads())

    def chunks():  # type: ignore[no-untyped-def]
        yield b"x" * 10

    answer = client.put("/_stcore/upload_file/a/1", content=chunks())
    assert answer.status_code == 411


def test_the_session_id_is_read_from_the_first_message_only() -> None:
    assert session_of(new_session_message("s-42")) == "s-42"
    assert session_of(b"\x00garbage") is None
    assert session_of(b"") is None


def test_a_flood_of_sessions_leaves_the_counts_balanced() -> None:
    guard = UiGuard(ui_app(Uploads()), held=Uploads().held(), forget=lambda s: None,
                    max_sessions=5, max_sessions_per_client=5)

    async def flood() -> None:
        async def one() -> None:
            messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            await messages.put({"type": "websocket.connect"})
            await messages.put({"type": "websocket.disconnect", "code": 1000})
            scope = {"type": "websocket", "path": "/_stcore/stream", "client": ("10.0.0.9", 1),
                     "headers": [], "query_string": b"", "subprotocols": [], "root_path": ""}

            async def send(message: dict[str, Any]) -> None:
                pass
            await guard(scope, messages.get, send)
        await asyncio.gather(*(one() for _ in range(50)))

    asyncio.run(flood())
    assert guard.open_sessions == 0 and not guard.sessions
    assert guard.refused_sessions > 0


class Lines(logging.Handler):
    """The access log's output, as parsed lines."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += [json.loads(line) for line in record.getMessage().splitlines()]


@pytest.mark.parametrize(("mode", "expected"), [
    pytest.param("pages", [("GET", "/", 200), ("GET", "/missing.js", 404),
                           ("GET", "/static/missing.js", 404),
                           ("WEBSOCKET", "/_stcore/stream", 101)], id="pages"),
    pytest.param("all", [("GET", "/", 200), ("GET", "/static/app.js", 200),
                         ("GET", "/_stcore/health", 200),
                         ("GET", "/sentiment/_stcore/health", 404),
                         ("GET", "/missing.js", 404), ("GET", "/static/missing.js", 404),
                         ("WEBSOCKET", "/_stcore/stream", 101)], id="all"),
    pytest.param("off", [], id="off"),
])
def test_ui_traffic_goes_to_the_one_json_access_log(mode: str,
                                                    expected: list[tuple[str, str, int]]
                                                    ) -> None:
    """Page loads, websocket sessions and errors are logged; static assets, health pings
    and the deep-link base-path probes only with ML_ACCESS_LOG_UI=all."""
    handler, log = Lines(), logging.getLogger(f"test.ui-access.{mode}")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    access = AccessLog(log)
    uploads = Uploads()
    app = ui_app(uploads)

    async def asset(request: Any) -> Response:
        return PlainTextResponse("ok")
    app.router.routes += [Route("/static/app.js", asset), Route("/_stcore/health", asset)]
    client = TestClient(UiGuard(app, held=uploads.held(), forget=uploads.forget,
                                access=access, access_ui=mode))
    for path in ("/", "/static/app.js", "/_stcore/health", "/sentiment/_stcore/health",
                 "/missing.js", "/static/missing.js"):
        client.get(path)
    with client.websocket_connect("/_stcore/stream") as ws:
        ws.receive_bytes()
    access.flush()
    assert [(line["method"], line["path"], line["status"]) for line in handler.lines] \
        == expected
    assert all(len(line["request_id"]) == 32 and line["client"] for line in handler.lines)
