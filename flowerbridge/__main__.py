from flowerbridge.cli import app

app(prog_name="python -m flowerbridge")
