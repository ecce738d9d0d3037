"""Shared fixtures: the data root and a small MNIST model trained once per test session."""

import os
from pathlib import Path

import pytest
import torch

# Tests and CI read the original IDX files from ../shared/data unless told otherwise.
_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
os.environ.setdefault("MULTIROBUST_DATA", str(_SHARED))
# MULTIROBUST_TEST_THREADS=1 keeps parallel test runs on a 2-core machine from starving each other.
_DEFAULT_THREADS = max(1, min(2, os.cpu_count() or 1))
torch.set_num_threads(int(os.environ.get("MULTIROBUST_TEST_THREADS", _DEFAULT_THREADS)))


@pytest.fixture(scope="session")
def mnist_test():
    from multirobust import data

    return data.load("mnist", "test", limit=1000)


@pytest.fixture(scope="session")
def mnist_model():
    """small_cnn trained for one epoch on the first 20,000 MNIST training images (seeded)."""
    from multirobust import data, models
    from multirobust.training import train_standard

    torch.manual_seed(0)
    model = models.for_dataset("small_cnn", "mnist")
    train = data.load("mnist", "train", limit=20000)
    train_standard(model, train, epochs=1, seed=0, progress=False)
    return model.eval()


@pytest.fixture(scope="session")
def mnist_checkpoint(mnist_model, tmp_path_factory):
    from multirobust import models

    path = tmp_path_factory.mktemp("ckpt") / "small_cnn.pt"
    models.save(mnist_model, path, dataset="mnist", metadata={"method": "standard"})
    return path
