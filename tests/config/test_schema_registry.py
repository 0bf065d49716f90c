"""The schema registry (selfsup/config/registry.py): every option of every schema-checked group composes into
the dataclass its YAML names, a typo'd key in a group YAML ends in one `error:` line, and a schema added at
run time is picked up without a line anywhere else."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import yaml
from conftest import REPO, assert_one_line_error, compose_train, run_script
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

from selfsup.cli import config_error_message
from selfsup.config import SCHEMAS
from selfsup.config.model import MethodConfig
from selfsup.config.registry import schema

# Groups whose YAMLs are not checked by a schema: recipes and debug presets set keys of the checked groups
# (and are checked through them), hydra/hparams_search configure Hydra itself, logger and callbacks are
# `_target_` nodes instantiated as written.
UNCHECKED_GROUPS = {"experiment", "debug", "hparams_search", "hydra", "logger", "callbacks"}
CHECKED_GROUPS = sorted(p.name for p in (REPO / "conf").iterdir() if p.is_dir() and p.name not in UNCHECKED_GROUPS)
OPTIONS = [(g, p.stem) for g in CHECKED_GROUPS for p in sorted((REPO / "conf" / g).glob("*.yaml"))]


def named_schema(group: str, option: str) -> str:
    """The `<group>/<name>` a group YAML pulls as `/schema/<group>/<name>@_here_`, itself or through the
    sibling it extends (method/moco: mocov2)."""
    for entry in yaml.safe_load((REPO / "conf" / group / f"{option}.yaml").read_text()).get("defaults", []):
        if isinstance(entry, str) and entry.startswith("/schema/"):
            return entry.removeprefix("/schema/").partition("@")[0]
        if isinstance(entry, str) and not entry.startswith(("/", "_")):
            return named_schema(group, entry)
    raise AssertionError(f"conf/{group}/{option}.yaml names no schema")


def test_every_group_is_checked_by_a_schema_and_every_schema_is_used():
    assert {path.partition("/")[0] for path in SCHEMAS} == set(CHECKED_GROUPS)
    named = {named_schema(g, o) for g, o in OPTIONS}
    assert named == set(SCHEMAS), f"not registered: {named - set(SCHEMAS)}, named by no YAML: {set(SCHEMAS) - named}"


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_group_option_composes_into_the_schema_its_yaml_names(group, option, tmp_path):
    node = compose_train([f"{group}={option}", f"data.root={tmp_path}"], tmp_path)[group]
    assert OmegaConf.get_type(node) is SCHEMAS[named_schema(group, option)]
    with pytest.raises(ConfigKeyError):  # a typed node: a key its schema lacks is refused
        OmegaConf.merge(node, {"no_such_setting": 1})


def test_a_typo_in_a_group_yaml_ends_in_one_error_line(tmp_path):
    (tmp_path / "optimizer").mkdir()
    typo = (REPO / "conf" / "optimizer" / "adamw.yaml").read_text() + "weight_decya: 0.1\n"
    (tmp_path / "optimizer" / "adamw_typo.yaml").write_text(typo)
    proc = run_script("train.py", [f"hydra.searchpath=[file://{tmp_path}]", "optimizer=adamw_typo"], tmp_path / "run")
    assert_one_line_error(proc, "optimizer/adamw_typo", "Key 'weight_decya' not in 'OptimizerConfig'")


@pytest.fixture
def registry_restored():
    saved = dict(SCHEMAS)
    yield
    SCHEMAS.clear()
    SCHEMAS.update(saved)


def test_a_schema_registers_itself_with_its_path(tmp_path, registry_restored):
    @schema("method/toy_registered")
    @dataclass
    class ToyConfig(MethodConfig):
        width: int = 0

    (tmp_path / "method").mkdir()
    toy = {
        "defaults": ["/schema/method/toy_registered@_here_", "_self_"],
        "_target_": "selfsup.methods.simclr.SimCLR",
        "name": "toy",
        "width": 8,
    }
    (tmp_path / "method" / "toy.yaml").write_text(yaml.safe_dump(toy))
    (tmp_path / "method" / "toy_typo.yaml").write_text(yaml.safe_dump({**toy, "widht": 8}))
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"

    node = compose_train([searchpath, "method=toy"], tmp_path).method
    assert OmegaConf.get_type(node) is ToyConfig and node.width == 8
    with pytest.raises(ConfigCompositionException) as raised:
        compose_train([searchpath, "method=toy_typo"], tmp_path)
    line = config_error_message(raised.value)
    assert "Key 'widht' not in 'ToyConfig'" in line and "\n" not in line, line
    with pytest.raises(ValueError, match="two schemas for method/toy_registered"):
        schema("method/toy_registered")(dataclass(type("Other", (MethodConfig,), {})))
    with pytest.raises(ValueError, match="<group>/<option>"):
        schema("toy")
