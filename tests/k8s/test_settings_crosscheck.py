"""Every env var and flag the manifests and the chart give our containers is one the code reads.

Env vars must be names in ``smart_energy.components.settings.ENV`` (values must parse as the settings' types);
flags of ``smart-energy <command>`` must parse with the real CLI parser; flags of the transformer must
be kserve ModelServer flags, and so must the predictor's (the ServingRuntime's container; tests/k8s/test_serving_runtime.py
parses them with the predictor's own parser); flags of ``kfp`` must be options of the kfp CLI.
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex

import pytest

from smart_energy.cli import build_parser
from smart_energy.components.settings import ENV, Settings
from k8s_objects import containers, helm_objects, is_ours, key, kustomize

# read by libraries themselves, not by our settings
THIRD_PARTY_ENV = {"FEAST_S3_ENDPOINT_URL": "feast's S3 client endpoint for an s3:// registry"}
# the containers Spark makes of a SparkApplication (k8s_objects.spark_pod)
SPARK_CONTAINERS = {"spark-kubernetes-driver", "spark-kubernetes-executor"}
SOURCES = [("kustomize", "kind"), ("kustomize", "production"), ("chart", "kind"), ("chart", "production")]


@functools.cache
def _objects(source: str, overlay: str) -> tuple[dict, ...]:
    return tuple(kustomize(overlay) if source == "kustomize" else helm_objects(overlay))


@functools.cache
def cli_parser() -> tuple[argparse.ArgumentParser, frozenset[str]]:
    """The product's own CLI parser, and its subcommands."""
    parser = build_parser()
    parser.exit_on_error = False
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, frozenset(sub.choices)


def kserve_flags() -> set[str]:
    from kserve.model_server import parser

    return {opt for action in parser._actions for opt in action.option_strings}


def kfp_flags() -> set[str]:
    from kfp.cli import cli, run

    return {o for p in cli.cli.params + run.run.commands["create"].params for o in p.opts + p.secondary_opts}


def _commands(container: dict) -> list[list[str]]:
    """The command lines a container runs (a ``sh -c`` script split at && and |)."""
    argv = container.get("command", []) + container.get("args", [])
    if container.get("name") in SPARK_CONTAINERS:
        # the driver's main file, smart_energy/spark_job.py, runs smart_energy.cli.main(arguments); executors run tasks
        return [["smart-energy", *argv]] if argv else []
    if argv[:2] == ["sh", "-c"]:
        script = re.sub(r"\$\{trialParameters\.\w+\}", "1", argv[2])
        return [shlex.split(part) for part in re.split(r"&&|\|", script) if part.strip()]
    return [argv]


def _containers(obj):
    """containers(), and the ServingRuntime's: the predictor container of every InferenceService."""
    if obj["kind"] == "ServingRuntime":
        for c in obj["spec"]["containers"]:
            yield "ServingRuntime", c
    for where, _, c in containers(obj):
        yield where, c


def _our_containers(source, overlay, kinds=None):
    for obj in _objects(source, overlay):
        if kinds is not None and obj["kind"] not in kinds:
            continue
        for where, c in _containers(obj):
            if is_ours(c):
                yield f"{source}/{overlay} {key(obj)} {where}", c


@pytest.mark.parametrize("source,overlay", SOURCES)
def test_env_vars_are_settings_names(source, overlay):
    allowed = set(ENV.values()) | set(THIRD_PARTY_ENV)
    seen = 0
    for where, c in _our_containers(source, overlay):
        env = c.get("env", [])
        unknown = {e["name"] for e in env} - allowed
        assert not unknown, f"{where}: {unknown} not in smart_energy.components.settings.ENV"
        # whole-ConfigMap env only from the settings ConfigMap (its keys are checked in tests/pipelines)
        sources = c.get("envFrom", [])
        assert all(s == {"configMapRef": {"name": "smart-energy-settings"}} for s in sources), f"{where}: {sources}"
        # the literal values parse as the settings' types
        Settings.from_env({e["name"]: e["value"] for e in env if "value" in e})
        for _, script in [(where, " ".join(c.get("args", [])))]:
            for var in re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", script):
                assert var in allowed, f"{where}: script uses ${var}"
        seen += 1
    # the runtime's predictor, two transformers, two rollout CronJobs, retrain-daily, the Katib trial, the Spark driver
    # and executor
    assert seen == 9


@pytest.mark.parametrize("source,overlay", SOURCES)
def test_flags_are_ones_the_programs_read(source, overlay):
    parser, available = cli_parser()
    kinds = set()
    for where, c in _our_containers(source, overlay, kinds={"InferenceService", "ServingRuntime", "CronJob",
                                                            "SparkApplication"}):
        for argv in _commands(c):
            if argv[:3] in (["python", "-m", "smart_energy.serving.transformer"],
                            ["python", "-m", "smart_energy.serving.predictor"]):
                server = argv[2].rsplit(".", 1)[-1]
                flags = {a.split("=", 1)[0] for a in argv[3:] if a.startswith("--")}
                known = kserve_flags() | ({"--model_dir"} if server == "predictor" else set())
                assert flags and flags <= known, f"{where}: {flags - known}"
                kinds.add(server)
            elif argv[0] == "smart-energy":
                if argv[1] in available:
                    try:
                        parser.parse_args(argv[1:])
                    except (argparse.ArgumentError, SystemExit) as err:
                        pytest.fail(f"{where}: smart-energy {' '.join(argv[1:])}: {err}")
                kinds.add(f"smart-energy {argv[1]}")
            elif argv[0] == "kfp":
                flags = {a for a in argv if a.startswith("-")}
                assert flags <= kfp_flags(), f"{where}: {flags - kfp_flags()}"
                kinds.add("kfp")
            elif argv[0] == "python":
                continue  # the one-line JSON filter of the Katib trial
            else:
                pytest.fail(f"{where}: unexpected command {argv}")
    assert kinds == {"transformer", "predictor", "smart-energy rollout", "smart-energy train", "kfp"}


def test_katib_trial_runs_train_and_evaluate_with_flags_they_accept():
    """The trial passes the searched hyper-parameters as train flags (--max-depth, --learning-rate, --n-estimators)."""
    parser, available = cli_parser()
    used = []
    for where, c in [wc for s in SOURCES for wc in _our_containers(*s, kinds={"Experiment"})]:
        for argv in _commands(c):
            if argv[0] != "smart-energy":
                continue
            used.append(argv[1])
            assert argv[1] in available, f"{where}: smart-energy {argv[1]} is not registered"
            try:
                parser.parse_args(argv[1:])
            except (argparse.ArgumentError, SystemExit) as err:
                pytest.fail(f"{where}: smart-energy {' '.join(argv[1:])} does not parse: {err}")
    assert used == ["train", "evaluate"] * len(SOURCES)


def test_cli_subcommands_used_in_manifests_exist():
    """Fails until every `smart-energy` subcommand the manifests run is registered in the CLI."""
    _, available = cli_parser()
    used = {argv[1] for where, c in _our_containers("kustomize", "production")
            for argv in _commands(c) if argv[0] == "smart-energy"}
    assert used == {"rollout", "train", "evaluate"}
    assert used <= available, f"not (yet) registered in the CLI: {sorted(used - available)}"


def test_rollout_flag_check_can_fail():
    parser, available = cli_parser()
    assert "rollout" in available
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        parser.parse_args(["rollout", "--no-such-flag"])
