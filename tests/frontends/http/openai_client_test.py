#!/usr/bin/env python3
"""The official `openai` Python client against the real daemon (docs/design.md §10).

Starts `lightserve serve` once on an ephemeral port with an API key, then: the model list,
completions and chat (whole and streamed, usage chunk, logprobs), greedy text equal to
`lightserve generate` for the same prompt, and the client's typed errors for refused requests;
then the API fields of issue 16: n (sample i is the n = 1 request with seed + i), best_of, echo,
add_generation_prompt / continue_final_message / chat_template_kwargs (checked against /tokenize
and the completions endpoint), return_token_strs, system_fingerprint, 404 model_not_found on
every endpoint, logit_bias, min_tokens, echo with logprobs (the prompt's tokens scored),
x-request-id, and a 400 naming each field lightserve does not implement; constrained decoding
(response_format json_object / json_schema on 50 seeded random schemas, each output validated with `jsonschema`; guided_choice / regex / json / grammar; 400s
naming the field) and tools (tool_choice named / required / auto / none, streamed calls, tool
results in the chat); and the two together: n > 1 with a constraint (every sample valid) and
with tools (each choice's own tool_calls, streamed per index).

Exit 77 (ctest: skipped) when the openai package or the model is absent. Environment:
LIGHTSERVE_BINARY (the lightserve binary), LIGHTSERVE_TEST_MODEL (the GGUF file).
"""
import concurrent.futures
import json
import os
import random
import re
import subprocess
import sys
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "support"))
from daemon_process import Daemon  # noqa: E402

try:
    import jsonschema
    import openai
except ImportError:
    print("skipped: openai or jsonschema is absent (scripts/test.sh installs them in .venv-test)")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
