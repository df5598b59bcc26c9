"""What the image runs, without a container: a fresh venv built the way the Dockerfile builds
it (same requirements and pip flags), the Dockerfile's own artifact step, a read-only copy of
what it COPYs, and the image's CMD and ENV run as a non-root user on loopback, with only the
cache and /tmp (HOME) writable, as under Kubernetes' readOnlyRootFilesystem."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest

from api import wire
from benchmarks.services import free_port
from ml.contract import model_class
from ml.registry import available, resolve
from tests.deploy import dockerfile

ROOT = dockerfile.ROOT
NOBODY = 65534  # the unprivileged user the server runs as when the tests run as root
# Example request bodies of every model, made by the image's own code from its own cache
EXAMPLES = """
import json, msgspec
from api import wire
from ml.registry import Registry
registry = Registry()
bodies = {}
for name in registry.names():
    op = wire.operation(name, registry.model_class(name))
    body = msgspec.to_builtins(registry.get(name).examples()[0])  # bytes -> base64
    for field in op.files:
        body[f"{field}_base64"] = body.pop(field)
    bodies[name] = body
print(json.dumps(bodies))
"""


@dataclass
class Layout:
    """Where the image's paths live on this machine."""

    top: Path
    venv: Path
    src: Path  # the artifacts stage's WORKDIR
    app: Path  # the runtime's WORKDIR
    built: Path  # ML_CACHE_DIR as the artifacts stage left it
    cache: Path  # the cache volume
    tmp: Path  # the /tmp volume (HOME)

    def mapping(self, parsed: dockerfile.Dockerfile) -> dict[str, str]:
        cache = parsed.image().env["ML_CACHE_DIR"]
        return {"/opt/venv": str(self.venv), "/src": str(self.src), "/app": str(self.app),
                cache: str(self.cache), "/tmp": str(self.tmp)}


def here(text: str, mapping: dict[str, str]) -> str:
    """`text` with the image's paths replaced by this machine's (in one pass, whole path
    components only: /tmp in /tmp/image-x/venv is not replaced again)."""
    keys = sorted(mapping, key=len, reverse=True)
    pattern = "|".join(re.escape(k) for k in keys)
    return re.sub(rf"(?<![\w./-])({pattern})(?=/|\b|$)", lambda m: mapping[m[1]], text)


def interpreter(base_image: str) -> str:
    """A python of the base image's version that the unprivileged user can run."""
    version = base_image.split(":")[1].split("-")[0]  # python:3.11-slim -> 3.11
    candidates = [sys.executable, shutil.which(f"python{version}") or "",
                  f"/usr/bin/python{version}"]
    for candidate in candidates:
        if not candidate or not Path(candidate).exists():
            continue
        real = Path(candidate).resolve()
        if os.geteuid() == 0 and not all(p.stat().st_mode & stat.S_IXOTH
                                         for p in [real, *real.parents]):
            continue  # e.g. a pyenv python under /root (0700)
        probe = subprocess.run([str(real), "-c", "import sys, venv; print(sys.version[:4])"],
                               capture_output=True, text=True, timeout=60)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return str(real)
    pytest.skip(f"no python{version} with venv that an unprivileged user can run")


