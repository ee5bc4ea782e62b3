"""LLM runtime: the ``Generator`` protocol, the model registry, the llama.cpp backend, the pool."""

from ruvllm.llm.base import ChatMessage, Generation, Generator, SamplingParams
from ruvllm.llm.pool import ModelPool
from ruvllm.llm.registry import ModelSpec, Registry

__all__ = ["ChatMessage", "Generation", "Generator", "ModelPool", "ModelSpec", "Registry", "SamplingParams"]
