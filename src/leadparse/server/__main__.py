"""``python -m leadparse.server``: the receiver's commands without the main CLI."""

from __future__ import annotations

import click

from leadparse.server.cli import register


@click.group()
def main() -> None:
    """Receive lead mail over SMTP and manage the stored leads."""


register(main)

if __name__ == "__main__":
    main()
