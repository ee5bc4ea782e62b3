"""ruvllm: a self-learning LLM service for small local models.

    from ruvllm import RuvLLM, Config
    with RuvLLM(Config.load(data_dir="/tmp/rv")) as rv:
        rv.ingest_stdlib(["json"])
        print(rv.query("What does json.dumps do?").answer)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ruvllm.config import Config
from ruvllm.errors import RuvLLMError

__version__ = "0.1.0"
__all__ = ["Config", "RuvLLM", "RuvLLMError", "__version__"]

if TYPE_CHECKING:
    from ruvllm.orchestrator import RuvLLM


def __getattr__(name: str) -> Any:  # import the heavy parts only when asked for
    if name == "RuvLLM":
        from ruvllm.orchestrator import RuvLLM

        return RuvLLM
    raise AttributeError(name)
