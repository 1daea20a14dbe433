"""benchmarks/error_map.py: the one-step x0 prediction it shows, checked with the exact denoiser of one image."""

import torch

from benchmarks.error_map import LEVEL_SIGMAS, level_sheet, predict_x0
from difforge.diffusion.schedule import Schedule, alpha_bar_at


class _ExactV(torch.nn.Module):
    """The exact v-prediction when the data is the single image ``c``: eps = (x_t - a c) / s, v = a eps - s c."""

    def __init__(self, schedule, c):
        super().__init__()
        self.schedule, self.c = schedule, c

    def forward(self, x_t, t, y):
        ab = alpha_bar_at(self.schedule, t.double()).view(-1, 1, 1, 1)
        a, s = ab.sqrt().float(), (1 - ab).sqrt().float()
        return a * (x_t - a * self.c) / s - s * self.c


class _Pipe:
    def __init__(self, c):
        self.schedule, self.target = Schedule.named("cosine", 1000), "v"
        self.net = _ExactV(self.schedule, c)


def test_the_exact_denoiser_returns_the_image_at_every_level():
    c = torch.linspace(-0.8, 0.8, 3 * 8 * 8).view(1, 3, 8, 8)
    pipe = _Pipe(c)
    x0 = c.expand(5, -1, -1, -1)
    for t in (torch.full((5,), 10.0), torch.full((5,), 500.0), torch.full((5,), 900.5)):
        assert torch.allclose(predict_x0(pipe, x0, None, t, torch.Generator().manual_seed(0)), x0, atol=2e-3)
    wrong = _Pipe(c * 0.5)  # a denoiser of another image is seen as one
    assert (predict_x0(wrong, x0, None, torch.full((5,), 500.0), torch.Generator()) - x0).abs().max() > 0.1


def test_the_sheet_has_a_row_per_class_the_real_image_first():
    c = torch.linspace(-1, 1, 3 * 8 * 8).view(1, 3, 8, 8)
    x0 = torch.cat([c, -c, c, -c])
    y = torch.tensor([1, 0, 1, 0])
    sheet = level_sheet(_Pipe(c), x0, y)
    assert sheet.shape == (2 * 10, (1 + len(LEVEL_SIGMAS)) * 10, 3)
    real = ((x0 + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    assert (sheet[:8, :8] == real[1]).all()  # class 0's first image (-c) in row 0
    assert (sheet[10:18, :8] == real[0]).all()
    assert (sheet[8:10] == 255).all() and (sheet[:, 8:10] == 255).all()
    assert abs(int(sheet[10:18, 10:18].astype(int).mean()) - int(real[0].astype(int).mean())) <= 2  # exact denoiser of c
