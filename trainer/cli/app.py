"""`trainer`: join a project, train on private data, submit with commit-reveal, collect rewards.

Every command reads the one config file of all three CLIs (`market.toml`, or --config, or
$MARKET_CONFIG): its `[market]` table for where things are, its `[trainer]` table for the trainer's
own keys (see `trainer.config`), flags on top. It prints one line on error with a meaningful exit
code and takes --json for scripts (exactly one JSON document on stdout, amounts in wei; progress,
waiting and "reconnecting" lines go to stderr). Amounts print in ether.

Exit codes: the one table of all three CLIs, `market.errors.EXIT_CODES` (listed in the README).
"""

from __future__ import annotations

import typer

from trainer.cli import claim, rounds, views
from trainer.cli.accounts import account_app

app = typer.Typer(
    name="trainer",
    help="Take part in learning projects: join, train on your own data, submit with commit-reveal, claim rewards.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.add_typer(account_app, name="account")
app.command("join")(rounds.join)
app.command("train")(rounds.train)
app.command("submit")(rounds.submit)
app.command("run")(rounds.run)
app.command("status")(views.status)
app.command("rewards")(views.rewards)
app.command("claim")(claim.claim)
app.command("withdraw")(claim.withdraw)
