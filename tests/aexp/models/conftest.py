import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch thread for the test: training is deterministic per thread count, and the figures
    the model tests check were measured with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
