"""The model server (FastAPI + uvicorn) and the pre-deployment checks that exercise it.

``create_app`` builds the server around the model pinned by ``MODEL_URI``; ``deploy_checks`` holds
``autotrader deploy check`` / ``autotrader deploy integration``. See docs/serving.md.
"""

from autotrader.serving.app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]
