#!/usr/bin/env python3
"""The official `openai` Python client against the real daemon (docs/design.md §10).

Starts `lightserve serve` once on an ephemeral port with an API key, then: the model list,
completions and chat (whole and streamed, usage chunk, logprobs), greedy text equal to
`lightserve generate` for the same prompt, and the client's typed errors for refused requests;
constrained decoding (response_format json_object / json_schema on 50 seeded random schemas, each
output validated with `jsonschema`; guided_choice / regex / json / grammar; 400s naming the field)
and tools (tool_choice named / required / auto / none, streamed calls, tool results in the chat).

Exit 77 (ctest: skipped) when the openai package or the model is absent. Environment:
LIGHTSERVE_BINARY (the lightserve binary), LIGHTSERVE_TEST_MODEL (the GGUF file).
"""
import concurrent.futures
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

try:
    import jsonschema
    import openai
except ImportError:
    print("skipped: openai or jsonschema is absent (scripts/test.sh installs them in .venv-test)")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("LIGHTSERVE_BINARY", os.path.join(ROOT, "build", "server", "lightserve"))
MODEL = os.environ.get("LIGHTSERVE_TEST_MODEL",
                       os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
API_KEY = "sk-lightserve-test"
MAX_TOKENS = 16


def random_schema(rng, depth=0):
    """A JSON schema in OpenAI's strict subset whose every instance is short: bounded strings,
    arrays and integers, objects with every property required and no others."""
    kinds = ["string", "integer", "boolean", "enum", "number", "null"]
    if depth < 2:
        kinds += ["object", "array", "anyOf"]
    kind = rng.choice(kinds)
    if kind == "string":
        return {"type": "string", "maxLength": rng.randint(1, 12)}
    if kind == "integer":
        low = rng.randint(-50, 50)
        return {"type": "integer", "minimum": low, "maximum": low + rng.randint(0, 1000)}
    if kind == "number":
        return {"type": "number", "minimum": -100, "maximum": 100}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "null":
        return {"type": "null"}
    if kind == "enum":
        return {"enum": rng.sample(["red", "green", "blue", "cyan", 1, 2, True], rng.randint(1, 4))}
    if kind == "array":
        return {"type": "array", "items": random_schema(rng, depth + 1),
                "minItems": rng.randint(0, 1), "maxItems": rng.randint(1, 3)}
    if kind == "anyOf":
        return {"anyOf": [random_schema(rng, depth + 1) for _ in range(2)]}
    names = rng.sample(["name", "age", "city", "tags", "ok", "score", "id", "kind", "meta"],
                       rng.randint(1, 4))
    return {"type": "object", "properties": {n: random_schema(rng, depth + 1) for n in names},
            "required": names, "additionalProperties": False}


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

    # ---- constrained decoding (response_format, guided_*, grammar) and tools ----

    def chat(self, content, **kwargs):
        kwargs.setdefault("max_tokens", 200)
        kwargs.setdefault("temperature", 0)
        return self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": content}], **kwargs)

    def test_response_format_json_object(self):
        r = self.chat("Give a JSON object with a name and an age.",
                      response_format={"type": "json_object"})
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertIsInstance(json.loads(r.choices[0].message.content), dict)

    def test_json_schema_outputs_validate_on_50_random_schemas(self):
        rng = random.Random(16)
        schemas = [random_schema(rng) for _ in range(50)]
        for s in schemas:
            if s.get("type") != "object":  # OpenAI's strict mode wants an object at the top
                s.clear()
                s.update({"type": "object", "properties": {"value": random_schema(rng, 1)},
                          "required": ["value"], "additionalProperties": False})

        def run(i):
            return self.chat("Give an example of the data, as JSON.", max_tokens=400,
                             response_format={"type": "json_schema", "json_schema": {
                                 "name": "s%d" % i, "strict": True, "schema": schemas[i]}})
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(run, range(len(schemas))))
        for schema, r in zip(schemas, responses):
            text = r.choices[0].message.content
            self.assertEqual(r.choices[0].finish_reason, "stop", (schema, text))
            jsonschema.validate(json.loads(text), schema)

    def test_guided_fields(self):
        choices = ["yes", "no"]
        r = self.chat("Is the sea wet?", extra_body={"guided_choice": choices})
        self.assertIn(r.choices[0].message.content, choices)
        r = self.client.completions.create(model=self.model, prompt="A licence plate:",
                                           max_tokens=40, temperature=0,
                                           extra_body={"guided_regex": "[A-Z]{2}-[0-9]{3}"})
        self.assertRegex(r.choices[0].text, r"^[A-Z]{2}-[0-9]{3}$")
        schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0,
                                                         "maximum": 1000}},
                  "required": ["n"], "additionalProperties": False}
        for key in ("guided_json", "json_schema"):
            r = self.chat("A number as JSON.", extra_body={key: schema})
            jsonschema.validate(json.loads(r.choices[0].message.content), schema)
        for key in ("grammar", "guided_grammar"):  # GBNF
            r = self.chat("Count.", extra_body={key: 'root ::= [0-9] ("," [0-9]){2}'})
            self.assertRegex(r.choices[0].message.content, r"^[0-9](,[0-9]){2}$")

    def test_constrained_stream_equals_whole(self):
        kwargs = dict(extra_body={"guided_choice": ["alpha", "beta gamma"]})
        whole = self.chat("Pick one.", **kwargs).choices[0].message.content
        chunks = list(self.chat("Pick one.", stream=True, **kwargs))
        self.assertEqual("".join(c.choices[0].delta.content or "" for c in chunks), whole)

    def test_invalid_constraints_are_400_naming_the_field(self):
        cases = [
            ({"response_format": {"type": "json_schema", "json_schema": {
                "name": "x", "schema": {"type": "object", "properties": {"a": {"type": 7}}}}}},
             "response_format"),
            ({"guided_regex": "a(b"}, "guided_regex"),
            ({"grammar": "root ::= missing"}, "grammar"),
            ({"guided_choice": []}, "guided_choice"),
            ({"guided_json": "{not json"}, "guided_json"),
            ({"guided_json": {"type": "object"}, "guided_regex": "a"}, "guided_json"),
            ({"response_format": {"type": "xml"}}, "response_format"),
            ({"tool_choice": "required"}, "tool_choice"),
        ]
        for body, field in cases:
            with self.assertRaises(openai.BadRequestError, msg=body) as e:
                self.chat("x", extra_body=body)
            self.assertIn(field, str(e.exception))

    WEATHER = {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 20},
            "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": False}}}
    TIME = {"type": "function", "function": {
        "name": "get_time", "parameters": {"type": "object", "properties": {
            "zone": {"type": "string", "maxLength": 10}}, "required": ["zone"]}}}

    def check_call(self, call, tool):
        self.assertTrue(call.id.startswith("call_"))
        self.assertEqual(call.type, "function")
        self.assertEqual(call.function.name, tool["function"]["name"])
        jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])

    def test_tool_choice_named_and_required(self):
        tools = [self.WEATHER, self.TIME]
        named = {"type": "function", "function": {"name": "get_weather"}}
        for choice, expected in ((named, self.WEATHER), ("required", None)):
            r = self.chat("What is the weather in Paris?", tools=tools, tool_choice=choice)
            self.assertEqual(r.choices[0].finish_reason, "tool_calls")
            calls = r.choices[0].message.tool_calls
            self.assertEqual(len(calls), 1)
            tool = expected or {"get_weather": self.WEATHER,
                                "get_time": self.TIME}[calls[0].function.name]
            self.check_call(calls[0], tool)

    def test_tool_call_streamed(self):
        chunks = list(self.chat("Weather in Oslo?", tools=[self.WEATHER], stream=True,
                                tool_choice={"type": "function",
                                             "function": {"name": "get_weather"}}))
        deltas = [c.choices[0].delta.tool_calls for c in chunks
                  if c.choices and c.choices[0].delta.tool_calls]
        self.assertEqual(len(deltas), 1)
        self.assertEqual(deltas[0][0].index, 0)
        self.check_call(deltas[0][0], self.WEATHER)
        self.assertEqual(chunks[-1].choices[0].finish_reason, "tool_calls")

    def test_tool_choice_auto_and_none(self):
        r = self.chat("What is the weather in Rome? Use the tool.", tools=[self.WEATHER])
        message = r.choices[0].message
        if message.tool_calls:  # auto: the model may call or answer
            self.assertEqual(r.choices[0].finish_reason, "tool_calls")
            for call in message.tool_calls:
                self.check_call(call, self.WEATHER)
        else:
            self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
            self.assertIsInstance(message.content, str)
        r = self.chat("Say hi.", tools=[self.WEATHER], tool_choice="none", max_tokens=8)
        self.assertIsNone(r.choices[0].message.tool_calls)
        self.assertTrue(generate("Say hi.", chat=True).startswith(r.choices[0].message.content))

    def test_tool_results_in_the_conversation(self):
        messages = [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function", "function": {
                    "name": "get_weather",
                    "arguments": json.dumps({"city": "Paris", "unit": "celsius"})}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "21 degrees, sunny"},
        ]
        r = self.client.chat.completions.create(model=self.model, messages=messages,
                                                tools=[self.WEATHER], tool_choice="none",
                                                max_tokens=8, temperature=0)
        self.assertIsInstance(r.choices[0].message.content, str)
        self.assertGreater(r.usage.prompt_tokens, 60)  # the call and its result were rendered


if __name__ == "__main__":
    if not os.path.exists(MODEL) or not os.path.exists(BINARY):
        print("skipped: model or binary absent: %s %s" % (MODEL, BINARY))
        sys.exit(77)
    unittest.main(verbosity=2)
