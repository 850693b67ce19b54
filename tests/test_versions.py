"""The supported Pythons and debugpy range: declared once, checked without
importing debugpy, and the same in the package metadata."""

import configparser
import os

import pytest

from lambda_debugger import __version__
from lambda_debugger.lambda_side import versions
from tests.support.chain import REPO

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("1.8.22", (1, 8, 22)),
        ("1.8.22rc1", (1, 8, 22)),
        ("1.8.22.dev0", (1, 8, 22)),
        ("2", (2,)),
        ("1.8", (1, 8)),
        ("abc", ()),
        ("", ()),
    ],
)
def test_parse_version(text, parsed):
    assert versions.parse_version(text) == parsed


@pytest.mark.parametrize("found", ["1.8.1", "1.8.5", "1.8.7", "1.8.22", "1.9.0", "1.8.23.dev1"])
def test_debugpy_in_the_range_can_serve(found):
    assert versions.debugpy_problem(found) is None


@pytest.mark.parametrize("found", ["1.8.0", "1.6.7", "1.8.6", "2.0.0", "nonsense"])
def test_debugpy_outside_the_range_is_named_with_the_range_needed(found):
    problem = versions.debugpy_problem(found)
    assert problem == "debugpy %s cannot serve; lambda-debugger needs debugpy>=1.8.1,!=1.8.6,<2" % found


def test_missing_and_unreadable_debugpy():
    assert (
        versions.debugpy_problem(None)
        == "debugpy is not installed; lambda-debugger needs " + versions.DEBUGPY_REQUIREMENT
    )
    assert versions.debugpy_problem(versions.UNKNOWN) is None  # the child reads __version__


def test_installed_debugpy_is_read_beside_the_package_that_import_would_take(tmp_path):
    first, second, empty = (tmp_path / name for name in ("first", "second", "empty"))
    for folder in (first, second, empty):
        folder.mkdir()
    (first / "debugpy").mkdir()
    (first / "debugpy-1.8.6.dist-info").mkdir()
    (second / "debugpy").mkdir()
    (second / "debugpy-1.8.22.dist-info").mkdir()
    assert versions.installed_debugpy([str(empty), str(first), str(second)]) == "1.8.6"
    assert versions.installed_debugpy([str(second), str(first)]) == "1.8.22"
    (first / "debugpy-1.8.6.dist-info").rmdir()
    assert versions.installed_debugpy([str(first), str(second)]) == versions.UNKNOWN
    assert versions.installed_debugpy([str(empty), str(tmp_path / "missing")]) is None


def test_this_machines_debugpy_is_found_and_supported():
    import debugpy

    found = versions.installed_debugpy()
    assert found == debugpy.__version__
    assert versions.debugpy_problem(found) is None


def metadata():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(REPO, "setup.cfg"))
    return parser


def test_the_package_metadata_declares_what_the_code_supports():
    config = metadata()
    requires = [
        line.strip()
        for line in config["options"]["install_requires"].splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert versions.DEBUGPY_REQUIREMENT in requires
    assert config["options"]["python_requires"] == ">=%d.%d" % versions.SUPPORTED_PYTHONS[0]
    classifiers = config["metadata"]["classifiers"]
    for version in versions.SUPPORTED_PYTHONS:
        assert "Programming Language :: Python :: %d.%d\n" % version in classifiers + "\n"
    # The version is written once, in the package.
    assert config["metadata"]["version"] == "attr: lambda_debugger.__version__"
    assert __version__.count(".") == 2


def test_a_pep517_build_backend_is_declared():
    with open(os.path.join(REPO, "pyproject.toml")) as file:
        text = file.read()
    assert 'build-backend = "setuptools.build_meta"' in text
    assert 'requires = ["setuptools>=61"' in text
