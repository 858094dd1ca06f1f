"""Closed-form checks of the Gaussian diffusion core (issue 3)."""

import math

import pytest
import torch

from unclip.diffusion import (
    DiffusionConfig, GaussianDiffusion, autoguidance, classifier_free_guidance, drop_condition, dropout_mask,
    make_schedule, min_snr_weight, spaced_timesteps, target, threshold_x0, to_x0_eps,
)
from unclip.diffusion.likelihood import discretized_gaussian_log_likelihood, normal_kl


@pytest.mark.parametrize("kind", ["cosine", "linear"])
@pytest.mark.parametrize("steps", [1000, 64, 7])
def test_alphas_cumprod_endpoints_and_monotonicity(kind, steps):
    s = make_schedule(kind, steps)
    ab = s.alphas_cumprod
    assert ab.dtype == torch.float64 and len(ab) == steps
    assert bool((ab[1:] < ab[:-1]).all()) and 0 < ab[-1] < ab[0] < 1
    if steps == 1000:
        # Improved DDPM eq. 17 at t = 1: cos^2((1/1000 + s)/(1 + s) pi/2) / cos^2(s/(1 + s) pi/2).
        f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        expected_first = f(1) / f(0) if kind == "cosine" else 1 - 1e-4
        assert float(ab[0]) == pytest.approx(expected_first, rel=1e-12)
        assert float(ab[-1]) < (1e-8 if kind == "cosine" else 5e-5)


def test_zero_terminal_snr_rescale():
    s = make_schedule("cosine", 1000, zero_terminal_snr=True)
    plain = make_schedule("cosine", 1000)
    assert float(s.alphas_cumprod[-1]) == 0.0 and float(s.snr[-1]) == 0.0
    assert float(s.alphas_cumprod[0]) == pytest.approx(float(plain.alphas_cumprod[0]), rel=1e-12)
    assert bool((s.alphas_cumprod[1:] <= s.alphas_cumprod[:-1]).all())
    with pytest.raises(ValueError, match="eps"):
        DiffusionConfig(prediction="eps", zero_terminal_snr=True)


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="sigmoid"):
        make_schedule("sigmoid")
    with pytest.raises(ValueError, match="positive"):
        make_schedule("cosine", 0)
    with pytest.raises(ValueError, match="prediction"):
        DiffusionConfig(prediction="score")


def test_paper_step_counts_and_explicit_timesteps():
    for n in (64, 250, 27, 15):  # unCLIP: prior 64, decoder 250, upsamplers 27 and 15
        for spacing in ("trailing", "leading"):
            ts = spaced_timesteps(1000, n, spacing=spacing)
            assert len(ts) == n and ts == sorted(ts, reverse=True) and 0 <= ts[-1] and ts[0] <= 999
        assert spaced_timesteps(1000, n)[0] == 999 and spaced_timesteps(1000, n, spacing="leading")[-1] == 0
    assert spaced_timesteps(1000, "0,500,999") == [999, 500, 0]
    assert spaced_timesteps(1000, 1000) == list(range(999, -1, -1))
    for bad in (0, 1001, "5,x", "1000"):
        with pytest.raises(ValueError):
            spaced_timesteps(1000, bad)


