"""MLPClassifier: scikit-learn's parameters and fitted attributes, fastmnist's kernels."""

from __future__ import annotations

from numbers import Integral

from ._base import BaseNeuralClassifier
from ._layers import Activation, Dense
from ._sklearn_compat import Interval


class MLPClassifier(BaseNeuralClassifier):
    """Multi-layer perceptron classifier, a drop-in for scikit-learn's.

    Same parameters (names, order, defaults), same fitted attributes, same training
    algorithm (Glorot-uniform initialisation drawn as scikit-learn draws it, log loss,
    L2 penalty ``alpha`` on the weights, SGD / Adam / L-BFGS); every heavy step runs in
    fastmnist's Numba kernels, and ``n_jobs`` sets their threads.

    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The ith element is the number of neurons in the ith hidden layer.
    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
    solver : {"lbfgs", "sgd", "adam"}, default="adam"
    alpha : float, default=0.0001
        Strength of the L2 penalty on the weights (not the biases).
    batch_size : int or "auto", default="auto"
        ``min(200, n_samples)`` for "auto".
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        The schedule of the "sgd" solver.
    learning_rate_init : float, default=0.001
    power_t : float, default=0.5
    max_iter : int, default=200
        Epochs for the stochastic solvers, iterations for "lbfgs".
    shuffle : bool, default=True
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the shuffles, the validation split and the dropout
        masks. The same seed gives the same model whatever ``n_jobs`` is.
    tol : float, default=1e-4
    verbose : bool, default=False
        Show a progress bar with loss, validation score and images/s for each epoch.
    warm_start : bool, default=False
    momentum : float, default=0.9
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
        Hold out a stratified ``validation_fraction`` of the data and stop when its
        accuracy stops improving; the best weights are restored.
    validation_fraction : float, default=0.1
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's parameters.
    n_iter_no_change : int, default=10
    max_fun : int, default=15000
        Most loss evaluations of "lbfgs".
    n_jobs : int, default=None
        Threads for the kernels (None: all of Numba's threads). BLAS runs single-threaded
        inside fastmnist so that results do not depend on this number.
    class_weight : dict, "balanced" or None, default=None
        Weights per class, multiplied into ``sample_weight``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    loss_ : float
    best_loss_ : float or None
    loss_curve_ : list of float
    validation_scores_ : list of float or None
    best_validation_score_ : float or None
    t_ : int
        Training samples seen.
    coefs_ : list of ndarray, the ith of shape (n_units[i], n_units[i + 1])
    intercepts_ : list of ndarray, the ith of shape (n_units[i + 1],)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
    n_iter_ : int
    n_layers_ : int
    n_outputs_ : int
        1 for binary problems (one logistic unit), else the number of classes.
    out_activation_ : str
        "logistic" or "softmax".

    Notes
    -----
    float64 input trains in float64, as scikit-learn does; float32 and uint8 input train
    in float32 (uint8 is scaled to [0, 1] as batches are gathered, without copying X).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from fastmnist import MLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50, random_state=0)
    >>> clf.fit(X[:1500] / 16, y[:1500]).score(X[1500:] / 16, y[1500:]) > 0.9
    True
    """

    _parameter_constraints: dict = {
        **BaseNeuralClassifier._parameter_constraints,
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        n_jobs=None,
        class_weight=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.n_jobs = n_jobs
        self.class_weight = class_weight

    def _build_layers(self, n_features, n_outputs):
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        if any(size <= 0 for size in sizes):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        factor = 2.0 if self.activation == "logistic" else 6.0  # scikit-learn's choice
        layers = []
        for size in sizes:
            layers += [Dense(int(size), factor), Activation(self.activation)]
        layers.append(Dense(n_outputs, factor))
        return layers, (n_features,)
