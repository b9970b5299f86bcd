import re

import pytest

from pipelines.sources.corpus import CorpusError, load_corpus
from pipelines.sources.model_source import ModelLoadError, load_model, resolve


def test_local_file_splits_at_a_line_boundary(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("".join(f"line {i}\n" for i in range(100)), encoding="utf-8")
    c = load_corpus(str(path))
    assert c.source == "file"
    assert c.train.endswith("line 89\n") and c.validation.startswith("line 90\n")
    assert len(c.digest) == 64
    assert load_corpus(str(path)).digest == c.digest


def test_folder_uses_named_splits(tmp_path):
    (tmp_path / "train.txt").write_text("alpha beta\n" * 5)
    (tmp_path / "valid.txt").write_text("gamma\n" * 5)
    c = load_corpus(str(tmp_path))
    assert c.source == "folder" and "gamma" in c.validation and "gamma" not in c.train


@pytest.mark.parametrize("spec, message", [
    ("./missing.txt", "no such file or folder"),
    ("no-such-org/no-such-dataset", "offline? pass a local text file or folder"),
])
def test_unloadable_corpora_explain_themselves(spec, message):
    with pytest.raises(CorpusError, match=re.escape(message)):
        load_corpus(spec)


def test_non_utf8_and_empty_files(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(CorpusError, match="not UTF-8"):
        load_corpus(str(tmp_path / "bad.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CorpusError, match="empty"):
        load_corpus(str(tmp_path / "empty.txt"))


def test_model_specs_resolve(tmp_path):
    gguf = tmp_path / "m.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve(str(gguf)) == ("gguf", str(tmp_path), "m.Q4.gguf")
    assert resolve(str(tmp_path)) == ("gguf", str(tmp_path), "m.Q4.gguf")
    assert resolve("HuggingFaceTB/SmolLM2-135M") == ("hub", "HuggingFaceTB/SmolLM2-135M", None)
    with pytest.raises(ModelLoadError, match="no such model"):
        resolve("./nope")
    (tmp_path / "n.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="several GGUF"):
        resolve(str(tmp_path))


def test_local_folder_loads_with_a_fingerprint(trained_model_dir):
    model, tok, source = load_model(str(trained_model_dir), dtype="bf16")
    assert source.kind == "folder" and len(source.fingerprint) == 64
    assert next(model.parameters()).dtype.is_floating_point and not model.training
    assert len(tok("hello world")["input_ids"]) > 0


def test_unreachable_hub_model_is_one_clear_line():
    with pytest.raises(ModelLoadError) as info:
        load_model("no-such-org/no-such-model")
    assert "Offline? pass a local folder or a .gguf file" in str(info.value)
    assert "\n" not in str(info.value)


def test_gguf_file_loads_with_the_same_logits(trained_model_dir, tmp_path):
    import torch

    from tests.gguf_file import write_llama_gguf

    model, tok, _ = load_model(str(trained_model_dir))
    path = write_llama_gguf(model, trained_model_dir, tmp_path / "tiny.gguf")
    gguf_model, gguf_tok, source = load_model(str(path))
    assert (source.kind, source.gguf_file) == ("gguf", "tiny.gguf") and len(source.fingerprint) == 64
    ids = torch.tensor([tok("def f(x): return x + 1", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, gguf_model(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert gguf_tok.decode(gguf_tok("hello world", add_special_tokens=False)["input_ids"]) == "hello world"
