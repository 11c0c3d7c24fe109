"""The rollout rehearsal: a production canary simulated on one machine, apart from GitOps proper.

Why its own package: ``autotrader.gitops`` changes and checks what git holds (pins, overlays, schemas,
policy); this package RUNS things (model servers, a real Prometheus, a traffic driver) to check that the
rendered overlay's canary analysis tells a good canary from a bad one. It reads the rendered manifests
through ``autotrader.gitops.kustomize`` and is used by ``autotrader rollout rehearse``.

- ``rehearse``: the walk through the Rollout's steps and the reports;
- ``analysis``: the Rollout plan, AnalysisTemplates and Argo Rollouts' measurement rules;
- ``expr``: the subset of the expr language the conditions use;
- ``traffic``: the simulated market replayed and routed as a step says;
- ``servers``: model servers and Prometheus on loopback;
- ``demo_models``: one good and three bad pyfunc models to rehearse with.
"""
