"""Notebook 05: optimization. The answers are building blocks, so they live in course_utils."""

import torch
import torch.nn.functional as F

from course_utils.harness.exercises import Case, ContractError, Exercise, KernelReference, Mistake
from course_utils.harness.launchers import launch_adamw_kernel
from course_utils.models import TinyTransformer, TransformerConfig
from course_utils.optim import (
    adam_l2_update,
    adamw_update,
    describe_groups,
    factored_second_moment,
    weight_decay_groups,
)
from course_utils.runtime import import_triton
from course_utils.training import accumulate_gradients

triton, tl = import_triton()

CHAPTER = "5. Optimization (최적화 알고리즘 심화)"

__all__ = ["adamw_update", "weight_decay_groups", "accumulate_gradients", "factored_second_moment", "adamw_kernel"]  # noqa: F822  (adamw_kernel: module __getattr__)


# ------------------------------------------------------------------------------- 5.1 AdamW step


def _adamw_no_bias_correction(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    return p * (1 - lr * weight_decay) - lr * m / (v.sqrt() + eps), m, v


def _adamw_eps_inside_sqrt(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return p * (1 - lr * weight_decay) - lr * m_hat / (v_hat + eps).sqrt(), m, v


def _adamw_sqrt_of_correction_missing(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    denom = v.sqrt() / (1 - beta2 ** step) + eps
    return p * (1 - lr * weight_decay) - lr / (1 - beta1 ** step) * m / denom, m, v


def _adamw_decay_after_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    p, m, v = adamw_update(p, g, m, v, step, lr, beta1, beta2, eps, 0.0)
    return p * (1 - lr * weight_decay), m, v


def _adamw_cases():
    gen = torch.Generator().manual_seed(50)

    def moments(shape, scale):
        return scale * torch.randn(shape, generator=gen), (scale * torch.randn(shape, generator=gen)) ** 2

    m7, v7 = moments((7,), 0.1)
    m3, v3 = moments((3, 4), 1.0)
    return [
        Case("step 1 from zero moments", (torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen),
                                          torch.zeros(5, 3), torch.zeros(5, 3), 1, 1e-2, 0.9, 0.999, 1e-8, 0.1)),
        Case("step 3, beta2 = 0.95, large lr and decay", (torch.randn(7, generator=gen), torch.randn(7, generator=gen),
                                                          m7, v7, 3, 0.5, 0.9, 0.95, 1e-8, 0.5)),
        Case("tiny gradients (eps matters)", (torch.randn(6, generator=gen), 1e-7 * torch.randn(6, generator=gen),
                                              torch.zeros(6), torch.zeros(6), 1, 1.0, 0.9, 0.999, 1e-8, 0.0)),
        Case("beta1 = 0.5, eps = 1e-3, step 2 (every argument used)",
             (torch.randn(4, generator=gen), 1e-3 * torch.randn(4, generator=gen), *moments((4,), 1e-3), 2, 0.1, 0.5,
              0.99, 1e-3, 0.01)),
        Case("step 1000, no decay (Adam)", (torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen),
                                            m3, v3, 1000, 1e-3, 0.9, 0.999, 1e-8, 0.0)),
        Case("zero gradient at step 1", (torch.ones(4), torch.zeros(4), torch.zeros(4), torch.zeros(4),
                                         1, 0.1, 0.9, 0.999, 1e-8, 0.1)),
    ]


EX_5_1 = Exercise(
    id="5.1", title="AdamW step from scratch", reference=adamw_update, cases=_adamw_cases,
    hints=("Update the moments first: exponential moving averages of g and of g**2, with weights beta1 and beta2 "
           "on the old values.",
           "Bias correction divides each moment by (1 - beta**step): at step 1 that undoes the pull towards the "
           "zero start.",
           "The decay multiplies p by (1 - lr * weight_decay) before the Adam step.",
           "p = p * (1 - lr * wd) - lr * m_hat / (sqrt(v_hat) + eps), with m_hat = m / (1 - beta1**step) and "
           "v_hat = v / (1 - beta2**step); m = beta1 * m + (1 - beta1) * g, v = beta2 * v + (1 - beta2) * g**2."),
    output_names=("p", "m", "v"),
    mistakes=(
        Mistake("no bias correction", _adamw_no_bias_correction,
                "Divide m by (1 - beta1**step) and v by (1 - beta2**step): at step 1 the raw moments are "
                "(1 - beta) times too small, and the first updates come out wrong."),
        Mistake("L2 instead of decoupled decay", adam_l2_update,
                "That is Adam + L2: weight_decay * p added to the gradient goes through m and 1/sqrt(v). "
                "AdamW multiplies p by (1 - lr * weight_decay) and leaves the moments alone."),
        Mistake("eps inside the square root", _adamw_eps_inside_sqrt,
                "torch adds eps *after* the square root: sqrt(v_hat) + eps. sqrt(v_hat + eps) differs "
                "when gradients are tiny."),
        Mistake("v's correction without the square root", _adamw_sqrt_of_correction_missing,
                "v_hat = v / (1 - beta2**step) sits under the square root: divide sqrt(v) by "
                "sqrt(1 - beta2**step), not by (1 - beta2**step)."),
        Mistake("decay after the update", _adamw_decay_after_update,
                "Decay the parameter from *before* this step: p * (1 - lr * wd) - lr * update, not "
                "(p - lr * update) * (1 - lr * wd)."),
    ),
)


# ------------------------------------------------------------------------ 5.2 decay groups

def _groups_by_dim(model, weight_decay):  # nanoGPT's rule: every tensor with 2+ dims decays
    params = list({id(p): p for p in model.parameters()}.values())
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def _groups_by_bias_name(model, weight_decay):  # only names ending in "bias" are spared
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            (no_decay if name.endswith("bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _groups_tied_head_decayed(model, weight_decay):  # by identity of Linear weights: a tied head decays
    linear = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    params = list({id(p): p for p in model.parameters()}.values())
    return [{"params": [p for p in params if id(p) in linear], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in linear], "weight_decay": 0.0}]


def _group_models():
    def build(tie=False, **kw):
        torch.manual_seed(0)
        model = TinyTransformer(TransformerConfig(vocab_size=16, block_size=8, n_layer=2, n_head=2, d_model=16, **kw))
        if tie:
            model.lm_head.weight = model.tok_emb.weight
        return model

    return [
        Case("LayerNorm with biases, wd 0.1", (build(bias=True), 0.1)),
        Case("RMSNorm, SwiGLU, no biases, wd 0.05", (build(norm="rmsnorm", mlp="swiglu"), 0.05)),
        Case("tied embedding and LM head, wd 0.1", (build(tie=True), 0.1)),
        Case("Post-LN with biases, wd 0.2", (build(norm_position="post", bias=True), 0.2)),
    ]


def _call_groups(fn, model, weight_decay):
    """Run the learner's function and describe its groups by parameter name (see describe_groups)."""
    groups = fn(model, weight_decay)
    if not isinstance(groups, (list, tuple)):
        raise ContractError(f"expected a list of parameter-group dicts, got {type(groups).__name__}")
    try:
        return describe_groups(model, list(groups))
    except ValueError as exc:
        raise ContractError(str(exc)) from None


EX_5_2 = Exercise(
    id="5.2", title="weight-decay parameter groups", reference=weight_decay_groups, cases=_group_models,
    call=_call_groups,
    mistakes=(
        Mistake("every 2-D tensor decays", _groups_by_dim,
                "Selecting by p.dim() >= 2 (nanoGPT's rule) also decays the token and position embeddings; "
                "this exercise keeps them out: decay only nn.Linear weights."),
        Mistake("tied head decayed", _groups_tied_head_decayed,
                "With weight tying, lm_head.weight *is* tok_emb.weight: one tensor, one group. This exercise "
                "lets the embedding decide (it registered the tensor first): no decay. Decaying it would also "
                "decay the embedding."),
        Mistake("only biases spared", _groups_by_bias_name,
                "Norm weights (LayerNorm/RMSNorm gains) and embeddings are not decayed in this exercise "
                "either: pulling a gain towards 0 shrinks the whole normalised activation, and sparing "
                "embeddings is this exercise's choice (recipes differ)."),
    ),
)


# ---------------------------------------------------------------------- 5.3 accumulation

def _accumulate_mean_per_micro_batch(model, micro_batches):  # the study note's loss / accum_steps
    model.zero_grad(set_to_none=True)
    for inputs, labels in micro_batches:
        logits, _ = model(inputs)
        (F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100) / len(micro_batches)).backward()


def _accumulate_without_dividing(model, micro_batches):
    model.zero_grad(set_to_none=True)
    for inputs, labels in micro_batches:
        logits, _ = model(inputs)
        F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100).backward()


