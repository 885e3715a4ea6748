"""The union of results dirs: shards of one grid made on different machines, a sweep and the
SageMaker jobs collected by sagemaker-results-parser.

Every input must hold the same settings (from its settings.json, or else from what its records
carry). A trial recorded in several inputs with the same numbers is one trial (the first input's
record and loop log are kept); with different numbers it is a conflict and nothing is written.
Inputs are only read, each through its results store, and none of them may hold a symlink out of
the inputs among the files a merge reads: a shard from someone else could otherwise pull the
merging user's files (``~/.aws/credentials``) into the merged dir.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from psa.arch import parse_key
from psa.config import ConfigError, RunConfig
from psa.errors import PsaError
from psa.modes import MODES
from psa.store import ResultsFormatError, ResultsStore, StoreError, Trial
from psa.store.provenance import copy_provenance, provenance_files
from psa.store.tables import write_tables
from psa.sweep.plan import PlanError, read_plan

# What makes two records of one trial the same result (timings and provenance may differ).
OUTCOME_KEYS = ("val_bounty", "test_accuracy", "bounty_loop", "loops_run")


class MergeError(PsaError):
    """Inputs that cannot be merged; the message says which and what to do."""


@dataclass
class Source:
    store: ResultsStore
    settings: RunConfig
    records: list[dict]


@dataclass
class Merged:
    settings: RunConfig
    records: list[dict]
    origins: list[ResultsStore]  # the input each kept record (and its loop log) comes from
    arch_order: list[str]
    duplicates: int
    counts: dict[Path, int]
    plan_text: str | None  # the inputs' common batch plan, if they share one


def settings_from_record(record: dict) -> RunConfig | None:
    """The settings a sweep record carries; None for records without them (upstream's)."""
    hyper, seeds = record.get("hyperparameters"), record.get("seeds")
    if not isinstance(hyper, dict) or not isinstance(seeds, dict) or "meta_loops" not in record:
        return None
    values = {
        **hyper,
        "model": record.get("model", "resmlp"),
        "meta_loops": record["meta_loops"],
        "seed": seeds.get("base"),
    }
    try:
        return RunConfig.from_flat(values)
    except ConfigError:
        return None


def trial_of(record: dict) -> Trial:
    return Trial(parse_key(str(record["arch"])), record["mode"], record["trial"])


def read_source(path: Path) -> Source:
    store = ResultsStore(path)
    try:
        if not store.record_files():
            raise MergeError(
                f"{path} holds no trial records; give results dirs of sweep or "
                "sagemaker-results-parser"
            )
        records = store.records()
        stored = store.read_settings()
    except (StoreError, ResultsFormatError) as error:
        raise MergeError(f"{error}; repair that dir or leave it out") from None
    carried = {settings_from_record(record) for record in records}
    if stored is not None:
        try:
            settings = RunConfig.from_flat(stored)
        except ConfigError as error:
            raise MergeError(f"{store.settings_path} is not a sweep's settings ({error})") from None
    elif len(carried) == 1 and None not in carried:
        settings = carried.pop()
    else:
        raise MergeError(
            f"{path} has no settings.json and its records do not carry one set of settings "
            "(upstream results.txt jobs?); merge results that psa's sweep or jobs recorded"
        )
    for record in records:
        own = settings_from_record(record)
        if own is not None and own.differing(settings):  # records carry no thread count
            raise MergeError(
                f"{path}: the record of {_label(record)} was made with other settings than "
                f"its settings.json ({_difference(own, settings)}); repair that dir or leave "
                "it out"
            )
    return Source(store, settings, records)


def _label(record: dict) -> str:
    return f"[{record['arch']}] {record['mode']} trial {record['trial']}"


def _difference(a: RunConfig, b: RunConfig) -> str:
    left, right = a.flat(), b.flat()
    return "; ".join(f"{key} {left[key]!r} vs {right[key]!r}" for key in a.differing(b))


def _outcome(record: dict) -> tuple:
    return tuple(record.get(key) for key in OUTCOME_KEYS)


def _describe(record: dict) -> str:
    return ", ".join(f"{key} {record.get(key)}" for key in OUTCOME_KEYS)


def merged_files(store: ResultsStore) -> list[Path]:
    """Every file of a results dir that a merge reads: its settings, plan, records, loop logs
    and provenance files."""
    return [
        store.settings_path,
        store.plan_path,
        *store.record_files(),
        *store.log_files(),
        *provenance_files(store.root),
    ]


def refuse_links_out(paths: list[Path]) -> None:
    """Raise MergeError for the first file a merge would read from ``paths`` that leads (by a
    symlink, of the file or of a folder above it) out of every one of them."""
    roots = [path.resolve() for path in paths]
    for path in paths:
        for file in merged_files(ResultsStore(path)):
            if not os.path.lexists(file):
                continue
            try:
                target = file.resolve()
            except (OSError, RuntimeError):  # a symlink loop: nothing is read through it
                continue
            if not any(target.is_relative_to(root) for root in roots):
                raise MergeError(
                    f"{file} leads by a symlink to {target}, outside the dirs merged, and "
                    "merge-results copies nothing from outside its inputs; put the file itself "
                    f"there or leave {path} out"
                )


def merge(paths: list[Path]) -> Merged:
    """Read and check every input; raises MergeError on a symlink out of the inputs,
    mismatched settings or a conflict."""
    refuse_links_out(paths)
    sources = [read_source(path) for path in paths]
    first = sources[0]
    for source in sources[1:]:
        if source.settings.differing(first.settings):
            raise MergeError(
                f"{source.store.root} holds other settings than {first.store.root} "
                f"({_difference(source.settings, first.settings)}); merge only results of the "
                "same settings"
            )
    kept: dict[Trial, tuple[dict, ResultsStore]] = {}
    duplicates = 0
    for source in sources:
        for record in source.records:
            key = trial_of(record)
            if key not in kept:
                kept[key] = (record, source.store)
                continue
            other, where = kept[key]
            if _outcome(other) != _outcome(record):
                raise MergeError(
                    f"{_label(record)} differs between {where.root} ({_describe(other)}) and "
                    f"{source.store.root} ({_describe(record)}); leave one of them out of the "
                    "merge"
                )
            duplicates += 1
    plans, arch_order = [], []
    for source in sources:
        try:
            plan = read_plan(source.store)
        except PlanError:
            plan = None
        plans.append(plan)
        if plan is not None:
            arch_order += [arch for arch in plan.grid.archs if arch not in arch_order]
    for record, _ in kept.values():
        if record["arch"] not in arch_order:
            arch_order.append(record["arch"])
    shared = {plan.fingerprint() if plan else None for plan in plans}
    plan_text = None
    if len(shared) == 1 and None not in shared:
        plan_text = first.store.plan_text()
    mode_rank = {mode: rank for rank, mode in enumerate(MODES)}
    arch_rank = {arch: rank for rank, arch in enumerate(arch_order)}
    ordered = sorted(
        kept.values(),
        key=lambda item: (
            arch_rank[item[0]["arch"]],
            item[0]["trial"],
            mode_rank[item[0]["mode"]],
        ),
    )
    return Merged(
        first.settings,
        [record for record, _ in ordered],
        [origin for _, origin in ordered],
        arch_order,
        duplicates,
        {source.store.root: len(source.records) for source in sources},
        plan_text,
    )


def write_merged(merged: Merged, output: Path) -> None:
    """Write the union as a results dir: loop logs, settings, plan, records, then the tables."""
    store = ResultsStore(output)
    for record, origin in zip(merged.records, merged.origins):
        trial = trial_of(record)
        if origin.log_path(trial).is_file():
            store.write_log(trial, origin.log_path(trial).read_bytes())
    for origin in {origin.root: origin for origin in merged.origins}.values():
        copy_provenance(origin.root, output)  # the runs its records name
    store.write_settings(merged.settings.flat())
    if merged.plan_text is not None:
        store.write_plan(merged.plan_text)
    store.write_trials(merged.records)
    write_tables(store, merged.settings.model, merged.arch_order)
