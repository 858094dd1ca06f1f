"""Samplers on distributions with a known answer (issue 3): exact and trained denoisers of a Gaussian mixture."""

import pytest
import torch
from torch import nn

from unclip.diffusion import DiffusionConfig, GaussianDiffusion
from unclip.diffusion.mixture import ring_mixture, two_wide_gaussians
from unclip.eval.distances import energy_distance, mode_weights, sliced_wasserstein
from unclip.nn import timestep_embedding
from unclip.samplers import ddim_invert, ddim_sample, ddpm_sample, dpm_solver_pp_sample
from unclip.samplers.common import default_spacing

EPS = DiffusionConfig(prediction="eps", images=False)
V_ZERO_SNR = DiffusionConfig(prediction="v", zero_terminal_snr=True, images=False)
X0 = DiffusionConfig(prediction="x0", images=False)
MIX = ring_mixture()  # 8 modes on a circle of radius 2, std 0.15, weights 1/36 .. 8/36


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _floor(n):
    """How far exact draws of n points lie from the mixture: the distance a perfect sampler scores."""
    return max(MIX.sliced_w1(MIX.sample(n, generator=_gen(s))) for s in (101, 102, 103))


def test_sliced_distances_separate_the_mixture_from_a_gaussian():
    a, b = MIX.sample(3000, generator=_gen(1)), MIX.sample(3000, generator=_gen(2))
    gauss = torch.randn(3000, 2, generator=_gen(3), dtype=torch.float64) * a.std(0) + a.mean(0)
    assert sliced_wasserstein(a, b) < 0.25 * sliced_wasserstein(a, gauss)
    assert energy_distance(a, b) < 0.1 * energy_distance(a, gauss)
    assert MIX.sliced_w1(a) < 0.1 * MIX.sliced_w1(gauss)
    assert MIX.sliced_w1(a + 0.3) > 5 * MIX.sliced_w1(a)


@pytest.mark.parametrize("config", [EPS, V_ZERO_SNR, X0], ids=["eps", "v-zero-snr", "x0"])
def test_exact_denoiser_with_ddpm_1000_steps_samples_the_mixture(config):
    diffusion = GaussianDiffusion(config)
    x = ddpm_sample(MIX.exact_denoiser(diffusion), diffusion, (4000, 2), generator=_gen(0), dtype=torch.float64)
    weights = mode_weights(MIX.assign(x), 8)
    assert float((weights - MIX.weights).abs().max()) < 0.05
    assert MIX.sliced_w1(x) < 1.5 * _floor(4000)


