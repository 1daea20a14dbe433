"""benchmarks/conv_ceiling.py counts every convolution call of a forward pass, with its input's shape and layout."""

import torch

from benchmarks.conv_ceiling import conv_calls, conv_seconds


class _Twice(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.b = torch.nn.Conv2d(3, 5, 1)

    def forward(self, x, t, y):
        return self.b(self.a(self.a(x))[:, :, ::2, ::2])


def test_every_call_is_counted_with_its_shape_and_layout():
    net = _Twice()
    x = torch.randn(2, 3, 8, 8)
    calls = conv_calls(net, x, None, None, bf16=False)
    assert dict(calls) == {(net.a, (2, 3, 8, 8), False): 2, (net.b, (2, 3, 4, 4), False): 1}
    cl = conv_calls(net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last), None, None, bf16=True)
    assert cl[(net.a, (2, 3, 8, 8), True)] == 2
    assert all(p.grad is None for p in net.parameters())
    seconds = conv_seconds(net.a, (2, 3, 8, 8), False, False, first=False, seconds=0.01)
    assert 0 < seconds < 1 and all(p.grad is None for p in net.parameters())
