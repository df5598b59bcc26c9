"""The torch-free checkpoint reader: reads the packaged weights and both layouts torch
writes exactly as torch.load does, and refuses any pickle that names anything but tensor
rebuilding, before resolving it."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from ml.artifacts import package_file
from ml.errors import InvalidWeights, MLError
from ml.image import WEIGHTS_FILE, WEIGHTS_PACKAGE
from ml.pth import LEGACY_MAGIC, LEGACY_PROTOCOL, load_state_dict

WEIGHTS = package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE)


def test_reads_the_packaged_weights() -> None:
    state = load_state_dict(WEIGHTS)
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.num_batches_tracked"].shape == ()
    assert all(a.flags.c_contiguous for a in state.values())
    assert sum(a.size for name, a in state.items() if "running" not in name
               and "num_batches" not in name) == pytest.approx(4.65e6, rel=0.02)


def test_packaged_weights_equal_torch_load(torch_module: ModuleType) -> None:
    """Every tensor, strided views included, the same names, shapes, dtypes and values."""
    ours = load_state_dict(WEIGHTS)
    theirs = torch_module.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        expected = tensor.numpy()
        assert ours[name].dtype == expected.dtype and ours[name].shape == expected.shape, name
        assert np.array_equal(ours[name], expected), name


@pytest.mark.parametrize("zip_layout", [pytest.param(True, id="zip"),
                                        pytest.param(False, id="legacy")])
def test_both_layouts_torch_writes(torch_module: ModuleType, tmp_path: Path,
                                   zip_layout: bool) -> None:
    torch = torch_module
    grid = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = collections.OrderedDict(
        weight=torch.randn(4, 3, 3, 3), column=grid[:, 1:3], transposed=grid.t(),
        scalar=torch.tensor(7), empty=torch.zeros(0, 5), half=torch.ones(3, dtype=torch.half),
        flags=torch.tensor([True, False]), ints=torch.arange(5, dtype=torch.int32))
    path = tmp_path / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_layout)
    assert zipfile.is_zipfile(path) == zip_layout
    ours = load_state_dict(path)
    for name, tensor in state.items():
        expected = tensor.numpy()
        assert ours[name].dtype == expected.dtype and ours[name].shape == expected.shape, name
        assert np.array_equal(ours[name], expected), name


class Call:
    """Pickles as a call of `function(*args)`: what a malicious checkpoint carries."""

    def __init__(self, function: object, *args: object) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.function, self.args


# Pickle globals, each of which would create the file `marker` if resolved and called.
PAYLOADS = [
    pytest.param(lambda marker: Call(os.system, f"touch {marker}"), "posix.system",
                 id="os.system"),
    pytest.param(lambda marker: Call(eval, f"open({str(marker)!r}, 'w').close()"),
                 "builtins.eval", id="builtins.eval"),
    pytest.param(lambda marker: Call(exec, f"open({str(marker)!r}, 'w').close()"),
                 "builtins.exec", id="builtins.exec"),
    pytest.param(lambda marker: Call(subprocess.run, ["touch", str(marker)]),
                 "subprocess.run", id="subprocess.run"),
]


def legacy_file(body: bytes) -> bytes:
    """A legacy torch file whose main pickle is `body`."""
    header = b"".join(pickle.dumps(part, protocol=2) for part in (
        LEGACY_MAGIC, LEGACY_PROTOCOL,
        {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
         "type_sizes": {"short": 2, "int": 4, "long": 4}}))
    return header + body + pickle.dumps([], protocol=2)


def zip_file(body: bytes) -> bytes:
    """A zip-layout torch file whose data.pkl is `body`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", body)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


@pytest.mark.parametrize("layout", [pytest.param(zip_file, id="zip"),
                                    pytest.param(legacy_file, id="legacy")])
@pytest.mark.parametrize("nested", [pytest.param(False, id="bare"),
                                    pytest.param(True, id="inside-a-state-dict")])
@pytest.mark.parametrize(("payload", "name"), PAYLOADS)
def test_refuses_any_other_pickle_global_and_runs_nothing(
        tmp_path: Path, layout: Callable[[bytes], bytes], nested: bool,
        payload: Callable[[Path], Call], name: str) -> None:
    marker = tmp_path / "the-payload-ran"
    call = payload(marker)
    obj = collections.OrderedDict(weight=call) if nested else call
    path = tmp_path / "evil.pth"
    path.write_bytes(layout(pickle.dumps(obj, protocol=2, fix_imports=False)))
    with pytest.raises(InvalidWeights) as caught:
        load_state_dict(path)
    assert isinstance(caught.value, MLError)
    assert f"references {name};" in caught.value.message
    assert str(path) in caught.value.message
    assert not marker.exists(), "the payload ran"


