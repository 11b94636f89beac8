"""Notebook 02: initialisation."""
import functools
import math

import torch
import torch.nn as nn

from course_utils.harness.exercises import Case, ContractError, Exercise, Mistake
from course_utils.initialization import WidthMLP
from course_utils.models import TinyTransformer, TransformerConfig, gpt_init_
from course_utils.optim import value_per_parameter

CHAPTER = "2. Initialization (초기화 전략)"

__all__ = ["xavier_uniform", "kaiming_normal", "gpt_init_", "tie_weights", "mup_param_groups"]


# ------------------------------------------------------------- statistics of a random initialiser

SAMPLE_STATISTICS = ("std * sqrt(fan_in + fan_out) of your weights", "kurtosis of your weights (uniform 1.8, normal 3)",
                     "mean / std of your weights")


def _sample_statistics(fn, *args):
    """Run an initialiser and summarise its sample: (std * sqrt(fan_in + fan_out), kurtosis, mean / std).

    The first is scaled to be of order 1, so one tolerance fits all cases. A uniform distribution
    has kurtosis 1.8, a normal 3.0: with ~10^5 samples the estimate is good to about 0.02, so it
    tells the two apart; std and mean are good to well under 1%."""
    torch.manual_seed(0)
    w = fn(*args)
    fan_out, fan_in = args[0], args[1]
    if not isinstance(w, torch.Tensor):
        raise ContractError(f"expected a torch.Tensor, got {type(w).__name__}")
    if tuple(w.shape) != (fan_out, fan_in):
        raise ContractError(f"expected shape (fan_out, fan_in) = {(fan_out, fan_in)}, got {tuple(w.shape)}")
    if w.dtype != torch.float32:
        raise ContractError(f"expected a float32 weight (the contract), got {w.dtype}: the next cells build float32 "
                            "layers with it. torch.empty/randn give float32; avoid .double() and numpy float64.")
    w = w.detach().double()
    std = w.std()
    kurtosis = ((w - w.mean()) ** 4).mean() / std ** 4
    return std * math.sqrt(fan_in + fan_out), kurtosis, w.mean() / std


STAT_TOLERANCE = {torch.float64: (0.03, 0.03)}  # sampling noise of std/kurtosis/mean at ~10^5 samples


# ---------------------------------------------------------------------------- 2.1 Xavier uniform

def xavier_uniform(fan_out, fan_in, gain=1.0):
    """A new (fan_out, fan_in) float32 weight with Glorot & Bengio's uniform initialisation (2010, "Understanding
    the difficulty of training deep feedforward neural networks", their normalised initialisation; PyTorch's
    nn.init.xavier_uniform_ with the same ``gain``).

    It draws from a uniform distribution centred on 0 whose variance is gain^2 times the compromise between
    keeping the forward variance (which needs Var W = 1/fan_in) and the backward variance (Var W = 1/fan_out).
    hint("2.1") derives the bound, one step per call.
    """
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return torch.empty(fan_out, fan_in).uniform_(-bound, bound)


def _xavier_cases():
    return [
        Case("256 -> 1024 (fan_out, fan_in) = (1024, 256)", (1024, 256)),
        Case("square 512 x 512", (512, 512)),
        Case("512 -> 128 (fan_out, fan_in) = (128, 512), gain 5/3 (tanh)", (128, 512, 5 / 3)),
        Case("tall 2048 x 64", (2048, 64)),
    ]


EX_2_1 = Exercise(
    id="2.1", title="Xavier/Glorot uniform", reference=xavier_uniform, cases=_xavier_cases,
    hints=("The compromise is the harmonic mean of the two variances: Var W = 2 / (fan_in + fan_out).",
           "U(-a, a) has variance a**2 / 3: solve a**2 / 3 = gain**2 * 2 / (fan_in + fan_out) for a.",
           "a = gain * sqrt(6 / (fan_in + fan_out)); torch.empty(fan_out, fan_in).uniform_(-a, a)."),
    call=_sample_statistics, tolerances=STAT_TOLERANCE, output_names=SAMPLE_STATISTICS,
    mistakes=(
        Mistake("normal instead of uniform", lambda o, i, gain=1.0: torch.randn(o, i) * gain * math.sqrt(
            2 / (i + o)),
                "Right variance, wrong shape: this asks for a *uniform* U(-a, a); its kurtosis is 1.8, "
                "a normal's 3."),
        Mistake("gain ignored", lambda o, i, gain=1.0: torch.empty(o, i).uniform_(
            -math.sqrt(6 / (i + o)), math.sqrt(6 / (i + o))),
                "Multiply the bound by `gain` (5/3 for tanh, sqrt(2) for ReLU)."),
        Mistake("variance used as bound", lambda o, i, gain=1.0: torch.empty(o, i).uniform_(
            -gain * math.sqrt(2 / (i + o)), gain * math.sqrt(2 / (i + o))),
                "U(-a, a) has variance a²/3, so the bound for variance 2/(fan_in+fan_out) is "
                "sqrt(6/(fan_in+fan_out))."),
        Mistake("fan_in only", lambda o, i, gain=1.0: torch.empty(o, i).uniform_(
            -gain * math.sqrt(3 / i), gain * math.sqrt(3 / i)),
                "That is LeCun's fan_in rule; Xavier averages both fans: Var W = 2 / (fan_in + fan_out)."),
    ),
)


