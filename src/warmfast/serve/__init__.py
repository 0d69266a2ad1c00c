"""`warmfast serve`: an OpenAI-compatible HTTP server over the engine core (serve/app.py, serve/loop.py)."""
