import os
import tempfile

os.environ.setdefault("WORKBENCH_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WORKBENCH_CACHE", tempfile.mkdtemp(prefix="workbench-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402

import workbench as wb  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny():
    """The test-only random model (16x16, h at 4x4). Treat as read-only."""
    return wb.load("tiny-test", device="cpu")


@pytest.fixture()
def other_tiny():
    """A tiny model with one weight changed: a different fingerprint, same shapes."""
    model = wb.load("tiny-test", device="cpu")
    with torch.no_grad():
        model.unet.conv_in.bias.add_(0.01)
    model._fingerprint = None
    return model


@pytest.fixture(scope="session")
def shapes32():
    """The bundled Shapes model (trained; 4.5M parameters). Treat as read-only."""
    return wb.load("shapes32", device="cpu")


@pytest.fixture(scope="session")
def shapes64():
    """The bundled Lit Shapes model (64 px, 6.1M parameters). Treat as read-only."""
    return wb.load("shapes64", device="cpu")


def edit_weights(path, change) -> None:
    """Apply ``change`` to the state dict in the safetensors file ``path`` (a damaged
    checkpoint for the strict-loading tests)."""
    from safetensors.torch import load_file, save_file

    state = load_file(path)
    change(state)
    save_file(state, path)
