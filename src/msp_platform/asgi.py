"""ASGI entry point for granian/uvicorn: ``msp_platform.asgi:app``."""

from msp_platform.app import create_app

app = create_app()
