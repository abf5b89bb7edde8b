"""AI inference: AI tasks, the `inference` backend that runs them, and server launchers.

Importing this package imports no HTTP client: the backend imports httpx when it starts.
"""

from rhapsody.inference.request import AIRequest, is_ai_task, parse_ai

__all__ = ["AIRequest", "is_ai_task", "parse_ai"]
