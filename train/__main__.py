"""CLI: `python -m train fit --config run.yaml [section.key=value ...]`."""

from __future__ import annotations

import argparse
import logging
import sys

from .config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    parser.add_argument("command", choices=["fit"])
    parser.add_argument("--config", help="YAML config (sections model, data, text, optim, run)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.steps=100")
    args = parser.parse_intermixed_args(argv)  # overrides may follow --config
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    from .engine import fit

    print(f"trained: {fit(config)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
