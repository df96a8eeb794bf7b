"""Calibration: streaming observers, the collection loop, and the calibration table file."""
