"""GGUF export: one file llama.cpp (and so Ollama, LM Studio, llama-cpp-python) runs.

The file declares the `llama` architecture, holds every tensor under llama.cpp's name and
layout, and carries the tokenizer as llama.cpp's byte-level BPE (`gpt2` model, `gpt-2`
pre-tokenizer): our tokens, token types, merges and end-of-text id. llama.cpp's own
converter refuses our tokenizer only because it fingerprints pre-tokenizers it already
knows; ours splits text with GPT-2's rule, which is what `gpt-2` names. The tests prove
the claim with llama-cpp-python: the same token ids, the same greedy tokens, close logits.

Like the Hugging Face export, the file is written under a temporary name and renamed into
place, and it never replaces a file this tool did not write (every file we write carries
the key `lightlm.exported_by`). Torch-free at import (the CLI and the UI read GGUF_TYPES);
torch and the `gguf` package load when an export runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.config import RunConfig
from engine.errors import UserFacingError

if TYPE_CHECKING:
    from engine.data.tokenizer import TextTokenizer

# The --gguf-type choices: what the 2-D weight matrices are stored as. Norm weights (1-D)
# stay float32 in every type, as llama.cpp's converter keeps them.
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
ARCHITECTURE = "llama"
EXPORTED_BY_KEY = "lightlm.exported_by"
EXPORTED_BY = "lightlm-tui"


# llama.cpp refuses a `gpt2` vocabulary without a merges list, and the gguf package's writer
# cannot store an empty one.
BYTES_REFUSAL = ("the bytes tokenizer has no BPE merges, and llama.cpp's byte-level tokenizer needs "
                 "a merges list; train with data.tokenizer = \"bpe\" to export to GGUF")


class ExportError(UserFacingError):
    """The run cannot be exported to GGUF as asked; the message says why."""


@dataclass(frozen=True)
class GGUFVocab:
    """The tokenizer as llama.cpp's BPE reads it: one token string and type per id, the
    merges in rank order ("left right"), and the end-of-text id."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    eos_id: int


def gguf_incompatibilities(config: RunConfig) -> list[str]:
    """Why `config`'s model cannot be written as a llama.cpp `llama` model (empty when it can)."""
    m, reasons = config.model, []
    if m.use_moe:
        reasons.append("mixture-of-experts runs are not exportable to GGUF yet")
    if config.lora.enabled:
        reasons.append("LoRA runs are not exportable to GGUF yet; `lightlm-tui export RUN_DIR` writes the merged "
                       "model as a Hugging Face folder, which llama.cpp's convert_hf_to_gguf.py converts")
    if m.norm_type != "rmsnorm":
        reasons.append(f"norm_type {m.norm_type!r}: llama.cpp's llama architecture uses rmsnorm")
    if m.activation_fn != "silu":
        reasons.append(f"activation_fn {m.activation_fn!r}: llama.cpp's llama architecture gates with silu")
    if config.data.tokenizer == "bytes":
        reasons.append(BYTES_REFUSAL)
    if m.num_dims % m.num_heads or m.num_heads % m.num_kv_heads or m.head_dim % 2:
        reasons.append("the head shape (num_dims / num_heads / num_kv_heads) does not divide evenly")
    return reasons


