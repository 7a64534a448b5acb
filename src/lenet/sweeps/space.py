"""Search sweeps: a [search] table and a [space] of ranges instead of a [grid] of lists.

    name = "lr-search"
    [base]                              # as in a grid sweep; val_split is required
    epochs = 9                          # the most epochs a trial trains (ASHA's max_t)
    val_split = 0.1                     # the metric is measured here, never on test
    [search]
    algorithm = "tpe"                   # "tpe" (model-based) or "random"
    trials = 12                         # trials that finish (completed or stopped early)
    budget = 40                         # optional: the most epochs all trials train together
    metric = "val_acc"                  # or "val_loss"; direction follows (max / min)
    seed = 0
    grace_period = 1                    # ASHA: epochs every trial trains before a cut
    reduction_factor = 3                # ASHA: keep the best 1/3 at each rung
    [space]
    lr = { log-uniform = [0.01, 0.5] }
    momentum = { uniform = [0.8, 0.95] }
    batch_size = { log-int = [32, 256] }
    "set.dense" = { choice = ["48", "128"] }
    "set.batch_norm" = { choice = [true, false] }
    "set.dropout" = { uniform = [0.0, 0.4], when = { "set.batch_norm" = true } }
    [[space.arch.bundle]]               # a choice of named sets of options, as one
    name = "3conv"
    "set.channels" = "16,32,64"
    [[space.arch.bundle]]
    name = "2conv"
    "set.channels" = "16,32"
    "set.kernel" = 5

A `when` table makes an entry conditional: it is sampled only when the named options (from
[space], sampled before it, or from [base]) have those values. The trials are planned by a
sampler and an early-stopping pruner from Optuna (optuna_search.py, one machine, the study
in SQLite) or Ray Tune (tune_search.py, a cluster); this module is only the file format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..training.config import TrainConfig
from .spec import header, merge_options, parse_options, read_toml, typed

ALGORITHMS = ("tpe", "random")
METRICS = {"val_acc": "maximize", "val_loss": "minimize"}
KINDS = ("uniform", "log-uniform", "int", "log-int", "choice", "bundle")


@dataclass(frozen=True)
class Param:
    key: str  # a sweep option, as in [base]: "lr", "set.dropout"
    kind: str  # one of KINDS
    bounds: tuple[Any, ...]  # (low, high) for ranges, the values for a choice, the tables
    # of a bundle (each with its "name": what is sampled and recorded)
    when: tuple[tuple[str, Any], ...] = ()  # (option, value) pairs that must hold


@dataclass(frozen=True)
class Search:
    name: str
    out: Path  # the sweep directory
    base: dict[str, Any]  # TrainConfig keyword arguments every trial shares
    raw_base: dict[str, Any]  # [base] as written: what `when` compares with
    params: tuple[Param, ...]
    algorithm: str
    trials: int
    metric: str
    direction: str  # "maximize" or "minimize"
    seed: int
    grace_period: int
    reduction_factor: int
    budget: int | None = None  # trial-epochs, all trials together; None: no limit

    @property
    def epochs(self) -> int:
        return int(self.base.get("epochs", TrainConfig().epochs))

    def active(self, param: Param, values: dict[str, Any]) -> bool:
        """Whether `param` is sampled, given the values sampled before it."""
        return all(values.get(k, self.raw_base.get(k)) == v for k, v in param.when)

    def config(self, run_name: str, values: dict[str, Any]) -> TrainConfig:
        """The training configuration of one trial: [base] with the sampled values (a
        bundle's name stands for its options)."""
        flat = dict(values)
        for p in self.params:
            if p.kind == "bundle" and p.key in flat:
                name = flat.pop(p.key)
                chosen = next(b for b in p.bounds if b["name"] == name)
                flat.update({k: v for k, v in chosen.items() if k != "name"})
        options = merge_options(self.base, parse_options(flat, f"{self.name} [space]"))
        return TrainConfig(**{**options, "out_dir": str(self.out), "name": run_name})


def suggest(trial: Any, search: Search) -> dict[str, Any]:
    """Sample one trial's values from an Optuna trial (define-by-run: a conditional entry is
    sampled only when active). Both backends sample through Optuna: the same file means the
    same space on one machine and on a cluster."""
    values: dict[str, Any] = {}
    for p in search.params:
        if not search.active(p, values):
            continue
        if p.kind == "choice":
            values[p.key] = trial.suggest_categorical(p.key, list(p.bounds))
        elif p.kind == "bundle":
            values[p.key] = trial.suggest_categorical(p.key, [b["name"] for b in p.bounds])
        elif p.kind.endswith("int"):
            values[p.key] = trial.suggest_int(p.key, *p.bounds, log=p.kind == "log-int")
        else:
            low, high = map(float, p.bounds)
            values[p.key] = trial.suggest_float(p.key, low, high, log=p.kind == "log-uniform")
    return values


def is_search(path: str | Path) -> bool:
    return "search" in read_toml(Path(path))


def _param(key: str, entry: Any, where: str) -> Param:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: {key} must be a table such as {{ uniform = [0.1, 0.5] }}")
    entry = dict(entry)
    when = entry.pop("when", {})
    if not isinstance(when, dict) or not all(isinstance(k, str) for k in when):
        raise ConfigError(f"{where}: {key}'s when must be a table of option = value")
    if len(entry) != 1 or next(iter(entry)) not in KINDS:
        raise ConfigError(f"{where}: {key} needs exactly one of {', '.join(KINDS)}")
    kind, bounds = next(iter(entry.items()))
    if not isinstance(bounds, list) or not bounds:
        raise ConfigError(f"{where}: {key}: {kind} takes a non-empty list")
    if kind == "bundle":
        if not all(isinstance(b, dict) and isinstance(b.get("name"), str) for b in bounds) \
                or len({b["name"] for b in bounds}) != len(bounds):
            raise ConfigError(f"{where}: {key}: a bundle is a list of tables of options, each "
                              "with its own name")
    elif kind == "choice":
        if not all(isinstance(v, bool | int | float | str) for v in bounds):
            raise ConfigError(f"{where}: {key}: choices must be numbers, text or true/false "
                              '(write a list option as text: "16,32")')
    else:
        number = int if kind.endswith("int") else (int, float)
        if len(bounds) != 2 or not all(isinstance(v, number) and not isinstance(v, bool)
                                       for v in bounds) or not bounds[0] < bounds[1]:
            raise ConfigError(f"{where}: {key}: {kind} takes [low, high], low < high"
                              + (", whole numbers" if number is int else ""))
        if kind.startswith("log") and bounds[0] <= 0:
            raise ConfigError(f"{where}: {key}: {kind} needs low > 0")
    return Param(key, kind, tuple(bounds), tuple(when.items()))


def load_search(path: str | Path) -> Search:
    """A search sweep file, checked: every option known, every range valid."""
    path = Path(path)
    spec = read_toml(path)
    name, out, base = header(spec, path)
    table = typed(spec, "search", dict, {}, path)
    where = f"{path} [search]"
    known = {"algorithm", "trials", "metric", "direction", "seed", "grace_period",
             "reduction_factor", "budget"}
    if set(table) - known:
        raise ConfigError(f"{where}: unknown {', '.join(sorted(set(table) - known))}; "
                          f"known: {', '.join(sorted(known))}")
    if "grid" in spec or "runs" in spec or "random" in spec:
        raise ConfigError(f"{path}: a [search] takes a [space], not [grid], [random] or [[runs]]")
    algorithm = typed(table, "algorithm", str, "tpe", where)
    metric = typed(table, "metric", str, "val_acc", where)
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"{where}: algorithm must be one of {', '.join(ALGORITHMS)}")
    if metric not in METRICS:
        raise ConfigError(f"{where}: metric must be one of {', '.join(METRICS)} (a validation "
                          "split of the training set: the test split never chooses)")
    direction = typed(table, "direction", str, METRICS[metric], where)
    if direction != METRICS[metric]:
        raise ConfigError(f"{where}: {metric} is to {METRICS[metric]}, not {direction}")
    trials, seed, grace, reduction = (typed(table, k, int, d, where) for k, d in (
        ("trials", 10), ("seed", 0), ("grace_period", 1), ("reduction_factor", 3)))
    if trials < 1 or grace < 1 or reduction < 2:
        raise ConfigError(f"{where}: trials and grace_period must be >= 1, "
                          "reduction_factor >= 2")
    budget = typed(table, "budget", int, 0, where) or None
    if "budget" in table and (budget is None or budget < grace):
        raise ConfigError(f"{where}: budget (trial-epochs, all trials together) must be at "
                          f"least grace_period ({grace})")
    raw_base = typed(spec, "base", dict, {}, path)
    if not base.get("val_split"):
        raise ConfigError(f"{path} [base]: a search measures {metric} on a validation split: "
                          "give val_split (e.g. 0.1)")
    space = typed(spec, "space", dict, {}, path)
    if not space:
        raise ConfigError(f"{path}: a [search] needs a [space] with at least one entry")
    params: list[Param] = []
    for key, entry in space.items():
        param = _param(key, entry, f"{path} [space]")
        for option, _ in param.when:
            if option not in {p.key for p in params} and option not in raw_base:
                raise ConfigError(f"{path} [space]: {key} depends on {option}, which is "
                                  "neither an earlier [space] entry nor in [base]")
        params.append(param)
    search = Search(name, out, base, raw_base, tuple(params), algorithm, trials, metric,
                    direction, seed, grace, reduction, budget)
    # every key known, every value of the first corner a valid configuration, now
    for i in range(max((len(p.bounds) for p in params if p.kind == "bundle"), default=1)):
        search.config("check", {p.key: p.bounds[min(i, len(p.bounds) - 1)]["name"]
                                if p.kind == "bundle" else p.bounds[0] for p in params})
    if grace > search.epochs:
        raise ConfigError(f"{where}: grace_period ({grace}) exceeds [base] epochs "
                          f"({search.epochs})")
    return search
