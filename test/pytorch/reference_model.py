"""The NeuralGrok reference Transformer in PyTorch, written from the description in
docs/methods.md: sequence-first layout, nn.MultiheadAttention with in-projection bias,
causal mask, MLP 4x with exact GELU, learned positions, final LayerNorm, head without bias.
Its state-dict names are the ones tapegrok uses, so tapegrok's files load straight into it."""

import json
import struct

import numpy as np
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width, heads, variant):
        super().__init__()
        self.variant = variant
        self.ln_1 = nn.LayerNorm(width)
        self.ln_2 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):  # x: [S, B, d]
        s = x.shape[0]
        mask = torch.full((s, s), float("-inf"), dtype=x.dtype).triu(1)
        if self.variant == "reference":
            x = self.ln_1(x)  # as published: the residual carries the normalised x
            a, _ = self.attn(x, x, x, attn_mask=mask, need_weights=False)
            x = x + a
        else:
            h = self.ln_1(x)
            a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
            x = x + a
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, vocab, seq_len, width, heads, layers, variant="reference"):
        super().__init__()
        self.token_embeddings = nn.Embedding(vocab, width)
        self.position_embeddings = nn.Embedding(seq_len, width)
        self.layers = nn.ModuleList([Block(width, heads, variant) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, ids):  # ids: [B, S] -> logits [B, V] at the answer (last) position
        positions = torch.arange(ids.shape[1])
        h = self.token_embeddings(ids) + self.position_embeddings(positions)
        h = h.transpose(0, 1)  # [S, B, d]
        for layer in self.layers:
            h = layer(h)
        return self.head(self.ln_f(h))[-1]


_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32}


def load_safetensors(path):
    """Minimal safetensors reader (8-byte little-endian header size, JSON header, raw data)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    data = blob[8 + n :]
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[begin:end], dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])
        tensors[name] = torch.from_numpy(array.copy())
    return tensors, meta
