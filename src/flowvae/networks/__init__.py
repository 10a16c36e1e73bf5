"""Networks inside the flows and the encoder."""
