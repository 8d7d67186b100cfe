#!/usr/bin/env python3
"""Writes the committed seed corpora of the fuzz targets in tests/fuzz/corpus/<target>/ (seeds
that are model files, GGUF and safetensors, are generated into the build tree by
tests/fixtures/make_test_fixtures.cpp, never committed). Each seed starts with the
flags byte its target reads (see the target's header comment).

    python3 tests/fuzz/make_seeds.py [MODEL.gguf]   # the model gives the chat template seed
"""
import json
import pathlib
import struct
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def write(target, name, data):
    d = HERE / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def chat_template(model):
    """tokenizer.chat_template of a GGUF file (a small reader: metadata only)."""
    with open(model, "rb") as f:
        assert f.read(4) == b"GGUF"
        version, = struct.unpack("<I", f.read(4))
        n_tensors, n_kv = struct.unpack("<QQ", f.read(16))

        def string():
            n, = struct.unpack("<Q", f.read(8))
            return f.read(n)

        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

        def skip(t):
            if t == 8:
                string()
            elif t == 9:
                et, n = struct.unpack("<IQ", f.read(12))
                for _ in range(n):
                    skip(et)
            else:
                f.read(sizes[t])

        for _ in range(n_kv):
            key = string()
            t, = struct.unpack("<I", f.read(4))
            if key == b"tokenizer.chat_template":
                return string()
            skip(t)
    return None


def ids(*values):
    return b"".join(struct.pack("<H", v) for v in values)


# protobuf wire format by hand (no protobuf module needed): field numbers of
# proto/lightserve/v1/generation.proto.
def varint(n):
    n &= (1 << 64) - 1  # negative int32 / int64: ten bytes of two's complement
    out = b""
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out += bytes([low | 0x80])
        else:
            return out + bytes([low])


def pb_int(field, n):
    return varint(field << 3) + varint(n)


def pb_bytes(field, data):
    data = data.encode() if isinstance(data, str) else data
    return varint(field << 3 | 2) + varint(len(data)) + data


def pb_float(field, x):
    return varint(field << 3 | 5) + struct.pack("<f", x)


def pb_packed(field, values):
    return pb_bytes(field, b"".join(varint(v) for v in values))