def as_user() -> dict[str, object]:
    """Popen arguments that run a process as the unprivileged user (when we are root)."""
    if os.geteuid() == 0:
        return {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    return {}


def give(path: Path) -> None:
    """Make `path` the unprivileged user's to write (the volumes)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)


def read_only(path: Path) -> None:
    """What the image's root filesystem is to the server: not writable."""
    if os.geteuid() != 0:  # root-owned files are read-only to NOBODY already
        for item in [path, *path.rglob("*")]:
            if not item.is_symlink():
                item.chmod(item.stat().st_mode & ~0o222)


def files(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under `path`: size and modification time."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in path.rglob("*") if p.is_file()}


def copy_sources(stage: dockerfile.Stage, workdir: Path) -> None:
    """The stage's COPYs from the build context (not --from, not to an absolute path) into
    `workdir`: a folder's contents into the destination, files into a folder."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp", "*-quick.*")
    for ins in stage.all("COPY"):
        *sources, dest = ins.words()
        if "--from=" in ins.text or dest.startswith("/"):
            continue  # another stage's output, or requirements read from the checkout
        for source in sources:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, workdir / dest, ignore=ignore,
                                dirs_exist_ok=True)
            else:
                (workdir / dest).mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, workdir / dest / Path(source).name)


def pip_arguments(stage: dockerfile.Stage) -> list[str]:
    """The stage's `pip install` arguments, requirement files read from the checkout."""
    copied = {ins.words()[-1]: ins.words()[0] for ins in stage.all("COPY")}
    [run] = [r for r in stage.all("RUN") if "pip install" in r.text]
    words = shlex.split(run.text)
    args = words[words.index("install") + 1:]
    args = [str(ROOT / copied[a]) if a in copied else a for a in args]
    return [a for a in args if a != "--no-cache-dir"]  # the local wheel cache may help here


@pytest.fixture(scope="module")
def layout() -> Iterator[Layout]:
    top = Path(tempfile.mkdtemp(prefix="image-"))
    top.chmod(0o755)  # the unprivileged user must reach the venv and the app
    found = Layout(top, top / "venv", top / "src", top / "app", top / "built",
                   top / "cache", top / "tmp")
    try:
        yield found
    finally:
        for item in [top, *top.rglob("*")]:
            if not item.is_symlink() and item.is_dir():
                item.chmod(item.stat().st_mode | 0o700)
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_image_command_serves_every_model_from_the_build_time_cache(
        layout: Layout) -> None:
    parsed = dockerfile.read()
    mapping = layout.mapping(parsed)
    image = parsed.image()
    started = time.monotonic()

    # build stage: a venv and the same pip install (wheels only) of the same requirements
    python = interpreter(parsed.base_image())
    subprocess.run([python, "-m", "venv", str(layout.venv)], check=True, timeout=120)
    subprocess.run([str(layout.venv / "bin" / "pip"), "install", "--quiet",
                    *pip_arguments(parsed.stage("build"))], check=True, timeout=900)
    built_venv = time.monotonic()

    # artifacts stage: its RUN (python -m ml build) over its COPY, cache written as the user
    artifacts = parsed.stage("artifacts")
    copy_sources(artifacts, layout.src)
    give(layout.built)
    env = {k: here(v, {**mapping, parsed.image("artifacts").env["ML_CACHE_DIR"]:
                           str(layout.built)})
           for k, v in parsed.image("artifacts").env.items()}
    [build] = [r for r in artifacts.all("RUN") if "python -m ml build" in r.text]
    command = here(build.text, mapping)  # "$ML_CACHE_DIR" is expanded from `env`
    give(layout.tmp)
    report = subprocess.run(["sh", "-c", command], cwd=layout.src, capture_output=True,
                            text=True, timeout=600, env={
                                **env, "PATH": "/usr/bin:/bin", "HOME": str(layout.tmp),
                                "TMPDIR": str(layout.tmp)}, **as_user())  # type: ignore[call-overload]
    assert report.returncode == 0, report.stderr[-3000:]
    built = json.loads(report.stdout)
    assert built["models"] and all(m["state"] == "ready" for m in built["models"].values())
    assert sorted(built["artifacts"]) == sorted(files(layout.built))
    built_artifacts = time.monotonic()

    # runtime stage: the COPYs (read-only), its bytecode step, the artifacts in the volume
    runtime = parsed.chain()
    for stage in runtime:
        copy_sources(stage, layout.app)
    subprocess.run([str(layout.venv / "bin" / "python"), "-m", "compileall", "-q",
                    str(layout.app)], check=True, timeout=300)
    shutil.copytree(layout.built, layout.cache, dirs_exist_ok=True)  # the seed-cache copy
    give(layout.cache)
    for item in layout.cache.iterdir():
        if os.geteuid() == 0:
            os.chown(item, NOBODY, NOBODY)
    read_only(layout.app)
    read_only(layout.venv)
    app_before, cache_before = files(layout.app), files(layout.cache)
    assert not list(layout.tmp.iterdir()), "the build step left files in HOME/TMPDIR"

    # the image's CMD and ENV, on a free loopback port
    port = free_port()
    cmd = list(image.cmd)
    cmd[cmd.index("--port") + 1] = str(port)
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    env = {k: here(v, mapping).replace("$PATH", "/usr/bin:/bin") for k, v in image.env.items()}
    env.update({"TMPDIR": str(layout.tmp), "LANG": "C.UTF-8"})  # /tmp; the base's LANG
    log = layout.top / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=here(image.workdir, mapping), env=env,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   **as_user())  # type: ignore[call-overload]
    url = f"http://127.0.0.1:{port}"
    try:
        live_s, ready_s = wait_ready(process, url, log, timeout=120)
        check_predictions(url, layout, env)
        check_healthcheck(image, port, env, expect=0)
        page = httpx.get(f"{url}/", timeout=30)  # the UI's page, from the same process
        assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    check_healthcheck(image, port, env, expect=1)
    output = log.read_text()
    # uvicorn re-raises the SIGTERM it drained on once shut down (exit status 143 in a shell)
    assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in output, \
        output[-3000:]

    # served without training, and wrote nothing outside the cache (and nothing there)
    assert "not cached; building" not in output and "rebuilding" not in output, output
    assert "warm-up finished" in output
    assert files(layout.cache) == cache_before
    assert files(layout.app) == app_before
    assert not list(layout.tmp.iterdir()), list(layout.tmp.rglob("*"))
    print(f"\nvenv {built_venv - started:.0f}s, artifacts {built_artifacts - built_venv:.0f}s,"
          f" /health/live {live_s:.1f}s and /health/ready {ready_s:.1f}s after start, "
          f"total {time.monotonic() - started:.0f}s")


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path,
               timeout: float) -> tuple[float, float]:
    """Seconds from start until /health/live and /health/ready answered 200."""
    start = time.monotonic()
    live = None
    with httpx.Client(base_url=url, timeout=2) as client:
        while time.monotonic() - start < timeout:
            if process.poll() is not None:
                pytest.fail(f"the server exited:\n{log.read_text()[-3000:]}")
            try:
                if live is None and client.get("/health/live").status_code == 200:
                    live = time.monotonic() - start
                if client.get("/health/ready").status_code == 200:
                    return live or 0.0, time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    pytest.fail(f"not ready in {timeout}s:\n{log.read_text()[-3000:]}")


