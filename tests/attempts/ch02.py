"""Attempts at chapter 2: Xavier, Kaiming, GPT-2 init, weight tying, μP learning rates."""
import math

import torch
import torch.nn as nn

# ------------------------------------------------------------------------------------------------ 2.1

def xavier_not_centred(fan_out, fan_in, gain=1.0):
    """Slip: torch.rand draws from U(0, 1), so the weights run from 0 to the bound instead of -a to a."""
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return torch.rand(fan_out, fan_in) * bound


def xavier_transposed_shape(fan_out, fan_in, gain=1.0):
    """Slip: the weight built as (fan_in, fan_out), the transpose of nn.Linear's layout."""
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return torch.empty(fan_in, fan_out).uniform_(-bound, bound)


def xavier_float64(fan_out, fan_in, gain=1.0):
    """Slip: builds the weight in float64."""
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return torch.empty(fan_out, fan_in, dtype=torch.float64).uniform_(-bound, bound)


def xavier_from_rand(fan_out, fan_in, gain=1.0):
    """Correct: U(-a, a) as (2 U(0, 1) - 1) a."""
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return (2 * torch.rand(fan_out, fan_in) - 1) * bound


# ------------------------------------------------------------------------------------------------ 2.2

def kaiming_relu_gain_always(fan_out, fan_in, mode="fan_in", nonlinearity="relu"):
    """Slip: the ReLU gain sqrt(2) for every nonlinearity."""
    fan = fan_in if mode == "fan_in" else fan_out
    return torch.randn(fan_out, fan_in) * (math.sqrt(2.0) / math.sqrt(fan))


def kaiming_uniform(fan_out, fan_in, mode="fan_in", nonlinearity="relu"):
    """Slip: right variance, but a uniform distribution (kaiming_uniform_'s) instead of a normal."""
    gain = {"relu": math.sqrt(2.0), "linear": 1.0, "tanh": 5.0 / 3.0}[nonlinearity]
    fan = fan_in if mode == "fan_in" else fan_out
    bound = gain * math.sqrt(3.0 / fan)
    return torch.empty(fan_out, fan_in).uniform_(-bound, bound)


def kaiming_no_sqrt(fan_out, fan_in, mode="fan_in", nonlinearity="relu"):
    """Slip: divides by fan instead of sqrt(fan)."""
    gain = {"relu": math.sqrt(2.0), "linear": 1.0, "tanh": 5.0 / 3.0}[nonlinearity]
    fan = fan_in if mode == "fan_in" else fan_out
    return torch.randn(fan_out, fan_in) * gain / fan


def kaiming_with_torch_init(fan_out, fan_in, mode="fan_in", nonlinearity="relu"):
    """Correct: PyTorch's initialiser on an empty weight."""
    return nn.init.kaiming_normal_(torch.empty(fan_out, fan_in), mode=mode, nonlinearity=nonlinearity)


# ------------------------------------------------------------------------------------------------ 2.3

def gpt_init_every_parameter(model, std=0.02, depth_scaled=True):
    """Slip: initialises every parameter with a normal, norm gains and biases included."""
    n_layer = len(model.blocks)
    for name, p in model.named_parameters():
        residual = name.endswith("attn.proj.weight") or name.endswith("mlp.down.weight")
        scale = 1 / math.sqrt(2 * n_layer) if depth_scaled and residual else 1.0
        nn.init.normal_(p, std=std * scale)


def gpt_init_variance_as_std(model, std=0.02, depth_scaled=True):
    """Slip: passes the variance std**2 where nn.init.normal_ takes the standard deviation."""
    n_layer = len(model.blocks)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            residual = name.endswith("attn.proj") or name.endswith("mlp.down")
            scale = 1 / (2 * n_layer) if depth_scaled and residual else 1.0
            nn.init.normal_(module.weight, std=std ** 2 * scale)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std ** 2)


