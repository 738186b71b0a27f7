"""Smart Energy: smart-meter ingest, Feast features, XGBoost forecasts, KFP pipelines, KServe serving.

One import namespace over the repository's folders (pyproject.toml maps them):
``smart_energy.components`` (components/, the plain logic), ``smart_energy.pipelines`` (pipelines/,
KFP), ``smart_energy.serving`` (serving/, KServe) and ``smart_energy.feature_repo`` (feature_repo/,
Feast's repo, shipped as package data). This package itself holds what sits on top of them: the
``smart-energy`` command line (``cli``) and the demo.
"""
