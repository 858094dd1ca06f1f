"""CUDA parity of the diffusion core and samplers; skipped where no GPU is present (CI has none)."""

import pytest
import torch

from unclip.diffusion import DiffusionConfig, GaussianDiffusion
from unclip.diffusion.mixture import ring_mixture
from unclip.samplers import ddim_invert, ddim_sample, ddpm_sample, dpm_solver_pp_sample

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
MIX = ring_mixture()


@pytest.mark.parametrize("prediction, zero_snr", [("eps", False), ("v", True)])
def test_ode_samplers_match_cpu(prediction, zero_snr):
    diffusion = GaussianDiffusion(DiffusionConfig(prediction=prediction, zero_terminal_snr=zero_snr, images=False))
    f = MIX.exact_denoiser(diffusion)
    x_t = torch.randn(512, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for sampler in (ddim_sample, dpm_solver_pp_sample):
        cpu = sampler(f, diffusion, x_t, steps=25)
        gpu = sampler(f, diffusion, x_t.cuda(), steps=25)
        assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-6)
    inverted = ddim_invert(f, diffusion, x_t.cuda(), steps=25, fixed_point_iters=1)
    assert torch.allclose(inverted.cpu(), ddim_invert(f, diffusion, x_t, steps=25, fixed_point_iters=1), atol=1e-6)


def test_stochastic_sampling_on_cuda_is_seeded():
    diffusion = GaussianDiffusion(DiffusionConfig(prediction="v", zero_terminal_snr=True, images=False))
    f = MIX.exact_denoiser(diffusion)

    def run():
        return ddpm_sample(f, diffusion, (64, 2), steps=50, generator=torch.Generator("cuda").manual_seed(1),
                           device="cuda")

    assert torch.equal(run(), run())
    gens = [torch.Generator("cuda").manual_seed(10 + i) for i in range(4)]
    batch = ddim_sample(f, diffusion, (4, 2), steps=20, eta=1.0, generator=gens, device="cuda")
    singles = torch.cat([ddim_sample(f, diffusion, (1, 2), steps=20, eta=1.0,
                                     generator=[torch.Generator("cuda").manual_seed(10 + i)], device="cuda")
                         for i in range(4)])
    assert torch.allclose(batch, singles, atol=1e-5)


def test_losses_match_cpu_and_backpropagate():
    diffusion = GaussianDiffusion(DiffusionConfig(learned_variance=True, min_snr_gamma=5.0))
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 6, 3, padding=1).double()
    x0 = torch.rand(8, 3, 8, 8, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 1, 10, 100, 400, 700, 998, 999])
    cpu = diffusion.training_losses(lambda x, tt: net(x), x0, t, noise)["loss"]
    net_gpu = net.cuda()
    gpu = diffusion.training_losses(lambda x, tt: net_gpu(x), x0.cuda(), t.cuda(), noise.cuda())["loss"]
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-6, atol=1e-9)
    gpu.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net_gpu.parameters())
