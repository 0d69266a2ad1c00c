"""convert-gguf's checks on small hand-written GGUF files (no network): architecture, quantisation
type, unreadable file; each a one-line error naming the file and the values. The conversion of a
real file is tested on SmolLM2 (tests/test_real_smollm2.py)."""
import re

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="the gguf package (pip install gguf) reads GGUF files")

from warmfast.cli import main  # noqa: E402
from warmfast.model.gguf import GGUFError, cached_conversion, inspect_gguf  # noqa: E402


def write_gguf(path, arch: str, qtype=gguf.GGMLQuantizationType.F32):
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    if qtype == gguf.GGMLQuantizationType.F32:
        w.add_tensor("token_embd.weight", np.ones((4, 32), dtype=np.float32))
    else:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        w.add_tensor("token_embd.weight", np.zeros((4, 32 // block * size), dtype=np.uint8),
                     raw_dtype=qtype)  # a byte array; the reader derives the shape (4, 32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_inspect_reads_architecture_and_types(tmp_path):
    info = inspect_gguf(write_gguf(tmp_path / "m.gguf", "llama"))
    assert info == {"architecture": "llama", "quant_types": ["F32"], "n_tensors": 1}
    q = inspect_gguf(write_gguf(tmp_path / "q.gguf", "qwen2", gguf.GGMLQuantizationType.Q4_1))
    assert q["quant_types"] == ["Q4_1"]


def test_unsupported_architecture_is_named(tmp_path, capsys):
    path = write_gguf(tmp_path / "g.gguf", "gpt2")
    with pytest.raises(GGUFError, match=r"g.gguf: architecture 'gpt2' is not supported; warmfast converts llama, mistral, qwen2"):
        inspect_gguf(path)
    assert main(["convert-gguf", str(path), str(tmp_path / "out")]) == 2  # before loading anything
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.match(r"warmfast convert-gguf: .*architecture 'gpt2'", err), err
    assert not (tmp_path / "out").exists()


def test_unsupported_quant_type_is_named(tmp_path):
    path = write_gguf(tmp_path / "q81.gguf", "llama", gguf.GGMLQuantizationType.Q8_1)
    with pytest.raises(GGUFError, match=r"q81.gguf: quantisation type\(s\) \['Q8_1'\] cannot be de-quantised.*Q4_1"):
        inspect_gguf(path)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        inspect_gguf(tmp_path / "nope.gguf")
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        cached_conversion(tmp_path / "nope.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(GGUFError, match="junk.gguf: not a readable GGUF file"):
        inspect_gguf(tmp_path / "junk.gguf")


def test_output_folder_must_be_empty(tmp_path, capsys):
    path = write_gguf(tmp_path / "m.gguf", "llama")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert main(["convert-gguf", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(r"warmfast convert-gguf: output folder .*out exists and is not empty.*", err), err
    assert (tmp_path / "out" / "keep.txt").read_text() == "x"