def _tokenizer_json(tokenizer: TextTokenizer, name: str) -> dict[str, Any]:
    backend = getattr(tokenizer.hf, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(
            f"tokenizer {name!r} is not a fast (tokenizers) tokenizer, so its BPE cannot be "
            "read out for GGUF; train with data.tokenizer = \"bpe\" to export to GGUF"
        )
    return json.loads(backend.to_str())


def _describe(component: dict[str, Any] | None) -> str:
    """A pre-tokenizer / normalizer as a short name, e.g. Sequence(Split, ByteLevel)."""
    if component is None:
        return "none"
    inner = component.get("pretokenizers") or component.get("normalizers")
    kind = component.get("type", "?")
    return f"{kind}({', '.join(_describe(c) for c in inner)})" if inner else kind


def gguf_vocab(tokenizer: TextTokenizer, vocab_size: int, name: str = "") -> GGUFVocab:
    """The run's tokenizer in llama.cpp's `gpt2` form, or an ExportError naming what llama.cpp
    would tokenise differently. Accepted: a byte-level BPE that splits with GPT-2's rule
    (ByteLevel pre-tokenizer with its regex, no prefix space, no normalizer): our trained
    `bpe`, and hub tokenizers built the same way (GPT-2's own). `name` is how messages call
    the tokenizer (the run's data.tokenizer)."""
    name = name or tokenizer.kind
    spec = _tokenizer_json(tokenizer, name)
    model, pre, normalizer = spec.get("model") or {}, spec.get("pre_tokenizer"), spec.get("normalizer")
    if model.get("type") != "BPE":
        raise ExportError(f"tokenizer {name!r} is a {model.get('type')} model; "
                          "GGUF export supports byte-level BPE only")
    if normalizer is not None:
        raise ExportError(f"tokenizer {name!r} has a {_describe(normalizer)} normalizer, which llama.cpp's "
                          "gpt-2 pre-tokenizer does not apply; GGUF export would tokenise differently")
    gpt2_split = (pre is not None and pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
                  and not pre.get("add_prefix_space", False))
    if not gpt2_split:
        flags = " with add_prefix_space" if pre and pre.get("add_prefix_space") else ""
        flags += " without its regex" if pre and pre.get("use_regex") is False else ""
        raise ExportError(f"tokenizer {name!r} uses pre-tokenizer {_describe(pre)}{flags}, not GPT-2's byte-level "
                          "split (the only one GGUF export maps to llama.cpp so far)")
    if model.get("byte_fallback") or model.get("ignore_merges"):
        raise ExportError(f"tokenizer {name!r} sets byte_fallback or ignore_merges, which llama.cpp's gpt2 "
                          "tokenizer does not do")

    by_id = {i: token for token, i in tokenizer.hf.get_vocab().items()}
    decoder = getattr(tokenizer.hf, "added_tokens_decoder", {})
    # Token types as llama.cpp's converter assigns them: special added tokens are CONTROL
    # (matched only when the caller parses specials), other added tokens USER_DEFINED,
    # ids the tokenizer never produces UNUSED placeholders so the table covers the model.
    from gguf import TokenType

    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(TokenType.UNUSED))
        elif i in decoder:
            tokens.append(token)
            types.append(int(TokenType.CONTROL if decoder[i].special else TokenType.USER_DEFINED))
        else:
            tokens.append(token)
            types.append(int(TokenType.NORMAL))
    # tokenizers >= 0.20 stores merges as [left, right] pairs, older files as "left right".
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if not merges:
        raise ExportError(BYTES_REFUSAL)
    return GGUFVocab(tokens, types, merges, tokenizer.eos_id)


