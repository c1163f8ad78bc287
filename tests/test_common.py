"""scikit-learn's own estimator checks, every one of them, on fastmnist's estimators."""

import warnings

from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastmnist import MLPClassifier

# max_iter=100 as scikit-learn's own test suite configures its MLPClassifier for these
# checks (sklearn/utils/_test_common/instance_generator.py).
ESTIMATORS = [MLPClassifier(max_iter=100)]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)
