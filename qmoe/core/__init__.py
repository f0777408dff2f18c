"""Core: what every layer uses and that imports nothing else of qmoe.

`errors` (the one family of user-facing errors), `paths` (where data, results and caches live), `cache` (atomic
writes, config keys, the engine's source hash: the parts every cache is built from) and `ort` (how every ONNX
Runtime session is set up). Imports no other qmoe layer.
"""
