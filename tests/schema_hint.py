"""Without the upstream schemas, a test that needs them fails with one line saying what to do.

The schemas live in ``$AUTOTRADER_SCHEMA_DIR``, ``../shared/schemas`` (CI) or ``.schemas/`` (what
``make schemas SCHEMA_DIR=.schemas`` fetches; ``make test`` does it when neither exists). On a laptop
with neither and no network, a traceback per test hides that one cause; ``require_schema_dir`` (for
fixtures) and the report hook below (for tests whose library call looks them up) turn each into the
same single line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from autotrader.errors import DeployError
from autotrader.gitops.schemas import SCHEMA_DIR_ENV, find_schema_dir

REPO = Path(__file__).resolve().parents[1]

HINT = (
    f"no upstream schemas (not in ${SCHEMA_DIR_ENV}, ../shared/schemas or .schemas/): run "
    f"`make schemas SCHEMA_DIR=.schemas` with network (make test does it), or set {SCHEMA_DIR_ENV}"
)


def schemas_missing(repo: Path = REPO) -> bool:
    try:
        find_schema_dir(repo)
    except DeployError:
        return True
    return False


def require_schema_dir(repo: Path = REPO) -> Path:
    """The schema folder, or fail the test (fixture) with the one-line hint and no traceback."""
    try:
        return find_schema_dir(repo)
    except DeployError:
        pytest.fail(HINT, pytrace=False)


def _about_missing_schemas(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, DeployError) and "no upstream schemas found" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """A test that failed because the library found no schemas reports the hint, not a traceback."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.excinfo is not None and _about_missing_schemas(call.excinfo.value):
        report.longrepr = HINT
