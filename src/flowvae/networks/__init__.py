"""Networks inside the flows, the encoders and the decoders that end in a pixel distribution."""
