"""What every kernel test file shares: the device the kernels run on and the error measure."""
import pytest
import torch

DEV = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: kernels run under TRITON_INTERPRET=1


@pytest.fixture(autouse=True)
def _default_device():
    with torch.device(DEV):  # tensors made in tests land where the kernels run
        yield


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference, in fp32."""
    return (a.float() - b.float()).abs().max().item()