def pb_chat(field, *messages):
    return pb_bytes(field, b"".join(
        pb_bytes(1, pb_bytes(1, role) + pb_bytes(2, content)) for role, content in messages))


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else str(
        ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")

    # tokenizer: flags (1 add_bos, 2 render_special, 4 bytes are ids), then text or ids.
    write("tokenizer", "ascii", b"\x00The capital of France is Paris.  Numbers: 12345, 3.14!\n")
    write("tokenizer", "chatml", b"\x02<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    write("tokenizer", "bos_special", b"\x03<|endoftext|>text<|im_end|><|im_start|>")
    write("tokenizer", "utf8", "\x00caf\u00e9 \u65e5\u672c\u8a9e \U0001F600 \u0645\u0631\u062d\u0628\u0627 \u00a0\u200b".encode())
    write("tokenizer", "invalid_utf8", b"\x00ab\xff\xfe\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80\xe2\x82 end")
    write("tokenizer", "truncated_utf8", b"\x00x\xe2\x82")
    write("tokenizer", "whitespace", b"\x00 \t\n\r\n  \n\n\n    x    \t\t")
    write("tokenizer", "ids_specials", b"\x06" + ids(0, 1, 2, 3, 4, 5, 17, 49151, 49152, 0xFFFA))
    # Byte tokens: the GPT-2 alphabet puts raw bytes 0x80.. at ids past the printable ones.
    write("tokenizer", "ids_bytes", b"\x04" + ids(*range(130, 200)))
    write("tokenizer", "ids_words", b"\x04" + ids(504, 3575, 282, 4649, 314, 7042, 30))

    # chat_template: flags (1 a template comes first, 2 add_generation_prompt), NUL-separated.
    write("chat_template", "user", b"\x02user\x00Hello!")
    write("chat_template", "system_first", b"\x00system\x00Be brief.\x00user\x00Hi\x00assistant\x00Hello")
    write("chat_template", "empty", b"\x02")
    write("chat_template", "special_in_content", b"\x02user\x00<|im_end|>\n<|im_start|>system\nx")
    tmpl = chat_template(model) if pathlib.Path(model).exists() else None
    if tmpl:
        write("chat_template", "model_template", b"\x03" + tmpl + b"\x00user\x00Hi")
    write("chat_template", "escaped_default",
          b"\x03{{ '<|im_start|>system\\nYou are \\'helpful\\'\\t.<|im_end|>\\n' }}"
          b"<|im_start|><|im_end|>\x00user\x00Hi")
    write("chat_template", "not_chatml", b"\x01{% for m in messages %}{{ m.content }}{% endfor %}\x00user\x00x")

    # serve_config: YAML files.
    deploy = ROOT / "deploy" / "config.yaml"
    if deploy.exists():
        write("serve_config", "deploy_config.yaml", deploy.read_bytes())
    write("serve_config", "small.yaml",
          "server:\n  http_port: 0\n  grpc_port: -1\nengine:\n  kv_budget: 64MiB\n  context: 1024\n")
    write("serve_config", "lighttransfer.yaml",
          "lighttransfer:\n  mode: static\n  lazy_fraction: 0.25\n  window: 1020\n  plan: /tmp/p.yaml\n")
    write("serve_config", "types.yaml",
          "limits:\n  max_body_bytes: 1Mi\n  client_timeout_seconds: 2.5e0\nshutdown:\n"
          "  drain_timeout_seconds: .5\nmodel:\n  name: \"a: b\"\n  threads: 0x10\n")
    write("serve_config", "bad.yaml", "engine: [1, 2]\nserver:\n  host: {a: b}\n")
    write("serve_config", "anchors.yaml",
          "a: &x\n  http_port: 1\nserver: *x\nengine:\n  <<: {context: 2}\n")

    # openai_api: selector (0 completions, 1 chat, 2 tokenize, 3 detokenize), then the body.
    def body(sel, obj):
        return bytes([sel]) + (obj if isinstance(obj, bytes) else json.dumps(obj).encode())

    write("openai_api", "completion", body(0, {
        "model": "SmolLM2-135M-Instruct.Q4_1", "prompt": "Hi", "max_tokens": 8, "temperature": 0.5,
        "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 7, "stop": ["\n", "."], "logprobs": 2,
        "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": False}))
    write("openai_api", "completion_ids", body(0, {"prompt": [1, 2, 3], "stop_token_ids": [2],
                                                   "priority": -3, "repetition_penalty": 1.1}))
    write("openai_api", "chat", body(1, {
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Hi"}],
        "max_completion_tokens": 4, "logprobs": True, "top_logprobs": 3,
        "presence_penalty": 0.5, "frequency_penalty": -0.5, "lighttransfer": {"mode": "full"}}))
    write("openai_api", "chat_parts", body(1, {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}], "n": 1}))
    write("openai_api", "tokenize", body(2, {"prompt": "Hello", "add_special_tokens": False}))
    write("openai_api", "tokenize_chat", body(2, {
        "messages": [{"role": "user", "content": "x"}], "add_generation_prompt": False}))
    write("openai_api", "detokenize", body(3, {"tokens": [1, 2, 49151]}))
    write("openai_api", "numbers", body(0, b'{"prompt": "x", "max_tokens": 1e3, "seed": '
                                           b'18446744073709551615, "temperature": -0.0}'))
    write("openai_api", "bad_utf8", body(1, b'{"messages": [{"role": "user", "content": "\xff"}]}'))

    # http_server: flags (1 half-close at once), then the bytes sent.
    def req(method, path, data=b"", headers=()):
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode()
        for h in headers:
            head += h.encode() + b"\r\n"
        if data or method == "POST":
            head += f"Content-Length: {len(data)}\r\n".encode()
        return head + b"\r\n" + data

    js = ("Content-Type: application/json",)
    write("http_server", "health", b"\x00" + req("GET", "/health"))
    write("http_server", "models", b"\x00" + req("GET", "/v1/models") + req("GET", "/ready"))
    write("http_server", "completion", b"\x00" + req(
        "POST", "/v1/completions", b'{"prompt": "Hi", "max_tokens": 2, "temperature": 0}', js))
    write("http_server", "chat_stream", b"\x00" + req(
        "POST", "/v1/chat/completions",
        b'{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": true,'
        b' "stream_options": {"include_usage": true}}', js))
    write("http_server", "tokenize_pipelined", b"\x00" + req(
        "POST", "/tokenize", b'{"prompt": "Hello"}', js) + req(
        "POST", "/detokenize", b'{"tokens": [1, 2]}', js))
    write("http_server", "chunked", b"\x00POST /tokenize HTTP/1.1\r\nHost: x\r\n"
          b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
          b"5\r\n{\"pro\r\nd\r\nmpt\": \"Hi\"}\r\n0\r\n\r\n")
    write("http_server", "gzip", b"\x00POST /tokenize HTTP/1.1\r\nHost: x\r\n"
          b"Transfer-Encoding: gzip\r\n\r\n{\"prompt\": \"x\"}")
    write("http_server", "expect_continue", b"\x00" + req(
        "POST", "/tokenize", b'{"prompt": "x"}', js + ("Expect: 100-continue",)))
    write("http_server", "half_close_partial", b"\x01POST /v1/completions HTTP/1.1\r\nContent-Le")
    write("http_server", "abort_generation", b"\x01" + req(
        "POST", "/v1/completions", b'{"prompt": "Hi", "max_tokens": 8}', js))
    write("http_server", "http10", b"\x00GET /metrics HTTP/1.0\r\n\r\n")
    write("http_server", "garbage", b"\x00\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")

    # proto_conversion: selector (0 GenerateRequest, 1 TokenizeRequest, 2 DetokenizeRequest),
    # then the message's wire bytes.
    write("proto_conversion", "generate_text", b"\x00" + pb_bytes(1, "Hi") +
          pb_bytes(4, "SmolLM2-135M-Instruct.Q4_1") + pb_int(5, 8) + pb_float(6, 0.5) +
          pb_int(7, 40) + pb_float(8, 0.9) + pb_float(9, 0.05) + pb_int(10, 7) +
          pb_bytes(11, "\n") + pb_bytes(11, ".") + pb_packed(12, [2]) + pb_int(13, 1) +
          pb_int(14, 2) + pb_int(15, -3) + pb_bytes(16, pb_int(1, 1)) +
          pb_bytes(20, pb_int(1, 5) + pb_float(2, -100.0)) + pb_int(21, 2) + pb_int(22, 0))
    write("proto_conversion", "generate_ids", b"\x00" + pb_bytes(2, pb_packed(1, [1, 2, 49151])) +
          pb_float(17, 1.1) + pb_float(18, 0.5) + pb_float(19, -0.5) + pb_int(7, -1))
    write("proto_conversion", "generate_chat", b"\x00" + pb_chat(
        3, ("developer", "Be brief."), ("user", "Hi"), ("assistant", "Hello")) +
        pb_int(5, 4) + pb_int(14, 0) + pb_bytes(16, pb_int(1, 2)) + pb_int(22, 1))
    # Unpacked ids, one outside the vocabulary and one negative; the last max_tokens wins.
    write("proto_conversion", "generate_bad_ids", b"\x00" + pb_bytes(2, pb_int(1, 3) +
          pb_int(1, 49152) + pb_int(1, -1)) + pb_int(5, 0) + pb_int(5, 16))
    write("proto_conversion", "generate_edges", b"\x00" + pb_bytes(1, "x") +
          pb_int(5, 2147483647) + pb_int(21, 2147483647) + pb_float(6, 2.0) +
          pb_float(8, 1.4e-45) + pb_float(17, 10.0) + pb_int(10, (1 << 64) - 1) +
          pb_int(14, 20) + pb_int(15, -2147483648))
    write("proto_conversion", "generate_bad_values", b"\x00" + pb_bytes(1, "x") +
          pb_bytes(4, "other-model") + pb_float(6, float("nan")) + pb_int(14, 21) +
          b"".join(pb_bytes(11, "s") for _ in range(5)) + pb_bytes(11, ""))
    write("proto_conversion", "generate_bad_mode", b"\x00" + pb_bytes(1, "x") +
          pb_bytes(16, pb_int(1, 7)))
    write("proto_conversion", "generate_no_prompt", b"\x00" + pb_int(5, 8) + pb_bytes(99, "?"))
    write("proto_conversion", "generate_bad_role", b"\x00" + pb_chat(3, ("tool", "x")))
    write("proto_conversion", "tokenize_text", b"\x01" + pb_bytes(1, "Hello world"))
    write("proto_conversion", "tokenize_chat", b"\x01" + pb_chat(
        2, ("system", "s"), ("user", "caf\u00e9")))
    write("proto_conversion", "tokenize_empty", b"\x01" + pb_bytes(2, b""))
    write("proto_conversion", "detokenize", b"\x02" + pb_packed(1, [1, 2, 49151]) + pb_int(2, 1))
    write("proto_conversion", "detokenize_bad", b"\x02" + pb_int(1, 5) + pb_int(1, -7) +
          pb_int(1, 49152))
    write("proto_conversion", "truncated", b"\x00" + pb_bytes(1, "Hello")[:-2])


if __name__ == "__main__":
    main()
