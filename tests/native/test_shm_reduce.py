"""The shared-memory mean of DDP's gradients (lenet.native.shm_reduce): real processes
mapping one segment, compared bit for bit with the sum every rank should get."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from lenet.native import shm_reduce

# Each rank's tensors, round by round, from seeds every process can remake: so each one
# knows what every other sent, and so what the mean must be, bit for bit.
RANK = textwrap.dedent("""
    import sys, torch
    from lenet.native import shm_reduce

    def tensors(rank, round_):
        g = torch.Generator().manual_seed(1000 * round_ + rank)
        n = (7, 999, 1000, 2500, 1)[round_ % 5]  # shorter, equal to, longer than a slot
        return torch.randn(n, generator=g) * 10 ** (round_ % 7 - 3)

    def expected(ranks, round_):
        total = tensors(0, round_) / ranks
        for r in range(1, ranks):  # rank order: the same bits everywhere
            total = total + tensors(r, round_) / ranks
        return total

    def check(segment, ranks, rounds):
        for round_ in range(rounds):
            got = segment.mean_(tensors(segment.rank, round_), timeout_s=60)
            if not torch.equal(got, expected(ranks, round_)):
                raise SystemExit(f"rank {segment.rank}, round {round_}: wrong mean")

    if __name__ == "__main__":
        path, rank, ranks, rounds = sys.argv[1], *map(int, sys.argv[2:])
        check(shm_reduce.Segment.attach(path, rank, ranks, 1000), ranks, rounds)
""")


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [2, 3])
def test_every_rank_gets_the_mean_in_rank_order_bit_for_bit(ranks, tmp_path):
    assert shm_reduce.why_not() is None
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    sys.path.insert(0, str(tmp_path))
    try:
        import rank as here  # the same functions, in this process: rank 0
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("rank", None)
    rounds = 60
    segment = shm_reduce.Segment.create(ranks, capacity=1000)
    others = [subprocess.Popen([sys.executable, str(script), str(segment.path), str(r),
                                str(ranks), str(rounds)]) for r in range(1, ranks)]
    try:
        here.check(segment, ranks, rounds)
    finally:
        for p in others:
            assert p.wait(timeout=60) == 0
        segment.unlink()
    assert not segment.path.exists()


def test_a_rank_that_never_comes_times_out_with_a_clear_error():
    segment = shm_reduce.Segment.create(2, capacity=16)
    segment.unlink()  # mapped: the name is no longer needed
    with pytest.raises(TimeoutError, match="rank 0: the other processes did not reach"):
        segment.mean_(torch.ones(16), timeout_s=0.2)


def test_only_contiguous_float32_cpu_tensors_are_taken():
    segment = shm_reduce.Segment.create(1, capacity=4)
    segment.unlink()
    with pytest.raises(ValueError, match="contiguous float32"):
        segment.mean_(torch.ones(4, dtype=torch.float64), timeout_s=1)
    with pytest.raises(ValueError, match="contiguous float32"):
        segment.mean_(torch.ones(4, 2).t(), timeout_s=1)
    alone = torch.arange(10, dtype=torch.float32)  # one rank: the mean is itself
    assert torch.equal(segment.mean_(alone.clone(), timeout_s=1), alone)