def interleave_rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """A q_proj / k_proj weight (heads * D, in) with each head's rows reordered from our
    rotate-half pairing (row j with row j + D/2) to llama.cpp's adjacent pairing (rows 2j,
    2j+1), which its `llama` architecture's RoPE rotates. The attention scores are the same,
    since queries and keys are reordered alike and the dot product does not see the order."""
    rows, cols = weight.shape
    d = rows // heads
    return weight.reshape(heads, 2, d // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def llama_cpp_tensors(state_dict: dict[str, Any], config: RunConfig) -> Iterator[tuple[str, np.ndarray]]:
    """(llama.cpp name, float32 array) for every weight. The output head is tied to the
    embedding, so no `output.weight` is written: llama.cpp then reads token_embd for it."""
    from gguf import MODEL_TENSOR, TENSOR_NAMES

    m = config.model

    def array(name: str) -> np.ndarray:
        return state_dict[name].detach().float().cpu().numpy()

    def named(kind: MODEL_TENSOR, block: int | None = None) -> str:
        return TENSOR_NAMES[kind].format(bid=block) + ".weight"

    yield named(MODEL_TENSOR.TOKEN_EMBD), array("embed_tokens.weight")
    for i in range(m.num_layers):
        p = f"layers.{i}."
        yield named(MODEL_TENSOR.ATTN_NORM, i), array(p + "input_layernorm.weight")
        yield named(MODEL_TENSOR.ATTN_Q, i), interleave_rotary_rows(array(p + "self_attn.q_proj.weight"), m.num_heads)
        yield named(MODEL_TENSOR.ATTN_K, i), interleave_rotary_rows(array(p + "self_attn.k_proj.weight"),
                                                                    m.num_kv_heads)
        yield named(MODEL_TENSOR.ATTN_V, i), array(p + "self_attn.v_proj.weight")
        yield named(MODEL_TENSOR.ATTN_OUT, i), array(p + "self_attn.o_proj.weight")
        yield named(MODEL_TENSOR.FFN_NORM, i), array(p + "post_attention_layernorm.weight")
        yield named(MODEL_TENSOR.FFN_GATE, i), array(p + "mlp.gate_proj.weight")
        yield named(MODEL_TENSOR.FFN_UP, i), array(p + "mlp.up_proj.weight")
        yield named(MODEL_TENSOR.FFN_DOWN, i), array(p + "mlp.down_proj.weight")
    yield named(MODEL_TENSOR.OUTPUT_NORM), array("norm.weight")


def _encoded(array: np.ndarray, gguf_type: str) -> tuple[np.ndarray, Any]:
    """The array as stored, and its GGML type. A matrix whose rows are not a whole number of
    q8_0 blocks (32 values) is stored as f16 instead, as llama.cpp's converter does."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    if array.ndim == 1 or gguf_type == "f32":
        return array.astype(np.float32), Q.F32
    qtype = {"f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[gguf_type]
    if qtype == Q.Q8_0 and array.shape[-1] % 32:
        qtype = Q.F16
    return quantize(array, qtype), qtype


def file_type(gguf_type: str) -> int:
    """general.file_type for a --gguf-type (llama.cpp's LlamaFileType)."""
    from gguf import LlamaFileType

    return int({"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16,
                "bf16": LlamaFileType.MOSTLY_BF16, "q8_0": LlamaFileType.MOSTLY_Q8_0}[gguf_type])


def written_by_us(path: Path) -> bool:
    """Whether `path` is a GGUF file this tool wrote (so an export may replace it)."""
    try:
        from gguf import GGUFReader

        return EXPORTED_BY_KEY in GGUFReader(path).fields
    except Exception:  # not GGUF, truncated, unreadable: not ours either way
        return False


def default_gguf_path(run_dir: Path, gguf_type: str) -> Path:
    """RUN_DIR/export/gguf/NAME-TYPE.gguf"""
    run_dir = Path(run_dir)
    return run_dir / "export" / "gguf" / f"{run_dir.resolve().name}-{gguf_type}.gguf"


def export_gguf(
    run_dir: Path, out_file: Path | None = None, gguf_type: str = "f32", checkpoint: Path | None = None
) -> Path:
    """Write the run's latest checkpoint (or `checkpoint`) as one GGUF file with weights in
    `gguf_type` (f32, f16, bf16 or q8_0); returns its path (default RUN_DIR/export/gguf/NAME-TYPE.gguf)."""
    from engine.config import ConfigError, load_config
    from engine.runs.trained_run import load_run

    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ExportError("GGUF export needs the gguf package; install it with `pip install gguf`") from None
    if gguf_type not in GGUF_TYPES:
        raise ExportError(f"unknown GGUF type {gguf_type!r}; choose one of {', '.join(GGUF_TYPES)}")
    run_dir = Path(run_dir)
    try:
        config = load_config(run_dir / "config.toml")
    except ConfigError as exc:
        raise ExportError(f"{run_dir}/config.toml: {exc}") from None
    reasons = gguf_incompatibilities(config)
    if reasons:
        raise ExportError(f"cannot export to GGUF: {'; '.join(reasons)}")
    out_file = Path(out_file) if out_file else default_gguf_path(run_dir, gguf_type)
    if out_file.is_dir():
        raise ExportError(f"{out_file} is a folder; give --out a file name such as model.gguf")
    if out_file.exists() and not written_by_us(out_file):
        raise ExportError(f"{out_file} exists and is not a GGUF file this tool wrote; choose a new file name")

    run = load_run(run_dir, checkpoint)  # a run without a complete checkpoint stops here, with a sentence
    vocab = gguf_vocab(run.tokenizer, config.model.vocab_size, config.data.tokenizer)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    staging = out_file.parent / f".{out_file.name}.tmp-{os.getpid()}"
    try:
        _write(staging, config, run.model.state_dict(), vocab, gguf_type,
               run_name=config.name or run_dir.resolve().name, step=run.step)
        os.replace(staging, out_file)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return out_file


def _write(path: Path, config: RunConfig, state_dict: dict[str, Any], vocab: GGUFVocab, gguf_type: str,
           run_name: str, step: int) -> None:
    from gguf import GGML_QUANT_VERSION, GGUFWriter

    m = config.model
    writer = GGUFWriter(path, ARCHITECTURE)
    writer.add_name(run_name)
    writer.add_string(EXPORTED_BY_KEY, EXPORTED_BY)
    writer.add_uint32("lightlm.step", step)
    writer.add_context_length(m.context_len)
    writer.add_embedding_length(m.num_dims)
    writer.add_block_count(m.num_layers)
    writer.add_feed_forward_length(m.ffn_hidden_dims)
    writer.add_head_count(m.num_heads)
    writer.add_head_count_kv(m.num_kv_heads)
    writer.add_key_length(m.head_dim)
    writer.add_value_length(m.head_dim)
    writer.add_rope_dimension_count(m.head_dim)
    writer.add_rope_freq_base(float(m.rope_theta))
    writer.add_layer_norm_rms_eps(float(m.rmsnorm_eps))
    writer.add_vocab_size(m.vocab_size)
    writer.add_file_type(file_type(gguf_type))
    writer.add_quantization_version(GGML_QUANT_VERSION)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    # Documents were joined with EOS in training and nothing else marks a start, so EOS is
    # also the BOS llama.cpp asks for, and neither is added to a prompt.
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_bos_token_id(vocab.eos_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)

    for name, array in llama_cpp_tensors(state_dict, config):
        data, qtype = _encoded(array, gguf_type)
        writer.add_tensor(name, data, raw_dtype=qtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        for handle in writer.fout or []:
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        writer.close()
