"""Chapter 5: optimizers from scratch against torch.optim, decay groups, accumulation, DDP."""
import math
import time

import pytest
import torch
import torch.nn.functional as F

from course_utils import optim
from course_utils.distributed import DDP_CONFIG, DistributedError, ddp_batch, run_workers
from course_utils.models import TinyTransformer, TransformerConfig
from course_utils.training import accumulate_gradients


def _problem(steps=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(7, 13, generator=g), torch.randn(5, generator=g), torch.randn(1, generator=g)]
    scales = (1.0, 1e-4, 100.0)  # ordinary, tiny (eps matters) and large gradients
    grads = [[torch.randn(p.shape, generator=g) * s for p, s in zip(params, scales)] for _ in range(steps)]
    return params, grads


def _max_diff(a, b):
    return max((x - y).abs().max().item() for sa, sb in zip(a, b) for x, y in zip(sa, sb))


@pytest.mark.parametrize("beta2,weight_decay", [(0.999, 0.0), (0.95, 0.1)])
def test_adamw_update_matches_torch_adamw_step_for_step(beta2, weight_decay):
    params, grads = _problem()
    ours = optim.run_from_scratch(optim.adamw_update, params, grads, lr=1e-2, beta1=0.9, beta2=beta2,
                                  eps=1e-8, weight_decay=weight_decay)
    theirs = optim.run_torch(torch.optim.AdamW, params, grads, lr=1e-2, betas=(0.9, beta2), eps=1e-8,
                             weight_decay=weight_decay)
    assert _max_diff(ours, theirs) < 2e-6  # 200 steps of float32 rounding in a different order


def test_adam_l2_update_matches_torch_adam_and_differs_from_adamw():
    params, grads = _problem()
    hyper = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)
    ours = optim.run_from_scratch(optim.adam_l2_update, params, grads, **hyper)
    theirs = optim.run_torch(torch.optim.Adam, params, grads, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    assert _max_diff(ours, theirs) < 2e-6
    assert _max_diff(ours, optim.run_from_scratch(optim.adamw_update, params, grads, **hyper)) > 1e-2


def test_rare_token_steps_matches_torch_adam():
    """The closed-form quiet spell (m *= b1^q, v *= b2^q) gives the same steps as running torch.optim.Adam."""
    for beta2, quiet in ((0.95, 30), (0.999, 50)):
        gen = torch.Generator().manual_seed(0)
        p = torch.zeros(50, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([p], lr=1.0, betas=(0.9, beta2))
        history = [torch.randn(50, generator=gen).double() for _ in range(20)]
        for g in history + [torch.zeros(50, dtype=torch.float64)] * quiet:
            p.grad = g
            opt.step()
        start = p.detach().clone()
        moves = []
        for g in [torch.ones(50, dtype=torch.float64)] + [torch.zeros(50, dtype=torch.float64)] * 10:
            p.grad = g
            opt.step()
            moves.append(float((p.detach() - start).abs().mean()))
        first, total = optim.rare_token_steps(beta2, quiet, size=50, history=20, after=10)
        assert math.isclose(first, moves[0], rel_tol=1e-9) and math.isclose(total, moves[-1], rel_tol=1e-9)


def test_spike_step_matches_torch_adam():
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=1.0, betas=(0.9, 0.95), eps=0.0)
    for _ in range(300):
        p.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
    before = p.detach().clone()
    p.grad = torch.full((1,), 10.0, dtype=torch.float64)
    opt.step()
    assert math.isclose(float((before - p.detach()).abs()), optim.spike_step(0.95, 10.0, steady=300), rel_tol=1e-9)


def test_decay_comparison_shows_what_each_optimizer_decays():
    runs = optim.decay_comparison(lr=1e-2, weight_decay=0.1, steps=300)
    large_l2, small_l2 = runs["Adam + L2"]
    large_w, small_w = runs["AdamW"]
    assert large_l2[-1] > 0.95 and small_l2[-1] < 0.05  # L2: weak on large gradients, strong on small ones
    assert abs(large_w[-1] - small_w[-1]) < 0.1 and 0.6 < small_w[-1] < 0.85  # AdamW: (1 - lr wd)^t for both


def _model(**kw):
    torch.manual_seed(0)
    return TinyTransformer(TransformerConfig(vocab_size=16, block_size=8, n_layer=2, n_head=2, d_model=16, **kw))


def test_weight_decay_groups_by_name_and_usable_by_adamw():
    model = _model(bias=True)
    lines = optim.describe_groups(model, optim.weight_decay_groups(model, 0.1))
    decayed = {line.split(":")[0] for line in lines if line.endswith("weight_decay 0.1")}
    expected = {n for n, _ in model.named_parameters() if n.endswith(("qkv.weight", "proj.weight", "up.weight",
                                                                         "down.weight", "lm_head.weight"))}
    assert decayed == expected
    assert len(lines) == len(list(model.parameters()))
    torch.optim.AdamW(optim.weight_decay_groups(model, 0.1), lr=1e-3)  # torch accepts the groups


def test_weight_decay_groups_with_tied_weights_lists_the_tensor_once():
    model = _model()
    model.lm_head.weight = model.tok_emb.weight
    groups = optim.weight_decay_groups(model, 0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert "tok_emb.weight: weight_decay 0" in optim.describe_groups(model, groups)


def test_describe_groups_reports_duplicates_missing_and_foreign_tensors():
    model = _model()
    params = list(model.parameters())
    with pytest.raises(ValueError, match="more than one group"):
        optim.describe_groups(model, [{"params": params, "weight_decay": 0.1},
                                      {"params": params[:1], "weight_decay": 0.0}])
    with pytest.raises(ValueError, match="in no group"):
        optim.describe_groups(model, [{"params": params[1:], "weight_decay": 0.1}])
    with pytest.raises(ValueError, match="not one of the model's"):
        optim.describe_groups(model, [{"params": params + [torch.zeros(1)], "weight_decay": 0.1}])
    with pytest.raises(ValueError, match="no 'weight_decay'"):
        optim.describe_groups(model, [{"params": params}])


def test_tied_weight_listed_twice_is_rejected_by_the_checker():
    from course_utils import check

    def twice(model, weight_decay):
        decay = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
        rest = [p for n, p in model.named_parameters() if not any(p is d for d in decay)]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest + [model.tok_emb.weight],
                                                                   "weight_decay": 0.0}]

    result = check("5.2", twice, display=False)
    assert result.status == "failed" and "more than one group" in result.message


