"""Drives Warden's HF-native pass-through with huggingface_hub's InferenceClient, as an
application that already speaks Hugging Face would: the client points at a Warden URL.

Usage: hf_passthrough.py TGI_URL EMBED_URL API_KEY
Prints one JSON object: text generation (plain, with details, streamed), feature extraction
and the error for a wrong key.
"""

import json
import sys

from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError

tgi_url, embed_url, api_key = sys.argv[1:4]
client = InferenceClient(model=tgi_url, token=api_key)
result = {
    "text": client.text_generation("Hi there", max_new_tokens=3),
}
detailed = client.text_generation("Hi there", max_new_tokens=2, details=True)
result["details"] = {
    "text": detailed.generated_text,
    "finish_reason": detailed.details.finish_reason,
    "generated_tokens": detailed.details.generated_tokens,
}
result["stream"] = "".join(client.text_generation("Hi there", stream=True))
vectors = InferenceClient(model=embed_url, token=api_key).feature_extraction(["a b", "c"])
result["features_shape"] = list(vectors.shape)
try:
    InferenceClient(model=tgi_url, token="sk-wrong").text_generation("Hi", max_new_tokens=1)
    result["wrong_key"] = "accepted"
except HfHubHTTPError as err:
    result["wrong_key"] = err.response.status_code
print(json.dumps(result))
