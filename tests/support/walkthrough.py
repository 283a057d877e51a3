"""The README's "Blue/green, step by step", run as written (the end-to-end tier's scenario).

`Walkthrough` runs the README's code blocks as written. Pulumi operations (`pulumi config
set|rm --path`, `preview`, `up`, `destroy`) go through the Automation API, so the test gets the
engine's events and results; every other line (`ml-endpoints ...`, `curl ...`, `pulumi stack
output ...`) runs in bash in the project folder with the environment of `scripts/env.sh`. The
walkthrough in the README and the scenario under test cannot drift.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Any

from pulumi import automation as auto

from mlendpoints._project import EndpointProject
from mlendpoints.paths import REPO

README = REPO / "README.md"
SECTION = "## Blue/green, step by step"
FIGURES: list[str] = []
"""Lines the tests report (load counts, latency percentiles, times); printed after the run."""


# ------------------------------------------------------------------------- the README steps


def readme_steps() -> dict[int, list[str]]:
    """Step number -> the command lines of that step's ```bash blocks (comments dropped)."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else None]
    steps: dict[int, list[str]] = {}
    step, in_block = 0, False
    for raw in section.splitlines():
        line = raw.strip()
        heading = re.match(r"^(\d+)\. \*\*", raw)
        if heading and not in_block:
            step = int(heading.group(1))
        elif line.startswith("```"):
            in_block = line == "```bash" if not in_block else False
        elif in_block:
            command = _strip_comment(line)
            if command:
                steps.setdefault(step, []).append(command)
    return steps


def _strip_comment(line: str) -> str:
    """The line without a trailing `  # comment` (a ` #` outside quotes)."""
    cut = line.find(" #")
    while cut != -1:
        head = line[:cut]
        if head.count("'") % 2 == 0 and head.count('"') % 2 == 0:
            return head.rstrip()
        cut = line.find(" #", cut + 1)
    return line


@dataclass
class Ran:
    """One README line as run: its output, exit code, and the engine's result and events."""

    line: str
    out: str = ""
    err: str = ""
    code: int = 0
    result: Any = None
    events: list[Any] = field(default_factory=list)


@dataclass
class Walkthrough:
    """The README's steps, run in PROJECT."""

    project: EndpointProject

    @property
    def stack(self) -> auto.Stack:
        return self.project.stack

    def step(self, number: int) -> list[Ran]:
        """Run step NUMBER of the README; Pulumi operations must succeed, other lines are
        returned with their exit codes for the test to judge."""
        lines = readme_steps()[number]
        ran: list[Ran] = []
        shell: list[str] = []
        for line in lines:
            if _engine_op(line):
                ran += self._bash(shell)
                shell = []
                ran.append(self._engine(line))
            else:
                shell.append(line)
        ran += self._bash(shell)
        return ran

    def _engine(self, line: str) -> Ran:
        words = shlex.split(line)
        events: list[Any] = []
        ran = Ran(line, events=events)
        with self.project.logged(line) as out:
            match words:
                case ["pulumi", "config", "set", "--path", key, value]:
                    self.stack.set_config(key, auto.ConfigValue(value), path=True)
                case ["pulumi", "config", "rm", "--path", key]:
                    self.stack.remove_config(key, path=True)
                case ["pulumi", "preview", *_]:
                    ran.result = self.stack.preview(
                        diff="--diff" in words, on_output=out, on_event=events.append
                    )
                case ["pulumi", "up", *_]:
                    ran.result = self.stack.up(on_output=out, on_event=events.append)
                case ["pulumi", "destroy", *_]:
                    ran.result = self.stack.destroy(on_output=out, on_event=events.append)
                case _:
                    raise AssertionError(f"README line not understood by the e2e runner: {line}")
        if ran.result is not None:
            ran.out = ran.result.stdout
        return ran

    def _bash(self, lines: list[str]) -> list[Ran]:
        """LINES in one bash process (variables carry over), each line's output and code apart."""
        if not lines:
            return []
        marker = f"@@{uuid.uuid4().hex}@@"
        script = "".join(f'{line}\necho "{marker}$?"; echo "{marker}" >&2\n' for line in lines)
        proc = subprocess.run(
            ["bash", "-c", script],
            cwd=self.project.work_dir,
            env=self.project.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        outs = proc.stdout.split(marker)
        errs = proc.stderr.split(marker + "\n")
        ran = []
        for i, line in enumerate(lines):
            if i + 1 >= len(outs):
                raise AssertionError(f"bash stopped before {line!r}:\n{proc.stdout}\n{proc.stderr}")
            out = outs[i] if i == 0 else outs[i].split("\n", 1)[1] if "\n" in outs[i] else ""
            code = int(outs[i + 1].split("\n", 1)[0])
            ran.append(Ran(line, out=out, err=errs[i] if i < len(errs) else "", code=code))
        with self.project.log.open("a") as log:
            for r in ran:
                log.write(f"\n$ {r.line}\n{r.out}{r.err}(exit {r.code})\n")
        return ran


def _engine_op(line: str) -> bool:
    return bool(re.match(r"^pulumi (config (set|rm) --path|preview|up|destroy)\b", line))
