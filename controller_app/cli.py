"""``iotclass``, the installed command: the classifier's offline tools
(:mod:`classifier.cli`) plus the controller's own commands, which need both sides:

* ``iotclass policy check FILE...``: validate policy files (:mod:`controller_app.policy`);
* ``iotclass devices [--db PATH]``: the controller's device inventory (:mod:`controller_app.inventory`).
"""

from __future__ import annotations

import argparse
import sys

from classifier import cli as classifier_cli
from controller_app.inventory import add_devices_command
from controller_app.policy import add_policy_command


def add_controller_commands(subparsers) -> None:
    add_policy_command(subparsers)
    add_devices_command(subparsers)


def build_parser() -> argparse.ArgumentParser:
    return classifier_cli.build_parser(extra=add_controller_commands)


def main(argv: list[str] | None = None) -> int:
    return classifier_cli.main(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
