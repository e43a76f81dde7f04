"""The `trainer` command line: `app` (assembled in `trainer.cli.app`), one module per command group."""

from trainer.cli.app import app

__all__ = ["app"]
