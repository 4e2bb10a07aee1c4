"""The HTTP API: a FastAPI app, wrapped by Mangum on Lambda and served by uvicorn locally."""
