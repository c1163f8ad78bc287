"""One (model, framework, repetition) of the benchmark, alone in a fresh process.

``python -m fastmnist.benchmark.worker JOB_JSON RESULT_PATH``, started by the driver. The
process loads MNIST, scales it to float32 [0, 1] in memory, then trains the model twice --
the first fit pays every start-up cost of a fresh process, the second is the same fit
repeated in the same process -- and times prediction. Each framework runs its own idiomatic
way (see ``RUNNERS``); its runner is the only framework-specific code.

Epoch boundaries: PyTorch's loop is ours and Keras calls back after each epoch, but
fastmnist's and scikit-learn's ``fit`` has no callback. Their per-epoch times come from
wrapping, on the instance, the method each calls exactly once at the end of every epoch
(``_track_loss`` and ``_update_no_improvement_count``), so the model trains through one
ordinary ``fit(max_iter=epochs)`` call. ``partial_fit`` per epoch would distort both:
each call validates the whole training set again, and with an integer ``random_state`` it
re-seeds, so every epoch would see the same shuffle. A worker whose hook did not fire once
per epoch fails loudly rather than report wrong times.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from .models import IMAGE_SIDE, MODELS, N_CLASSES, ModelSpec, flat_features

EVAL_CHUNK = 2048  # rows per call when evaluating during training: fastmnist's own chunk
PREDICT_REPEATS = 5  # timed 10,000-image predictions (after one untimed call)
LATENCY_REPEATS = 200  # timed one-image predictions (after ten untimed calls)


class EpochLog:
    """Cumulative training time at the end of each epoch, evaluation time taken out.

    Test accuracy is measured after every epoch (for "time to target") while the clock is
    paused, so it costs the frameworks nothing in the figures.
    """

    def __init__(self, X_test: np.ndarray, y_test: np.ndarray) -> None:
        self.X_test, self.y_test = X_test, y_test
        self.ends: list[float] = []
        self.accuracies: list[float] = []
        self._excluded = 0.0
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._start - self._excluded

    def epoch_end(self, predict) -> None:
        """Record the end of an epoch, then evaluate ``predict`` (rows -> labels) untimed."""
        self.ends.append(self.elapsed())
        paused = time.perf_counter()
        self.accuracies.append(float(np.mean(predict(self.X_test) == self.y_test)))
        self._excluded += time.perf_counter() - paused


def _chunked(predict_batch, X: np.ndarray) -> np.ndarray:
    """Labels of X, ``EVAL_CHUNK`` rows per call (bounded memory, as fastmnist predicts)."""
    return np.concatenate([predict_batch(X[i:i + EVAL_CHUNK])
                           for i in range(0, len(X), EVAL_CHUNK)])


def _fit_with_epoch_hook(estimator, method: str, X, y, log: EpochLog, predict) -> None:
    """``estimator.fit(X, y)``, calling ``log.epoch_end`` where ``method`` is called.

    ``predict(args)`` gets the wrapped method's arguments and returns a rows -> labels
    function for the weights of that moment.
    """
    from sklearn.exceptions import ConvergenceWarning

    original = getattr(estimator, method)

    def hooked(*args, **kwargs):
        result = original(*args, **kwargs)
        log.epoch_end(predict(args))
        return result

    setattr(estimator, method, hooked)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed epoch budget
            estimator.fit(X, y)
    finally:
        delattr(estimator, method)
    if len(log.ends) != estimator.n_iter_:
        raise RuntimeError(f"{type(estimator).__module__}: {method} ran {len(log.ends)} "
                           f"times in {estimator.n_iter_} epochs; its internals changed")


class Runner:
    """What the worker asks of a framework; ``model`` is the last one ``fit`` trained."""

    def __init__(self, spec: ModelSpec, threads: int, seed: int) -> None:
        self.spec, self.threads, self.seed = spec, threads, seed

    def thread_settings(self) -> dict:
        """The framework's own thread settings, read back (recorded with the result)."""
        raise NotImplementedError

    def fit(self, X, y, epochs: int, log: EpochLog) -> None:
        """Train a new model, calling ``log.epoch_end`` after every epoch."""
        raise NotImplementedError

    def predict(self, X) -> np.ndarray:
        """Labels of many rows, in the framework's one call for a data set."""
        return self.model.predict(X)

    def predict_one(self, x) -> np.ndarray:
        """Labels of a single row (the latency figure)."""
        return self.predict(x)


