"""`smart-energy models`: list, register and promote versions in the artifact store's registry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from components import registry
from components.settings import get_settings
from components.storage import open_store


def _cmd_models(args: argparse.Namespace) -> int:
    settings = get_settings()
    store = open_store(settings=settings)
    name = settings.model_name
    if args.action == "register":
        if not args.model_dir:
            raise registry.SmartEnergyError("models register needs --model-dir")
        version = registry.register(store, args.model_dir, stage=args.stage)
        print(json.dumps({"name": name, "version": version, "stage": args.stage}))
    elif args.action == "promote":
        if not args.version:
            raise registry.SmartEnergyError("models promote needs --version (or 'candidate')")
        version = registry.stage_version(store, name, "candidate") if args.version == "candidate" else args.version
        if not version:
            raise registry.SmartEnergyError(f"model {name} has no candidate version to promote")
        registry.set_stage(store, name, "production", version)
        print(json.dumps({"name": name, "production": version}))
    else:
        stages = {s: registry.stage_version(store, name, s) for s in registry.STAGES}
        print(json.dumps({"name": name, "store": store.uri, "versions": registry.list_versions(store, name),
                          **stages}, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="model registry in SE_ARTIFACT_URI: list, register, promote",
                       description="Versions live at models/<name>/<version>/; production.json and candidate.json "
                       "point at versions (SE_MODEL_NAME names the model).")
    p.add_argument("action", choices=["list", "register", "promote"])
    p.add_argument("--model-dir", type=Path, help="model directory to register")
    p.add_argument("--stage", choices=list(registry.STAGES), default="candidate")
    p.add_argument("--version", help="version to promote to production, or 'candidate'")
    p.set_defaults(func=_cmd_models)
