#!/usr/bin/env python3
"""The official `openai` Python client against the real daemon (docs/design.md §10).

Starts `lightserve serve` once on an ephemeral port with an API key, then: the model list,
completions and chat (whole and streamed, usage chunk, logprobs), greedy text equal to
`lightserve generate` for the same prompt, and the client's typed errors for refused requests.

Exit 77 (ctest: skipped) when the openai package or the model is absent. Environment:
LIGHTSERVE_BINARY (the lightserve binary), LIGHTSERVE_TEST_MODEL (the GGUF file).
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

try:
    import openai
except ImportError:
    print("skipped: the openai package is absent (scripts/test.sh installs it in .venv-test)")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("LIGHTSERVE_BINARY", os.path.join(ROOT, "build", "server", "lightserve"))
MODEL = os.environ.get("LIGHTSERVE_TEST_MODEL",
                       os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
API_KEY = "sk-lightserve-test"
MAX_TOKENS = 16


def generate(prompt, chat=False):
    """`lightserve generate` greedy output for `prompt` (its trailing newline removed)."""
    args = [BINARY, "generate", "-q", "--model", MODEL, "--temperature", "0",
            "-n", str(MAX_TOKENS), "--prompt", prompt] + (["--chat"] if chat else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return out[:-1] if out.endswith("\n") else out


class OpenAiClient(unittest.TestCase):
    daemon = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        ports_file = os.path.join(cls.tmp.name, "ports.json")
        cls.stderr = open(os.path.join(cls.tmp.name, "stderr.txt"), "w+")
        cls.daemon = subprocess.Popen(
            [BINARY, "serve", "--model", MODEL, "--kv-budget", "64MiB", "--context", "1024",
             "--http-port", "0", "--grpc-port", "-1", "--ports-file", ports_file,
             "--api-key", API_KEY],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=cls.stderr)
        deadline = time.time() + 120
        port = None
        while time.time() < deadline and port is None:
            if cls.daemon.poll() is not None:
                raise RuntimeError("lightserve serve exited: " + cls.stderr_text())
            try:
                with open(ports_file) as f:
                    port = json.load(f)["http"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        if port is None:
            raise RuntimeError("no ports file within 120 s: " + cls.stderr_text())
        cls.base_url = f"http://127.0.0.1:{port}/v1"
        cls.client = openai.OpenAI(base_url=cls.base_url, api_key=API_KEY, max_retries=0,
                                   timeout=120)
        cls.model = cls.client.models.list().data[0].id

    @classmethod
    def tearDownClass(cls):
        if cls.daemon is not None and cls.daemon.poll() is None:
            cls.daemon.send_signal(signal.SIGTERM)
            try:
                code = cls.daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                cls.daemon.kill()
                code = cls.daemon.wait()
            assert code == 0, "lightserve serve exited %d: %s" % (code, cls.stderr_text())
        cls.stderr.close()
        cls.tmp.cleanup()

    @classmethod
    def stderr_text(cls):
        cls.stderr.flush()
        cls.stderr.seek(0)
        return cls.stderr.read()

    def test_models_list_the_served_model(self):
        models = self.client.models.list().data
        self.assertEqual(len(models), 1)
        self.assertEqual(models[0].id, os.path.splitext(os.path.basename(MODEL))[0])
        self.assertEqual(self.client.models.retrieve(self.model).id, self.model)

    def test_completion_greedy_equals_generate(self):
        prompt = "The capital of France is"
        r = self.client.completions.create(model=self.model, prompt=prompt,
                                           max_tokens=MAX_TOKENS, temperature=0)
        self.assertEqual(r.object, "text_completion")
        self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
        self.assertEqual(r.choices[0].text, generate(prompt))
        self.assertLessEqual(r.usage.completion_tokens, MAX_TOKENS)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)

    def test_completion_stream_equals_generate(self):
        prompt = "Once upon a time"
        chunks = list(self.client.completions.create(model=self.model, prompt=prompt,
                                                     max_tokens=MAX_TOKENS, temperature=0,
                                                     stream=True))
        self.assertGreater(len(chunks), 1)
        self.assertEqual("".join(c.choices[0].text for c in chunks if c.choices),
                         generate(prompt))
        self.assertIn(chunks[-1].choices[0].finish_reason, ("stop", "length"))

    def test_chat_greedy_equals_generate_chat(self):
        prompt = "Write one sentence about the sea."
        r = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": prompt}],
            max_tokens=MAX_TOKENS, temperature=0)
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertEqual(r.choices[0].message.content, generate(prompt, chat=True))

    def test_chat_stream_with_usage_equals_generate_chat(self):
        prompt = "Name a colour."
        stream = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": prompt}],
            max_completion_tokens=MAX_TOKENS, temperature=0, stream=True,
            stream_options={"include_usage": True})
        chunks = list(stream)
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, generate(prompt, chat=True))
        self.assertEqual(chunks[-1].choices, [])
        self.assertGreater(chunks[-1].usage.completion_tokens, 0)
        self.assertGreater(chunks[-1].usage.prompt_tokens, 0)

    def test_chat_logprobs(self):
        r = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
            temperature=0, logprobs=True, top_logprobs=2)
        content = r.choices[0].logprobs.content
        self.assertGreater(len(content), 0)
        self.assertEqual(len(content[0].top_logprobs), 2)
        self.assertLessEqual(content[0].logprob, 0.0)

    def test_refusals_are_typed_errors(self):
        with self.assertRaises(openai.BadRequestError) as e:
            self.client.completions.create(model=self.model, prompt="x", temperature=5)
        self.assertIn("temperature", str(e.exception))
        with self.assertRaises(openai.BadRequestError):
            self.client.completions.create(model="gpt-4", prompt="x")
        with self.assertRaises(openai.BadRequestError):
            self.client.chat.completions.create(model=self.model, messages=[])
        wrong_key = openai.OpenAI(base_url=self.base_url, api_key="nope", max_retries=0)
        with self.assertRaises(openai.AuthenticationError):
            wrong_key.models.list()


if __name__ == "__main__":
    if not os.path.exists(MODEL) or not os.path.exists(BINARY):
        print("skipped: model or binary absent: %s %s" % (MODEL, BINARY))
        sys.exit(77)
    unittest.main(verbosity=2)