class FastmnistRunner(Runner):
    """fastmnist's public estimators on float32 rows, ``n_jobs`` = the thread budget."""

    def __init__(self, spec: ModelSpec, threads: int, seed: int) -> None:
        super().__init__(spec, threads, seed)
        import fastmnist

        # Imported before the first fit, as every runner imports its framework: the
        # package loads its estimators (scikit-learn, Numba) on first use.
        self.CNNClassifier, self.MLPClassifier = fastmnist.CNNClassifier, fastmnist.MLPClassifier

    def thread_settings(self) -> dict:
        return {"n_jobs": self.threads}

    def _estimator(self, epochs: int):
        common = dict(batch_size=self.spec.batch_size, max_iter=epochs,
                      learning_rate_init=1e-3, alpha=0.0, tol=0.0, shuffle=True,
                      n_jobs=self.threads, random_state=self.seed)
        if self.spec.is_cnn:
            return self.CNNClassifier(
                self.spec.conv, hidden_layer_sizes=self.spec.hidden,
                dropout=self.spec.dropout, image_shape=(IMAGE_SIDE, IMAGE_SIDE), **common)
        return self.MLPClassifier(self.spec.hidden, **common)

    def fit(self, X, y, epochs: int, log: EpochLog) -> None:
        self.model = model = self._estimator(epochs)
        classes = np.unique(y)

        def predict_now(args):  # _track_loss(state): the weights being trained live there
            (state,) = args
            return lambda X: classes[np.argmax(model._predict_proba_with(state, X), axis=1)]

        _fit_with_epoch_hook(model, "_track_loss", X, y, log, predict_now)


class SklearnRunner(Runner):
    """scikit-learn's MLPClassifier, whose only threads are numpy's BLAS.

    scikit-learn's way to set those is threadpoolctl, here once for the whole process: a
    ``with`` block around each call would add its milliseconds to every prediction.
    """

    def __init__(self, spec: ModelSpec, threads: int, seed: int) -> None:
        super().__init__(spec, threads, seed)
        from sklearn.neural_network import MLPClassifier

        self.MLPClassifier = MLPClassifier
        self._limits = threadpool_limits(limits=threads, user_api="blas")  # until exit

    def thread_settings(self) -> dict:
        from threadpoolctl import threadpool_info

        return {"blas": sorted({lib["num_threads"] for lib in threadpool_info()
                                if lib["user_api"] == "blas"})}

    def fit(self, X, y, epochs: int, log: EpochLog) -> None:
        self.model = model = self.MLPClassifier(
            self.spec.hidden, solver="adam", batch_size=self.spec.batch_size,
            learning_rate_init=1e-3, alpha=0.0, max_iter=epochs, tol=0.0, shuffle=True,
            random_state=self.seed)
        # Called after each epoch's last update; predict reads the live coefs_.
        _fit_with_epoch_hook(model, "_update_no_improvement_count", X, y, log,
                             lambda args: model.predict)


class TorchRunner(Runner):
    """PyTorch eager: nn.Sequential, index batches over in-memory tensors, Adam."""

    def __init__(self, spec: ModelSpec, threads: int, seed: int) -> None:
        super().__init__(spec, threads, seed)
        import torch

        torch.set_num_threads(threads)
        self.torch = torch

    def thread_settings(self) -> dict:
        return {"torch.get_num_threads": self.torch.get_num_threads()}

    def _network(self):
        nn, layers, channels = self.torch.nn, [], 1
        for filters in self.spec.conv:
            layers += [nn.Conv2d(channels, filters, 3), nn.ReLU(), nn.MaxPool2d(2)]
            channels = filters
        if self.spec.is_cnn:
            layers.append(nn.Flatten())
        features = flat_features(self.spec)
        for size in self.spec.hidden:
            layers += [nn.Linear(features, size), nn.ReLU()]
            features = size
        if self.spec.dropout:
            layers.append(nn.Dropout(self.spec.dropout))
        layers.append(nn.Linear(features, N_CLASSES))
        return nn.Sequential(*layers)

    def _tensor(self, X: np.ndarray):
        tensor = self.torch.from_numpy(X)  # no copy
        return tensor.view(-1, 1, IMAGE_SIDE, IMAGE_SIDE) if self.spec.is_cnn else tensor

    def fit(self, X, y, epochs: int, log: EpochLog) -> None:
        torch = self.torch
        torch.manual_seed(self.seed)
        self.model = model = self._network()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_function = torch.nn.CrossEntropyLoss()
        X_t, y_t = self._tensor(X), torch.from_numpy(y)
        batch = self.spec.batch_size
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(X_t))
            for start in range(0, len(X_t), batch):
                index = order[start:start + batch]
                optimizer.zero_grad()
                loss_function(model(X_t[index]), y_t[index]).backward()
                optimizer.step()
            model.eval()
            log.epoch_end(lambda X: _chunked(self.predict, X))

    def predict(self, X) -> np.ndarray:
        """The whole input in one forward pass, in inference mode, then argmax."""
        with self.torch.inference_mode():
            return self.model(self._tensor(X)).argmax(1).numpy()