@pytest.mark.parametrize("sampler", [ddim_sample, dpm_solver_pp_sample])
def test_ode_samplers_converge_with_steps(sampler):
    diffusion = GaussianDiffusion(V_ZERO_SNR)
    f = MIX.exact_denoiser(diffusion)
    ref = ddim_sample(f, diffusion, (2000, 2), steps=1000, generator=_gen(4), dtype=torch.float64)
    errors = [float((sampler(f, diffusion, (2000, 2), steps=n, generator=_gen(4), dtype=torch.float64) - ref)
                    .norm(dim=1).mean()) for n in (5, 20, 100)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.02, errors


def test_dpm_solver_pp_beats_ddim_at_equal_steps():
    diffusion = GaussianDiffusion(V_ZERO_SNR)
    f = MIX.exact_denoiser(diffusion)
    ref = ddim_sample(f, diffusion, (2000, 2), steps=1000, generator=_gen(5), dtype=torch.float64)
    for n, factor in ((10, 0.9), (20, 0.75)):  # second order: the gap widens as the steps shrink
        ddim = ddim_sample(f, diffusion, (2000, 2), steps=n, generator=_gen(5), dtype=torch.float64)
        dpm = dpm_solver_pp_sample(f, diffusion, (2000, 2), steps=n, generator=_gen(5), dtype=torch.float64)
        assert (dpm - ref).norm(dim=1).mean() < factor * (ddim - ref).norm(dim=1).mean()


@pytest.mark.parametrize("config", [EPS, V_ZERO_SNR], ids=["eps", "v-zero-snr"])
def test_first_order_dpm_solver_pp_equals_ddim(config):
    diffusion = GaussianDiffusion(config)
    f = MIX.exact_denoiser(diffusion)
    x_t = torch.randn(256, 2, generator=_gen(6), dtype=torch.float64)
    for steps in (7, 50):
        a = ddim_sample(f, diffusion, x_t, steps=steps, eta=0.0)
        b = dpm_solver_pp_sample(f, diffusion, x_t, steps=steps, order=1)
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_ddim_inversion_round_trip():
    data = two_wide_gaussians()
    diffusion = GaussianDiffusion(EPS)
    f = data.exact_denoiser(diffusion)
    x0 = data.sample(256, generator=_gen(7))
    plain = (ddim_sample(f, diffusion, ddim_invert(f, diffusion, x0, steps=100), steps=100) - x0).abs().max()
    exact = (ddim_sample(f, diffusion, ddim_invert(f, diffusion, x0, steps=100, fixed_point_iters=3), steps=100)
             - x0).abs().max()
    assert float(exact) < 1e-3 < float(plain)  # the plain inversion is only first-order accurate
    x_t = ddim_invert(f, diffusion, x0, steps=100, fixed_point_iters=3)
    assert 0.8 < float(x_t.std()) < 1.2  # lands on (approximately) unit noise


def test_inversion_moves_off_the_data_with_trailing_steps():
    diffusion = GaussianDiffusion(V_ZERO_SNR)  # trailing spacing: the first step goes from clean to t = 999 - ...
    data = two_wide_gaussians()
    f = data.exact_denoiser(diffusion)
    x0 = data.sample(256, generator=_gen(8))
    x_t = ddim_invert(f, diffusion, x0, steps=50, fixed_point_iters=3)
    assert float((ddim_sample(f, diffusion, x_t, steps=50) - x0).abs().max()) < 1e-2
    # The first step leaves the clean data: x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps(x0, t).
    ab = float(diffusion.alphas_cumprod[499])
    eps = diffusion.predict(f(x0, torch.full((256,), 499)), x0, torch.full((256,), 499)).eps
    assert torch.allclose(ddim_invert(f, diffusion, x0, steps=[499]), ab ** 0.5 * x0 + (1 - ab) ** 0.5 * eps)


def test_explicit_timesteps_in_any_form():
    diffusion = GaussianDiffusion(V_ZERO_SNR)
    f = MIX.exact_denoiser(diffusion)
    x_t = torch.randn(16, 2, generator=_gen(2), dtype=torch.float64)
    ref = ddim_sample(f, diffusion, x_t, steps=[998, 499, 0])
    for form in ((998, 499, 0), range(0, 999, 499), torch.tensor([998, 499, 0]), "0,499,998"):
        assert torch.equal(ddim_sample(f, diffusion, x_t, steps=form), ref)
    with pytest.raises(ValueError, match="empty"):
        ddim_sample(f, diffusion, x_t, steps=[])


def test_same_seed_is_bit_identical_and_batches_equal_single_runs():
    diffusion = GaussianDiffusion(V_ZERO_SNR)
    f = MIX.exact_denoiser(diffusion)
    for sampler, kwargs in [(ddpm_sample, dict(steps=50)), (ddim_sample, dict(steps=20, eta=0.5)),
                            (dpm_solver_pp_sample, dict(steps=20))]:
        a = sampler(f, diffusion, (8, 2), generator=_gen(9), **kwargs)
        b = sampler(f, diffusion, (8, 2), generator=_gen(9), **kwargs)
        assert torch.equal(a, b)
        batch = sampler(f, diffusion, (8, 2), generator=[_gen(100 + i) for i in range(8)], **kwargs)
        singles = torch.cat([sampler(f, diffusion, (1, 2), generator=[_gen(100 + i)], **kwargs) for i in range(8)])
        assert torch.allclose(batch, singles, atol=1e-5, rtol=0)


def test_progress_is_reported_every_step_and_bad_arguments_refused():
    diffusion = GaussianDiffusion(V_ZERO_SNR)
    f = MIX.exact_denoiser(diffusion)
    seen = []
    dpm_solver_pp_sample(f, diffusion, (4, 2), steps=15, generator=_gen(0), progress=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 15) for i in range(1, 16)]
    with pytest.raises(ValueError, match="order"):
        dpm_solver_pp_sample(f, diffusion, (4, 2), order=3)
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(f, diffusion, (4, 2), eta=-1)
    with pytest.raises(ValueError, match="generators"):
        ddpm_sample(f, diffusion, (4, 2), steps=3, generator=[_gen(0)])


def test_default_spacing_keeps_eps_models_off_the_last_step():
    assert default_spacing(GaussianDiffusion(EPS)) == "leading"
    assert default_spacing(GaussianDiffusion(V_ZERO_SNR)) == "trailing"
    assert default_spacing(GaussianDiffusion(X0)) == "trailing"


class _MLP(nn.Module):
    def __init__(self, width=128):
        super().__init__()
        self.inp = nn.Linear(2 + 32, width)
        self.net = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, 2))

    def forward(self, x, t):
        return self.net(self.inp(torch.cat([x, timestep_embedding(t, 32)], dim=1)))


@pytest.mark.parametrize("config", [EPS, V_ZERO_SNR], ids=["eps", "v-zero-snr"])
def test_trained_mlp_denoiser_samples_the_mixture(config):
    """Known answer with training in the loop: 2,000 Adam steps on the mixture, then DDPM at 1000 steps.

    Threshold: the sliced W1 to the exact mixture must stay within 2x what exact draws of the same
    size score (the finite-sample floor, ~0.02 at n = 4000); a moment-matched Gaussian scores ~0.36.
    """
    torch.manual_seed(0)
    diffusion, model = GaussianDiffusion(config), _MLP()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 2000)
    g = _gen(0)
    for _ in range(2000):
        x0 = MIX.sample(256, generator=g).float()
        loss = diffusion.training_losses(model, x0, diffusion.sample_timesteps(256, generator=g),
                                         torch.randn(x0.shape, generator=g))["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    x = ddpm_sample(model, diffusion, (4000, 2), generator=_gen(1))
    assert float((mode_weights(MIX.assign(x), 8) - MIX.weights).abs().max()) < 0.05
    assert MIX.sliced_w1(x) < 2 * _floor(4000)
    fast = dpm_solver_pp_sample(model, diffusion, (4000, 2), steps=50, generator=_gen(1))
    assert float((mode_weights(MIX.assign(fast), 8) - MIX.weights).abs().max()) < 0.05
