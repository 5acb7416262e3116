"""`codetune serve`: an OpenAI-compatible HTTP API and a playground page over one model.

`app.create_app(engine, ...)` builds the FastAPI app (no model is loaded at import), `engine` holds the
batching transformers engine (and the optional vLLM one), `run.run(...)` loads a model and starts uvicorn.
"""
