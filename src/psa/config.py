"""The run configuration: every setting that changes a run's numbers, each default stated once.

``Hyperparameters`` is what the engine trains with. ``RunConfig`` holds them with the model, the
meta-loops and the base seed: what every trial of a results dir shares, stored as its
``settings.json``. ``RunConfig.add_flags`` and ``RunConfig.from_args`` are the one command-line
form of both, used by train, sweep, bench, the SageMaker runner and the job entry;
``RunConfig.flag_values`` is its inverse (the job entry's hyperparameters). Torch-free, so the
cloud commands validate a job's settings before anything is launched.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from psa.errors import PsaError
from psa.modes import FULL_SAMPLING, HIDDEN_TARGETS

MODELS = ("resmlp", "mlp")
PRECISIONS = ("fp32", "bf16")


class ConfigError(PsaError, ValueError):
    """A setting outside its range, or a settings file that does not hold a run configuration."""


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ConfigError(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{value!r} is not a number")
    if not math.isfinite(value):
        raise ConfigError(f"{value!r} is not a finite number")
    return value


def _non_negative(value: Any) -> float:
    if _number(value) < 0:
        raise ConfigError(f"{value} must not be negative")
    return value


def _probability(value: Any) -> float:
    if not 0.0 <= _number(value) < 1.0:
        raise ConfigError(f"{value} must be in [0, 1)")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{value!r} is not a whole number")
    if value < 1:
        raise ConfigError(f"{value} must be at least 1")
    return value


# Torch threads of a process unless --threads says otherwise: psa's choice (REPRODUCTION.md,
# "Threads"). A network's ops are too small to share out, and a second thread spins at every op's
# barrier whenever another process holds a core; a sweep gets its parallelism from processes.
DEFAULT_THREADS = 1
MOST_THREADS = 1024


def _threads(value: Any) -> int | None:
    if value is None:
        return None
    if _positive_int(value) > MOST_THREADS:
        raise ConfigError(f"{value} is more than {MOST_THREADS}")
    return value


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{value!r} is not a whole number")
    if not 0 <= value < 2**63:
        raise ConfigError(f"{value} must be between 0 and 2**63 - 1")
    return value


@dataclass(frozen=True)
class _Flag:
    name: str  # field name, and the flag's dest
    check: Callable[[Any], Any]
    parse: Callable[[str], Any]  # text -> the field's type, before check
    help: str
    choices: tuple[str, ...] | None = None


FLAGS = {
    flag.name: flag
    for flag in (
        _Flag(
            "model",
            _choice(MODELS),
            str,
            "residual MLP, or the first paper's plain MLP",
            MODELS,
        ),
        _Flag(
            "meta_loops",
            _positive_int,
            int,
            "meta-loops per trial",
        ),
        _Flag(
            "seed",
            _seed,
            int,
            "base seed of initialisation, ablation draws, dropout and batch order; drawn and "
            "recorded when omitted, and a rerun keeps the one stored",
        ),
        _Flag(
            "threads",
            _threads,
            int,
            f"torch threads of each process ({DEFAULT_THREADS} unless given: psa's choice, see "
            "REPRODUCTION.md); part of the settings, since a matmul's bits may depend on it, so "
            "a rerun keeps the one stored",
        ),
        _Flag("lr", _non_negative, float, "AdamW learning rate"),
        _Flag("batch_size", _positive_int, int, "training batch size"),
        _Flag("weight_decay", _non_negative, float, "AdamW weight decay, used in decay mode only"),
        _Flag("dropout", _probability, float, "dropout rate, used in dropout mode only"),
        _Flag(
            "precision",
            _choice(PRECISIONS),
            str,
            "bf16 autocasts the matmuls; weights, optimizer and LKG stay fp32",
            PRECISIONS,
        ),
        _Flag(
            "hidden_targets",
            _choice(HIDDEN_TARGETS),
            str,
            "hidden mode's targets: upstream's (every Linear but the first and last) or the "
            "ResMLP's real hidden units with every reader zeroed",
            HIDDEN_TARGETS,
        ),
        _Flag(
            "full_sampling",
            _choice(FULL_SAMPLING),
            str,
            "full mode: a layer uniformly then a neuron (upstream), or a neuron uniformly",
            FULL_SAMPLING,
        ),
    )
}


def _checked(owner: object) -> None:
    for item in fields(owner):
        if item.name in FLAGS:
            try:
                FLAGS[item.name].check(getattr(owner, item.name))
            except ConfigError as error:
                raise ConfigError(f"{_flag(item.name)} {error}") from None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Hyperparameters:
    lr: float = 1e-4
    batch_size: int = 256
    weight_decay: float = 1e-4  # used in decay mode only
    dropout: float = 0.1  # used in dropout mode only
    precision: str = "fp32"
    hidden_targets: str = "upstream"  # or "corrected" (see psa.ablation)
    full_sampling: str = "layer"  # or "neuron"

    def __post_init__(self) -> None:
        _checked(self)


HYPERPARAMETER_NAMES = tuple(item.name for item in fields(Hyperparameters))
# settings.json: one flat object in this key order (what sweep has always written).
SETTINGS_KEYS = (
    "model",
    "lr",
    "batch_size",
    "weight_decay",
    "dropout",
    "meta_loops",
    "seed",
    "precision",
    "hidden_targets",
    "full_sampling",
    "threads",
)
# Keys a settings file written before they existed may lack: they hold upstream's behaviour (a
# missing thread count is unknown, and holds a rerun to none).
OPTIONAL_SETTINGS = ("hidden_targets", "full_sampling", "threads")


@dataclass(frozen=True)
class RunConfig:
    """What every trial of a run shares. ``seed`` is None until drawn or read from a results dir,
    ``threads`` None until settled (the results dir's, else DEFAULT_THREADS)."""

    model: str = "resmlp"
    meta_loops: int = 100
    seed: int | None = None
    hyper: Hyperparameters = field(default_factory=Hyperparameters)
    threads: int | None = None

    def __post_init__(self) -> None:
        _checked(self)

    @staticmethod
    def add_flags(
        parser: argparse.ArgumentParser | argparse._ArgumentGroup,
        names: Iterable[str] = FLAGS,
        *,
        seed_default: int | None = None,
        helps: Mapping[str, str] | None = None,
    ) -> None:
        """Add the flags of ``names`` (default: all of them) with the defaults of the fields."""
        defaults = {**_field_defaults(), "seed": seed_default}
        for name in names:
            spec = FLAGS[name]
            parser.add_argument(
                _flag(name),
                dest=name,
                type=_argparse_type(spec),
                choices=spec.choices,
                default=defaults[name],
                help=(helps or {}).get(name, spec.help),
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace, **changes: Any) -> RunConfig:
        """The configuration of parsed flags; a flag the parser lacks keeps its default."""
        defaults = _field_defaults()
        values = {name: getattr(args, name, defaults[name]) for name in FLAGS}
        values.update(changes)
        hyper = Hyperparameters(**{name: values[name] for name in HYPERPARAMETER_NAMES})
        return cls(values["model"], values["meta_loops"], values["seed"], hyper, values["threads"])

    def flag_values(self) -> dict[str, str]:
        """Every flag (without dashes) and its value as text: ``from_args`` reads them back."""
        values = self.flat()
        return {
            _flag(name)[2:]: repr(value) if isinstance(value, float) else str(value)
            for name in FLAGS
            if (value := values.get(name)) is not None
        }

    def flat(self) -> dict[str, Any]:
        """The settings file's object: every setting under its own name, in SETTINGS_KEYS order."""
        values = {"model": self.model, "meta_loops": self.meta_loops, "seed": self.seed}
        values.update({name: getattr(self.hyper, name) for name in HYPERPARAMETER_NAMES})
        values["threads"] = self.threads
        # A thread count not known (settings written before it was recorded) is left out.
        return {
            key: values[key] for key in SETTINGS_KEYS if values[key] is not None or key != "threads"
        }

    @classmethod
    def from_flat(cls, data: Any) -> RunConfig:
        """Read a settings file's object; raise ConfigError naming what is missing or wrong."""
        if not isinstance(data, dict):
            raise ConfigError("the settings are not a JSON object")
        missing = [key for key in SETTINGS_KEYS if key not in data and key not in OPTIONAL_SETTINGS]
        if missing:
            raise ConfigError(f"the settings lack {', '.join(missing)}")
        defaults = _field_defaults()
        values = {key: data.get(key, defaults[key]) for key in SETTINGS_KEYS}
        hyper = Hyperparameters(**{name: values[name] for name in HYPERPARAMETER_NAMES})
        return cls(values["model"], values["meta_loops"], values["seed"], hyper, values["threads"])

    def differences(self, asked: RunConfig) -> list[str]:
        """``"lr 0.001 here vs 0.0001 asked"`` for every setting where ``asked`` differs (a
        thread count that one side does not know is no difference)."""
        here, there = self.flat(), asked.flat()
        return [
            f"{key} {here[key]!r} here vs {there[key]!r} asked" for key in self.differing(asked)
        ]

    def differing(self, other: RunConfig) -> list[str]:
        """The settings keys whose values differ (a thread count one side lacks does not)."""
        here, there = self.flat(), other.flat()
        return [
            key for key in SETTINGS_KEYS if key in here and key in there and here[key] != there[key]
        ]


def _field_defaults() -> dict[str, Any]:
    config, hyper = RunConfig(), Hyperparameters()
    values = {"model": config.model, "meta_loops": config.meta_loops, "seed": config.seed}
    values.update({name: getattr(hyper, name) for name in HYPERPARAMETER_NAMES})
    values["threads"] = config.threads
    return values


def _argparse_type(spec: _Flag) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = spec.parse(text)
        except ValueError:
            noun = "a whole number" if spec.parse is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        try:
            return spec.check(value)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = spec.name  # argparse names the type in some messages
    return convert
