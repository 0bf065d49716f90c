"""The *_cpu_short recipes extend conf/experiment/shared/cpu_short.yaml and keep only what is their own: none
repeats a base value, no setting is written alike in all of them, and a recipe's own group choice wins over
the base's."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO, compose_train

EXPERIMENTS = REPO / "conf" / "experiment"
BASE = "shared/cpu_short"
RECIPES = sorted(p.stem for p in EXPERIMENTS.glob("*_cpu_short.yaml"))


def settings(name: str) -> tuple[dict[str, str], dict[str, object]]:
    """A recipe's group choices (`override /optimizer: sgd` -> {"optimizer": "sgd"}) and its values by dotted key."""
    node = yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text())
    choices = {
        key.removeprefix("override /"): value
        for entry in node.pop("defaults", [])
        if isinstance(entry, dict)
        for key, value in entry.items()
    }
    values: dict[str, object] = {}

    def flatten(prefix: str, item: object) -> None:
        if isinstance(item, dict):
            for key, value in item.items():
                flatten(f"{prefix}{key}.", value)
        else:
            values[prefix.rstrip(".")] = item

    flatten("", node)
    return choices, values


def test_every_recipe_extends_the_base_first():
    assert len(RECIPES) >= 15
    for name in RECIPES:
        defaults = yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text())["defaults"]
        assert defaults[0] == BASE, f"{name}: list `- {BASE}` first in its defaults"


def test_no_recipe_repeats_a_base_value():
    base_choices, base_values = settings(BASE)
    for name in RECIPES:
        choices, values = settings(name)
        repeated = sorted(
            {k for k, v in choices.items() if base_choices.get(k) == v}
            | {k for k, v in values.items() if k in base_values and base_values[k] == v}
        )
        assert not repeated, f"{name} repeats the base's {repeated}: drop them from the recipe"


def test_what_every_recipe_says_alike_lives_in_the_base():
    def pairs(name: str) -> set[tuple[str, str]]:
        choices, values = settings(name)
        return {(f"override /{k}", v) for k, v in choices.items()} | {(k, repr(v)) for k, v in values.items()}

    shared = set.intersection(*(pairs(name) for name in RECIPES))
    assert not shared, f"every *_cpu_short recipe sets {sorted(shared)}: move it to conf/experiment/{BASE}.yaml"


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipes_own_group_choice_wins_over_the_base(name, tmp_path):
    chosen = compose_train(
        [f"experiment={name}", f"data.root={tmp_path}"], tmp_path, hydra_config=True
    ).hydra.runtime.choices
    expected = {**settings(BASE)[0], **settings(name)[0]}
    assert {group: chosen[group] for group in expected} == expected
