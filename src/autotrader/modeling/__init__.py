"""Training, backtesting and gating of the signal model.

Pure functions on DataFrames (labels, splits, backtest math, metrics, gates) plus the thin MLflow
logging in ``tracking``. Nothing here talks to the registry (that is ``autotrader.registry``, a layer
above) and nothing here knows how features are computed (it reads ``autotrader.store``).

The model predicts a ternary class per bar: ``1`` long, ``0`` flat, ``-1`` short.
"""

KEYS: tuple[str, str] = ("broker", "symbol")
CLASSES: tuple[int, int, int] = (-1, 0, 1)
