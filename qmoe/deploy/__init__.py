"""Deployment: trained models exported to ONNX and run on ONNX Runtime, the runtime a device runs.

`export` turns an engine model (single expert, int8 PTQ model or MoE) into an ONNX graph whose
quantized layers keep the engine's own codes and scales at their bit-width; `runtime` loads a model
for one of the named runtimes (`onnxruntime`, the default everywhere figures are measured, and
`torch-eager`, the engine's own packed forward, kept for comparison). `graph` is the small builder
both use. May import the model zoo and below (core, audio, datasets, models); never measurement, the experiment
runner, analysis or the app.
"""
