"""Pure numpy quantization math. Imports numpy only."""