BINARY = os.environ.get("LIGHTSERVE_BINARY", os.path.join(ROOT, "build", "lightserve"))
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
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(BINARY, MODEL, ["--kv-budget", "64MiB", "--context", "1024",
                                            "--http-port", "0", "--grpc-port", "-1",
                                            "--api-key", API_KEY])
        cls.base_url = f"http://127.0.0.1:{cls.daemon.port('http')}/v1"
        cls.client = openai.OpenAI(base_url=cls.base_url, api_key=API_KEY, max_retries=0,
                                   timeout=120)
        cls.model = cls.client.models.list().data[0].id

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

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
        with self.assertRaises(openai.NotFoundError):
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
        # (A prompt the default model answers in a short object: "Describe a cat" runs past 200.)
        r = self.chat("Is a cat an animal? Answer as JSON with one key.",
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
        # Bounded: an unbounded integer lets the default model write digits to max_tokens.
        schema = {"type": "object",
                  "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 999}},
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

    # ---- n > 1 with a constraint or tools: each sample has its own matcher and parser ----

    COLOR = {"type": "object", "properties": {
        "color": {"enum": ["red", "green", "blue", "yellow"]}, "ok": {"type": "boolean"}},
        "required": ["color", "ok"], "additionalProperties": False}

    def test_n_samples_each_hold_to_the_constraint(self):
        fmt = {"type": "json_schema", "json_schema": {"name": "c", "strict": True,
                                                      "schema": self.COLOR}}
        r = self.chat("A color as JSON.", n=3, temperature=1.0, seed=5, response_format=fmt)
        self.assertEqual([c.index for c in r.choices], [0, 1, 2])
        for c in r.choices:
            self.assertEqual(c.finish_reason, "stop", c.message.content)
            jsonschema.validate(json.loads(c.message.content), self.COLOR)
        # Sample i is the constrained n = 1 request with seed + i.
        singles = [self.chat("A color as JSON.", temperature=1.0, seed=5 + i,
                             response_format=fmt).choices[0].message.content for i in range(3)]
        self.assertEqual([c.message.content for c in r.choices], singles)
        # Streamed, each index's text is its own valid output.
        choices = ["alpha", "beta gamma", "delta"]
        whole = self.chat("Pick one.", n=4, temperature=1.0, seed=11,
                          extra_body={"guided_choice": choices})
        texts = {}
        for chunk in self.chat("Pick one.", n=4, temperature=1.0, seed=11, stream=True,
                               extra_body={"guided_choice": choices}):
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
        self.assertEqual([texts[i] for i in range(4)], [c.message.content for c in whole.choices])
        for text in texts.values():
            self.assertIn(text, choices)

    def test_n_samples_each_carry_their_tool_calls(self):
        named = {"type": "function", "function": {"name": "get_weather"}}
        r = self.chat("Weather in Lima?", n=2, temperature=1.0, seed=3, tools=[self.WEATHER],
                      tool_choice=named)
        self.assertEqual([c.index for c in r.choices], [0, 1])
        ids = set()
        for c in r.choices:
            self.assertEqual(c.finish_reason, "tool_calls")
            self.assertEqual(len(c.message.tool_calls), 1)
            self.check_call(c.message.tool_calls[0], self.WEATHER)
            ids.add(c.message.tool_calls[0].id)
        self.assertEqual(len(ids), 2)  # every call its own id
        calls, finishes = {}, {}
        for chunk in self.chat("Weather in Lima?", n=2, temperature=1.0, seed=3, stream=True,
                               tools=[self.WEATHER], tool_choice=named):
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or []:
                    self.assertEqual(call.index, 0)  # the first call of its own choice
                    calls.setdefault(choice.index, []).append(call)
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
        self.assertEqual(finishes, {0: "tool_calls", 1: "tool_calls"})
        for i in range(2):
            self.assertEqual(len(calls[i]), 1)
            self.assertEqual(calls[i][0].function.arguments,
                             r.choices[i].message.tool_calls[0].function.arguments)

    # ---- issue 16: the API fields vLLM users expect ----

    def post(self, path, body, headers=None):
        """POST JSON to the daemon (outside /v1 too): (status, parsed body, response headers)."""
        request = urllib.request.Request(
            self.base_url[:-len("/v1")] + path, data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": "Bearer " + API_KEY, "Content-Type": "application/json",
                     **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                return r.status, json.loads(r.read()), r.headers
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read()), e.headers

    def completion(self, **kwargs):
        args = dict(model=self.model, prompt="The weather today is", max_tokens=8)
        args.update(kwargs)
        return self.client.completions.create(**args)

    def prefill_tokens_total(self):
        url = self.base_url[:-len("/v1")] + "/metrics"
        with urllib.request.urlopen(url, timeout=30) as r:
            text = r.read().decode()
        m = re.search(r"^lightserve_prefill_tokens_total(?:\{[^}]*\})? (\S+)$", text, re.M)
        self.assertIsNotNone(m, "no lightserve_prefill_tokens_total in /metrics")
        return float(m.group(1))

    def test_n_samples_are_the_seeded_single_requests(self):
        # Sample i of an n request is the n = 1 request with seed + i; the samples share one
        # prefill (forks of sample 0), so the prefill counter grows by the prompt once.
        before = self.prefill_tokens_total()
        r = self.completion(n=4, temperature=1.0, seed=1234, extra_body={"ignore_eos": True})
        shared = self.prefill_tokens_total() - before
        self.assertEqual([c.index for c in r.choices], [0, 1, 2, 3])
        singles = [self.completion(temperature=1.0, seed=1234 + i,
                                   extra_body={"ignore_eos": True}) for i in range(4)]
        separate = self.prefill_tokens_total() - before - shared
        self.assertEqual([c.text for c in r.choices], [s.choices[0].text for s in singles])
        self.assertGreater(len(set(c.text for c in r.choices)), 1, "seeds gave one text")
        # usage: the prompt once, the completions summed (ignore_eos: 8 tokens each).
        self.assertEqual(r.usage.prompt_tokens, singles[0].usage.prompt_tokens)
        self.assertEqual(r.usage.completion_tokens, 4 * 8)
        self.assertEqual(shared, r.usage.prompt_tokens)
        self.assertEqual(separate, 4 * r.usage.prompt_tokens)
        # Greedy: every sample is lightserve generate's text.
        greedy = self.completion(n=2, temperature=0, max_tokens=MAX_TOKENS)
        self.assertEqual([c.text for c in greedy.choices], [generate("The weather today is")] * 2)

    def test_n_streamed_chunks_carry_their_index(self):
        whole = self.completion(n=2, temperature=1.0, seed=99)
        chunks = list(self.completion(n=2, temperature=1.0, seed=99, stream=True,
                                      stream_options={"include_usage": True}))
        texts, finishes = {0: "", 1: ""}, {}
        for c in chunks:
            for choice in c.choices:
                texts[choice.index] += choice.text
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
        self.assertEqual([texts[0], texts[1]], [c.text for c in whole.choices])
        self.assertEqual(sorted(finishes), [0, 1])
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, whole.usage.completion_tokens)
        # Chat: each index gets its role chunk, then its content.
        chat = list(self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": "Name a fruit."}], n=2,
            max_tokens=8, temperature=0, stream=True))
        roles = [c.choices[0].index for c in chat if c.choices and c.choices[0].delta.role]
        self.assertEqual(sorted(roles), [0, 1])
        content = {0: "", 1: ""}
        for c in chat:
            content[c.choices[0].index] += c.choices[0].delta.content or ""
        self.assertEqual(content[0], content[1])  # greedy
        self.assertNotEqual(content[0], "")

    def test_chat_n_and_best_of(self):
        r = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": "Hi"}], n=2, max_tokens=4,
            temperature=0)
        self.assertEqual([c.index for c in r.choices], [0, 1])
        self.assertEqual(r.choices[0].message.content, r.choices[1].message.content)
        self.assertEqual(len(self.completion(n=2, best_of=2, temperature=0).choices), 2)
        for kwargs, field in (({"best_of": 3}, "best_of"), ({"n": 0}, "'n'"),
                              ({"n": 33}, "'n'")):
            with self.assertRaises(openai.BadRequestError) as e:
                self.completion(**kwargs)
            self.assertIn(field, str(e.exception))

    def test_echo_prepends_the_prompt(self):
        prompt = "The capital of France is"
        r = self.completion(prompt=prompt, echo=True, temperature=0, max_tokens=MAX_TOKENS)
        self.assertEqual(r.choices[0].text, prompt + generate(prompt))
        chunks = list(self.completion(prompt=prompt, echo=True, temperature=0,
                                      max_tokens=MAX_TOKENS, stream=True))
        self.assertEqual(chunks[0].choices[0].text, prompt)
        self.assertEqual("".join(c.choices[0].text for c in chunks), prompt + generate(prompt))
        # Token ids: their text is echoed.
        status, tokens, _ = self.post("/tokenize", {"prompt": prompt})
        self.assertEqual(status, 200)
        ids = self.completion(prompt=tokens["tokens"], echo=True, temperature=0, max_tokens=4)
        self.assertTrue(ids.choices[0].text.startswith(prompt), ids.choices[0].text)

    def test_echo_with_logprobs_scores_the_prompt(self):
        # vLLM's form: one logprobs object, the prompt's tokens first (the first with null
        # logprobs), then the generated ones; offsets into the echoed text.
        prompt = "The capital of France is"
        r = self.completion(prompt=prompt, echo=True, logprobs=2, temperature=0, max_tokens=4,
                            extra_body={"ignore_eos": True})
        lp = r.choices[0].logprobs
        n_prompt = r.usage.prompt_tokens
        self.assertEqual(len(lp.tokens), n_prompt + 4)
        self.assertEqual("".join(lp.tokens), r.choices[0].text)
        self.assertTrue(r.choices[0].text.startswith(prompt))
        self.assertIsNone(lp.token_logprobs[0])
        self.assertIsNone(lp.top_logprobs[0])
        self.assertEqual(lp.text_offset[0], 0)
        for i in range(1, len(lp.tokens)):
            self.assertEqual(lp.text_offset[i], lp.text_offset[i - 1] + len(lp.tokens[i - 1]))
            self.assertLessEqual(lp.token_logprobs[i], 0.0)
            self.assertLessEqual(len(lp.top_logprobs[i]), 2)
            # The best alternative is at least as likely as the token itself.
            self.assertGreaterEqual(max(lp.top_logprobs[i].values()), lp.token_logprobs[i] - 1e-4)
        # The generated part is what the same request without echo returns.
        plain = self.completion(prompt=prompt, logprobs=2, temperature=0, max_tokens=4,
                                extra_body={"ignore_eos": True}).choices[0].logprobs
        self.assertEqual(lp.tokens[n_prompt:], plain.tokens)
        self.assertEqual(lp.token_logprobs[n_prompt:], plain.token_logprobs)
        # A prompt row's logprob is the decode's: echo the prompt plus the first generated
        # token and its last prompt logprob is the first generated token's (prefill row against
        # decode step, so within float error).
        longer = self.completion(prompt=prompt + plain.tokens[0], echo=True, logprobs=0,
                                 temperature=0, max_tokens=1).choices[0].logprobs
        self.assertEqual(longer.tokens[n_prompt], plain.tokens[0])
        self.assertAlmostEqual(longer.token_logprobs[n_prompt], plain.token_logprobs[0], delta=2e-3)
        # Streamed: the echo chunk carries the prompt's logprobs, then one chunk per token.
        chunks = list(self.completion(prompt=prompt, echo=True, logprobs=2, temperature=0,
                                      max_tokens=4, stream=True, extra_body={"ignore_eos": True}))
        first = chunks[0].choices[0]
        self.assertEqual(first.text, prompt)
        self.assertEqual(first.logprobs.tokens, lp.tokens[:n_prompt])
        self.assertEqual(first.logprobs.token_logprobs, lp.token_logprobs[:n_prompt])
        streamed = [t for c in chunks for ch in c.choices if ch.logprobs
                    for t in ch.logprobs.token_logprobs]
        self.assertEqual(streamed, lp.token_logprobs)
        # n > 1: the forks reuse the parent's prompt logprobs.
        two = self.completion(prompt=prompt, echo=True, logprobs=1, n=2, temperature=1.0,
                              seed=5, max_tokens=2)
        self.assertEqual(two.choices[0].logprobs.token_logprobs[:n_prompt],
                         two.choices[1].logprobs.token_logprobs[:n_prompt])
        self.assertAlmostEqual(two.choices[0].logprobs.token_logprobs[1], lp.token_logprobs[1],
                               delta=1e-5)

    def test_prompt_logprobs_as_vllm(self):
        # vLLM's prompt_logprobs field: null first, then per prompt token a map from token id to
        # {logprob, rank, decoded_token} holding the token and the top alternatives; the numbers
        # are echo with logprobs' numbers.
        prompt = "The capital of France is"
        status, out, _ = self.post("/v1/completions", {
            "model": self.model, "prompt": prompt, "max_tokens": 2, "temperature": 0,
            "prompt_logprobs": 3})
        self.assertEqual(status, 200, out)
        ids = self.chat_ids({"prompt": prompt})
        listed = out["choices"][0]["prompt_logprobs"]
        self.assertEqual(len(listed), len(ids))
        self.assertIsNone(listed[0])
        self.assertNotIn("logprobs", out["choices"][0]["text"])
        self.assertIsNone(out["choices"][0]["logprobs"])
        echo = self.completion(prompt=prompt, echo=True, logprobs=3, temperature=0,
                               max_tokens=2).choices[0].logprobs
        for i in range(1, len(ids)):
            entry = listed[i]
            own = entry[str(ids[i])]
            self.assertAlmostEqual(own["logprob"], echo.token_logprobs[i], delta=1e-6)
            self.assertEqual(own["decoded_token"], echo.tokens[i])
            others = {k: v for k, v in entry.items() if k != str(ids[i])}
            self.assertIn(len(entry), (3, 4))
            by_rank = sorted(entry.values(), key=lambda v: v["rank"])
            self.assertEqual([v["rank"] for v in by_rank][:3], [1, 2, 3])
            for a, b in zip(by_rank, by_rank[1:]):
                self.assertGreaterEqual(a["logprob"], b["logprob"] - 1e-6)
            # The token's rank counts the tokens strictly more likely than it.
            above = sum(1 for v in others.values() if v["logprob"] > own["logprob"])
            if own["rank"] <= 3:
                self.assertEqual(own["rank"], above + 1)
            else:
                self.assertEqual(above, 3)
            self.assertEqual(sorted(v["decoded_token"] for v in by_rank[:3]),
                             sorted(echo.top_logprobs[i].keys()))
        # Chat: at the top level, one entry per token of the rendered prompt; 0 alternatives
        # lists the token alone.
        status, chat, _ = self.post("/v1/chat/completions", {
            "model": self.model, "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 1, "prompt_logprobs": 0})
        self.assertEqual(status, 200, chat)
        self.assertEqual(len(chat["prompt_logprobs"]), chat["usage"]["prompt_tokens"])
        self.assertIsNone(chat["prompt_logprobs"][0])
        self.assertTrue(all(len(e) == 1 for e in chat["prompt_logprobs"][1:]))
        # Streaming has no place for it (as vLLM), and the count is bounded.
        for body, needle in (({"stream": True, "prompt_logprobs": 1}, "'prompt_logprobs'"),
                             ({"prompt_logprobs": 21}, "'prompt_logprobs'")):
            status, error, _ = self.post("/v1/completions", {
                "model": self.model, "prompt": prompt, "max_tokens": 1, **body})
            self.assertEqual(status, 400, error)
            self.assertIn(needle, error["error"]["message"])

    def chat_ids(self, body):
        status, out, _ = self.post("/tokenize", body)
        self.assertEqual(status, 200, out)
        return out["tokens"]

    def test_chat_template_fields(self):
        user = [{"role": "user", "content": "Complete the sentence."}]
        opened = self.chat_ids({"messages": user})
        closed = self.chat_ids({"messages": user, "add_generation_prompt": False})
        self.assertEqual(opened[:len(closed)], closed)
        self.assertGreater(len(opened), len(closed))
        # vLLM's chat_template_kwargs may carry add_generation_prompt too.
        self.assertEqual(self.chat_ids({"messages": user, "chat_template_kwargs":
                                        {"add_generation_prompt": False}}), closed)
        # continue_final_message: the assistant's turn left open, and the chat answer is the
        # completion of exactly those tokens.
        messages = user + [{"role": "assistant", "content": "The sky is"}]
        extra = {"add_generation_prompt": False, "continue_final_message": True}
        ids = self.chat_ids({"messages": messages, **extra})
        full = self.chat_ids({"messages": messages, "add_generation_prompt": False})
        self.assertEqual(full[:len(ids)], ids)
        self.assertGreater(len(full), len(ids))  # the end-of-turn tokens are left out
        chat = self.client.chat.completions.create(
            model=self.model, messages=messages, max_tokens=8, temperature=0, extra_body=extra)
        plain = self.completion(prompt=ids, max_tokens=8, temperature=0)
        self.assertEqual(chat.choices[0].message.content, plain.choices[0].text)
        for body, field in (
                ({"chat_template_kwargs": {"enable_thinking": False}},
                 "chat_template_kwargs.enable_thinking"),
                ({"continue_final_message": True}, "continue_final_message")):
            with self.assertRaises(openai.BadRequestError) as e:
                self.client.chat.completions.create(model=self.model, messages=messages,
                                                    max_tokens=2, extra_body=body)
            self.assertIn(field, str(e.exception))

    def test_tokenize_return_token_strs(self):
        status, out, _ = self.post("/tokenize", {"prompt": "Hello world",
                                                 "return_token_strs": True})
        self.assertEqual(status, 200, out)
        self.assertEqual(out["token_strs"], ["Hello", "\u0120world"])  # GPT-2 byte alphabet
        self.assertEqual(len(out["token_strs"]), out["count"])
        self.assertNotIn("token_strs", self.post("/tokenize", {"prompt": "Hello world"})[1])

    def test_system_fingerprint_in_every_response_and_chunk(self):
        fingerprints = {self.completion(max_tokens=2).system_fingerprint,
                        self.client.chat.completions.create(
                            model=self.model, messages=[{"role": "user", "content": "Hi"}],
                            max_tokens=2).system_fingerprint}
        for chunk in self.completion(max_tokens=3, stream=True,
                                     stream_options={"include_usage": True}):
            fingerprints.add(chunk.system_fingerprint)
        self.assertEqual(len(fingerprints), 1, fingerprints)
        self.assertRegex(fingerprints.pop(), r"^fp_[0-9a-f]{16}$")

    def test_unknown_model_is_404_model_not_found_everywhere(self):
        calls = [
            lambda: self.client.completions.create(model="gpt-4", prompt="x"),
            lambda: self.client.chat.completions.create(
                model="gpt-4", messages=[{"role": "user", "content": "x"}]),
            lambda: self.client.models.retrieve("gpt-4"),
        ]
        for call in calls:
            with self.assertRaises(openai.NotFoundError) as e:
                call()
            self.assertEqual(e.exception.code, "model_not_found")
            self.assertEqual(e.exception.param, "model")
            self.assertIn("gpt-4", e.exception.message)
        for path, body in (("/tokenize", {"model": "gpt-4", "prompt": "x"}),
                           ("/detokenize", {"model": "gpt-4", "tokens": [1]})):
            status, out, _ = self.post(path, body)
            self.assertEqual(status, 404, out)
            self.assertEqual(out["error"]["code"], "model_not_found")

    def test_logit_bias_min_tokens_and_request_id(self):
        # A +100 bias makes the token certain; -100 on it forbids it.
        forced = self.completion(temperature=1.0, max_tokens=3, logit_bias={"19556": 100})
        self.assertEqual(forced.choices[0].text, "Hello" * 3)
        banned = self.completion(temperature=0, max_tokens=MAX_TOKENS,
                                 logit_bias={str(i): -100 for i in self.chat_ids(
                                     {"prompt": generate("The weather today is"),
                                      "add_special_tokens": False})[:1]})
        self.assertNotEqual(banned.choices[0].text, generate("The weather today is"))
        # min_tokens holds EOS back: a chat answer that ends early now runs to min_tokens.
        short = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": "Say yes."}], max_tokens=200,
            temperature=0)
        self.assertEqual(short.choices[0].finish_reason, "stop")
        held = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": "Say yes."}], max_tokens=200,
            temperature=0, extra_body={"min_tokens": short.usage.completion_tokens + 5})
        self.assertGreaterEqual(held.usage.completion_tokens, short.usage.completion_tokens + 5)
        _, _, headers = self.post("/v1/completions", {"prompt": "x", "max_tokens": 1},
                                  {"x-request-id": "client-id-16"})
        self.assertEqual(headers["x-request-id"], "client-id-16")

    def test_unimplemented_fields_are_400_naming_them(self):
        for field, value in (("suffix", "end"),
                             ("use_beam_search", True), ("typical_p", 0.5),
                             ("skip_special_tokens", False), ("truncate_prompt_tokens", 4),
                             ("allowed_token_ids", [1, 2]), ("bad_words", ["x"]),
                             ("mirostat", 2), ("include_stop_str_in_output", True),
                             ("chat_template", "{{ x }}")):
            with self.assertRaises(openai.BadRequestError, msg=field) as e:
                self.completion(extra_body={field: value})
            self.assertIn(field, str(e.exception))


if __name__ == "__main__":
    if not os.path.exists(MODEL) or not os.path.exists(BINARY):
        print("skipped: model or binary absent: %s %s" % (MODEL, BINARY))
        sys.exit(77)
    unittest.main(verbosity=2)