def test_q_sample_moments_match_theory():
    d = GaussianDiffusion(DiffusionConfig())
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((100_000, 1), 0.7, dtype=torch.float64)
    for t in (0, 300, 999):
        tt = torch.full((100_000,), t)
        x_t = d.q_sample(x0, tt, torch.randn(x0.shape, generator=g, dtype=torch.float64))
        ab = float(d.alphas_cumprod[t])
        assert float(x_t.mean()) == pytest.approx(math.sqrt(ab) * 0.7, abs=4 * math.sqrt((1 - ab) / 1e5))
        assert float(x_t.var()) == pytest.approx(1 - ab, rel=0.02, abs=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_parameterisations_invert_each_other(prediction):
    g = torch.Generator().manual_seed(1)
    d = GaussianDiffusion(DiffusionConfig())
    x0 = torch.randn(64, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (64,), generator=g)
    alpha, sigma = d.alpha_sigma(t, x0)
    x_t = alpha * x0 + sigma * eps
    out = target(prediction, x0, eps, alpha, sigma)
    x0_back, eps_back = to_x0_eps(prediction, out, x_t, alpha, sigma)
    keep = (alpha > 1e-3).reshape(-1)  # eps -> x0 divides by alpha, ~5e-5 at the cosine schedule's last step
    assert torch.allclose(x0_back[keep], x0[keep], atol=1e-6) and torch.allclose(eps_back, eps, atol=1e-6)


def test_posterior_matches_its_formula():
    d = GaussianDiffusion(DiffusionConfig(schedule="linear"))
    s = d.schedule
    x0, x_t = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    for t in (1, 10, 500, 999):
        mean, logvar = d.q_posterior(x0, x_t, torch.full((5,), t))
        b, ab, ab_prev = s.betas[t], s.alphas_cumprod[t], s.alphas_cumprod[t - 1]
        expected = (ab_prev.sqrt() * b / (1 - ab)) * x0 + ((1 - b).sqrt() * (1 - ab_prev) / (1 - ab)) * x_t
        assert torch.allclose(mean, expected, atol=1e-12)
        assert torch.allclose(logvar, torch.log(b * (1 - ab_prev) / (1 - ab)).expand_as(logvar), atol=1e-12)
    # Bayes check: the posterior of a 1-D Gaussian chain equals the conditional of the joint of (x_{t-1}, x_t).
    t, x0v = 400, 0.3
    a_t = 1 - s.betas[t]
    ab_prev = s.alphas_cumprod[t - 1]
    c = a_t.sqrt() * (1 - ab_prev)  # Cov(x_{t-1}, x_t)
    cov = torch.tensor([[1 - ab_prev, c], [c, 1 - s.alphas_cumprod[t]]])
    xt_val = 0.9
    mu_prev, mu_t = ab_prev.sqrt() * x0v, s.alphas_cumprod[t].sqrt() * x0v
    cond_mean = mu_prev + cov[0, 1] / cov[1, 1] * (xt_val - mu_t)
    cond_var = cov[0, 0] - cov[0, 1] ** 2 / cov[1, 1]
    f64 = dict(dtype=torch.float64)
    mean, logvar = d.q_posterior(torch.tensor([[x0v]], **f64), torch.tensor([[xt_val]], **f64), torch.tensor([t]))
    assert float(mean) == pytest.approx(float(cond_mean), rel=1e-10)
    assert float(logvar.exp()) == pytest.approx(float(cond_var), rel=1e-10)


def test_min_snr_weights():
    snr = torch.tensor([0.0, 0.5, 5.0, 50.0], dtype=torch.float64)
    assert torch.allclose(min_snr_weight("x0", snr, 5.0), torch.tensor([0.0, 0.5, 5.0, 5.0], dtype=torch.float64))
    assert torch.allclose(min_snr_weight("eps", snr[1:], 5.0), torch.tensor([1.0, 1.0, 0.1], dtype=torch.float64))
    assert torch.allclose(min_snr_weight("v", snr, 5.0), torch.tensor([1.0, 1 / 3, 5 / 6, 5 / 51], dtype=torch.float64))


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (0.7, 1.2)])
def test_logit_normal_timesteps_follow_their_distribution(mean, std):
    """P(t < k) = P(sigmoid(m + s n) < k / T) = Phi((logit(k / T) - m) / s), checked at five points; uniform stays
    uniform and every timestep stays in range."""
    cfg = DiffusionConfig(timestep_sampling="logit-normal", timestep_logit_mean=mean, timestep_logit_std=std)
    t = GaussianDiffusion(cfg).sample_timesteps(200_000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) <= 999
    for k in (100, 300, 500, 700, 900):
        expected = 0.5 * (1 + math.erf((math.log(k / (1000 - k)) - mean) / std / math.sqrt(2)))
        assert abs(float((t < k).double().mean()) - expected) < 0.005, k
    u = GaussianDiffusion(DiffusionConfig()).sample_timesteps(200_000, generator=torch.Generator().manual_seed(0))
    assert abs(float((u < 300).double().mean()) - 0.3) < 0.005
    with pytest.raises(ValueError, match="timestep_sampling 'beta'"):
        DiffusionConfig(timestep_sampling="beta")
    with pytest.raises(ValueError, match="timestep_logit_std must be positive, got 0"):
        DiffusionConfig(timestep_sampling="logit-normal", timestep_logit_std=0)


