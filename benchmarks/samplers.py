"""Step efficiency of the samplers, measured with the exact denoiser of a Gaussian mixture.

With the exact E[x0 | x_t] (unclip/diffusion/mixture.py) there is no training error: what is left
is the sampler's discretisation error. For DDPM, DDIM (eta = 0) and DPM-Solver++(2M) at NFE
5 .. 1000 it prints the sliced 1-Wasserstein distance of the samples to the exact mixture (closed-form
projected CDFs, so no reference sample adds noise), the largest mode-weight error, and the floor
(exact draws of the same size); for the two ODE samplers also the mean distance of each point to
where the converged ODE (DDIM at 1000 steps, same x_T) takes it. Then the DDIM inversion round-trip
error, and the time per NFE. Writes benchmarks/results/samplers.json.

Reading the numbers: at n = 50,000 exact draws themselves score 0.004-0.010 depending on the seed.
DDPM draws fresh noise at every step, while DDIM and DPM-Solver++ map one fixed set of x_T, so their
converged values sit at that set's own seed-noise level; near convergence, compare ODE samplers by
"to ODE" (their discretisation error), and DDPM against the floor.

    .venv/bin/python benchmarks/samplers.py                 # n = 50,000 points (about 8 minutes on 2 cores)
    .venv/bin/python benchmarks/samplers.py --n 5000        # a quick look
    .venv/bin/python benchmarks/samplers.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from unclip.diffusion import DiffusionConfig, GaussianDiffusion
from unclip.diffusion.mixture import ring_mixture, two_wide_gaussians
from unclip.eval.distances import mode_weights
from unclip.samplers import ddim_invert, ddim_sample, ddpm_sample, dpm_solver_pp_sample
from report import write_report

NFES = (5, 10, 20, 50, 100, 250, 1000)
SAMPLERS = {"ddpm": ddpm_sample, "ddim": ddim_sample, "dpm++2m": dpm_solver_pp_sample}
CONFIGS = {
    "eps, cosine": DiffusionConfig(prediction="eps", images=False),
    "v, cosine, zero terminal SNR": DiffusionConfig(prediction="v", zero_terminal_snr=True, images=False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000, help="points per sample set (default: 50,000)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "samplers.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    mix = ring_mixture()  # 8 modes on a circle of radius 2, std 0.15, weights 1..8 / 36
    floors = [mix.sliced_w1(mix.sample(args.n, generator=torch.Generator().manual_seed(s))) for s in (1, 2, 3)]
    report = {"benchmark": "samplers", "n": args.n, "device": str(device), "floor_sw1": floors, "curves": {},
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"}
    print(f"ring mixture (8 modes, weights 1..8/36), n = {args.n}: exact draws score SW1 = "
          + ", ".join(f"{f:.4f}" for f in floors) + " (the floor)")
    for config_name, config in CONFIGS.items():
        diffusion = GaussianDiffusion(config)
        denoiser = mix.exact_denoiser(diffusion)
        print(f"\n{config_name}\n{'sampler':<12}" + "".join(f"{nfe:>9}" for nfe in NFES))
        ode = ddim_sample(denoiser, diffusion, (args.n, 2), steps=1000, generator=torch.Generator(device=device)
                          .manual_seed(3), device=device, dtype=torch.float64)
        curves = {}
        for name, sampler in SAMPLERS.items():
            row, errs, drift, per_nfe = [], [], [], []
            for nfe in NFES:
                gen = torch.Generator(device=device).manual_seed(3)  # the same x_T for every sampler and NFE
                start = time.perf_counter()
                x = sampler(denoiser, diffusion, (args.n, 2), steps=nfe, generator=gen, device=device,
                            dtype=torch.float64)
                per_nfe.append((time.perf_counter() - start) / nfe)
                row.append(mix.sliced_w1(x))
                errs.append(float((mode_weights(mix.assign(x.cpu()), 8) - mix.weights).abs().max()))
                drift.append(float((x - ode).norm(dim=1).mean()))
            curves[name] = {"nfe": list(NFES), "sw1": row, "mode_weight_error": errs, "ms_per_nfe":
                            1000 * statistics.median(per_nfe)} | ({"ode_error": drift} if name != "ddpm" else {})
            print(f"{name + ' SW1':<12}" + "".join(f"{v:>9.4f}" for v in row))
            print(f"{'  modes':<12}" + "".join(f"{v:>9.3f}" for v in errs))
            if name != "ddpm":
                print(f"{'  to ODE':<12}" + "".join(f"{v:>9.4f}" for v in drift))
        goal = curves["dpm++2m"]["sw1"][NFES.index(20)] / curves["ddpm"]["sw1"][NFES.index(1000)]
        print(f"DPM-Solver++ at 20 NFE / DDPM at 1000 NFE (SW1): {goal:.3f} "
              f"(goal <= 1.10: {'met' if goal <= 1.1 else 'MISSED'})")
        report["curves"][config_name] = curves | {"dpm20_over_ddpm1000": goal}

    print("\nDDIM inversion round trip x0 -> x_T -> x0, 100 steps, exact denoiser (eps, cosine), 1024 points")
    print(f"{'data':<28}{'fixed-point iters':>18}{'max |err|':>12}{'mean |err|':>12}")
    report["inversion"] = []
    for data_name, data in [("two wide Gaussians", two_wide_gaussians()), ("ring (std 0.15)", mix)]:
        diffusion = GaussianDiffusion(CONFIGS["eps, cosine"])
        denoiser = data.exact_denoiser(diffusion)
        x0 = data.sample(1024, generator=torch.Generator().manual_seed(5)).to(device)
        for iters in (0, 1, 3):
            x_t = ddim_invert(denoiser, diffusion, x0, steps=100, fixed_point_iters=iters)
            err = (ddim_sample(denoiser, diffusion, x_t, steps=100) - x0).abs()
            report["inversion"].append({"data": data_name, "fixed_point_iters": iters, "max": float(err.max()),
                                        "mean": float(err.mean())})
            print(f"{data_name:<28}{iters:>18}{float(err.max()):>12.2e}{float(err.mean()):>12.2e}")
    write_report(args.out, report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
