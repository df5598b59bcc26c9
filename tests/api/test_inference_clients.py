"""Third-party Open Inference Protocol clients against real servers: Triton's
`tritonclient.http` asks the one process and the API alone for every registered model
(the example plugin included), and gets the spec routes' answers for the same queries."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from api import wire
from api.routes import operations
from benchmarks.services import Server, running
from ml.config import Settings
from ml.registry import Registry
from tests.api.inference_client import assert_same_answer, columns, parameters, reachable

pytestmark = pytest.mark.slow
triton = pytest.importorskip("tritonclient.http")
KEY = "v2-secret-key"


@pytest.fixture(scope="module")
def api_with_key(settings: Settings, registry: Registry,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    registry.warmup()
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu", "ML_API_KEYS": KEY,
           "ML_RATE_LIMIT_PER_SECOND": "0"}
    with running("api", env, tmp_path_factory.mktemp("logs")) as server:
        yield server


def client_of(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def ops(registry: Registry) -> list[wire.Operation]:
    return [op for op in operations(registry) if isinstance(op, wire.Operation)]


def test_tritonclient_sees_a_live_ready_server(one_process_server: Server) -> None:
    client = client_of(one_process_server)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    client.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_answers_equal_the_spec_routes_for_every_model(
        one_process_server: Server, registry: Registry, binary: bool) -> None:
    client = client_of(one_process_server)
    served = set()
    with httpx.Client(base_url=one_process_server.url, timeout=30) as http:
        for op in ops(registry):
            assert client.is_model_ready(op.name)
            metadata = client.get_model_metadata(op.name)
            assert metadata["versions"] == [registry.get(op.name).version]
            examples = [q for q in registry.get(op.name).examples() if reachable(op, q)]
            assert examples, op.name
            for query in examples:
                inputs = []
                arrays = columns(op, [query], binary=binary).values()
                for spec, array in zip(metadata["inputs"], arrays, strict=True):
                    assert list(array.shape) == [1] and spec["shape"] == [-1]
                    tensor = triton.InferInput(spec["name"], list(array.shape),
                                               spec["datatype"])
                    tensor.set_data_from_numpy(array, binary_data=binary)
                    inputs.append(tensor)
                outputs = [triton.InferRequestedOutput(o["name"], binary_data=binary)
                           for o in metadata["outputs"]]
                result = client.infer(op.name, inputs, outputs=outputs,
                                      parameters=parameters(op, query))
                got = {o["name"]: result.as_numpy(o["name"])
                       for o in result.get_response()["outputs"]}
                spec_answer = http.post(op.paths[0], content=wire.json_body(op, query),
                                        headers={"content-type": "application/json"})
                assert spec_answer.status_code == 200, spec_answer.text
                assert_same_answer(op, got, 0, spec_answer.json())
            served.add(op.name)
    assert {"sentiment", "image", "recommender", "wine"} <= served
    client.close()


def test_tritonclient_sends_a_batch_of_texts_as_one_request(
        one_process_server: Server, registry: Registry) -> None:
    op = next(op for op in ops(registry) if op.name == registry.canonical("sentiment"))
    texts = ["I love it", "Terrible, never again", "It is a chair", "best day ever"]
    array = np.array([t.encode() for t in texts], dtype=np.object_)
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(array)
    client = client_of(one_process_server)
    result = client.infer(op.name, [tensor], parameters={"detailed": True},
                          request_id="batch-1")
    assert result.get_response()["id"] == "batch-1"
    got = {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}
    assert got["probabilities"].shape == (len(texts), 3)
    with httpx.Client(base_url=one_process_server.url, timeout=30) as http:
        for row, text in enumerate(texts):
            spec_answer = http.post(op.paths[0], json={"text": text,
                                                       "options": {"detailed": True}})
            assert_same_answer(op, got, row, spec_answer.json())
    client.close()


def test_tritonclient_needs_the_key_where_the_api_does(api_with_key: Server) -> None:
    client = client_of(api_with_key)
    assert client.is_server_live() and client.is_server_ready()  # probes are open
    with pytest.raises(triton.InferenceServerException) as refused:
        client.get_model_metadata("sentiment")
    assert refused.value.status() == "401"
    assert "API key" in refused.value.message()
    headers = {"authorization": f"Bearer {KEY}"}
    tensor = triton.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"great"], dtype=np.object_))
    result = client.infer("sentiment", [tensor], headers=headers)
    assert result.as_numpy("sentiment")[0] == b"positive"
    with pytest.raises(triton.InferenceServerException) as unknown:
        client.get_model_metadata("nope", headers=headers)
    assert unknown.value.status() == "404"
    client.close()
