"""RoPE and its scalings (course_utils.rope): against an independent complex rotation, relative positions, NTK,
Llama 3.1, YaRN and position interpolation, and a RoPE model run past its context."""
import math

import pytest
import torch

from course_utils import rope
from course_utils.models import TinyTransformer, TransformerConfig


def _rope_complex(x, positions, inv_freq):
    """Independent RoPE: feature pairs (i, i + d/2) as complex numbers times e^{i * pos * freq}."""
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    z = z * torch.polar(torch.ones(len(positions), half, dtype=torch.float64),
                        positions.double()[:, None] * inv_freq.double()[None, :])
    return torch.cat([z.real, z.imag], dim=-1).float()


def test_rope_matches_complex_rotation_and_keeps_norms():
    torch.manual_seed(0)
    x, pos, inv = torch.randn(2, 9, 16), torch.arange(9), rope.rope_inv_freq(16)
    out = rope.rope_rotate(x, pos, inv)
    torch.testing.assert_close(out, _rope_complex(x, pos, inv), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(1)
    q, k, inv = torch.randn(32), torch.randn(32), rope.rope_inv_freq(32)

    def score(m, n):
        qm = rope.rope_rotate(q[None], torch.tensor([m]), inv)[0]
        kn = rope.rope_rotate(k[None], torch.tensor([n]), inv)[0]
        return float(qm @ kn)

    for offset in (0, 3, 50):
        assert score(10 + offset, 7 + offset) == pytest.approx(score(10, 7), abs=1e-4)
    assert abs(score(10, 7) - score(10, 2)) > 1e-3  # but it does depend on the distance


def test_ntk_scaling_is_a_new_base():
    inv = rope.rope_inv_freq(64)
    scaled = rope.ntk_scaled_inv_freq(inv, 8.0)
    torch.testing.assert_close(scaled, rope.rope_inv_freq(64, 10000.0 * 8.0 ** (64 / 62)), rtol=1e-5, atol=0)
    assert scaled[0] == inv[0] and scaled[-1] == pytest.approx(inv[-1].item() / 8, rel=1e-5)


def _llama3_loop(inv_freq, factor, original, low=1.0, high=4.0):
    """Llama 3.1's rule written as a loop over frequencies, one branch per case."""
    out = []
    for f in inv_freq.tolist():
        wavelength = 2 * math.pi / f
        if wavelength < original / high:
            out.append(f)
        elif wavelength > original / low:
            out.append(f / factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return torch.tensor(out)


@pytest.mark.parametrize("head_dim,base,factor,original", [(128, 500000.0, 8.0, 8192), (24, 10000.0, 4.0, 96)])
def test_llama3_scaling_matches_the_piecewise_rule(head_dim, base, factor, original):
    inv = rope.rope_inv_freq(head_dim, base)
    torch.testing.assert_close(rope.llama3_scaled_inv_freq(inv, factor, original), _llama3_loop(inv, factor, original))


def test_yarn_keeps_fast_and_interpolates_slow_frequencies():
    inv = rope.rope_inv_freq(128)
    scaled, attention_factor = rope.yarn_scaled_inv_freq(inv, 16.0, 4096)
    turns = 4096 * inv / (2 * math.pi)
    assert torch.equal(scaled[turns > 32], inv[turns > 32])
    torch.testing.assert_close(scaled[turns < 1], inv[turns < 1] / 16)
    assert attention_factor == pytest.approx(0.1 * math.log(16) + 1)
    with pytest.raises(ValueError, match="unknown RoPE scaling"):
        rope.scaled_inv_freq(inv, "linear", 2.0, 4096)


def test_position_interpolation_is_rope_at_scaled_positions():
    x, inv = torch.randn(6, 8), rope.rope_inv_freq(8)
    pi_inv, _ = rope.scaled_inv_freq(inv, "pi", 4.0, 64)
    torch.testing.assert_close(rope.rope_rotate(x, torch.arange(6), pi_inv),
                               rope.rope_rotate(x, torch.arange(6) / 4, inv))


def test_rope_model_runs_past_its_context_and_scaling_changes_only_long_range():
    torch.manual_seed(0)
    model = TinyTransformer(TransformerConfig(vocab_size=16, block_size=8, n_head=2, d_model=16, position="rope"))
    ids = torch.randint(0, 16, (1, 30))
    plain = model(ids)[0]
    model.set_rope_scaling("pi", 2.0)
    assert not torch.allclose(model(ids)[0], plain)
    model.set_rope_scaling("none")
    torch.testing.assert_close(model(ids)[0], plain)
    with pytest.raises(ValueError, match="position='rope'"):
        TinyTransformer(TransformerConfig(vocab_size=16, block_size=8, n_head=2, d_model=16)).set_rope_scaling(
            "pi", 2.0)