def _micro_batches(counts, seed=0):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for counted in counts:
        inputs, labels = torch.randint(0, 16, (2, 8), generator=g), torch.randint(0, 16, (2, 8), generator=g)
        labels.view(-1)[counted:] = -100
        batches.append((inputs, labels))
    return batches


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("counts", [[16, 16, 16], [16, 3, 9], [10, 0, 5]], ids=["equal", "ragged", "empty micro-batch"])
def test_accumulated_gradient_equals_one_big_batch(counts):
    batches = _micro_batches(counts)
    model = _model()
    accumulate_gradients(model, batches)
    accumulated = _grads(model)
    model.zero_grad()
    inputs, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    logits, _ = model(inputs)
    F.cross_entropy(logits.flatten(0, 1), labels.flatten()).backward()  # one batch, mean over counted tokens
    torch.testing.assert_close(accumulated, _grads(model), rtol=1e-5, atol=1e-7)


def test_the_study_notes_recipe_is_right_only_for_equal_counts():
    from solutions.ch05_optimization import _accumulate_mean_per_micro_batch

    for counts, equal in (([16, 16, 16], True), ([16, 3, 9], False)):
        batches = _micro_batches(counts)
        model = _model()
        accumulate_gradients(model, batches)
        right = _grads(model)
        _accumulate_mean_per_micro_batch(model, batches)
        assert torch.allclose(_grads(model), right, rtol=1e-5, atol=1e-7) == equal


def test_factored_second_moment_drives_an_adafactor_equal_to_torchs():
    params, grads = _problem(steps=60)
    ours = [p.clone() for p in params]
    states = [{} for _ in params]
    theirs = [p.clone().requires_grad_() for p in params]
    opt = torch.optim.Adafactor(theirs, lr=1e-2, weight_decay=0.01)
    for step, gs in enumerate(grads, start=1):
        for t, g in zip(theirs, gs):
            t.grad = g.clone()
        opt.step()
        for i, g in enumerate(gs):
            ours[i], states[i] = optim.adafactor_update(ours[i], g, states[i], step, lr=1e-2, weight_decay=0.01)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)  # 60 steps of rounding in another order


def test_rank_one_gradient_is_estimated_exactly():
    g = torch.outer(torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.5, 4.0]))
    _, _, v_hat = optim.factored_second_moment(g, torch.zeros(3), torch.zeros(2), 0.0, 1e-30)
    torch.testing.assert_close(v_hat, g * g)


