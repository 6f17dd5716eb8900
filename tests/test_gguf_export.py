"""GGUF export, proven by llama.cpp itself (llama-cpp-python): the same token ids as our
tokenizer, the same greedy tokens as our `generate`, close logits for f16 and q8_0, and
metadata that reads back as the run's config."""

import dataclasses
import io
import shutil
from contextlib import closing

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig, load_config, save_config
from engine.runs.trained_run import load_run
from engine.use.gguf_export import EXPORTED_BY_KEY, export_gguf
from engine.runs.run_dir import EventLog
from engine.train.trainer import Trainer, TrainControl

llama_cpp = pytest.importorskip("llama_cpp")  # installed by the test extra; built from source
gguf = pytest.importorskip("gguf")

EOS = "<|endoftext|>"
TEXTS = [
    "import os\nimport ",
    "def main(argv: list[str]) -> int:\n    return sum(x ** 2 for x in range(10))  # squares\n",
    "naïve café, Ærø, 日本語のテキスト, emoji 🐍🚀 and ∑∫ maths",
    "wide    gaps\t\ttabs\n\n\n\n   trailing   \n    ",
    "it's they're we'll I'd 12345 3.14159 0xFF",
    f"first document{EOS}second document{EOS}",
]
# Measured on the tiny model below (2 layers x 64 dims, vocab 512, 60 steps, fp32), over 4
# windows of 64 tokens x 512 ids, logits spanning about 7: the largest |our logit - llama.cpp's|
# was 6.9e-5 (f32), 8.1e-4 (f16), 6.0e-3 (bf16) and 1.5e-2 (q8_0), with the same argmax at
# every position. The bounds leave 4-14x room for other CPUs' kernels.
LOGIT_TOLERANCE = {"f32": 1e-3, "f16": 5e-3, "bf16": 0.03, "q8_0": 0.06}
FILE_TYPE = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7}  # general.file_type, llama.cpp's LlamaFileType


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, token_cache):
    """A tiny run trained for real (60 steps, fp32), under runs/ so the Runs screen lists it."""
    root = tmp_path_factory.mktemp("gguf")
    config = RunConfig(
        name="gguf",
        model=ModelConfig(vocab_size=512, num_dims=64, num_heads=4, num_kv_heads=2, num_layers=2,
                          ffn_hidden_dims=128, context_len=64),
        train=TrainConfig(max_steps=60, max_seq_len=32, batch_size=4, learning_rate=3e-3, use_dtype="float32",
                          log_interval=10, eval_interval=0, eval_batches=2, checkpoint_every_steps=0,
                          checkpoint_every_minutes=0.0, use_epoch_checkpoints=False, runs_dir=str(root / "runs"),
                          seed=7),
        data=DataConfig(source="python-docs", tokenizer_vocab_size=512, val_fraction=0.05, cache_dir=token_cache),
    )
    run_dir = root / "runs" / "gguf"
    log = EventLog(run_dir)
    finished = Trainer(config, run_dir, log.write, TrainControl(), threads=1).run()
    log.close()
    assert finished.status == "completed", finished.message
    return run_dir


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """The run exported once in each tested type: {type: path}."""
    out = tmp_path_factory.mktemp("gguf-files")
    return {t: export_gguf(trained_run, out / f"model-{t}.gguf", t) for t in LOGIT_TOLERANCE}


def open_llama(path, **options):
    """llama.cpp on one thread, closed when the `with` ends (its finaliser fails at interpreter exit)."""
    return closing(llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=1, n_batch=64, verbose=False, **options))


def llama_logits(path, ids: list[int]) -> np.ndarray:
    with open_llama(path, logits_all=True) as llm:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])


