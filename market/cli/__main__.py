from market.cli.app import app

app()
