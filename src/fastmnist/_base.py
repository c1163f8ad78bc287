"""The estimator both classifiers share: validation, labels, the epoch loop, prediction.

Subclasses say which layers to build (``_build_layers``); everything else -- solvers,
early stopping, sample and class weights, warm starts, partial_fit, progress bars -- is
here, modelled on scikit-learn's ``BaseMultilayerPerceptron``.

Training state (network, optimizer, counters) lives in ``self._state`` and is only replaced
once a fit has succeeded: a fit that raises leaves a fitted model exactly as it was.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.optimize
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state, compute_sample_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import (
    _check_sample_weight,
    assert_all_finite,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from ._config import effective_n_jobs, threads
from ._fused import CHUNK_BATCHES, INPUT_DTYPES, ConvForward, DenseForward, FusedAdam
from ._kernels._jit import serial_kernels
from ._network import Network
from ._optim import SGD, Adam
from ._sklearn_compat import (
    Interval,
    Options,
    StrOptions,
    _check_optimize_result,
    _fit_context,
)
from .datasets import Minibatches

_STOCHASTIC_SOLVERS = ("sgd", "adam")
# Rows per chunk when predicting: large enough for efficient kernels, small enough that
# the activations of a 10,000-image call stay in cache-friendly buffers: at most 2048 rows
# and 32 MB of batch buffers (a CNN's are ~0.3 MB per image), unless training has already
# reserved more.
_PREDICT_CHUNK = 2048
_PREDICT_BYTES = 32 << 20
# Up to this many rows, prediction runs on the calling thread alone: waking a second
# thread costs more than the work it would take over.
_SERIAL_ROWS = 16
# Threads for those rows' kernels that share one image (_one_image_threads): cnn-keras's
# second convolution of one image has 25 rows of products, for matmul's 8-row tiles, so more
# threads would mostly wait at the barrier (measured on 2 cores: 21 -> 16 us).
_SERIAL_ROWS_THREADS = 2

# The dtypes X is accepted in without a copy (anything else becomes float64).
_DTYPES = (np.float64, np.float32, np.uint8)


class _TrainingState:
    """Everything a fit changes, so that it can be copied and swapped in whole."""

    def __init__(self, network: Network, optimizer) -> None:
        self.network, self.optimizer = network, optimizer
        self.n_iter = self.t = 0
        self.loss = None
        self.loss_curve: list[float] = []
        self.validation_scores: list[float] | None = None
        self.best_loss = np.inf
        self.best_validation_score = None
        self.no_improvement_count = 0
        self.best_theta = None
        self._forward = self._conv_forward = None

    def dense_forward(self, X) -> DenseForward | None:
        """The one-call prediction path for ``X``, or None where it does not apply."""
        if X.dtype not in INPUT_DTYPES:
            return None
        if self._forward is None:  # built once: prediction of one image takes ~10 us
            self._forward = DenseForward.supports(self.network) and DenseForward(self.network)
        return self._forward or None

    def conv_forward(self, X) -> ConvForward | None:
        """The one-call prediction path for a few rows ``X`` (up to _SERIAL_ROWS) of a
        CNN, or None where it does not apply."""
        if X.dtype not in INPUT_DTYPES or len(X) > _SERIAL_ROWS:
            return None
        if self._conv_forward is None:  # built once, as dense_forward
            self._conv_forward = (ConvForward.supports(self.network)
                                  and ConvForward(self.network))
        return self._conv_forward or None

    def checks_finite(self, X) -> bool:
        """Whether predicting ``X`` takes a one-call path, which finds NaN and infinity
        itself (the caller then checks X only when told that a row holds one)."""
        return self.dense_forward(X) is not None or self.conv_forward(X) is not None


class BaseNeuralClassifier(ClassifierMixin, BaseEstimator):
    """Shared implementation of MLPClassifier and CNNClassifier (not for direct use)."""

    _parameter_constraints: dict = {
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"),
                             Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [None, Integral],
        "class_weight": [StrOptions({"balanced"}), dict, None],
    }

    # --- what subclasses provide ----------------------------------------------------------

    def _build_layers(self, n_features: int, n_outputs: int):
        """Return ``(layers, input_shape)`` for rows of ``n_features`` values."""
        raise NotImplementedError

    def _as_rows(self, X, fitting: bool = False):
        """X as the (n_samples, n_features) rows scikit-learn validates (CNN: images)."""
        return X

    # --- public API -----------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and targets y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            float64, float32 or uint8. uint8 is read as pixel intensities and scaled to
            [0, 1] as each batch is gathered; the data is never copied to float64.
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : object
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers. {self.solver} "
                "is not stochastic."
            )
        return True

    @available_if(_check_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with exactly one epoch over (X, y).

        ``classes`` (all the labels the model will ever see) is required on the first call
        and ignored afterwards.
        """
        if self.class_weight == "balanced":
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit: the class "
                "frequencies of one call are not those of the data. Pass a dict instead."
            )
        if not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            classes = np.asarray(classes)
            check_classification_targets(classes)
            self._classes_for_partial_fit = unique_labels(classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def predict_proba(self, X):
        """Probability of each class, columns ordered as ``classes_``."""
        if "_state" not in self.__dict__:  # check_is_fitted takes 4 us: only to raise
            check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        X = _as_network_input(X, self._state.network.dtype)
        return self._predict_proba_with(self._state, X)

    def predict_log_proba(self, X):
        """Natural logarithm of ``predict_proba``."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable class of each sample."""
        proba = self.predict_proba(X)  # checks that the model is fitted
        return self.classes_[proba.argmax(1)]  # the method: 0.7 us less than np.argmax

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags

    # --- fitting --------------------------------------------------------------------------

    def _validate_X(self, X, reset: bool):
        X = self._as_rows(X)
        if reset or not self._passes_as_is(X):
            return validate_data(self, X, reset=reset, order="C", dtype=_DTYPES)
        if X.dtype != np.uint8 and not self._state.checks_finite(X):
            # The one-call paths check as they go. Elsewhere a finite sum clears X in a
            # microsecond where scikit-learn takes 15; it alone names what is wrong.
            if not math.isfinite(np.add.reduce(X, axis=None)):  # (np.isfinite: 0.4 us more)
                assert_all_finite(X, input_name="X")
        return X

    def _passes_as_is(self, X) -> bool:
        # What validate_data would return unchanged and without a warning, finiteness
        # aside, recognised in a microsecond: it takes ~50 us, more than predicting one
        # image.
        return (type(X) is np.ndarray and X.ndim == 2 and X.dtype in _DTYPES
                and X.flags.c_contiguous and X.shape[0] > 0
                and X.shape[1] == self.n_features_in_
                and not hasattr(self, "feature_names_in_"))

    def _fit(self, X, y, sample_weight, incremental: bool):
        first_pass = not hasattr(self, "_state") or (not self.warm_start and not incremental)
        X, y = validate_data(self, self._as_rows(X, fitting=True), y, reset=first_pass,
                             order="C", dtype=_DTYPES)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        classes = self._fit_classes(y, incremental, first_pass)
        codes = np.searchsorted(classes, y)
        weights = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if self.class_weight is not None:
            weights = weights * compute_sample_weight(self.class_weight, y)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")

        random_state = check_random_state(self.random_state)
        n_outputs = 1 if len(classes) == 2 else len(classes)
        if first_pass:
            state = self._new_state(X, n_outputs, random_state)
        else:
            state = copy.deepcopy(self._state)  # nothing of the fitted model changes yet
            if not incremental and self.solver in _STOCHASTIC_SOLVERS:
                state.optimizer = self._make_optimizer(state.network)
        X = _as_network_input(X, state.network.dtype)

        with threads(self.n_jobs):
            if self.solver == "lbfgs":
                self._fit_lbfgs(state, X, codes, weights)
            else:
                self._fit_stochastic(state, X, codes, weights, random_state, incremental)
        if not np.isfinite(state.network.theta).all():
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may contain "
                "large values and need to be preprocessed."
            )
        self._state, self.classes_ = state, classes
        self._publish(n_outputs)
        return self

    def _fit_classes(self, y, incremental, first_pass):
        seen = unique_labels(y)
        if incremental and hasattr(self, "_classes_for_partial_fit") and first_pass:
            classes = self._classes_for_partial_fit
        elif incremental or (self.warm_start and not first_pass):
            classes = self.classes_
        else:
            classes = seen
        if len(np.setdiff1d(seen, classes)):
            raise ValueError(
                f"`y` has classes not in `self.classes_`. `self.classes_` has {classes}. "
                f"'y' has {seen}."
            )
        if len(classes) < 2:
            raise ValueError(
                "This solver needs samples of at least 2 classes in the data, but the data "
                f"contains only one class: {classes[0]!r}"
            )
        if self.warm_start and not incremental and not first_pass and not np.array_equal(
                classes, seen):
            raise ValueError(
                "warm_start can only be used where `y` has the same classes as in the "
                f"previous call to fit. Previously got {self.classes_}, `y` has {seen}"
            )
        return classes

    def _new_state(self, X, n_outputs, random_state) -> _TrainingState:
        layers, input_shape = self._build_layers(X.shape[1], n_outputs)
        dtype = np.float64 if X.dtype == np.float64 else np.float32
        output = "logistic" if n_outputs == 1 else "softmax"
        network = Network(layers, input_shape, output, dtype)
        network.initialize(random_state)
        for layer in layers:
            if hasattr(layer, "seed"):  # dropout masks: reproducible from random_state
                layer.seed = int(random_state.randint(0, 2**31 - 1))
        self._input_shape = input_shape
        optimizer = self._make_optimizer(network) if self.solver != "lbfgs" else None
        state = _TrainingState(network, optimizer)
        if self.early_stopping:
            state.validation_scores, state.best_validation_score = [], -np.inf
            state.best_loss = None
        return state

    def _make_optimizer(self, network):
        if self.solver == "sgd":
            return SGD(network.n_params, network.dtype, self.learning_rate_init,
                       self.learning_rate, self.momentum, self.nesterovs_momentum,
                       self.power_t)
        return Adam(network.n_params, network.dtype, self.learning_rate_init, self.beta_1,
                    self.beta_2, self.epsilon)

    def _to_input(self, xb):
        """A gathered batch (n, n_features) as the network's input (n, *input_shape)."""
        return xb.reshape(len(xb), *self._input_shape)

    def _batch_loss(self, network, xb, codes, weights, weight_sum: float) -> float:
        """Loss of one batch with the L2 term, as scikit-learn adds it; fills the gradient."""
        loss = network.loss_and_gradient(self._to_input(xb), codes, weights)
        if self.alpha:
            decayed = network.theta[:network.n_decay]
            loss += 0.5 * self.alpha * float(np.dot(decayed, decayed)) / weight_sum
        return loss

    def _fit_stochastic(self, state, X, codes, weights, random_state, incremental):
        network = state.network
        X_val = codes_val = w_val = None
        if self.early_stopping:
            # Imported here, as scikit-learn's ClassifierMixin.score imports its metric:
            # model_selection and metrics would add 8 MB to every process that trains.
            from sklearn.model_selection import train_test_split

            X, X_val, codes, codes_val, weights, w_val = train_test_split(
                X, codes, weights, random_state=random_state,
                test_size=self.validation_fraction, stratify=codes)
            if len(X_val) < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' or "
                    "the size of your dataset."
                )
        n_samples = len(X)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                              "It is going to be clipped", stacklevel=2)
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        batches = Minibatches(X, codes, batch_size, n_threads=effective_n_jobs(self.n_jobs))
        weights = weights.astype(network.dtype)
        fused = (FusedAdam(network, state.optimizer, X, codes, weights, batch_size)
                 if FusedAdam.supports(network, state.optimizer, X) else None)
        progress = _progress(self.verbose, len(batches))
        state.n_iter = 0  # as scikit-learn: epochs of this call; t counts all samples seen
        try:
            for _ in range(self.max_iter):
                seed = int(random_state.randint(0, 2**63 - 1)) if self.shuffle else None
                accumulated, start = 0.0, time.perf_counter()
                steps = (self._fused_epoch(fused, batches.order(seed)) if fused
                         else self._layered_epoch(state, batches, seed, weights))
                for loss_sum, n_batches in steps:
                    accumulated += loss_sum
                    _advance(progress, n_batches)
                state.n_iter += 1
                state.loss = accumulated / n_samples
                state.t += n_samples
                state.loss_curve.append(state.loss)
                if self.early_stopping:
                    self._track_validation(state, X_val, codes_val, w_val)
                else:
                    self._track_loss(state)
                _report(progress, self.verbose, state, n_samples / (time.perf_counter() - start))
                state.optimizer.iteration_ends(state.t)
                if state.no_improvement_count > self.n_iter_no_change:
                    what = "Validation score" if self.early_stopping else "Training loss"
                    msg = (f"{what} did not improve more than tol={self.tol:f} for "
                           f"{self.n_iter_no_change} consecutive epochs.")
                    if state.optimizer.trigger_stopping(msg, self.verbose):
                        break
                    state.no_improvement_count = 0
                if incremental:
                    break
                if state.n_iter == self.max_iter:
                    warnings.warn(
                        f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                        "and the optimization hasn't converged yet.", ConvergenceWarning,
                        stacklevel=2)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=2)
        finally:
            if progress is not None:
                progress.close()
        if self.early_stopping and state.best_theta is not None:
            network.theta[:] = state.best_theta

    def _layered_epoch(self, state, batches, seed, weights):
        """Yield (loss x rows, 1) for each batch of an epoch, trained layer by layer."""
        network, weight_buffer = state.network, np.empty(batches.batch_size, weights.dtype)
        for xb, yb, index in batches.epoch(seed):
            wb = np.take(weights, index, out=weight_buffer[:len(index)])
            weight_sum = float(wb.sum())
            loss = self._batch_loss(network, xb, yb, wb, weight_sum)
            state.optimizer.step(network.theta, network.grad, self.alpha / weight_sum,
                                 network.n_decay)
            yield loss * len(index), 1

    def _fused_epoch(self, fused, order):
        """Yield (sum of loss x rows, batches) for each chunk of an epoch, on the fused path."""
        chunk = CHUNK_BATCHES * fused.batch_size
        for first in range(0, len(order), chunk):
            n_rows = min(chunk, len(order) - first)
            yield fused.run(order, first, n_rows, self.alpha), -(-n_rows // fused.batch_size)

    def _track_loss(self, state):
        if state.loss_curve[-1] > state.best_loss - self.tol:
            state.no_improvement_count += 1
        else:
            state.no_improvement_count = 0
        state.best_loss = min(state.best_loss, state.loss_curve[-1])

    def _track_validation(self, state, X_val, codes_val, w_val):
        # Accuracy on label codes is accuracy on labels: codes index classes_.
        from sklearn.metrics import accuracy_score  # early stopping only: see _fit_stochastic

        predicted = np.argmax(self._predict_proba_with(state, X_val), axis=1)
        score = accuracy_score(codes_val, predicted, sample_weight=w_val)
        state.validation_scores.append(score)
        if self.verbose:
            print(f"Validation score: {score:f}")
        if score < state.best_validation_score + self.tol:
            state.no_improvement_count += 1
        else:
            state.no_improvement_count = 0
        if score > state.best_validation_score:
            state.best_validation_score = score
            state.best_theta = state.network.theta.copy()

    def _predict_proba_with(self, state, X):
        if (forward := state.dense_forward(X)) is not None:
            n_parts = effective_n_jobs(self.n_jobs) if len(X) > _SERIAL_ROWS else 1
            return _checked(X, *forward.predict_proba(X, n_parts))
        if (forward := state.conv_forward(X)) is not None:
            return _checked(X, *forward.predict_proba(X, self._one_image_threads()))
        network = state.network
        n_classes = max(2, network.output_shape[0])
        out = np.empty((len(X), n_classes), network.dtype)
        serial = len(X) <= _SERIAL_ROWS
        if serial and X.dtype == network.dtype:
            # Rows the network takes as they are, too few for most kernels to share between
            # threads: no batches to gather (16 us of predicting one image; _passes_as_is
            # made X C-contiguous)
            with self._few_rows():
                return network.predict_proba(self._to_input(X), out)
        within_budget = max(1, _PREDICT_BYTES // network.bytes_per_row)
        chunk = min(_PREDICT_CHUNK, max(network.capacity, within_budget))
        batches = Minibatches(X, None, chunk)
        start = 0
        # A few rows run serially on the calling thread (but for the kernels that share one
        # image), whose forward pass uses no BLAS: no BLAS setting to make (threadpoolctl's
        # takes 16 us, a third of one image).
        with self._few_rows() if serial else threads(self.n_jobs):
            for xb, _, _ in batches.epoch(seed=None):
                network.predict_proba(self._to_input(xb), out[start:start + len(xb)])
                start += len(xb)
        return out

    def _few_rows(self):
        """The kernel setting for up to _SERIAL_ROWS rows: serial kernels, but for those
        that share one image between threads (``_one_image_threads``)."""
        return serial_kernels(self._one_image_threads())

    def _one_image_threads(self) -> int:
        """Threads for the kernels that share one image: n_jobs, at most
        _SERIAL_ROWS_THREADS."""
        return min(effective_n_jobs(self.n_jobs), _SERIAL_ROWS_THREADS)

    def _fit_lbfgs(self, state, X, codes, weights):
        network = state.network
        batches = Minibatches(X, codes, len(X))
        xb, yb, _ = next(batches.epoch(seed=None))  # the whole set: one full batch
        weights = weights.astype(network.dtype)
        weight_sum = float(weights.sum())
        grad = np.empty(network.n_params, np.float64)

        def loss_and_grad(theta):
            network.theta[:] = theta
            loss = self._batch_loss(network, xb, yb, weights, weight_sum)
            grad[:] = network.grad
            grad[:network.n_decay] += self.alpha * theta[:network.n_decay] / weight_sum
            return loss, grad

        result = scipy.optimize.minimize(
            loss_and_grad, network.theta.astype(np.float64), method="L-BFGS-B", jac=True,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol})
        state.n_iter = _check_optimize_result("lbfgs", result, self.max_iter)
        state.loss = float(result.fun)
        network.theta[:] = result.x

    # --- fitted attributes ----------------------------------------------------------------

    def _publish(self, n_outputs):
        """Set scikit-learn's fitted attributes from the training state."""
        state, network = self._state, self._state.network
        self.n_outputs_ = n_outputs
        self.out_activation_ = network.output
        self.n_iter_, self.t_, self.loss_ = state.n_iter, state.t, state.loss
        dense = [layer for layer in network.layers if "W" in getattr(layer, "params", {})]
        self.coefs_ = [layer.params["W"] for layer in dense]
        self.intercepts_ = [layer.params["b"] for layer in dense]
        self.n_layers_ = len(self.coefs_) + 1
        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = state.loss_curve
            self.best_loss_ = state.best_loss
            self.validation_scores_ = state.validation_scores
            self.best_validation_score_ = state.best_validation_score

    def __setstate__(self, state):
        super().__setstate__(state)
        if hasattr(self, "_state"):
            self._publish(self.n_outputs_)  # coefs_ and intercepts_ view the new theta


def _as_network_input(X, dtype):
    """X as Minibatches must see it to gather batches of the network's dtype.

    uint8 means pixel intensities, scaled to [0, 1]; float32 networks gather uint8 (divided
    by 255, Minibatches' default) and float32 data in Cython without copying it; float64
    networks gather float64 data.
    """
    if dtype == np.float32:
        return X.astype(np.float32) if X.dtype == np.float64 else X
    if X.dtype == np.uint8:
        return X / 255.0
    return X.astype(np.float64, copy=False)


def _progress(verbose, n_batches):
    """A tqdm bar over one epoch's batches when verbose, else None."""
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=n_batches, unit="batch", leave=False)


def _advance(progress, n_batches):
    if progress is not None:
        progress.update(n_batches)


def _report(progress, verbose, state, images_per_second):
    if progress is None:
        return
    fields = {"loss": f"{state.loss:.5f}", "img/s": f"{images_per_second:,.0f}"}
    if state.validation_scores:
        fields["val"] = f"{state.validation_scores[-1]:.4f}"
    progress.write(f"Iteration {state.n_iter}, " + ", ".join(f"{k} = {v}" for k, v in
                                                           fields.items()))
    progress.reset()


def _checked(X, proba, finite: bool):
    """``proba`` from a one-call path, unless it was told of a NaN or infinity in X."""
    if not finite:
        assert_all_finite(X, input_name="X")  # raises, naming the NaN or infinity
    return proba
