"""Portable exports of a geoseg network (ONNX, ``torch.export`` programs) that carry their model card, and
the runtime that runs an exported ONNX model inside geoseg's engine."""
