"""Graph attention over retrieved nodes: ranks and selects the LLM's context (see graph.py)."""

from ruvllm.attention.graph import (
    AttentionParams,
    Candidates,
    GraphAttention,
    GraphAttentionConfig,
    graph_rope,
    poincare_distance,
    poincare_point,
)

__all__ = ["AttentionParams", "Candidates", "GraphAttention", "GraphAttentionConfig", "graph_rope",
           "poincare_distance", "poincare_point"]
