"""Clients for teacher and judge models. Importing this is cheap: the `openai` SDK is imported only when a
client is built."""

from srpo.clients.openai_compat import (
    ChatClient,
    ChatClientError,
    ChatRequest,
    ChatResult,
    image_data_url,
    parse_retry_after,
    validate_chain,
)

__all__ = [
    "ChatClient",
    "ChatClientError",
    "ChatRequest",
    "ChatResult",
    "image_data_url",
    "parse_retry_after",
    "validate_chain",
]
