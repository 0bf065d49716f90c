"""`--help` of train.py and eval.py: the template (conf/hydra/*.yaml `help`) with real examples and
the groups a user picks from, listed from conf/ in milliseconds.

Hydra lists the groups by composing every option of every group, its own included, whatever the
template shows (~3 s here, most of it copying the schemas once per option), and lists the internal
`schema/*` groups (selfsup/config) as if they were choices."""
from __future__ import annotations

import string
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"


def app_config_groups(groups) -> str:
    """`group: option, ...` for each of `groups` that is a folder of conf/, one line each."""
    lines = []
    for group in sorted(groups):
        options = sorted(f.stem for f in (CONF / group).glob("*.yaml"))
        if options and group != "hydra" and not group.startswith("hydra/"):
            lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


def fast_help() -> None:
    """Make `--help` fill $APP_CONFIG_GROUPS with the groups this entry point composes (not the schema/*
    ones nor the building blocks under them, which are no choice), options from conf/; a template that
    shows Hydra's own groups (`--hydra-help`) keeps Hydra's listing."""
    from hydra._internal.hydra import Hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    original = Hydra.get_help
    if getattr(original, "_selfsup_fast", False):
        return

    def get_help(self, help_cfg, cfg, args_parser, resolve: bool) -> str:
        if "HYDRA_CONFIG_GROUPS" in help_cfg.template:
            return original(self, help_cfg, cfg, args_parser, resolve)
        return string.Template(help_cfg.template).safe_substitute(
            FLAGS_HELP=self.format_args_help(args_parser),
            APP_CONFIG_GROUPS=app_config_groups(HydraConfig.get().runtime.choices.keys()),
            CONFIG=OmegaConf.to_yaml(cfg, resolve=resolve),
        )

    get_help._selfsup_fast = True
    Hydra.get_help = get_help