def test_focused_timesteps_put_their_share_on_the_trailing_sampler_steps_and_leave_unfocused_streams_alone():
    """Known answer: with focus N and fraction f, each of the N steps a trailing N-step sampler visits has probability
    f / N + (1 - f) / T and every other step (1 - f) / T; without a focus the draws are exactly the old ones."""
    n, f = 7, 0.5
    cfg = DiffusionConfig(prediction="v", zero_terminal_snr=True, timestep_focus_steps=n, timestep_focus_fraction=f)
    t = GaussianDiffusion(cfg).sample_timesteps(400_000, generator=torch.Generator().manual_seed(0))
    grid = [999, 856, 713, 570, 428, 285, 142]  # the pipeline's 7 decoder steps (docs/pipeline.md)
    counts = torch.bincount(t, minlength=1000).double() / len(t)
    for step in grid:
        assert abs(float(counts[step]) - (f / n + (1 - f) / 1000)) < 0.002, step
    others = torch.ones(1000, dtype=torch.bool)
    others[grid] = False
    assert abs(float(counts[others].sum()) - (1 - f) * 993 / 1000) < 0.003
    assert abs(float(counts[:500][others[:500]].sum()) - (1 - f) * 497 / 1000) < 0.003  # the rest stays uniform
    plain = GaussianDiffusion(DiffusionConfig(prediction="v", zero_terminal_snr=True))
    assert torch.equal(plain.sample_timesteps(64, generator=torch.Generator().manual_seed(3)),
                       torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3)))
    for bad, match in (({"timestep_focus_steps": 0}, "integer in 1..1000, got 0"),
                       ({"timestep_focus_steps": 7.0}, "got 7.0"),
                       ({"timestep_focus_steps": 7, "timestep_focus_fraction": 0.0}, "fraction must be in"),
                       ({"timestep_focus_steps": 7, "prediction": "eps", "zero_terminal_snr": False}, "leading")):
        with pytest.raises(ValueError, match=match):
            DiffusionConfig(**{"prediction": "v", "zero_terminal_snr": True, **bad})


def test_training_loss_is_the_mse_to_the_right_target():
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(8, 3, dtype=torch.float64)
    noise = torch.randn(8, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 100, 300, 500, 700, 900, 999])
    for prediction in ("eps", "x0", "v"):
        d = GaussianDiffusion(DiffusionConfig(prediction=prediction, images=False))
        alpha, sigma = d.alpha_sigma(t, x0)
        perfect = lambda x_t, tt: target(prediction, x0, noise, alpha, sigma)  # noqa: E731
        assert float(d.training_losses(perfect, x0, t, noise)["loss"].abs().max()) < 1e-20
        zero = lambda x_t, tt: torch.zeros_like(x_t)  # noqa: E731
        losses = d.training_losses(zero, x0, t, noise)["loss"]
        assert torch.allclose(losses, (target(prediction, x0, noise, alpha, sigma) ** 2).mean(1))
    with pytest.raises(ValueError, match="does not match"):
        d.training_losses(lambda x_t, tt: torch.zeros(8, 4, dtype=torch.float64), x0, t, noise)


@pytest.mark.parametrize("images", [True, False])
def test_hybrid_loss_stays_finite_for_extreme_variances(images):
    d = GaussianDiffusion(DiffusionConfig(learned_variance=True, images=images))
    x0 = torch.rand(16, 3, 8, 8) * 2 - 1
    t = torch.tensor([0, 1, 2, 999] * 4)
    for fill in (1e4, -1e4, 30.0, -30.0):
        weights = torch.full((16, 3, 8, 8), fill, requires_grad=True)

        def model(x_t, tt, w=weights):
            return torch.cat([torch.zeros_like(x_t) + w * 1e-3, w], dim=1)  # mean ~ 0, variance logit extreme

        terms = d.training_losses(model, x0, t)
        assert torch.isfinite(terms["loss"]).all() and torch.isfinite(terms["vb"]).all()
        terms["loss"].mean().backward()
        assert torch.isfinite(weights.grad).all()


