"""Measurements behind chapter 3 (normalisation): BatchNorm vs LayerNorm on causal sequences and
padding, eager speed of LayerNorm vs RMSNorm, and the Pre-LN scale problem with its remedies."""
from __future__ import annotations

import math
import statistics
import time

import torch
import torch.nn.functional as F

from course_utils.models import TinyTransformer, TransformerConfig
from course_utils.plotting import COLORS, log_scale, series, subplots
from course_utils.stability import attention_score_max


def _batch_norm_over_bt(t: torch.Tensor) -> torch.Tensor:
    """BatchNorm in training mode on (B, T, C): statistics per channel over batch and time."""
    return F.batch_norm(t.transpose(1, 2), None, None, training=True).transpose(1, 2)  # wants (B, C, T)


def _layer_norm_over_c(t: torch.Tensor) -> torch.Tensor:
    """LayerNorm on (B, T, C): statistics per position over its C features."""
    return F.layer_norm(t, t.shape[-1:])


_NORMS_OVER = (("batchnorm", _batch_norm_over_bt), ("layernorm", _layer_norm_over_c))


def batchnorm_future_leak(seed: int = 0) -> dict[str, float]:
    """Change the *last* token of one sequence and measure how much the normalised output at the
    *first* position moves, for BatchNorm (statistics over batch and time) and LayerNorm (over
    features). A causal model must not let a future token change an earlier output."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 16, 32, generator=g)  # (B, T, C)
    changed = x.clone()
    changed[0, -1] = 10 * torch.randn(32, generator=g)

    return {name: float((f(changed)[0, 0] - f(x)[0, 0]).abs().max()) for name, f in _NORMS_OVER}


def padding_changes_output(seed: int = 0) -> dict[str, float]:
    """Normalise the same length-10 sequence alone and inside a batch padded to length 30 with
    zeros; return the largest change of its outputs for BatchNorm and LayerNorm."""
    g = torch.Generator().manual_seed(seed)
    seq = torch.randn(1, 10, 32, generator=g)
    other = torch.randn(1, 30, 32, generator=g)
    padded = torch.cat([torch.cat([seq, torch.zeros(1, 20, 32)], dim=1), other])  # (2, 30, 32)

    return {name: float((f(padded)[0, :10] - f(seq)[0]).abs().max()) for name, f in _NORMS_OVER}


def time_eager(fn, *args, reps: int = 30) -> float:
    """Median seconds of ``fn(*args)`` over ``reps`` runs after 3 warm-up calls (CPU timing)."""
    for _ in range(3):
        fn(*args)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def batchnorm_batch_noise(batch_sizes, *, features: int = 16, trials: int = 200, seed: int = 0) -> dict[int, float]:
    """BatchNorm's small-batch trouble as a variance effect. One fixed example is normalised (training mode: the
    batch's own mean and variance) inside ``trials`` batches of B - 1 other random examples; returns, for each B,
    the std of its normalised values across the batches, averaged over ``features``. LayerNorm's would be 0."""
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(features, generator=gen)
    spread = {}
    for size in batch_sizes:
        outputs = torch.stack([
            F.batch_norm(torch.cat([example[None], torch.randn(size - 1, features, generator=gen)]), None, None,
                         training=True)[0]
            for _ in range(trials)])  # (trials, features): the example's normalised value in each batch
        spread[size] = float(outputs.std(dim=0).mean())
    return spread


def rms_norm(x, weight, eps=1e-6):
    """RMSNorm over the last dimension, as F.rms_norm(x, (N,), weight, eps).

    x: (..., N); weight: (N,). x / sqrt(mean(x^2) + eps) * weight, with the mean over the N
    features. No centring, no bias. Returns a tensor shaped like x; inputs are not modified.
    """
    return x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + eps) * weight


