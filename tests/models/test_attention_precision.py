"""``layers.attention``: CPU bf16 training attends in fp32 (faster backward there), everything else as before."""

import torch
import torch.nn.functional as F

from difforge.models import UNet
from difforge.models.layers import FP32_ATTENTION_MAX_SCORES, attention


def qkv(n_q=64, n_k=64, dtype=torch.bfloat16, grad=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda n: torch.randn(2, 2, n, 8, generator=g).to(dtype).requires_grad_(grad)  # noqa: E731
    return make(n_q), make(n_k), make(n_k)


def test_bf16_training_attention_is_the_fp32_attention_of_the_same_inputs():
    q, k, v = qkv()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v)
    assert out.dtype == torch.bfloat16
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q32, k32, v32)
    assert torch.equal(out.float(), ref.to(torch.bfloat16).float())
    plain = F.scaled_dot_product_attention(q, k, v)  # what bf16 attention gives: not the same numbers
    assert not torch.equal(out, plain)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    out.backward(g)
    ref.backward(g.float())
    assert q.grad.dtype == torch.bfloat16
    assert torch.equal(q.grad, q32.grad.to(torch.bfloat16)) and torch.equal(v.grad, v32.grad.to(torch.bfloat16))


def test_sampling_fp32_and_large_maps_keep_the_plain_kernel():
    q, k, v = qkv(grad=False)
    with torch.no_grad():
        assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    q, k, v = qkv(dtype=torch.float32)
    assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    n = int(FP32_ATTENTION_MAX_SCORES ** 0.5) + 1  # past the limit bf16 is as fast: it stays bf16
    q, k, v = qkv(n_q=n, n_k=n)
    assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_a_masked_cross_attention_in_bf16_training_matches_fp32():
    q, k, v = qkv(n_q=16, n_k=5)
    mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])[:, None, None, :]
    out = attention(q, k, v, attn_mask=mask)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    assert torch.equal(out, ref.to(torch.bfloat16))


def test_a_unet_trains_the_same_under_autocast_with_the_rule():
    """The network-level effect: a bf16 training forward matches fp32 within bf16's tolerance and has gradients."""
    torch.manual_seed(0)
    net = UNet(image_size=16, base_channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8], head_channels=8)
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10.0, 700.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t)
    out.float().square().mean().backward()
    ref = net(x, t)
    assert torch.allclose(out.float(), ref, atol=0.05 * ref.abs().max().item())
    assert all(p.grad is not None for p in net.parameters())
