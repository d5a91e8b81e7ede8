"""The training CLI.

    python -m train fit --config run.yaml [section.key=value ...]     train (one process, DDP or FSDP)
    python -m train cache --config run.yaml [section.key=value ...]   precompute latents + text features
    python -m train sample CHECKPOINT --prompt TEXT [...]             images from a checkpoint
    python -m train export SRC --to official|diffusers --out PATH     convert a run's weights

Bad invocations exit with code 2 and one line naming the flag or file. Run from the repository
root. Fine-tuning (LoRA, EMA, resume, export, ComfyUI, data.sources mixing): README "Fine-tune";
a complete example: train/configs/demo_lora.yaml.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .checkpointing import CheckpointError
from .config import ConfigError, load_config
from .sample import CLIError


def _config_command(sub, name: str, help: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help)
    parser.add_argument("--config", help="YAML config (sections model, data, text, optim, run)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.steps=100")
    return parser


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    from . import export, sample

    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", metavar="{fit,cache,sample,export}")
    commands = {
        "fit": _config_command(sub, "fit", "train a model"),
        "cache": _config_command(sub, "cache", "precompute VAE latents and text features into data.cache_dir"),
        "sample": sub.add_parser("sample", help="sample images from a checkpoint", description=sample.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter),
        "export": sub.add_parser("export", help="export a checkpoint as official or diffusers weights, or a LoRA",
                                 description=export.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter),
    }
    sample.add_arguments(commands["sample"])
    export.add_arguments(commands["export"])
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, commands = build_parser()
    if not argv or argv[0] not in commands:
        parser.parse_args(argv)  # --help, or argparse's "invalid choice" error (exit 2)
        parser.print_usage(sys.stderr)
        return 2
    name, sub = argv[0], commands[argv[0]]
    # fit/cache: overrides may follow --config (argparse cannot intermix with subparsers, so each
    # command parses its own arguments)
    args = sub.parse_intermixed_args(argv[1:]) if name in ("fit", "cache") else sub.parse_args(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if name in ("fit", "cache"):
            return _config_run(name, args)
        from . import export, sample

        return (sample if name == "sample" else export).run(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except (CLIError, CheckpointError) as err:
        print(f"python -m train {name}: error: {err}", file=sys.stderr)
        return 2


def _config_run(name: str, args) -> int:
    config = load_config(args.config, args.overrides)
    if name == "cache":
        from .cache import build_cache

        print(build_cache(config))
        return 0
    from .engine import fit

    print(f"trained: {fit(config)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
