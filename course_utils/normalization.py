"""Measurements behind chapter 3 (normalisation): BatchNorm vs LayerNorm on causal sequences and
padding, eager speed of LayerNorm vs RMSNorm, whether centring matters (with a stream offset that lets it), and
the three scale problems of section 3.4: Pre-LN stream growth, attention-logit growth (QK-norm, at init and in
training), output logits (soft-capping).

Used by chapters 3 and 8.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from time import perf_counter

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_utils.measure import median_seconds
from course_utils.models import TinyTransformer, TransformerConfig
from course_utils.plotting import COLORS, log_scale, series, subplots


def _batch_norm_over_bt(t: torch.Tensor) -> torch.Tensor:
    """BatchNorm in training mode on (B, T, C): statistics per channel over batch and time."""
    return F.batch_norm(t.transpose(1, 2), None, None, training=True).transpose(1, 2)  # wants (B, C, T)


def _layer_norm_over_c(t: torch.Tensor) -> torch.Tensor:
    """LayerNorm on (B, T, C): statistics per position over its C features."""
    return F.layer_norm(t, t.shape[-1:])


def _batch_norm_per_step(t: torch.Tensor) -> torch.Tensor:
    """Recurrent BatchNorm (Cooijmans et al., 2016) on (B, T, C): statistics per channel and time step, over the
    batch only."""
    B, T, C = t.shape
    return F.batch_norm(t.reshape(B, T * C), None, None, training=True).view(B, T, C)


_NORMS_OVER = (("batchnorm", _batch_norm_over_bt), ("layernorm", _layer_norm_over_c))


def batchnorm_future_leak(seed: int = 0) -> dict[str, float]:
    """Change the *last* token of one sequence and measure how much the normalised output at the
    *first* position moves, for BatchNorm (statistics over batch and time) and LayerNorm (over
    features). A causal model must not let a future token change an earlier output."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 16, 32, generator=g)  # (B, T, C)
    changed = x.clone()
    changed[0, -1] = 10 * torch.randn(32, generator=g)

    norms = (*_NORMS_OVER, ("batchnorm per time step", _batch_norm_per_step))
    return {name: float((f(changed)[0, 0] - f(x)[0, 0]).abs().max()) for name, f in norms}