def our_logits(run, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        logits, _, _ = run.model(torch.tensor([ids]))
    return logits[0].numpy()


def test_llama_cpp_tokenises_like_our_tokenizer(trained_run, exported):
    run = load_run(trained_run)
    with open_llama(exported["f32"], vocab_only=True) as llm:
        for text in TEXTS:
            ours = run.tokenizer.encode_batch([text])[0]
            theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            assert theirs == ours, text
            assert llm.detokenize(theirs, special=True).decode("utf-8") == text
        assert llm.tokenize(EOS.encode(), add_bos=False, special=True) == [run.tokenizer.eos_id]
        assert llm.token_eos() == run.tokenizer.eos_id


def test_greedy_continuation_matches_our_generate(trained_run, exported):
    run = load_run(trained_run)
    prompt = TEXTS[0]
    ids = run.tokenizer.encode_batch([prompt])[0]
    theirs = []
    with open_llama(exported["f32"]) as llm:
        for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
            theirs.append(token)
            if len(theirs) == 40:
                break
        theirs_text = llm.detokenize(theirs).decode("utf-8", errors="replace")
    assert theirs_text == run.tokenizer.decode(theirs)
    # Ours, 40 tokens without stopping at EOS ...
    ours = run.model.generate(torch.tensor([ids]), 40, temperature=0.0)[0, len(ids):].tolist()
    assert theirs == ours
    # ... and what `lightlm-tui generate --temperature 0` prints (it stops at EOS).
    code, out, err = run_cli("generate", str(trained_run), "--prompt", prompt, "--temperature", "0",
                             "--max-new-tokens", "40")
    assert code == 0, err
    eos = run.tokenizer.eos_id
    upto_eos = theirs[: theirs.index(eos)] if eos in theirs else theirs
    assert len(upto_eos) >= 32
    assert out == prompt + run.tokenizer.decode(upto_eos) + "\n"


@pytest.mark.parametrize("gguf_type", list(LOGIT_TOLERANCE))
def test_logits_are_close_to_ours(trained_run, exported, gguf_type):
    run = load_run(trained_run)
    ids = run.tokenizer.encode_batch(["".join(TEXTS) * 3])[0]
    assert len(ids) >= 4 * 64
    windows = [ids[start:start + 64] for start in range(0, 4 * 64, 64)]
    for window in windows:
        theirs, ours = llama_logits(exported[gguf_type], window), our_logits(run, window)
        gap = float(np.abs(theirs - ours).max())
        assert gap < LOGIT_TOLERANCE[gguf_type], f"{gguf_type}: max |logit gap| {gap:.4g}"
        assert (theirs.argmax(-1) == ours.argmax(-1)).mean() >= (1.0 if gguf_type == "f32" else 0.95)


def test_rotary_rows_are_reordered_for_llama_cpp(trained_run, tmp_path, monkeypatch):
    """With sharper attention (query and key weights x4) position matters more, so exporting
    q_proj / k_proj in our rotate-half order would show: it does, and the reordered rows agree."""
    import engine.use.gguf_export as gguf_export
    from safetensors.torch import load_file, save_file

    from engine.runs.checkpoint import load_latest

    run_dir = copy_run(trained_run, tmp_path / "sharp")
    weights_file = load_latest(run_dir).path / "model.safetensors"
    weights = load_file(weights_file)
    save_file({k: v * 4 if k.endswith(("q_proj.weight", "k_proj.weight")) else v for k, v in weights.items()},
              weights_file)
    # The checkpoint keeps each file's checksum in state.json: record the new weights' own.
    import hashlib
    import json

    state_file = weights_file.parent / "state.json"
    state = json.loads(state_file.read_text())
    state["sha256"]["model.safetensors"] = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    state_file.write_text(json.dumps(state))
    run = load_run(run_dir)
    ids = run.tokenizer.encode_batch([TEXTS[1]])[0][:40]
    ours = our_logits(run, ids)
    assert np.abs(llama_logits(export_gguf(run_dir, tmp_path / "a.gguf"), ids) - ours).max() < LOGIT_TOLERANCE["f32"]
    monkeypatch.setattr(gguf_export, "interleave_rotary_rows", lambda weight, heads: weight)
    unordered = llama_logits(export_gguf(run_dir, tmp_path / "b.gguf"), ids)
    assert np.abs(unordered - ours).max() > 50 * LOGIT_TOLERANCE["f32"]


def test_metadata_reads_back_as_the_run_config(trained_run, exported):
    config = load_config(trained_run / "config.toml")
    m = config.model
    run = load_run(trained_run)
    for gguf_type, path in exported.items():
        fields = gguf.GGUFReader(path).fields

        def value(key):
            return fields[key].contents()

        assert value("general.architecture") == "llama"
        assert value("llama.context_length") == m.context_len
        assert value("llama.embedding_length") == m.num_dims
        assert value("llama.block_count") == m.num_layers
        assert value("llama.feed_forward_length") == m.ffn_hidden_dims
        assert value("llama.attention.head_count") == m.num_heads
        assert value("llama.attention.head_count_kv") == m.num_kv_heads
        assert value("llama.rope.dimension_count") == m.head_dim
        assert value("llama.rope.freq_base") == pytest.approx(m.rope_theta)
        assert value("llama.attention.layer_norm_rms_epsilon") == pytest.approx(m.rmsnorm_eps)
        assert value("llama.vocab_size") == m.vocab_size
        assert value("general.file_type") == FILE_TYPE[gguf_type]
        assert value("tokenizer.ggml.model") == "gpt2" and value("tokenizer.ggml.pre") == "gpt-2"
        assert value("tokenizer.ggml.eos_token_id") == run.tokenizer.eos_id
        tokens = value("tokenizer.ggml.tokens")
        assert len(tokens) == m.vocab_size and tokens[run.tokenizer.eos_id] == EOS
        assert value(EXPORTED_BY_KEY) == "lightlm-tui"


def test_cli_exports_gguf_and_never_overwrites_a_foreign_file(trained_run, tmp_path):
    target = tmp_path / "out" / "model.gguf"
    code, out, err = run_cli("export", str(trained_run), "--format", "gguf", "--gguf-type", "q8_0",
                             "--out", str(target))
    assert code == 0, err
    assert target.is_file() and str(target) in out
    assert run_cli("export", str(trained_run), "--format", "gguf", "--out", str(target))[0] == 0  # ours: replaced
    assert gguf.GGUFReader(target).fields["general.file_type"].contents() == 0
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.gguf"]  # no temporary left behind

    foreign = tmp_path / "notes.gguf"
    foreign.write_text("someone else's file")
    code, _, err = run_cli("export", str(trained_run), "--format", "gguf", "--out", str(foreign))
    assert code == 2 and "not a GGUF file this tool wrote" in err and "Traceback" not in err
    assert foreign.read_text() == "someone else's file"

    code, _, _ = run_cli("export", str(trained_run))  # --format hf stays the default
    assert code == 0 and (trained_run / "export" / "hf" / "model.safetensors").is_file()


def copy_run(run_dir, target, **model_or_data):
    """A copy of the run whose config.toml says something else."""
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("export"))
    config = load_config(target / "config.toml")
    model = {k: v for k, v in model_or_data.items() if hasattr(config.model, k)}
    data = {k: v for k, v in model_or_data.items() if k not in model}
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, **model),
                                 data=dataclasses.replace(config.data, **data))
    save_config(config, target / "config.toml")
    return target