def test_hybrid_vb_term_is_the_kl_in_bits():
    d = GaussianDiffusion(DiffusionConfig(learned_variance=True, vlb_weight=1 / 1000))
    x0 = torch.rand(4, 2, 4, 4) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([5, 50, 500, 900])
    alpha, sigma = d.alpha_sigma(t, x0)
    x_t = alpha * x0 + sigma * noise
    # A model with the exact eps and v = 1 (variance beta_t): vb is KL(q || N(true mean, beta_t)) / log 2.
    terms = d.training_losses(lambda x, tt: torch.cat([noise, torch.ones_like(noise)], 1), x0, t, noise)
    true_mean, true_logvar = d.q_posterior(x0.double(), x_t.double(), t)
    logvar = torch.log(d.schedule.betas[t]).reshape(-1, 1, 1, 1)
    kl = normal_kl(true_mean, true_logvar, true_mean, logvar).mean(dim=(1, 2, 3)) / math.log(2)
    assert torch.allclose(terms["vb"].double(), kl, rtol=1e-4)
    assert float(terms["mse"].max()) < 1e-12


def test_discretized_likelihood_sums_to_one_over_bins():
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    mean = torch.full_like(levels, 0.1)
    for log_scale in (-4.0, -2.0, 0.0):
        ll = discretized_gaussian_log_likelihood(levels, mean=mean, log_scale=torch.full_like(levels, log_scale))
        assert float(ll.exp().sum()) == pytest.approx(1.0, abs=2e-3)


def test_thresholding():
    x = torch.tensor([[0.5, -3.0, 2.0, 0.1]])
    assert torch.equal(threshold_x0(x, "static"), torch.tensor([[0.5, -1.0, 1.0, 0.1]]))
    dyn = threshold_x0(x, "dynamic", percentile=1.0)  # s = max |x| = 3: everything scaled into [-1, 1]
    assert torch.allclose(dyn, x / 3)
    small = torch.tensor([[0.2, -0.5]])
    assert torch.equal(threshold_x0(small, "dynamic"), small)  # s = max(1, q) leaves in-range samples alone
    with pytest.raises(ValueError, match="percentile|thresholding"):
        threshold_x0(x, "soft")


def test_classifier_free_guidance_combines_branches_in_one_batch():
    calls = []

    def model(x, t, *, cond):
        calls.append(len(x))
        return x * 0 + cond[:, None] + torch.cat([torch.zeros(len(x), 2), torch.full((len(x), 2), 7.0)], 1)

    x, t = torch.zeros(3, 4), torch.zeros(3, dtype=torch.long)
    cond, uncond = {"cond": torch.full((3,), 2.0)}, {"cond": torch.full((3,), 0.5)}
    out = classifier_free_guidance(model, scale=3.0, cond=cond, uncond=uncond)(x, t)
    assert calls == [6] and torch.allclose(out[:, :2], torch.full((3, 2), 0.5 + 3 * 1.5))
    out = classifier_free_guidance(model, scale=3.0, cond=cond, uncond=uncond, guided_channels=2)(x, t)
    assert torch.allclose(out[:, 2:], torch.full((3, 2), 9.0))  # variance channels: the conditional branch
    assert torch.equal(classifier_free_guidance(model, scale=1.0, cond=cond, uncond=uncond)(x, t), model(x, t, **cond))
    with pytest.raises(ValueError, match="different inputs"):
        classifier_free_guidance(model, scale=2.0, cond=cond, uncond={})


