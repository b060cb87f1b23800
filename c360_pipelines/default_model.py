"""The match model c360 falls back on where a project's data is too small to learn one from.

Learning m needs candidate pairs that agree on three identifying fields, and a new project with a few dozen
records has almost none; u measured on a handful of random pairs is noise. For such data c360 scores with a
model trained, reproducibly, on its own demo generator (four systems with households, twins, shared emails and
junk values): `python -m c360_pipelines.default_model` rebuilds `default_match_model.json` from scratch, and a
test checks that the shipped file is exactly what the code makes.
"""

from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from pathlib import Path

from c360_pipelines.core.score import MatchModel

DEFAULT_MODEL_PATH = Path(__file__).with_name("default_match_model.json")
DEFAULT_MODEL_PEOPLE = 2000
DEFAULT_MODEL_SEED = 360


@lru_cache(maxsize=1)
def default_model() -> MatchModel:
    return MatchModel.from_json(json.loads(DEFAULT_MODEL_PATH.read_text(encoding="utf-8")))


def train_default_model() -> MatchModel:
    """Generate the demo data, bring it to canonical tables with the pipeline, and train on it."""
    import dagster as dg

    from c360_pipelines.config import load_config
    from c360_pipelines.core import score
    from c360_pipelines.demo import write_demo
    from c360_pipelines.identity import load_match_input, prepare
    from c360_pipelines.runner import run_pipeline
    from resources.warehouse import WarehouseResource

    with tempfile.TemporaryDirectory() as workdir:
        write_demo(Path(workdir), people=DEFAULT_MODEL_PEOPLE, seed=DEFAULT_MODEL_SEED)
        config = load_config(Path(workdir) / "c360.yaml")
        with dg.DagsterInstance.ephemeral() as instance:
            run_pipeline(config, instance)
        prepared = prepare(load_match_input(WarehouseResource(url=config.warehouse)), config.match)
        return score.train(prepared.data, prepared.compared)


def model_json(model: MatchModel) -> str:
    return json.dumps(model.to_json(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    DEFAULT_MODEL_PATH.write_text(model_json(train_default_model()), encoding="utf-8")
    print(f"wrote {DEFAULT_MODEL_PATH}")
