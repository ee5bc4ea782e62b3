"""A tiny random-weight LFM2-architecture GGUF, to prove LFM2's code path without the real weights.

LFM2 (Liquid AI) interleaves two kinds of block, each followed by a SwiGLU FFN:

* **gated short convolution** — ``in_proj`` (d → 3d) splits into B, C, x; ``y = C ⊙ conv1d(B ⊙ x)``
  with a depthwise causal kernel of ``shortconv.l_cache`` taps, then ``out_proj`` (d → d);
* **grouped-query attention** — q/k/v/o projections with per-head RMSNorm on q and k
  (``attn_q_norm``/``attn_k_norm``) and fewer KV heads than query heads.

llama.cpp tells the two apart by the per-layer ``attention.head_count_kv`` array: 0 marks a
convolution layer. The final RMSNorm is stored as ``token_embd_norm`` and the output head is
tied to ``token_embd``. This module writes exactly the tensor names and hyperparameters
llama.cpp's ``lfm2`` loader expects, with random weights, and a tokenizer borrowed from any
existing GGUF (its ``tokenizer.*`` keys copied verbatim) — so the file goes through the same
``LlamaCppGenerator`` as the default models. The real LFM2 350M has d=1024, 16 layers
(10 conv + 6 attention), 16 query / 8 KV heads, l_cache=3; here the same layout is scaled down.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TinyLFM2:
    n_embd: int = 64
    n_ff: int = 128
    n_head: int = 4
    n_head_kv: int = 2  # GQA: 2 query heads share one KV head
    l_cache: int = 3  # short-convolution kernel taps (as in the real models)
    layers: str = "ccaca"  # c = gated short convolution, a = GQA attention (real 350M: ccacc acacc acacc a)
    n_ctx_train: int = 4096
    rope_theta: float = 1_000_000.0
    rms_eps: float = 1e-5
    seed: int = 0


def _tokenizer_kvs(source: Path) -> list[tuple[str, Any, Any, Any]]:
    """(key, value, GGUFValueType, sub_type) for every ``tokenizer.*`` field of ``source``."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(source), "r")
    out: list[tuple[str, Any, Any, Any]] = []
    for key, fld in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = fld.types[0]
        sub = fld.types[-1] if vtype == GGUFValueType.ARRAY else None
        out.append((key, fld.contents(), vtype, sub))
    return out


def write_tiny_lfm2(dest: str | Path, tokenizer_from: str | Path, cfg: TinyLFM2 = TinyLFM2()) -> Path:
    """Write a random-weight LFM2 GGUF to ``dest`` using the tokenizer of the GGUF ``tokenizer_from``."""
    import gguf
    from gguf import GGMLQuantizationType, GGUFValueType

    dest = Path(dest)
    toks = _tokenizer_kvs(Path(tokenizer_from))
    n_vocab = next(len(v) for k, v, _, _ in toks if k == "tokenizer.ggml.tokens")
    rng = np.random.default_rng(cfg.seed)
    d, ff, hd = cfg.n_embd, cfg.n_ff, cfg.n_embd // cfg.n_head
    kv_dim = hd * cfg.n_head_kv

    def w(*shape: int, scale: float | None = None) -> np.ndarray:
        s = scale if scale is not None else 1.0 / np.sqrt(shape[-1])
        return (rng.standard_normal(shape) * s).astype(np.float32)

    arch = "lfm2"
    writer = gguf.GGUFWriter(str(dest), arch)
    writer.add_name("tiny-random-lfm2")
    writer.add_context_length(cfg.n_ctx_train)
    writer.add_embedding_length(d)
    writer.add_feed_forward_length(ff)
    writer.add_block_count(len(cfg.layers))
    writer.add_head_count(cfg.n_head)
    writer.add_head_count_kv([cfg.n_head_kv if kind == "a" else 0 for kind in cfg.layers])
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.rms_eps)
    writer.add_vocab_size(n_vocab)
    writer.add_uint32(f"{arch}.shortconv.l_cache", cfg.l_cache)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    for key, value, vtype, sub in toks:
        if vtype == GGUFValueType.ARRAY:
            writer.add_key_value(key, list(value), vtype, sub_type=sub)
        else:
            writer.add_key_value(key, value, vtype)

    # token_embd (n_vocab, d) in Q8_0 keeps the file small (Qwen's vocab: ~10 MB instead of ~40)
    emb = w(n_vocab, d, scale=0.02)
    q = gguf.quants.quantize(emb, GGMLQuantizationType.Q8_0)
    writer.add_tensor("token_embd.weight", q, raw_dtype=GGMLQuantizationType.Q8_0)
    writer.add_tensor("token_embd_norm.weight", np.ones(d, dtype=np.float32))  # LFM2's final norm
    for i, kind in enumerate(cfg.layers):
        p = f"blk.{i}"
        writer.add_tensor(f"{p}.attn_norm.weight", np.ones(d, dtype=np.float32))  # operator norm
        if kind == "a":
            writer.add_tensor(f"{p}.attn_q.weight", w(d, d))  # (out, in): ggml {in, out}
            writer.add_tensor(f"{p}.attn_k.weight", w(kv_dim, d))
            writer.add_tensor(f"{p}.attn_v.weight", w(kv_dim, d))
            writer.add_tensor(f"{p}.attn_output.weight", w(d, d))
            writer.add_tensor(f"{p}.attn_q_norm.weight", np.ones(hd, dtype=np.float32))
            writer.add_tensor(f"{p}.attn_k_norm.weight", np.ones(hd, dtype=np.float32))
        elif kind == "c":
            writer.add_tensor(f"{p}.shortconv.in_proj.weight", w(3 * d, d))  # → B, C, x
            writer.add_tensor(f"{p}.shortconv.conv.weight", w(d, cfg.l_cache))  # depthwise (d, l_cache)
            writer.add_tensor(f"{p}.shortconv.out_proj.weight", w(d, d))
        else:
            raise ValueError(f"layer kind {kind!r}: use 'c' (short convolution) or 'a' (attention)")
        writer.add_tensor(f"{p}.ffn_norm.weight", np.ones(d, dtype=np.float32))
        writer.add_tensor(f"{p}.ffn_gate.weight", w(ff, d))
        writer.add_tensor(f"{p}.ffn_up.weight", w(ff, d))
        writer.add_tensor(f"{p}.ffn_down.weight", w(d, ff))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest
