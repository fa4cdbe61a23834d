"""Drives Warden's PII guardrail with the official OpenAI Python SDK, as an application would.

Usage: openai_guardrails.py BASE_URL API_KEY MODEL MESSAGE
Sends MESSAGE (which holds personal data) in a chat call, whole and streamed (with usage),
and prints one JSON object: the answers as the SDK received them.
"""

import json
import sys

import openai

base_url, api_key, model, message = sys.argv[1:5]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

completion = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": message}],
)
result = {"content": completion.choices[0].message.content}

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": message}],
    stream=True,
    stream_options={"include_usage": True},
)
streamed = {"text": "", "deltas": [], "finish_reason": None, "completion_tokens": None}
for chunk in stream:
    if chunk.choices:
        piece = chunk.choices[0].delta.content or ""
        streamed["text"] += piece
        if piece:
            streamed["deltas"].append(piece)
        streamed["finish_reason"] = chunk.choices[0].finish_reason or streamed["finish_reason"]
    if chunk.usage:
        streamed["completion_tokens"] = chunk.usage.completion_tokens
result["stream"] = streamed
print(json.dumps(result))