def gpt_init_depth_from_config(model, std=0.02, depth_scaled=True):
    """Slip: scales by 1/sqrt(2 * 12), GPT-2 small's depth, whatever the model's."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            residual = name.endswith("attn.proj") or name.endswith("mlp.down")
            nn.init.normal_(module.weight, std=std / math.sqrt(2 * 12) if depth_scaled and residual else std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)


def gpt_init_by_parameter_name(model, std=0.02, depth_scaled=True):
    """Correct: the same rule, chosen from named_parameters."""
    n_layer = len(model.blocks)
    linear = {f"{n}.weight" for n, mod in model.named_modules() if isinstance(mod, nn.Linear)}
    embedding = {f"{n}.weight" for n, mod in model.named_modules() if isinstance(mod, nn.Embedding)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in linear:
                deep = depth_scaled and name.endswith(("attn.proj.weight", "mlp.down.weight"))
                p.normal_(0.0, std / math.sqrt(2 * n_layer) if deep else std)
            elif name in embedding:
                p.normal_(0.0, std)
            elif name.endswith("bias") and name[: -len("bias")] + "weight" in linear:
                p.zero_()


# ------------------------------------------------------------------------------------------------ 2.4

def tie_new_parameter(model):
    """Slip: wraps the embedding's weight in a new nn.Parameter: one memory, but two Parameters."""
    model.lm_head.weight = nn.Parameter(model.tok_emb.weight)


def tie_transposed(model):
    """Slip: thinks the head needs the transpose (the head is (vocab, d_model) already)."""
    model.lm_head.weight = nn.Parameter(model.tok_emb.weight.t())


# ------------------------------------------------------------------------------------------------ 2.5

def mup_integer_ratio(model, base_lr, base_width):
    """Slip: integer division base_width // width, which is 0 once width > base_width."""
    ratio = base_width // model.width
    return [{"params": list(model.input.parameters()), "lr": base_lr},
            {"params": list(model.hidden.parameters()) + list(model.output.parameters()), "lr": base_lr * ratio}]


def mup_output_not_scaled(model, base_lr, base_width):
    """Slip: scales the hidden layer only; the output layer keeps base_lr."""
    ratio = base_width / model.width
    return [{"params": list(model.input.parameters()) + list(model.output.parameters()), "lr": base_lr},
            {"params": list(model.hidden.parameters()), "lr": base_lr * ratio}]


def mup_hidden_in_both_groups(model, base_lr, base_width):
    """Slip: a copy-pasted group list that puts the hidden layer in both groups."""
    ratio = base_width / model.width
    return [{"params": list(model.input.parameters()) + list(model.hidden.parameters()), "lr": base_lr},
            {"params": list(model.hidden.parameters()) + list(model.output.parameters()), "lr": base_lr * ratio}]


def mup_one_group_per_layer(model, base_lr, base_width):
    """Correct: three groups, one per layer."""
    return [{"params": list(layer.parameters()), "lr": base_lr * (1.0 if layer is model.input else
                                                                  base_width / model.width)}
            for layer in (model.input, model.hidden, model.output)]


ATTEMPTS = [
    ("2.1", xavier_not_centred, "U(0, a) instead of U(-a, a)", ("Also wrong: mean / std of your weights (expected",)),
    ("2.1", xavier_transposed_shape, "shape (fan_in, fan_out)",
     ("expected shape (fan_out, fan_in) = (1024, 256), got (256, 1024)",)),
    ("2.1", xavier_float64, "float64 weight", ("got torch.float64",)),
    ("2.1", xavier_from_rand, None, ()),
    ("2.2", kaiming_relu_gain_always, "ReLU gain for every nonlinearity", ("(about 1.4 times the answer)",)),
    ("2.2", kaiming_uniform, "uniform instead of normal", ("kurtosis of your weights (uniform 1.8, normal 3)",)),
    ("2.2", kaiming_no_sqrt, "divided by fan, not sqrt(fan)", ("(about 0.031 times the answer)",)),
    ("2.2", kaiming_with_torch_init, None, ()),
    ("2.3", gpt_init_every_parameter, "norm gains and biases drawn from a normal",
     ("50 * std of blocks.0.ln1.weight: expected 0",)),
    ("2.3", gpt_init_variance_as_std, "variance passed as std", ("(about 0.02 times the answer)",)),
    ("2.3", gpt_init_depth_from_config, "depth 12 hard-coded", ("50 * std of blocks.0.attn.proj.weight",)),
    ("2.3", gpt_init_by_parameter_name, None, ()),
    ("2.4", tie_new_parameter, "a new Parameter around the same memory",
     ("lm_head.weight is tok_emb.weight: expected 1, got 0", "Assign the Parameter itself")),
    ("2.4", tie_transposed, "a Parameter of the transpose", ("lm_head.weight is tok_emb.weight: expected 1, got 0",)),
    ("2.5", mup_integer_ratio, "integer division of the widths", ()),
    ("2.5", mup_output_not_scaled, "output layer not scaled", ("lr of output.weight: expected 0.0025, got 0.01",)),
    ("2.5", mup_hidden_in_both_groups, "hidden layer in two groups", ("hidden.weight is in more than one group",)),
    ("2.5", mup_one_group_per_layer, None, ()),
]
