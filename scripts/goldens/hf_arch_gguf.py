#!/usr/bin/env python3
"""Checks hf_tiny_qwen2.gguf, which tests/fixtures/make_test_fixtures.cpp generates next to the
f32 tiny Qwen2 folder of hf_arch_goldens.py: writes that folder as a GGUF file with the `gguf`
package (llama.cpp's writer), laid out as convert_hf_to_gguf.py's Qwen2Model lays it out
(architecture qwen2, qwen2.* keys, Q/K rows in Hugging Face's order (no permutation: llama.cpp
rotates NEOX pairs for qwen2), attn_{q,k,v}.bias F32, tied embeddings (no output.weight), the
gpt2 tokenizer with pre-tokenizer qwen2 and added special tokens as control tokens), and fails
unless the generated file is the same bytes. tests/model/hf_golden_test.cpp runs the file against
the folder's transformers logits.

    .venv-gguf/bin/python scripts/goldens/hf_arch_gguf.py build/test_fixtures
"""
import json
import os
import struct
import sys
import tempfile

import gguf
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURES = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "build", "test_fixtures")
FOLDER = os.path.join(FIXTURES, "hf_tiny_qwen2", "f32")
GENERATED = os.path.join(FIXTURES, "hf_tiny_qwen2.gguf")


def read_safetensors(path):
    """The f32 tensors of one .safetensors file (8-byte header length, JSON header, data)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + begin:8 + n + end],
                                  dtype=np.float32).reshape(info["shape"])
    return out


TENSORS = {  # Hugging Face name (after model.layers.N.) -> GGUF name (after blk.N.)
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def write(path):
    config = json.load(open(os.path.join(FOLDER, "config.json")))
    tok = json.load(open(os.path.join(FOLDER, "tokenizer.json"), encoding="utf-8"))
    tok_config = json.load(open(os.path.join(FOLDER, "tokenizer_config.json"), encoding="utf-8"))
    tensors = read_safetensors(os.path.join(FOLDER, "model.safetensors"))

    w = gguf.GGUFWriter(path, "qwen2")
    w.add_name("hf_tiny_qwen2")
    w.add_block_count(config["num_hidden_layers"])
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(config["num_attention_heads"])
    w.add_head_count_kv(config["num_key_value_heads"])
    w.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = tok["model"]["vocab"]
    added = {t["content"]: t for t in tok["added_tokens"]}
    size = config["vocab_size"]
    by_id = {i: s for s, i in vocab.items()}
    for t in tok["added_tokens"]:
        by_id[t["id"]] = t["content"]
    tokens, types = [], []
    for i in range(size):
        text = by_id.get(i, "[PAD%d]" % i)
        tokens.append(text)
        if i not in by_id:
            types.append(gguf.TokenType.UNUSED)
        elif text in added:
            types.append(gguf.TokenType.CONTROL if added[text]["special"]
                         else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(tokens.index(tok_config["eos_token"]))
    w.add_bos_token_id(config["bos_token_id"])
    w.add_add_bos_token(False)
    if tok_config.get("chat_template"):
        w.add_chat_template(tok_config["chat_template"])

    w.add_tensor("token_embd.weight", tensors["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", tensors["model.norm.weight"])
    for i in range(config["num_hidden_layers"]):
        for hf, name in TENSORS.items():
            w.add_tensor("blk.%d.%s" % (i, name), tensors["model.layers.%d.%s" % (i, hf)])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hf_tiny_qwen2.gguf")
        write(path)
        want = open(path, "rb").read()
    got = open(GENERATED, "rb").read()
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        sys.exit("%s differs from the gguf package's file (%d vs %d bytes), first at byte %d"
                 % (GENERATED, len(got), len(want), at))
    print("%s: the same %d bytes as the gguf package writes" % (GENERATED, len(got)))


if __name__ == "__main__":
    main()