def test_autoguidance_extrapolates_from_the_guide_and_skips_it_outside_the_interval():
    calls = []

    def model(x, t):
        calls.append("model")
        return torch.cat([x * 0 + 2.0, x * 0 + 7.0], dim=1)  # (B, 8): a mean, then variance channels

    def guide(x, t):
        calls.append("guide")
        return torch.cat([x * 0 + 0.5, x * 0 - 1.0], dim=1)

    x, t = torch.zeros(3, 4), torch.full((3,), 300)
    out = autoguidance(model, guide, scale=3.0, guided_channels=4)(x, t)
    assert torch.allclose(out[:, :4], torch.full((3, 4), 0.5 + 3 * 1.5)) and torch.allclose(out[:, 4:], torch.full(
        (3, 4), 7.0))  # the variance channels are the model's
    calls.clear()
    fn = autoguidance(model, guide, scale=3.0, interval=(200, 600))
    assert torch.allclose(fn(x, torch.full((3,), 700)), model(x, t)) and calls == ["model", "model"]  # guide not run
    assert torch.allclose(fn(x, torch.tensor([100, 300, 700]))[:, 0], torch.tensor([2.0, 5.0, 2.0]))
    assert torch.equal(autoguidance(model, guide, scale=1.0)(x, t), model(x, t))
    with pytest.raises(ValueError, match="-1"):
        autoguidance(model, guide, scale=-1)


def test_guidance_interval_guides_only_the_steps_inside_and_runs_one_branch_outside():
    calls = []

    def model(x, t, *, cond):
        calls.append(len(x))
        return x * 0 + cond[:, None]

    x = torch.zeros(3, 4)
    cond, uncond = {"cond": torch.full((3,), 2.0)}, {"cond": torch.full((3,), 0.5)}
    fn = classifier_free_guidance(model, scale=3.0, cond=cond, uncond=uncond, interval=(200, 600))
    for t, expected, batch in ((100, 2.0, 3), (200, 5.0, 6), (600, 5.0, 6), (601, 2.0, 3), (999, 2.0, 3)):
        calls.clear()
        out = fn(x, torch.full((3,), t))
        assert calls == [batch] and torch.allclose(out, torch.full((3, 4), expected)), t
    out = fn(x, torch.tensor([100, 300, 700]))  # rows at different steps: each guided by its own t
    assert torch.allclose(out[:, 0], torch.tensor([2.0, 5.0, 2.0]))

    def with_variance(x, t, *, cond):  # channels 0-1 a mean, 2-3 a variance that guidance leaves conditional
        return torch.cat([x[:, :2] * 0 + cond[:, None], x[:, 2:] * 0 + 10 * cond[:, None]], dim=1)

    fn = classifier_free_guidance(with_variance, scale=3.0, cond=cond, uncond=uncond, guided_channels=2,
                                  interval=(200, 600))
    out = fn(x, torch.tensor([100, 300, 700]))
    expected = torch.tensor([[2.0, 2.0, 20.0, 20.0], [5.0, 5.0, 20.0, 20.0], [2.0, 2.0, 20.0, 20.0]])
    assert torch.allclose(out, expected)
    for bad in ((600, 200), (-1, 5), (3,)):
        with pytest.raises(ValueError, match="interval"):
            classifier_free_guidance(model, scale=3.0, cond=cond, uncond=uncond, interval=bad)


def test_condition_dropout_rate_and_replacement():
    g = torch.Generator().manual_seed(0)
    mask = dropout_mask(100_000, 0.1, generator=g)
    assert float(mask.float().mean()) == pytest.approx(0.1, abs=0.005)
    cond = torch.randn(4, 3, 2)
    null = torch.full((3, 2), -9.0)
    out = drop_condition(cond, null, torch.tensor([True, False, True, False]))
    assert torch.equal(out[1], cond[1]) and torch.equal(out[0], null) and torch.equal(out[2], null)
    with pytest.raises(ValueError, match="probability"):
        dropout_mask(4, 1.5)


def test_edge_cases_are_refused_or_take_their_limits():
    with pytest.raises(ValueError, match="at least 2 steps"):
        make_schedule("cosine", 1, zero_terminal_snr=True)
    zero = torch.zeros(1, dtype=torch.float64)
    assert float(min_snr_weight("eps", zero, 5.0)) == 1.0  # min(SNR, g) / SNR -> 1 as SNR -> 0
    assert float(min_snr_weight("v", zero, 5.0)) == 1.0 and float(min_snr_weight("x0", zero, 5.0)) == 0.0
