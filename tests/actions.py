"""Run a GitHub Actions job's shell steps on this machine, as the runner would.

So that a workflow cannot drift from what works, the end-to-end tests run its ``run:`` steps in
order with the runner's semantics: ``bash --noprofile --norc -eo pipefail`` per step, the workflow,
job and step ``env:`` (with ``${{ }}`` expressions evaluated), ``$GITHUB_ENV`` and
``$GITHUB_OUTPUT`` files carried from step to step, ``if:`` conditions (``success()`` by default,
``always()``), ``continue-on-error`` and ``steps.<id>.outputs``. ``uses:`` steps (checkout,
setup-python) are the runner's own set-up and are reported as skipped: the test already runs in a
checkout with Python.

Expressions: the subset the workflows use: context lookups (``github.event.inputs.x``,
``secrets.X``, ``steps.id.outputs.k``, ``github.sha``, ``github.actor``), string literals, ``||``,
``&&``, ``!``, ``==``, ``!=``, ``always()``, ``success()``, ``failure()``. Anything else is an error,
not a guess.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|(\|\||&&|==|!=|!|\(|\))|([A-Za-z_][\w.-]*(?:\(\))?))")


@dataclass
class StepResult:
    name: str
    id: str | None
    conclusion: str          # success, failure, skipped
    returncode: int | None
    output: str = ""
    outputs: dict = field(default_factory=dict)


@dataclass
class Context:
    secrets: dict
    inputs: dict
    github: dict
    steps: dict = field(default_factory=dict)   # id -> {"outputs": {...}, "conclusion": ...}
    failed: bool = False

    def lookup(self, name: str):
        parts = name.split(".")
        if parts[0] == "secrets":
            return self.secrets.get(parts[1], "")
        if parts[:3] == ["github", "event", "inputs"]:
            return self.inputs.get(parts[3], "")
        if parts[0] == "github":
            return self.github.get(parts[1], "")
        if parts[0] == "steps" and len(parts) == 4 and parts[2] in ("outputs",):
            return self.steps.get(parts[1], {}).get("outputs", {}).get(parts[3], "")
        if parts[0] == "steps" and len(parts) == 3 and parts[2] in ("conclusion", "outcome"):
            return self.steps.get(parts[1], {}).get("conclusion", "")
        raise ValueError(f"expression context {name!r} is not supported by tests/actions.py")

    def evaluate(self, expr: str):
        tokens = self._tokens(expr)
        value, rest = self._or(tokens)
        if rest:
            raise ValueError(f"cannot parse expression {expr!r} at {rest!r}")
        return value

    # a tiny recursive-descent parser: or -> and -> not -> cmp -> atom
    @staticmethod
    def _tokens(expr: str) -> list[tuple[str, str]]:
        out, pos = [], 0
        while pos < len(expr.rstrip()):
            m = _TOKEN.match(expr, pos)
            if not m or m.end() == pos:
                raise ValueError(f"cannot tokenise expression {expr!r} at {expr[pos:]!r}")
            lit, op, name = m.groups()
            out.append(("lit", lit[1:-1].replace("''", "'")) if lit else ("op", op) if op else ("name", name))
            pos = m.end()
        return out

    def _or(self, t):
        left, t = self._and(t)
        while t and t[0] == ("op", "||"):
            right, t = self._and(t[1:])
            left = left or right
        return left, t

    def _and(self, t):
        left, t = self._not(t)
        while t and t[0] == ("op", "&&"):
            right, t = self._not(t[1:])
            left = left and right
        return left, t

    def _not(self, t):
        if t and t[0] == ("op", "!"):
            v, t = self._not(t[1:])
            return not v, t
        return self._cmp(t)

    def _cmp(self, t):
        left, t = self._atom(t)
        if t and t[0] in (("op", "=="), ("op", "!=")):
            op = t[0][1]
            right, t = self._atom(t[1:])
            return (str(left) == str(right)) == (op == "=="), t
        return left, t

    def _atom(self, t):
        if not t:
            raise ValueError("expression ends early")
        kind, v = t[0]
        if kind == "lit":
            return v, t[1:]
        if (kind, v) == ("op", "("):
            val, rest = self._or(t[1:])
            if not rest or rest[0] != ("op", ")"):
                raise ValueError("unbalanced parenthesis")
            return val, rest[1:]
        if kind == "name" and v.endswith("()"):
            fn = {"always()": True, "success()": not self.failed, "failure()": self.failed, "cancelled()": False}
            if v not in fn:
                raise ValueError(f"function {v} is not supported by tests/actions.py")
            return fn[v], t[1:]
        if kind == "name":
            return self.lookup(v), t[1:]
        raise ValueError(f"unexpected token {v!r}")

    def render(self, text) -> str:
        def one(m):
            v = self.evaluate(m.group(1))
            return "" if v is None or v is False else str(v)
        return _EXPR.sub(one, str(text))


def _parse_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines and ``NAME<<DELIM`` blocks, as the runner reads $GITHUB_ENV / $GITHUB_OUTPUT."""
    out, lines = {}, path.read_text().splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            body = []
            i += 1
            while i < len(lines) and lines[i] != delim:
                body.append(lines[i])
                i += 1
            out[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        i += 1
    return out


def run_job(doc: dict, job_id: str, *, secrets: dict, inputs: dict, cwd: Path, base_env: dict,
            github: dict | None = None, timeout_s: float = 1800,
            log=lambda _line: None) -> list[StepResult]:
    """Run every step of ``doc['jobs'][job_id]``; returns one result per step, in order."""
    job = doc["jobs"][job_id]
    github = {"sha": "0" * 40, "actor": "e2e-test", "ref": "refs/heads/main", **(github or {})}
    ctx = Context(secrets=secrets, inputs=inputs, github=github)
    workdir = Path(tempfile.mkdtemp(prefix="gha-"))
    env_file = workdir / "env"
    env_file.touch()
    env = {**base_env, "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_SHA": github["sha"],
           "GITHUB_ACTOR": github["actor"], "GITHUB_REF": github["ref"], "GITHUB_ENV": str(env_file),
           "GITHUB_WORKSPACE": str(cwd)}
    for scope in (doc.get("env") or {}, job.get("env") or {}):
        env.update({k: ctx.render(v) for k, v in scope.items()})
    results: list[StepResult] = []
    for i, step in enumerate(job["steps"]):
        name = step.get("name") or step.get("uses") or step.get("run", "").splitlines()[0]
        cond = step.get("if", "success()")
        cond = cond[3:-2].strip() if str(cond).startswith("${{") else str(cond)
        if "uses" in step or not ctx.evaluate(cond if re.search(r"\b(always|success|failure|cancelled)\(\)", cond)
                                              else f"success() && ({cond})"):
            results.append(StepResult(name, step.get("id"), "skipped", None))
            if step.get("id"):
                ctx.steps[step["id"]] = {"outputs": {}, "conclusion": "skipped"}
            continue
        out_file = workdir / f"output-{i}"
        out_file.touch()
        step_env = {**env, **_parse_env_file(env_file), "GITHUB_OUTPUT": str(out_file)}
        step_env.update({k: ctx.render(v) for k, v in (step.get("env") or {}).items()})
        script = workdir / f"step-{i}.sh"
        script.write_text(ctx.render(step["run"]))
        log(f"::group::{name}")
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=cwd,
                              env=step_env, capture_output=True, text=True, timeout=timeout_s)
        output = proc.stdout + proc.stderr
        log(output[-4000:])
        outputs = _parse_env_file(out_file)
        ok = proc.returncode == 0
        conclusion = "success" if ok or step.get("continue-on-error") else "failure"
        if not ok and not step.get("continue-on-error"):
            ctx.failed = True
        results.append(StepResult(name, step.get("id"), conclusion, proc.returncode, output, outputs))
        if step.get("id"):
            ctx.steps[step["id"]] = {"outputs": outputs, "conclusion": conclusion}
    return results


def clean_env(extra: dict | None = None) -> dict:
    """This process's environment without Prefect/ebmops settings (the job sets its own)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_API", "EBMOPS_")) and k not in ("PREFECT_HOME", "PREFECT_PROFILE")}
    env.update(extra or {})
    return env
