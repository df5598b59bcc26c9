"""A small reader of the project's Dockerfile: stages, their instructions, and what an image
built from a target gets (ENV, USER, WORKDIR, VOLUME, CMD...), so tests check the Dockerfile
itself instead of a copy of its values."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword, its text (continuations joined), comments just above."""

    keyword: str
    text: str
    line: int
    comments: tuple[str, ...] = ()

    def words(self) -> list[str]:
        """The arguments, from JSON (exec form) or shell words."""
        text = self.text.strip()
        if text.startswith("["):
            return list(json.loads(text))
        return shlex.split(text)

    def flags(self) -> dict[str, str]:
        """--name=value flags at the start (COPY --from=build, --chown=...)."""
        return dict(re.findall(r"--([a-z-]+)=(\S+)", self.text.split(" /", 1)[0]))


@dataclass
class Stage:
    """A build stage: FROM base AS name, and its instructions."""

    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    """The stages in order; ARGs declared before the first FROM."""

    args: dict[str, str]
    stages: list[Stage]
    lines: list[str]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def chain(self, target: str | None = None) -> list[Stage]:
        """The stages an image of `target` (default: the last stage) is built on, base first."""
        stage = self.stage(target) if target else self.stages[-1]
        found = [stage]
        names = {s.name for s in self.stages}
        while found[0].base in names:
            found.insert(0, self.stage(found[0].base))
        return found

    def base_image(self, target: str | None = None) -> str:
        """The external image the target starts from, ARGs resolved."""
        base = self.chain(target)[0].base
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.args[m[1]], base)

    def image(self, target: str | None = None) -> Image:
        """The configuration an image of `target` ends up with."""
        image = Image()
        for stage in self.chain(target):
            for ins in stage.instructions:
                image.apply(ins)
        return image


@dataclass
class Image:
    """What `docker inspect` would show of an image's configuration."""

    env: dict[str, str] = field(default_factory=dict)
    user: str = "0"
    workdir: str = "/"
    volumes: list[str] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: Instruction | None = None
    stopsignal: str = "SIGTERM"

    def apply(self, ins: Instruction) -> None:
        if ins.keyword == "ENV":
            for key, value in (w.split("=", 1) for w in shlex.split(ins.text)):
                self.env[key] = re.sub(r"\$\{?(\w+)\}?",
                                       lambda m: self.env.get(m[1], m[0]), value)
        elif ins.keyword == "USER":
            self.user = ins.text.strip()
        elif ins.keyword == "WORKDIR":
            self.workdir = ins.text.strip()
        elif ins.keyword == "VOLUME":
            self.volumes += ins.words()
        elif ins.keyword == "EXPOSE":
            self.exposed += ins.words()
        elif ins.keyword == "CMD":
            self.cmd = ins.words()
        elif ins.keyword == "HEALTHCHECK":
            self.healthcheck = None if ins.text.strip() == "NONE" else ins
        elif ins.keyword == "STOPSIGNAL":
            self.stopsignal = ins.text.strip()

    def healthcheck_command(self) -> list[str]:
        """The HEALTHCHECK's CMD, exec form."""
        assert self.healthcheck is not None
        return list(json.loads(self.healthcheck.text.split("CMD", 1)[1].strip()))


def read(path: Path = DOCKERFILE) -> Dockerfile:
    """Parse `path` (line continuations, comments, parser directives, stages)."""
    lines = path.read_text().splitlines()
    args: dict[str, str] = {}
    stages: list[Stage] = []
    comments: list[str] = []
    i = 0
    while i < len(lines):
        start = i
        line = lines[i].strip()
        i += 1
        if not line:
            comments = []
            continue
        if line.startswith("#"):
            comments.append(line)
            continue
        parts = [line]
        while parts[-1].endswith("\\") and i < len(lines):
            parts[-1] = parts[-1][:-1]
            nxt = lines[i].strip()
            i += 1
            if not nxt.startswith("#"):
                parts.append(nxt)
        keyword, _, text = " ".join(parts).partition(" ")
        ins = Instruction(keyword.upper(), text.strip(), start + 1, tuple(comments))
        comments = []
        if ins.keyword == "FROM":
            words = ins.text.split()
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, words[0]))
        elif not stages and ins.keyword == "ARG":
            key, _, value = ins.text.partition("=")
            args[key] = value
        else:
            stages[-1].instructions.append(ins)
    return Dockerfile(args, stages, lines)
