"""The deeper fuzzing run: every parser target of tests/fuzz_targets.py for a time budget.

    python benchmarks/fuzz.py                      # 60 s per target (5 targets)
    python benchmarks/fuzz.py --seconds 10 --targets idx,set

Each target's inputs come from hypothesis (profile "lenet-deep", random), each followed by
--mutants random neighbours (bits flipped, cut, a slice repeated); an input whose
outcome is neither a correct result nor a LenetError with a message is a crash: it is
recorded (type, message, where, the input's size) and the run goes on. Prints, per target,
the inputs executed and the crashes (distinct by type and place), then the totals; exits 1
when there was a crash. The process's address space is capped (--memory-gb) so that a
memory blow-up is a crash (MemoryError), not a stalled machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import resource
import sys
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


class TimeUp(BaseException):
    """Raised inside a target once its time is up; hypothesis lets it through unshrunk."""


def mutate(data, rng: random.Random):
    """A random neighbour of an input: bits flipped, a cut, a slice repeated (bytes or text;
    in a list, one item)."""
    if isinstance(data, list):
        if not data:
            return data
        i = rng.randrange(len(data))
        return [*data[:i], mutate(data[i], rng), *data[i + 1:]]
    if not data:
        return data
    how = rng.randrange(3)
    if how == 0:
        return data[:rng.randrange(len(data))]
    if how == 1:
        at, n = rng.randrange(len(data)), rng.randint(1, 16)
        return data[:at] + data[at:at + n] * rng.randint(2, 4) + data[at + n:]
    pieces = bytearray(data) if isinstance(data, bytes) else list(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(pieces))
        if isinstance(data, bytes):
            pieces[at] ^= 1 << rng.randrange(8)
        else:
            pieces[at] = chr(rng.choice([0, 9, 10, 34, 44, 46, 47, 61, 91, 93, 0x2028,
                                         ord(pieces[at]) ^ 1]))
    return bytes(pieces) if isinstance(data, bytes) else "".join(pieces)


def fuzz(name: str, seconds: float, mutants: int,
         save: Path | None = None) -> tuple[int, dict[str, tuple[int, str]]]:
    """(inputs executed, {crash key: (count, first report)}) for one target."""
    import fuzz_targets
    from hypothesis import given, settings

    strategy, check = fuzz_targets.TARGETS[name]
    executed, crashes = 0, {}
    end = time.monotonic() + seconds

    @settings(settings.get_profile("lenet-deep"), max_examples=10**9)
    @given(strategy)
    def run(data):
        nonlocal executed
        if time.monotonic() > end:
            raise TimeUp
        rng = random.Random(hash(repr(data)))
        for one in [data, *(mutate(data, rng) for _ in range(mutants))]:
            executed += 1
            try:
                check(one)
            except Exception as e:  # a crash: recorded, and the run goes on
                frame = traceback.extract_tb(e.__traceback__)[-1]
                key = f"{type(e).__name__} at {Path(frame.filename).name}:{frame.lineno}"
                size = len(one) if hasattr(one, "__len__") else "?"
                count, first = crashes.get(key, (0, f"{key}: {str(e)[:300]} (input size "
                                                    f"{size}: {one!r:.200})"))
                crashes[key] = (count + 1, first)
                if save and not count:  # the first input of each crash, whole
                    save.mkdir(parents=True, exist_ok=True)
                    (save / f"{name}-{len(crashes)}.txt").write_text(
                        f"{key}\n{''.join(traceback.format_exception(e))}\n{one!r}\n")

    with contextlib.suppress(TimeUp):
        run()
    return executed, crashes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per target [60]")
    parser.add_argument("--targets", default="idx,image,set,sweep,checkpoint",
                        help="comma-separated: idx, image, set, sweep, checkpoint [all]")
    parser.add_argument("--mutants", type=int, default=4,
                        help="random neighbours (bits flipped, cut, repeated) run after each "
                             "input hypothesis draws [4]")
    parser.add_argument("--save-crashes", metavar="DIR",
                        help="write each crash's first input and traceback there")
    parser.add_argument("--memory-gb", type=float, default=8.0,
                        help="address-space cap of this process, in GB [8]")
    args = parser.parse_args()
    import torch  # imported before the cap: its libraries reserve address space

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # Pillow warns about each odd file it reads
    limit = int(args.memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.environ.setdefault("LENET_NATIVE", "0")
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"fuzzing {args.targets} for {args.seconds:g} s each on {cpu}, "
          f"hypothesis profile lenet-deep, address space capped at {args.memory_gb:g} GB")
    total_inputs, total_crashes = 0, 0
    for name in args.targets.split(","):
        started = time.monotonic()
        saved_stderr = os.dup(2)  # libtiff and libwebp write about every odd file to fd 2
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        try:
            executed, crashes = fuzz(name, args.seconds, args.mutants,
                                     Path(args.save_crashes) if args.save_crashes else None)
        finally:
            os.dup2(saved_stderr, 2)
        spent = time.monotonic() - started
        n = sum(c for c, _ in crashes.values())
        total_inputs, total_crashes = total_inputs + executed, total_crashes + n
        print(f"{name:11s} {executed:9,d} inputs  {executed / spent:8,.0f}/s  {n} crashes "
              f"({len(crashes)} distinct)")
        for count, first in crashes.values():
            print(f"    {count} x {first}")
    print(f"total       {total_inputs:9,d} inputs, {total_crashes} crashes")
    return 1 if total_crashes else 0


if __name__ == "__main__":
    sys.exit(main())