def norm_speed(rows: int = 4096, cols: int = 1024, reps: int = 30, seed: int = 0) -> dict[str, float]:
    """Median milliseconds of forward LayerNorm and RMSNorm on a (rows, cols) float32 tensor,
    PyTorch's fused ops and the plain from-scratch formulas."""
    g = torch.Generator().manual_seed(seed)
    x, w, b = torch.randn(rows, cols, generator=g), torch.randn(cols, generator=g), torch.randn(cols, generator=g)

    def ln_scratch(x, w, b):
        centred = x - x.mean(-1, keepdim=True)  # once: written twice it would cost LayerNorm an extra pass
        return centred * torch.rsqrt((centred * centred).mean(-1, keepdim=True) + 1e-5) * w + b

    return {
        "F.layer_norm": 1e3 * time_eager(lambda: F.layer_norm(x, (cols,), w, b), reps=reps),
        "F.rms_norm": 1e3 * time_eager(lambda: F.rms_norm(x, (cols,), w, 1e-6), reps=reps),
        "LayerNorm from scratch": 1e3 * time_eager(ln_scratch, x, w, b, reps=reps),
        "RMSNorm from scratch": 1e3 * time_eager(rms_norm, x, w, reps=reps),
    }


def centring_comparison(*, depth: int = 4, steps: int = 150, lr: float = 3e-3,
                        seeds=(0, 1, 2)) -> dict[str, list[float]]:
    """Does LayerNorm's centring matter for the loss? The same Pre-LN stack of ``depth`` blocks trained on the
    Markov chain with LayerNorm and with RMSNorm, once per seed (same init draws and batches for both).
    Returns {"layernorm": [...], "rmsnorm": [...]}: the mean training loss of the last 20 steps, per seed."""
    from course_utils.gradflow import stack_config
    from course_utils.training import train_markov_lm

    finals = {}
    for norm in ("layernorm", "rmsnorm"):
        runs = [train_markov_lm(stack_config("pre", depth, norm=norm), steps=steps, lr=lr, seed=seed, progress=False)
                for seed in seeds]
        finals[norm] = [r.final_loss for r in runs]
    return finals


# Pre-LN variants compared in the scale-growth plot; keys are labels.
# (n_cols, BLOCK, num_warps): the same rows at three warp counts, a row length that is no multiple of 16, and
# rows long enough that one block no longer fits a thread's registers
COMPILE_SETTINGS = [(1024, 1024, 1), (1024, 1024, 4), (1024, 1024, 8), (1000, 1024, 4), (4096, 4096, 4),
                    (16384, 16384, 4), (16384, 16384, 16)]


def rmsnorm_kernel_compiled(kernel, settings=COMPILE_SETTINGS, target: str = "sm_90") -> list[dict]:
    """What Triton's compiler makes, for ``target``, of an RMSNorm forward kernel with exercise 3.3's signature,
    launched on contiguous float32 rows of each ``(n_cols, BLOCK, num_warps)`` of ``settings``: registers a thread,
    spilled bytes, shared memory (the scratch of the row reduction), the PTX's global loads, the columns each thread
    holds (BLOCK / (32 x warps)) and the float32 elements it loads per column (x and the weight: 2 when every element
    is loaded once). Needs Triton."""
    from course_utils.harness.compiled import TARGETS, compile_launches, elements_moved, launch_of

    launches = []
    for n_cols, block, warps in settings:
        x, w = torch.empty(4, n_cols), torch.empty(n_cols)
        y, rstd = torch.empty_like(x), torch.empty(4)
        args = (x, w, y, rstd, x.stride(0), y.stride(0), n_cols, 1e-6)
        launches.append(launch_of(getattr(kernel, "fn", kernel), args, {"BLOCK": block, "num_warps": warps}))
    reports = compile_launches(launches, tuple(t for t in TARGETS if t.name == target))
    rows = []
    for (n_cols, block, warps), report in zip(settings, reports):
        if report.error:
            raise ValueError(f"the kernel does not compile for {target}: {report.error}")
        per_thread = block // (32 * warps)
        rows.append({"n_cols": n_cols, "BLOCK": block, "warps": warps, "row stride % 16": n_cols % 16,
                     "columns a thread": per_thread, "registers": report.registers,
                     "spilled bytes": report.spilled_bytes,
                     "shared bytes": report.shared_bytes,
                     "global loads": ", ".join(f"{n}x {op}" for op, n in sorted(report.global_loads.items())),
                     "loads per column": elements_moved(report.global_loads, 32) / per_thread})
    return rows


PRE_LN_VARIANTS = {
    "Pre-LN, no final norm": dict(final_norm=False),
    "+ depth-scaled init": dict(final_norm=False, depth_scaled_init=True),
    "+ final norm": dict(final_norm=True),
}


