"""Backends the gateway sends requests to: emulated devices, OpenAI-compatible servers, and a
local llama.cpp model."""