# ---------------------------------------------------------------------------- 2.2 Kaiming normal

def kaiming_normal(fan_out, fan_in, mode="fan_in", nonlinearity="relu"):
    """A new (fan_out, fan_in) float32 weight with He et al.'s normal initialisation (2015, "Delving Deep into
    Rectifiers"; PyTorch's nn.init.kaiming_normal_ with the same ``mode`` and ``nonlinearity``).

    mode "fan_in" keeps the forward activations' variance from layer to layer, "fan_out" the backward
    gradients'. nonlinearity is "relu", "linear" or "tanh", with PyTorch's gains (nn.init.calculate_gain).
    hint("2.2") gives the pieces, one per call.
    """
    gain = {"relu": math.sqrt(2.0), "linear": 1.0, "tanh": 5.0 / 3.0}[nonlinearity]
    fan = fan_in if mode == "fan_in" else fan_out
    return torch.randn(fan_out, fan_in) * (gain / math.sqrt(fan))


def _kaiming_cases():
    return [
        Case("fan_in mode, ReLU, 256 x 1024", (256, 1024)),
        Case("fan_out mode, ReLU, 256 x 1024", (256, 1024, "fan_out")),
        Case("fan_in mode, linear, 512 x 128", (512, 128, "fan_in", "linear")),
        Case("fan_out mode, tanh, 128 x 1024", (128, 1024, "fan_out", "tanh")),
    ]


EX_2_2 = Exercise(
    id="2.2", title="He/Kaiming normal", reference=kaiming_normal, cases=_kaiming_cases,
    hints=("fan is fan_in in mode 'fan_in' and fan_out in mode 'fan_out'; the weight's shape is (fan_out, fan_in).",
           "The gains: ReLU zeroes half of its inputs, halving the second moment, so sqrt(2); 'linear' 1; "
           "'tanh' 5/3.",
           "std = gain / sqrt(fan); torch.randn(fan_out, fan_in) * std."),
    call=_sample_statistics, tolerances=STAT_TOLERANCE, output_names=SAMPLE_STATISTICS,
    mistakes=(
        Mistake("mode ignored", lambda o, i, mode="fan_in", nonlinearity="relu": torch.randn(o, i) * (
            {"relu": math.sqrt(2), "linear": 1.0, "tanh": 5 / 3}[nonlinearity] / math.sqrt(i)),
                "mode='fan_out' divides by sqrt(fan_out) (the number of rows), not fan_in."),
        Mistake("no ReLU gain", lambda o, i, mode="fan_in", nonlinearity="relu": torch.randn(o, i) / math.sqrt(
            i if mode == "fan_in" else o) * {"relu": 1.0, "linear": 1.0, "tanh": 5 / 3}[nonlinearity],
                "ReLU zeroes half its inputs, halving the second moment: the gain is sqrt(2)."),
        Mistake("gain on the variance", lambda o, i, mode="fan_in", nonlinearity="relu": torch.randn(o, i) *
            math.sqrt({"relu": math.sqrt(2), "linear": 1.0, "tanh": 5 / 3}[nonlinearity] /
                      (i if mode == "fan_in" else o)),
                "The gain multiplies the standard deviation: std = gain / sqrt(fan), i.e. variance = gain² / fan."),
    ),
)


# ------------------------------------------------------------------------------- 2.3 GPT-2 init

def _init_statistics(fn, n_layer, std, depth_scaled):
    """Scramble a TinyTransformer's Linear and Embedding parameters, apply ``fn``, and summarise each
    parameter by "50 * std of <name>" and "16 * mean of <name>" (a dict, so a failure names the
    parameter). The factors put both statistics on a
    scale where one tolerance fits: 50 * std is about 1 for GPT-sized weights, and the sampling noise of
    16 * mean over 4096 values is below 0.01, so a constant offset (biases not zeroed) stands out while
    two correct answers drawing different random numbers agree."""
    torch.manual_seed(0)
    model = TinyTransformer(TransformerConfig(n_layer=n_layer, d_model=64, bias=True))
    with torch.no_grad():
        for module in model.modules():  # so that an initialiser that skips a parameter is seen
            if isinstance(module, (nn.Linear, nn.Embedding)):
                for p in module.parameters():
                    p.uniform_(-1.0, 1.0)
    fn(model, std, depth_scaled)
    stats = {}
    for name, p in model.named_parameters():
        stats[f"50 * std of {name}"] = 50 * p.detach().double().std()
        stats[f"16 * mean of {name}"] = 16 * p.detach().double().mean()
    return stats