def pre_ln_scale(depth: int, variant: str, *, init_std: float = 0.1, seed: int = 0) -> dict:
    """Residual-stream RMS after each block and the std of the logits, for a Pre-LN TinyTransformer
    at init with one of PRE_LN_VARIANTS. init_std 0.1 (about 1/sqrt(d)) makes the growth visible
    at init; with 0.02 the same happens more slowly, and during training."""
    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=64, block_size=16, n_layer=depth, d_model=64, n_head=4,
                               init_std=init_std, **PRE_LN_VARIANTS[variant])
    model = TinyTransformer(config)
    tokens = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        x = model.embed(tokens)
        rms = []
        for block in model.blocks:
            x = block(x)
            rms.append(float(x.pow(2).mean().sqrt()))
        logits = model.lm_head(model.norm_f(x))
    return {"stream_rms": rms, "logit_std": float(logits.std())}


def figure_pre_ln_scale(depth: int = 24):
    fig, (ax_s, ax_l) = subplots(2, width=10)
    layers = list(range(1, depth + 1))
    keys = ["pre", "online", "post"]  # one style per variant
    logit_stds = []
    for key, variant in zip(keys, PRE_LN_VARIANTS):
        result = pre_ln_scale(depth, variant)
        logit_stds.append(result["logit_std"])
        if variant != "+ final norm":  # the final norm acts after the last block: same stream as the first
            label = "Pre-LN (with or without final norm)" if variant.startswith("Pre-LN") else variant
            ax_s.plot(layers, result["stream_rms"], **series(key), label=label)
        if variant.startswith("Pre-LN"):
            first = result["stream_rms"][0]
    ax_s.plot(layers, [first * math.sqrt(layer) for layer in layers], "k:", lw=1, label="∝ √layer")
    log_scale(ax_s)
    ax_s.set(xlabel="block", ylabel="RMS of the residual stream", title=f"Pre-LN at init, depth {depth}, init std 0.1")
    ax_s.legend(fontsize=8)
    ax_l.bar(range(3), logit_stds, color=[COLORS[key] for key in keys])
    ax_l.set_xticks(range(3), labels=["none", "depth-scaled", "final norm"])
    ax_l.set(ylabel="std of the logits", title="what reaches the softmax")
    return fig


def figure_qk_norm(scales=(0.5, 1, 2, 4, 8, 16)):
    """Largest attention logit against activation scale, with and without QK-norm (d_k = 64)."""
    fig, ax = subplots()
    plain = [attention_score_max(s) for s in scales]
    normed = [attention_score_max(s, qk_norm=True) for s in scales]
    ax.plot(scales, plain, **series("naive"), label="plain q·k/√d")
    ax.plot(scales, normed, **series("safe"), label="QK-norm")
    ax.axhline(88.72, color="k", ls=":", lw=0.8, label="exp overflows in float32 (88.7)")
    ax.axhline(11.09, color="grey", ls="--", lw=0.8, label="exp overflows in float16 (11.1)")
    log_scale(ax, "xy")
    ax.set(xlabel="scale of q and k activations", ylabel="largest |attention logit|",
           title="QK-norm bounds attention logits by √d = 8")
    ax.legend(fontsize=8)
    return fig


def figure_soft_cap(cap: float = 30.0):
    """Left: cap·tanh(z/cap) against z. Right: softmax of a peaked logit vector with and without it."""
    fig, (ax_c, ax_p) = subplots(2, width=10)
    z = torch.linspace(-150, 150, 301)
    ax_c.plot(z, z, **series("reference"), label="no cap")
    ax_c.plot(z, cap * torch.tanh(z / cap), **series("safe", markevery=25), label=f"cap {cap:.3g}")
    ax_c.set(xlabel="logit", ylabel="capped logit", ylim=(-160, 160), title="soft-capping: cap · tanh(logit / cap)")
    ax_c.legend()
    logits = torch.tensor([60.0, 45.0, 40.0, 20.0, 0.0, -20.0])
    ax_p.bar(torch.arange(6).numpy() - 0.2, torch.softmax(logits, -1).numpy(), width=0.4, color="grey", label="raw")
    ax_p.bar(torch.arange(6).numpy() + 0.2, torch.softmax(cap * torch.tanh(logits / cap), -1).numpy(), width=0.4,
             color=COLORS["safe"], label="capped")
    ax_p.set(xlabel="token (logits 60, 45, 40, 20, 0, -20)", ylabel="probability", ylim=(0, 1.05),
             title="softmax of the logits")
    ax_p.legend()
    return fig
