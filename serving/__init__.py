"""The regional inference node: serves the versions a region's signed desired state names.

``serving.model`` loads a verified bundle, ``serving.router`` splits traffic between stable
and canary, ``serving.state`` reconciles the node with its region's desired state,
``serving.batcher`` gathers concurrent requests into micro-batches, and ``serving.app`` is the
HTTP surface (FastAPI). ``serving.node.run_node`` runs it under uvicorn; ``ebmops node`` is the
command. Importing this package imports neither torch nor FastAPI.
"""
