#!/usr/bin/env python3
"""Writes tests/golden/chat_templates.json: what the real chat templates of the model families
lightserve formats (tests/golden/chat_templates/*.jinja) render for a set of conversations, with
jinja2 configured as Hugging Face transformers renders them (sandboxed, trim_blocks,
lstrip_blocks, raise_exception). tests/model/chat_template_test.cpp checks that
model::ChatTemplate, given each template text, renders exactly the same or refuses the same
conversations.

    python3 scripts/goldens/chat_template_goldens.py

The templates: llama3.1.jinja is llama.cpp's copy of Meta's Llama-3.1-8B-Instruct template
(models/templates/ in the pinned llama-cpp-python sources); the others are the strings of
Meta-Llama-3-8B-Instruct, Mistral-7B-Instruct-v0.2 ("v1" with a system prompt), Llama-2-chat and
ChatML as llama.cpp's tests/test-chat-template.cpp (same sources) carries them.
"""
import json
import os

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DIR = os.path.join(REPO, "tests", "golden", "chat_templates")

TEMPLATES = {
    "llama3.jinja": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    "mistral-v1.jinja": "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n        {%- if loop.first and system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n",
    "llama2.jinja": "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
    "chatml.jinja": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
}
TOKENS = {  # bos / eos text of each family's vocabulary
    "llama3.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.1.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistral-v1.jinja": ("<s>", "</s>"),
    "llama2.jinja": ("<s>", "</s>"),
    "chatml.jinja": ("", "<|im_end|>"),
}

S, U, A = "system", "user", "assistant"
CONVERSATIONS = [
    [(U, "Hello")],
    [(S, "You are a helpful assistant"), (U, "Hello")],
    [(S, "You are a helpful assistant"), (U, "Hello"), (A, "Hi there"), (U, "Who are you")],
    [(U, "Hello"), (A, "   I am an assistant   "), (U, "  Another question  ")],
    [(S, "  Be brief.\n"), (U, "Line one\nLine two"), (A, "OK"), (U, "Thanks"), (A, "Bye")],
    [(U, "Ünïcödé 🦙 and <b>tags</b> {{ not jinja }}")],
    [(A, "I speak first")],                 # refused by the [INST] templates
    [(U, "One"), (U, "Two")],               # refused by the [INST] templates
    [(S, "Only a system message")],
]


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    os.makedirs(DIR, exist_ok=True)
    for name, text in TEMPLATES.items():
        with open(os.path.join(DIR, name), "w", encoding="utf-8") as f:
            f.write(text)
    cases = []
    for name in sorted(TOKENS):
        text = open(os.path.join(DIR, name), encoding="utf-8").read()
        template = env.from_string(text)
        bos, eos = TOKENS[name]
        for conversation in CONVERSATIONS:
            messages = [{"role": r, "content": c} for r, c in conversation]
            for generation_prompt in (True, False):
                case = {"template": name, "messages": messages,
                        "add_generation_prompt": generation_prompt}
                try:
                    case["output"] = template.render(messages=messages, bos_token=bos,
                                                     eos_token=eos,
                                                     add_generation_prompt=generation_prompt)
                except jinja2.exceptions.TemplateError as e:
                    case["error"] = str(e)
                cases.append(case)
    out = {"generator": "scripts/goldens/chat_template_goldens.py",
           "jinja2": jinja2.__version__, "cases": cases}
    with open(os.path.join(REPO, "tests", "golden", "chat_templates.json"), "w",
              encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(cases)} cases")


if __name__ == "__main__":
    main()
