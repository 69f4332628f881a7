"""The suite says how many tests skipped for want of the real-data samples, and where it looked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = '''
import pytest
from conftest import shared_file

def test_needs_a():
    shared_file("a.txt")

@pytest.mark.parametrize("i", [1, 2])
def test_needs_b(i):
    shared_file("b.csv")

def test_skips_for_another_reason():
    pytest.skip("not about data")

def test_plain():
    assert True
'''


def run(pytester: pytest.Pytester, with_folder: bool) -> tuple[list[str], Path]:
    checkout = pytester.path / "checkout"
    (checkout / "tests").mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("conftest.py"), checkout / "tests" / "conftest.py")
    (checkout / "tests" / "test_x.py").write_text(TESTS)
    data = pytester.path / "shared" / "data"
    if with_folder:
        data.mkdir(parents=True)
        (data / "a.txt").write_text("x\n")
    result = pytester.runpytest_subprocess(str(checkout / "tests"), "-q", "-p", "no:cacheprovider", "--rootdir", str(checkout))
    return result.outlines, data


def test_the_summary_counts_tests_skipped_for_missing_samples(pytester: pytest.Pytester) -> None:
    lines, data = run(pytester, with_folder=False)
    assert f"3 tests skipped: the real-data samples are looked for in {data} (../shared/data beside the checkout), absent" in lines


def test_the_summary_names_the_missing_files(pytester: pytest.Pytester) -> None:
    lines, data = run(pytester, with_folder=True)
    assert f"2 tests skipped: the real-data samples are looked for in {data} (../shared/data beside the checkout), missing b.csv" in lines
