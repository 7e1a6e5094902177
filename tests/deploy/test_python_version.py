"""`.python-version` as Heroku's Python buildpack (and Dokku's herokuish) reads it."""

from __future__ import annotations

import re

import pytest

from tests.deploy.files import ROOT, read
from tests.deploy.heroku_python_version import InvalidPythonVersion, parse_python_version_file


def test_python_version_file_is_accepted_by_the_buildpack():
    version = parse_python_version_file(read(".python-version"))
    assert version.count(".") == 1, "name the major version only (e.g. 3.11), so builds get security updates"


def test_no_runtime_txt_overrides_it():
    # runtime.txt wins over .python-version in the buildpack, and is deprecated.
    assert not (ROOT / "runtime.txt").exists()


def test_docker_image_uses_the_same_python():
    version = parse_python_version_file(read(".python-version"))
    images = re.findall(r"^FROM\s+python:(\d+\.\d+)", read("Dockerfile"), flags=re.MULTILINE)
    assert images and set(images) == {version}


@pytest.mark.parametrize(
    "contents, expected",
    [
        ("3.11\n", "3.11"),
        ("3.11.9", "3.11.9"),
        ("  3.12  \n", "3.12"),
        ("# pinned for the buildpack\n\n3.11\n", "3.11"),
    ],
)
def test_rule_accepts(contents, expected):
    assert parse_python_version_file(contents) == expected


@pytest.mark.parametrize(
    "contents",
    [
        "python-3.11",
        '"3.11"',
        "3.11.x",
        "3.11 # comment",
        "3",
        "03.11",
        "",
        "# only a comment\n",
        "3.11\n3.12\n",
        "2.7",
        "3.8",
    ],
)
def test_rule_rejects(contents):
    with pytest.raises(InvalidPythonVersion):
        parse_python_version_file(contents)
