"""The only module that imports private scikit-learn API; keep every such touch here."""

from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.optimize import _check_optimize_result

__all__ = ["Interval", "Options", "StrOptions", "_check_optimize_result", "_fit_context"]
