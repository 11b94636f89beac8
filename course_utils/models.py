"""A tiny, configurable decoder-only Transformer that every chapter reuses.

One readable file in the manner of nanoGPT: a dataclass config, a block whose normalisation
placement (Pre-LN, Post-LN, none) and residual connections can be switched, and a stack with
token/position embeddings and an LM head. Sizes are CPU-friendly.

Used by chapters 2, 5, 6 and 7.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_utils.rope import rope_inv_freq, rope_rotate, scaled_inv_freq


@dataclass
class TransformerConfig:
    vocab_size: int = 64  # number of token ids
    block_size: int = 64  # training context: longest sequence a learned position embedding covers
    n_layer: int = 4  # number of Transformer blocks
    n_head: int = 4  # attention heads; d_model must be divisible by it
    d_model: int = 64  # width of the residual stream
    d_ff: int | None = None  # MLP hidden width; None means 4 * d_model
    norm_position: str = "pre"  # "pre" (Pre-LN), "post" (Post-LN, the 2017 paper) or "none"
    residual: bool = True  # False drops the skip connections (to watch gradients vanish)
    norm: str = "layernorm"  # "layernorm" or "rmsnorm"
    mlp: str = "gelu"  # "gelu" or "swiglu"
    init: str = "gpt"  # "gpt" (gpt_init_, GPT-2's fixed std) or "fan_in" (fan_in_init_, unit scale)
    init_std: float = 0.02  # with init="gpt": std of every Linear/Embedding weight (GPT-2 uses 0.02)
    depth_scaled_init: bool = False  # with init="gpt": residual output projections get init_std / sqrt(2 * n_layer)
    final_norm: bool = True  # a norm before the LM head (Pre-LN models need it)
    bias: bool = False  # biases in Linear layers and LayerNorm
    position: str = "learned"  # "learned" (GPT-2's position embedding) or "rope" (rotary, chapter 7)
    rope_base: float = 10000.0  # RoPE's base: inverse frequencies base^(-2i/head_dim)
    norm_eps: float | None = None  # the norms' eps; None keeps PyTorch's defaults, with which the stored outputs were
    # computed: LayerNorm 1e-5, RMSNorm the dtype's machine epsilon (1.2e-7 in float32). LLaMA uses 1e-5 or 1e-6
    kernels: str = "torch"  # "torch" or "triton": the norms, SwiGLU, attention (forward and backward) and the loss
    # run in PyTorch, or in the course's Triton kernels (course_utils.kernels); GELU and the matmuls stay PyTorch's

    def __post_init__(self):
        if self.norm_position not in ("pre", "post", "none"):
            raise ValueError(f"norm_position must be 'pre', 'post' or 'none', got {self.norm_position!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}")
        if self.mlp not in ("gelu", "swiglu"):
            raise ValueError(f"mlp must be 'gelu' or 'swiglu', got {self.mlp!r}")
        if self.init not in ("gpt", "fan_in"):
            raise ValueError(f"init must be 'gpt' or 'fan_in', got {self.init!r}")
        if self.position not in ("learned", "rope"):
            raise ValueError(f"position must be 'learned' or 'rope', got {self.position!r}")
        if self.kernels not in ("torch", "triton"):
            raise ValueError(f"kernels must be 'torch' or 'triton', got {self.kernels!r}")

    @property
    def hidden(self) -> int:
        return self.d_ff or 4 * self.d_model


# The capstone's model (chapter 8 trains it; chapter 7 runs two of its steps in the course's Triton kernels): 2 Pre-LN
# blocks of width 64 with RMSNorm, SwiGLU and RoPE over the 256 byte values, a 64-byte context.
CAPSTONE_CONFIG = TransformerConfig(vocab_size=256, block_size=64, n_layer=2, n_head=4, d_model=64,
                                    norm="rmsnorm", mlp="swiglu", position="rope")


def make_norm(config: TransformerConfig) -> nn.Module:
    if config.kernels == "triton":
        return TritonNorm(config)
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.d_model, eps=config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=1e-5 if config.norm_eps is None else config.norm_eps, bias=config.bias)


class TritonNorm(nn.Module):
    """``config.norm`` computed by the course's Triton kernels, with the parameters (same names, so state dicts
    load both ways) and the eps of the PyTorch module it stands for."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.kind, self.eps = config.norm, config.norm_eps
        self.weight = nn.Parameter(torch.ones(config.d_model))
        has_bias = config.norm == "layernorm" and config.bias
        self.bias = nn.Parameter(torch.zeros(config.d_model)) if has_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "rmsnorm":
            from course_utils.kernels.rmsnorm import rmsnorm_triton

            return rmsnorm_triton(x, self.weight, torch.finfo(x.dtype).eps if self.eps is None else self.eps)
        from course_utils.kernels.layernorm import layernorm_triton

        bias = self.bias if self.bias is not None else torch.zeros_like(self.weight)
        return layernorm_triton(x, self.weight, bias, 1e-5 if self.eps is None else self.eps)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_head = config.n_head
        self.triton = config.kernels == "triton"
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)  # writes to the residual stream

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
        """x: (B, T, C); rope: (inverse frequencies (hs/2,), factor on q and k) for rotary positions."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if rope is not None:
            inv_freq, factor = rope
            positions = torch.arange(T, device=x.device)
            q, k = rope_rotate(q, positions, inv_freq) * factor, rope_rotate(k, positions, inv_freq) * factor
        if self.triton:
            from course_utils.kernels.flash_attention import flash_attention_triton

            y = flash_attention_triton(q, k, v, causal=True)  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        self.triton = config.kernels == "triton"
        width = 2 * config.hidden if self.swiglu else config.hidden  # gate and up share one matmul
        self.up = nn.Linear(config.d_model, width, bias=config.bias)
        self.down = nn.Linear(config.hidden, config.d_model, bias=config.bias)  # writes to the residual stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)  # (B, T, hidden) each
            if self.triton:
                from course_utils.kernels.swiglu import swiglu_triton

                h = swiglu_triton(gate, up)
            else:
                h = F.silu(gate) * up
        else:
            h = F.gelu(h)
        return self.down(h)


class Block(nn.Module):
    """One Transformer block; ``config.norm_position`` and ``config.residual`` pick the wiring:

    pre:  x = x + attn(ln1(x));  x = x + mlp(ln2(x))
    post: x = ln1(x + attn(x));  x = ln2(x + mlp(x))
    none: x = x + attn(x);       x = x + mlp(x)
    Without residuals the ``x +`` is dropped and the rest stays.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.ln1, self.ln2 = make_norm(config), make_norm(config)
        self.attn, self.mlp = CausalSelfAttention(config), MLP(config)

    def _sublayer(self, x: torch.Tensor, f, norm: nn.Module) -> torch.Tensor:
        skip = x if self.config.residual else 0.0
        position = self.config.norm_position
        if position == "pre":
            return skip + f(norm(x))
        if position == "post":
            return norm(skip + f(x))
        return skip + f(x)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
        x = self._sublayer(x, lambda h: self.attn(h, rope), self.ln1)
        return self._sublayer(x, self.mlp, self.ln2)


