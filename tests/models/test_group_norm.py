"""difforge.models.group_norm.GroupNorm: PyTorch's GroupNorm, also fast on channels_last input.

The reference is float64 ``F.group_norm`` on the same numbers: forward and every gradient, in
fp32 (tight) and bf16 (within bf16's rounding, as PyTorch's own bf16 kernel), on large and small
maps (the two forward paths), with groups of one and of several channels, with and without affine.
"""

import pytest
import torch
import torch.nn.functional as F

from difforge.models import registry
from difforge.models.group_norm import SMALL_MAP, GroupNorm
from difforge.models.layers import group_norm

CL = torch.channels_last


def reference(x, norm, dy):
    """float64 output and gradients (x, weight, bias) of F.group_norm."""
    x64 = x.detach().double().requires_grad_()
    w64 = None if norm.weight is None else norm.weight.detach().double().requires_grad_()
    b64 = None if norm.bias is None else norm.bias.detach().double().requires_grad_()
    y = F.group_norm(x64, norm.num_groups, w64, b64, norm.eps)
    y.backward(dy.double())
    return y, x64.grad, None if w64 is None else w64.grad, None if b64 is None else b64.grad


def rel(a, b):
    return ((a.double() - b).norm() / b.norm()).item()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1.5e-2)])
@pytest.mark.parametrize("shape,groups", [((3, 64, 32, 32), 32), ((2, 48, 16, 16), 16), ((2, 32, 8, 8), 4), ((2, 24, 12, 10), 1)])
@pytest.mark.parametrize("affine", [True, False])
def test_channels_last_matches_float64(dtype, tol, shape, groups, affine):
    torch.manual_seed(0)
    norm = GroupNorm(groups, shape[1], affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.normal_(1.0, 0.3)
            norm.bias.normal_(0.0, 0.3)
    x = (torch.randn(shape) * 2 + 0.7).to(dtype).contiguous(memory_format=CL).requires_grad_()
    dy = torch.randn(shape).to(dtype).contiguous(memory_format=CL)
    y = norm(x)
    assert y.is_contiguous(memory_format=CL) and y.dtype == dtype
    y.backward(dy)
    y64, dx64, dw64, db64 = reference(x, norm, dy)
    assert rel(y, y64) < tol
    assert rel(x.grad, dx64) < tol
    if affine:
        assert rel(norm.weight.grad, dw64) < tol and rel(norm.bias.grad, db64) < tol
    # as close as PyTorch's own kernel on the NCHW copy of the same numbers (x2 for rounding luck)
    xn = x.detach().contiguous().requires_grad_()
    F.group_norm(xn, groups, None if norm.weight is None else norm.weight.to(dtype),
                 None if norm.bias is None else norm.bias.to(dtype), norm.eps).backward(dy.contiguous())
    assert rel(x.grad, dx64) <= 2 * rel(xn.grad, dx64) + 1e-6


def test_nchw_input_is_pytorchs_own_path_bit_for_bit():
    torch.manual_seed(1)
    norm, plain = GroupNorm(8, 32), torch.nn.GroupNorm(8, 32)
    plain.load_state_dict(norm.state_dict())
    x = torch.randn(2, 32, 8, 8, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    dy = torch.randn(2, 32, 8, 8)
    norm(x).backward(dy)
    plain(x2).backward(dy)
    assert torch.equal(norm(x), plain(x2)) and torch.equal(x.grad, x2.grad) and torch.equal(norm.weight.grad, plain.weight.grad)


def test_small_and_large_maps_forward_like_pytorch():
    """Both forward paths give PyTorch's numbers, with and without gradients: its channels_last
    kernel from SMALL_MAP pixels, its NCHW kernel below (the two round bf16 differently)."""
    torch.manual_seed(2)
    for side in (16, int(SMALL_MAP**0.5)):
        norm = GroupNorm(8, 32)
        x = torch.randn(2, 32, side, side).bfloat16().contiguous(memory_format=CL)
        want = F.group_norm(x if side * side >= SMALL_MAP else x.contiguous(), 8, norm.weight.bfloat16(), norm.bias.bfloat16(), norm.eps)
        with torch.no_grad():
            assert torch.equal(norm(x), want)
        assert torch.equal(norm(x), want)  # the autograd path (weight requires grad)


def test_state_dict_and_network_use():
    """Same keys as nn.GroupNorm (old model files load); the UNet's norms are this class, and a
    channels_last UNet trains with the same gradients as NCHW (fp32)."""
    assert isinstance(group_norm(64), GroupNorm) and isinstance(group_norm(64), torch.nn.GroupNorm)
    assert set(GroupNorm(4, 8).state_dict()) == set(torch.nn.GroupNorm(4, 8).state_dict())
    torch.manual_seed(3)
    net = registry.build("unet-tiny", image_size=16, num_classes=2)
    assert any(isinstance(m, GroupNorm) for m in net.modules())
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([3, 700]), torch.tensor([0, 1])
    net(x, t, y).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    net = net.to(memory_format=CL)
    net(x.contiguous(memory_format=CL), t, y).square().mean().backward()
    for n, p in net.named_parameters():
        assert torch.allclose(p.grad, grads[n], rtol=1e-4, atol=1e-6), n


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1.5e-2)])
@pytest.mark.parametrize("side", [32, 8])
def test_modulated_matches_norm_then_scale_shift(dtype, tol, side):
    """GroupNorm.modulated (a ResBlock's scale-shift folded into the norm for channels_last training) gives
    norm(x) * (1 + scale) + shift and its gradients for x, weight, bias, scale and shift (float64 reference);
    NCHW input takes the plain expression bit for bit."""
    torch.manual_seed(4)
    n, c = 3, 32
    norm = GroupNorm(8, c)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3)
        norm.bias.normal_(0.0, 0.3)
    x = (torch.randn(n, c, side, side) * 2 + 0.7).to(dtype).contiguous(memory_format=CL).requires_grad_()
    scale = (torch.randn(n, c, 1, 1) * 0.5).to(dtype).requires_grad_()
    shift = (torch.randn(n, c, 1, 1) * 0.5).to(dtype).requires_grad_()
    dy = torch.randn(n, c, side, side).to(dtype).contiguous(memory_format=CL)
    y = norm.modulated(x, scale, shift)
    assert y.is_contiguous(memory_format=CL)
    y.backward(dy)
    leaves = [x, norm.weight, norm.bias, scale, shift]
    ref = [t.detach().double().requires_grad_() for t in leaves]
    y64 = torch.addcmul(ref[4], F.group_norm(ref[0], 8, ref[1], ref[2], norm.eps), ref[3] + 1.0)
    y64.backward(dy.double())
    assert rel(y, y64) < tol
    for got, want in zip(leaves, ref):
        assert rel(got.grad, want.grad) < tol
    xn = x.detach().contiguous()
    assert torch.equal(norm.modulated(xn, scale, shift), torch.addcmul(shift, norm(xn), scale + 1.0))
