import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread (as tests/export): on a shared 2-core machine, two spinning OpenMP
    threads per process slow tracing and the comparisons down several times over."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
