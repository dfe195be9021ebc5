from sept.cli import app

app()