@pytest.mark.parametrize(
    "change, sentence",
    [
        ({"tokenizer": "bytes"}, "bytes tokenizer"),
        ({"use_moe": True}, "mixture-of-experts runs are not exportable to GGUF yet"),
        ({"norm_type": "layernorm"}, "llama.cpp's llama architecture uses rmsnorm"),
    ],
)
def test_unexportable_runs_get_one_sentence(trained_run, tmp_path, change, sentence):
    run_dir = copy_run(trained_run, tmp_path / "run", **change)
    code, _, err = run_cli("export", str(run_dir), "--format", "gguf")
    assert code == 2 and sentence in err and "Traceback" not in err
    assert not (run_dir / "export").exists()


def test_run_without_a_checkpoint_gets_one_sentence(trained_run, tmp_path):
    run_dir = tmp_path / "fresh"
    run_dir.mkdir()
    shutil.copy(trained_run / "config.toml", run_dir / "config.toml")
    code, _, err = run_cli("export", str(run_dir), "--format", "gguf")
    assert code == 2 and "checkpoint" in err and "Traceback" not in err
    assert not list(run_dir.rglob("*.gguf"))


async def test_runs_screen_exports_gguf(trained_run):
    from lightlm_tui.app import make_app
    from tui_helpers import wait_for
    from textual.widgets import DataTable

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.action_runs(trained_run.parent)
        await wait_for(lambda: app.screen is screen and screen.query_one(DataTable).row_count == 1, pilot)
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("down", "enter")  # the first GGUF choice: f32
        target = trained_run / "export" / "gguf" / "gguf-f32.gguf"
        await wait_for(lambda: target.is_file(), pilot)
    assert gguf.GGUFReader(target).fields["general.file_type"].contents() == 0


def tokenizer_with(pre_tokenizer=None, normalizer=None):
    """Our trained-BPE kind of tokenizer with another pre-tokenizer or normalizer (what a hub
    tokenizer loaded by AutoTokenizer may have)."""
    from engine.data.tokenizer import _wrap, train_bpe

    backend = train_bpe(["def f(x):\n    return x + 1\n"] * 20, 300)
    if pre_tokenizer is not None:
        backend.pre_tokenizer = pre_tokenizer
    if normalizer is not None:
        backend.normalizer = normalizer
    return _wrap(backend, "some/hub-tokenizer")


def test_tokenizers_llama_cpp_would_split_differently_are_refused_by_name():
    from tokenizers import Regex, normalizers, pre_tokenizers

    from engine.use.gguf_export import ExportError, gguf_vocab

    plain = tokenizer_with()
    vocab = gguf_vocab(plain, len(plain.hf) + 2)  # ids past the tokenizer become unused placeholders
    assert vocab.tokens[-1] == f"[PAD{len(plain.hf) + 1}]" and vocab.token_types[-1] == gguf.TokenType.UNUSED
    assert vocab.token_types[plain.eos_id] == gguf.TokenType.CONTROL and vocab.merges[0].count(" ") == 1

    cases = [
        (tokenizer_with(pre_tokenizers.Whitespace()), "uses pre-tokenizer Whitespace"),
        (tokenizer_with(pre_tokenizers.Sequence([  # Llama 3's shape: its own split, then bytes
            pre_tokenizers.Split(Regex(r"\p{N}{1,3}"), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])),
         "uses pre-tokenizer Sequence(Split, ByteLevel)"),
        (tokenizer_with(pre_tokenizers.ByteLevel(add_prefix_space=True)),
         "uses pre-tokenizer ByteLevel with add_prefix_space"),
        (tokenizer_with(normalizer=normalizers.NFKC()), "has a NFKC normalizer"),
    ]
    for tokenizer, sentence in cases:
        with pytest.raises(ExportError, match=sentence.replace("(", r"\(").replace(")", r"\)")) as caught:
            gguf_vocab(tokenizer, len(tokenizer.hf), "some/hub-tokenizer")
        assert "'some/hub-tokenizer'" in str(caught.value)
