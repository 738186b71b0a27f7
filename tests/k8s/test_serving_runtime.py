"""The ServingRuntime smart-energy-xgboost: every InferenceService names it, and its container is our predictor.

Its args are parsed by the predictor's own argument parser (what ``python -m smart_energy.serving.predictor``
builds), after the substitution KServe makes of ``{{.Name}}`` for each InferenceService.
"""

from __future__ import annotations

import argparse
import functools

import pytest

from k8s_objects import helm_objects, kustomize

RUNTIME = "smart-energy-xgboost"
SOURCES = [("kustomize", "kind"), ("kustomize", "production"), ("helm", "kind"), ("helm", "production")]


@functools.cache
def _objects(source: str, overlay: str) -> tuple[dict, ...]:
    return tuple(kustomize(overlay) if source == "kustomize" else helm_objects(overlay))


def _runtime(objs) -> dict:
    (runtime,) = [o for o in objs if o["kind"] == "ServingRuntime"]
    return runtime


def _isvcs(objs) -> list[dict]:
    return [o for o in objs if o["kind"] == "InferenceService"]


def predictor_parser() -> argparse.ArgumentParser:
    """The parser ``smart_energy.serving.predictor.__main__.main`` parses its argv with, made strict."""
    import smart_energy.serving.predictor.__main__ as predictor_main
    from smart_energy.components.settings import Settings
    from smart_energy.serving.server import base_parser

    assert predictor_main.base_parser is base_parser  # the module builds its parser with it
    parser = base_parser(Settings(), "predictor")
    parser.exit_on_error = False
    return parser


def substituted(args: list[str], isvc_name: str) -> list[str]:
    """What KServe runs: the runtime's args with {{.Name}} replaced by the InferenceService's name."""
    return [a.replace("{{.Name}}", isvc_name) for a in args]


def strict_parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, but an unknown flag is an error here rather than argparse's exit."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise argparse.ArgumentError(None, f"unrecognized arguments: {' '.join(unknown)}")
    return args


@pytest.mark.parametrize("source,overlay", SOURCES)
def test_every_inference_service_names_our_runtime(source, overlay):
    objs = _objects(source, overlay)
    isvcs = _isvcs(objs)
    assert {i["metadata"]["name"] for i in isvcs} == {"energy-forecaster", "energy-forecaster-dayahead"}
    runtime = _runtime(objs)
    assert runtime["metadata"]["name"] == RUNTIME
    assert runtime["metadata"]["namespace"] == "smart-energy"  # a namespaced ServingRuntime, next to them
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    for isvc in isvcs:
        model = isvc["spec"]["predictor"]["model"]
        assert model["runtime"] == RUNTIME, isvc["metadata"]["name"]
        assert model["modelFormat"]["name"] in formats and model["protocolVersion"] in runtime["spec"]["protocolVersions"]
        # the container is the runtime's: nothing in the InferenceService replaces its image or command
        assert not {"image", "command", "args"} & set(model), isvc["metadata"]["name"]


@pytest.mark.parametrize("source,overlay", SOURCES)
def test_runtime_is_explicit_only_and_speaks_both_protocols(source, overlay):
    spec = _runtime(_objects(source, overlay))["spec"]
    assert spec["supportedModelFormats"] == [{"name": "xgboost", "version": "2", "autoSelect": False}]
    assert spec["protocolVersions"] == ["v1", "v2"]


@pytest.mark.parametrize("source,overlay", SOURCES)
def test_runtime_runs_our_predictor_on_the_downloaded_model(source, overlay):
    (container,) = _runtime(_objects(source, overlay))["spec"]["containers"]
    assert container["name"] == "kserve-container"  # the container KServe merges predictor.model into
    assert container["image"].startswith("ghcr.io/smart-energy/serving:")
    assert container["command"] == ["python", "-m", "smart_energy.serving.predictor"]
    assert container["args"] == ["--model_name={{.Name}}", "--model_dir=/mnt/models", "--http_port=8080"]
    assert {"name": "SE_MODEL_REPOSITORY_ROUTES", "value": "false"} in container["env"]
    assert container["resources"]["limits"]["cpu"] == "1"
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}


@pytest.mark.parametrize("source,overlay", SOURCES)
def test_runtime_args_parse_with_the_predictors_parser(source, overlay):
    objs = _objects(source, overlay)
    (container,) = _runtime(objs)["spec"]["containers"]
    parser = predictor_parser()
    for isvc in _isvcs(objs):
        name = isvc["metadata"]["name"]
        # KServe appends predictor.model's args (none) after the runtime's
        argv = substituted(container["args"], name) + isvc["spec"]["predictor"]["model"].get("args", [])
        args = strict_parse(parser, argv)
        assert (args.model_name, args.model_dir, args.http_port) == (name, "/mnt/models", 8080)
        # the transformer calls /v2/models/<name>/infer: the predictor serves the model under the InferenceService's name
        assert f"--model_name {name}" == " ".join(isvc["spec"]["transformer"]["containers"][0]["args"][:2])


def test_parse_check_can_fail():
    parser = predictor_parser()
    with pytest.raises(argparse.ArgumentError):
        strict_parse(parser, ["--model_name=x", "--model-dir=/mnt/models"])  # hyphen: not the predictor's flag
    with pytest.raises(argparse.ArgumentError):
        strict_parse(parser, ["--http_port=eighty"])


def test_predictor_main_reads_the_model_dir_the_runtime_gives(tmp_path, capsys):
    """The runtime's argv, run through the predictor's main(): it loads from --model_dir, and an empty model folder
    (a storage initializer that downloaded nothing) stops it with exit code 2 and one line."""
    from smart_energy.serving.predictor.__main__ import main

    (container,) = _runtime(_objects("kustomize", "production"))["spec"]["containers"]
    empty = tmp_path / "mnt-models"
    empty.mkdir()
    argv = [a.replace("/mnt/models", str(empty)) for a in substituted(container["args"], "energy-forecaster")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"predictor: error: {empty}"), err