def check_predictions(url: str, layout: Layout, env: dict[str, str]) -> None:
    """Every model the server lists answers its own first example with its result type."""
    examples = subprocess.run([env["PATH"].split(":")[0] + "/python", "-c", EXAMPLES],
                              cwd=layout.app, env=env, capture_output=True, text=True,
                              timeout=300, **as_user())  # type: ignore[call-overload]
    assert examples.returncode == 0, examples.stderr[-3000:]
    bodies = json.loads(examples.stdout)
    with httpx.Client(base_url=url, timeout=60) as client:
        models = client.get("/api/models").json()["models"]
        assert sorted(m["name"] for m in models) == sorted(bodies)
        for model in models:
            assert model["state"] == "ready", model
            answer = client.post(f"/api/predict/{model['name']}", json=bodies[model["name"]])
            assert answer.status_code == 200, answer.text
            cls = model_class(resolve(available()[model["name"]].target))
            op = wire.operation(model["name"], cls)
            decoded = msgspec.json.decode(answer.content, type=op.response)
            assert msgspec.to_builtins(decoded)["model"] == model["version"]


def check_healthcheck(image: dockerfile.Image, port: int, env: dict[str, str],
                      expect: int) -> None:
    """The Dockerfile's HEALTHCHECK command, pointed at the test's port."""
    command = image.healthcheck_command()
    image_port = image.cmd[image.cmd.index("--port") + 1]
    command[-1] = command[-1].replace(f":{image_port}/", f":{port}/")
    result = subprocess.run(command, env=env, capture_output=True, timeout=30,
                            **as_user())  # type: ignore[call-overload]
    assert (result.returncode != 0) == bool(expect), result.stderr[-2000:]
