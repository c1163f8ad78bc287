import pytest

from fastmnist._config import threads

# Every framework gets the same thread budget (BENCHMARKS.md's fairness rule).
BENCH_THREADS = 2


@pytest.fixture
def fastmnist_threads():
    with threads(BENCH_THREADS):
        yield BENCH_THREADS


@pytest.fixture
def torch_module():
    """PyTorch with the same thread budget; benchmarks needing it are skipped without it."""
    torch = pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed")
    previous = torch.get_num_threads()
    torch.set_num_threads(BENCH_THREADS)
    yield torch
    torch.set_num_threads(previous)