def gpt_init_(model: nn.Module, std: float = 0.02, depth_scaled: bool = True) -> None:
    """GPT-2-style initialisation of a TinyTransformer, in place, chosen by parameter name.

    Every ``nn.Linear`` and ``nn.Embedding`` weight gets N(0, std^2) and every Linear bias 0; the
    two projections that write into the residual stream in each block (names ending in
    ``attn.proj.weight`` and ``mlp.down.weight``) get N(0, (std / sqrt(2 * n_layer))^2) when
    ``depth_scaled``, where n_layer = len(model.blocks). Norm weights are left as they are.
    """
    n_layer = len(model.blocks)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            residual = name.endswith("attn.proj") or name.endswith("mlp.down")
            scale = 1 / math.sqrt(2 * n_layer) if depth_scaled and residual else 1.0
            nn.init.normal_(module.weight, mean=0.0, std=std * scale)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)


def fan_in_init_(model: nn.Module) -> None:
    """Unit-scale initialisation, the setting of Xiong et al. (2020)'s analysis of Pre-/Post-LN, in place.

    Every ``nn.Linear`` weight gets N(0, 1/fan_in), so a branch's output has about the scale of its input,
    and every ``nn.Embedding`` N(0, 1/2), so token plus position embedding enter the first block at RMS
    about 1. Biases 0; norm weights are left as they are.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=1 / math.sqrt(module.in_features))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(0.5))


class TinyTransformer(nn.Module):
    """Token + position embeddings, ``n_layer`` blocks, optional final norm, LM head."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        if config.position == "learned":
            self.pos_emb = nn.Embedding(config.block_size, config.d_model)
        else:
            self.register_buffer("rope_inv_freq", rope_inv_freq(config.d_model // config.n_head, config.rope_base),
                                 persistent=False)
            self.rope_factor = 1.0
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = make_norm(config) if config.final_norm else nn.Identity()
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.init == "fan_in":
            fan_in_init_(self)
        else:
            gpt_init_(self, std=config.init_std, depth_scaled=config.depth_scaled_init)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> residual stream (B, T, d_model). Rotary models add no position here."""
        if self.config.position == "rope":
            return self.tok_emb(idx)
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        return self.tok_emb(idx) + self.pos_emb(pos)  # (B, T, C)

    def set_rope_scaling(self, method: str = "none", factor: float = 1.0, **options) -> None:
        """Stretch a rotary model's positions past its training context (``rope.METHODS``), in place;
        ``options`` go to the method (``rope.scaled_inv_freq``)."""
        if self.config.position != "rope":
            raise ValueError("only a model with position='rope' has rotary frequencies to scale")
        base = rope_inv_freq(self.config.d_model // self.config.n_head, self.config.rope_base)
        inv_freq, self.rope_factor = scaled_inv_freq(base, method, factor, self.config.block_size, **options)
        self.rope_inv_freq = inv_freq.to(self.rope_inv_freq.device)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Returns ``(logits (B, T, vocab), loss or None)``."""
        x = self.embed(idx)
        rope = (self.rope_inv_freq, self.rope_factor) if self.config.position == "rope" else None
        for block in self.blocks:
            x = block(x, rope)
        logits = self.lm_head(self.norm_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            if self.config.kernels == "triton":
                from course_utils.kernels.cross_entropy import cross_entropy_triton

                loss = cross_entropy_triton(logits.view(-1, logits.size(-1)), targets.reshape(-1))
            else:
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss
