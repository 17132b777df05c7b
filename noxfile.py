"""Task runner. ``nox`` runs tests, lint, typecheck and the docs build; ``nox -s bench`` the benchmarks."""

from __future__ import annotations

import glob
import shutil

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"
# the tutorial's programs, not its pages: ruff would reformat the code quoted in Markdown
LINTED = ["trionano", "tests", "bench", "examples", *sorted(glob.glob("docs/tutorial/*.py")), "noxfile.py"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite (Hypothesis with the short CI profile unless told otherwise)."""
    session.install("-e", ".[test]")
    if shutil.which("npm"):  # the official pomelo JS client, for the interop tests
        session.run("npm", "ci", "--no-audit", "--no-fund", "--prefix", "tests/js", external=True, silent=True)
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[typecheck]")
    session.run("mypy", *LINTED)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The docs site (MkDocs, mkdocstrings), warnings as errors, into build/site (gitignored)."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/site")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks: figures as ratios against a same-run baseline. Never part of the tests."""
    session.install("-e", ".[bench,examples]")
    session.run("python", "-m", "bench.wire")
    session.run("python", "-m", "bench.websocket")
    session.run("python", "-m", "bench.profile")
    session.run("python", "-m", "bench.runtime", *session.posargs)
    session.run("python", "-m", "bench.cluster", *session.posargs)
    session.run("python", "-m", "bench.churn", *session.posargs)  # memory per round of clients coming and going
    session.run("python", "-m", "bench.hostile", *session.posargs)
    session.run("python", "-m", "bench.push_api", *session.posargs)  # B13: needs the push and examples extras
    session.run("python", "-m", "bench.push", *session.posargs)  # B5, buckets, B14: matplotlib (the bench extra)


@nox.session(python=PYTHON)
def proto(session: nox.Session) -> None:
    """Regenerate trionano/cluster/_generated from proto/*.proto (nano's clusterpb, trionano's
    push service and fast-path stream); fail if it changed."""
    session.install("betterproto[compiler]==2.0.0b7", "grpcio-tools")
    target = "trionano/cluster/_generated"
    protos = ["proto/cluster.proto", "proto/push.proto", "proto/stream.proto"]
    session.run("python", "-m", "grpc_tools.protoc", "-I", "proto", f"--python_betterproto_out={target}", *protos)
    session.run("git", "diff", "--exit-code", "--", target, external=True)