def test_refuses_globals_in_the_legacy_header(tmp_path: Path) -> None:
    marker = tmp_path / "the-payload-ran"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(Call(os.system, f"touch {marker}"), protocol=2))
    with pytest.raises(InvalidWeights, match=r"references posix\.system"):
        load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("name", [
    "torch._utils._rebuild_parameter", "torch.nn.modules.module.Module", "torch.load",
    "torch.BFloat16Storage", "collections.defaultdict", "numpy.core.multiarray._reconstruct",
])
def test_refuses_names_near_the_allowed_ones(tmp_path: Path, name: str) -> None:
    module, _, attribute = name.rpartition(".")
    path = tmp_path / "near.pth"
    path.write_bytes(zip_file(f"\x80\x02c{module}\n{attribute}\n)R.".encode("latin-1")))
    with pytest.raises(InvalidWeights, match=f"references {name};"):
        load_state_dict(path)


def storage_pickle(numel: int, offset: int, shape: tuple[int, ...],
                   stride: tuple[int, ...]) -> bytes:
    """A legacy main pickle: {"w": one float tensor over storage "0"}, written by hand
    (protocol 2 opcodes) as torch writes it, so that no torch is needed to make it."""
    def text(s: str) -> bytes:
        return b"X" + struct.pack("<I", len(s)) + s.encode()

    def ints(values: tuple[int, ...]) -> bytes:
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"

    return (b"\x80\x02ccollections\nOrderedDict\n)R(" + text("w")
            + b"ctorch._utils\n_rebuild_tensor_v2\n((" + text("storage")
            + b"ctorch\nFloatStorage\n" + text("0") + text("cpu")
            + b"J" + struct.pack("<i", numel) + b"NtQ"
            + b"J" + struct.pack("<i", offset) + ints(shape) + ints(stride)
            + b"\x89ccollections\nOrderedDict\n)RtRu.")


def legacy_with_storage(body: bytes, values: np.ndarray) -> bytes:
    head = legacy_file(b"")[:-len(pickle.dumps([], protocol=2))]
    return (head + body + pickle.dumps(["0"], protocol=2)
            + struct.pack("<q", values.size) + values.astype("<f4").tobytes())


def test_a_hand_written_tensor_reads_without_torch(tmp_path: Path) -> None:
    path = tmp_path / "ok.pth"
    path.write_bytes(legacy_with_storage(storage_pickle(6, 1, (2, 2), (1, 2)),
                                         np.arange(6, dtype=np.float32)))
    assert load_state_dict(path)["w"].tolist() == [[1.0, 3.0], [2.0, 4.0]]


@pytest.mark.parametrize(("body", "values", "fragment"), [
    pytest.param(storage_pickle(6, 3, (2, 2), (1, 2)), np.arange(6), "past the end",
                 id="tensor-past-its-storage"),
    pytest.param(storage_pickle(6, 0, (2, 3), (3, 1)), np.arange(4), "truncated or mis-sized",
                 id="short-storage"),
    pytest.param(storage_pickle(1 << 30, 0, (2,), (1,)), np.arange(4), "truncated or mis-sized",
                 id="storage-claims-a-gigabyte"),
    pytest.param(storage_pickle(6, 0, (2, 3), (3,)), np.arange(6), "malformed",
                 id="shape-and-stride-disagree"),
])
def test_refuses_malformed_tensors(tmp_path: Path, body: bytes, values: np.ndarray,
                                   fragment: str) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(legacy_with_storage(body, values))
    with pytest.raises(InvalidWeights, match=fragment):
        load_state_dict(path)


@pytest.mark.parametrize(("content", "fragment"), [
    pytest.param(b"", "not a torch state dict", id="empty"),
    pytest.param(b"definitely not a checkpoint", "not a torch state dict", id="text"),
    pytest.param(pickle.dumps(12345, protocol=2), "neither a zip archive nor a legacy",
                 id="other-pickle"),
    pytest.param(zip_file(pickle.dumps([1, 2, 3], protocol=2)), "not a state dict",
                 id="zip-of-a-list"),
    pytest.param(legacy_file(pickle.dumps({"w": 1.5}, protocol=2)), "not a state dict",
                 id="dict-of-floats"),
])
def test_refuses_what_is_not_a_state_dict(tmp_path: Path, content: bytes,
                                          fragment: str) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(InvalidWeights, match=fragment):
        load_state_dict(path)


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_state_dict(tmp_path / "absent.pth")
