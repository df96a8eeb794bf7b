"""ONNX graph work: load/save/check, queries, naming, calibration outputs and the QDQ rewrite."""
