"""One error hierarchy for ruvllm.

Every error a user can cause is a ``RuvLLMError`` whose message says what went wrong and
what to do about it, on one line. The CLI prints it and exits with ``exit_code``; the HTTP
layer maps ``http_status`` to the OpenAI error shape.
"""

from __future__ import annotations


class RuvLLMError(Exception):
    """Base class: a problem the user can act on."""

    exit_code = 2
    http_status = 400
    code = "ruvllm_error"


class ConfigError(RuvLLMError):
    """A configuration file or value is wrong (unknown key, bad type, out of range)."""

    code = "invalid_config"


class InvalidInputError(RuvLLMError):
    """A request is malformed: empty text, wrong type, out-of-range parameter."""

    code = "invalid_request"


class ContextOverflowError(InvalidInputError):
    """The prompt does not fit the model's context window."""

    code = "context_length_exceeded"


class DataDirError(RuvLLMError):
    """The data directory is not a ruvllm data directory, or is of an unknown format version."""

    code = "invalid_data_dir"


class StoreError(RuvLLMError):
    """The durable store could not be read or written."""

    exit_code = 3
    http_status = 500
    code = "store_error"


class StoreCorruptError(StoreError):
    """A database or index file is corrupt or foreign. It is never overwritten."""

    code = "store_corrupt"


class NotFoundError(RuvLLMError):
    """A node, edge, request id or model that was asked for does not exist."""

    http_status = 404
    code = "not_found"


class ValidationError(InvalidInputError):
    """A node or edge breaks the schema (bad id, wrong dimension, NaN, unknown type, range)."""

    code = "invalid_schema"


class ModelError(RuvLLMError):
    """Base for model problems."""

    exit_code = 4
    http_status = 500
    code = "model_error"


class ModelNotFoundError(ModelError):
    """An unknown model name or a model file that is not there."""

    http_status = 404
    code = "model_not_found"


class ModelLoadError(ModelError):
    """A model file exists but cannot be loaded (corrupt, truncated, unsupported architecture)."""

    code = "model_load_failed"


class BackendError(ModelError):
    """A remote inference server failed: down, slow, or answered with an error."""

    http_status = 502
    code = "backend_error"
