"""upsample_nearest2x: F.interpolate(nearest, x2) eagerly; the same values, layout and gradient
under torch.compile, where it is written as a broadcast (difforge/train/compiling.py says why)."""

import pytest
import torch
import torch.nn.functional as F

from difforge.models.layers import upsample_nearest2x


def _reference(x: torch.Tensor) -> torch.Tensor:
    """Each pixel repeated 2 x 2, written with index arithmetic."""
    rows = torch.arange(2 * x.shape[-2]) // 2
    cols = torch.arange(2 * x.shape[-1]) // 2
    return x[:, :, rows[:, None], cols[None, :]]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_eager_is_f_interpolate_bit_for_bit(layout):
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=layout)
    y = upsample_nearest2x(x)
    assert torch.equal(y, F.interpolate(x, scale_factor=2.0, mode="nearest")) and torch.equal(y, _reference(x))
    assert y.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_compiled_form_has_the_same_values_layout_and_gradient(layout):
    """Traced (aot_eager: dynamo's graph, no code generation, so this runs in a second) the function
    takes its broadcast branch; its values, memory layout and gradient (the sum of each 2 x 2
    window of the upstream gradient) equal the eager ones."""
    torch._dynamo.reset()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    g = torch.randn(2, 3, 8, 10, dtype=torch.float64)
    branches = []

    def spy(v):
        branches.append(torch.compiler.is_compiling())
        return upsample_nearest2x(v)

    y = torch.compile(spy, backend="aot_eager", fullgraph=True)(x)
    assert branches == [True]
    assert torch.equal(y, _reference(x.detach()))
    assert y.is_contiguous(memory_format=layout)
    (grad,) = torch.autograd.grad(y, x, g)
    assert torch.allclose(grad, g.view(2, 3, 4, 2, 5, 2).sum(dim=(3, 5)))