def _accumulate_without_zeroing(model, micro_batches):
    total = sum(int((labels != -100).sum()) for _, labels in micro_batches)
    for inputs, labels in micro_batches:
        logits, _ = model(inputs)
        (F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum") / total).backward()


def _accumulate_zeroed_per_micro_batch(model, micro_batches):
    total = sum(int((labels != -100).sum()) for _, labels in micro_batches)
    for inputs, labels in micro_batches:
        model.zero_grad(set_to_none=True)
        logits, _ = model(inputs)
        (F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum") / total).backward()


ACCUMULATION_CONFIG = TransformerConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, d_model=16)


def _call_accumulate(fn, micro_batches):
    """Build the model, leave stale gradients in it, run the learner's function; return every .grad.
    The model refuses inputs larger than one micro-batch: accumulation exists to avoid the big batch."""
    torch.manual_seed(0)
    model = TinyTransformer(ACCUMULATION_CONFIG)
    for p in model.parameters():
        p.grad = torch.ones_like(p)  # stale values from an earlier step: they must not count
    largest = max(inputs.shape[0] for inputs, _ in micro_batches)

    def one_micro_batch_at_a_time(module, args):
        if args[0].shape[0] > largest:
            raise ContractError(f"the model got a batch of {args[0].shape[0]} sequences, more than one micro-batch "
                                f"({largest}): run the micro-batches one at a time, one backward each")

    model.register_forward_pre_hook(one_micro_batch_at_a_time)
    fn(model, micro_batches)
    return tuple(torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in model.parameters())


def _accumulation_cases():
    gen = torch.Generator().manual_seed(53)
    V, T = ACCUMULATION_CONFIG.vocab_size, ACCUMULATION_CONFIG.block_size

    def micro(batch, counted):
        inputs = torch.randint(0, V, (batch, T), generator=gen)
        labels = torch.randint(0, V, (batch, T), generator=gen)
        labels.view(-1)[counted:] = -100  # the first `counted` positions count
        return inputs, labels

    return [
        Case("4 micro-batches, every token counted", ([micro(2, 16) for _ in range(4)],)),
        Case("ragged: 16, 3, 9 counted tokens", ([micro(2, 16), micro(2, 3), micro(2, 9)],)),
        Case("one micro-batch", ([micro(3, 20)],)),
        Case("a micro-batch with nothing counted", ([micro(2, 10), micro(2, 0), micro(2, 5)],)),
    ]


EX_5_3 = Exercise(
    id="5.3", title="gradient accumulation that equals one batch", reference=accumulate_gradients,
    cases=_accumulation_cases, call=_call_accumulate,
    mistakes=(
        Mistake("mean per micro-batch / accum_steps", _accumulate_mean_per_micro_batch,
                "loss.mean() / accum_steps (the study note's recipe) weights every micro-batch equally; when "
                "micro-batches count different numbers of tokens that is not the big batch's mean. Sum each "
                "micro-batch's token losses and divide by the total count over all micro-batches."),
        Mistake("not divided", _accumulate_without_dividing,
                "Each backward adds to .grad: without dividing, the result is the sum of the micro-batch means."),
        Mistake("stale gradients kept", _accumulate_without_zeroing,
                "Zero the gradients first (model.zero_grad()): .grad held values from an earlier step."),
        Mistake("zeroed in the loop", _accumulate_zeroed_per_micro_batch,
                "Zero the gradients once, before the loop: model.zero_grad() inside it wipes out what the earlier "
                "micro-batches added, and only the last one's gradient is left."),
    ),
)


# -------------------------------------------------------------------- 5.4 Adafactor moment

def _factored_no_normaliser(grad, row_var, col_var, beta2_t, eps1):
    sq = grad * grad
    row_var = torch.lerp(row_var, sq.mean(dim=1), 1 - beta2_t)
    col_var = torch.lerp(col_var, sq.mean(dim=0), 1 - beta2_t)
    return row_var, col_var, torch.outer(row_var, col_var)


def _factored_beta_swapped(grad, row_var, col_var, beta2_t, eps1):
    sq = grad * grad
    row_var = torch.lerp(row_var, sq.mean(dim=1), beta2_t)
    col_var = torch.lerp(col_var, sq.mean(dim=0), beta2_t)
    return row_var, col_var, torch.outer(row_var, col_var) / row_var.mean().clamp(min=eps1)


def _factored_no_clamp(grad, row_var, col_var, beta2_t, eps1):
    sq = grad * grad
    row_var = torch.lerp(row_var, sq.mean(dim=1), 1 - beta2_t)
    col_var = torch.lerp(col_var, sq.mean(dim=0), 1 - beta2_t)
    return row_var, col_var, torch.outer(row_var, col_var) / row_var.mean()


def _factored_eps_added(grad, row_var, col_var, beta2_t, eps1):
    sq = grad * grad
    row_var = torch.lerp(row_var, sq.mean(dim=1), 1 - beta2_t)
    col_var = torch.lerp(col_var, sq.mean(dim=0), 1 - beta2_t)
    return row_var, col_var, torch.outer(row_var, col_var) / (row_var.mean() + eps1)


def _factored_cases():
    gen = torch.Generator().manual_seed(54)
    eps1 = torch.finfo(torch.float32).eps
    return [
        Case("step 1 (beta2_t = 0), 5 x 3", (torch.randn(5, 3, generator=gen),
                                             torch.zeros(5), torch.zeros(3), 0.0, eps1)),
        Case("step 10, 4 x 7", (torch.randn(4, 7, generator=gen), torch.rand(4, generator=gen),
                                torch.rand(7, generator=gen), 1 - 10 ** -0.8, eps1)),
        Case("rank-1 gradient (the estimate is exact)", (torch.outer(torch.randn(6, generator=gen),
                                                                     torch.randn(2, generator=gen)),
                                                         torch.zeros(6), torch.zeros(2), 0.0, eps1)),
        Case("zero gradient at step 1", (torch.zeros(3, 3), torch.zeros(3), torch.zeros(3), 0.0, eps1)),
        # values ~1e-6 to 1e-9: compared relatively (an absolute tolerance of 1e-5 would accept zeros)
        Case("tiny gradient, eps1 = 1e-3 (the clamp decides)",
             (1e-3 * torch.randn(4, 5, generator=gen), torch.zeros(4), torch.zeros(5), 0.0, 1e-3),
             tolerances={torch.float32: (1e-5, 0.0)}),
        # values of order 0.1, far above any absolute tolerance, where max(mean, eps1) and mean + eps1 differ by 10 %
        Case("eps1 = 10 above mean(row_var) ~ 1 (the clamp decides, v_hat ~ 0.1)",
             (torch.randn(4, 5, generator=gen), torch.zeros(4), torch.zeros(5), 0.0, 10.0)),
    ]


EX_5_4 = Exercise(
    id="5.4", title="Adafactor's factored second moment", reference=factored_second_moment, cases=_factored_cases,
    hints=("Square the gradient, then average it along each axis: a mean over columns per row (n,), a mean over "
           "rows per column (m,).",
           "Each running mean moves towards today's mean: new = beta2_t * old + (1 - beta2_t) * today "
           "(torch.lerp(old, today, 1 - beta2_t)).",
           "The outer product of the row and column means counts the overall scale twice: divide it once by the "
           "mean of row_var.",
           "v_hat = torch.outer(row_var, col_var) / row_var.mean().clamp(min=eps1)."),
    output_names=("row_var", "col_var", "v_hat"),
    mistakes=(
        Mistake("no normaliser", _factored_no_normaliser,
                "outer(row, col) counts the overall scale twice: divide by mean(row_var) (clamped to eps1)."),
        Mistake("decay weights swapped", _factored_beta_swapped,
                "beta2_t weights the *old* statistic: new = beta2_t * old + (1 - beta2_t) * mean(g^2), i.e. "
                "torch.lerp(old, new_mean, 1 - beta2_t)."),
        Mistake("no clamp", _factored_no_clamp,
                "A zero gradient makes mean(row_var) = 0 and v_hat = 0 / 0: clamp the denominator to eps1."),
        Mistake("eps1 added", _factored_eps_added,
                "eps1 is a floor, not an offset: divide by max(mean(row_var), eps1) (`.clamp(min=eps1)`), which "
                "leaves the denominator alone whenever the mean is above eps1."),
    ),
)


# ----------------------------------------------------------------------- 5.5 Triton AdamW

# The answer is the course's own kernel, course_utils.kernels.adamw.adamw_kernel: named here and imported
# when first used, so that this module imports without Triton (macOS, Windows).
ADAMW_KERNEL = KernelReference("course_utils.kernels.adamw", "adamw_kernel")


def __getattr__(name):  # `from solutions.ch05_optimization import adamw_kernel` still works (PEP 562)
    if name == "adamw_kernel":
        return EX_5_5.answer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@triton.jit
def _adamw_variant(p_ptr, g_ptr, m_ptr, v_ptr, n_elements, lr, beta1, beta2, eps, weight_decay, bias_correction1,
                   bias_correction2, BLOCK: tl.constexpr, L2_DECAY: tl.constexpr = False,
                   NO_BIAS_CORRECTION: tl.constexpr = False, DROP_MOMENTS: tl.constexpr = False,
                   UNMASKED_STORE: tl.constexpr = False, UNMASKED_LOAD: tl.constexpr = False):
    """adamw_kernel with the bugs whose flags are set (none set: the correct kernel), for the mistakes below."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    load_mask = offsets < n_elements + BLOCK if UNMASKED_LOAD else mask  # the former: every lane, past the end too
    p = tl.load(p_ptr + offsets, mask=load_mask)
    g = tl.load(g_ptr + offsets, mask=load_mask)
    if L2_DECAY:
        g = g + weight_decay * p  # the decay goes through the moments
    else:
        p = p * (1 - lr * weight_decay)
    m = beta1 * tl.load(m_ptr + offsets, mask=load_mask) + (1 - beta1) * g
    v = beta2 * tl.load(v_ptr + offsets, mask=load_mask) + (1 - beta2) * g * g
    if NO_BIAS_CORRECTION:
        p = p - lr * m / (tl.sqrt(v) + eps)
    else:
        p = p - (lr / bias_correction1) * m / (tl.sqrt(v) / tl.sqrt(bias_correction2) + eps)
    if UNMASKED_STORE:
        mask = offsets < n_elements + BLOCK  # every lane of the block: past the end in the last one
    tl.store(p_ptr + offsets, p, mask=mask)
    if not DROP_MOMENTS:
        tl.store(m_ptr + offsets, m, mask=mask)
        tl.store(v_ptr + offsets, v, mask=mask)


@triton.jit
def _adamw_kernel_l2(p_ptr, g_ptr, m_ptr, v_ptr, n_elements, lr, beta1, beta2, eps, weight_decay,
                     bias_correction1, bias_correction2, BLOCK: tl.constexpr):
    _adamw_variant(p_ptr, g_ptr, m_ptr, v_ptr, n_elements, lr, beta1, beta2, eps, weight_decay, bias_correction1,
                   bias_correction2, BLOCK=BLOCK, L2_DECAY=True)


@triton.jit
def _adamw_kernel_no_bias_correction(p_ptr, g_ptr, m_ptr, v_ptr, n_elements, lr, beta1, beta2, eps, weight_decay,
                                     bias_correction1, bias_correction2, BLOCK: tl.constexpr):
    _adamw_variant(p_ptr, g_ptr, m_ptr, v_ptr, n_elements, lr, beta1, beta2, eps, weight_decay, bias_correction1,
                   bias_correction2, BLOCK=BLOCK, NO_BIAS_CORRECTION=True)


@triton.jit
def _adamw_kernel_moments_not_stored(p_ptr, g_ptr, m_ptr, v_ptr, n_elements, lr, beta1, beta2, eps, weight_decay,
                                     bias_correction1, bias_correction2, BLOCK: tl.constexpr):
    _adamw_variant(p_ptr, g_ptr, m_ptr, v_ptr, n_elements, lr, beta1, beta2, eps, weight_decay, bias_correction1,
                   bias_correction2, BLOCK=BLOCK, DROP_MOMENTS=True)


@triton.jit
def _adamw_kernel_unmasked_store(p_ptr, g_ptr, m_ptr, v_ptr, n_elements, lr, beta1, beta2, eps, weight_decay,
                                 bias_correction1, bias_correction2, BLOCK: tl.constexpr):
    _adamw_variant(p_ptr, g_ptr, m_ptr, v_ptr, n_elements, lr, beta1, beta2, eps, weight_decay, bias_correction1,
                   bias_correction2, BLOCK=BLOCK, UNMASKED_STORE=True)


@triton.jit
def _adamw_kernel_unmasked_load(p_ptr, g_ptr, m_ptr, v_ptr, n_elements, lr, beta1, beta2, eps, weight_decay,
                                bias_correction1, bias_correction2, BLOCK: tl.constexpr):
    _adamw_variant(p_ptr, g_ptr, m_ptr, v_ptr, n_elements, lr, beta1, beta2, eps, weight_decay, bias_correction1,
                   bias_correction2, BLOCK=BLOCK, UNMASKED_LOAD=True)


def _kernel_cases():
    gen = torch.Generator().manual_seed(55)

    def tensors(n, step):
        m = 0.1 * torch.randn(n, generator=gen) if step > 1 else torch.zeros(n)
        v = (0.1 * torch.randn(n, generator=gen)) ** 2 if step > 1 else torch.zeros(n)
        return torch.randn(n, generator=gen), torch.randn(n, generator=gen), m, v

    return [
        Case("1000 elements (one partial block), step 1", (*tensors(1000, 1), 1, 1e-2, 0.9, 0.999, 1e-8, 0.1)),
        Case("2500 elements (three blocks), step 5, lr 0.5, wd 0.5", (*tensors(2500, 5), 5, 0.5, 0.9, 0.95, 1e-8, 0.5)),
        Case("one element, step 2", (*tensors(1, 2), 2, 0.1, 0.8, 0.99, 1e-6, 0.01)),
        Case("37 x 29 matrix, step 10", (*(t.view(37, 29) for t in tensors(37 * 29, 10)),
                                         10, 3e-3, 0.9, 0.95, 1e-8, 0.1)),
    ]


EX_5_5 = Exercise(
    id="5.5", title="fused Triton AdamW kernel", reference=ADAMW_KERNEL, cases=_kernel_cases,
    call=launch_adamw_kernel,
    mistakes=(
        Mistake("L2 instead of decoupled decay", _adamw_kernel_l2,
                "Adding weight_decay * p to g is Adam + L2. Decoupled: p = p * (1 - lr * weight_decay) before "
                "the Adam update, and g unchanged."),
        Mistake("no bias correction", _adamw_kernel_no_bias_correction,
                "Use the bias corrections passed in: lr / bias_correction1 * m / "
                "(sqrt(v / bias_correction2) + eps)."),
        Mistake("moments not stored", _adamw_kernel_moments_not_stored,
                "Store the new m and v as well: the next step starts from them."),
        Mistake("load without a mask", _adamw_kernel_unmasked_load,
                "The last block runs past n_elements: load p, g, m and v with mask=offsets < n_elements too. "
                "Discarding those lanes at the store is not enough: the loads themselves read memory that is "
                "not the tensor's (on a GPU, possibly an address that does not exist)."),
        Mistake("store without a mask", _adamw_kernel_unmasked_store,
                "The last block runs past n_elements: store p, m and v with mask=offsets < n_elements, or the "
                "lanes beyond write into memory that is not the parameter's."),
    ),
    output_names=("p", "m", "v"),
)


EXERCISES = [EX_5_1, EX_5_2, EX_5_3, EX_5_4, EX_5_5]
