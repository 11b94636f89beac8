"""A tiny byte-level language model to decode from (chapter 6), trained on text that ships with Python.

Text: the help topics of Python's own documentation (``pydoc_data.topics``, about 465 KB of English
prose and code examples, part of every CPython install), so nothing is downloaded. Tokens: bytes
(ids 0-255), the same byte-level tokenizer chapter 4's chat template uses. Model: the course's
``TinyTransformer`` with rotary positions (chapter 7 evaluates it beyond its 96-byte training
context). The checkpoint ``data_files/charlm.pt`` (float16 weights, about 1 MB) was made by

    python -m course_utils.charlm --steps 2000

which is deterministic on a given machine (fixed seeds, one thread order); the tests re-train a few
steps and check that the loss falls.

Used by chapters 4, 6, 7 and 8.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from course_utils.models import TinyTransformer, TransformerConfig

CHECKPOINT = Path(__file__).resolve().parent / "data_files" / "charlm.pt"
CONFIG = TransformerConfig(vocab_size=256, block_size=96, n_layer=4, n_head=4, d_model=96,
                           depth_scaled_init=True, position="rope")  # rotary: chapter 7 stretches it


def encode(text: str) -> torch.Tensor:
    """Text -> (N,) int64 byte ids."""
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def decode(ids) -> str:
    """Byte ids -> text (invalid UTF-8, e.g. a cut multi-byte character, shows as �)."""
    return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def training_text() -> str:
    """Python's documentation help topics, in a fixed order. Raises a clear error if the install lacks them."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some stripped-down Python builds leave pydoc_data out
        raise RuntimeError("this Python has no pydoc_data module (its documentation topics), which the "
                           "chapter 6 model trains on; the committed checkpoint still works") from exc
    return "\n".join(topics[name] for name in sorted(topics))


def split(data: torch.Tensor, held_out: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation): the last ``held_out`` fraction of the bytes is kept for validation."""
    cut = int(len(data) * (1 - held_out))
    return data[:cut], data[cut:]


def batch(data: torch.Tensor, size: int, generator: torch.Generator,
          block_size: int = CONFIG.block_size) -> torch.Tensor:
    """(size, block_size + 1) random windows of ``data``."""
    starts = torch.randint(0, len(data) - block_size - 1, (size,), generator=generator)
    return torch.stack([data[s: s + block_size + 1] for s in starts.tolist()])


@torch.no_grad()
def evaluate(model: TinyTransformer, data: torch.Tensor, batches: int = 8, size: int = 32, seed: int = 1,
             length: int = CONFIG.block_size) -> float:
    """Mean loss (nats per byte) on ``batches`` × ``size`` fixed random windows of ``length`` + 1 bytes of ``data``.
    Leaves the model in the mode (train/eval) it was in."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    windows = (batch(data, size, gen, length) for _ in range(batches))
    losses = [model(x[:, :-1], x[:, 1:])[1].item() for x in windows]
    model.train(was_training)
    return sum(losses) / len(losses)


def train(steps: int = 2000, *, lr: float = 3e-3, batch_size: int = 32, seed: int = 0,
          progress: bool = True) -> tuple[TinyTransformer, list[float]]:
    """Train the byte model with AdamW, warmup and cosine decay; returns (model, loss per step)."""
    torch.manual_seed(seed)
    train_data, _ = split(encode(training_text()))
    model = TinyTransformer(CONFIG)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    gen = torch.Generator().manual_seed(seed + 1)
    losses = []
    for _ in tqdm(range(steps), disable=not progress, desc="training the byte model"):
        x = batch(train_data, batch_size, gen)
        _, loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        losses.append(loss.item())
    return model.eval(), losses


def save(model: TinyTransformer, path: Path = CHECKPOINT, **info) -> None:
    state = {k: v.half() for k, v in model.state_dict().items()}
    torch.save({"config": CONFIG.__dict__, "state_dict": state, "info": info}, path)


def load(path: Path = CHECKPOINT) -> TinyTransformer:
    """The committed model, in float32 and eval mode."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: run `python -m course_utils.charlm` to train one")
    blob = torch.load(path, weights_only=True)
    model = TinyTransformer(TransformerConfig(**blob["config"]))
    model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    return model.eval()


def checkpoint_info(path: Path = CHECKPOINT) -> dict:
    return torch.load(path, weights_only=True)["info"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.charlm", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=CHECKPOINT)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    start = time.time()
    model, losses = train(args.steps)
    _, val = split(encode(training_text()))
    val_loss = evaluate(model, val)
    seconds = time.time() - start
    save(model, args.out, steps=args.steps, final_train_loss=sum(losses[-50:]) / 50, val_loss=val_loss,
         seconds=round(seconds), python=sys.version.split()[0], torch=str(torch.__version__))
    print(f"trained {args.steps} steps in {seconds:.0f} s; train loss {sum(losses[-50:]) / 50:.3f}, "
          f"validation loss {val_loss:.3f} nats/byte; saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


@torch.no_grad()
def loss_by_position(model: TinyTransformer, data: torch.Tensor, length: int, windows: int = 8,
                     seed: int = 1, per_window: bool = False) -> torch.Tensor:
    """(length,) mean loss at each position of ``windows`` fixed random windows of ``length`` + 1 bytes
    (the model reads ``length`` bytes, which may exceed its training context). ``per_window``: return the
    (windows, length) losses instead, one row per window (for the spread across windows)."""
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(data) - length - 1, (windows,), generator=gen).tolist()
    x = torch.stack([data[s: s + length + 1] for s in starts])
    logits, _ = model.eval()(x[:, :-1])
    losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="none")
    losses = losses.view(windows, length)
    return losses if per_window else losses.mean(dim=0)
