"""Orchestration: the Argo workflows and GitHub workflows that run the DVC pipeline, and their checks.

The workflows themselves are YAML (``argo/``, ``.github/workflows/``); this package reads them so that
``autotrader pipeline plan`` can show what runs where, and so that the test suite (and CI) can prove
they match ``dvc.yaml`` and the upstream Argo schema. It also holds the small helpers every Argo step
calls: per-broker extraction, params overrides, the state hand-off between steps, and notifications.
"""