def _gpt_cases():
    return [
        Case("4 blocks, std 0.02, depth-scaled", (4, 0.02, True)),
        Case("8 blocks, std 0.02, depth-scaled", (8, 0.02, True)),
        Case("2 blocks, std 0.03, not depth-scaled", (2, 0.03, False)),
        Case("1 block, std 0.02, depth-scaled", (1, 0.02, True)),
    ]


def _gpt_variant(model, std=0.02, depth_scaled=True, *, scale_all=False, two=2, zero_bias=True,
                 embeddings=True):
    """The reference with one realistic slip switched on (for the mistakes below)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            residual = scale_all or name.endswith("attn.proj") or name.endswith("mlp.down")
            scale = 1 / math.sqrt(two * len(model.blocks)) if depth_scaled and residual else 1.0
            nn.init.normal_(module.weight, std=std * scale)
            if zero_bias and module.bias is not None:
                nn.init.zeros_(module.bias)
        elif embeddings and isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)


_gpt_scale_everything = functools.partial(_gpt_variant, scale_all=True)
_gpt_sqrt_l = functools.partial(_gpt_variant, two=1)
_gpt_keeps_biases = functools.partial(_gpt_variant, zero_bias=False)
_gpt_linear_only = functools.partial(_gpt_variant, embeddings=False)


EX_2_3 = Exercise(
    id="2.3", title="GPT-2 init with depth scaling by name", reference=gpt_init_, cases=_gpt_cases,
    call=_init_statistics, tolerances={torch.float64: (0.06, 0.06)},  # sampling noise of 4096-value statistics
    mistakes=(
        Mistake("every Linear depth-scaled", _gpt_scale_everything,
                "Only the projections that write into the residual stream (attn.proj, mlp.down) get 1/sqrt(2L)."),
        Mistake("1/sqrt(L)", _gpt_sqrt_l,
                "Each block adds to the residual stream twice (attention and MLP): scale by 1/sqrt(2 * n_layer)."),
        Mistake("biases kept", _gpt_keeps_biases, "Set every Linear bias to zero."),
        Mistake("embeddings skipped", _gpt_linear_only,
                "nn.Embedding weights (tokens and positions) get N(0, std²) too."),
    ),
)


# ---------------------------------------------------------------------------- 2.4 weight tying

def tie_weights(model):
    """Tie the LM head to the token embedding, in place, so that both use one (vocab, d_model) matrix.

    model: a TinyTransformer; tok_emb.weight and lm_head.weight are both (vocab, d_model). Afterwards the model
    has one parameter fewer, the shared matrix holds the embedding's values (the head's own initial matrix is
    dropped), and one backward pass leaves the sum of both uses' gradients on it. Returns nothing.
    """
    model.lm_head.weight = model.tok_emb.weight


def _tying_statistics(fn, vocab, d_model):
    """What ``fn`` did to a fresh model, by name: one Parameter, one memory, the number of parameters, whether both
    uses get a gradient, and whether the shared matrix holds the embedding's values (tying the other way round keeps
    the head's and loses the embedding's)."""
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=vocab, d_model=d_model, n_layer=1, block_size=8)
    model = TinyTransformer(config)
    embedding = model.tok_emb.weight.detach().clone()
    fn(model)
    same = model.lm_head.weight is model.tok_emb.weight
    shared = model.lm_head.weight.data_ptr() == model.tok_emb.weight.data_ptr()
    kept = isinstance(model.tok_emb, nn.Embedding) and torch.equal(model.tok_emb.weight.detach(), embedding)
    tokens = torch.randint(0, vocab, (2, 8), generator=torch.Generator().manual_seed(1))
    try:
        model(tokens, tokens.roll(-1, 1))[1].backward()
        trains = model.tok_emb.weight.grad is not None and model.lm_head.weight.grad is not None
    except Exception:  # e.g. the whole head module replaced by the embedding module
        trains = False
    return {"lm_head.weight is tok_emb.weight": torch.tensor(float(same)),
            "one memory": torch.tensor(float(shared)),
            "number of parameters": torch.tensor(float(len(list(model.parameters())))),
            "both uses get a gradient": torch.tensor(float(trains)),
            "the matrix holds the embedding's values": torch.tensor(float(kept))}


def _tie_by_copy(model):
    model.lm_head.weight = nn.Parameter(model.tok_emb.weight.detach().clone())


def _tie_by_data(model):
    model.lm_head.weight.data = model.tok_emb.weight.data


def _tie_wrong_way(model):
    model.tok_emb.weight = model.lm_head.weight


def _tie_modules(model):
    model.lm_head = model.tok_emb


def _tying_cases():
    return [Case("vocab 64, d_model 64", (64, 64)), Case("vocab 100, d_model 32", (100, 32)),
            Case("vocab 7, d_model 16", (7, 16)), Case("vocab 512, d_model 128", (512, 128))]


EX_2_4 = Exercise(
    id="2.4", title="weight tying", reference=tie_weights, cases=_tying_cases, call=_tying_statistics,
    mistakes=(
        Mistake("copied", _tie_by_copy,
                "A copy starts equal but trains apart: assign the same nn.Parameter object "
                "(model.lm_head.weight = model.tok_emb.weight)."),
        Mistake("shared .data", _tie_by_data,
                "Sharing .data keeps two Parameters: each gets only its own gradient and the optimizer "
                "updates the memory twice. Assign the Parameter itself."),
        Mistake("tied the other way round", _tie_wrong_way,
                "Both names now hold the LM head's matrix and the embedding's values are gone: assign the "
                "embedding's Parameter to the head (model.lm_head.weight = model.tok_emb.weight), not the "
                "reverse."),
        Mistake("module swapped", _tie_modules,
                "Share the weight, not the module: an nn.Embedding looks tokens up, it cannot map vectors "
                "to logits. model.lm_head.weight = model.tok_emb.weight."),
    ),
)


# ------------------------------------------------------------------------------- 2.5 μP for Adam

def mup_param_groups(model, base_lr, base_width):
    """Adam parameter groups for a WidthMLP under μP (maximal update parameterisation).

    model: a WidthMLP with layers ``input`` (d_in -> width), ``hidden`` (width -> width) and
    ``output`` (width -> classes) and attribute ``width``; base_lr: the rate tuned at width ``base_width``.
    Returns a list of dicts {"params": [...], "lr": ...} covering every parameter exactly once, each layer's
    rate set by section 2.6's rule; at width == base_width every rate is base_lr.
    """
    ratio = base_width / model.width
    return [
        {"params": list(model.input.parameters()), "lr": base_lr},
        {"params": list(model.hidden.parameters()) + list(model.output.parameters()), "lr": base_lr * ratio},
    ]


def _lr_per_parameter(fn, width, base_lr, base_width):
    model = WidthMLP(width)
    groups = fn(model, base_lr, base_width)  # outside the try: an error in the learner's code is shown as theirs
    try:
        lr_of = value_per_parameter(model, groups, "lr")
    except ValueError as exc:  # the groups torch.optim would refuse, or that leave a parameter out
        raise ContractError(str(exc)) from None
    return {f"lr of {name}": torch.tensor(lr, dtype=torch.float64) for name, lr in lr_of.items()}


def _mup_cases():
    return [Case("width 128, base 32", (128, 1e-2, 32)), Case("width 512, base 32", (512, 3e-3, 32)),
            Case("width 32 = base width", (32, 1e-2, 32)), Case("width 64, base 256", (64, 1e-3, 256))]


def _mup_all_scaled(model, base_lr, base_width):
    return [{"params": list(model.parameters()), "lr": base_lr * base_width / model.width}]


def _mup_sqrt(model, base_lr, base_width):
    ratio = math.sqrt(base_width / model.width)
    return [{"params": list(model.input.parameters()), "lr": base_lr},
            {"params": list(model.hidden.parameters()) + list(model.output.parameters()), "lr": base_lr * ratio}]


def _mup_inverted(model, base_lr, base_width):
    ratio = model.width / base_width
    return [{"params": list(model.input.parameters()), "lr": base_lr},
            {"params": list(model.hidden.parameters()) + list(model.output.parameters()), "lr": base_lr * ratio}]


EX_2_5 = Exercise(
    id="2.5", title="μP learning rates per parameter group", reference=mup_param_groups, cases=_mup_cases,
    call=_lr_per_parameter,
    mistakes=(
        Mistake("input layer scaled too", _mup_all_scaled,
                "The input layer's fan_in (d_in) does not grow with width: keep its learning rate at base_lr."),
        Mistake("square root", _mup_sqrt,
                "For Adam, μP scales hidden and output learning rates by base_width / width, not its square root."),
        Mistake("inverted ratio", _mup_inverted,
                "Wider layers need *smaller* steps: multiply by base_width / width."),
    ),
)


EXERCISES = [EX_2_1, EX_2_2, EX_2_3, EX_2_4, EX_2_5]
