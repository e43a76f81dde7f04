"""`python -m trainer.cli`."""

from trainer.cli.app import app

app()