def batchmate_changes_output(seed: int = 0, batch: int = 2) -> dict[str, float]:
    """The batch dependence that even per-time-step BatchNorm keeps: the largest change of a sequence's outputs when
    one batch-mate (the second sequence of a batch of ``batch``, no padding) is redrawn. In a batch of 2 per-step
    BatchNorm's outputs are about +-1 (the sign of the difference of the two sequences), so the change is 0 or 2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, 32, generator=g)
    other = x.clone()
    other[1] = torch.randn(16, 32, generator=g)
    norms = (*_NORMS_OVER, ("batchnorm per time step", _batch_norm_per_step))
    return {name: float((f(other)[0] - f(x)[0]).abs().max()) for name, f in norms}


def padding_changes_output(seed: int = 0) -> dict[str, float]:
    """Normalise the same length-10 sequence alone and inside a batch padded to length 30 with
    zeros; return the largest change of its outputs for BatchNorm and LayerNorm."""
    g = torch.Generator().manual_seed(seed)
    seq = torch.randn(1, 10, 32, generator=g)
    other = torch.randn(1, 30, 32, generator=g)
    padded = torch.cat([torch.cat([seq, torch.zeros(1, 20, 32)], dim=1), other])  # (2, 30, 32)

    return {name: float((f(padded)[0, :10] - f(seq)[0]).abs().max()) for name, f in _NORMS_OVER}


def padding_and_batchmate_parts(seed: int = 0) -> dict[str, dict[str, float]]:
    """padding_changes_output taken apart: the same length-10 sequence normalised alone, then (a) padded with 20
    zeros in a batch of one, (b) next to the first 10 positions of the other sequence, no padding, (c) both, as in
    padding_changes_output. Returns {part: {"batchnorm": change, "layernorm": change}} (largest change of the
    sequence's outputs)."""
    g = torch.Generator().manual_seed(seed)
    seq = torch.randn(1, 10, 32, generator=g)
    other = torch.randn(1, 30, 32, generator=g)
    padded = torch.cat([seq, torch.zeros(1, 20, 32)], dim=1)  # (1, 30, 32)
    inputs = {"padding only (batch of one)": padded, "batch-mate only (no padding)": torch.cat([seq, other[:, :10]]),
              "padding and batch-mate": torch.cat([padded, other])}
    return {part: {name: float((f(t)[0, :10] - f(seq)[0]).abs().max()) for name, f in _NORMS_OVER}
            for part, t in inputs.items()}


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
    """Median milliseconds of forward LayerNorm and RMSNorm on a (rows, cols) float32 tensor, PyTorch's fused ops
    and the plain from-scratch formulas, over ``reps`` calls after 3 warm-up calls (:func:`median_seconds`)."""
    g = torch.Generator().manual_seed(seed)
    x, w, b = torch.randn(rows, cols, generator=g), torch.randn(cols, generator=g), torch.randn(cols, generator=g)

    def ln_scratch(x, w, b):
        centred = x - x.mean(-1, keepdim=True)  # once: written twice it would cost LayerNorm an extra pass
        return centred * torch.rsqrt((centred * centred).mean(-1, keepdim=True) + 1e-5) * w + b

    return {
        "F.layer_norm": 1e3 * median_seconds(lambda: F.layer_norm(x, (cols,), w, b), reps=reps),
        "F.rms_norm": 1e3 * median_seconds(lambda: F.rms_norm(x, (cols,), w, 1e-6), reps=reps),
        "LayerNorm from scratch": 1e3 * median_seconds(ln_scratch, x, w, b, reps=reps),
        "RMSNorm from scratch": 1e3 * median_seconds(rms_norm, x, w, reps=reps),
    }


def norm_time_ratios(rows: int = 4096, cols: int = 1024, reps: int = 30, seed: int = 0) -> dict[str, float]:
    """RMSNorm's forward time over LayerNorm's on a (rows, cols) float32 tensor, timed in interleaved pairs: each
    RMSNorm call right after a LayerNorm call on the same data, so both see the same load from other programs.
    Returns the median of the per-pair ratios, for the from-scratch formulas and for PyTorch's ops."""
    g = torch.Generator().manual_seed(seed)
    x, w, b = torch.randn(rows, cols, generator=g), torch.randn(cols, generator=g), torch.randn(cols, generator=g)

    def ln_scratch():
        centred = x - x.mean(-1, keepdim=True)  # once: written twice it would cost LayerNorm an extra pass
        return centred * torch.rsqrt((centred * centred).mean(-1, keepdim=True) + 1e-5) * w + b

    pairs = {"from scratch": (ln_scratch, lambda: rms_norm(x, w)),
             "PyTorch ops": (lambda: F.layer_norm(x, (cols,), w, b), lambda: F.rms_norm(x, (cols,), w, 1e-6))}
    ratios = {}
    for name, (layer_norm, rms) in pairs.items():
        for _ in range(3):  # warm-up
            layer_norm(), rms()
        per_pair = []
        for _ in range(reps):
            start = perf_counter()
            layer_norm()
            middle = perf_counter()
            rms()
            per_pair.append((perf_counter() - middle) / (middle - start))
        ratios[name] = statistics.median(per_pair)
    return ratios


class OffsetStreamTransformer(TinyTransformer):
    """A TinyTransformer whose residual stream carries a fixed shared offset: ``offset`` is added to every feature
    of every position after the embeddings (a constant along the all-ones direction, not trained). LayerNorm
    subtracts it exactly (LN(x + c1) = LN(x)), so a LayerNorm model computes the same function as without it;
    RMSNorm divides by an RMS the offset inflates. The stress test that lets the centring comparison fail."""

    def __init__(self, config: TransformerConfig, offset: float = 1.0):
        super().__init__(config)
        self.offset = offset

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return super().embed(idx) + self.offset  # (B, T, C)


CENTRING_CACHE = Path(__file__).resolve().parent / "data_files" / "ch03_centring.json"
CENTRING_GRID = dict(depth=4, steps=600, checkpoints=(150, 600), seeds=(0, 1, 2), offsets=(0.03, 1.0), lr=3e-3,
                     init="fixed 0.02")  # the settings of the stored runs (load_centring_runs)


def centring_run(norm: str, offset: float | None, seed: int, *, depth: int = CENTRING_GRID["depth"],
                 steps: int = CENTRING_GRID["steps"], lr: float = CENTRING_GRID["lr"],
                 init: str = CENTRING_GRID["init"]) -> tuple[list[float], TinyTransformer]:
    """One run of :func:`centring_runs`: the Pre-LN stack of ``depth`` blocks with ``norm`` ("layernorm" or
    "rmsnorm"), its stream shifted by ``offset`` (None: no offset), from ``init`` (a name of gradflow.INITS),
    trained ``steps`` AdamW steps at ``lr`` on the Markov chain. Returns the loss of every step and the model."""
    from course_utils.gradflow import init_fields, stack_config
    from course_utils.training import train_markov_lm

    built = []

    def make_model(config):
        built.append(OffsetStreamTransformer(config, offset) if offset else TinyTransformer(config))
        return built[-1]

    config = stack_config("pre", depth, norm=norm, **init_fields(init))
    result = train_markov_lm(config, steps=steps, lr=lr, seed=seed, progress=False, make_model=make_model)
    return result.losses, built[0]


def centring_runs(*, depth: int = CENTRING_GRID["depth"], steps: int = CENTRING_GRID["steps"],
                  checkpoints=CENTRING_GRID["checkpoints"], seeds=CENTRING_GRID["seeds"],
                  offsets=CENTRING_GRID["offsets"], lr: float = CENTRING_GRID["lr"],
                  init: str = CENTRING_GRID["init"]) -> dict:
    """Does LayerNorm's centring matter for the loss? The same Pre-LN stack of ``depth`` blocks (``init``, a name of
    gradflow.INITS) trained on the Markov chain, one run of ``steps`` AdamW steps (constant learning rate, no weight
    decay) per seed (same init draws and batches for every variant), with LayerNorm, RMSNorm, and RMSNorm on
    OffsetStreamTransformer at each of ``offsets`` (LayerNorm's runs with an offset would be identical to its plain
    ones, since it removes the offset exactly): :func:`centring_run` for each.
    Since the learning rate is constant, the loss at an early checkpoint of a long run is the loss of a short run
    of that length. Returns {"checkpoints": [...], "seeds": [...], "loss": {label: {str(checkpoint): [per seed]}},
    "stream_mean": {label: [per seed]}} with the loss the mean of the 20 steps ending at each checkpoint, and
    "stream_mean" (offset runs only) the mean over features and positions of what the trained model's embedding
    puts into the stream (token + position embeddings + the offset): whether the embeddings learned to cancel it;
    and "block_mean" ({label: [per seed: [per block]]}, every variant) the same mean of the stream leaving each
    block (:func:`stream_means`): what the trained blocks do to it, next to what they do without an offset."""
    from course_utils.training import final_loss

    tokens = torch.arange(32)[None, :16]
    variants = [("layernorm", "layernorm", None), ("rmsnorm", "rmsnorm", None)]
    variants += [(f"rmsnorm, offset {offset:g}", "rmsnorm", offset) for offset in offsets]
    out = {"checkpoints": list(checkpoints), "seeds": list(seeds), "loss": {}, "stream_mean": {}, "block_mean": {}}
    for label, norm, offset in variants:
        losses = out["loss"][label] = {str(c): [] for c in checkpoints}
        for seed in seeds:
            run_losses, model = centring_run(norm, offset, seed, depth=depth, steps=steps, lr=lr, init=init)
            for c in checkpoints:
                losses[str(c)].append(final_loss(run_losses[:c]))  # the run as if it had stopped at c
            means = stream_means(model, tokens)
            out["block_mean"].setdefault(label, []).append(means[1:])
            if offset:
                out["stream_mean"].setdefault(label, []).append(means[0])
    return out


def stream_means(model: TinyTransformer, tokens: torch.Tensor) -> list[float]:
    """The mean over features and positions of the residual stream ``model`` (learned positions) computes for
    ``tokens`` (B, T): first what the embeddings write into it, then the stream leaving each block."""
    with torch.no_grad():
        x = model.embed(tokens)
        means = [float(x.mean())]
        for block in model.blocks:
            x = block(x)
            means.append(float(x.mean()))
    return means


CENTRING_LONG_STEPS = 1200  # the stored runs trained on, for whether the offset's gap closes (load_centring_runs)


def centring_long_runs(steps: int = CENTRING_LONG_STEPS, **grid) -> dict:
    """The runs of :func:`centring_runs` trained ``steps`` steps (same seeds, init draws and batches; a constant
    learning rate, so their first 600 steps are the stored runs): ``{"steps": steps, "loss": {label: [per seed]}}``,
    the mean of the last 20 steps' losses. Stored under "long" in ``data_files/ch03_centring.json``."""
    runs = centring_runs(steps=steps, checkpoints=(steps,), **grid)
    return {"steps": steps, "loss": {label: values[str(steps)] for label, values in runs["loss"].items()}}


def save_centring_runs(result: dict, path=CENTRING_CACHE) -> None:
    Path(path).write_text(json.dumps(result, indent=1) + "\n")


def load_centring_runs(path=CENTRING_CACHE) -> dict:
    """The stored result of ``centring_runs()``, with ``centring_long_runs()`` under "long";
    tests/test_claims_ch03.py recomputes both and checks them."""
    return json.loads(Path(path).read_text())


def offset_invariance(offset: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Largest change of the logits at init when the stream gets the shared offset, for a LayerNorm and an
    RMSNorm model (same weights): 0 up to rounding for LayerNorm, large for RMSNorm."""
    from course_utils.gradflow import stack_config

    tokens = torch.randint(0, 32, (4, 16), generator=torch.Generator().manual_seed(seed))
    change = {}
    for norm in ("layernorm", "rmsnorm"):
        torch.manual_seed(seed)
        plain = TinyTransformer(stack_config("pre", 4, norm=norm))
        shifted = OffsetStreamTransformer(stack_config("pre", 4, norm=norm), offset)
        shifted.load_state_dict(plain.state_dict())
        with torch.no_grad():
            change[norm] = float((shifted(tokens)[0] - plain(tokens)[0]).abs().max())
    return change


def attention_logit_growth(weight_scales=(1, 2, 4, 8), *, stream_scales=(1, 50), seed: int = 0) -> list[dict]:
    """Where attention logits come from in a Pre-LN block. Block 0 of a fan-in-initialised TinyTransformer
    (d_model 64, 4 heads of 16) reads LN(x) with x = stream_scale * (token + position embeddings), and W_q, W_k
    are multiplied by weight_scale (what weight growth during training does). For every (stream_scale,
    weight_scale), per head: the largest |logit| q.k/sqrt(hs), the attention entropy as a fraction of its
    maximum ln(t + 1) (mean over positions t >= 1 and the batch), and the same two with QK-norm (RMS-normalised q
    and k, no gain). Returns a list of dicts with keys stream_scale, weight_scale, max_logit, entropy,
    max_logit_qk, entropy_qk (the last four: lists over heads)."""
    torch.manual_seed(seed)
    model = TinyTransformer(TransformerConfig(vocab_size=64, block_size=32, n_layer=1, d_model=64, n_head=4,
                                              init="fan_in"))
    block = model.blocks[0]
    tokens = torch.randint(0, 64, (8, 32), generator=torch.Generator().manual_seed(seed))
    C, nh = 64, 4
    hs = C // nh
    T = tokens.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    max_entropy = torch.log(torch.arange(1, T + 1, dtype=torch.float32))  # ln(t + 1) at position t

    def head_stats(scores):  # scores: (B, nh, T, T)
        scores = scores.masked_fill(~causal, float("-inf"))
        p = torch.softmax(scores, dim=-1)
        ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)  # (B, nh, T)
        frac = (ent[..., 1:] / max_entropy[1:]).mean(dim=(0, 2))  # (nh,)
        top = scores.masked_fill(~causal, 0.0).abs().amax(dim=(0, 2, 3))  # (nh,)
        return [float(v) for v in top], [float(v) for v in frac]

    rows = []
    with torch.no_grad():
        x0 = model.embed(tokens)
        w_q, w_k, _ = block.attn.qkv.weight.split(C, dim=0)
        for stream_scale in stream_scales:
            h = block.ln1(stream_scale * x0)  # (B, T, C): what the attention reads in a Pre-LN block
            for weight_scale in weight_scales:
                q = (h @ (weight_scale * w_q).T).view(-1, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
                k = (h @ (weight_scale * w_k).T).view(-1, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
                top, ent = head_stats(q @ k.transpose(-2, -1) / math.sqrt(hs))
                qn, kn = F.rms_norm(q, (hs,), eps=1e-6), F.rms_norm(k, (hs,), eps=1e-6)
                top_qk, ent_qk = head_stats(qn @ kn.transpose(-2, -1) / math.sqrt(hs))
                rows.append(dict(stream_scale=stream_scale, weight_scale=weight_scale, max_logit=top,
                                 entropy=ent, max_logit_qk=top_qk, entropy_qk=ent_qk))
    return rows


def figure_attention_logit_growth(weight_scales=(1, 2, 4, 8, 16)):
    """Per head: largest attention logit and attention entropy against the growth of W_q and W_k, plain and
    with QK-norm, in a Pre-LN block at stream scale 1."""
    rows = [r for r in attention_logit_growth(weight_scales, stream_scales=(1,))]
    fig, (ax_l, ax_e) = subplots(2, width=10)
    for head in range(len(rows[0]["max_logit"])):
        label = head == 0
        ax_l.plot(weight_scales, [r["max_logit"][head] for r in rows], **series("naive"),
                  label="plain q·k/√d (one line per head)" if label else None)
        ax_l.plot(weight_scales, [r["max_logit_qk"][head] for r in rows], **series("safe"),
                  label="QK-norm (no gain)" if label else None)
        ax_e.plot(weight_scales, [r["entropy"][head] for r in rows], **series("naive"),
                  label="plain" if label else None)
        ax_e.plot(weight_scales, [r["entropy_qk"][head] for r in rows], **series("safe"),
                  label="QK-norm" if label else None)
    ax_l.plot(weight_scales, [rows[0]["max_logit"][0] * s ** 2 for s in weight_scales], "k:", lw=1, label="∝ s²")
    log_scale(ax_l, "xy")
    log_scale(ax_e, "x")
    ax_l.set(xlabel="scale s of W_q and W_k", ylabel="largest |attention logit|",
             title="logits grow with the weights, ∝ s²")
    ax_e.set(xlabel="scale s of W_q and W_k", ylabel="attention entropy / ln(t+1)", ylim=(0, 1.05),
             title="attention collapses toward one key")
    ax_l.legend(fontsize=8)
    ax_e.legend(fontsize=8)
    return fig


# (n_cols, BLOCK, num_warps): the same rows at three warp counts, a row length that is no multiple of 16, and
# rows long enough that one block no longer fits a thread's registers
COMPILE_SETTINGS = [(1024, 1024, 1), (1024, 1024, 4), (1024, 1024, 8), (1000, 1024, 4), (4096, 4096, 4),
                    (16384, 16384, 4), (16384, 16384, 16)]


def rmsnorm_kernel_compiled(kernel, settings=COMPILE_SETTINGS, target: str = "sm_90") -> list[dict]:
    """What Triton's compiler makes of an RMSNorm forward kernel with exercise 3.3's signature at the chapter's
    ``settings``: :func:`course_utils.harness.compiled.rmsnorm_kernel_compiled`, which says what each row holds.
    Needs Triton."""
    from course_utils.harness.compiled import rmsnorm_kernel_compiled

    return rmsnorm_kernel_compiled(kernel, settings, target)


# Pre-LN variants compared in the scale-growth plot; keys are labels.
PRE_LN_VARIANTS = {
    "Pre-LN, no final norm": dict(final_norm=False),
    "+ depth-scaled init": dict(final_norm=False, depth_scaled_init=True),
    "+ final norm": dict(final_norm=True),
}


def pre_ln_scale(depth: int, variant: str, *, init_std: float = 0.1, seed: int = 0, init: str | None = None) -> dict:
    """Residual-stream RMS after each block and the std of the logits, for a Pre-LN TinyTransformer
    at init with one of PRE_LN_VARIANTS. init_std 0.1 (about 1/sqrt(d)) makes the growth visible
    at init; with 0.02 the stream grows as much, relative to its start, but the logits stay small.
    ``init``: a name of gradflow.INITS ("fan-in", "fixed 0.02", "GPT-2"), which then replaces init_std."""
    from course_utils.gradflow import init_fields

    torch.manual_seed(seed)
    fields = init_fields(init) if init is not None else dict(init_std=init_std)
    config = TransformerConfig(vocab_size=64, block_size=16, n_layer=depth, d_model=64, n_head=4,
                               **{**fields, **PRE_LN_VARIANTS[variant]})
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


def figure_pre_ln_scale(depth: int = 24, *, init_std: float = 0.1, seed: int = 0):
    fig, (ax_s, ax_l) = subplots(2, width=10)
    layers = list(range(1, depth + 1))
    keys = ["pre", "online", "post"]  # one style per variant
    logit_stds = []
    for key, variant in zip(keys, PRE_LN_VARIANTS):
        result = pre_ln_scale(depth, variant, init_std=init_std, seed=seed)
        logit_stds.append(result["logit_std"])
        if variant != "+ final norm":  # the final norm acts after the last block: same stream as the first
            label = "Pre-LN (with or without final norm)" if variant.startswith("Pre-LN") else variant
            ax_s.plot(layers, result["stream_rms"], **series(key), label=label)
        if variant.startswith("Pre-LN"):
            first = result["stream_rms"][0]
    ax_s.plot(layers, [first * math.sqrt(layer) for layer in layers], "k:", lw=1, label="∝ √layer")
    log_scale(ax_s)
    ax_s.set(xlabel="block", ylabel="RMS of the residual stream",
             title=f"Pre-LN at init, depth {depth}, init std {init_std:g}")
    ax_s.legend(fontsize=8)
    ax_l.bar(range(3), logit_stds, color=[COLORS[key] for key in keys])
    ax_l.set_xticks(range(3), labels=["none", "depth-scaled", "final norm"])
    ax_l.set(ylabel="std of the logits", title="what reaches the softmax")
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


# ------------------------------------------------------------------ QK-norm in training (problem 2 of section 3.4)

class ProbedAttention(nn.Module):
    """Causal self-attention that reuses a CausalSelfAttention's ``qkv`` and ``proj``, computes the softmax
    explicitly, optionally applies QK-norm per head as Gemma 3 and Qwen 3 do (RMSNorm of each head's q and k with a
    learned gain per channel, initialised to 1; OLMo 2 instead normalises the full q and k width, all heads
    together, before the split into heads), and records, at every forward, the largest |logit| and each head's
    attention entropy as a fraction of its maximum ln(t + 1) (mean over positions t >= 1 and the batch)."""

    def __init__(self, attn: nn.Module, n_head: int, qk_norm: bool):
        super().__init__()
        self.qkv, self.proj, self.n_head, self.qk_norm = attn.qkv, attn.proj, n_head, qk_norm
        head_size = attn.proj.in_features // n_head
        if qk_norm:
            self.q_gain, self.k_gain = nn.Parameter(torch.ones(head_size)), nn.Parameter(torch.ones(head_size))
        self.log: list[tuple[float, list[float]]] = []  # per forward: (largest |logit|, entropy fraction per head)

    def forward(self, x: torch.Tensor, rope=None) -> torch.Tensor:
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in self.qkv(x).split(C, dim=2))  # (B, nh, T, hs)
        if self.qk_norm:
            q, k = F.rms_norm(q, (hs,), self.q_gain, 1e-6), F.rms_norm(k, (hs,), self.k_gain, 1e-6)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        scores = (q @ k.transpose(-2, -1) / math.sqrt(hs)).masked_fill(~causal, float("-inf"))  # (B, nh, T, T)
        p = torch.softmax(scores, dim=-1)
        with torch.no_grad():
            entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)[..., 1:]  # (B, nh, T - 1)
            entropy = entropy / torch.log(torch.arange(2, T + 1, dtype=p.dtype, device=x.device))
            self.log.append((float(scores.detach().masked_fill(~causal, 0.0).abs().max()),
                             entropy.mean(dim=(0, 2)).tolist()))
        y = (p @ v).transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.proj(y)


QK_INITS = {"fixed 0.02": dict(init="gpt"), "fan-in": dict(init="fan_in")}


def qk_norm_run(init: str, lr: float, qk_norm: bool, seed: int, *, steps: int = 150) -> dict:
    """Train a 2-block Pre-LN TinyTransformer (d_model 64, 4 heads) on the Markov chain with AdamW at ``lr``, with
    or without QK-norm, from the ``init`` of QK_INITS. Returns the final loss (mean of the last 20 steps), whether it
    diverged, and at the last step the largest |attention logit| and the entropy fraction of every head (both
    blocks, 8 values: block 0's 4 heads, then block 1's). With QK-norm also "max_gain", the largest |gain| of q or
    k, and "logit_bound", per block sqrt(head size) * max_i |g_q,i g_k,i|, the most any logit of that block can
    reach."""
    from course_utils.training import train_markov_lm

    built = []

    def make_model(config):
        model = TinyTransformer(config)
        for block in model.blocks:
            block.attn = ProbedAttention(block.attn, config.n_head, qk_norm)
        built.append(model)
        return model

    config = TransformerConfig(vocab_size=32, block_size=16, n_layer=2, n_head=4, d_model=64, **QK_INITS[init])
    result = train_markov_lm(config, steps=steps, lr=lr, seed=seed, progress=False, make_model=make_model)
    last = [block.attn.log[-1] for block in built[0].blocks]
    out = {"loss": result.final_loss, "diverged": result.diverged, "max_logit": max(m for m, _ in last),
           "head_entropy": [e for _, heads in last for e in heads]}
    if qk_norm:  # the learned gains at the end: their largest |value| and, per block, the logit bound they allow
        attns = [block.attn for block in built[0].blocks]
        with torch.no_grad():
            out["max_gain"] = max(float(g.abs().max()) for a in attns for g in (a.q_gain, a.k_gain))
            out["logit_bound"] = [math.sqrt(a.q_gain.numel()) * float((a.q_gain * a.k_gain).abs().max())
                                  for a in attns]
    return out


QK_TRAINING_CACHE = Path(__file__).resolve().parent / "data_files" / "ch03_qk_norm_training.json"
QK_GRID = dict(inits=tuple(QK_INITS), lrs=(3e-3, 3e-2, 1e-1), seeds=(0, 1, 2), steps=150)  # the stored grid


def qk_norm_training(*, inits=QK_GRID["inits"], lrs=QK_GRID["lrs"], seeds=QK_GRID["seeds"],
                     steps: int = QK_GRID["steps"], progress: bool = True) -> list[dict]:
    """qk_norm_run over init x lr x QK-norm x seed: a list of dicts with those four keys and the run's results.
    36 runs, about a minute on 2 cores; the notebook loads the stored result (load_qk_norm_training)."""
    from tqdm.auto import tqdm

    grid = [(i, lr, qk, seed) for i in inits for lr in lrs for qk in (False, True) for seed in seeds]
    return [dict(init=i, lr=lr, qk_norm=qk, seed=seed, **qk_norm_run(i, lr, qk, seed, steps=steps))
            for i, lr, qk, seed in tqdm(grid, disable=not progress, leave=False, desc="init x lr x QK-norm x seed")]


def save_qk_norm_training(rows: list[dict], path=QK_TRAINING_CACHE) -> None:
    Path(path).write_text(json.dumps(rows, indent=1) + "\n")


def load_qk_norm_training(path=QK_TRAINING_CACHE) -> list[dict]:
    """The stored result of ``qk_norm_training()``; tests/test_claims_ch03.py recomputes it and checks it."""
    return json.loads(Path(path).read_text())


def qk_norm_summary(rows: list[dict]) -> dict:
    """{(init, lr, qk_norm): {"min_entropy": per seed the smallest head entropy fraction, "max_logit": per seed,
    "loss": per seed}} from qk_norm_training's rows."""
    out = {}
    for r in rows:
        cell = out.setdefault((r["init"], r["lr"], r["qk_norm"]), {"min_entropy": [], "max_logit": [], "loss": []})
        cell["min_entropy"].append(min(r["head_entropy"]))
        cell["max_logit"].append(r["max_logit"])
        cell["loss"].append(r["loss"])
    return out


def figure_qk_norm_training(rows: list[dict]):
    """Per init: the smallest head's attention entropy at the end of training against the learning rate, mean of
    the seeds with their range as a band, without and with QK-norm."""
    summary = qk_norm_summary(rows)
    inits = list(dict.fromkeys(r["init"] for r in rows))
    lrs = sorted({r["lr"] for r in rows})
    fig, axes = subplots(len(inits), width=5 * len(inits), sharey=True)
    for ax, init in zip(axes, inits):
        for qk, key, label in ((False, "naive", "plain"), (True, "safe", "QK-norm (learned gains)")):
            values = [summary[(init, lr, qk)]["min_entropy"] for lr in lrs]
            mean = [sum(v) / len(v) for v in values]
            ax.plot(lrs, mean, **series(key), label=label)
            ax.fill_between(lrs, [min(v) for v in values], [max(v) for v in values], color=COLORS[key], alpha=0.2,
                            lw=0)
        log_scale(ax, "x")
        ax.set(xlabel="AdamW learning rate", ylim=(0, 1), title=f"{init} init, after 150 steps (band: 3 seeds)")
    axes[0].set_ylabel("smallest head's attention entropy / ln(t+1)")
    axes[0].legend()
    return fig
