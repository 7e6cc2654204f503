"""mobileinst.layers.GroupNorm: the channels-last training backward agrees with PyTorch's."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobileinst.layers import GroupNorm, get_norm


@pytest.mark.parametrize("shape,groups", [((3, 16, 40, 36), 16), ((2, 48, 32, 32), 16), ((1, 8, 64, 32), 2)])
def test_channels_last_backward_matches_pytorch(shape, groups):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 3 + 1).contiguous(memory_format=torch.channels_last)
    dy = torch.randn(shape, generator=g)
    norm = GroupNorm(groups, shape[1])
    with torch.no_grad():
        norm.weight.copy_(torch.randn(shape[1], generator=g))
        norm.bias.copy_(torch.randn(shape[1], generator=g))
    ref = nn.GroupNorm(groups, shape[1])
    ref.load_state_dict(norm.state_dict())

    x1 = x.clone().requires_grad_()
    y1 = norm(x1)
    assert y1.grad_fn is not None and "ChannelsLastGroupNorm" in type(y1.grad_fn).__name__
    y1.backward(dy)
    x2 = x.contiguous().requires_grad_()  # NCHW: PyTorch's own kernels
    y2 = ref(x2)
    y2.backward(dy)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(norm.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)
    assert x1.grad.is_contiguous(memory_format=torch.channels_last)


def test_group_norm_elsewhere_is_pytorchs():
    norm = get_norm("GN", 24)
    assert isinstance(norm, GroupNorm) and norm.num_groups == 8
    x = torch.randn(2, 24, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = norm(x)  # 64 positions: PyTorch's kernel
    assert "ChannelsLastGroupNorm" not in type(y.grad_fn).__name__
    with torch.no_grad():
        big = torch.randn(1, 24, 40, 40).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(norm(big), F.group_norm(big, 8, norm.weight, norm.bias))
    # tracing (the TorchScript and ONNX export) records PyTorch's op, not a Python function
    example = torch.randn(1, 24, 40, 40).contiguous(memory_format=torch.channels_last).requires_grad_()
    graph = str(torch.jit.trace(norm, example).graph)
    assert "group_norm" in graph and "PythonOp" not in graph