def test_optimizer_state_bytes_adam_vs_adafactor():
    model = _model()
    n = sum(p.numel() for p in model.parameters())
    sizes = {}
    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("adafactor", torch.optim.Adafactor)):
        opt = cls(model.parameters(), lr=1e-3)
        model(torch.zeros(1, 8, dtype=torch.long))[0].sum().backward()
        opt.step()
        model.zero_grad()
        sizes[name] = optim.optimizer_state_bytes(opt)
    steps = len(list(model.parameters()))
    assert sizes["adam"] - 4 * steps == 2 * 4 * n  # m and v in float32, plus one step counter each
    assert sizes["adamw"] == sizes["adam"]
    assert sizes["adafactor"] < sizes["adam"] / 4


def test_ddp_with_and_without_no_sync_gives_the_big_batch_gradient():
    accum, micro = 3, 2
    ranks = run_workers("ddp_accumulation", 2, accum_steps=accum, micro_batch=micro, timeout_s=120)
    sync, no_sync = ranks[0]["sync every micro-step"], ranks[0]["no_sync until the last"]
    assert sync["calls"] == accum * no_sync["calls"] and sync["bytes"] == accum * no_sync["bytes"]
    assert no_sync["bytes"] >= 4 * ranks[0]["parameters"]  # every gradient is reduced at least once
    for mode in ("sync every micro-step", "no_sync until the last"):
        assert torch.equal(ranks[0][mode]["grads"], ranks[1][mode]["grads"])  # all ranks agree exactly
    torch.manual_seed(0)
    model = TinyTransformer(DDP_CONFIG)
    tokens = ddp_batch(2 * accum * micro, seed=0)
    model(tokens[:, :-1], tokens[:, 1:])[1].backward()
    torch.testing.assert_close(no_sync["grads"], _grads(model), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(sync["grads"], _grads(model), rtol=1e-5, atol=1e-7)


def test_a_failing_rank_is_reported_and_the_others_stopped():
    start = time.monotonic()
    with pytest.raises(DistributedError, match="(?s)rank 1 exited.*deliberate failure"):
        run_workers("raise_error", 2, timeout_s=60)
    assert time.monotonic() - start < 30  # the waiting rank 0 was killed, not waited for


def test_a_hanging_rank_times_out_with_a_clear_message():
    start = time.monotonic()
    with pytest.raises(DistributedError, match="timed out after 3 s"):
        run_workers("sleep", 2, timeout_s=3)
    assert time.monotonic() - start < 10


def test_unknown_worker_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown worker"):
        run_workers("nope")


def test_checker_refuses_one_big_batch_and_groups_without_their_decay():
    from course_utils import check

    def one_big_batch(model, micro_batches):
        model.zero_grad()
        logits, _ = model(torch.cat([b[0] for b in micro_batches]))
        F.cross_entropy(logits.flatten(0, 1), torch.cat([b[1] for b in micro_batches]).flatten()).backward()

    result = check("5.3", one_big_batch, display=False)
    assert result.status == "failed" and "one at a time" in result.message

    def decay_left_to_default(model, weight_decay):
        groups = optim.weight_decay_groups(model, weight_decay)
        del groups[1]["weight_decay"]
        return groups

    result = check("5.2", decay_left_to_default, display=False)
    assert result.status == "failed" and "default, 0.01" in result.message


def test_a_hint_needs_agreement_on_the_cases_after_the_failure_too():
    from course_utils import check

    def strict_slip(logits, min_p):  # <= instead of <: the listed mistake "strict inequality"
        probs = torch.softmax(logits, -1)
        return logits.masked_fill(probs <= min_p * probs.max(-1, keepdim=True).values, float("-inf"))

    result = check("6.3", strict_slip, display=False)
    assert result.status == "failed" and result.mistake == "strict inequality"

    def two_slips(logits, min_p):  # the same, plus a second slip on a case after the first failure
        if logits.numel() == 40:  # the "peaked row" case
            return logits.clone()
        return strict_slip(logits, min_p)

    result = check("6.3", two_slips, display=False)
    assert result.status == "failed" and result.mistake is None  # the hint would not fit the whole behaviour


def test_stored_adafactor_grid_is_complete():
    """The notebook reads the grid from data_files (tests/test_claims_ch05.py reruns it): every cell, 3 seeds."""
    grid = optim.adafactor_grid()
    g = optim.ADAFACTOR_GRID
    assert len(grid) == sum(len(g["lrs"][o]) for o in g["optimizers"]) * len(g["inits"]) * len(g["warmups"])
    assert all(len(v) == len(g["seeds"]) and all(math.isfinite(x) for x in v) for v in grid.values())
    import matplotlib.pyplot as plt

    plt.close(optim.figure_adafactor_grid(grid))


def test_adam_step_on_noise_starts_at_lr_and_falls():
    sizes = optim.adam_step_on_noise(0.95, checkpoints=(1, 20), size=2000)
    assert abs(sizes[1] - 1.0) < 1e-4 and sizes[20] < 0.5
