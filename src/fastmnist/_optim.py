"""SGD and Adam over a network's flat buffers, with scikit-learn's schedules and stopping.

Each ``step`` is one kernel call over all parameters. ``iteration_ends`` and
``trigger_stopping`` behave as in ``sklearn/neural_network/_stochastic_optimizers.py``:
"invscaling" decays the rate every epoch, "adaptive" divides it by 5 when training stalls
and stops only once it falls below 1e-6.
"""

from __future__ import annotations

import numpy as np

from ._kernels import optim as kernels


class SGD:
    def __init__(self, n_params: int, dtype, learning_rate_init: float, learning_rate: str,
                 momentum: float, nesterov: bool, power_t: float) -> None:
        self.learning_rate_init = self.learning_rate = float(learning_rate_init)
        self.schedule, self.momentum, self.nesterov = learning_rate, momentum, nesterov
        self.power_t = power_t
        self.velocity = np.zeros(n_params, dtype)

    def step(self, theta: np.ndarray, grad: np.ndarray, l2: float, n_decay: int) -> None:
        kernels.sgd_step(theta, self.velocity, grad, self.learning_rate, float(self.momentum),
                         bool(self.nesterov), float(l2), int(n_decay))

    def iteration_ends(self, time_step: int) -> None:
        if self.schedule == "invscaling":
            self.learning_rate = self.learning_rate_init / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg: str, verbose: bool) -> bool:
        if self.schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(msg + f" Setting learning rate to {self.learning_rate:f}")
        return False


class Adam:
    def __init__(self, n_params: int, dtype, learning_rate_init: float, beta_1: float,
                 beta_2: float, epsilon: float) -> None:
        self.learning_rate_init = float(learning_rate_init)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.t = 0
        self.m = np.zeros(n_params, dtype)
        self.v = np.zeros(n_params, dtype)

    def step(self, theta: np.ndarray, grad: np.ndarray, l2: float, n_decay: int) -> None:
        self.t += 1
        kernels.adam_step(theta, self.m, self.v, grad, self.learning_rate_init, self.beta_1,
                          self.beta_2, self.epsilon, self.t, float(l2), int(n_decay))

    def iteration_ends(self, time_step: int) -> None:
        pass

    def trigger_stopping(self, msg: str, verbose: bool) -> bool:
        if verbose:
            print(msg + " Stopping.")
        return True
