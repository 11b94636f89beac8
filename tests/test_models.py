import math

import pytest
import torch

from course_utils.data import MarkovChain
from course_utils.models import Block, TinyTransformer, TransformerConfig
from course_utils.runtime import triton_status


@pytest.mark.parametrize("norm_position", ["pre", "post", "none"])
@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_forward_shapes_and_loss(norm_position, mlp):
    config = TransformerConfig(n_layer=2, norm_position=norm_position, mlp=mlp, norm="rmsnorm")
    model = TinyTransformer(config)
    idx = torch.randint(0, config.vocab_size, (3, 10))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 10, config.vocab_size)
    assert abs(loss.item() - math.log(config.vocab_size)) < 0.1  # near-uniform predictions at init


def test_block_wiring_matches_the_formulas():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 64)
    for position in ("pre", "post", "none"):
        for residual in (True, False):
            block = Block(TransformerConfig(norm_position=position, residual=residual))
            a = block.attn(block.ln1(x)) if position == "pre" else block.attn(x)
            skip = x if residual else 0
            h = block.ln1(skip + a) if position == "post" else skip + a
            m = block.mlp(block.ln2(h)) if position == "pre" else block.mlp(h)
            skip = h if residual else 0
            expected = block.ln2(skip + m) if position == "post" else skip + m
            torch.testing.assert_close(block(x), expected)


def test_attention_is_causal():
    model = TinyTransformer(TransformerConfig(n_layer=2))
    idx = torch.randint(0, 64, (1, 12))
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 64
    torch.testing.assert_close(model(idx)[0][:, :8], model(changed)[0][:, :8])


def test_init_std_and_depth_scaling():
    torch.manual_seed(0)
    config = TransformerConfig(n_layer=8, d_model=128, init_std=0.02, depth_scaled_init=True)
    model = TinyTransformer(config)
    qkv = model.blocks[0].attn.qkv.weight
    proj = model.blocks[0].attn.proj.weight
    assert abs(qkv.std().item() - 0.02) < 0.001
    assert abs(proj.std().item() - 0.02 / math.sqrt(16)) < 0.0005


@pytest.mark.parametrize("bad", [dict(norm_position="middle"), dict(d_model=65), dict(norm="batchnorm"),
                                 dict(mlp="relu"), dict(kernels="cuda")])
def test_bad_config_is_a_clear_error(bad):
    with pytest.raises(ValueError):
        TransformerConfig(**bad)


def test_sequence_longer_than_block_size():
    model = TinyTransformer(TransformerConfig(block_size=8, n_layer=1))
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_markov_chain_entropy_rate_is_the_empirical_floor():
    chain = MarkovChain(vocab_size=8, seed=1)
    assert torch.allclose(chain.transitions.sum(1), torch.ones(8))
    pi = chain.stationary()
    torch.testing.assert_close(pi @ chain.transitions.double(), pi)
    tokens = chain.sample(64, 200, torch.Generator().manual_seed(0))
    logp = torch.log(chain.transitions[tokens[:, :-1], tokens[:, 1:]])
    assert abs(-logp[:, 50:].mean().item() - chain.entropy_rate()) < 0.05


def test_norm_eps_reaches_the_norms():
    """``norm_eps`` sets both norms' eps; left at None, PyTorch's defaults stay (the stored outputs' setting)."""
    for norm, default in (("rmsnorm", None), ("layernorm", 1e-5)):
        model = TinyTransformer(TransformerConfig(norm=norm))
        assert model.blocks[0].ln1.eps == default
        assert TinyTransformer(TransformerConfig(norm=norm, norm_eps=1e-6)).norm_f.eps == 1e-6


needs_triton = pytest.mark.skipif(not triton_status().available, reason=triton_status().reason)


@pytest.mark.kernel
@needs_triton
@pytest.mark.parametrize("norm, mlp", [("rmsnorm", "swiglu"), ("layernorm", "gelu")])
def test_a_whole_training_step_in_the_course_kernels_matches_pytorch(norm, mlp):
    """kernels="triton" (norms, SwiGLU, attention forward and backward, fused cross-entropy) with TritonAdamW,
    against PyTorch's ops and AdamW from the same weights on the same batches: losses within 1e-5, every
    gradient within 1e-4 of its parameter's largest entry, parameters within 1e-6 after AdamW on the same gradients."""
    from course_utils.training import triton_step_agreement

    config = TransformerConfig(vocab_size=64, block_size=13, n_layer=2, n_head=2, d_model=24, norm=norm, mlp=mlp)
    for row in triton_step_agreement(config, steps=3):
        assert row["loss gap"] < 1e-5 and row["grad gap"] < 1e-4 and row["param gap"] < 1e-6, row


def test_triton_and_torch_models_share_their_state_dict():
    a = TinyTransformer(TransformerConfig(norm="layernorm", bias=True))
    b = TinyTransformer(TransformerConfig(norm="layernorm", bias=True, kernels="triton"))
    assert a.state_dict().keys() == b.state_dict().keys()
    b.load_state_dict(a.state_dict())
