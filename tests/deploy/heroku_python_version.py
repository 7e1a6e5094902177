"""The Heroku Python buildpack's rule for `.python-version`, which Dokku's herokuish applies too.

Written from heroku/heroku-buildpack-python, `lib/python_version.sh`
(`python_version::parse_python_version_file` and `python_version::resolve_python_version`):

- lines that hold only whitespace and/or a `#` comment are ignored;
- exactly one line must remain, matching `^[[:space:]]*(N.N(.N)?)[[:space:]]*$` where each N is
  `(0|[1-9][0-9]*)`: no quotes, no `python-` prefix, no wildcards, no trailing comment;
- the requested major version must be one the buildpack supports (3.9 to 3.13 at the time of
  writing; 3.14 has been added since), otherwise the build stops.
- `runtime.txt` (deprecated) wins over `.python-version` when both exist.
"""

from __future__ import annotations

import re

_INT = r"(0|[1-9][0-9]*)"
PYTHON_VERSION_REGEX = rf"{_INT}\.{_INT}(\.{_INT})?"
_IGNORED_LINE = re.compile(r"^\s*(#.*)?$")
_VERSION_LINE = re.compile(rf"^\s*({PYTHON_VERSION_REGEX})\s*$")

OLDEST_SUPPORTED_MINOR = 9
NEWEST_SUPPORTED_MINOR = 14


class InvalidPythonVersion(ValueError):
    pass


def parse_python_version_file(contents: str) -> str:
    """The requested version (`3.11` or `3.11.9`), or InvalidPythonVersion saying why the build would stop."""
    lines = [line for line in contents.splitlines() if not _IGNORED_LINE.match(line)]
    if not lines:
        raise InvalidPythonVersion("no Python version found in .python-version")
    if len(lines) > 1:
        raise InvalidPythonVersion(f"multiple versions found in .python-version: {lines[:5]}")
    match = _VERSION_LINE.match(lines[0])
    if match is None:
        raise InvalidPythonVersion(
            f"{lines[0]!r} is not N.N or N.N.N (no quotes, 'python-' prefix, wildcards or trailing comments)"
        )
    version = match.group(1)
    major, minor = int(match.group(2)), int(match.group(3))
    if major != 3 or not OLDEST_SUPPORTED_MINOR <= minor <= NEWEST_SUPPORTED_MINOR:
        raise InvalidPythonVersion(f"Python {major}.{minor} is not supported by the buildpack")
    return version
