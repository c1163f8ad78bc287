"""The reference models of docs/benchmarks (BENCHMARKS.md), and their analytic sizes.

One description per model, read by every framework's runner, so that the four frameworks
cannot drift apart in architecture, batch size or epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_SIDE = 28
N_CLASSES = 10
KERNEL = 3  # every convolution: 3x3, stride 1, "valid"; every pooling: 2x2
POOL = 2


@dataclass(frozen=True)
class ModelSpec:
    """One reference model: layers, the training settings, the accuracy to time."""

    name: str
    hidden: tuple[int, ...] = ()  # dense ReLU layers before the 10-way output
    conv: tuple[int, ...] = ()  # filters per conv block (conv 3x3, ReLU, max-pool 2)
    dropout: float = 0.0  # before the output layer
    batch_size: int = 32
    epochs: int = 5
    target: float = 0.97  # test accuracy for "time to target"

    @property
    def is_cnn(self) -> bool:
        return bool(self.conv)

    def describe(self) -> str:
        """The architecture in the notation of BENCHMARKS.md."""
        parts = [f"Conv {f}@3x3 ReLU → MaxPool 2" for f in self.conv]
        if self.is_cnn:
            parts.append("Flatten")
        else:
            parts.append(str(IMAGE_SIDE * IMAGE_SIDE))
        parts += [f"{size} ReLU" for size in self.hidden]
        if self.dropout:
            parts.append(f"Dropout {self.dropout:g}")
        parts.append(f"Dense {N_CLASSES}" if self.is_cnn else str(N_CLASSES))
        return " → ".join(parts)


MODELS = {
    spec.name: spec
    for spec in [
        ModelSpec("softmax"),
        ModelSpec("mlp-tiny", hidden=(5,)),
        ModelSpec("mlp-1h", hidden=(128,)),
        ModelSpec("mlp-seed", hidden=(128, 64, 32)),
        ModelSpec("cnn-keras", conv=(32, 64), dropout=0.5, batch_size=128, epochs=3,
                  target=0.99),
    ]
}


def _conv_blocks(spec: ModelSpec):
    """Yield ``(output side, input channels, filters)`` of each convolution."""
    side, channels = IMAGE_SIDE, 1
    for filters in spec.conv:
        side -= KERNEL - 1  # "valid" convolution
        yield side, channels, filters
        side //= POOL
        channels = filters


def flat_features(spec: ModelSpec) -> int:
    """Inputs of the first dense layer: pixels, or the flattened last pooling output."""
    blocks = list(_conv_blocks(spec))
    if not blocks:
        return IMAGE_SIDE * IMAGE_SIDE
    side, _, filters = blocks[-1]
    return (side // POOL) ** 2 * filters


def _layers(spec: ModelSpec):
    """Yield ``(macs_per_image, n_params)`` per layer with weights, input to output."""
    for side, channels, filters in _conv_blocks(spec):
        fan_in = KERNEL * KERNEL * channels
        yield side * side * filters * fan_in, filters * fan_in + filters
    features = flat_features(spec)
    for size in (*spec.hidden, N_CLASSES):
        yield features * size, features * size + size
        features = size


def n_params(spec: ModelSpec) -> int:
    """Weights and biases, as the frameworks count them (111,146 for mlp-seed)."""
    return sum(params for _, params in _layers(spec))


def forward_macs(spec: ModelSpec) -> int:
    """Multiply-adds of one image's forward pass through the dense and conv layers.

    Activations, pooling, dropout and the loss are left out: they are a few per cent of
    the arithmetic and no framework spends its time there.
    """
    return sum(macs for macs, _ in _layers(spec))


def train_flops(spec: ModelSpec) -> int:
    """FLOPs of one image's training step: 2 per MAC, x3 for forward + backward.

    The backward pass of a layer costs two products the size of its forward one (the
    gradients of its input and of its weights); the convention counts the first layer's
    input gradient too, although frameworks skip it, so GFLOP/s are slightly flattering to
    every framework alike.
    """
    return 3 * 2 * forward_macs(spec)