class KerasRunner(Runner):
    """Keras 3 on TensorFlow: Sequential, ``model.fit``, a callback marking the epochs.

    Threads: ``intra_op`` = the budget and ``inter_op`` = 1, so that TensorFlow runs one op
    at a time on the budget's threads, as the eager frameworks do (two concurrent ops of
    two threads each would use twice the budget).
    """

    def __init__(self, spec: ModelSpec, threads: int, seed: int) -> None:
        super().__init__(spec, threads, seed)
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras

        self.tf, self.keras = tf, keras

    def thread_settings(self) -> dict:
        threading = self.tf.config.threading
        return {"intra_op": threading.get_intra_op_parallelism_threads(),
                "inter_op": threading.get_inter_op_parallelism_threads()}

    def _network(self):
        layers = self.keras.layers
        shape = (IMAGE_SIDE, IMAGE_SIDE, 1) if self.spec.is_cnn else (IMAGE_SIDE ** 2,)
        stack = [self.keras.Input(shape)]
        for filters in self.spec.conv:
            stack += [layers.Conv2D(filters, (3, 3), activation="relu"),
                      layers.MaxPooling2D((2, 2))]
        if self.spec.is_cnn:
            stack.append(layers.Flatten())
        stack += [layers.Dense(size, activation="relu") for size in self.spec.hidden]
        if self.spec.dropout:
            stack.append(layers.Dropout(self.spec.dropout))
        stack.append(layers.Dense(N_CLASSES, activation="softmax"))
        return self.keras.Sequential(stack)

    def _input(self, X: np.ndarray) -> np.ndarray:
        return X.reshape(-1, IMAGE_SIDE, IMAGE_SIDE, 1) if self.spec.is_cnn else X

    def fit(self, X, y, epochs: int, log: EpochLog) -> None:
        keras = self.keras
        keras.utils.set_random_seed(self.seed)
        self.model = model = self._network()
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3),
                      loss="sparse_categorical_crossentropy")
        marker = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: log.epoch_end(
                lambda X: _chunked(self.predict_one, X)))
        model.fit(self._input(X), y, batch_size=self.spec.batch_size, epochs=epochs,
                  shuffle=True, verbose=0, callbacks=[marker])

    def predict(self, X) -> np.ndarray:
        """``model.predict`` with Keras's defaults: its one call for a data set."""
        return np.argmax(self.model.predict(self._input(X), verbose=0), axis=1)

    def predict_one(self, x) -> np.ndarray:
        """``model(x, training=False)``: what Keras advises for inputs of one batch."""
        return np.argmax(np.asarray(self.model(self._input(x), training=False)), axis=1)


RUNNERS = {"fastmnist": FastmnistRunner, "pytorch": TorchRunner, "keras": KerasRunner,
           "sklearn": SklearnRunner}


def load_data(limit: int | None, data_home: str | None):
    """MNIST as float32 [0, 1] rows and int64 labels, the same arrays for every framework."""
    from fastmnist.datasets import load_mnist  # not the estimators: see fastmnist/__init__

    def scaled(subset, n=None):
        X, y = load_mnist(subset, data_home=data_home, return_X_y=True)
        X, y = X[:n], y[:n]
        return np.multiply(X, np.float32(1 / 255), dtype=np.float32), y.astype(np.int64)

    return (*scaled("train", limit), *scaled("test"))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timings(function, repeats: int, warmups: int) -> list[float]:
    for _ in range(warmups):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def _timed_fit(runner, X, y, X_test, y_test, epochs: int) -> dict:
    log = EpochLog(X_test, y_test)
    runner.fit(X, y, epochs, log)
    return {"fit_s": log.elapsed(), "epoch_end_s": log.ends, "test_accuracy": log.accuracies}


def run(job: dict) -> dict:
    """Measure one job. Besides ``n_train``, ``n_test`` and ``thread_settings``, the result has

    - ``epoch_end_s``, ``test_accuracy``: cumulative fit time (evaluation excluded) and test
      accuracy at the end of each epoch of the first fit; ``fit_s``: that fit's total;
    - ``fit_warm_s``, ``warm_fit_accuracy``: the same fit repeated in this process;
    - ``data_rss_mb``, ``peak_rss_mb``: peak RSS once the data is loaded, after both fits;
    - ``predict_10k_s``: each timed one-call prediction of the test set, in seconds;
    - ``latency_s``: the median of the one-row predictions, in seconds.
    """
    spec = MODELS[job["model"]]
    X, y, X_test, y_test = load_data(job["limit"], job["data_home"])
    result = {"n_train": len(X), "n_test": len(X_test), "data_rss_mb": peak_rss_mb()}
    runner = RUNNERS[job["framework"]](spec, job["threads"], job["seed"])
    cold = _timed_fit(runner, X, y, X_test, y_test, job["epochs"])
    warm = _timed_fit(runner, X, y, X_test, y_test, job["epochs"])
    result.update(cold, fit_warm_s=warm["fit_s"], warm_fit_accuracy=warm["test_accuracy"][-1],
                  peak_rss_mb=peak_rss_mb(),  # before predicting: the fits' peak
                  thread_settings=runner.thread_settings())
    result["predict_10k_s"] = _timings(lambda: runner.predict(X_test), PREDICT_REPEATS, 1)
    one = X_test[:1]
    result["latency_s"] = statistics.median(
        _timings(lambda: runner.predict_one(one), LATENCY_REPEATS, 10))
    return result


def main(argv: list[str]) -> int:
    job, path = json.loads(argv[0]), argv[1]
    result = run(job)
    with open(path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
