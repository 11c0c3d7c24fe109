"""One Great Expectations context per validation run, and the Data Docs it builds.

Ephemeral (in memory) because creating it costs milliseconds and leaves nothing behind; the only
thing written is the Data Docs site, into a folder the caller chooses. Progress bars and analytics
are off: progress is ours (rich), and nothing leaves the machine.

A helper process (``validation.helper``) validates a share of the instruments in a context of its
own; ``export`` hands its suites and results over and ``adopt`` files them in the main context, so
one Data Docs site shows every instrument as if one process had run them all.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from autotrader.validation.rules import Rule

SITE = "autotrader"
# BASIC gives counts and up to PARTIAL examples per expectation without GE's costlier index lists.
RESULT_FORMAT: dict[str, Any] = {"result_format": "BASIC", "partial_unexpected_count": 10}


@dataclass(frozen=True)
class Exported:
    """Suites (as JSON) and their stored validation results, picklable across processes."""

    suites: list[dict[str, Any]]
    results: list[tuple[Any, Any]]  # (ValidationResultIdentifier, ExpectationSuiteValidationResult)


class GxEngine:
    """Runs suites on pandas frames and keeps their results for one Data Docs build."""

    def __init__(self, run_name: str = "validate", run_time: datetime.datetime | None = None) -> None:
        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.datasource = self.context.data_sources.add_pandas("raw_bars")
        # One run time for the main process and its helpers: the Data Docs list one run.
        self.run_id = RunIdentifier(
            run_name=run_name, run_time=run_time or datetime.datetime.now(datetime.UTC)
        )

    def validate(self, suite_name: str, frame: pd.DataFrame, rules: Sequence[Rule]) -> Any:
        """Validate ``frame`` against a suite of ``rules``; the result is stored for the Data Docs."""
        asset = self.datasource.add_dataframe_asset(suite_name)
        batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        suite = self.context.suites.add(
            gx.ExpectationSuite(name=suite_name, expectations=[r.expectation for r in rules])
        )
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=suite_name, data=batch_definition, suite=suite)
        )
        # One block per dtype: GE filters rows per expectation, and an unconsolidated frame (built
        # column by column) is re-consolidated on every filter — most of the time on a 1M-row table.
        frame = frame.copy(deep=True)
        return definition.run(
            batch_parameters={"dataframe": frame}, result_format=RESULT_FORMAT, run_id=self.run_id
        )

    def export(self, suite_names: Collection[str]) -> Exported:
        """The named suites and their results, for ``adopt`` in another process's engine."""
        names = set(suite_names)
        store = self.context.validation_results_store
        keys = [k for k in store.list_keys() if k.expectation_suite_identifier.name in names]
        return Exported(
            suites=[s.to_json_dict() for s in self.context.suites.all() if s.name in names],
            results=[(key, store.get(key)) for key in keys],
        )

    def adopt(self, exported: Exported) -> None:
        """File another engine's suites and results here, so ``build_docs`` renders them too."""
        for suite in exported.suites:
            fields = {k: v for k, v in suite.items() if k != "id"}  # a new id in this context
            self.context.suites.add(gx.ExpectationSuite(**fields))
        for key, result in exported.results:
            self.context.validation_results_store.set(key, result)

    def build_docs(self, docs_dir: str | Path) -> Path:
        """Render every stored result (and suite) as a static site in ``docs_dir``; returns its index.html.

        The site is configured here, not at start-up, so the caller can point it into the temporary
        folder that will be swapped in atomically with the JSON reports.
        """
        docs_dir = Path(docs_dir).resolve()  # GE wants an absolute base_directory
        self.context.variables.data_docs_sites = {
            SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        }
        self.context.build_data_docs(site_names=[SITE])
        return docs_dir / "index.html"
