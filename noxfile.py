"""Development sessions: tests, lint, typecheck, benchmarks and quality."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite against the installed package and its server extra."""
    session.install("-e", ".[server]", "-r", "requirements-test.txt")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style with ruff."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Check types with mypy --strict on the library."""
    session.install("-e", ".[server]", "mypy==2.4.1")
    session.run("mypy", "src/leadparse")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmarks and print their figures."""
    session.install("-e", ".[server,compare]")
    session.run("python", "benchmarks/throughput.py", *session.posargs)


# Targets: every talon standard reply exact, at least 97% on the other reply
# sets and never behind a baseline, and precision and recall of auto_reply
# and bounce at least 0.98 on each source that labels them.
QUALITY_THRESHOLDS = [
    "--min-reply-accuracy",
    "0.97",
    "--reply-target",
    "talon standard=1.0",
    "--ahead-of-baselines",
    "--min-precision",
    "0.98",
    "--min-recall",
    "0.98",
    "--kinds",
    "auto_reply",
    "bounce",
    "--max-exceptions",
    "0",
]


@nox.session(python=PYTHON)
def quality(session: nox.Session) -> None:
    """Measure extraction quality on the public corpus against thresholds.

    Arguments after ``--`` replace the default thresholds.
    """
    session.install("-e", ".[compare]")
    args = session.posargs or QUALITY_THRESHOLDS
    session.run("python", "benchmarks/quality.py", *args)
