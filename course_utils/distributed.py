"""Real multi-process runs on one CPU: ``torch.distributed`` with the gloo backend.

A notebook cannot hand a function it defines to a child process, and a child that hangs must not
hang the notebook. So the work runs in fresh Python processes (``python -m course_utils.distributed``)
that call a *named* worker of this module, rendezvous through a file store in a temporary folder
(no ports to pick) and save their results there. :func:`run_workers` starts them, waits with a
deadline, and on a failure or timeout kills the rest and raises :class:`DistributedError` with the
failing rank's last lines of output.

Workers (``WORKERS``): ``ddp_accumulation`` (chapter 5), ``ring_attention`` (chapter 7), plus ``raise_error`` and
``sleep`` which exist to test the failure paths.

Used by chapters 5 and 7.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


class DistributedError(RuntimeError):
    """A worker process failed or did not finish in time; the message says which and why."""


def run_workers(worker: str, world_size: int = 2, *, timeout_s: float = 90.0, **kwargs) -> list:
    """Run ``WORKERS[worker](rank, world_size, **kwargs)`` in ``world_size`` processes; return their
    results in rank order. kwargs must be picklable by ``torch.save``."""
    if worker not in WORKERS:
        raise ValueError(f"unknown worker {worker!r}; known: {', '.join(WORKERS)}")
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    with tempfile.TemporaryDirectory(prefix="course_dist_") as tmp:
        folder = Path(tmp)
        torch.save(kwargs, folder / "kwargs.pt")
        # one thread each: the ranks share the cores
        env = {**os.environ, "OMP_NUM_THREADS": "1", "COURSE_THREADS": "1"}
        procs, logs = [], []
        for rank in range(world_size):
            log = open(folder / f"log_{rank}.txt", "w+")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "course_utils.distributed", worker, str(rank), str(world_size), tmp],
                stdout=log, stderr=subprocess.STDOUT, env=env))
        try:
            _wait(procs, logs, timeout_s)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for log in logs:
                log.close()
        return [torch.load(folder / f"result_{rank}.pt", weights_only=False) for rank in range(world_size)]


def _tail(log, lines: int = 15) -> str:
    log.flush()
    log.seek(0)
    return "\n".join(log.read().strip().splitlines()[-lines:]) or "(no output)"


def _wait(procs: list[subprocess.Popen], logs: list, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        codes = [p.poll() for p in procs]
        if any(code not in (None, 0) for code in codes):
            _raise_first_failure(procs, logs)
        if all(code == 0 for code in codes):
            return
        if time.monotonic() > deadline:
            waiting = [rank for rank, code in enumerate(codes) if code is None]
            raise DistributedError(f"timed out after {timeout_s:.0f} s waiting for rank(s) {waiting}; stopped them. "
                                   f"Last output of rank {waiting[0]}:\n{_tail(logs[waiting[0]])}")
        time.sleep(0.05)


def _raise_first_failure(procs: list[subprocess.Popen], logs: list) -> None:
    """Report the rank that failed on its own, not one that only lost its peer because of it."""
    grace = time.monotonic() + 3.0  # let the others notice and exit, so their logs are complete
    while time.monotonic() < grace and any(p.poll() is None for p in procs):
        time.sleep(0.05)
    failed = [rank for rank, p in enumerate(procs) if p.poll() not in (None, 0)]
    tails = {rank: _tail(logs[rank]) for rank in failed}
    secondary = ("Connection closed by peer", "remote worker crashing", "Connection reset by peer")
    failed.sort(key=lambda rank: any(s in tails[rank] for s in secondary))
    first = failed[0]
    others = f" (also failed after it: rank(s) {failed[1:]})" if len(failed) > 1 else ""
    raise DistributedError(f"rank {first} exited with code {procs[first].poll()}{others}. "
                           f"Its last output:\n{tails[first]}")


# ------------------------------------------------------------------------------------ workers

def ddp_accumulation(rank: int, world_size: int, *, accum_steps: int, micro_batch: int, seed: int = 0) -> dict:
    """One optimizer step's worth of gradient accumulation under DDP, with and without ``no_sync``.

    Every rank builds the same TinyTransformer (seeded) and takes its own micro-batches of a global
    batch of world_size * accum_steps * micro_batch sequences (see :func:`ddp_batch`). A comm hook
    counts the all-reduce calls and bytes. Returns, per mode ("sync every micro-step", "no_sync until
    the last"), the count, the bytes and the accumulated gradients (one flat tensor).
    """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP

    from course_utils.models import TinyTransformer

    tokens = ddp_batch(world_size * accum_steps * micro_batch, seed)
    mine = tokens.view(world_size, accum_steps, micro_batch, -1)[rank]  # (accum_steps, micro_batch, T + 1)
    results = {}
    for mode in ("sync every micro-step", "no_sync until the last"):
        torch.manual_seed(seed)
        model = DDP(TinyTransformer(DDP_CONFIG))
        counts = {"calls": 0, "bytes": 0}

        def counting_hook(state, bucket):
            buffer = bucket.buffer()
            counts["calls"] += 1
            counts["bytes"] += buffer.numel() * buffer.element_size()
            return default_hooks.allreduce_hook(None, bucket)  # sum over ranks, divided by world_size

        model.register_comm_hook(None, counting_hook)
        for i, micro in enumerate(mine):
            last = i == accum_steps - 1
            skip_sync = mode.startswith("no_sync") and not last
            with model.no_sync() if skip_sync else contextlib.nullcontext():
                _, loss = model(micro[:, :-1], micro[:, 1:])
                (loss / accum_steps).backward()
        grads = torch.cat([p.grad.flatten() for p in model.module.parameters()])
        results[mode] = {**counts, "grads": grads}
    results["parameters"] = sum(p.numel() for p in model.module.parameters())
    return results


def ddp_batch(sequences: int, seed: int) -> torch.Tensor:
    """The global batch of :func:`ddp_accumulation`: (sequences, T + 1) token ids from a Markov chain."""
    from course_utils.data import MarkovChain

    chain = MarkovChain(vocab_size=DDP_CONFIG.vocab_size, seed=seed)
    return chain.sample(sequences, DDP_CONFIG.block_size, torch.Generator().manual_seed(seed))


def _ddp_config():
    from course_utils.models import TransformerConfig

    return TransformerConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, d_model=32)


def ring_attention(rank: int, world_size: int, *, batch: int = 1, heads: int = 2, seq: int = 64, head_dim: int = 16,
                   causal: bool = True, seed: int = 0, overlap: bool = False) -> dict:
    """Ring attention: rank r holds block r of the sequence (queries, keys, values); at each of
    world_size steps it attends its queries to the K/V block it holds, merges the partial result with
    log-sum-exp, then passes that K/V block to rank r + 1 and receives one from rank r - 1.

    Every rank makes the same seeded (batch, heads, seq, head_dim) q, k, v (see :func:`ring_inputs`) and
    keeps only its block (a demo: each rank briefly holds the whole sequence while it draws it). With
    ``overlap=False`` (the default) a step computes first and then sends, receives and waits: nothing hides the
    transfer. With ``overlap=True`` it posts the send and receive of the block before computing on it and waits
    after, as Liu et al.'s ring attention does. Returns its output block, its LSE, the bytes it sent, the blocks it
    computed, and the seconds it spent computing (``compute_s``) and waiting for transfers (``wait_s``).
    """
    import torch.distributed as dist

    from course_utils.attention import attention_with_lse, merge_partial_attention

    if seq % world_size:
        raise ValueError(f"seq = {seq} must be divisible by world_size = {world_size}: every rank holds an equal block")
    q, k, v = (t.chunk(world_size, dim=2)[rank] for t in ring_inputs(batch, heads, seq, head_dim, seed))
    o = torch.zeros_like(q)
    lse = torch.full(q.shape[:-1], float("-inf"))
    kv = torch.stack([k, v]).contiguous()  # the block that travels: (2, batch, heads, seq / P, head_dim)
    sent, computed, compute_s, wait_s = 0, 0, 0.0, 0.0
    dist.barrier()  # start the clocks together
    for step in range(world_size):
        src = (rank - step) % world_size  # whose block this rank holds now
        requests = []
        if step < world_size - 1:
            incoming = torch.empty_like(kv)
            if overlap:
                requests = [dist.isend(kv, (rank + 1) % world_size), dist.irecv(incoming, (rank - 1) % world_size)]
        start = time.perf_counter()
        if not (causal and src > rank):  # causal: blocks after this rank's own are fully masked
            partial = attention_with_lse(q, kv[0], kv[1], causal=causal and src == rank)
            o, lse = merge_partial_attention(o, lse, *partial)
            computed += 1
        compute_s += time.perf_counter() - start
        if step < world_size - 1:
            start = time.perf_counter()
            if not overlap:
                requests = [dist.isend(kv, (rank + 1) % world_size), dist.irecv(incoming, (rank - 1) % world_size)]
            for request in requests:
                request.wait()
            wait_s += time.perf_counter() - start
            sent += kv.numel() * kv.element_size()
            kv = incoming
    return {"o": o, "lse": lse, "bytes_sent": sent, "blocks_computed": computed, "compute_s": compute_s,
            "wait_s": wait_s}


def ring_inputs(batch: int, heads: int, seq: int, head_dim: int, seed: int = 0):
    """The q, k, v every rank of :func:`ring_attention` generates, (batch, heads, seq, head_dim) each."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, heads, seq, head_dim, generator=gen) for _ in range(3))


def raise_error(rank: int, world_size: int, *, message: str = "deliberate failure", on_rank: int = 1):
    """Test helper: rank ``on_rank`` raises, the others wait at a barrier (and must be stopped)."""
    import torch.distributed as dist

    if rank == on_rank:
        raise RuntimeError(message)
    dist.barrier()
    return rank


def sleep(rank: int, world_size: int, *, seconds: float = 3600.0):
    """Test helper: never finishes in time."""
    time.sleep(seconds)
    return rank


WORKERS = {"ddp_accumulation": ddp_accumulation, "ring_attention": ring_attention, "raise_error": raise_error,
           "sleep": sleep}
DDP_CONFIG = _ddp_config()


def _main(argv: list[str]) -> None:
    import torch.distributed as dist

    worker, rank, world_size, folder = argv[0], int(argv[1]), int(argv[2]), Path(argv[3])
    kwargs = torch.load(folder / "kwargs.pt", weights_only=False)
    dist.init_process_group("gloo", init_method=f"file://{folder / 'store'}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=120))
    result = WORKERS[worker](rank, world_size, **kwargs)
    torch.save(result, folder / f"result_{rank}.pt")
    dist.barrier()  # nobody tears down while a peer still talks to it
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown: gloo's background threads can abort ("terminate called
    # without an active exception") when a peer process is already gone.
    os._exit(0)


if __name__ == "__main__":
    _main(sys.argv[1:])
